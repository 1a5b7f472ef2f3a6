//! Keelson's segmented write-ahead log: the raft log, the vote and the
//! committed log id, behind openraft's `RaftLogStorage` ([`WalLogStore`]).
//!
//! ## On disk
//!
//! A WAL directory holds a `LOCK` file (held with an exclusive lock while
//! open) and segment files `<seq>-<first index>.wal` (16 hex digits each),
//! preallocated to [`WalConfig::segment_size`]. A segment is a sequence of
//! CRC-32 framed records (see `record.rs`): first a header repeating the
//! vote, committed and purged log id as of the segment's creation, then
//! entries and vote / committed / truncate / purge records in the order the
//! calls were made. The log is the replay of all records of all segments.
//! Truncation and purge are records too; a purge also deletes the oldest
//! segments once nothing in them is past the purge point.
//!
//! ## Writing
//!
//! One thread owns the files (`writer.rs`): it drains every queued request,
//! writes them, calls `fdatasync` once, and completes every waiting callback:
//! concurrent appends share one fsync (group commit).
//!
//! ## Recovery
//!
//! On open every segment is read and replayed (`recovery.rs`). A record that
//! is incomplete or fails its CRC at the tail of the last segment is the
//! remains of a write a crash interrupted, never acknowledged: the file is cut
//! there. The same damage anywhere else is [`WalError::CorruptRecord`], which
//! names the segment file and byte offset.
//!
//! ## Memory
//!
//! Every live entry (after the purge point) is kept in memory (`mem_log.rs`),
//! as etcd's raft `MemoryStorage` does: reads never touch the disk, and the
//! log's size is bounded by purging after each snapshot.
//!
//! Read first: `log_store.rs` (the contract with openraft), then `writer.rs`,
//! then `segment.rs` (recovery rules) and `record.rs` (the format).

mod config;
mod error;
mod log_store;
mod mem_log;
mod record;
mod recovery;
mod segment;
mod stats;
mod writer;

pub use config::WalConfig;
pub use config::WalConfigError;
pub use error::WalError;
pub use log_store::WalLogStore;
pub use mem_log::OutOfOrderEntry;
pub use record::DecodeError;
pub use record::EncodeError;
pub use stats::FSYNC_BUCKETS_SECONDS;
pub use stats::WalStats;
