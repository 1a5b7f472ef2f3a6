//! The errors of the MVCC store. Their `Display` strings are etcd's, so the
//! gRPC layer can forward them as they are (it prefixes `etcdserver: ` the way
//! etcd does).

use std::path::PathBuf;

/// An error from the MVCC store.
#[derive(Debug, thiserror::Error)]
pub enum MvccError {
    /// The requested revision is at or below the compacted one.
    #[error("mvcc: required revision has been compacted")]
    Compacted { compacted: i64 },
    /// The requested revision is above the current one.
    #[error("mvcc: required revision is a future revision")]
    FutureRev { current: i64 },
    /// The space quota is used up (or the NOSPACE alarm is active).
    #[error("mvcc: database space exceeded")]
    NoSpace,
    /// A request named no key.
    #[error("key is not provided")]
    EmptyKey,
    /// A Txn changes one key twice, or puts a key it also deletes.
    #[error("duplicate key given in txn request")]
    DuplicateKey,
    /// A Txn has more compares or operations per branch than allowed.
    #[error("too many operations in txn request")]
    TooManyOps,
    /// `ignore_value` or `ignore_lease` on a key that does not exist.
    #[error("key not found")]
    KeyNotFound,
    /// `ignore_value` together with a value.
    #[error("value is provided")]
    ValueProvided,
    /// `ignore_lease` together with a lease.
    #[error("lease is provided")]
    LeaseProvided,
    /// A put names a lease that does not exist.
    #[error("requested lease not found")]
    LeaseNotFound,
    /// Opening the RocksDB database failed.
    #[error("open mvcc database at {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: rocksdb::Error,
    },
    /// The data dir was written by a newer, unknown format.
    #[error("mvcc database at {path} has format {found}, this binary reads format {supported}")]
    UnsupportedFormat { path: PathBuf, found: u32, supported: u32 },
    /// A RocksDB read or write failed.
    #[error("rocksdb {op}")]
    Storage {
        op: &'static str,
        #[source]
        source: rocksdb::Error,
    },
    /// Stored bytes could not be decoded.
    #[error("decode stored {what}")]
    Corrupt {
        what: &'static str,
        #[source]
        source: Option<prost::DecodeError>,
    },
    /// The store failed earlier and refuses further writes.
    #[error("mvcc store is in a failed state after an earlier write error")]
    Poisoned,
}

impl MvccError {
    pub(crate) fn storage(op: &'static str) -> impl FnOnce(rocksdb::Error) -> MvccError {
        move |source| MvccError::Storage { op, source }
    }
}

pub type Result<T, E = MvccError> = std::result::Result<T, E>;
