//! The handle of one client stream (one gRPC `Watch` call): creates and
//! cancels watches and asks for progress. Its responses come out of the
//! paired [`WatchReceiver`](crate::WatchReceiver). Dropping it cancels every
//! watch on it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use keelson_proto::etcdserverpb::WatchCreateRequest;
use keelson_proto::etcdserverpb::watch_create_request::FilterType;
use tracing::debug;

use crate::error::WatchError;
use crate::hub::Shared;
use crate::outbox::Outbox;
use crate::progress;
use crate::response;
use crate::watcher::{WatcherState, flags};
use crate::watcher_group::NewWatcher;

/// One client stream: many watches sharing one ordered response queue.
#[derive(Debug)]
pub struct WatchStream {
    shared: Arc<Shared>,
    sid: u32,
    outbox: Arc<Outbox>,
}

impl WatchStream {
    pub(crate) fn new(shared: Arc<Shared>, sid: u32, outbox: Arc<Outbox>) -> Self {
        WatchStream { shared, sid, outbox }
    }

    /// Creates a watch, as etcd's `WatchCreateRequest` asks, and queues the
    /// `created` response ahead of any of its events.
    ///
    /// etcd's rules: an empty `key` means `"\0"`; `range_end` empty watches
    /// the single key, `"\0"` every key `>= key`, anything else
    /// `[key, range_end)`; `start_revision` 0 means "after the current
    /// revision", a past revision replays history first, a future one waits;
    /// `watch_id` 0 lets the stream choose. A refused request is answered on
    /// the stream (created and canceled, id -1, with the reason) and returned
    /// as the error.
    pub fn watch(&self, req: &WatchCreateRequest) -> Result<i64, WatchError> {
        let mut st = self.shared.state.lock();
        let rev = st.rev;
        let refuse = |err: WatchError| {
            self.outbox.push_control(response::create_failed(rev, err.to_string()));
            Err(err)
        };
        if req.start_revision < 0 {
            return refuse(WatchError::NegativeStartRevision);
        }
        let key: &[u8] = if req.key.is_empty() { b"\0" } else { &req.key };
        let end: Option<&[u8]> = match &req.range_end[..] {
            [] => None,
            [0] => Some(&[]),
            end if key >= end => return refuse(WatchError::EmptyRange),
            end => Some(end),
        };
        let Some(stream) = st.stream_mut(self.sid) else {
            return refuse(WatchError::EmptyRange);
        };
        let id = if req.watch_id == 0 {
            while stream.watchers.contains_key(&stream.next_id) {
                stream.next_id += 1;
            }
            stream.next_id += 1;
            stream.next_id - 1
        } else if stream.watchers.contains_key(&req.watch_id) {
            return refuse(WatchError::DuplicateId(req.watch_id));
        } else {
            req.watch_id
        };

        let mut wflags = 0;
        for (wanted, flag) in [
            (req.prev_kv, flags::PREV_KV),
            (req.progress_notify, flags::PROGRESS_NOTIFY),
            (req.fragment, flags::FRAGMENT),
        ] {
            if wanted {
                wflags |= flag;
            }
        }
        for filter in &req.filters {
            match FilterType::try_from(*filter) {
                Ok(FilterType::Noput) => wflags |= flags::NO_PUT,
                Ok(FilterType::Nodelete) => wflags |= flags::NO_DELETE,
                Err(_) => {}
            }
        }
        let synced = req.start_revision == 0 || req.start_revision > rev;
        let (state, min_rev) = if synced {
            (WatcherState::Synced, req.start_revision.max(rev + 1))
        } else {
            (WatcherState::Unsynced, req.start_revision)
        };
        let idx = st.watchers.insert(NewWatcher {
            key,
            end,
            min_rev,
            start_rev: req.start_revision,
            id,
            stream: self.sid,
            flags: wflags,
            state,
        });
        if let Some(stream) = st.stream_mut(self.sid) {
            stream.watchers.insert(id, idx);
        }
        if req.prev_kv {
            st.prev_kv_watchers.fetch_add(1, Ordering::Relaxed);
        }
        self.outbox.push_control(response::created(rev, id));
        if !synced {
            st.unsynced.insert(idx);
            drop(st);
            self.shared.sync_signal.wake();
        }
        debug!(stream = self.sid, watch_id = id, start_rev = req.start_revision, synced, "create watch");
        Ok(id)
    }

    /// Cancels a watch and queues etcd's `canceled` response. `false` if the
    /// stream has no such watch (etcd answers nothing then).
    pub fn cancel(&self, watch_id: i64) -> bool {
        let mut st = self.shared.state.lock();
        let rev = st.rev;
        let Some(idx) = st.stream(self.sid).and_then(|s| s.watchers.get(&watch_id).copied()) else {
            return false;
        };
        st.remove_watcher(idx);
        self.outbox.push_control(response::canceled(rev, watch_id));
        true
    }

    /// etcd's `WatchProgressRequest`: queues a progress notification with
    /// watch id -1 and the hub's revision, promising that every later event on
    /// this stream is newer. Sent at once if every watch on the stream is
    /// synced, otherwise as soon as they all are (etcd drops the request in
    /// that case; see `progress.rs`).
    pub fn request_progress(&self) {
        let mut st = self.shared.state.lock();
        if !progress::request(&mut st, self.sid) {
            drop(st);
            self.shared.sync_signal.wake();
        }
    }

    /// How many watches the stream holds.
    pub fn len(&self) -> usize {
        self.shared.state.lock().stream(self.sid).map_or(0, |s| s.watchers.len())
    }

    /// Whether the stream holds no watch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        self.shared.state.lock().remove_stream(self.sid);
        self.outbox.close();
    }
}
