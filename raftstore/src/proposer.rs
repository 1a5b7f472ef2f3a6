//! Proposals on the leader, with concurrent client writes batched into one
//! log entry.
//!
//! Every log entry costs the raft core, the WAL and the apply loop a fixed
//! amount of work (a log id, a responder, a record, a decode, a response)
//! besides the write itself. Under load many writes wait at once, so they
//! go into the log together: at most [`MAX_IN_FLIGHT`] entries of client
//! writes are between proposal and apply at any time, and the writes that
//! arrive meanwhile queue and form the next entry (a `RequestBatch`, up to
//! [`MAX_BATCH`] requests and [`MAX_BATCH_BYTES`]). A lone write goes alone,
//! encoded exactly as before. The state machine applies a batch's requests
//! in order, each its own revision, and answers each.
//!
//! Only Put, DeleteRange and Txn are batched; every other request (leases,
//! compaction, alarms) is proposed on its own. The requests of one batch
//! were all waiting, unanswered, when it was proposed: ordering them is
//! ordering concurrent writes, which linearizability allows.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keelson_proto::keelsonraftpb::internal_request::Request;
use keelson_proto::keelsonraftpb::internal_response::Response;
use keelson_proto::keelsonraftpb::{InternalRequest, InternalResponse, RequestBatch};
use openraft::Raft;
use openraft::error::{ClientWriteError, RaftError};
use prost::Message;
use tokio::sync::oneshot;

use crate::node::ProposeError;
use crate::state_machine::StateMachine;
use crate::types::{Command, TypeConfig};

/// Batched entries proposed and not yet applied, at most.
pub(crate) const MAX_IN_FLIGHT: usize = 2;
/// Requests in one batch, at most.
pub(crate) const MAX_BATCH: usize = 256;
/// Encoded bytes of one batch, at most (a single larger request goes alone).
pub(crate) const MAX_BATCH_BYTES: usize = 1 << 20;

type Answer = Result<(InternalResponse, u64), ProposeError>;

struct Pending {
    request: InternalRequest,
    size: usize,
    reply: oneshot::Sender<Answer>,
}

#[derive(Default)]
struct Queue {
    in_flight: usize,
    waiting: VecDeque<Pending>,
}

pub(crate) struct Proposer {
    raft: Raft<TypeConfig, StateMachine>,
    request_timeout: Duration,
    queue: parking_lot::Mutex<Queue>,
}

/// Whether `req` may share a log entry with others.
fn batchable(req: &InternalRequest) -> bool {
    matches!(req.request, Some(Request::Put(_) | Request::DeleteRange(_) | Request::Txn(_)))
}

impl Proposer {
    pub(crate) fn new(raft: Raft<TypeConfig, StateMachine>, request_timeout: Duration) -> Arc<Self> {
        Arc::new(Self { raft, request_timeout, queue: Default::default() })
    }

    /// Proposes `req` on this member (the leader) and returns what applying
    /// it answered and the index of the log entry that carried it.
    pub(crate) async fn propose(self: &Arc<Self>, req: InternalRequest) -> Answer {
        if !batchable(&req) {
            // Boxed: a raft write's state is large, and the batched path
            // (the common one) would carry and move it otherwise.
            let (data, index) = Box::pin(self.write(Bytes::from(req.encode_to_vec()))).await?;
            return Ok((decode(data)?, index));
        }
        let (reply, answer) = oneshot::channel();
        let size = req.encoded_len();
        let batch = {
            let mut q = self.queue.lock();
            q.waiting.push_back(Pending { request: req, size, reply });
            if q.in_flight < MAX_IN_FLIGHT {
                q.in_flight += 1;
                Some(take_batch(&mut q))
            } else {
                None
            }
        };
        if let Some(batch) = batch {
            let this = self.clone();
            tokio::spawn(async move { this.drive(batch).await });
        }
        match tokio::time::timeout(self.request_timeout, answer).await {
            Err(_) => Err(ProposeError::Timeout),
            Ok(Err(_)) => Err(ProposeError::Stopped),
            Ok(Ok(answer)) => answer,
        }
    }

    /// Holds one in-flight slot: proposes `batch`, then whatever queued
    /// meanwhile, until the queue is empty.
    async fn drive(&self, mut batch: Vec<Pending>) {
        loop {
            self.propose_batch(batch).await;
            let mut q = self.queue.lock();
            if q.waiting.is_empty() {
                q.in_flight -= 1;
                return;
            }
            batch = take_batch(&mut q);
        }
    }

