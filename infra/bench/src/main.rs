//! `make bench`: every figure of docs/performance.md in one run, against
//! the local stack (DynamoDB Local, moto), one module per measurement.

mod app;
mod functions;
mod measure;
mod payments;
mod runtime;
mod spend;
mod sweep;
mod webhook;

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::measure::{CountRequests, peak_rss_kib};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Bench {
    /// `Store::apply` debits beside raw four-item transactions.
    Debit,
    /// `POST /v1/spend` through the spend API beside raw seven-item transactions.
    Spend,
    /// Telegram updates through the webhook's handler, p50/p99.
    Webhook,
    /// Mock provider payment callbacks per second.
    Payments,
    /// The renewal sweep's reads and time against total subscriptions.
    Sweep,
    /// Each function's binary against a local Runtime API: init, memory, size.
    Functions,
}

#[derive(Debug, Parser)]
struct Args {
    /// Measured operations per concurrency level and variant.
    #[arg(long, default_value_t = 2000)]
    ops: usize,
    /// Concurrency levels (workers, each on its own user).
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// Unmeasured operations per variant before each cell, spread over its
    /// workers (at least one each): warms DynamoDB Local's JIT, the
    /// connection pool and the spend API's caches, none of which should
    /// count against whichever variant runs first.
    #[arg(long, default_value_t = 400)]
    warmup: usize,
    /// Blocks of ours-raw-raw-ours each cell's measured operations are split over.
    #[arg(long, default_value_t = 4)]
    rounds: usize,
    /// Benchmarks to run.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "debit,spend,webhook,payments,sweep,functions"
    )]
    bench: Vec<Bench>,
    /// Telegram updates measured per kind.
    #[arg(long, default_value_t = 300)]
    updates: usize,
    /// Payment callbacks measured per concurrency level.
    #[arg(long, default_value_t = 400)]
    callbacks: usize,
    /// Concurrency levels of the payment callbacks.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    callback_concurrency: Vec<usize>,
    /// Total subscriptions the sweep bench seeds, one table each.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    sweep_totals: Vec<usize>,
    /// Of them, how many are due.
    #[arg(long, default_value_t = 100)]
    sweep_due: usize,
    /// Where the functions' native release binaries are (default:
    /// `$CARGO_TARGET_DIR/release` or `target/release`).
    #[arg(long)]
    functions_dir: Option<PathBuf>,
    /// Where `make build` (sam build) left the arm64 bootstraps.
    #[arg(long, default_value = ".aws-sam/build")]
    sam_build: PathBuf,
    /// Cold starts per function (the median is printed).
    #[arg(long, default_value_t = 5)]
    cold_starts: usize,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.concurrency.iter().any(|&c| c == 0 || args.ops / c == 0) {
        return Err("every concurrency must be at least 1 and at most --ops".into());
    }
    if args.callback_concurrency.contains(&0) || args.cold_starts == 0 {
        return Err("--callback-concurrency and --cold-starts must be at least 1".into());
    }
    let config = tokenbill::aws::sdk_config().await;
    let client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&config)
            .interceptor(CountRequests)
            .build(),
    );
    let sqs = aws_sdk_sqs::Client::new(&config);
    if args.bench.contains(&Bench::Debit) {
        spend::bench_debits(&client, &args).await?;
    }
    if args.bench.contains(&Bench::Spend) {
        spend::bench_spends(&client, &args).await?;
    }
    if args.bench.contains(&Bench::Webhook) {
        let local = app::start(&client, &sqs, "webhook").await?;
        webhook::bench(&local, args.updates).await?;
    }
    if args.bench.contains(&Bench::Payments) {
        let local = app::start(&client, &sqs, "payments").await?;
        payments::bench(&local, args.callbacks, &args.callback_concurrency).await?;
    }
    if args.bench.contains(&Bench::Sweep) {
        sweep::bench(&client, &sqs, &args.sweep_totals, args.sweep_due).await?;
    }
    println!();
    println!("peak resident memory of the bench itself: {} KiB", peak_rss_kib("self"));
    if args.bench.contains(&Bench::Functions) {
        let local = app::start(&client, &sqs, "functions").await?;
        let dir = args.functions_dir.clone().unwrap_or_else(functions::default_dir);
        functions::bench(&local, &dir, &args.sam_build, args.cold_starts).await?;
    }
    Ok(())
}
