//! Every error the etcd services answer, mapped in exactly this one place to
//! the gRPC code and message etcd sends (etcd's `api/v3rpc/rpctypes/error.go`
//! and `toGRPCErrorMap` in `server/etcdserver/api/v3rpc/util.go`).
//!
//! The services never build a [`Status`] from a string: they return an
//! [`EtcdError`], or convert a [`MvccError`], an [`ApplyError`], a
//! [`BackendError`] or a [`WatchError`] into one with `?`. Clients (the Go
//! client's `rpctypes.Error`, `etcdctl`) match on the message text, so the
//! texts below are etcd's, byte for byte.

use keelson_mvcc::MvccError;
use keelson_proto::keelsonraftpb::{ApplyError, ApplyErrorKind};
use keelson_watch::WatchError;
use tonic::{Code, Status};

use crate::backend::BackendError;

/// An error as etcd reports it to a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EtcdError {
    // Request checks (etcd's v3rpc/key.go).
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: invalid sort option")]
    InvalidSortOption,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,

    // MVCC.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRev,
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    #[error("etcdserver: corrupt cluster")]
    Corrupt,

    // Leases.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,

    // Membership.
    #[error("etcdserver: member ID already exist")]
    MemberExists,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    #[error("etcdserver: given member URLs are invalid")]
    MemberBadUrls,
    #[error("etcdserver: member not found")]
    MemberNotFound,
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    #[error("etcdserver: unhealthy cluster")]
    Unhealthy,
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,

    // Auth (Keelson has no auth store behind the etcd API yet).
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    #[error("etcdserver: user name not found")]
    UserNotFound,
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    #[error("etcdserver: role name is empty")]
    RoleEmpty,

    // The member.
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: not leader")]
    NotLeader,
    #[error("etcdserver: server stopped")]
    Stopped,
    #[error("etcdserver: request timed out")]
    Timeout,
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    #[error("etcdserver: request timed out, possibly due to connection lost")]
    TimeoutDueToConnectionLost,

    /// Downgrade and other etcd features Keelson does not have.
    #[error("etcdserver: {0} is not supported by keelson")]
    Unsupported(&'static str),
    /// Anything else, as etcd's `togRPCError` answers errors it has no entry
    /// for: `Unknown` with the error's own text.
    #[error("{0}")]
    Unknown(String),
}

impl EtcdError {
    /// The gRPC status code etcd sends for this error.
    pub fn code(&self) -> Code {
        use EtcdError::*;
        match self {
            EmptyKey | KeyNotFound | ValueProvided | LeaseProvided | TooManyOps | DuplicateKey
            | InvalidSortOption | RequestTooLarge | MemberBadUrls | UserEmpty | RoleEmpty => {
                Code::InvalidArgument
            }
            Compacted | FutureRev | LeaseTtlTooLarge => Code::OutOfRange,
            NoSpace => Code::ResourceExhausted,
            Corrupt => Code::DataLoss,
            LeaseNotFound | MemberNotFound => Code::NotFound,
            LeaseExists | MemberExists | PeerUrlExists | MemberNotLearner | LearnerNotReady
            | TooManyLearners | BadLeaderTransferee | NotLeader | AuthNotEnabled | UserNotFound
            | RoleNotFound => Code::FailedPrecondition,
            NoLeader | Stopped | Timeout | LeaderChanged | TimeoutDueToConnectionLost | Unhealthy => {
                Code::Unavailable
            }
            Unsupported(_) => Code::Unimplemented,
            Unknown(_) => Code::Unknown,
        }
    }
}

