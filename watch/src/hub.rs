//! The watch hub: the entry point for the apply path (`notify`,
//! `compacted`) and for client streams (`new_stream`).
//!
//! Two threads of its own do all the work:
//! - **hub** (`keelson-watch-hub`): takes each committed revision off an
//!   unbounded queue, looks up `prev_kv` where some watcher may want it
//!   (outside the lock), then under the lock fans the revision out to the
//!   synced watchers of each key, parks any whose stream is full, and appends
//!   the revision to the history ring. This is etcd's `notify`.
//! - **sync** (`keelson-watch-sync`, in `sync.rs`): catches unsynced
//!   watchers up, resumes parked ones, answers pending progress requests
//!   and sends periodic progress. This is etcd's `syncWatchersLoop` and
//!   `syncVictimsLoop`.
//!
//! `notify` only enqueues: it never blocks on the hub lock and never does I/O.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, atomic::AtomicUsize};
use std::thread::JoinHandle;

use keelson_proto::mvccpb::Event;
use parking_lot::Mutex;
use tracing::{debug, warn};

use crate::config::{ConfigError, WatchConfig};
use crate::history::PrevSlot;
use crate::outbox::Delivery;
use crate::outbox::{Outbox, WatchReceiver};
use crate::signal::Signal;
use crate::source::EventSource;
use crate::state::{HubState, delivery, resolve_prev, watcher_event};
use crate::stream::WatchStream;
use crate::sync;
use crate::watcher::{WatcherState, event_key, flags, is_create};

/// What the hub is shared with its threads and streams.
pub(crate) struct Shared {
    pub state: Mutex<HubState>,
    pub source: Arc<dyn EventSource>,
    pub config: WatchConfig,
    pub sync_signal: Arc<Signal>,
    pub prev_kv_watchers: Arc<AtomicUsize>,
    /// Mirror of `HubState::rev` readable without the lock.
    pub revision: AtomicI64,
    pub stop: AtomicBool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("revision", &self.revision).finish_non_exhaustive()
    }
}

enum Command {
    Notify { rev: i64, events: Vec<Event> },
    NotifyMany(Vec<(i64, Vec<Event>)>),
    Compacted(i64),
    Skip(i64),
}

/// Why the hub could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("spawn watch hub thread")]
    SpawnThread(#[source] std::io::Error),
}

/// Counts of watchers by group, for tests, metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubStats {
    pub streams: usize,
    pub watchers: usize,
    pub synced: usize,
    pub unsynced: usize,
    pub parked: usize,
}

struct HubHandle {
    tx: Option<Sender<Command>>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for HubHandle {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.tx.take();
        self.shared.sync_signal.wake();
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                warn!("a watch hub thread panicked");
            }
        }
        let st = self.shared.state.lock();
        for stream in st.streams.iter().flatten() {
            stream.outbox.close();
        }
    }
}

/// The watch hub. Cheap to clone; the threads stop when the last clone is
/// dropped, and every stream's receiver then ends.
#[derive(Clone)]
pub struct WatchHub {
    handle: Arc<HubHandle>,
}

impl std::fmt::Debug for WatchHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchHub").field("revision", &self.revision()).finish_non_exhaustive()
    }
}

