//! `keelson bench run`: the compare workloads against endpoints that are
//! already serving (any etcd v3 server: etcd, Keelson, a proxy), one pass,
//! one table, as etcd's `benchmark` tool does. Server CPU and memory are
//! reported when `--pids` names the server processes.

use std::path::PathBuf;

use anyhow::Context;
use indicatif::{MultiProgress, ProgressDrawTarget};
use serde::Serialize;

use crate::compare::{self, Figures};
use crate::load::Conns;
use crate::workload::{LoadArgs, Settings, Target, Workload};

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Client endpoints, comma-separated (etcd's --endpoints).
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    pub endpoints: Vec<String>,
    /// Small phases, for a smoke run.
    #[arg(long)]
    pub quick: bool,
    /// Server process ids to charge CPU and peak memory to (same machine).
    #[arg(long, value_delimiter = ',')]
    pub pids: Vec<u32>,
    /// Also write the report as JSON to this file ("-" for stdout).
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub load: LoadArgs,
}

/// One workload's figures.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub workload: Workload,
    pub figures: Figures,
    pub first_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub endpoints: Vec<String>,
    pub settings: Settings,
    pub results: Vec<RunResult>,
}

pub async fn run(args: &RunArgs) -> anyhow::Result<RunReport> {
    let (settings, workloads) = args.load.settings(args.quick)?;
    let mp = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let conns = Conns::connect(&args.endpoints, settings.load.conns)
        .await
        .with_context(|| format!("connect to {}", args.endpoints.join(",")))?;
    let mut target = Target::new(&conns, &settings);
    let mut results = Vec::new();
    for w in workloads {
        let (figures, first_error) = compare::measure("server", &args.pids, w, &mut target, &mp).await?;
        compare::say(
            &mp,
            format!(
                "  {:<10} {:>9.0} ops/s  p99 {:>7.2} ms  errors {}",
                w.label(),
                figures.ops_per_s,
                figures.p99_ms,
                figures.errors
            ),
        );
        results.push(RunResult { workload: w, figures, first_error });
    }
    Ok(RunReport { endpoints: args.endpoints.clone(), settings: settings.clone(), results })
}

impl RunReport {
    pub fn table(&self) -> String {
        let l = &self.settings.load;
        let mut out = format!(
            "keelson bench run: {} ({} clients / {} conns, {}-byte values, {} ops/phase)\n\n\
             {:<10} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>9} {:>8}\n",
            self.endpoints.join(","),
            l.clients,
            l.conns,
            l.val_size,
            l.total,
            "workload",
            "ops/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p999 ms",
            "max ms",
            "errors",
            "cpu us/op",
            "RSS MiB"
        );
        for r in &self.results {
            let f = &r.figures;
            out.push_str(&format!(
                "{:<10} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>6} {:>9.1} {:>8.1}\n",
                r.workload.label(),
                f.ops_per_s,
                f.p50_ms,
                f.p90_ms,
                f.p99_ms,
                f.p999_ms,
                f.max_ms,
                f.errors,
                f.server_cpu_us_per_op,
                f.server_peak_rss_mib
            ));
        }
        let ranges = self.results.iter().any(|r| r.workload.is_range());
        if let Some(d) = self.settings.range.describe(l).filter(|_| ranges) {
            out.push_str(&format!("note: {d}\n"));
        }
        for r in &self.results {
            if let Some(e) = &r.first_error {
                out.push_str(&format!("note: {}: first error: {e}\n", r.workload.label()));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{Binaries, Cluster, System};

    /// `run` against a real etcd started here: every operation succeeds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_against_a_running_etcd() {
        let base = tempfile::tempdir().unwrap();
        let bins = Binaries { etcd: Binaries::find_etcd().unwrap(), keelson: PathBuf::new() };
        let cluster = Cluster::start(System::Etcd, &bins, 1, base.path(), std::time::Duration::from_secs(30))
            .await
            .unwrap();
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            args: RunArgs,
        }
        let endpoint = cluster.endpoints()[0].clone();
        let pid = cluster.pids()[0].to_string();
        let argv = ["run", "--quick", "--total", "200", "--workloads", "put,range-l,lease-keepalive"];
        let args = <Wrap as clap::Parser>::parse_from(argv.iter().copied().chain([
            "--endpoints",
            &endpoint,
            "--pids",
            &pid,
        ]))
        .args;
        let report = run(&args).await.unwrap();
        assert_eq!(report.results.len(), 3);
        for r in &report.results {
            assert_eq!((r.figures.ok, r.figures.errors), (200, 0), "{:?}: {:?}", r.workload, r.first_error);
            assert!(r.figures.server_peak_rss_mib > 0.0);
        }
        assert!(report.table().contains("lease-ka"));
    }
}
