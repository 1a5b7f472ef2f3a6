//! [`Store`]: opening the RocksDB database, rebuilding the index, and the
//! read side (range, history, hash, size).
//!
//! RocksDB layout, two column families:
//! - `kv`: revision (17 bytes, 18 for a tombstone; see [`crate::revision`]) →
//!   the prost-encoded `mvccpb.KeyValue` written at that revision (a
//!   tombstone holds only the key). This is etcd's `key` bucket.
//! - `meta`: the format version, the scheduled and finished compaction
//!   revisions, alarms, and whatever the raft layer stores beside the data
//!   (its applied position above all) through [`crate::WriteTxn::put_meta`].
//!
//! Writes go through [`crate::WriteTxn`]; each commit is one RocksDB
//! `WriteBatch` written without fsync: durability comes from the raft log.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::thread::JoinHandle;

use bytes::Bytes;
use keelson_proto::etcdserverpb::{AlarmMember, RangeRequest, RangeResponse};
use keelson_proto::mvccpb::{Event, KeyValue, event::EventType};
use parking_lot::{Mutex, RwLock};
use prost::Message;
use rocksdb::{ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, ReadOptions};

use crate::compaction::{CompactionJob, Compactor};
use crate::error::{MvccError, Result};
use crate::index::{KeyRange, TreeIndex};
use crate::key_index::KeyAt;
use crate::range::{self, View};
use crate::revision::{REV_BYTES_LEN, Revision};

pub(crate) const CF_KV: &str = "kv";
pub(crate) const CF_META: &str = "meta";

pub(crate) const META_FORMAT: &[u8] = b"format";
pub(crate) const META_SCHEDULED_COMPACT: &[u8] = b"scheduled_compact_rev";
pub(crate) const META_FINISHED_COMPACT: &[u8] = b"finished_compact_rev";
pub(crate) const META_ALARM_PREFIX: &[u8] = b"alarm/";

/// How long a measured database size is reused by the quota check.
const SIZE_REFRESH: std::time::Duration = std::time::Duration::from_millis(20);

/// The on-disk format this binary writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Settings of the MVCC store.
#[derive(Debug, Clone)]
pub struct Config {
    /// Past this many bytes on disk, writes fail with "database space
    /// exceeded" and the NOSPACE alarm is raised (etcd's
    /// `--quota-backend-bytes`, default 2 GiB).
    pub quota_bytes: u64,
    /// Most compares or operations per Txn branch (etcd's `--max-txn-ops`).
    pub max_txn_ops: usize,
    /// The member id used when this store raises an alarm.
    pub member_id: u64,
    /// Revisions deleted per RocksDB batch by the physical compaction.
    pub compaction_batch_limit: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            quota_bytes: 2 * 1024 * 1024 * 1024,
            max_txn_ops: 128,
            member_id: 0,
            compaction_batch_limit: 1000,
        }
    }
}

/// Alarm kinds, numbered as etcd's `AlarmType`.
pub const ALARM_NOSPACE: i32 = 1;
pub const ALARM_CORRUPT: i32 = 2;

/// The revisions and the index: what a reader must see consistently.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub index: TreeIndex,
    /// The newest committed main revision.
    pub current: i64,
    /// The revision of the latest compaction (0 = none).
    pub compacted: i64,
    /// Active alarms as (member id, alarm type).
    pub alarms: BTreeSet<(u64, i32)>,
}

/// The result of [`Store::hash_kv`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvHash {
    pub hash: u32,
    /// The revision the hash covers.
    pub hash_revision: i64,
    /// The compacted revision at the time of hashing.
    pub compact_revision: i64,
    /// The current revision at the time of hashing.
    pub current_revision: i64,
}

