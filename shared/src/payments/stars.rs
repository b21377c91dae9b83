//! Telegram Stars: invoices in `XTR`, paid inside Telegram. The bot sends
//! the invoice (`sendInvoice`, no provider token), answers Telegram's
//! `pre_checkout_query` within 10 seconds, and credits the
//! `successful_payment` that follows, idempotently.
//!
//! The invoice payload is our invoice id, so every Stars message leads
//! back to one stored invoice whose price came from the catalog.
//!
//! Subscriptions: Telegram sells them only through invoice links
//! (`createInvoiceLink` with `subscription_period` = 30 days) and charges
//! each renewal itself. The first `successful_payment` (`is_first_recurring`)
//! pays our invoice and names the subscription (its charge id, and
//! `subscription_expiration_date`); each renewal arrives as another
//! `successful_payment` with the same payload and a new charge id.

use chrono::{DateTime, Utc};
use teloxide_core::types::SuccessfulPayment;

use crate::domain::invoice::{Invoice, InvoiceStatus, Provider};
use crate::domain::subscription::RenewalMethod;
use crate::domain::tariff::{Tariff, TariffKind};
use crate::domain::user::Language;
use crate::domain::{Currency, DomainError, InvoiceId, Money};
use crate::store::PaymentProof;

pub const CURRENCY: &str = "XTR";

/// The one subscription period Telegram supports: 30 days.
pub const SUBSCRIPTION_PERIOD_DAYS: u32 = 30;
/// [`SUBSCRIPTION_PERIOD_DAYS`] in seconds, as `subscription_period` takes it.
pub const SUBSCRIPTION_PERIOD_SECONDS: u32 = SUBSCRIPTION_PERIOD_DAYS * 24 * 60 * 60;

/// Whether Stars can sell `tariff`: token packs, and subscriptions of
/// Telegram's 30-day period (no other period can renew in Stars).
pub fn sells(tariff: &Tariff) -> bool {
    match tariff.kind {
        TariffKind::TokenPack => true,
        TariffKind::Subscription { period_days } => period_days == SUBSCRIPTION_PERIOD_DAYS,
    }
}

/// A Stars subscription's renewal: Telegram charged a later period on its
/// own. It pays no invoice of ours (its payload names the first one).
pub fn is_renewal(payment: &SuccessfulPayment) -> bool {
    payment.is_recurring && !payment.is_first_recurring
}

/// Why a `pre_checkout_query` is refused; Telegram shows the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreCheckoutRefusal {
    UnknownInvoice,
    NotPending,
    Expired,
    AmountMismatch,
}

impl PreCheckoutRefusal {
    pub fn message(self, language: Language) -> &'static str {
        match (self, language) {
            (PreCheckoutRefusal::UnknownInvoice, Language::Ru) => "Счёт не найден. Оформите покупку заново: /buy",
            (PreCheckoutRefusal::UnknownInvoice, Language::En) => "Invoice not found. Please buy again: /buy",
            (PreCheckoutRefusal::NotPending, Language::Ru) => "Этот счёт уже оплачен или отменён.",
            (PreCheckoutRefusal::NotPending, Language::En) => "This invoice is already paid or cancelled.",
            (PreCheckoutRefusal::Expired, Language::Ru) => "Срок счёта истёк. Оформите покупку заново: /buy",
            (PreCheckoutRefusal::Expired, Language::En) => "This invoice has expired. Please buy again: /buy",
            (PreCheckoutRefusal::AmountMismatch, Language::Ru) => "Сумма не совпадает со счётом.",
            (PreCheckoutRefusal::AmountMismatch, Language::En) => "The amount does not match the invoice.",
        }
    }
}

/// The invoice's price in whole stars.
pub fn stars_due(invoice: &Invoice) -> Result<u32, DomainError> {
    if invoice.amount_due.currency() != Currency::Xtr {
        return Err(DomainError::invalid("stars invoice", "amount is not in XTR"));
    }
    u32::try_from(invoice.amount_due.to_minor())
        .map_err(|_| DomainError::invalid("stars invoice", "amount out of range"))
}

/// The invoice a Stars payload names, if it is one of ours.
pub fn invoice_id(payload: &str) -> Option<InvoiceId> {
    InvoiceId::new(payload).ok()
}

/// Decides a `pre_checkout_query`: the invoice must be ours, the payer's,
/// pending, not expired, in Stars, and for exactly the amount due.
pub fn check_pre_checkout(
    invoice: Option<&Invoice>,
    payer: crate::domain::UserId,
    currency: &str,
    total_amount: u32,
    now: DateTime<Utc>,
) -> Result<(), PreCheckoutRefusal> {
    let invoice = invoice
        .filter(|invoice| invoice.user == payer && invoice.provider == Provider::TelegramStars)
        .ok_or(PreCheckoutRefusal::UnknownInvoice)?;
    if invoice.status != InvoiceStatus::Pending {
        return Err(PreCheckoutRefusal::NotPending);
    }
    if invoice.is_expired_at(now) {
        return Err(PreCheckoutRefusal::Expired);
    }
    if currency != CURRENCY || stars_due(invoice) != Ok(total_amount) {
        return Err(PreCheckoutRefusal::AmountMismatch);
    }
    Ok(())
}

