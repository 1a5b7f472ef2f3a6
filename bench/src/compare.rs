//! `keelson bench compare`: the same workloads against a real etcd cluster
//! and a Keelson cluster of the same size on this machine, alternating
//! etcd, Keelson, etcd, Keelson, … so drift in a shared machine's speed
//! falls on both, and one table of medians with the Keelson/etcd ratio.
//!
//! Each repeat starts fresh clusters (one system at a time, so the idle one
//! costs nothing), runs every workload against them in order, then stops
//! them and removes their data. Read [`run`] first, then `cluster.rs`
//! (processes) and `load.rs` (the client side).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::cluster::{Binaries, Cluster, System};
use crate::load::{Conns, Outcome};
use crate::procstat;
use crate::workload::{self, LoadArgs, Settings, Target, Workload};

/// The command line of `keelson bench compare`, with etcd `benchmark`'s
/// flag names where they exist.
#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// Members per cluster: 1 or 3.
    #[arg(long, default_value_t = 1, value_parser = parse_members)]
    pub members: usize,
    /// A smoke run: one repeat of small phases.
    #[arg(long)]
    pub quick: bool,
    /// Repeats of each system (alternating); medians are reported.
    /// Default 3 (1 with --quick).
    #[arg(long)]
    pub repeats: Option<usize>,
    /// The load: etcd `benchmark`'s flags and the workloads.
    #[command(flatten)]
    pub load: LoadArgs,
    /// Also write the full report (every sample) as JSON to this file ("-"
    /// for stdout).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Directory under which the servers' data dirs are made (the disk
    /// being measured). Default: the current directory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The etcd server binary (default: `etcd` on PATH).
    #[arg(long)]
    pub etcd: Option<PathBuf>,
    /// Also sweep client counts and draw throughput and p99 against them,
    /// for both systems, as an SVG at this path.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Client counts of the sweep behind --plot.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64,256")]
    pub sweep_clients: Vec<usize>,
    /// Only redraw --plot from this report (saved with --json from a run
    /// with --plot), measuring nothing.
    #[arg(long, requires = "plot")]
    pub replot: Option<PathBuf>,
    /// Workloads of the sweep behind --plot.
    #[arg(long, value_delimiter = ',', default_value = "put,range-l")]
    pub sweep_workloads: Vec<Workload>,
    /// The keelson binary whose `server` runs the Keelson members (default:
    /// this one), e.g. to compare another build.
    #[arg(long)]
    pub keelson: Option<PathBuf>,
}

fn parse_members(s: &str) -> Result<usize, String> {
    match s {
        "1" => Ok(1),
        "3" => Ok(3),
        _ => Err("must be 1 or 3".into()),
    }
}

/// A fully resolved plan: defaults applied, binaries found.
#[derive(Debug, Clone)]
pub struct Plan {
    pub members: usize,
    pub repeats: usize,
    pub settings: Settings,
    pub workloads: Vec<Workload>,
    pub data_dir: PathBuf,
    pub bins: Binaries,
    /// Health wait per cluster start.
    pub start_timeout: Duration,
    /// Where to draw the sweep, if anywhere.
    pub plot: Option<PathBuf>,
    pub sweep_clients: Vec<usize>,
    pub sweep_workloads: Vec<Workload>,
}

impl CompareArgs {
    /// Applies the defaults; `this_binary` runs the Keelson members unless
    /// `--keelson` names another.
    pub fn plan(&self, this_binary: PathBuf) -> anyhow::Result<Plan> {
        let keelson = self.keelson.clone().unwrap_or(this_binary);
        let etcd = match &self.etcd {
            Some(p) => p.clone(),
            None => Binaries::find_etcd()?,
        };
        let data_dir = match &self.data_dir {
            Some(d) => d.clone(),
            None => std::env::current_dir().context("current dir")?,
        };
        let (settings, workloads) = self.load.settings(self.quick)?;
        let quick = |q: u64, full: u64| if self.quick { q } else { full };
        Ok(Plan {
            members: self.members,
            repeats: self.repeats.unwrap_or(quick(1, 3) as usize).max(1),
            settings,
            workloads,
            data_dir,
            bins: Binaries { etcd, keelson },
            start_timeout: Duration::from_secs(30),
            plot: self.plot.clone(),
            sweep_clients: self.sweep_clients.clone(),
            sweep_workloads: self.sweep_workloads.clone(),
        })
    }
}

