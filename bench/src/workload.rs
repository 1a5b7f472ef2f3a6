//! The workloads `keelson bench compare` runs, by name, and how each one is
//! prepared (untimed) and driven against a cluster.

use std::sync::Arc;

use indicatif::ProgressBar;
use serde::Serialize;

use crate::k8s::{self, K8sConfig};
use crate::kv::{self, KeySpace, RangeConfig, Span};
use crate::lease;
use crate::load::{self, Conns, LoadConfig, Outcome};
use crate::txn::{self, TxnConfig};
use crate::watch_load::{self, WatchConfig};
use anyhow::bail;

/// A workload, named as on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// `benchmark put`: single-key puts.
    Put,
    /// `benchmark range --consistency l`: linearizable Ranges (one key, or
    /// the span of --range-key).
    RangeL,
    /// `benchmark range --consistency s`: serializable Ranges.
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

    /// `range-l` or `range-s`, the workloads the range flags shape.
    pub fn is_range(self) -> bool {
        matches!(self, Workload::RangeL | Workload::RangeS)
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

/// The load's command-line flags, shared by `keelson bench compare` and
/// `keelson bench run`: etcd `benchmark`'s names where they exist.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// gRPC connections, shared by the clients round-robin.
    #[arg(long, default_value_t = 8)]
    pub conns: usize,
    /// Operations per measured phase (but k8s: --k8s-total). Default 30000
    /// (1000 with --quick).
    #[arg(long)]
    pub total: Option<u64>,
    /// Key size in bytes.
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    pub val_size: usize,
    /// Distinct keys written and read. Default 10000 (1000 with --quick).
    #[arg(long)]
    pub key_space_size: Option<u64>,
    /// Use keys in order rather than at random.
    #[arg(long)]
    pub sequential_keys: bool,
    /// Operations per second across all clients (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Puts per Txn in txn-put.
    #[arg(long, default_value_t = 1)]
    pub txn_ops: usize,
    /// Reads per write in txn-mixed.
    #[arg(long, default_value_t = 1.0)]
    pub rw_ratio: f64,
    /// Watch streams in the watch workloads. Default 10 (2 with --quick).
    #[arg(long)]
    pub streams: Option<usize>,
    /// Watchers per stream in the watch workloads. Default 10 (5 with
    /// --quick).
    #[arg(long)]
    pub watch_per_stream: Option<usize>,
    /// Puts the watchers see in the watch workload. Default 5000 (100 with
    /// --quick).
    #[arg(long)]
    pub put_total: Option<u64>,
    /// Puts per second in watch-latency.
    #[arg(long, default_value_t = 200)]
    pub put_rate: u64,
    /// Puts in watch-latency. Default: 5 seconds' worth at --put-rate
    /// (half a second's with --quick).
    #[arg(long)]
    pub latency_put_total: Option<u64>,
    /// Operations of the Kubernetes mix per phase. Default 10000 (the
    /// --total with --quick).
    #[arg(long)]
    pub k8s_total: Option<u64>,
    /// Objects in the Kubernetes mix. Default 1000 (100 with --quick).
    #[arg(long)]
    pub k8s_objects: Option<u64>,
    /// Bytes per object in the Kubernetes mix.
    #[arg(long, default_value_t = 1024)]
    pub k8s_object_size: usize,
    /// Page size of the Kubernetes mix's lists.
    #[arg(long, default_value_t = 500)]
    pub k8s_list_limit: i64,
    /// Informer watches open during the Kubernetes mix.
    #[arg(long, default_value_t = 4)]
    pub k8s_informers: usize,
    /// Range workloads: read this key (or the span from it, with
    /// --range-end or --prefix) in every request, as etcd's `benchmark range
    /// key [end-range]` does, instead of one key of the key space per
    /// request. Keys are the key space's: decimal, zero-padded to
    /// --key-size, e.g. 00000000 to 00009999.
    #[arg(long, help_heading = "Range workloads")]
    pub range_key: Option<String>,
    /// End of the span from --range-key (exclusive).
    #[arg(long, requires = "range_key", conflicts_with = "prefix", help_heading = "Range workloads")]
    pub range_end: Option<String>,
    /// Read every key starting with --range-key.
    #[arg(long, requires = "range_key", help_heading = "Range workloads")]
    pub prefix: bool,
    /// Range workloads: return keys without values.
    #[arg(long, help_heading = "Range workloads")]
    pub keys_only: bool,
    /// Range workloads: return only the number of matching keys.
    #[arg(long, help_heading = "Range workloads")]
    pub count_only: bool,
    /// Range workloads: at most this many keys per response (0: no limit).
    #[arg(long, default_value_t = 0, help_heading = "Range workloads")]
    pub limit: i64,
    /// Workloads to run, in order (default: all): put, range-l, range-s,
    /// txn-put, txn-mixed, watch, watch-latency, lease-keepalive, k8s.
    #[arg(long, value_delimiter = ',')]
    pub workloads: Vec<Workload>,
}

impl LoadArgs {
    /// The settings and workloads these flags ask for, with the defaults
    /// applied (smaller ones for a `quick_run`).
    pub fn settings(&self, quick_run: bool) -> anyhow::Result<(Settings, Vec<Workload>)> {
        if self.clients == 0 || self.conns == 0 {
            bail!("--clients and --conns must be at least 1");
        }
        if self.limit < 0 {
            bail!("--limit must not be negative");
        }
        let workloads =
            if self.workloads.is_empty() { Workload::DEFAULT.to_vec() } else { self.workloads.clone() };
        let quick = |q: u64, full: u64| if quick_run { q } else { full };
        let settings = Settings {
            load: LoadConfig {
                clients: self.clients,
                conns: self.conns,
                total: self.total.unwrap_or(quick(1_000, 30_000)),
                key_size: self.key_size,
                val_size: self.val_size,
                key_space_size: self.key_space_size.unwrap_or(quick(1_000, 10_000)),
                sequential_keys: self.sequential_keys,
                rate: self.rate,
            },
            range: RangeConfig {
                span: self.range_key.as_ref().map(|k| Span {
                    key: k.clone().into_bytes(),
                    end: self.range_end.clone().map(String::into_bytes),
                    prefix: self.prefix,
                }),
                keys_only: self.keys_only,
                count_only: self.count_only,
                limit: self.limit,
            },
            txn: TxnConfig { txn_ops: self.txn_ops.max(1), rw_ratio: self.rw_ratio },
            watch: WatchConfig {
                streams: self.streams.unwrap_or(quick(2, 10) as usize).max(1),
                watch_per_stream: self.watch_per_stream.unwrap_or(quick(5, 10) as usize).max(1),
                put_total: self.put_total.unwrap_or(quick(100, 5_000)),
                put_rate: self.put_rate.max(1),
                latency_put_total: self
                    .latency_put_total
                    .unwrap_or(if quick_run { self.put_rate / 2 } else { self.put_rate * 5 })
                    .max(1),
            },
            k8s: K8sConfig {
                total: self.k8s_total.unwrap_or(if quick_run { self.total.unwrap_or(1_000) } else { 10_000 }),
                objects: self.k8s_objects.unwrap_or(quick(100, 1_000)).max(1),
                object_size: self.k8s_object_size,
                list_limit: self.k8s_list_limit.max(1),
                informers: self.k8s_informers,
            },
        };
        Ok((settings, workloads))
    }
}

/// Every workload's settings.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub load: LoadConfig,
    pub range: RangeConfig,
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
        Workload::RangeL => drive(kv::range(cfg, &s.range, false)).await,
        Workload::RangeS => drive(kv::range(cfg, &s.range, true)).await,
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
