//! keelson-apiserver: the etcd v3 gRPC services (tonic) that make a Keelson
//! member look like etcd to `etcdctl`, the Go client and the `etcd-client`
//! crate; later also the Kubernetes REST API (axum).
//!
//! It owns the client-facing protocol: request checks as etcd's
//! `v3rpc/key.go` makes them, the response header on every answer, the
//! translation of every error to etcd's gRPC code and message (in one
//! place, `errors.rs`), streaming (Watch, LeaseKeepAlive, Snapshot,
//! RangeStream), the `hasleader` check and the request size limit. It holds
//! no state of its own: writes go through [`Backend::propose`] (raft), reads
//! through [`Backend::read_barrier`] then the local MVCC store, watches
//! through the member's watch hub.
//!
//! It must not touch RocksDB or raft directly, only through [`Backend`]; and
//! once the Kubernetes API lands here, nothing in it may bypass
//! authentication, authorization or admission.
//!
//! Read first: `backend.rs` (the contract with the member), `errors.rs`
//! (every error etcd can answer), `server.rs` (how the services are
//! mounted), then `kv.rs` and `watch.rs`.

mod auth;
mod authority;
mod backend;
mod cluster;
mod coalesce;
mod config;
mod context;
mod errors;
pub mod http;
pub mod kube;
mod kv;
mod leader_monitor;
mod lease;
mod maintenance;
pub mod node_backend;
pub mod serve;
mod server;
mod watch;

#[cfg(test)]
mod etcdctl_tests;
#[cfg(test)]
mod testing;

pub use auth::AuthService;
pub use backend::{Backend, BackendError, BoxFuture, MemberInfo, MemberStatus, RaftCounters, SnapshotReader};
pub use cluster::ClusterService;
pub use config::{GRPC_OVERHEAD_BYTES, GrpcConfig, GrpcConfigError};
pub use errors::EtcdError;
pub use kv::KvService;
pub use lease::{LeaseService, MAX_LEASE_TTL};
pub use maintenance::{MaintenanceService, SERVER_VERSION, STORAGE_VERSION};
pub use server::routes;
pub use watch::WatchService;
