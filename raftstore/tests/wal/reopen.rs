//! Reopening returns the state the WAL had: entries, vote, committed log id,
//! truncations and purges, across segments.

use keelson_raftstore::WalConfig;
use keelson_raftstore::WalError;
use keelson_raftstore::WalLogStore;
use keelson_raftstore::types::LeaderId;
use keelson_raftstore::types::Vote;
use openraft::LogState;
use openraft::RaftLogReader;
use openraft::storage::RaftLogStorage;

use crate::fixture::all_entries;
use crate::fixture::append;
use crate::fixture::entry;
use crate::fixture::log_id;
use crate::fixture::membership_entry;
use crate::fixture::open;
use crate::fixture::segments;
use crate::fixture::small_segments;

type State = (
    LogState<keelson_raftstore::TypeConfig>,
    Vec<keelson_raftstore::types::Entry>,
    Option<Vote>,
    Option<keelson_raftstore::types::LogId>,
);

async fn state(store: &mut WalLogStore) -> State {
    (
        store.get_log_state().await.unwrap(),
        all_entries(store).await,
        store.read_vote().await.unwrap(),
        store.read_committed().await.unwrap(),
    )
}

#[tokio::test]
async fn reopen_after_vote_truncate_and_purge_returns_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let mut store = open(dir.path(), small_segments());
        store
            .save_vote(&Vote { leader_id: LeaderId { term: 1, node_id: 1 }, committed: false })
            .await
            .unwrap();
        append(&mut store, vec![membership_entry(1, 0, &[1, 2, 3])]).await.unwrap();
        append(&mut store, (1..=20).map(|i| entry(1, i, 64)).collect()).await.unwrap();
        store.save_committed(Some(log_id(1, 12))).await.unwrap();
        store.truncate_after(Some(log_id(1, 15))).await.unwrap();
        store
            .save_vote(&Vote { leader_id: LeaderId { term: 2, node_id: 2 }, committed: true })
            .await
            .unwrap();
        append(&mut store, (16..=18).map(|i| entry(2, i, 64)).collect()).await.unwrap();
        store.purge(log_id(1, 5)).await.unwrap();

        let s = state(&mut store).await;
        assert_eq!(s.0.last_purged_log_id, Some(log_id(1, 5)));
        assert_eq!(s.0.last_log_id, Some(log_id(2, 18)));
        assert_eq!(s.1.first().map(|e| e.log_id), Some(log_id(1, 6)));
        assert_eq!(s.1.len(), 13);
        assert_eq!(s.3, Some(log_id(1, 12)));
        s
    };
    let mut store = open(dir.path(), small_segments());
    assert_eq!(state(&mut store).await, before);
    // A second reopen (after the first wrote nothing) agrees too.
    drop(store);
    let mut store = open(dir.path(), WalConfig::default());
    assert_eq!(state(&mut store).await, before);
}

#[tokio::test]
async fn truncating_everything_and_purging_past_the_end_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = open(dir.path(), small_segments());
        append(&mut store, (0..=9).map(|i| entry(1, i, 32)).collect()).await.unwrap();
        store.truncate_after(None).await.unwrap();
    }
    {
        let mut store = open(dir.path(), small_segments());
        let s = state(&mut store).await;
        assert_eq!(s.0, LogState { last_purged_log_id: None, last_log_id: None });
        assert!(s.1.is_empty());
        // Purge past the end, as after installing a snapshot.
        store.purge(log_id(3, 50)).await.unwrap();
    }
    let mut store = open(dir.path(), small_segments());
    let s = state(&mut store).await;
    assert_eq!(s.0, LogState { last_purged_log_id: Some(log_id(3, 50)), last_log_id: Some(log_id(3, 50)) });
    append(&mut store, vec![entry(3, 51, 8)]).await.unwrap();
    assert_eq!(store.get_log_state().await.unwrap().last_log_id, Some(log_id(3, 51)));
}

#[tokio::test]
async fn purge_removes_whole_segments_and_old_entries_read_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let vote = Vote { leader_id: LeaderId { term: 4, node_id: 2 }, committed: true };
    {
        let mut store = open(dir.path(), small_segments());
        store.save_vote(&vote).await.unwrap();
        for i in 1..=200 {
            append(&mut store, vec![entry(4, i, 100)]).await.unwrap();
        }
    }
    let before = segments(dir.path()).len();
    assert!(before > 4, "{before} segments");
    {
        // Old entries, from the first segments, read back after reopening.
        let mut store = open(dir.path(), small_segments());
        let entries = all_entries(&mut store).await;
        assert_eq!(entries, (1..=200).map(|i| entry(4, i, 100)).collect::<Vec<_>>());
        assert_eq!(store.try_get_log_entries(3..5).await.unwrap(), vec![entry(4, 3, 100), entry(4, 4, 100)]);

        store.purge(log_id(4, 150)).await.unwrap();
    }
    let after = segments(dir.path()).len();
    assert!(after < before, "purge left {after} of {before} segments");

    let mut store = open(dir.path(), small_segments());
    let s = state(&mut store).await;
    assert_eq!(s.0.last_purged_log_id, Some(log_id(4, 150)));
    assert_eq!(s.1, (151..=200).map(|i| entry(4, i, 100)).collect::<Vec<_>>());
    assert_eq!(s.2, Some(vote), "the vote outlives the segment it was written to");
}

#[tokio::test]
async fn a_wal_directory_opens_once_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), WalConfig::default());
    match WalLogStore::open(dir.path(), WalConfig::default()) {
        Err(WalError::LockDir { .. }) => {}
        Err(other) => panic!("expected LockDir, got {other}"),
        Ok(_) => panic!("opened a locked wal"),
    }
    drop(store);
    WalLogStore::open(dir.path(), WalConfig::default()).unwrap();
}

#[tokio::test]
async fn holes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path(), WalConfig::default());
    append(&mut store, vec![entry(1, 1, 8)]).await.unwrap();
    assert!(append(&mut store, vec![entry(1, 3, 8)]).await.is_err());
    assert!(append(&mut store, vec![entry(1, 1, 8)]).await.is_err());
    append(&mut store, vec![entry(1, 2, 8)]).await.unwrap();
}

/// Segments are written full of zeros before use (appends then change no
/// file system metadata), the next one is prepared in the background, and
/// the spare files a writer leaves behind are removed when the WAL reopens.
#[tokio::test]
async fn segments_are_allocated_up_front_and_spares_are_cleaned_up() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    // Larger than a file system block, so a sparse tail would show.
    let config = || WalConfig { segment_size: 64 * 1024, ..WalConfig::default() };
    let size = config().segment_size;
    {
        let mut store = open(dir.path(), config());
        for i in 1..=100 {
            append(&mut store, vec![entry(1, i, 2000)]).await.unwrap();
        }
    }
    let segs = segments(dir.path());
    assert!(segs.len() > 2, "{} segments", segs.len());
    for seg in &segs {
        let meta = std::fs::metadata(seg).unwrap();
        assert_eq!(meta.len(), size, "{}", seg.display());
        assert!(meta.blocks() * 512 >= size, "{} is sparse: {} blocks", seg.display(), meta.blocks());
    }
    let leftovers = || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .count()
    };
    std::fs::write(dir.path().join("spare-0-0.tmp"), b"left by a crash").unwrap();
    let mut store = open(dir.path(), config());
    assert_eq!(all_entries(&mut store).await.len(), 100);
    drop(store);
    // At most the spare the reopened writer started filling itself.
    assert!(leftovers() <= 1, "{} leftover spare files", leftovers());
}
