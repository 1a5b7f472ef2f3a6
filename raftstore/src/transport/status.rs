//! The one place transport errors are translated: a refused or failed
//! request becomes a gRPC [`Status`] on the server, and a [`Status`] becomes
//! openraft's `Unreachable`, `NetworkError` or `Timeout` on the client.
//!
//! | status on the wire     | server side reason                           | client side (openraft) |
//! | ---------------------- | -------------------------------------------- | ---------------------- |
//! | `FAILED_PRECONDITION`  | another cluster, or meant for another member | `Unreachable` (backs off) |
//! | `UNAVAILABLE`          | raft stopped; or the peer cannot be reached  | `Unreachable` (backs off) |
//! | `INVALID_ARGUMENT`     | a message that does not decode               | `NetworkError`         |
//! | `DEADLINE_EXCEEDED`    | the RPC ran past its timeout                 | `Timeout`              |
//! | anything else          | —                                            | `NetworkError`         |

use std::time::Duration;

use keelson_proto::keelsonraftpeerpb::Route;
use openraft::error::{NetworkError, RPCError, Timeout, Unreachable};
use openraft::network::RPCTypes;
use tonic::{Code, Status};

use super::codec::CodecError;
use crate::types::{NodeId, TypeConfig};

/// How a member tells a removed member that asks for its vote that it is
/// no longer in the cluster (etcd's text); the asking member then stops.
pub(crate) const REMOVED: &str = "the member has been permanently removed from the cluster";

/// Who this member is, for checking the route of every incoming request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LocalIdentity {
    pub(crate) cluster_id: u64,
    pub(crate) member_id: NodeId,
}

impl LocalIdentity {
    /// Refuses a request from another cluster, or one meant for another
    /// member (a peer URL that points at the wrong member).
    pub(crate) fn check(&self, route: Option<&Route>) -> Result<(), Status> {
        let Some(r) = route else {
            return Err(Status::invalid_argument(
                "raft peer request without a route (cluster and member ids)",
            ));
        };
        if r.cluster_id != self.cluster_id {
            let msg = format!(
                "member {:x} of cluster {:016x} refused a raft request from member {:x} of cluster {:016x}: \
                 the two members belong to different clusters (check --initial-cluster and \
                 --initial-cluster-token)",
                self.member_id, self.cluster_id, r.from, r.cluster_id
            );
            tracing::warn!(from = format_args!("{:x}", r.from), "{msg}");
            return Err(Status::failed_precondition(msg));
        }
        if r.to != self.member_id {
            let msg = format!(
                "a raft request from member {:x} for member {:x} reached member {:x}: its peer URL points at \
                 the wrong member",
                r.from, r.to, self.member_id
            );
            tracing::warn!(from = format_args!("{:x}", r.from), "{msg}");
            return Err(Status::failed_precondition(msg));
        }
        Ok(())
    }
}

pub(crate) fn bad_request(what: &str, e: &CodecError) -> Status {
    Status::invalid_argument(format!("decode {what}: {}", error_chain(e)))
}

pub(crate) fn raft_stopped(e: &impl std::fmt::Display) -> Status {
    Status::unavailable(format!("raft stopped: {e}"))
}

/// What a client-side failure is about: the RPC, and the two ends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call {
    pub(crate) action: RPCTypes,
    pub(crate) from: NodeId,
    pub(crate) target: NodeId,
}

impl Call {
    pub(crate) fn timeout(&self, after: Duration) -> RPCError<TypeConfig> {
        RPCError::Timeout(Timeout { action: self.action, id: self.from, target: self.target, timeout: after })
    }

    pub(crate) fn unreachable(&self, why: impl std::fmt::Display) -> Unreachable<TypeConfig> {
        Unreachable::from_string(format!("{} to member {:x}: {why}", self.action, self.target))
    }

    pub(crate) fn network(&self, why: impl std::fmt::Display) -> NetworkError<TypeConfig> {
        NetworkError::from_string(format!("{} to member {:x}: {why}", self.action, self.target))
    }

    /// Maps a status a call ended with; see the module docs.
    pub(crate) fn status(&self, s: &Status, after: Duration) -> RPCError<TypeConfig> {
        let why = describe(s);
        match s.code() {
            Code::FailedPrecondition | Code::Unavailable => RPCError::Unreachable(self.unreachable(why)),
            Code::DeadlineExceeded => self.timeout(after),
            _ => RPCError::Network(self.network(why)),
        }
    }
}

/// A status's code and message, and the transport error under it (a
/// refused connection says so only there).
fn describe(s: &Status) -> String {
    let mut out = format!("{:?}: {}", s.code(), s.message());
    let mut source = std::error::Error::source(s);
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: LocalIdentity = LocalIdentity { cluster_id: 0xc1, member_id: 2 };

    #[test]
    fn routes_from_elsewhere_are_refused_clearly() {
        assert!(ME.check(Some(&Route { cluster_id: 0xc1, from: 1, to: 2 })).is_ok());
        let other = ME.check(Some(&Route { cluster_id: 0xc2, from: 1, to: 2 })).unwrap_err();
        assert_eq!(other.code(), Code::FailedPrecondition);
        assert!(other.message().contains("different clusters"), "{}", other.message());
        assert!(other.message().contains("00000000000000c2"), "{}", other.message());
        let wrong = ME.check(Some(&Route { cluster_id: 0xc1, from: 1, to: 3 })).unwrap_err();
        assert!(wrong.message().contains("wrong member"), "{}", wrong.message());
        assert_eq!(ME.check(None).unwrap_err().code(), Code::InvalidArgument);
    }

    #[test]
    fn statuses_map_to_openraft_errors() {
        let call = Call { action: RPCTypes::Vote, from: 1, target: 2 };
        let t = Duration::from_millis(10);
        assert!(matches!(call.status(&Status::failed_precondition("x"), t), RPCError::Unreachable(_)));
        assert!(matches!(call.status(&Status::unavailable("x"), t), RPCError::Unreachable(_)));
        assert!(matches!(call.status(&Status::deadline_exceeded("x"), t), RPCError::Timeout(_)));
        assert!(matches!(call.status(&Status::invalid_argument("x"), t), RPCError::Network(_)));
        assert!(matches!(call.status(&Status::internal("x"), t), RPCError::Network(_)));
    }
}
