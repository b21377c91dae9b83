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

use chrono::{DateTime, Duration, Utc};
use hmac::{KeyInit, Mac};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::domain::invoice::Provider;
use crate::domain::{Currency, InvoiceId, Money};
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
    /// True for a charge the provider made on its own (a renewal).
    #[serde(default)]
    pub recurring: bool,
}

impl MockEvent {
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
        })
    }
}

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
        self.mac(timestamp, body)
            .verify_slice(&signature)
            .map_err(|_| MockError::BadSignature)?;
        let sent = DateTime::from_timestamp(timestamp, 0).ok_or(MockError::Stale)?;
        if (now - sent).abs() > REPLAY_WINDOW {
            return Err(MockError::Stale);
        }
        serde_json::from_slice(body).map_err(|e| MockError::Malformed { reason: e.to_string() })
    }

    /// A signed callback for `event` as the provider would send it.
    pub fn callback(&self, event: &MockEvent, at: DateTime<Utc>) -> (String, Vec<u8>) {
        let body = serde_json::to_vec(event).expect("a mock event always serializes");
        (self.sign(&body, at), body)
    }
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
    fn secrets_are_long_enough_and_never_printed() {
        assert!(MockProvider::new("short").is_err());
        assert!(!format!("{:?}", provider()).contains("0123456789abcdef"));
    }
}
