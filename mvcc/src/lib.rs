//! keelson-mvcc: an MVCC key-value store with etcd's semantics, on RocksDB.
//!
//! It owns revisions `{main, sub}`, the key index (generations, as etcd's
//! `key_index.go`), the RocksDB layout, Range/Put/DeleteRange/Txn/Compact,
//! HashKV, the space quota and alarms. It must not know about raft or the
//! network: the raft layer drives [`WriteTxn`] from committed log entries and
//! stores its applied position through [`WriteTxn::put_meta`] in the same
//! batch; durability comes from the raft log, so nothing here fsyncs.
//!
//! Read first: `store.rs` (layout, open, reads), `write.rs` (the write
//! batch and Txn), `key_index.rs` (what a key's history looks like).

mod compaction;
mod error;
mod index;
mod key_index;
mod range;
mod revision;
mod store;
pub mod txn_check;
mod write;

pub use error::{MvccError, Result};
pub use index::KeyRange;
pub use revision::Revision;
pub use store::{ALARM_CORRUPT, ALARM_NOSPACE, Config, FORMAT_VERSION, KvHash, Store};
pub use write::{Committed, CompactionWait, LeaseCheck, RevisionEvents, WriteTxn};
