//! [`StateMachine`]: openraft's state machine over the MVCC store.
//!
//! Committed entries are applied in batches: every entry of a batch goes
//! into one mvcc `WriteTxn` (one RocksDB `WriteBatch`, no fsync) together
//! with the applied log id and membership, so data and position never
//! disagree. Only after the batch is written are the watch hub notified and
//! the waiting clients answered.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use keelson_mvcc::{CompactionWait, MvccError, Store, WriteTxn};
use keelson_proto::etcdserverpb::alarm_request::AlarmAction;
use keelson_proto::etcdserverpb::{
    AlarmMember, AlarmResponse, CompactionResponse, LeaseGrantResponse, LeaseRevokeResponse, ResponseHeader,
};
use keelson_proto::keelsonraftpb::internal_request::Request;
use keelson_proto::keelsonraftpb::internal_response::Response;
use keelson_proto::keelsonraftpb::{
    ApplyError, ApplyErrorKind, InternalRequest, InternalResponse, LeaseRenewAll,
};
use keelson_watch::WatchHub;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use parking_lot::Mutex;
use prost::Message;

use crate::lessor::{Lessor, MAX_LEASE_TTL};
use crate::snapshot::{self, SnapshotFile};
use crate::types::{CommandResult, LogId, StoredMembership, TypeConfig};

pub(crate) const META_APPLIED: &[u8] = b"raft/applied";
pub(crate) const META_MEMBERSHIP: &[u8] = b"raft/membership";
pub(crate) const META_LEASE_PREFIX: &[u8] = b"lease/";

/// Entries applied per RocksDB batch at most.
const MAX_BATCH: usize = 1000;

type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>;

/// What the state machine shares with the rest of the member.
#[derive(Debug)]
pub struct Shared {
    pub store: Arc<Store>,
    pub hub: WatchHub,
    pub lessor: Arc<Lessor>,
    pub member_id: u64,
    /// Where packed snapshots live.
    pub snap_dir: PathBuf,
    /// Physical-compaction waits by log index, for the proposer to pick up.
    pub compaction_waits: Mutex<HashMap<u64, CompactionWait>>,
}

pub struct StateMachine {
    shared: Arc<Shared>,
}

impl StateMachine {
    pub fn new(shared: Arc<Shared>) -> Self {
        StateMachine { shared }
    }
}

fn io_err(e: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::other(e)
}

