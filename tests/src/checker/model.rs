//! The sequential specification: an etcd MVCC keyspace.
//!
//! The model keeps every version of every key (reads at an old revision
//! must be answered), the current revision and the live leases. It is
//! mutated in place: [`KvModel::apply`] returns an [`Undo`] that
//! [`KvModel::revert`] takes back, so the search never copies the state.
//! Its hash ([`KvModel::state_hash`]) is kept incrementally as a wrapping
//! sum of the hashes of its parts, so equal states hash equally no matter
//! in which order they were reached.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Bound;

use super::history::{
    Bytes, Compare, CompareOp, CompareTarget, DeleteRequest, KeyValue, PutRequest, RangeRequest, Request,
    Response, TxnOp, TxnOpResponse,
};
use super::watch::{Event, EventKind};

/// Why the model would reject a request (a server would answer an error).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("requested lease not found ({0})")]
    LeaseNotFound(i64),
    #[error("lease already exists ({0})")]
    LeaseExists(i64),
    #[error("required revision {requested} is a future revision (current {current})")]
    FutureRevision { requested: i64, current: i64 },
    #[error("duplicate key {0:?} given in txn request")]
    DuplicateKey(Bytes),
}

/// One version of a key; `version == 0` is a tombstone.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Rec {
    mod_rev: i64,
    create_rev: i64,
    version: i64,
    value: Bytes,
    lease: i64,
}

impl Rec {
    fn to_kv(&self, key: &Bytes) -> KeyValue {
        KeyValue {
            key: key.clone(),
            value: self.value.clone(),
            create_revision: self.create_rev,
            mod_revision: self.mod_rev,
            version: self.version,
            lease: self.lease,
        }
    }
}

