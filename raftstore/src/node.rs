//! [`Node`]: one member — openraft over the WAL and the MVCC state machine,
//! the watch hub fed by the apply path, and the leader-driven lessor.
//!
//! Start-up: check the data dir's identity (cluster and member id, format),
//! open the store, rebuild leases, open the WAL, start openraft, and on a new
//! data dir initialise the cluster from `--initial-cluster`.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use keelson_mvcc::Store;
use keelson_proto::etcdserverpb::{LeaseRevokeRequest, LeaseTimeToLiveResponse, ResponseHeader};
use keelson_proto::keelsonraftpb::internal_request::Request;
use keelson_proto::keelsonraftpb::{InternalRequest, InternalResponse};
use keelson_proto::keelsonraftpeerpb as pb;
use keelson_proto::keelsonraftpeerpb::forward_client::ForwardClient;
use keelson_watch::{WatchConfig, WatchHub};
use openraft::async_runtime::watch::WatchReceiver;
use openraft::{Raft, ServerState, SnapshotPolicy};
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::forward::{forward_service, from_wire, never_sent};
use crate::ids;
use crate::lessor::Lessor;
use crate::proposer::Proposer;
use crate::read_index::{ReadIndexer, lost_quorum};
use crate::state_machine::{Shared, StateMachine, StoreHandle};
use crate::transport::{GrpcNetwork, LocalIdentity, TransportConfig};
use crate::types::{Member, TypeConfig};
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
    /// `--initial-cluster-state`.
    pub initial_cluster_state: ClusterState,
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
    /// The peer transport's settings.
    pub transport: TransportConfig,
}

/// `--initial-cluster-state`: form a new cluster from `--initial-cluster`,
/// or join a running one that already lists this member (added with
/// MemberAdd).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClusterState {
    #[default]
    New,
    Existing,
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
    #[error("cannot join the cluster: {0}")]
    Join(String),
    #[error("read data dir identity {path}")]
    Identity {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("open mvcc store")]
    Mvcc(#[source] crate::state_machine::OpenStoreError),
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

/// Why a proposal, a read barrier, a lease or a membership request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("no leader")]
    NoLeader,
    #[error("not leader (leader is {leader:?})")]
    NotLeader { leader: Option<u64> },
    #[error("request timed out")]
    Timeout,
    #[error("server stopped")]
    Stopped,
    /// The entry was dropped by a leader change; it may or may not have
    /// been applied.
    #[error("leader changed")]
    LeaderChanged,
    /// The connection to the leader broke after the request went out: it
    /// may or may not have been applied.
    #[error("request timed out, possibly due to connection lost")]
    ConnectionLost,
    #[error("requested lease not found")]
    LeaseNotFound,
    #[error("member not found")]
    MemberNotFound,
    #[error("member ID already exist")]
    MemberExists,
    #[error("Peer URLs already exists")]
    PeerUrlExists,
    #[error("can only promote a learner member")]
    MemberNotLearner,
    #[error("can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("unhealthy cluster")]
    Unhealthy,
    #[error("bad leader transferee")]
    BadTransferee,
    #[error("too many learner members in cluster")]
    TooManyLearners,
    #[error("{0}")]
    Internal(String),
}

