//! The peer transport: raft RPCs between members over tonic gRPC, on the
//! members' peer URLs (`keelsonraftpeerpb.RaftPeer`, `proto/raftpeer.proto`).
//!
//! - Client side: [`GrpcNetwork`], openraft's network factory. One
//!   long-lived, lazily connecting HTTP/2 channel per peer (never one per
//!   RPC); [`GrpcPeer`] sends openraft's RPCs over it, with timeouts from
//!   openraft's `RPCOption`, and maps failures to openraft's `Unreachable`,
//!   `NetworkError` and `Timeout` (`status.rs`).
//! - Server side: [`peer_routes`] / [`PeerService`] feed incoming RPCs into
//!   the local `Raft`.
//! - Replication is pipelined: openraft's `stream_append` is one
//!   bidirectional gRPC stream per replication session, answered in order
//!   by the follower's `Raft::stream_append`. Heartbeats are one-request
//!   streams on the same channel.
//! - Snapshots stream in pieces (1 MiB by default) under HTTP/2 flow
//!   control, then a CRC; the receiver writes them to a file and hands
//!   openraft a [`SnapshotFile`](crate::snapshot::SnapshotFile).
//! - Every request carries the cluster id and both member ids: a member of
//!   another cluster, or a peer URL pointing at the wrong member, is refused
//!   with `FAILED_PRECONDITION` and a message that says so.
//!
//! Wire encoding (`codec.rs`): protobuf messages for log ids, votes and
//! entries (a normal entry's command bytes as they are); JSON for the rare
//! and small (membership, snapshot meta, a transfer-leader refusal).
//!
//! Read first: `peer.rs` (what each openraft call does on the wire), then
//! `service.rs`.

mod codec;
mod config;
mod network;
mod peer;
mod service;
mod status;

pub use codec::CodecError;
pub use config::TransportConfig;
pub use network::GrpcNetwork;
pub use peer::GrpcPeer;
pub use service::{PeerService, peer_routes};
pub(crate) use status::LocalIdentity;