/// The live record of `recs` at revision `rev`.
fn rec_at(recs: &[Rec], rev: i64) -> Option<&Rec> {
    let i = recs.partition_point(|r| r.mod_rev <= rev);
    if i == 0 {
        return None;
    }
    let r = &recs[i - 1];
    (r.version != 0).then_some(r)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
struct StateHash(u64, u64);

impl StateHash {
    fn of<T: Hash>(tag: u8, part: &T) -> StateHash {
        let mut a = std::hash::DefaultHasher::new();
        (tag, 0x5151_u16).hash(&mut a);
        part.hash(&mut a);
        let mut b = std::hash::DefaultHasher::new();
        (tag, 0xa7a7_u16, 17_u64).hash(&mut b);
        part.hash(&mut b);
        StateHash(a.finish(), b.finish())
    }
    fn add(&mut self, o: StateHash) {
        self.0 = self.0.wrapping_add(o.0);
        self.1 = self.1.wrapping_add(o.1);
    }
    fn sub(&mut self, o: StateHash) {
        self.0 = self.0.wrapping_sub(o.0);
        self.1 = self.1.wrapping_sub(o.1);
    }
}

#[derive(Clone, Debug)]
enum UndoItem {
    Pushed(Bytes),
    LeaseAdded(i64),
    LeaseRemoved(i64),
}

/// What [`KvModel::revert`] needs to take one `apply` back.
#[derive(Clone, Debug)]
pub struct Undo {
    rev: i64,
    items: Vec<UndoItem>,
}

/// The etcd keyspace as a sequential object.
#[derive(Clone, Debug)]
pub struct KvModel {
    rev: i64,
    keys: BTreeMap<Bytes, Vec<Rec>>,
    leases: BTreeSet<i64>,
    hash: StateHash,
}

impl KvModel {
    /// An empty keyspace at `initial_revision` (1 for a new etcd cluster).
    pub fn new(initial_revision: i64) -> KvModel {
        let mut m =
            KvModel { rev: 0, keys: BTreeMap::new(), leases: BTreeSet::new(), hash: StateHash::default() };
        m.set_rev(initial_revision);
        m
    }

    /// The current revision.
    pub fn revision(&self) -> i64 {
        self.rev
    }

    /// A hash of the whole state (every version, the revision, the leases).
    pub fn state_hash(&self) -> u128 {
        ((self.hash.0 as u128) << 64) | self.hash.1 as u128
    }

    /// The live key-values at `rev` (0: current), in key order.
    pub fn snapshot(&self, rev: i64) -> Vec<KeyValue> {
        let rev = if rev == 0 { self.rev } else { rev };
        self.keys.iter().filter_map(|(k, recs)| rec_at(recs, rev).map(|r| r.to_kv(k))).collect()
    }

    /// The live value of `key` at `rev` (0: current).
    pub fn get(&self, key: &[u8], rev: i64) -> Option<KeyValue> {
        let rev = if rev == 0 { self.rev } else { rev };
        let (k, recs) = self.keys.get_key_value(key)?;
        rec_at(recs, rev).map(|r| r.to_kv(k))
    }

    fn set_rev(&mut self, rev: i64) {
        self.hash.sub(StateHash::of(1, &self.rev));
        self.rev = rev;
        self.hash.add(StateHash::of(1, &self.rev));
    }

    fn push(&mut self, key: &Bytes, rec: Rec, undo: &mut Vec<UndoItem>) {
        self.hash.add(StateHash::of(2, &(key, &rec)));
        self.keys.entry(key.clone()).or_default().push(rec);
        undo.push(UndoItem::Pushed(key.clone()));
    }

    fn pop(&mut self, key: &Bytes) {
        let recs = self.keys.get_mut(key).expect("undo of a key that is not there");
        let rec = recs.pop().expect("undo of a version that is not there");
        if recs.is_empty() {
            self.keys.remove(key);
        }
        self.hash.sub(StateHash::of(2, &(key, &rec)));
    }

    fn add_lease(&mut self, id: i64, undo: &mut Vec<UndoItem>) {
        self.leases.insert(id);
        self.hash.add(StateHash::of(3, &id));
        undo.push(UndoItem::LeaseAdded(id));
    }

    fn remove_lease(&mut self, id: i64, undo: &mut Vec<UndoItem>) {
        self.leases.remove(&id);
        self.hash.sub(StateHash::of(3, &id));
        undo.push(UndoItem::LeaseRemoved(id));
    }

    /// Takes back one [`KvModel::apply`].
    pub fn revert(&mut self, undo: Undo) {
        for item in undo.items.into_iter().rev() {
            match item {
                UndoItem::Pushed(k) => self.pop(&k),
                UndoItem::LeaseAdded(id) => {
                    self.leases.remove(&id);
                    self.hash.sub(StateHash::of(3, &id));
                }
                UndoItem::LeaseRemoved(id) => {
                    self.leases.insert(id);
                    self.hash.add(StateHash::of(3, &id));
                }
            }
        }
        self.set_rev(undo.rev);
    }

    /// Applies `req` and returns the response etcd would give (or the error
    /// it would answer, in which case nothing changed). `hint` is the
    /// recorded response, used only for the server-chosen id of a
    /// LeaseGrant. When `events` is given, the watch events the request
    /// produces are appended to it (with their full `prev_kv`).
    pub fn apply(
        &mut self,
        req: &Request,
        hint: Option<&Response>,
        events: Option<&mut Vec<Event>>,
    ) -> (Result<Response, ModelError>, Undo) {
        let start_rev = self.rev;
        let events_len = events.as_ref().map(|e| e.len());
        let mut tx = Tx { new_rev: self.rev + 1, changed: false, items: Vec::new(), events, m: self };
        let res = tx.run(req, hint);
        let Tx { changed, items, events, .. } = tx;
        let mut undo = Undo { rev: start_rev, items };
        match res {
            Ok(resp) => {
                if changed {
                    self.set_rev(start_rev + 1);
                }
                (Ok(resp), undo)
            }
            Err(e) => {
                self.revert(undo);
                if let (Some(ev), Some(n)) = (events, events_len) {
                    ev.truncate(n);
                }
                undo = Undo { rev: start_rev, items: Vec::new() };
                (Err(e), undo)
            }
        }
    }

    fn key_iter<'a>(
        &'a self,
        key: &'a Bytes,
        end: &'a Bytes,
    ) -> Box<dyn Iterator<Item = (&'a Bytes, &'a Vec<Rec>)> + 'a> {
        if end.is_empty() {
            Box::new(self.keys.get_key_value(key).into_iter())
        } else if end.as_slice() == [0] {
            Box::new(self.keys.range::<Bytes, _>((Bound::Included(key), Bound::Unbounded)))
        } else if key >= end {
            Box::new(std::iter::empty())
        } else {
            Box::new(self.keys.range::<Bytes, _>((Bound::Included(key), Bound::Excluded(end))))
        }
    }

    fn compare(&self, c: &Compare) -> bool {
        let rec = self.keys.get(&c.key).and_then(|recs| rec_at(recs, self.rev));
        let ord = match (&c.target, rec) {
            (CompareTarget::Value(_), None) => return false,
            (CompareTarget::Value(v), Some(r)) => r.value.cmp(v),
            (CompareTarget::Version(x), r) => r.map_or(0, |r| r.version).cmp(x),
            (CompareTarget::CreateRevision(x), r) => r.map_or(0, |r| r.create_rev).cmp(x),
            (CompareTarget::ModRevision(x), r) => r.map_or(0, |r| r.mod_rev).cmp(x),
            (CompareTarget::Lease(x), r) => r.map_or(0, |r| r.lease).cmp(x),
        };
        match c.op {
            CompareOp::Equal => ord.is_eq(),
            CompareOp::NotEqual => ord.is_ne(),
            CompareOp::Less => ord.is_lt(),
            CompareOp::Greater => ord.is_gt(),
        }
    }
}

