//! The notifier: turns queued notifications into Telegram messages.
//!
//! Each SQS message names a notification in the outbox. The notifier
//! claims it (so concurrent or repeated deliveries send it once), renders
//! it in the user's language with their current balance, sends it, and
//! marks it sent. What a retry may fix is reported as a batch item failure
//! (Lambda returns it to the queue; after a few receives the queue moves
//! it to its dead-letter queue); what it cannot fix is dropped on purpose.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::Duration;
use teloxide_core::Bot;
use teloxide_core::errors::{ApiError, RequestError};
use teloxide_core::payloads::SendMessage;
use teloxide_core::requests::JsonRequest;
use teloxide_core::types::{ChatId, ParseMode};
use tokenbill::domain::notification::{Delivery, Notification};
use tokenbill::queue::QueueMessage;
use tokenbill::store::{NotificationClaim, Store, StoreError, UserChange};
use tokenbill::text::fit;

/// The secrets this function needs (see [`tokenbill::secrets`]).
pub const SECRETS: [&str; 1] = ["TELEGRAM_BOT_TOKEN"];
/// How long one send may take before another notifier may try: above the
/// Bot API client's own 17 s timeout.
const LEASE: Duration = Duration::seconds(60);
/// Sends tried before a notification is given up (and logged).
const MAX_ATTEMPTS: u32 = 8;
/// When a send fails for a reason Telegram did not time.
const RETRY_AFTER: Duration = Duration::seconds(30);

/// What became of one queue message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Sent just now.
    Sent,
    /// Nothing to send: already sent, being sent, unknown or undeliverable.
    Skipped,
    /// Return the message to the queue, visible again after `after`
    /// (Telegram's `retry_after`) or the queue's own timeout.
    Retry { after: Option<u32> },
}

pub struct Notifier {
    store: Store,
    bot: Bot,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
}

impl Notifier {
    pub fn new(store: Store, bot: Bot, sqs: aws_sdk_sqs::Client, queue_url: String) -> Self {
        Self {
            store,
            bot,
            sqs,
            queue_url,
        }
    }

    /// Handles one batch. Messages are sent one after another: Telegram
    /// allows about 30 messages a second per bot, and a batch is small.
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        let mut response = SqsBatchResponse::default();
        for record in event.records {
            let outcome = self.process(&record).await;
            if let Outcome::Retry { after } = outcome {
                let id = record.message_id.clone().unwrap_or_default();
                if let (Some(after), Some(handle)) = (after, record.receipt_handle.as_deref()) {
                    self.delay(handle, after).await;
                }
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                response.batch_item_failures.push(failure);
            }
        }
        response
    }

    /// Handles one queue message.
    pub async fn process(&self, record: &SqsMessage) -> Outcome {
        let message: QueueMessage = match record.body.as_deref().map(serde_json::from_str) {
            Some(Ok(message)) => message,
            _ => {
                // A retry cannot fix a body we cannot read.
                tracing::error!(message_id = ?record.message_id, "unreadable queue message dropped");
                return Outcome::Skipped;
            }
        };
        match self.deliver(&message).await {
            Ok(outcome) => outcome,
            Err(err) => {
                tracing::warn!(notification = %message.notification, error = %err, "notification not delivered yet");
                Outcome::Retry { after: None }
            }
        }
    }

    async fn deliver(&self, message: &QueueMessage) -> Result<Outcome, StoreError> {
        let id = &message.notification;
        let notification = match self.store.claim_notification(id, LEASE).await? {
            NotificationClaim::Claimed(notification) => notification,
            NotificationClaim::NotClaimable => return Ok(Outcome::Skipped),
            NotificationClaim::Missing => {
                tracing::warn!(notification = %id, "queued notification does not exist");
                return Ok(Outcome::Skipped);
            }
        };
        if notification.attempts > MAX_ATTEMPTS {
            tracing::error!(notification = %id, attempts = notification.attempts, "notification given up");
            self.store.finish_notification(id, Delivery::Dropped).await?;
            return Ok(Outcome::Skipped);
        }
        match self.send(&notification).await {
            Ok(Some(outcome)) => Ok(outcome),
            Ok(None) => {
                self.store.finish_notification(id, Delivery::Dropped).await?;
                Ok(Outcome::Skipped)
            }
            Err(err) => {
                // Give the claim back so the retry (or the outbox sweep) can send it.
                let _ = self.store.release_notification(id, self.store.now()).await;
                Err(err)
            }
        }
    }

    /// Sends the notification. `Ok(None)`: the user cannot be reached.
    async fn send(&self, notification: &Notification) -> Result<Option<Outcome>, StoreError> {
        let view = self.store.user_view(notification.user, Vec::new()).await?;
        let Some(user) = view.user.filter(|user| user.reachable) else {
            return Ok(None);
        };
        let text = fit(notification.message.render(user.language, view.balance));
        let mut payload = SendMessage::new(ChatId(user.id.get()), text);
        payload.parse_mode = Some(ParseMode::Html);
        let id = &notification.id;
        match JsonRequest::new(self.bot.clone(), payload).await {
            Ok(_) => {
                self.store.finish_notification(id, Delivery::Sent).await?;
                tracing::info!(notification = %id, "notification sent");
                Ok(Some(Outcome::Sent))
            }
            Err(RequestError::RetryAfter(wait)) => {
                let after = wait.seconds();
                self.store
                    .release_notification(id, self.store.now() + Duration::seconds(i64::from(after)))
                    .await?;
                tracing::info!(notification = %id, after, "Telegram asks to slow down");
                Ok(Some(Outcome::Retry { after: Some(after) }))
            }
            Err(RequestError::Api(
                ApiError::BotBlocked
                | ApiError::UserDeactivated
                | ApiError::BotKicked
                | ApiError::CantInitiateConversation
                | ApiError::ChatNotFound,
            )) => {
                self.store.update_user(user.id, &[UserChange::Reachable(false)]).await?;
                tracing::info!(notification = %id, user = %user.id, "user unreachable; notification dropped");
                Ok(None)
            }
            Err(err) => {
                self.store
                    .release_notification(id, self.store.now() + RETRY_AFTER)
                    .await?;
                tracing::warn!(notification = %id, error = %err, "Bot API call failed");
                Ok(Some(Outcome::Retry { after: None }))
            }
        }
    }

    /// Keeps a message out of sight for `seconds` (Telegram's `retry_after`).
    async fn delay(&self, receipt_handle: &str, seconds: u32) {
        let result = self
            .sqs
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(seconds.min(43_200) as i32)
            .send()
            .await;
        if let Err(err) = result {
            tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(err), "could not delay the message");
        }
    }
}
