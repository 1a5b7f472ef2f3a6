//! The `keelson` binary: argument parsing and wiring only.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

mod server;

#[derive(Parser)]
#[command(name = "keelson", version, about = "An etcd-compatible store fused with a Kubernetes API server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run Keelson, the embedded default: one member serving the
    /// Kubernetes API on https://127.0.0.1:6443 (and etcd's API on
    /// 127.0.0.1:2379), data in ./keelson-data. Writes an admin kubeconfig.
    Up(UpArgs),
    /// Run one member of an etcd-compatible cluster (etcd's flags).
    Server(Box<server::ServerArgs>),
    /// Run the benchmark suite.
    Bench {
        #[command(subcommand)]
        suite: BenchSuite,
    },
}

#[derive(clap::Args)]
struct UpArgs {
    /// Where the data (and admin.kubeconfig) live.
    #[arg(long, default_value = "keelson-data")]
    data_dir: PathBuf,
    /// Where the Kubernetes API is served.
    #[arg(long, default_value = "https://127.0.0.1:6443")]
    listen_api_urls: String,
    /// Where etcd's gRPC API is served.
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    listen_client_urls: String,
    /// The member's peer URL (nothing connects to it in a one-member
    /// cluster, but raft's membership names it).
    #[arg(long, default_value = "http://127.0.0.1:2380")]
    listen_peer_urls: String,
    /// Logging level: debug, info, warn, error.
    #[arg(long, default_value = "warn")]
    log_level: String,
}

#[derive(Parser)]
struct ServerOnly {
    #[command(flatten)]
    args: server::ServerArgs,
}

impl UpArgs {
    fn server_args(&self) -> server::ServerArgs {
        let d = self.data_dir.display().to_string();
        let argv = [
            "keelson-up",
            "--name=default",
            &format!("--data-dir={d}"),
            &format!("--listen-client-urls={}", self.listen_client_urls),
            &format!("--advertise-client-urls={}", self.listen_client_urls),
            &format!("--listen-peer-urls={}", self.listen_peer_urls),
            &format!("--initial-advertise-peer-urls={}", self.listen_peer_urls),
            &format!("--initial-cluster=default={}", self.listen_peer_urls),
            &format!("--listen-api-urls={}", self.listen_api_urls),
            &format!("--log-level={}", self.log_level),
            "--auto-compaction-mode=periodic",
            "--auto-compaction-retention=5m",
        ];
        ServerOnly::parse_from(argv).args
    }
}

#[derive(Subcommand)]
enum BenchSuite {
    /// Storage core: MVCC applies and reads, watch fan-out and memory, WAL
    /// group commit. Prints a table, and JSON with --json.
    Storage {
        /// Small counts, for a smoke run.
        #[arg(long)]
        quick: bool,
        /// Also write the rows as JSON to this file ("-" for stdout).
        #[arg(long)]
        json: Option<PathBuf>,
        /// Directory for the benchmark's data (the disk being measured).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Only these suites (mvcc, watch, wal); all when omitted.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Side by side with real etcd: starts an etcd cluster and a Keelson
    /// cluster of the same size on this machine, runs the same workloads
    /// against each (alternating), and prints medians and Keelson/etcd
    /// ratios. Needs `etcd` on PATH (apt-get install etcd-server).
    Compare(Box<keelson_bench::compare::CompareArgs>),
    /// The compare workloads against endpoints already serving (etcd,
    /// Keelson or anything speaking etcd's v3 API), as etcd's benchmark
    /// tool does. Prints a table, and JSON with --json.
    Run(Box<keelson_bench::run::RunArgs>),
    /// The Kubernetes API (issue 7): REST creates against KV puts, LIST
    /// of 10,000 and 100,000 pods (time and server memory), and 1,000
    /// label-selected watches (delivery latency), against a `keelson
    /// server --listen-api-urls` started here. Prints a table, and JSON
    /// with --json.
    Kube(Box<keelson_bench::kube_api::KubeArgs>),
}

fn init_logging(default_level: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_level.into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// A failpoint build takes its failpoints from `FAILPOINTS` (e.g.
/// `wal-before-fsync=1%panic`), and any panic ends the whole process as a
/// crash would (a `panic` failpoint in a worker thread must not leave a
/// half-dead member running).
#[cfg(feature = "failpoints")]
fn setup_failpoints() -> fail::FailScenario<'static> {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        std::process::abort();
    }));
    fail::FailScenario::setup()
}

