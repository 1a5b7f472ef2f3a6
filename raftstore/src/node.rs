//! [`Node`]: one member — openraft over the WAL and the MVCC state machine,
//! the watch hub fed by the apply path, and the leader-driven lessor.
//!
//! Start-up: check the data dir's identity (cluster and member id, format),
//! open the store, rebuild leases, open the WAL, start openraft, and on a new
//! data dir initialise the cluster from `--initial-cluster`.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use keelson_mvcc::Store;
use keelson_proto::etcdserverpb::LeaseRevokeRequest;
use keelson_proto::keelsonraftpb::internal_request::Request;
use keelson_proto::keelsonraftpb::{InternalRequest, InternalResponse};
use keelson_watch::{WatchConfig, WatchHub};
use openraft::async_runtime::watch::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{Raft, ReadPolicy, ServerState, SnapshotPolicy};
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::ids;
use crate::lessor::Lessor;
use crate::network::NoPeers;
use crate::state_machine::{Shared, StateMachine, StoreSource, load_leases};
use crate::types::{Command, Member, TypeConfig};
use crate::wal::{WalConfig, WalLogStore};

/// How a member is configured; the CLI fills it from etcd's flags.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// `--name`.
    pub name: String,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// `--initial-cluster`: member name → peer URLs.
    pub initial_cluster: Vec<(String, Vec<String>)>,
    /// `--initial-cluster-token`.
    pub initial_cluster_token: String,
    /// `--advertise-client-urls`.
    pub client_urls: Vec<String>,
    /// `--initial-advertise-peer-urls`.
    pub peer_urls: Vec<String>,
    /// `--heartbeat-interval`.
    pub heartbeat_interval: Duration,
    /// `--election-timeout`.
    pub election_timeout: Duration,
    /// `--snapshot-count`: entries between snapshots.
    pub snapshot_count: u64,
    pub mvcc: keelson_mvcc::Config,
    pub watch: WatchConfig,
}

/// Why a member could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("create data dir {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "data dir {path} belongs to cluster {found:016x} (token {found_token:?}), not {expected:016x} (token {expected_token:?}): refusing to use it"
    )]
    OtherCluster { path: PathBuf, found: u64, found_token: String, expected: u64, expected_token: String },
    #[error("data dir {path} was written by a newer format ({found}); this binary reads format {supported}")]
    NewerFormat { path: PathBuf, found: u32, supported: u32 },
    #[error("member {name:?} is not in --initial-cluster")]
    NotInCluster { name: String },
    #[error("read data dir identity {path}")]
    Identity {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("open mvcc store")]
    Mvcc(#[source] keelson_mvcc::MvccError),
    #[error("open wal")]
    Wal(#[source] crate::wal::WalError),
    #[error("load leases")]
    Leases(#[source] io::Error),
    #[error("start watch hub: {0}")]
    Watch(String),
    #[error("raft config: {0}")]
    RaftConfig(String),
    #[error("start raft: {0}")]
    Raft(String),
}

/// Why a proposal or read barrier failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProposeError {
    #[error("no leader")]
    NoLeader,
    #[error("not leader (leader is {leader:?})")]
    NotLeader { leader: Option<u64> },
    #[error("request timed out")]
    Timeout,
    #[error("server stopped")]
    Stopped,
    #[error("{0}")]
    Internal(String),
}

/// The on-disk format of a member's data dir.
pub const DATA_FORMAT: u32 = 1;

/// What a data dir says about whom it belongs to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Identity {
    format: u32,
    cluster_id: u64,
    member_id: u64,
    name: String,
    cluster_token: String,
}

/// Raft-side status of this member.
#[derive(Debug, Clone, Default)]
pub struct NodeStatus {
    pub cluster_id: u64,
    pub member_id: u64,
    pub leader: Option<u64>,
    pub term: u64,
    pub last_log_index: u64,
    pub applied_index: u64,
    pub committed_index: u64,
    pub is_leader: bool,
    pub is_learner: bool,
}

/// One member.
pub struct Node {
    raft: Raft<TypeConfig, StateMachine>,
    shared: Arc<Shared>,
    member_id: u64,
    cluster_id: u64,
    request_timeout: Duration,
    lease_ids: AtomicU64,
    wal: WalLogStore,
    data_dir: PathBuf,
    tasks: parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    leader_changes: AtomicU64,
    proposals_failed: AtomicU64,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("member_id", &self.member_id).finish_non_exhaustive()
    }
}

