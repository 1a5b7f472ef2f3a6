//! Everything the hub lock protects, and the operations every path shares:
//! delivering to a watcher, parking it, catching it up from the history ring,
//! cancelling it.
//!
//! **Invariant:** a watcher in state `Synced` has had every event with
//! revision `< min_rev` queued on its stream and `min_rev > rev`; the live
//! path delivers revision `rev + 1` to it next. Every other state is in
//! `unsynced` (`Unsynced`, `Syncing`) or in its stream's `parked` list.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use keelson_proto::mvccpb::{Event, KeyValue};
use tracing::debug;

use crate::config::WatchConfig;
use crate::fragment;
use crate::history::{History, PrevSlot};
use crate::outbox::{Delivery, Outbox};
use crate::response;
use crate::source::EventSource;
use crate::watcher::{Watcher, WatcherState, event_key, event_rev, flags, is_create};
use crate::watcher_group::WatcherGroup;

/// One client stream as the hub sees it.
#[derive(Debug)]
pub(crate) struct StreamState {
    pub outbox: Arc<Outbox>,
    /// Watch id → watcher index.
    pub watchers: HashMap<i64, u32>,
    /// Next server-chosen watch id (etcd starts at 0 and skips used ids).
    pub next_id: i64,
    /// Watchers parked because the outbox was full.
    pub parked: Vec<u32>,
}

/// The state behind the hub lock.
#[derive(Debug)]
pub(crate) struct HubState {
    pub watchers: WatcherGroup,
    pub streams: Vec<Option<StreamState>>,
    free_streams: Vec<u32>,
    /// Watchers in state `Unsynced` or `Syncing`.
    pub unsynced: BTreeSet<u32>,
    /// Streams with parked watchers.
    pub parked_streams: BTreeSet<u32>,
    /// Streams whose progress request waits for all their watchers to sync.
    pub progress_pending: BTreeSet<u32>,
    pub history: History,
    /// The last revision the hub has fanned out.
    pub rev: i64,
    /// The store's compacted revision as last told.
    pub compact_rev: i64,
    /// Watchers that asked for `prev_kv`; read without the lock by the live
    /// path to decide whether to prefetch.
    pub prev_kv_watchers: Arc<AtomicUsize>,
}

/// Looks up the `prev_kv` of `ev` once and remembers the answer in `slot`.
pub(crate) fn resolve_prev(source: &dyn EventSource, ev: &Event, slot: &mut PrevSlot) -> Option<KeyValue> {
    if let Some(prev) = slot {
        return prev.clone();
    }
    let prev = match source.kv_at(event_key(ev), event_rev(ev) - 1) {
        Ok(prev) => prev,
        Err(err) => {
            // etcd leaves prev_kv unset when the range fails (compacted).
            debug!(error = %err, rev = event_rev(ev), "look up prev_kv");
            None
        }
    };
    *slot = Some(prev.clone());
    prev
}