/// One request being applied: every write lands at `new_rev`.
struct Tx<'m, 'e> {
    m: &'m mut KvModel,
    new_rev: i64,
    changed: bool,
    items: Vec<UndoItem>,
    events: Option<&'e mut Vec<Event>>,
}

type RangeOut = (Vec<KeyValue>, i64, bool);

impl Tx<'_, '_> {
    fn run(&mut self, req: &Request, hint: Option<&Response>) -> Result<Response, ModelError> {
        match req {
            Request::Range(r) => {
                let (kvs, count, more) = self.range(r)?;
                Ok(Response::Range { revision: self.m.rev, kvs, count, more })
            }
            Request::Put(p) => {
                let prev_kv = self.put(p)?;
                Ok(Response::Put { revision: self.new_rev, prev_kv })
            }
            Request::DeleteRange(d) => {
                let (deleted, prev_kvs) = self.delete(d)?;
                Ok(Response::DeleteRange { revision: self.end_rev(), deleted, prev_kvs })
            }
            Request::Txn(t) => {
                let succeeded = t.compare.iter().all(|c| self.m.compare(c));
                let ops = if succeeded { &t.success } else { &t.failure };
                let mut responses = Vec::with_capacity(ops.len());
                for op in ops {
                    responses.push(match op {
                        TxnOp::Range(r) => {
                            let (kvs, count, more) = self.range(r)?;
                            TxnOpResponse::Range { kvs, count, more }
                        }
                        TxnOp::Put(p) => TxnOpResponse::Put { prev_kv: self.put(p)? },
                        TxnOp::Delete(d) => {
                            let (deleted, prev_kvs) = self.delete(d)?;
                            TxnOpResponse::Delete { deleted, prev_kvs }
                        }
                    });
                }
                Ok(Response::Txn { revision: self.end_rev(), succeeded, responses })
            }
            Request::LeaseGrant { id, .. } => {
                let id = match (*id, hint) {
                    (0, Some(Response::LeaseGrant { id, .. })) => *id,
                    (id, _) => id,
                };
                if id != 0 {
                    if self.m.leases.contains(&id) {
                        return Err(ModelError::LeaseExists(id));
                    }
                    self.m.add_lease(id, &mut self.items);
                }
                Ok(Response::LeaseGrant { revision: self.m.rev, id })
            }
            Request::LeaseRevoke { id } => {
                if !self.m.leases.contains(id) {
                    return Err(ModelError::LeaseNotFound(*id));
                }
                self.m.remove_lease(*id, &mut self.items);
                let attached: Vec<Bytes> = (self.m.keys.iter())
                    .filter(|(_, recs)| rec_at(recs, self.m.rev).is_some_and(|r| r.lease == *id))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in attached {
                    self.tombstone(&k);
                }
                Ok(Response::LeaseRevoke { revision: self.end_rev() })
            }
        }
    }