impl From<EtcdError> for Status {
    fn from(e: EtcdError) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

impl From<MvccError> for EtcdError {
    fn from(e: MvccError) -> EtcdError {
        match e {
            MvccError::Compacted { .. } => EtcdError::Compacted,
            MvccError::FutureRev { .. } => EtcdError::FutureRev,
            MvccError::NoSpace => EtcdError::NoSpace,
            MvccError::EmptyKey => EtcdError::EmptyKey,
            MvccError::DuplicateKey => EtcdError::DuplicateKey,
            MvccError::TooManyOps => EtcdError::TooManyOps,
            MvccError::KeyNotFound => EtcdError::KeyNotFound,
            MvccError::ValueProvided => EtcdError::ValueProvided,
            MvccError::LeaseProvided => EtcdError::LeaseProvided,
            MvccError::LeaseNotFound => EtcdError::LeaseNotFound,
            other => EtcdError::Unknown(error_chain(&other)),
        }
    }
}

impl From<&ApplyError> for EtcdError {
    fn from(e: &ApplyError) -> EtcdError {
        match ApplyErrorKind::try_from(e.kind).unwrap_or(ApplyErrorKind::ApplyErrorUnknown) {
            ApplyErrorKind::Compacted => EtcdError::Compacted,
            ApplyErrorKind::FutureRev => EtcdError::FutureRev,
            ApplyErrorKind::NoSpace => EtcdError::NoSpace,
            ApplyErrorKind::EmptyKey => EtcdError::EmptyKey,
            ApplyErrorKind::DuplicateKey => EtcdError::DuplicateKey,
            ApplyErrorKind::TooManyOps => EtcdError::TooManyOps,
            ApplyErrorKind::KeyNotFound => EtcdError::KeyNotFound,
            ApplyErrorKind::ValueProvided => EtcdError::ValueProvided,
            ApplyErrorKind::LeaseProvided => EtcdError::LeaseProvided,
            ApplyErrorKind::LeaseNotFound => EtcdError::LeaseNotFound,
            ApplyErrorKind::LeaseExists => EtcdError::LeaseExists,
            ApplyErrorKind::LeaseTtlTooLarge => EtcdError::LeaseTtlTooLarge,
            ApplyErrorKind::Corrupt => EtcdError::Corrupt,
            ApplyErrorKind::Storage | ApplyErrorKind::ApplyErrorUnknown => {
                EtcdError::Unknown(e.message.clone())
            }
        }
    }
}

impl From<BackendError> for EtcdError {
    fn from(e: BackendError) -> EtcdError {
        match e {
            BackendError::NoLeader => EtcdError::NoLeader,
            BackendError::Stopped => EtcdError::Stopped,
            BackendError::Timeout => EtcdError::Timeout,
            BackendError::LeaseNotFound => EtcdError::LeaseNotFound,
            BackendError::NotLeader => EtcdError::NotLeader,
            BackendError::LeaderChanged => EtcdError::LeaderChanged,
            BackendError::ConnectionLost => EtcdError::TimeoutDueToConnectionLost,
            BackendError::MemberNotFound => EtcdError::MemberNotFound,
            BackendError::MemberExists => EtcdError::MemberExists,
            BackendError::PeerUrlExists => EtcdError::PeerUrlExists,
            BackendError::MemberNotLearner => EtcdError::MemberNotLearner,
            BackendError::LearnerNotReady => EtcdError::LearnerNotReady,
            BackendError::Unhealthy => EtcdError::Unhealthy,
            BackendError::BadTransferee => EtcdError::BadLeaderTransferee,
            BackendError::TooManyLearners => EtcdError::TooManyLearners,
            BackendError::Internal(msg) => EtcdError::Unknown(msg),
        }
    }
}

/// A refused watch never fails the gRPC stream (the hub answers it on the
/// stream with `cancel_reason`); this mapping is for callers that surface
/// it as a status anyway.
impl From<WatchError> for EtcdError {
    fn from(e: WatchError) -> EtcdError {
        match e {
            WatchError::NegativeStartRevision => EtcdError::Compacted,
            other => EtcdError::Unknown(other.to_string()),
        }
    }
}

impl From<BackendError> for Status {
    fn from(e: BackendError) -> Status {
        EtcdError::from(e).into()
    }
}

/// The text of an error and its sources, `: `-separated.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// tonic's own answer to a message over the receive limit
/// (`max_decoding_message_size`), which the router turns into
/// [`EtcdError::RequestTooLarge`].
pub(crate) fn is_decode_limit(status: &Status) -> bool {
    status.code() == Code::OutOfRange
        && status.message().starts_with("Error, decoded message length too large")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// etcd's table, as clients see it: (error, code, message).
    #[test]
    fn messages_and_codes_are_etcds() {
        let table: &[(EtcdError, Code, &str)] = &[
            (EtcdError::EmptyKey, Code::InvalidArgument, "etcdserver: key is not provided"),
            (EtcdError::KeyNotFound, Code::InvalidArgument, "etcdserver: key not found"),
            (EtcdError::ValueProvided, Code::InvalidArgument, "etcdserver: value is provided"),
            (EtcdError::LeaseProvided, Code::InvalidArgument, "etcdserver: lease is provided"),
            (EtcdError::TooManyOps, Code::InvalidArgument, "etcdserver: too many operations in txn request"),
            (
                EtcdError::DuplicateKey,
                Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request",
            ),
            (EtcdError::InvalidSortOption, Code::InvalidArgument, "etcdserver: invalid sort option"),
            (EtcdError::RequestTooLarge, Code::InvalidArgument, "etcdserver: request is too large"),
            (
                EtcdError::Compacted,
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted",
            ),
            (
                EtcdError::FutureRev,
                Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision",
            ),
            (EtcdError::NoSpace, Code::ResourceExhausted, "etcdserver: mvcc: database space exceeded"),
            (EtcdError::LeaseNotFound, Code::NotFound, "etcdserver: requested lease not found"),
            (EtcdError::LeaseExists, Code::FailedPrecondition, "etcdserver: lease already exists"),
            (EtcdError::LeaseTtlTooLarge, Code::OutOfRange, "etcdserver: too large lease TTL"),
            (EtcdError::MemberExists, Code::FailedPrecondition, "etcdserver: member ID already exist"),
            (EtcdError::PeerUrlExists, Code::FailedPrecondition, "etcdserver: Peer URLs already exists"),
            (EtcdError::MemberNotFound, Code::NotFound, "etcdserver: member not found"),
            (
                EtcdError::MemberNotLearner,
                Code::FailedPrecondition,
                "etcdserver: can only promote a learner member",
            ),
            (EtcdError::BadLeaderTransferee, Code::FailedPrecondition, "etcdserver: bad leader transferee"),
            (
                EtcdError::AuthNotEnabled,
                Code::FailedPrecondition,
                "etcdserver: authentication is not enabled",
            ),
            (EtcdError::UserNotFound, Code::FailedPrecondition, "etcdserver: user name not found"),
            (EtcdError::RoleNotFound, Code::FailedPrecondition, "etcdserver: role name not found"),
            (EtcdError::NoLeader, Code::Unavailable, "etcdserver: no leader"),
            (EtcdError::NotLeader, Code::FailedPrecondition, "etcdserver: not leader"),
            (EtcdError::Stopped, Code::Unavailable, "etcdserver: server stopped"),
            (EtcdError::Timeout, Code::Unavailable, "etcdserver: request timed out"),
        ];
        for (err, code, msg) in table {
            let status = Status::from(err.clone());
            assert_eq!(status.code(), *code, "{err:?}");
            assert_eq!(status.message(), *msg, "{err:?}");
        }
    }

    #[test]
    fn mvcc_errors_keep_their_text_with_etcds_prefix() {
        let cases = [
            MvccError::Compacted { compacted: 3 },
            MvccError::FutureRev { current: 3 },
            MvccError::NoSpace,
            MvccError::EmptyKey,
            MvccError::DuplicateKey,
            MvccError::TooManyOps,
            MvccError::KeyNotFound,
            MvccError::ValueProvided,
            MvccError::LeaseProvided,
            MvccError::LeaseNotFound,
        ];
        for e in cases {
            let expected = format!("etcdserver: {e}");
            assert_eq!(EtcdError::from(e).to_string(), expected);
        }
        let poisoned = EtcdError::from(MvccError::Poisoned);
        assert_eq!(poisoned.code(), Code::Unknown);
    }

    #[test]
    fn apply_errors_map_by_kind() {
        let err = |kind: ApplyErrorKind| ApplyError { kind: kind as i32, message: "m".into() };
        assert_eq!(EtcdError::from(&err(ApplyErrorKind::Compacted)), EtcdError::Compacted);
        assert_eq!(EtcdError::from(&err(ApplyErrorKind::LeaseExists)), EtcdError::LeaseExists);
        assert_eq!(EtcdError::from(&err(ApplyErrorKind::LeaseTtlTooLarge)), EtcdError::LeaseTtlTooLarge);
        assert_eq!(EtcdError::from(&err(ApplyErrorKind::Storage)), EtcdError::Unknown("m".into()));
        let unknown_kind = ApplyError { kind: 999, message: "x".into() };
        assert_eq!(EtcdError::from(&unknown_kind), EtcdError::Unknown("x".into()));
    }

    #[test]
    fn backend_errors_map_to_etcds_member_errors() {
        assert_eq!(EtcdError::from(BackendError::NoLeader), EtcdError::NoLeader);
        assert_eq!(EtcdError::from(BackendError::Stopped), EtcdError::Stopped);
        assert_eq!(EtcdError::from(BackendError::Timeout), EtcdError::Timeout);
        assert_eq!(EtcdError::from(BackendError::NotLeader), EtcdError::NotLeader);
        assert_eq!(EtcdError::from(BackendError::LeaseNotFound), EtcdError::LeaseNotFound);
        let s = Status::from(BackendError::Internal("disk on fire".into()));
        assert_eq!((s.code(), s.message()), (Code::Unknown, "disk on fire"));
    }
}
