//! The local runner behind `make dev`: prepares the local stack (table,
//! queues, sample catalog) and serves every HTTP function behind one
//! endpoint on the routes API Gateway uses.

use std::net::SocketAddr;

pub mod fake_telegram;
pub mod poller;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::{get, post};
use serde_json::json;
use telegram_webhook::Webhook;
use tokenbill::domain::tariff::Tariff;
use tokenbill::resources;
use tokenbill::store::{Store, StoreError};

/// The catalog `make dev` starts with, when the table has none.
pub const SAMPLE_TARIFFS: &str = include_str!("../../tariffs.sample.json");

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub webhook: Arc<Webhook>,
}

/// Creates the table and queues and seeds the sample catalog into an empty
/// table. Safe to run on every start.
pub async fn prepare(store: &Store, sqs: &aws_sdk_sqs::Client) -> Result<Vec<String>, StoreError> {
    let mut done = Vec::new();
    let created = resources::create_table(store.client(), store.table()).await?;
    done.push(format!(
        "table {} {}",
        store.table(),
        if created { "created" } else { "exists" }
    ));
    for (logical_id, url) in resources::create_queues(sqs, "").await? {
        done.push(format!("queue {logical_id}: {url}"));
    }
    if store.tariffs().await?.is_empty() {
        let tariffs: Vec<Tariff> =
            serde_json::from_str(SAMPLE_TARIFFS).map_err(|e| StoreError::corrupt("sample tariffs", e))?;
        store.put_tariffs(&tariffs).await?;
        done.push(format!("seeded {} sample tariffs", tariffs.len()));
    }
    Ok(done)
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/telegram/webhook", post(telegram_webhook))
        .with_state(state)
}

/// API Gateway hands the function the raw request; so does this.
async fn telegram_webhook(
    State(state): State<AppState>,
    request: axum::http::Request<axum::body::Body>,
) -> axum::response::Response {
    let (parts, body) = request.into_parts();
    let body: Bytes = match axum::body::to_bytes(body, 1 << 20).await {
        Ok(body) => body,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "body too large").into_response(),
    };
    let response = state.webhook.handle(axum::http::Request::from_parts(parts, body)).await;
    let (parts, body) = response.into_parts();
    axum::http::Response::from_parts(parts, axum::body::Body::from(body))
}

/// Answers 200 when the table is reachable, 503 otherwise.
async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let table = state
        .store
        .client()
        .describe_table()
        .table_name(state.store.table())
        .send()
        .await;
    match table {
        Ok(_) => (
            StatusCode::OK,
            Json(json!({ "status": "ok", "table": state.store.table(), "dynamodb": "ok" })),
        ),
        Err(err) => {
            let error = StoreError::from_sdk("DescribeTable", err).to_string();
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable", "dynamodb": error })),
            )
        }
    }
}

/// Serves until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The secret `make dev` expects on webhook calls unless
/// `TELEGRAM_WEBHOOK_SECRET` says otherwise.
pub const DEV_WEBHOOK_SECRET: &str = "dev-secret";

/// Builds every function for local use. Without `TELEGRAM_BOT_TOKEN`, the
/// bot talks to a fake Telegram on loopback (returned, so its calls can be
/// seen); with it, to Telegram (or `TELEGRAM_API_URL`).
pub async fn local_app(
    store: Store,
    public_base_url: String,
) -> Result<(AppState, Option<fake_telegram::FakeTelegram>), String> {
    let lookup = |name: &str| {
        std::env::var(name).ok().or_else(|| match name {
            "TELEGRAM_WEBHOOK_SECRET" => Some(DEV_WEBHOOK_SECRET.to_owned()),
            "PUBLIC_BASE_URL" => Some(public_base_url.clone()),
            _ => None,
        })
    };
    let config = telegram_webhook::BotConfig::from_lookup(lookup)?;
    let (bot, fake) = if let Ok(token) = std::env::var("TELEGRAM_BOT_TOKEN") {
        (telegram_webhook::bot(token)?, None)
    } else {
        let fake = fake_telegram::FakeTelegram::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let url = format!("http://{}", listener.local_addr().map_err(|e| e.to_string())?);
        tokio::spawn(fake.clone().serve(listener));
        let bot = teloxide_core::Bot::new("dev:local").set_api_url(url.parse().map_err(|_| "fake Telegram URL")?);
        (bot, Some(fake))
    };
    let webhook = Arc::new(Webhook::new(store.clone(), bot, config));
    Ok((AppState { store, webhook }, fake))
}

/// What `make dev` prints on start.
pub fn describe(addr: SocketAddr) -> String {
    let update = r#"{"update_id":1,"message":{"message_id":1,"date":0,"chat":{"id":42,"type":"private"},"from":{"id":42,"is_bot":false,"first_name":"Ann"},"text":"/start"}}"#;
    format!(
        "Tokenbill is running on http://{addr}\n  \
         health:  curl http://{addr}/health\n  \
         bot:     curl -X POST http://{addr}/telegram/webhook -H 'X-Telegram-Bot-Api-Secret-Token: {DEV_WEBHOOK_SECRET}' -d '{update}'\n  \
         stop:    Ctrl-C"
    )
}
