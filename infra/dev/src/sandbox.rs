//! The bot sandbox: `/sandbox` is a page that behaves like a Telegram
//! chat with the bot. The fake Telegram keeps each chat (what the bot
//! sent, edits, invoices); what a person types or clicks becomes the
//! Update JSON Telegram would send, delivered to the webhook function with
//! the secret header. A Stars invoice's Pay sends the `pre_checkout_query`
//! and, once the bot accepts it, the `successful_payment` message.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use telegram_webhook::Webhook;

use crate::fake_telegram::{ChatMessage, FakeTelegram, StarsInvoice};
use crate::updates;

/// The page: one static file, no build step.
pub const PAGE: &str = include_str!("sandbox.html");

/// A simulated Telegram user (the page chooses; the chat id is theirs).
#[derive(Debug, Clone, Deserialize)]
pub struct SandboxUser {
    pub id: i64,
    pub first_name: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub language_code: Option<String>,
}

impl SandboxUser {
    fn check(&self) -> Result<(), Refusal> {
        // Telegram user ids are positive; a private chat's id is the user's.
        if self.id <= 0 || self.id > (1 << 52) {
            return Err(Refusal::bad("bad_user", "the user id must be a positive Telegram id"));
        }
        if self.first_name.trim().is_empty() || self.first_name.chars().count() > 64 {
            return Err(Refusal::bad("bad_user", "the first name must be 1-64 characters"));
        }
        Ok(())
    }

    fn json(&self) -> Value {
        let mut user = json!({ "id": self.id, "is_bot": false, "first_name": self.first_name });
        if let Some(username) = &self.username {
            user["username"] = json!(username);
        }
        if let Some(language) = &self.language_code {
            user["language_code"] = json!(language);
        }
        user
    }

    fn chat(&self) -> Value {
        json!({ "id": self.id, "type": "private", "first_name": self.first_name })
    }
}

/// The bot as Telegram describes it in messages it sent.
fn bot_user() -> Value {
    json!({ "id": 1, "is_bot": true, "first_name": "Tokenbill", "username": "TokenbillBot" })
}

/// A text message from `user` (a leading `/command` is marked as one).
pub fn message_update(update_id: u32, message_id: i64, user: &SandboxUser, text: &str, date: i64) -> Value {
    let mut message = json!({
        "message_id": message_id,
        "date": date,
        "chat": user.chat(),
        "from": user.json(),
        "text": text,
    });
    if text.starts_with('/') {
        let length = text.split_whitespace().next().map_or(0, |c| c.encode_utf16().count());
        message["entities"] = json!([{ "type": "bot_command", "offset": 0, "length": length }]);
    }
    json!({ "update_id": update_id, "message": message })
}

/// A press on an inline button of the bot's `message`.
pub fn callback_update(update_id: u32, query_id: &str, user: &SandboxUser, message: &ChatMessage, data: &str) -> Value {
    let mut shown = json!({
        "message_id": message.message_id,
        "date": message.date,
        "chat": user.chat(),
        "from": bot_user(),
        "text": message.text,
    });
    if !message.reply_markup.is_null() {
        shown["reply_markup"] = message.reply_markup.clone();
    }
    json!({
        "update_id": update_id,
        "callback_query": {
            "id": query_id,
            "from": user.json(),
            "chat_instance": format!("sandbox-{}", user.id),
            "message": shown,
            "data": data,
        }
    })
}

/// Telegram's last check before taking Stars for `invoice`.
pub fn pre_checkout_update(update_id: u32, query_id: &str, user: &SandboxUser, invoice: &StarsInvoice) -> Value {
    json!({
        "update_id": update_id,
        "pre_checkout_query": {
            "id": query_id,
            "from": user.json(),
            "currency": invoice.currency,
            "total_amount": invoice.total_amount,
            "invoice_payload": invoice.payload,
        }
    })
}

