//! Payment providers: how money arrives, and how it is asked for again.
//!
//! - [`mock`]: the stand-in provider of development and tests;
//! - [`robokassa`]: Robokassa's payment page, ResultURL and recurring charges;
//! - [`stars`]: Telegram Stars invoices and subscriptions, paid inside Telegram.
//!
//! What every provider does, and where it meets the others:
//!
//! 1. **Start a payment**: [`start`] says how the user pays an invoice — a
//!    page to open (the mock checkout, the Robokassa pay link) or a
//!    Telegram Stars invoice (sent into the chat for a one-off purchase; an
//!    invoice link for a subscription, the only way Telegram sells one).
//! 2. **Verify a callback**: each adapter checks its own provider's proof —
//!    an HMAC header over a JSON body ([`mock::MockProvider::verify`]), a
//!    signed form ([`robokassa::verify_result`]), a Telegram update behind
//!    the webhook secret ([`stars::proof`]). Their inputs have nothing in
//!    common, so there is no shared signature; their output is: a
//!    [`crate::store::PaymentProof`], which the store credits in its one billing
//!    transaction, exactly once, whoever proved it.
//! 3. **Charge again** for a renewal: [`RecurringCharge::charge_again`]
//!    with the [`RenewalMethod`] the provider gave with the first payment
//!    (saved on that invoice). [`Renewals`] routes a method to its
//!    provider. Stars subscriptions are charged by Telegram itself.

use std::future::Future;

use crate::domain::DomainError;
use crate::domain::invoice::{Invoice, Provider};
use crate::domain::subscription::RenewalMethod;
use crate::store::StoreError;

pub mod mock;
pub mod robokassa;
pub mod stars;

/// How the user pays an invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentStart {
    /// A page to open; the bot shows it as a pay button.
    Page(url::Url),
    /// A Telegram Stars invoice for `stars`, its payload our invoice id.
    /// With `subscription_period` (seconds) it is a Stars subscription,
    /// which Telegram only sells through an invoice link
    /// (`createInvoiceLink`); without, the bot sends it (`sendInvoice`).
    Stars {
        payload: String,
        stars: u32,
        subscription_period: Option<u32>,
    },
    /// Nothing to pay: the invoice was created paid.
    Nothing,
}

/// How to pay `invoice`; pages are served under `public_base_url`.
pub fn start(invoice: &Invoice, public_base_url: &str) -> Result<PaymentStart, DomainError> {
    let page = |path: &str| {
        let url = format!(
            "{}/payments/{path}/{}",
            public_base_url.trim_end_matches('/'),
            invoice.id
        );
        url::Url::parse(&url)
            .map(PaymentStart::Page)
            .map_err(|e| DomainError::invalid("PUBLIC_BASE_URL", e.to_string()))
    };
    match invoice.provider {
        Provider::Mock => page("mock/checkout"),
        Provider::Robokassa => page("robokassa/pay"),
        Provider::TelegramStars => Ok(PaymentStart::Stars {
            payload: invoice.id.to_string(),
            stars: stars::stars_due(invoice)?,
            subscription_period: invoice.recurring.then_some(stars::SUBSCRIPTION_PERIOD_SECONDS),
        }),
        Provider::Free => Ok(PaymentStart::Nothing),
    }
}

/// What a provider said to a charge of a kept payment method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// Taken for processing; the provider's callback confirms the payment
    /// later and credits it (Robokassa). `provider_ref` is its id.
    Accepted { provider_ref: String },
    /// Paid, and already credited through the provider's callback path.
    Paid { provider_ref: String },
    /// The card or account refused; charging again will not change that
    /// by itself (dunning may try later).
    Declined { reason: String },
    /// The provider could not answer now; the same charge may be retried
    /// (it names the same invoice, so it is never credited twice).
    Unavailable { reason: String },
}

/// Why a charge could not even be asked for.
#[derive(Debug, thiserror::Error)]
pub enum ChargeError {
    /// This deployment cannot charge the method: a Stars subscription
    /// (Telegram charges it), or a provider that is not configured.
    #[error("cannot charge a {provider} renewal here: {reason}")]
    NotChargeable {
        provider: &'static str,
        reason: &'static str,
    },
    /// The invoice is not one this charge can pay.
    #[error("invoice {invoice} cannot be charged: {reason}")]
    Invoice { invoice: String, reason: String },
    /// The provider refused the request itself (signature, fields): a
    /// configuration or programming error, not the payer's card.
    #[error("the provider refused the charge request: {0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ChargeError {
    /// Whether asking again may work (only a store failure can pass).
    pub fn is_retryable(&self) -> bool {
        match self {
            ChargeError::Store(err) => err.is_retryable(),
            _ => false,
        }
    }