/// The figures of one measured phase (or their medians).
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Figures {
    /// Successful operations per second.
    pub ops_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Successful operations.
    pub ok: u64,
    /// Failed operations (summed over repeats in a median).
    pub errors: u64,
    pub elapsed_s: f64,
    /// CPU seconds the server processes used during the phase (all members).
    pub server_cpu_s: f64,
    /// Server CPU microseconds per successful operation: the figure least
    /// bent by the client sharing the machine.
    pub server_cpu_us_per_op: f64,
    /// Peak resident memory of the server processes during the phase, in
    /// MiB (summed over members).
    pub server_peak_rss_mib: f64,
    /// CPU seconds this benchmark client used during the phase.
    pub client_cpu_s: f64,
}

impl Figures {
    fn from_outcome(o: &Outcome) -> Figures {
        let ms = |q: f64| o.latency_us.value_at_quantile(q) as f64 / 1000.0;
        let measured = o.ok > 0;
        Figures {
            ops_per_s: o.throughput(),
            p50_ms: if measured { ms(0.50) } else { 0.0 },
            p90_ms: if measured { ms(0.90) } else { 0.0 },
            p99_ms: if measured { ms(0.99) } else { 0.0 },
            p999_ms: if measured { ms(0.999) } else { 0.0 },
            max_ms: if measured { o.latency_us.max() as f64 / 1000.0 } else { 0.0 },
            ok: o.ok,
            errors: o.errors,
            elapsed_s: o.elapsed.as_secs_f64(),
            ..Figures::default()
        }
    }

    /// Field-wise medians; errors are summed so none hides.
    fn median(samples: &[Figures]) -> Figures {
        let med = |f: fn(&Figures) -> f64| {
            let mut v: Vec<f64> = samples.iter().map(f).collect();
            crate::report::median(&mut v)
        };
        Figures {
            ops_per_s: med(|s| s.ops_per_s),
            p50_ms: med(|s| s.p50_ms),
            p90_ms: med(|s| s.p90_ms),
            p99_ms: med(|s| s.p99_ms),
            p999_ms: med(|s| s.p999_ms),
            max_ms: med(|s| s.max_ms),
            ok: med(|s| s.ok as f64) as u64,
            errors: samples.iter().map(|s| s.errors).sum(),
            elapsed_s: med(|s| s.elapsed_s),
            server_cpu_s: med(|s| s.server_cpu_s),
            server_cpu_us_per_op: med(|s| s.server_cpu_us_per_op),
            server_peak_rss_mib: med(|s| s.server_peak_rss_mib),
            client_cpu_s: med(|s| s.client_cpu_s),
        }
    }
}

/// Keelson's figure divided by etcd's, for each figure.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub ops_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub server_cpu_s: f64,
    pub server_cpu_us_per_op: f64,
    pub server_peak_rss_mib: f64,
}

impl Ratio {
    fn of(k: &Figures, e: &Figures) -> Ratio {
        let r = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        Ratio {
            ops_per_s: r(k.ops_per_s, e.ops_per_s),
            p50_ms: r(k.p50_ms, e.p50_ms),
            p90_ms: r(k.p90_ms, e.p90_ms),
            p99_ms: r(k.p99_ms, e.p99_ms),
            p999_ms: r(k.p999_ms, e.p999_ms),
            max_ms: r(k.max_ms, e.max_ms),
            server_cpu_s: r(k.server_cpu_s, e.server_cpu_s),
            server_cpu_us_per_op: r(k.server_cpu_us_per_op, e.server_cpu_us_per_op),
            server_peak_rss_mib: r(k.server_peak_rss_mib, e.server_peak_rss_mib),
        }
    }
}