fn lease_key(id: i64) -> Vec<u8> {
    let mut k = META_LEASE_PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// Loads persisted leases into `lessor` and attaches the live keys.
pub(crate) fn load_leases(store: &Store, lessor: &Lessor) -> io::Result<()> {
    for (k, v) in store.scan_meta(META_LEASE_PREFIX).map_err(io_err)? {
        let id = i64::from_be_bytes(k[META_LEASE_PREFIX.len()..].try_into().map_err(|_| bad("lease key"))?);
        let ttl = i64::from_be_bytes(v.as_slice().try_into().map_err(|_| bad("lease ttl"))?);
        lessor.grant(id, ttl);
    }
    if !lessor.ids().is_empty() {
        let all = keelson_proto::etcdserverpb::RangeRequest {
            key: Bytes::from_static(b"\0"),
            range_end: Bytes::from_static(b"\0"),
            keys_only: true,
            ..Default::default()
        };
        let resp = store.range(&all).map_err(io_err)?;
        let events: Vec<_> = resp
            .kvs
            .into_iter()
            .filter(|kv| kv.lease != 0)
            .map(|kv| keelson_proto::mvccpb::Event { r#type: 0, kv: Some(kv), prev_kv: None })
            .collect();
        lessor.on_events(&events);
    }
    Ok(())
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

fn error_response(e: &MvccError) -> InternalResponse {
    let kind = match e {
        MvccError::Compacted { .. } => ApplyErrorKind::Compacted,
        MvccError::FutureRev { .. } => ApplyErrorKind::FutureRev,
        MvccError::NoSpace => ApplyErrorKind::NoSpace,
        MvccError::EmptyKey => ApplyErrorKind::EmptyKey,
        MvccError::DuplicateKey => ApplyErrorKind::DuplicateKey,
        MvccError::TooManyOps => ApplyErrorKind::TooManyOps,
        MvccError::KeyNotFound => ApplyErrorKind::KeyNotFound,
        MvccError::ValueProvided => ApplyErrorKind::ValueProvided,
        MvccError::LeaseProvided => ApplyErrorKind::LeaseProvided,
        MvccError::LeaseNotFound => ApplyErrorKind::LeaseNotFound,
        _ => ApplyErrorKind::Storage,
    };
    apply_error(kind, e.to_string())
}

fn apply_error(kind: ApplyErrorKind, message: String) -> InternalResponse {
    InternalResponse { response: Some(Response::Error(ApplyError { kind: kind as i32, message })) }
}

fn header(rev: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader { revision: rev, ..Default::default() })
}

impl Shared {
    /// Applies one request inside the batch `w`. Errors of the request
    /// itself become an `ApplyError` response; only storage failures that
    /// leave the batch unusable are returned as `Err`.
    fn apply_request(&self, w: &mut WriteTxn<'_>, req: InternalRequest, index: u64) -> InternalResponse {
        let events_before = w.events().len();
        let result: Result<Response, MvccError> = match req.request {
            Some(Request::Put(r)) => w.put(&r).map(Response::Put),
            Some(Request::DeleteRange(r)) => w.delete_range(&r).map(Response::DeleteRange),
            Some(Request::Txn(r)) => w.txn(&r).map(Response::Txn),
            Some(Request::Compaction(r)) => match w.compact(r.revision) {
                Ok(wait) => {
                    if r.physical {
                        self.compaction_waits.lock().insert(index, wait);
                    }
                    Ok(Response::Compaction(CompactionResponse { header: header(w.revision()) }))
                }
                Err(e) => Err(e),
            },
            Some(Request::LeaseGrant(r)) => return self.grant(w, r.id, r.ttl),
            Some(Request::LeaseRevoke(r)) => return self.revoke(w, r.id),
            Some(Request::Alarm(r)) => Ok(Response::Alarm(self.alarm(w, &r))),
            Some(Request::LeaseRenewAll(_)) => Ok(Response::LeaseRenewAll(LeaseRenewAll {})),
            None => return apply_error(ApplyErrorKind::ApplyErrorUnknown, "empty request".into()),
        };
        for rev in &w.events()[events_before..] {
            self.lessor.on_events(&rev.events);
        }
        match result {
            Ok(r) => InternalResponse { response: Some(r) },
            Err(e) => error_response(&e),
        }
    }

    fn grant(&self, w: &mut WriteTxn<'_>, id: i64, ttl: i64) -> InternalResponse {
        if id <= 0 {
            return apply_error(ApplyErrorKind::ApplyErrorUnknown, "lease id must be positive".into());
        }
        if ttl > MAX_LEASE_TTL {
            return apply_error(ApplyErrorKind::LeaseTtlTooLarge, "too large lease TTL".into());
        }
        if self.lessor.exists(id) {
            return apply_error(ApplyErrorKind::LeaseExists, "lease already exists".into());
        }
        let ttl = self.lessor.effective_ttl(ttl);
        w.put_meta(&lease_key(id), &ttl.to_be_bytes());
        self.lessor.grant(id, ttl);
        InternalResponse {
            response: Some(Response::LeaseGrant(LeaseGrantResponse {
                header: header(w.revision()),
                id,
                ttl,
                error: String::new(),
            })),
        }
    }

    fn revoke(&self, w: &mut WriteTxn<'_>, id: i64) -> InternalResponse {
        let Some(keys) = self.lessor.revoke(id) else {
            return apply_error(ApplyErrorKind::LeaseNotFound, "requested lease not found".into());
        };
        w.delete_meta(&lease_key(id));
        let before = w.events().len();
        if let Err(e) = w.delete_keys(&keys) {
            return error_response(&e);
        }
        for rev in &w.events()[before..] {
            self.lessor.on_events(&rev.events);
        }
        InternalResponse {
            response: Some(Response::LeaseRevoke(LeaseRevokeResponse { header: header(w.revision()) })),
        }
    }

    fn alarm(&self, w: &mut WriteTxn<'_>, r: &keelson_proto::etcdserverpb::AlarmRequest) -> AlarmResponse {
        let member = if r.member_id == 0 { self.member_id } else { r.member_id };
        let mut alarms = Vec::new();
        match AlarmAction::try_from(r.action).unwrap_or(AlarmAction::Get) {
            AlarmAction::Get => alarms = self.store.alarms(),
            AlarmAction::Activate => {
                w.activate_alarm(member, r.alarm);
                alarms.push(AlarmMember { member_id: member, alarm: r.alarm });
            }
            AlarmAction::Deactivate => {
                // Member 0 / alarm NONE address every member / every alarm.
                for a in self.store.alarms() {
                    let member_ok = r.member_id == 0 || a.member_id == r.member_id;
                    let alarm_ok = r.alarm == 0 || a.alarm == r.alarm;
                    if member_ok && alarm_ok && w.deactivate_alarm(a.member_id, a.alarm) {
                        alarms.push(a);
                    }
                }
            }
        }
        AlarmResponse { header: header(w.revision()), alarms }
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let store = &self.shared.store;
        let applied = match store.get_meta(META_APPLIED).map_err(io_err)? {
            Some(v) => Some(serde_json::from_slice(&v).map_err(io_err)?),
            None => None,
        };
        let membership = match store.get_meta(META_MEMBERSHIP).map_err(io_err)? {
            Some(v) => serde_json::from_slice(&v).map_err(io_err)?,
            None => StoredMembership::default(),
        };
        Ok((applied, membership))
    }

    async fn apply<Strm>(&mut self, entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut entries = entries;
        let mut batch = Vec::new();
        while let Some(item) = entries.next().await {
            batch.push(item?);
            if batch.len() >= MAX_BATCH {
                self.apply_batch(std::mem::take(&mut batch))?;
            }
        }
        if !batch.is_empty() {
            self.apply_batch(batch)?;
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { shared: self.shared.clone() }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        _snapshot: SnapshotFile,
    ) -> Result<(), io::Error> {
        // A single member never receives a snapshot: it builds its own from
        // state it has already applied. Receiving one needs peers.
        Err(io::Error::other(format!(
            "installing a snapshot from a leader (up to {:?}) needs a multi-member cluster",
            meta.last_log_id
        )))
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        latest_snapshot(&self.shared.snap_dir)
    }
}

impl StateMachine {
    fn apply_batch(&mut self, batch: Vec<EntryResponder<TypeConfig>>) -> Result<(), io::Error> {
        let shared = self.shared.clone();
        let lessor = shared.lessor.clone();
        let check = move |id: i64| lessor.exists(id);
        // Compact requests move the compacted revision as they apply.
        let compacted_before = shared.store.compacted_revision();
        let mut w = shared.store.write().map_err(io_err)?;
        w.set_lease_check(&check);
        let mut replies = Vec::with_capacity(batch.len());
        let mut last = None;
        let mut membership = None;
        for (entry, responder) in batch {
            let index = entry.log_id.index;
            let resp = match entry.payload {
                EntryPayload::Blank => InternalResponse::default(),
                EntryPayload::Normal(cmd) => match InternalRequest::decode(cmd.0) {
                    Ok(req) => shared.apply_request(&mut w, req, index),
                    Err(e) => apply_error(ApplyErrorKind::ApplyErrorUnknown, format!("decode request: {e}")),
                },
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembership::new(Some(entry.log_id), m));
                    InternalResponse::default()
                }
            };
            last = Some(entry.log_id);
            replies.push((responder, resp));
        }
        if let Some(applied) = &last {
            w.put_meta(META_APPLIED, &serde_json::to_vec(applied).map_err(io_err)?);
        }
        if let Some(m) = &membership {
            w.put_meta(META_MEMBERSHIP, &serde_json::to_vec(m).map_err(io_err)?);
        }
        let committed = w.commit().map_err(io_err)?;
        for rev in committed.events {
            shared.hub.notify(rev.revision, rev.events);
        }
        let compacted = shared.store.compacted_revision();
        if compacted != compacted_before {
            shared.hub.compacted(compacted);
        }
        for (responder, resp) in replies {
            if let Some(r) = responder {
                r.send(CommandResult(Bytes::from(resp.encode_to_vec())));
            }
        }
        Ok(())
    }
}

/// Builds a snapshot: a checkpoint of the store, packed into one file.
pub struct SnapshotBuilder {
    shared: Arc<Shared>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || build_snapshot(&shared)).await.map_err(io_err)?
    }
}

