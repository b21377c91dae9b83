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

/// The SDK configuration for the local stack, with an HTTP client of its
/// own: every `#[tokio::test]` runs its own runtime, and a connection
/// pooled by another test's runtime is dead once that test ends. Fails
/// loudly, never skips, when the stack is not running.
pub async fn sdk_config() -> SdkConfig {
    shared_config()
        .await
        .to_builder()
        .http_client(tokenbill::aws::https_client())
        .build()
}

async fn shared_config() -> &'static SdkConfig {
    CONFIG
        .get_or_init(|| async {
            for variable in [
                "AWS_ENDPOINT_URL_DYNAMODB",
                "AWS_ENDPOINT_URL_SQS",
                "AWS_ENDPOINT_URL_SCHEDULER",
            ] {
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
    aws_sdk_dynamodb::Client::new(&sdk_config().await)
}

pub async fn sqs() -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&sdk_config().await)
}

/// Fresh queues named after `prefix` (the notification queue and its
/// dead-letter queue, as the template declares them); the notification
/// queue's URL.
pub async fn notification_queue(sqs: &aws_sdk_sqs::Client, prefix: &str) -> String {
    let queues = tokenbill::resources::create_queues(sqs, prefix)
        .await
        .expect("create the queues");
    queues
        .into_iter()
        .find(|(id, _)| *id == "NotificationQueue")
        .map(|(_, url)| url)
        .expect("the template declares a NotificationQueue")
}

pub async fn scheduler() -> aws_sdk_scheduler::Client {
    aws_sdk_scheduler::Client::new(&sdk_config().await)
}

