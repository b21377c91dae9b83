//! What the renewal sweep costs against the number of subscriptions: a
//! fresh table per total, seeded (batch writes of the items the store
//! writes) with that many subscriptions of which `due` are past their
//! period's end with a saved mock card that pays; then the `due` index
//! query alone and a whole sweep (`tokenbill::sweep::sweep`: the renewals
//! charged through the mock provider's recurring API over HTTP on
//! loopback, credited, notified), and a second sweep with nothing due.
//! Items read are the items DynamoDB's queries read (`ScannedCount`),
//! with the read capacity it reports.

use std::time::Instant;

use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use chrono::Duration;
use futures::StreamExt;
use tokenbill::domain::UserId;
use tokenbill::domain::invoice::Provider;
use tokenbill::domain::subscription::{RenewalMethod, SubscriptionRecord};
use tokenbill::payments::mock::{CardBehaviour, MockProvider};
use tokenbill::renewal::SUBSCRIPTIONS_PER_SHARD;
use tokenbill::store::NewInvoice;

use crate::app::{BoxError, Local, register};
use crate::measure::{QueryReads, requests};

/// The subscription bought through the mock checkout, copied to every user.
const TEMPLATE_USER: i64 = 1;
/// Seeded subscribers are numbered from here; the first `due` of them are due.
const SUBSCRIBERS: i64 = 1_000_000;
/// Batch writes in flight while seeding.
const SEED_WRITERS: usize = 8;

struct Sweeps {
    total: usize,
    seed_seconds: f64,
    query: (QueryReads, f64, usize),
    sweep: (QueryReads, f64, u64, tokenbill::sweep::SweepReport),
    idle: (QueryReads, f64),
}

pub async fn bench(
    client: &aws_sdk_dynamodb::Client,
    sqs: &aws_sdk_sqs::Client,
    totals: &[usize],
    due: usize,
) -> Result<(), BoxError> {
    println!();
    println!(
        "renewal sweep cost vs total subscriptions ({due} due, each renewed through the mock provider's recurring API)"
    );
    let mut rows = Vec::new();
    for &total in totals {
        let local = crate::app::start(client, sqs, "sweep").await?;
        rows.push(run(&local, total, due.min(total)).await?);
    }
    println!(
        "{:>9} {:>8} | {:>22} | {:>36} | {:>24}",
        "total", "seeded", "due index query", "whole sweep", "sweep, nothing due"
    );
    println!(
        "{:>9} {:>8} | {:>5} {:>6} {:>9} | {:>5} {:>6} {:>5} {:>7} {:>9} | {:>5} {:>6} {:>9}",
        "subs", "in", "items", "RCU", "time", "items", "RCU", "req", "renewed", "time", "items", "RCU", "time"
    );
    for row in rows {
        let (query, query_ms, _) = row.query;
        let (sweep, sweep_ms, sweep_requests, report) = row.sweep;
        let (idle, idle_ms) = row.idle;
        println!(
            "{:>9} {:>7.0}s | {:>5} {:>6.1} {:>7.1}ms | {:>5} {:>6.1} {:>5} {:>7} {:>7.0}ms | {:>5} {:>6.1} {:>7.1}ms",
            row.total,
            row.seed_seconds,
            query.items,
            query.capacity_units(),
            query_ms,
            sweep.items,
            sweep.capacity_units(),
            sweep_requests,
            report.renewals.paid,
            sweep_ms,
            idle.items,
            idle.capacity_units(),
            idle_ms,
        );
    }
    Ok(())
}

