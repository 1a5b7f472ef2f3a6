//! Why a watch could not be created. The `Display` texts are etcd's, because
//! they travel to clients as `cancel_reason`.

/// A watch create request the hub refused. The stream has already received
/// etcd's answer to it: a response with `created` and `canceled` set,
/// `watch_id == -1` and this error's text as `cancel_reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    /// `start_revision` was negative.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    NegativeStartRevision,
    /// `key >= range_end`.
    #[error("mvcc: watcher range is empty")]
    EmptyRange,
    /// The caller chose a watch id the stream already uses.
    #[error("mvcc: duplicate watch ID provided on the WatchStream")]
    DuplicateId(i64),
}
