//! Screens: text plus inline keyboard, rendered from data. No I/O here.

use chrono::{DateTime, Utc};
use teloxide_core::types::{InlineKeyboardButton, InlineKeyboardMarkup};
use tokenbill::domain::invoice::{Invoice, Provider};
use tokenbill::domain::ledger::LedgerEntry;
use tokenbill::domain::pricing::Quote;
use tokenbill::domain::subscription::{Subscription, SubscriptionStatus};
use tokenbill::domain::tariff::{Tariff, TariffKind};
use tokenbill::domain::user::Language;
use tokenbill::domain::{Balance, Currency};

use crate::callback::Callback;
use crate::texts::{Texts, escape, texts};

pub struct Screen {
    pub text: String,
    pub keyboard: Option<InlineKeyboardMarkup>,
}

impl Screen {
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            keyboard: None,
        }
    }

    fn with(text: impl Into<String>, rows: Vec<Vec<InlineKeyboardButton>>) -> Self {
        Self {
            text: text.into(),
            keyboard: Some(InlineKeyboardMarkup::new(rows)),
        }
    }
}

fn button(label: &str, callback: Callback) -> InlineKeyboardButton {
    InlineKeyboardButton::callback(label.to_owned(), callback.encode())
}

fn menu_row(t: &Texts) -> Vec<InlineKeyboardButton> {
    vec![button(t.to_menu, Callback::Menu)]
}

pub use tokenbill::text::money;

fn date(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d").to_string()
}

pub fn menu(language: Language, name: &str) -> Screen {
    let t = texts(language);
    Screen::with(
        t.welcome.replace("{name}", &escape(name)),
        vec![
            vec![
                button(t.menu_buy, Callback::Buy),
                button(t.menu_balance, Callback::Balance),
            ],
            vec![
                button(t.menu_promo, Callback::PromoPrompt),
                button(t.menu_subscription, Callback::Subscription),
            ],
            vec![
                button(t.menu_history, Callback::History(None)),
                button(t.menu_language, Callback::LanguageMenu),
            ],
            vec![button(t.menu_help, Callback::Help)],
        ],
    )
}

fn subscription_lines(t: &Texts, subscription: Option<&Subscription>, title: Option<&str>) -> String {
    let Some(sub) = subscription else {
        return t.no_subscription.to_owned();
    };
    let title = escape(title.unwrap_or(sub.tariff_id.as_str()));
    match sub.status {
        SubscriptionStatus::Expired => t
            .subscription_expired
            .replace("{title}", &title)
            .replace("{date}", &date(sub.period_end)),
        status => {
            let mut text = t
                .subscription_active_until
                .replace("{title}", &title)
                .replace("{date}", &date(sub.period_end));
            text.push('\n');
            text.push_str(if status == SubscriptionStatus::PastDue {
                t.subscription_status_past_due
            } else {
                t.subscription_status_active
            });
            text.push('\n');
            if sub.auto_renew {
                // Past due, the next renewal is the next charge attempt.
                let next = match status {
                    SubscriptionStatus::PastDue => sub.next_action_at.unwrap_or(sub.period_end),
                    _ => sub.period_end,
                };
                text.push_str(t.subscription_renews);
                text.push(' ');
                text.push_str(&t.subscription_next_renewal.replace("{date}", &date(next)));
            } else {
                text.push_str(t.subscription_ends);
                text.push(' ');
                text.push_str(&t.subscription_ends_on.replace("{date}", &date(sub.period_end)));
            }
            if status == SubscriptionStatus::PastDue {
                text.push('\n');
                text.push_str(t.subscription_past_due);
            }
            text
        }
    }
}

pub fn balance(
    language: Language,
    balance: &Balance,
    subscription: Option<&Subscription>,
    title: Option<&str>,
) -> Screen {
    let t = texts(language);
    let text = format!(
        "{}\n{}: <b>{}</b>\n{}: {}\n\n{}",
        t.balance_title,
        t.available,
        balance.available,
        t.held,
        balance.held,
        subscription_lines(t, subscription, title)
    );
    Screen::with(text, vec![vec![button(t.menu_buy, Callback::Buy)], menu_row(t)])
}

fn price_line(tariff: &Tariff) -> String {
    let prices: Vec<String> = Currency::ALL
        .iter()
        .filter_map(|c| tariff.price(*c))
        .map(|p| money(&p))
        .collect();
    prices.join(" · ")
}

pub fn catalog(language: Language, tariffs: &[Tariff]) -> Screen {
    let t = texts(language);
    if tariffs.is_empty() {
        return Screen::with(t.no_tariffs, vec![menu_row(t)]);
    }
    let mut rows: Vec<Vec<InlineKeyboardButton>> = tariffs
        .iter()
        .map(|tariff| {
            let label = format!("{} — {}", tariff.title.get(language), price_line(tariff));
            vec![button(&label, Callback::Tariff(tariff.id.clone()))]
        })
        .collect();
    rows.push(menu_row(t));
    Screen::with(t.buy_title, rows)
}

