//! WAL group commit: appends/s, fsyncs/s and appends per fsync with 1, 64
//! and 256 concurrent appenders, each appending one 256-byte entry at a time
//! through openraft's `RaftLogStorage::append` and waiting for its
//! `IOFlushed` callback, as a raft leader does for each client write.
//!
//! The WAL lives under `$KEELSON_BENCH_DIR`, else `$HOME/.cache/keelson-bench`:
//! on the real disk, not in `/tmp`, which may be a tmpfs where an fsync costs
//! nothing.

use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use keelson_raftstore::TypeConfig;
use keelson_raftstore::WalConfig;
use keelson_raftstore::WalLogStore;
use keelson_raftstore::openraft::storage::IOFlushed;
use keelson_raftstore::openraft::storage::RaftLogStorage;
use keelson_raftstore::openraft::type_config::TypeConfigExt;
use keelson_raftstore::types::Command;
use keelson_raftstore::types::Entry;
use keelson_raftstore::types::EntryPayload;
use keelson_raftstore::types::LeaderId;
use keelson_raftstore::types::LogId;

use crate::report::Row;

const SUITE: &str = "wal";
const PAYLOAD: usize = 256;
const CONCURRENCY: [usize; 3] = [1, 64, 256];

/// Runs the WAL benchmark in the default directory (see the module doc);
/// `quick` shortens each level to a smoke run.
pub fn run(quick: bool) -> anyhow::Result<Vec<Row>> {
    run_in(quick, &bench_dir())
}

/// Runs the WAL benchmark with its WALs in temporary directories under
/// `base`, which should be on the disk being measured.
pub fn run_in(quick: bool, base: &Path) -> anyhow::Result<Vec<Row>> {
    let duration = if quick { Duration::from_millis(200) } else { Duration::from_secs(3) };
    std::fs::create_dir_all(base).with_context(|| format!("create bench dir {}", base.display()))?;
    let rt =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("start tokio runtime")?;

    let mut rows = Vec::new();
    for appenders in CONCURRENCY {
        let dir = tempfile::tempdir_in(base).context("create wal temp dir")?;
        let level = rt.block_on(run_level(dir.path().to_owned(), appenders, duration))?;
        rows.extend(level.rows(appenders));
    }
    Ok(rows)
}

fn bench_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KEELSON_BENCH_DIR") {
        return PathBuf::from(dir);
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".cache").join("keelson-bench"),
        None => std::env::temp_dir().join("keelson-bench"),
    }
}

struct Level {
    elapsed: Duration,
    appends: u64,
    fsyncs: u64,
    fsync_seconds: f64,
    latency_us: Histogram<u64>,
}

impl Level {
    fn rows(&self, appenders: usize) -> Vec<Row> {
        let secs = self.elapsed.as_secs_f64();
        let per_fsync = if self.fsyncs == 0 { 0.0 } else { self.appends as f64 / self.fsyncs as f64 };
        let fsync_mean_ms =
            if self.fsyncs == 0 { 0.0 } else { self.fsync_seconds * 1e3 / self.fsyncs as f64 };
        let latency = format!(
            "append latency p50 {:.2} ms, p99 {:.2} ms; {} appends in {secs:.1} s",
            self.latency_us.value_at_quantile(0.5) as f64 / 1e3,
            self.latency_us.value_at_quantile(0.99) as f64 / 1e3,
            self.appends,
        );
        vec![
            Row::new(
                SUITE,
                format!("append {PAYLOAD}B c={appenders}"),
                self.appends as f64 / secs,
                "appends/s",
            )
            .note(latency),
            Row::new(SUITE, format!("fsync c={appenders}"), self.fsyncs as f64 / secs, "fsyncs/s")
                .note(format!("fsync mean {fsync_mean_ms:.2} ms")),
            Row::new(SUITE, format!("group commit c={appenders}"), per_fsync, "appends/fsync")
                .note(format!("{} appends, {} fsyncs", self.appends, self.fsyncs)),
        ]
    }
}

/// The store and the next index to append, shared by the appenders: openraft
/// issues appends one at a time, and so do they.
struct Shared {
    store: WalLogStore,
    next: u64,
}

async fn run_level(dir: PathBuf, appenders: usize, duration: Duration) -> anyhow::Result<Level> {
    let store = tokio::task::spawn_blocking(move || WalLogStore::open(&dir, WalConfig::default()))
        .await?
        .context("open wal")?;
    let shared = Arc::new(tokio::sync::Mutex::new(Shared { store: store.clone(), next: 1 }));
    let payload = Bytes::from(vec![0x5a; PAYLOAD]);

    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(appenders);
    for _ in 0..appenders {
        let shared = shared.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut latency = Histogram::<u64>::new(3)?;
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let (tx, rx) = TypeConfig::oneshot();
                {
                    let mut s = shared.lock().await;
                    let index = s.next;
                    s.next += 1;
                    let entry = Entry {
                        log_id: LogId::new(LeaderId { term: 1, node_id: 1 }, index),
                        payload: EntryPayload::Normal(Command(payload.clone())),
                    };
                    s.store.append([entry], IOFlushed::signal(tx)).await?;
                }
                rx.await.context("flush callback dropped")??;
                latency.record(t0.elapsed().as_micros() as u64)?;
            }
            anyhow::Ok(latency)
        }));
    }
    let mut latency_us = Histogram::<u64>::new(3)?;
    for t in tasks {
        latency_us.add(t.await??)?;
    }
    let elapsed = started.elapsed();
    let stats = store.stats();
    Ok(Level {
        elapsed,
        appends: stats.appends,
        fsyncs: stats.fsyncs,
        fsync_seconds: stats.fsync_seconds_sum,
        latency_us,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn quick_run_reports_every_level() {
        let rows = super::run(true).unwrap();
        assert_eq!(rows.len(), 3 * super::CONCURRENCY.len());
        assert!(rows.iter().all(|r| r.suite == "wal" && r.value.is_finite()));
    }
}
