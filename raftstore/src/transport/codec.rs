//! The wire encoding of openraft's messages: conversions between openraft's
//! types and the `keelsonraftpeerpb` protobuf messages.
//!
//! Log ids and votes are plain protobuf messages (varints). An entry is its
//! log id, a payload kind and the payload bytes: a normal entry's command
//! bytes go as they are (a zero-copy `Bytes` on both sides), a membership
//! as JSON (rare; readability wins). The snapshot meta and a transfer-leader
//! refusal are small and rare too: JSON.
//!
//! Decoding never trusts the peer: a missing required field or an unknown
//! payload kind is a [`CodecError`], never a panic.

use keelson_proto::keelsonraftpeerpb as pb;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, StreamAppendError, StreamAppendResult,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};

use crate::types::{Command, Entry, EntryPayload, LeaderId, LogId, Membership, TypeConfig, Vote};

type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;

/// Why a message could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// A field the message cannot do without is absent.
    #[error("message without its {0}")]
    Missing(&'static str),
    #[error("unknown entry payload kind {0}")]
    UnknownPayloadKind(i32),
    #[error("encode membership")]
    EncodeMembership(#[source] serde_json::Error),
    #[error("decode membership")]
    DecodeMembership(#[source] serde_json::Error),
    #[error("encode snapshot meta")]
    EncodeSnapshotMeta(#[source] serde_json::Error),
    #[error("decode snapshot meta")]
    DecodeSnapshotMeta(#[source] serde_json::Error),
    #[error("encode transfer-leader error")]
    EncodeTransferLeader(#[source] serde_json::Error),
    #[error("decode transfer-leader error")]
    DecodeTransferLeader(#[source] serde_json::Error),
}

pub(crate) fn log_id_to_pb(id: &LogId) -> pb::LogId {
    pb::LogId { term: id.leader_id.term, node_id: id.leader_id.node_id, index: id.index }
}

pub(crate) fn log_id_from_pb(id: pb::LogId) -> LogId {
    LogId::new(LeaderId { term: id.term, node_id: id.node_id }, id.index)
}

fn opt_log_id_to_pb(id: Option<&LogId>) -> Option<pb::LogId> {
    id.map(log_id_to_pb)
}

fn opt_log_id_from_pb(id: Option<pb::LogId>) -> Option<LogId> {
    id.map(log_id_from_pb)
}

pub(crate) fn vote_to_pb(v: &Vote) -> pb::Vote {
    pb::Vote { term: v.leader_id.term, node_id: v.leader_id.node_id, committed: v.committed }
}

pub(crate) fn vote_from_pb(v: Option<pb::Vote>, what: &'static str) -> Result<Vote, CodecError> {
    let v = v.ok_or(CodecError::Missing(what))?;
    Ok(Vote { leader_id: LeaderId { term: v.term, node_id: v.node_id }, committed: v.committed })
}

pub(crate) fn entry_to_pb(e: &Entry) -> Result<pb::Entry, CodecError> {
    let (kind, data) = match &e.payload {
        EntryPayload::Blank => (pb::PayloadKind::Blank, bytes::Bytes::new()),
        EntryPayload::Normal(cmd) => (pb::PayloadKind::Normal, cmd.0.clone()),
        EntryPayload::Membership(m) => (
            pb::PayloadKind::Membership,
            bytes::Bytes::from(serde_json::to_vec(m).map_err(CodecError::EncodeMembership)?),
        ),
    };
    Ok(pb::Entry { log_id: Some(log_id_to_pb(&e.log_id)), kind: kind as i32, data })
}

pub(crate) fn entry_from_pb(e: pb::Entry) -> Result<Entry, CodecError> {
    let log_id = log_id_from_pb(e.log_id.ok_or(CodecError::Missing("entry log id"))?);
    let payload = match pb::PayloadKind::try_from(e.kind) {
        Ok(pb::PayloadKind::Blank) => EntryPayload::Blank,
        Ok(pb::PayloadKind::Normal) => EntryPayload::Normal(Command(e.data)),
        Ok(pb::PayloadKind::Membership) => {
            let m: Membership = serde_json::from_slice(&e.data).map_err(CodecError::DecodeMembership)?;
            EntryPayload::Membership(m)
        }
        Err(_) => return Err(CodecError::UnknownPayloadKind(e.kind)),
    };
    Ok(Entry { log_id, payload })
}

pub(crate) fn append_request_to_pb(
    route: &pb::Route,
    rpc: &AppendEntriesRequest<TypeConfig>,
) -> Result<pb::AppendEntriesRequest, CodecError> {
    Ok(pb::AppendEntriesRequest {
        route: Some(*route),
        vote: Some(vote_to_pb(&rpc.vote)),
        prev_log_id: opt_log_id_to_pb(rpc.prev_log_id.as_ref()),
        leader_commit: opt_log_id_to_pb(rpc.leader_commit.as_ref()),
        entries: rpc.entries.iter().map(entry_to_pb).collect::<Result<_, _>>()?,
    })
}

pub(crate) fn append_request_from_pb(
    req: pb::AppendEntriesRequest,
) -> Result<AppendEntriesRequest<TypeConfig>, CodecError> {
    Ok(AppendEntriesRequest {
        vote: vote_from_pb(req.vote, "vote")?,
        prev_log_id: opt_log_id_from_pb(req.prev_log_id),
        leader_commit: opt_log_id_from_pb(req.leader_commit),
        entries: req.entries.into_iter().map(entry_from_pb).collect::<Result<_, _>>()?,
    })
}

pub(crate) fn append_response_to_pb(resp: &AppendEntriesResponse<TypeConfig>) -> pb::AppendEntriesResponse {
    use pb::append_entries_response::Result as R;
    let result = match resp {
        AppendEntriesResponse::Success => R::Success(pb::Empty {}),
        AppendEntriesResponse::PartialSuccess(m) => {
            R::PartialSuccess(pb::Matched { log_id: opt_log_id_to_pb(m.as_ref()) })
        }
        AppendEntriesResponse::Conflict => R::Conflict(pb::Empty {}),
        AppendEntriesResponse::HigherVote(v) => R::HigherVote(vote_to_pb(v)),
    };
    pb::AppendEntriesResponse { result: Some(result) }
}

pub(crate) fn append_response_from_pb(
    resp: pb::AppendEntriesResponse,
) -> Result<AppendEntriesResponse<TypeConfig>, CodecError> {
    use pb::append_entries_response::Result as R;
    Ok(match resp.result.ok_or(CodecError::Missing("append result"))? {
        R::Success(_) => AppendEntriesResponse::Success,
        R::PartialSuccess(m) => AppendEntriesResponse::PartialSuccess(opt_log_id_from_pb(m.log_id)),
        R::Conflict(_) => AppendEntriesResponse::Conflict,
        R::HigherVote(v) => AppendEntriesResponse::HigherVote(vote_from_pb(Some(v), "higher vote")?),
    })
}

pub(crate) fn stream_result_to_pb(r: &StreamAppendResult<TypeConfig>) -> pb::StreamAppendResponse {
    use pb::stream_append_response::Result as R;
    let result = match r {
        Ok(m) => R::Matched(pb::Matched { log_id: opt_log_id_to_pb(m.as_ref()) }),
        Err(StreamAppendError::Conflict(id)) => R::Conflict(log_id_to_pb(id)),
        Err(StreamAppendError::HigherVote(v)) => R::HigherVote(vote_to_pb(v)),
    };
    pb::StreamAppendResponse { result: Some(result) }
}

pub(crate) fn stream_result_from_pb(
    r: pb::StreamAppendResponse,
) -> Result<StreamAppendResult<TypeConfig>, CodecError> {
    use pb::stream_append_response::Result as R;
    Ok(match r.result.ok_or(CodecError::Missing("stream append result"))? {
        R::Matched(m) => Ok(opt_log_id_from_pb(m.log_id)),
        R::Conflict(id) => Err(StreamAppendError::Conflict(log_id_from_pb(id))),
        R::HigherVote(v) => Err(StreamAppendError::HigherVote(vote_from_pb(Some(v), "higher vote")?)),
    })
}

pub(crate) fn vote_request_to_pb(route: &pb::Route, rpc: &VoteRequest<TypeConfig>) -> pb::VoteRequest {
    pb::VoteRequest {
        route: Some(*route),
        vote: Some(vote_to_pb(&rpc.vote)),
        last_log_id: opt_log_id_to_pb(rpc.last_log_id.as_ref()),
        leadership_transfer: rpc.leadership_transfer,
    }
}

pub(crate) fn vote_request_from_pb(req: pb::VoteRequest) -> Result<VoteRequest<TypeConfig>, CodecError> {
    Ok(VoteRequest {
        vote: vote_from_pb(req.vote, "vote")?,
        last_log_id: opt_log_id_from_pb(req.last_log_id),
        leadership_transfer: req.leadership_transfer,
    })
}

pub(crate) fn vote_response_to_pb(resp: &VoteResponse<TypeConfig>) -> pb::VoteResponse {
    pb::VoteResponse {
        vote: Some(vote_to_pb(&resp.vote)),
        vote_granted: resp.vote_granted,
        last_log_id: opt_log_id_to_pb(resp.last_log_id.as_ref()),
    }
}

pub(crate) fn vote_response_from_pb(resp: pb::VoteResponse) -> Result<VoteResponse<TypeConfig>, CodecError> {
    Ok(VoteResponse {
        vote: vote_from_pb(resp.vote, "vote")?,
        vote_granted: resp.vote_granted,
        last_log_id: opt_log_id_from_pb(resp.last_log_id),
    })
}

pub(crate) fn transfer_leader_request_to_pb(
    route: &pb::Route,
    req: &TransferLeaderRequest<TypeConfig>,
) -> pb::TransferLeaderRequest {
    pb::TransferLeaderRequest {
        route: Some(*route),
        from_leader: Some(vote_to_pb(req.from_leader())),
        to_node_id: *req.to_node_id(),
        last_log_id: opt_log_id_to_pb(req.last_log_id()),
    }
}

pub(crate) fn transfer_leader_request_from_pb(
    req: pb::TransferLeaderRequest,
) -> Result<TransferLeaderRequest<TypeConfig>, CodecError> {
    Ok(TransferLeaderRequest::new(
        vote_from_pb(req.from_leader, "leader vote")?,
        req.to_node_id,
        opt_log_id_from_pb(req.last_log_id),
    ))
}

pub(crate) fn transfer_leader_response_to_pb(
    resp: &TransferLeaderResponse<TypeConfig>,
) -> Result<pb::TransferLeaderResponse, CodecError> {
    let error_json = match resp {
        Ok(()) => bytes::Bytes::new(),
        Err(e) => bytes::Bytes::from(serde_json::to_vec(e).map_err(CodecError::EncodeTransferLeader)?),
    };
    Ok(pb::TransferLeaderResponse { error_json })
}

pub(crate) fn transfer_leader_response_from_pb(
    resp: pb::TransferLeaderResponse,
) -> Result<TransferLeaderResponse<TypeConfig>, CodecError> {
    if resp.error_json.is_empty() {
        return Ok(Ok(()));
    }
    Ok(Err(serde_json::from_slice(&resp.error_json).map_err(CodecError::DecodeTransferLeader)?))
}

pub(crate) fn snapshot_meta_to_json(meta: &SnapshotMeta) -> Result<bytes::Bytes, CodecError> {
    serde_json::to_vec(meta).map(bytes::Bytes::from).map_err(CodecError::EncodeSnapshotMeta)
}

pub(crate) fn snapshot_meta_from_json(json: &[u8]) -> Result<SnapshotMeta, CodecError> {
    serde_json::from_slice(json).map_err(CodecError::DecodeSnapshotMeta)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use bytes::Bytes;
    use prost::Message;

    use super::*;
    use crate::types::{Member, StoredMembership};

    fn log_id(term: u64, node: u64, index: u64) -> LogId {
        LogId::new(LeaderId { term, node_id: node }, index)
    }

    fn route() -> pb::Route {
        pb::Route { cluster_id: 0xfeed, from: 1, to: 2 }
    }

    fn members() -> Membership {
        Membership::new(
            vec![BTreeSet::from([1, 2])],
            BTreeMap::from([
                (
                    1,
                    Member {
                        name: "n1".into(),
                        peer_urls: vec!["http://a:2380".into()],
                        client_urls: vec![],
                    },
                ),
                (
                    2,
                    Member {
                        name: "n2".into(),
                        peer_urls: vec!["http://b:2380".into()],
                        client_urls: vec![],
                    },
                ),
            ]),
        )
        .unwrap()
    }

    /// Through protobuf bytes and back, as the wire does it.
    fn wire<M: Message + Default>(m: &M) -> M {
        M::decode(Bytes::from(m.encode_to_vec())).unwrap()
    }

    #[test]
    fn append_entries_round_trips() {
        let vote = Vote { leader_id: LeaderId { term: 3, node_id: 1 }, committed: true };
        let rpc = AppendEntriesRequest::<TypeConfig> {
            vote,
            prev_log_id: Some(log_id(2, 1, 9)),
            leader_commit: None,
            entries: vec![
                Entry { log_id: log_id(3, 1, 10), payload: EntryPayload::Blank },
                Entry {
                    log_id: log_id(3, 1, 11),
                    payload: EntryPayload::Normal(Command(Bytes::from_static(b"\x00put"))),
                },
                Entry { log_id: log_id(3, 1, 12), payload: EntryPayload::Membership(members()) },
            ],
        };
        let pb = wire(&append_request_to_pb(&route(), &rpc).unwrap());
        assert_eq!(pb.route, Some(route()));
        let back = append_request_from_pb(pb).unwrap();
        assert_eq!(back.vote, rpc.vote);
        assert_eq!(back.prev_log_id, rpc.prev_log_id);
        assert_eq!(back.leader_commit, None);
        assert_eq!(back.entries, rpc.entries);
    }

    #[test]
    fn responses_round_trip() {
        let v = Vote { leader_id: LeaderId { term: 9, node_id: 2 }, committed: false };
        for r in [
            AppendEntriesResponse::<TypeConfig>::Success,
            AppendEntriesResponse::PartialSuccess(None),
            AppendEntriesResponse::PartialSuccess(Some(log_id(1, 1, 5))),
            AppendEntriesResponse::Conflict,
            AppendEntriesResponse::HigherVote(v),
        ] {
            assert_eq!(append_response_from_pb(wire(&append_response_to_pb(&r))).unwrap(), r);
        }
        for r in [
            Ok(None),
            Ok(Some(log_id(4, 3, 77))),
            Err(StreamAppendError::Conflict(log_id(4, 3, 70))),
            Err(StreamAppendError::HigherVote(v)),
        ] {
            assert_eq!(stream_result_from_pb(wire(&stream_result_to_pb(&r))).unwrap(), r);
        }
        let vr =
            VoteResponse::<TypeConfig> { vote: v, vote_granted: true, last_log_id: Some(log_id(9, 2, 3)) };
        assert_eq!(vote_response_from_pb(wire(&vote_response_to_pb(&vr))).unwrap(), vr);
        let req = VoteRequest::<TypeConfig> { vote: v, last_log_id: None, leadership_transfer: true };
        assert_eq!(vote_request_from_pb(wire(&vote_request_to_pb(&route(), &req))).unwrap(), req);
    }

    #[test]
    fn transfer_leader_and_snapshot_meta_round_trip() {
        let v = Vote { leader_id: LeaderId { term: 2, node_id: 1 }, committed: true };
        let req = TransferLeaderRequest::<TypeConfig>::new(v, 3, Some(log_id(2, 1, 40)));
        assert_eq!(
            transfer_leader_request_from_pb(wire(&transfer_leader_request_to_pb(&route(), &req))).unwrap(),
            req
        );
        let refused: TransferLeaderResponse<TypeConfig> =
            Err(openraft::raft::TransferLeaderError::VoteChanged { expected: v, actual: v });
        for r in [Ok(()), refused] {
            assert_eq!(
                transfer_leader_response_from_pb(wire(&transfer_leader_response_to_pb(&r).unwrap())).unwrap(),
                r
            );
        }
        let meta = SnapshotMeta {
            last_log_id: Some(log_id(2, 1, 40)),
            last_membership: StoredMembership::new(Some(log_id(1, 1, 1)), members()),
        };
        assert_eq!(snapshot_meta_from_json(&snapshot_meta_to_json(&meta).unwrap()).unwrap(), meta);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let no_vote = pb::AppendEntriesRequest::default();
        assert!(matches!(append_request_from_pb(no_vote), Err(CodecError::Missing("vote"))));
        let odd_kind =
            pb::Entry { log_id: Some(log_id_to_pb(&log_id(1, 1, 1))), kind: 42, data: Bytes::new() };
        assert!(matches!(entry_from_pb(odd_kind), Err(CodecError::UnknownPayloadKind(42))));
        let bad_membership = pb::Entry {
            log_id: Some(log_id_to_pb(&log_id(1, 1, 1))),
            kind: pb::PayloadKind::Membership as i32,
            data: Bytes::from_static(b"{"),
        };
        assert!(matches!(entry_from_pb(bad_membership), Err(CodecError::DecodeMembership(_))));
        assert!(stream_result_from_pb(pb::StreamAppendResponse::default()).is_err());
        assert!(snapshot_meta_from_json(b"not json").is_err());
    }
}