impl Node {
    /// Starts a member; see the module docs.
    pub async fn start(cfg: NodeConfig) -> Result<Arc<Node>, StartError> {
        let member_dir = cfg.data_dir.join("member");
        std::fs::create_dir_all(&member_dir)
            .map_err(|source| StartError::CreateDir { path: member_dir.clone(), source })?;
        let members = ids::members_of(&cfg.initial_cluster, &cfg.initial_cluster_token);
        let Some(&(member_id, _)) = members.iter().find(|(_, name)| *name == cfg.name) else {
            return Err(StartError::NotInCluster { name: cfg.name.clone() });
        };
        let cluster_id = ids::cluster_id(members.iter().map(|(id, _)| *id));
        let identity = Identity {
            format: DATA_FORMAT,
            cluster_id,
            member_id,
            name: cfg.name.clone(),
            cluster_token: cfg.initial_cluster_token.clone(),
        };
        check_identity(&member_dir, &identity)?;

        let mvcc_cfg = keelson_mvcc::Config { member_id, ..cfg.mvcc.clone() };
        let store = Arc::new(Store::open(member_dir.join("kv"), mvcc_cfg).map_err(StartError::Mvcc)?);
        let min_ttl = (cfg.election_timeout.as_millis() as i64 * 3 / 2 + 999) / 1000;
        let lessor = Arc::new(Lessor::new(min_ttl));
        load_leases(&store, &lessor).map_err(StartError::Leases)?;
        let hub = WatchHub::start(
            Arc::new(StoreSource(store.clone())),
            cfg.watch.clone(),
            store.current_revision(),
            store.compacted_revision(),
        )
        .map_err(|e| StartError::Watch(e.to_string()))?;
        let shared = Arc::new(Shared {
            store,
            hub,
            lessor,
            member_id,
            snap_dir: member_dir.join("snap"),
            compaction_waits: parking_lot::Mutex::new(HashMap::new()),
        });

        // The committed position rides behind the entries it covers and is
        // synced by the next group commit (as etcd does): one fsync per write.
        let wal_config = WalConfig { sync_committed: false, ..WalConfig::default() };
        let log_store = WalLogStore::open(member_dir.join("wal"), wal_config).map_err(StartError::Wal)?;
        let wal = log_store.clone();
        let heartbeat = cfg.heartbeat_interval.as_millis() as u64;
        let election = cfg.election_timeout.as_millis() as u64;
        let raft_config = openraft::Config {
            cluster_name: format!("{cluster_id:016x}"),
            heartbeat_interval: heartbeat.max(1),
            election_timeout_min: election.max(heartbeat + 1),
            election_timeout_max: election.max(heartbeat + 1) * 2,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_count.max(1)),
            max_in_snapshot_log_to_keep: 5000.min(cfg.snapshot_count),
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::RaftConfig(e.to_string()))?;
        let raft = Raft::new(
            member_id,
            Arc::new(raft_config),
            NoPeers,
            log_store,
            StateMachine::new(shared.clone()),
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
        if !raft.is_initialized().await.map_err(|e| StartError::Raft(e.to_string()))? {
            let mut init = BTreeMap::new();
            for (name, urls) in &cfg.initial_cluster {
                let (id, _) = members.iter().find(|(_, n)| n == name).expect("computed from the same list");
                let client_urls = if *name == cfg.name { cfg.client_urls.clone() } else { Vec::new() };
                init.insert(*id, Member { name: name.clone(), peer_urls: urls.clone(), client_urls });
            }
            raft.initialize(init).await.map_err(|e| StartError::Raft(e.to_string()))?;
        }

        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let node = Arc::new(Node {
            raft,
            shared,
            member_id,
            cluster_id,
            request_timeout: Duration::from_secs(5) + 2 * cfg.election_timeout,
            lease_ids: AtomicU64::new(unix_ms << 8),
            wal,
            data_dir: member_dir,
            tasks: parking_lot::Mutex::new(Vec::new()),
            leader_changes: AtomicU64::new(0),
            proposals_failed: AtomicU64::new(0),
        });
        let t1 = tokio::spawn(leadership_loop(Arc::downgrade(&node), cfg.election_timeout));
        let t2 = tokio::spawn(lease_expiry_loop(Arc::downgrade(&node)));
        node.tasks.lock().extend([t1, t2]);
        Ok(node)
    }

