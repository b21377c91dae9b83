//! The notification outbox. A notification is written in the transaction
//! of the change it reports; the notifier claims it, sends it and marks it
//! sent. Until then it sits in the sparse `due` index under `OUTBOX`, so a
//! sweep can publish again whatever a crash or a lost queue message left
//! behind.

use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use chrono::{DateTime, Duration, Utc};

use super::item::{Item, n, parse, record, s};
use super::keys;
use super::{Store, StoreError};
use crate::domain::notification::{Delivery, Notification, NotificationId};

/// How long a committed notification may wait for its first delivery
/// before a sweep publishes it again.
pub const REPUBLISH_AFTER: Duration = Duration::minutes(2);

/// What a claim found.
#[derive(Debug, Clone, PartialEq)]
pub enum NotificationClaim {
    /// This caller sends it now; nobody else will until the lease ends.
    Claimed(Notification),
    /// Sent, dropped, or being sent by someone else: nothing to do.
    NotClaimable,
    Missing,
}

fn epoch_ms(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

impl Store {
    /// The put of a new notification, for the transaction of its cause.
    /// Written only once per id.
    pub fn notification_item(&self, notification: &Notification) -> Result<TransactWriteItem, StoreError> {
        let mut item: Item = record(&keys::notification(&notification.id), "notification", notification)?;
        item.insert(keys::DUE_PK.into(), s(keys::OUTBOX_DUE));
        item.insert(
            keys::DUE_AT.into(),
            n((notification.created_at + REPUBLISH_AFTER).timestamp()),
        );
        let put = Put::builder()
            .table_name(self.table())
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", keys::PK)
            .build()
            .map_err(|e| StoreError::corrupt("notification put", e))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// Records a notification on its own (a cause with nothing else to
    /// write, such as a declined payment). False when it already existed.
    pub async fn add_notification(&self, notification: &Notification) -> Result<bool, StoreError> {
        match self.transact(vec![self.notification_item(notification)?]).await? {
            Ok(()) => Ok(true),
            Err(_) => Ok(false),
        }
    }

    pub async fn notification(&self, id: &NotificationId) -> Result<Option<Notification>, StoreError> {
        self.get_record(&keys::notification(id), "notification", true).await
    }

    /// Takes the notification for sending until `now + lease`, if it is
    /// pending or its last sender's lease ran out.
    pub async fn claim_notification(
        &self,
        id: &NotificationId,
        lease: Duration,
    ) -> Result<NotificationClaim, StoreError> {
        let now = self.now();
        let until = now + lease;
        let result = self
            .client
            .update_item()
            .table_name(self.table())
            .set_key(Some(keys::notification(id).to_item()))
            .update_expression(
                "SET #delivery = :sending, #lease_until = :until, #lease_ms = :until_ms ADD #attempts :one",
            )
            .condition_expression(
                "attribute_exists(#pk) AND (#delivery = :pending OR (#delivery = :sending AND #lease_ms <= :now_ms))",
            )
            .expression_attribute_names("#pk", keys::PK)
            .expression_attribute_names("#delivery", "delivery")
            .expression_attribute_names("#lease_until", "lease_until")
            .expression_attribute_names("#lease_ms", "lease_ms")
            .expression_attribute_names("#attempts", "attempts")
            .expression_attribute_values(":sending", s("sending"))
            .expression_attribute_values(":pending", s("pending"))
            .expression_attribute_values(":until", s(until.to_rfc3339()))
            .expression_attribute_values(":until_ms", n(epoch_ms(until)))
            .expression_attribute_values(":now_ms", n(epoch_ms(now)))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => Ok(NotificationClaim::Claimed(parse(
                "notification",
                output.attributes.unwrap_or_default(),
            )?)),
            Err(err) => match err.as_service_error() {
                Some(e) if e.is_conditional_check_failed_exception() => {
                    let existed = match e {
                        aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(
                            failed,
                        ) => failed.item().is_some_and(|item| !item.is_empty()),
                        _ => false,
                    };
                    Ok(if existed {
                        NotificationClaim::NotClaimable
                    } else {
                        NotificationClaim::Missing
                    })
                }
                _ => Err(StoreError::from_sdk("UpdateItem", err)),
            },
        }
    }

    /// Ends a claimed notification: sent, or dropped on purpose. It leaves
    /// the outbox index.
    pub async fn finish_notification(&self, id: &NotificationId, outcome: Delivery) -> Result<(), StoreError> {
        let (label, sent_at) = match outcome {
            Delivery::Sent => ("sent", s(self.now().to_rfc3339())),
            Delivery::Dropped => ("dropped", AttributeValue::Null(true)),
            Delivery::Pending | Delivery::Sending => {
                return Err(StoreError::corrupt("notification outcome", "must be sent or dropped"));
            }
        };
        self.client
            .update_item()
            .table_name(self.table())
            .set_key(Some(keys::notification(id).to_item()))
            .update_expression("SET #delivery = :outcome, #sent_at = :sent_at REMOVE #due_pk, #due_at, #lease_ms")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", keys::PK)
            .expression_attribute_names("#delivery", "delivery")
            .expression_attribute_names("#sent_at", "sent_at")
            .expression_attribute_names("#due_pk", keys::DUE_PK)
            .expression_attribute_names("#due_at", keys::DUE_AT)
            .expression_attribute_names("#lease_ms", "lease_ms")
            .expression_attribute_values(":outcome", s(label))
            .expression_attribute_values(":sent_at", sent_at)
            .send()
            .await
            .map_err(|e| StoreError::from_sdk("UpdateItem", e))?;
        Ok(())
    }

    /// Gives a claimed notification back (the send failed in a way a retry
    /// may fix); the outbox sweep looks at it again after `retry_at`.
    pub async fn release_notification(&self, id: &NotificationId, retry_at: DateTime<Utc>) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(self.table())
            .set_key(Some(keys::notification(id).to_item()))
            .update_expression("SET #delivery = :pending, #due_at = :retry REMOVE #lease_ms")
            .condition_expression("#delivery = :sending")
            .expression_attribute_names("#delivery", "delivery")
            .expression_attribute_names("#due_at", keys::DUE_AT)
            .expression_attribute_names("#lease_ms", "lease_ms")
            .expression_attribute_values(":pending", s("pending"))
            .expression_attribute_values(":sending", s("sending"))
            .expression_attribute_values(":retry", n(retry_at.timestamp()))
            .send()
            .await
            .map(drop)
            .or_else(|err| match err.as_service_error() {
                // Finished or re-claimed meanwhile: nothing to give back.
                Some(e) if e.is_conditional_check_failed_exception() => Ok(()),
                _ => Err(StoreError::from_sdk("UpdateItem", err)),
            })
    }

    /// Notifications still undelivered whose republish time has come
    /// (from the sparse `due` index: only undelivered ones are in it).
    pub async fn undelivered_notifications(
        &self,
        now: DateTime<Utc>,
        limit: i32,
    ) -> Result<Vec<NotificationId>, StoreError> {
        let notifications: Vec<Notification> = self.due_items(keys::OUTBOX_DUE, now, limit, "notification").await?;
        Ok(notifications.into_iter().map(|notification| notification.id).collect())
    }
}
