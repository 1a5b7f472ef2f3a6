//! Single behaviours of the store, each as etcd shows it.

use bytes::Bytes;
use keelson_mvcc::{ALARM_NOSPACE, Config, KeyRange, MvccError, Store};
use keelson_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use keelson_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use keelson_proto::etcdserverpb::request_op::Request;
use keelson_proto::etcdserverpb::response_op::Response;
use keelson_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use keelson_proto::mvccpb::event::EventType;

fn b(s: &str) -> Bytes {
    Bytes::from(s.to_string())
}

fn put(s: &Store, k: &str, v: &str) -> i64 {
    let mut w = s.write().unwrap();
    let r = w.put(&PutRequest { key: b(k), value: b(v), ..Default::default() }).unwrap();
    w.commit().unwrap();
    r.header.unwrap().revision
}

fn del(s: &Store, k: &str, end: &str) -> i64 {
    let mut w = s.write().unwrap();
    let r = w.delete_range(&DeleteRangeRequest { key: b(k), range_end: b(end), prev_kv: false }).unwrap();
    w.commit().unwrap();
    r.deleted
}

fn get(s: &Store, k: &str) -> Option<keelson_proto::mvccpb::KeyValue> {
    s.range(&RangeRequest { key: b(k), ..Default::default() }).unwrap().kvs.pop()
}

fn open(dir: &std::path::Path) -> Store {
    Store::open(dir, Config::default()).unwrap()
}

#[test]
fn versions_generations_and_tombstones() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    // An empty store is at revision 1 (as etcd's): the first put makes 2.
    assert_eq!(s.current_revision(), 1);
    assert_eq!(put(&s, "k", "1"), 2);
    assert_eq!(put(&s, "k", "2"), 3);
    let kv = get(&s, "k").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
    assert_eq!(del(&s, "k", ""), 1);
    assert_eq!(s.current_revision(), 4);
    // Deleting nothing makes no revision.
    assert_eq!(del(&s, "k", ""), 0);
    assert_eq!(s.current_revision(), 4);
    assert!(get(&s, "k").is_none());
    put(&s, "k", "3");
    let kv = get(&s, "k").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
    // Old revisions stay readable until compacted.
    let old = s.range(&RangeRequest { key: b("k"), revision: 3, ..Default::default() }).unwrap();
    assert_eq!(old.kvs[0].value, b("2"));
    assert_eq!(old.header.unwrap().revision, 5);
    assert!(matches!(
        s.range(&RangeRequest { key: b("k"), revision: 6, ..Default::default() }),
        Err(MvccError::FutureRev { current: 5 })
    ));
    let ev = s.events(KeyRange::new(b"k", b""), 1, 5).unwrap();
    let kinds: Vec<_> = ev.iter().map(|e| (e.r#type, e.kv.as_ref().unwrap().mod_revision)).collect();
    let (p, d) = (EventType::Put as i32, EventType::Delete as i32);
    assert_eq!(kinds, vec![(p, 2), (p, 3), (d, 4), (p, 5)]);
}

#[test]
fn range_sort_limit_count_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    for (k, v) in [("a", "3"), ("b", "1"), ("c", "2"), ("d", "0")] {
        put(&s, k, v);
    }
    put(&s, "b", "9");
    let all = |mut r: RangeRequest| {
        r.key = b("a");
        r.range_end = b("\0");
        s.range(&r).unwrap()
    };
    let r = all(RangeRequest { limit: 2, ..Default::default() });
    assert_eq!((r.kvs.len(), r.count, r.more), (2, 4, true));
    let r = all(RangeRequest {
        sort_order: SortOrder::Descend as i32,
        sort_target: SortTarget::Value as i32,
        limit: 2,
        ..Default::default()
    });
    let keys: Vec<_> = r.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, vec![b("b"), b("a")]);
    assert!(r.more);
    // A non-key target without an order sorts ascending.
    let r = all(RangeRequest { sort_target: SortTarget::Mod as i32, ..Default::default() });
    let keys: Vec<_> = r.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, vec![b("a"), b("c"), b("d"), b("b")]);
    let r = all(RangeRequest { count_only: true, ..Default::default() });
    assert_eq!((r.kvs.len(), r.count), (0, 4));
    let r = all(RangeRequest { keys_only: true, ..Default::default() });
    assert!(r.kvs.iter().all(|kv| kv.value.is_empty()));
    // Revision filters prune but do not change count.
    let r = all(RangeRequest { min_mod_revision: 4, ..Default::default() });
    assert_eq!(r.kvs.len(), 3);
    assert_eq!(r.count, 4);
    let r = all(RangeRequest { max_create_revision: 3, ..Default::default() });
    assert_eq!(r.kvs.len(), 2);
    assert!(matches!(s.range(&RangeRequest::default()), Err(MvccError::EmptyKey)));
}

