//! Watch hub benchmarks.
//!
//! - **fan-out**: one put to N watchers of the same key (spread over streams
//!   of 100 watchers, each read by its own tokio task): time from
//!   `WatchHub::notify` to the moment the last watcher's reader has the event.
//!   Median of several repeats.
//! - **idle memory**: bytes allocated per idle watcher with N watchers on N
//!   distinct keys over 250 streams, counted by a counting global allocator
//!   (live bytes on the creating thread after minus before, divided by N;
//!   stream handles and receivers included).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use keelson_proto::mvccpb::{Event, KeyValue};
use keelson_watch::{EventSource, HistoryError, WatchConfig, WatchCreateRequest, WatchHub};

use crate::report::{Row, median};

/// A store with no history: every watcher here starts at the head.
struct NoHistory;

impl EventSource for NoHistory {
    fn events(&self, _: &[u8], _: &[u8], _: i64, _: i64) -> Result<Vec<Event>, HistoryError> {
        Ok(Vec::new())
    }

    fn kv_at(&self, _: &[u8], _: i64) -> Result<Option<KeyValue>, HistoryError> {
        Ok(None)
    }
}

/// Counts live heap bytes per thread, so a measurement sees only what the
/// measuring thread allocates, and other threads pay one thread-local add.
mod counting_alloc {
    use std::alloc::{GlobalAlloc, Layout};
    use std::cell::Cell;

    thread_local! {
        // Const-initialized and without a destructor: safe to touch from
        // inside the allocator.
        static LIVE: Cell<isize> = const { Cell::new(0) };
    }

    fn add(delta: isize) {
        let _ = LIVE.try_with(|live| live.set(live.get() + delta));
    }

    /// Live bytes allocated minus freed on this thread.
    pub fn live_bytes() -> isize {
        LIVE.with(Cell::get)
    }

    pub struct Counting;

    // The workspace denies unsafe code; a global allocator cannot be written
    // without it. Every method forwards to mimalloc unchanged and only
    // counts. (This is the global allocator of every binary that links the
    // bench crate, `keelson` included: mimalloc is its allocator.)
    #[allow(unsafe_code)]
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: same contract as the caller's.
            let p = unsafe { mimalloc::MiMalloc.alloc(layout) };
            if !p.is_null() {
                add(layout.size() as isize);
            }
            p
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            // SAFETY: same contract as the caller's.
            let p = unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) };
            if !p.is_null() {
                add(layout.size() as isize);
            }
            p
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: same contract as the caller's.
            unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) };
            add(-(layout.size() as isize));
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: same contract as the caller's.
            let p = unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) };
            if !p.is_null() {
                add(new_size as isize - layout.size() as isize);
            }
            p
        }
    }

    #[global_allocator]
    static GLOBAL: Counting = Counting;
}

fn put_event(rev: i64) -> Event {
    Event {
        r#type: 0,
        kv: Some(KeyValue {
            key: Bytes::from_static(b"/registry/configmaps/default/hot"),
            create_revision: 1,
            mod_revision: rev,
            version: rev,
            value: Bytes::from(vec![b'x'; 256]),
            lease: 0,
        }),
        prev_kv: None,
    }
}

