//! Progress notifications: empty responses whose header revision promises
//! that every later event on the watch (or stream) is newer.
//!
//! Two kinds, as in etcd:
//! - **Periodic**, for watches created with `progress_notify`: every
//!   `progress_notify_interval` each such watch that is synced and received no
//!   events since the previous tick gets one, with its own watch id (etcd's
//!   `sendLoop` ticker and `RequestProgress(id)`).
//! - **Requested** (`WatchProgressRequest`), for the whole stream: one
//!   response with watch id -1, sent only when every watch on the stream is
//!   synced (etcd's `progressAll`/`progressIfSync`). etcd silently drops a
//!   request that finds an unsynced watcher, leaving the client to ask again;
//!   the hub instead keeps it pending and answers as soon as the stream is
//!   synced, which keeps the same promise and never leaves the client waiting.
//!   A stream with no watch answers at once (vacuously synced).
//!
//! A watch whose requested start revision is still in the future is not
//! synced for this purpose (etcd: `rev < w.startRev`).

use crate::response::{self, INVALID_WATCH_ID};
use crate::state::HubState;
use crate::watcher::{WatcherState, flags};

/// Whether every watch on the stream is synced, so a progress notification
/// at the hub's revision would be true.
fn stream_synced(st: &HubState, sid: u32) -> bool {
    let Some(stream) = st.stream(sid) else { return false };
    stream.watchers.values().all(|&idx| {
        st.watchers
            .get(idx)
            .is_some_and(|w| w.state == WatcherState::Synced && (w.start_rev == 0 || st.rev >= w.start_rev))
    })
}

/// Answers a stream's progress request now if it can; otherwise marks it
/// pending. Returns whether it was answered.
pub(crate) fn request(st: &mut HubState, sid: u32) -> bool {
    if stream_synced(st, sid) {
        if let Some(stream) = st.stream(sid) {
            stream.outbox.push_control(response::progress(st.rev, INVALID_WATCH_ID));
        }
        st.progress_pending.remove(&sid);
        true
    } else {
        if st.stream(sid).is_some() {
            st.progress_pending.insert(sid);
        }
        false
    }
}

/// Answers every pending request whose stream is now synced.
pub(crate) fn resolve_pending(st: &mut HubState) {
    let pending: Vec<u32> = st.progress_pending.iter().copied().collect();
    for sid in pending {
        request(st, sid);
    }
}

/// One periodic tick: a progress notification to each synced
/// `progress_notify` watch that got no events since the last tick. Dropped
/// (like etcd) when the stream is full: the watch is behind anyway.
pub(crate) fn tick(st: &mut HubState) {
    let rev = st.rev;
    let indices: Vec<u32> = st.watchers.indices().collect();
    for idx in indices {
        let Some(w) = st.watchers.get_mut(idx) else { continue };
        if !w.has(flags::PROGRESS_NOTIFY) {
            continue;
        }
        if w.has(flags::SENT_SINCE_TICK) {
            w.flags &= !flags::SENT_SINCE_TICK;
            continue;
        }
        if w.state != WatcherState::Synced || (w.start_rev != 0 && rev < w.start_rev) {
            continue;
        }
        let (sid, id) = (w.stream, w.id);
        if let Some(stream) = st.stream(sid) {
            stream.outbox.try_push([response::progress(rev, id)]);
        }
    }
}
