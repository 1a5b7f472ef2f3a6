//! etcd's watch behaviours, one scenario each, checked with the guarantee
//! checkers and by looking at the responses.

use std::time::Duration;

use bytes::Bytes;
use keelson_watch::{WatchConfig, WatchCreateRequest, is_progress_notify};

use crate::checkers::check_all;
use crate::fixture::{Harness, Op, Recorder, wait_until, watch_req};

fn config() -> WatchConfig {
    WatchConfig { resync_interval: Duration::from_millis(5), ..WatchConfig::default() }
}

fn check(h: &Harness, streams: &[&Recorder]) {
    let log = h.store.log();
    for s in streams {
        check_all(&s.watches, &log, h.store.compacted()).unwrap();
    }
}

#[test]
fn live_events_reach_key_and_range_watchers() {
    let h = Harness::new(config());
    let mut s = h.stream();
    let key = s.watch(watch_req("a", "", 0)).unwrap();
    let range = s.watch(watch_req("a", "c", 0)).unwrap();
    let from = s.watch(watch_req("b", "\0", 0)).unwrap();
    assert_eq!((key, range, from), (0, 1, 2), "server-chosen ids count from 0");
    h.put("a", "1");
    h.put("b", "1");
    h.put("zz", "1");
    h.delete("a");
    let rev = h.store.rev();
    s.sync_to(rev);
    let count = |id: usize| s.watches[id].events().len();
    assert_eq!((count(0), count(1), count(2)), (2, 3, 2));
    assert!(s.watches.iter().all(|w| w.responses[0].created));
    check(&h, &[&s]);
}

#[test]
fn a_watch_from_the_past_catches_up_then_joins_the_head() {
    // A ring of 8 revisions: the oldest part comes from the EventSource.
    let h = Harness::new(WatchConfig { history_revisions: 8, catchup_revisions: 5, ..config() });
    for i in 0..40 {
        h.put(&format!("k{}", i % 4), &i.to_string());
    }
    h.settle();
    let mut s = h.stream();
    s.watch(watch_req("k", "l", 3)).unwrap();
    s.watch(watch_req("k1", "", 30)).unwrap();
    s.watch(watch_req("k2", "", 38)).unwrap();
    // Writes keep coming while they catch up.
    for i in 40..60 {
        h.put(&format!("k{}", i % 4), &i.to_string());
        s.drain();
    }
    s.sync_to(h.store.rev());
    assert_eq!(s.watches[0].events().len(), 60 - 2);
    check(&h, &[&s]);
}

#[test]
fn a_compacted_start_revision_cancels_the_watch() {
    let h = Harness::new(WatchConfig { history_revisions: 4, ..config() });
    for i in 0..20 {
        h.put("a", &i.to_string());
    }
    h.compact(10);
    h.settle();
    let mut s = h.stream();
    let old = s.watch(watch_req("a", "", 5)).unwrap();
    let at = s.watch(watch_req("a", "", 11)).unwrap();
    s.sync_to(h.store.rev());
    let cancel = s.watches[old as usize].responses.last().unwrap().clone();
    assert!(cancel.canceled && cancel.compact_revision == 10, "{cancel:?}");
    assert_eq!(s.watches[at as usize].events().len(), 10);
    // A negative start revision is refused like etcd does.
    let refused = s.stream.watch(&watch_req("a", "", -1));
    assert!(refused.is_err());
    wait_until(|| {
        s.rx.try_recv()
            .is_ok_and(|r| r.created && r.canceled && r.watch_id == -1 && !r.cancel_reason.is_empty())
    });
    check(&h, &[&s]);
}

#[test]
fn compaction_cancels_an_unsynced_watcher_that_falls_behind_it() {
    let h = Harness::new(WatchConfig { history_revisions: 2, stream_capacity: 2, ..config() });
    let mut s = h.stream();
    s.watch(watch_req("a", "", 0)).unwrap();
    for i in 0..30 {
        h.put("a", &i.to_string());
    }
    h.settle();
    // The watcher is parked at an early revision; compact past it.
    h.compact(25);
    wait_until(|| {
        s.drain();
        s.watches[0].closed
    });
    let last = s.watches[0].responses.last().unwrap();
    assert_eq!(last.compact_revision, 25);
    check(&h, &[&s]);
}

