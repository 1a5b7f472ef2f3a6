//! The client load generator, shaped like etcd's `benchmark` tool: a fixed
//! number of connections, many more clients sharing them round-robin, a
//! fixed total of operations handed out one at a time, an optional rate
//! limit, and every operation's latency in an HDR histogram.
//!
//! It speaks only the public etcd v3 API through the `etcd-client` crate, so
//! both systems see exactly the same requests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use etcd_client::{Client, ConnectOptions};
use futures::future::BoxFuture;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use tokio::time::Instant;

/// Highest latency the histograms hold, in microseconds (one minute).
const MAX_LATENCY_US: u64 = 60_000_000;

/// The load's shape, with etcd `benchmark`'s flag names.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadConfig {
    /// Concurrent clients (`--clients`).
    pub clients: usize,
    /// gRPC connections the clients share round-robin (`--conns`).
    pub conns: usize,
    /// Operations per measured phase (`--total`).
    pub total: u64,
    /// Key size in bytes (`--key-size`).
    pub key_size: usize,
    /// Value size in bytes (`--val-size`).
    pub val_size: usize,
    /// Number of distinct keys (`--key-space-size`).
    pub key_space_size: u64,
    /// Keys in order rather than at random (`--sequential-keys`).
    pub sequential_keys: bool,
    /// Operations per second across all clients, 0 for as fast as possible
    /// (`--rate`).
    pub rate: u64,
}

/// Connections to a cluster; connection `i` goes to endpoint `i mod n`,
/// as etcd's benchmark spreads them.
pub struct Conns {
    conns: Vec<Client>,
}

impl Conns {
    pub async fn connect(endpoints: &[String], n: usize) -> anyhow::Result<Conns> {
        let mut conns = Vec::with_capacity(n);
        for i in 0..n.max(1) {
            let ep = &endpoints[i % endpoints.len()];
            let opts = ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(5))
                .with_timeout(Duration::from_secs(30));
            conns.push(
                Client::connect([ep.as_str()], Some(opts)).await.with_context(|| format!("connect {ep}"))?,
            );
        }
        Ok(Conns { conns })
    }

    /// The connection client `i` uses.
    pub fn for_client(&self, i: usize) -> Client {
        self.conns[i % self.conns.len()].clone()
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }
}

/// One operation: given the client's connection and the operation's index
/// (0..total), do it.
pub type OpFn = Arc<dyn Fn(Client, u64) -> BoxFuture<'static, Result<(), etcd_client::Error>> + Send + Sync>;

/// What a phase measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Operations that succeeded.
    pub ok: u64,
    /// Operations that failed.
    pub errors: u64,
    /// From the first request to the last reply.
    pub elapsed: Duration,
    /// Latency of each successful operation, in microseconds.
    pub latency_us: Histogram<u64>,
    /// The first error seen, for the report.
    pub first_error: Option<String>,
}

impl Outcome {
    pub fn empty() -> Outcome {
        Outcome { ok: 0, errors: 0, elapsed: Duration::ZERO, latency_us: new_histogram(), first_error: None }
    }

    /// Successful operations per second.
    pub fn throughput(&self) -> f64 {
        if self.elapsed.is_zero() { 0.0 } else { self.ok as f64 / self.elapsed.as_secs_f64() }
    }

    /// Adds another client's results (elapsed is the longer of the two).
    pub fn merge(&mut self, other: Outcome) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.elapsed = self.elapsed.max(other.elapsed);
        let _ = self.latency_us.add(&other.latency_us);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    /// Records one latency (and counts the operation as successful).
    pub fn record(&mut self, latency: Duration) {
        self.ok += 1;
        let us = (latency.as_micros() as u64).clamp(1, MAX_LATENCY_US);
        let _ = self.latency_us.record(us);
    }

