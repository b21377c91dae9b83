//! Helpers for tests that run against the local stack started by
//! `make test` (DynamoDB Local and moto). Each test gets its own table, so
//! tests run in parallel without seeing each other's data.

use std::sync::atomic::{AtomicU32, Ordering};

use aws_config::SdkConfig;
use tokenbill::domain::{IdempotencyKey, Tokens, UserId};
use tokenbill::resources;
use tokenbill::store::Store;
use tokio::sync::OnceCell;

static CONFIG: OnceCell<SdkConfig> = OnceCell::const_new();
static TABLES: AtomicU32 = AtomicU32::new(0);

/// The SDK configuration for the local stack. Fails loudly, never skips,
/// when the stack is not running.
pub async fn sdk_config() -> &'static SdkConfig {
    CONFIG
        .get_or_init(|| async {
            for variable in ["AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_SQS"] {
                assert!(
                    std::env::var(variable).is_ok_and(|v| v.starts_with("http://127.0.0.1")),
                    "{variable} must point at the local stack: run the tests with `make test` \
                     (or `infra/local-stack/stack.sh run -- cargo test`)"
                );
            }
            tokenbill::aws::sdk_config().await
        })
        .await
}

pub async fn dynamodb() -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(sdk_config().await)
}

pub async fn sqs() -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(sdk_config().await)
}

/// A unique name for this process and call, usable for tables and queues.
pub fn unique_name(prefix: &str) -> String {
    let n = TABLES.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}-{}", std::process::id(), uuid::Uuid::new_v4().simple())
}

/// A store on a fresh table created from [`resources::TABLE`].
pub async fn fresh_store() -> Store {
    let client = dynamodb().await;
    let table = unique_name("test");
    let created = resources::create_table(&client, &table)
        .await
        .expect("create test table");
    assert!(created, "a fresh table name was already taken");
    Store::new(client, table)
}

pub fn user(id: i64) -> UserId {
    UserId::new(id).expect("valid test user id")
}

pub fn key(text: impl Into<String>) -> IdempotencyKey {
    IdempotencyKey::new(text).expect("valid test idempotency key")
}

pub fn tokens(n: u64) -> Tokens {
    Tokens::new(n).expect("valid test token amount")
}

/// Registers a user with the bot's defaults.
pub async fn register(store: &Store, id: i64) -> tokenbill::domain::user::User {
    let registration = tokenbill::domain::user::Registration {
        id: user(id),
        username: None,
        first_name: format!("User {id}"),
        last_name: None,
        language: tokenbill::domain::user::Language::En,
        referrer: None,
    };
    store.register_user(&registration).await.expect("register user").0
}

/// Seeds the sample catalog (`infra/tariffs.sample.json`).
pub async fn seed_catalog(store: &Store) {
    let tariffs = tokenbill_admin::parse_tariffs(tokenbill_dev::SAMPLE_TARIFFS).expect("sample catalog parses");
    store.put_tariffs(&tariffs).await.expect("seed catalog");
}
