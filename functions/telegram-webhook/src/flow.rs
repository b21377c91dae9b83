//! What each update does. Handlers read what their screen needs, change
//! what the user asked for, and return the replies.

use teloxide_core::types::{CallbackQuery, ChatId, ChatMemberUpdated, Message, MessageId, Update, UpdateKind};
use tokenbill::domain::invoice::{InvoiceStatus, Provider};
use tokenbill::domain::ledger::CreditKind;
use tokenbill::domain::pricing;
use tokenbill::domain::promo::{PromoCodeText, PromoEffect, PromoRejection};
use tokenbill::domain::user::{Awaiting, Language, Registration, User};
use tokenbill::domain::{IdempotencyKey, Tokens, TxId, UserId};
use tokenbill::store::{BalanceRequest, NewInvoice, StoreError, UserChange};

use crate::callback::Callback;
use crate::screens::{self, Screen};
use crate::texts::{escape, promo_rejection, texts};
use crate::{Reply, Webhook};

/// Entries per history page.
const HISTORY_PAGE: i32 = 10;

/// Where a screen goes: a new message, or the message whose button was pressed.
#[derive(Clone, Copy)]
enum Target {
    Chat(ChatId),
    Message(ChatId, MessageId),
}

impl Target {
    fn show(self, screen: Screen) -> Reply {
        match self {
            Target::Chat(chat) => Reply::Send {
                chat,
                text: screen.text,
                keyboard: screen.keyboard,
            },
            Target::Message(chat, message) => Reply::Edit {
                chat,
                message,
                text: screen.text,
                keyboard: screen.keyboard,
            },
        }
    }
}

fn registration(from: &teloxide_core::types::User) -> Option<Registration> {
    let id = UserId::new(i64::try_from(from.id.0).ok()?).ok()?;
    Some(Registration {
        id,
        username: from.username.clone(),
        first_name: from.first_name.clone(),
        last_name: from.last_name.clone(),
        language: Language::from_telegram(from.language_code.as_deref()),
        referrer: None,
    })
}

impl Webhook {
    pub(crate) async fn dispatch(&self, update: Update) -> Result<Vec<Reply>, StoreError> {
        match update.kind {
            UpdateKind::Message(message) => self.on_message(update.id.0, message).await,
            UpdateKind::CallbackQuery(query) => self.on_callback(query).await,
            UpdateKind::MyChatMember(member) => self.on_membership(member).await,
            other => {
                // Edits, channel posts and the rest: nothing to do.
                tracing::debug!(kind = ?std::mem::discriminant(&other), "update kind ignored");
                Ok(Vec::new())
            }
        }
    }

    /// The stored user, registering them if this is their first contact.
    async fn user(&self, registration: &Registration) -> Result<User, StoreError> {
        match self.store.user(registration.id).await? {
            Some(user) => Ok(user),
            None => Ok(self.store.register_user(registration).await?.0),
        }
    }

    async fn on_message(&self, update_id: u32, message: Message) -> Result<Vec<Reply>, StoreError> {
        let (Some(from), Some(text)) = (message.from.as_ref(), message.text()) else {
            return Ok(Vec::new()); // stickers, photos, service messages
        };
        if !message.chat.is_private() {
            return Ok(Vec::new());
        }
        let Some(registration) = registration(from) else {
            return Ok(Vec::new());
        };
        let chat = message.chat.id;
        let target = Target::Chat(chat);
        let Some((command, args)) = self.command(text) else {
            let user = self.user(&registration).await?;
            if user.awaiting == Some(Awaiting::PromoCode) {
                let reply = self.apply_promo(&user, text).await?;
                return Ok(vec![target.show(screens::with_menu(user.language, reply))]);
            }
            return Ok(vec![target.show(Screen::text(texts(user.language).unknown_text))]);
        };
        if command == "start" {
            return self.start(registration, args, target).await;
        }
        let user = self.user(&registration).await?;
        let language = user.language;
        let t = texts(language);
        let operator = self.config.operators.contains(&chat.0);
        let screen = match command.as_str() {
            "balance" => self.balance_screen(&user).await?,
            "buy" => screens::catalog(language, &self.catalog().await?),
            "promo" if args.is_empty() => screens::with_menu(language, t.promo_needs_code),
            "promo" => screens::with_menu(language, self.apply_promo(&user, &args).await?),
            "subscription" => self.subscription_screen(&user).await?,
            "history" => self.history_screen(&user, None).await?,
            "language" => screens::language_menu(language),
            "help" => screens::help(language),
            "paysupport" => screens::with_menu(
                language,
                t.paysupport.replace("{contact}", &escape(&self.config.support_contact)),
            ),
            "stats" if operator => Screen::text(self.stats().await?),
            "user" if operator => Screen::text(self.describe_user(args).await?),
            "grant" if operator => Screen::text(self.grant(update_id, args).await?),
            _ => Screen::text(t.unknown_text),
        };
        Ok(vec![target.show(screen)])
    }

