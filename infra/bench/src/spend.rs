//! Debits and spend API spends per second, each beside raw
//! `TransactWriteItems` calls of the same shape built by hand, at several
//! concurrencies, each worker on its own user, sequentially:
//!
//! - `debit`: debits through `Store::apply` — idempotency record, account
//!   update (`available >= n`), ledger entry, stats shard;
//! - `spend`: `POST /v1/spend` through `spend_api::SpendApi::handle`, in
//!   process, with real HTTP requests (bearer key, `Idempotency-Key`, JSON
//!   body) — the four items above, the account pinned to the balance seen,
//!   plus the user's profile check and both rate windows (the user's and a
//!   shard of the key's).
//!
//! Each cell warms both variants up, then runs them ours, raw, raw, ours on
//! the same table, so a growing table or a warming stack favours neither.
//! Prints a table per benchmark with the ratio ours/raw and latencies.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng;
use spend_api::{SpendApi, SpendConfig};
use tokenbill::Store;
use tokenbill::domain::ledger::{CreditKind, DebitKind};
use tokenbill::domain::service_key::{RatePerSecond, RateWindow, Scope, ServiceKey};
use tokenbill::domain::{IdempotencyKey, Tokens, UserId};
use tokenbill::store::BalanceRequest;

use crate::Args;
use crate::measure::{Measured, phase};

