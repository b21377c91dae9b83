//! Running a `TransactWriteItems` and reading why it was cancelled.

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{CancellationReason, TransactWriteItem};

use super::item::Item;
use super::{Store, StoreError};

const CONDITION_FAILED: &str = "ConditionalCheckFailed";
/// Attempts while the only reason for cancelling is a conflict with another
/// transaction (real DynamoDB; DynamoDB Local serialises instead).
const CONFLICT_ATTEMPTS: u32 = 8;

/// Why DynamoDB cancelled a transaction, one reason per item.
#[derive(Debug, Clone)]
pub struct Cancelled(Vec<CancellationReason>);

impl Cancelled {
    /// Did item `index`'s condition fail?
    pub fn failed(&self, index: usize) -> bool {
        self.0.get(index).and_then(CancellationReason::code) == Some(CONDITION_FAILED)
    }

    /// The item as it was, when its condition failed (`ALL_OLD`).
    pub fn old_item(&self, index: usize) -> Option<Item> {
        self.0.get(index).and_then(|reason| reason.item().cloned())
    }

    pub fn first_failed(&self, from: usize) -> Option<usize> {
        (from..self.0.len()).find(|&index| self.failed(index))
    }

    fn any_condition_failed(&self) -> bool {
        self.first_failed(0).is_some()
    }
}

impl Store {
    /// Writes `items` atomically. `Ok(Err(cancelled))` when a condition
    /// failed; conflicts with concurrent transactions are retried here.
    pub(crate) async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<Result<(), Cancelled>, StoreError> {
        for attempt in 0..CONFLICT_ATTEMPTS {
            let outcome = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await;
            let cancelled = match outcome {
                Ok(_) => return Ok(Ok(())),
                Err(err) => match err.as_service_error() {
                    Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => {
                        Cancelled(cancelled.cancellation_reasons().to_vec())
                    }
                    _ => return Err(StoreError::from_sdk("TransactWriteItems", err)),
                },
            };
            if cancelled.any_condition_failed() {
                return Ok(Err(cancelled));
            }
            backoff(attempt).await;
        }
        Err(StoreError::Contention {
            what: "transaction".into(),
        })
    }
}

/// Full-jitter exponential backoff, capped at 100 ms.
pub(crate) async fn backoff(attempt: u32) {
    use rand::Rng;
    let ceiling_ms = 2u64.saturating_mul(1 << attempt.min(6)).min(100);
    let wait = rand::rng().random_range(0..=ceiling_ms);
    tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
}
