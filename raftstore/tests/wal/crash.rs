//! Crash recovery: a damaged last record is cut off, at every byte offset;
//! damage before it is an error naming the segment and offset.

use std::path::Path;
use std::path::PathBuf;

use keelson_raftstore::WalConfig;
use keelson_raftstore::WalError;
use keelson_raftstore::WalLogStore;
use keelson_raftstore::types::Entry;

use crate::fixture::all_entries;
use crate::fixture::append;
use crate::fixture::entry;
use crate::fixture::frames;
use crate::fixture::open;
use crate::fixture::segments;

const SEGMENT_SIZE: u64 = 64 * 1024;

fn config() -> WalConfig {
    WalConfig { segment_size: SEGMENT_SIZE, ..WalConfig::default() }
}

/// A closed WAL holding `written` in one segment, the segment's bytes, and
/// the byte range of each of its frames (the header first).
struct Written {
    dir: tempfile::TempDir,
    segment: PathBuf,
    original: Vec<u8>,
    frames: Vec<std::ops::Range<usize>>,
    written: Vec<Entry>,
}

async fn write_some() -> Written {
    let dir = tempfile::tempdir().unwrap();
    let mut written = Vec::new();
    {
        let mut store = open(dir.path(), config());
        for index in 1..=5 {
            let e = entry(1, index, 40 + index as usize * 7);
            written.push(e.clone());
            append(&mut store, vec![e]).await.unwrap();
        }
    }
    let segs = segments(dir.path());
    assert_eq!(segs.len(), 1);
    let segment = segs[0].clone();
    let original = std::fs::read(&segment).unwrap();
    let frames = frames(&original);
    assert_eq!(frames.len(), 1 + written.len(), "header and one frame per entry");
    Written { dir, segment, original, frames, written }
}

async fn reopen_entries(dir: &Path) -> Result<Vec<Entry>, WalError> {
    let mut store = WalLogStore::open(dir, config())?;
    Ok(all_entries(&mut store).await)
}

#[tokio::test]
async fn a_last_record_cut_at_any_byte_is_dropped() {
    let w = write_some().await;
    let last = w.frames.last().unwrap().clone();
    let earlier = &w.written[..w.written.len() - 1];
    for cut_at in last.clone() {
        std::fs::write(&w.segment, &w.original).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&w.segment).unwrap();
        f.set_len(cut_at as u64).unwrap();
        drop(f);

        let got = reopen_entries(w.dir.path()).await.unwrap_or_else(|e| panic!("cut at {cut_at}: {e}"));
        assert_eq!(got, earlier, "cut at {cut_at}");
    }

    // The log goes on after the cut: a new record takes the torn one's place.
    let mut store = open(w.dir.path(), config());
    let next = entry(2, 5, 10);
    append(&mut store, vec![next.clone()]).await.unwrap();
    drop(store);
    let mut want = earlier.to_vec();
    want.push(next);
    assert_eq!(reopen_entries(w.dir.path()).await.unwrap(), want);
}

#[tokio::test]
async fn a_byte_flipped_anywhere_in_the_last_record_drops_it() {
    let w = write_some().await;
    let last = w.frames.last().unwrap().clone();
    let earlier = &w.written[..w.written.len() - 1];
    for at in last {
        for flip in [0xff, 0x01] {
            let mut bytes = w.original.clone();
            bytes[at] ^= flip;
            std::fs::write(&w.segment, &bytes).unwrap();

            let got =
                reopen_entries(w.dir.path()).await.unwrap_or_else(|e| panic!("flip {flip:#x} at {at}: {e}"));
            assert_eq!(got, earlier, "flip {flip:#x} at {at}");
            // The damaged record is gone from disk too: reopening again agrees.
            assert_eq!(reopen_entries(w.dir.path()).await.unwrap(), earlier);
        }
    }
}

#[tokio::test]
async fn a_byte_flipped_before_the_last_record_fails_open_naming_segment_and_offset() {
    let w = write_some().await;
    let before_last = &w.frames[..w.frames.len() - 1];
    for frame in before_last {
        for at in frame.clone() {
            let mut bytes = w.original.clone();
            bytes[at] ^= 0xff;
            std::fs::write(&w.segment, &bytes).unwrap();

            match reopen_entries(w.dir.path()).await {
                Err(WalError::CorruptRecord { segment, offset, .. }) => {
                    assert_eq!(segment, w.segment, "flip at {at}");
                    assert_eq!(offset, frame.start as u64, "flip at {at}");
                    let msg = WalError::CorruptRecord { segment, offset, reason: "" }.to_string();
                    assert!(
                        msg.contains(&w.segment.display().to_string())
                            && msg.contains(&frame.start.to_string())
                    );
                }
                other => panic!("flip at {at} in frame {frame:?}: expected CorruptRecord, got {other:?}"),
            }
        }
    }
    // Nothing was cut: with the damage undone the log is whole again.
    std::fs::write(&w.segment, &w.original).unwrap();
    assert_eq!(reopen_entries(w.dir.path()).await.unwrap(), w.written);
}