fn main() -> anyhow::Result<()> {
    #[cfg(feature = "failpoints")]
    let _failpoints = setup_failpoints();
    let cli = Cli::parse();
    match cli.command {
        Command::Up(up) => {
            let args = up.server_args();
            let level = server::parse_log_level(&args.log_level)?;
            init_logging(&format!("{level},openraft=error"));
            let rt =
                tokio::runtime::Builder::new_multi_thread().enable_all().build().context("start runtime")?;
            rt.block_on(server::run_member(args, true))
        }
        Command::Server(args) => {
            let level = server::parse_log_level(&args.log_level)?;
            // openraft narrates elections at warn level; keep it for debug.
            let raft = if level == "debug" { "debug" } else { "error" };
            init_logging(&format!("{level},openraft={raft}"));
            let rt =
                tokio::runtime::Builder::new_multi_thread().enable_all().build().context("start runtime")?;
            rt.block_on(server::run(*args))
        }
        Command::Bench { suite: BenchSuite::Storage { quick, json, data_dir, only } } => {
            init_logging("warn");
            let dir = match data_dir {
                Some(d) => d,
                None => std::env::current_dir().context("current dir")?,
            };
            let rows = keelson_bench::storage::run(&keelson_bench::storage::Options { quick, dir, only })?;
            print!("{}", keelson_bench::report::table(&rows));
            if let Some(path) = json {
                write_json(&path, serde_json::to_string_pretty(&rows)?)?;
            }
            Ok(())
        }
        Command::Bench { suite: BenchSuite::Compare(args) } => {
            init_logging("warn");
            if let (Some(from), Some(out)) = (&args.replot, &args.plot) {
                return keelson_bench::plot::redraw(from, out);
            }
            let plan = args.plan(std::env::current_exe().context("find this binary")?)?;
            let rt =
                tokio::runtime::Builder::new_multi_thread().enable_all().build().context("start runtime")?;
            let report = rt.block_on(keelson_bench::compare::run(&plan))?;
            print!("{}", report.table());
            if let Some(path) = &args.json {
                write_json(path, serde_json::to_string_pretty(&report)?)?;
            }
            Ok(())
        }
        Command::Bench { suite: BenchSuite::Run(args) } => {
            init_logging("warn");
            let rt =
                tokio::runtime::Builder::new_multi_thread().enable_all().build().context("start runtime")?;
            let report = rt.block_on(keelson_bench::run::run(&args))?;
            print!("{}", report.table());
            if let Some(path) = &args.json {
                write_json(path, serde_json::to_string_pretty(&report)?)?;
            }
            Ok(())
        }
        Command::Bench { suite: BenchSuite::Kube(args) } => {
            init_logging("warn");
            let plan = args.plan(std::env::current_exe().context("find this binary")?)?;
            let rt =
                tokio::runtime::Builder::new_multi_thread().enable_all().build().context("start runtime")?;
            let report = rt.block_on(keelson_bench::kube_api::run(&plan))?;
            print!("{}", report.table());
            if let Some(path) = &args.json {
                write_json(path, serde_json::to_string_pretty(&report)?)?;
            }
            Ok(())
        }
    }
}

/// Writes JSON `text` to `path`, or to stdout for "-".
fn write_json(path: &std::path::Path, text: String) -> anyhow::Result<()> {
    if path.as_os_str() == "-" {
        println!("{text}");
    } else {
        std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}