fn cmp(key: &str, target: CompareTarget, result: CompareResult, u: TargetUnion) -> Compare {
    Compare {
        result: result as i32,
        target: target as i32,
        key: b(key),
        range_end: Bytes::new(),
        target_union: Some(u),
    }
}

fn op_put(k: &str, v: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(PutRequest { key: b(k), value: b(v), ..Default::default() })),
    }
}

#[test]
fn txn_compares_and_nested_txns() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    put(&s, "x", "1");
    // Missing key: VERSION compares as 0, VALUE always fails.
    let mut w = s.write().unwrap();
    let r = w
        .txn(&TxnRequest {
            compare: vec![cmp("nope", CompareTarget::Version, CompareResult::Equal, TargetUnion::Version(0))],
            success: vec![op_put("a", "1")],
            failure: vec![],
        })
        .unwrap();
    assert!(r.succeeded);
    let r = w
        .txn(&TxnRequest {
            compare: vec![cmp(
                "nope",
                CompareTarget::Value,
                CompareResult::NotEqual,
                TargetUnion::Value(b("v")),
            )],
            success: vec![],
            failure: vec![],
        })
        .unwrap();
    assert!(!r.succeeded);
    w.commit().unwrap();
    assert_eq!(s.current_revision(), 3);

    // A nested Txn's compares see the state before the outer Txn: the put
    // of x in the outer success branch does not change the nested result.
    let inner = TxnRequest {
        compare: vec![cmp("x", CompareTarget::Value, CompareResult::Equal, TargetUnion::Value(b("1")))],
        success: vec![op_put("inner", "then")],
        failure: vec![op_put("inner", "else")],
    };
    let outer = TxnRequest {
        compare: vec![cmp("x", CompareTarget::Mod, CompareResult::Less, TargetUnion::ModRevision(5))],
        success: vec![op_put("x", "2"), RequestOp { request: Some(Request::RequestTxn(inner)) }],
        failure: vec![],
    };
    let mut w = s.write().unwrap();
    let r = w.txn(&outer).unwrap();
    w.commit().unwrap();
    assert!(r.succeeded);
    let Some(Response::ResponseTxn(nested)) = &r.responses[1].response else { panic!("nested txn") };
    assert!(nested.succeeded);
    assert_eq!(get(&s, "inner").unwrap().value, b("then"));
    // Both changes share one main revision with two sub revisions.
    let x = get(&s, "x").unwrap();
    let inner = get(&s, "inner").unwrap();
    assert_eq!(x.mod_revision, 4);
    assert_eq!(inner.mod_revision, 4);
    assert_eq!(r.header.unwrap().revision, 4);

    // Range compares must hold for every key in the range.
    let mut w = s.write().unwrap();
    let mut c = cmp("a", CompareTarget::Version, CompareResult::Greater, TargetUnion::Version(0));
    c.range_end = b("z");
    let r = w.txn(&TxnRequest { compare: vec![c.clone()], success: vec![], failure: vec![] }).unwrap();
    assert!(r.succeeded);
    c.result = CompareResult::Greater as i32;
    c.target_union = Some(TargetUnion::Version(1));
    let r = w.txn(&TxnRequest { compare: vec![c], success: vec![], failure: vec![] }).unwrap();
    assert!(!r.succeeded);
    // Writing one key twice is refused before anything runs.
    let dup =
        TxnRequest { compare: vec![], success: vec![op_put("d", "1"), op_put("d", "2")], failure: vec![] };
    assert!(matches!(w.txn(&dup), Err(MvccError::DuplicateKey)));
    w.commit().unwrap();
    assert_eq!(s.current_revision(), 4);
}

#[test]
fn put_flags() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let mut w = s.write().unwrap();
    let missing = PutRequest { key: b("k"), ignore_value: true, ..Default::default() };
    assert!(matches!(w.put(&missing), Err(MvccError::KeyNotFound)));
    let both = PutRequest { key: b("k"), value: b("v"), ignore_value: true, ..Default::default() };
    assert!(matches!(w.put(&both), Err(MvccError::ValueProvided)));
    w.put(&PutRequest { key: b("k"), value: b("v"), lease: 7, ..Default::default() }).unwrap();
    let r =
        w.put(&PutRequest { key: b("k"), ignore_value: true, prev_kv: true, ..Default::default() }).unwrap();
    assert_eq!(r.prev_kv.unwrap().lease, 7);
    let check = |id: i64| id == 7;
    w.set_lease_check(&check);
    let r = w.put(&PutRequest { key: b("j"), value: b("v"), lease: 8, ..Default::default() });
    assert!(matches!(r, Err(MvccError::LeaseNotFound)));
    w.commit().unwrap();
    let kv = get(&s, "k").unwrap();
    assert_eq!((kv.value, kv.lease, kv.version), (b("v"), 0, 2));
}