/// An etcd-semantics MVCC key-value store on RocksDB.
pub struct Store {
    pub(crate) db: Arc<DB>,
    pub(crate) state: RwLock<State>,
    /// Serialises writers; held by a [`crate::WriteTxn`] for its lifetime.
    pub(crate) write_lock: Mutex<()>,
    pub(crate) config: Config,
    pub(crate) poisoned: AtomicBool,
    /// `db_size()` as of `size_checked` plus the quota cost of the writes
    /// admitted since, for the quota check on writes.
    cached_size: std::sync::atomic::AtomicU64,
    size_checked: Mutex<std::time::Instant>,
    compactor: Mutex<Option<mpsc::Sender<CompactionJob>>>,
    compactor_thread: Mutex<Option<JoinHandle<()>>>,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store in directory `path`, rebuilding the key
    /// index from the `kv` column family and resuming an interrupted
    /// compaction.
    pub fn open(path: impl AsRef<Path>, config: Config) -> Result<Store> {
        let path = path.as_ref().to_path_buf();
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let mut kv_opts = Options::default();
        kv_opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let cfs = vec![
            ColumnFamilyDescriptor::new(CF_KV, kv_opts),
            ColumnFamilyDescriptor::new(CF_META, Options::default()),
        ];
        let db = DB::open_cf_descriptors(&opts, &path, cfs)
            .map_err(|source| MvccError::Open { path: path.clone(), source })?;
        let db = Arc::new(db);

        let meta = db.cf_handle(CF_META).expect("meta column family exists");
        match db.get_cf(&meta, META_FORMAT).map_err(MvccError::storage("read format"))? {
            Some(v) => {
                let found = u32::from_be_bytes(
                    v.as_slice()
                        .try_into()
                        .map_err(|_| MvccError::Corrupt { what: "format version", source: None })?,
                );
                if found > FORMAT_VERSION {
                    return Err(MvccError::UnsupportedFormat { path, found, supported: FORMAT_VERSION });
                }
            }
            None => db
                .put_cf(&meta, META_FORMAT, FORMAT_VERSION.to_be_bytes())
                .map_err(MvccError::storage("write format"))?,
        }
        let read_i64 = |key: &[u8]| -> Result<i64> {
            Ok(match db.get_cf(&meta, key).map_err(MvccError::storage("read meta"))? {
                Some(v) => decode_i64(&v)?,
                None => 0,
            })
        };
        let scheduled = read_i64(META_SCHEDULED_COMPACT)?;
        let finished = read_i64(META_FINISHED_COMPACT)?;
        let mut alarms = BTreeSet::new();
        for item in db.prefix_iterator_cf(&meta, META_ALARM_PREFIX) {
            let (k, _) = item.map_err(MvccError::storage("read alarms"))?;
            if !k.starts_with(META_ALARM_PREFIX) {
                break;
            }
            alarms.insert(decode_alarm_key(&k)?);
        }

        let (mut index, max_rev) = rebuild_index(&db)?;
        let compacted = scheduled.max(finished);
        let keep = index.compact(compacted);
        // Like etcd, an empty store is at revision 1: the first change makes 2.
        let state = State { index, current: max_rev.max(compacted).max(1), compacted, alarms };

        let (compactor, thread) = Compactor::spawn(db.clone(), config.compaction_batch_limit);
        let store = Store {
            db,
            state: RwLock::new(state),
            write_lock: Mutex::new(()),
            config,
            poisoned: AtomicBool::new(false),
            cached_size: std::sync::atomic::AtomicU64::new(0),
            size_checked: Mutex::new(std::time::Instant::now() - SIZE_REFRESH),
            compactor: Mutex::new(Some(compactor)),
            compactor_thread: Mutex::new(Some(thread)),
            path,
        };
        if scheduled > finished {
            tracing::info!(scheduled, finished, "resuming interrupted compaction");
            store.schedule_compaction(CompactionJob { rev: scheduled, keep, done: None });
        }
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The newest committed main revision.
    pub fn current_revision(&self) -> i64 {
        self.state.read().current
    }

    /// The revision of the latest compaction (0 if none).
    pub fn compacted_revision(&self) -> i64 {
        self.state.read().compacted
    }

    /// Number of keys in the index (alive or with history kept).
    pub fn index_len(&self) -> usize {
        self.state.read().index.len()
    }

    /// Active alarms.
    pub fn alarms(&self) -> Vec<AlarmMember> {
        self.state.read().alarms.iter().map(|&(member_id, alarm)| AlarmMember { member_id, alarm }).collect()
    }

    /// Answers a Range request with etcd's semantics (see
    /// [`crate::range`]); the header carries only the revision.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        let view = SnapshotView::new(self);
        range::range(&view, req)
    }

