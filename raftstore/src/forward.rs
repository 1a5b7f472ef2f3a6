//! Forwarding: any member serves every request, and what only the leader
//! can do travels to it over the peer channel (`keelsonraftpeerpb.Forward`,
//! `proto/raftpeer.proto`), beside raft's own RPCs.
//!
//! | asked of a follower         | forwarded as      | the leader runs                    |
//! | --------------------------- | ----------------- | ---------------------------------- |
//! | a write (`Node::propose`)   | `Propose`         | `Raft::client_write`               |
//! | a linearizable read         | `ReadIndex`       | `Raft::get_read_linearizer`        |
//! | a lease keep-alive / TTL    | `LeaseKeepAlive`… | its lessor (only it counts down)   |
//! | a membership change         | `ChangeMembers`   | `Raft::change_membership` & co.    |
//! | the corruption check        | `HashKv`          | (any member) its store's HashKV    |
//!
//! A follower answers a forwarded write only once it has applied the entry
//! itself (the leader returns the log index), so a client that writes on a
//! follower then reads there sees its write, as with etcd.
//!
//! Errors travel as [`pb::ForwardError`] inside the response; a gRPC status
//! means the transport failed. `NOT_LEADER` means the request was not taken
//! (safe to send again to the new leader); a transport failure after the
//! request went out is ambiguous and is never retried for writes.

use std::sync::{Arc, Weak};

use bytes::Bytes;
use keelson_proto::keelsonraftpeerpb as pb;
use keelson_proto::keelsonraftpeerpb::forward_server::{Forward, ForwardServer};
use prost::Message;
use tonic::{Request, Response, Status};

use crate::membership::MemberChange;
use crate::node::{Node, ProposeError};
use crate::transport::TransportConfig;

use pb::forward_error::Kind;

/// The server side: answers other members' forwarded requests from `node`.
pub(crate) fn forward_service(node: Weak<Node>, config: &TransportConfig) -> ForwardServer<ForwardService> {
    ForwardServer::new(ForwardService { node })
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes)
}

pub(crate) struct ForwardService {
    node: Weak<Node>,
}

impl ForwardService {
    /// The node, once the route is checked.
    fn node(&self, route: Option<&pb::Route>) -> Result<Arc<Node>, Status> {
        let node = self.node.upgrade().ok_or_else(|| Status::unavailable("member stopped"))?;
        node.identity().check(route)?;
        Ok(node)
    }
}

pub(crate) fn to_wire(e: &ProposeError) -> pb::ForwardError {
    let (kind, leader) = match e {
        ProposeError::NotLeader { leader } => (Kind::NotLeader, leader.unwrap_or(0)),
        ProposeError::NoLeader => (Kind::NoLeader, 0),
        ProposeError::Timeout => (Kind::Timeout, 0),
        ProposeError::Stopped => (Kind::Stopped, 0),
        ProposeError::LeaseNotFound => (Kind::LeaseNotFound, 0),
        ProposeError::MemberNotFound => (Kind::MemberNotFound, 0),
        ProposeError::MemberExists => (Kind::MemberExists, 0),
        ProposeError::PeerUrlExists => (Kind::PeerUrlExists, 0),
        ProposeError::MemberNotLearner => (Kind::MemberNotLearner, 0),
        ProposeError::LearnerNotReady => (Kind::LearnerNotReady, 0),
        ProposeError::Unhealthy => (Kind::Unhealthy, 0),
        ProposeError::BadTransferee => (Kind::BadTransferee, 0),
        ProposeError::TooManyLearners => (Kind::TooManyLearners, 0),
        ProposeError::LeaderChanged | ProposeError::ConnectionLost | ProposeError::Internal(_) => {
            (Kind::Internal, 0)
        }
    };
    pb::ForwardError { kind: kind as i32, leader, message: e.to_string() }
}

pub(crate) fn from_wire(e: pb::ForwardError) -> ProposeError {
    match Kind::try_from(e.kind).unwrap_or(Kind::Internal) {
        Kind::NotLeader => ProposeError::NotLeader { leader: (e.leader != 0).then_some(e.leader) },
        Kind::NoLeader => ProposeError::NoLeader,
        Kind::Timeout => ProposeError::Timeout,
        Kind::Stopped => ProposeError::Stopped,
        Kind::LeaseNotFound => ProposeError::LeaseNotFound,
        Kind::MemberNotFound => ProposeError::MemberNotFound,
        Kind::MemberExists => ProposeError::MemberExists,
        Kind::PeerUrlExists => ProposeError::PeerUrlExists,
        Kind::MemberNotLearner => ProposeError::MemberNotLearner,
        Kind::LearnerNotReady => ProposeError::LearnerNotReady,
        Kind::Unhealthy => ProposeError::Unhealthy,
        Kind::BadTransferee => ProposeError::BadTransferee,
        Kind::TooManyLearners => ProposeError::TooManyLearners,
        Kind::Internal => ProposeError::Internal(e.message),
    }
}

