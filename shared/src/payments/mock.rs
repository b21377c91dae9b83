//! The mock provider: a stand-in payment provider for development and
//! tests that behaves like a real one. Its checkout page is served by the
//! payment-webhook function; its callbacks are signed the way real
//! providers sign theirs, so the verification path is the real one.
//!
//! Callback: `POST /payments/mock/callback` with a JSON [`MockEvent`] and
//! the header `Mock-Signature: t=<unix seconds>,v1=<hex>`, where `<hex>` is
//! HMAC-SHA256 with the shared secret over `"<t>.<exact body>"`. A
//! timestamp outside the replay window is refused, so a captured callback
//! cannot be replayed later; inside it, a replay is harmless because
//! crediting is idempotent.
//!
//! Recurring charges, like a real provider's: paying on the checkout page
//! may save the card, and the provider then hands back a recurring token
//! in its callback (`recurring_token`). A token is minted with the outcome
//! every later charge of it gets — `approve`, `decline` or `unavailable` —
//! the way providers' test card numbers work, so tests and `make dev`
//! choose how a renewal ends. The token carries a MAC over that outcome
//! and the customer, so the provider recognises its own tokens without
//! storing them and refuses them for anyone else. A charge is
//! `POST /payments/mock/recurring` with a signed [`MockCharge`];
//! [`MockRecurring`] is its client.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use hmac::{KeyInit, Mac};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{ChargeError, ChargeOutcome, RecurringCharge};
use crate::clock::{Clock, SystemClock};
use crate::domain::invoice::{Invoice, Provider};
use crate::domain::subscription::RenewalMethod;
use crate::domain::{Currency, InvoiceId, Money, UserId};
use crate::store::PaymentProof;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

pub const SIGNATURE_HEADER: &str = "mock-signature";
/// How far a callback's timestamp may be from now, either way.
pub const REPLAY_WINDOW: Duration = Duration::minutes(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MockEventKind {
    #[serde(rename = "payment.succeeded")]
    Succeeded,
    #[serde(rename = "payment.declined")]
    Declined,
}

/// The body of a mock callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockEvent {
    pub event: MockEventKind,
    pub invoice_id: InvoiceId,
    /// The provider's id of the payment.
    pub payment_id: String,
    /// As a string, the way providers send money (`"199.00"`).
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    pub currency: String,
    /// True for a charge of a saved card (a renewal), not a checkout.
    #[serde(default)]
    pub recurring: bool,
    /// The saved card's token, when the payer saved it for renewals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurring_token: Option<String>,
}

impl MockEvent {
    /// The checkout payment of `invoice` in full, as the checkout page
    /// reports it (payment id `pay_<invoice>`).
    pub fn paying(invoice: &Invoice) -> MockEvent {
        MockEvent {
            event: MockEventKind::Succeeded,
            invoice_id: invoice.id.clone(),
            payment_id: format!("pay_{}", invoice.id),
            amount: invoice.amount_due.amount(),
            currency: invoice.amount_due.currency().code().to_owned(),
            recurring: false,
            recurring_token: None,
        }
    }

    /// What a succeeded event proves, checked against the invoice later.
    pub fn proof(&self) -> Result<PaymentProof, MockError> {
        let currency: Currency = self.currency.parse().map_err(|_| MockError::Malformed {
            reason: format!("unknown currency {:?}", self.currency),
        })?;
        let amount = Money::new(self.amount, currency).map_err(|e| MockError::Malformed { reason: e.to_string() })?;
        Ok(PaymentProof {
            invoice_id: self.invoice_id.clone(),
            provider: Provider::Mock,
            amount,
            provider_ref: Some(self.payment_id.clone()),
            renewal: self
                .recurring_token
                .clone()
                .map(|recurring_token| RenewalMethod::Mock { recurring_token }),
        })
    }
}

/// How a saved mock card answers every charge, chosen when it is saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CardBehaviour {
    /// Charges are paid.
    Approve,
    /// Charges are declined (`card declined`).
    Decline,
    /// The provider answers `503`, as if down: retryable.
    Unavailable,
}

impl CardBehaviour {
    pub const ALL: [CardBehaviour; 3] = [Self::Approve, Self::Decline, Self::Unavailable];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Decline => "decline",
            Self::Unavailable => "unavailable",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.as_str() == text)
    }
}