/// Tokens each bench user starts with: far more than any run spends.
const CREDIT: u64 = 10_000_000;
/// Ours and raw workers write to distinct users (worker `w` on `BASE + w + 1`);
/// both bases are multiples of 16, so both land on the same stats shards.
const OURS_BASE: i64 = 100_000;
const RAW_BASE: i64 = 200_000;
/// The spend API's rates (key and user): the highest a key may have, far
/// above what DynamoDB Local carries, so no bench request is refused.
const RATE: u32 = RatePerSecond::MAX;
/// Rate windows are kept this long after they close (as the store does).
const WINDOW_TTL_SECONDS: i64 = 120;

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn map<'a>(fields: impl IntoIterator<Item = (&'a str, AttributeValue)>) -> AttributeValue {
    AttributeValue::M(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// The spend API's key and rate windows, as the raw side writes them.
#[derive(Debug, Clone)]
struct Guards {
    key_id: String,
    key_rate: RatePerSecond,
    user_rate: u32,
}

/// One raw transaction: the items `Store::apply` writes for a debit of one
/// token (shared/src/store/balance.rs `transaction_items`), plus, with
/// `guards`, the three the spend API adds (functions/spend-api/src/lib.rs
/// `apply_guarded`), built by hand with the same expressions and options.
struct RawTx<'a> {
    table: &'a str,
    user: i64,
    /// The idempotency key as stored.
    key: String,
    fingerprint: String,
    reference: Option<String>,
    /// The balance before, which the account update is pinned to.
    pinned: Option<u64>,
    guards: Option<&'a Guards>,
}

impl RawTx<'_> {
    fn items(&self, now: DateTime<Utc>) -> Vec<TransactWriteItem> {
        let table = self.table;
        let pk = s(format!("USER#{}", self.user));
        let id = uuid::Uuid::now_v7().simple().to_string();
        let tx_id = s(format!("{}.{id}", self.user));
        let created = s(now.to_rfc3339_opts(SecondsFormat::AutoSi, true));
        let put_new = |item: Vec<(&str, AttributeValue)>| {
            let put = Put::builder()
                .table_name(table)
                .set_item(Some(item.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", "pk")
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .build()
                .expect("put");
            TransactWriteItem::builder().put(put).build()
        };

        let mut receipt = vec![
            ("tx_id", tx_id.clone()),
            ("kind", s("spend")),
            ("amount", n(1)),
            ("created_at", created.clone()),
        ];
        if let Some(before) = self.pinned {
            receipt.push(("balance_after", n(before - 1)));
        }
        let idempotency = put_new(vec![
            ("pk", pk.clone()),
            ("sk", s(format!("IDEM#{}", self.key))),
            ("entity", s("idempotency")),
            ("fingerprint", s(self.fingerprint.clone())),
            ("receipt", map(receipt)),
        ]);

        let mut account = Update::builder()
            .table_name(table)
            .key("pk", pk.clone())
            .key("sk", s("ACCOUNT"))
            .update_expression(
                "SET #updated = :now, #entity = :entity ADD #available :delta_available, #held :delta_held, #entries :one",
            )
            .expression_attribute_names("#available", "available")
            .expression_attribute_names("#held", "held")
            .expression_attribute_names("#entries", "entries")
            .expression_attribute_names("#updated", "updated_at")
            .expression_attribute_names("#entity", "entity")
            .expression_attribute_values(":delta_available", n(-1))
            .expression_attribute_values(":delta_held", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":now", s(now.to_rfc3339()))
            .expression_attribute_values(":entity", s("account"))
            .expression_attribute_values(":need_available", n(1))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        account = match self.pinned {
            Some(before) => account
                .condition_expression("#available = :pinned AND #available >= :need_available")
                .expression_attribute_values(":pinned", n(before)),
            None => account.condition_expression("#available >= :need_available"),
        };
        let account = TransactWriteItem::builder()
            .update(account.build().expect("account update"))
            .build();

        let mut entry = vec![
            ("pk", pk.clone()),
            ("sk", s(format!("TX#{id}"))),
            ("entity", s("ledger_entry")),
            ("tx_id", tx_id),
            ("kind", s("spend")),
            ("amount", n(1)),
            ("delta_available", n(-1)),
            ("delta_held", n(0)),
            ("idempotency_key", s(self.key.clone())),
            ("created_at", created),
            ("refundable", n(1)),
        ];
        if let Some(reference) = &self.reference {
            entry.push(("reference", s(reference.clone())));
        }
        let entry = put_new(entry);

        // shared/src/store/stats.rs `count_tokens`: 16 shards per day, each
        // its own partition.
        let stats = Update::builder()
            .table_name(table)
            .key(
                "pk",
                s(format!("STATS#{}#{:02}", now.date_naive(), self.user.rem_euclid(16))),
            )
            .key("sk", s("SHARD"))
            .update_expression("SET #entity = :entity ADD #counter :amount")
            .expression_attribute_names("#entity", "entity")
            .expression_attribute_names("#counter", "tokens_spend")
            .expression_attribute_values(":entity", s("stats"))
            .expression_attribute_values(":amount", n(1))
            .build()
            .expect("stats update");
        let stats = TransactWriteItem::builder().update(stats).build();

        let mut items = vec![idempotency, account, entry, stats];
        if let Some(guards) = self.guards {
            // shared/src/store/service_keys.rs `user_exists_item` and `RateSlot`.
            let profile = ConditionCheck::builder()
                .table_name(table)
                .key("pk", pk.clone())
                .key("sk", s("PROFILE"))
                .condition_expression("attribute_exists(#pk)")
                .expression_attribute_names("#pk", "pk")
                .build()
                .expect("user check");
            items.push(TransactWriteItem::builder().condition_check(profile).build());
            let start = now.timestamp();
            items.push(rate_window(
                table,
                pk,
                s(format!("RATE#{start}")),
                guards.user_rate,
                start + WINDOW_TTL_SECONDS,
            ));
            let window = RateWindow::for_rate(guards.key_rate, now);
            let shard = rand::rng().random_range(0..window.shards);
            items.push(rate_window(
                table,
                s(format!("RATE#{}#{shard}", guards.key_id)),
                s(format!("W#{}", window.start)),
                window.per_shard,
                window.start + WINDOW_TTL_SECONDS,
            ));
        }
        items
    }
}

fn rate_window(table: &str, pk: AttributeValue, sk: AttributeValue, limit: u32, expires: i64) -> TransactWriteItem {
    let update = Update::builder()
        .table_name(table)
        .key("pk", pk)
        .key("sk", sk)
        .update_expression("SET #ttl = :ttl, #entity = :entity ADD #count :one")
        .condition_expression("attribute_not_exists(#count) OR #count < :limit")
        .expression_attribute_names("#count", "count")
        .expression_attribute_names("#ttl", "ttl")
        .expression_attribute_names("#entity", "entity")
        .expression_attribute_values(":one", n(1))
        .expression_attribute_values(":limit", n(limit))
        .expression_attribute_values(":ttl", n(expires))
        .expression_attribute_values(":entity", s("rate_window"))
        .build()
        .expect("rate window");
    TransactWriteItem::builder().update(update).build()
}

/// What a cell runs: `workers` workers, each making `per_worker` measured
/// operations per variant after `warmup` unmeasured ones, split over
/// `rounds` blocks of ours, raw, raw, ours.
#[derive(Debug, Clone, Copy)]
struct Plan {
    workers: usize,
    per_worker: u64,
    warmup: u64,
    rounds: u64,
}

/// One cell: warm-up of both variants, then `rounds` blocks of ours, raw,
/// raw, ours, so load from outside (or a growing table) falls on both
/// alike. Each worker's `i` counts its operations across phases. Returns
/// the measured figures and the operations each worker made per variant.
async fn cell<O, OF, R, RF>(plan: Plan, ours: O, raw: R) -> (Measured, Measured, u64)
where
    O: Fn(usize, u64) -> OF + Clone + Send + Sync + 'static,
    OF: Future<Output = ()> + Send + 'static,
    R: Fn(usize, u64) -> RF + Clone + Send + Sync + 'static,
    RF: Future<Output = ()> + Send + 'static,
{
    let workers = plan.workers;
    phase(workers, 0, plan.warmup, ours.clone()).await;
    phase(workers, 0, plan.warmup, raw.clone()).await;
    // Phase sizes: `per_worker` split as evenly as it goes into 2 * rounds.
    let halves = 2 * plan.rounds.clamp(1, plan.per_worker.div_ceil(2).max(1));
    let sizes: Vec<u64> = (0..halves)
        .map(|h| plan.per_worker / halves + u64::from(h < plan.per_worker % halves))
        .collect();
    let (mut o, mut r) = (Measured::default(), Measured::default());
    let (mut done_ours, mut done_raw) = (plan.warmup, plan.warmup);
    for block in sizes.chunks(2) {
        let (a, b) = (block[0], block[1]);
        o.add(phase(workers, done_ours, a, ours.clone()).await);
        r.add(phase(workers, done_raw, a, raw.clone()).await);
        r.add(phase(workers, done_raw + a, b, raw.clone()).await);
        o.add(phase(workers, done_ours + a, b, ours.clone()).await);
        done_ours += a + b;
        done_raw += a + b;
    }
    (o, r, plan.warmup + plan.per_worker)
}

pub fn user_id(id: i64) -> UserId {
    UserId::new(id).expect("bench user id")
}

/// Registers (for the spend API) and credits the users of `workers` workers.
pub async fn seed_users(
    store: &Store,
    base: i64,
    workers: usize,
    register: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    for user in (1..=workers as i64).map(|w| base + w) {
        if register {
            crate::app::register(store, user).await?;
        }
        store
            .apply(BalanceRequest::credit(
                user_id(user),
                CreditKind::Grant,
                Tokens::new(CREDIT)?,
                IdempotencyKey::new(format!("seed-{user}"))?,
            ))
            .await?;
    }
    Ok(())
}

/// Every user of both sides lost exactly the tokens its worker spent.
/// One row of a comparison: ours against raw with `concurrency` workers
/// (at least one warm-up operation each: its first reads the balance),
/// the balances checked afterwards, and on the first row the items
/// compared.
async fn compare_at<O, OF, R, RF>(
    store: &Store,
    args: &Args,
    concurrency: usize,
    ours: O,
    raw: R,
) -> Result<(), Box<dyn std::error::Error>>
where
    O: Fn(usize, u64) -> OF + Clone + Send + Sync + 'static,
    OF: Future<Output = ()> + Send + 'static,
    R: Fn(usize, u64) -> RF + Clone + Send + Sync + 'static,
    RF: Future<Output = ()> + Send + 'static,
{
    let plan = Plan {
        workers: concurrency,
        per_worker: (args.ops / concurrency) as u64,
        warmup: args.warmup.div_ceil(concurrency).max(1) as u64,
        rounds: args.rounds as u64,
    };
    let (ours, raw, spent) = cell(plan, ours, raw).await;
    row(concurrency, ours, raw);
    check_balances(store, concurrency, spent).await?;
    if concurrency == args.concurrency[0] {
        compare_items(store).await;
    }
    Ok(())
}

async fn check_balances(store: &Store, workers: usize, spent: u64) -> Result<(), Box<dyn std::error::Error>> {
    for base in [OURS_BASE, RAW_BASE] {
        for user in (1..=workers as i64).map(|w| base + w) {
            let (balance, _) = store.balance(user_id(user)).await?;
            if balance.available.get() != CREDIT - spent {
                return Err(format!(
                    "user {user}: {} available after {spent} spends of {CREDIT}",
                    balance.available.get()
                )
                .into());
            }
        }
    }
    Ok(())
}

/// Approximate DynamoDB item size (names plus values, as AWS bills it).
fn value_size(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(text) => text.len(),
        AttributeValue::N(number) => number.trim_start_matches('-').len().div_ceil(2) + 1,
        AttributeValue::M(fields) => 3 + fields.iter().map(|(k, v)| k.len() + value_size(v) + 1).sum::<usize>(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        _ => 0,
    }
}

fn item_size(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

type Item = HashMap<String, AttributeValue>;

/// The newest ledger entry of `user` (never the seed credit) and the
/// idempotency record it was written with.
async fn last_spend(store: &Store, user: i64) -> Option<(Item, Item)> {
    let pk = s(format!("USER#{user}"));
    let entry = store
        .client()
        .query()
        .table_name(store.table())
        .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
        .expression_attribute_values(":pk", pk.clone())
        .expression_attribute_values(":prefix", s("TX#"))
        .scan_index_forward(false)
        .limit(1)
        .send()
        .await
        .ok()?
        .items?
        .into_iter()
        .next()?;
    let key = entry.get("idempotency_key")?.as_s().ok()?;
    let record = store
        .client()
        .get_item()
        .table_name(store.table())
        .key("pk", pk)
        .key("sk", s(format!("IDEM#{key}")))
        .send()
        .await
        .ok()?
        .item?;
    Some((record, entry))
}

/// Prints how the items ours and raw wrote compare: sizes, and any
/// attribute only one side has (which would mean the raw side drifted from
/// what the store writes).
async fn compare_items(store: &Store) {
    let (Some(ours), Some(raw)) = (
        last_spend(store, OURS_BASE + 1).await,
        last_spend(store, RAW_BASE + 1).await,
    ) else {
        println!("  item sizes: the last spends were not found");
        return;
    };
    let names = |item: &Item| item.keys().cloned().collect::<BTreeSet<_>>();
    let mut line = Vec::new();
    for (what, ours, raw) in [
        ("idempotency record", &ours.0, &raw.0),
        ("ledger entry", &ours.1, &raw.1),
    ] {
        let (a, b) = (names(ours), names(raw));
        let mut text = format!("{what} {}/{} B", item_size(ours), item_size(raw));
        if a != b {
            text += &format!(
                " (only ours: {:?}, only raw: {:?})",
                a.difference(&b).collect::<Vec<_>>(),
                b.difference(&a).collect::<Vec<_>>()
            );
        }
        line.push(text);
    }
    println!("  item sizes ours/raw: {}", line.join(", "));
}

fn header(what: &str, args: &Args) {
    println!();
    println!(
        "{what} against DynamoDB Local ({} measured and {} warm-up ops per variant and cell; each worker on its own user)",
        args.ops, args.warmup
    );
    println!(
        "({} x ours-raw-raw-ours per cell; p50/p99 latency per request; CPU of this process and DynamoDB requests per op)",
        args.rounds
    );
    println!(
        "{:>11} {:>11} {:>11} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "concurrency",
        "ours",
        "raw",
        "ratio",
        "ours p50",
        "ours p99",
        "raw p50",
        "raw p99",
        "ours CPU",
        "raw CPU",
        "req/op"
    );
}

fn row(concurrency: usize, mut ours: Measured, mut raw: Measured) {
    println!(
        "{concurrency:>11} {:>9.0}/s {:>9.0}/s {:>6.2} {:>7.1}ms {:>7.1}ms {:>7.1}ms {:>7.1}ms {:>7.0}us {:>7.0}us {:>4.2}/{:.2}",
        ours.rate(),
        raw.rate(),
        ours.rate() / raw.rate(),
        ours.percentile_ms(0.5),
        ours.percentile_ms(0.99),
        raw.percentile_ms(0.5),
        raw.percentile_ms(0.99),
        ours.cpu_per_op_us(),
        raw.cpu_per_op_us(),
        ours.requests_per_op(),
        raw.requests_per_op(),
    );
}

pub async fn fresh_store(
    client: &aws_sdk_dynamodb::Client,
    what: &str,
    concurrency: usize,
) -> Result<Store, Box<dyn std::error::Error>> {
    let table = format!("bench-{what}-{concurrency}-{}", uuid::Uuid::new_v4().simple());
    tokenbill::resources::create_table(client, &table).await?;
    Ok(Store::new(client.clone(), table))
}

/// `Store::apply` debits beside raw transactions of its four items.
pub async fn bench_debits(client: &aws_sdk_dynamodb::Client, args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    header(
        "debits per second: Store::apply (ours) vs raw TransactWriteItems, 4 items",
        args,
    );
    for &concurrency in &args.concurrency {
        let store = fresh_store(client, "debit", concurrency).await?;
        seed_users(&store, OURS_BASE, concurrency, false).await?;
        seed_users(&store, RAW_BASE, concurrency, false).await?;
        let ours = {
            let store = store.clone();
            move |worker: usize, i: u64| {
                let store = store.clone();
                async move {
                    let user = user_id(OURS_BASE + worker as i64 + 1);
                    let key = IdempotencyKey::new(format!("bench-{worker}-{i}")).expect("key");
                    let request = BalanceRequest::debit(user, DebitKind::Spend, Tokens::new(1).expect("1"), key);
                    store.apply(request).await.expect("debit");
                }
            }
        };
        let raw = {
            let store = store.clone();
            move |worker: usize, i: u64| {
                let store = store.clone();
                async move {
                    let tx = RawTx {
                        table: store.table(),
                        user: RAW_BASE + worker as i64 + 1,
                        key: format!("bench-{worker}-{i}"),
                        fingerprint: "spend:-1".into(),
                        reference: None,
                        pinned: None,
                        guards: None,
                    };
                    send(&store, tx.items(Utc::now())).await;
                }
            }
        };
        compare_at(&store, args, concurrency, ours, raw).await?;
    }
    Ok(())
}

async fn send(store: &Store, items: Vec<TransactWriteItem>) {
    store
        .client()
        .transact_write_items()
        .set_transact_items(Some(items))
        .send()
        .await
        .expect("raw transaction");
}

/// `POST /v1/spend` through the spend API beside raw transactions of its
/// seven items.
pub async fn bench_spends(client: &aws_sdk_dynamodb::Client, args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    header(
        "spends per second: POST /v1/spend via SpendApi::handle (ours) vs raw TransactWriteItems, 7 items",
        args,
    );
    let key_rate = RatePerSecond::new(RATE)?;
    for &concurrency in &args.concurrency {
        let store = fresh_store(client, "spend", concurrency).await?;
        seed_users(&store, OURS_BASE, concurrency, true).await?;
        seed_users(&store, RAW_BASE, concurrency, true).await?;
        let (secret, record) = ServiceKey::create("bench", vec![Scope::Spend, Scope::Read], key_rate, store.now())?;
        store.create_service_key(&record).await?;
        let api = Arc::new(SpendApi::new(
            store.clone(),
            SpendConfig {
                user_rate: RatePerSecond::new(RATE)?,
                key_cache_ttl: Duration::from_secs(300),
                // As deployed; bench balances never come near it.
                low_balance_threshold: Some(Tokens::new(SpendConfig::DEFAULT_LOW_BALANCE_THRESHOLD)?),
            },
        ));
        let authorization: Arc<str> = format!("Bearer {}", secret.reveal()).into();
        let ours = move |worker: usize, i: u64| {
            let (api, authorization) = (api.clone(), authorization.clone());
            async move {
                let user = OURS_BASE + worker as i64 + 1;
                let request = http::Request::builder()
                    .method(http::Method::POST)
                    .uri("/v1/spend")
                    .header(http::header::AUTHORIZATION, &*authorization)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .header("idempotency-key", format!("bench-{worker}-{i}"))
                    .body(format!(r#"{{"user_id":{user},"tokens":1}}"#).into_bytes())
                    .expect("request");
                let response = api.handle(request).await;
                assert_eq!(
                    response.status(),
                    http::StatusCode::OK,
                    "spend {worker}-{i}: {}",
                    response.body()
                );
            }
        };
        let guards = Arc::new(Guards {
            key_id: record.id.to_string(),
            key_rate,
            user_rate: RATE,
        });
        let raw = {
            let store = store.clone();
            move |worker: usize, i: u64| {
                let (store, guards) = (store.clone(), guards.clone());
                async move {
                    // What the API stores for a spend: the key scoped to the
                    // service key, a fingerprint with the body's hash, the
                    // reference naming the key.
                    let body_hash = &uuid::Uuid::new_v4().simple().to_string()[..24];
                    let tx = RawTx {
                        table: store.table(),
                        user: RAW_BASE + worker as i64 + 1,
                        key: format!("api:{}:bench-{worker}-{i}", guards.key_id),
                        fingerprint: format!("spend:-1#{body_hash}"),
                        reference: Some(format!("key:{}", guards.key_id)),
                        pinned: Some(CREDIT - i),
                        guards: Some(&guards),
                    };
                    send(&store, tx.items(Utc::now())).await;
                }
            }
        };
        compare_at(&store, args, concurrency, ours, raw).await?;
    }
    Ok(())
}
