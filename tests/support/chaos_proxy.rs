//! A fault-injecting TCP proxy for chaos tests: it sits between a client
//! (the functions' AWS and HTTP clients) and a real server on loopback
//! and, per chunk of bytes, may delay it, drop the connection before
//! forwarding a request chunk, or cut a response chunk in half and close.
//! Every fault is counted, so a test can show that faults really reached
//! the code under test (the AWS SDK retries some of them on its own).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How often each fault happens, per chunk.
#[derive(Debug, Clone, Copy)]
pub struct FaultRates {
    /// A chunk (either way) waits up to `max_delay` first.
    pub delay: f64,
    pub max_delay: Duration,
    /// A request chunk is not forwarded; both sides are closed.
    pub drop: f64,
    /// Half of a response chunk is forwarded, then both sides are closed.
    pub cut: f64,
}

impl FaultRates {
    pub const CALM: FaultRates = FaultRates {
        delay: 0.0,
        max_delay: Duration::ZERO,
        drop: 0.0,
        cut: 0.0,
    };
}

/// Faults injected so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub connections: u64,
    pub delays: u64,
    pub drops: u64,
    pub cuts: u64,
}

impl FaultCounts {
    /// Faults that broke a connection (delays do not).
    pub fn broken(&self) -> u64 {
        self.drops + self.cuts
    }
}

impl std::fmt::Display for FaultCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} connections, {} delays, {} drops, {} cuts",
            self.connections, self.delays, self.drops, self.cuts
        )
    }
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    delays: AtomicU64,
    drops: AtomicU64,
    cuts: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    seed: u64,
    rates: FaultRates,
    calm: AtomicBool,
    counters: Counters,
}

/// A running proxy; it serves until the test's runtime ends.
#[derive(Debug, Clone)]
pub struct ChaosProxy {
    address: SocketAddr,
    shared: Arc<Shared>,
}

impl ChaosProxy {
    /// Listens on a free loopback port and forwards to `upstream`. Each
    /// connection draws its faults from its own generator, seeded by
    /// `seed` and the connection's number.
    pub async fn start(upstream: SocketAddr, seed: u64, rates: FaultRates) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let address = listener.local_addr().expect("bound address");
        let shared = Arc::new(Shared {
            upstream,
            seed,
            rates,
            calm: AtomicBool::new(false),
            counters: Counters::default(),
        });
        let accepting = shared.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let number = accepting.counters.connections.fetch_add(1, Ordering::Relaxed);
                let shared = accepting.clone();
                tokio::spawn(async move {
                    // A closed or reset side simply ends the connection.
                    let _ = relay(client, &shared, number).await;
                });
            }
        });
        Self { address, shared }
    }

    /// A proxy in front of the server that `url` (`http://host:port/...`) names.
    pub async fn in_front_of(url: &str, seed: u64, rates: FaultRates) -> Self {
        let parsed = url::Url::parse(url).expect("upstream URL");
        let host = parsed.host_str().expect("upstream host");
        let port = parsed.port_or_known_default().expect("upstream port");
        let upstream = tokio::net::lookup_host((host, port))
            .await
            .expect("resolve upstream")
            .next()
            .expect("an upstream address");
        Self::start(upstream, seed, rates).await
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Stops injecting faults (connections already broken stay broken).
    pub fn calm_down(&self) {
        self.shared.calm.store(true, Ordering::SeqCst);
    }

    pub fn counts(&self) -> FaultCounts {
        let c = &self.shared.counters;
        FaultCounts {
            connections: c.connections.load(Ordering::Relaxed),
            delays: c.delays.load(Ordering::Relaxed),
            drops: c.drops.load(Ordering::Relaxed),
            cuts: c.cuts.load(Ordering::Relaxed),
        }
    }
}

async fn relay(mut client: TcpStream, shared: &Shared, number: u64) -> std::io::Result<()> {
    let mut upstream = TcpStream::connect(shared.upstream).await?;
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let mut rng = StdRng::seed_from_u64(shared.seed ^ number.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let (mut client_read, mut client_write) = client.split();
    let (mut upstream_read, mut upstream_write) = upstream.split();
    let mut request = vec![0u8; 64 * 1024];
    let mut response = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            read = client_read.read(&mut request) => {
                let n = read?;
                if n == 0 {
                    return Ok(());
                }
                let rates = shared.rates_now();
                if rng.random_bool(rates.drop) {
                    shared.counters.drops.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                shared.maybe_delay(&mut rng, rates).await;
                upstream_write.write_all(&request[..n]).await?;
            }
            read = upstream_read.read(&mut response) => {
                let n = read?;
                if n == 0 {
                    return Ok(());
                }
                let rates = shared.rates_now();
                if rng.random_bool(rates.cut) {
                    shared.counters.cuts.fetch_add(1, Ordering::Relaxed);
                    client_write.write_all(&response[..n / 2]).await?;
                    return Ok(());
                }
                shared.maybe_delay(&mut rng, rates).await;
                client_write.write_all(&response[..n]).await?;
            }
        }
    }
}

impl Shared {
    fn rates_now(&self) -> FaultRates {
        if self.calm.load(Ordering::SeqCst) {
            FaultRates::CALM
        } else {
            self.rates
        }
    }

    async fn maybe_delay(&self, rng: &mut StdRng, rates: FaultRates) {
        if rates.max_delay.is_zero() || !rng.random_bool(rates.delay) {
            return;
        }
        self.counters.delays.fetch_add(1, Ordering::Relaxed);
        let millis = rng.random_range(1..=rates.max_delay.as_millis().max(1) as u64);
        tokio::time::sleep(Duration::from_millis(millis)).await;
    }
}