/// One system's result for one workload.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum SystemResult {
    Measured {
        median: Figures,
        samples: Vec<Figures>,
        first_error: Option<String>,
    },
    /// The system cannot run this configuration yet (e.g. Keelson with 3
    /// members before HA lands).
    NotSupported {
        reason: String,
    },
}

impl SystemResult {
    fn median(&self) -> Option<&Figures> {
        match self {
            SystemResult::Measured { median, .. } => Some(median),
            SystemResult::NotSupported { .. } => None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkloadResult {
    pub workload: Workload,
    pub etcd: SystemResult,
    pub keelson: SystemResult,
    /// Keelson / etcd, where both were measured.
    pub ratio: Option<Ratio>,
}

/// The machine the run was on: the figures mean little without it.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub memory_gib: f64,
    /// Load average (1 min) when the run started: noise from other work.
    pub loadavg_at_start: String,
    pub data_dir: PathBuf,
    /// File system of the data dir (tmpfs makes fsync free: not a fair disk).
    pub data_dir_fs: String,
}

impl Machine {
    fn probe(data_dir: &Path) -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name").map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let memory_gib = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kib| kib / 1024.0 / 1024.0)
            .unwrap_or(0.0);
        Machine {
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            cpu_model,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            memory_gib: (memory_gib * 10.0).round() / 10.0,
            loadavg_at_start: read("/proc/loadavg").split_whitespace().next().unwrap_or("?").to_string(),
            data_dir: data_dir.to_path_buf(),
            data_dir_fs: fs_type(data_dir),
        }
    }
}

/// The file system type of the mount holding `dir`, from /proc/mounts.
fn fs_type(dir: &Path) -> String {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, mount, fs) = (f.next()?, f.next()?, f.next()?);
            dir.starts_with(mount).then(|| (mount.len(), fs.to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, fs)| fs)
        .unwrap_or_else(|| "unknown".into())
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub members: usize,
    pub repeats: usize,
    pub settings: Settings,
    pub etcd_version: String,
    pub keelson_version: String,
    pub machine: Machine,
    pub wall_s: f64,
    pub results: Vec<WorkloadResult>,
    /// The client-count sweep behind the plot (empty without --plot).
    pub sweep: Vec<crate::sweep::SweepPoint>,
    pub plot: Option<PathBuf>,
    pub notes: Vec<String>,
}

/// Runs the comparison; Ctrl-C or SIGTERM stops it, and the servers and
/// their data dirs go with it (dropping the run drops its [`Cluster`]s).
pub async fn run(plan: &Plan) -> anyhow::Result<Report> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("install SIGTERM handler")?;
    tokio::select! {
        r = run_uninterrupted(plan) => r,
        _ = tokio::signal::ctrl_c() => bail!("interrupted: servers stopped, data dirs removed"),
        _ = term.recv() => bail!("terminated: servers stopped, data dirs removed"),
    }
}

