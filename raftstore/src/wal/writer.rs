//! The group-commit writer: one thread owns the segment files.
//!
//! Callers hand it encoded records ([`Request`]) and return at once. The
//! thread takes *every* request queued since its last round, writes them with
//! one `pwrite`, issues ONE `fdatasync` (`File::sync_data`), and only then
//! completes each request's [`IOFlushed`] callback, in order. While one fsync
//! runs, new requests pile up and share the next one: the more concurrent
//! writers, the more appends per fsync, without any timer or added latency.
//!
//! The thread also seals and creates segments (a sealed segment is synced
//! whole first, so only the last segment can hold unsynced bytes) and deletes
//! the segments a purge has emptied, after the purge record is durable.
//!
//! A failed write or fsync leaves the file in an unknown state (after a
//! failed fsync, Linux may drop the dirty pages and report success next
//! time), so the writer fails that batch and every later request; the node
//! must restart and recover from what is on disk.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use openraft::storage::IOFlushed;
use parking_lot::Condvar;
use parking_lot::Mutex;

use crate::types::LogId;
use crate::types::TypeConfig;
use crate::types::Vote;
use crate::wal::error::DisplayChain;
use crate::wal::error::WalError;
use crate::wal::record;
use crate::wal::record::Record;
use crate::wal::record::SegmentHeader;
use crate::wal::segment;
use crate::wal::segment::SegmentInfo;
use crate::wal::segment::SegmentName;
use crate::wal::segment::Spare;
use crate::wal::stats::WalCounters;

/// What a request changes, for the writer's own bookkeeping: segment headers
/// carry the state as of their creation, and purges delete segments.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Change {
    /// An `append` of `count` entries ending at `last_index` (`None`: empty).
    Append {
        last_index: Option<u64>,
        count: u64,
    },
    Vote(Vote),
    Committed(Option<LogId>),
    Truncate(Option<LogId>),
    Purge(LogId),
}

/// Encoded records to write, and whom to tell once they are durable.
pub(crate) struct Request {
    pub(crate) bytes: Vec<u8>,
    pub(crate) change: Change,
    pub(crate) done: IOFlushed<TypeConfig>,
}

/// Handle to the writer thread; dropping it drains the queue and joins.
pub(crate) struct Writer {
    queue: Arc<Queue>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    wakeup: Condvar,
}

#[derive(Default)]
struct QueueState {
    pending: Vec<Request>,
    shutdown: bool,
    failed: Option<String>,
}

/// Everything the writer thread owns.
pub(crate) struct WriterState {
    pub(crate) dir: PathBuf,
    pub(crate) segment_size: u64,
    /// Sealed segments, oldest first.
    pub(crate) sealed: VecDeque<SegmentInfo>,
    pub(crate) active: SegmentInfo,
    pub(crate) active_file: File,
    /// Where the next record goes in the active segment.
    pub(crate) pos: u64,
    /// Where the active segment's header ends: a segment holding nothing
    /// more is never sealed for lack of room.
    pub(crate) header_end: u64,
    /// The state as of the last queued request, for the next header.
    pub(crate) header: SegmentHeader,
    /// Last entry index as of the last queued request, to name segments.
    pub(crate) last_index: Option<u64>,
    pub(crate) counters: Arc<WalCounters>,
    /// The next segment's file, being zero-filled in the background.
    pub(crate) spare: Option<JoinHandle<io::Result<Spare>>>,
}

impl Writer {
    pub(crate) fn start(mut state: WriterState) -> Result<Writer, WalError> {
        state.spare = Some(segment::prepare_spare(&state.dir, state.segment_size));
        let queue = Arc::new(Queue::default());
        let thread = std::thread::Builder::new()
            .name("keelson-wal".into())
            .spawn({
                let queue = queue.clone();
                move || run(queue, state)
            })
            .map_err(WalError::SpawnWriter)?;
        Ok(Writer { queue, thread: Some(thread) })
    }

    /// Queues a request; its callback fires once it is durable (or failed).
    pub(crate) fn submit(&self, request: Request) -> Result<(), WalError> {
        let mut q = self.queue.state.lock();
        if let Some(reason) = &q.failed {
            return Err(WalError::WriterFailed { reason: reason.clone() });
        }
        if q.shutdown {
            return Err(WalError::WriterShutDown);
        }
        q.pending.push(request);
        drop(q);
        self.queue.wakeup.notify_one();
        Ok(())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.queue.state.lock().shutdown = true;
        self.queue.wakeup.notify_one();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("wal writer thread panicked");
        }
    }
}

fn run(queue: Arc<Queue>, mut state: WriterState) {
    loop {
        let batch = {
            let mut q = queue.state.lock();
            while q.pending.is_empty() && !q.shutdown {
                queue.wakeup.wait(&mut q);
            }
            if q.pending.is_empty() {
                return;
            }
            if let Some(reason) = &q.failed {
                let reason = reason.clone();
                let batch = std::mem::take(&mut q.pending);
                drop(q);
                fail_all(batch, &reason);
                continue;
            }
            std::mem::take(&mut q.pending)
        };

        let purged = batch.iter().any(|r| matches!(r.change, Change::Purge(_)));
        match state.write_batch(&batch) {
            Ok(()) => {
                for request in batch {
                    if let Change::Append { count, .. } = request.change {
                        state.counters.record_append(count);
                    }
                    request.done.io_completed(Ok(()));
                }
                if purged {
                    state.remove_purged_segments();
                }
            }
            Err(e) => {
                let reason = format!("{}", DisplayChain(&e));
                tracing::error!(error = %reason, "wal write failed; refusing further writes");
                queue.state.lock().failed = Some(reason.clone());
                fail_all(batch, &reason);
            }
        }
    }
}

