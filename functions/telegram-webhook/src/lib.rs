//! `POST /telegram/webhook`: the bot. Parses Telegram's update, checks the
//! secret header, handles each update once, and answers with at most one
//! Bot API call in the response body (the rest go out through the client).

mod callback;
mod flow;
mod screens;
pub mod texts;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, Response, StatusCode};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use teloxide_core::Bot;
use teloxide_core::payloads::{AnswerCallbackQuery, AnswerPreCheckoutQuery, EditMessageText, SendInvoice, SendMessage};
use teloxide_core::requests::{JsonRequest, Payload};
use teloxide_core::types::{
    CallbackQueryId, ChatId, InlineKeyboardMarkup, LabeledPrice, MessageId, ParseMode, PreCheckoutQueryId, Update,
};
use tokenbill::domain::invoice::Provider;
use tokenbill::domain::tariff::Tariff;
use tokenbill::queue::NotificationQueue;
use tokenbill::store::{Claim, ClaimMode, Store, StoreError};
use tokio::sync::Mutex;

pub use callback::Callback;
pub use flow::Plan;

/// Header Telegram sends with the secret given to `setWebhook`.
pub const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";
/// Bodies larger than this are refused unread. An update is a few KB (a
/// message is at most 4096 characters); 256 KiB leaves room for any
/// nesting Telegram adds.
pub const MAX_BODY: usize = 256 * 1024;
/// How long a warm instance reuses the tariff catalog.
const CATALOG_TTL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct BotConfig {
    /// `secret_token` of `setWebhook`: 1–256 of `A-Z a-z 0-9 _ -`.
    pub webhook_secret: String,
    /// Commands addressed `/cmd@Name` to another bot are ignored.
    pub bot_username: Option<String>,
    /// Chats that get the operator commands.
    pub operators: Vec<i64>,
    pub support_contact: String,
    /// Payment buttons, in order.
    pub providers: Vec<Provider>,
    /// Where the payment pages are served (the HTTP API's base URL).
    pub public_base_url: String,
    pub invoice_ttl: chrono::Duration,
}

impl BotConfig {
    /// Reads the configuration from the environment. Secrets are passed in
    /// by the runtime (SSM on AWS), never written in the template.
    /// Reads the configuration through `lookup` (the environment, or the
    /// local runner's defaults).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let webhook_secret = var("TELEGRAM_WEBHOOK_SECRET").ok_or("TELEGRAM_WEBHOOK_SECRET is not set")?;
        let valid = (1..=256).contains(&webhook_secret.len())
            && webhook_secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err("TELEGRAM_WEBHOOK_SECRET must be 1-256 of A-Z a-z 0-9 _ -".into());
        }
        let operators = var("OPERATOR_CHAT_IDS")
            .unwrap_or_default()
            .split(',')
            .filter(|id| !id.trim().is_empty())
            .map(|id| {
                id.trim()
                    .parse::<i64>()
                    .map_err(|_| format!("OPERATOR_CHAT_IDS: {id:?} is not a chat id"))
            })
            .collect::<Result<_, _>>()?;
        let providers = var("PAYMENT_PROVIDERS")
            .unwrap_or_else(|| "mock".into())
            .split(',')
            .map(|p| match p.trim() {
                "mock" => Ok(Provider::Mock),
                "robokassa" => Ok(Provider::Robokassa),
                "stars" | "telegram_stars" => Ok(Provider::TelegramStars),
                other => Err(format!("PAYMENT_PROVIDERS: unknown provider {other:?}")),
            })
            .collect::<Result<_, _>>()?;
        let ttl =
            var("INVOICE_TTL_SECONDS").map_or(Ok(3600), |v| v.parse::<i64>().map_err(|_| "INVOICE_TTL_SECONDS"))?;
        Ok(Self {
            webhook_secret,
            bot_username: var("TELEGRAM_BOT_USERNAME").map(|name| name.trim_start_matches('@').to_owned()),
            operators,
            support_contact: var("SUPPORT_CONTACT").unwrap_or_else(|| "@tokenbill_support".into()),
            providers,
            public_base_url: var("PUBLIC_BASE_URL").unwrap_or_else(|| "http://127.0.0.1:3000".into()),
            invoice_ttl: chrono::Duration::seconds(ttl.clamp(60, 86_400)),
        })
    }
}

/// One Bot API call the bot wants made.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Send {
        chat: ChatId,
        text: String,
        keyboard: Option<InlineKeyboardMarkup>,
    },
    Edit {
        chat: ChatId,
        message: MessageId,
        text: String,
        keyboard: Option<InlineKeyboardMarkup>,
    },
    Answer {
        id: CallbackQueryId,
        text: Option<String>,
    },
    /// A Telegram Stars invoice for one of our invoices (`payload` is its id).
    StarsInvoice {
        chat: ChatId,
        title: String,
        description: String,
        payload: String,
        stars: u32,
    },
    /// The answer to a `pre_checkout_query`: `None` accepts it.
    PreCheckout {
        id: PreCheckoutQueryId,
        refusal: Option<String>,
    },
}

