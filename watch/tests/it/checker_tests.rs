//! Each checker passes a correct recorded history and catches a violation
//! planted in it.

use bytes::Bytes;
use keelson_proto::etcdserverpb::{ResponseHeader, WatchResponse};
use keelson_proto::mvccpb::Event;

use crate::checkers::*;
use crate::fixture::{MemStore, Op, WatchRecord, state_at, watch_req};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// rev 1: a=1 · rev 2: a=2, b=1 · rev 3: delete a · rev 4: a=3
fn log() -> Vec<(i64, Vec<Event>)> {
    let store = MemStore::default();
    store.txn(&[Op::Put(b("a"), b("1"))]);
    store.txn(&[Op::Put(b("a"), b("2")), Op::Put(b("b"), b("1"))]);
    store.txn(&[Op::Delete(b("a"))]);
    store.txn(&[Op::Put(b("a"), b("3"))]);
    store.log()
}

fn header(rev: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader { revision: rev, ..Default::default() })
}

fn events_resp(rev: i64, events: Vec<Event>) -> WatchResponse {
    WatchResponse { header: header(rev), watch_id: 7, events, ..Default::default() }
}

fn with_prev(log: &[(i64, Vec<Event>)], ev: &Event) -> Event {
    let kv = ev.kv.as_ref().unwrap();
    let mut ev = ev.clone();
    if kv.create_revision != kv.mod_revision {
        ev.prev_kv = state_at(log, &kv.key, kv.mod_revision - 1);
    }
    ev
}

/// A correct record of a prev_kv watch on [a, c) from revision 1: one
/// response per revision, then a progress notification at 4.
fn good(log: &[(i64, Vec<Event>)]) -> WatchRecord {
    let mut req = watch_req("a", "c", 1);
    req.prev_kv = true;
    let mut responses =
        vec![WatchResponse { header: header(0), watch_id: 7, created: true, ..Default::default() }];
    for (rev, evs) in log {
        responses.push(events_resp(*rev, evs.iter().map(|e| with_prev(log, e)).collect()));
    }
    responses.push(WatchResponse { header: header(4), watch_id: -1, ..Default::default() });
    WatchRecord { req, id: 7, responses, created: true, closed: false }
}

#[test]
fn a_correct_history_passes_every_checker() {
    let log = log();
    check_all(&[good(&log)], &log, 0).unwrap();
}

#[test]
fn ordered_catches_events_out_of_order() {
    let log = log();
    let mut w = good(&log);
    w.responses.swap(2, 3);
    assert!(check_ordered(&w).unwrap_err().starts_with("ordered"));
}

#[test]
fn unique_catches_a_repeated_event() {
    let log = log();
    let mut w = good(&log);
    let again = w.responses[3].clone();
    w.responses.insert(4, again);
    assert!(check_unique(&w).unwrap_err().starts_with("unique"));
}

#[test]
fn atomic_catches_a_split_revision() {
    let log = log();
    let mut w = good(&log);
    let mut second = w.responses[2].clone();
    second.events.remove(0);
    w.responses[2].events.truncate(1);
    w.responses.insert(3, second);
    assert!(check_atomic(&w, &log).unwrap_err().starts_with("atomic"));
    // Fragments of one revision are not a split.
    w.responses[2].fragment = true;
    check_atomic(&w, &log).unwrap();
}

#[test]
fn atomic_catches_a_partial_revision() {
    let log = log();
    let mut w = good(&log);
    w.responses[2].events.truncate(1);
    assert!(check_atomic(&w, &log).unwrap_err().starts_with("atomic"));
}

#[test]
fn reliable_catches_a_gap() {
    let log = log();
    let mut w = good(&log);
    w.responses.remove(3);
    assert!(check_reliable(&w, &log).unwrap_err().starts_with("reliable"));
}

#[test]
fn reliable_catches_a_missing_tail_before_progress() {
    let log = log();
    let mut w = good(&log);
    w.responses.remove(4);
    assert!(check_reliable(&w, &log).unwrap_err().starts_with("reliable"));
}

#[test]
fn resumable_catches_a_late_start() {
    let log = log();
    let mut w = good(&log);
    w.responses.remove(1);
    assert!(check_resumable(&w, &log).unwrap_err().starts_with("resumable"));
}

#[test]
fn resumable_catches_a_needless_compaction_cancel() {
    let log = log();
    let mut w = good(&log);
    w.responses.truncate(3);
    w.responses.push(WatchResponse {
        header: header(4),
        watch_id: 7,
        canceled: true,
        compact_revision: 2,
        ..Default::default()
    });
    assert!(check_resumable(&w, &log).unwrap_err().starts_with("resumable"));
    w.responses.last_mut().unwrap().compact_revision = 3;
    check_resumable(&w, &log).unwrap();
}

#[test]
fn prev_kv_catches_a_wrong_previous_value() {
    let log = log();
    let mut w = good(&log);
    w.responses[2].events[0].prev_kv.as_mut().unwrap().value = b("stale");
    assert!(check_prev_kv(&w, &log, 0).unwrap_err().starts_with("prev_kv"));
}

#[test]
fn prev_kv_catches_a_missing_or_unasked_previous_value() {
    let log = log();
    let mut w = good(&log);
    w.responses[3].events[0].prev_kv = None;
    assert!(check_prev_kv(&w, &log, 0).is_err());
    // Missing is allowed where the previous revision is compacted.
    check_prev_kv(&w, &log, 4).unwrap();
    let mut w = good(&log);
    w.req.prev_kv = false;
    assert!(check_prev_kv(&w, &log, 0).is_err());
}

#[test]
fn bookmarkable_catches_an_event_behind_progress() {
    let log = log();
    let mut w = good(&log);
    let progress = w.responses.pop().unwrap();
    w.responses.insert(3, WatchResponse { header: header(3), ..progress });
    assert!(check_bookmarkable(&w).unwrap_err().starts_with("bookmarkable"));
}