    /// `/name args` or `/name@ThisBot args`; commands for other bots are not ours.
    fn command(&self, text: &str) -> Option<(String, String)> {
        let rest = text.strip_prefix('/')?;
        let (head, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        let (name, addressee) = head.split_once('@').map_or((head, None), |(n, a)| (n, Some(a)));
        if let (Some(addressee), Some(ours)) = (addressee, &self.config.bot_username)
            && !addressee.eq_ignore_ascii_case(ours)
        {
            return None;
        }
        Some((name.to_ascii_lowercase(), args.trim().to_owned()))
    }

    async fn start(
        &self,
        mut registration: Registration,
        payload: String,
        target: Target,
    ) -> Result<Vec<Reply>, StoreError> {
        let mut notes = Vec::new();
        let promo = payload.strip_prefix("promo_").map(str::to_owned);
        if let Some(referrer) = payload.strip_prefix("ref_").and_then(|id| id.parse::<UserId>().ok())
            && referrer != registration.id
        {
            registration.referrer = Some(referrer);
        }
        let (user, created) = self.store.register_user(&registration).await?;
        let language = user.language;
        if created && user.referrer.is_some() {
            notes.push(texts(language).referral_thanks.to_owned());
        }
        if let Some(code) = promo {
            notes.push(self.apply_promo(&user, &code).await?);
        }
        let mut replies: Vec<Reply> = notes.into_iter().map(|note| target.show(Screen::text(note))).collect();
        replies.push(target.show(screens::menu(language, &user.first_name)));
        Ok(replies)
    }

    /// Applies a code typed by the user and says what happened.
    async fn apply_promo(&self, user: &User, text: &str) -> Result<String, StoreError> {
        let language = user.language;
        let t = texts(language);
        if user.awaiting.is_some() {
            self.store.update_user(user.id, &[UserChange::Awaiting(None)]).await?;
        }
        let Ok(code) = PromoCodeText::new(text) else {
            return Ok(promo_rejection(language, PromoRejection::NotFound).to_owned());
        };
        let promo = match self.store.check_promo(user, &code, None).await {
            Ok(promo) => promo,
            Err(StoreError::Promo(rejection)) => return Ok(promo_rejection(language, rejection).to_owned()),
            Err(err) => return Err(err),
        };
        let shown = escape(code.as_str());
        if let PromoEffect::BonusTokens { tokens } = promo.effect {
            return match self.store.activate_promo(user, &code).await {
                Ok(_) => Ok(t
                    .promo_bonus
                    .replace("{code}", &shown)
                    .replace("{tokens}", &tokens.to_string())),
                Err(StoreError::Promo(rejection)) => Ok(promo_rejection(language, rejection).to_owned()),
                Err(err) => Err(err),
            };
        }
        self.store
            .update_user(user.id, &[UserChange::PendingPromo(Some(code))])
            .await?;
        Ok(t.promo_saved.replace("{code}", &shown))
    }

    async fn on_callback(&self, query: CallbackQuery) -> Result<Vec<Reply>, StoreError> {
        let answer = |text: Option<&str>| Reply::Answer {
            id: query.id.clone(),
            text: text.map(str::to_owned),
        };
        let Some(registration) = registration(&query.from) else {
            return Ok(vec![answer(None)]);
        };
        let callback = query.data.as_deref().and_then(Callback::decode);
        let message = query.message.as_ref().map(|m| (m.chat().id, m.id()));
        let (Some(callback), Some((chat, message))) = (callback, message) else {
            let language = Language::from_telegram(query.from.language_code.as_deref());
            return Ok(vec![answer(Some(texts(language).stale_button))]);
        };
        let user = self.user(&registration).await?;
        let target = Target::Message(chat, message);
        let (screen, note) = self.callback_screen(&user, callback).await?;
        Ok(match screen {
            Some(screen) => vec![target.show(screen), answer(note.as_deref())],
            None => vec![answer(note.as_deref())],
        })
    }

    /// The screen a button leads to, and a short note for the button's answer.
    async fn callback_screen(
        &self,
        user: &User,
        callback: Callback,
    ) -> Result<(Option<Screen>, Option<String>), StoreError> {
        let language = user.language;
        let t = texts(language);
        let screen = match callback {
            Callback::Menu => screens::menu(language, &user.first_name),
            Callback::Balance => self.balance_screen(user).await?,
            Callback::Buy => screens::catalog(language, &self.catalog().await?),
            Callback::Tariff(id) => match self.tariff_screen(user, &id).await? {
                Some(screen) => screen,
                None => return Ok((None, Some(t.tariff_gone.to_owned()))),
            },
            Callback::Pay(id, provider) => return self.pay(user, id, provider).await,
            Callback::PromoPrompt => {
                self.store
                    .update_user(user.id, &[UserChange::Awaiting(Some(Awaiting::PromoCode))])
                    .await?;
                screens::with_menu(language, t.promo_prompt)
            }
            Callback::History(cursor) => {
                let after = cursor.and_then(|hex| format!("{}.{hex}", user.id).parse::<TxId>().ok());
                self.history_screen(user, after).await?
            }
            Callback::Subscription => self.subscription_screen(user).await?,
            Callback::AutoRenewAsk(on) => screens::confirm_auto_renew(language, on),
            Callback::AutoRenewSet(on) => match self.store.set_auto_renew(user.id, on).await {
                Ok(_) => {
                    let screen = self.subscription_screen(user).await?;
                    return Ok((
                        Some(screen),
                        Some((if on { t.auto_renew_now_on } else { t.auto_renew_now_off }).to_owned()),
                    ));
                }
                Err(StoreError::NotFound { .. }) => self.subscription_screen(user).await?,
                Err(err) => return Err(err),
            },
            Callback::LanguageMenu => screens::language_menu(language),
            Callback::Language(chosen) => {
                let user = self.store.update_user(user.id, &[UserChange::Language(chosen)]).await?;
                return Ok((
                    Some(screens::menu(chosen, &user.first_name)),
                    Some(texts(chosen).language_set.to_owned()),
                ));
            }
            Callback::Help => screens::help(language),
        };
        Ok((Some(screen), None))
    }

    async fn balance_screen(&self, user: &User) -> Result<Screen, StoreError> {
        let (balance, _) = self.store.balance(user.id).await?;
        let subscription = self.store.subscription(user.id).await?;
        let title = self.subscription_title(subscription.as_ref()).await?;
        Ok(screens::balance(
            user.language,
            &balance,
            subscription.as_ref(),
            title.as_deref(),
        ))
    }

    async fn subscription_screen(&self, user: &User) -> Result<Screen, StoreError> {
        let subscription = self.store.subscription(user.id).await?;
        let title = self.subscription_title(subscription.as_ref()).await?;
        Ok(screens::subscription(
            user.language,
            subscription.as_ref(),
            title.as_deref(),
        ))
    }

    async fn subscription_title(
        &self,
        subscription: Option<&tokenbill::domain::subscription::Subscription>,
    ) -> Result<Option<String>, StoreError> {
        let Some(subscription) = subscription else {
            return Ok(None);
        };
        Ok(self
            .catalog()
            .await?
            .into_iter()
            .find(|t| t.id == subscription.tariff_id)
            .map(|t| t.title.en))
    }

    async fn history_screen(&self, user: &User, after: Option<TxId>) -> Result<Screen, StoreError> {
        let page = self.store.ledger_page(user.id, after, HISTORY_PAGE).await?;
        let older = page.next.map(|tx| tx.sortable());
        Ok(screens::history(user.language, &page.entries, after.is_none(), older))
    }

    /// The confirmation screen, priced from the catalog for every enabled
    /// provider, with the user's pending promo code when it applies.
    async fn tariff_screen(&self, user: &User, id: &tokenbill::domain::TariffId) -> Result<Option<Screen>, StoreError> {
        let Some(tariff) = self.catalog().await?.into_iter().find(|t| &t.id == id) else {
            return Ok(None);
        };
        let mut promo = None;
        if let Some(code) = &user.pending_promo {
            promo = match self
                .store
                .check_promo(user, code, Some((&tariff, tokenbill::domain::Currency::Rub)))
                .await
            {
                Ok(promo) => Some(promo),
                Err(StoreError::Promo(_)) => None,
                Err(err) => return Err(err),
            };
        }
        let mut quotes = Vec::new();
        for provider in &self.config.providers {
            if let Ok(quote) = pricing::quote(&tariff, provider.currency(), promo.as_ref()) {
                quotes.push((*provider, quote));
            }
        }
        let code = promo.as_ref().map(|p| p.code.as_str().to_owned());
        Ok(Some(screens::tariff(user.language, &tariff, &quotes, code.as_deref())))
    }

    async fn pay(
        &self,
        user: &User,
        tariff_id: tokenbill::domain::TariffId,
        provider: Provider,
    ) -> Result<(Option<Screen>, Option<String>), StoreError> {
        let language = user.language;
        let t = texts(language);
        if !self.config.providers.contains(&provider) {
            return Ok((None, Some(t.provider_unavailable.to_owned())));
        }
        let order = NewInvoice {
            user: user.id,
            tariff_id,
            provider,
            promo: user.pending_promo.clone(),
        };
        let invoice = match self.store.create_invoice(order, self.config.invoice_ttl).await {
            Ok(invoice) => invoice,
            Err(StoreError::Promo(rejection)) => {
                self.store
                    .update_user(user.id, &[UserChange::PendingPromo(None)])
                    .await?;
                return Ok((
                    Some(screens::with_menu(language, promo_rejection(language, rejection))),
                    None,
                ));
            }
            Err(StoreError::NotFound { .. }) => return Ok((None, Some(t.tariff_gone.to_owned()))),
            Err(err) => return Err(err),
        };
        if user.pending_promo.is_some() {
            // The code now belongs to this invoice.
            self.store
                .update_user(user.id, &[UserChange::PendingPromo(None)])
                .await?;
        }
        if invoice.status == InvoiceStatus::Paid {
            let tokens = invoice.tokens.get() + invoice.bonus_tokens.get();
            return Ok((
                Some(screens::with_menu(
                    language,
                    t.free_purchase_done.replace("{tokens}", &tokens.to_string()),
                )),
                None,
            ));
        }
        let url = match provider {
            Provider::Mock => format!(
                "{}/payments/mock/checkout/{}",
                self.config.public_base_url.trim_end_matches('/'),
                invoice.id
            )
            .parse::<url::Url>()
            .ok(),
            _ => None,
        };
        Ok((Some(screens::invoice(language, &invoice, url)), None))
    }

    async fn on_membership(&self, member: ChatMemberUpdated) -> Result<Vec<Reply>, StoreError> {
        if !member.chat.is_private() {
            return Ok(Vec::new());
        }
        let Some(registration) = registration(&member.from) else {
            return Ok(Vec::new());
        };
        let reachable = !member.new_chat_member.is_banned() && !member.new_chat_member.is_left();
        match self
            .store
            .update_user(registration.id, &[UserChange::Reachable(reachable)])
            .await
        {
            Ok(_) | Err(StoreError::NotFound { .. }) => Ok(Vec::new()),
            Err(err) => Err(err),
        }
    }

    async fn stats(&self) -> Result<String, StoreError> {
        use tokenbill::domain::EntryKind::*;
        let today = self.store.now().date_naive();
        let stats = self.store.daily_stats(today).await?;
        let sold = stats.tokens_of(Purchase) + stats.tokens_of(Renewal);
        let spent = stats.tokens_of(Spend) + stats.tokens_of(Capture) - stats.tokens_of(Refund);
        Ok(format!(
            "<b>{today}</b>\nusers: {}\npaid invoices today: {}\ntokens sold today: {sold}\ntokens spent today: {spent}",
            stats.users_total, stats.paid_invoices
        ))
    }

    async fn describe_user(&self, args: String) -> Result<String, StoreError> {
        let Ok(id) = args.trim().parse::<UserId>() else {
            return Ok("usage: /user ID".into());
        };
        let Some(user) = self.store.user(id).await? else {
            return Ok(format!("user {id} not found"));
        };
        let report = self.store.audit(id).await?;
        Ok(format!(
            "<b>{}</b> @{} ({})\nlanguage {}, reachable {}, paid invoices {}\navailable {}, held {}\nledger: {} entries, audit {}",
            escape(&user.first_name),
            escape(user.username.as_deref().unwrap_or("-")),
            user.id,
            user.language.code(),
            user.reachable,
            user.paid_invoices,
            report.account.available,
            report.account.held,
            report.entries,
            if report.is_ok() { "ok" } else { "FAILED" }
        ))
    }

    /// `/grant ID N reason`, keyed by the update so a redelivery grants once.
    async fn grant(&self, update_id: u32, args: String) -> Result<String, StoreError> {
        let usage = "usage: /grant ID TOKENS reason";
        let mut parts = args.splitn(3, char::is_whitespace);
        let (Some(id), Some(amount), Some(reason)) = (parts.next(), parts.next(), parts.next()) else {
            return Ok(usage.into());
        };
        let (Ok(id), Some(tokens)) = (
            id.parse::<UserId>(),
            amount.parse::<u64>().ok().and_then(|n| Tokens::positive(n).ok()),
        ) else {
            return Ok(usage.into());
        };
        if self.store.user(id).await?.is_none() {
            return Ok(format!("user {id} not found"));
        }
        let key = IdempotencyKey::new(format!("telegram-grant:{update_id}"))?;
        let applied = self
            .store
            .apply(BalanceRequest::credit(id, CreditKind::Grant, tokens, key).description(reason.trim()))
            .await?;
        Ok(format!("granted {tokens} tokens to {id} ({})", applied.receipt.tx_id))
    }
}