/// The service message of a Stars payment (a subscription's first charge
/// carries its renewal fields).
pub fn successful_payment_update(
    update_id: u32,
    message_id: i64,
    user: &SandboxUser,
    invoice: &StarsInvoice,
    charge_id: &str,
    date: i64,
) -> Value {
    let mut payment = json!({
        "currency": invoice.currency,
        "total_amount": invoice.total_amount,
        "invoice_payload": invoice.payload,
        "telegram_payment_charge_id": charge_id,
        "provider_payment_charge_id": "",
    });
    if let Some(period) = invoice.subscription_period {
        payment["is_recurring"] = json!(true);
        payment["is_first_recurring"] = json!(true);
        payment["subscription_expiration_date"] = json!(date + period);
    }
    json!({
        "update_id": update_id,
        "message": {
            "message_id": message_id,
            "date": date,
            "chat": user.chat(),
            "from": user.json(),
            "successful_payment": payment,
        }
    })
}

/// The sandbox's side of Telegram: numbers updates and queries, keeps the
/// chats in the fake Telegram, delivers to the webhook.
pub struct Sandbox {
    telegram: FakeTelegram,
    webhook: Arc<Webhook>,
    secret: String,
    next_update: AtomicU32,
    next_query: AtomicU64,
}

/// A sandbox request that cannot be done: HTTP status, stable code, text.
#[derive(Debug)]
pub struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Refusal {
    fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }

    fn webhook(message: String) -> Self {
        Self {
            status: StatusCode::BAD_GATEWAY,
            code: "webhook_failed",
            message,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "error": self.code, "message": self.message })),
        )
            .into_response()
    }
}

/// What the page shows after an action: the bot's toast, if any.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    pub notice: Option<String>,
}

impl Sandbox {
    pub fn new(telegram: FakeTelegram, webhook: Arc<Webhook>, secret: String) -> Self {
        // Update ids are claimed in the table for days: starting from the
        // clock keeps a restarted runner's ids new on the same table.
        let start = u32::try_from(chrono::Utc::now().timestamp() % 4_000_000).unwrap_or(0) * 1000;
        Self {
            telegram,
            webhook,
            secret,
            next_update: AtomicU32::new(start),
            next_query: AtomicU64::new(1),
        }
    }

    pub fn telegram(&self) -> &FakeTelegram {
        &self.telegram
    }

    fn update_id(&self) -> u32 {
        self.next_update.fetch_add(1, Ordering::Relaxed)
    }

    fn query_id(&self, user: &SandboxUser) -> String {
        format!("{}{:08}", user.id, self.next_query.fetch_add(1, Ordering::Relaxed))
    }

    /// Delivers `update`; the call in the webhook's answer goes to the fake
    /// Telegram, as Telegram makes it.
    async fn deliver(&self, update: &Value) -> Result<(), Refusal> {
        let answer = updates::deliver(&self.webhook, &self.secret, update)
            .await
            .map_err(Refusal::webhook)?;
        if let Some((method, params)) = answer {
            self.telegram.apply(&method, params).await;
        }
        Ok(())
    }

    /// The user sends `text`.
    pub async fn send_text(&self, user: &SandboxUser, text: &str) -> Result<Outcome, Refusal> {
        user.check()?;
        let text = text.trim();
        if text.is_empty() || text.chars().count() > 4096 {
            return Err(Refusal::bad("bad_text", "a message is 1-4096 characters"));
        }
        let message_id = self.telegram.user_message(user.id, text, false);
        let update = message_update(self.update_id(), message_id, user, text, now());
        self.deliver(&update).await?;
        Ok(Outcome::default())
    }

    /// The user presses the button with `data` under the bot's message.
    pub async fn press(&self, user: &SandboxUser, message_id: i64, data: &str) -> Result<Outcome, Refusal> {
        user.check()?;
        let message = self
            .telegram
            .message(user.id, message_id)
            .filter(|m| m.from_bot)
            .ok_or_else(|| Refusal::bad("no_message", format!("no bot message {message_id} in this chat")))?;
        let query_id = self.query_id(user);
        self.deliver(&callback_update(self.update_id(), &query_id, user, &message, data))
            .await?;
        let notice = self
            .telegram
            .answer(&query_id)
            .and_then(|answer| answer["text"].as_str().map(str::to_owned));
        Ok(Outcome { notice })
    }

