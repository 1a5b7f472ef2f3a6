//! Read index rounds shared by concurrent linearizable reads, as etcd's
//! `linearizableReadLoop` shares one ReadIndex among every read waiting
//! when it starts.
//!
//! A read may use a read index only if the round that produced it began
//! after the read arrived: the round confirms leadership and takes the
//! commit index at its start, and a write acknowledged before the read
//! arrived is at or below that index. So a read that arrives while a round
//! is in flight waits for the next one; one round serves every read queued
//! before it began. Under load this turns thousands of calls into the raft
//! core per second into a few hundred, with at most one round in flight.

use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use openraft::error::RaftError;
use openraft::{Instant as _, Raft, ReadPolicy, ServerState};
use tokio::sync::oneshot;

use crate::node::ProposeError;
use crate::state_machine::StateMachine;
use crate::types::TypeConfig;

type Reply = oneshot::Sender<Result<u64, ProposeError>>;

/// The reads waiting for a round, and whether a driver task runs rounds.
#[derive(Default)]
struct Queue {
    driving: bool,
    waiting: Vec<Reply>,
}

/// Runs read index rounds on the leader for every read queued since the
/// last one began.
pub(crate) struct ReadIndexer {
    raft: Raft<TypeConfig, StateMachine>,
    election_timeout: Duration,
    request_timeout: Duration,
    queue: parking_lot::Mutex<Queue>,
}

impl ReadIndexer {
    pub(crate) fn new(
        raft: Raft<TypeConfig, StateMachine>,
        election_timeout: Duration,
        request_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Self { raft, election_timeout, request_timeout, queue: Default::default() })
    }

    /// The log index a linearizable read arriving now must wait for:
    /// from the next round that begins after this call.
    pub(crate) async fn read_index(self: &Arc<Self>) -> Result<u64, ProposeError> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut q = self.queue.lock();
            q.waiting.push(tx);
            !std::mem::replace(&mut q.driving, true)
        };
        if start {
            let this = self.clone();
            tokio::spawn(async move { this.drive().await });
        }
        rx.await.unwrap_or(Err(ProposeError::Stopped))
    }

    /// Runs rounds while reads are waiting; each round answers the reads
    /// queued before it began.
    async fn drive(&self) {
        loop {
            let batch = {
                let mut q = self.queue.lock();
                if q.waiting.is_empty() {
                    q.driving = false;
                    return;
                }
                std::mem::take(&mut q.waiting)
            };
            let result = self.round().await;
            for reply in batch {
                let _ = reply.send(result.clone());
            }
        }
    }

    /// One read index round: confirms leadership with a quorum and
    /// returns the commit index.
    async fn round(&self) -> Result<u64, ProposeError> {
        if lost_quorum(&self.raft, self.election_timeout) {
            return Err(ProposeError::NotLeader { leader: None });
        }
        let linearizer =
            tokio::time::timeout(self.request_timeout, self.raft.get_read_linearizer(ReadPolicy::ReadIndex))
                .await
                .map_err(|_| ProposeError::Timeout)?
                .map_err(|e| match e {
                    RaftError::APIError(openraft::error::LinearizableReadError::ForwardToLeader(f)) => {
                        ProposeError::NotLeader { leader: f.leader_id }
                    }
                    RaftError::APIError(other) => ProposeError::Internal(other.to_string()),
                    RaftError::Fatal(_) => ProposeError::Stopped,
                })?;
        Ok(linearizer.read_log_id().log_id().index)
    }
}

/// etcd's CheckQuorum, as seen from requests: a leader that has not heard
/// from a quorum for longer than an election timeout does not count as one
/// (it would have stepped down in etcd).
pub(crate) fn lost_quorum(raft: &Raft<TypeConfig, StateMachine>, election_timeout: Duration) -> bool {
    let rx = raft.metrics();
    let m = rx.borrow_watched();
    if m.state != ServerState::Leader || m.membership_config.membership().voter_ids().count() < 2 {
        return false;
    }
    m.last_quorum_acked.as_ref().is_some_and(|at| at.into_inner().elapsed() > election_timeout)
}
