//! Invoices carry a purchase to payment. Their status only moves along the
//! edges of one state machine; every other move is an error.
//!
//! ```text
//! pending --payment--> paid
//! pending --expire---> expired --payment--> paid (late)
//! pending --cancel---> cancelled --payment--> paid (late)
//! ```
//! A payment confirmed after expiry or cancellation is still honoured: the
//! provider took the money, so the user gets what they paid for.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::tariff::Localized;
use super::{DomainError, InvoiceId, Money, TariffId, Tokens, UserId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    Pending,
    Paid,
    Expired,
    Cancelled,
    /// Paid, then the money went back (an operator's refund); its tokens
    /// were taken back with it.
    Refunded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvoiceEvent {
    /// A provider proved the money arrived.
    PaymentConfirmed,
    /// The invoice's time ran out.
    Expire,
    /// The user gave up on it.
    Cancel,
    /// The money was returned.
    Refund,
}

/// Where an invoice moves on an event; `late` marks a payment that arrived
/// after the invoice stopped waiting for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub to: InvoiceStatus,
    pub late: bool,
}

impl InvoiceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InvoiceStatus::Pending => "pending",
            InvoiceStatus::Paid => "paid",
            InvoiceStatus::Expired => "expired",
            InvoiceStatus::Cancelled => "cancelled",
            InvoiceStatus::Refunded => "refunded",
        }
    }

    pub fn on(self, event: InvoiceEvent) -> Result<Transition, DomainError> {
        use InvoiceEvent::*;
        use InvoiceStatus::*;
        let to = |to, late| Ok(Transition { to, late });
        match (self, event) {
            (Pending, PaymentConfirmed) => to(Paid, false),
            (Expired | Cancelled, PaymentConfirmed) => to(Paid, true),
            (Pending, Expire) => to(Expired, false),
            (Pending, Cancel) => to(Cancelled, false),
            (Paid, Refund) => to(Refunded, false),
            (from, event) => Err(DomainError::InvalidInvoiceTransition {
                from: from.as_str(),
                event: event.as_str(),
            }),
        }
    }
}

impl InvoiceEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            InvoiceEvent::PaymentConfirmed => "payment",
            InvoiceEvent::Expire => "expire",
            InvoiceEvent::Cancel => "cancel",
            InvoiceEvent::Refund => "refund",
        }
    }
}

impl fmt::Display for InvoiceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Mock,
    Robokassa,
    TelegramStars,
    /// Nothing to pay (a 100% discount): completed without a provider.
    Free,
}

