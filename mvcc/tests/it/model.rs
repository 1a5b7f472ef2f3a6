//! Model-based tests: random sequences of Put / DeleteRange / Txn / Compact
//! / Range (and reopening the store in the middle) run against the RocksDB
//! store and against a plain in-memory model that replays the whole history;
//! every answer must agree.

use std::collections::BTreeMap;

use bytes::Bytes;
use keelson_mvcc::{Config, KeyRange, MvccError, Store};
use keelson_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use keelson_proto::etcdserverpb::request_op::Request;
use keelson_proto::etcdserverpb::response_op::Response;
use keelson_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use keelson_proto::mvccpb::KeyValue;
use proptest::prelude::*;

const KEYS: &[&str] = &["a", "b", "c", "d", "e"];

#[derive(Debug, Clone)]
enum Op {
    Put {
        key: usize,
        value: u8,
    },
    Delete {
        key: usize,
        end: Option<usize>,
    },
    /// If `key`'s mod revision equals `guess` put `then`, else delete `key`.
    Txn {
        key: usize,
        guess: i64,
        then: usize,
    },
    Compact {
        back: i64,
    },
    Range {
        key: usize,
        end: Option<usize>,
        back: i64,
        limit: i64,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..KEYS.len(), any::<u8>()).prop_map(|(key, value)| Op::Put { key, value }),
        2 => (0..KEYS.len(), proptest::option::of(0..=KEYS.len()))
            .prop_map(|(key, end)| Op::Delete { key, end }),
        2 => (0..KEYS.len(), 0i64..12, 0..KEYS.len()).prop_map(|(key, guess, then)| Op::Txn { key, guess, then }),
        1 => (0i64..8).prop_map(|back| Op::Compact { back }),
        4 => (0..KEYS.len(), proptest::option::of(0..=KEYS.len()), -1i64..8, 0i64..3)
            .prop_map(|(key, end, back, limit)| Op::Range { key, end, back, limit }),
        1 => Just(Op::Reopen),
    ]
}

fn key(i: usize) -> Bytes {
    Bytes::from(KEYS.get(i).copied().unwrap_or("z"))
}

fn end_bytes(end: Option<usize>) -> Bytes {
    match end {
        None => Bytes::new(),
        Some(e) if e == KEYS.len() => Bytes::from_static(b"\0"),
        Some(e) => key(e),
    }
}

/// The whole history: for each main revision, the changes (key, new value or
/// None for a delete).
type Changes = Vec<(Bytes, Option<u8>)>;

#[derive(Default)]
struct Model {
    history: Vec<(i64, Changes)>,
    compacted: i64,
}

impl Model {
    fn current(&self) -> i64 {
        self.history.last().map_or(1, |h| h.0)
    }

    fn state_at(&self, rev: i64) -> BTreeMap<Bytes, KeyValue> {
        let mut live: BTreeMap<Bytes, KeyValue> = BTreeMap::new();
        for (r, changes) in self.history.iter().take_while(|(r, _)| *r <= rev) {
            for (k, v) in changes {
                match v {
                    Some(v) => {
                        let prev = live.get(k);
                        let kv = KeyValue {
                            key: k.clone(),
                            create_revision: prev.map_or(*r, |p| p.create_revision),
                            mod_revision: *r,
                            version: prev.map_or(0, |p| p.version) + 1,
                            value: Bytes::from(vec![*v]),
                            lease: 0,
                        };
                        live.insert(k.clone(), kv);
                    }
                    None => {
                        live.remove(k);
                    }
                }
            }
        }
        live
    }

    fn in_range(k: &[u8], start: &[u8], end: &[u8]) -> bool {
        KeyRange::new(start, end).contains(k)
    }

    fn commit(&mut self, changes: Changes) {
        if !changes.is_empty() {
            let rev = self.current() + 1;
            self.history.push((rev, changes));
        }
    }
}

