//! [`WriteTxn`]: the write side. One `WriteTxn` is one RocksDB `WriteBatch`
//! holding any number of requests (each that changes something gets its own
//! main revision) plus whatever the raft layer adds with
//! [`WriteTxn::put_meta`] — above all its applied position, so the data and
//! the position that produced it land together.
//!
//! Readers never see a revision before [`WriteTxn::commit`] has written the
//! batch: the index is updated as the requests run, but the current revision
//! only moves at commit and readers only look at revisions up to it.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc;

use bytes::Bytes;
use keelson_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use keelson_proto::etcdserverpb::request_op::Request;
use keelson_proto::etcdserverpb::response_op::Response;
use keelson_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RequestOp,
    ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use keelson_proto::mvccpb::{Event, KeyValue, event::EventType};
use parking_lot::MutexGuard;
use prost::Message;

use crate::compaction::CompactionJob;
use crate::error::{MvccError, Result};
use crate::index::KeyRange;
use crate::key_index::KeyAt;
use crate::range::{self, View};
use crate::revision::Revision;
use crate::store::{ALARM_NOSPACE, META_SCHEDULED_COMPACT, Store, alarm_key};
use crate::txn_check;

/// The events of one main revision, in sub-revision order.
#[derive(Debug, Clone, PartialEq)]
pub struct RevisionEvents {
    pub revision: i64,
    pub events: Vec<Event>,
}

/// What a commit produced: the new current revision and every revision's
/// events, for the watch hub.
#[derive(Debug, Clone, Default)]
pub struct Committed {
    pub revision: i64,
    pub events: Vec<RevisionEvents>,
}

/// Completes when a compaction's physical removal of old revisions has
/// finished (etcd's `physical: true`).
#[derive(Debug)]
pub struct CompactionWait(mpsc::Receiver<()>);

impl CompactionWait {
    /// Blocks until the physical compaction is done (or the store is gone).
    pub fn wait(self) {
        let _ = self.0.recv();
    }
}

/// Decides whether a lease id exists, for puts that attach one.
pub type LeaseCheck<'a> = &'a (dyn Fn(i64) -> bool + Sync);

/// A batch of writes; see the module docs.
pub struct WriteTxn<'s> {
    store: &'s Store,
    _guard: MutexGuard<'s, ()>,
    batch: rocksdb::WriteBatch,
    /// The newest main revision this batch has written (or the current
    /// revision when it has written none).
    rev: i64,
    /// Values written by this batch, by revision, for reads inside it.
    pending: HashMap<Revision, KeyValue>,
    events: Vec<RevisionEvents>,
    compactions: Vec<CompactionJob>,
    lease_check: Option<LeaseCheck<'s>>,
    dirty: bool,
    committed: bool,
}

/// The changes of the request being applied: one main revision.
struct Op {
    main: i64,
    events: Vec<Event>,
}

impl Store {
    /// Starts a write batch. Writers are serialised: this waits for any
    /// other `WriteTxn` to commit or drop.
    pub fn write(&self) -> Result<WriteTxn<'_>> {
        let guard = self.write_lock.lock();
        if self.poisoned.load(Ordering::Acquire) {
            return Err(MvccError::Poisoned);
        }
        let rev = self.state.read().current;
        Ok(WriteTxn {
            store: self,
            _guard: guard,
            batch: rocksdb::WriteBatch::default(),
            rev,
            pending: HashMap::new(),
            events: Vec::new(),
            compactions: Vec::new(),
            lease_check: None,
            dirty: false,
            committed: false,
        })
    }
}

impl<'s> WriteTxn<'s> {
    /// Makes puts that attach a lease fail with `LeaseNotFound` unless
    /// `check` says the lease exists.
    pub fn set_lease_check(&mut self, check: LeaseCheck<'s>) {
        self.lease_check = Some(check);
    }

    /// The revision the batch is at: the last it wrote, or the current one.
    pub fn revision(&self) -> i64 {
        self.rev
    }

