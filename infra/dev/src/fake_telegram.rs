//! A stand-in for Telegram's Bot API on loopback: answers like Telegram
//! (`{"ok":true,"result":…}`), records every call, and can be told to fail
//! the next calls with 429 `retry_after` or 403 "bot was blocked".
//! The local runner points the bot at it when no real Telegram is used;
//! tests inspect what the bot sent.
//!
//! It also keeps each private chat as a Telegram client would show it
//! (messages, edits replacing them, inline keyboards, invoices) for the
//! sandbox page, and serves `getUpdates` from a queue of updates, with
//! Telegram's offset confirmation.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use serde::Serialize;
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

/// A message in a private chat, as the user's Telegram app shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatMessage {
    pub message_id: i64,
    /// Sent by the bot; else typed (or paid) by the user.
    pub from_bot: bool,
    /// HTML (the bot's `parse_mode`), or the user's plain text.
    pub text: String,
    /// The inline keyboard as the bot sent it (`null`: none).
    pub reply_markup: Value,
    /// A `sendInvoice`: title, description, payload, currency, total_amount.
    pub invoice: Option<Value>,
    /// A service line ("You paid ⭐ 50"), not a bubble.
    pub service: bool,
    pub edited: bool,
    pub date: i64,
}

/// A Stars invoice: from `sendInvoice` (in a chat) or `createInvoiceLink`.
#[derive(Debug, Clone, PartialEq)]
pub struct StarsInvoice {
    pub title: String,
    pub payload: String,
    pub currency: String,
    pub total_amount: i64,
    /// `subscription_period` in seconds, for a subscription's link.
    pub subscription_period: Option<i64>,
}