impl Reply {
    /// The Bot API call, with HTML parse mode and the length limit applied.
    fn into_call(self) -> Call {
        match self {
            Reply::Send { chat, text, keyboard } => {
                let mut payload = SendMessage::new(chat, texts::fit(text));
                payload.parse_mode = Some(ParseMode::Html);
                payload.reply_markup = keyboard.map(Into::into);
                Call::Send(payload)
            }
            Reply::Edit {
                chat,
                message,
                text,
                keyboard,
            } => {
                let mut payload = EditMessageText::new(chat, message, texts::fit(text));
                payload.parse_mode = Some(ParseMode::Html);
                payload.reply_markup = keyboard;
                Call::Edit(payload)
            }
            Reply::Answer { id, text } => {
                let mut payload = AnswerCallbackQuery::new(id);
                payload.text = text;
                Call::Answer(payload)
            }
            Reply::StarsInvoice {
                chat,
                title,
                description,
                payload,
                stars,
            } => Call::Invoice(Box::new(SendInvoice::new(
                chat,
                title,
                description,
                payload,
                tokenbill::payments::stars::CURRENCY,
                [LabeledPrice::new("Tokens", stars)],
            ))),
            Reply::PreCheckout { id, refusal } => {
                let mut payload = AnswerPreCheckoutQuery::new(id, refusal.is_none());
                payload.error_message = refusal;
                Call::PreCheckout(payload)
            }
        }
    }

    /// The call as a webhook answer: its parameters plus `"method"`.
    pub fn to_method(&self) -> Value {
        fn with_method<P: Payload + serde::Serialize>(payload: &P) -> Value {
            let mut body = serde_json::to_value(payload).unwrap_or(Value::Null);
            if let Value::Object(map) = &mut body {
                map.insert("method".into(), Value::String(P::NAME.into()));
            }
            body
        }
        match self.clone().into_call() {
            Call::Send(payload) => with_method(&payload),
            Call::Edit(payload) => with_method(&payload),
            Call::Answer(payload) => with_method(&payload),
            Call::Invoice(payload) => with_method(payload.as_ref()),
            Call::PreCheckout(payload) => with_method(&payload),
        }
    }
}

enum Call {
    Send(SendMessage),
    Edit(EditMessageText),
    Answer(AnswerCallbackQuery),
    Invoice(Box<SendInvoice>),
    PreCheckout(AnswerPreCheckoutQuery),
}

pub struct Webhook {
    store: Store,
    bot: Bot,
    config: Arc<BotConfig>,
    catalog: Mutex<Option<(Instant, Vec<Tariff>)>>,
    /// Where committed notifications (a Stars payment's) are published.
    queue: Option<NotificationQueue>,
}

impl Webhook {
    pub fn new(store: Store, bot: Bot, config: BotConfig) -> Self {
        Self {
            store,
            bot,
            config: Arc::new(config),
            catalog: Mutex::new(None),
            queue: None,
        }
    }

    /// Publishes committed notifications to `queue` (without one, the
    /// outbox sweep publishes them).
    pub fn with_queue(mut self, queue: NotificationQueue) -> Self {
        self.queue = Some(queue);
        self
    }

    /// Handles one HTTP request from Telegram.
    pub async fn handle(&self, request: http::Request<impl AsRef<[u8]>>) -> Response<String> {
        let (parts, body) = request.into_parts();
        if parts.method != http::Method::POST {
            return respond(StatusCode::METHOD_NOT_ALLOWED, json!({ "error": "use POST" }));
        }
        if !self.trusted(&parts.headers) {
            tracing::warn!("webhook call without the right secret header");
            return respond(StatusCode::UNAUTHORIZED, json!({ "error": "unauthorized" }));
        }
        let body = body.as_ref();
        if body.len() > MAX_BODY {
            tracing::warn!(bytes = body.len(), "oversized update refused");
            return respond(
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({ "error": format!("updates are limited to {MAX_BODY} bytes") }),
            );
        }
        self.handle_update(body).await
    }

    fn trusted(&self, headers: &HeaderMap) -> bool {
        let expected = self.config.webhook_secret.as_bytes();
        headers.get(SECRET_HEADER).is_some_and(|given| {
            given.as_bytes().len() == expected.len() && bool::from(given.as_bytes().ct_eq(expected))
        })
    }