/// How a transport failure of a forwarded request reads: `true` when the
/// request cannot have reached the leader (the connection was refused or
/// never made), so sending it again cannot apply it twice.
pub(crate) fn never_sent(s: &Status) -> bool {
    let mut text = s.message().to_string();
    let mut source = std::error::Error::source(s);
    while let Some(e) = source {
        text.push_str(&e.to_string());
        source = e.source();
    }
    let text = text.to_ascii_lowercase();
    text.contains("connection refused") || text.contains("tcp connect error") || text.contains("dns error")
}

pub(crate) fn to_wire_members(members: Vec<(u64, crate::types::Member, bool)>) -> Vec<pb::MemberInfo> {
    members
        .into_iter()
        .map(|(id, m, is_learner)| pb::MemberInfo {
            id,
            name: m.name,
            peer_urls: m.peer_urls,
            client_urls: m.client_urls,
            is_learner,
        })
        .collect()
}

#[tonic::async_trait]
impl Forward for ForwardService {
    async fn propose(
        &self,
        request: Request<pb::ProposeRequest>,
    ) -> Result<Response<pb::ProposeResponse>, Status> {
        let req = request.into_inner();
        let node = self.node(req.route.as_ref())?;
        let internal = keelson_proto::keelsonraftpb::InternalRequest::decode(req.request)
            .map_err(|e| Status::invalid_argument(format!("decode forwarded request: {e}")))?;
        let resp = match node.propose_here(internal).await {
            Ok((resp, index)) => pb::ProposeResponse {
                result: Some(pb::propose_response::Result::Response(Bytes::from(resp.encode_to_vec()))),
                index,
            },
            Err(e) => pb::ProposeResponse {
                result: Some(pb::propose_response::Result::Error(to_wire(&e))),
                index: 0,
            },
        };
        Ok(Response::new(resp))
    }

    async fn read_index(
        &self,
        request: Request<pb::RouteOnly>,
    ) -> Result<Response<pb::ReadIndexResponse>, Status> {
        let node = self.node(request.get_ref().route.as_ref())?;
        let result = match node.read_index_here().await {
            Ok(index) => pb::read_index_response::Result::Index(index),
            Err(e) => pb::read_index_response::Result::Error(to_wire(&e)),
        };
        Ok(Response::new(pb::ReadIndexResponse { result: Some(result) }))
    }

    async fn lease_keep_alive(
        &self,
        request: Request<pb::LeaseRequest>,
    ) -> Result<Response<pb::LeaseKeepAliveResponse>, Status> {
        let req = request.into_inner();
        let node = self.node(req.route.as_ref())?;
        let result = match node.lease_keep_alive_here(req.id) {
            Ok(ttl) => pb::lease_keep_alive_response::Result::Ttl(ttl),
            Err(e) => pb::lease_keep_alive_response::Result::Error(to_wire(&e)),
        };
        Ok(Response::new(pb::LeaseKeepAliveResponse { result: Some(result) }))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let req = request.into_inner();
        let node = self.node(req.route.as_ref())?;
        let result = match node.lease_time_to_live_here(req.id, req.keys) {
            Ok(r) => pb::lease_time_to_live_response::Result::Response(Bytes::from(r.encode_to_vec())),
            Err(e) => pb::lease_time_to_live_response::Result::Error(to_wire(&e)),
        };
        Ok(Response::new(pb::LeaseTimeToLiveResponse { result: Some(result) }))
    }

    async fn change_members(
        &self,
        request: Request<pb::ChangeMembersRequest>,
    ) -> Result<Response<pb::ChangeMembersResponse>, Status> {
        let req = request.into_inner();
        let node = self.node(req.route.as_ref())?;
        let change = MemberChange::from_wire(req.change)
            .ok_or_else(|| Status::invalid_argument("a membership change without a change"))?;
        let resp = match node.change_members_here(change).await {
            Ok((id, members)) => pb::ChangeMembersResponse {
                result: Some(pb::change_members_response::Result::Id(id)),
                members: to_wire_members(members),
            },
            Err(e) => pb::ChangeMembersResponse {
                result: Some(pb::change_members_response::Result::Error(to_wire(&e))),
                members: Vec::new(),
            },
        };
        Ok(Response::new(resp))
    }

    async fn members(
        &self,
        request: Request<pb::RouteOnly>,
    ) -> Result<Response<pb::MembersResponse>, Status> {
        // A member joining with --initial-cluster-state existing knows
        // neither the cluster id nor its own: it sends a zero route.
        let node = self.node.upgrade().ok_or_else(|| Status::unavailable("member stopped"))?;
        match request.get_ref().route.as_ref() {
            Some(r) if r.cluster_id == 0 && r.to == 0 => {}
            route => node.identity().check(route)?,
        }
        Ok(Response::new(pb::MembersResponse {
            cluster_id: node.cluster_id(),
            members: to_wire_members(node.members()),
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        let req = request.into_inner();
        let node = self.node(req.route.as_ref())?;
        let revision = req.revision;
        let answer = tokio::task::spawn_blocking(move || node.hash_kv_here(revision))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(answer))
    }
}
