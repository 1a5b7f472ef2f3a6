//! [`PeerService`]: the server side of the peer transport. Every incoming
//! RPC is checked (cluster and member id), decoded and handed to the local
//! openraft instance:
//!
//! | RPC               | openraft                                   |
//! | ----------------- | ------------------------------------------ |
//! | `AppendEntries`   | `Raft::append_entries`                     |
//! | `StreamAppend`    | `Raft::stream_append` (pipelined, in order) |
//! | `Vote`            | `Raft::vote`                               |
//! | `PreVote`         | `Raft::pre_vote`                           |
//! | `InstallSnapshot` | `Raft::install_full_snapshot`              |
//! | `TransferLeader`  | `Raft::handle_transfer_leader`             |
//!
//! A snapshot is written piece by piece to a new file in the snapshot
//! directory (`incoming-*.part`), reading the next piece only once the last
//! is written, so a slow disk slows the sender (HTTP/2 flow control). Its
//! size and CRC are checked before openraft sees it; the state machine's
//! `install_snapshot` then moves the file into place. A file openraft did
//! not take (a stale vote, an error) is removed.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use keelson_proto::keelsonraftpeerpb as pb;
use keelson_proto::keelsonraftpeerpb::raft_peer_server::{RaftPeer, RaftPeerServer};
use openraft::Raft;
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tonic::service::Routes;
use tonic::{Request, Response, Status, Streaming};

use super::codec;
use super::config::TransportConfig;
use super::status::{LocalIdentity, bad_request, raft_stopped};
use crate::snapshot::SnapshotFile;
use crate::state_machine::StateMachine;
use crate::types::{NodeId, TypeConfig};

type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>;

/// The routes that serve the peer transport for `raft`, a member
/// (`member_id`) of cluster `cluster_id`; received snapshots are written
/// under `snapshot_dir`, which should be on the same file system as the
/// state machine's snapshot directory (the file is renamed into place).
///
/// Serve them on the member's peer URL, e.g. with
/// [`TransportConfig::server`]: `config.server().add_routes(routes).serve_with_incoming(..)`.
pub fn peer_routes(
    raft: Raft<TypeConfig, StateMachine>,
    cluster_id: u64,
    member_id: NodeId,
    snapshot_dir: impl Into<PathBuf>,
    config: &TransportConfig,
) -> Routes {
    let svc = PeerService::new(raft, cluster_id, member_id, snapshot_dir);
    Routes::new(
        RaftPeerServer::new(svc)
            .max_decoding_message_size(config.max_message_bytes)
            .max_encoding_message_size(config.max_message_bytes),
    )
}

/// See the module docs.
pub struct PeerService {
    raft: Raft<TypeConfig, StateMachine>,
    me: LocalIdentity,
    snapshot_dir: PathBuf,
}

impl std::fmt::Debug for PeerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerService").field("me", &self.me).field("snapshot_dir", &self.snapshot_dir).finish()
    }
}

impl PeerService {
    pub fn new(
        raft: Raft<TypeConfig, StateMachine>,
        cluster_id: u64,
        member_id: NodeId,
        snapshot_dir: impl Into<PathBuf>,
    ) -> Self {
        PeerService { raft, me: LocalIdentity { cluster_id, member_id }, snapshot_dir: snapshot_dir.into() }
    }

    /// Refuses a vote request from a member this member knows was removed:
    /// one that is not in the membership, asking with a log no newer than
    /// the membership (a member added later than this member has heard of
    /// has a newer log). The refusal tells it so, and it stops.
    fn check_not_removed(&self, rpc: &openraft::raft::VoteRequest<TypeConfig>) -> Result<(), Status> {
        use openraft::async_runtime::watch::WatchReceiver;
        let from = rpc.vote.leader_id().node_id;
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        let membership = &m.membership_config;
        let known = membership.membership().nodes().any(|(id, _)| *id == from);
        if known || membership.log_id().is_none() || rpc.last_log_id > *membership.log_id() {
            return Ok(());
        }
        Err(Status::failed_precondition(format!("member {from:x}: {}", super::status::REMOVED)))
    }