    fn end_rev(&self) -> i64 {
        if self.changed { self.new_rev } else { self.m.rev }
    }

    /// Reads see this request's own writes (etcd reads a write txn at its
    /// new revision once it has changed something).
    fn range(&self, r: &RangeRequest) -> Result<RangeOut, ModelError> {
        let at = if r.revision > 0 {
            if r.revision > self.m.rev {
                return Err(ModelError::FutureRevision { requested: r.revision, current: self.m.rev });
            }
            r.revision
        } else {
            self.new_rev
        };
        let mut kvs: Vec<KeyValue> = (self.m.key_iter(&r.key, &r.range_end))
            .filter_map(|(k, recs)| rec_at(recs, at).map(|rec| rec.to_kv(k)))
            .collect();
        let count = kvs.len() as i64;
        let mut more = false;
        if r.count_only {
            kvs.clear();
        } else if r.limit > 0 && count > r.limit {
            kvs.truncate(r.limit as usize);
            more = true;
        }
        if r.keys_only {
            for kv in &mut kvs {
                kv.value = Bytes::default();
            }
        }
        Ok((kvs, count, more))
    }

    fn current(&self, key: &Bytes) -> Option<&Rec> {
        self.m.keys.get(key).and_then(|recs| rec_at(recs, self.new_rev))
    }

    fn written_here(&self, key: &Bytes) -> bool {
        self.m.keys.get(key).and_then(|recs| recs.last()).is_some_and(|r| r.mod_rev == self.new_rev)
    }

    fn put(&mut self, p: &PutRequest) -> Result<Option<KeyValue>, ModelError> {
        if p.lease != 0 && !self.m.leases.contains(&p.lease) {
            return Err(ModelError::LeaseNotFound(p.lease));
        }
        if self.written_here(&p.key) {
            return Err(ModelError::DuplicateKey(p.key.clone()));
        }
        let prev = self.current(&p.key).cloned();
        let rec = Rec {
            mod_rev: self.new_rev,
            create_rev: prev.as_ref().map_or(self.new_rev, |r| r.create_rev),
            version: prev.as_ref().map_or(1, |r| r.version + 1),
            value: p.value.clone(),
            lease: p.lease,
        };
        let prev_kv = prev.map(|r| r.to_kv(&p.key));
        if let Some(ev) = self.events.as_deref_mut() {
            ev.push(Event { kind: EventKind::Put, kv: rec.to_kv(&p.key), prev_kv: prev_kv.clone() });
        }
        self.m.push(&p.key, rec, &mut self.items);
        self.changed = true;
        Ok(if p.prev_kv { prev_kv } else { None })
    }

    fn delete(&mut self, d: &DeleteRequest) -> Result<(i64, Vec<KeyValue>), ModelError> {
        let live: Vec<Bytes> = (self.m.key_iter(&d.key, &d.range_end))
            .filter(|(_, recs)| rec_at(recs, self.new_rev).is_some())
            .map(|(k, _)| k.clone())
            .collect();
        if let Some(k) = live.iter().find(|k| self.written_here(k)) {
            return Err(ModelError::DuplicateKey(k.clone()));
        }
        let mut prev_kvs = Vec::new();
        for k in &live {
            let prev = self.tombstone(k);
            if d.prev_kv {
                prev_kvs.push(prev);
            }
        }
        Ok((live.len() as i64, prev_kvs))
    }

    /// Deletes a live key at `new_rev`; returns what it held.
    fn tombstone(&mut self, key: &Bytes) -> KeyValue {
        let prev = self.current(key).expect("tombstone of a live key").to_kv(key);
        let rec = Rec { mod_rev: self.new_rev, create_rev: 0, version: 0, value: Bytes::default(), lease: 0 };
        if let Some(ev) = self.events.as_deref_mut() {
            let kv = KeyValue { key: key.clone(), mod_revision: self.new_rev, ..Default::default() };
            ev.push(Event { kind: EventKind::Delete, kv, prev_kv: Some(prev.clone()) });
        }
        self.m.push(key, rec, &mut self.items);
        self.changed = true;
        prev
    }
}