async fn run_uninterrupted(plan: &Plan) -> anyhow::Result<Report> {
    let started = Instant::now();
    let machine = Machine::probe(&plan.data_dir);
    let mut notes = Vec::new();
    if machine.data_dir_fs == "tmpfs" || machine.data_dir_fs == "ramfs" {
        let n = format!(
            "data dir {} is on {}: fsync costs nothing there, so write figures do not reflect a disk; \
             pass --data-dir on a real disk",
            plan.data_dir.display(),
            machine.data_dir_fs
        );
        eprintln!("warning: {n}");
        notes.push(n);
    }
    let etcd_version = plan.bins.etcd_version();
    let keelson_version = env!("CARGO_PKG_VERSION").to_string();
    let cfg = &plan.settings.load;

    let mp = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let phases_per_cluster = plan.workloads.len() as u64;
    let overall = mp.add(ProgressBar::new(plan.repeats as u64 * 2 * phases_per_cluster));
    overall.set_style(
        ProgressStyle::with_template("{prefix:>8} [{elapsed_precise}] {wide_bar} {pos}/{len} phases")
            .expect("valid template"),
    );
    overall.set_prefix("compare");
    say(
        &mp,
        format!(
            "bench compare: {} member(s) each, {} clients over {} conns, {}-byte values, {} ops per phase, \
         {} repeat(s), etcd {etcd_version} vs keelson {keelson_version}; {} cpus, load {} at start",
            plan.members,
            cfg.clients,
            cfg.conns,
            cfg.val_size,
            cfg.total,
            plan.repeats,
            machine.cpus,
            machine.loadavg_at_start
        ),
    );

    let mut samples: HashMap<(System, Workload), Vec<Figures>> = HashMap::new();
    let mut first_errors: HashMap<(System, Workload), String> = HashMap::new();
    let mut unsupported: Option<String> = None;
    for rep in 0..plan.repeats {
        for system in [System::Etcd, System::Keelson] {
            if system == System::Keelson && unsupported.is_some() {
                overall.inc(phases_per_cluster);
                continue;
            }
            say(
                &mp,
                format!(
                    "{} repeat {}/{}: starting {} member(s)",
                    system.name(),
                    rep + 1,
                    plan.repeats,
                    plan.members
                ),
            );
            let mut cluster =
                match Cluster::start(system, &plan.bins, plan.members, &plan.data_dir, plan.start_timeout)
                    .await
                {
                    Ok(c) => c,
                    Err(e) if system == System::Keelson && format!("{e:#}").contains("not supported") => {
                        let reason =
                            format!("{}-member Keelson not supported yet ({})", plan.members, why(&e));
                        say(&mp, format!("keelson: {reason}"));
                        unsupported = Some(reason);
                        overall.inc(phases_per_cluster);
                        continue;
                    }
                    Err(e) => return Err(e),
                };
            let conns = Conns::connect(&cluster.endpoints(), cfg.conns).await?;
            let mut target = Target::new(&conns, &plan.settings);
            for &w in &plan.workloads {
                let (fig, first_error) = measure(system.name(), &cluster.pids(), w, &mut target, &mp).await?;
                cluster.check_running()?;
                say(
                    &mp,
                    format!(
                        "  {:<8} {:<10} {:>9.0} ops/s  p50 {:>7.2} ms  p99 {:>7.2} ms  errors {}  server cpu {:.2} s",
                        system.name(),
                        w.label(),
                        fig.ops_per_s,
                        fig.p50_ms,
                        fig.p99_ms,
                        fig.errors,
                        fig.server_cpu_s
                    ),
                );
                if let Some(e) = first_error {
                    first_errors.entry((system, w)).or_insert(e);
                }
                samples.entry((system, w)).or_default().push(fig);
                overall.inc(1);
            }
            drop(conns);
            cluster.stop();
        }
    }
    overall.finish_and_clear();
    let mut sweep = Vec::new();
    if let Some(path) = &plan.plot {
        let mut systems = vec![System::Etcd];
        if unsupported.is_none() {
            systems.push(System::Keelson);
        }
        sweep = crate::sweep::run(plan, &systems, &plan.sweep_clients, &plan.sweep_workloads, &mp).await?;
        let title = format!(
            "etcd {etcd_version} vs keelson {keelson_version}: {} member(s), {}-byte values, {} cpus",
            plan.members, cfg.val_size, machine.cpus
        );
        crate::plot::draw(&sweep, &title, path)?;
        say(&mp, format!("plot written to {}", path.display()));
    }
    if PEAK_RESET_REFUSED.load(Ordering::Relaxed) {
        notes.push("the kernel refused to reset peak RSS: peaks cover each server's whole life".into());
    }
    let result_of = |system: System, w: Workload| -> SystemResult {
        match (system, &unsupported) {
            (System::Keelson, Some(reason)) => SystemResult::NotSupported { reason: reason.clone() },
            _ => {
                let s = samples.get(&(system, w)).cloned().unwrap_or_default();
                SystemResult::Measured {
                    median: Figures::median(&s),
                    samples: s,
                    first_error: first_errors.get(&(system, w)).cloned(),
                }
            }
        }
    };
    let results = plan
        .workloads
        .iter()
        .map(|&w| {
            let etcd = result_of(System::Etcd, w);
            let keelson = result_of(System::Keelson, w);
            let ratio = match (keelson.median(), etcd.median()) {
                (Some(k), Some(e)) => Some(Ratio::of(k, e)),
                _ => None,
            };
            WorkloadResult { workload: w, etcd, keelson, ratio }
        })
        .collect();
    Ok(Report {
        members: plan.members,
        repeats: plan.repeats,
        settings: plan.settings.clone(),
        etcd_version,
        keelson_version,
        machine,
        wall_s: started.elapsed().as_secs_f64(),
        results,
        sweep,
        plot: plan.plot.clone(),
        notes,
    })
}

