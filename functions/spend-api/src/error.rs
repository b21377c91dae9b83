//! Every way a spend API request can fail, and the one place each becomes
//! an HTTP answer: `{"error": {"code", "message"}}` with a stable code.

use http::{Response, StatusCode};
use serde_json::json;
use tokenbill::domain::DomainError;
use tokenbill::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable: callers match on it. Listed in `docs/openapi.yaml`.
    pub code: &'static str,
    pub message: String,
    /// Seconds, for 429 and 503 answers.
    pub retry_after: Option<u64>,
    /// Extra fields beside code and message (e.g. the available balance).
    pub details: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            details: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send a valid service key: Authorization: Bearer tbk_...",
        )
    }

    pub fn rate_limited(what: &str, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many requests for this {what}; retry after {retry_after} s"),
            )
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }

    fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    /// Maps a store failure; `not_found` is the code for the thing the
    /// request named (a user, a hold, a transaction).
    pub fn from_store(err: StoreError, not_found: &'static str) -> Self {
        match err {
            StoreError::Domain(err) => Self::from(err),
            StoreError::NotFound { what } => Self::not_found(not_found, format!("{what} not found")),
            StoreError::KeyReused { .. } => Self::new(
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request",
            ),
            err if err.is_retryable() => {
                tracing::warn!(error = %err, "spend API request can be retried");
                Self::unavailable("the store is busy or unreachable; retry with the same Idempotency-Key")
            }
            err => {
                tracing::error!(error = %err, "spend API request failed");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
            }
        }
    }

    pub fn into_response(self) -> Response<String> {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, message = %self.message, "spend API error");
        } else {
            tracing::info!(code = self.code, status = self.status.as_u16(), "spend API refused");
        }
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(serde_json::Value::Object(details)) = self.details {
            for (name, value) in details {
                error[name] = value;
            }
        }
        let mut response = crate::json_response(self.status, &json!({ "error": error }));
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(seconds));
        }
        response
    }
}

impl From<DomainError> for ApiError {
    fn from(err: DomainError) -> Self {
        let conflict = |code, message: String| ApiError::new(StatusCode::CONFLICT, code, message);
        match err {
            DomainError::InsufficientTokens { available, requested } => ApiError::new(
                StatusCode::PAYMENT_REQUIRED,
                "insufficient_tokens",
                format!("{requested} tokens requested, {available} available"),
            )
            .with_details(json!({ "available": available.get(), "requested": requested.get() })),
            DomainError::HoldExpired { hold_id } => conflict(
                "hold_expired",
                format!("hold {hold_id} expired; its tokens were given back"),
            ),
            DomainError::HoldNotActive { hold_id, status } => {
                conflict("hold_not_active", format!("hold {hold_id} is already {status}"))
            }
            DomainError::CaptureExceedsHold { held, requested } => {
                conflict("capture_exceeds_hold", format!("{requested} requested, {held} held"))
                    .with_details(json!({ "held": held.get() }))
            }
            DomainError::RefundExceedsRemaining { remaining, requested } => conflict(
                "refund_exceeds_remaining",
                format!("{requested} requested, {remaining} left to refund"),
            )
            .with_details(json!({ "refundable": remaining.get() })),
            DomainError::NotRefundable { tx_id, kind } => conflict(
                "not_refundable",
                format!("transaction {tx_id} is a {kind}; only spends and captures can be refunded"),
            ),
            DomainError::ZeroTokens | DomainError::TokenOverflow => {
                ApiError::bad_request("invalid_amount", err.to_string())
            }
            other => ApiError::bad_request("invalid_field", other.to_string()),
        }
    }
}
