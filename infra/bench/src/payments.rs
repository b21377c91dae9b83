//! Payment callbacks handled per second: the mock provider's signed
//! `payment.succeeded` callbacks through `PaymentWebhook::handle` (the
//! function's handler), in process, each for its own pending invoice:
//! signature and replay window checked, the invoice paid, the tokens
//! credited with their ledger entry, the notification committed and
//! published to the queue (moto's SQS).

use std::sync::Arc;

use chrono::{Duration, Utc};
use futures::future::try_join_all;
use tokenbill::domain::invoice::{Invoice, Provider};
use tokenbill::payments::mock::{MockEvent, MockProvider, SIGNATURE_HEADER};
use tokenbill::store::NewInvoice;

use crate::app::{BoxError, Local, register};
use crate::measure::phase;

/// A callback as the provider sends it: its signature header and body.
type SignedCallback = (String, Vec<u8>);

/// Paying users are numbered from here (one per worker and cell).
const PAYERS: i64 = 700_000;

pub async fn bench(local: &Local, callbacks: usize, concurrency: &[usize]) -> Result<(), BoxError> {
    println!();
    println!(
        "mock provider payment callbacks (POST /payments/mock/callback via PaymentWebhook::handle), {callbacks} per concurrency, each paying its own invoice"
    );
    println!(
        "{:>11} {:>12} {:>9} {:>9} {:>9} {:>7}",
        "concurrency", "callbacks/s", "p50", "p99", "CPU", "req/cb"
    );
    let secret = std::env::var("MOCK_PROVIDER_SECRET").unwrap_or_else(|_| tokenbill_dev::DEV_MOCK_SECRET.to_owned());
    let provider = MockProvider::new(secret)?;
    let payments = local.app.state.payments.clone();
    for (cell, &workers) in concurrency.iter().enumerate() {
        let per_worker = callbacks.div_ceil(workers);
        let first = PAYERS + (cell * 1000) as i64;
        // Invoices of each worker's user, made before the clock starts.
        let invoices: Vec<Vec<Invoice>> = try_join_all((0..workers).map(|w| {
            let store = local.store.clone();
            async move {
                let id = first + w as i64;
                register(&store, id).await?;
                let mut invoices = Vec::with_capacity(per_worker);
                for _ in 0..per_worker {
                    let order = NewInvoice {
                        user: tokenbill::domain::UserId::new(id)?,
                        tariff_id: "pack_100".parse()?,
                        provider: Provider::Mock,
                        promo: None,
                    };
                    invoices.push(store.create_invoice(order, Duration::hours(1)).await?);
                }
                Ok::<_, BoxError>(invoices)
            }
        }))
        .await?;
        // Signed now: the bench stays well inside the replay window.
        let signed: Arc<Vec<Vec<SignedCallback>>> = Arc::new(
            invoices
                .iter()
                .map(|list| {
                    list.iter()
                        .map(|invoice| provider.callback(&MockEvent::paying(invoice), Utc::now()))
                        .collect()
                })
                .collect(),
        );
        let payments = payments.clone();
        let mut measured = phase(workers, 0, per_worker as u64, move |worker, i| {
            let (payments, signed) = (payments.clone(), signed.clone());
            async move {
                let (header, body) = &signed[worker][i as usize];
                let request = http::Request::builder()
                    .method("POST")
                    .uri("/payments/mock/callback")
                    .header(SIGNATURE_HEADER, header)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .expect("request");
                let response = payments.handle(request).await;
                assert!(
                    response.status() == 200 && response.body().contains("credited"),
                    "callback {worker}-{i}: {} {}",
                    response.status(),
                    response.body()
                );
            }
        })
        .await;
        for w in 0..workers {
            let user = tokenbill::domain::UserId::new(first + w as i64)?;
            let (balance, _) = local.store.balance(user).await?;
            let want = 100 * per_worker as u64;
            if balance.available.get() != want {
                return Err(format!(
                    "payer {user}: {} tokens after {per_worker} packs of 100",
                    balance.available.get()
                )
                .into());
            }
        }
        println!(
            "{workers:>11} {:>10.0}/s {:>7.1}ms {:>7.1}ms {:>7.0}us {:>7.2}",
            measured.rate(),
            measured.percentile_ms(0.5),
            measured.percentile_ms(0.99),
            measured.cpu_per_op_us(),
            measured.requests_per_op(),
        );
    }
    Ok(())
}
