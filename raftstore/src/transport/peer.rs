//! [`GrpcPeer`]: openraft's client to one peer, over the peer's shared
//! channel.
//!
//! - Votes, pre-votes, unary appends and leader transfers are unary RPCs
//!   bounded by openraft's soft TTL (also sent as the gRPC deadline).
//! - `stream_append` is one bidirectional stream per replication session:
//!   requests go out as openraft produces them, without waiting for answers
//!   (pipelined); the follower answers each in order. Opening the stream,
//!   and each answer while answers are outstanding, must take no longer
//!   than the soft TTL, but never less than
//!   [`TransportConfig::min_stream_progress`]; an idle stream waits.
//! - `full_snapshot` streams the packed snapshot file in pieces as HTTP/2
//!   flow control lets them go (a piece is read from disk only when the
//!   transport takes the previous one), then its CRC; it gives up if the
//!   receiver stops taking pieces, and waits up to
//!   [`TransportConfig::snapshot_install_timeout`] for the install.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use keelson_proto::keelsonraftpeerpb as pb;
use keelson_proto::keelsonraftpeerpb::raft_peer_client::RaftPeerClient;
use openraft::OptionalSend;
use openraft::base::{BoxFuture, BoxStream};
use openraft::error::{RPCError, ReplicationClosed, StreamingError};
use openraft::network::{RPCOption, RPCTypes, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use parking_lot::Mutex;
use tokio::io::AsyncReadExt;
use tokio::sync::Notify;
use tonic::transport::Channel;

use super::codec;
use super::config::TransportConfig;
use super::status::Call;
use crate::snapshot::SnapshotFile;
use crate::types::{TypeConfig, Vote};

type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>;

/// See the module docs.
pub struct GrpcPeer {
    route: pb::Route,
    /// The client over the peer's channel, or why there is none (no or a
    /// bad peer URL): every RPC then answers "unreachable" with the reason.
    client: Result<RaftPeerClient<Channel>, String>,
    config: Arc<TransportConfig>,
    /// Set when a peer answers that this member was removed.
    removed: Arc<tokio::sync::watch::Sender<bool>>,
}

impl std::fmt::Debug for GrpcPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcPeer")
            .field("target", &format_args!("{:x}", self.route.to))
            .finish_non_exhaustive()
    }
}

impl GrpcPeer {
    pub(crate) fn new(
        route: pb::Route,
        channel: Result<Channel, String>,
        config: Arc<TransportConfig>,
        removed: Arc<tokio::sync::watch::Sender<bool>>,
    ) -> Self {
        let client = channel.map(|c| {
            RaftPeerClient::new(c)
                .max_decoding_message_size(config.max_message_bytes)
                .max_encoding_message_size(config.max_message_bytes)
        });
        GrpcPeer { route, client, config, removed }
    }

    fn call(&self, action: RPCTypes) -> Call {
        Call { action, from: self.route.from, target: self.route.to }
    }

    fn client(&self, call: &Call) -> Result<RaftPeerClient<Channel>, RPCError<TypeConfig>> {
        self.client.clone().map_err(|why| RPCError::Unreachable(call.unreachable(why)))
    }

