//! Notifications: what a user is told, decided by domain code and
//! delivered later by the notifier.
//!
//! A notification is written in the same transaction as the change it
//! reports (an outbox), so a committed payment always has its message. Its
//! id names its cause (`payment:<invoice>`), so the same cause never makes
//! two messages.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::tariff::Localized;
use super::user::Language;
use super::{Balance, DomainError, InvoiceId, Money, Tokens, UserId};
use crate::text::{escape, money};

/// Names a notification by its cause, e.g. `payment:<invoice id>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NotificationId(String);

impl NotificationId {
    pub fn new(id: impl Into<String>) -> Result<Self, DomainError> {
        let id = id.into();
        let valid = !id.is_empty()
            && id.len() <= 200
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':' | b'.'));
        if !valid {
            return Err(DomainError::invalid("notification id", format!("{id:?}")));
        }
        Ok(Self(id))
    }

    pub fn payment(invoice: &InvoiceId) -> Self {
        Self(format!("payment:{invoice}"))
    }

    pub fn payment_declined(invoice: &InvoiceId) -> Self {
        Self(format!("declined:{invoice}"))
    }

    /// The `use`-th activation of a bonus code by `user` (codes are
    /// letters, digits, `_` and `-`, so the id stays valid).
    pub fn promo_bonus(user: UserId, code: &super::promo::PromoCodeText, use_number: u64) -> Self {
        Self(format!("promo:{user}:{}:{use_number}", code.as_str()))
    }

    /// The balance of `user` fell below the threshold with entry `tx`.
    pub fn low_balance(tx: super::TxId) -> Self {
        Self(format!("low:{}:{}", tx.user, tx.sortable()))
    }

    /// The reminder `days` before the end of `user`'s period `period`.
    pub fn renewal_reminder(user: UserId, period: u32, days: i64) -> Self {
        Self(format!("remind:{user}:{period}:{days}d"))
    }

    /// A declined (or never confirmed) renewal charge: one per renewal
    /// invoice, which names the period and the attempt.
    pub fn renewal_failed(invoice: &InvoiceId) -> Self {
        Self(format!("renewal_failed:{invoice}"))
    }

    /// `user`'s subscription ended after period `period`.
    pub fn subscription_expired(user: UserId, period: u32) -> Self {
        Self(format!("expired:{user}:{period}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for NotificationId {
    type Error = DomainError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<NotificationId> for String {
    fn from(id: NotificationId) -> Self {
        id.0
    }
}

impl std::fmt::Display for NotificationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What happened, with what the text needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Message {
    PaymentReceived {
        invoice_id: InvoiceId,
        title: Localized,
        tokens: Tokens,
        amount: Money,
    },
    PaymentDeclined {
        invoice_id: InvoiceId,
        title: Localized,
    },
    PromoBonus {
        code: String,
        tokens: Tokens,
    },
    LowBalance {
        threshold: Tokens,
    },
    /// A later period was paid (charged by the sweep, or by Telegram).
    SubscriptionRenewed {
        title: Localized,
        tokens: Tokens,
        period_end: DateTime<Utc>,
    },
    /// The period ends in `days` days and will not renew by itself.
    RenewalReminder {
        title: Localized,
        days: i64,
        period_end: DateTime<Utc>,
        /// Auto-renewal is on, but there is no way to charge.
        auto_renew: bool,
    },
    /// A renewal charge failed; the next attempt is at `next_attempt`.
    RenewalFailed {
        title: Localized,
        next_attempt: DateTime<Utc>,
    },
    SubscriptionExpired {
        title: Localized,
        reason: super::subscription::ExpiryReason,
    },
}

/// Where a notification is on its way to the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Committed, not yet delivered.
    Pending,
    /// A notifier is sending it until `lease_until`.
    Sending,
    Sent,
    /// Not deliverable (the user blocked the bot): given up on purpose.
    Dropped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub id: NotificationId,
    pub user: UserId,
    pub message: Message,
    pub created_at: DateTime<Utc>,
    pub delivery: Delivery,
    #[serde(default)]
    pub lease_until: Option<DateTime<Utc>>,
    #[serde(default)]
    pub sent_at: Option<DateTime<Utc>>,
    /// How many times a notifier tried to send it.
    #[serde(default)]
    pub attempts: u32,
}

impl Notification {
    pub fn new(id: NotificationId, user: UserId, message: Message, now: DateTime<Utc>) -> Self {
        Self {
            id,
            user,
            message,
            created_at: now,
            delivery: Delivery::Pending,
            lease_until: None,
            sent_at: None,
            attempts: 0,
        }
    }

    /// True when a notifier may start sending it now: pending, or left
    /// half-sent by a notifier whose lease ran out.
    pub fn is_claimable(&self, now: DateTime<Utc>) -> bool {
        match self.delivery {
            Delivery::Pending => true,
            Delivery::Sending => self.lease_until.is_none_or(|until| until <= now),
            Delivery::Sent | Delivery::Dropped => false,
        }
    }
}

impl Message {
    /// The text in HTML parse mode; `balance` is the user's balance when the
    /// message is sent (messages that show it read it then).
    pub fn render(&self, language: Language, balance: Balance) -> String {
        let ru = language == Language::Ru;
        match self {
            Message::PaymentReceived {
                title, tokens, amount, ..
            } => {
                let title = escape(title.get(language));
                if ru {
                    format!(
                        "✅ Оплата получена: <b>{title}</b>, {}.\nНачислено {tokens} токенов. Баланс: <b>{}</b>.",
                        money(amount),
                        balance.available
                    )
                } else {
                    format!(
                        "✅ Payment received: <b>{title}</b>, {}.\n{tokens} tokens added. Balance: <b>{}</b>.",
                        money(amount),
                        balance.available
                    )
                }
            }
            Message::PaymentDeclined { title, .. } => {
                let title = escape(title.get(language));
                if ru {
                    format!("❌ Оплата не прошла: <b>{title}</b>. Попробуйте ещё раз через /buy.")
                } else {
                    format!("❌ The payment for <b>{title}</b> did not go through. Try again with /buy.")
                }
            }
            Message::PromoBonus { code, tokens } => {
                let code = escape(code);
                if ru {
                    format!(
                        "🎁 Промокод <b>{code}</b>: +{tokens} токенов. Баланс: <b>{}</b>.",
                        balance.available
                    )
                } else {
                    format!(
                        "🎁 Promo code <b>{code}</b>: +{tokens} tokens. Balance: <b>{}</b>.",
                        balance.available
                    )
                }
            }
            Message::SubscriptionRenewed {
                title,
                tokens,
                period_end,
            } => {
                let (title, until) = (escape(title.get(language)), day(period_end));
                if ru {
                    format!(
                        "🔄 Подписка <b>{title}</b> продлена до {until}. Начислено {tokens} токенов. Баланс: <b>{}</b>.",
                        balance.available
                    )
                } else {
                    format!(
                        "🔄 <b>{title}</b> renewed until {until}. {tokens} tokens added. Balance: <b>{}</b>.",
                        balance.available
                    )
                }
            }
            Message::RenewalReminder {
                title,
                days,
                period_end,
                auto_renew,
            } => {
                let (title, until) = (escape(title.get(language)), day(period_end));
                match (ru, auto_renew) {
                    (true, false) => format!(
                        "⏳ Подписка <b>{title}</b> закончится {until} (через {days} дн.): автопродление выключено. Включить: /subscription"
                    ),
                    (true, true) => format!(
                        "⏳ Подписка <b>{title}</b> закончится {until} (через {days} дн.): продлить автоматически нечем. Купить снова: /buy"
                    ),
                    (false, false) => format!(
                        "⏳ <b>{title}</b> ends on {until} (in {days} days): auto-renewal is off. Turn it on: /subscription"
                    ),
                    (false, true) => format!(
                        "⏳ <b>{title}</b> ends on {until} (in {days} days) and cannot renew by itself. Buy again: /buy"
                    ),
                }
            }
            Message::RenewalFailed { title, next_attempt } => {
                let (title, next) = (escape(title.get(language)), day(next_attempt));
                if ru {
                    format!("⚠️ Не удалось продлить <b>{title}</b>: платёж не прошёл. Повторим {next}.")
                } else {
                    format!(
                        "⚠️ Could not renew <b>{title}</b>: the payment did not go through. We will try again on {next}."
                    )
                }
            }
            Message::SubscriptionExpired { title, reason } => {
                use super::subscription::ExpiryReason;
                let title = escape(title.get(language));
                let why = match (ru, reason) {
                    (true, ExpiryReason::PaymentFailed) => " Платёж за продление не прошёл.",
                    (false, ExpiryReason::PaymentFailed) => " The renewal payment did not go through.",
                    _ => "",
                };
                if ru {
                    format!("⌛ Подписка <b>{title}</b> закончилась.{why} Купить снова: /buy")
                } else {
                    format!("⌛ <b>{title}</b> has ended.{why} Buy again: /buy")
                }
            }
            Message::LowBalance { threshold } => {
                if ru {
                    format!(
                        "⚠️ Осталось <b>{}</b> токенов (меньше {threshold}). Пополнить: /buy",
                        balance.available
                    )
                } else {
                    format!(
                        "⚠️ Only <b>{}</b> tokens left (below {threshold}). Top up: /buy",
                        balance.available
                    )
                }
            }
        }
    }
}

/// A date as texts show it (UTC).
fn day(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%d").to_string()
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;
    use crate::domain::Currency;

    fn received() -> Message {
        Message::PaymentReceived {
            invoice_id: InvoiceId::new("inv1").unwrap(),
            title: Localized {
                ru: "Пакет <1000>".into(),
                en: "Pack <1000>".into(),
            },
            tokens: Tokens::new(1000).unwrap(),
            amount: Money::new(dec!(199), Currency::Rub).unwrap(),
        }
    }

    #[test]
    fn texts_follow_the_language_and_escape_titles() {
        let balance = Balance {
            available: Tokens::new(1500).unwrap(),
            held: Tokens::ZERO,
        };
        let en = received().render(Language::En, balance);
        assert!(en.contains("Pack &lt;1000&gt;"), "{en}");
        assert!(
            en.contains("1000 tokens added") && en.contains("<b>1500</b>") && en.contains("199 ₽"),
            "{en}"
        );
        let ru = received().render(Language::Ru, balance);
        assert!(
            ru.contains("Пакет &lt;1000&gt;") && ru.contains("Начислено 1000"),
            "{ru}"
        );
    }

    #[test]
    fn ids_name_their_cause_and_refuse_odd_characters() {
        let invoice = InvoiceId::new("abc").unwrap();
        assert_eq!(NotificationId::payment(&invoice).as_str(), "payment:abc");
        assert!(NotificationId::new("a b").is_err());
        assert!(NotificationId::new("").is_err());
    }

    #[test]
    fn a_lapsed_lease_can_be_claimed_again() {
        let now = Utc::now();
        let mut n = Notification::new(
            NotificationId::new("x").unwrap(),
            UserId::new(1).unwrap(),
            received(),
            now,
        );
        assert!(n.is_claimable(now));
        n.delivery = Delivery::Sending;
        n.lease_until = Some(now + chrono::Duration::seconds(30));
        assert!(!n.is_claimable(now));
        assert!(n.is_claimable(now + chrono::Duration::seconds(31)));
        n.delivery = Delivery::Sent;
        assert!(!n.is_claimable(now + chrono::Duration::days(1)));
    }
}