    async fn propose_batch(&self, batch: Vec<Pending>) {
        let n = batch.len();
        let (requests, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.request, p.reply)).unzip();
        let encoded = if n == 1 {
            requests[0].encode_to_vec()
        } else {
            InternalRequest { request: Some(Request::Batch(RequestBatch { requests })) }.encode_to_vec()
        };
        let answers: Vec<Answer> = match self.write(Bytes::from(encoded)).await.and_then(|(data, index)| {
            let resp = decode(data)?;
            Ok((resp, index))
        }) {
            Err(e) => vec![Err(e); n],
            Ok((resp, index)) if n == 1 => vec![Ok((resp, index))],
            Ok((InternalResponse { response: Some(Response::Batch(b)) }, index))
                if b.responses.len() == n =>
            {
                b.responses.into_iter().map(|r| Ok((r, index))).collect()
            }
            // One answer for the whole entry (e.g. the corrupt alarm
            // refused it): it is every request's answer.
            Ok((resp, index)) => vec![Ok((resp, index)); n],
        };
        for (reply, answer) in replies.into_iter().zip(answers) {
            let _ = reply.send(answer);
        }
    }

    /// Appends one entry and waits for it to be applied here.
    async fn write(&self, command: Bytes) -> Result<(Bytes, u64), ProposeError> {
        let written = tokio::time::timeout(self.request_timeout, self.raft.client_write(Command(command)))
            .await
            .map_err(|_| ProposeError::Timeout)?
            .map_err(|e| match e {
                RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                    ProposeError::NotLeader { leader: f.leader_id }
                }
                RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)) => ProposeError::LeaderChanged,
                RaftError::APIError(other) => ProposeError::Internal(other.to_string()),
                RaftError::Fatal(_) => ProposeError::Stopped,
            })?;
        Ok((written.data.0, written.log_id.index))
    }
}

fn decode(data: Bytes) -> Result<InternalResponse, ProposeError> {
    InternalResponse::decode(data).map_err(|e| ProposeError::Internal(format!("decode apply result: {e}")))
}

/// The oldest waiting requests, up to [`MAX_BATCH`] of them and
/// [`MAX_BATCH_BYTES`] (always at least one).
fn take_batch(q: &mut Queue) -> Vec<Pending> {
    let mut batch = Vec::new();
    let mut bytes = 0;
    while let Some(next) = q.waiting.front() {
        if !batch.is_empty() && (batch.len() == MAX_BATCH || bytes + next.size > MAX_BATCH_BYTES) {
            break;
        }
        bytes += next.size;
        batch.extend(q.waiting.pop_front());
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;
    use keelson_proto::etcdserverpb::{CompactionRequest, PutRequest};

    fn pending(value_len: usize) -> (Pending, oneshot::Receiver<Answer>) {
        let (reply, rx) = oneshot::channel();
        let request = InternalRequest {
            request: Some(Request::Put(PutRequest {
                key: Bytes::from_static(b"k"),
                value: Bytes::from(vec![0u8; value_len]),
                ..Default::default()
            })),
        };
        (Pending { size: request.encoded_len(), request, reply }, rx)
    }

    #[test]
    fn batches_stop_at_the_count_and_byte_limits_but_never_come_out_empty() {
        let mut q = Queue::default();
        let mut keep = Vec::new();
        for _ in 0..MAX_BATCH + 10 {
            let (p, rx) = pending(10);
            q.waiting.push_back(p);
            keep.push(rx);
        }
        assert_eq!(take_batch(&mut q).len(), MAX_BATCH);
        assert_eq!(take_batch(&mut q).len(), 10);
        assert!(take_batch(&mut q).is_empty());

        for len in [MAX_BATCH_BYTES / 2, MAX_BATCH_BYTES / 2, 2 * MAX_BATCH_BYTES, 5] {
            let (p, rx) = pending(len);
            q.waiting.push_back(p);
            keep.push(rx);
        }
        assert_eq!(take_batch(&mut q).len(), 1, "two halves plus framing exceed the byte limit");
        assert_eq!(take_batch(&mut q).len(), 1);
        assert_eq!(take_batch(&mut q).len(), 1, "an oversized request goes alone");
        assert_eq!(take_batch(&mut q).len(), 1);
    }

    #[test]
    fn only_client_writes_are_batched() {
        let (p, _rx) = pending(1);
        assert!(batchable(&p.request));
        let compact = InternalRequest { request: Some(Request::Compaction(CompactionRequest::default())) };
        assert!(!batchable(&compact));
    }
}