impl Provider {
    /// The currency a provider charges in.
    pub fn currency(self) -> super::Currency {
        match self {
            Provider::TelegramStars => super::Currency::Xtr,
            Provider::Mock | Provider::Robokassa | Provider::Free => super::Currency::Rub,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Mock => "mock",
            Provider::Robokassa => "robokassa",
            Provider::TelegramStars => "telegram_stars",
            Provider::Free => "free",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    pub id: InvoiceId,
    pub user: UserId,
    pub tariff_id: TariffId,
    /// What was bought, as it was when the invoice was made.
    pub title: Localized,
    pub tokens: Tokens,
    /// Extra tokens from a promo code, granted with the purchase.
    pub bonus_tokens: Tokens,
    pub price: Money,
    pub discount: Money,
    pub amount_due: Money,
    pub provider: Provider,
    #[serde(default)]
    pub promo_code: Option<super::promo::PromoCodeText>,
    /// True while the invoice holds one redemption of its promo code:
    /// from creation until it is paid (then consumed) or expires or is
    /// cancelled (then given back).
    #[serde(default)]
    pub promo_reserved: bool,
    pub status: InvoiceStatus,
    #[serde(default)]
    pub paid_late: bool,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    #[serde(default)]
    pub paid_at: Option<DateTime<Utc>>,
    /// The provider's own reference (Robokassa `InvId`, Stars charge id...).
    #[serde(default)]
    pub provider_ref: Option<String>,
    /// The first payment of a subscription: the provider is asked to keep
    /// the payment method for renewals (Robokassa `Recurring=true`, the
    /// mock's saved card, a Stars subscription link). False for token packs
    /// and for renewal invoices, which are charged against a kept method.
    #[serde(default)]
    pub recurring: bool,
    /// How the provider can charge again, as it told us with the payment
    /// (saved in the payment transaction; subscriptions take it from here).
    #[serde(default)]
    pub renewal: Option<super::subscription::RenewalMethod>,
    /// For a subscription tariff: the period it buys. Paying it creates or
    /// extends the user's subscription in the payment's transaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<super::subscription::PeriodPurchase>,
}

impl Invoice {
    /// Applies an event, recording when and how the invoice got paid.
    pub fn apply(&mut self, event: InvoiceEvent, now: DateTime<Utc>) -> Result<Transition, DomainError> {
        let transition = self.status.on(event)?;
        self.status = transition.to;
        if transition.to == InvoiceStatus::Paid {
            self.paid_late = transition.late;
            self.paid_at = Some(now);
        }
        Ok(transition)
    }

    /// Checks a provider's report of a payment against what the invoice
    /// asked for: the same provider, currency and amount, to the kopeck.
    pub fn check_payment(&self, provider: Provider, paid: &Money) -> Result<(), DomainError> {
        let mismatch = |reason: String| DomainError::PaymentMismatch {
            invoice: self.id.to_string(),
            reason,
        };
        if provider != self.provider {
            return Err(mismatch(format!(
                "paid through {}, issued for {}",
                provider.as_str(),
                self.provider.as_str()
            )));
        }
        if paid.currency() != self.amount_due.currency() || paid.amount() != self.amount_due.amount() {
            return Err(mismatch(format!("paid {paid}, due {}", self.amount_due)));
        }
        Ok(())
    }

    pub fn is_expired_at(&self, now: DateTime<Utc>) -> bool {
        self.status == InvoiceStatus::Pending && now >= self.expires_at
    }
}

#[cfg(test)]
mod tests {
    use super::InvoiceEvent::*;
    use super::InvoiceStatus::*;
    use super::*;

    #[test]
    fn every_transition_is_either_allowed_or_an_error() {
        let allowed = [
            (Pending, PaymentConfirmed, Paid, false),
            (Expired, PaymentConfirmed, Paid, true),
            (Cancelled, PaymentConfirmed, Paid, true),
            (Pending, Expire, Expired, false),
            (Pending, Cancel, Cancelled, false),
            (Paid, Refund, Refunded, false),
        ];
        for from in [Pending, Paid, Expired, Cancelled, Refunded] {
            for event in [PaymentConfirmed, Expire, Cancel, Refund] {
                let expected = allowed.iter().find(|(f, e, _, _)| *f == from && *e == event);
                match (from.on(event), expected) {
                    (Ok(t), Some((_, _, to, late))) => assert_eq!(t, Transition { to: *to, late: *late }),
                    (Err(DomainError::InvalidInvoiceTransition { .. }), None) => {}
                    (got, want) => panic!("{from:?} on {event:?}: got {got:?}, want {want:?}"),
                }
            }
        }
    }

    fn invoice(provider: Provider, due: &str) -> Invoice {
        let now = Utc::now();
        let rub = |a: &str| Money::parse(a, crate::domain::Currency::Rub).unwrap();
        Invoice {
            id: InvoiceId::new("inv").unwrap(),
            user: crate::domain::UserId::new(1).unwrap(),
            tariff_id: TariffId::new("pack").unwrap(),
            title: Localized {
                ru: "т".into(),
                en: "t".into(),
            },
            tokens: Tokens::new(10).unwrap(),
            bonus_tokens: Tokens::ZERO,
            price: rub(due),
            discount: rub("0"),
            amount_due: rub(due),
            provider,
            promo_code: None,
            promo_reserved: false,
            status: Pending,
            paid_late: false,
            created_at: now,
            expires_at: now,
            paid_at: None,
            provider_ref: None,
            recurring: false,
            renewal: None,
            period: None,
        }
    }

    #[test]
    fn a_payment_must_match_the_invoice_exactly() {
        let rub = |a: &str| Money::parse(a, crate::domain::Currency::Rub).unwrap();
        let due = invoice(Provider::Robokassa, "199.00");
        assert!(due.check_payment(Provider::Robokassa, &rub("199")).is_ok());
        assert!(due.check_payment(Provider::Robokassa, &rub("199.000000")).is_ok());
        for (provider, paid) in [
            (Provider::Robokassa, rub("198.99")),
            (Provider::Robokassa, rub("199.01")),
            (Provider::Mock, rub("199")),
            (
                Provider::Robokassa,
                Money::parse("199", crate::domain::Currency::Xtr).unwrap(),
            ),
        ] {
            assert!(
                matches!(
                    due.check_payment(provider, &paid),
                    Err(DomainError::PaymentMismatch { .. })
                ),
                "{provider:?} {paid} must be refused"
            );
        }
    }

    #[test]
    fn a_paid_invoice_is_paid_once() {
        assert!(Paid.on(PaymentConfirmed).is_err());
        assert!(Paid.on(Cancel).is_err());
        assert!(Paid.on(Expire).is_err());
    }
}