fn fail_all(batch: Vec<Request>, reason: &str) {
    for request in batch {
        let e = WalError::WriterFailed { reason: reason.to_owned() };
        request.done.io_completed(Err(io::Error::other(e)));
    }
}

impl WriterState {
    /// Writes every request of the batch and makes them durable with one
    /// fsync of the active segment (plus one per segment sealed on the way).
    fn write_batch(&mut self, batch: &[Request]) -> Result<(), WalError> {
        let mut buf = Vec::with_capacity(batch.iter().map(|r| r.bytes.len()).sum());
        for request in batch {
            let len = request.bytes.len() as u64;
            let used = self.pos + buf.len() as u64;
            if len > 0 && used + len > self.segment_size && used > self.header_end {
                self.write_out(&mut buf)?;
                self.sync()?;
                self.roll()?;
            }
            buf.extend_from_slice(&request.bytes);
            self.apply(request.change);
        }
        if buf.is_empty() {
            // Only empty requests: everything before them is durable already.
            return Ok(());
        }
        self.write_out(&mut buf)?;
        self.sync()
    }

    fn write_out(&mut self, buf: &mut Vec<u8>) -> Result<(), WalError> {
        if buf.is_empty() {
            return Ok(());
        }
        self.active_file
            .write_all_at(buf, self.pos)
            .map_err(|source| WalError::WriteSegment { path: self.active.path.clone(), source })?;
        self.pos += buf.len() as u64;
        self.counters.record_write(buf.len() as u64);
        buf.clear();
        Ok(())
    }

    fn sync(&mut self) -> Result<(), WalError> {
        fail::fail_point!("wal-before-fsync");
        let started = Instant::now();
        self.active_file
            .sync_data()
            .map_err(|source| WalError::SyncSegment { path: self.active.path.clone(), source })?;
        self.counters.record_fsync(started.elapsed());
        fail::fail_point!("wal-after-fsync");
        Ok(())
    }

    /// Seals the active segment (already synced) and starts the next one.
    fn roll(&mut self) -> Result<(), WalError> {
        let name =
            SegmentName { seq: self.active.seq + 1, first_index: self.last_index.map_or(0, |i| i + 1) };
        // The spare filled in the background, if it is ready and sound;
        // else one filled here.
        let spare = self.spare.take().and_then(|h| h.join().ok()).and_then(|r| {
            r.inspect_err(|e| tracing::warn!(error = %e, "preparing the next wal segment failed")).ok()
        });
        let (file, header_end) = create_segment(&self.dir, name, &self.header, self.segment_size, spare)?;
        self.spare = Some(segment::prepare_spare(&self.dir, self.segment_size));
        self.counters.record_write(header_end);
        tracing::debug!(segment = %name.file_name(), "wal segment started");
        let info = SegmentInfo { path: self.dir.join(name.file_name()), seq: name.seq, max_index: None };
        let sealed = std::mem::replace(&mut self.active, info);
        self.sealed.push_back(sealed);
        self.active_file = file;
        self.pos = header_end;
        self.header_end = header_end;
        Ok(())
    }

    /// Tracks what a queued request changes.
    fn apply(&mut self, change: Change) {
        match change {
            Change::Append { last_index: Some(last), .. } => {
                self.last_index = Some(last);
                self.active.max_index = Some(self.active.max_index.map_or(last, |m| m.max(last)));
            }
            Change::Append { last_index: None, .. } => {}
            Change::Vote(v) => self.header.vote = Some(v),
            Change::Committed(c) => self.header.committed = c,
            Change::Truncate(after) => {
                let after = after.map(|a| a.index);
                if self.last_index > after {
                    self.last_index = after.max(self.header.purged.map(|p| p.index));
                }
            }
            Change::Purge(upto) => {
                if self.header.purged.is_none_or(|p| p.index < upto.index) {
                    self.header.purged = Some(upto);
                }
                if self.last_index.is_none_or(|l| l < upto.index) {
                    self.last_index = Some(upto.index);
                }
            }
        }
    }

    /// Deletes the oldest sealed segments holding nothing past the purge
    /// point. Only a prefix goes: the first remaining segment's header then
    /// carries the vote, committed and purged log id on.
    fn remove_purged_segments(&mut self) {
        let Some(purged) = self.header.purged else { return };
        let mut removed = false;
        while let Some(front) = self.sealed.front() {
            if front.max_index.is_some_and(|m| m > purged.index) {
                break;
            }
            if let Err(source) = std::fs::remove_file(&front.path) {
                let e = WalError::RemoveSegment { path: front.path.clone(), source };
                tracing::warn!(error = %DisplayChain(&e), "keeping a purged wal segment; will retry on the next purge");
                break;
            }
            tracing::debug!(segment = %front.path.display(), "purged wal segment removed");
            self.sealed.pop_front();
            removed = true;
        }
        if removed && let Err(e) = segment::sync_dir(&self.dir) {
            // Harmless: a segment that comes back is replayed, then purged again.
            tracing::warn!(error = %DisplayChain(&e), "sync wal directory after removing segments");
        }
    }
}

/// Creates a segment whose header holds `header` (with `name`'s seq); returns
/// the file and where the header ends.
pub(crate) fn create_segment(
    dir: &std::path::Path,
    name: SegmentName,
    header: &SegmentHeader,
    size: u64,
    spare: Option<Spare>,
) -> Result<(File, u64), WalError> {
    let mut bytes = Vec::new();
    let header = SegmentHeader { seq: name.seq, ..header.clone() };
    record::encode(&Record::Header(header), &mut bytes).map_err(WalError::EncodeRecord)?;
    let file = segment::create(dir, name, &bytes, size, spare)?;
    Ok((file, bytes.len() as u64))
}