impl fmt::Display for KvModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rev {}", self.rev)?;
        for kv in self.snapshot(0) {
            write!(f, ", {:?}={:?}@{}", kv.key, kv.value, kv.mod_revision)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::history::{DeleteRequest, TxnRequest, prefix_end};

    fn kv(key: &str, value: &str, create: i64, m: i64, version: i64) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
            create_revision: create,
            mod_revision: m,
            version,
            lease: 0,
        }
    }

    fn ok(m: &mut KvModel, req: Request) -> Response {
        m.apply(&req, None, None).0.expect("applies")
    }

    #[test]
    fn revisions_versions_and_history_reads() {
        let mut m = KvModel::new(1);
        assert_eq!(ok(&mut m, Request::put("a", "1")), Response::Put { revision: 2, prev_kv: None });
        assert_eq!(ok(&mut m, Request::put("a", "2")), Response::Put { revision: 3, prev_kv: None });
        assert_eq!(
            ok(&mut m, Request::get("a")),
            Response::Range { revision: 3, kvs: vec![kv("a", "2", 2, 3, 2)], count: 1, more: false }
        );
        let old = Request::Range(RangeRequest { key: "a".into(), revision: 2, ..Default::default() });
        assert_eq!(
            ok(&mut m, old),
            Response::Range { revision: 3, kvs: vec![kv("a", "1", 2, 2, 1)], count: 1, more: false }
        );
        // Deleting nothing keeps the revision; deleting something bumps it.
        assert_eq!(
            ok(&mut m, Request::delete("b")),
            Response::DeleteRange { revision: 3, deleted: 0, prev_kvs: vec![] }
        );
        assert_eq!(
            ok(&mut m, Request::delete("a")),
            Response::DeleteRange { revision: 4, deleted: 1, prev_kvs: vec![] }
        );
        assert_eq!(ok(&mut m, Request::put("a", "3")), Response::Put { revision: 5, prev_kv: None });
        assert_eq!(m.get(b"a", 0), Some(kv("a", "3", 5, 5, 1)));
        let future = Request::Range(RangeRequest { key: "a".into(), revision: 6, ..Default::default() });
        assert!(matches!(m.apply(&future, None, None).0, Err(ModelError::FutureRevision { .. })));
    }

    #[test]
    fn limit_count_and_prefix() {
        let mut m = KvModel::new(1);
        for k in ["p/a", "p/b", "p/c", "q"] {
            ok(&mut m, Request::put(k, "v"));
        }
        let r =
            RangeRequest { key: "p/".into(), range_end: prefix_end(b"p/"), limit: 2, ..Default::default() };
        match ok(&mut m, Request::Range(r.clone())) {
            Response::Range { kvs, count, more, revision } => {
                assert_eq!((kvs.len(), count, more, revision), (2, 3, true, 5));
            }
            other => panic!("{other:?}"),
        }
        let c = RangeRequest { count_only: true, ..r };
        assert_eq!(
            ok(&mut m, Request::Range(c)),
            Response::Range { revision: 5, kvs: vec![], count: 3, more: false }
        );
    }

    #[test]
    fn txn_compares_and_one_revision() {
        let mut m = KvModel::new(1);
        ok(&mut m, Request::put("k", "v1"));
        let txn = |modrev| {
            Request::Txn(TxnRequest {
                compare: vec![Compare {
                    key: "k".into(),
                    op: CompareOp::Equal,
                    target: CompareTarget::ModRevision(modrev),
                }],
                success: vec![
                    TxnOp::Put(PutRequest { key: "k".into(), value: "v2".into(), prev_kv: true, lease: 0 }),
                    TxnOp::Put(PutRequest { key: "j".into(), value: "x".into(), ..Default::default() }),
                    TxnOp::Range(RangeRequest { key: "k".into(), ..Default::default() }),
                ],
                failure: vec![TxnOp::Range(RangeRequest { key: "k".into(), ..Default::default() })],
            })
        };
        match ok(&mut m, txn(2)) {
            Response::Txn { revision, succeeded, responses } => {
                assert_eq!((revision, succeeded), (3, true));
                assert_eq!(responses[0], TxnOpResponse::Put { prev_kv: Some(kv("k", "v1", 2, 2, 1)) });
                assert_eq!(
                    responses[2],
                    TxnOpResponse::Range { kvs: vec![kv("k", "v2", 2, 3, 2)], count: 1, more: false }
                );
            }
            other => panic!("{other:?}"),
        }
        match ok(&mut m, txn(2)) {
            Response::Txn { revision, succeeded, .. } => assert_eq!((revision, succeeded), (3, false)),
            other => panic!("{other:?}"),
        }
        // A value compare on a missing key is false; a version compare sees 0.
        let missing = |target| {
            Request::Txn(TxnRequest {
                compare: vec![Compare { key: "nope".into(), op: CompareOp::Equal, target }],
                ..Default::default()
            })
        };
        assert!(matches!(
            ok(&mut m, missing(CompareTarget::Value("".into()))),
            Response::Txn { succeeded: false, .. }
        ));
        assert!(matches!(
            ok(&mut m, missing(CompareTarget::Version(0))),
            Response::Txn { succeeded: true, .. }
        ));
    }

    #[test]
    fn leases_and_revoke() {
        let mut m = KvModel::new(1);
        let with_lease =
            Request::Put(PutRequest { key: "l".into(), value: "v".into(), lease: 7, prev_kv: false });
        assert_eq!(m.apply(&with_lease, None, None).0, Err(ModelError::LeaseNotFound(7)));
        assert_eq!(
            ok(&mut m, Request::LeaseGrant { id: 7, ttl: 60 }),
            Response::LeaseGrant { revision: 1, id: 7 }
        );
        ok(&mut m, with_lease);
        ok(&mut m, Request::put("other", "v"));
        assert_eq!(ok(&mut m, Request::LeaseRevoke { id: 7 }), Response::LeaseRevoke { revision: 4 });
        assert_eq!(m.get(b"l", 0), None);
        assert!(m.get(b"other", 0).is_some());
        // A server-chosen id comes from the recorded response.
        let hint = Response::LeaseGrant { revision: 4, id: 99 };
        let (r, _) = m.apply(&Request::LeaseGrant { id: 0, ttl: 5 }, Some(&hint), None);
        assert_eq!(r, Ok(hint));
        assert_eq!(ok(&mut m, Request::LeaseRevoke { id: 99 }), Response::LeaseRevoke { revision: 4 });
    }

    #[test]
    fn revert_restores_state_and_hash() {
        let mut m = KvModel::new(1);
        ok(&mut m, Request::put("a", "1"));
        let before = (m.state_hash(), m.revision(), m.snapshot(0));
        let reqs = [
            Request::put("a", "2"),
            Request::DeleteRange(DeleteRequest { key: "a".into(), range_end: "\0".into(), prev_kv: true }),
            Request::LeaseGrant { id: 3, ttl: 1 },
        ];
        let mut undos = Vec::new();
        for r in &reqs {
            undos.push(m.apply(r, None, None).1);
        }
        assert_ne!(m.state_hash(), before.0);
        for u in undos.into_iter().rev() {
            m.revert(u);
        }
        assert_eq!((m.state_hash(), m.revision(), m.snapshot(0)), before);
        // The same state reached in another order hashes the same.
        let mut x = KvModel::new(1);
        let mut y = KvModel::new(1);
        ok(&mut x, Request::LeaseGrant { id: 1, ttl: 1 });
        ok(&mut x, Request::LeaseGrant { id: 2, ttl: 1 });
        ok(&mut y, Request::LeaseGrant { id: 2, ttl: 1 });
        ok(&mut y, Request::LeaseGrant { id: 1, ttl: 1 });
        assert_eq!(x.state_hash(), y.state_hash());
    }

    #[test]
    fn duplicate_keys_in_txn_are_rejected_without_effect() {
        let mut m = KvModel::new(1);
        let t = Request::Txn(TxnRequest {
            success: vec![
                TxnOp::Put(PutRequest { key: "a".into(), value: "1".into(), ..Default::default() }),
                TxnOp::Put(PutRequest { key: "a".into(), value: "2".into(), ..Default::default() }),
            ],
            ..Default::default()
        });
        let h = m.state_hash();
        assert!(matches!(m.apply(&t, None, None).0, Err(ModelError::DuplicateKey(_))));
        assert_eq!((m.state_hash(), m.revision()), (h, 1));
    }
}
