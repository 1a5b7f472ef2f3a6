//! [`WalLogStore`]: openraft's [`RaftLogStorage`] and [`RaftLogReader`] over
//! the segmented WAL.
//!
//! Every call updates the in-memory [`MemLog`] and queues its records for the
//! group-commit writer under one lock, so memory and disk see the same order.
//! What each call waits for:
//!
//! | call             | returns when                        | durable when                     |
//! | ---------------- | ----------------------------------- | -------------------------------- |
//! | `append`         | queued (entries readable at once)   | its `IOFlushed` callback fires   |
//! | `save_vote`      | synced                              | on return                        |
//! | `save_committed` | synced (`sync-committed`, default)  | on return; else next group commit |
//! | `truncate_after` | synced                              | on return                        |
//! | `purge`          | synced; emptied segments then go    | on return                        |
//!
//! The vote and the committed log id are WAL records like the entries, not a
//! separate file: they share the group commit's fsync, stay ordered with the
//! entries (openraft requires vote and log writes to be serialized), and
//! every segment's header repeats them so purging old segments loses nothing.

use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use openraft::LogState;
use openraft::OptionalSend;
use openraft::RaftLogReader;
use openraft::storage::IOFlushed;
use openraft::storage::RaftLogStorage;
use openraft::type_config::TypeConfigExt;
use parking_lot::RwLock;

use crate::types::Entry;
use crate::types::LogId;
use crate::types::TypeConfig;
use crate::types::Vote;
use crate::wal::config::WalConfig;
use crate::wal::error::WalError;
use crate::wal::mem_log::MemLog;
use crate::wal::record;
use crate::wal::record::Record;
use crate::wal::recovery;
use crate::wal::stats::WalCounters;
use crate::wal::stats::WalStats;
use crate::wal::writer::Change;
use crate::wal::writer::Request;
use crate::wal::writer::Writer;

/// The raft log store on Keelson's WAL. Cheap to clone: clones share the log,
/// and a clone is also the log reader.
#[derive(Clone)]
pub struct WalLogStore {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    config: WalConfig,
    log: RwLock<MemLog>,
    counters: Arc<WalCounters>,
    // Dropped in this order: the writer drains and joins, then the lock goes.
    writer: Writer,
    _lock: std::fs::File,
}

impl WalLogStore {
    /// Opens the WAL in `dir`, creating it if need be, and recovers it: a torn
    /// last record is cut off; damage before the tail is an error naming the
    /// segment and offset. Blocking file I/O: from async code, call it inside
    /// `spawn_blocking`.
    pub fn open(dir: impl AsRef<Path>, config: WalConfig) -> Result<WalLogStore, WalError> {
        let dir = dir.as_ref().to_owned();
        let counters = Arc::new(WalCounters::default());
        let recovered = recovery::open(&dir, &config, counters.clone())?;
        let writer = Writer::start(recovered.writer)?;
        Ok(WalLogStore {
            inner: Arc::new(Inner {
                dir,
                config,
                log: RwLock::new(recovered.log),
                counters,
                writer,
                _lock: recovered.lock,
            }),
        })
    }

    /// The directory the WAL lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Appends, fsyncs and fsync durations since the WAL was opened.
    pub fn stats(&self) -> WalStats {
        self.inner.counters.snapshot()
    }

    /// Queues `record` behind everything queued before; `done` fires once it
    /// is durable.
    fn submit(&self, record: &Record, change: Change, done: IOFlushed<TypeConfig>) -> Result<(), WalError> {
        let mut bytes = Vec::new();
        record::encode(record, &mut bytes).map_err(WalError::EncodeRecord)?;
        self.inner.writer.submit(Request { bytes, change, done })
    }

    /// Applies `update` to the in-memory log and queues `record`, atomically
    /// with respect to other calls; then waits for the record to be durable
    /// if `wait`.
    async fn write(
        &self,
        record: Record,
        change: Change,
        wait: bool,
        update: impl FnOnce(&mut MemLog),
    ) -> Result<(), io::Error> {
        let (done, flushed) = if wait {
            let (tx, rx) = TypeConfig::oneshot();
            (IOFlushed::signal(tx), Some(rx))
        } else {
            (IOFlushed::noop(), None)
        };
        {
            let mut log = self.inner.log.write();
            self.submit(&record, change, done)?;
            update(&mut log);
        }
        if let Some(flushed) = flushed {
            flushed.await.map_err(|_| io::Error::other(WalError::WriterShutDown))??;
        }
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for WalLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        Ok(self.inner.log.read().range(range))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.inner.log.read().vote())
    }
}

impl RaftLogStorage<TypeConfig> for WalLogStore {
    type LogReader = WalLogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let log = self.inner.log.read();
        Ok(LogState { last_purged_log_id: log.purged(), last_log_id: log.last_log_id() })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(vote = %vote))]
    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let vote = *vote;
        // Readers see the vote only once it is durable.
        self.write(Record::Vote(vote), Change::Vote(vote), true, |_| {}).await?;
        self.inner.log.write().set_vote(vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let wait = self.inner.config.sync_committed;
        self.write(Record::Committed(committed), Change::Committed(committed), wait, |log| {
            log.set_committed(committed)
        })
        .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.inner.log.read().committed())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let mut bytes = Vec::new();
        record::encode_entries(&entries, &mut bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, WalError::EncodeRecord(e)))?;
        let change = Change::Append {
            last_index: entries.last().map(|e| e.log_id.index),
            count: entries.len() as u64,
        };

        let mut log = self.inner.log.write();
        log.check_append(&entries).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        self.inner.writer.submit(Request { bytes, change, done: callback })?;
        for entry in entries {
            log.push(entry);
        }
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(after = ?last_log_id))]
    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        self.write(Record::Truncate(last_log_id), Change::Truncate(last_log_id), true, |log| {
            log.truncate_after(last_log_id.as_ref())
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(upto = %log_id))]
    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.write(Record::Purge(log_id), Change::Purge(log_id), true, |log| log.purge(log_id)).await
    }
}
