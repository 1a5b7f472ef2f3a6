//! [`Backend`] for a real member: `keelson-raftstore`'s [`Node`].

use std::sync::Arc;

use bytes::Bytes;
use keelson_mvcc::Store;
use keelson_proto::etcdserverpb::LeaseTimeToLiveResponse;
use keelson_proto::keelsonraftpb::{InternalRequest, InternalResponse};
use keelson_raftstore::{Node, ProposeError};
use keelson_watch::WatchHub;
use tokio::io::AsyncReadExt;

use crate::backend::{
    Backend, BackendError, BoxFuture, MemberChange, MemberInfo, MemberStatus, RaftCounters, SnapshotReader,
};

/// Serves the gRPC services from a [`Node`].
#[derive(Debug, Clone)]
pub struct NodeBackend(pub Arc<Node>);

fn backend_error(e: ProposeError) -> BackendError {
    match e {
        ProposeError::NoLeader => BackendError::NoLeader,
        ProposeError::NotLeader { .. } => BackendError::NotLeader,
        ProposeError::Timeout => BackendError::Timeout,
        ProposeError::Stopped => BackendError::Stopped,
        ProposeError::LeaderChanged => BackendError::LeaderChanged,
        ProposeError::ConnectionLost => BackendError::ConnectionLost,
        ProposeError::LeaseNotFound => BackendError::LeaseNotFound,
        ProposeError::MemberNotFound => BackendError::MemberNotFound,
        ProposeError::MemberExists => BackendError::MemberExists,
        ProposeError::PeerUrlExists => BackendError::PeerUrlExists,
        ProposeError::MemberNotLearner => BackendError::MemberNotLearner,
        ProposeError::LearnerNotReady => BackendError::LearnerNotReady,
        ProposeError::Unhealthy => BackendError::Unhealthy,
        ProposeError::BadTransferee => BackendError::BadTransferee,
        ProposeError::TooManyLearners => BackendError::TooManyLearners,
        ProposeError::Internal(m) => BackendError::Internal(m),
    }
}

fn member_info((id, m, is_learner): (u64, keelson_raftstore::types::Member, bool)) -> MemberInfo {
    MemberInfo { id, name: m.name, peer_urls: m.peer_urls, client_urls: m.client_urls, is_learner }
}

/// Chunk size of a streamed snapshot.
const SNAPSHOT_CHUNK: usize = 32 * 1024;

impl Backend for NodeBackend {
    fn propose(&self, req: InternalRequest) -> BoxFuture<'_, Result<InternalResponse, BackendError>> {
        Box::pin(async move { self.0.propose(req).await.map_err(backend_error) })
    }

    fn read_barrier(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move { self.0.read_barrier().await.map_err(backend_error) })
    }

    fn store(&self) -> Arc<Store> {
        self.0.store().clone()
    }

    fn hub(&self) -> &WatchHub {
        self.0.hub()
    }

    fn status(&self) -> MemberStatus {
        let s = self.0.status();
        MemberStatus {
            cluster_id: s.cluster_id,
            member_id: s.member_id,
            leader: s.leader.unwrap_or(0),
            raft_term: s.term,
            raft_index: s.last_log_index,
            raft_applied_index: s.applied_index,
            is_learner: s.is_learner,
        }
    }

    fn members(&self) -> Vec<MemberInfo> {
        self.0.members().into_iter().map(member_info).collect()
    }

    fn lease_keep_alive(&self, id: i64) -> BoxFuture<'_, Result<i64, BackendError>> {
        Box::pin(async move { self.0.lease_keep_alive(id).await.map_err(backend_error) })
    }

    fn lease_time_to_live(
        &self,
        id: i64,
        keys: bool,
    ) -> BoxFuture<'_, Result<LeaseTimeToLiveResponse, BackendError>> {
        Box::pin(async move { self.0.lease_time_to_live(id, keys).await.map_err(backend_error) })
    }

    fn change_members(
        &self,
        change: MemberChange,
    ) -> BoxFuture<'_, Result<(u64, Vec<MemberInfo>), BackendError>> {
        Box::pin(async move {
            let (id, members) = self.0.change_members(change).await.map_err(backend_error)?;
            Ok((id, members.into_iter().map(member_info).collect()))
        })
    }

    fn move_leader(&self, target: u64) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move { self.0.move_leader(target).await.map_err(backend_error) })
    }

    fn lease_ids(&self) -> BoxFuture<'_, Result<Vec<i64>, BackendError>> {
        Box::pin(async move { Ok(self.0.lessor().ids()) })
    }

    fn raft_counters(&self) -> RaftCounters {
        let wal = self.0.wal_stats();
        let status = self.0.status();
        let (leader_changes, proposals_failed) = self.0.counters();
        RaftCounters {
            fsync_bounds: keelson_raftstore::wal::FSYNC_BUCKETS_SECONDS.to_vec(),
            fsync_buckets: wal.fsync_buckets.to_vec(),
            fsync_count: wal.fsyncs,
            fsync_sum_seconds: wal.fsync_seconds_sum,
            leader_changes,
            proposals_committed: status.committed_index,
            proposals_applied: status.applied_index,
            proposals_failed,
        }
    }

    fn snapshot(&self) -> BoxFuture<'_, Result<SnapshotReader, BackendError>> {
        Box::pin(async move {
            let (dir, path) =
                self.0.snapshot_file().await.map_err(|e| BackendError::Internal(format!("snapshot: {e}")))?;
            let file = tokio::fs::File::open(&path)
                .await
                .map_err(|e| BackendError::Internal(format!("open snapshot: {e}")))?;
            let total_size = file
                .metadata()
                .await
                .map_err(|e| BackendError::Internal(format!("stat snapshot: {e}")))?
                .len();
            let chunks = futures::stream::unfold(Some((file, dir)), |state| async move {
                let (mut file, dir) = state?;
                let mut buf = vec![0u8; SNAPSHOT_CHUNK];
                match file.read(&mut buf).await {
                    Ok(0) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        Some((Ok(Bytes::from(buf)), Some((file, dir))))
                    }
                    // The stream ends after reporting the error.
                    Err(e) => Some((Err(BackendError::Internal(format!("read snapshot: {e}"))), None)),
                }
            });
            Ok(SnapshotReader { total_size, chunks: Box::pin(chunks) })
        })
    }
}
