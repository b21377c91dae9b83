//! The chaos run: every function against DynamoDB Local and moto's SQS, the
//! fake Bot API and the mock provider's recurring API, each reached through
//! a proxy that delays, drops and cuts connections at random. Mixed
//! operations across many users (purchases with duplicated and reordered
//! callbacks, Stars payments, promo codes, spends, holds, captures,
//! releases, refunds, renewals, notifications) are each retried the way
//! their real caller retries; at the end the faults stop, the outbox is
//! drained, and the invariants are checked over the whole table.
//!
//! `CHAOS_SEED` picks the run (operations and faults), `CHAOS_OPS` its size.
//! A second test breaks each invariant by hand and shows the check reports it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use chrono::{Duration, Utc};
use futures::future::join_all;
use http::{Method, StatusCode};
use notifier::Notifier;
use payment_webhook::{PaymentConfig, PaymentWebhook};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rust_decimal::prelude::ToPrimitive;
use serde_json::{Value, json};
use spend_api::{SpendApi, SpendConfig};
use telegram_webhook::{BotConfig, Webhook};
use tokenbill::domain::invoice::{Invoice, Provider};
use tokenbill::domain::ledger::CreditKind;
use tokenbill::domain::promo::{PromoCode, PromoCodeText, PromoEffect};
use tokenbill::domain::service_key::{RatePerSecond, Scope};
use tokenbill::payments::Renewals;
use tokenbill::payments::mock::{MockEvent, MockEventKind, MockProvider, MockRecurring};
use tokenbill::queue::NotificationQueue;
use tokenbill::store::{BalanceRequest, NewInvoice};
use tokenbill::sweep::sweep;
use tokenbill::{ManualClock, Store};
use tokenbill_dev::fake_telegram::FakeTelegram;
use tokenbill_dev::poller::poll_once;
use tokenbill_tests::chaos_proxy::{ChaosProxy, FaultRates};
use tokenbill_tests::invariants::{self, Violation};
use tokenbill_tests::updates::{message, successful_payment};
use tokenbill_tests::{
    fresh_store, key, notification_queue, register, sdk_config, seed_catalog, serve_payments, service_key, tokens,
    unique_name, user,
};

const MOCK_SECRET: &str = "mock-secret-for-the-chaos-run";
const WEBHOOK_SECRET: &str = "chaos-webhook-secret";
const DEFAULT_SEED: u64 = 0xC4A0_5EED;
const DEFAULT_OPS: usize = 1000;
const USERS: i64 = 40;
const FIRST_USER: i64 = 5000;
/// Users who buy a monthly subscription at the start.
const SUBSCRIBERS: i64 = 8;
/// Operations run concurrently.
const BATCH: usize = 16;
/// Months the clock moves through (each ends with renewals).
const MONTHS: usize = 2;
/// Attempts a caller makes before the run calls the work lost.
const CALLER_ATTEMPTS: u32 = 200;

/// Faults on the DynamoDB and SQS links (per chunk of bytes).
const AWS_FAULTS: FaultRates = FaultRates {
    delay: 0.05,
    max_delay: StdDuration::from_millis(20),
    drop: 0.03,
    cut: 0.03,
};
/// The Bot API has no idempotency key: an answer lost after Telegram
/// delivered a message cannot be told from a message never delivered, so
/// the run drops requests before they reach it but never cuts its answers
/// (that would test Telegram's semantics, not ours).
const TELEGRAM_FAULTS: FaultRates = FaultRates {
    delay: 0.05,
    max_delay: StdDuration::from_millis(20),
    drop: 0.05,
    cut: 0.0,
};
/// The mock provider's recurring API: few requests, so faults are frequent.
const PROVIDER_FAULTS: FaultRates = FaultRates {
    delay: 0.1,
    max_delay: StdDuration::from_millis(20),
    drop: 0.15,
    cut: 0.15,
};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .map(|v| {
            let v = v.trim();
            v.parse()
                .ok()
                .unwrap_or_else(|| panic!("{name} must be a decimal number, not {v:?}"))
        })
        .unwrap_or(default)
}