    fn invoice(invoice: &Invoice, reason: impl Into<String>) -> Self {
        ChargeError::Invoice {
            invoice: invoice.id.to_string(),
            reason: reason.into(),
        }
    }

    /// The invoice must be issued for the method's provider.
    fn check_provider(invoice: &Invoice, method: &RenewalMethod) -> Result<(), Self> {
        if invoice.provider != method.provider() {
            return Err(Self::invoice(
                invoice,
                format!(
                    "issued for {}, the method is {}'s",
                    invoice.provider.as_str(),
                    method.provider().as_str()
                ),
            ));
        }
        Ok(())
    }
}

/// Charging a kept payment method again, for a renewal invoice.
pub trait RecurringCharge {
    /// Asks the provider to pay `invoice` (pending, issued for the
    /// method's provider, at its amount due) with `method`. Repeating the
    /// call for the same invoice never pays it twice.
    fn charge_again(
        &self,
        method: &RenewalMethod,
        invoice: &Invoice,
    ) -> impl Future<Output = Result<ChargeOutcome, ChargeError>> + Send;
}

/// The providers this deployment can charge again, chosen by the method.
#[derive(Debug, Clone, Default)]
pub struct Renewals {
    pub mock: Option<mock::MockRecurring>,
    pub robokassa: Option<robokassa::RobokassaRecurring>,
}

impl Renewals {
    /// The providers configured by `lookup` (environment and secrets): the
    /// mock's recurring API when `MOCK_PROVIDER_SECRET` is set (served
    /// under `PUBLIC_BASE_URL`), Robokassa when `ROBOKASSA_LOGIN` is.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        store: &crate::store::Store,
        http: reqwest::Client,
    ) -> Result<Self, String> {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mock = match (var("MOCK_PROVIDER_SECRET"), var("PUBLIC_BASE_URL")) {
            (Some(secret), Some(base)) => Some(mock::MockRecurring::new(
                mock::MockProvider::new(secret)?,
                &base,
                http.clone(),
            )?),
            _ => None,
        };
        let robokassa = match var("ROBOKASSA_LOGIN") {
            Some(_) => Some(robokassa::RobokassaRecurring::new(
                robokassa::RobokassaConfig::from_lookup(&lookup).map_err(|e| format!("Robokassa: {e}"))?,
                http,
                store.clone(),
            )),
            None => None,
        };
        Ok(Self { mock, robokassa })
    }

    /// Whether this deployment can charge `method` again (its provider is
    /// configured; Stars never: Telegram charges those).
    pub fn can_charge(&self, method: &RenewalMethod) -> bool {
        match method {
            RenewalMethod::Mock { .. } => self.mock.is_some(),
            RenewalMethod::Robokassa { .. } => self.robokassa.is_some(),
            RenewalMethod::TelegramStars { .. } => false,
        }
    }
}

impl RecurringCharge for Renewals {
    async fn charge_again(&self, method: &RenewalMethod, invoice: &Invoice) -> Result<ChargeOutcome, ChargeError> {
        let disabled = |provider: Provider| ChargeError::NotChargeable {
            provider: provider.as_str(),
            reason: "the provider is not configured",
        };
        match method {
            RenewalMethod::Mock { .. } => {
                let mock = self.mock.as_ref().ok_or_else(|| disabled(Provider::Mock))?;
                mock.charge_again(method, invoice).await
            }
            RenewalMethod::Robokassa { .. } => {
                let robokassa = self.robokassa.as_ref().ok_or_else(|| disabled(Provider::Robokassa))?;
                robokassa.charge_again(method, invoice).await
            }
            RenewalMethod::TelegramStars { .. } => Err(ChargeError::NotChargeable {
                provider: Provider::TelegramStars.as_str(),
                reason: "Telegram charges Stars subscriptions itself",
            }),
        }
    }
}