#[test]
fn filters_drop_puts_or_deletes() {
    let h = Harness::new(config());
    let mut s = h.stream();
    s.watch(WatchCreateRequest { filters: vec![0], ..watch_req("a", "", 0) }).unwrap();
    s.watch(WatchCreateRequest { filters: vec![1], ..watch_req("a", "", 0) }).unwrap();
    h.put("a", "1");
    h.delete("a");
    h.put("a", "2");
    s.sync_to(h.store.rev());
    assert_eq!(s.watches[0].events().iter().map(|e| e.r#type).collect::<Vec<_>>(), vec![1]);
    assert_eq!(s.watches[1].events().iter().map(|e| e.r#type).collect::<Vec<_>>(), vec![0, 0]);
    check(&h, &[&s]);
}

#[test]
fn prev_kv_is_filled_live_and_in_catch_up() {
    let h = Harness::new(WatchConfig { history_revisions: 3, ..config() });
    let mut s = h.stream();
    s.watch(WatchCreateRequest { prev_kv: true, ..watch_req("a", "b", 0) }).unwrap();
    for i in 0..10 {
        h.put("a", &i.to_string());
        h.put("ab", &i.to_string());
    }
    h.delete("a");
    h.settle();
    s.watch(WatchCreateRequest { prev_kv: true, ..watch_req("a", "b", 2) }).unwrap();
    s.watch(WatchCreateRequest { prev_kv: true, ..watch_req("a", "", 19) }).unwrap();
    h.put("a", "again");
    s.sync_to(h.store.rev());
    for w in &s.watches {
        assert!(
            w.events().iter().filter(|e| e.kv.as_ref().unwrap().version > 1).all(|e| e.prev_kv.is_some())
        );
    }
    assert_eq!(s.watches[1].events().len(), 21);
    check(&h, &[&s]);
}

#[test]
fn large_responses_are_fragmented_for_watches_that_ask() {
    let h = Harness::new(WatchConfig { max_request_bytes: 4096, ..config() });
    let mut s = h.stream();
    s.watch(WatchCreateRequest { fragment: true, ..watch_req("k", "l", 0) }).unwrap();
    s.watch(watch_req("k", "l", 0)).unwrap();
    let big = Bytes::from(vec![b'x'; 1000]);
    let ops: Vec<Op> = (0..20).map(|i| Op::Put(Bytes::from(format!("k{i:02}")), big.clone())).collect();
    h.txn(&ops);
    s.sync_to(h.store.rev());
    let frag = &s.watches[0].responses;
    let pieces: Vec<_> = frag.iter().filter(|r| !r.events.is_empty()).collect();
    assert!(pieces.len() > 1);
    assert!(pieces[..pieces.len() - 1].iter().all(|r| r.fragment));
    assert!(!pieces.last().unwrap().fragment);
    let whole: Vec<_> = s.watches[1].responses.iter().filter(|r| !r.events.is_empty()).collect();
    assert_eq!(whole.len(), 1);
    assert_eq!(whole[0].events.len(), 20);
    check(&h, &[&s]);
}

#[test]
fn periodic_progress_goes_to_idle_synced_watches_only() {
    let h = Harness::new(WatchConfig { progress_notify_interval: Duration::from_millis(30), ..config() });
    let mut s = h.stream();
    let id = s.watch(WatchCreateRequest { progress_notify: true, ..watch_req("a", "", 0) }).unwrap();
    s.watch(watch_req("b", "", 0)).unwrap();
    h.put("a", "1");
    h.settle();
    wait_until(|| {
        s.drain();
        s.watches[0].responses.iter().any(|r| is_progress_notify(r) && r.watch_id == id)
    });
    let progress = s.watches[0].responses.iter().find(|r| is_progress_notify(r)).unwrap();
    assert_eq!(progress.header.as_ref().unwrap().revision, 1);
    assert!(s.watches[1].responses.iter().all(|r| !is_progress_notify(r)));
    check(&h, &[&s]);
}

#[test]
fn requested_progress_waits_for_unsynced_watches() {
    let h = Harness::new(WatchConfig { stream_capacity: 4, ..config() });
    let mut s = h.stream();
    s.watch(watch_req("a", "", 0)).unwrap();
    for i in 0..50 {
        h.put("a", &i.to_string());
    }
    h.settle();
    // The unread stream parked its watcher: the request must wait.
    s.stream.request_progress();
    std::thread::sleep(Duration::from_millis(50));
    assert!(h.hub.stats().parked == 1);
    s.drain_at_most(3);
    assert!(s.progress_all.is_empty(), "no progress while the watch is behind");
    wait_until(|| {
        s.drain();
        !s.progress_all.is_empty()
    });
    assert_eq!(s.progress_all, vec![50]);
    assert_eq!(s.watches[0].events().len(), 50);
    check(&h, &[&s]);
}

#[test]
fn a_slow_stream_is_parked_without_holding_back_others() {
    let h = Harness::new(WatchConfig { stream_capacity: 4, history_revisions: 16, ..config() });
    let mut slow = h.stream();
    let mut fast = h.stream();
    slow.watch(watch_req("a", "", 0)).unwrap();
    fast.watch(watch_req("a", "", 0)).unwrap();
    for i in 0..200 {
        h.put("a", &i.to_string());
        fast.drain();
    }
    fast.sync_to(200);
    assert_eq!(fast.watches[0].events().len(), 200);
    assert_eq!(h.hub.stats().parked, 1);
    // The slow reader catches up from history, the oldest part from the store.
    slow.sync_to(200);
    assert_eq!(slow.watches[0].events().len(), 200);
    check(&h, &[&slow, &fast]);
}

#[test]
fn cancel_and_drop_clean_up() {
    let h = Harness::new(config());
    let mut s = h.stream();
    let a = s.watch(watch_req("a", "", 0)).unwrap();
    s.watch(watch_req("a", "c", 0)).unwrap();
    assert!(s.cancel(a));
    assert!(!s.cancel(a));
    h.put("a", "1");
    s.sync_to(1);
    assert!(s.watches[0].closed);
    assert!(s.watches[0].events().is_empty());
    assert_eq!(s.watches[1].events().len(), 1);
    let mut other = h.stream();
    for i in 0..100 {
        other.watch(watch_req(&format!("k{i}"), "", 0)).unwrap();
    }
    assert_eq!(h.hub.stats().watchers, 101);
    drop(other);
    drop(s);
    assert_eq!(h.hub.stats(), keelson_watch::HubStats::default());
}

#[test]
fn refused_creates_answer_like_etcd() {
    let h = Harness::new(config());
    let (stream, mut rx) = h.hub.new_stream();
    assert_eq!(stream.watch(&WatchCreateRequest { watch_id: 5, ..watch_req("a", "", 0) }), Ok(5));
    assert!(stream.watch(&WatchCreateRequest { watch_id: 5, ..watch_req("b", "", 0) }).is_err());
    assert!(stream.watch(&watch_req("b", "a", 0)).is_err());
    let created = rx.try_recv().unwrap();
    assert!(created.created && created.watch_id == 5 && !created.canceled);
    let dup = rx.try_recv().unwrap();
    assert_eq!(dup.cancel_reason, "mvcc: duplicate watch ID provided on the WatchStream");
    let empty = rx.try_recv().unwrap();
    assert_eq!(empty.cancel_reason, "mvcc: watcher range is empty");
    assert!(empty.created && empty.canceled && empty.watch_id == -1);
}

#[test]
fn a_future_start_revision_waits_for_it() {
    let h = Harness::new(config());
    let mut s = h.stream();
    s.watch(watch_req("a", "", 5)).unwrap();
    for i in 0..8 {
        h.put("a", &i.to_string());
    }
    s.sync_to(8);
    let revs: Vec<i64> = s.watches[0].events().iter().map(|e| e.kv.as_ref().unwrap().mod_revision).collect();
    assert_eq!(revs, vec![5, 6, 7, 8]);
    check(&h, &[&s]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiver_wakes_on_new_responses_and_ends_on_drop() {
    let h = Harness::new(config());
    let (stream, mut rx) = h.hub.new_stream();
    stream.watch(&watch_req("a", "", 0)).unwrap();
    assert!(rx.recv().await.unwrap().created);
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while let Some(resp) = rx.recv().await {
            n += resp.events.len();
        }
        n
    });
    for i in 0..10 {
        h.put("a", &i.to_string());
    }
    h.settle();
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(stream);
    assert_eq!(reader.await.unwrap(), 10);
}

#[test]
fn prev_kv_catch_up_from_the_ring_looks_up_what_the_live_path_skipped() {
    // Nobody wanted prev_kv while these were written, so the ring holds no
    // looked-up prev_kv: the catch-up must fetch them.
    let h = Harness::new(config());
    for i in 0..30 {
        h.put(&format!("k{}", i % 3), &i.to_string());
    }
    h.delete("k1");
    h.settle();
    let mut s = h.stream();
    s.watch(WatchCreateRequest { prev_kv: true, ..watch_req("k", "l", 2) }).unwrap();
    s.watch(WatchCreateRequest { prev_kv: true, filters: vec![0], ..watch_req("k1", "", 1) }).unwrap();
    s.sync_to(h.store.rev());
    assert_eq!(s.watches[0].events().len(), 30);
    assert_eq!(s.watches[0].events().iter().filter(|e| e.prev_kv.is_some()).count(), 30 - 2);
    assert_eq!(s.watches[1].events().len(), 1);
    assert!(s.watches[1].events()[0].prev_kv.is_some());
    check(&h, &[&s]);
}

/// The apply path hands the hub a whole batch of revisions in one message:
/// every watcher still sees each revision, in order, exactly once.
#[test]
fn revisions_handed_over_in_one_batch_arrive_in_order() {
    let h = Harness::new(config());
    let mut s = h.stream();
    s.watch(watch_req("a", "c", 0)).unwrap();
    s.watch(watch_req("b", "", 0)).unwrap();
    let mut batch = Vec::new();
    for i in 0..20 {
        let key = if i % 2 == 0 { "a" } else { "b" };
        let ops = [Op::Put(Bytes::from(key), Bytes::from(format!("{i}")))];
        batch.push(h.store.txn(&ops).expect("a put always writes"));
    }
    h.hub.notify_many(batch);
    h.put("b", "last");
    s.sync_to(h.store.rev());
    assert_eq!(s.watches[0].events().len(), 21);
    assert_eq!(s.watches[1].events().len(), 11);
    check(&h, &[&s]);
}