struct Proxies {
    dynamodb: ChaosProxy,
    sqs: ChaosProxy,
    notifier_telegram: ChaosProxy,
    bot_telegram: ChaosProxy,
    provider: ChaosProxy,
}

impl Proxies {
    fn all(&self) -> [(&'static str, &ChaosProxy); 5] {
        [
            ("dynamodb", &self.dynamodb),
            ("sqs", &self.sqs),
            ("telegram (notifier)", &self.notifier_telegram),
            ("telegram (bot)", &self.bot_telegram),
            ("provider", &self.provider),
        ]
    }
}

/// What the run did, for the report.
#[derive(Debug, Default)]
struct Tally {
    operations: AtomicU64,
    /// Calls that failed and were made again by their caller.
    caller_retries: AtomicU64,
    callbacks: AtomicU64,
    spends: AtomicU64,
    holds: AtomicU64,
    refunds: AtomicU64,
    promo_messages: AtomicU64,
    stars_updates: AtomicU64,
    polls: AtomicU64,
    sweeps: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

struct World {
    clock: ManualClock,
    /// Straight to DynamoDB Local, for setup and the final check.
    direct: Store,
    /// Through the proxy, as every function sees it.
    store: Store,
    proxies: Proxies,
    payments: Arc<PaymentWebhook>,
    webhook: Webhook,
    spend: SpendApi,
    spend_key: String,
    notifier: Notifier,
    /// What the notifier sent (the bot's own replies go to another fake).
    notifier_telegram: FakeTelegram,
    queue: NotificationQueue,
    sqs: aws_sdk_sqs::Client,
    renewals: Renewals,
    update_ids: AtomicU32,
    /// Mock callbacks the provider has yet to deliver, in no order.
    callbacks: Mutex<Vec<(Invoice, MockEventKind)>>,
    /// Spends made, for refunds: (user, transaction id, tokens).
    spent: Mutex<Vec<(i64, String, u64)>>,
    tally: Tally,
}

async fn serve_telegram(fake: &FakeTelegram) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(fake.clone().serve(listener));
    url
}

fn bot(api: &str) -> teloxide_core::Bot {
    teloxide_core::Bot::new("123:CHAOS").set_api_url(api.parse().unwrap())
}

async fn world(seed: u64) -> World {
    let clock = ManualClock::new(Utc::now());
    let direct = fresh_store().await.with_clock(Arc::new(clock.clone()));
    let config = sdk_config().await;
    let endpoint = |name: &str| std::env::var(name).expect("the local stack's endpoint");
    let dynamodb = ChaosProxy::in_front_of(&endpoint("AWS_ENDPOINT_URL_DYNAMODB"), seed, AWS_FAULTS).await;
    let sqs_proxy = ChaosProxy::in_front_of(&endpoint("AWS_ENDPOINT_URL_SQS"), seed ^ 1, AWS_FAULTS).await;
    let client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&config)
            .endpoint_url(dynamodb.url())
            .build(),
    );
    let store = Store::new(client, direct.table()).with_clock(Arc::new(clock.clone()));
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&config)
            .endpoint_url(sqs_proxy.url())
            .build(),
    );
    let url = notification_queue(&tokenbill_tests::sqs().await, &unique_name("chaos")).await;
    let queue = NotificationQueue::new(sqs.clone(), url.clone());

    let payment_config =
        PaymentConfig::from_lookup(|name| (name == "MOCK_PROVIDER_SECRET").then(|| MOCK_SECRET.to_owned())).unwrap();
    let payments = Arc::new(PaymentWebhook::new(store.clone(), queue.clone(), payment_config));
    let provider = ChaosProxy::in_front_of(&serve_payments(payments.clone()).await, seed ^ 2, PROVIDER_FAULTS).await;
    let mock = MockRecurring::new(
        MockProvider::new(MOCK_SECRET).unwrap(),
        &provider.url(),
        reqwest::Client::new(),
    )
    .unwrap()
    .with_clock(Arc::new(clock.clone()));

    let notifier_telegram = FakeTelegram::default();
    let notifier_proxy =
        ChaosProxy::in_front_of(&serve_telegram(&notifier_telegram).await, seed ^ 3, TELEGRAM_FAULTS).await;
    let bot_telegram = FakeTelegram::default();
    let bot_proxy = ChaosProxy::in_front_of(&serve_telegram(&bot_telegram).await, seed ^ 4, TELEGRAM_FAULTS).await;
    let webhook = Webhook::new(
        store.clone(),
        bot(&bot_proxy.url()),
        BotConfig {
            webhook_secret: WEBHOOK_SECRET.into(),
            bot_username: Some("TokenbillBot".into()),
            operators: Vec::new(),
            support_contact: "@help_desk".into(),
            providers: vec![Provider::Mock, Provider::TelegramStars],
            public_base_url: "http://pay.local".into(),
            invoice_ttl: Duration::hours(1),
        },
    );
    let spend = SpendApi::new(
        store.clone(),
        SpendConfig {
            user_rate: RatePerSecond::new(1000).unwrap(),
            key_cache_ttl: StdDuration::from_secs(300),
            low_balance_threshold: Some(tokens(50)),
        },
    );
    let (secret, _) = service_key(&direct, &[Scope::Spend, Scope::Read], 5000).await;

    World {
        notifier: Notifier::new(store.clone(), bot(&notifier_proxy.url()), sqs.clone(), url),
        proxies: Proxies {
            dynamodb,
            sqs: sqs_proxy,
            notifier_telegram: notifier_proxy,
            bot_telegram: bot_proxy,
            provider,
        },
        renewals: Renewals {
            mock: Some(mock),
            robokassa: None,
        },
        spend_key: secret,
        clock,
        direct,
        store,
        payments,
        webhook,
        spend,
        notifier_telegram,
        queue,
        sqs,
        update_ids: AtomicU32::new(1),
        callbacks: Mutex::new(Vec::new()),
        spent: Mutex::new(Vec::new()),
        tally: Tally::default(),
    }
}

