use std::fmt::Debug;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::domain::DomainError;

/// Everything a store operation can answer besides success. Each variant
/// knows whether retrying the same call can help.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("promo code refused: {0}")]
    Promo(#[from] crate::domain::promo::PromoRejection),
    #[error("idempotency key {key:?} was already used for a different request")]
    KeyReused { key: String },
    #[error("{what} not found")]
    NotFound { what: String },
    /// One of the caller's own transaction items had its condition fail
    /// (e.g. an invoice that is no longer pending). `index` counts from the
    /// first extra item the caller passed.
    #[error("condition of extra transaction item {index} failed")]
    ExtraConditionFailed {
        index: usize,
        /// The item as it was, if the caller asked for `ALL_OLD`.
        item: Option<Box<super::item::Item>>,
    },
    #[error("too many concurrent writes to {what}; try again")]
    Contention { what: String },
    #[error("DynamoDB {operation} is unavailable: {message}")]
    Unavailable { operation: &'static str, message: String },
    #[error("DynamoDB {operation} rejected the request: {message}")]
    Rejected { operation: &'static str, message: String },
    #[error("stored {what} is malformed: {detail}")]
    Corrupt { what: String, detail: String },
}

impl StoreError {
    /// True when the same call may succeed later (throttling, a network
    /// fault, lost races); false when it would fail the same way.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Contention { .. } | StoreError::Unavailable { .. })
    }

    pub fn corrupt(what: impl Into<String>, detail: impl ToString) -> Self {
        StoreError::Corrupt {
            what: what.into(),
            detail: detail.to_string(),
        }
    }

    /// Sorts an SDK error into "try again" and "don't".
    pub fn from_sdk<E, R>(operation: &'static str, err: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: Debug,
    {
        let retryable = match &err {
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
            SdkError::ServiceError(service) => matches!(
                service.err().code(),
                Some(
                    "ThrottlingException"
                        | "ProvisionedThroughputExceededException"
                        | "RequestLimitExceeded"
                        | "InternalServerError"
                        | "ServiceUnavailable"
                        | "TransactionInProgressException"
                )
            ),
            _ => false,
        };
        let message = DisplayErrorContext(&err).to_string();
        if retryable {
            StoreError::Unavailable { operation, message }
        } else {
            StoreError::Rejected { operation, message }
        }
    }
}
