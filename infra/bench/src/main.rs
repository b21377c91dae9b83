//! `make bench`: debits per second through `Store::apply`, beside raw
//! `TransactWriteItems` calls of the same shape (idempotency record, account
//! update with its condition, ledger entry, stats shard), at several
//! concurrencies, against DynamoDB Local. Prints a table and the ratio.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update};
use clap::Parser;
use futures::future::join_all;
use tokenbill::Store;
use tokenbill::domain::ledger::{CreditKind, DebitKind};
use tokenbill::domain::{IdempotencyKey, Tokens, UserId};
use tokenbill::store::BalanceRequest;

#[derive(Debug, Parser)]
struct Args {
    /// Operations per concurrency level and variant.
    #[arg(long, default_value_t = 2000)]
    ops: usize,
    /// Concurrency levels.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// The same four items `Store::apply` writes for a debit, built by hand,
/// with the same request options (`ALL_OLD` on a failed condition).
fn raw_debit(table: &str, user: i64, op: usize) -> Vec<TransactWriteItem> {
    let pk = s(format!("USER#{user}"));
    let tx = uuid::Uuid::now_v7().simple().to_string();
    let put = |sk: String, extra: Vec<(&str, AttributeValue)>| {
        let mut put = Put::builder()
            .table_name(table)
            .item("pk", pk.clone())
            .item("sk", s(sk))
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        for (name, value) in extra {
            put = put.item(name, value);
        }
        TransactWriteItem::builder().put(put.build().expect("put")).build()
    };
    let account = Update::builder()
        .table_name(table)
        .key("pk", pk.clone())
        .key("sk", s("ACCOUNT"))
        .update_expression("SET updated_at = :now ADD available :d, entries :one")
        .condition_expression("available >= :need")
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .expression_attribute_values(":now", s("2026-11-24T00:00:00Z"))
        .expression_attribute_values(":d", n(-1))
        .expression_attribute_values(":one", n(1))
        .expression_attribute_values(":need", n(1))
        .build()
        .expect("update");
    let stats = Update::builder()
        .table_name(table)
        .key("pk", s("STATS#2026-11-24"))
        .key("sk", s(format!("SHARD#{:02}", user % 16)))
        .update_expression("ADD tokens_spend :one")
        .expression_attribute_values(":one", n(1))
        .build()
        .expect("update");
    // The same attributes the store writes: the receipt inside the
    // idempotency record, and the full ledger entry.
    let now = s("2026-11-24T00:00:00.000000000+00:00");
    let tx_id = s(format!("{user}.{tx}"));
    let receipt = AttributeValue::M(
        [
            ("tx_id", tx_id.clone()),
            ("kind", s("spend")),
            ("amount", n(1)),
            ("created_at", now.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
    );
    let key = s(format!("raw-{op}"));
    vec![
        put(
            format!("IDEM#raw-{op}"),
            vec![
                ("entity", s("idempotency")),
                ("fingerprint", s("spend:-1")),
                ("receipt", receipt),
            ],
        ),
        TransactWriteItem::builder().update(account).build(),
        put(
            format!("TX#{tx}"),
            vec![
                ("entity", s("ledger_entry")),
                ("tx_id", tx_id),
                ("kind", s("spend")),
                ("amount", n(1)),
                ("delta_available", n(-1)),
                ("delta_held", n(0)),
                ("idempotency_key", key),
                ("created_at", now),
                ("refundable", n(1)),
            ],
        ),
        TransactWriteItem::builder().update(stats).build(),
    ]
}

/// Runs `ops` operations over `concurrency` tasks, task `t` on user `t + 1`.
async fn run<F, Fut>(ops: usize, concurrency: usize, op: F) -> Duration
where
    F: Fn(i64, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let started = Instant::now();
    let per_task = ops / concurrency;
    join_all((0..concurrency).map(|task| {
        let op = op.clone();
        tokio::spawn(async move {
            for i in 0..per_task {
                op(task as i64 + 1, task * per_task + i).await;
            }
        })
    }))
    .await;
    started.elapsed()
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| status.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_owned))
        .and_then(|line| line.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let config = tokenbill::aws::sdk_config().await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    println!(
        "debits per second against DynamoDB Local ({} ops per cell, each task on its own user)",
        args.ops
    );
    println!(
        "{:>11} {:>14} {:>14} {:>7}",
        "concurrency", "Store::apply", "raw", "ratio"
    );
    for &concurrency in &args.concurrency {
        let table = format!("bench-{concurrency}-{}", uuid::Uuid::new_v4().simple());
        tokenbill::resources::create_table(&client, &table).await?;
        let store = Store::new(client.clone(), table.clone());
        for user in 1..=concurrency as i64 {
            let key = IdempotencyKey::new(format!("seed-{user}"))?;
            let tokens = Tokens::new(10 * args.ops as u64)?;
            store
                .apply(BalanceRequest::credit(
                    UserId::new(user)?,
                    CreditKind::Grant,
                    tokens,
                    key,
                ))
                .await?;
        }
        let ours = {
            let store = store.clone();
            run(args.ops, concurrency, move |user, op| {
                let store = store.clone();
                async move {
                    let key = IdempotencyKey::new(format!("bench-{op}")).expect("key");
                    let user = UserId::new(user).expect("user");
                    let request = BalanceRequest::debit(user, DebitKind::Spend, Tokens::new(1).expect("1"), key);
                    store.apply(request).await.expect("debit");
                }
            })
            .await
        };
        let raw = {
            let client = client.clone();
            run(args.ops, concurrency, move |user, op| {
                let (client, table) = (client.clone(), table.clone());
                async move {
                    let items = raw_debit(&table, user, op);
                    client
                        .transact_write_items()
                        .set_transact_items(Some(items))
                        .send()
                        .await
                        .expect("raw debit");
                }
            })
            .await
        };
        let rate = |elapsed: Duration| (args.ops / concurrency * concurrency) as f64 / elapsed.as_secs_f64();
        let (ours, raw) = (rate(ours), rate(raw));
        println!("{concurrency:>11} {ours:>12.0}/s {raw:>12.0}/s {:>7.2}", ours / raw);
    }
    println!("peak resident memory: {} KiB", peak_rss_kib());
    Ok(())
}
