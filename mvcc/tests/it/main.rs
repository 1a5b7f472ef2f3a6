//! keelson-mvcc's integration suite: one binary, a module per concern.

mod model;
mod semantics;
