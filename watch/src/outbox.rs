//! One stream's queue of responses, shared by the hub threads (producers)
//! and the stream's reader (the gRPC send loop).
//!
//! The queue is bounded for event responses: a push that finds it full fails
//! and the hub parks the watcher instead of waiting. Control responses
//! (created, canceled, requested progress, compaction) always go in, so the
//! stream's answers keep the order of its requests. When the reader drains a
//! queue that refused a push down to half, it wakes the sync thread to resume
//! the parked watchers.

use std::collections::VecDeque;
use std::sync::Arc;

use keelson_proto::etcdserverpb::WatchResponse;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::signal::Signal;

/// One watcher's responses for one delivery: a response, or the fragments
/// it was split into. Queued all or nothing.
#[derive(Debug)]
pub(crate) enum Delivery {
    One(WatchResponse),
    Fragments(Vec<WatchResponse>),
}

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<WatchResponse>,
    /// The stream handle is gone: the reader ends after draining.
    sender_closed: bool,
    /// The reader is gone: pushes are dropped.
    receiver_closed: bool,
    /// A push failed since the queue last drained to half.
    refused: bool,
}

#[derive(Debug)]
pub(crate) struct Outbox {
    queue: Mutex<Queue>,
    ready: Notify,
    capacity: usize,
    sync: Arc<Signal>,
}

impl Outbox {
    pub fn new(capacity: usize, sync: Arc<Signal>) -> Self {
        Outbox { queue: Mutex::default(), ready: Notify::new(), capacity, sync }
    }

    /// Queues event responses, all or none. `false` means the queue is full.
    pub fn try_push(&self, resps: impl IntoIterator<Item = WatchResponse>) -> bool {
        let mut q = self.queue.lock();
        if q.receiver_closed {
            return true;
        }
        if q.items.len() >= self.capacity {
            q.refused = true;
            return false;
        }
        q.items.extend(resps);
        drop(q);
        self.ready.notify_one();
        true
    }

    /// Queues one revision's responses for many watchers of this stream
    /// under one lock and with one wake-up. Watchers whose delivery finds the
    /// queue full are added to `rejected`; nothing of theirs was queued.
    pub fn push_batch(&self, items: impl IntoIterator<Item = (u32, Delivery)>, rejected: &mut Vec<u32>) {
        let mut q = self.queue.lock();
        let mut pushed = false;
        for (idx, delivery) in items {
            if q.receiver_closed {
                continue;
            }
            if q.items.len() >= self.capacity {
                q.refused = true;
                rejected.push(idx);
                continue;
            }
            match delivery {
                Delivery::One(resp) => q.items.push_back(resp),
                Delivery::Fragments(resps) => q.items.extend(resps),
            }
            pushed = true;
        }
        drop(q);
        if pushed {
            self.ready.notify_one();
        }
    }

    /// Queues a control response regardless of capacity.
    pub fn push_control(&self, resp: WatchResponse) {
        let mut q = self.queue.lock();
        if q.receiver_closed {
            return;
        }
        q.items.push_back(resp);
        drop(q);
        self.ready.notify_one();
    }

    /// Whether parked watchers may resume: the queue is at most half full.
    pub fn has_room(&self) -> bool {
        let q = self.queue.lock();
        q.receiver_closed || q.items.len() <= self.capacity / 2
    }

    /// The stream handle is gone; the reader sees the end after draining.
    pub fn close(&self) {
        self.queue.lock().sender_closed = true;
        self.ready.notify_one();
    }

    fn pop(&self) -> Result<WatchResponse, TryRecvError> {
        let mut q = self.queue.lock();
        let Some(resp) = q.items.pop_front() else {
            if q.items.capacity() > 64 {
                q.items.shrink_to(16);
            }
            return Err(if q.sender_closed { TryRecvError::Closed } else { TryRecvError::Empty });
        };
        let wake = q.refused && q.items.len() <= self.capacity / 2;
        if wake {
            q.refused = false;
        }
        drop(q);
        if wake {
            self.sync.wake();
        }
        Ok(resp)
    }
}

/// Why [`WatchReceiver::try_recv`] returned nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TryRecvError {
    /// Nothing queued right now.
    #[error("no watch response queued")]
    Empty,
    /// The stream is closed and drained.
    #[error("watch stream closed")]
    Closed,
}

/// The reading end of a [`WatchStream`](crate::WatchStream): its responses in
/// order, shaped as etcd's `WatchResponse`. The header carries only the
/// revision; the gRPC layer fills cluster id, member id and raft term.
#[derive(Debug)]
pub struct WatchReceiver {
    outbox: Arc<Outbox>,
}

impl WatchReceiver {
    pub(crate) fn new(outbox: Arc<Outbox>) -> Self {
        WatchReceiver { outbox }
    }

    /// The next response; `None` once the stream handle is dropped (or the
    /// hub shut down) and every queued response was read.
    pub async fn recv(&mut self) -> Option<WatchResponse> {
        loop {
            match self.outbox.pop() {
                Ok(resp) => return Some(resp),
                Err(TryRecvError::Closed) => return None,
                // A single reader: a notify_one sent before we wait is kept
                // as a permit, so no wake-up is lost.
                Err(TryRecvError::Empty) => self.outbox.ready.notified().await,
            }
        }
    }

    /// The next response if one is queued.
    pub fn try_recv(&mut self) -> Result<WatchResponse, TryRecvError> {
        self.outbox.pop()
    }
}

impl Drop for WatchReceiver {
    fn drop(&mut self) {
        let mut q = self.outbox.queue.lock();
        q.receiver_closed = true;
        q.items = VecDeque::new();
    }
}