/// Promo codes users race for: (code, bonus tokens, total limit, per-user limit).
const PROMOS: [(&str, u64, u64, u32); 3] = [("CHAOS5", 25, 5, 1), ("CHAOS12", 10, 12, 2), ("RARE1", 100, 1, 1)];

async fn seed_world(world: &World) {
    seed_catalog(&world.direct).await;
    for id in FIRST_USER..FIRST_USER + USERS {
        register(&world.direct, id).await;
        world
            .direct
            .apply(BalanceRequest::credit(
                user(id),
                CreditKind::Grant,
                tokens(200),
                key(format!("start-{id}")),
            ))
            .await
            .unwrap();
    }
    for (code, bonus, total, per_user) in PROMOS {
        let mut promo = PromoCode::new(
            PromoCodeText::new(code).unwrap(),
            PromoEffect::BonusTokens { tokens: tokens(bonus) },
        );
        promo.max_redemptions = Some(total);
        promo.per_user_limit = per_user;
        assert!(world.direct.create_promo(&promo).await.unwrap());
    }
}

/// One thing a user (or their service) does.
#[derive(Debug, Clone)]
enum Operation {
    /// Pays an invoice on the mock provider; its callback comes later,
    /// maybe more than once, maybe after a stale `declined`.
    MockPurchase {
        user: i64,
        duplicates: u32,
        stale_decline: bool,
    },
    /// Pays with Stars; Telegram may deliver the payment more than once.
    StarsPurchase {
        user: i64,
        redeliveries: u32,
    },
    /// Subscribes monthly on the mock checkout with a saved card.
    Subscribe {
        user: i64,
    },
    Promo {
        user: i64,
        code: &'static str,
        redeliver: bool,
    },
    Spend {
        user: i64,
        tokens: u64,
        replay: bool,
    },
    /// A hold, then a capture of part of it, a release, or nothing (it expires).
    Hold {
        user: i64,
        tokens: u64,
        settle: Settle,
    },
    Refund {
        pick: usize,
        tokens: u64,
    },
    /// The notifier's event source polls the queue once.
    Notify,
}

#[derive(Debug, Clone, Copy)]
enum Settle {
    Capture(u64),
    Release,
    Expire,
}