/// `POST /payments/mock/recurring`, signed like a callback: charge a saved
/// card for one of our invoices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockCharge {
    pub invoice_id: InvoiceId,
    pub recurring_token: String,
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    pub currency: String,
}

/// The provider's `200` answer to a charge; an unavailable provider
/// answers `503` instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum MockChargeAnswer {
    /// Paid; the provider's callback has credited it.
    Paid {
        payment_id: String,
    },
    Declined {
        reason: String,
    },
}

/// The payment id of a saved card's charge for `invoice`: one per invoice,
/// so charging an invoice twice pays it once.
pub fn recurring_payment_id(invoice: &InvoiceId) -> String {
    format!("mock_rec_{invoice}")
}

/// Tag bytes kept from a token's MAC (128 bits).
const TOKEN_MAC_BYTES: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MockError {
    #[error("missing or malformed {SIGNATURE_HEADER} header")]
    MissingSignature,
    #[error("signature does not match")]
    BadSignature,
    #[error("timestamp outside the replay window")]
    Stale,
    #[error("malformed callback: {reason}")]
    Malformed { reason: String },
}

/// The mock provider's shared secret. Never printed.
#[derive(Clone)]
pub struct MockProvider {
    secret: Vec<u8>,
}

impl std::fmt::Debug for MockProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockProvider").field("secret", &"<redacted>").finish()
    }
}

impl MockProvider {
    pub fn new(secret: impl Into<Vec<u8>>) -> Result<Self, String> {
        let secret = secret.into();
        if secret.len() < 16 {
            return Err("the mock provider secret must be at least 16 bytes".into());
        }
        Ok(Self { secret })
    }

    fn mac(&self, timestamp: i64, body: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("HMAC takes a key of any length");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The signature header for `body` sent at `at` (what the provider does).
    pub fn sign(&self, body: &[u8], at: DateTime<Utc>) -> String {
        let timestamp = at.timestamp();
        let digest = self.mac(timestamp, body).finalize().into_bytes();
        format!("t={timestamp},v1={}", hex::encode(digest))
    }

    /// Checks the signature and the replay window, then parses the body.
    pub fn verify(&self, header: Option<&str>, body: &[u8], now: DateTime<Utc>) -> Result<MockEvent, MockError> {
        let (timestamp, signature) = parse_header(header.ok_or(MockError::MissingSignature)?)?;
        self.check(timestamp, &signature, body, now)?;
        serde_json::from_slice(body).map_err(|e| MockError::Malformed { reason: e.to_string() })
    }

    /// A signed callback for `event` as the provider would send it.
    pub fn callback(&self, event: &MockEvent, at: DateTime<Utc>) -> (String, Vec<u8>) {
        let body = serde_json::to_vec(event).expect("a mock event always serializes");
        (self.sign(&body, at), body)
    }

    /// The MAC of a card token; the `card.` prefix keeps it apart from
    /// callback signatures, whose signed text starts with digits.
    fn card_mac(&self, behaviour: CardBehaviour, nonce: &str, user: UserId) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("HMAC takes a key of any length");
        mac.update(format!("card.{}.{nonce}.{user}", behaviour.as_str()).as_bytes());
        mac
    }

    /// Saves `user`'s card: a recurring token whose charges all get
    /// `behaviour`, `mtok_<behaviour>_<nonce>_<mac>`.
    pub fn mint_token(&self, user: UserId, behaviour: CardBehaviour) -> String {
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let tag = self.card_mac(behaviour, &nonce, user).finalize().into_bytes();
        format!(
            "mtok_{}_{nonce}_{}",
            behaviour.as_str(),
            hex::encode(&tag[..TOKEN_MAC_BYTES])
        )
    }

    /// How `token` answers charges, if this provider minted it for `user`.
    pub fn card(&self, token: &str, user: UserId) -> Option<CardBehaviour> {
        let mut parts = token.strip_prefix("mtok_")?.split('_');
        let (behaviour, nonce, tag) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let behaviour = CardBehaviour::parse(behaviour)?;
        let tag = hex::decode(tag).ok().filter(|tag| tag.len() == TOKEN_MAC_BYTES)?;
        self.card_mac(behaviour, nonce, user)
            .verify_truncated_left(&tag)
            .ok()
            .map(|()| behaviour)
    }

