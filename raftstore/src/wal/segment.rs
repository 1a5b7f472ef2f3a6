//! One segment file: its name, how it is created, and how its bytes are
//! scanned back into records on open (with torn-tail detection).
//!
//! A segment is named `<seq>-<first index>.wal`, both as 16 hex digits (as
//! etcd names its WAL files): `seq` orders the segments and grows by one per
//! segment; `first index` is the index the first entry written to it was
//! expected to have, for people and tools. The sequence number, not the
//! index, orders segments, because after a truncation a new segment may start
//! at a lower index than an older one.
//!
//! **Preallocation.** A new segment is written as a `*.tmp` file filled with
//! zeros to the configured size and synced, then given its header record,
//! synced, renamed into place and the directory synced; so a segment under
//! its final name always has its header. The zeros are written, not left as
//! a sparse file (`ftruncate`) or an `fallocate(2)` reservation: appending
//! into blocks that are already allocated and written changes no file system
//! metadata, so each `fdatasync` after an append writes the data alone
//! instead of also committing the journal (measured here: 41 instead of 62 µs
//! of CPU and 100 instead of 166 µs per 2.4 KB append + `fdatasync`). The
//! writer fills the next segment's file in the background
//! ([`prepare_spare`]) while the current one fills up, so a roll does not
//! wait for 64 MiB of zeros. The unwritten rest of a segment reads as zeros,
//! which is how the end of the records is found.

use std::fs;
use std::fs::File;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::path::PathBuf;

use crate::wal::error::WalError;
use crate::wal::record;
use crate::wal::record::FRAME_HEADER_LEN;
use crate::wal::record::Frame;
use crate::wal::record::Record;

pub(crate) const SEGMENT_EXT: &str = "wal";
pub(crate) const TMP_EXT: &str = "tmp";

/// The name of a segment file: `<seq>-<first index>.wal` in hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct SegmentName {
    pub(crate) seq: u64,
    pub(crate) first_index: u64,
}

impl SegmentName {
    pub(crate) fn file_name(&self) -> String {
        format!("{:016x}-{:016x}.{SEGMENT_EXT}", self.seq, self.first_index)
    }

    /// Parses a file name; `None` if it is not a segment name.
    pub(crate) fn parse(file_name: &str) -> Option<SegmentName> {
        let stem = file_name.strip_suffix(&format!(".{SEGMENT_EXT}"))?;
        let (seq, first) = stem.split_once('-')?;
        if seq.len() != 16 || first.len() != 16 {
            return None;
        }
        Some(SegmentName {
            seq: u64::from_str_radix(seq, 16).ok()?,
            first_index: u64::from_str_radix(first, 16).ok()?,
        })
    }
}

/// A segment on disk, as the writer tracks it.
#[derive(Debug)]
pub(crate) struct SegmentInfo {
    pub(crate) path: PathBuf,
    pub(crate) seq: u64,
    /// The greatest entry index written to this segment, if any: once the
    /// purge point reaches it, nothing in the segment is needed any more.
    pub(crate) max_index: Option<u64>,
}

/// Creates segment `name` in `dir`, preallocated to `size` bytes of zeros,
/// holding `header` (an encoded header record) at offset 0; durable on
/// return. `spare` is a file [`prepare_spare`] made ready, used instead of
/// filling a new one.
pub(crate) fn create(
    dir: &Path,
    name: SegmentName,
    header: &[u8],
    size: u64,
    spare: Option<Spare>,
) -> Result<File, WalError> {
    let path = dir.join(name.file_name());
    let err = |source| WalError::CreateSegment { path: path.clone(), source };
    let Spare { file, path: tmp } = match spare {
        Some(spare) => spare,
        None => zeroed(&path.with_extension(TMP_EXT), size).map_err(err)?,
    };
    file.write_all_at(header, 0).map_err(err)?;
    file.sync_data().map_err(err)?;
    fs::rename(&tmp, &path).map_err(err)?;
    sync_dir(dir)?;
    Ok(file)
}

/// A zero-filled, synced segment file under a `*.tmp` name, ready to
/// become the next segment.
pub(crate) struct Spare {
    file: File,
    path: PathBuf,
}

/// Fills a new `spare-*.tmp` file in `dir` with `size` zeros on a thread
/// of its own. A spare left behind (a crash, a shutdown) is removed like any
/// `*.tmp` file when the WAL is opened; every spare has a name of its own,
/// so a filler still running from an earlier writer never writes into the
/// file a later one uses.
pub(crate) fn prepare_spare(dir: &Path, size: u64) -> std::thread::JoinHandle<std::io::Result<Spare>> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let path = dir.join(format!("spare-{nanos:x}-{n}.{TMP_EXT}"));
    let spawned = std::thread::Builder::new().name("keelson-wal-prep".into()).spawn({
        let path = path.clone();
        move || zeroed(&path, size)
    });
    match spawned {
        Ok(handle) => handle,
        // No thread: fill it here (only slower).
        Err(_) => std::thread::spawn(move || zeroed(&path, size)),
    }
}

/// Creates `path` holding `size` zero bytes, written and synced.
fn zeroed(path: &Path, size: u64) -> std::io::Result<Spare> {
    const CHUNK: usize = 1 << 20;
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?;
    let zeros = vec![0u8; CHUNK];
    let mut at = 0;
    while at < size {
        let n = (size - at).min(CHUNK as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    file.sync_all()?;
    Ok(Spare { file, path: path.to_owned() })
}

/// Opens an existing segment for writing at the end of its records.
pub(crate) fn open_for_append(path: &Path) -> Result<File, WalError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| WalError::CreateSegment { path: path.to_owned(), source })
}