    pub fn member_id(&self) -> u64 {
        self.member_id
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.shared.store
    }

    pub fn hub(&self) -> &WatchHub {
        &self.shared.hub
    }

    pub fn lessor(&self) -> &Lessor {
        &self.shared.lessor
    }

    /// Leader changes seen and proposals that failed, since start.
    pub fn counters(&self) -> (u64, u64) {
        (self.leader_changes.load(Ordering::Relaxed), self.proposals_failed.load(Ordering::Relaxed))
    }

    /// WAL appends, fsyncs and fsync durations so far.
    pub fn wal_stats(&self) -> crate::wal::WalStats {
        self.wal.stats()
    }

    /// Replicates `req` through the log and waits until it is applied here.
    pub async fn propose(&self, mut req: InternalRequest) -> Result<InternalResponse, ProposeError> {
        if let Some(Request::LeaseGrant(g)) = &mut req.request
            && g.id == 0
        {
            g.id = self.next_lease_id();
        }
        let physical = matches!(&req.request, Some(Request::Compaction(c)) if c.physical);
        let cmd = Command(Bytes::from(req.encode_to_vec()));
        let written = tokio::time::timeout(self.request_timeout, self.raft.client_write(cmd))
            .await
            .map_err(|_| ProposeError::Timeout)
            .inspect_err(|_| {
                self.proposals_failed.fetch_add(1, Ordering::Relaxed);
            })?
            .map_err(|e| match e {
                RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => match f.leader_id {
                    Some(l) => ProposeError::NotLeader { leader: Some(l) },
                    None => ProposeError::NoLeader,
                },
                RaftError::APIError(other) => ProposeError::Internal(other.to_string()),
                RaftError::Fatal(_) => ProposeError::Stopped,
            })?;
        let resp = InternalResponse::decode(written.data.0)
            .map_err(|e| ProposeError::Internal(format!("decode apply result: {e}")))?;
        if physical {
            let wait = self.shared.compaction_waits.lock().remove(&written.log_id.index);
            if let Some(wait) = wait {
                let _ = tokio::task::spawn_blocking(move || wait.wait()).await;
            }
        }
        Ok(resp)
    }

    /// Waits until this member has applied everything committed before the
    /// call, as confirmed by the leader (read index).
    pub async fn read_barrier(&self) -> Result<(), ProposeError> {
        tokio::time::timeout(self.request_timeout, self.raft.ensure_linearizable(ReadPolicy::ReadIndex))
            .await
            .map_err(|_| ProposeError::Timeout)?
            .map(|_| ())
            .map_err(|e| match e {
                RaftError::APIError(openraft::error::LinearizableReadError::ForwardToLeader(f)) => {
                    match f.leader_id {
                        Some(l) => ProposeError::NotLeader { leader: Some(l) },
                        None => ProposeError::NoLeader,
                    }
                }
                RaftError::APIError(other) => ProposeError::Internal(other.to_string()),
                RaftError::Fatal(_) => ProposeError::Stopped,
            })
    }

    pub fn status(&self) -> NodeStatus {
        // Read the few fields in place: cloning the whole metrics struct on
        // every response header costs more than the rest of a read.
        let rx = self.raft.metrics();
        let m = rx.borrow_watched();
        NodeStatus {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            leader: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.as_ref().map_or(0, |l| l.index),
            committed_index: m.cluster_committed.as_ref().map_or(0, |l| l.index),
            is_leader: m.state == ServerState::Leader,
            is_learner: !m.membership_config.membership().voter_ids().any(|id| id == self.member_id),
        }
    }

    /// Members of the current configuration: (id, member, is_learner).
    pub fn members(&self) -> Vec<(u64, Member, bool)> {
        let m = self.raft.metrics().borrow_watched().membership_config.clone();
        let voters: std::collections::BTreeSet<u64> = m.membership().voter_ids().collect();
        m.membership().nodes().map(|(id, node)| (*id, node.clone(), !voters.contains(id))).collect()
    }

    /// Renews a lease (on the leader); `None` if it does not exist.
    pub fn lease_keep_alive(&self, id: i64) -> Result<Option<i64>, ProposeError> {
        if !self.status().is_leader {
            return Err(ProposeError::NotLeader { leader: self.status().leader });
        }
        Ok(self.shared.lessor.keep_alive(id))
    }