/// One put fanned out to `watchers` watchers of one key.
fn fan_out(watchers: usize, repeats: usize) -> anyhow::Result<Row> {
    const PER_STREAM: usize = 100;
    let config = WatchConfig { stream_capacity: PER_STREAM + 28, ..WatchConfig::default() };
    let hub = WatchHub::start(Arc::new(NoHistory), config, 0, 0).context("start watch hub")?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let received = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    let finished_at = Arc::new(FinishTime::default());
    let mut streams = Vec::new();
    for s in 0..watchers.div_ceil(PER_STREAM) {
        let (stream, mut rx) = hub.new_stream();
        let n = PER_STREAM.min(watchers - s * PER_STREAM);
        for _ in 0..n {
            let req = WatchCreateRequest {
                key: put_event(0).kv.map(|kv| kv.key).unwrap_or_default(),
                ..Default::default()
            };
            stream.watch(&req).context("create watch")?;
        }
        let (received, done, finished_at) = (received.clone(), done.clone(), finished_at.clone());
        rt.spawn(async move {
            while let Some(resp) = rx.recv().await {
                if resp.events.is_empty() {
                    continue;
                }
                if received.fetch_add(1, Ordering::AcqRel) + 1 == watchers {
                    finished_at.set(Instant::now());
                    done.notify_one();
                }
            }
        });
        streams.push(stream);
    }
    let mut samples = Vec::with_capacity(repeats);
    for rev in 1..=repeats as i64 {
        received.store(0, Ordering::Release);
        let started = Instant::now();
        hub.notify(rev, vec![put_event(rev)]);
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), done.notified()).await.context("fan-out timed out")
        })?;
        let finished = finished_at.get().context("fan-out finished without a time")?;
        samples.push(finished.duration_since(started).as_secs_f64() * 1e3);
    }
    drop(streams);
    let (min, max) = samples.iter().fold((f64::MAX, 0f64), |(lo, hi), &s| (lo.min(s), hi.max(s)));
    let med = median(&mut samples);
    Ok(Row::new("watch", format!("fan-out 1 put to {watchers} watchers of one key"), med, "ms").note(format!(
        "notify to last reader; median of {repeats} (min {min:.3}, max {max:.3}); {PER_STREAM} watchers per stream"
    )))
}

/// Bytes per idle watcher with `watchers` watchers on distinct keys.
fn idle_memory(watchers: usize) -> anyhow::Result<Row> {
    const STREAMS: usize = 250;
    let hub =
        WatchHub::start(Arc::new(NoHistory), WatchConfig::default(), 0, 0).context("start watch hub")?;
    let before = counting_alloc::live_bytes();
    let mut streams: Vec<_> = (0..STREAMS).map(|_| hub.new_stream()).collect();
    for i in 0..watchers {
        let (stream, rx) = &mut streams[i % STREAMS];
        let key = format!("/registry/pods/ns-{:03}/pod-{i:07}", i % STREAMS);
        let req = WatchCreateRequest { key: Bytes::from(key), ..Default::default() };
        stream.watch(&req).context("create watch")?;
        // Read the `created` response as the gRPC layer would.
        rx.try_recv().context("read created response")?;
    }
    let after = counting_alloc::live_bytes();
    let stats = hub.stats();
    anyhow::ensure!(
        stats.watchers == watchers && stats.synced == watchers,
        "watchers not all idle: {stats:?}"
    );
    let per = (after - before) as f64 / watchers as f64;
    drop(streams);
    Ok(Row::new("watch", format!("idle memory at {watchers} watchers"), per, "B/watcher").note(format!(
        "target <= 300; distinct keys of ~30 B over {STREAMS} streams, stream handles included"
    )))
}

/// Runs the watch benchmarks; `quick` shrinks them for tests.
pub fn run(quick: bool) -> anyhow::Result<Vec<Row>> {
    let (fan_watchers, repeats, idle_watchers) =
        if quick { (1_000, 3, 10_000) } else { (10_000, 15, 100_000) };
    Ok(vec![fan_out(fan_watchers, repeats)?, idle_memory(idle_watchers)?])
}

/// When the last reader got the event, set by that reader's task.
#[derive(Default)]
struct FinishTime(std::sync::Mutex<Option<Instant>>);

impl FinishTime {
    fn set(&self, at: Instant) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(at);
    }

    fn get(&self) -> Option<Instant> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn quick_run_produces_rows() {
        let rows = super::run(true).unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|r| r.suite == "watch" && r.value.is_finite() && r.value > 0.0));
        print!("{}", crate::report::table(&rows));
    }
}
