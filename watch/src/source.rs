//! The contract between the hub and the store that keeps the event history.
//!
//! The hub never reads RocksDB itself: whatever it cannot serve from its
//! in-memory [`History`](crate::history::History) it asks of an
//! [`EventSource`], which `keelson-mvcc`'s store implements. Both calls may do
//! I/O; the hub makes them from its own threads, never from the apply path.

use keelson_proto::mvccpb::{Event, KeyValue};

/// Reads the store's event history.
///
/// Range arguments follow etcd's rules: `range_end` empty means the single
/// key `key`; `range_end == b"\0"` means every key `>= key`; anything else is
/// the half-open range `[key, range_end)`.
pub trait EventSource: Send + Sync + 'static {
    /// Every event with `mod_revision` in `[start_rev, end_rev]` on keys in
    /// `[key, range_end)`, ordered by (main, sub) revision. `prev_kv` is not
    /// filled. Fails with [`HistoryError::Compacted`] if
    /// `start_rev <= ` the compacted revision.
    fn events(
        &self,
        key: &[u8],
        range_end: &[u8],
        start_rev: i64,
        end_rev: i64,
    ) -> Result<Vec<Event>, HistoryError>;

    /// The key's [`KeyValue`] as of revision `rev` (the latest version with
    /// `mod_revision <= rev`), `None` if absent or deleted at `rev`. Used to
    /// fill `prev_kv`.
    fn kv_at(&self, key: &[u8], rev: i64) -> Result<Option<KeyValue>, HistoryError>;
}

/// Why the history could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The requested revision is at or below the compacted revision carried
    /// here.
    #[error("mvcc: required revision has been compacted (compacted revision {0})")]
    Compacted(i64),
    /// The store failed to read; the hub retries later.
    #[error("read the event history")]
    ReadFailed(#[source] Box<dyn std::error::Error + Send + Sync>),
}
