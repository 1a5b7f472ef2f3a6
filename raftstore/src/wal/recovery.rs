//! Opening a WAL directory: find the segments, replay their records into a
//! [`MemLog`], cut a torn tail off the last segment, and hand the files to
//! the writer.

use std::collections::VecDeque;
use std::fs;
use std::fs::File;
use std::fs::OpenOptions;
use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::wal::config::WalConfig;
use crate::wal::error::WalError;
use crate::wal::mem_log::MemLog;
use crate::wal::record::Record;
use crate::wal::record::SegmentHeader;
use crate::wal::segment;
use crate::wal::segment::SegmentInfo;
use crate::wal::segment::SegmentName;
use crate::wal::stats::WalCounters;
use crate::wal::writer;
use crate::wal::writer::WriterState;

const LOCK_FILE: &str = "LOCK";

/// A recovered WAL: what it holds, and the files for the writer.
pub(crate) struct Recovered {
    pub(crate) log: MemLog,
    pub(crate) writer: WriterState,
    /// Held (locked) for as long as the WAL is open.
    pub(crate) lock: File,
}

/// Opens (creating if need be) the WAL in `dir`.
pub(crate) fn open(
    dir: &Path,
    config: &WalConfig,
    counters: Arc<WalCounters>,
) -> Result<Recovered, WalError> {
    config.validate().map_err(WalError::InvalidConfig)?;
    fs::create_dir_all(dir).map_err(|source| WalError::CreateDir { path: dir.to_owned(), source })?;
    let lock = lock_dir(dir)?;
    let names = list_segments(dir)?;

    let mut log = MemLog::default();
    let mut sealed = VecDeque::new();
    let mut last: Option<(SegmentInfo, u64, u64)> = None; // (info, end, header_end)
    for (i, name) in names.iter().enumerate() {
        let path = dir.join(name.file_name());
        let is_last = i + 1 == names.len();
        let buf = fs::read(&path).map_err(|source| WalError::ReadSegment { path: path.clone(), source })?;
        let scan = segment::scan(&path, &buf, is_last)?;
        drop(buf);

        if scan.records.is_empty() && is_last {
            // Only a damaged header, which the crash interrupted: the segment
            // holds nothing; it is replaced below.
            tracing::warn!(segment = %path.display(), "wal segment without records; recreating it");
            fs::remove_file(&path)
                .map_err(|source| WalError::RemoveSegment { path: path.clone(), source })?;
            break;
        }
        let mut records = scan.records.into_iter();
        let header_end = match records.next() {
            Some((_, Record::Header(h))) if h.seq == name.seq => {
                log.replay(Record::Header(h)).expect("a header never conflicts");
                records.as_slice().first().map_or(scan.end, |(offset, _)| *offset)
            }
            _ => return Err(WalError::MissingHeader { segment: path, seq: name.seq }),
        };
        let mut max_index = None;
        for (offset, record) in records {
            if let Record::Entry(e) = &record {
                max_index = max_index.max(Some(e.log_id.index));
            }
            log.replay(record).map_err(|source| WalError::ReplayRecord {
                segment: path.clone(),
                offset,
                source,
            })?;
        }
        if let Some(reason) = scan.torn {
            tracing::warn!(segment = %path.display(), offset = scan.end, reason, "cutting torn tail of the wal");
            segment::cut(&path, scan.end, config.segment_size)?;
        }
        let info = SegmentInfo { path, seq: name.seq, max_index };
        if is_last {
            last = Some((info, scan.end, header_end));
        } else {
            sealed.push_back(info);
        }
    }

    let header = SegmentHeader { seq: 0, vote: log.vote(), committed: log.committed(), purged: log.purged() };
    let last_index = log.last_log_id().map(|id| id.index);
    let (active, active_file, pos, header_end) = match last {
        Some((info, end, header_end)) => {
            let file = segment::open_for_append(&info.path)?;
            (info, file, end, header_end)
        }
        None => {
            // A new WAL, or a last segment that was removed above: reuse its seq.
            let seq = names.last().map_or(1, |n| n.seq);
            let name = SegmentName { seq, first_index: last_index.map_or(0, |i| i + 1) };
            let (file, header_end) = writer::create_segment(dir, name, &header, config.segment_size, None)?;
            tracing::info!(segment = %name.file_name(), "wal segment created");
            let info = SegmentInfo { path: dir.join(name.file_name()), seq, max_index: None };
            (info, file, header_end, header_end)
        }
    };
    tracing::info!(
        dir = %dir.display(),
        segments = sealed.len() + 1,
        entries = log.len(),
        last_log_id = ?log.last_log_id(),
        "wal opened"
    );
    Ok(Recovered {
        log,
        writer: WriterState {
            dir: dir.to_owned(),
            segment_size: config.segment_size,
            sealed,
            active,
            active_file,
            pos,
            header_end,
            header,
            last_index,
            counters,
            spare: None,
        },
        lock,
    })
}

fn lock_dir(dir: &Path) -> Result<File, WalError> {
    let path = dir.join(LOCK_FILE);
    let err = |source| WalError::LockDir { path: path.clone(), source };
    let file =
        OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(err)?;
    file.try_lock().map_err(|e| match e {
        fs::TryLockError::WouldBlock => {
            err(io::Error::new(io::ErrorKind::WouldBlock, "locked by another process"))
        }
        fs::TryLockError::Error(e) => err(e),
    })?;
    Ok(file)
}

/// The segments in `dir`, in seq order, checked to be consecutive. Leftover
/// `*.tmp` files (an interrupted segment creation) are removed.
fn list_segments(dir: &Path) -> Result<Vec<SegmentName>, WalError> {
    let list_err = |source| WalError::ListDir { path: dir.to_owned(), source };
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(list_err)? {
        let path = entry.map_err(list_err)?.path();
        let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if file_name.ends_with(&format!(".{}", segment::TMP_EXT)) {
            tracing::info!(file = %path.display(), "removing unfinished wal segment");
            fs::remove_file(&path)
                .map_err(|source| WalError::RemoveSegment { path: path.clone(), source })?;
        } else if file_name.ends_with(&format!(".{}", segment::SEGMENT_EXT)) {
            names.push(
                SegmentName::parse(file_name)
                    .ok_or_else(|| WalError::BadSegmentName { path: path.clone() })?,
            );
        }
    }
    names.sort();
    for pair in names.windows(2) {
        if pair[1].seq != pair[0].seq + 1 {
            return Err(WalError::MissingSegment {
                path: dir.join(pair[1].file_name()),
                expected: pair[0].seq + 1,
                found: pair[1].seq,
            });
        }
    }
    Ok(names)
}
