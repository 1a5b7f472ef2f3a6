//! Integration tests of the WAL log store: openraft's conformance suite,
//! crash recovery at every byte of the tail, group commit, and reopening.

mod crash;
mod fixture;
mod group_commit;
mod reopen;
mod suite;