/// The confirmation screen: one quote per enabled provider.
pub fn tariff(language: Language, tariff: &Tariff, quotes: &[(Provider, Quote)], promo: Option<&str>) -> Screen {
    let t = texts(language);
    let mut text = format!(
        "<b>{}</b>\n{}",
        escape(tariff.title.get(language)),
        escape(tariff.description.get(language))
    );
    let tokens = quotes.first().map_or(tariff.tokens.get(), |(_, q)| q.tokens.get());
    let bonus = quotes.first().map_or(0, |(_, q)| q.bonus_tokens.get());
    text.push_str(&format!("\n\n{tokens} {}", t.tokens_word));
    if bonus > 0 {
        text.push_str(&format!(" + {bonus}"));
    }
    if let TariffKind::Subscription { period_days } = tariff.kind {
        text.push_str(&format!(", {}", t.per_days.replace("{days}", &period_days.to_string())));
    }
    if let Some(code) = promo {
        text.push_str(&format!("\n{}", t.promo_applied.replace("{code}", &escape(code))));
    }
    let mut rows = Vec::new();
    let mut shown = Vec::new();
    for (provider, quote) in quotes {
        if !shown.contains(&quote.price.currency()) {
            shown.push(quote.price.currency());
            text.push_str(&format!("\n\n{}: {}", t.price, money(&quote.price)));
            if !quote.discount.is_zero() {
                text.push_str(&format!("\n{}: −{}", t.discount, money(&quote.discount)));
            }
            text.push_str(&format!("\n{}: <b>{}</b>", t.total, money(&quote.amount_due)));
        }
        let label = match provider {
            Provider::Mock | Provider::Free => t.pay_card,
            Provider::Robokassa => t.pay_robokassa,
            Provider::TelegramStars => t.pay_stars,
        };
        rows.push(vec![button(
            &label.replace("{amount}", &money(&quote.amount_due)),
            Callback::Pay(tariff.id.clone(), *provider),
        )]);
    }
    rows.push(vec![button(t.back, Callback::Buy)]);
    Screen::with(text, rows)
}

/// A created invoice with the link to pay it.
pub fn invoice(language: Language, invoice: &Invoice, payment_url: Option<url::Url>) -> Screen {
    let t = texts(language);
    let text = format!(
        "{}\n{}",
        t.invoice_created
            .replace("{amount}", &money(&invoice.amount_due))
            .replace("{title}", &escape(invoice.title.get(language))),
        t.invoice_expires
            .replace("{time}", &invoice.expires_at.format("%Y-%m-%d %H:%M").to_string())
    );
    let mut rows = Vec::new();
    if let Some(url) = payment_url {
        rows.push(vec![InlineKeyboardButton::url(t.open_payment.to_owned(), url)]);
    }
    rows.push(menu_row(t));
    Screen::with(text, rows)
}

pub fn history(language: Language, entries: &[LedgerEntry], first_page: bool, older: Option<String>) -> Screen {
    let t = texts(language);
    let mut text = t.history_title.to_owned();
    if entries.is_empty() {
        text.push_str(&format!("\n{}", t.history_empty));
    }
    for entry in entries {
        text.push_str(&format!(
            "\n{} · {} · {:+}",
            entry.created_at.format("%Y-%m-%d %H:%M"),
            entry.kind,
            entry.delta_available
        ));
        if entry.delta_held != 0 {
            text.push_str(&format!(" ({:+} {})", entry.delta_held, t.held.to_lowercase()));
        }
    }
    let mut nav = Vec::new();
    if !first_page {
        nav.push(button(t.newest, Callback::History(None)));
    }
    if let Some(cursor) = older {
        nav.push(button(t.older, Callback::History(Some(cursor))));
    }
    let mut rows = vec![];
    if !nav.is_empty() {
        rows.push(nav);
    }
    rows.push(menu_row(t));
    Screen::with(text, rows)
}

pub fn subscription(language: Language, subscription: Option<&Subscription>, title: Option<&str>) -> Screen {
    let t = texts(language);
    let text = subscription_lines(t, subscription, title);
    let mut rows = Vec::new();
    match subscription {
        Some(sub) if sub.status != SubscriptionStatus::Expired => {
            let (label, on) = if sub.auto_renew {
                (t.auto_renew_off_button, false)
            } else {
                (t.auto_renew_on_button, true)
            };
            rows.push(vec![button(label, Callback::AutoRenewAsk(on))]);
        }
        _ => rows.push(vec![button(t.menu_buy, Callback::Buy)]),
    }
    rows.push(menu_row(t));
    Screen::with(text, rows)
}

pub fn confirm_auto_renew(language: Language, on: bool) -> Screen {
    let t = texts(language);
    let question = if on {
        t.confirm_auto_renew_on
    } else {
        t.confirm_auto_renew_off
    };
    Screen::with(
        question,
        vec![vec![
            button(t.yes, Callback::AutoRenewSet(on)),
            button(t.no, Callback::Subscription),
        ]],
    )
}

pub fn language_menu(language: Language) -> Screen {
    let t = texts(language);
    Screen::with(
        t.language_prompt,
        vec![
            vec![
                button("Русский", Callback::Language(Language::Ru)),
                button("English", Callback::Language(Language::En)),
            ],
            menu_row(t),
        ],
    )
}

pub fn help(language: Language) -> Screen {
    let t = texts(language);
    Screen::with(t.help, vec![menu_row(t)])
}

pub fn with_menu(language: Language, text: impl Into<String>) -> Screen {
    Screen::with(text, vec![menu_row(texts(language))])
}