    /// Writes a consistent copy of the database into a packed file inside a
    /// new temporary directory under the data dir; returns the directory
    /// guard and the file.
    pub async fn snapshot_file(&self) -> io::Result<(tempfile::TempDir, PathBuf)> {
        let store = self.shared.store.clone();
        let base = self.data_dir.clone();
        tokio::task::spawn_blocking(move || {
            let tmp = tempfile::Builder::new().prefix("snapshot-").tempdir_in(&base)?;
            let cp = tmp.path().join("checkpoint");
            crate::snapshot::checkpoint(&store, &cp)?;
            let file = tmp.path().join("db.keel");
            crate::snapshot::pack(&cp, &file)?;
            std::fs::remove_dir_all(&cp)?;
            Ok((tmp, file))
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Stops raft and the background tasks.
    pub async fn shutdown(&self) {
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        // openraft's state machine worker and snapshot builds hold the
        // shared state (and through it the store) a little longer: wait for
        // them, so dropping the node closes RocksDB and the data dir can be
        // opened again at once.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&self.shared) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn next_lease_id(&self) -> i64 {
        loop {
            let n = self.lease_ids.fetch_add(1, Ordering::Relaxed);
            let id = (((self.member_id & 0xffff) << 48) | (n & ((1 << 48) - 1))) & (i64::MAX as u64);
            if id != 0 && !self.shared.lessor.exists(id as i64) {
                return id as i64;
            }
        }
    }
}

fn check_identity(dir: &Path, expected: &Identity) -> Result<(), StartError> {
    let path = dir.join("identity.json");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let found: Identity = serde_json::from_slice(&bytes).map_err(|e| StartError::Identity {
                path: path.clone(),
                source: io::Error::new(io::ErrorKind::InvalidData, e),
            })?;
            if found.format > DATA_FORMAT {
                return Err(StartError::NewerFormat { path, found: found.format, supported: DATA_FORMAT });
            }
            if found.cluster_id != expected.cluster_id || found.cluster_token != expected.cluster_token {
                return Err(StartError::OtherCluster {
                    path,
                    found: found.cluster_id,
                    found_token: found.cluster_token,
                    expected: expected.cluster_id,
                    expected_token: expected.cluster_token.clone(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let tmp = dir.join("identity.json.tmp");
            let write = || -> io::Result<()> {
                std::fs::write(&tmp, serde_json::to_vec_pretty(expected).map_err(io::Error::other)?)?;
                std::fs::File::open(&tmp)?.sync_all()?;
                std::fs::rename(&tmp, &path)?;
                std::fs::File::open(dir)?.sync_all()
            };
            write().map_err(|source| StartError::Identity { path: path.clone(), source })
        }
        Err(source) => Err(StartError::Identity { path, source }),
    }
}

/// Follows leadership: the leader's lessor runs countdowns.
async fn leadership_loop(node: std::sync::Weak<Node>, extend: Duration) {
    // Server metrics change only with leadership or membership, not with
    // every entry.
    let Some(mut rx) = node.upgrade().map(|n| n.raft.server_metrics()) else { return };
    let mut leader = None;
    loop {
        let (is_leader, now_leader) = {
            let m = rx.borrow_watched();
            (m.state == ServerState::Leader, m.current_leader)
        };
        let Some(n) = node.upgrade() else { return };
        if now_leader != leader {
            if now_leader.is_some() {
                n.leader_changes.fetch_add(1, Ordering::Relaxed);
            }
            leader = now_leader;
        }
        if is_leader && !n.shared.lessor.is_primary() {
            n.shared.lessor.promote(extend);
            tracing::info!(member = format_args!("{:x}", n.member_id), "became leader");
        } else if !is_leader && n.shared.lessor.is_primary() {
            n.shared.lessor.demote();
        }
        drop(n);
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Revokes expired leases through the log (leader only).
async fn lease_expiry_loop(node: std::sync::Weak<Node>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let Some(n) = node.upgrade() else { return };
        for id in n.shared.lessor.take_expired(Duration::from_secs(3), 500) {
            let n = n.clone();
            tokio::spawn(async move {
                let req = InternalRequest { request: Some(Request::LeaseRevoke(LeaseRevokeRequest { id })) };
                if let Err(e) = n.propose(req).await {
                    tracing::warn!(lease = id, error = %e, "revoke expired lease");
                }
            });
        }
    }
}
