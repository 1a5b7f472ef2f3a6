//! Auto compaction (etcd's `--auto-compaction-mode` / `-retention`), run by
//! the leader through the log like any Compact request.
//!
//! - `Periodic(d)`: every `d / 10` the current revision is sampled; the
//!   store is compacted to the newest sample that is at least `d` old.
//! - `Revisions(n)`: every 5 minutes (etcd's interval) the store is
//!   compacted to `current - n`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keelson_proto::etcdserverpb::CompactionRequest;
use keelson_proto::keelsonraftpb::InternalRequest;
use keelson_proto::keelsonraftpb::internal_request::Request;

use crate::Node;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Periodic(Duration),
    Revisions(i64),
}

/// Starts the compactor for `node`; it stops when the node is dropped.
pub fn spawn(node: &Arc<Node>, policy: Policy) -> tokio::task::JoinHandle<()> {
    let weak = Arc::downgrade(node);
    tokio::spawn(async move {
        let every = match policy {
            Policy::Periodic(d) => (d / 10).max(Duration::from_secs(1)),
            Policy::Revisions(_) => Duration::from_secs(300),
        };
        let mut samples: VecDeque<(Instant, i64)> = VecDeque::new();
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let Some(node) = weak.upgrade() else { return };
            let current = node.store().current_revision();
            let target = match policy {
                Policy::Periodic(d) => {
                    samples.push_back((Instant::now(), current));
                    let mut target = None;
                    while samples.front().is_some_and(|(t, _)| t.elapsed() >= d) {
                        target = samples.pop_front().map(|(_, r)| r);
                    }
                    target
                }
                Policy::Revisions(n) => Some(current - n),
            };
            let Some(rev) = target else { continue };
            if !node.status().is_leader || rev <= node.store().compacted_revision() || rev <= 0 {
                continue;
            }
            let req = InternalRequest {
                request: Some(Request::Compaction(CompactionRequest { revision: rev, physical: false })),
            };
            match node.propose(req).await {
                Ok(_) => tracing::info!(revision = rev, "auto compaction"),
                Err(e) => tracing::warn!(revision = rev, error = %e, "auto compaction"),
            }
        }
    })
}