/// Set when the kernel refuses to reset a server's peak RSS.
static PEAK_RESET_REFUSED: AtomicBool = AtomicBool::new(false);

/// Prints a line above the progress bars.
pub(crate) fn say(mp: &MultiProgress, line: String) {
    mp.suspend(|| eprintln!("{line}"));
}

/// Prepares `w` (untimed), then runs one measured phase of it against
/// `target`, with the CPU and peak memory of the server processes `pids`
/// over the phase. Returns the figures and the first error seen.
pub(crate) async fn measure(
    system: &str,
    pids: &[u32],
    w: Workload,
    target: &mut Target<'_>,
    mp: &MultiProgress,
) -> anyhow::Result<(Figures, Option<String>)> {
    let bar = phase_bar(mp, format!("{system} prepare"));
    let prepared = workload::prepare(w, target, &bar).await?;
    bar.finish_and_clear();
    if let Some(out) = prepared
        && out.errors > 0
    {
        bail!(
            "{system}: preparing {} failed {} times: {}",
            w.label(),
            out.errors,
            out.first_error.unwrap_or_default()
        );
    }
    let bar = phase_bar(mp, format!("{system} {}", w.label()));
    for &pid in pids {
        if !procstat::reset_peak_rss(pid) {
            PEAK_RESET_REFUSED.store(true, Ordering::Relaxed);
        }
    }
    let cpu0 = cpu_of(pids);
    let client0 = procstat::cpu_seconds(std::process::id()).unwrap_or(0.0);
    let out = workload::run(w, target, &bar).await?;
    bar.finish_and_clear();
    let mut fig = Figures::from_outcome(&out);
    fig.server_cpu_s = cpu_of(pids) - cpu0;
    fig.server_cpu_us_per_op = if fig.ok > 0 { fig.server_cpu_s * 1e6 / fig.ok as f64 } else { 0.0 };
    fig.client_cpu_s = procstat::cpu_seconds(std::process::id()).unwrap_or(0.0) - client0;
    fig.server_peak_rss_mib =
        pids.iter().filter_map(|&p| procstat::peak_rss_bytes(p).ok()).sum::<u64>() as f64 / 1048576.0;
    Ok((fig, out.first_error))
}

pub(crate) fn phase_bar(mp: &MultiProgress, prefix: String) -> ProgressBar {
    let bar = mp.add(ProgressBar::new(0));
    bar.set_style(
        ProgressStyle::with_template("{prefix:>16} {wide_bar} {pos}/{len} ops {per_sec}")
            .expect("valid template"),
    );
    bar.set_prefix(prefix);
    bar
}

fn cpu_of(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|&p| procstat::cpu_seconds(p).ok()).sum()
}

/// The line of a failed start that says why: the server's own `Error:`
/// line if its log has one, else the last line.
fn why(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Error:"))
        .or_else(|| text.lines().rev().find(|l| !l.trim().is_empty()))
        .unwrap_or_default();
    line.trim().to_string()
}