#[test]
fn compaction_keeps_latest_and_hash_agrees() {
    let a = tempfile::tempdir().unwrap();
    let c = tempfile::tempdir().unwrap();
    let sa = open(a.path());
    let sc = open(c.path());
    for s in [&sa, &sc] {
        for i in 0..50 {
            put(s, &format!("k{}", i % 7), &format!("v{i}"));
        }
        del(s, "k3", "");
    }
    assert_eq!(sa.hash_kv(0).unwrap(), sc.hash_kv(0).unwrap());
    let before = sa.hash_kv(40).unwrap();
    // Compact both; the hash agrees whether or not the physical removal of
    // old revisions has finished.
    for s in [&sa, &sc] {
        let mut w = s.write().unwrap();
        let wait = w.compact(30).unwrap();
        w.commit().unwrap();
        // Only one of the twins waits for its physical compaction.
        if std::ptr::eq(s, &sc) {
            wait.wait();
        }
    }
    assert_eq!(sa.hash_kv(40).unwrap().hash, sc.hash_kv(40).unwrap().hash);
    // Compaction changes what the hash covers (as in etcd): members compare
    // hashes at the same compacted revision.
    assert_ne!(sa.hash_kv(40).unwrap().hash, before.hash);
    assert!(matches!(sa.hash_kv(20), Err(MvccError::Compacted { compacted: 30 })));
    assert!(matches!(
        sa.range(&RangeRequest { key: b("k1"), revision: 29, ..Default::default() }),
        Err(MvccError::Compacted { .. })
    ));
    // Reading at the compacted revision itself still works.
    let r = sa
        .range(&RangeRequest { key: b("k0"), range_end: b("\0"), revision: 30, ..Default::default() })
        .unwrap();
    assert_eq!(r.count, 7);
    assert!(matches!(sa.events(KeyRange::new(b"k", b"\0"), 29, 40), Err(MvccError::Compacted { .. })));
}

#[test]
fn interrupted_compaction_resumes_on_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        for i in 0..20 {
            put(&s, "k", &format!("{i}"));
        }
        let mut w = s.write().unwrap();
        let _wait = w.compact(15).unwrap();
        // Commit records the scheduled compaction; dropping the store right
        // away may cut the physical pass short.
        w.commit().unwrap();
    }
    let s = open(dir.path());
    assert_eq!(s.compacted_revision(), 15);
    assert!(matches!(
        s.range(&RangeRequest { key: b("k"), revision: 14, ..Default::default() }),
        Err(MvccError::Compacted { .. })
    ));
    assert_eq!(get(&s, "k").unwrap().version, 20);
    let r = s.range(&RangeRequest { key: b("k"), revision: 15, ..Default::default() }).unwrap();
    assert_eq!(r.kvs[0].value, b("13"));
}

#[test]
fn quota_raises_nospace_until_disarmed() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), Config { quota_bytes: 64 * 1024, member_id: 9, ..Config::default() })
        .unwrap();
    let big = "x".repeat(8 * 1024);
    let mut last = Ok(0);
    for i in 0..64 {
        let mut w = s.write().unwrap();
        last =
            w.put(&PutRequest { key: b(&format!("k{i}")), value: b(&big), ..Default::default() }).map(|_| i);
        w.commit().unwrap();
        if last.is_err() {
            break;
        }
    }
    assert!(matches!(last, Err(MvccError::NoSpace)), "{last:?}");
    assert_eq!(s.alarms().len(), 1);
    assert_eq!((s.alarms()[0].member_id, s.alarms()[0].alarm), (9, ALARM_NOSPACE));
    assert_eq!(MvccError::NoSpace.to_string(), "mvcc: database space exceeded");
    // Reads and deletes still work; small writes do not while the alarm is on.
    assert!(get(&s, "k0").is_some());
    assert!(del(&s, "k", "l") > 0);
    let mut w = s.write().unwrap();
    assert!(matches!(
        w.put(&PutRequest { key: b("s"), value: b("1"), ..Default::default() }),
        Err(MvccError::NoSpace)
    ));
    w.commit().unwrap();
    // The alarm survives a restart.
    drop(s);
    let s =
        Store::open(dir.path(), Config { quota_bytes: 64 * 1024 * 1024, member_id: 9, ..Config::default() })
            .unwrap();
    assert_eq!(s.alarms().len(), 1);
    let mut w = s.write().unwrap();
    assert!(w.deactivate_alarm(9, ALARM_NOSPACE));
    w.put(&PutRequest { key: b("s"), value: b("1"), ..Default::default() }).unwrap();
    w.commit().unwrap();
    assert!(s.alarms().is_empty());
}

#[test]
fn meta_is_written_with_the_data() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        let mut w = s.write().unwrap();
        w.put(&PutRequest { key: b("k"), value: b("v"), ..Default::default() }).unwrap();
        w.put_meta(b"raft/applied", b"42");
        w.commit().unwrap();
    }
    let s = open(dir.path());
    assert_eq!(s.get_meta(b"raft/applied").unwrap().as_deref(), Some(&b"42"[..]));
    assert_eq!(s.current_revision(), 2);
}
