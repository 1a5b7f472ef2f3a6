//! The workloads `keelson bench compare` runs, by name, and how each one is
//! prepared (untimed) and driven against a cluster.

use std::sync::Arc;

use indicatif::ProgressBar;
use serde::Serialize;

use crate::k8s::{self, K8sConfig};
use crate::kv::{self, KeySpace};
use crate::lease;
use crate::load::{self, Conns, LoadConfig, Outcome};
use crate::txn::{self, TxnConfig};
use crate::watch_load::{self, WatchConfig};

/// A workload, named as on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// `benchmark put`: single-key puts.
    Put,
    /// `benchmark range --consistency l`: linearizable single-key gets.
    RangeL,
    /// `benchmark range --consistency s`: serializable single-key gets.
    RangeS,
    /// `benchmark txn-put`: Txns of `--txn-ops` puts.
    TxnPut,
    /// `benchmark txn-mixed`: Txns of one get or one put (`--rw-ratio`).
    TxnMixed,
    /// Watch fan-out: events delivered per second to every watcher while
    /// writers put flat out.
    Watch,
    /// Watch delivery latency with puts at `--put-rate`.
    WatchLatency,
    /// `benchmark lease-keepalive`: keep-alive round trips.
    LeaseKeepalive,
    /// A Kubernetes-shaped mix: optimistic updates, gets, create/delete
    /// churn and paginated lists, with informer watches open.
    K8s,
}

impl Workload {
    /// The default set, in the order they run on each cluster.
    pub const DEFAULT: &'static [Workload] = &[
        Workload::Put,
        Workload::RangeL,
        Workload::RangeS,
        Workload::TxnPut,
        Workload::TxnMixed,
        Workload::Watch,
        Workload::WatchLatency,
        Workload::LeaseKeepalive,
        Workload::K8s,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::RangeL => "range l",
            Workload::RangeS => "range s",
            Workload::TxnPut => "txn-put",
            Workload::TxnMixed => "txn-mixed",
            Workload::Watch => "watch",
            Workload::WatchLatency => "watch-lat",
            Workload::LeaseKeepalive => "lease-ka",
            Workload::K8s => "k8s",
        }
    }

    /// What one operation of the workload is, for the table's legend.
    pub fn unit(self) -> &'static str {
        match self {
            Workload::Watch | Workload::WatchLatency => "events delivered (put sent -> event received)",
            Workload::LeaseKeepalive => "keep-alive round trips",
            Workload::K8s => "API operations (an update is a get plus a Txn)",
            Workload::TxnPut | Workload::TxnMixed => "Txns",
            Workload::Put | Workload::RangeL | Workload::RangeS => "requests",
        }
    }
}

/// Every workload's settings.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub load: LoadConfig,
    pub txn: TxnConfig,
    pub watch: WatchConfig,
    pub k8s: K8sConfig,
}

/// One cluster's connections and the state its workloads share.
pub struct Target<'a> {
    pub conns: &'a Conns,
    pub settings: &'a Settings,
    pub keys: Arc<KeySpace>,
    pub k8s_ready: bool,
}

impl<'a> Target<'a> {
    pub fn new(conns: &'a Conns, settings: &'a Settings) -> Target<'a> {
        Target { conns, settings, keys: KeySpace::new(settings.load.key_space_size), k8s_ready: false }
    }
}

/// Untimed setup before `w`'s measured phase: reads get every key of the
/// key space filled; the Kubernetes mix gets its objects. Returns what the
/// setup did, or None when nothing was needed.
pub async fn prepare(
    w: Workload,
    t: &mut Target<'_>,
    progress: &ProgressBar,
) -> anyhow::Result<Option<Outcome>> {
    let cfg = &t.settings.load;
    match w {
        Workload::RangeL | Workload::RangeS | Workload::TxnMixed => {
            let missing = Arc::new(t.keys.missing());
            if missing.is_empty() {
                return Ok(None);
            }
            let n = missing.len() as u64;
            progress.set_length(n);
            let op = kv::fill(cfg, missing, t.keys.clone());
            Ok(Some(load::drive(t.conns, cfg.clients, n, 0, progress, op).await?))
        }
        Workload::K8s if !t.k8s_ready => {
            t.k8s_ready = true;
            Ok(Some(k8s::prepare(t.conns, cfg, &t.settings.k8s, progress).await?))
        }
        _ => Ok(None),
    }
}

/// Runs one measured phase of `w`.
pub async fn run(w: Workload, t: &Target<'_>, progress: &ProgressBar) -> anyhow::Result<Outcome> {
    let s = t.settings;
    let cfg = &s.load;
    progress.set_length(cfg.total);
    let drive = |op| load::drive(t.conns, cfg.clients, cfg.total, cfg.rate, progress, op);
    match w {
        Workload::Put => drive(kv::put(cfg, t.keys.clone())).await,
        Workload::RangeL => drive(kv::range(cfg, false)).await,
        Workload::RangeS => drive(kv::range(cfg, true)).await,
        Workload::TxnPut => drive(txn::put(cfg, &s.txn, t.keys.clone())).await,
        Workload::TxnMixed => drive(txn::mixed(cfg, &s.txn, t.keys.clone())).await,
        Workload::Watch => watch_load::run(t.conns, cfg, &s.watch, false, "/bench-watch/", progress).await,
        Workload::WatchLatency => {
            watch_load::run(t.conns, cfg, &s.watch, true, "/bench-watch-latency/", progress).await
        }
        Workload::LeaseKeepalive => {
            lease::keepalive(t.conns, cfg.clients, cfg.total, cfg.rate, progress).await
        }
        Workload::K8s => k8s::run(t.conns, cfg, &s.k8s, progress).await,
    }
}
