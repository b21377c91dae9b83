//! The local runner behind `make dev`: prepares the local stack (table,
//! queues, sample catalog) and serves every HTTP function behind one
//! endpoint on the routes API Gateway uses.

use std::net::SocketAddr;

pub mod fake_robokassa;
pub mod fake_telegram;
pub mod logs;
pub mod poller;
pub mod sandbox;
pub mod updates;

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{any, get, post};
use notifier::Notifier;
use payment_webhook::{PaymentConfig, PaymentWebhook};
use serde_json::json;
use spend_api::{SpendApi, SpendConfig};
use telegram_webhook::Webhook;
use tokenbill::domain::tariff::Tariff;
use tokenbill::payments::Renewals;
use tokenbill::queue::NotificationQueue;
use tokenbill::resources;
use tokenbill::store::{Store, StoreError};
use tokenbill::timers::{DEFAULT_SCHEDULE_GROUP, SubscriptionTimers, TimerError};
use tracing::Instrument;

/// The catalog `make dev` starts with, when the table has none.
pub const SAMPLE_TARIFFS: &str = include_str!("../../tariffs.sample.json");

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub webhook: Arc<Webhook>,
    pub payments: Arc<PaymentWebhook>,
    pub spend: Arc<SpendApi>,
    /// The bot sandbox, when the fake Telegram stands in for Telegram.
    pub sandbox: Option<Arc<sandbox::Sandbox>>,
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
    if let Some(timers) = store.timers() {
        let created = timers.ensure_group().await.map_err(|e| StoreError::Unavailable {
            operation: "CreateScheduleGroup",
            message: e.to_string(),
        })?;
        done.push(format!(
            "schedule group {} {}",
            timers.group(),
            if created { "created" } else { "exists" }
        ));
    }
    if ensure_demo_promo(store).await? {
        done.push(format!(
            "created promo code {DEMO_PROMO} ({DEMO_PROMO_PERCENT}% off, once per user)"
        ));
    }
    if store.tariffs().await?.is_empty() {
        let tariffs: Vec<Tariff> =
            serde_json::from_str(SAMPLE_TARIFFS).map_err(|e| StoreError::corrupt("sample tariffs", e))?;
        store.put_tariffs(&tariffs).await?;
        done.push(format!("seeded {} sample tariffs", tariffs.len()));
    }
    Ok(done)
}

/// The promo code `make dev` creates: a discount to try a purchase with.
pub const DEMO_PROMO: &str = "DEMO20";
const DEMO_PROMO_PERCENT: u32 = 20;

/// Creates [`DEMO_PROMO`] unless it exists; true when created.
pub async fn ensure_demo_promo(store: &Store) -> Result<bool, StoreError> {
    use tokenbill::domain::promo::{PromoCode, PromoCodeText, PromoEffect};
    let code = PromoCodeText::new(DEMO_PROMO)?;
    let effect = PromoEffect::PercentDiscount {
        percent: DEMO_PROMO_PERCENT.into(),
    };
    store.create_promo(&PromoCode::new(code, effect)).await
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/telegram/webhook", post(telegram_webhook))
        .route("/payments/{*route}", any(payments))
        .route("/v1/{*route}", any(spend))
        .with_state(state.clone())
        .merge(sandbox::router(state.sandbox))
}

// Each function's logs carry its name, as each Lambda's log group would.
async fn telegram_webhook(State(state): State<AppState>, request: Request<Body>) -> Response {
    match raw(request).await {
        Ok(request) => lambda_answer(
            state
                .webhook
                .handle(request)
                .instrument(tracing::info_span!("telegram-webhook"))
                .await,
        ),
        Err(refused) => refused,
    }
}

async fn payments(State(state): State<AppState>, request: Request<Body>) -> Response {
    match raw(request).await {
        Ok(request) => lambda_answer(
            state
                .payments
                .handle(request)
                .instrument(tracing::info_span!("payment-webhook"))
                .await,
        ),
        Err(refused) => refused,
    }
}

async fn spend(State(state): State<AppState>, request: Request<Body>) -> Response {
    match raw(request).await {
        Ok(request) => lambda_answer(
            state
                .spend
                .handle(request)
                .instrument(tracing::info_span!("spend-api"))
                .await,
        ),
        Err(refused) => refused,
    }
}

/// API Gateway hands a function the whole request, body read (up to its
/// 10 MB payload limit); so does this.
async fn raw(request: Request<Body>) -> Result<Request<Bytes>, Response> {
    let (parts, body) = request.into_parts();
    match axum::body::to_bytes(body, 10 << 20).await {
        Ok(body) => Ok(Request::from_parts(parts, body)),
        Err(_) => Err((StatusCode::PAYLOAD_TOO_LARGE, "body too large").into_response()),
    }
}

