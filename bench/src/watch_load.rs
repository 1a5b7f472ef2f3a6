//! The watch workloads: `--streams` watch streams (spread over the
//! connections) with `--watch-per-stream` watchers each, all on one prefix,
//! while writers put `--put-total` stamped values under it. Every event a
//! watcher receives is one operation; its latency runs from just before the
//! put was sent to the event's arrival.
//!
//! `watch` puts as fast as the clients can (fan-out throughput);
//! `watch-latency` puts at `--put-rate` per second (delivery latency under a
//! steady load).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use etcd_client::{PutOptions, WatchOptions, WatchStream};
use futures::FutureExt;
use indicatif::ProgressBar;
use tokio::time::Instant;

use crate::load::{self, Conns, LoadConfig, OpFn, Outcome};

/// The watch workloads' own flags.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WatchConfig {
    /// Watch streams (`--streams`).
    pub streams: usize,
    /// Watchers per stream (`--watch-per-stream`).
    pub watch_per_stream: usize,
    /// Puts under the watched prefix in `watch` (`--put-total`).
    pub put_total: u64,
    /// Puts per second in `watch-latency` (`--put-rate`).
    pub put_rate: u64,
    /// Puts in `watch-latency` (`--latency-put-total`).
    pub latency_put_total: u64,
}

/// How long watchers may lag behind the last put before the missing
/// events count as errors.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs one watch phase; `paced` puts at `put_rate`, otherwise flat out.
pub async fn run(
    conns: &Conns,
    cfg: &LoadConfig,
    w: &WatchConfig,
    paced: bool,
    prefix: &str,
    progress: &ProgressBar,
) -> anyhow::Result<Outcome> {
    let per_stream = w.watch_per_stream.max(1);
    let puts = if paced { w.latency_put_total } else { w.put_total };
    let expected_per_stream = puts * per_stream as u64;
    progress.set_length(expected_per_stream * w.streams as u64);
    let mut streams = Vec::with_capacity(w.streams);
    for s in 0..w.streams {
        streams.push(open_stream(conns, s, prefix, per_stream).await?);
    }
    let start = Instant::now();
    let mut readers = tokio::task::JoinSet::new();
    for mut ws in streams {
        let progress = progress.clone();
        readers.spawn(async move {
            let mut out = Outcome::empty();
            while out.ok < expected_per_stream {
                match ws.message().await {
                    Ok(Some(resp)) => {
                        if resp.canceled() {
                            out.record_error(format!("watch canceled: {}", resp.cancel_reason()));
                            break;
                        }
                        for ev in resp.events() {
                            match ev.kv().and_then(|kv| load::stamp_age(kv.value())) {
                                Some(age) => out.record(age),
                                None => out.record_error("event without a stamped value"),
                            }
                        }
                        progress.inc(resp.events().len() as u64);
                        out.elapsed = start.elapsed();
                    }
                    Ok(None) => {
                        out.record_error("watch stream ended");
                        break;
                    }
                    Err(e) => {
                        out.record_error(e);
                        break;
                    }
                }
            }
            (out, expected_per_stream)
        });
    }
    let rate = if paced { w.put_rate } else { 0 };
    let puts =
        load::drive(conns, cfg.clients, puts, rate, &ProgressBar::hidden(), put_op(cfg, prefix)).await?;
    let mut all = Outcome::empty();
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, readers.join_next()).await {
            Ok(Some(r)) => {
                let (mut out, expected) = r.context("watch reader task")?;
                let missing = expected.saturating_sub(out.ok);
                if missing > 0 {
                    out.errors += missing;
                    out.first_error.get_or_insert_with(|| format!("{missing} events missing"));
                }
                all.merge(out);
            }
            Ok(None) => break,
            Err(_) => {
                let left = readers.len() as u64;
                readers.abort_all();
                all.errors += left * expected_per_stream;
                all.first_error.get_or_insert_with(|| {
                    format!("{left} watch streams still short of events {DRAIN_TIMEOUT:?} after the puts")
                });
                break;
            }
        }
    }
    all.errors += puts.errors;
    if all.first_error.is_none() {
        all.first_error = puts.first_error;
    }
    Ok(all)
}

/// Opens watch stream `s` with `n` watchers on `prefix` and waits until the
/// server has created them all.
async fn open_stream(conns: &Conns, s: usize, prefix: &str, n: usize) -> anyhow::Result<WatchStream> {
    let opts = || Some(WatchOptions::new().with_prefix());
    let mut ws =
        conns.for_client(s).watch_client().watch(prefix, opts()).await.context("open watch stream")?;
    for _ in 1..n {
        ws.watch(prefix, opts()).await.context("add watcher")?;
    }
    let mut created = 0;
    while created < n {
        let resp = tokio::time::timeout(Duration::from_secs(10), ws.message())
            .await
            .context("watch creation timed out")?
            .context("watch creation")?
            .context("watch stream ended during creation")?;
        if resp.canceled() {
            bail!("watch refused: {}", resp.cancel_reason());
        }
        if resp.created() {
            created += 1;
        }
    }
    Ok(ws)
}

/// Puts a freshly stamped value to a key under `prefix`.
fn put_op(cfg: &LoadConfig, prefix: &str) -> OpFn {
    let cfg = cfg.clone();
    let prefix = prefix.as_bytes().to_vec();
    Arc::new(move |mut client, i| {
        let mut key = prefix.clone();
        key.extend(load::key(load::key_index(&cfg, i), cfg.key_size));
        let value = load::stamped_value(cfg.val_size);
        async move { client.put(key, value, None::<PutOptions>).await.map(drop) }.boxed()
    })
}
