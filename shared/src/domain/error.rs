use super::{Currency, Tokens};

/// A rule of the domain was broken. None of these is helped by a retry:
/// the same input breaks the same rule again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("insufficient tokens: {requested} requested, {available} available")]
    InsufficientTokens { available: Tokens, requested: Tokens },
    #[error("token amount must be positive")]
    ZeroTokens,
    #[error("token arithmetic overflowed")]
    TokenOverflow,
    #[error("invalid amount {amount} for {currency}: {reason}")]
    InvalidMoney {
        amount: String,
        currency: Currency,
        reason: &'static str,
    },
    #[error("currency mismatch: {left} vs {right}")]
    CurrencyMismatch { left: Currency, right: Currency },
    #[error("unknown currency {0:?}")]
    UnknownCurrency(String),
    #[error("invoice cannot go from {from} on {event}")]
    InvalidInvoiceTransition { from: &'static str, event: &'static str },
    #[error("invalid {what}: {reason}")]
    InvalidValue { what: &'static str, reason: String },
    #[error("hold {hold_id} is {status}, not active")]
    HoldNotActive { hold_id: String, status: &'static str },
    #[error("hold {hold_id} expired")]
    HoldExpired { hold_id: String },
    #[error("capture of {requested} exceeds the {held} tokens held")]
    CaptureExceedsHold { held: Tokens, requested: Tokens },
    #[error("refund of {requested} exceeds the {remaining} tokens left to refund")]
    RefundExceedsRemaining { remaining: Tokens, requested: Tokens },
    #[error("transaction {tx_id} ({kind}) cannot be refunded")]
    NotRefundable { tx_id: String, kind: &'static str },
    /// A provider reported a payment that is not what the invoice asked for.
    #[error("payment for invoice {invoice} does not match it: {reason}")]
    PaymentMismatch { invoice: String, reason: String },
}

impl DomainError {
    /// Domain rules are deterministic: retrying the same input cannot help.
    pub fn is_retryable(&self) -> bool {
        false
    }

    pub fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidValue {
            what,
            reason: reason.into(),
        }
    }
}
