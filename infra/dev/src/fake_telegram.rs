//! A stand-in for Telegram's Bot API on loopback: answers like Telegram
//! (`{"ok":true,"result":…}`), records every call, and can be told to fail
//! the next calls with 429 `retry_after` or 403 "bot was blocked".
//! The local runner points the bot at it when no real Telegram is used;
//! tests inspect what the bot sent.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use serde_json::{Value, json};

/// One recorded Bot API call.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The method, lower-cased (`sendmessage`, `editmessagetext`...).
    pub method: String,
    pub params: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    TooManyRequests { retry_after: u32 },
    Blocked,
}

#[derive(Debug, Default)]
struct Inner {
    calls: Vec<Call>,
    failures: Vec<Failure>,
    next_message_id: i64,
    /// What `setWebhook` last set (`getWebhookInfo` reports it).
    webhook: Option<Value>,
}

#[derive(Debug, Clone, Default)]
pub struct FakeTelegram {
    inner: Arc<Mutex<Inner>>,
}

impl FakeTelegram {
    pub fn router(&self) -> axum::Router {
        axum::Router::new()
            .route("/{bot}/{method}", post(call))
            .with_state(self.clone())
    }

    /// Serves on `listener` until the task is dropped.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }

    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.lock().calls)
    }

    /// The next calls fail, in order, with these answers.
    pub fn fail_next(&self, failures: impl IntoIterator<Item = Failure>) {
        self.lock().failures.extend(failures);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

async fn call(
    State(fake): State<FakeTelegram>,
    Path((bot, method)): Path<(String, String)>,
    body: String,
) -> impl IntoResponse {
    if !bot.starts_with("bot") {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "ok": false, "error_code": 404, "description": "Not Found" })),
        );
    }
    let params: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let method = method.to_ascii_lowercase();
    // What a developer would see in the chat (until the sandbox shows it).
    tracing::info!(target: "fake_telegram", %method, chat = %params["chat_id"], text = %params["text"].as_str().unwrap_or(""), "bot -> Telegram");
    let mut inner = fake.lock();
    inner.calls.push(Call {
        method: method.clone(),
        params: params.clone(),
    });
    if !inner.failures.is_empty() {
        return match inner.failures.remove(0) {
            Failure::TooManyRequests { retry_after } => (
                StatusCode::TOO_MANY_REQUESTS,
                Json(json!({
                    "ok": false, "error_code": 429,
                    "description": format!("Too Many Requests: retry after {retry_after}"),
                    "parameters": { "retry_after": retry_after }
                })),
            ),
            Failure::Blocked => (
                StatusCode::FORBIDDEN,
                Json(
                    json!({ "ok": false, "error_code": 403, "description": "Forbidden: bot was blocked by the user" }),
                ),
            ),
        };
    }
    inner.next_message_id += 1;
    let result = match method.as_str() {
        "sendmessage" | "editmessagetext" | "sendinvoice" => {
            let chat_id = params["chat_id"].as_i64().unwrap_or(0);
            json!({
                "message_id": params["message_id"].as_i64().unwrap_or(inner.next_message_id),
                "date": chrono::Utc::now().timestamp(),
                "chat": { "id": chat_id, "type": "private", "first_name": "User" },
                "from": { "id": 1, "is_bot": true, "first_name": "Tokenbill", "username": "TokenbillBot" },
                "text": params["text"].as_str().unwrap_or(""),
            })
        }
        // A Stars invoice link, shaped like Telegram's (`t.me/$` and a slug).
        "createinvoicelink" => json!(format!("https://t.me/$FakeInvoice{:06}", inner.next_message_id)),
        // Cancels or re-enables a Stars subscription's renewal (recorded above).
        "edituserstarsubscription" => json!(true),
        "getme" => json!({ "id": 1, "is_bot": true, "first_name": "Tokenbill", "username": "TokenbillBot" }),
        "setwebhook" => {
            inner.webhook = Some(params.clone());
            json!(true)
        }
        "deletewebhook" => {
            inner.webhook = None;
            json!(true)
        }
        "getwebhookinfo" => {
            let set = inner.webhook.clone().unwrap_or(Value::Null);
            let mut info = json!({
                "url": set["url"].as_str().unwrap_or(""),
                "has_custom_certificate": false,
                "pending_update_count": 0,
            });
            if let Some(updates) = set.get("allowed_updates") {
                info["allowed_updates"] = updates.clone();
            }
            info
        }
        _ => json!(true),
    };
    (StatusCode::OK, Json(json!({ "ok": true, "result": result })))
}