    /// Checks a charge request's signature and replay window, then parses it.
    pub fn verify_charge(
        &self,
        header: Option<&str>,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<MockCharge, MockError> {
        let (timestamp, signature) = parse_header(header.ok_or(MockError::MissingSignature)?)?;
        self.check(timestamp, &signature, body, now)?;
        serde_json::from_slice(body).map_err(|e| MockError::Malformed { reason: e.to_string() })
    }

    fn check(&self, timestamp: i64, signature: &[u8], body: &[u8], now: DateTime<Utc>) -> Result<(), MockError> {
        self.mac(timestamp, body)
            .verify_slice(signature)
            .map_err(|_| MockError::BadSignature)?;
        let sent = DateTime::from_timestamp(timestamp, 0).ok_or(MockError::Stale)?;
        if (now - sent).abs() > REPLAY_WINDOW {
            return Err(MockError::Stale);
        }
        Ok(())
    }
}

/// The client of the mock provider's recurring API: what a renewal calls
/// to charge a saved mock card.
#[derive(Debug, Clone)]
pub struct MockRecurring {
    provider: MockProvider,
    /// `.../payments/mock/recurring`
    url: url::Url,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
}

impl MockRecurring {
    /// The provider served under `public_base_url` (the payment-webhook's
    /// API base, `PUBLIC_BASE_URL`).
    pub fn new(provider: MockProvider, public_base_url: &str, http: reqwest::Client) -> Result<Self, String> {
        let url = format!("{}/payments/mock/recurring", public_base_url.trim_end_matches('/'));
        Ok(Self {
            provider,
            url: url::Url::parse(&url).map_err(|e| format!("mock recurring URL {url:?}: {e}"))?,
            http,
            clock: Arc::new(SystemClock),
        })
    }

