//! keelson-raftstore: the glue between openraft and Keelson's storage.
//!
//! This crate owns the raft side of a member: the openraft type configuration
//! ([`types`]), the write-ahead log that stores the raft log, the vote and the
//! committed log id ([`wal`]), and, as it grows, the state machine over
//! `keelson-mvcc`, the peer transport, membership, snapshots, leases and read
//! index.
//!
//! It must not know about Kubernetes: a log entry is an opaque, encoded
//! request ([`types::Command`]); what it means is the state machine's and the
//! API server's business.
//!
//! Read first: `src/types.rs` (the type configuration), then
//! `src/wal/mod.rs` (the on-disk layout) and `src/wal/log_store.rs` (the
//! `RaftLogStorage` contract and what each call waits for).

/// The openraft this crate is built on, for crates that name its types.
pub use openraft;

pub mod auto_compact;
pub mod corruption;
mod forward;
pub mod ids;
pub mod lessor;
pub mod membership;
pub mod node;
mod proposer;
mod read_index;
pub mod snapshot;
pub mod state_machine;
pub mod transport;
pub mod types;
pub mod wal;

pub use membership::MemberChange;
pub use node::{ClusterState, Node, NodeConfig, NodeStatus, ProposeError, StartError};
pub use types::TypeConfig;
pub use wal::WalConfig;
pub use wal::WalError;
pub use wal::WalLogStore;
pub use wal::WalStats;
