//! Every way a payment request can fail, and the one place each becomes
//! an HTTP answer: JSON for API callers, a page for people, plain text for
//! Robokassa.

use http::{Response, StatusCode};
use serde_json::json;
use tokenbill::domain::DomainError;
use tokenbill::payments::mock::MockError;
use tokenbill::payments::robokassa::RobokassaError;
use tokenbill::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No handler for this method and path.
    NoRoute,
    /// Unknown invoice (or other thing named in the request).
    NotFound(String),
    /// A provider this deployment does not configure.
    Disabled(&'static str),
    /// The caller could not prove it is the provider.
    BadSignature(String),
    Malformed(String),
    /// A proven payment that is not what the invoice asked for: nothing is
    /// credited, and a retry would not change that.
    Mismatch(String),
    TooLarge,
    /// DynamoDB (or another dependency) failed in a way a retry may fix.
    Unavailable(String),
    Internal(String),
}

impl Failure {
    pub fn status(&self) -> StatusCode {
        match self {
            Failure::NoRoute | Failure::NotFound(_) | Failure::Disabled(_) => StatusCode::NOT_FOUND,
            Failure::BadSignature(_) => StatusCode::UNAUTHORIZED,
            Failure::Malformed(_) => StatusCode::BAD_REQUEST,
            Failure::Mismatch(_) => StatusCode::CONFLICT,
            Failure::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Failure::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Failure::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable codes callers may match on.
    pub fn code(&self) -> &'static str {
        match self {
            Failure::NoRoute => "no_route",
            Failure::NotFound(_) => "not_found",
            Failure::Disabled(_) => "provider_disabled",
            Failure::BadSignature(_) => "bad_signature",
            Failure::Malformed(_) => "malformed",
            Failure::Mismatch(_) => "payment_mismatch",
            Failure::TooLarge => "body_too_large",
            Failure::Unavailable(_) => "unavailable",
            Failure::Internal(_) => "internal",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Failure::NotFound(m)
            | Failure::BadSignature(m)
            | Failure::Malformed(m)
            | Failure::Mismatch(m)
            | Failure::Unavailable(m)
            | Failure::Internal(m) => m,
            Failure::TooLarge => "the body is too large",
            Failure::NoRoute => "no such route",
            Failure::Disabled(message) => message,
        }
    }

    fn log(&self) {
        match self {
            Failure::Unavailable(_) | Failure::Internal(_) => {
                tracing::error!(code = self.code(), message = self.message(), "payment request failed")
            }
            _ => tracing::warn!(code = self.code(), message = self.message(), "payment request refused"),
        }
    }

    /// `{"error":{"code","message"}}`.
    pub fn json(&self) -> Response<String> {
        self.log();
        let body = json!({ "error": { "code": self.code(), "message": self.message() } });
        crate::respond(self.status(), "application/json", body.to_string())
    }

    /// A page for a person in a browser.
    pub fn page(&self) -> Response<String> {
        self.log();
        let text = match self {
            Failure::NotFound(_) => "This payment link is not valid.",
            Failure::Disabled(_) => "This payment method is not available.",
            Failure::Unavailable(_) | Failure::Internal(_) => "Something went wrong on our side. Please try again.",
            _ => "This payment cannot be completed.",
        };
        crate::respond(
            self.status(),
            "text/html; charset=utf-8",
            crate::pages::message("Payment", text, None),
        )
    }

    /// Plain text, as Robokassa reads its ResultURL answers: anything but
    /// `OK{InvId}` is a refusal and Robokassa calls again later. A retry
    /// may fix what answers 5xx; every other refusal is a 400 (404 for a
    /// provider that is not enabled), its body the code.
    pub fn text(&self) -> Response<String> {
        self.log();
        let status = match self {
            Failure::Unavailable(_) | Failure::Internal(_) | Failure::Disabled(_) | Failure::NoRoute => self.status(),
            _ => StatusCode::BAD_REQUEST,
        };
        crate::respond(status, "text/plain; charset=utf-8", self.code().to_owned())
    }
}

impl From<StoreError> for Failure {
    fn from(err: StoreError) -> Self {
        if err.is_retryable() {
            return Failure::Unavailable(err.to_string());
        }
        match err {
            StoreError::NotFound { what } => Failure::NotFound(format!("{what} not found")),
            StoreError::Domain(DomainError::PaymentMismatch { .. }) => Failure::Mismatch(err.to_string()),
            StoreError::Domain(_) | StoreError::Promo(_) | StoreError::KeyReused { .. } => {
                Failure::Malformed(err.to_string())
            }
            other => Failure::Internal(other.to_string()),
        }
    }
}

impl From<RobokassaError> for Failure {
    fn from(err: RobokassaError) -> Self {
        if err.is_retryable() {
            return Failure::Unavailable(err.to_string());
        }
        match err {
            RobokassaError::BadSignature => Failure::BadSignature(err.to_string()),
            RobokassaError::MissingField(_) | RobokassaError::InvalidField { .. } => {
                Failure::Malformed(err.to_string())
            }
            RobokassaError::BadAmount { .. } => Failure::Mismatch(err.to_string()),
            _ => Failure::Internal(err.to_string()),
        }
    }
}

impl From<MockError> for Failure {
    fn from(err: MockError) -> Self {
        match err {
            MockError::Malformed { .. } => Failure::Malformed(err.to_string()),
            _ => Failure::BadSignature(err.to_string()),
        }
    }
}
