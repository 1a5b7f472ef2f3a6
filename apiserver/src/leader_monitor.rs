//! [`LeaderMonitor`]: etcd's `monitorLeader` for one stream. A stream
//! opened with the `hasleader` metadata (the Go client's
//! `WithRequireLeader`: `etcdctl watch`, the Go lessor's keep-alive stream)
//! is failed with "etcdserver: no leader" once the member has seen no
//! leader for [`NO_LEADER_CHECKS`] checks in a row, so the client goes
//! looking for a member that has one.

use std::time::Duration;

use tokio::time::{Interval, MissedTickBehavior};
use tonic::metadata::MetadataMap;

use crate::backend::Backend;
use crate::server::requires_leader;

/// How often a `hasleader` stream checks for a leader (etcd: the election
/// timeout, 1 s by default).
pub(crate) const LEADER_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Checks in a row without a leader before such a stream fails (etcd's
/// `maxNoLeaderCnt`).
pub(crate) const NO_LEADER_CHECKS: u32 = 3;

pub(crate) struct LeaderMonitor {
    interval: Option<Interval>,
    misses: u32,
}

impl LeaderMonitor {
    /// Watches for a leader only if the stream's metadata asks for one.
    pub fn for_request(metadata: &MetadataMap) -> Self {
        let interval = requires_leader(metadata.as_ref()).then(|| {
            let mut interval = tokio::time::interval(LEADER_CHECK_INTERVAL);
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            interval
        });
        LeaderMonitor { interval, misses: 0 }
    }

    /// Resolves once the member has had no leader for
    /// [`NO_LEADER_CHECKS`] checks in a row; never for a stream that did not
    /// ask. Cancel-safe: meant for `tokio::select!`.
    pub async fn lost<B: Backend>(&mut self, backend: &B) {
        let Some(interval) = &mut self.interval else {
            return std::future::pending().await;
        };
        loop {
            interval.tick().await;
            if backend.status().leader == 0 {
                self.misses += 1;
                if self.misses >= NO_LEADER_CHECKS {
                    return;
                }
            } else {
                self.misses = 0;
            }
        }
    }
}
