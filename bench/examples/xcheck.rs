//! A second, deliberately separate client for cross-checking `keelson bench`:
//! the `etcd-client` crate driving put and single-key range load with none
//! of the bench's machinery (no `keelson_bench` code: its own connection
//! handling, work queue, clock and statistics), so a mistake in the bench's
//! load generator or its figures would show up as a disagreement.
//!
//! The shape follows etcd's `benchmark` tool: a producer hands requests to
//! `--clients` workers through one queue, workers share `--conns`
//! connections round-robin, and every request's start and end is kept.
//! Throughput is successful requests over the time from the first start to
//! the last end; percentiles come from the sorted latencies (exact, no
//! histogram).
//!
//! ```sh
//! cargo build --release -p keelson-bench --example xcheck
//! $CARGO_TARGET_DIR/release/examples/xcheck --endpoint http://127.0.0.1:2379 --pid "$(pgrep -x etcd)"
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use etcd_client::{Client, ConnectOptions, GetOptions};
use tokio::sync::{Mutex, mpsc};

#[derive(Parser, Debug)]
#[command(about = "Put and single-key range load through etcd-client, independent of keelson bench")]
struct Args {
    /// The server's client URL.
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    endpoint: String,
    /// Concurrent workers.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Connections the workers share.
    #[arg(long, default_value_t = 8)]
    conns: usize,
    /// Requests per phase.
    #[arg(long, default_value_t = 30_000)]
    total: usize,
    #[arg(long, default_value_t = 8)]
    key_size: usize,
    #[arg(long, default_value_t = 256)]
    val_size: usize,
    /// Distinct keys; reads are preceded by an untimed put of every one.
    #[arg(long, default_value_t = 10_000)]
    key_space_size: u64,
    /// Phases, in order: put, range-l (linearizable get), range-s
    /// (serializable get).
    #[arg(long, value_delimiter = ',', default_value = "put,range-l,range-s")]
    phases: Vec<String>,
    /// The server's process id, to report its CPU time per request.
    #[arg(long)]
    pid: Option<u32>,
}

#[derive(Clone, Copy)]
enum Kind {
    Put,
    Get { serializable: bool },
}

/// What one phase saw.
struct Phase {
    ok: usize,
    errors: usize,
    first_error: Option<String>,
    /// Latencies of the successful requests, sorted.
    latencies: Vec<Duration>,
    /// First request sent to last reply received.
    wall: Duration,
    server_cpu: Option<f64>,
    /// CPU seconds this client process used over the phase.
    client_cpu: Option<f64>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut conns = Vec::new();
    for _ in 0..args.conns.max(1) {
        let opts = ConnectOptions::new().with_timeout(Duration::from_secs(30));
        conns.push(Client::connect([args.endpoint.as_str()], Some(opts)).await?);
    }
    println!(
        "xcheck {}: {} clients / {} conns, {} requests per phase, {}-byte keys, {}-byte values, {} keys",
        args.endpoint,
        args.clients,
        args.conns,
        args.total,
        args.key_size,
        args.val_size,
        args.key_space_size
    );
    println!(
        "{:<8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>9} {:>9}",
        "phase",
        "ops/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p999 ms",
        "max ms",
        "mean ms",
        "errors",
        "cpu us/op",
        "client us"
    );
    let mut filled = false;
    for name in &args.phases {
        let kind = match name.as_str() {
            "put" => Kind::Put,
            "range-l" => Kind::Get { serializable: false },
            "range-s" => Kind::Get { serializable: true },
            other => anyhow::bail!("unknown phase {other}: put, range-l or range-s"),
        };
        if matches!(kind, Kind::Get { .. }) && !filled {
            // Every key gets a value first, so every read finds one.
            let all: Vec<u64> = (0..args.key_space_size).collect();
            let fill = drive(&args, &conns, Kind::Put, all, None).await;
            anyhow::ensure!(fill.errors == 0, "fill failed: {:?}", fill.first_error);
            filled = true;
        }
        let keys: Vec<u64> =
            (0..args.total).map(|_| rand::random_range(0..args.key_space_size.max(1))).collect();
        let p = drive(&args, &conns, kind, keys, args.pid).await;
        print_phase(name, &p);
    }
    Ok(())
}

