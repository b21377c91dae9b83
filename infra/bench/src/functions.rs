//! Each function's binary as Lambda runs it: built natively with the
//! release profile (`make bench` builds them first), started against a
//! local Runtime API ([`crate::runtime`]) with the environment the
//! template gives it pointing at the local stack, beside a hello-world
//! `lambda_runtime` function built the same way (`infra/hello-lambda`).
//!
//! - init: spawn to the first `GET .../invocation/next` (the SDK config,
//!   secrets, clients built), the median of `--cold-starts` starts after
//!   one unmeasured start (the binary in the page cache);
//! - the first (cold) and a second (warm) invocation with representative
//!   events: API Gateway v2 HTTP events, an SQS event, Scheduler events;
//! - peak resident memory (`VmHWM`) after them;
//! - the size of the native binary and of the deployable arm64
//!   `bootstrap` that `make build` leaves in `.aws-sam/build/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokenbill::domain::UserId;
use tokenbill::domain::invoice::Provider;
use tokenbill::domain::notification::NotificationId;
use tokenbill::domain::service_key::{RatePerSecond, Scope, ServiceKey};
use tokenbill::payments::mock::{MockEvent, MockProvider, SIGNATURE_HEADER};
use tokenbill::store::NewInvoice;

use crate::app::{BoxError, Local, register};
use crate::measure::peak_rss_kib;
use crate::runtime::RuntimeApi;

const HELLO: &str = "hello-lambda";
/// The functions, in the order they run (the notifier delivers the
/// payment-webhook's notification).
const FUNCTIONS: [&str; 5] = [
    "telegram-webhook",
    "payment-webhook",
    "notifier",
    "spend-api",
    "renewal-sweep",
];
const WEBHOOK_SECRET: &str = "bench-webhook-secret";
/// Users the functions' events act for.
const FUNCTION_USERS: i64 = 800_000;
const INIT_TIMEOUT: Duration = Duration::from_secs(30);
const INVOKE_TIMEOUT: Duration = Duration::from_secs(30);

/// One function's figures.
struct Figures {
    name: &'static str,
    init_ms: Vec<f64>,
    first_ms: f64,
    warm_ms: f64,
    peak_kib: u64,
    binary_bytes: u64,
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// Where `cargo build --release` puts the binaries.
pub fn default_dir() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_owned());
    Path::new(&target).join("release")
}

pub async fn bench(local: &Local, dir: &Path, sam_build: &Path, cold_starts: usize) -> Result<(), BoxError> {
    println!();
    println!(
        "functions against a local Lambda Runtime API ({} release binaries; init = spawn to first /next, median of {cold_starts})",
        dir.display()
    );
    let telegram = tokenbill_dev::fake_telegram::FakeTelegram::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let telegram_url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(telegram.clone().serve(listener));
    let env = Env {
        table: local.store.table().to_owned(),
        queue_url: local.app.queue.url().to_owned(),
        telegram_url,
        public_base_url: local.base.clone(),
    };
    let mut events = Events::new(local).await?;
    let mut figures = Vec::new();
    for name in std::iter::once(HELLO).chain(FUNCTIONS) {
        let binary = dir.join(name);
        if !binary.is_file() {
            println!("{name:<17} not built: cargo build --release -p {name}");
            continue;
        }
        // One unmeasured start first: every binary then starts from the
        // page cache, whichever ran before it.
        let (_api, mut child, _) = start(&binary, name, &env).await?;
        stop(&mut child);
        let mut init_ms = Vec::with_capacity(cold_starts);
        for _ in 1..cold_starts {
            let (_api, mut child, init) = start(&binary, name, &env).await?;
            init_ms.push(init);
            stop(&mut child);
        }
        let (api, mut child, init) = start(&binary, name, &env).await?;
        init_ms.push(init);
        let mut times = Vec::new();
        for event in events.for_function(name).await? {
            let started = Instant::now();
            let answer = api.invoke(&event, INVOKE_TIMEOUT).await;
            times.push(started.elapsed().as_secs_f64() * 1e3);
            check(name, &event, answer)?;
        }
        let peak_kib = peak_rss_kib(&child.id().to_string());
        stop(&mut child);
        figures.push(Figures {
            name,
            init_ms,
            first_ms: times.first().copied().unwrap_or(0.0),
            warm_ms: times.get(1).copied().unwrap_or(0.0),
            peak_kib,
            binary_bytes: std::fs::metadata(&binary).map_or(0, |m| m.len()),
        });
    }
    let hello = figures.iter().find(|f| f.name == HELLO).map(|f| median(&f.init_ms));
    println!(
        "{:<17} {:>9} {:>9} {:>7} {:>11} {:>10} {:>9} {:>11} {:>13}",
        "function", "init", "init max", "/hello", "1st invoke", "2nd invoke", "peak RSS", "native", "arm64 bootstrap"
    );
    for f in &figures {
        let init = median(&f.init_ms);
        let max = f.init_ms.iter().copied().fold(0.0, f64::max);
        let ratio = hello.map_or("-".to_owned(), |h| format!("{:.1}x", init / h));
        println!(
            "{:<17} {:>7.1}ms {:>7.1}ms {:>7} {:>9.1}ms {:>8.1}ms {:>6.1}MiB {:>8.2}MiB {:>15}",
            f.name,
            init,
            max,
            ratio,
            f.first_ms,
            f.warm_ms,
            f.peak_kib as f64 / 1024.0,
            f.binary_bytes as f64 / 1_048_576.0,
            bootstrap_size(sam_build, f.name),
        );
    }
    Ok(())
}

