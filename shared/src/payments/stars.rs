//! Telegram Stars: invoices in `XTR`, paid inside Telegram. The bot sends
//! the invoice (`sendInvoice`, no provider token), answers Telegram's
//! `pre_checkout_query` within 10 seconds, and credits the
//! `successful_payment` that follows, idempotently.
//!
//! The invoice payload is our invoice id, so every Stars message leads
//! back to one stored invoice whose price came from the catalog.

use chrono::{DateTime, Utc};

use crate::domain::invoice::{Invoice, InvoiceStatus, Provider};
use crate::domain::user::Language;
use crate::domain::{Currency, DomainError, InvoiceId, Money};
use crate::store::PaymentProof;

pub const CURRENCY: &str = "XTR";

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
pub fn proof(
    payload: &str,
    currency: &str,
    total_amount: u32,
    telegram_payment_charge_id: &str,
) -> Result<PaymentProof, DomainError> {
    let invoice_id = invoice_id(payload).ok_or_else(|| DomainError::invalid("stars payload", payload.to_owned()))?;
    let currency: Currency = currency.parse()?;
    Ok(PaymentProof {
        invoice_id,
        provider: Provider::TelegramStars,
        amount: Money::from_minor(i64::from(total_amount), currency)?,
        provider_ref: Some(telegram_payment_charge_id.to_owned()),
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

    #[test]
    fn a_successful_payment_proves_its_stars() {
        let proof = proof("inv1", "XTR", 50, "charge-1").unwrap();
        assert_eq!(proof.amount, Money::from_minor(50, Currency::Xtr).unwrap());
        assert_eq!(proof.provider_ref.as_deref(), Some("charge-1"));
        assert!(
            invoice(InvoiceStatus::Pending)
                .check_payment(proof.provider, &proof.amount)
                .is_ok()
        );
        assert!(super::proof("not an id!", "XTR", 50, "c").is_err());
    }
}
