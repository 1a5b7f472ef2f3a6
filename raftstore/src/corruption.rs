//! The corruption check (etcd's `corrupt.go`): members compare HashKV at
//! one revision, and a member whose hash differs from the leader's at the
//! same compacted revision gets the CORRUPT alarm, raised through raft; from
//! then on the cluster refuses writes ("etcdserver: corrupt cluster") until
//! an operator disarms it.
//!
//! - Periodically (`--experimental-corrupt-check-time`), the leader hashes
//!   its store at its current revision and asks every other member for its
//!   hash at that revision over the peer channel (`Forward.HashKv`). A
//!   member behind that revision, or compacted past it, is skipped this
//!   round.
//! - On start (`--experimental-initial-corrupt-check`), a member compares
//!   its own hash with the others' at its current revision before it serves
//!   clients, and refuses to start on a mismatch.

use std::sync::{Arc, Weak};
use std::time::Duration;

use keelson_mvcc::ALARM_CORRUPT;
use keelson_proto::etcdserverpb::AlarmRequest;
use keelson_proto::etcdserverpb::alarm_request::AlarmAction;
use keelson_proto::keelsonraftpb::InternalRequest;
use keelson_proto::keelsonraftpb::internal_request::Request;
use keelson_proto::keelsonraftpeerpb as pb;

use crate::node::Node;

/// What one member answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerHash {
    pub member_id: u64,
    pub hash: u32,
    pub compact_revision: i64,
}

/// A member whose hash differs from ours at the same revision and
/// compacted revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub member_id: u64,
    pub revision: i64,
    pub ours: u32,
    pub theirs: u32,
}

impl Node {
    /// This member's HashKV at `revision`, for a peer's check.
    pub(crate) fn hash_kv_here(&self, revision: i64) -> pb::HashKvResponse {
        match self.store().hash_kv(revision) {
            Ok(h) => pb::HashKvResponse {
                hash: h.hash,
                hash_revision: h.hash_revision,
                compact_revision: h.compact_revision,
                current_revision: h.current_revision,
                error: String::new(),
            },
            Err(e) => pb::HashKvResponse { error: e.to_string(), ..Default::default() },
        }
    }

    /// Compares this member's hash at its current revision with every
    /// other member's; returns the members that disagree.
    pub async fn check_hashes(&self) -> Vec<Mismatch> {
        let store = self.store();
        let Ok(ours) = tokio::task::spawn_blocking(move || store.hash_kv(0)).await.map_err(|_| ()) else {
            return Vec::new();
        };
        let Ok(ours) = ours else { return Vec::new() };
        let mut out = Vec::new();
        for (id, _, _) in self.members() {
            if id == self.member_id() {
                continue;
            }
            let Ok(mut client) = self.forward_client(id) else { continue };
            let req = pb::HashKvRequest { route: Some(self.route(id)), revision: ours.hash_revision };
            let answer = tokio::time::timeout(Duration::from_secs(5), client.hash_kv(req)).await;
            let Ok(Ok(theirs)) = answer else { continue };
            let theirs = theirs.into_inner();
            if !theirs.error.is_empty() || theirs.compact_revision != ours.compact_revision {
                continue;
            }
            if theirs.hash != ours.hash {
                out.push(Mismatch {
                    member_id: id,
                    revision: ours.hash_revision,
                    ours: ours.hash,
                    theirs: theirs.hash,
                });
            }
        }
        out
    }

    /// Raises the CORRUPT alarm for `member` through raft.
    async fn raise_corrupt(&self, member: u64) {
        let alarm =
            AlarmRequest { action: AlarmAction::Activate as i32, member_id: member, alarm: ALARM_CORRUPT };
        let req = InternalRequest { request: Some(Request::Alarm(alarm)) };
        if let Err(e) = self.propose(req).await {
            tracing::warn!(member = format_args!("{member:x}"), error = %e, "raise the CORRUPT alarm");
        }
    }
}

/// Runs the periodic check on the leader every `every`.
pub fn spawn_periodic(node: &Arc<Node>, every: Duration) {
    let node: Weak<Node> = Arc::downgrade(node);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(n) = node.upgrade() else { return };
            if !n.status().is_leader {
                continue;
            }
            for m in n.check_hashes().await {
                tracing::error!(
                    member = format_args!("{:x}", m.member_id),
                    revision = m.revision,
                    leader_hash = m.ours,
                    member_hash = m.theirs,
                    "corruption check: the member's hash differs from the leader's; raising the CORRUPT alarm"
                );
                n.raise_corrupt(m.member_id).await;
            }
        }
    });
}
