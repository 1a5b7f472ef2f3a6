//! [`StateMachine`]: openraft's state machine over the MVCC store.
//!
//! Committed entries are applied in batches: every entry of a batch goes
//! into one mvcc `WriteTxn` (one RocksDB `WriteBatch`, no fsync) together
//! with the applied log id and membership, so data and position never
//! disagree. Only after the batch is written are the watch hub notified and
//! the waiting clients answered.
//!
//! A snapshot from the leader replaces the whole store ([`StoreHandle`]):
//! see `install_snapshot` and `docs/design/snapshots.md`.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use keelson_mvcc::{CompactionWait, KeyRange, MvccError, Store, WriteTxn};
use keelson_proto::etcdserverpb::alarm_request::AlarmAction;
use keelson_proto::etcdserverpb::{
    AlarmMember, AlarmResponse, CompactionResponse, LeaseGrantResponse, LeaseRevokeResponse, ResponseHeader,
};
use keelson_proto::keelsonraftpb::internal_request::Request;
use keelson_proto::keelsonraftpb::internal_response::Response;
use keelson_proto::keelsonraftpb::{
    ApplyError, ApplyErrorKind, InternalRequest, InternalResponse, LeaseRenewAll, ResponseBatch,
};
use keelson_proto::mvccpb::{Event, KeyValue};
use keelson_watch::{EventSource, HistoryError, WatchHub};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use parking_lot::{Mutex, RwLock};
use prost::Message;

use crate::lessor::{Lessor, MAX_LEASE_TTL};
use crate::snapshot::{self, SnapshotFile};
use crate::types::{CommandResult, LogId, StoredMembership, TypeConfig};

pub(crate) const META_APPLIED: &[u8] = b"raft/applied";
pub(crate) const META_MEMBERSHIP: &[u8] = b"raft/membership";
pub(crate) const META_LEASE_PREFIX: &[u8] = b"lease/";

/// Entries applied per RocksDB batch at most.
const MAX_BATCH: usize = 1000;

/// Revisions handed to the watch hub per batch when a snapshot install
/// moves the store forward.
const HUB_REPLAY_BATCH: i64 = 1000;

/// How long an old store may stay in use after a snapshot replaced it
/// before its directory is left for the next start to remove.
const RETIRE_WAIT: Duration = Duration::from_secs(600);

type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>;

/// What the state machine shares with the rest of the member.
#[derive(Debug)]
pub struct Shared {
    /// The member's current store (a snapshot install replaces it).
    pub store: StoreHandle,
    pub hub: WatchHub,
    pub lessor: Arc<Lessor>,
    pub member_id: u64,
    /// Where packed snapshots live.
    pub snap_dir: PathBuf,
    /// Physical-compaction waits by log index, for the proposer to pick up.
    pub compaction_waits: Mutex<HashMap<u64, CompactionWait>>,
}

impl Shared {
    /// What a member's state machine shares, over the store `store` holds
    /// now: loads the leases persisted in it into `lessor`.
    pub fn new(
        store: &StoreHandle,
        hub: WatchHub,
        lessor: Arc<Lessor>,
        member_id: u64,
        snap_dir: PathBuf,
    ) -> io::Result<Shared> {
        load_leases(&store.load(), &lessor)?;
        Ok(Shared {
            store: store.clone(),
            hub,
            lessor,
            member_id,
            snap_dir,
            compaction_waits: Mutex::new(HashMap::new()),
        })
    }
}

pub struct StateMachine {
    shared: Arc<Shared>,
    store: StoreHandle,
}

impl StateMachine {
    /// A state machine over `shared.store`, which readers and the watch hub
    /// (as its [`EventSource`]) share.
    pub fn new(shared: Arc<Shared>) -> Self {
        let store = shared.store.clone();
        StateMachine { shared, store }
    }

    /// The handle to the current store.
    pub fn store(&self) -> StoreHandle {
        self.store.clone()
    }
}

/// Why the member's store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenStoreError {
    #[error("find the current store under {path}")]
    Resolve {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("open the mvcc store")]
    Open(#[source] MvccError),
}

/// The member's current mvcc store, as the state machine, the readers and
/// the watch hub see it. Cheap to clone; clones share it.
///
/// A snapshot from the leader replaces the whole store: `install_snapshot`
/// unpacks it into a new directory beside the first one, opens it there,
/// records it as current and swaps it in. Readers that still hold the old
/// `Arc<Store>` finish on it; its directory is removed once nobody holds it
/// (or at the next start). For a base of `member/kv`:
///
/// - `member/kv`: the store a member starts with;
/// - `member/kv.snap-<term>-<index>`: a store installed from a snapshot;
/// - `member/kv.current`: the name of the current one (absent: `kv`),
///   replaced atomically;
/// - `member/kv.snap-<term>-<index>.tmp`: a snapshot being unpacked.
#[derive(Clone)]
pub struct StoreHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    current: RwLock<Arc<Store>>,
    base: PathBuf,
}

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreHandle").field("current", &self.load().path()).finish()
    }
}

