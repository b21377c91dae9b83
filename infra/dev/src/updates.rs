//! Hands Telegram updates to the webhook function the way Telegram does:
//! a POST with the secret header, redelivered while it answers 5xx, and the
//! Bot API call in its answer made on its behalf. Two sources use it: the
//! sandbox page, and [`LongPoll`], which reads a real bot's updates with
//! `getUpdates` so a laptop without a public URL can serve it.

use std::time::Duration;

use axum::http::{self, StatusCode};
use serde_json::{Value, json};
use telegram_webhook::{SECRET_HEADER, Webhook};
use tracing::Instrument;

/// Deliveries of one update before giving up (Telegram keeps retrying for
/// hours; a person in the sandbox wants an answer).
const DELIVERIES: u32 = 3;
const REDELIVERY_PAUSE: Duration = Duration::from_millis(300);

/// A Bot API call the webhook asked for in its answer: method and parameters.
pub type MethodCall = (String, Value);

/// POSTs `update` to the webhook with `secret` in the header, as Telegram
/// does, again while it answers 5xx. The call in its answer, if any.
pub async fn deliver(webhook: &Webhook, secret: &str, update: &Value) -> Result<Option<MethodCall>, String> {
    let body = update.to_string();
    let mut last = String::new();
    for delivery in 0..DELIVERIES {
        if delivery > 0 {
            tokio::time::sleep(REDELIVERY_PAUSE).await;
        }
        let request = http::Request::post("/telegram/webhook")
            .header(SECRET_HEADER, secret)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.as_bytes())
            .map_err(|e| e.to_string())?;
        let response = webhook
            .handle(request)
            .instrument(tracing::info_span!("telegram-webhook"))
            .await;
        let status = response.status();
        if status.is_server_error() {
            last = format!("{status}: {}", response.body());
            continue;
        }
        if status != StatusCode::OK {
            return Err(format!("the webhook answered {status}: {}", response.body()));
        }
        return Ok(method_call(response.body()));
    }
    Err(format!("the webhook answered {last} {DELIVERIES} times"))
}

/// The Bot API call in a webhook answer (`{"method": ..., params...}`).
pub fn method_call(answer: &str) -> Option<MethodCall> {
    let Ok(Value::Object(mut params)) = serde_json::from_str::<Value>(answer) else {
        return None;
    };
    let Some(Value::String(method)) = params.remove("method") else {
        return None;
    };
    Some((method, Value::Object(params)))
}

/// Reads a bot's updates with `getUpdates` (long polling) and feeds them to
/// the webhook function. The offset only moves past an update the webhook
/// accepted, so one it failed on comes back in the next poll.
#[derive(Clone)]
pub struct LongPoll {
    http: reqwest::Client,
    /// `{api}/bot{token}`: never logged (it holds the token).
    bot_url: String,
    offset: i64,
    timeout_seconds: u64,
}

#[derive(Debug)]
pub enum PollError {
    /// The Bot API could not be reached or answered something unreadable.
    Network(String),
    /// The Bot API refused (`ok: false`).
    Refused { method: String, description: String },
    /// The webhook kept failing on an update; it is polled again.
    Webhook { update_id: i64, error: String },
}

impl std::fmt::Display for PollError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PollError::Network(error) => write!(f, "Bot API unreachable: {error}"),
            PollError::Refused { method, description } => write!(f, "{method} refused: {description}"),
            PollError::Webhook { update_id, error } => write!(f, "update {update_id}: {error}"),
        }
    }
}

impl std::error::Error for PollError {}

impl LongPoll {
    /// Polls the bot with `token` at `api` (`https://api.telegram.org`, or
    /// the fake's URL), waiting up to `timeout_seconds` per poll.
    pub fn new(api: &str, token: &str, timeout_seconds: u64) -> Self {
        Self {
            http: reqwest::Client::new(),
            bot_url: format!("{}/bot{token}", api.trim_end_matches('/')),
            offset: 0,
            timeout_seconds,
        }
    }

    /// The next update id asked for (all below it are confirmed).
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// Removes the bot's webhook, if any: Telegram refuses `getUpdates`
    /// while one is set. Pending updates are kept.
    pub async fn start(&self) -> Result<(), PollError> {
        self.call("deleteWebhook", &json!({ "drop_pending_updates": false }))
            .await
            .map(drop)
    }

    /// One `getUpdates`; delivers what it returns in order. The number of
    /// updates the webhook accepted.
    pub async fn poll_once(&mut self, webhook: &Webhook, secret: &str) -> Result<usize, PollError> {
        let params = json!({
            "offset": self.offset,
            "timeout": self.timeout_seconds,
            "allowed_updates": tokenbill::telegram::ALLOWED_UPDATES,
        });
        let updates = self.call("getUpdates", &params).await?;
        let mut delivered = 0;
        for update in updates.as_array().map(Vec::as_slice).unwrap_or_default() {
            let update_id = update["update_id"].as_i64().unwrap_or(self.offset);
            let answer = deliver(webhook, secret, update)
                .await
                .map_err(|error| PollError::Webhook { update_id, error })?;
            self.offset = self.offset.max(update_id + 1);
            delivered += 1;
            if let Some((method, params)) = answer
                && let Err(err) = self.call(&method, &params).await
            {
                // As from a webhook answer, whose failure Telegram never reports.
                tracing::warn!(%method, error = %err, "the webhook answer's call failed");
            }
        }
        Ok(delivered)
    }

    /// Polls until the task is dropped, pausing after a failure.
    pub async fn run(mut self, webhook: std::sync::Arc<Webhook>, secret: String) {
        while let Err(err) = self.start().await {
            tracing::warn!(error = %err, "could not remove the webhook; retrying");
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        tracing::info!("reading the bot's updates with getUpdates");
        loop {
            if let Err(err) = self.poll_once(&webhook, &secret).await {
                tracing::warn!(error = %err, "getUpdates poll failed");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }

    async fn call(&self, method: &str, params: &Value) -> Result<Value, PollError> {
        let network = |err: reqwest::Error| PollError::Network(err.without_url().to_string());
        let answer: Value = self
            .http
            .post(format!("{}/{method}", self.bot_url))
            .timeout(Duration::from_secs(self.timeout_seconds + 10))
            .json(params)
            .send()
            .await
            .map_err(network)?
            .json()
            .await
            .map_err(network)?;
        if answer["ok"].as_bool() != Some(true) {
            return Err(PollError::Refused {
                method: method.to_owned(),
                description: answer["description"].as_str().unwrap_or("no description").to_owned(),
            });
        }
        Ok(answer["result"].clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_answer_names_its_call() {
        let (method, params) = method_call(r#"{"method":"sendMessage","chat_id":7,"text":"hi"}"#).unwrap();
        assert_eq!(method, "sendMessage");
        assert_eq!(params, json!({ "chat_id": 7, "text": "hi" }));
        assert_eq!(method_call("{}"), None);
        assert_eq!(method_call("not json"), None);
    }
}
