//! Feeds the notifier from SQS the way Lambda's event source mapping does:
//! receive a batch, invoke the function with it, delete the messages it
//! did not report as failed. Failed ones become visible again after their
//! visibility timeout (or the delay the notifier set); the queue's redrive
//! policy moves them to the dead-letter queue after a few receives.

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use notifier::Notifier;

/// What one poll did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Polled {
    pub received: usize,
    pub failed: usize,
}

/// Receives one batch (up to 10 messages, waiting up to `wait_seconds`)
/// and hands it to the notifier.
pub async fn poll_once(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    notifier: &Notifier,
    wait_seconds: i32,
) -> Result<Polled, aws_sdk_sqs::Error> {
    let output = sqs
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .wait_time_seconds(wait_seconds)
        .send()
        .await?;
    let messages = output.messages.unwrap_or_default();
    if messages.is_empty() {
        return Ok(Polled::default());
    }
    let records: Vec<SqsMessage> = messages
        .iter()
        .map(|m| {
            let mut record = SqsMessage::default();
            record.message_id = m.message_id.clone();
            record.receipt_handle = m.receipt_handle.clone();
            record.body = m.body.clone();
            record
        })
        .collect();
    let mut event = SqsEvent::default();
    event.records = records;
    let response = notifier.handle(event).await;
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    for message in &messages {
        if failed.contains(&message.message_id.as_deref().unwrap_or_default()) {
            continue;
        }
        if let Some(handle) = &message.receipt_handle {
            sqs.delete_message()
                .queue_url(queue_url)
                .receipt_handle(handle)
                .send()
                .await?;
        }
    }
    Ok(Polled {
        received: messages.len(),
        failed: failed.len(),
    })
}

/// Polls until the queue gives nothing (for tests): returns the total.
pub async fn drain(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    notifier: &Notifier,
) -> Result<Polled, aws_sdk_sqs::Error> {
    let mut total = Polled::default();
    loop {
        let polled = poll_once(sqs, queue_url, notifier, 0).await?;
        if polled.received == 0 {
            return Ok(total);
        }
        total.received += polled.received;
        total.failed += polled.failed;
    }
}
