//! Errors of the WAL, named for the operation that failed.

use std::io;
use std::path::PathBuf;

use crate::wal::config::WalConfigError;
use crate::wal::mem_log::OutOfOrderEntry;
use crate::wal::record::DecodeError;
use crate::wal::record::EncodeError;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("invalid wal config")]
    InvalidConfig(#[source] WalConfigError),

    #[error("create wal directory {path}")]
    CreateDir { path: PathBuf, source: io::Error },

    #[error("lock wal directory {path} (is another process using it?)")]
    LockDir { path: PathBuf, source: io::Error },

    #[error("list wal directory {path}")]
    ListDir { path: PathBuf, source: io::Error },

    #[error("wal directory holds {path}, which is not named <seq>-<first index>.wal in hex")]
    BadSegmentName { path: PathBuf },

    #[error("wal segment {path} has seq {found}, expected {expected}: a segment is missing")]
    MissingSegment { path: PathBuf, expected: u64, found: u64 },

    #[error("read wal segment {path}")]
    ReadSegment { path: PathBuf, source: io::Error },

    /// A record before the tail of the log is damaged: acknowledged data may
    /// be lost, so the WAL refuses to open rather than guess.
    #[error("corrupt record in wal segment {segment} at byte offset {offset}: {reason}")]
    CorruptRecord { segment: PathBuf, offset: u64, reason: &'static str },

    #[error("decode record in wal segment {segment} at byte offset {offset}")]
    DecodeRecord { segment: PathBuf, offset: u64, source: DecodeError },

    #[error("wal segment {segment} does not start with a header for seq {seq}")]
    MissingHeader { segment: PathBuf, seq: u64 },

    #[error("replay record in wal segment {segment} at byte offset {offset}")]
    ReplayRecord { segment: PathBuf, offset: u64, source: OutOfOrderEntry },

    #[error("cut torn tail of wal segment {segment} at byte offset {offset}")]
    CutTornTail { segment: PathBuf, offset: u64, source: io::Error },

    #[error("create wal segment {path}")]
    CreateSegment { path: PathBuf, source: io::Error },

    #[error("remove wal segment {path}")]
    RemoveSegment { path: PathBuf, source: io::Error },

    #[error("write wal segment {path}")]
    WriteSegment { path: PathBuf, source: io::Error },

    #[error("sync wal segment {path}")]
    SyncSegment { path: PathBuf, source: io::Error },

    #[error("sync wal directory {path}")]
    SyncDir { path: PathBuf, source: io::Error },

    #[error("encode wal record")]
    EncodeRecord(#[source] EncodeError),

    #[error("start wal writer thread")]
    SpawnWriter(#[source] io::Error),

    /// The writer failed earlier; after a failed write or fsync the state of
    /// the file is unknown, so the WAL accepts no more writes.
    #[error("wal writer stopped after an earlier failure: {reason}")]
    WriterFailed { reason: String },

    #[error("wal writer is shut down")]
    WriterShutDown,
}

impl From<WalError> for io::Error {
    fn from(e: WalError) -> io::Error {
        io::Error::other(e)
    }
}

/// Formats an error with its chain of sources: `a: b: c`.
pub(crate) struct DisplayChain<'a>(pub(crate) &'a dyn std::error::Error);

impl std::fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}
