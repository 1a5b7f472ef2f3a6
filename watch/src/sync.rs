//! The sync thread: catches unsynced watchers up to the head, resumes
//! parked ones, and runs progress notifications.
//!
//! One round (etcd's `syncWatchers`):
//! 1. Under the lock: resume parked watchers whose stream drained to half;
//!    pick up to `max_watchers_per_sync` unsynced watchers. Each one that
//!    needs a revision below the compacted revision is cancelled with
//!    `compact_revision`; each whose `min_rev` the history ring covers is
//!    served from the ring right there (no I/O); the rest are marked
//!    `Syncing` and noted down.
//! 2. Without the lock: read one window of revisions `[lo, hi]` from the
//!    [`EventSource`] (`lo` the lowest `min_rev` picked, `hi` at most the
//!    hub's revision when the round began, `catchup_revisions` wide, and below
//!    what the ring covers), and look up `prev_kv` where wanted.
//! 3. Under the lock: give each noted watcher (if not cancelled meanwhile)
//!    its events in `[min_rev, hi]` in one response, set `min_rev = hi + 1`;
//!    then, if the ring now covers it, serve the rest from the ring, which
//!    ends at the hub's current revision, and mark it synced.
//!
//! Catch-up joins the head without gap or duplicate because the live path
//! and step 3 both run under the lock: a watcher becomes `Synced` with
//! `min_rev == rev + 1` at a moment when the hub has fanned out exactly
//! `rev`, so the next revision the live path delivers is the first it lacks.

use std::time::{Duration, Instant};

use keelson_proto::mvccpb::Event;
use tracing::warn;

use crate::history::PrevSlot;
use crate::hub::Shared;
use crate::progress;
use crate::source::{EventSource, HistoryError};
use crate::state::{resolve_prev, watcher_event};
use crate::watcher::{WatcherState, event_key, event_rev, flags, is_create, key_in};

/// A watcher whose history is read outside the lock.
struct Picked {
    idx: u32,
    key: std::sync::Arc<[u8]>,
    end: Option<std::sync::Arc<[u8]>>,
    wire_end: Vec<u8>,
    min_rev: i64,
    prev_kv: bool,
}

pub(crate) fn sync_loop(shared: &Shared) {
    let _span = tracing::debug_span!("watch_sync").entered();
    let interval = shared.config.progress_notify_interval;
    let mut next_tick = Instant::now() + interval;
    while !shared.stop.load(std::sync::atomic::Ordering::SeqCst) {
        let progressed = sync_round(shared);
        {
            let mut st = shared.state.lock();
            if !st.progress_pending.is_empty() {
                progress::resolve_pending(&mut st);
            }
            if Instant::now() >= next_tick {
                progress::tick(&mut st);
                next_tick = Instant::now() + interval;
            }
        }
        if !progressed {
            let until_tick = next_tick.saturating_duration_since(Instant::now());
            shared
                .sync_signal
                .wait(shared.config.resync_interval.min(until_tick).max(Duration::from_millis(1)));
        }
    }
}