    async fn handle_update(&self, body: &[u8]) -> Response<String> {
        let (update, plan) = match triage(&self.config, body) {
            Triage::Handle(update, plan) => (*update, plan),
            Triage::Malformed(err) => {
                // Not an update at all: a retry would not fix it.
                tracing::warn!(error = %err, raw = %String::from_utf8_lossy(body), "malformed update ignored");
                return respond(StatusCode::OK, json!({}));
            }
            Triage::Unsupported { update_id, raw } => {
                tracing::info!(update_id, raw = %raw, "unsupported update ignored");
                return respond(StatusCode::OK, json!({}));
            }
            // Edits, channel posts, stickers...: nothing to do, nothing to remember.
            Triage::Nothing => return respond(StatusCode::OK, json!({})),
        };
        let update_id = update.id.0;
        let mode = plan.mode;
        match self.store.claim_update(update_id, mode).await {
            Ok(Claim::Acquired) => {}
            Ok(Claim::Done) => return respond(StatusCode::OK, json!({})),
            Ok(Claim::InProgress) => {
                // Another delivery is being handled; if it fails, this retry
                // must still complete the work, so do not answer 2xx.
                return respond(StatusCode::SERVICE_UNAVAILABLE, json!({ "error": "in progress" }));
            }
            Err(err) => return self.failed(update_id, err, false).await,
        }
        let mut ctx = flow::Ctx {
            update_id,
            mode,
            marked: false,
            also: Vec::new(),
        };
        let mut replies = match self.dispatch(update, plan, &mut ctx).await {
            Ok(replies) => replies,
            Err(err) => return self.failed(update_id, err, true).await,
        };
        if mode == ClaimMode::Lease
            && !ctx.marked
            && let Err(err) = self.store.complete_update(update_id).await
        {
            return self.failed(update_id, err, true).await;
        }
        let last = replies.pop();
        for reply in replies {
            self.send(reply).await;
        }
        respond(
            StatusCode::OK,
            last.map_or_else(|| json!({}), |reply| reply.to_method()),
        )
    }

    /// A failure: retryable ones give the update back and ask Telegram to
    /// retry (5xx); others are logged and acknowledged.
    async fn failed(&self, update_id: u32, err: StoreError, claimed: bool) -> Response<String> {
        if err.is_retryable() {
            tracing::warn!(update_id, error = %err, "update failed; Telegram will retry");
            if claimed && let Err(release) = self.store.release_update(update_id).await {
                // The lease runs out on its own; the retry then proceeds.
                tracing::warn!(update_id, error = %release, "could not release the update");
            }
            return respond(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "error": "temporarily unavailable" }),
            );
        }
        tracing::error!(update_id, error = %err, "update failed permanently");
        if claimed && let Err(complete) = self.store.complete_update(update_id).await {
            tracing::warn!(update_id, error = %complete, "could not mark the update done");
        }
        respond(StatusCode::OK, json!({}))
    }

    /// Makes a Bot API call whose result is not needed. Failures are logged:
    /// a retry of the whole update would repeat its effects.
    async fn send(&self, reply: Reply) {
        let bot = self.bot.clone();
        let result = match reply.into_call() {
            Call::Send(payload) => JsonRequest::new(bot, payload).await.map(drop),
            Call::Edit(payload) => JsonRequest::new(bot, payload).await.map(drop),
            Call::Answer(payload) => JsonRequest::new(bot, payload).await.map(drop),
            Call::Invoice(payload) => JsonRequest::new(bot, *payload).await.map(drop),
            Call::PreCheckout(payload) => JsonRequest::new(bot, payload).await.map(drop),
        };
        if let Err(err) = result {
            tracing::warn!(error = %err, "Bot API call failed");
        }
    }

    /// The active catalog, reused for [`CATALOG_TTL`] by a warm instance.
    async fn catalog(&self) -> Result<Vec<Tariff>, StoreError> {
        let mut cached = self.catalog.lock().await;
        if let Some((at, tariffs)) = cached.as_ref()
            && at.elapsed() < CATALOG_TTL
        {
            return Ok(tariffs.clone());
        }
        let tariffs: Vec<Tariff> = self.store.tariffs().await?.into_iter().filter(|t| t.active).collect();
        *cached = Some((Instant::now(), tariffs.clone()));
        Ok(tariffs)
    }
}

/// What an update's body asks of the bot, decided from the body alone,
/// before any I/O (and the fuzz target's entry point).
#[derive(Debug)]
pub enum Triage {
    /// Not an update at all.
    Malformed(serde_json::Error),
    /// An update kind this version of the Bot API types does not know.
    Unsupported { update_id: u32, raw: Value },
    /// Nothing to do: edits, channel posts, stickers...
    Nothing,
    /// An update to claim and handle as planned.
    Handle(Box<Update>, Plan),
}

pub fn triage(config: &BotConfig, body: &[u8]) -> Triage {
    let update: Update = match serde_json::from_slice(body) {
        Ok(update) => update,
        Err(err) => return Triage::Malformed(err),
    };
    if let teloxide_core::types::UpdateKind::Error(raw) = &update.kind {
        return Triage::Unsupported {
            update_id: update.id.0,
            raw: raw.clone(),
        };
    }
    match config.plan(&update) {
        Some(plan) => Triage::Handle(Box::new(update), plan),
        None => Triage::Nothing,
    }
}

fn respond(status: StatusCode, body: Value) -> Response<String> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .expect("a status and a JSON body always make a response")
}

pub use tokenbill::telegram::bot;

/// The secrets the bot needs (see [`tokenbill::secrets`]).
pub const SECRETS: [&str; 2] = ["TELEGRAM_WEBHOOK_SECRET", "TELEGRAM_BOT_TOKEN"];
