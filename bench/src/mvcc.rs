//! MVCC store benchmarks: puts applied in batches (one RocksDB WriteBatch
//! per batch, as the raft apply loop does), point reads at the latest
//! revision, and a range over 10,000 keys.

use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use keelson_mvcc::{Config, Store};
use keelson_proto::etcdserverpb::{PutRequest, RangeRequest};

use crate::report::{Row, median};

const VALUE_SIZE: usize = 256;
const REPEATS: usize = 3;

fn key(i: usize) -> Bytes {
    Bytes::from(format!("/bench/key/{i:08}"))
}

fn open(dir: &std::path::Path) -> anyhow::Result<Store> {
    Store::open(dir, Config { quota_bytes: u64::MAX, ..Config::default() }).context("open mvcc store")
}

/// Puts `total` keys in batches of `batch`; returns puts per second.
fn puts(store: &Store, total: usize, batch: usize, offset: usize) -> anyhow::Result<f64> {
    let value = Bytes::from(vec![b'v'; VALUE_SIZE]);
    let start = Instant::now();
    let mut i = 0;
    while i < total {
        let mut w = store.write()?;
        for _ in 0..batch.min(total - i) {
            w.put(&PutRequest { key: key(offset + i), value: value.clone(), ..Default::default() })?;
            i += 1;
        }
        w.commit()?;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

pub fn run(quick: bool, dir: &std::path::Path) -> anyhow::Result<Vec<Row>> {
    let scale = if quick { 20 } else { 1 };
    let mut rows = Vec::new();
    for (batch, total) in [(1usize, 20_000usize), (100, 100_000), (1000, 200_000)] {
        let total = total / scale;
        let mut samples = Vec::new();
        for r in 0..REPEATS {
            let d = tempfile::tempdir_in(dir)?;
            let store = open(d.path())?;
            samples.push(puts(&store, total, batch, r * total)?);
        }
        rows.push(
            Row::new("mvcc", format!("put 256B batch={batch}"), median(&mut samples), "ops/s")
                .note(format!("{total} puts, median of {REPEATS}")),
        );
    }

    let d = tempfile::tempdir_in(dir)?;
    let store = open(d.path())?;
    let n = 100_000 / scale;
    puts(&store, n, 1000, 0)?;
    let reads = 200_000 / scale;
    let mut samples = Vec::new();
    for _ in 0..REPEATS {
        let start = Instant::now();
        for i in 0..reads {
            let k = key((i * 7919) % n);
            let r = store.range(&RangeRequest { key: k, ..Default::default() })?;
            anyhow::ensure!(r.kvs.len() == 1, "missing key in point read");
        }
        samples.push(reads as f64 / start.elapsed().as_secs_f64());
    }
    rows.push(
        Row::new("mvcc", "point read (latest rev)", median(&mut samples), "ops/s")
            .note(format!("{reads} reads over {n} keys, median of {REPEATS}")),
    );

    let span = 10_000.min(n);
    let mut samples = Vec::new();
    for _ in 0..REPEATS.max(5) {
        let start = Instant::now();
        let r = store.range(&RangeRequest { key: key(0), range_end: key(span), ..Default::default() })?;
        anyhow::ensure!(r.kvs.len() == span, "range returned {} keys", r.kvs.len());
        samples.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    rows.push(
        Row::new("mvcc", format!("range {span} keys"), median(&mut samples), "ms")
            .note("256B values, median of 5"),
    );
    Ok(rows)
}