impl StarsInvoice {
    fn from_params(params: &Value) -> Self {
        let total_amount = params["prices"]
            .as_array()
            .map(|prices| prices.iter().filter_map(|p| p["amount"].as_i64()).sum())
            .unwrap_or(0);
        Self {
            title: params["title"].as_str().unwrap_or_default().to_owned(),
            payload: params["payload"].as_str().unwrap_or_default().to_owned(),
            currency: params["currency"].as_str().unwrap_or_default().to_owned(),
            total_amount,
            subscription_period: params["subscription_period"].as_i64(),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    calls: Vec<Call>,
    failures: Vec<Failure>,
    next_message_id: i64,
    /// What `setWebhook` last set (`getWebhookInfo` reports it).
    webhook: Option<Value>,
    chats: BTreeMap<i64, Vec<ChatMessage>>,
    /// Invoice links made by `createInvoiceLink`, by link.
    links: HashMap<String, StarsInvoice>,
    /// `answerCallbackQuery` / `answerPreCheckoutQuery` answers, by query id.
    answers: HashMap<String, Value>,
    /// Updates waiting for `getUpdates`.
    updates: VecDeque<Value>,
}

#[derive(Debug, Clone, Default)]
pub struct FakeTelegram {
    inner: Arc<Mutex<Inner>>,
    /// Wakes a waiting `getUpdates` when an update is queued.
    queued: Arc<tokio::sync::Notify>,
}

/// The longest a `getUpdates` waits here for an update (Telegram waits up
/// to the `timeout` asked for; tests want a quick answer).
const LONGEST_POLL: Duration = Duration::from_secs(1);

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

    /// The private chat with `chat`, oldest message first.
    pub fn chat(&self, chat: i64) -> Vec<ChatMessage> {
        self.lock().chats.get(&chat).cloned().unwrap_or_default()
    }

    /// One message of a chat.
    pub fn message(&self, chat: i64, message_id: i64) -> Option<ChatMessage> {
        self.lock()
            .chats
            .get(&chat)?
            .iter()
            .find(|m| m.message_id == message_id)
            .cloned()
    }

    /// Adds what the user sent (text, or a payment's service line) to the
    /// chat; its message id.
    pub fn user_message(&self, chat: i64, text: &str, service: bool) -> i64 {
        let mut inner = self.lock();
        inner.next_message_id += 1;
        let message_id = inner.next_message_id;
        inner.chats.entry(chat).or_default().push(ChatMessage {
            message_id,
            from_bot: false,
            text: text.to_owned(),
            reply_markup: Value::Null,
            invoice: None,
            service,
            edited: false,
            date: chrono::Utc::now().timestamp(),
        });
        message_id
    }

    /// The Stars invoice a `sendInvoice` put in `chat` as `message_id`.
    pub fn invoice_in_chat(&self, chat: i64, message_id: i64) -> Option<StarsInvoice> {
        let message = self.message(chat, message_id)?;
        message.invoice.as_ref().map(StarsInvoice::from_params)
    }

    /// The Stars invoice behind a `createInvoiceLink` link.
    pub fn invoice_link(&self, link: &str) -> Option<StarsInvoice> {
        self.lock().links.get(link).cloned()
    }

    /// How the bot answered a callback or pre-checkout query (`None`: not yet).
    pub fn answer(&self, query_id: &str) -> Option<Value> {
        self.lock().answers.get(query_id).cloned()
    }

    /// Queues an update for `getUpdates`.
    pub fn queue_update(&self, update: Value) {
        self.lock().updates.push_back(update);
        self.queued.notify_waiters();
    }

    /// Updates queued and not yet confirmed by a `getUpdates` offset.
    pub fn pending_updates(&self) -> usize {
        self.lock().updates.len()
    }

    /// Makes a Bot API call as if the bot had sent it over HTTP (a webhook
    /// answer's method is one): records it and answers like Telegram.
    pub async fn apply(&self, method: &str, params: Value) -> (StatusCode, Value) {
        let method = method.to_ascii_lowercase();
        if method == "getupdates" {
            self.lock().calls.push(Call {
                method: method.clone(),
                params: params.clone(),
            });
            return self.get_updates(&params).await;
        }
        self.answer_call(method, params)
    }

    /// `getUpdates`: confirms updates below `offset`, then hands out the
    /// rest, waiting a little for one when there are none. Refused while a
    /// webhook is set, as Telegram does.
    async fn get_updates(&self, params: &Value) -> (StatusCode, Value) {
        let offset = params["offset"].as_i64().unwrap_or(0);
        let wait = params["timeout"].as_u64().unwrap_or(0) > 0;
        let deadline = tokio::time::Instant::now() + LONGEST_POLL;
        loop {
            // Registered before looking, so an update queued in between wakes it.
            let queued = self.queued.notified();
            {
                let mut inner = self.lock();
                if inner.webhook.is_some() {
                    return (
                        StatusCode::CONFLICT,
                        json!({ "ok": false, "error_code": 409,
                            "description": "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first" }),
                    );
                }
                inner
                    .updates
                    .retain(|update| update["update_id"].as_i64().unwrap_or(0) >= offset);
                if !inner.updates.is_empty() || !wait || tokio::time::Instant::now() >= deadline {
                    let updates: Vec<Value> = inner.updates.iter().cloned().collect();
                    return (StatusCode::OK, json!({ "ok": true, "result": updates }));
                }
            }
            let _ = tokio::time::timeout_at(deadline, queued).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn answer_call(&self, method: String, params: Value) -> (StatusCode, Value) {
        // What a developer would see in the chat (the sandbox shows it too),
        // labelled like the functions' logs.
        let _span = tracing::info_span!("fake-telegram").entered();
        tracing::info!(target: "fake_telegram", %method, chat = %params["chat_id"], text = %params["text"].as_str().unwrap_or(""), "bot -> Telegram");
        let mut inner = self.lock();
        inner.calls.push(Call {
            method: method.clone(),
            params: params.clone(),
        });
        if !inner.failures.is_empty() {
            return match inner.failures.remove(0) {
                Failure::TooManyRequests { retry_after } => (
                    StatusCode::TOO_MANY_REQUESTS,
                    json!({
                        "ok": false, "error_code": 429,
                        "description": format!("Too Many Requests: retry after {retry_after}"),
                        "parameters": { "retry_after": retry_after }
                    }),
                ),
                Failure::Blocked => (
                    StatusCode::FORBIDDEN,
                    json!({ "ok": false, "error_code": 403, "description": "Forbidden: bot was blocked by the user" }),
                ),
            };
        }
        inner.next_message_id += 1;
        let result = match method.as_str() {
            "sendmessage" | "editmessagetext" | "sendinvoice" => {
                let chat_id = params["chat_id"].as_i64().unwrap_or(0);
                let message_id = params["message_id"].as_i64().unwrap_or(inner.next_message_id);
                inner.show_in_chat(&method, chat_id, message_id, &params);
                json!({
                    "message_id": message_id,
                    "date": chrono::Utc::now().timestamp(),
                    "chat": { "id": chat_id, "type": "private", "first_name": "User" },
                    "from": { "id": 1, "is_bot": true, "first_name": "Tokenbill", "username": "TokenbillBot" },
                    "text": params["text"].as_str().unwrap_or(""),
                })
            }
            // A Stars invoice link, shaped like Telegram's (`t.me/$` and a slug).
            "createinvoicelink" => {
                let link = format!("https://t.me/$FakeInvoice{:06}", inner.next_message_id);
                inner.links.insert(link.clone(), StarsInvoice::from_params(&params));
                json!(link)
            }
            "answercallbackquery" | "answerprecheckoutquery" => {
                let id = params["callback_query_id"]
                    .as_str()
                    .or(params["pre_checkout_query_id"].as_str())
                    .unwrap_or_default()
                    .to_owned();
                inner.answers.insert(id, params.clone());
                json!(true)
            }
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
                    "pending_update_count": inner.updates.len(),
                });
                if let Some(updates) = set.get("allowed_updates") {
                    info["allowed_updates"] = updates.clone();
                }
                info
            }
            _ => json!(true),
        };
        (StatusCode::OK, json!({ "ok": true, "result": result }))
    }
}

impl Inner {
    /// What a message-sending call changes in the chat: a new message, or
    /// an edit replacing the text and keyboard (no keyboard given removes
    /// it, as Telegram does).
    fn show_in_chat(&mut self, method: &str, chat: i64, message_id: i64, params: &Value) {
        let messages = self.chats.entry(chat).or_default();
        let reply_markup = params.get("reply_markup").cloned().unwrap_or(Value::Null);
        let text = params["text"].as_str().unwrap_or_default().to_owned();
        if method == "editmessagetext" {
            if let Some(message) = messages.iter_mut().find(|m| m.message_id == message_id) {
                message.text = text;
                message.reply_markup = reply_markup;
                message.edited = true;
            }
            return;
        }
        let invoice = (method == "sendinvoice").then(|| params.clone());
        messages.push(ChatMessage {
            message_id,
            from_bot: true,
            text,
            reply_markup,
            invoice,
            service: false,
            edited: false,
            date: chrono::Utc::now().timestamp(),
        });
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
    let (status, answer) = fake.apply(&method, params).await;
    (status, Json(answer))
}