#[tokio::test]
async fn damage_in_a_sealed_segment_fails_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = open(dir.path(), WalConfig { segment_size: 4096, ..WalConfig::default() });
        for index in 1..=100 {
            append(&mut store, vec![entry(1, index, 100)]).await.unwrap();
        }
    }
    let segs = segments(dir.path());
    assert!(segs.len() > 2, "{} segments", segs.len());
    let first = &segs[0];
    let mut bytes = std::fs::read(first).unwrap();
    let last_frame = frames(&bytes).last().unwrap().clone();
    bytes[last_frame.start + 10] ^= 0xff;
    std::fs::write(first, &bytes).unwrap();

    match WalLogStore::open(dir.path(), WalConfig::default()) {
        Err(WalError::CorruptRecord { segment, offset, .. }) => {
            assert_eq!(&segment, first);
            assert_eq!(offset, last_frame.start as u64);
        }
        Err(other) => panic!("expected CorruptRecord, got {other}"),
        Ok(_) => panic!("expected CorruptRecord, the wal opened"),
    }
}

#[tokio::test]
async fn a_torn_write_with_a_lost_sector_is_cut_even_when_later_records_survived() {
    // A crash during an unsynced write can persist later pages but not an
    // earlier one: the lost sector reads as zeros.
    let dir = tempfile::tempdir().unwrap();
    let mut written = Vec::new();
    {
        let mut store = open(dir.path(), config());
        let first = entry(1, 1, 100);
        append(&mut store, vec![first.clone()]).await.unwrap();
        written.push(first);
        // One batch: a big record spanning whole sectors, then small ones.
        let batch = vec![entry(1, 2, 3000), entry(1, 3, 50), entry(1, 4, 50)];
        append(&mut store, batch).await.unwrap();
    }
    let segment = segments(dir.path())[0].clone();
    let mut bytes = std::fs::read(&segment).unwrap();
    let big = frames(&bytes)[2].clone();
    let sector = big.start.div_ceil(512) * 512;
    bytes[sector..sector + 512].fill(0);
    std::fs::write(&segment, &bytes).unwrap();

    assert_eq!(reopen_entries(dir.path()).await.unwrap(), written);
}

#[tokio::test]
async fn a_last_segment_torn_inside_its_header_is_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let small = || WalConfig { segment_size: 4096, ..WalConfig::default() };
    {
        let mut store = open(dir.path(), small());
        for index in 1..=60 {
            append(&mut store, vec![entry(1, index, 100)]).await.unwrap();
        }
    }
    let segs = segments(dir.path());
    assert!(segs.len() >= 2);
    // What the sealed segments hold survives; the last one is torn at byte 3.
    let mut survivors = 0;
    for seg in &segs[..segs.len() - 1] {
        survivors += frames(&std::fs::read(seg).unwrap()).len() - 1;
    }
    let last = segs.last().unwrap();
    std::fs::OpenOptions::new().write(true).open(last).unwrap().set_len(3).unwrap();
    // And an unfinished segment creation leaves a temp file behind.
    std::fs::write(dir.path().join("ffffffffffffffff-0000000000000000.tmp"), b"partial").unwrap();

    let want: Vec<Entry> = (1..=survivors as u64).map(|i| entry(1, i, 100)).collect();
    {
        let mut store = open(dir.path(), small());
        assert_eq!(all_entries(&mut store).await, want);
        assert_eq!(segments(dir.path()).len(), segs.len(), "the torn segment is replaced, not added to");
        append(&mut store, vec![entry(2, survivors as u64 + 1, 100)]).await.unwrap();
    }
    assert!(!dir.path().join("ffffffffffffffff-0000000000000000.tmp").exists());
    let mut store = open(dir.path(), small());
    let got = all_entries(&mut store).await;
    assert_eq!(&got[..survivors], &want[..]);
    assert_eq!(got.len(), survivors + 1);
}