/// Cuts a segment at `offset`: everything from there on reads as zeros, and
/// the file keeps (or regains) its preallocated `size`. Durable on return.
pub(crate) fn cut(path: &Path, offset: u64, size: u64) -> Result<(), WalError> {
    let err = |source| WalError::CutTornTail { segment: path.to_owned(), offset, source };
    let file = OpenOptions::new().write(true).open(path).map_err(err)?;
    let len = file.metadata().map_err(err)?.len();
    file.set_len(offset).map_err(err)?;
    file.set_len(len.max(size)).map_err(err)?;
    file.sync_all().map_err(err)
}

/// Makes a directory's entries (created, renamed, removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| WalError::SyncDir { path: dir.to_owned(), source })
}

/// The records of one segment, as read back on open.
#[derive(Debug)]
pub(crate) struct Scan {
    /// Each valid record and its byte offset.
    pub(crate) records: Vec<(u64, Record)>,
    /// The offset just past the last valid record: where writing resumes.
    pub(crate) end: u64,
    /// Whether anything but zeros follows `end` and must be cut off: a torn
    /// last record, or the remains of an unsynced write.
    pub(crate) torn: Option<&'static str>,
}

/// Reads the records in `buf`, the contents of segment `path`.
///
/// Scanning stops at the first frame that is all zeros (the end) or that is
/// incomplete or fails its CRC (bad). What follows decides what that means:
///
/// - In the last segment, a bad frame is the torn tail of an interrupted write
///   when no valid frame follows it anywhere, or when it spans a whole sector
///   of zeros (a sector of the write that never reached the disk); it is
///   reported in [`Scan::torn`] for the caller to cut off with everything
///   after it. So is non-zero data after the end, which only an unsynced
///   write whose pages reached the disk out of order can leave there.
/// - Any other bad frame, in particular a bad frame followed by a valid one,
///   or a bad frame in a segment but the last (every sealed segment was
///   synced whole), is damage to data that may have been acknowledged:
///   [`WalError::CorruptRecord`], naming the file and the offset.
/// - A frame with a good CRC that does not decode is a format mismatch, never
///   a torn write: [`WalError::DecodeRecord`].
pub(crate) fn scan(path: &Path, buf: &[u8], is_last: bool) -> Result<Scan, WalError> {
    let mut records = Vec::new();
    let mut offset = 0usize;
    loop {
        match record::read_frame(buf, offset) {
            Frame::Valid { body, next } => {
                let record = record::decode(body).map_err(|source| WalError::DecodeRecord {
                    segment: path.to_owned(),
                    offset: offset as u64,
                    source,
                })?;
                records.push((offset as u64, record));
                offset = next;
            }
            Frame::End => {
                let trailing = buf[offset..].iter().any(|b| *b != 0);
                if trailing && !is_last && find_valid_frame(buf, offset + 1).is_some() {
                    return Err(corrupt(path, offset, "records follow a zeroed frame header"));
                }
                let torn = (trailing && is_last).then_some("data after the end of the records");
                return Ok(Scan { records, end: offset as u64, torn });
            }
            Frame::Bad { reason } => {
                if !is_last {
                    return Err(corrupt(path, offset, reason));
                }
                if !spans_zero_sector(buf, offset)
                    && let Some(valid_at) = find_valid_frame(buf, offset + 1)
                {
                    tracing::error!(segment = %path.display(), offset, valid_at, reason, "damaged wal record before the tail");
                    return Err(corrupt(path, offset, reason));
                }
                return Ok(Scan { records, end: offset as u64, torn: Some(reason) });
            }
        }
    }
}

fn corrupt(path: &Path, offset: usize, reason: &'static str) -> WalError {
    WalError::CorruptRecord { segment: path.to_owned(), offset: offset as u64, reason }
}

/// The offset of the first frame at or after `from` that passes its CRC and
/// decodes, trying every byte offset up to the last non-zero byte.
fn find_valid_frame(buf: &[u8], from: usize) -> Option<usize> {
    let data_end = buf.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    (from..data_end).find(|&at| match record::read_frame(buf, at) {
        Frame::Valid { body, .. } => record::decode(body).is_ok(),
        Frame::End | Frame::Bad { .. } => false,
    })
}

/// Disk sector size assumed for torn-write detection.
const SECTOR: usize = 512;

/// Whether the frame at `offset` spans a whole sector of zeros that more
/// data follows: the mark of a write torn by a crash (that sector never
/// reached the disk, so it still reads as preallocated zeros while later ones
/// did), which a bit flip never leaves. etcd's `isTornEntry` makes the same
/// test. Zeros after the last non-zero byte do not count: they are the unused
/// rest of the segment, which a damaged length field may point into.
fn spans_zero_sector(buf: &[u8], offset: usize) -> bool {
    let data_end = buf.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    let len = buf
        .get(offset..offset + 4)
        .map_or(0, |b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize);
    let end = offset.saturating_add(FRAME_HEADER_LEN).saturating_add(len).min(data_end);
    let first_sector = offset.div_ceil(SECTOR) * SECTOR;
    (first_sector..end)
        .step_by(SECTOR)
        .any(|s| s + SECTOR <= end && buf[s..s + SECTOR].iter().all(|b| *b == 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_by_seq() {
        let a = SegmentName { seq: 1, first_index: 100 };
        let b = SegmentName { seq: 2, first_index: 50 };
        assert_eq!(a.file_name(), "0000000000000001-0000000000000064.wal");
        assert_eq!(SegmentName::parse(&a.file_name()), Some(a));
        assert!(a.file_name() < b.file_name());
        assert_eq!(SegmentName::parse("0001-0002.wal"), None);
        assert_eq!(SegmentName::parse("LOCK"), None);
        assert_eq!(SegmentName::parse(&format!("{}.tmp", a.file_name())), None);
    }
}