    /// The user pays a Stars invoice: the one in message `message_id`, or
    /// the subscription behind an invoice `link`.
    pub async fn pay_stars(&self, user: &SandboxUser, invoice: InvoiceRef) -> Result<Outcome, Refusal> {
        user.check()?;
        let invoice = match invoice {
            InvoiceRef::Message(message_id) => self.telegram.invoice_in_chat(user.id, message_id),
            InvoiceRef::Link(link) => self.telegram.invoice_link(&link),
        }
        .ok_or_else(|| Refusal::bad("no_invoice", "no such Stars invoice"))?;
        let query_id = self.query_id(user);
        self.deliver(&pre_checkout_update(self.update_id(), &query_id, user, &invoice))
            .await?;
        let answer = self.telegram.answer(&query_id).unwrap_or(Value::Null);
        if answer["ok"].as_bool() != Some(true) {
            let reason = answer["error_message"]
                .as_str()
                .unwrap_or("the bot did not accept the payment");
            return Ok(Outcome {
                notice: Some(reason.to_owned()),
            });
        }
        let stars = invoice.total_amount;
        let message_id = self
            .telegram
            .user_message(user.id, &format!("You paid ⭐ {stars}"), true);
        let charge_id = format!("sandbox-charge-{query_id}");
        let update = successful_payment_update(self.update_id(), message_id, user, &invoice, &charge_id, now());
        self.deliver(&update).await?;
        Ok(Outcome::default())
    }
}

/// Which Stars invoice is paid.
pub enum InvoiceRef {
    Message(i64),
    Link(String),
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[derive(Debug, Deserialize)]
struct TextRequest {
    user: SandboxUser,
    text: String,
}

#[derive(Debug, Deserialize)]
struct PressRequest {
    user: SandboxUser,
    message_id: i64,
    data: String,
}

#[derive(Debug, Deserialize)]
struct PayRequest {
    user: SandboxUser,
    message_id: Option<i64>,
    link: Option<String>,
}

/// The sandbox's routes; without a sandbox (a real bot token is set), the
/// page says so.
pub fn router(sandbox: Option<Arc<Sandbox>>) -> axum::Router {
    let Some(sandbox) = sandbox else {
        return axum::Router::new().route(
            "/sandbox",
            get(|| async {
                (
                    StatusCode::NOT_FOUND,
                    Html("<p>The sandbox is off: TELEGRAM_BOT_TOKEN is set, so the runner serves a real bot. Talk to it in Telegram.</p>"),
                )
            }),
        );
    };
    axum::Router::new()
        .route("/sandbox", get(page))
        .route("/sandbox/chats/{chat}", get(chat))
        .route("/sandbox/chats/{chat}/messages", post(send_text))
        .route("/sandbox/chats/{chat}/presses", post(press))
        .route("/sandbox/chats/{chat}/payments", post(pay))
        .with_state(sandbox)
}

async fn page() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], Html(PAGE))
}

async fn chat(State(sandbox): State<Arc<Sandbox>>, Path(chat): Path<i64>) -> impl IntoResponse {
    Json(json!({ "chat": chat, "messages": sandbox.telegram.chat(chat) }))
}

/// The chat in the path must be the user's own (private chats only).
fn same_chat(chat: i64, user: &SandboxUser) -> Result<(), Refusal> {
    if chat == user.id {
        Ok(())
    } else {
        Err(Refusal::bad("wrong_chat", "a private chat's id is its user's id"))
    }
}