/// One round; returns whether any watcher moved forward (then another round
/// follows at once).
fn sync_round(shared: &Shared) -> bool {
    let source = &*shared.source;
    let config = &shared.config;
    let mut progressed = false;
    let mut picked: Vec<Picked> = Vec::new();
    // prev_kv watchers the ring covers but whose prev_kvs are not looked up.
    let mut ring_wait: Vec<u32> = Vec::new();
    let mut prev_fetch: Vec<(i64, usize, Event)> = Vec::new();
    let (target, ring_from) = {
        let mut st = shared.state.lock();
        progressed |= st.resume_parked() > 0;
        if st.unsynced.is_empty() {
            return progressed;
        }
        let candidates: Vec<u32> = st
            .unsynced
            .iter()
            .copied()
            .filter(|&i| st.watchers.get(i).is_some_and(|w| w.state == WatcherState::Unsynced))
            .take(config.max_watchers_per_sync)
            .collect();
        for idx in candidates {
            let Some(w) = st.watchers.get(idx) else { continue };
            let min_rev = w.min_rev;
            if min_rev < st.compact_rev {
                let compact_rev = st.compact_rev;
                st.cancel_compacted(idx, compact_rev);
                progressed = true;
            } else if min_rev > st.rev {
                st.set_state(idx, WatcherState::Synced);
                progressed = true;
            } else if st.history.covers(min_rev) {
                let missing = if w.has(flags::PREV_KV) {
                    st.history.missing_prev(min_rev, config.catchup_revisions, |ev| {
                        w.matches(event_key(ev)) && w.wants(ev)
                    })
                } else {
                    Vec::new()
                };
                if missing.is_empty() {
                    st.serve_from_history(source, config, idx);
                } else {
                    // Look the prev_kvs up outside the lock, then serve.
                    prev_fetch.extend(missing);
                    ring_wait.push(idx);
                    st.set_state(idx, WatcherState::Syncing);
                }
                progressed = true;
            } else {
                picked.push(Picked {
                    idx,
                    key: w.key.clone(),
                    end: w.end.clone(),
                    wire_end: w.wire_end().to_vec(),
                    min_rev,
                    prev_kv: w.has(flags::PREV_KV),
                });
                st.set_state(idx, WatcherState::Syncing);
            }
        }
        (st.rev, st.history.complete_from())
    };
    if !ring_wait.is_empty() {
        serve_after_prev_lookup(shared, prev_fetch, &ring_wait);
    }
    if picked.is_empty() {
        return progressed;
    }

    // Step 2: read history without the lock.
    let lo = picked.iter().map(|p| p.min_rev).min().unwrap_or(target);
    let window = i64::try_from(config.catchup_revisions).unwrap_or(i64::MAX);
    let hi = target.min(lo.saturating_add(window - 1)).min(ring_from - 1).max(lo);
    let same_range = picked.iter().all(|p| p.key == picked[0].key && p.end == picked[0].end);
    let read = if same_range {
        source.events(&picked[0].key, &picked[0].wire_end, lo, hi)
    } else {
        source.events(b"\0", b"\0", lo, hi)
    };
    let mut prev: Vec<PrevSlot> = Vec::new();
    if let Ok(events) = &read {
        prev = vec![None; events.len()];
        for (ev, slot) in events.iter().zip(prev.iter_mut()) {
            let wanted = !is_create(ev)
                && picked.iter().any(|p| {
                    p.prev_kv && event_rev(ev) >= p.min_rev && key_in(&p.key, p.end.as_deref(), event_key(ev))
                });
            if wanted {
                resolve_prev(source, ev, slot);
            }
        }
    }

    // Step 3: deliver under the lock.
    let mut st = shared.state.lock();
    if let Err(HistoryError::ReadFailed(err)) = &read {
        warn!(error = %err, lo, hi, "read watch history; retrying later");
    }
    for p in &picked {
        let Some(w) = st.watchers.get(p.idx) else { continue };
        if w.state != WatcherState::Syncing {
            // Cancelled while we read; the slot may hold another watcher.
            continue;
        }
        let events = match &read {
            Err(HistoryError::Compacted(at)) => {
                if w.min_rev <= *at {
                    let compact_rev = st.compact_rev.max(*at);
                    st.cancel_compacted(p.idx, compact_rev);
                    progressed = true;
                } else {
                    st.set_state(p.idx, WatcherState::Unsynced);
                }
                continue;
            }
            Err(HistoryError::ReadFailed(_)) => {
                st.set_state(p.idx, WatcherState::Unsynced);
                continue;
            }
            Ok(events) => events,
        };
        if w.min_rev > hi {
            st.set_state(p.idx, WatcherState::Unsynced);
            continue;
        }
        let mine = pick_events(w, hi, events, &mut prev, source);
        if !mine.is_empty() && !st.deliver(config, p.idx, mine) {
            st.park(p.idx);
            continue;
        }
        progressed = true;
        let next = hi + 1;
        if let Some(w) = st.watchers.get_mut(p.idx) {
            w.min_rev = next;
        }
        if next > st.rev {
            st.set_state(p.idx, WatcherState::Synced);
        } else if st.history.covers(next) {
            st.serve_from_history(source, config, p.idx);
        } else {
            st.set_state(p.idx, WatcherState::Unsynced);
        }
    }
    progressed
}

/// Looks up `prev_kv`s for ring events without the lock, records them in the
/// ring, then serves the watchers that waited for them.
fn serve_after_prev_lookup(shared: &Shared, mut fetch: Vec<(i64, usize, Event)>, waiting: &[u32]) {
    fetch.sort_by_key(|f| (f.0, f.1));
    fetch.dedup_by_key(|f| (f.0, f.1));
    let found: Vec<(i64, usize, Option<keelson_proto::mvccpb::KeyValue>)> = fetch
        .into_iter()
        .map(|(rev, sub, ev)| {
            let mut slot = None;
            (rev, sub, resolve_prev(&*shared.source, &ev, &mut slot))
        })
        .collect();
    let mut st = shared.state.lock();
    for (rev, sub, prev) in found {
        st.history.set_prev(rev, sub, prev);
    }
    for &idx in waiting {
        let Some(w) = st.watchers.get(idx) else { continue };
        if w.state != WatcherState::Syncing {
            continue;
        }
        if w.min_rev > st.rev {
            st.set_state(idx, WatcherState::Synced);
        } else if st.history.covers(w.min_rev) {
            st.serve_from_history(&*shared.source, &shared.config, idx);
        } else {
            st.set_state(idx, WatcherState::Unsynced);
        }
    }
}

/// The watcher's events from a history read: those at or after its
/// `min_rev` and up to `hi`, on its keys, through its filters.
fn pick_events(
    w: &crate::watcher::Watcher,
    hi: i64,
    events: &[Event],
    prev: &mut [PrevSlot],
    source: &dyn EventSource,
) -> Vec<Event> {
    events
        .iter()
        .zip(prev.iter_mut())
        .filter(|(ev, _)| (w.min_rev..=hi).contains(&event_rev(ev)) && w.matches(event_key(ev)))
        .filter_map(|(ev, slot)| watcher_event(w, ev, slot, source))
        .collect()
}