    /// The key's value as of revision `rev` (the newest version with
    /// `mod_revision <= rev`), `None` if it did not exist then.
    pub fn kv_at(&self, key: &[u8], rev: i64) -> Result<Option<KeyValue>> {
        let view = SnapshotView::new(self);
        let (found, _) = view.keys(KeyRange::new(key, b""), rev, 1)?;
        match found.into_iter().next() {
            Some((k, at)) => view.load(&k, &at).map(Some),
            None => Ok(None),
        }
    }

    /// Every event with `mod_revision` in `[start_rev, end_rev]` on keys in
    /// `range`, in revision order. Fails with `Compacted` when `start_rev` is
    /// below the compacted revision (etcd's watch rule).
    pub fn events(&self, range: KeyRange<'_>, start_rev: i64, end_rev: i64) -> Result<Vec<Event>> {
        let (compacted, snapshot) = {
            let state = self.state.read();
            (state.compacted, self.db.snapshot())
        };
        if start_rev < compacted {
            return Err(MvccError::Compacted { compacted });
        }
        let kv = self.kv_cf();
        let mut opts = ReadOptions::default();
        opts.set_snapshot(&snapshot);
        opts.set_iterate_upper_bound(Revision::new(end_rev.saturating_add(1), 0).to_bytes().to_vec());
        let start = Revision::new(start_rev.max(0), 0).to_bytes();
        let iter = self.db.iterator_cf_opt(&kv, opts, IteratorMode::From(&start, Direction::Forward));
        let mut out = Vec::new();
        for item in iter {
            let (k, v) = item.map_err(MvccError::storage("scan history"))?;
            let (rev, tombstone) =
                Revision::from_bytes(&k).ok_or(MvccError::Corrupt { what: "revision key", source: None })?;
            let mut kv = decode_kv(&v)?;
            if !range.contains(&kv.key) {
                continue;
            }
            let ty = if tombstone {
                kv.mod_revision = rev.main;
                EventType::Delete
            } else {
                EventType::Put
            };
            out.push(Event { r#type: ty as i32, kv: Some(kv), prev_kv: None });
        }
        Ok(out)
    }

    /// HashKV: CRC32-Castagnoli over the revisions up to `rev` (0 = current)
    /// that a compaction at the compacted revision keeps, in etcd's layout
    /// (bucket name, then each revision key and stored value), so members
    /// with the same history agree whether or not their physical compaction
    /// has finished.
    pub fn hash_kv(&self, rev: i64) -> Result<KvHash> {
        let (current, compacted, keep, snapshot) = {
            let state = self.state.read();
            (state.current, state.compacted, state.index.keep(state.compacted), self.db.snapshot())
        };
        let rev = if rev <= 0 { current } else { rev };
        if rev > current {
            return Err(MvccError::FutureRev { current });
        }
        if rev < compacted {
            return Err(MvccError::Compacted { compacted });
        }
        let kv = self.kv_cf();
        let mut opts = ReadOptions::default();
        opts.set_snapshot(&snapshot);
        opts.set_iterate_upper_bound(Revision::new(rev + 1, 0).to_bytes().to_vec());
        let mut hasher = 0u32;
        hasher = crc32c::crc32c_append(hasher, b"key");
        for item in self.db.iterator_cf_opt(&kv, opts, IteratorMode::Start) {
            let (k, v) = item.map_err(MvccError::storage("scan for hash"))?;
            let (r, _) =
                Revision::from_bytes(&k).ok_or(MvccError::Corrupt { what: "revision key", source: None })?;
            if r.main <= compacted && !keep.contains(&r) {
                continue;
            }
            hasher = crc32c::crc32c_append(hasher, &k);
            hasher = crc32c::crc32c_append(hasher, &v);
        }
        Ok(KvHash {
            hash: hasher,
            hash_revision: rev,
            compact_revision: compacted,
            current_revision: current,
        })
    }

    /// The bytes the database takes: SST files plus memtables, over both
    /// column families. This is what the space quota is checked against.
    pub fn db_size(&self) -> u64 {
        let mut total = 0;
        for name in [CF_KV, CF_META] {
            let cf = self.db.cf_handle(name).expect("column family exists");
            for prop in ["rocksdb.total-sst-files-size", "rocksdb.cur-size-all-mem-tables"] {
                total += self.db.property_int_value_cf(&cf, prop).ok().flatten().unwrap_or(0);
            }
        }
        total
    }

    /// [`Store::db_size`] as the quota sees it: measured at most every
    /// `SIZE_REFRESH` (asking RocksDB on every write costs more than the
    /// write), plus what writes admitted since then cost.
    pub(crate) fn db_size_cached(&self) -> u64 {
        let mut checked = self.size_checked.lock();
        if checked.elapsed() >= SIZE_REFRESH {
            self.cached_size.store(self.db_size(), std::sync::atomic::Ordering::Relaxed);
            *checked = std::time::Instant::now();
        }
        self.cached_size.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts an admitted write's cost until the next size measurement.
    pub(crate) fn add_admitted(&self, cost: u64) {
        self.cached_size.fetch_add(cost, std::sync::atomic::Ordering::Relaxed);
    }

    /// Compacts RocksDB's files fully so deleted and compacted revisions give
    /// their space back (etcd's Defragment).
    pub fn defragment(&self) -> Result<()> {
        for name in [CF_KV, CF_META] {
            let cf = self.db.cf_handle(name).expect("column family exists");
            self.db.compact_range_cf(&cf, None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }

    /// Makes everything committed so far durable on its own (memtables
    /// flushed), so the raft log before the applied position may be purged.
    pub fn persist(&self) -> Result<()> {
        let cfs: Vec<_> =
            [CF_KV, CF_META].iter().map(|n| self.db.cf_handle(n).expect("column family exists")).collect();
        self.db
            .flush_cfs_opt(&cfs.iter().collect::<Vec<_>>(), &rocksdb::FlushOptions::default())
            .map_err(MvccError::storage("flush"))?;
        self.db.flush_wal(true).map_err(MvccError::storage("sync wal"))
    }

    /// A value the raft layer stored with [`crate::WriteTxn::put_meta`].
    pub fn get_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let meta = self.meta_cf();
        self.db.get_cf(&meta, key).map_err(MvccError::storage("read meta"))
    }

    /// Every meta entry whose key starts with `prefix`.
    pub fn scan_meta(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let meta = self.meta_cf();
        let mut out = Vec::new();
        for item in self.db.prefix_iterator_cf(&meta, prefix) {
            let (k, v) = item.map_err(MvccError::storage("scan meta"))?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// The underlying RocksDB handle, for checkpoints.
    pub fn db(&self) -> &Arc<DB> {
        &self.db
    }

    pub(crate) fn kv_cf(&self) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(CF_KV).expect("kv column family exists")
    }

    pub(crate) fn meta_cf(&self) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(CF_META).expect("meta column family exists")
    }

    pub(crate) fn schedule_compaction(&self, job: CompactionJob) {
        if let Some(tx) = self.compactor.lock().as_ref() {
            // The compactor only stops when the store is dropped.
            let _ = tx.send(job);
        }
    }

    /// Reads the value stored at `at.modified`, through `opts`.
    pub(crate) fn load_with(&self, key: &Bytes, at: &KeyAt, opts: &ReadOptions) -> Result<KeyValue> {
        let kv = self.kv_cf();
        let raw = self
            .db
            .get_pinned_cf_opt(&kv, at.modified.to_bytes(), opts)
            .map_err(MvccError::storage("read revision"))?
            .ok_or(MvccError::Corrupt { what: "indexed revision missing from kv", source: None })?;
        let mut kv = decode_kv(&raw)?;
        if kv.key != *key {
            return Err(MvccError::Corrupt { what: "revision holds another key", source: None });
        }
        kv.key = key.clone();
        Ok(kv)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.compactor.lock().take();
        if let Some(t) = self.compactor_thread.lock().take() {
            let _ = t.join();
        }
    }
}

/// A point-in-time read view: the revisions read under the state lock, the
/// values from a RocksDB snapshot taken under the same lock.
pub(crate) struct SnapshotView<'s> {
    store: &'s Store,
    current: i64,
    compacted: i64,
    snapshot: rocksdb::SnapshotWithThreadMode<'s, DB>,
}

impl<'s> SnapshotView<'s> {
    pub fn new(store: &'s Store) -> Self {
        let state = store.state.read();
        SnapshotView {
            store,
            current: state.current,
            compacted: state.compacted,
            snapshot: store.db.snapshot(),
        }
    }
}

impl View for SnapshotView<'_> {
    fn current(&self) -> i64 {
        self.current
    }

    fn compacted(&self) -> i64 {
        self.compacted
    }

    fn keys(&self, range: KeyRange<'_>, at: i64, limit: usize) -> Result<(Vec<(Bytes, KeyAt)>, usize)> {
        let state = self.store.state.read();
        // A compaction may have run since the view was taken.
        if at < state.compacted {
            return Err(MvccError::Compacted { compacted: state.compacted });
        }
        Ok(state.index.revisions(range, at, limit))
    }

    fn load(&self, key: &Bytes, at: &KeyAt) -> Result<KeyValue> {
        let mut opts = ReadOptions::default();
        opts.set_snapshot(&self.snapshot);
        self.store.load_with(key, at, &opts)
    }
}

/// Rebuilds the key index from the `kv` column family; returns it and the
/// newest revision found.
fn rebuild_index(db: &DB) -> Result<(TreeIndex, i64)> {
    let kv = db.cf_handle(CF_KV).expect("kv column family exists");
    let mut index = TreeIndex::default();
    let mut max_rev = 0;
    for item in db.iterator_cf(&kv, IteratorMode::Start) {
        let (k, v) = item.map_err(MvccError::storage("scan kv for index"))?;
        let (rev, tombstone) =
            Revision::from_bytes(&k).ok_or(MvccError::Corrupt { what: "revision key", source: None })?;
        max_rev = rev.main;
        let kv = decode_kv(&v)?;
        index.restore_one(&kv, rev, tombstone);
    }
    Ok((index, max_rev))
}

pub(crate) fn decode_kv(raw: &[u8]) -> Result<KeyValue> {
    KeyValue::decode(raw).map_err(|e| MvccError::Corrupt { what: "key value", source: Some(e) })
}

pub(crate) fn decode_i64(raw: &[u8]) -> Result<i64> {
    Ok(i64::from_be_bytes(
        raw.try_into().map_err(|_| MvccError::Corrupt { what: "revision number", source: None })?,
    ))
}

pub(crate) fn alarm_key(member: u64, alarm: i32) -> Vec<u8> {
    let mut k = META_ALARM_PREFIX.to_vec();
    k.extend_from_slice(&member.to_be_bytes());
    k.extend_from_slice(&alarm.to_be_bytes());
    k
}

fn decode_alarm_key(k: &[u8]) -> Result<(u64, i32)> {
    let rest = &k[META_ALARM_PREFIX.len()..];
    if rest.len() != 12 {
        return Err(MvccError::Corrupt { what: "alarm key", source: None });
    }
    let member = u64::from_be_bytes(rest[..8].try_into().expect("8 bytes"));
    let alarm = i32::from_be_bytes(rest[8..].try_into().expect("4 bytes"));
    Ok((member, alarm))
}

/// Revisions kept by a compaction, for the physical pass.
pub(crate) type KeepSet = HashSet<Revision>;

const _: () = assert!(REV_BYTES_LEN == 17);