async fn run(local: &Local, total: usize, due: usize) -> Result<Sweeps, BoxError> {
    let store = &local.store;
    let template = template(local).await?;
    let secret = std::env::var("MOCK_PROVIDER_SECRET").unwrap_or_else(|_| tokenbill_dev::DEV_MOCK_SECRET.to_owned());
    let provider = MockProvider::new(secret)?;
    // The due ones renew: their payment credits a registered user.
    for i in 0..due {
        register(store, SUBSCRIBERS + i as i64).await?;
    }
    let started = Instant::now();
    let period = Duration::days(i64::from(template.subscription.period_days));
    // Built batch by batch as the writers take them: 100k items at once
    // would take the bench's memory to a gigabyte.
    let batches = (0..total).step_by(25).map(|first| {
        (first..(first + 25).min(total))
            .map(|i| subscriber(store, &template, &provider, period, i, i < due))
            .collect::<Result<Vec<_>, BoxError>>()
    });
    let written: Vec<Result<(), BoxError>> = futures::stream::iter(batches)
        .map(|batch| async move { write_batch(store, batch?).await })
        .buffer_unordered(SEED_WRITERS)
        .collect()
        .await;
    written.into_iter().collect::<Result<Vec<()>, _>>()?;
    let seed_seconds = started.elapsed().as_secs_f64();

    let (before, started) = (QueryReads::now(), Instant::now());
    let found = store.due_subscriptions(store.now(), SUBSCRIPTIONS_PER_SHARD).await?;
    let query = (QueryReads::now().since(before), ms(started), found.len());
    if found.len() != due {
        return Err(format!("{} due subscriptions found of {due}", found.len()).into());
    }

    let (before, sent, started) = (QueryReads::now(), requests(), Instant::now());
    let report = tokenbill::sweep::sweep(store, &local.app.queue, &local.app.renewals).await?;
    let sweep = (QueryReads::now().since(before), ms(started), requests() - sent, report);
    if report.renewals.paid != due {
        return Err(format!("the sweep renewed {} of {due}: {report:?}", report.renewals.paid).into());
    }

    let (before, started) = (QueryReads::now(), Instant::now());
    let idle = tokenbill::sweep::sweep(store, &local.app.queue, &local.app.renewals).await?;
    if idle.renewals != tokenbill::renewal::RenewalReport::default() {
        return Err(format!("a second sweep still renewed: {idle:?}").into());
    }
    let idle = (QueryReads::now().since(before), ms(started));
    Ok(Sweeps {
        total,
        seed_seconds,
        query,
        sweep,
        idle,
    })
}

/// The put of subscriber `i`: a copy of `template` for its own user and
/// card, past its period's end if `due`, else ending within the next week.
fn subscriber(
    store: &tokenbill::Store,
    template: &SubscriptionRecord,
    provider: &MockProvider,
    period: Duration,
    i: usize,
    due: bool,
) -> Result<WriteRequest, BoxError> {
    let user = UserId::new(SUBSCRIBERS + i as i64)?;
    let mut record = template.clone();
    let sub = &mut record.subscription;
    sub.user = user;
    sub.renewal = Some(RenewalMethod::Mock {
        recurring_token: provider.mint_token(user, CardBehaviour::Approve),
    });
    // Not due ones spread over a week, so the index holds them at many times.
    let shift = if due {
        -(period + Duration::minutes(1))
    } else {
        Duration::minutes((i % 10_080) as i64)
    };
    sub.period_start += shift;
    sub.period_end += shift;
    sub.next_action_at = Some(if due {
        sub.period_end
    } else {
        sub.period_end - Duration::days(3)
    });
    let put = store.put_subscription_item(&record, None)?;
    let item = put.put.map(|p| p.item).ok_or("a subscription put")?;
    Ok(WriteRequest::builder()
        .put_request(PutRequest::builder().set_item(Some(item)).build()?)
        .build())
}

fn ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1e3
}

/// A monthly subscription bought through the mock checkout with a saved
/// card: the record every seeded one is a copy of.
async fn template(local: &Local) -> Result<SubscriptionRecord, BoxError> {
    let store = &local.store;
    register(store, TEMPLATE_USER).await?;
    let order = NewInvoice {
        user: UserId::new(TEMPLATE_USER)?,
        tariff_id: "sub_month".parse()?,
        provider: Provider::Mock,
        promo: None,
    };
    let invoice = store.create_invoice(order, Duration::hours(1)).await?;
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("/payments/mock/checkout/{}", invoice.id))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("action=pay&save_card=1&card={}", CardBehaviour::Approve.as_str()).into_bytes())?;
    let response = local.app.state.payments.handle(request).await;
    if response.status() != 200 {
        return Err(format!("mock checkout: {} {}", response.status(), response.body()).into());
    }
    store
        .subscription_record(UserId::new(TEMPLATE_USER)?)
        .await?
        .ok_or_else(|| "the checkout made no subscription".into())
}

async fn write_batch(store: &tokenbill::Store, mut batch: Vec<WriteRequest>) -> Result<(), BoxError> {
    for _ in 0..10 {
        let output = store
            .client()
            .batch_write_item()
            .request_items(store.table(), batch)
            .send()
            .await?;
        batch = output
            .unprocessed_items
            .and_then(|mut left| left.remove(store.table()))
            .unwrap_or_default();
        if batch.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Err("batch writes left unprocessed after 10 tries".into())
}
