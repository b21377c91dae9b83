//! What every benchmark measures with: the operations-and-latency record
//! ([`Measured`]) and its percentiles, the timed phase that fills it, the
//! DynamoDB requests and query reads the bench's client made, and this
//! process's CPU time and peak memory.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::operation::query::{QueryInput, QueryOutput};
use aws_sdk_dynamodb::types::ReturnConsumedCapacity;
use futures::future::join_all;

/// DynamoDB requests (attempts, retries included) the bench's client has sent.
static REQUESTS: AtomicU64 = AtomicU64::new(0);
/// Query requests, the items they returned, and the read capacity units
/// DynamoDB reported for them, times ten (`ReturnConsumedCapacity` is
/// asked on every query, so the store's own queries report it too).
static QUERIES: AtomicU64 = AtomicU64::new(0);
static QUERY_ITEMS: AtomicU64 = AtomicU64::new(0);
static QUERY_CAPACITY_TENTHS: AtomicU64 = AtomicU64::new(0);

/// The interceptor that fills the counters above.
#[derive(Debug)]
pub struct CountRequests;

impl aws_sdk_dynamodb::config::Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "CountRequests"
    }

    fn read_before_transmit(
        &self,
        _context: &aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _components: &aws_sdk_dynamodb::config::RuntimeComponents,
        _cfg: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        REQUESTS.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn modify_before_serialization(
        &self,
        context: &mut aws_sdk_dynamodb::config::interceptors::BeforeSerializationInterceptorContextMut<'_>,
        _components: &aws_sdk_dynamodb::config::RuntimeComponents,
        _cfg: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if let Some(query) = context.input_mut().downcast_mut::<QueryInput>() {
            query.return_consumed_capacity = Some(ReturnConsumedCapacity::Total);
        }
        Ok(())
    }

    fn read_after_deserialization(
        &self,
        context: &aws_sdk_dynamodb::config::interceptors::AfterDeserializationInterceptorContextRef<'_>,
        _components: &aws_sdk_dynamodb::config::RuntimeComponents,
        _cfg: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if let Ok(output) = context.output_or_error()
            && let Some(query) = output.downcast_ref::<QueryOutput>()
        {
            QUERIES.fetch_add(1, Ordering::Relaxed);
            QUERY_ITEMS.fetch_add(query.count as u64, Ordering::Relaxed);
            let capacity = query
                .consumed_capacity
                .as_ref()
                .and_then(|c| c.capacity_units)
                .unwrap_or(0.0);
            QUERY_CAPACITY_TENTHS.fetch_add((capacity * 10.0).round() as u64, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// A snapshot of the query counters; the difference of two is what ran between.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueryReads {
    pub queries: u64,
    pub items: u64,
    pub capacity_tenths: u64,
}

impl QueryReads {
    pub fn now() -> Self {
        Self {
            queries: QUERIES.load(Ordering::Relaxed),
            items: QUERY_ITEMS.load(Ordering::Relaxed),
            capacity_tenths: QUERY_CAPACITY_TENTHS.load(Ordering::Relaxed),
        }
    }

    pub fn since(self, before: Self) -> Self {
        Self {
            queries: self.queries - before.queries,
            items: self.items - before.items,
            capacity_tenths: self.capacity_tenths - before.capacity_tenths,
        }
    }

    pub fn capacity_units(&self) -> f64 {
        self.capacity_tenths as f64 / 10.0
    }
}

/// DynamoDB requests sent so far.
pub fn requests() -> u64 {
    REQUESTS.load(Ordering::Relaxed)
}

/// Operations and their latencies over one or more timed phases.
#[derive(Debug, Default)]
pub struct Measured {
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
    /// CPU time of this process (all threads) during the phases: the
    /// client-side cost, which on a shared machine DynamoDB Local pays for.
    pub cpu: Duration,
    /// DynamoDB requests sent during the phases.
    pub requests: u64,
}

impl Measured {
    pub fn add(&mut self, other: Measured) {
        self.elapsed += other.elapsed;
        self.cpu += other.cpu;
        self.requests += other.requests;
        self.latencies.extend(other.latencies);
    }

    pub fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    pub fn requests_per_op(&self) -> f64 {
        self.requests as f64 / self.latencies.len() as f64
    }

    pub fn cpu_per_op_us(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.latencies.len() as f64
    }

    pub fn percentile_ms(&mut self, p: f64) -> f64 {
        self.latencies.sort_unstable();
        let index = ((self.latencies.len() as f64 * p).ceil() as usize).clamp(1, self.latencies.len()) - 1;
        self.latencies[index].as_secs_f64() * 1e3
    }
}

/// `workers` tasks, each running `op(worker, i)` for `i` in `from..from + count`
/// one after another; timed from the first start to the last finish.
pub async fn phase<F, Fut>(workers: usize, from: u64, count: u64, op: F) -> Measured
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let cpu = cpu_time();
    let sent = requests();
    let started = Instant::now();
    let tasks = (0..workers).map(|worker| {
        let op = op.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(count as usize);
            for i in from..from + count {
                let sent = Instant::now();
                op(worker, i).await;
                latencies.push(sent.elapsed());
            }
            latencies
        })
    });
    let mut latencies = Vec::new();
    for result in join_all(tasks).await {
        latencies.extend(result.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())));
    }
    Measured {
        elapsed: started.elapsed(),
        latencies,
        cpu: cpu_time().saturating_sub(cpu),
        requests: requests() - sent,
    }
}

/// CPU time so far of this process's live threads (`/proc/self/task/*/schedstat`,
/// nanoseconds); the runtime's threads live as long as the process.
pub fn cpu_time() -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let nanos = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next().and_then(|ns| ns.parse::<u64>().ok()))
        .sum();
    Duration::from_nanos(nanos)
}

/// Peak resident memory (`VmHWM`) of `process`: `"self"` or a pid.
pub fn peak_rss_kib(process: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{process}/status"))
        .ok()
        .and_then(|status| status.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_owned))
        .and_then(|line| line.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}