fn lambda_answer(response: axum::http::Response<String>) -> Response {
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, Body::from(body))
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

/// The mock provider's signing secret in `make dev` unless
/// `MOCK_PROVIDER_SECRET` says otherwise.
pub const DEV_MOCK_SECRET: &str = "dev-mock-provider-secret";

/// How often the local sweep runs (the deployed renewal-sweep runs every minute).
const OUTBOX_SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(30);
/// How often the local runner looks for due one-time schedules.
const TIMERS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The per-subscription schedules `make dev` keeps in the local stack's
/// Scheduler (moto): `SCHEDULE_GROUP`, `SWEEP_FUNCTION_ARN` and
/// `SCHEDULER_ROLE_ARN` if set, else local stand-ins (nothing invokes
/// them: [`fire_due_timers`] does).
pub fn dev_timers(sdk: &aws_config::SdkConfig) -> SubscriptionTimers {
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    SubscriptionTimers::new(
        aws_sdk_scheduler::Client::new(sdk),
        var("SCHEDULE_GROUP", DEFAULT_SCHEDULE_GROUP),
        var(
            "SWEEP_FUNCTION_ARN",
            "arn:aws:lambda:us-east-1:000000000000:function:renewal-sweep",
        ),
        var(
            "SCHEDULER_ROLE_ARN",
            "arn:aws:iam::000000000000:role/tokenbill-scheduler",
        ),
    )
}

/// Fires the one-time schedules whose time has passed, as EventBridge
/// Scheduler would (moto stores schedules but never fires them): deletes
/// each (`ActionAfterCompletion: DELETE`; first, so the schedule the sweep
/// sets next survives) and sweeps its subscription in-process. A failing
/// sweep is logged: the rate sweep retries it. The number fired.
pub async fn fire_due_timers(
    store: &Store,
    queue: &NotificationQueue,
    renewals: &Renewals,
) -> Result<usize, TimerError> {
    let Some(timers) = store.timers() else {
        return Ok(0);
    };
    let due = timers.due(store.now()).await?;
    for fired in &due {
        timers.complete(fired).await?;
        match tokenbill::sweep::sweep_subscription(store, queue, renewals, fired.user).await {
            Ok(report) => tracing::info!(user = %fired.user, at = %fired.at, ?report, "schedule fired"),
            Err(err) => tracing::warn!(user = %fired.user, error = %err, "scheduled sweep failed"),
        }
    }
    Ok(due.len())
}

/// Everything `make dev` runs.
pub struct LocalApp {
    pub state: AppState,
    /// The fake Telegram, when no `TELEGRAM_BOT_TOKEN` is set.
    pub telegram: Option<fake_telegram::FakeTelegram>,
    /// The fake Robokassa, when no `ROBOKASSA_LOGIN` is set.
    pub robokassa: Option<fake_robokassa::FakeRobokassa>,
    pub notifier: Arc<Notifier>,
    pub queue: NotificationQueue,
    /// What the sweep charges renewals with.
    pub renewals: Renewals,
    /// The secret the webhook expects in its header.
    pub webhook_secret: String,
    /// With `TELEGRAM_BOT_TOKEN`: the bot's updates, read with `getUpdates`.
    pub long_poll: Option<updates::LongPoll>,
}