/// The deployable bootstrap's size, from `make build`'s output.
fn bootstrap_size(sam_build: &Path, name: &str) -> String {
    if name == HELLO {
        return "-".to_owned();
    }
    // sam build names each directory after the template's logical id.
    let Ok(dirs) = std::fs::read_dir(sam_build) else {
        return "run make build".to_owned();
    };
    let wanted: String = name.split('-').map(capitalize).collect();
    dirs.flatten()
        .find(|dir| dir.file_name().to_string_lossy().starts_with(&wanted))
        .and_then(|dir| std::fs::metadata(dir.path().join("bootstrap")).ok())
        .map_or("run make build".to_owned(), |m| {
            format!("{:.2}MiB", m.len() as f64 / 1_048_576.0)
        })
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map_or(String::new(), |c| c.to_uppercase().chain(chars).collect())
}

/// What every function reads from its environment (template.yaml), here
/// pointing at the local stack; secrets are bench values.
struct Env {
    table: String,
    queue_url: String,
    telegram_url: String,
    public_base_url: String,
}

/// Starts `binary` against a fresh Runtime API; its init time in ms.
async fn start(binary: &Path, name: &str, env: &Env) -> Result<(RuntimeApi, Child, f64), BoxError> {
    let api = RuntimeApi::start().await?;
    let log = std::env::temp_dir().join(format!("tokenbill-bench-{name}.log"));
    let started = Instant::now();
    let mut child = Command::new(binary)
        .env("AWS_LAMBDA_RUNTIME_API", &api.address)
        .env("AWS_LAMBDA_FUNCTION_NAME", name)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("TOKENBILL_TABLE", &env.table)
        .env("NOTIFICATION_QUEUE_URL", &env.queue_url)
        .env("TELEGRAM_API_URL", &env.telegram_url)
        .env("TELEGRAM_BOT_TOKEN", "123456:bench-token")
        .env("TELEGRAM_WEBHOOK_SECRET", WEBHOOK_SECRET)
        .env("MOCK_PROVIDER_SECRET", tokenbill_dev::DEV_MOCK_SECRET)
        .env("PUBLIC_BASE_URL", &env.public_base_url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    match api.ready(INIT_TIMEOUT).await {
        Ok(at) => Ok((api, child, (at - started).as_secs_f64() * 1e3)),
        Err(err) => {
            stop(&mut child);
            Err(format!("{name}: {err} (its output: {})", log.display()).into())
        }
    }
}

/// Ends the process this bench started.
fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn check(name: &str, event: &Value, answer: Result<crate::runtime::Answer, String>) -> Result<(), BoxError> {
    let body = match answer {
        Ok(Ok(body)) => body,
        Ok(Err(error)) => return Err(format!("{name} failed on {event}: {}", String::from_utf8_lossy(&error)).into()),
        Err(err) => return Err(format!("{name}: {err}").into()),
    };
    let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let ok = match answer.get("statusCode") {
        Some(status) => status.as_u64().is_some_and(|s| (200..400).contains(&s)),
        // The notifier: no message left to retry.
        None => answer
            .get("batchItemFailures")
            .is_none_or(|failures| failures.as_array().is_some_and(Vec::is_empty)),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{name} answered {answer} to {event}").into())
    }
}

/// An API Gateway HTTP API (payload 2.0) event, as Lambda hands it over.
fn http_event(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Value {
    let headers: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
        .chain([("host".to_owned(), json!("api.example.com"))])
        .collect();
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "bench",
            "domainName": "api.example.com",
            "domainPrefix": "api",
            "http": { "method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "bench" },
            "requestId": uuid::Uuid::new_v4().to_string(),
            "routeKey": "$default",
            "stage": "$default",
            "time": "30/Nov/2026:00:00:00 +0000",
            "timeEpoch": 1_764_460_800_000_i64
        },
        "body": body,
        "isBase64Encoded": false
    })
}

/// The representative events, made against the local stack's table.
struct Events<'a> {
    local: &'a Local,
    provider: MockProvider,
    /// The service key's secret the spend API events use.
    spend_key: String,
    /// The invoice the payment-webhook's callback pays (its notification
    /// is what the notifier then delivers).
    paid: Option<tokenbill::domain::InvoiceId>,
    next_id: u32,
}