fn open(dir: &std::path::Path) -> Store {
    Store::open(dir, Config::default()).expect("open store")
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Some(open(dir.path()));
    let mut model = Model::default();
    for op in ops {
        let s = store.as_ref().unwrap();
        match op {
            Op::Put { key: k, value } => {
                let mut w = s.write().unwrap();
                let resp = w
                    .put(&PutRequest {
                        key: key(k),
                        value: Bytes::from(vec![value]),
                        prev_kv: true,
                        ..Default::default()
                    })
                    .unwrap();
                w.commit().unwrap();
                let prev = model.state_at(model.current()).get(&key(k)).cloned();
                assert_eq!(resp.prev_kv, prev);
                model.commit(vec![(key(k), Some(value))]);
                assert_eq!(resp.header.unwrap().revision, model.current());
            }
            Op::Delete { key: k, end } => {
                let end = end_bytes(end);
                let mut w = s.write().unwrap();
                let resp = w
                    .delete_range(&DeleteRangeRequest { key: key(k), range_end: end.clone(), prev_kv: true })
                    .unwrap();
                w.commit().unwrap();
                let live = model.state_at(model.current());
                let gone: Vec<KeyValue> =
                    live.values().filter(|kv| Model::in_range(&kv.key, &key(k), &end)).cloned().collect();
                assert_eq!(resp.deleted, gone.len() as i64);
                assert_eq!(resp.prev_kvs, gone);
                model.commit(gone.iter().map(|kv| (kv.key.clone(), None)).collect());
                assert_eq!(resp.header.unwrap().revision, model.current());
            }
            Op::Txn { key: k, guess, then } => {
                let req = TxnRequest {
                    compare: vec![Compare {
                        result: CompareResult::Equal as i32,
                        target: CompareTarget::Mod as i32,
                        key: key(k),
                        range_end: Bytes::new(),
                        target_union: Some(TargetUnion::ModRevision(guess)),
                    }],
                    success: vec![
                        RequestOp {
                            request: Some(Request::RequestPut(PutRequest {
                                key: key(then),
                                value: Bytes::from_static(b"t"),
                                ..Default::default()
                            })),
                        },
                        RequestOp {
                            request: Some(Request::RequestRange(RangeRequest {
                                key: key(then),
                                ..Default::default()
                            })),
                        },
                    ],
                    failure: vec![RequestOp {
                        request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                            key: key(k),
                            ..Default::default()
                        })),
                    }],
                };
                let mut w = s.write().unwrap();
                let resp = w.txn(&req).unwrap();
                w.commit().unwrap();
                let live = model.state_at(model.current());
                let m = live.get(&key(k)).map_or(0, |kv| kv.mod_revision);
                assert_eq!(resp.succeeded, m == guess);
                if m == guess {
                    model.commit(vec![(key(then), Some(b't'))]);
                    // The range inside the Txn sees the put before it.
                    let Some(Response::ResponseRange(r)) = &resp.responses[1].response else {
                        panic!("range response expected")
                    };
                    assert_eq!(r.kvs.len(), 1);
                    assert_eq!(r.kvs[0].mod_revision, model.current());
                } else if live.contains_key(&key(k)) {
                    model.commit(vec![(key(k), None)]);
                }
                assert_eq!(resp.header.unwrap().revision, model.current());
            }
            Op::Compact { back } => {
                let rev = model.current() - back;
                let mut w = s.write().unwrap();
                let res = w.compact(rev);
                if rev <= model.compacted {
                    assert!(matches!(res, Err(MvccError::Compacted { .. })), "{res:?}");
                    w.commit().unwrap();
                } else {
                    let wait = res.unwrap();
                    w.commit().unwrap();
                    wait.wait();
                    model.compacted = rev;
                }
            }
            Op::Range { key: k, end, back, limit } => {
                let rev = if back < 0 { 0 } else { model.current() - back };
                let end = end_bytes(end);
                let req = RangeRequest {
                    key: key(k),
                    range_end: end.clone(),
                    revision: rev,
                    limit,
                    ..Default::default()
                };
                let res = s.range(&req);
                let at = if rev <= 0 { model.current() } else { rev };
                if at < model.compacted {
                    assert!(matches!(res, Err(MvccError::Compacted { .. })), "{res:?}");
                    continue;
                }
                let res = res.unwrap();
                let expect: Vec<KeyValue> = model
                    .state_at(at)
                    .into_values()
                    .filter(|kv| Model::in_range(&kv.key, &key(k), &end))
                    .collect();
                assert_eq!(res.count, expect.len() as i64);
                let shown = if limit > 0 { expect.len().min(limit as usize) } else { expect.len() };
                assert_eq!(res.kvs, expect[..shown].to_vec());
                assert_eq!(res.more, shown < expect.len());
                assert_eq!(res.header.unwrap().revision, model.current());
            }
            Op::Reopen => {
                let before = s.hash_kv(0).unwrap();
                drop(store.take());
                let s = open(dir.path());
                assert_eq!(s.current_revision(), model.current().max(model.compacted));
                assert_eq!(s.compacted_revision(), model.compacted);
                assert_eq!(s.hash_kv(0).unwrap().hash, before.hash);
                store = Some(s);
            }
        }
    }
    // Everything the model holds since the compaction is in the history.
    let s = store.as_ref().unwrap();
    let events = s.events(KeyRange::new(b"\0", b"\0"), model.compacted.max(1), model.current()).unwrap();
    let expected: usize =
        model.history.iter().filter(|(r, _)| *r >= model.compacted.max(1)).map(|(_, c)| c.len()).sum();
    // Tombstones at the compacted revision itself are removed by compaction.
    assert!(events.len() <= expected);
    let after: usize = model.history.iter().filter(|(r, _)| *r > model.compacted).map(|(_, c)| c.len()).sum();
    assert!(events.len() >= after);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn store_agrees_with_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops);
    }
}