/// Per-subscription schedules in a fresh schedule group of moto's
/// Scheduler (so tests never see each other's `sub-<user>`).
pub async fn fresh_timers() -> tokenbill::timers::SubscriptionTimers {
    let timers = tokenbill::timers::SubscriptionTimers::new(
        scheduler().await,
        unique_name("group"),
        "arn:aws:lambda:us-east-1:000000000000:function:renewal-sweep",
        "arn:aws:iam::000000000000:role/tokenbill-scheduler",
    );
    assert!(timers.ensure_group().await.expect("create schedule group"));
    timers
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

/// A service key made in `store` with `scopes` and a rate of `rate` per
/// second: its secret (the only time it is shown) and its record.
pub async fn service_key(
    store: &Store,
    scopes: &[tokenbill::domain::service_key::Scope],
    rate: u32,
) -> (String, tokenbill::domain::service_key::ServiceKey) {
    use tokenbill::domain::service_key::{RatePerSecond, ServiceKey};
    let rate = RatePerSecond::new(rate).expect("a rate within the bounds");
    let (secret, record) = ServiceKey::create("test", scopes.to_vec(), rate, store.now()).expect("a service key");
    store.create_service_key(&record).await.expect("store the service key");
    (secret.reveal().to_owned(), record)
}

/// A registered user with `balance` tokens (granted).
pub async fn funded_user(store: &Store, id: i64, balance: u64) {
    register(store, id).await;
    if balance > 0 {
        store
            .apply(tokenbill::store::BalanceRequest::credit(
                user(id),
                tokenbill::domain::ledger::CreditKind::Grant,
                tokens(balance),
                key(format!("fund-{id}")),
            ))
            .await
            .expect("fund user");
    }
}

/// Seeds the sample catalog (`infra/tariffs.sample.json`).
pub async fn seed_catalog(store: &Store) {
    let tariffs = tokenbill_admin::parse_tariffs(tokenbill_dev::SAMPLE_TARIFFS).expect("sample catalog parses");
    store.put_tariffs(&tariffs).await.expect("seed catalog");
}

/// Serves the payment webhook over HTTP on loopback, the way API Gateway
/// hands it requests; its base URL.
pub async fn serve_payments(payments: std::sync::Arc<payment_webhook::PaymentWebhook>) -> String {
    let router = axum::Router::new().fallback(move |request: axum::http::Request<axum::body::Body>| {
        let payments = payments.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
            let response = payments.handle(http::Request::from_parts(parts, body)).await;
            let (parts, body) = response.into_parts();
            axum::response::Response::from_parts(parts, axum::body::Body::from(body))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let base = format!("http://{}", listener.local_addr().expect("bound address"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

pub mod faults {
    //! Fault injection for the DynamoDB client: counts every request the
    //! SDK sends and, when armed, sends chosen attempts to a closed port so
    //! they fail the way an unreachable DynamoDB does.

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
    use aws_smithy_runtime_api::box_error::BoxError;
    use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;

    #[derive(Debug, Default)]
    struct State {
        requests: AtomicUsize,
        fail_from: AtomicUsize,
        fail_until: AtomicUsize,
    }

    #[derive(Debug, Clone, Default)]
    pub struct DynamoFaults(Arc<State>);

    impl DynamoFaults {
        /// Requests (attempts) sent so far.
        pub fn requests(&self) -> usize {
            self.0.requests.load(Ordering::SeqCst)
        }

        /// After `skip` more attempts succeed, the next `count` fail.
        pub fn fail_after(&self, skip: usize, count: usize) {
            let from = self.requests() + skip;
            self.0.fail_from.store(from, Ordering::SeqCst);
            self.0.fail_until.store(from + count, Ordering::SeqCst);
        }
    }

    impl Intercept for DynamoFaults {
        fn name(&self) -> &'static str {
            "DynamoFaults"
        }

        fn modify_before_transmit(
            &self,
            context: &mut BeforeTransmitInterceptorContextMut<'_>,
            _components: &RuntimeComponents,
            _cfg: &mut ConfigBag,
        ) -> Result<(), BoxError> {
            let n = self.0.requests.fetch_add(1, Ordering::SeqCst);
            if n >= self.0.fail_from.load(Ordering::SeqCst) && n < self.0.fail_until.load(Ordering::SeqCst) {
                // Port 1 on loopback: nothing listens, the connection is refused.
                context.request_mut().set_uri("http://127.0.0.1:1/")?;
            }
            Ok(())
        }
    }

    /// A store on a fresh table whose client goes through `faults`.
    pub async fn faulty_store(faults: &DynamoFaults) -> tokenbill::Store {
        let config = aws_sdk_dynamodb::config::Builder::from(&super::sdk_config().await)
            .interceptor(faults.clone())
            .build();
        let client = aws_sdk_dynamodb::Client::from_conf(config);
        let table = super::unique_name("faults");
        tokenbill::resources::create_table(&client, &table)
            .await
            .expect("create table");
        tokenbill::Store::new(client, table)
    }
}

/// `make dev`'s runner in-process, as `make dev` starts it: prepared
/// (catalog, demo promo), a fresh service key, every function served on a
/// free loopback port, its background tasks (notifier poller, sweep)
/// running. On a fresh table and queues; stops when dropped.
pub struct DevRunner {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub store: Store,
    pub service_key: String,
    pub app: tokenbill_dev::LocalApp,
    _background: tokenbill_dev::Background,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for DevRunner {
    fn drop(&mut self) {
        self.server.abort();
    }
}

pub async fn dev_runner() -> DevRunner {
    let store = fresh_store().await;
    let sqs = sqs().await;
    tokenbill_dev::prepare(&store, &sqs)
        .await
        .expect("prepare like make dev");
    let service_key = tokenbill_dev::dev_service_key(&store).await.expect("service key");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let base = format!("http://{}", listener.local_addr().expect("bound address"));
    let app = tokenbill_dev::local_app(store.clone(), sqs, &unique_name("dev"), base.clone())
        .await
        .expect("the dev runner's functions");
    let background = app.spawn_background();
    let server = tokio::spawn(tokenbill_dev::serve(
        listener,
        app.state.clone(),
        std::future::pending(),
    ));
    DevRunner {
        base,
        store,
        service_key,
        app,
        _background: background,
        server,
    }
}

pub mod chaos_proxy;
pub mod invariants;
pub mod updates;