fn draw(rng: &mut StdRng) -> Operation {
    let user = FIRST_USER + rng.random_range(0..USERS);
    match rng.random_range(0..100) {
        0..15 => Operation::MockPurchase {
            user,
            duplicates: rng.random_range(0..3),
            stale_decline: rng.random_bool(0.2),
        },
        15..23 => Operation::StarsPurchase {
            user,
            redeliveries: rng.random_range(0..3),
        },
        23..30 => Operation::Promo {
            user,
            code: PROMOS[rng.random_range(0..PROMOS.len())].0,
            redeliver: rng.random_bool(0.3),
        },
        30..55 => Operation::Spend {
            user,
            tokens: rng.random_range(1..=40),
            replay: rng.random_bool(0.2),
        },
        55..70 => {
            let tokens = rng.random_range(2..=50);
            let settle = match rng.random_range(0..3) {
                0 => Settle::Capture(rng.random_range(1..=tokens)),
                1 => Settle::Release,
                _ => Settle::Expire,
            };
            Operation::Hold { user, tokens, settle }
        }
        70..80 => Operation::Refund {
            pick: rng.random_range(0..usize::MAX),
            tokens: rng.random_range(1..=20),
        },
        _ => Operation::Notify,
    }
}

/// Whether a caller would try an answer again: the server failed or
/// asked to slow down.
fn retryable(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

impl World {
    fn next_update_id(&self) -> u32 {
        self.update_ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Calls `attempt` until it gives an answer its caller accepts.
    async fn until_done<T, F, Fut>(&self, what: &str, mut attempt: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        for _ in 0..CALLER_ATTEMPTS {
            if let Some(done) = attempt().await {
                return done;
            }
            bump(&self.tally.caller_retries);
            tokio::time::sleep(StdDuration::from_millis(5)).await;
        }
        panic!("{what}: still failing after {CALLER_ATTEMPTS} attempts: the work was lost");
    }

    async fn invoice(&self, id: i64, provider: Provider, tariff: &str) -> Invoice {
        let order = NewInvoice {
            user: user(id),
            tariff_id: tariff.parse().unwrap(),
            provider,
            promo: None,
        };
        // The user taps "buy" again when the bot fails.
        self.until_done("create an invoice", || async {
            self.store.create_invoice(order.clone(), Duration::hours(1)).await.ok()
        })
        .await
    }

    /// Telegram delivers `update` until the webhook answers 2xx.
    async fn deliver_update(&self, update: &Value) {
        self.until_done("a Telegram update", || async {
            let request = http::Request::builder()
                .method("POST")
                .uri("/telegram/webhook")
                .header("X-Telegram-Bot-Api-Secret-Token", WEBHOOK_SECRET)
                .body(update.to_string())
                .unwrap();
            let delivered = self.webhook.handle(request).await.status().is_success();
            if !delivered {
                // Telegram waits before it redelivers; an update claimed by
                // an attempt that failed stays claimed until its lease ends.
                self.clock.advance(Duration::seconds(10));
            }
            delivered.then_some(())
        })
        .await
    }

    /// The provider repeats a callback until it is acknowledged with 2xx;
    /// a 4xx is an answer too (it stops).
    async fn deliver_callback(&self, invoice: &Invoice, kind: MockEventKind) {
        let event = MockEvent {
            event: kind,
            invoice_id: invoice.id.clone(),
            payment_id: format!("pay_{}", invoice.id),
            amount: invoice.amount_due.amount(),
            currency: "RUB".into(),
            recurring: false,
            recurring_token: None,
        };
        let provider = MockProvider::new(MOCK_SECRET).unwrap();
        self.until_done("a mock callback", || async {
            let (signature, body) = provider.callback(&event, self.store.now());
            let request = http::Request::builder()
                .method("POST")
                .uri("/payments/mock/callback")
                .header("Mock-Signature", signature)
                .body(body)
                .unwrap();
            let status = self.payments.handle(request).await.status();
            (!retryable(status)).then_some(())
        })
        .await;
        bump(&self.tally.callbacks);
    }

    /// The spend client: the same Idempotency-Key on every attempt.
    async fn spend_call(&self, path: &str, idempotency: &str, body: &Value) -> (StatusCode, Value) {
        self.until_done("a spend API call", || async {
            let request = http::Request::builder()
                .method(Method::POST)
                .uri(path)
                .header("authorization", format!("Bearer {}", self.spend_key))
                .header("content-type", "application/json")
                .header("idempotency-key", idempotency)
                .body(body.to_string().into_bytes())
                .unwrap();
            let response = self.spend.handle(request).await;
            let status = response.status();
            let body = serde_json::from_str(response.body()).unwrap_or(Value::Null);
            (!retryable(status)).then_some((status, body))
        })
        .await
    }

    async fn run(&self, number: usize, operation: Operation) {
        bump(&self.tally.operations);
        match operation {
            Operation::MockPurchase {
                user,
                duplicates,
                stale_decline,
            } => {
                let invoice = self.invoice(user, Provider::Mock, "pack_100").await;
                let mut callbacks = self.callbacks.lock().unwrap();
                for _ in 0..=duplicates {
                    callbacks.push((invoice.clone(), MockEventKind::Succeeded));
                }
                if stale_decline {
                    callbacks.push((invoice, MockEventKind::Declined));
                }
            }
            Operation::StarsPurchase { user, redeliveries } => {
                let invoice = self.invoice(user, Provider::TelegramStars, "pack_100").await;
                let stars = invoice.amount_due.amount().to_u32().unwrap();
                let charge = format!("charge-{}", invoice.id);
                let update = successful_payment(self.next_update_id(), user, invoice.id.as_str(), stars, &charge);
                for _ in 0..=redeliveries {
                    self.deliver_update(&update).await;
                    bump(&self.tally.stars_updates);
                }
                // The same charge reported in another update.
                let again = successful_payment(self.next_update_id(), user, invoice.id.as_str(), stars, &charge);
                self.deliver_update(&again).await;
            }
            Operation::Subscribe { user } => {
                let invoice = self.invoice(user, Provider::Mock, "sub_month").await;
                self.until_done("the mock checkout", || async {
                    let request = http::Request::builder()
                        .method("POST")
                        .uri(format!("/payments/mock/checkout/{}", invoice.id))
                        .header("Content-Type", "application/x-www-form-urlencoded")
                        .body(b"action=pay&save_card=1&card=approve".to_vec())
                        .unwrap();
                    let status = self.payments.handle(request).await.status();
                    (!retryable(status)).then_some(())
                })
                .await;
            }
            Operation::Promo { user, code, redeliver } => {
                let update = message(self.next_update_id(), user, &format!("/promo {code}"));
                self.deliver_update(&update).await;
                if redeliver {
                    self.deliver_update(&update).await;
                }
                bump(&self.tally.promo_messages);
            }
            Operation::Spend { user, tokens, replay } => {
                let key = format!("spend-{number}");
                let body = json!({"user_id": user, "tokens": tokens, "description": "chaos"});
                let (status, answer) = self.spend_call("/v1/spend", &key, &body).await;
                bump(&self.tally.spends);
                if status == StatusCode::OK {
                    let tx = answer["transaction_id"].as_str().unwrap().to_owned();
                    if replay {
                        let (again, replayed) = self.spend_call("/v1/spend", &key, &body).await;
                        assert_eq!(again, StatusCode::OK, "a replayed spend: {replayed}");
                        assert_eq!(
                            replayed["transaction_id"], answer["transaction_id"],
                            "one effect per key"
                        );
                    }
                    self.spent.lock().unwrap().push((user, tx, tokens));
                } else {
                    assert_eq!(answer["error"]["code"], "insufficient_tokens", "{status}: {answer}");
                }
            }
            Operation::Hold { user, tokens, settle } => {
                let body = json!({"user_id": user, "tokens": tokens, "ttl_seconds": 120});
                let (status, answer) = self.spend_call("/v1/holds", &format!("hold-{number}"), &body).await;
                bump(&self.tally.holds);
                if status != StatusCode::OK {
                    assert_eq!(answer["error"]["code"], "insufficient_tokens", "{status}: {answer}");
                    return;
                }
                let hold = answer["hold_id"].as_str().unwrap();
                let (path, body) = match settle {
                    Settle::Capture(part) => (format!("/v1/holds/{hold}/capture"), json!({"tokens": part})),
                    Settle::Release => (format!("/v1/holds/{hold}/release"), json!({})),
                    Settle::Expire => return,
                };
                let (status, answer) = self.spend_call(&path, &format!("settle-{number}"), &body).await;
                // Holds may expire (the clock moves) before they are settled.
                assert!(
                    status == StatusCode::OK || answer["error"]["code"] == "hold_expired",
                    "{status}: {answer}"
                );
                if let (Settle::Capture(part), StatusCode::OK) = (settle, status) {
                    let tx = answer["transaction_id"].as_str().unwrap().to_owned();
                    self.spent.lock().unwrap().push((user, tx, part));
                }
            }
            Operation::Refund { pick, tokens } => {
                let Some((_, tx, spent)) = ({
                    let spent = self.spent.lock().unwrap();
                    (!spent.is_empty()).then(|| spent[pick % spent.len()].clone())
                }) else {
                    return;
                };
                let body = json!({"transaction_id": tx, "tokens": tokens.min(spent)});
                let (status, answer) = self.spend_call("/v1/refunds", &format!("refund-{number}"), &body).await;
                bump(&self.tally.refunds);
                assert!(
                    status == StatusCode::OK || answer["error"]["code"] == "refund_exceeds_remaining",
                    "{status}: {answer}"
                );
            }
            Operation::Notify => {
                // A failed poll leaves its messages in the queue, as Lambda's does.
                let _ = poll_once(&self.sqs, self.queue.url(), &self.notifier, 0).await;
                bump(&self.tally.polls);
            }
        }
    }

    /// The provider delivers what it owes, shuffled.
    async fn deliver_callbacks(&self, rng: &mut StdRng) {
        let mut due = std::mem::take(&mut *self.callbacks.lock().unwrap());
        due.shuffle(rng);
        join_all(due.iter().map(|(invoice, kind)| self.deliver_callback(invoice, *kind))).await;
    }

    /// The rate schedule (or a subscription's own schedule) runs the sweep
    /// until it succeeds.
    async fn sweep(&self) {
        self.until_done("the sweep", || async {
            sweep(&self.store, &self.queue, &self.renewals).await.ok()
        })
        .await;
        bump(&self.tally.sweeps);
    }

    /// Messages the notifier sent, per chat.
    fn delivered(&self) -> HashMap<i64, usize> {
        let mut delivered = HashMap::new();
        for call in self.notifier_telegram.calls() {
            if call.method == "sendmessage" {
                *delivered.entry(call.params["chat_id"].as_i64().unwrap()).or_insert(0) += 1;
            }
        }
        delivered
    }

    /// With the faults over: everything owed is delivered.
    async fn settle(&self, rng: &mut StdRng) {
        for (_, proxy) in self.proxies.all() {
            proxy.calm_down();
        }
        self.deliver_callbacks(rng).await;
        for _ in 0..10 {
            // Past every lease and republish time.
            self.clock.advance(Duration::minutes(10));
            self.sweep().await;
            while poll_once(&self.sqs, self.queue.url(), &self.notifier, 0)
                .await
                .unwrap()
                .received
                > 0
            {}
            if self
                .store
                .undelivered_notifications(self.store.now() + Duration::days(1), 10)
                .await
                .unwrap()
                .is_empty()
            {
                return;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_run_keeps_every_invariant() {
    let seed: u64 = env_or("CHAOS_SEED", DEFAULT_SEED);
    let operations: usize = env_or("CHAOS_OPS", DEFAULT_OPS);
    println!("chaos run: CHAOS_SEED={seed} CHAOS_OPS={operations}");
    let started = std::time::Instant::now();
    let world = world(seed).await;
    seed_world(&world).await;
    let mut rng = StdRng::seed_from_u64(seed);

    let mut plan: Vec<Operation> = (FIRST_USER..FIRST_USER + SUBSCRIBERS)
        .map(|user| Operation::Subscribe { user })
        .collect();
    plan.extend((plan.len()..operations).map(|_| draw(&mut rng)));
    let batches: Vec<&[Operation]> = plan.chunks(BATCH).collect();
    let per_month = batches.len().div_ceil(MONTHS);
    for (index, batch) in batches.iter().enumerate() {
        world.deliver_callbacks(&mut rng).await;
        let first = index * BATCH;
        join_all(
            batch
                .iter()
                .enumerate()
                .map(|(i, operation)| world.run(first + i, operation.clone())),
        )
        .await;
        world.clock.advance(Duration::seconds(5));
        if index % 8 == 7 {
            world.sweep().await;
        }
        if index % per_month == per_month - 1 {
            // A month passes: due subscriptions renew.
            world.deliver_callbacks(&mut rng).await;
            world.clock.advance(Duration::days(30));
            world.sweep().await;
            world.sweep().await;
        }
    }
    world.settle(&mut rng).await;

    let violations = invariants::check(&world.direct, &world.delivered()).await.unwrap();
    println!("{:?}", world.tally);
    for (name, proxy) in world.proxies.all() {
        println!("faults on {name}: {}", proxy.counts());
    }
    println!("took {:.1?}", started.elapsed());
    assert!(violations.is_empty(), "seed {seed}: {violations:#?}");

    // The bot answers in the webhook's response body, so its own link may stay idle.
    for (name, proxy) in world
        .proxies
        .all()
        .into_iter()
        .filter(|(name, _)| *name != "telegram (bot)")
    {
        assert!(
            proxy.counts().broken() > 0,
            "no connection to {name} was broken: the run proved nothing"
        );
    }
    assert!(
        world.tally.caller_retries.load(Ordering::Relaxed) > 0,
        "faults reached no caller"
    );
    let subscriptions =
        join_all((FIRST_USER..FIRST_USER + SUBSCRIBERS).map(|id| world.direct.subscription(user(id)))).await;
    let renewed = subscriptions
        .into_iter()
        .filter(|s| s.as_ref().unwrap().as_ref().is_some_and(|s| s.period > 1))
        .count();
    println!("subscriptions renewed at least once: {renewed} of {SUBSCRIBERS}");
    assert!(renewed > 0, "no subscription was renewed");
}

/// `ADD`s `amount` to a number attribute of one item, bypassing the store:
/// how a bug (or a bad hand edit) would break an invariant.
async fn tamper(store: &Store, pk: &str, sk: &str, attribute: &str, amount: i64) {
    use aws_sdk_dynamodb::types::AttributeValue;
    store
        .client()
        .update_item()
        .table_name(store.table())
        .key("pk", AttributeValue::S(pk.to_owned()))
        .key("sk", AttributeValue::S(sk.to_owned()))
        .update_expression("ADD #attribute :amount")
        .expression_attribute_names("#attribute", attribute)
        .expression_attribute_values(":amount", AttributeValue::N(amount.to_string()))
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn the_check_reports_each_broken_invariant() {
    use tokenbill::domain::notification::{Delivery, Message, Notification, NotificationId};

    let store = fresh_store().await;
    seed_catalog(&store).await;
    for id in 1..=6 {
        register(&store, id).await;
    }
    let sent = |id: &str, user_id: i64| {
        Notification::new(
            NotificationId::new(id).unwrap(),
            user(user_id),
            Message::PromoBonus {
                code: "GIFT".into(),
                tokens: tokens(1),
            },
            Utc::now(),
        )
    };
    // A healthy table first: one paid invoice, one promo use, one delivered notice.
    let paid = store
        .create_invoice(
            NewInvoice {
                user: user(2),
                tariff_id: "pack_100".parse().unwrap(),
                provider: Provider::Mock,
                promo: None,
            },
            Duration::hours(1),
        )
        .await
        .unwrap();
    store.pay_invoice(&paid.id, Some("pay-1".into())).await.unwrap();
    let mut gift = PromoCode::new(
        PromoCodeText::new("GIFT").unwrap(),
        PromoEffect::BonusTokens { tokens: tokens(5) },
    );
    gift.max_redemptions = Some(1);
    store.create_promo(&gift).await.unwrap();
    let promo_user = store.existing_user(user(3)).await.unwrap();
    store.activate_promo(&promo_user, &gift.code).await.unwrap();
    let notice = sent("note:5", 5);
    store.add_notification(&notice).await.unwrap();
    store
        .claim_notification(&notice.id, Duration::minutes(1))
        .await
        .unwrap();
    store.finish_notification(&notice.id, Delivery::Sent).await.unwrap();
    // Every notice so far delivered once.
    let mut delivered = HashMap::from([(5, 1)]);
    for (id, user_id) in [
        (NotificationId::promo_bonus(user(3), &gift.code, 1), 3),
        (NotificationId::payment(&paid.id), 2),
    ] {
        if store.notification(&id).await.unwrap().is_some() {
            store.claim_notification(&id, Duration::minutes(1)).await.unwrap();
            store.finish_notification(&id, Delivery::Sent).await.unwrap();
            delivered.insert(user_id, 1);
        }
    }
    assert_eq!(
        invariants::check(&store, &delivered).await.unwrap(),
        vec![],
        "a healthy table passes"
    );

    // 1. A balance bumped without its ledger entry.
    tamper(&store, "USER#1", "ACCOUNT", "available", 7).await;
    // 2. A second credit for one paid invoice (balanced by its own entry).
    store
        .apply(
            BalanceRequest::credit(user(2), CreditKind::Purchase, tokens(100), key("again"))
                .reference(format!("invoice:{}", paid.id)),
        )
        .await
        .unwrap();
    // 3. A promo code taken past its total limit, and by one user past theirs.
    tamper(&store, "PROMO#GIFT", "PROMO", "redemptions", 1).await;
    tamper(&store, "PROMO#GIFT", "USER#3", "uses", 1).await;
    // 4. One subscription period granted twice.
    for attempt in 1..=2 {
        store
            .apply(
                BalanceRequest::credit(
                    user(4),
                    CreditKind::Renewal,
                    tokens(10),
                    key(format!("renew-{attempt}")),
                )
                .reference("invoice:ren-4-2-1"),
            )
            .await
            .unwrap();
    }
    // 5. A notification delivered twice, and one never delivered.
    delivered.insert(5, 2);
    store.add_notification(&sent("note:6", 6)).await.unwrap();

    let violations = invariants::check(&store, &delivered).await.unwrap();
    println!("{violations:#?}");
    let found = |wanted: &dyn Fn(&Violation) -> bool| violations.iter().any(wanted);
    assert!(
        found(&|v| matches!(v, Violation::Ledger { user: 1, .. })),
        "balance ≠ ledger"
    );
    assert!(
        found(
            &|v| matches!(v, Violation::InvoiceCredits { invoice, credits: 2, .. } if *invoice == paid.id.to_string())
        ),
        "an invoice credited twice"
    );
    assert!(
        found(&|v| matches!(
            v,
            Violation::PromoTotal {
                redemptions: 2,
                limit: Some(1),
                ..
            }
        )),
        "a promo past its total"
    );
    assert!(
        found(&|v| matches!(
            v,
            Violation::PromoPerUser {
                user: 3,
                uses: 2,
                limit: 1,
                ..
            }
        )),
        "a promo past its per-user limit"
    );
    assert!(
        found(&|v| matches!(
            v,
            Violation::Renewal {
                user: 4,
                period: 2,
                credits: 2
            }
        )),
        "a period renewed twice"
    );
    assert!(
        found(&|v| matches!(
            v,
            Violation::Deliveries {
                user: 5,
                sent: 1,
                delivered: 2
            }
        )),
        "a notification delivered twice"
    );
    assert!(
        found(&|v| matches!(v, Violation::Undelivered { id, delivery: Delivery::Pending } if id == "note:6")),
        "a notification never delivered"
    );
    assert_eq!(violations.len(), 7, "nothing else is reported: {violations:#?}");
}