impl<'a> Events<'a> {
    async fn new(local: &'a Local) -> Result<Self, BoxError> {
        let store = &local.store;
        crate::spend::seed_users(store, FUNCTION_USERS, 1, true).await?;
        let (secret, record) = ServiceKey::create(
            "bench-functions",
            vec![Scope::Spend, Scope::Read],
            RatePerSecond::new(100)?,
            store.now(),
        )?;
        store.create_service_key(&record).await?;
        Ok(Self {
            local,
            provider: MockProvider::new(tokenbill_dev::DEV_MOCK_SECRET)?,
            spend_key: secret.reveal().to_owned(),
            paid: None,
            next_id: 900_000_000,
        })
    }

    fn update_id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    /// Two events for `name`: the first meets a cold instance, the second a warm one.
    async fn for_function(&mut self, name: &str) -> Result<Vec<Value>, BoxError> {
        let secret = [
            ("x-telegram-bot-api-secret-token", WEBHOOK_SECRET),
            ("content-type", "application/json"),
        ];
        Ok(match name {
            "telegram-webhook" => {
                let user = FUNCTION_USERS + 100 + i64::from(self.update_id() % 1000);
                let person = json!({ "id": user, "is_bot": false, "first_name": "Ann", "language_code": "en" });
                let chat = json!({ "id": user, "type": "private", "first_name": "Ann" });
                let start = json!({ "update_id": self.update_id(), "message": {
                    "message_id": 1, "date": 1_764_000_000, "chat": chat, "from": person, "text": "/start" }});
                let click = json!({ "update_id": self.update_id(), "callback_query": {
                    "id": "cb1", "from": person, "chat_instance": "1", "data": "bal",
                    "message": { "message_id": 2, "date": 1_764_000_000, "chat": chat,
                                 "from": { "id": 1, "is_bot": true, "first_name": "Tokenbill" }, "text": "menu" }}});
                vec![
                    http_event("POST", "/telegram/webhook", &secret, &start.to_string()),
                    http_event("POST", "/telegram/webhook", &secret, &click.to_string()),
                ]
            }
            "payment-webhook" => {
                let store = &self.local.store;
                let user = FUNCTION_USERS + 1;
                register(store, user).await?;
                let order = NewInvoice {
                    user: UserId::new(user)?,
                    tariff_id: "pack_100".parse()?,
                    provider: Provider::Mock,
                    promo: None,
                };
                let invoice = store.create_invoice(order, chrono::Duration::hours(1)).await?;
                let (signature, body) = self.provider.callback(&MockEvent::paying(&invoice), chrono::Utc::now());
                self.paid = Some(invoice.id.clone());
                vec![
                    http_event("GET", &format!("/payments/mock/checkout/{}", invoice.id), &[], ""),
                    http_event(
                        "POST",
                        "/payments/mock/callback",
                        &[(SIGNATURE_HEADER, &signature), ("content-type", "application/json")],
                        &String::from_utf8(body)?,
                    ),
                ]
            }
            "notifier" => {
                let notification = self.paid.as_ref().map_or("payment:none".to_owned(), |id| {
                    NotificationId::payment(id).as_str().to_owned()
                });
                let sqs = |notification: &str| {
                    json!({ "Records": [{
                        "messageId": uuid::Uuid::new_v4().to_string(),
                        "receiptHandle": "bench",
                        "body": json!({ "notification": notification }).to_string(),
                        "attributes": { "ApproximateReceiveCount": "1", "SentTimestamp": "1764460800000",
                                        "SenderId": "bench", "ApproximateFirstReceiveTimestamp": "1764460800000" },
                        "messageAttributes": {},
                        "md5OfBody": "",
                        "eventSource": "aws:sqs",
                        "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:notifications",
                        "awsRegion": "us-east-1"
                    }]})
                };
                // The second names a notification already delivered: claimed and skipped.
                vec![sqs(&notification), sqs(&notification)]
            }
            "spend-api" => {
                let authorization = format!("Bearer {}", self.spend_key);
                let spend = |key: String| {
                    http_event(
                        "POST",
                        "/v1/spend",
                        &[
                            ("authorization", &authorization),
                            ("content-type", "application/json"),
                            ("idempotency-key", &key),
                        ],
                        &json!({ "user_id": FUNCTION_USERS + 1, "tokens": 1 }).to_string(),
                    )
                };
                vec![
                    spend(format!("bench-fn-{}", self.update_id())),
                    spend(format!("bench-fn-{}", self.update_id())),
                ]
            }
            "renewal-sweep" => vec![
                // The rate schedule's tick, then a subscription's own schedule.
                json!({}),
                json!({ "subscription_user": FUNCTION_USERS + 1 }),
            ],
            _ => vec![json!({ "bench": 1 }), json!({ "bench": 2 })],
        })
    }
}