impl Report {
    /// The table people read: per workload a row for etcd, one for Keelson
    /// and one for the ratio.
    pub fn table(&self) -> String {
        let mut out = format!(
            "keelson bench compare: {} member(s), {} clients / {} conns, {}-byte values, {}-byte keys, \
             {} ops/phase, key space {}, medians of {} repeat(s)\n\
             etcd {} vs keelson {}; {} cpus ({}), {:.0} GiB, data on {} ({}), load {} at start, wall {:.0} s\n\n",
            self.members,
            self.settings.load.clients,
            self.settings.load.conns,
            self.settings.load.val_size,
            self.settings.load.key_size,
            self.settings.load.total,
            self.settings.load.key_space_size,
            self.repeats,
            self.etcd_version,
            self.keelson_version,
            self.machine.cpus,
            self.machine.cpu_model,
            self.machine.memory_gib,
            self.machine.data_dir_fs,
            self.machine.data_dir.display(),
            self.machine.loadavg_at_start,
            self.wall_s,
        );
        out.push_str(&format!(
            "{:<10} {:<8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>9} {:>8}\n",
            "workload",
            "system",
            "ops/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p999 ms",
            "max ms",
            "errors",
            "cpu us/op",
            "RSS MiB"
        ));
        for r in &self.results {
            for (name, res) in [("etcd", &r.etcd), ("keelson", &r.keelson)] {
                let label = if name == "etcd" { r.workload_label() } else { "" };
                match res {
                    SystemResult::Measured { median: f, .. } => out.push_str(&format!(
                        "{:<10} {:<8} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>6} {:>9.1} {:>8.1}\n",
                        label,
                        name,
                        f.ops_per_s,
                        f.p50_ms,
                        f.p90_ms,
                        f.p99_ms,
                        f.p999_ms,
                        f.max_ms,
                        f.errors,
                        f.server_cpu_us_per_op,
                        f.server_peak_rss_mib
                    )),
                    SystemResult::NotSupported { .. } => {
                        out.push_str(&format!("{label:<10} {name:<8} not supported yet (see the note below)\n"))
                    }
                }
            }
            if let Some(x) = &r.ratio {
                let f = |v: f64| if v.is_finite() { format!("{v:.2}x") } else { "-".into() };
                out.push_str(&format!(
                    "{:<10} {:<8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>9} {:>8}\n",
                    "",
                    "ratio",
                    f(x.ops_per_s),
                    f(x.p50_ms),
                    f(x.p90_ms),
                    f(x.p99_ms),
                    f(x.p999_ms),
                    f(x.max_ms),
                    "",
                    f(x.server_cpu_us_per_op),
                    f(x.server_peak_rss_mib)
                ));
            }
        }
        out.push_str(
            "\nratio = keelson / etcd (ops/s: higher is better; latency, cpu and RSS: lower is better).\n\
             ops: requests (put, range), Txns (txn-*), events delivered to all watchers (watch, watch-lat: \
             latency from put sent to event received), keep-alive round trips (lease-ka), API operations (k8s).\n\
             cpu us/op: server CPU per operation; RSS MiB: servers' peak resident memory during the phase; \
             errors: summed over repeats, every other figure is a median.\n",
        );
        let unsupported = self.results.iter().find_map(|r| match &r.keelson {
            SystemResult::NotSupported { reason } => Some(reason),
            SystemResult::Measured { .. } => None,
        });
        if let Some(reason) = unsupported {
            out.push_str(&format!("note: keelson: {reason}\n"));
        }
        let ranges = self.results.iter().any(|r| r.workload.is_range());
        if let Some(d) = self.settings.range.describe(&self.settings.load).filter(|_| ranges) {
            out.push_str(&format!("note: {d}\n"));
        }
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        out
    }
}

impl WorkloadResult {
    fn workload_label(&self) -> &'static str {
        self.workload.label()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fig(ops: f64, p99: f64, errors: u64) -> Figures {
        Figures { ops_per_s: ops, p99_ms: p99, errors, ..Figures::default() }
    }

    #[test]
    fn medians_are_fieldwise_and_errors_add_up() {
        let m = Figures::median(&[fig(10.0, 9.0, 1), fig(30.0, 1.0, 0), fig(20.0, 5.0, 2)]);
        assert_eq!(m.ops_per_s, 20.0);
        assert_eq!(m.p99_ms, 5.0);
        assert_eq!(m.errors, 3);
    }

