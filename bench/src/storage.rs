//! `keelson bench storage`: the storage-core suites in one run.

use std::path::PathBuf;

use crate::report::Row;

pub struct Options {
    /// Small counts, for a smoke run.
    pub quick: bool,
    /// Where benchmark data goes (the disk being measured).
    pub dir: PathBuf,
    /// Suites to run (empty = all).
    pub only: Vec<String>,
}

pub fn run(opts: &Options) -> anyhow::Result<Vec<Row>> {
    let wants = |s: &str| opts.only.is_empty() || opts.only.iter().any(|o| o == s);
    let mut rows = Vec::new();
    if wants("mvcc") {
        eprintln!("bench: mvcc ...");
        rows.extend(crate::mvcc::run(opts.quick, &opts.dir)?);
    }
    if wants("watch") {
        eprintln!("bench: watch ...");
        rows.extend(crate::watch::run(opts.quick)?);
    }
    if wants("wal") {
        eprintln!("bench: wal ...");
        rows.extend(crate::wal::run_in(opts.quick, &opts.dir)?);
    }
    Ok(rows)
}