    /// Signs with this clock's time (the provider checks its replay window).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

impl RecurringCharge for MockRecurring {
    async fn charge_again(&self, method: &RenewalMethod, invoice: &Invoice) -> Result<ChargeOutcome, ChargeError> {
        let RenewalMethod::Mock { recurring_token } = method else {
            return Err(ChargeError::NotChargeable {
                provider: method.provider().as_str(),
                reason: "the mock provider charges only its own cards",
            });
        };
        ChargeError::check_provider(invoice, method)?;
        let charge = MockCharge {
            invoice_id: invoice.id.clone(),
            recurring_token: recurring_token.clone(),
            amount: invoice.amount_due.amount(),
            currency: invoice.amount_due.currency().code().to_owned(),
        };
        let body = serde_json::to_vec(&charge).expect("a mock charge always serializes");
        let signature = self.provider.sign(&body, self.clock.now());
        let sent = self
            .http
            .post(self.url.clone())
            .header(SIGNATURE_HEADER, signature)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            // Not delivered or no answer: the same charge may be sent again.
            Err(err) => {
                return Ok(ChargeOutcome::Unavailable {
                    reason: err.without_url().to_string(),
                });
            }
        };
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if status.is_server_error() || status.as_u16() == 429 {
            return Ok(ChargeOutcome::Unavailable {
                reason: format!("mock provider answered {status}: {}", shorten(&text)),
            });
        }
        if !status.is_success() {
            return Err(ChargeError::Refused(format!("{status}: {}", shorten(&text))));
        }
        match serde_json::from_str(&text) {
            Ok(MockChargeAnswer::Paid { payment_id }) => Ok(ChargeOutcome::Paid {
                provider_ref: payment_id,
            }),
            Ok(MockChargeAnswer::Declined { reason }) => Ok(ChargeOutcome::Declined { reason }),
            Err(_) => Err(ChargeError::Refused(format!("unexpected answer: {}", shorten(&text)))),
        }
    }
}

fn shorten(text: &str) -> String {
    text.chars().take(200).collect()
}

fn parse_header(header: &str) -> Result<(i64, Vec<u8>), MockError> {
    let mut timestamp = None;
    let mut signature = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<i64>().ok(),
            Some(("v1", value)) => signature = hex::decode(value).ok(),
            _ => {}
        }
    }
    match (timestamp, signature) {
        (Some(t), Some(s)) => Ok((t, s)),
        _ => Err(MockError::MissingSignature),
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    fn provider() -> MockProvider {
        MockProvider::new("0123456789abcdef-test").unwrap()
    }

    fn event() -> MockEvent {
        MockEvent {
            event: MockEventKind::Succeeded,
            invoice_id: InvoiceId::new("inv1").unwrap(),
            payment_id: "pay_1".into(),
            amount: dec!(199.00),
            currency: "RUB".into(),
            recurring: false,
            recurring_token: None,
        }
    }

    #[test]
    fn a_signed_callback_verifies_and_parses() {
        let now = Utc::now();
        let (header, body) = provider().callback(&event(), now);
        assert_eq!(provider().verify(Some(&header), &body, now), Ok(event()));
        let proof = event().proof().unwrap();
        assert_eq!(proof.amount, Money::new(dec!(199), Currency::Rub).unwrap());
        assert_eq!(proof.provider, Provider::Mock);
    }

    #[test]
    fn forged_altered_and_stale_callbacks_are_refused() {
        let now = Utc::now();
        let (header, body) = provider().callback(&event(), now);
        let other = MockProvider::new("another-secret-of-16+").unwrap();
        let (forged, _) = other.callback(&event(), now);
        assert_eq!(
            provider().verify(Some(&forged), &body, now),
            Err(MockError::BadSignature)
        );
        let altered = String::from_utf8(body.clone()).unwrap().replace("199.00", "1.00");
        assert_eq!(
            provider().verify(Some(&header), altered.as_bytes(), now),
            Err(MockError::BadSignature)
        );
        let later = now + REPLAY_WINDOW + Duration::seconds(1);
        assert_eq!(provider().verify(Some(&header), &body, later), Err(MockError::Stale));
        assert_eq!(provider().verify(None, &body, now), Err(MockError::MissingSignature));
        assert_eq!(
            provider().verify(Some("t=1,v1=zz"), &body, now),
            Err(MockError::MissingSignature)
        );
    }

    #[test]
    fn card_tokens_keep_their_behaviour_and_their_customer() {
        let ann = UserId::new(7).unwrap();
        let bob = UserId::new(8).unwrap();
        for behaviour in CardBehaviour::ALL {
            let token = provider().mint_token(ann, behaviour);
            assert!(token.starts_with(&format!("mtok_{}_", behaviour.as_str())), "{token}");
            assert_eq!(provider().card(&token, ann), Some(behaviour));
            assert_eq!(provider().card(&token, bob), None, "another customer's card");
            let other = MockProvider::new("another-secret-of-16+").unwrap();
            assert_eq!(other.card(&token, ann), None, "another provider's card");
        }
        let declining = provider().mint_token(ann, CardBehaviour::Decline);
        let promoted = declining.replacen("decline", "approve", 1);
        assert_eq!(provider().card(&promoted, ann), None, "the behaviour is signed");
        assert_eq!(provider().card("mtok_approve_x", ann), None);
        assert_eq!(provider().card("", ann), None);
        assert_ne!(
            provider().mint_token(ann, CardBehaviour::Approve),
            provider().mint_token(ann, CardBehaviour::Approve),
            "each saved card is its own token"
        );
    }

    #[test]
    fn a_saved_card_becomes_the_proofs_renewal_method() {
        let mut saved = event();
        saved.recurring_token = Some("mtok_t".into());
        assert_eq!(
            saved.proof().unwrap().renewal,
            Some(RenewalMethod::Mock {
                recurring_token: "mtok_t".into()
            })
        );
        // Without a token the body is what it always was (signatures hold).
        let body = String::from_utf8(serde_json::to_vec(&event()).unwrap()).unwrap();
        assert!(!body.contains("recurring_token"), "{body}");
    }

    #[test]
    fn charge_requests_are_signed_like_callbacks() {
        let now = Utc::now();
        let charge = MockCharge {
            invoice_id: InvoiceId::new("inv2").unwrap(),
            recurring_token: "mtok_t".into(),
            amount: dec!(99.00),
            currency: "RUB".into(),
        };
        let body = serde_json::to_vec(&charge).unwrap();
        let header = provider().sign(&body, now);
        assert_eq!(provider().verify_charge(Some(&header), &body, now), Ok(charge));
        let other = MockProvider::new("another-secret-of-16+").unwrap();
        assert_eq!(
            other.verify_charge(Some(&header), &body, now),
            Err(MockError::BadSignature)
        );
        assert_eq!(
            provider().verify_charge(Some(&header), &body, now + Duration::minutes(6)),
            Err(MockError::Stale)
        );
    }

    #[test]
    fn secrets_are_long_enough_and_never_printed() {
        assert!(MockProvider::new("short").is_err());
        assert!(!format!("{:?}", provider()).contains("0123456789abcdef"));
    }
}