    #[test]
    fn a_failed_start_is_explained_by_the_servers_error_line() {
        let e = anyhow::anyhow!(
            "keelson member m1 exited (exit status: 1); end of its log:\nError: no\n\nStack backtrace:\n  0: x"
        );
        assert_eq!(why(&e), "no");
        assert_eq!(why(&anyhow::anyhow!("a\nb\n")), "b");
    }

    #[test]
    fn members_must_be_one_or_three() {
        assert_eq!(parse_members("3"), Ok(3));
        assert!(parse_members("2").is_err());
    }

    #[test]
    fn fs_type_of_root_is_known() {
        assert_ne!(fs_type(Path::new("/")), "unknown");
    }

    /// The `keelson` binary beside this test's directory (`scripts/test`
    /// builds it before the tests run).
    fn keelson_bin() -> PathBuf {
        let exe = std::env::current_exe().unwrap();
        let bin = exe.parent().and_then(Path::parent).unwrap().join("keelson");
        assert!(bin.exists(), "{} not built: run scripts/test (it builds the binary first)", bin.display());
        bin
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        let mut found: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        // Server processes still running with a data dir under `dir`.
        let needle = dir.display().to_string();
        for p in std::fs::read_dir("/proc").unwrap().flatten() {
            if let Ok(cmd) = std::fs::read(p.path().join("cmdline"))
                && String::from_utf8_lossy(&cmd).contains(&needle)
            {
                found.push(format!("process {}", p.file_name().to_string_lossy()));
            }
        }
        found
    }

