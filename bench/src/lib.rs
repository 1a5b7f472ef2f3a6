//! The benchmark suite. Each module runs one fixed workload and returns
//! [`report::Row`]s; the `keelson bench` CLI prints them as a table and JSON.
//! Nothing here asserts a timing: figures are for reading side by side.

pub mod mvcc;
pub mod report;
pub mod storage;
pub mod wal;
pub mod watch;
