//! [`Backend`] for a real member: `keelson-raftstore`'s [`Node`].

use std::sync::Arc;

use bytes::Bytes;
use keelson_mvcc::Store;
use keelson_proto::etcdserverpb::{LeaseTimeToLiveResponse, ResponseHeader};
use keelson_proto::keelsonraftpb::{InternalRequest, InternalResponse};
use keelson_raftstore::{Node, ProposeError};
use keelson_watch::WatchHub;
use tokio::io::AsyncReadExt;

use crate::backend::{
    Backend, BackendError, BoxFuture, MemberInfo, MemberStatus, RaftCounters, SnapshotReader,
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
        ProposeError::Internal(m) => BackendError::Internal(m),
    }
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
        self.0
            .members()
            .into_iter()
            .map(|(id, m, is_learner)| MemberInfo {
                id,
                name: m.name,
                peer_urls: m.peer_urls,
                client_urls: m.client_urls,
                is_learner,
            })
            .collect()
    }

    fn lease_keep_alive(&self, id: i64) -> BoxFuture<'_, Result<i64, BackendError>> {
        Box::pin(async move {
            match self.0.lease_keep_alive(id).map_err(backend_error)? {
                Some(ttl) => Ok(ttl),
                None => Err(BackendError::LeaseNotFound),
            }
        })
    }

    fn lease_time_to_live(
        &self,
        id: i64,
        keys: bool,
    ) -> BoxFuture<'_, Result<LeaseTimeToLiveResponse, BackendError>> {
        Box::pin(async move {
            let header =
                Some(ResponseHeader { revision: self.0.store().current_revision(), ..Default::default() });
            Ok(match self.0.lessor().info(id, keys) {
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
        })
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
