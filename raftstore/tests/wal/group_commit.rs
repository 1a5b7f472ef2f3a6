//! Group commit: concurrent appends share fsyncs.

use std::sync::Arc;

use keelson_raftstore::TypeConfig;
use keelson_raftstore::WalConfig;
use openraft::RaftLogReader;
use openraft::storage::IOFlushed;
use openraft::storage::RaftLogStorage;
use openraft::type_config::TypeConfigExt;

use crate::fixture::all_entries;
use crate::fixture::entry;
use crate::fixture::open;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_share_fsyncs() {
    const APPENDERS: u64 = 64;
    const ROUNDS: u64 = 20;
    let dir = tempfile::tempdir().unwrap();
    let shared = Arc::new(tokio::sync::Mutex::new(open(dir.path(), WalConfig::default())));

    let mut tasks = Vec::new();
    for _ in 0..APPENDERS {
        let store = shared.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..ROUNDS {
                let (tx, rx) = TypeConfig::oneshot();
                {
                    // Like openraft's core: appends are issued one at a time,
                    // and each waits for its own flush callback.
                    let mut store = store.lock().await;
                    let next = store.get_log_state().await.unwrap().last_log_id.map_or(1, |id| id.index + 1);
                    store.append(vec![entry(1, next, 256)], IOFlushed::signal(tx)).await.unwrap();
                }
                rx.await.unwrap().unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }

    let mut store = Arc::try_unwrap(shared).ok().expect("appenders are done").into_inner();
    let stats = store.stats();
    assert_eq!(stats.appends, APPENDERS * ROUNDS);
    assert_eq!(stats.entries, APPENDERS * ROUNDS);
    assert!(stats.fsyncs > 0);
    assert!(stats.fsyncs < stats.appends, "{} fsyncs for {} appends", stats.fsyncs, stats.appends);
    assert_eq!(stats.fsync_buckets.last().copied(), Some(stats.fsyncs));

    let entries = all_entries(&mut store).await;
    assert_eq!(entries.len() as u64, APPENDERS * ROUNDS);
    let vote_before = store.read_vote().await.unwrap();
    drop(store);

    // Everything acknowledged is there after reopening.
    let mut reopened = open(dir.path(), WalConfig::default());
    assert_eq!(all_entries(&mut reopened).await, entries);
    assert_eq!(reopened.read_vote().await.unwrap(), vote_before);
}