fn build_snapshot(shared: &Shared) -> Result<Snapshot, io::Error> {
    std::fs::create_dir_all(&shared.snap_dir)?;
    let tmp = shared.snap_dir.join(format!("checkpoint-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    snapshot::checkpoint(&shared.store, &tmp)?;
    // The checkpoint holds the applied position and membership it reflects.
    let cp = rocksdb::DB::open_cf_for_read_only(
        &rocksdb::Options::default(),
        &tmp,
        ["default", "kv", "meta"],
        false,
    )
    .map_err(io_err)?;
    let meta_cf = cp.cf_handle("meta").ok_or_else(|| bad("checkpoint without meta"))?;
    let applied: Option<LogId> = match cp.get_cf(meta_cf, META_APPLIED).map_err(io_err)? {
        Some(v) => Some(serde_json::from_slice(&v).map_err(io_err)?),
        None => None,
    };
    let membership: StoredMembership = match cp.get_cf(meta_cf, META_MEMBERSHIP).map_err(io_err)? {
        Some(v) => serde_json::from_slice(&v).map_err(io_err)?,
        None => StoredMembership::default(),
    };
    drop(cp);
    let name = match &applied {
        Some(l) => format!("snap-{:016x}-{:016x}", l.leader_id.term, l.index),
        None => "snap-0000000000000000-0000000000000000".to_string(),
    };
    let path = shared.snap_dir.join(format!("{name}.keel"));
    let tmp_file = shared.snap_dir.join(format!("{name}.keel.tmp"));
    snapshot::pack(&tmp, &tmp_file)?;
    std::fs::remove_dir_all(&tmp)?;
    let meta = SnapshotMeta { last_log_id: applied, last_membership: membership };
    std::fs::write(path.with_extension("meta"), serde_json::to_vec(&meta).map_err(io_err)?)?;
    std::fs::rename(&tmp_file, &path)?;
    // Older snapshots are no longer needed.
    for e in std::fs::read_dir(&shared.snap_dir)?.flatten() {
        let p = e.path();
        let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        if stem.starts_with("snap-") && stem != name {
            let _ = std::fs::remove_file(&p);
        }
    }
    Ok(Snapshot { meta, snapshot: SnapshotFile { path } })
}

fn latest_snapshot(dir: &std::path::Path) -> Result<Option<Snapshot>, io::Error> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Ok(None) };
    let mut best: Option<PathBuf> = None;
    for e in rd.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "keel") && best.as_ref().is_none_or(|b| p > *b) {
            best = Some(p);
        }
    }
    let Some(path) = best else { return Ok(None) };
    let meta: SnapshotMeta =
        serde_json::from_slice(&std::fs::read(path.with_extension("meta"))?).map_err(io_err)?;
    Ok(Some(Snapshot { meta, snapshot: SnapshotFile { path } }))
}