/// One request per entry of `keys`, spread over the workers through a
/// queue.
async fn drive(args: &Args, conns: &[Client], kind: Kind, keys: Vec<u64>, pid: Option<u32>) -> Phase {
    let (tx, rx) = mpsc::channel::<u64>(args.clients.max(1));
    let rx = Arc::new(Mutex::new(rx));
    let value: Vec<u8> = vec![b'x'; args.val_size];
    let key_size = args.key_size;
    let cpu0 = pid.and_then(cpu_seconds);
    let client0 = cpu_seconds(std::process::id());
    let producer = tokio::spawn(async move {
        for k in keys {
            if tx.send(k).await.is_err() {
                break;
            }
        }
    });
    let mut workers = Vec::new();
    for w in 0..args.clients.max(1) {
        let mut client = conns[w % conns.len()].clone();
        let rx = rx.clone();
        let value = value.clone();
        workers.push(tokio::spawn(async move {
            // (start, end) of each success; errors counted apart.
            let mut done: Vec<(Instant, Instant)> = Vec::new();
            let mut errors = 0usize;
            let mut first_error = None;
            loop {
                let next = rx.lock().await.recv().await;
                let Some(k) = next else { break };
                let key = format!("{k:0key_size$}");
                let start = Instant::now();
                let res = match kind {
                    Kind::Put => client.put(key, value.clone(), None).await.map(|_| true),
                    Kind::Get { serializable } => {
                        let opts = serializable.then(|| GetOptions::new().with_serializable());
                        client.get(key, opts).await.map(|r| r.kvs().len() == 1)
                    }
                };
                let end = Instant::now();
                match res {
                    Ok(true) => done.push((start, end)),
                    Ok(false) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("key {k} not found"));
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            (done, errors, first_error)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for w in workers {
        let (done, e, fe) = w.await.expect("worker panicked");
        all.extend(done);
        errors += e;
        if first_error.is_none() {
            first_error = fe;
        }
    }
    producer.await.expect("producer panicked");
    let server_cpu = match (cpu0, pid.and_then(cpu_seconds)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let client_cpu = match (client0, cpu_seconds(std::process::id())) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let wall = match (all.iter().map(|d| d.0).min(), all.iter().map(|d| d.1).max()) {
        (Some(first), Some(last)) => last - first,
        _ => Duration::ZERO,
    };
    let mut latencies: Vec<Duration> = all.iter().map(|(s, e)| *e - *s).collect();
    latencies.sort();
    Phase { ok: latencies.len(), errors, first_error, latencies, wall, server_cpu, client_cpu }
}

fn print_phase(name: &str, p: &Phase) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    // Nearest rank: the smallest latency with at least q of all at or below it.
    let q = |q: f64| {
        if p.latencies.is_empty() {
            return 0.0;
        }
        let rank = ((q * p.latencies.len() as f64).ceil() as usize).clamp(1, p.latencies.len());
        ms(p.latencies[rank - 1])
    };
    let mean = if p.ok > 0 { ms(p.latencies.iter().sum::<Duration>()) / p.ok as f64 } else { 0.0 };
    let ops = if p.wall.is_zero() { 0.0 } else { p.ok as f64 / p.wall.as_secs_f64() };
    let per_op = |cpu: Option<f64>| match cpu {
        Some(c) if p.ok > 0 => format!("{:.1}", c * 1e6 / p.ok as f64),
        _ => "-".into(),
    };
    println!(
        "{:<8} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>6} {:>9} {:>9}",
        name,
        ops,
        q(0.50),
        q(0.90),
        q(0.99),
        q(0.999),
        q(1.0),
        mean,
        p.errors,
        per_op(p.server_cpu),
        per_op(p.client_cpu)
    );
    if let Some(e) = &p.first_error {
        println!("note: {name}: first error: {e}");
    }
}

/// utime + stime of a process, in seconds (Linux `/proc/<pid>/stat`; clock
/// ticks are 100 per second on Linux).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it are plain.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}