impl WatchHub {
    /// Starts a hub over a store whose current revision is `current_rev` and
    /// compacted revision `compact_rev`.
    pub fn start(
        source: Arc<dyn EventSource>,
        config: WatchConfig,
        current_rev: i64,
        compact_rev: i64,
    ) -> Result<Self, StartError> {
        config.validate()?;
        let state = HubState::new(current_rev, compact_rev, &config);
        let shared = Arc::new(Shared {
            prev_kv_watchers: state.prev_kv_watchers.clone(),
            state: Mutex::new(state),
            source,
            config,
            sync_signal: Arc::new(Signal::default()),
            revision: AtomicI64::new(current_rev),
            stop: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::channel();
        let mut handle = HubHandle { tx: Some(tx), shared: shared.clone(), threads: Vec::new() };
        let hub_shared = shared.clone();
        handle.threads.push(
            std::thread::Builder::new()
                .name("keelson-watch-hub".into())
                .spawn(move || hub_loop(&hub_shared, &rx))
                .map_err(StartError::SpawnThread)?,
        );
        let sync_shared = shared;
        handle.threads.push(
            std::thread::Builder::new()
                .name("keelson-watch-sync".into())
                .spawn(move || sync::sync_loop(&sync_shared))
                .map_err(StartError::SpawnThread)?,
        );
        Ok(WatchHub { handle: Arc::new(handle) })
    }

    /// Hands the hub one committed main revision: all its events in sub
    /// order, `prev_kv` unset. Called by the apply path once per revision, in
    /// revision order. Never blocks and does no I/O.
    pub fn notify(&self, revision: i64, events: Vec<Event>) {
        if let Some(tx) = &self.handle.tx {
            // Fails only while the hub shuts down; nobody is left to tell.
            let _ = tx.send(Command::Notify { rev: revision, events });
        }
    }

    /// [`WatchHub::notify`] for several consecutive revisions, in order, with
    /// one message to the hub thread (one wake-up instead of one per
    /// revision: the raft apply loop commits many revisions per batch).
    pub fn notify_many(&self, revisions: Vec<(i64, Vec<Event>)>) {
        if revisions.is_empty() {
            return;
        }
        if let Some(tx) = &self.handle.tx {
            let _ = tx.send(Command::NotifyMany(revisions));
        }
    }

    /// Tells the hub the store compacted at `revision`: watchers that still
    /// need older revisions are cancelled with `compact_revision` set.
    /// Ordered with `notify`; never blocks.
    pub fn compacted(&self, revision: i64) {
        if let Some(tx) = &self.handle.tx {
            let _ = tx.send(Command::Compacted(revision));
        }
    }

    /// Tells the hub its next revisions up to `revision` are gone: the store
    /// was replaced by a snapshot compacted at `revision` (call
    /// [`WatchHub::compacted`] with it first). Watchers at the head still
    /// needing them are cancelled with `compact_revision` set, as etcd
    /// cancels a watcher whose next revision was compacted, instead of
    /// silently missing them; the next `notify` is `revision + 1`.
    pub fn skip_to(&self, revision: i64) {
        if let Some(tx) = &self.handle.tx {
            let _ = tx.send(Command::Skip(revision));
        }
    }

    /// Opens a client stream: the handle for requests and the receiver of
    /// its responses.
    pub fn new_stream(&self) -> (WatchStream, WatchReceiver) {
        let shared = &self.handle.shared;
        let outbox = Arc::new(Outbox::new(shared.config.stream_capacity, shared.sync_signal.clone()));
        let sid = shared.state.lock().add_stream(outbox.clone());
        (WatchStream::new(shared.clone(), sid, outbox.clone()), WatchReceiver::new(outbox))
    }

    /// The last revision the hub has fanned out.
    pub fn revision(&self) -> i64 {
        self.handle.shared.revision.load(Ordering::Acquire)
    }

    /// Counts of streams and watchers by group.
    pub fn stats(&self) -> HubStats {
        let st = self.handle.shared.state.lock();
        let mut stats = HubStats {
            streams: st.streams.iter().flatten().count(),
            watchers: st.watchers.len(),
            ..HubStats::default()
        };
        for idx in st.watchers.indices() {
            match st.watchers.get(idx).map(|w| w.state) {
                Some(WatcherState::Synced) => stats.synced += 1,
                Some(WatcherState::Unsynced | WatcherState::Syncing) => stats.unsynced += 1,
                Some(WatcherState::Parked) => stats.parked += 1,
                None => {}
            }
        }
        stats
    }
}

fn hub_loop(shared: &Shared, rx: &Receiver<Command>) {
    let _span = tracing::debug_span!("watch_hub").entered();
    let mut matches: Vec<(u32, u32, u32)> = Vec::new();
    while let Ok(cmd) = rx.recv() {
        match cmd {
            Command::Notify { rev, events } => fan_out(shared, rev, events, &mut matches),
            Command::NotifyMany(revisions) => {
                for (rev, events) in revisions {
                    fan_out(shared, rev, events, &mut matches);
                }
            }
            Command::Skip(to) => skip(shared, to),
            Command::Compacted(rev) => {
                let mut st = shared.state.lock();
                st.compact_rev = st.compact_rev.max(rev);
                st.history.compact(rev);
                let work = !st.unsynced.is_empty() || !st.parked_streams.is_empty();
                drop(st);
                if work {
                    shared.sync_signal.wake();
                }
            }
        }
    }
    debug!("watch hub thread stops");
}

/// Moves the hub's head to `to` without the revisions in between: synced
/// watchers that needed them go back to the unsynced group from the first
/// one they lack, and the syncer, finding those compacted in the store,
/// cancels them with `compact_revision`.
fn skip(shared: &Shared, to: i64) {
    let mut st = shared.state.lock();
    if to <= st.rev {
        return;
    }
    let first_missing = st.rev + 1;
    let behind: Vec<u32> = st
        .watchers
        .indices()
        .filter(|&i| st.watchers.get(i).is_some_and(|w| w.state == WatcherState::Synced && w.min_rev <= to))
        .collect();
    for idx in &behind {
        if let Some(w) = st.watchers.get_mut(*idx) {
            w.min_rev = w.min_rev.max(first_missing);
        }
        st.set_state(*idx, WatcherState::Unsynced);
    }
    st.rev = to;
    shared.revision.store(to, Ordering::Release);
    drop(st);
    warn!(
        from = first_missing,
        to,
        watchers = behind.len(),
        "watch hub skipped revisions a snapshot compacted away"
    );
    shared.sync_signal.wake();
}

/// Delivers one revision to the synced watchers that watch its keys.
fn fan_out(shared: &Shared, rev: i64, events: Vec<Event>, matches: &mut Vec<(u32, u32, u32)>) {
    let source = &*shared.source;
    let mut prev: Vec<PrevSlot> = vec![None; events.len()];
    if shared.prev_kv_watchers.load(Ordering::Relaxed) > 0 {
        // Looked up before taking the lock: the lock is never held for I/O
        // here unless a prev_kv watcher appeared in between.
        for (ev, slot) in events.iter().zip(prev.iter_mut()) {
            if !is_create(ev) {
                resolve_prev(source, ev, slot);
            }
        }
    }

    let mut st = shared.state.lock();
    if rev <= st.rev {
        warn!(rev, hub_rev = st.rev, "ignore a revision the watch hub already has");
        return;
    }
    // Every (stream, watcher, event) to deliver, grouped by stream, then by
    // watcher with its events in sub-revision order.
    matches.clear();
    let watchers = &st.watchers;
    for (i, ev) in events.iter().enumerate() {
        watchers.for_each_watching(event_key(ev), |idx| {
            if let Some(w) = watchers.get(idx)
                && w.state == WatcherState::Synced
                && rev >= w.min_rev
            {
                matches.push((w.stream, idx, i as u32));
            }
        });
    }
    if !matches.is_sorted() {
        matches.sort_unstable();
    }
    st.rev = rev;
    // Queue stream by stream as soon as each stream's responses are built:
    // one lock and one reader wake-up per stream, and readers of the first
    // streams already run while later ones are built.
    let mut rejected = Vec::new();
    let mut run: Vec<(u32, Delivery)> = Vec::new();
    let mut at = 0;
    while at < matches.len() {
        let sid = matches[at].0;
        while at < matches.len() && matches[at].0 == sid {
            let idx = matches[at].1;
            let first = at;
            while at < matches.len() && matches[at].0 == sid && matches[at].1 == idx {
                at += 1;
            }
            let Some(w) = st.watchers.get_mut(idx) else { continue };
            w.min_rev = rev + 1;
            let mine: Vec<Event> = matches[first..at]
                .iter()
                .filter_map(|&(_, _, i)| watcher_event(w, &events[i as usize], &mut prev[i as usize], source))
                .collect();
            if !mine.is_empty() {
                w.flags |= flags::SENT_SINCE_TICK;
                run.push((idx, delivery(&shared.config, w, rev, mine)));
            }
        }
        if let Some(stream) = st.stream(sid) {
            stream.outbox.push_batch(run.drain(..), &mut rejected);
        }
        run.clear();
    }
    for &idx in &rejected {
        if let Some(w) = st.watchers.get_mut(idx) {
            w.min_rev = rev;
        }
        st.park(idx);
    }
    let parked = rejected.len();
    st.history.push(rev, events, prev);
    shared.revision.store(rev, Ordering::Release);
    let wake = parked > 0 || !st.progress_pending.is_empty();
    drop(st);
    if wake {
        shared.sync_signal.wake();
    }
}
