//! The contract between the gRPC services and the member they serve: what
//! the services need from raft (proposals, read barriers, status, leases)
//! and from local storage (the MVCC store for reads, the watch hub).
//! `keelson-raftstore`'s `Node` implements it; unit tests may use a fake.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use keelson_mvcc::Store;
use keelson_proto::etcdserverpb::LeaseTimeToLiveResponse;
use keelson_proto::keelsonraftpb::{InternalRequest, InternalResponse};
pub use keelson_raftstore::MemberChange;
use keelson_watch::WatchHub;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why the member could not serve a request. Apply-time failures of a
/// request itself come back inside `InternalResponse` as an `ApplyError`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// No leader is known (election in progress or quorum lost).
    #[error("no leader")]
    NoLeader,
    /// The member is shutting down.
    #[error("server stopped")]
    Stopped,
    /// The request did not complete in time.
    #[error("request timed out")]
    Timeout,
    /// The lease named does not exist (keepalive / time-to-live).
    #[error("requested lease not found")]
    LeaseNotFound,
    /// This member is not the leader and cannot do what only a leader does.
    #[error("not leader")]
    NotLeader,
    /// A leader change dropped the request; it may or may not have applied.
    #[error("leader changed")]
    LeaderChanged,
    /// The connection to the leader broke after the request went out.
    #[error("request timed out, possibly due to connection lost")]
    ConnectionLost,
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
    /// Anything else; the message is shown to the client.
    #[error("{0}")]
    Internal(String),
}

/// Raft-side facts every response header and Status needs.
#[derive(Debug, Clone, Default)]
pub struct MemberStatus {
    pub cluster_id: u64,
    pub member_id: u64,
    /// The leader's member id, 0 if none is known.
    pub leader: u64,
    pub raft_term: u64,
    /// Index of the last log entry (etcd's raft index).
    pub raft_index: u64,
    pub raft_applied_index: u64,
    pub is_learner: bool,
}

/// One member, as MemberList reports it.
#[derive(Debug, Clone, Default)]
pub struct MemberInfo {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

pub trait Backend: Send + Sync + 'static {
    /// Replicates a write through the raft log; resolves once it is applied
    /// locally, with what applying it answered.
    fn propose(&self, req: InternalRequest) -> BoxFuture<'_, Result<InternalResponse, BackendError>>;

    /// Resolves once this member has applied everything committed before
    /// the call (a read index): a linearizable read may then read locally.
    fn read_barrier(&self) -> BoxFuture<'_, Result<(), BackendError>>;

    /// The local MVCC store, for reads, hashes and sizes.
    fn store(&self) -> Arc<Store>;

    /// The local watch hub.
    fn hub(&self) -> &WatchHub;

    fn status(&self) -> MemberStatus;

    fn members(&self) -> Vec<MemberInfo>;

    /// Renews a lease on the leader; returns its TTL in seconds.
    fn lease_keep_alive(&self, id: i64) -> BoxFuture<'_, Result<i64, BackendError>>;

    /// A lease's granted and remaining TTL (and its keys if asked).
    fn lease_time_to_live(
        &self,
        id: i64,
        keys: bool,
    ) -> BoxFuture<'_, Result<LeaseTimeToLiveResponse, BackendError>>;

    /// Every lease id.
    fn lease_ids(&self) -> BoxFuture<'_, Result<Vec<i64>, BackendError>>;

    /// Makes a membership change (the leader makes it; a follower forwards
    /// it); returns the member added or changed and the members after.
    fn change_members(
        &self,
        change: MemberChange,
    ) -> BoxFuture<'_, Result<(u64, Vec<MemberInfo>), BackendError>>;

    /// Hands leadership to `target`; only the leader can.
    fn move_leader(&self, target: u64) -> BoxFuture<'_, Result<(), BackendError>>;

    /// Counters for `/metrics`.
    fn raft_counters(&self) -> RaftCounters {
        RaftCounters::default()
    }

    /// A consistent point-in-time copy of the database, as a byte stream
    /// for Maintenance.Snapshot.
    fn snapshot(&self) -> BoxFuture<'_, Result<SnapshotReader, BackendError>>;
}

/// Counters for `/metrics` that only the raft side knows.
#[derive(Debug, Clone, Default)]
pub struct RaftCounters {
    /// Cumulative counts of WAL fsyncs per bucket, bucket upper bounds in
    /// seconds (the last bucket is +Inf and not listed in `bounds`).
    pub fsync_bounds: Vec<f64>,
    pub fsync_buckets: Vec<u64>,
    pub fsync_count: u64,
    pub fsync_sum_seconds: f64,
    pub leader_changes: u64,
    pub proposals_committed: u64,
    pub proposals_applied: u64,
    pub proposals_failed: u64,
}

/// A snapshot being streamed: its total size and the chunks.
pub struct SnapshotReader {
    pub total_size: u64,
    pub chunks: Pin<Box<dyn futures::Stream<Item = Result<bytes::Bytes, BackendError>> + Send>>,
}
