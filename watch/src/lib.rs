//! The watch hub: etcd's watch semantics over Keelson's MVCC store.
//!
//! This crate owns the watchers of every client stream, grouped as etcd
//! groups them (synced, unsynced, and parked slow watchers), the in-memory
//! ring of recent revisions, catch-up from history, cancellation on
//! compaction, progress notifications, fragmenting, and the fan-out of each
//! committed revision. Guarantees, per watch: ordered, unique, atomic (one
//! revision's events are never split, except by fragmenting), reliable (no
//! gaps) and resumable from any uncompacted revision (etcd
//! `learning/api_guarantees.md`).
//!
//! It must not block the apply path: [`WatchHub::notify`] and
//! [`WatchHub::compacted`] only enqueue; all work, and every read of the
//! store, happens on the hub's two threads. A slow reader never stalls the
//! others: its watchers are parked and later resumed from history. The crate
//! does not depend on `keelson-mvcc`; the store implements [`EventSource`].
//!
//! Read first: `source.rs` (the contract with the store), `hub.rs` (the
//! live path), `sync.rs` (catch-up and how it joins the head), then
//! `state.rs` (what the lock protects and the synced invariant).

mod config;
mod error;
mod fragment;
mod history;
mod hub;
mod outbox;
mod progress;
mod response;
mod signal;
mod source;
mod state;
mod stream;
mod sync;
mod watcher;
mod watcher_group;

pub use config::{ConfigError, WatchConfig};
pub use error::WatchError;
pub use hub::{HubStats, StartError, WatchHub};
pub use outbox::{TryRecvError, WatchReceiver};
pub use response::{INVALID_WATCH_ID, is_progress_notify};
pub use source::{EventSource, HistoryError};
pub use stream::WatchStream;

pub use keelson_proto::etcdserverpb::{WatchCreateRequest, WatchResponse};

#[cfg(test)]
mod tests {
    /// The gRPC layer moves the stream handle and the receiver into
    /// separate tasks and shares the hub.
    #[test]
    fn handles_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<super::WatchHub>();
        send_sync::<super::WatchStream>();
        send::<super::WatchReceiver>();
    }
}