fn answer(outcome: Result<Outcome, Refusal>) -> Response {
    match outcome {
        Ok(outcome) => Json(json!({ "notice": outcome.notice })).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

async fn send_text(
    State(sandbox): State<Arc<Sandbox>>,
    Path(chat): Path<i64>,
    Json(request): Json<TextRequest>,
) -> Response {
    let outcome = async {
        same_chat(chat, &request.user)?;
        sandbox.send_text(&request.user, &request.text).await
    };
    answer(outcome.await)
}

async fn press(
    State(sandbox): State<Arc<Sandbox>>,
    Path(chat): Path<i64>,
    Json(request): Json<PressRequest>,
) -> Response {
    let outcome = async {
        same_chat(chat, &request.user)?;
        sandbox.press(&request.user, request.message_id, &request.data).await
    };
    answer(outcome.await)
}

async fn pay(State(sandbox): State<Arc<Sandbox>>, Path(chat): Path<i64>, Json(request): Json<PayRequest>) -> Response {
    let outcome = async {
        same_chat(chat, &request.user)?;
        let invoice = match (request.message_id, request.link) {
            (Some(message_id), None) => InvoiceRef::Message(message_id),
            (None, Some(link)) => InvoiceRef::Link(link),
            _ => return Err(Refusal::bad("bad_invoice", "give message_id or link")),
        };
        sandbox.pay_stars(&request.user, invoice).await
    };
    answer(outcome.await)
}

#[cfg(test)]
mod tests {
    use teloxide_core::types::{Update, UpdateKind};

    use super::*;

    fn ann() -> SandboxUser {
        SandboxUser {
            id: 1001,
            first_name: "Ann".into(),
            username: Some("ann".into()),
            language_code: Some("en".into()),
        }
    }

    /// As the webhook reads it: from the request's bytes.
    fn parse(update: Value) -> Update {
        serde_json::from_str(&update.to_string()).unwrap_or_else(|e| panic!("{e}: {update}"))
    }

    #[test]
    fn a_typed_command_is_a_message_update_with_its_entity() {
        let update = parse(message_update(5, 9, &ann(), "/start promo_DEMO20", 1_700_000_000));
        assert_eq!(update.id.0, 5);
        let UpdateKind::Message(message) = update.kind else {
            panic!("not a message: {update:?}");
        };
        assert_eq!(message.text(), Some("/start promo_DEMO20"));
        assert_eq!(message.chat.id.0, 1001);
        assert_eq!(message.from.as_ref().unwrap().first_name, "Ann");
        let entities = message.entities().unwrap();
        assert_eq!((entities[0].offset, entities[0].length), (0, 6));
    }

    #[test]
    fn a_button_press_is_a_callback_query_on_the_bots_message() {
        let message = ChatMessage {
            message_id: 3,
            from_bot: true,
            text: "Hello".into(),
            reply_markup: json!({ "inline_keyboard": [[{ "text": "Buy", "callback_data": "buy" }]] }),
            invoice: None,
            service: false,
            edited: false,
            date: 1_700_000_000,
        };
        let update = parse(callback_update(6, "q1", &ann(), &message, "buy"));
        let UpdateKind::CallbackQuery(query) = update.kind else {
            panic!("not a callback query");
        };
        assert_eq!(query.data.as_deref(), Some("buy"));
        assert_eq!(query.from.id.0, 1001);
        let shown = query.message.expect("the message is attached");
        assert_eq!((shown.chat().id.0, shown.id().0), (1001, 3));
    }

    #[test]
    fn a_stars_payment_is_a_pre_checkout_query_then_a_successful_payment() {
        let invoice = StarsInvoice {
            title: "100 tokens".into(),
            payload: "inv123".into(),
            currency: "XTR".into(),
            total_amount: 50,
            subscription_period: None,
        };
        let UpdateKind::PreCheckoutQuery(query) = parse(pre_checkout_update(7, "q2", &ann(), &invoice)).kind else {
            panic!("not a pre-checkout query");
        };
        assert_eq!((query.currency.as_str(), query.total_amount), ("XTR", 50));
        assert_eq!(query.invoice_payload, "inv123");

        let update = parse(successful_payment_update(8, 10, &ann(), &invoice, "ch1", 1_700_000_000));
        let UpdateKind::Message(message) = update.kind else {
            panic!("not a message");
        };
        let payment = message.successful_payment().expect("a successful payment");
        assert_eq!(payment.telegram_payment_charge_id.0, "ch1");
        assert!(!payment.is_recurring);

        let monthly = StarsInvoice {
            subscription_period: Some(2_592_000),
            ..invoice
        };
        let UpdateKind::Message(message) =
            parse(successful_payment_update(9, 11, &ann(), &monthly, "ch2", 1_700_000_000)).kind
        else {
            panic!("not a message");
        };
        let payment = message.successful_payment().unwrap();
        assert!(payment.is_recurring && payment.is_first_recurring);
        assert_eq!(
            payment.subscription_expiration_date.map(|d| d.timestamp()),
            Some(1_700_000_000 + 2_592_000)
        );
    }
}