impl StoreHandle {
    /// Opens the member's store under `base` (e.g. `member/kv`): the one
    /// `<base>.current` names, else `base` itself. Call it at start, before
    /// anything else uses the directory: it removes the stores a snapshot
    /// install left behind.
    pub fn open(
        base: impl Into<PathBuf>,
        config: keelson_mvcc::Config,
    ) -> Result<StoreHandle, OpenStoreError> {
        let base = base.into();
        let dir = current_store_dir(&base)
            .map_err(|source| OpenStoreError::Resolve { path: base.clone(), source })?;
        remove_stale_stores(&base, &dir);
        let store = Store::open(&dir, config).map_err(OpenStoreError::Open)?;
        Ok(StoreHandle { inner: Arc::new(HandleInner { current: RwLock::new(Arc::new(store)), base }) })
    }

    /// A handle over an open store, whose directory is the base.
    pub fn from_store(store: Arc<Store>) -> Self {
        let base = store.path().to_path_buf();
        StoreHandle { inner: Arc::new(HandleInner { current: RwLock::new(store), base }) }
    }

    /// The current store.
    pub fn load(&self) -> Arc<Store> {
        self.inner.current.read().clone()
    }

    /// Where the first store lives; the others are named after it.
    pub fn base(&self) -> &Path {
        &self.inner.base
    }

    fn replace(&self, store: Arc<Store>) -> Arc<Store> {
        std::mem::replace(&mut *self.inner.current.write(), store)
    }

    fn sibling(&self, suffix: &str) -> PathBuf {
        sibling(&self.inner.base, suffix)
    }
}

/// `<base><suffix>` beside `base`.
fn sibling(base: &Path, suffix: &str) -> PathBuf {
    let name = base.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    base.with_file_name(format!("{name}{suffix}"))
}

fn current_store_dir(base: &Path) -> io::Result<PathBuf> {
    let pointer = sibling(base, ".current");
    match std::fs::read_to_string(&pointer) {
        Ok(s) => {
            let name = s.trim();
            let base_name = base.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if !name.starts_with(&format!("{base_name}.snap-"))
                || name.contains('/')
                || name.ends_with(".tmp")
            {
                return Err(bad(&format!("{} names {name:?}, not a store", pointer.display())));
            }
            let dir = base.with_file_name(name);
            if !dir.is_dir() {
                return Err(bad(&format!("{} names {name:?}, which does not exist", pointer.display())));
            }
            Ok(dir)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(base.to_path_buf()),
        Err(e) => Err(e),
    }
}

/// Removes the stores beside `current` that a snapshot install superseded
/// or left half unpacked.
fn remove_stale_stores(base: &Path, current: &Path) {
    let Some(parent) = base.parent() else { return };
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    let base_name = base.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let prefix = format!("{base_name}.snap-");
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = name == base_name || name.starts_with(&prefix);
        if ours && path != current && path.is_dir() {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => tracing::info!(dir = %path.display(), "removed a superseded store"),
                Err(e) => tracing::warn!(dir = %path.display(), error = %e, "remove a superseded store"),
            }
        }
    }
}

impl EventSource for StoreHandle {
    fn events(&self, key: &[u8], range_end: &[u8], start: i64, end: i64) -> Result<Vec<Event>, HistoryError> {
        self.load().events(KeyRange::new(key, range_end), start, end).map_err(history_error)
    }

    fn kv_at(&self, key: &[u8], rev: i64) -> Result<Option<KeyValue>, HistoryError> {
        self.load().kv_at(key, rev).map_err(history_error)
    }
}

/// A store (not a handle that may swap it) as the watch hub's history.
pub struct StoreSource(pub Arc<Store>);

impl EventSource for StoreSource {
    fn events(&self, key: &[u8], range_end: &[u8], start: i64, end: i64) -> Result<Vec<Event>, HistoryError> {
        self.0.events(KeyRange::new(key, range_end), start, end).map_err(history_error)
    }

    fn kv_at(&self, key: &[u8], rev: i64) -> Result<Option<KeyValue>, HistoryError> {
        self.0.kv_at(key, rev).map_err(history_error)
    }
}