/// The on-disk format of a member's data dir. 2: the log may hold
/// `RequestBatch` entries, which format-1 binaries would not apply (they
/// would drop the writes), so they must refuse such a dir. A format-1 dir is
/// marked 2 when a newer binary opens it.
pub const DATA_FORMAT: u32 = 2;

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
    name: String,
    client_urls: Vec<String>,
    token: String,
    network: GrpcNetwork,
    transport: TransportConfig,
    election_timeout: Duration,
    request_timeout: Duration,
    reads: Arc<ReadIndexer>,
    proposer: Arc<Proposer>,
    lease_ids: AtomicU64,
    wal: WalLogStore,
    data_dir: PathBuf,
    tasks: parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    leader_changes: AtomicU64,
    proposals_failed: AtomicU64,
    /// Set once the member has seen itself removed from the membership.
    removed: tokio::sync::watch::Sender<bool>,
    /// Set once the membership carries this member's name and client URLs.
    published: tokio::sync::watch::Sender<bool>,
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
        let identity = match read_identity(&member_dir)? {
            Some(mut found) => {
                check_identity(&member_dir, &found, &cfg)?;
                if found.format < DATA_FORMAT {
                    found.format = DATA_FORMAT;
                    write_identity(&member_dir, &found)?;
                }
                found
            }
            None => {
                let identity = match cfg.initial_cluster_state {
                    ClusterState::New => new_identity(&cfg)?,
                    ClusterState::Existing => join_identity(&cfg).await?,
                };
                write_identity(&member_dir, &identity)?;
                identity
            }
        };
        let (member_id, cluster_id) = (identity.member_id, identity.cluster_id);

        let mvcc_cfg = keelson_mvcc::Config { member_id, ..cfg.mvcc.clone() };
        let store = StoreHandle::open(member_dir.join("kv"), mvcc_cfg).map_err(StartError::Mvcc)?;
        let min_ttl = (cfg.election_timeout.as_millis() as i64 * 3 / 2 + 999) / 1000;
        let lessor = Arc::new(Lessor::new(min_ttl));
        let (revision, compacted) = {
            let current = store.load();
            (current.current_revision(), current.compacted_revision())
        };
        let hub = WatchHub::start(Arc::new(store.clone()), cfg.watch.clone(), revision, compacted)
            .map_err(|e| StartError::Watch(e.to_string()))?;
        let shared = Arc::new(
            Shared::new(&store, hub, lessor, member_id, member_dir.join("snap"))
                .map_err(StartError::Leases)?,
        );

        // The committed position rides behind the entries it covers and is
        // synced by the next group commit (as etcd does): one fsync per write.
        let wal_config = WalConfig { sync_committed: false, ..WalConfig::default() };
        let log_store = WalLogStore::open(member_dir.join("wal"), wal_config).map_err(StartError::Wal)?;
        let wal = log_store.clone();
        let heartbeat = (cfg.heartbeat_interval.as_millis() as u64).max(1);
        let election = (cfg.election_timeout.as_millis() as u64).max(heartbeat + 1);
        let raft_config = openraft::Config {
            cluster_name: format!("{cluster_id:016x}"),
            heartbeat_interval: heartbeat,
            // A narrow spread: a follower first waits out the leader lease
            // (the maximum), then its own timeout, so a new leader comes
            // about 2.2 election timeouts after the old one stopped.
            election_timeout_min: election,
            election_timeout_max: (election * 6 / 5).max(election + 1),
            enable_pre_vote: Some(true),
            // A restarted member never takes leadership back from its own
            // stored vote: entries it sent before the crash but had not yet
            // made durable itself may sit on the followers under log ids it
            // would reuse for other entries. A leader comes only from an
            // election in a new term (found by the robustness soak; see
            // docs/testing.md).
            enable_leader_restore: Some(false),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_count.max(1)),
            max_in_snapshot_log_to_keep: 5000.min(cfg.snapshot_count),
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::RaftConfig(e.to_string()))?;
        let network = GrpcNetwork::new(cluster_id, member_id, cfg.transport.clone());
        let raft = Raft::new(
            member_id,
            Arc::new(raft_config),
            network.clone(),
            log_store,
            StateMachine::new(shared.clone()),
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let initialized = raft.is_initialized().await.map_err(|e| StartError::Raft(e.to_string()))?;
        if !initialized && cfg.initial_cluster_state == ClusterState::New {
            // Every member initializes with the same entry; a member's
            // client URLs join it when the member publishes them, except in
            // a cluster of one.
            let single = cfg.initial_cluster.len() == 1;
            let mut init = BTreeMap::new();
            for (name, urls) in &cfg.initial_cluster {
                let id = ids::member_id(urls, &cfg.initial_cluster_token);
                let client_urls = if single { cfg.client_urls.clone() } else { Vec::new() };
                init.insert(id, Member { name: name.clone(), peer_urls: urls.clone(), client_urls });
            }
            raft.initialize(init).await.map_err(|e| StartError::Raft(e.to_string()))?;
        }

        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let request_timeout = Duration::from_secs(5) + 2 * cfg.election_timeout;
        let reads = ReadIndexer::new(raft.clone(), cfg.election_timeout, request_timeout);
        let proposer = Proposer::new(raft.clone(), request_timeout);
        let node = Arc::new(Node {
            raft,
            reads,
            proposer,
            shared,
            member_id,
            cluster_id,
            name: cfg.name.clone(),
            client_urls: cfg.client_urls.clone(),
            token: identity.cluster_token.clone(),
            network,
            transport: cfg.transport.clone(),
            election_timeout: cfg.election_timeout,
            request_timeout,
            lease_ids: AtomicU64::new(unix_ms << 8),
            wal,
            data_dir: member_dir,
            tasks: parking_lot::Mutex::new(Vec::new()),
            leader_changes: AtomicU64::new(0),
            proposals_failed: AtomicU64::new(0),
            removed: tokio::sync::watch::Sender::new(false),
            published: tokio::sync::watch::Sender::new(false),
        });
        let t1 = tokio::spawn(leadership_loop(Arc::downgrade(&node), cfg.election_timeout));
        let t2 = tokio::spawn(lease_expiry_loop(Arc::downgrade(&node)));
        let t3 = tokio::spawn(Node::publish_loop(Arc::downgrade(&node)));
        node.tasks.lock().extend([t1, t2, t3]);
        Ok(node)
    }

    /// What serves this member's peer URLs: raft's RPCs and the requests
    /// other members forward to it. Serve them with
    /// `TransportConfig::server()`.
    pub fn peer_routes(self: &Arc<Self>) -> tonic::service::Routes {
        crate::transport::peer_routes(
            self.raft.clone(),
            self.cluster_id,
            self.member_id,
            self.shared.snap_dir.clone(),
            &self.transport,
        )
        .add_service(forward_service(Arc::downgrade(self), &self.transport))
    }

    /// Resolves once this member has been removed from the cluster (etcd
    /// then stops the member: it must not come back under its old id).
    pub async fn removed(&self) {
        let mut mine = self.removed.subscribe();
        let mut told = self.network.removed();
        tokio::select! {
            _ = mine.wait_for(|r| *r) => {}
            _ = told.wait_for(|r| *r) => {
                tracing::warn!(
                    member = format_args!("{:x}", self.member_id),
                    "the member has been permanently removed from the cluster"
                );
            }
        }
    }

    /// Resolves once the membership carries this member's name and client
    /// URLs (etcd's `publish`): etcd serves clients only from then on, so
    /// MemberList on any member shows them.
    pub async fn published(&self) {
        let mut rx = self.published.subscribe();
        let _ = rx.wait_for(|p| *p).await;
    }

    pub(crate) fn set_published(&self) {
        self.published.send_replace(true);
    }

    /// The peer transport's settings.
    pub fn transport(&self) -> &TransportConfig {
        &self.transport
    }

    pub fn member_id(&self) -> u64 {
        self.member_id
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// The current store (a snapshot from the leader replaces it).
    pub fn store(&self) -> Arc<Store> {
        self.shared.store.load()
    }

    pub fn hub(&self) -> &WatchHub {
        &self.shared.hub
    }

    pub fn lessor(&self) -> &Lessor {
        &self.shared.lessor
    }

    pub(crate) fn raft(&self) -> &Raft<TypeConfig, StateMachine> {
        &self.raft
    }

    pub(crate) fn identity(&self) -> LocalIdentity {
        LocalIdentity { cluster_id: self.cluster_id, member_id: self.member_id }
    }

    pub(crate) fn route(&self, target: u64) -> pb::Route {
        self.network.route(target)
    }

    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// The name and client URLs this member publishes.
    pub(crate) fn advertised(&self) -> (String, Vec<String>) {
        (self.name.clone(), self.client_urls.clone())
    }

    pub(crate) fn forget_peer(&self, id: u64) {
        self.network.forget(id);
    }

    /// Leader changes seen and proposals that failed, since start.
    pub fn counters(&self) -> (u64, u64) {
        (self.leader_changes.load(Ordering::Relaxed), self.proposals_failed.load(Ordering::Relaxed))
    }

    /// WAL appends, fsyncs and fsync durations so far.
    pub fn wal_stats(&self) -> crate::wal::WalStats {
        self.wal.stats()
    }

    /// The leader, waiting for one during an election: at most two
    /// election timeouts (and not past `deadline`), then "no leader".
    pub(crate) async fn wait_for_leader(&self, deadline: Instant) -> Result<u64, ProposeError> {
        let mut rx = self.raft.server_metrics();
        let until = deadline.min(Instant::now() + 2 * self.election_timeout);
        loop {
            if let Some(leader) = rx.borrow_watched().current_leader {
                return Ok(leader);
            }
            match tokio::time::timeout_at(until, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(ProposeError::Stopped),
                Err(_) => return Err(ProposeError::NoLeader),
            }
        }
    }

    /// A client of `leader`'s forwarding service, over the member's one
    /// channel to it.
    pub(crate) fn forward_client(&self, leader: u64) -> Result<ForwardClient<Channel>, ProposeError> {
        let members = self.members();
        let Some((_, member, _)) = members.iter().find(|(id, _, _)| *id == leader) else {
            return Err(ProposeError::NoLeader);
        };
        let url = member.peer_urls.first().ok_or(ProposeError::NoLeader)?;
        let channel = self.network.channel(leader, url).map_err(ProposeError::Internal)?;
        Ok(ForwardClient::new(channel)
            .max_decoding_message_size(self.transport.max_message_bytes)
            .max_encoding_message_size(self.transport.max_message_bytes))
    }

    /// Replicates `req` through the log (forwarding it to the leader from a
    /// follower) and waits until it is applied here.
    pub async fn propose(&self, mut req: InternalRequest) -> Result<InternalResponse, ProposeError> {
        if let Some(Request::LeaseGrant(g)) = &mut req.request
            && g.id == 0
        {
            g.id = self.next_lease_id();
        }
        let result = self.propose_anywhere(req).await;
        if result.is_err() {
            self.proposals_failed.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn propose_anywhere(&self, req: InternalRequest) -> Result<InternalResponse, ProposeError> {
        let deadline = Instant::now() + self.request_timeout;
        let mut retry = Retry::new(deadline, 3 * self.election_timeout);
        let physical = matches!(&req.request, Some(Request::Compaction(c)) if c.physical);
        let mut encoded = None;
        loop {
            let leader = self.wait_for_leader(deadline).await?;
            let result = if leader == self.member_id {
                self.propose_here(req.clone()).await.map(|(resp, _)| resp)
            } else {
                let bytes = encoded.get_or_insert_with(|| Bytes::from(req.encode_to_vec())).clone();
                // Boxed: a forwarded call's state is large, and every
                // proposal's future would carry (and move) it otherwise.
                Box::pin(self.forward_propose(leader, bytes, deadline, physical)).await
            };
            match result {
                // Not taken: the leader changed under us; try the new one.
                Err(e @ ProposeError::NotLeader { .. }) => Box::pin(retry.again(e)).await?,
                other => return other,
            }
        }
    }

    /// Proposes `req` on this member, which must be the leader; returns
    /// what applying it answered and its log index.
    pub(crate) async fn propose_here(
        &self,
        req: InternalRequest,
    ) -> Result<(InternalResponse, u64), ProposeError> {
        self.check_quorum()?;
        let physical = matches!(&req.request, Some(Request::Compaction(c)) if c.physical);
        let (resp, index) = self.proposer.propose(req).await?;
        if physical {
            self.wait_compaction(index).await;
        }
        Ok((resp, index))
    }

    async fn forward_propose(
        &self,
        leader: u64,
        request: Bytes,
        deadline: Instant,
        physical: bool,
    ) -> Result<InternalResponse, ProposeError> {
        let mut client = self.forward_client(leader)?;
        let req = pb::ProposeRequest { route: Some(self.route(leader)), request };
        let resp = match tokio::time::timeout_at(deadline, client.propose(req)).await {
            Err(_) => return Err(ProposeError::Timeout),
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(s)) if never_sent(&s) => return Err(ProposeError::NotLeader { leader: None }),
            Ok(Err(s)) if s.code() == tonic::Code::FailedPrecondition => {
                return Err(ProposeError::Internal(s.message().to_string()));
            }
            Ok(Err(_)) => return Err(ProposeError::ConnectionLost),
        };
        match resp.result {
            Some(pb::propose_response::Result::Response(bytes)) => {
                let decoded = InternalResponse::decode(bytes)
                    .map_err(|e| ProposeError::Internal(format!("decode forwarded result: {e}")))?;
                // Answer once the write is visible here too.
                self.wait_applied(resp.index, deadline).await?;
                if physical {
                    self.wait_compaction(resp.index).await;
                }
                Ok(decoded)
            }
            Some(pb::propose_response::Result::Error(e)) => Err(from_wire(e)),
            None => Err(ProposeError::Internal("empty answer to a forwarded write".into())),
        }
    }

    /// Waits for the physical compaction applied at log `index` here.
    async fn wait_compaction(&self, index: u64) {
        let wait = self.shared.compaction_waits.lock().remove(&index);
        if let Some(wait) = wait {
            let _ = tokio::task::spawn_blocking(move || wait.wait()).await;
        }
    }

    /// Waits until this member has applied log `index`.
    async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), ProposeError> {
        let mut progress = self.raft.watch_apply_progress();
        let reached = progress.wait_until(|applied| applied.as_ref().is_some_and(|l| l.index >= index));
        match tokio::time::timeout_at(deadline, reached).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(ProposeError::Stopped),
            Err(_) => Err(ProposeError::Timeout),
        }
    }

    /// Waits until this member has applied everything committed before the
    /// call, as confirmed by the leader (read index): from the leader itself,
    /// or asked of it over the peer channel.
    pub async fn read_barrier(&self) -> Result<(), ProposeError> {
        let deadline = Instant::now() + self.request_timeout;
        let mut retry = Retry::new(deadline, 3 * self.election_timeout);
        loop {
            let leader = self.wait_for_leader(deadline).await?;
            let result = if leader == self.member_id {
                self.read_index_here().await
            } else {
                self.forward_read_index(leader, deadline).await
            };
            match result {
                Ok(index) => return self.wait_applied(index, deadline).await,
                // Reads change nothing: ask again while there is time.
                Err(e @ (ProposeError::NotLeader { .. } | ProposeError::ConnectionLost)) => {
                    retry.again(e).await?
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The read index, on the leader: confirms leadership with a quorum and
    /// returns the log index a linearizable read must wait for. Concurrent
    /// callers share rounds (`read_index.rs`).
    pub(crate) async fn read_index_here(&self) -> Result<u64, ProposeError> {
        self.reads.read_index().await
    }

    async fn forward_read_index(&self, leader: u64, deadline: Instant) -> Result<u64, ProposeError> {
        let mut client = self.forward_client(leader)?;
        let req = pb::RouteOnly { route: Some(self.route(leader)) };
        match tokio::time::timeout_at(deadline, client.read_index(req)).await {
            Err(_) => Err(ProposeError::Timeout),
            Ok(Err(_)) => Err(ProposeError::ConnectionLost),
            Ok(Ok(r)) => match r.into_inner().result {
                Some(pb::read_index_response::Result::Index(i)) => Ok(i),
                Some(pb::read_index_response::Result::Error(e)) => Err(from_wire(e)),
                None => Err(ProposeError::Internal("empty answer to a read index request".into())),
            },
        }
    }

    /// etcd's CheckQuorum, as seen from requests (`read_index::lost_quorum`).
    fn check_quorum(&self) -> Result<(), ProposeError> {
        if lost_quorum(&self.raft, self.election_timeout) {
            Err(ProposeError::NotLeader { leader: None })
        } else {
            Ok(())
        }
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

    /// Renews a lease (on the leader, forwarding from a follower); returns
    /// its TTL.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<i64, ProposeError> {
        self.at_leader(
            || self.lease_keep_alive_here(id),
            move |mut client, route| async move {
                let req = pb::LeaseRequest { route: Some(route), id, keys: false };
                match client.lease_keep_alive(req).await.map(|r| r.into_inner().result) {
                    Err(_) => Err(ProposeError::ConnectionLost),
                    Ok(Some(pb::lease_keep_alive_response::Result::Ttl(ttl))) => Ok(ttl),
                    Ok(Some(pb::lease_keep_alive_response::Result::Error(e))) => Err(from_wire(e)),
                    Ok(None) => Err(ProposeError::Internal("empty answer to a keep-alive".into())),
                }
            },
        )
        .await
    }

    /// Runs `here` on the leader, or `remote` with a client of the leader's
    /// forwarding service; asks again (another leader, after a broken
    /// connection) while the request has time. For requests that change
    /// nothing, or that may safely happen twice.
    async fn at_leader<T, F>(
        &self,
        here: impl Fn() -> Result<T, ProposeError>,
        remote: impl Fn(ForwardClient<Channel>, pb::Route) -> F,
    ) -> Result<T, ProposeError>
    where
        F: std::future::Future<Output = Result<T, ProposeError>>,
    {
        let deadline = Instant::now() + self.request_timeout;
        let mut retry = Retry::new(deadline, 3 * self.election_timeout);
        loop {
            let leader = self.wait_for_leader(deadline).await?;
            let result = if leader == self.member_id {
                here()
            } else {
                let client = self.forward_client(leader)?;
                tokio::time::timeout_at(deadline, remote(client, self.route(leader)))
                    .await
                    .unwrap_or(Err(ProposeError::Timeout))
            };
            match result {
                Err(e @ (ProposeError::NotLeader { .. } | ProposeError::ConnectionLost)) => {
                    retry.again(e).await?
                }
                other => return other,
            }
        }
    }

    pub(crate) fn lease_keep_alive_here(&self, id: i64) -> Result<i64, ProposeError> {
        let status = self.status();
        if !status.is_leader {
            return Err(ProposeError::NotLeader { leader: status.leader });
        }
        self.shared.lessor.keep_alive(id).ok_or(ProposeError::LeaseNotFound)
    }

    /// A lease's granted and remaining TTL, as the leader (which counts it
    /// down) knows them.
    pub async fn lease_time_to_live(
        &self,
        id: i64,
        keys: bool,
    ) -> Result<LeaseTimeToLiveResponse, ProposeError> {
        self.at_leader(
            || self.lease_time_to_live_here(id, keys),
            move |mut client, route| async move {
                let req = pb::LeaseRequest { route: Some(route), id, keys };
                match client.lease_time_to_live(req).await.map(|r| r.into_inner().result) {
                    Err(_) => Err(ProposeError::ConnectionLost),
                    Ok(Some(pb::lease_time_to_live_response::Result::Response(b))) => {
                        LeaseTimeToLiveResponse::decode(b).map_err(|e| ProposeError::Internal(e.to_string()))
                    }
                    Ok(Some(pb::lease_time_to_live_response::Result::Error(e))) => Err(from_wire(e)),
                    Ok(None) => Err(ProposeError::Internal("empty answer to a lease TTL request".into())),
                }
            },
        )
        .await
    }

    pub(crate) fn lease_time_to_live_here(
        &self,
        id: i64,
        keys: bool,
    ) -> Result<LeaseTimeToLiveResponse, ProposeError> {
        let status = self.status();
        if !status.is_leader {
            return Err(ProposeError::NotLeader { leader: status.leader });
        }
        let header = Some(ResponseHeader { revision: self.store().current_revision(), ..Default::default() });
        Ok(match self.shared.lessor.info(id, keys) {
            Some(info) => LeaseTimeToLiveResponse {
                header,
                id,
                ttl: info.remaining_ttl,
                granted_ttl: info.granted_ttl,
                keys: info.keys,
            },
            // etcd answers a missing lease with TTL -1, not an error.
            None => LeaseTimeToLiveResponse { header, id, ttl: -1, granted_ttl: 0, keys: Vec::new() },
        })
    }

    /// Writes a consistent copy of the database into a packed file inside a
    /// new temporary directory under the data dir; returns the directory
    /// guard and the file.
    pub async fn snapshot_file(&self) -> io::Result<(tempfile::TempDir, PathBuf)> {
        let store = self.store();
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
        let deadline = Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&self.shared) > 1 && Instant::now() < deadline {
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

/// Paces the retries of a request the leader did not take, and ends them:
/// with "no leader" once no reachable leader has been seen for `patience`
/// (two election timeouts), with a timeout at the request's deadline.
struct Retry {
    deadline: Instant,
    patience: Duration,
    leaderless_since: Option<Instant>,
}

impl Retry {
    fn new(deadline: Instant, patience: Duration) -> Retry {
        Retry { deadline, patience, leaderless_since: None }
    }

    /// Waits a little before the next try after `e`, or says why not to.
    async fn again(&mut self, e: ProposeError) -> Result<(), ProposeError> {
        let now = Instant::now();
        match e {
            // A leader that is known but busy changing: no clock to run.
            ProposeError::NotLeader { leader: Some(_) } => self.leaderless_since = None,
            _ => {
                let since = *self.leaderless_since.get_or_insert(now);
                if now.duration_since(since) >= self.patience {
                    return Err(ProposeError::NoLeader);
                }
            }
        }
        if now >= self.deadline {
            return Err(ProposeError::Timeout);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok(())
    }
}

/// The identity of a member of a new cluster, from `--initial-cluster`.
fn new_identity(cfg: &NodeConfig) -> Result<Identity, StartError> {
    let members = ids::members_of(&cfg.initial_cluster, &cfg.initial_cluster_token);
    let Some(&(member_id, _)) = members.iter().find(|(_, name)| *name == cfg.name) else {
        return Err(StartError::NotInCluster { name: cfg.name.clone() });
    };
    Ok(Identity {
        format: DATA_FORMAT,
        cluster_id: ids::cluster_id(members.iter().map(|(id, _)| *id)),
        member_id,
        name: cfg.name.clone(),
        cluster_token: cfg.initial_cluster_token.clone(),
    })
}

/// The identity of a member joining a running cluster: asks the other
/// members of `--initial-cluster` who the members are, and finds itself
/// among them by its peer URLs (it was added with MemberAdd).
async fn join_identity(cfg: &NodeConfig) -> Result<Identity, StartError> {
    if !cfg.initial_cluster.iter().any(|(name, _)| *name == cfg.name) {
        return Err(StartError::NotInCluster { name: cfg.name.clone() });
    }
    let mut mine = cfg.peer_urls.clone();
    mine.sort();
    let peers: Vec<&String> = cfg
        .initial_cluster
        .iter()
        .filter(|(name, _)| *name != cfg.name)
        .flat_map(|(_, urls)| urls)
        .filter(|u| !cfg.peer_urls.contains(u))
        .collect();
    if peers.is_empty() {
        return Err(StartError::Join("--initial-cluster names no other member to join".into()));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last_error = String::new();
    while Instant::now() < deadline {
        for url in &peers {
            match ask_members(url).await {
                Ok(resp) => {
                    let found = resp.members.iter().find(|m| {
                        let mut urls = m.peer_urls.clone();
                        urls.sort();
                        urls == mine
                    });
                    let Some(me) = found else {
                        return Err(StartError::Join(format!(
                            "no member of the cluster has the peer URLs {:?}: add this member first (etcdctl member add {} --peer-urls={})",
                            cfg.peer_urls,
                            cfg.name,
                            cfg.peer_urls.join(",")
                        )));
                    };
                    return Ok(Identity {
                        format: DATA_FORMAT,
                        cluster_id: resp.cluster_id,
                        member_id: me.id,
                        name: cfg.name.clone(),
                        cluster_token: cfg.initial_cluster_token.clone(),
                    });
                }
                Err(e) => last_error = format!("{url}: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(StartError::Join(format!("no member of --initial-cluster answered ({last_error})")))
}

async fn ask_members(url: &str) -> Result<pb::MembersResponse, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5));
    let channel = endpoint.connect().await.map_err(|e| format!("connect: {e}"))?;
    let req = pb::RouteOnly { route: Some(pb::Route { cluster_id: 0, from: 0, to: 0 }) };
    ForwardClient::new(channel)
        .members(req)
        .await
        .map(|r| r.into_inner())
        .map_err(|s| s.message().to_string())
}

fn read_identity(dir: &Path) -> Result<Option<Identity>, StartError> {
    let path = dir.join("identity.json");
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| StartError::Identity {
            path: path.clone(),
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StartError::Identity { path, source }),
    }
}

/// Refuses a data dir written by a newer format or for another cluster: a
/// different token, or (for a member of a new cluster) another
/// `--initial-cluster`.
fn check_identity(dir: &Path, found: &Identity, cfg: &NodeConfig) -> Result<(), StartError> {
    let path = dir.join("identity.json");
    if found.format > DATA_FORMAT {
        return Err(StartError::NewerFormat { path, found: found.format, supported: DATA_FORMAT });
    }
    let expected = match cfg.initial_cluster_state {
        ClusterState::New => new_identity(cfg)?.cluster_id,
        ClusterState::Existing => found.cluster_id,
    };
    if found.cluster_id != expected || found.cluster_token != cfg.initial_cluster_token {
        return Err(StartError::OtherCluster {
            path,
            found: found.cluster_id,
            found_token: found.cluster_token.clone(),
            expected,
            expected_token: cfg.initial_cluster_token.clone(),
        });
    }
    Ok(())
}

fn write_identity(dir: &Path, identity: &Identity) -> Result<(), StartError> {
    let path = dir.join("identity.json");
    let tmp = dir.join("identity.json.tmp");
    let write = || -> io::Result<()> {
        std::fs::write(&tmp, serde_json::to_vec_pretty(identity).map_err(io::Error::other)?)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|source| StartError::Identity { path: path.clone(), source })
}

/// Follows leadership: the leader's lessor runs countdowns.
async fn leadership_loop(node: std::sync::Weak<Node>, extend: Duration) {
    // Server metrics change only with leadership or membership, not with
    // every entry.
    let Some(mut rx) = node.upgrade().map(|n| n.raft.server_metrics()) else { return };
    let mut leader = None;
    let mut was_member = false;
    loop {
        let Some(n) = node.upgrade() else { return };
        let (is_leader, now_leader, is_member) = {
            let m = rx.borrow_watched();
            let is_member = m.membership_config.membership().nodes().any(|(id, _)| *id == n.member_id);
            (m.state == ServerState::Leader, m.current_leader, is_member)
        };
        if was_member && !is_member {
            tracing::warn!(
                member = format_args!("{:x}", n.member_id),
                "the member has been permanently removed from the cluster"
            );
            n.removed.send_replace(true);
        }
        was_member |= is_member;
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
