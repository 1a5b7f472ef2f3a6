//! The workloads `keelson bench compare` runs, by name, and how each one is
//! driven against a cluster.

use std::sync::Arc;

use indicatif::ProgressBar;
use serde::Serialize;

use crate::kv::{self, KeySpace};
use crate::load::{self, Conns, LoadConfig, Outcome};

/// A workload, named as on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// `benchmark put`: single-key puts.
    Put,
    /// `benchmark range --consistency l`: linearizable single-key gets.
    RangeL,
    /// `benchmark range --consistency s`: serializable single-key gets.
    RangeS,
}

impl Workload {
    /// The default set, in the order they run on each cluster.
    pub const DEFAULT: &'static [Workload] = &[Workload::Put, Workload::RangeL, Workload::RangeS];

    pub fn label(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::RangeL => "range l",
            Workload::RangeS => "range s",
        }
    }

    /// Whether the workload reads the key space, which is then filled first
    /// (untimed) so every read finds its key.
    pub fn reads_keys(self) -> bool {
        matches!(self, Workload::RangeL | Workload::RangeS)
    }
}

/// What a workload runs against: one cluster's connections and the state
/// the workloads share on it.
pub struct Target<'a> {
    pub conns: &'a Conns,
    pub cfg: &'a LoadConfig,
    pub keys: Arc<KeySpace>,
}

/// Fills the keys of the key space that no earlier phase wrote. Returns how
/// many it wrote.
pub async fn fill(t: &Target<'_>, progress: &ProgressBar) -> anyhow::Result<Outcome> {
    let missing = Arc::new(t.keys.missing());
    let n = missing.len() as u64;
    progress.set_length(n);
    let op = kv::fill(t.cfg, missing, t.keys.clone());
    load::drive(t.conns, t.cfg.clients, n, 0, progress, op).await
}

/// Runs one measured phase of `w`.
pub async fn run(w: Workload, t: &Target<'_>, progress: &ProgressBar) -> anyhow::Result<Outcome> {
    let cfg = t.cfg;
    progress.set_length(cfg.total);
    let op = match w {
        Workload::Put => kv::put(cfg, t.keys.clone()),
        Workload::RangeL => kv::range(cfg, false),
        Workload::RangeS => kv::range(cfg, true),
    };
    load::drive(t.conns, cfg.clients, cfg.total, cfg.rate, progress, op).await
}