fn history_error(e: MvccError) -> HistoryError {
    match e {
        MvccError::Compacted { compacted } => HistoryError::Compacted(compacted),
        other => HistoryError::ReadFailed(Box::new(other)),
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
    InternalResponse { response: Some(Response::Error(mvcc_apply_error(e))) }
}

/// How a request's mvcc error travels back through the log: its kind and
/// etcd's message.
pub fn mvcc_apply_error(e: &MvccError) -> ApplyError {
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
    ApplyError { kind: kind as i32, message: e.to_string() }
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
    fn apply_request(
        &self,
        store: &Store,
        w: &mut WriteTxn<'_>,
        req: InternalRequest,
        index: u64,
    ) -> InternalResponse {
        let events_before = w.events().len();
        let writes = matches!(
            req.request,
            Some(
                Request::Put(_)
                    | Request::DeleteRange(_)
                    | Request::Txn(_)
                    | Request::Compaction(_)
                    | Request::LeaseGrant(_)
                    | Request::LeaseRevoke(_)
            )
        );
        // etcd's corrupt applier: with the CORRUPT alarm up, nothing changes.
        if writes && store.alarms().iter().any(|a| a.alarm == keelson_mvcc::ALARM_CORRUPT) {
            return apply_error(ApplyErrorKind::Corrupt, "corrupt cluster".into());
        }
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
            Some(Request::Alarm(r)) => Ok(Response::Alarm(self.alarm(store, w, &r))),
            Some(Request::LeaseRenewAll(_)) => Ok(Response::LeaseRenewAll(LeaseRenewAll {})),
            // Concurrent client writes in one entry (`proposer.rs`): each
            // applied as if it had an entry of its own, answered in order.
            Some(Request::Batch(b)) => {
                let responses =
                    b.requests.into_iter().map(|r| self.apply_request(store, w, r, index)).collect();
                return InternalResponse { response: Some(Response::Batch(ResponseBatch { responses })) };
            }
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

    fn alarm(
        &self,
        store: &Store,
        w: &mut WriteTxn<'_>,
        r: &keelson_proto::etcdserverpb::AlarmRequest,
    ) -> AlarmResponse {
        let member = if r.member_id == 0 { self.member_id } else { r.member_id };
        let mut alarms = Vec::new();
        match AlarmAction::try_from(r.action).unwrap_or(AlarmAction::Get) {
            AlarmAction::Get => alarms = store.alarms(),
            AlarmAction::Activate => {
                w.activate_alarm(member, r.alarm);
                alarms.push(AlarmMember { member_id: member, alarm: r.alarm });
            }
            AlarmAction::Deactivate => {
                // Member 0 / alarm NONE address every member / every alarm.
                for a in store.alarms() {
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
        let store = self.store.load();
        let applied = read_applied(&store)?;
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
        SnapshotBuilder { shared: self.shared.clone(), store: self.store.clone() }
    }

    /// Replaces the store with the snapshot's: keeps the file as this
    /// member's current snapshot, unpacks it into a new store directory,
    /// opens and checks it, records it as current (a restart opens it) and
    /// swaps it in; then reloads the leases from it and brings the watch hub
    /// up to its revision. See `docs/design/snapshots.md`.
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotFile,
    ) -> Result<(), io::Error> {
        let started = Instant::now();
        let (shared, store, m) = (self.shared.clone(), self.store.clone(), meta.clone());
        let swapped = tokio::task::spawn_blocking(move || install_store(&shared, &store, &m, &snapshot.path))
            .await
            .map_err(io_err)??;
        let Some((old, new)) = swapped else { return Ok(()) };
        let lessor = &self.shared.lessor;
        lessor.clear();
        load_leases(&new, lessor)?;
        catch_up_hub(&self.shared.hub, &new, old.current_revision(), old.compacted_revision()).await?;
        tracing::info!(
            last_log_id = ?meta.last_log_id,
            revision = new.current_revision(),
            dir = %new.path().display(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "installed snapshot"
        );
        retire(old, new.path());
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        latest_snapshot(&self.shared.snap_dir)
    }
}

impl StateMachine {
    fn apply_batch(&mut self, batch: Vec<EntryResponder<TypeConfig>>) -> Result<(), io::Error> {
        let shared = self.shared.clone();
        let store = self.store.load();
        let lessor = shared.lessor.clone();
        let check = move |id: i64| lessor.exists(id);
        // Compact requests move the compacted revision as they apply.
        let compacted_before = store.compacted_revision();
        let mut w = store.write().map_err(io_err)?;
        w.set_lease_check(&check);
        let mut replies = Vec::with_capacity(batch.len());
        let mut last = None;
        let mut membership = None;
        for (entry, responder) in batch {
            let index = entry.log_id.index;
            let resp = match entry.payload {
                EntryPayload::Blank => InternalResponse::default(),
                EntryPayload::Normal(cmd) => match InternalRequest::decode(cmd.0) {
                    Ok(req) => shared.apply_request(&store, &mut w, req, index),
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
        fail::fail_point!("apply-before-commit");
        let committed = w.commit().map_err(io_err)?;
        fail::fail_point!("apply-after-commit");
        shared.hub.notify_many(committed.events.into_iter().map(|r| (r.revision, r.events)).collect());
        let compacted = store.compacted_revision();
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
    store: StoreHandle,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let shared = self.shared.clone();
        let store = self.store.load();
        tokio::task::spawn_blocking(move || build_snapshot(&shared, &store)).await.map_err(io_err)?
    }
}

fn build_snapshot(shared: &Shared, store: &Store) -> Result<Snapshot, io::Error> {
    std::fs::create_dir_all(&shared.snap_dir)?;
    let tmp = shared.snap_dir.join(format!("checkpoint-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    snapshot::checkpoint(store, &tmp)?;
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
    let name = snapshot_name(applied.as_ref());
    let path = shared.snap_dir.join(format!("{name}.keel"));
    let tmp_file = shared.snap_dir.join(format!("{name}.keel.tmp"));
    snapshot::pack(&tmp, &tmp_file)?;
    std::fs::remove_dir_all(&tmp)?;
    let meta = SnapshotMeta { last_log_id: applied, last_membership: membership };
    std::fs::write(path.with_extension("meta"), serde_json::to_vec(&meta).map_err(io_err)?)?;
    std::fs::rename(&tmp_file, &path)?;
    remove_older_snapshots(&shared.snap_dir, &name)?;
    Ok(Snapshot { meta, snapshot: SnapshotFile { path } })
}

/// A snapshot's file stem: its last log id's term and index, so names sort
/// in log order.
fn snapshot_name(last: Option<&LogId>) -> String {
    match last {
        Some(l) => format!("snap-{:016x}-{:016x}", l.leader_id.term, l.index),
        None => "snap-0000000000000000-0000000000000000".to_string(),
    }
}

/// Removes the finished snapshots older than `name`. A newer one (installed
/// from the leader while this one was built) stays, and so do files still
/// being written (`*.tmp`): a build and an install may run at once.
fn remove_older_snapshots(dir: &Path, name: &str) -> io::Result<()> {
    for e in std::fs::read_dir(dir)?.flatten() {
        let p = e.path();
        let finished = p.extension().is_some_and(|x| x == "keel" || x == "meta");
        let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        if finished && stem.starts_with("snap-") && stem.as_str() < name {
            let _ = std::fs::remove_file(&p);
        }
    }
    Ok(())
}

fn read_applied(store: &Store) -> io::Result<Option<LogId>> {
    match store.get_meta(META_APPLIED).map_err(io_err)? {
        Some(v) => Ok(Some(serde_json::from_slice(&v).map_err(io_err)?)),
        None => Ok(None),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The blocking part of `install_snapshot`: returns the old and the new
/// store once the new one is current, or `None` if it already was.
fn install_store(
    shared: &Shared,
    handle: &StoreHandle,
    meta: &SnapshotMeta,
    file: &Path,
) -> io::Result<Option<(Arc<Store>, Arc<Store>)>> {
    let name = snapshot_name(meta.last_log_id.as_ref());
    let kept = keep_snapshot(&shared.snap_dir, &name, meta, file)?;
    let old = handle.load();
    let dir = handle.sibling(&format!(".{name}"));
    if dir == old.path() {
        tracing::info!(dir = %dir.display(), "snapshot already installed");
        return Ok(None);
    }
    let staging = handle.sibling(&format!(".{name}.tmp"));
    for d in [&staging, &dir] {
        if d.exists() {
            std::fs::remove_dir_all(d)?;
        }
    }
    snapshot::unpack(&kept, &staging)?;
    sync_dir(&staging)?;
    fail::fail_point!("snapshot-install-unpacked");
    std::fs::rename(&staging, &dir)?;
    let parent = dir.parent().ok_or_else(|| bad("store directory without a parent"))?;
    sync_dir(parent)?;
    let new = Arc::new(Store::open(&dir, old.config().clone()).map_err(io_err)?);
    let applied = read_applied(&new)?;
    if applied != meta.last_log_id {
        return Err(bad(&format!(
            "snapshot {name} holds the state up to {applied:?}, its meta says {:?}",
            meta.last_log_id
        )));
    }
    // From here on a restart opens the new store.
    let pointer = handle.sibling(".current");
    let pointer_tmp = handle.sibling(".current.tmp");
    let dir_name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    std::fs::write(&pointer_tmp, format!("{dir_name}\n"))?;
    std::fs::File::open(&pointer_tmp)?.sync_all()?;
    std::fs::rename(&pointer_tmp, &pointer)?;
    sync_dir(parent)?;
    fail::fail_point!("snapshot-install-switched");
    let old = handle.replace(new.clone());
    Ok(Some((old, new)))
}

/// Makes `file` this member's current snapshot `<name>.keel` (with its
/// meta) in `dir`, unless it already is; returns its path.
fn keep_snapshot(dir: &Path, name: &str, meta: &SnapshotMeta, file: &Path) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{name}.keel"));
    if file == path {
        return Ok(path);
    }
    let tmp = dir.join(format!("{name}.keel.tmp"));
    if std::fs::rename(file, &tmp).is_err() {
        // Another file system: copy.
        std::fs::copy(file, &tmp)?;
        std::fs::File::open(&tmp)?.sync_all()?;
    }
    // The meta goes first: a snapshot file is never visible without it.
    let meta_path = path.with_extension("meta");
    let meta_tmp = dir.join(format!("{name}.meta.tmp"));
    std::fs::write(&meta_tmp, serde_json::to_vec(meta).map_err(io_err)?)?;
    std::fs::File::open(&meta_tmp)?.sync_all()?;
    std::fs::rename(&meta_tmp, &meta_path)?;
    std::fs::rename(&tmp, &path)?;
    sync_dir(dir)?;
    remove_older_snapshots(dir, name)?;
    Ok(path)
}

/// Hands the watch hub the revisions the new store has past `old_current`
/// (the last one the apply path notified), in batches, so watchers here
/// see every revision once and the hub's history stays contiguous.
async fn catch_up_hub(
    hub: &WatchHub,
    store: &Arc<Store>,
    old_current: i64,
    old_compacted: i64,
) -> io::Result<()> {
    let current = store.current_revision();
    let compacted = store.compacted_revision();
    if compacted > old_compacted {
        hub.compacted(compacted);
    }
    let mut next = old_current + 1;
    if compacted >= next {
        // The leader compacted past what this member had: those revisions
        // are gone. Watchers here that were at the head skip them.
        tracing::warn!(
            from = next,
            to = compacted,
            "the installed snapshot is compacted past this member's revision: watchers here that need those revisions are cancelled as compacted"
        );
        hub.skip_to(compacted);
        next = compacted + 1;
    }
    while next <= current {
        let end = (next + HUB_REPLAY_BATCH - 1).min(current);
        let s = store.clone();
        let events = tokio::task::spawn_blocking(move || s.events(KeyRange::new(b"", b"\0"), next, end))
            .await
            .map_err(io_err)?;
        let events = events.map_err(io_err)?;
        let mut last = next - 1;
        let mut batch: Vec<Event> = Vec::new();
        for ev in events {
            let rev = ev.kv.as_ref().map_or(0, |kv| kv.mod_revision);
            if rev != last && !batch.is_empty() {
                hub.notify(last, std::mem::take(&mut batch));
            }
            last = rev;
            batch.push(ev);
        }
        if !batch.is_empty() {
            hub.notify(last, batch);
        }
        // Let the hub keep up before loading the next batch.
        let deadline = Instant::now() + Duration::from_secs(10);
        while hub.revision() < last && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        next = end + 1;
    }
    Ok(())
}

/// Lets go of a store a snapshot replaced; its directory goes once nobody
/// uses it any more.
fn retire(old: Arc<Store>, current: &Path) {
    let dir = old.path().to_path_buf();
    if dir == current {
        return;
    }
    let spawned = std::thread::Builder::new().name("keelson-store-retire".into()).spawn(move || {
        let deadline = Instant::now() + RETIRE_WAIT;
        // Only this thread holds it once the count is one: nobody can
        // clone it again, and dropping it here closes RocksDB here.
        while Arc::strong_count(&old) > 1 {
            if Instant::now() > deadline {
                tracing::info!(dir = %dir.display(), "a replaced store is still in use; the next start removes it");
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        drop(old);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => tracing::info!(dir = %dir.display(), "removed the replaced store"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "remove the replaced store"),
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "spawn the store retire thread; the next start removes the old store");
    }
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
