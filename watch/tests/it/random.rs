//! Randomized runs: writes, watches from the past, present and future,
//! cancels, compactions and progress requests, over streams read fast,
//! slowly or not at all until the end (so their queues fill and their
//! watchers get parked). Every checker must pass on every watch.

use std::time::Duration;

use bytes::Bytes;
use keelson_watch::{WatchConfig, WatchCreateRequest};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::checkers::check_all;
use crate::fixture::{Harness, Op, Recorder};

#[derive(Debug, Clone, Copy)]
enum Reader {
    /// Drains everything after every step.
    Fast,
    /// Reads one response every few steps.
    Slow(u32),
    /// Reads nothing until the end.
    Stalled,
}

const KEYS: usize = 12;

fn key(i: usize) -> String {
    format!("k{i:02}")
}

fn random_watch(rng: &mut StdRng, rev: i64, compacted: i64) -> WatchCreateRequest {
    let a = rng.random_range(0..KEYS);
    let (k, end) = match rng.random_range(0..4) {
        0 | 1 => (key(a), String::new()),
        2 => (key(a), key(rng.random_range(a + 1..=KEYS))),
        _ => {
            if rng.random_bool(0.5) {
                (key(a), "\0".to_string())
            } else {
                (String::new(), "\0".to_string())
            }
        }
    };
    let start_revision = match rng.random_range(0..5) {
        0 | 1 => 0,
        2 => rng.random_range(compacted.max(1)..=rev + 1),
        3 => rng.random_range(1..=rev + 3),
        _ => (rev - rng.random_range(0..4)).max(1),
    };
    let mut filters = Vec::new();
    if rng.random_bool(0.15) {
        filters.push(rng.random_range(0..2));
    }
    WatchCreateRequest {
        key: Bytes::from(k),
        range_end: Bytes::from(end),
        start_revision,
        progress_notify: rng.random_bool(0.3),
        filters,
        prev_kv: rng.random_bool(0.5),
        watch_id: 0,
        fragment: rng.random_bool(0.3),
    }
}

fn random_txn(rng: &mut StdRng) -> Vec<Op> {
    let n = rng.random_range(1..=4);
    let mut keys: Vec<usize> = (0..KEYS).collect();
    let mut ops = Vec::new();
    for _ in 0..n {
        let k = Bytes::from(key(keys.swap_remove(rng.random_range(0..keys.len()))));
        if rng.random_bool(0.25) {
            ops.push(Op::Delete(k));
        } else {
            let len = if rng.random_bool(0.1) { 300 } else { rng.random_range(1..20) };
            ops.push(Op::Put(k, Bytes::from(vec![b'a' + rng.random_range(0..26u8); len])));
        }
    }
    ops
}

/// What a run exercised, so the test can show it did not pass vacuously.
#[derive(Debug, Default)]
struct Coverage {
    runs_with_parking: usize,
    watches: usize,
    events: usize,
    compaction_cancels: usize,
    fragments: usize,
    progress: usize,
    from_the_past: usize,
}

/// One seeded run.
fn run(seed: u64, cov: &mut Coverage) {
    let mut rng = StdRng::seed_from_u64(seed);
    let config = WatchConfig {
        stream_capacity: rng.random_range(2..12),
        history_revisions: rng.random_range(1..48),
        catchup_revisions: rng.random_range(1..16),
        max_watchers_per_sync: rng.random_range(1..8),
        max_request_bytes: 600,
        progress_notify_interval: Duration::from_millis(15),
        resync_interval: Duration::from_millis(2),
        ..WatchConfig::default()
    };
    let h = Harness::new(config);
    let readers = [Reader::Fast, Reader::Slow(2), Reader::Slow(5), Reader::Stalled, Reader::Fast];
    let mut streams: Vec<(Recorder, Reader)> = readers.iter().map(|&r| (h.stream(), r)).collect();
    let mut max_parked = 0;
    for step in 0..300u32 {
        let rev = h.store.rev();
        match rng.random_range(0..100) {
            0..50 => {
                h.txn(&random_txn(&mut rng));
            }
            50..64 => {
                let s = rng.random_range(0..streams.len());
                let req = random_watch(&mut rng, rev, h.store.compacted());
                streams[s].0.watch(req);
            }
            64..70 => {
                let s = rng.random_range(0..streams.len());
                let open: Vec<i64> =
                    streams[s].0.watches.iter().filter(|w| !w.closed).map(|w| w.id).collect();
                if !open.is_empty() {
                    let id = open[rng.random_range(0..open.len())];
                    streams[s].0.cancel(id);
                }
            }
            70..73 => {
                // Mostly behind the head, so long-lived watches survive.
                let at = rng.random_range(h.store.compacted()..=(rev - 15).max(h.store.compacted()));
                h.compact(at);
            }
            73..77 => {
                let s = rng.random_range(0..streams.len());
                streams[s].0.stream.request_progress();
            }
            77..80 => std::thread::sleep(Duration::from_millis(1)),
            _ => {}
        }
        for (rec, reader) in &mut streams {
            match *reader {
                Reader::Fast => {
                    rec.drain();
                }
                Reader::Slow(every) if step % every == 0 => {
                    rec.drain_at_most(1);
                }
                _ => {}
            }
        }
        if step % 25 == 0 {
            max_parked = max_parked.max(h.hub.stats().parked);
        }
    }
    // Pass every future start revision asked for, then read everything.
    for i in 0..4 {
        h.put(&key(i), "end");
    }
    let last = h.store.rev();
    h.settle();
    max_parked = max_parked.max(h.hub.stats().parked);
    for (rec, _) in &mut streams {
        rec.sync_to(last);
    }
    let log = h.store.log();
    let compacted = h.store.compacted();
    for (i, (rec, _)) in streams.iter().enumerate() {
        if let Err(violation) = check_all(&rec.watches, &log, compacted) {
            panic!("seed {seed} stream {i}: {violation}");
        }
    }
    if max_parked > 0 {
        cov.runs_with_parking += 1;
    }
    for w in streams.iter().flat_map(|(r, _)| r.watches.iter()) {
        cov.watches += 1;
        cov.events += w.events().len();
        cov.compaction_cancels += usize::from(w.compacted_at().is_some());
        cov.fragments += w.responses.iter().filter(|r| r.fragment).count();
        cov.progress += w.responses.iter().filter(|r| keelson_watch::is_progress_notify(r)).count();
        cov.from_the_past += usize::from(w.req.start_revision != 0 && !w.events().is_empty());
    }
}

#[test]
fn randomized_runs_keep_every_guarantee() {
    let seeds: u64 = std::env::var("KEELSON_WATCH_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(24);
    let mut cov = Coverage::default();
    for seed in 0..seeds {
        run(seed, &mut cov);
    }
    println!("{cov:?}");
    // The runs must have exercised what they claim to.
    assert!(cov.runs_with_parking > 0, "{cov:?}");
    assert!(
        cov.compaction_cancels > 0 && cov.fragments > 0 && cov.progress > 0 && cov.from_the_past > 0,
        "{cov:?}"
    );
}
