//! The local runner behind `make dev`: prepares the local stack (table,
//! queues, sample catalog) and serves every HTTP function behind one
//! endpoint on the routes API Gateway uses.

use std::net::SocketAddr;

use axum::Router;
pub mod fake_telegram;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use serde_json::json;
use tokenbill::domain::tariff::Tariff;
use tokenbill::resources;
use tokenbill::store::{Store, StoreError};

/// The catalog `make dev` starts with, when the table has none.
pub const SAMPLE_TARIFFS: &str = include_str!("../../tariffs.sample.json");

#[derive(Clone, Debug)]
pub struct AppState {
    pub store: Store,
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
    Router::new().route("/health", get(health)).with_state(state)
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

pub fn describe(addr: SocketAddr) -> String {
    format!("Tokenbill is running on http://{addr}\n  health: curl http://{addr}/health\n  stop:   Ctrl-C")
}
