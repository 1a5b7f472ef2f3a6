//! The benchmark suite. Each module runs one fixed workload and returns
//! [`report::Row`]s; the `keelson bench` CLI prints them as a table and JSON.
//! Nothing here asserts a timing: figures are for reading side by side.
//!
//! `keelson bench compare` (`compare.rs`) runs real etcd and Keelson
//! servers (`cluster.rs`) under the same client load (`load.rs`, workloads
//! in `workload.rs`); `keelson bench run` (`run.rs`) runs the same
//! workloads against endpoints already serving; `keelson bench storage`
//! (`storage.rs`) measures the storage crates in process; `keelson bench
//! kube` (`kube_api.rs`) measures the Kubernetes API of a real server.

pub mod cluster;
pub mod compare;
pub mod k8s;
pub mod kube_api;
pub mod kv;
pub mod lease;
pub mod load;
pub mod mvcc;
pub mod plot;
pub mod procstat;
pub mod report;
pub mod run;
pub mod storage;
pub mod sweep;
pub mod txn;
pub mod wal;
pub mod watch;
pub mod watch_load;
pub mod workload;