/// What a `successful_payment` proves, to be checked against the invoice.
/// A subscription's first payment also names the subscription, saved on
/// the invoice for renewals.
pub fn proof(payment: &SuccessfulPayment) -> Result<PaymentProof, DomainError> {
    let payload = &payment.invoice_payload;
    let invoice_id = invoice_id(payload).ok_or_else(|| DomainError::invalid("stars payload", payload.to_owned()))?;
    let currency: Currency = payment.currency.parse()?;
    let charge_id = payment.telegram_payment_charge_id.0.clone();
    Ok(PaymentProof {
        invoice_id,
        provider: Provider::TelegramStars,
        amount: Money::from_minor(i64::from(payment.total_amount), currency)?,
        renewal: payment.is_recurring.then(|| RenewalMethod::TelegramStars {
            charge_id: charge_id.clone(),
            expires_at: payment.subscription_expiration_date,
        }),
        provider_ref: Some(charge_id),
    })
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;
    use crate::domain::tariff::Localized;
    use crate::domain::{TariffId, Tokens, UserId};

    fn invoice(status: InvoiceStatus) -> Invoice {
        let now = Utc::now();
        let stars = Money::from_minor(50, Currency::Xtr).unwrap();
        Invoice {
            id: InvoiceId::new("inv1").unwrap(),
            user: UserId::new(7).unwrap(),
            tariff_id: TariffId::new("pack").unwrap(),
            title: Localized {
                ru: "п".into(),
                en: "p".into(),
            },
            tokens: Tokens::new(100).unwrap(),
            bonus_tokens: Tokens::ZERO,
            price: stars,
            discount: Money::zero(Currency::Xtr),
            amount_due: stars,
            provider: Provider::TelegramStars,
            promo_code: None,
            promo_reserved: false,
            status,
            paid_late: false,
            created_at: now,
            expires_at: now + Duration::hours(1),
            paid_at: None,
            provider_ref: None,
            recurring: false,
            renewal: None,
            period: None,
        }
    }

    #[test]
    fn pre_checkout_accepts_only_the_exact_pending_invoice() {
        let now = Utc::now();
        let payer = UserId::new(7).unwrap();
        let pending = invoice(InvoiceStatus::Pending);
        assert_eq!(check_pre_checkout(Some(&pending), payer, "XTR", 50, now), Ok(()));
        let cases = [
            (None, payer, "XTR", 50, PreCheckoutRefusal::UnknownInvoice),
            (
                Some(&pending),
                UserId::new(8).unwrap(),
                "XTR",
                50,
                PreCheckoutRefusal::UnknownInvoice,
            ),
            (Some(&pending), payer, "XTR", 49, PreCheckoutRefusal::AmountMismatch),
            (Some(&pending), payer, "RUB", 50, PreCheckoutRefusal::AmountMismatch),
        ];
        for (invoice, payer, currency, amount, refusal) in cases {
            assert_eq!(check_pre_checkout(invoice, payer, currency, amount, now), Err(refusal));
        }
        let paid = invoice(InvoiceStatus::Paid);
        assert_eq!(
            check_pre_checkout(Some(&paid), payer, "XTR", 50, now),
            Err(PreCheckoutRefusal::NotPending)
        );
        assert_eq!(
            check_pre_checkout(Some(&pending), payer, "XTR", 50, now + Duration::hours(2)),
            Err(PreCheckoutRefusal::Expired)
        );
    }

    fn payment(payload: &str, charge: &str, subscription: Option<(bool, i64)>) -> SuccessfulPayment {
        let mut json = serde_json::json!({
            "currency": "XTR", "total_amount": 50, "invoice_payload": payload,
            "telegram_payment_charge_id": charge, "provider_payment_charge_id": ""
        });
        if let Some((first, expires)) = subscription {
            json["is_recurring"] = true.into();
            json["is_first_recurring"] = first.into();
            json["subscription_expiration_date"] = expires.into();
        }
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_successful_payment_proves_its_stars() {
        let one_off = payment("inv1", "charge-1", None);
        let proof = proof(&one_off).unwrap();
        assert_eq!(proof.amount, Money::from_minor(50, Currency::Xtr).unwrap());
        assert_eq!(proof.provider_ref.as_deref(), Some("charge-1"));
        assert_eq!(proof.renewal, None);
        assert!(!is_renewal(&one_off));
        assert!(
            invoice(InvoiceStatus::Pending)
                .check_payment(proof.provider, &proof.amount)
                .is_ok()
        );
        assert!(super::proof(&payment("not an id!", "c", None)).is_err());
    }

    #[test]
    fn a_subscriptions_first_payment_names_it_and_renewals_are_told_apart() {
        let first = payment("inv1", "charge-1", Some((true, 1_767_000_000)));
        assert!(!is_renewal(&first));
        assert_eq!(
            proof(&first).unwrap().renewal,
            Some(RenewalMethod::TelegramStars {
                charge_id: "charge-1".into(),
                expires_at: DateTime::from_timestamp(1_767_000_000, 0),
            })
        );
        assert!(is_renewal(&payment("inv1", "charge-2", Some((false, 1_769_600_000)))));
        assert_eq!(SUBSCRIPTION_PERIOD_SECONDS, 2_592_000);
    }
}