    /// Writes the pieces that follow the header into a new file; returns it
    /// (removed when dropped) once size and CRC match.
    async fn receive(
        &self,
        inbound: &mut Streaming<pb::SnapshotChunk>,
        size: u64,
    ) -> Result<tempfile::TempPath, Status> {
        use pb::snapshot_chunk::Chunk;
        let io =
            |what: &str, e: std::io::Error| Status::unavailable(format!("receive snapshot: {what}: {e}"));
        tokio::fs::create_dir_all(&self.snapshot_dir).await.map_err(|e| io("create snapshot dir", e))?;
        let dir = self.snapshot_dir.clone();
        let tmp = tokio::task::spawn_blocking(move || {
            tempfile::Builder::new().prefix("incoming-").suffix(".part").tempfile_in(dir)
        })
        .await
        .map_err(|e| Status::internal(format!("receive snapshot: {e}")))?
        .map_err(|e| io("create file", e))?;
        let (file, path) = tmp.into_parts();
        let mut file = tokio::fs::File::from_std(file);
        let mut received = 0u64;
        let mut crc = crc32fast::Hasher::new();
        loop {
            match inbound.message().await? {
                Some(pb::SnapshotChunk { chunk: Some(Chunk::Data(d)) }) => {
                    received += d.len() as u64;
                    if received > size {
                        return Err(Status::invalid_argument(format!(
                            "snapshot stream carries more than the {size} bytes its header announced"
                        )));
                    }
                    crc.update(&d);
                    file.write_all(&d).await.map_err(|e| io("write", e))?;
                }
                Some(pb::SnapshotChunk { chunk: Some(Chunk::Done(done)) }) => {
                    if received != size {
                        return Err(Status::invalid_argument(format!(
                            "snapshot stream ended after {received} of {size} bytes"
                        )));
                    }
                    if crc.finalize() != done.crc32 {
                        return Err(Status::data_loss("snapshot CRC mismatch"));
                    }
                    break;
                }
                Some(_) => {
                    return Err(Status::invalid_argument(
                        "a second header or an empty piece in a snapshot stream",
                    ));
                }
                None => {
                    return Err(Status::invalid_argument(format!(
                        "snapshot stream ended after {received} of {size} bytes, without its CRC"
                    )));
                }
            }
        }
        file.flush().await.map_err(|e| io("flush", e))?;
        file.sync_all().await.map_err(|e| io("sync", e))?;
        Ok(path)
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<pb::StreamAppendResponse, Status>> + Send>>;

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(
        &self,
        request: Request<pb::AppendEntriesRequest>,
    ) -> Result<Response<pb::AppendEntriesResponse>, Status> {
        let req = request.into_inner();
        self.me.check(req.route.as_ref())?;
        let rpc = codec::append_request_from_pb(req).map_err(|e| bad_request("append request", &e))?;
        let resp = self.raft.append_entries(rpc).await.map_err(|e| raft_stopped(&e))?;
        Ok(Response::new(codec::append_response_to_pb(&resp)))
    }

    type StreamAppendStream = ResponseStream;

    async fn stream_append(
        &self,
        request: Request<Streaming<pb::AppendEntriesRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let me = self.me;
        // A request that is refused or does not decode ends the input; its
        // error goes out after the answers to the requests before it.
        let refused: Arc<Mutex<Option<Status>>> = Arc::default();
        let r = refused.clone();
        let input = request.into_inner().scan((), move |_, msg| {
            let req = match msg {
                Ok(m) => me.check(m.route.as_ref()).and_then(|()| {
                    codec::append_request_from_pb(m).map_err(|e| bad_request("append request", &e))
                }),
                Err(s) => {
                    // The leader went away or ended the session.
                    tracing::debug!(status = %s, "append stream input ended");
                    return futures::future::ready(None);
                }
            };
            futures::future::ready(match req {
                Ok(req) => Some(req),
                Err(s) => {
                    *r.lock() = Some(s);
                    None
                }
            })
        });
        let answers = self.raft.stream_append(input).map(|item| match item {
            Ok(result) => Ok(codec::stream_result_to_pb(&result)),
            Err(fatal) => Err(raft_stopped(&fatal)),
        });
        let tail = futures::stream::once(async move { refused.lock().take() })
            .filter_map(|s| futures::future::ready(s.map(Err)));
        Ok(Response::new(Box::pin(answers.chain(tail))))
    }

    async fn vote(&self, request: Request<pb::VoteRequest>) -> Result<Response<pb::VoteResponse>, Status> {
        let req = request.into_inner();
        self.me.check(req.route.as_ref())?;
        let rpc = codec::vote_request_from_pb(req).map_err(|e| bad_request("vote request", &e))?;
        self.check_not_removed(&rpc)?;
        let resp = self.raft.vote(rpc).await.map_err(|e| raft_stopped(&e))?;
        Ok(Response::new(codec::vote_response_to_pb(&resp)))
    }

    async fn pre_vote(
        &self,
        request: Request<pb::VoteRequest>,
    ) -> Result<Response<pb::VoteResponse>, Status> {
        let req = request.into_inner();
        self.me.check(req.route.as_ref())?;
        let rpc = codec::vote_request_from_pb(req).map_err(|e| bad_request("pre-vote request", &e))?;
        self.check_not_removed(&rpc)?;
        let resp = self.raft.pre_vote(rpc).await.map_err(|e| raft_stopped(&e))?;
        Ok(Response::new(codec::vote_response_to_pb(&resp)))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::SnapshotResponse>, Status> {
        let mut inbound = request.into_inner();
        let header = match inbound.message().await? {
            Some(pb::SnapshotChunk { chunk: Some(pb::snapshot_chunk::Chunk::Header(h)) }) => h,
            _ => return Err(Status::invalid_argument("an InstallSnapshot stream starts with a header")),
        };
        self.me.check(header.route.as_ref())?;
        let from = header.route.map_or(0, |r| r.from);
        let vote =
            codec::vote_from_pb(header.vote, "vote").map_err(|e| bad_request("snapshot header", &e))?;
        let meta = codec::snapshot_meta_from_json(&header.meta_json)
            .map_err(|e| bad_request("snapshot header", &e))?;
        tracing::info!(
            from = format_args!("{from:x}"),
            last_log_id = ?meta.last_log_id,
            size = header.size,
            "receive snapshot"
        );
        let path = self.receive(&mut inbound, header.size).await?;
        let snapshot = Snapshot { meta, snapshot: SnapshotFile { path: path.to_path_buf() } };
        let resp = self.raft.install_full_snapshot(vote, snapshot).await.map_err(|e| raft_stopped(&e))?;
        // Removes the file unless the state machine moved it into place.
        drop(path);
        Ok(Response::new(pb::SnapshotResponse { vote: Some(codec::vote_to_pb(&resp.vote)) }))
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        let req = request.into_inner();
        self.me.check(req.route.as_ref())?;
        let rpc = codec::transfer_leader_request_from_pb(req)
            .map_err(|e| bad_request("transfer-leader request", &e))?;
        let resp = self.raft.handle_transfer_leader(rpc).await.map_err(|e| raft_stopped(&e))?;
        let msg = codec::transfer_leader_response_to_pb(&resp)
            .map_err(|e| Status::internal(format!("encode transfer-leader response: {e}")))?;
        Ok(Response::new(msg))
    }
}