/// Builds every function for local use, on queues named with `queue_prefix`
/// (created if missing). Without `TELEGRAM_BOT_TOKEN`, the bot and the
/// notifier talk to a fake Telegram on loopback (returned, so its calls can
/// be seen); with it, to Telegram (or `TELEGRAM_API_URL`). Likewise
/// Robokassa: a fake on loopback unless `ROBOKASSA_LOGIN` is set; the bot
/// offers it next to the mock provider unless `PAYMENT_PROVIDERS` is set.
pub async fn local_app(
    store: Store,
    sqs: aws_sdk_sqs::Client,
    queue_prefix: &str,
    public_base_url: String,
) -> Result<LocalApp, String> {
    let (robokassa, robokassa_settings) = if std::env::var("ROBOKASSA_LOGIN").is_ok() {
        (None, Vec::new())
    } else {
        let (fake, settings) = fake_robokassa::start_for_dev(&public_base_url)
            .await
            .map_err(|e| format!("fake Robokassa: {e}"))?;
        (Some(fake), settings)
    };
    let lookup = |name: &str| {
        std::env::var(name).ok().or_else(|| match name {
            "TELEGRAM_WEBHOOK_SECRET" => Some(DEV_WEBHOOK_SECRET.to_owned()),
            "MOCK_PROVIDER_SECRET" => Some(DEV_MOCK_SECRET.to_owned()),
            "PUBLIC_BASE_URL" => Some(public_base_url.clone()),
            // Stars too with the fake Telegram: the sandbox pays them.
            "PAYMENT_PROVIDERS" => Some(
                if std::env::var("TELEGRAM_BOT_TOKEN").is_ok() {
                    "mock,robokassa"
                } else {
                    "mock,robokassa,stars"
                }
                .to_owned(),
            ),
            // "Back to the bot" on the payment pages.
            "BOT_URL" if std::env::var("TELEGRAM_BOT_TOKEN").is_err() => Some(format!("{public_base_url}/sandbox")),
            _ => robokassa_settings
                .iter()
                .find(|(setting, _)| *setting == name)
                .map(|(_, value)| value.clone()),
        })
    };
    let config = telegram_webhook::BotConfig::from_lookup(lookup)?;
    let (bot, telegram, long_poll) = if let Ok(token) = std::env::var("TELEGRAM_BOT_TOKEN") {
        let api = std::env::var("TELEGRAM_API_URL").unwrap_or_else(|_| "https://api.telegram.org".to_owned());
        let long_poll = updates::LongPoll::new(&api, &token, 30);
        (telegram_webhook::bot(token)?, None, Some(long_poll))
    } else {
        let fake = fake_telegram::FakeTelegram::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let url = format!("http://{}", listener.local_addr().map_err(|e| e.to_string())?);
        tokio::spawn(fake.clone().serve(listener));
        let bot = teloxide_core::Bot::new("dev:local").set_api_url(url.parse().map_err(|_| "fake Telegram URL")?);
        (bot, Some(fake), None)
    };
    let queues = resources::create_queues(&sqs, queue_prefix)
        .await
        .map_err(|e| e.to_string())?;
    let queue_url = queues
        .into_iter()
        .find(|(id, _)| *id == resources::NOTIFICATION_QUEUE.logical_id)
        .map(|(_, url)| url)
        .ok_or("no notification queue")?;
    let queue = NotificationQueue::new(sqs.clone(), queue_url.clone());
    let payments = PaymentWebhook::new(store.clone(), queue.clone(), PaymentConfig::from_lookup(lookup)?);
    // The sweep charges renewals through the same providers the server
    // runs (the mock's recurring API on this server, the fake Robokassa).
    let renewals = Renewals::from_lookup(lookup, &store, reqwest::Client::new())?;
    let notifier = Notifier::new(store.clone(), bot.clone(), sqs, queue_url);
    let webhook_secret = config.webhook_secret.clone();
    let webhook = Arc::new(Webhook::new(store.clone(), bot, config).with_queue(queue.clone()));
    let sandbox = telegram
        .clone()
        .map(|fake| Arc::new(sandbox::Sandbox::new(fake, webhook.clone(), webhook_secret.clone())));
    let spend = SpendApi::new(
        store.clone(),
        SpendConfig::from_lookup(|name| std::env::var(name).ok())?,
    )
    .with_queue(queue.clone());
    Ok(LocalApp {
        state: AppState {
            store,
            webhook,
            payments: Arc::new(payments),
            spend: Arc::new(spend),
            sandbox,
        },
        telegram,
        robokassa,
        notifier: Arc::new(notifier),
        queue,
        renewals,
        webhook_secret,
        long_poll,
    })
}

