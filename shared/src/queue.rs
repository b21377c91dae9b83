//! Publishing notifications to the SQS queue the notifier reads.
//!
//! A message only names a notification; the notification itself is in the
//! table, written with its cause. Publishing twice is harmless (the
//! notifier claims before it sends), and a message that never got out is
//! published again by [`republish_undelivered`].

use serde::{Deserialize, Serialize};

use crate::domain::notification::NotificationId;
use crate::store::{Store, StoreError};

/// The body of a queue message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueMessage {
    pub notification: NotificationId,
}

/// SQS takes at most ten messages per batch.
const BATCH: usize = 10;

#[derive(Debug, Clone)]
pub struct NotificationQueue {
    sqs: aws_sdk_sqs::Client,
    url: String,
}

impl NotificationQueue {
    pub fn new(sqs: aws_sdk_sqs::Client, url: impl Into<String>) -> Self {
        Self { sqs, url: url.into() }
    }

    /// The queue named by `NOTIFICATION_QUEUE_URL` (the template sets it).
    pub fn from_env(sqs: aws_sdk_sqs::Client) -> Result<Self, String> {
        let url = std::env::var("NOTIFICATION_QUEUE_URL").map_err(|_| "NOTIFICATION_QUEUE_URL is not set")?;
        Ok(Self::new(sqs, url))
    }

    pub fn sqs(&self) -> &aws_sdk_sqs::Client {
        &self.sqs
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends one message per notification. Failures are retryable errors;
    /// the outbox keeps the notifications either way.
    pub async fn publish(&self, ids: &[NotificationId]) -> Result<(), StoreError> {
        for chunk in ids.chunks(BATCH) {
            let mut batch = self.sqs.send_message_batch().queue_url(&self.url);
            for (index, id) in chunk.iter().enumerate() {
                let body = serde_json::to_string(&QueueMessage {
                    notification: id.clone(),
                })
                .map_err(|e| StoreError::corrupt("queue message", e))?;
                batch = batch.entries(
                    aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                        .id(index.to_string())
                        .message_body(body)
                        .build()
                        .map_err(|e| StoreError::corrupt("queue message", e))?,
                );
            }
            let output = batch.send().await.map_err(|e| StoreError::Unavailable {
                operation: "SendMessageBatch",
                message: aws_sdk_sqs::error::DisplayErrorContext(&e).to_string(),
            })?;
            if let Some(failed) = output.failed.first() {
                return Err(StoreError::Unavailable {
                    operation: "SendMessageBatch",
                    message: format!(
                        "{} of {} messages refused: {}",
                        output.failed.len(),
                        chunk.len(),
                        failed.code
                    ),
                });
            }
        }
        Ok(())
    }

    /// Publishes after a commit, logging rather than failing: the outbox
    /// holds the notification and a sweep publishes it again.
    pub async fn publish_or_log(&self, ids: &[NotificationId]) {
        if let Err(err) = self.publish(ids).await {
            tracing::warn!(error = %err, count = ids.len(), "notifications not published; the outbox sweep will");
        }
    }
}

/// Publishes notifications that have waited too long for delivery (a lost
/// message, a crashed sender). Returns how many were published.
pub async fn republish_undelivered(store: &Store, queue: &NotificationQueue) -> Result<usize, StoreError> {
    let due = store.undelivered_notifications(store.now(), 500).await?;
    queue.publish(&due).await?;
    Ok(due.len())
}