/// The watcher's copy of `ev`: `None` if its filters drop it; with
/// `prev_kv` when it asked and the event is not a create.
pub(crate) fn watcher_event(
    w: &Watcher,
    ev: &Event,
    prev: &mut PrevSlot,
    source: &dyn EventSource,
) -> Option<Event> {
    if !w.wants(ev) {
        return None;
    }
    let prev_kv = if w.has(flags::PREV_KV) && !is_create(ev) { resolve_prev(source, ev, prev) } else { None };
    Some(Event { r#type: ev.r#type, kv: ev.kv.clone(), prev_kv })
}

/// The response (or fragments) carrying `events` to watcher `w`.
pub(crate) fn delivery(config: &WatchConfig, w: &Watcher, rev: i64, events: Vec<Event>) -> Delivery {
    let resp = response::events(rev, w.id, events);
    if w.has(flags::FRAGMENT) {
        Delivery::Fragments(fragment::split(resp, config.max_request_bytes))
    } else {
        Delivery::One(resp)
    }
}

impl HubState {
    pub fn new(current_rev: i64, compact_rev: i64, config: &WatchConfig) -> Self {
        HubState {
            watchers: WatcherGroup::default(),
            streams: Vec::new(),
            free_streams: Vec::new(),
            unsynced: BTreeSet::new(),
            parked_streams: BTreeSet::new(),
            progress_pending: BTreeSet::new(),
            history: History::new(current_rev, config.history_revisions, config.history_bytes),
            rev: current_rev,
            compact_rev,
            prev_kv_watchers: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn add_stream(&mut self, outbox: Arc<Outbox>) -> u32 {
        let stream = StreamState { outbox, watchers: HashMap::new(), next_id: 0, parked: Vec::new() };
        match self.free_streams.pop() {
            Some(sid) => {
                self.streams[sid as usize] = Some(stream);
                sid
            }
            None => {
                self.streams.push(Some(stream));
                u32::try_from(self.streams.len() - 1).expect("fewer than 2^32 streams")
            }
        }
    }

    /// Removes a stream and every watcher on it.
    pub fn remove_stream(&mut self, sid: u32) -> Option<StreamState> {
        let ids: Vec<i64> = self.stream(sid)?.watchers.keys().copied().collect();
        for id in ids {
            if let Some(idx) = self.stream(sid).and_then(|s| s.watchers.get(&id).copied()) {
                self.remove_watcher(idx);
            }
        }
        self.parked_streams.remove(&sid);
        self.progress_pending.remove(&sid);
        let stream = self.streams.get_mut(sid as usize)?.take()?;
        self.free_streams.push(sid);
        Some(stream)
    }

    pub fn stream(&self, sid: u32) -> Option<&StreamState> {
        self.streams.get(sid as usize)?.as_ref()
    }

    pub fn stream_mut(&mut self, sid: u32) -> Option<&mut StreamState> {
        self.streams.get_mut(sid as usize)?.as_mut()
    }

    /// Removes a watcher from every structure that knows it.
    pub fn remove_watcher(&mut self, idx: u32) -> Option<Watcher> {
        let w = self.watchers.remove(idx)?;
        self.unsynced.remove(&idx);
        if w.has(flags::PREV_KV) {
            self.prev_kv_watchers.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(stream) = self.streams.get_mut(w.stream as usize).and_then(Option::as_mut) {
            if stream.watchers.get(&w.id) == Some(&idx) {
                stream.watchers.remove(&w.id);
            }
            if w.state == WatcherState::Parked {
                stream.parked.retain(|&i| i != idx);
                if stream.parked.is_empty() {
                    self.parked_streams.remove(&w.stream);
                }
            }
        }
        Some(w)
    }

    /// Queues `events` (complete revisions, already filtered) for watcher
    /// `idx`. `false` if its stream is full: nothing was queued.
    pub fn deliver(&mut self, config: &WatchConfig, idx: u32, events: Vec<Event>) -> bool {
        let rev = self.rev;
        let Some(w) = self.watchers.get_mut(idx) else { return true };
        let Some(stream) = self.streams.get(w.stream as usize).and_then(Option::as_ref) else {
            return true;
        };
        let queued = match delivery(config, w, rev, events) {
            Delivery::One(resp) => stream.outbox.try_push([resp]),
            Delivery::Fragments(resps) => stream.outbox.try_push(resps),
        };
        if queued {
            w.flags |= flags::SENT_SINCE_TICK;
        }
        queued
    }

    /// Parks a watcher whose stream is full. Its `min_rev` stays at the first
    /// revision it did not get; it resumes from there once the reader drains.
    pub fn park(&mut self, idx: u32) {
        let Some(w) = self.watchers.get_mut(idx) else { return };
        w.state = WatcherState::Parked;
        let (sid, id, min_rev) = (w.stream, w.id, w.min_rev);
        self.unsynced.remove(&idx);
        if let Some(stream) = self.streams.get_mut(sid as usize).and_then(Option::as_mut) {
            stream.parked.push(idx);
            self.parked_streams.insert(sid);
        }
        debug!(stream = sid, watch_id = id, min_rev, "park slow watcher");
    }

    pub fn set_state(&mut self, idx: u32, state: WatcherState) {
        if let Some(w) = self.watchers.get_mut(idx) {
            w.state = state;
            match state {
                WatcherState::Unsynced | WatcherState::Syncing => {
                    self.unsynced.insert(idx);
                }
                WatcherState::Synced | WatcherState::Parked => {
                    self.unsynced.remove(&idx);
                }
            }
        }
    }

    /// Moves the parked watchers of streams that have room again back to
    /// the unsynced group. Returns how many moved.
    pub fn resume_parked(&mut self) -> usize {
        let sids: Vec<u32> = self.parked_streams.iter().copied().collect();
        let mut moved = 0;
        for sid in sids {
            let Some(stream) = self.stream_mut(sid) else {
                self.parked_streams.remove(&sid);
                continue;
            };
            if !stream.outbox.has_room() {
                continue;
            }
            let parked = std::mem::take(&mut stream.parked);
            self.parked_streams.remove(&sid);
            moved += parked.len();
            for idx in parked {
                self.set_state(idx, WatcherState::Unsynced);
            }
            debug!(stream = sid, "resume parked watchers");
        }
        moved
    }

    /// Cancels a watcher that needs revisions at or below `compact_rev`
    /// with etcd's compaction response, and forgets it.
    pub fn cancel_compacted(&mut self, idx: u32, compact_rev: i64) {
        let rev = self.rev;
        if let Some(w) = self.remove_watcher(idx)
            && let Some(stream) = self.stream(w.stream)
        {
            debug!(
                stream = w.stream,
                watch_id = w.id,
                min_rev = w.min_rev,
                compact_rev,
                "cancel compacted watcher"
            );
            stream.outbox.push_control(response::compacted(rev, w.id, compact_rev));
        }
    }

    /// Catches an unsynced watcher up from the history ring, which must
    /// cover its `min_rev`: queues at most `catchup_revisions` revisions in
    /// one response, then marks it synced if it reached the head, leaves it
    /// unsynced if not, or parks it if the stream is full.
    pub fn serve_from_history(&mut self, source: &dyn EventSource, config: &WatchConfig, idx: u32) {
        let Some(w) = self.watchers.get(idx) else { return };
        debug_assert!(self.history.covers(w.min_rev));
        let mut events = Vec::new();
        let mut revs = 0usize;
        let mut next = self.rev + 1;
        let mut i = self.history.index_of(w.min_rev);
        while let Some(entry) = self.history.get_mut(i) {
            let before = events.len();
            for (ev, prev) in entry.events.iter().zip(entry.prev.iter_mut()) {
                if w.matches(event_key(ev))
                    && let Some(ev) = watcher_event(w, ev, prev, source)
                {
                    events.push(ev);
                }
            }
            i += 1;
            if events.len() > before {
                revs += 1;
                if revs >= config.catchup_revisions {
                    next = entry.rev + 1;
                    break;
                }
            }
        }
        if !events.is_empty() && !self.deliver(config, idx, events) {
            self.park(idx);
            return;
        }
        if let Some(w) = self.watchers.get_mut(idx) {
            w.min_rev = next;
        }
        let state = if next > self.rev { WatcherState::Synced } else { WatcherState::Unsynced };
        self.set_state(idx, state);
    }
}