impl LocalApp {
    /// Runs what Lambda runs around the HTTP functions: the SQS event
    /// source feeding the notifier and the scheduled sweep. Two
    /// tasks, so that neither cancels the other midway (a receive dropped
    /// after SQS handed out messages would hide them for the visibility
    /// timeout).
    /// With a real bot token, a third task reads its updates (`getUpdates`).
    pub fn spawn_background(&self) -> Background {
        let (notifier, queue) = (self.notifier.clone(), self.queue.clone());
        let poller = tokio::spawn(
            async move {
                loop {
                    if let Err(err) = poller::poll_once(queue.sqs(), queue.url(), &notifier, 1).await {
                        tracing::warn!(error = %err, "notification queue poll failed");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                }
            }
            .instrument(tracing::info_span!("notifier")),
        );
        let (store, queue, renewals) = (self.state.store.clone(), self.queue.clone(), self.renewals.clone());
        let sweeper = tokio::spawn(
            async move {
                // One task for both, as each sweeps subscriptions: the rate
                // sweep every 30 s, due one-time schedules every 5 s.
                let mut every = tokio::time::interval(TIMERS_EVERY);
                let mut last_sweep: Option<tokio::time::Instant> = None;
                loop {
                    every.tick().await;
                    if let Err(err) = fire_due_timers(&store, &queue, &renewals).await {
                        tracing::warn!(error = %err, "could not fire due schedules");
                    }
                    if last_sweep.is_some_and(|at| at.elapsed() < OUTBOX_SWEEP_EVERY) {
                        continue;
                    }
                    last_sweep = Some(tokio::time::Instant::now());
                    match tokenbill::sweep::sweep(&store, &queue, &renewals).await {
                        Ok(report) if report != tokenbill::sweep::SweepReport::default() => {
                            tracing::info!(?report, "sweep done");
                        }
                        Ok(_) => {}
                        Err(err) => tracing::warn!(error = %err, "sweep failed"),
                    }
                }
            }
            .instrument(tracing::info_span!("renewal-sweep")),
        );
        let mut tasks = vec![poller, sweeper];
        if let Some(long_poll) = self.long_poll.clone() {
            let run = long_poll.run(self.state.webhook.clone(), self.webhook_secret.clone());
            tasks.push(tokio::spawn(run.instrument(tracing::info_span!("telegram-updates"))));
        }
        Background(tasks)
    }
}

/// The background tasks; dropping this stops them.
pub struct Background(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Background {
    fn drop(&mut self) {
        self.0.iter().for_each(tokio::task::JoinHandle::abort);
    }
}

/// A fresh spend API key for this run (printed once; only its hash is kept).
pub async fn dev_service_key(store: &Store) -> Result<String, StoreError> {
    use tokenbill::domain::service_key::{RatePerSecond, Scope, ServiceKey};
    let rate = RatePerSecond::new(50)?;
    let (secret, record) = ServiceKey::create("make dev", vec![Scope::Spend, Scope::Read], rate, store.now())?;
    store.create_service_key(&record).await?;
    Ok(secret.reveal().to_owned())
}

/// What `make dev` prints on start: the URLs, the service key (shown only
/// now) and a few things to try.
pub fn describe(addr: SocketAddr, service_key: &str, sandbox: bool) -> String {
    let base = format!("http://{addr}");
    let update = r#"{"update_id":1,"message":{"message_id":1,"date":0,"chat":{"id":42,"type":"private"},"from":{"id":42,"is_bot":false,"first_name":"Ann"},"text":"/start"}}"#;
    let chat = if sandbox {
        format!(
            "  1. open the bot sandbox: {base}/sandbox (a Telegram-like chat; switch users at the top)\n  \
             2. send /start, press \"Enter promo code\" and send {DEMO_PROMO} ({DEMO_PROMO_PERCENT}% off)\n  \
             3. press \"Buy tokens\", pick \"100 tokens\", pay by card: \"Go to payment\" opens the mock checkout; press Pay\n  \
             \x20  (or pay in Stars: the invoice's Pay button sends pre_checkout_query and successful_payment)\n  \
             4. the bot tells you the payment arrived; press Balance\n"
        )
    } else {
        format!(
            "  1. talk to your bot in Telegram: the runner reads its updates with getUpdates (its webhook is removed)\n  \
             2. send /start, then /promo {DEMO_PROMO} ({DEMO_PROMO_PERCENT}% off), then buy and pay by card on the mock checkout\n"
        )
    };
    format!(
        "Tokenbill is running on {base}\n\
         \n\
         Try this:\n\
         {chat}  \
         5. spend tokens as a service would (the user id is the Telegram id; Ann in the sandbox is 1001):\n     \
         curl -X POST {base}/v1/spend -H 'Authorization: Bearer {service_key}' -H 'Idempotency-Key: try-1' -H 'Content-Type: application/json' -d '{{\"user_id\":1001,\"tokens\":5}}'\n     \
         (a service key made for this run, shown only now; see docs/token-spending.md)\n\
         \n\
         Also:\n  \
         health:  curl {base}/health\n  \
         webhook: curl -X POST {base}/telegram/webhook -H 'X-Telegram-Bot-Api-Secret-Token: {DEV_WEBHOOK_SECRET}' -d '{update}'\n  \
         pay:     the mock checkout is {base}/payments/mock/checkout/INVOICE; Robokassa's link ({base}/payments/robokassa/pay/INVOICE)\n  \
         \x20        goes to a fake Robokassa unless ROBOKASSA_LOGIN is set\n  \
         logs:    one line per event, labelled with its function; --json for JSON lines, RUST_LOG filters\n  \
         stop:    Ctrl-C"
    )
}