    /// One unary RPC, bounded by the soft TTL.
    async fn unary<Req, Resp, F, Fut>(
        &self,
        action: RPCTypes,
        option: &RPCOption,
        req: Req,
        send: F,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        F: FnOnce(RaftPeerClient<Channel>, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let call = self.call(action);
        let client = self.client(&call)?;
        let ttl = option.soft_ttl();
        let mut request = tonic::Request::new(req);
        request.set_timeout(ttl);
        match tokio::time::timeout(ttl, send(client, request)).await {
            Err(_) => Err(call.timeout(ttl)),
            Ok(Err(s)) => {
                if s.code() == tonic::Code::FailedPrecondition && s.message().contains(super::status::REMOVED)
                {
                    self.removed.send_replace(true);
                }
                Err(call.status(&s, ttl))
            }
            Ok(Ok(r)) => Ok(r.into_inner()),
        }
    }

    /// A vote or (`pre`) a pre-vote: the same request and answer, two RPCs.
    async fn vote_rpc(
        &self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
        pre: bool,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let call = self.call(RPCTypes::Vote);
        let req = codec::vote_request_to_pb(&self.route, &rpc);
        let resp = self
            .unary(RPCTypes::Vote, &option, req, |mut c, r| async move {
                if pre { c.pre_vote(r).await } else { c.vote(r).await }
            })
            .await?;
        decoded(&call, "decode response", codec::vote_response_from_pb(resp))
    }
}

fn decoded<T>(call: &Call, what: &str, r: Result<T, codec::CodecError>) -> Result<T, RPCError<TypeConfig>> {
    r.map_err(|e| RPCError::Network(call.network(format!("{what}: {e}"))))
}

impl RaftNetworkV2<TypeConfig> for GrpcPeer {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let call = self.call(RPCTypes::AppendEntries);
        let req = decoded(&call, "encode request", codec::append_request_to_pb(&self.route, &rpc))?;
        let resp = self
            .unary(RPCTypes::AppendEntries, &option, req, |mut c, r| async move { c.append_entries(r).await })
            .await?;
        decoded(&call, "decode response", codec::append_response_from_pb(resp))
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<
            BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>,
            RPCError<TypeConfig>,
        >,
    >
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        let call = self.call(RPCTypes::AppendEntries);
        let client = self.client(&call);
        let route = self.route;
        // Opening the stream and each answer: the soft TTL, but not less
        // than `min_stream_progress`, so a scheduling hiccup does not end a
        // replication session (heartbeats are bounded by openraft itself).
        let progress = option.soft_ttl().max(self.config.min_stream_progress);
        let setup = progress;
        Box::pin(async move {
            let mut input = input;
            // Take the first request before connecting: openraft's backoff
            // after errors happens while it produces requests, so a peer
            // that is down is retried at the backoff's pace, not in a loop.
            // And there is no stream to open if there is nothing to send.
            let Some(first) = input.next().await else {
                let empty: BoxStream<'s, _> = Box::pin(futures::stream::empty());
                return Ok(empty);
            };
            let mut client = client?;
            let tracker = Arc::new(Outstanding::default());
            let t = tracker.clone();
            // Encoded as hyper takes them: `sent` counts what went out.
            let outbound =
                futures::stream::once(futures::future::ready(first)).chain(input).scan((), move |_, req| {
                    let msg = match codec::append_request_to_pb(&route, &req) {
                        Ok(m) => {
                            t.sent.fetch_add(1, Ordering::AcqRel);
                            Some(m)
                        }
                        Err(e) => {
                            *t.failed.lock() = Some(format!("encode request: {e}"));
                            None
                        }
                    };
                    t.changed.notify_one();
                    futures::future::ready(msg)
                });
            let inbound = match tokio::time::timeout(setup, client.stream_append(outbound)).await {
                Err(_) => return Err(call.timeout(setup)),
                Ok(Err(s)) => return Err(call.status(&s, setup)),
                Ok(Ok(r)) => r.into_inner(),
            };
            let state = Responses { inbound, tracker, received: 0, done: false, call, progress };
            let out: BoxStream<'s, _> = Box::pin(futures::stream::unfold(state, Responses::next));
            Ok(out)
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.vote_rpc(rpc, option, false).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.vote_rpc(rpc, option, true).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let call = self.call(RPCTypes::InstallSnapshot);
        let mut client = self.client(&call)?;
        let path = snapshot.snapshot.path.clone();
        // A local failure to read the file is retried like a network error:
        // a newer snapshot may have replaced it meanwhile.
        let local = |what: &str, e: std::io::Error| call.network(format!("{what} {}: {e}", path.display()));
        let file = tokio::fs::File::open(&path).await.map_err(|e| local("open snapshot", e))?;
        let size = file.metadata().await.map_err(|e| local("stat snapshot", e))?.len();
        let meta_json = decoded(&call, "encode snapshot meta", codec::snapshot_meta_to_json(&snapshot.meta))?;
        let header = pb::SnapshotHeader {
            route: Some(self.route),
            vote: Some(codec::vote_to_pb(&vote)),
            meta_json,
            size,
        };
        let chunk_size =
            self.config.snapshot_chunk_size.min(option.snapshot_chunk_size().unwrap_or(usize::MAX)).max(1);
        let progress = Arc::new(SendProgress::new());
        let body = futures::stream::once(futures::future::ready(pb::SnapshotChunk {
            chunk: Some(pb::snapshot_chunk::Chunk::Header(header)),
        }))
        .chain(futures::stream::unfold(
            Pieces {
                file: Some(file),
                size,
                sent: 0,
                crc: crc32fast::Hasher::new(),
                chunk_size,
                progress: progress.clone(),
            },
            Pieces::next,
        ));
        let piece_timeout = option.soft_ttl().max(self.config.min_snapshot_chunk_timeout);
        let install_timeout = self.config.snapshot_install_timeout;
        tracing::info!(
            target_member = format_args!("{:x}", self.route.to),
            last_log_id = ?snapshot.meta.last_log_id,
            size,
            "send snapshot"
        );
        let started = Instant::now();
        let rpc = async move { client.install_snapshot(body).await };
        let watchdog = progress.watch(piece_timeout, install_timeout);
        let resp = tokio::select! {
            r = rpc => r,
            closed = cancel => return Err(StreamingError::Closed(closed)),
            after = watchdog => return Err(call.timeout(after).into()),
        };
        let resp = match resp {
            Ok(r) => r.into_inner(),
            Err(s) => {
                if let Some(why) = progress.failed.lock().take() {
                    return Err(StreamingError::Network(call.network(why)));
                }
                return Err(call.status(&s, piece_timeout).into());
            }
        };
        let vote = decoded(&call, "decode response", codec::vote_from_pb(resp.vote, "vote"))?;
        tracing::info!(
            target_member = format_args!("{:x}", self.route.to),
            size,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "snapshot sent"
        );
        Ok(SnapshotResponse::new(vote))
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        let call = self.call(RPCTypes::TransferLeader);
        let msg = codec::transfer_leader_request_to_pb(&self.route, &req);
        let resp =
            self.unary(RPCTypes::TransferLeader, &option, msg, |mut c, r| async move {
                c.transfer_leader(r).await
            })
            .await?;
        decoded(&call, "decode response", codec::transfer_leader_response_from_pb(resp))
    }
}

/// What the outbound half of an append stream has sent.
#[derive(Default)]
struct Outstanding {
    sent: AtomicU64,
    /// Why the outbound half stopped early.
    failed: Mutex<Option<String>>,
    /// Wakes the response reader when something was sent.
    changed: Notify,
}

/// The inbound half of an append stream.
struct Responses {
    inbound: tonic::Streaming<pb::StreamAppendResponse>,
    tracker: Arc<Outstanding>,
    received: u64,
    done: bool,
    call: Call,
    progress: Duration,
}

type StreamItem = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>;

impl Responses {
    async fn next(mut self) -> Option<(StreamItem, Self)> {
        if self.done {
            return None;
        }
        loop {
            let next = if self.tracker.sent.load(Ordering::Acquire) > self.received {
                match tokio::time::timeout(self.progress, self.inbound.next()).await {
                    Ok(n) => n,
                    Err(_) => {
                        let e = self.call.timeout(self.progress);
                        return self.finish(Err(e));
                    }
                }
            } else {
                // Nothing outstanding: wait for an answer or for a send.
                tokio::select! {
                    n = self.inbound.next() => n,
                    () = self.tracker.changed.notified() => continue,
                }
            };
            return match next {
                Some(Ok(msg)) => {
                    self.received += 1;
                    match codec::stream_result_from_pb(msg) {
                        Ok(r) => {
                            // A conflict or a higher vote ends the stream.
                            self.done = r.is_err();
                            Some((Ok(r), self))
                        }
                        Err(e) => {
                            let e = RPCError::Network(self.call.network(format!("decode response: {e}")));
                            self.finish(Err(e))
                        }
                    }
                }
                Some(Err(s)) => {
                    let e = self.call.status(&s, self.progress);
                    self.finish(Err(e))
                }
                None => {
                    let failed = self.tracker.failed.lock().take();
                    if let Some(why) = failed {
                        let e = RPCError::Network(self.call.network(why));
                        return self.finish(Err(e));
                    }
                    let unanswered = self.tracker.sent.load(Ordering::Acquire).saturating_sub(self.received);
                    if unanswered > 0 {
                        let e =
                            RPCError::Network(self.call.network(format!(
                                "peer ended the stream with {unanswered} requests unanswered"
                            )));
                        return self.finish(Err(e));
                    }
                    None
                }
            };
        }
    }