    /// A `--quick` run against real etcd and keelson processes: every
    /// operation succeeds and nothing is left behind. Speeds are not
    /// checked (never assert timings).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn quick_compare_with_real_etcd_and_keelson_processes() {
        let base = tempfile::tempdir().unwrap();
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            args: CompareArgs,
        }
        let dir = base.path().display().to_string();
        let argv = [
            "compare",
            "--quick",
            "--clients",
            "8",
            "--conns",
            "2",
            "--total",
            "300",
            "--key-space-size",
            "200",
            "--put-total",
            "20",
            "--latency-put-total",
            "20",
            "--k8s-objects",
            "50",
            "--data-dir",
            &dir,
        ];
        let args = <Wrap as clap::Parser>::parse_from(argv).args;
        let plan = args.plan(keelson_bin()).unwrap();
        let report = run(&plan).await.unwrap();
        assert_eq!(report.results.len(), Workload::DEFAULT.len());
        for r in &report.results {
            for res in [&r.etcd, &r.keelson] {
                let SystemResult::Measured { median, samples, first_error } = res else {
                    panic!("{:?} not measured: {res:?}", r.workload);
                };
                assert_eq!(samples.len(), 1);
                let ops = match r.workload {
                    // Events: puts times watchers (2 streams of 5 with --quick).
                    Workload::Watch | Workload::WatchLatency => 20 * 10,
                    _ => 300,
                };
                assert_eq!((median.ok, median.errors), (ops, 0), "{:?}: {first_error:?}", r.workload);
                assert!(median.p50_ms > 0.0 && median.max_ms >= median.p99_ms);
            }
            assert!(r.ratio.is_some());
        }
        let table = report.table();
        assert!(table.contains("range l") && table.contains("ratio"), "{table}");
        serde_json::to_string(&report).unwrap();
        assert!(leftovers(base.path()).is_empty(), "left behind: {:?}", leftovers(base.path()));
    }

    /// The range flags (a span, --keys-only, --count-only, --limit) run as
    /// compare workloads on both systems without an error, and the table
    /// says what the ranges read.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn range_flags_run_on_both_systems() {
        let base = tempfile::tempdir().unwrap();
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            args: CompareArgs,
        }
        let dir = base.path().display().to_string();
        for flags in [
            &["--range-key", "00000010", "--range-end", "00000060", "--keys-only", "--limit", "20"][..],
            &["--range-key", "0000000", "--prefix", "--count-only"][..],
            &["--keys-only"][..],
        ] {
            let argv = ["compare", "--quick", "--total", "200", "--key-space-size", "100"];
            let args = <Wrap as clap::Parser>::parse_from(
                argv.iter().chain(&["--workloads", "range-l,range-s", "--data-dir", &dir]).chain(flags),
            )
            .args;
            let report = run(&args.plan(keelson_bin()).unwrap()).await.unwrap();
            for r in &report.results {
                for res in [&r.etcd, &r.keelson] {
                    let SystemResult::Measured { median, first_error, .. } = res else { panic!("{res:?}") };
                    assert_eq!((median.ok, median.errors), (200, 0), "{flags:?}: {first_error:?}");
                }
            }
            let table = report.table();
            assert!(table.contains("note: range: "), "{table}");
        }
        let describe = |flags: &[&str]| {
            let argv = ["compare", "--quick", "--key-space-size", "100", "--workloads", "range-l"];
            let args = <Wrap as clap::Parser>::parse_from(argv.iter().chain(flags)).args;
            let (settings, _) = args.load.settings(true).unwrap();
            settings.range.describe(&settings.load)
        };
        assert_eq!(
            describe(&["--range-key", "0000001", "--prefix", "--count-only"]).unwrap(),
            r#"range: every key with prefix "0000001" (10 of the 100 keys written), count only"#
        );
        assert!(<Wrap as clap::Parser>::try_parse_from(["compare", "--range-end", "9"]).is_err());
        assert!(
            <Wrap as clap::Parser>::try_parse_from([
                "compare",
                "--range-key",
                "0",
                "--range-end",
                "9",
                "--prefix"
            ])
            .is_err()
        );
    }

    /// `--members 3`: a real 3-member etcd is measured; Keelson is measured
    /// too once it runs 3 members, and until then gets a "not supported
    /// yet" row rather than failing the run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_members_run_etcd_and_explain_keelson() {
        let base = tempfile::tempdir().unwrap();
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            args: CompareArgs,
        }
        let dir = base.path().display().to_string();
        let argv = ["compare", "--quick", "--members", "3", "--total", "200", "--workloads", "put,range-l"];
        let args = <Wrap as clap::Parser>::parse_from(argv.iter().copied().chain(["--data-dir", &dir])).args;
        let report = run(&args.plan(keelson_bin()).unwrap()).await.unwrap();
        for r in &report.results {
            let SystemResult::Measured { median, first_error, .. } = &r.etcd else {
                panic!("etcd not measured")
            };
            assert_eq!((median.ok, median.errors), (200, 0), "{first_error:?}");
            match &r.keelson {
                SystemResult::NotSupported { reason } => {
                    assert!(reason.contains("not supported yet"), "{reason}")
                }
                SystemResult::Measured { median, .. } => assert_eq!(median.errors, 0),
            }
        }
        assert!(leftovers(base.path()).is_empty(), "left behind: {:?}", leftovers(base.path()));
    }

    /// Ctrl-C (SIGINT) in the middle of a run stops both servers and
    /// removes their data dirs.
    #[test]
    fn interrupting_a_run_leaves_no_processes_or_dirs() {
        let base = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new(keelson_bin())
            .args(["bench", "compare", "--quick", "--total", "10000000", "--data-dir"])
            .arg(base.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait until etcd is up and being loaded.
        let deadline = Instant::now() + Duration::from_secs(60);
        let started = || {
            std::fs::read_dir(base.path())
                .unwrap()
                .flatten()
                .any(|e| e.path().join("m1.etcd/member").exists())
        };
        while !started() {
            assert!(Instant::now() < deadline, "etcd never started");
            assert!(child.try_wait().unwrap().is_none(), "bench exited early");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(500));
        let ok = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "bench did not stop after SIGINT");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(!status.success(), "an interrupted run must not report success");
        assert!(leftovers(base.path()).is_empty(), "left behind: {:?}", leftovers(base.path()));
    }
}