    fn header(rev: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader { revision: rev, ..Default::default() })
    }

    fn begin(&self) -> Op {
        Op { main: self.rev + 1, events: Vec::new() }
    }

    fn finish(&mut self, op: Op) -> i64 {
        if !op.events.is_empty() {
            self.rev = op.main;
            self.events.push(RevisionEvents { revision: op.main, events: op.events });
        }
        self.rev
    }

    /// A Range inside this batch: sees what the batch has written.
    pub fn range(&self, req: &RangeRequest) -> Result<keelson_proto::etcdserverpb::RangeResponse> {
        range::range(&TxnView { txn: self, current: self.rev }, req)
    }

    /// Put with etcd's semantics.
    pub fn put(&mut self, req: &PutRequest) -> Result<PutResponse> {
        txn_check::check_put(req)?;
        self.check_quota(txn_check::put_cost(req))?;
        self.check_put_target(req)?;
        let mut op = self.begin();
        let mut resp = self.put_in(&mut op, req)?;
        resp.header = Self::header(self.finish(op));
        Ok(resp)
    }

    /// DeleteRange with etcd's semantics; deleting nothing makes no revision.
    pub fn delete_range(&mut self, req: &DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        txn_check::check_delete(req)?;
        let mut op = self.begin();
        let mut resp = self.delete_in(&mut op, req)?;
        resp.header = Self::header(self.finish(op));
        Ok(resp)
    }

    /// Txn with etcd's semantics: every compare (nested ones too) is decided
    /// against the state before the Txn, then the chosen operations run in
    /// order under one main revision, each seeing the ones before it.
    pub fn txn(&mut self, req: &TxnRequest) -> Result<TxnResponse> {
        txn_check::check_txn(req, self.store.config.max_txn_ops)?;
        let before = TxnView { txn: self, current: self.rev };
        let mut path = Vec::new();
        decide_path(&before, req, &mut path)?;
        let mut puts = Vec::new();
        let mut ranges = Vec::new();
        collect_ops(req, &path, &mut 0, &mut puts, &mut ranges);
        // Everything that could fail is checked before anything runs, so a
        // Txn never stops half way (etcd `checkRequests`).
        for r in ranges.iter().filter(|r| r.revision > 0) {
            range::read_revision(&before, r.revision)?;
        }
        self.check_quota(puts.iter().map(|p| txn_check::put_cost(p)).sum())?;
        for p in puts {
            self.check_put_target(p)?;
        }
        let mut op = self.begin();
        let mut resp = self.txn_in(&mut op, req, &path, &mut 0)?;
        let rev = self.finish(op);
        set_write_headers(&mut resp, rev);
        Ok(resp)
    }

    /// Deletes `keys` (those that exist) in one main revision, as a lease
    /// revoke does; returns how many were deleted.
    pub fn delete_keys(&mut self, keys: &[Bytes]) -> Result<i64> {
        let mut op = self.begin();
        let mut deleted = 0;
        for key in keys {
            let req = DeleteRangeRequest { key: key.clone(), ..Default::default() };
            deleted += self.delete_in(&mut op, &req)?.deleted;
        }
        self.finish(op);
        Ok(deleted)
    }

    /// The events of every revision this batch has written so far.
    pub fn events(&self) -> &[RevisionEvents] {
        &self.events
    }

    /// Schedules a compaction at `rev`: the index forgets older revisions
    /// now; a background pass removes them from RocksDB after commit.
    pub fn compact(&mut self, rev: i64) -> Result<CompactionWait> {
        let mut state = self.store.state.write();
        if rev <= state.compacted {
            return Err(MvccError::Compacted { compacted: state.compacted });
        }
        if rev > self.rev {
            return Err(MvccError::FutureRev { current: self.rev });
        }
        self.dirty = true;
        let keep = state.index.compact(rev);
        state.compacted = rev;
        drop(state);
        let meta = self.store.meta_cf();
        self.batch.put_cf(&meta, META_SCHEDULED_COMPACT, rev.to_be_bytes());
        let (tx, rx) = mpsc::channel();
        self.compactions.push(CompactionJob { rev, keep, done: Some(tx) });
        Ok(CompactionWait(rx))
    }

    /// Raises alarm `alarm` for `member`.
    pub fn activate_alarm(&mut self, member: u64, alarm: i32) {
        self.dirty = true;
        self.store.state.write().alarms.insert((member, alarm));
        let meta = self.store.meta_cf();
        self.batch.put_cf(&meta, alarm_key(member, alarm), b"");
    }

    /// Clears alarm `alarm` of `member`; returns whether it was active.
    pub fn deactivate_alarm(&mut self, member: u64, alarm: i32) -> bool {
        self.dirty = true;
        let was = self.store.state.write().alarms.remove(&(member, alarm));
        let meta = self.store.meta_cf();
        self.batch.delete_cf(&meta, alarm_key(member, alarm));
        was
    }

    /// Stores `value` under `key` in the meta column family, in this batch.
    pub fn put_meta(&mut self, key: &[u8], value: &[u8]) {
        let meta = self.store.meta_cf();
        self.batch.put_cf(&meta, key, value);
    }

    /// Deletes `key` from the meta column family, in this batch.
    pub fn delete_meta(&mut self, key: &[u8]) {
        let meta = self.store.meta_cf();
        self.batch.delete_cf(&meta, key);
    }

    /// Writes the batch (no fsync) and publishes its revisions.
    pub fn commit(mut self) -> Result<Committed> {
        let batch = std::mem::take(&mut self.batch);
        if !batch.is_empty()
            && let Err(e) = self.store.db.write(batch)
        {
            self.store.poisoned.store(true, Ordering::Release);
            self.committed = true;
            return Err(MvccError::Storage { op: "write batch", source: e });
        }
        self.store.state.write().current = self.rev;
        for job in self.compactions.drain(..) {
            self.store.schedule_compaction(job);
        }
        self.committed = true;
        Ok(Committed { revision: self.rev, events: std::mem::take(&mut self.events) })
    }

    fn check_quota(&mut self, cost: u64) -> Result<()> {
        if cost == 0 {
            return Ok(());
        }
        let nospace = self.store.state.read().alarms.iter().any(|&(_, a)| a == ALARM_NOSPACE);
        if nospace {
            return Err(MvccError::NoSpace);
        }
        if self.store.db_size_cached() + cost >= self.store.config.quota_bytes {
            tracing::warn!(
                quota = self.store.config.quota_bytes,
                "database space exceeded, raising NOSPACE alarm"
            );
            self.activate_alarm(self.store.config.member_id, ALARM_NOSPACE);
            return Err(MvccError::NoSpace);
        }
        self.store.add_admitted(cost);
        Ok(())
    }

    /// Checks what a put needs to exist before it runs: the key for
    /// `ignore_value`/`ignore_lease`, the lease it attaches.
    fn check_put_target(&self, req: &PutRequest) -> Result<()> {
        if (req.ignore_value || req.ignore_lease) && self.get(&req.key, self.rev)?.is_none() {
            return Err(MvccError::KeyNotFound);
        }
        if req.lease != 0
            && let Some(check) = self.lease_check
            && !check(req.lease)
        {
            return Err(MvccError::LeaseNotFound);
        }
        Ok(())
    }

    /// The key's value at `at`, seeing this batch's writes.
    fn get(&self, key: &[u8], at: i64) -> Result<Option<KeyValue>> {
        let view = TxnView { txn: self, current: at };
        let (found, _) = view.keys(KeyRange::new(key, b""), at, 1)?;
        match found.into_iter().next() {
            Some((k, s)) => view.load(&k, &s).map(Some),
            None => Ok(None),
        }
    }

    /// The revision reads inside `op` see: its own changes included.
    fn read_rev(&self, op: &Op) -> i64 {
        if op.events.is_empty() { self.rev } else { op.main }
    }

    fn next_rev(op: &Op) -> Revision {
        Revision::new(op.main, op.events.len() as i64)
    }

    fn put_in(&mut self, op: &mut Op, req: &PutRequest) -> Result<PutResponse> {
        self.dirty = true;
        let at = self.read_rev(op);
        let prev =
            if req.prev_kv || req.ignore_value || req.ignore_lease { self.get(&req.key, at)? } else { None };
        let existing = self.store.state.read().index.get(&req.key, at);
        let (value, lease) = match &prev {
            Some(p) => (
                if req.ignore_value { p.value.clone() } else { req.value.clone() },
                if req.ignore_lease { p.lease } else { req.lease },
            ),
            None => (req.value.clone(), req.lease),
        };
        let rev = Self::next_rev(op);
        let kv = KeyValue {
            key: req.key.clone(),
            create_revision: existing.map_or(op.main, |s| s.created.main),
            mod_revision: op.main,
            version: existing.map_or(0, |s| s.version) + 1,
            value,
            lease,
        };
        let kv_cf = self.store.kv_cf();
        self.batch.put_cf(&kv_cf, rev.to_bytes(), kv.encode_to_vec());
        self.store.state.write().index.put(&req.key, rev);
        self.pending.insert(rev, kv.clone());
        op.events.push(Event { r#type: EventType::Put as i32, kv: Some(kv), prev_kv: None });
        Ok(PutResponse { header: None, prev_kv: if req.prev_kv { prev } else { None } })
    }

    fn delete_in(&mut self, op: &mut Op, req: &DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        self.dirty = true;
        let at = self.read_rev(op);
        let view = TxnView { txn: self, current: at };
        let (found, _) = view.keys(KeyRange::new(&req.key, &req.range_end), at, usize::MAX)?;
        let mut prev_kvs = Vec::new();
        if req.prev_kv {
            for (k, s) in &found {
                prev_kvs.push(view.load(k, s)?);
            }
        }
        let kv_cf = self.store.kv_cf();
        for (key, _) in &found {
            let rev = Self::next_rev(op);
            let tomb = KeyValue { key: key.clone(), ..Default::default() };
            self.batch.put_cf(&kv_cf, rev.to_tombstone_bytes(), tomb.encode_to_vec());
            self.store.state.write().index.tombstone(key, rev);
            let kv = KeyValue { key: key.clone(), mod_revision: op.main, ..Default::default() };
            op.events.push(Event { r#type: EventType::Delete as i32, kv: Some(kv), prev_kv: None });
        }
        Ok(DeleteRangeResponse { header: None, deleted: found.len() as i64, prev_kvs })
    }

    fn txn_in(
        &mut self,
        op: &mut Op,
        req: &TxnRequest,
        path: &[bool],
        pos: &mut usize,
    ) -> Result<TxnResponse> {
        let succeeded = path[*pos];
        *pos += 1;
        let branch = if succeeded { &req.success } else { &req.failure };
        let mut responses = Vec::with_capacity(branch.len());
        for item in branch {
            let response = match &item.request {
                Some(Request::RequestRange(r)) => {
                    let view = TxnView { txn: self, current: self.read_rev(op) };
                    Response::ResponseRange(range::range(&view, r)?)
                }
                Some(Request::RequestPut(r)) => Response::ResponsePut(self.put_in(op, r)?),
                Some(Request::RequestDeleteRange(r)) => Response::ResponseDeleteRange(self.delete_in(op, r)?),
                Some(Request::RequestTxn(r)) => Response::ResponseTxn(self.txn_in(op, r, path, pos)?),
                None => continue,
            };
            responses.push(ResponseOp { response: Some(response) });
        }
        Ok(TxnResponse { header: None, succeeded, responses })
    }
}

impl Drop for WriteTxn<'_> {
    fn drop(&mut self) {
        if self.dirty && !self.committed {
            // The index holds changes that never reached RocksDB: refuse
            // further writes rather than serve them.
            tracing::error!("write batch dropped without commit; mvcc store poisoned");
            self.store.poisoned.store(true, Ordering::Release);
        }
    }
}

/// Sets the header revision of every write response in a Txn response.
fn set_write_headers(resp: &mut TxnResponse, rev: i64) {
    resp.header = WriteTxn::header(rev);
    for r in &mut resp.responses {
        match &mut r.response {
            Some(Response::ResponsePut(p)) => p.header = WriteTxn::header(rev),
            Some(Response::ResponseDeleteRange(d)) => d.header = WriteTxn::header(rev),
            Some(Response::ResponseTxn(t)) => set_write_headers(t, rev),
            _ => {}
        }
    }
}

/// Decides every compare of `req` and its nested Txns on the chosen paths,
/// depth first, against `view`; `path` gets one bool per Txn visited.
fn decide_path(view: &TxnView<'_, '_>, req: &TxnRequest, path: &mut Vec<bool>) -> Result<()> {
    let mut ok = true;
    for c in &req.compare {
        if !compare(view, c)? {
            ok = false;
            break;
        }
    }
    path.push(ok);
    let branch = if ok { &req.success } else { &req.failure };
    for item in branch {
        if let Some(Request::RequestTxn(t)) = &item.request {
            decide_path(view, t, path)?;
        }
    }
    Ok(())
}

/// The puts and ranges that will run on `path`, in order.
fn collect_ops<'r>(
    req: &'r TxnRequest,
    path: &[bool],
    pos: &mut usize,
    puts: &mut Vec<&'r PutRequest>,
    ranges: &mut Vec<&'r RangeRequest>,
) {
    let ok = path[*pos];
    *pos += 1;
    let branch: &[RequestOp] = if ok { &req.success } else { &req.failure };
    for item in branch {
        match &item.request {
            Some(Request::RequestPut(p)) => puts.push(p),
            Some(Request::RequestRange(r)) => ranges.push(r),
            Some(Request::RequestTxn(t)) => collect_ops(t, path, pos, puts, ranges),
            _ => {}
        }
    }
}

/// One compare, etcd's rules: every key in the range must satisfy it; a
/// missing key compares as zero, except on VALUE where it always fails.
fn compare(view: &TxnView<'_, '_>, c: &Compare) -> Result<bool> {
    let at = view.current;
    let (found, _) = view.keys(KeyRange::new(&c.key, &c.range_end), at, usize::MAX)?;
    let target = CompareTarget::try_from(c.target).unwrap_or(CompareTarget::Version);
    if found.is_empty() {
        if target == CompareTarget::Value {
            return Ok(false);
        }
        return Ok(compare_kv(c, target, &KeyValue::default()));
    }
    for (k, s) in &found {
        let kv = if target == CompareTarget::Value || target == CompareTarget::Lease {
            view.load(k, s)?
        } else {
            KeyValue {
                create_revision: s.created.main,
                mod_revision: s.modified.main,
                version: s.version,
                ..Default::default()
            }
        };
        if !compare_kv(c, target, &kv) {
            return Ok(false);
        }
    }
    Ok(true)
}

fn compare_kv(c: &Compare, target: CompareTarget, kv: &KeyValue) -> bool {
    use std::cmp::Ordering as O;
    let ord = match (target, &c.target_union) {
        (CompareTarget::Value, Some(TargetUnion::Value(v))) => kv.value.as_ref().cmp(v.as_ref()),
        (CompareTarget::Value, _) => kv.value.as_ref().cmp(&[][..]),
        (CompareTarget::Version, u) => kv.version.cmp(&int_target(u)),
        (CompareTarget::Create, u) => kv.create_revision.cmp(&int_target(u)),
        (CompareTarget::Mod, u) => kv.mod_revision.cmp(&int_target(u)),
        (CompareTarget::Lease, u) => kv.lease.cmp(&int_target(u)),
    };
    match CompareResult::try_from(c.result).unwrap_or(CompareResult::Equal) {
        CompareResult::Equal => ord == O::Equal,
        CompareResult::NotEqual => ord != O::Equal,
        CompareResult::Greater => ord == O::Greater,
        CompareResult::Less => ord == O::Less,
    }
}

fn int_target(u: &Option<TargetUnion>) -> i64 {
    match u {
        Some(TargetUnion::Version(v))
        | Some(TargetUnion::CreateRevision(v))
        | Some(TargetUnion::ModRevision(v))
        | Some(TargetUnion::Lease(v)) => *v,
        _ => 0,
    }
}

/// The writer's view: the index with this batch's changes, values from the
/// batch first and RocksDB after.
struct TxnView<'t, 's> {
    txn: &'t WriteTxn<'s>,
    current: i64,
}

impl View for TxnView<'_, '_> {
    fn current(&self) -> i64 {
        self.current
    }

    fn compacted(&self) -> i64 {
        self.txn.store.state.read().compacted
    }

    fn keys(&self, range: KeyRange<'_>, at: i64, limit: usize) -> Result<(Vec<(Bytes, KeyAt)>, usize)> {
        Ok(self.txn.store.state.read().index.revisions(range, at, limit))
    }

    fn load(&self, key: &Bytes, at: &KeyAt) -> Result<KeyValue> {
        if let Some(kv) = self.txn.pending.get(&at.modified) {
            return Ok(kv.clone());
        }
        self.txn.store.load_with(key, at, &rocksdb::ReadOptions::default())
    }
}
