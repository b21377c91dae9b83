//! Telegram update de-duplication.
//!
//! An update is claimed before it is handled (a lease, so a crashed
//! handler never blocks the redelivery for long), marked done after, and
//! released when handling fails, so Telegram's retry is never blocked.

use aws_sdk_dynamodb::types::{ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update};
use chrono::Duration;

use super::item::{n, s};
use super::keys;
use super::{Store, StoreError};

/// How long a claim keeps redeliveries away while its handler runs.
pub const UPDATE_LEASE: Duration = Duration::seconds(60);
/// How long a handled update id is remembered (Telegram gives up on
/// redelivery well before).
pub const UPDATE_MEMORY: Duration = Duration::days(7);

/// How an update is claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimMode {
    /// For updates that change state: leased while handled, marked done in
    /// the same transaction as their effect (or after, when they had none).
    Lease,
    /// For updates that only display: done at once. Should the handler
    /// crash, the display is lost and the user asks again; a retryable
    /// failure still releases the claim.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This call handles the update.
    Acquired,
    /// It was handled before: do nothing.
    Done,
    /// Another call is handling it right now.
    InProgress,
}

impl Store {
    pub async fn claim_update(&self, update_id: u32, mode: ClaimMode) -> Result<Claim, StoreError> {
        let now = self.now();
        let result = self
            .client
            .put_item()
            .table_name(self.table())
            .set_item(Some({
                let mut item = keys::telegram_update(update_id).to_item();
                item.insert(keys::ENTITY.into(), s("telegram_update"));
                item.insert(
                    "status".into(),
                    s(if mode == ClaimMode::Lease {
                        "in_progress"
                    } else {
                        "done"
                    }),
                );
                item.insert("lease_until".into(), n((now + UPDATE_LEASE).timestamp_millis()));
                item.insert(keys::TTL.into(), n((now + UPDATE_MEMORY).timestamp()));
                item
            }))
            .condition_expression("attribute_not_exists(#pk) OR (#status = :in_progress AND #lease < :now)")
            .expression_attribute_names("#pk", keys::PK)
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#lease", "lease_until")
            .expression_attribute_values(":in_progress", s("in_progress"))
            .expression_attribute_values(":now", n(now.timestamp_millis()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(Claim::Acquired),
            Err(err) => match err.as_service_error() {
                Some(aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(failed)) => {
                    let done = failed
                        .item()
                        .and_then(|item| item.get("status"))
                        .and_then(|v| v.as_s().ok())
                        == Some(&"done".to_owned());
                    Ok(if done { Claim::Done } else { Claim::InProgress })
                }
                _ => Err(StoreError::from_sdk("PutItem", err)),
            },
        }
    }

    /// Marks a leased update done, as one more item of the transaction that
    /// carries its effect.
    pub fn complete_update_item(&self, update_id: u32) -> Result<TransactWriteItem, StoreError> {
        let update = Update::builder()
            .table_name(self.table())
            .set_key(Some(keys::telegram_update(update_id).to_item()))
            .update_expression("SET #status = :done REMOVE #lease")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#lease", "lease_until")
            .expression_attribute_values(":done", s("done"))
            .build()
            .map_err(|e| StoreError::corrupt("update mark", e))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// Marks a leased update done when it had no effect to carry the mark.
    pub async fn complete_update(&self, update_id: u32) -> Result<(), StoreError> {
        self.write_all(vec![self.complete_update_item(update_id)?]).await
    }

    /// Gives the update up so that Telegram's redelivery handles it.
    pub async fn release_update(&self, update_id: u32) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(self.table())
            .set_key(Some(keys::telegram_update(update_id).to_item()))
            .send()
            .await
            .map(|_| ())
            .or_else(|err| match err.as_service_error() {
                Some(e) if e.is_conditional_check_failed_exception() => Ok(()),
                _ => Err(StoreError::from_sdk("DeleteItem", err)),
            })
    }
}