    fn finish(mut self, item: StreamItem) -> Option<(StreamItem, Self)> {
        self.done = true;
        Some((item, self))
    }
}

/// How far a snapshot transfer got, for the watchdog.
struct SendProgress {
    /// When the transport last took a piece.
    last: Mutex<Instant>,
    /// When the last piece and the CRC were taken.
    finished: Mutex<Option<Instant>>,
    /// Why the pieces stopped early (a local read failure).
    failed: Mutex<Option<String>>,
}

impl SendProgress {
    fn new() -> Self {
        SendProgress {
            last: Mutex::new(Instant::now()),
            finished: Mutex::new(None),
            failed: Mutex::new(None),
        }
    }

    /// Resolves with the timeout that passed: a piece not taken within
    /// `piece`, or no answer within `install` after the last piece.
    async fn watch(&self, piece: Duration, install: Duration) -> Duration {
        let tick = (piece / 4).max(Duration::from_millis(10));
        loop {
            tokio::time::sleep(tick).await;
            let finished = *self.finished.lock();
            match finished {
                Some(at) if at.elapsed() > install => return install,
                Some(_) => {}
                None if self.last.lock().elapsed() > piece => return piece,
                None => {}
            }
        }
    }
}

/// Reads the snapshot file piece by piece, as the transport takes them.
struct Pieces {
    file: Option<tokio::fs::File>,
    size: u64,
    sent: u64,
    crc: crc32fast::Hasher,
    chunk_size: usize,
    progress: Arc<SendProgress>,
}

impl Pieces {
    async fn next(mut self) -> Option<(pb::SnapshotChunk, Self)> {
        use pb::snapshot_chunk::Chunk;
        let mut file = self.file.take()?;
        *self.progress.last.lock() = Instant::now();
        let want = (self.size - self.sent).min(self.chunk_size as u64) as usize;
        if want == 0 {
            *self.progress.finished.lock() = Some(Instant::now());
            let crc32 = self.crc.clone().finalize();
            return Some((pb::SnapshotChunk { chunk: Some(Chunk::Done(pb::SnapshotDone { crc32 })) }, self));
        }
        let mut buf = vec![0u8; want];
        if let Err(e) = file.read_exact(&mut buf).await {
            *self.progress.failed.lock() = Some(format!("read snapshot file at byte {}: {e}", self.sent));
            return None;
        }
        self.crc.update(&buf);
        self.sent += want as u64;
        self.file = Some(file);
        Some((pb::SnapshotChunk { chunk: Some(Chunk::Data(bytes::Bytes::from(buf))) }, self))
    }
}