    pub fn record_error(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// Hands out operation indexes 0..total to concurrent clients, pacing them
/// to `rate` per second when it is not 0.
pub struct Tickets {
    next: AtomicU64,
    total: u64,
    rate: u64,
    start: Instant,
}

impl Tickets {
    pub fn new(total: u64, rate: u64) -> Arc<Tickets> {
        Arc::new(Tickets { next: AtomicU64::new(0), total, rate, start: Instant::now() })
    }

    /// The next operation's index, once it is due; None when all are taken.
    pub async fn take(&self) -> Option<u64> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        if i >= self.total {
            return None;
        }
        if self.rate > 0 {
            tokio::time::sleep_until(self.start + Duration::from_secs_f64(i as f64 / self.rate as f64)).await;
        }
        Some(i)
    }

    /// Time since the first ticket could be taken.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

/// Runs `total` operations from `clients` concurrent clients sharing
/// `conns` round-robin, at most `rate` per second (0: unlimited), and
/// advances `progress` as they finish.
pub async fn drive(
    conns: &Conns,
    clients: usize,
    total: u64,
    rate: u64,
    progress: &ProgressBar,
    op: OpFn,
) -> anyhow::Result<Outcome> {
    let tickets = Tickets::new(total, rate);
    // A JoinSet aborts its tasks when dropped: an interrupted run stops its
    // clients too.
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients.max(1) {
        let client = conns.for_client(c);
        let tickets = tickets.clone();
        let op = op.clone();
        let progress = progress.clone();
        tasks.spawn(async move {
            let mut out = Outcome::empty();
            while let Some(i) = tickets.take().await {
                let t0 = Instant::now();
                match op(client.clone(), i).await {
                    Ok(()) => out.record(t0.elapsed()),
                    Err(e) => out.record_error(e),
                }
                out.elapsed = tickets.elapsed();
                progress.inc(1);
            }
            out
        });
    }
    join_all(tasks).await
}

/// Waits for every client task and merges their outcomes.
pub async fn join_all(mut tasks: tokio::task::JoinSet<Outcome>) -> anyhow::Result<Outcome> {
    let mut all = Outcome::empty();
    while let Some(t) = tasks.join_next().await {
        all.merge(t.context("load client task")?);
    }
    Ok(all)
}

/// Nanoseconds since this process first asked: a clock shared by the
/// writer that stamps a value and the watcher that receives it.
pub fn now_ns() -> u64 {
    static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();
    EPOCH.get_or_init(std::time::Instant::now).elapsed().as_nanos() as u64
}

/// A value of `size` bytes (at least 16) starting with the current
/// [`now_ns`] in hex, so a watcher can tell how long its event took.
pub fn stamped_value(size: usize) -> Vec<u8> {
    let mut v = format!("{:016x}", now_ns()).into_bytes();
    v.extend((v.len()..size).map(|i| b'a' + (i % 26) as u8));
    v
}

/// How long ago a [`stamped_value`] was made, if `value` is one.
pub fn stamp_age(value: &[u8]) -> Option<Duration> {
    let hex = std::str::from_utf8(value.get(..16)?).ok()?;
    let ns = u64::from_str_radix(hex, 16).ok()?;
    Some(Duration::from_nanos(now_ns().saturating_sub(ns)))
}

/// The key for index `i`: decimal, zero-padded to `size` bytes (longer if
/// the number needs more digits), so keys sort in index order.
pub fn key(i: u64, size: usize) -> Vec<u8> {
    format!("{i:0size$}").into_bytes()
}

/// The index of the key operation `i` touches.
pub fn key_index(cfg: &LoadConfig, i: u64) -> u64 {
    let space = cfg.key_space_size.max(1);
    if cfg.sequential_keys { i % space } else { rand::random_range(0..space) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_padded_and_ordered() {
        assert_eq!(key(42, 8), b"00000042");
        assert_eq!(key(123_456_789, 8), b"123456789");
        assert!(key(9, 8) < key(10, 8));
    }

    #[test]
    fn stamped_values_tell_their_age() {
        let v = stamped_value(256);
        assert_eq!(v.len(), 256);
        std::thread::sleep(Duration::from_millis(2));
        assert!(stamp_age(&v).unwrap() >= Duration::from_millis(2));
        assert_eq!(stamp_age(b"not a stamp at all"), None);
        assert_eq!(stamped_value(4).len(), 16);
    }

    #[tokio::test]
    async fn tickets_run_out_and_pace() {
        let t = Tickets::new(3, 100);
        let mut got = Vec::new();
        while let Some(i) = t.take().await {
            got.push(i);
        }
        assert_eq!(got, vec![0, 1, 2]);
    }

    #[test]
    fn outcomes_merge() {
        let mut a = Outcome::empty();
        a.record(Duration::from_millis(2));
        let mut b = Outcome::empty();
        b.record(Duration::from_millis(4));
        b.record_error("boom");
        b.elapsed = Duration::from_secs(1);
        a.merge(b);
        assert_eq!((a.ok, a.errors), (2, 1));
        assert_eq!(a.first_error.as_deref(), Some("boom"));
        assert_eq!(a.throughput(), 2.0);
        assert!(a.latency_us.value_at_quantile(1.0) >= 3_990);
    }
}
