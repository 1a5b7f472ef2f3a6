//! `keelson server`: etcd's flags, checked and turned into a member's
//! configuration, then wired together — the raft node, the gRPC services
//! and `/health` + `/metrics` on the client URLs (and on
//! `--listen-metrics-urls`). Graceful shutdown on SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use keelson_apiserver::node_backend::NodeBackend;
use keelson_apiserver::serve;
use keelson_raftstore::{Node, NodeConfig};

/// etcd's flags, with etcd's names and defaults.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Human-readable name for this member.
    #[arg(long, default_value = "default")]
    pub name: String,
    /// Path to the data directory (default: "${name}.etcd").
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// URLs to listen on for client traffic.
    #[arg(long, default_value = "http://localhost:2379")]
    pub listen_client_urls: String,
    /// Client URLs of this member to advertise to the rest of the cluster.
    #[arg(long, default_value = "http://localhost:2379")]
    pub advertise_client_urls: String,
    /// URLs to listen on for peer traffic.
    #[arg(long, default_value = "http://localhost:2380")]
    pub listen_peer_urls: String,
    /// This member's peer URLs to advertise to the rest of the cluster.
    #[arg(long, default_value = "http://localhost:2380")]
    pub initial_advertise_peer_urls: String,
    /// Initial cluster configuration for bootstrapping: name=peer-url,...
    #[arg(long, default_value = "default=http://localhost:2380")]
    pub initial_cluster: String,
    /// Initial cluster state ('new' or 'existing').
    #[arg(long, value_enum, default_value_t = ClusterState::New)]
    pub initial_cluster_state: ClusterState,
    /// Initial cluster token for the cluster during bootstrap.
    #[arg(long, default_value = "etcd-cluster")]
    pub initial_cluster_token: String,
    /// Raise alarms when backend size exceeds the given quota (0 = 2 GiB).
    #[arg(long, default_value_t = 0)]
    pub quota_backend_bytes: u64,
    /// Maximum client request size in bytes the server will accept.
    #[arg(long, default_value_t = 1536 * 1024)]
    pub max_request_bytes: u64,
    /// Maximum number of operations permitted in a transaction.
    #[arg(long, default_value_t = 128)]
    pub max_txn_ops: u64,
    /// Interpret 'auto-compaction-retention' as 'periodic' (a duration) or
    /// 'revision' (a number of revisions).
    #[arg(long, value_enum, default_value_t = CompactionMode::Periodic)]
    pub auto_compaction_mode: CompactionMode,
    /// Auto compaction retention ('0' turns it off; periodic: hours or a
    /// duration such as '30m').
    #[arg(long, default_value = "0")]
    pub auto_compaction_retention: String,
    /// Number of committed transactions to trigger a snapshot to disk.
    #[arg(long, default_value_t = 100_000)]
    pub snapshot_count: u64,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, default_value_t = 1000)]
    pub election_timeout: u64,
    /// Additional URLs to listen on that respond to /metrics and /health.
    #[arg(long)]
    pub listen_metrics_urls: Option<String>,
    /// Check data corruption before serving any client traffic.
    #[arg(long, default_value_t = false)]
    pub experimental_initial_corrupt_check: bool,
    /// Duration of time between cluster corruption check passes ('0s' turns
    /// it off).
    #[arg(long, default_value = "0s")]
    pub experimental_corrupt_check_time: String,
    /// Logging level: debug, info, warn, error, panic or fatal.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// HTTPS URLs to serve the Kubernetes API on (none: not served).
    #[arg(long)]
    pub listen_api_urls: Option<String>,
    /// The API server's serving certificate (default: one issued by the
    /// cluster CA, kept in the store).
    #[arg(long)]
    pub tls_cert_file: Option<PathBuf>,
    /// The serving certificate's private key.
    #[arg(long)]
    pub tls_private_key_file: Option<PathBuf>,
    /// CA bundle that client certificates must chain to (default: the
    /// cluster CA).
    #[arg(long)]
    pub client_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClusterState {
    New,
    Existing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompactionMode {
    Periodic,
    Revision,
}

/// What the flags mean once checked.
#[derive(Debug)]
pub struct ServerPlan {
    pub node: NodeConfig,
    pub client_addrs: Vec<SocketAddr>,
    pub peer_addrs: Vec<SocketAddr>,
    pub metrics_addrs: Vec<SocketAddr>,
    pub max_request_bytes: usize,
    pub auto_compaction: Option<keelson_raftstore::auto_compact::Policy>,
    pub initial_corrupt_check: bool,
    pub corrupt_check_every: Option<Duration>,
    /// The Kubernetes API, when `--listen-api-urls` is given.
    pub api: Option<keelson_apiserver::kube::ApiConfig>,
}

impl ServerArgs {
    /// Checks the flags as etcd does and fails with etcd-like messages.
    pub fn plan(&self) -> anyhow::Result<ServerPlan> {
        if self.election_timeout < 5 * self.heartbeat_interval {
            bail!(
                "--election-timeout[{}ms] should be at least as 5 times as --heartbeat-interval[{}ms]",
                self.election_timeout,
                self.heartbeat_interval
            );
        }
        if self.heartbeat_interval == 0 {
            bail!("--heartbeat-interval must be greater than 0");
        }
        if self.election_timeout > 50_000 {
            bail!(
                "--election-timeout[{}ms] is too long, and should be set less than 50000ms",
                self.election_timeout
            );
        }
        if self.max_request_bytes == 0 {
            bail!("--max-request-bytes must be greater than 0");
        }
        if self.max_txn_ops == 0 {
            bail!("--max-txn-ops must be greater than 0");
        }
        parse_log_level(&self.log_level)?;
        let initial_cluster = parse_initial_cluster(&self.initial_cluster)?;
        let peer_urls = split_urls(&self.initial_advertise_peer_urls, "--initial-advertise-peer-urls")?;
        let client_urls = split_urls(&self.advertise_client_urls, "--advertise-client-urls")?;
        let Some((_, cluster_urls)) = initial_cluster.iter().find(|(n, _)| *n == self.name) else {
            bail!(
                "couldn't find local name {:?} in the initial cluster configuration {:?}",
                self.name,
                self.initial_cluster
            );
        };
        let mut a = cluster_urls.clone();
        let mut b = peer_urls.clone();
        a.sort();
        b.sort();
        if a != b {
            bail!(
                "--initial-cluster has {}={} but missing from --initial-advertise-peer-urls={}",
                self.name,
                cluster_urls.join(","),
                self.initial_advertise_peer_urls
            );
        }
        let mut seen = std::collections::BTreeMap::new();
        for (name, urls) in &initial_cluster {
            for u in urls {
                if let Some(other) = seen.insert(u.clone(), name.clone()) {
                    bail!("--initial-cluster has duplicate url {u:?} (members {other:?} and {name:?})");
                }
            }
        }
        let data_dir = self.data_dir.clone().unwrap_or_else(|| PathBuf::from(format!("{}.etcd", self.name)));
        let client_addrs = listen_addrs(&self.listen_client_urls, "--listen-client-urls")?;
        let peer_addrs = listen_addrs(&self.listen_peer_urls, "--listen-peer-urls")?;
        let metrics_addrs = match &self.listen_metrics_urls {
            Some(u) => listen_addrs(u, "--listen-metrics-urls")?,
            None => Vec::new(),
        };
        let auto_compaction = parse_retention(self.auto_compaction_mode, &self.auto_compaction_retention)?;
        let quota =
            if self.quota_backend_bytes == 0 { 2 * 1024 * 1024 * 1024 } else { self.quota_backend_bytes };
        let node = NodeConfig {
            name: self.name.clone(),
            data_dir,
            initial_cluster,
            initial_cluster_token: self.initial_cluster_token.clone(),
            initial_cluster_state: match self.initial_cluster_state {
                ClusterState::New => keelson_raftstore::ClusterState::New,
                ClusterState::Existing => keelson_raftstore::ClusterState::Existing,
            },
            client_urls,
            peer_urls,
            heartbeat_interval: Duration::from_millis(self.heartbeat_interval),
            election_timeout: Duration::from_millis(self.election_timeout),
            snapshot_count: self.snapshot_count.max(1),
            mvcc: keelson_mvcc::Config {
                quota_bytes: quota,
                max_txn_ops: self.max_txn_ops as usize,
                ..Default::default()
            },
            watch: keelson_watch::WatchConfig {
                max_request_bytes: self.max_request_bytes as usize,
                ..Default::default()
            },
            transport: Default::default(),
        };
        let corrupt_check = parse_duration(&self.experimental_corrupt_check_time).with_context(|| {
            format!(
                "--experimental-corrupt-check-time={:?}: not a duration",
                self.experimental_corrupt_check_time
            )
        })?;
        let api = match &self.listen_api_urls {
            None => {
                if self.tls_cert_file.is_some()
                    || self.tls_private_key_file.is_some()
                    || self.client_ca_file.is_some()
                {
                    bail!(
                        "--tls-cert-file, --tls-private-key-file and --client-ca-file need --listen-api-urls"
                    );
                }
                None
            }
            Some(urls) => {
                let mut listen = Vec::new();
                let mut hosts = Vec::new();
                for u in split_urls(urls, "--listen-api-urls")? {
                    let (scheme, host, port) = parse_url(&u)?;
                    if scheme != "https" {
                        bail!("--listen-api-urls: {u:?}: the Kubernetes API is served over https only");
                    }
                    hosts.push(host);
                    listen.extend(listen_addrs(
                        &format!("http://{}:{port}", hosts.last().map_or("", |h| h.as_str())),
                        "--listen-api-urls",
                    )?);
                }
                if self.tls_cert_file.is_some() != self.tls_private_key_file.is_some() {
                    bail!("--tls-cert-file and --tls-private-key-file must be given together");
                }
                if self.tls_cert_file.is_some() && self.client_ca_file.is_none() {
                    bail!(
                        "--tls-cert-file needs --client-ca-file (the CA client certificates are checked against)"
                    );
                }
                Some(keelson_apiserver::kube::ApiConfig {
                    listen,
                    hosts,
                    data_dir: node.data_dir.clone(),
                    tls_cert_file: self.tls_cert_file.clone(),
                    tls_private_key_file: self.tls_private_key_file.clone(),
                    client_ca_file: self.client_ca_file.clone(),
                })
            }
        };
        Ok(ServerPlan {
            api,
            initial_corrupt_check: self.experimental_initial_corrupt_check,
            corrupt_check_every: (!corrupt_check.is_zero()).then_some(corrupt_check),
            node,
            client_addrs,
            peer_addrs,
            metrics_addrs,
            max_request_bytes: self.max_request_bytes as usize,
            auto_compaction,
        })
    }
}

/// The tracing filter for an etcd `--log-level`.
pub fn parse_log_level(level: &str) -> anyhow::Result<&'static str> {
    Ok(match level {
        "debug" => "debug",
        "info" => "info",
        "warn" => "warn",
        "error" | "dpanic" | "panic" | "fatal" => "error",
        other => bail!("unknown log level {other:?} (use debug, info, warn, error, panic or fatal)"),
    })
}

fn split_urls(s: &str, flag: &str) -> anyhow::Result<Vec<String>> {
    let urls: Vec<String> = s.split(',').map(str::trim).filter(|u| !u.is_empty()).map(String::from).collect();
    if urls.is_empty() {
        bail!("{flag} must not be empty");
    }
    for u in &urls {
        parse_url(u).with_context(|| format!("{flag}: {u:?}"))?;
    }
    Ok(urls)
}

/// (scheme, host, port) of an `http://host:port` URL.
fn parse_url(u: &str) -> anyhow::Result<(String, String, u16)> {
    let (scheme, rest) = u.split_once("://").context("URL must have a scheme (http:// or https://)")?;
    if scheme != "http" && scheme != "https" && scheme != "unix" && scheme != "unixs" {
        bail!("URL scheme must be http, https, unix or unixs");
    }
    let hostport = rest.trim_end_matches('/');
    let (host, port) =
        hostport.rsplit_once(':').context("URL address does not have the form \"host:port\"")?;
    let port: u16 = port.parse().context("URL port is not a number")?;
    Ok((scheme.to_string(), host.trim_matches(['[', ']']).to_string(), port))
}

fn listen_addrs(s: &str, flag: &str) -> anyhow::Result<Vec<SocketAddr>> {
    let mut out = Vec::new();
    for u in split_urls(s, flag)? {
        let (scheme, host, port) = parse_url(&u)?;
        if scheme != "http" {
            bail!("{flag}: {u:?}: only http:// is supported by this build (TLS arrives with the API server)");
        }
        let host = if host == "localhost" { "127.0.0.1".to_string() } else { host };
        let ip: std::net::IpAddr = host
            .parse()
            .with_context(|| format!("{flag}: {u:?}: listen address must be an IP or localhost"))?;
        out.push(SocketAddr::new(ip, port));
    }
    Ok(out)
}

fn parse_initial_cluster(s: &str) -> anyhow::Result<Vec<(String, Vec<String>)>> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, url) = part
            .split_once('=')
            .with_context(|| format!("--initial-cluster: {part:?} is not of the form name=url"))?;
        parse_url(url).with_context(|| format!("--initial-cluster: {url:?}"))?;
        match out.iter_mut().find(|(n, _)| n == name) {
            Some((_, urls)) => urls.push(url.to_string()),
            None => out.push((name.to_string(), vec![url.to_string()])),
        }
    }
    if out.is_empty() {
        bail!("--initial-cluster must not be empty");
    }
    Ok(out)
}

fn parse_retention(
    mode: CompactionMode,
    s: &str,
) -> anyhow::Result<Option<keelson_raftstore::auto_compact::Policy>> {
    use keelson_raftstore::auto_compact::Policy;
    let s = s.trim();
    if s.is_empty() || s == "0" {
        return Ok(None);
    }
    Ok(Some(match mode {
        CompactionMode::Revision => {
            let n: i64 = s
                .parse()
                .with_context(|| format!("--auto-compaction-retention={s:?}: not a revision count"))?;
            if n <= 0 {
                return Ok(None);
            }
            Policy::Revisions(n)
        }
        CompactionMode::Periodic => {
            let d = if let Ok(hours) = s.parse::<u64>() {
                Duration::from_secs(hours * 3600)
            } else {
                parse_duration(s)
                    .with_context(|| format!("--auto-compaction-retention={s:?}: not a duration"))?
            };
            if d.is_zero() {
                return Ok(None);
            }
            Policy::Periodic(d)
        }
    }))
}

/// Go-style durations: "90s", "30m", "1h30m", "500ms".
fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let mut total = Duration::ZERO;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while let Some(&n) = chars.peek() {
            if n.is_ascii_alphabetic() {
                unit.push(n);
                chars.next();
            } else {
                break;
            }
        }
        let v: f64 = num.parse().context("number")?;
        num.clear();
        let secs = match unit.as_str() {
            "ms" => v / 1000.0,
            "s" => v,
            "m" => v * 60.0,
            "h" => v * 3600.0,
            other => bail!("unknown unit {other:?}"),
        };
        total += Duration::from_secs_f64(secs);
    }
    if !num.is_empty() {
        bail!("missing unit");
    }
    Ok(total)
}

/// Runs a member until SIGTERM or Ctrl-C.
pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    run_member(args, false).await
}

/// Runs a member; with `announce`, prints where the Kubernetes API is and
/// how to point kubectl at it (`keelson up`).
pub async fn run_member(args: ServerArgs, announce: bool) -> anyhow::Result<()> {
    let plan = args.plan()?;
    // Listen on the peer URLs first: a member joining a cluster, or one of
    // a new cluster, is reached by the others while it starts.
    let mut peer_listeners = Vec::new();
    for addr in &plan.peer_addrs {
        peer_listeners.push(serve::bind(*addr).await.with_context(|| format!("listen for peers on {addr}"))?);
    }
    let node = Node::start(plan.node).await.context("start member")?;
    tracing::info!(
        member = format_args!("{:x}", node.member_id()),
        cluster = format_args!("{:x}", node.cluster_id()),
        "member started"
    );
    if let Some(policy) = plan.auto_compaction {
        keelson_raftstore::auto_compact::spawn(&node, policy);
    }
    let backend = Arc::new(NodeBackend(node.clone()));
    let grpc = keelson_apiserver::GrpcConfig { max_request_bytes: plan.max_request_bytes };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut servers = Vec::new();
    let mut api_tasks = Vec::new();
    let mut client_listeners = Vec::new();
    for addr in &plan.client_addrs {
        client_listeners.push(serve::bind(*addr).await?);
    }
    for (listener, addr) in peer_listeners.into_iter().zip(&plan.peer_addrs) {
        tracing::info!(%addr, "serving peer traffic");
        let routes = node.peer_routes();
        let mut server = node.transport().server();
        let stop = stopped();
        servers.push(tokio::spawn(async move {
            // Nagle off on accepted connections too: appends and their
            // answers are small and must not wait for a delayed ACK.
            let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            server.add_routes(routes).serve_with_incoming_shutdown(incoming, stop).await
        }));
    }
    // As etcd: clients are served once the member has published its name
    // and client URLs through raft (connections wait in the backlog).
    tokio::select! {
        _ = node.published() => {}
        _ = wait_for_signal() => {
            node.shutdown().await;
            return Ok(());
        }
    }
    if plan.initial_corrupt_check {
        let mismatches = node.check_hashes().await;
        if let Some(m) = mismatches.first() {
            node.shutdown().await;
            bail!(
                "initial corruption check: member {:x} has hash {} at revision {}, this member has {}",
                m.member_id,
                m.theirs,
                m.revision,
                m.ours
            );
        }
        tracing::info!("initial corruption check passed");
    }
    if let Some(every) = plan.corrupt_check_every {
        keelson_raftstore::corruption::spawn_periodic(&node, every);
    }
    for (listener, addr) in client_listeners.into_iter().zip(plan.client_addrs) {
        tracing::info!(%addr, "serving client traffic");
        servers.push(tokio::spawn(serve::serve_client(backend.clone(), grpc.clone(), listener, stopped())));
    }
    if let Some(api) = plan.api.clone() {
        let urls: Vec<String> = api.listen.iter().map(|a| format!("https://{a}")).collect();
        let stop_api = stopped.clone();
        let (tasks, kubeconfig) =
            keelson_apiserver::kube::start(backend.clone(), grpc.clone(), api, move || Box::pin(stop_api()))
                .await
                .context("start the Kubernetes API")?;
        api_tasks.extend(tasks);
        if let Some(path) = &kubeconfig {
            let path = std::fs::canonicalize(path).unwrap_or(path.clone());
            tracing::info!(kubeconfig = %path.display(), "admin kubeconfig written");
            if announce {
                println!("Keelson is serving the Kubernetes API on {}", urls.join(", "));
                println!("Admin kubeconfig: {}", path.display());
                println!();
                println!("    export KUBECONFIG={}", path.display());
                println!();
            }
        }
    }
    for addr in plan.metrics_addrs {
        let listener = serve::bind(addr).await?;
        tracing::info!(%addr, "serving metrics");
        servers.push(tokio::spawn(serve::serve_metrics(backend.clone(), listener, stopped())));
    }
    tokio::select! {
        _ = wait_for_signal() => {}
        _ = node.removed() => {}
    }
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    for s in servers {
        match tokio::time::timeout(Duration::from_secs(5), s).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "server ended with an error"),
            Err(_) => tracing::warn!("server did not stop within 5s"),
            _ => {}
        }
    }
    for t in api_tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    node.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: ServerArgs,
    }

    fn plan(argv: &[&str]) -> anyhow::Result<ServerPlan> {
        let mut full = vec!["keelson"];
        full.extend_from_slice(argv);
        Wrap::try_parse_from(full).map_err(anyhow::Error::from)?.args.plan()
    }

    #[test]
    fn defaults_match_etcd() {
        let p = plan(&[]).unwrap();
        assert_eq!(p.node.name, "default");
        assert_eq!(p.node.data_dir, PathBuf::from("default.etcd"));
        assert_eq!(p.client_addrs, vec!["127.0.0.1:2379".parse().unwrap()]);
        assert_eq!(p.max_request_bytes, 1536 * 1024);
        assert_eq!(p.node.mvcc.quota_bytes, 2 * 1024 * 1024 * 1024);
    }

    #[test]
    fn contradictions_fail_with_a_clear_message() {
        let e = plan(&["--heartbeat-interval", "300", "--election-timeout", "1000"]).unwrap_err();
        assert!(e.to_string().contains("at least as 5 times"), "{e}");
        let e = plan(&["--name", "x"]).unwrap_err();
        assert!(e.to_string().contains("couldn't find local name"), "{e}");
        let e = plan(&["--initial-advertise-peer-urls", "http://127.0.0.1:9"]).unwrap_err();
        assert!(e.to_string().contains("missing from --initial-advertise-peer-urls"), "{e}");
        let e = plan(&["--log-level", "loud"]).unwrap_err();
        assert!(e.to_string().contains("unknown log level"), "{e}");
        assert!(plan(&["--no-such-flag"]).is_err());
        let e = plan(&["--auto-compaction-retention", "soon"]).unwrap_err();
        assert!(format!("{e:#}").contains("not a duration"), "{e:#}");
    }

    #[test]
    fn retention_forms() {
        use keelson_raftstore::auto_compact::Policy;
        let p = plan(&["--auto-compaction-retention", "1"]).unwrap();
        assert_eq!(p.auto_compaction, Some(Policy::Periodic(Duration::from_secs(3600))));
        let p = plan(&["--auto-compaction-retention", "1h30m"]).unwrap();
        assert_eq!(p.auto_compaction, Some(Policy::Periodic(Duration::from_secs(5400))));
        let p = plan(&["--auto-compaction-mode", "revision", "--auto-compaction-retention", "1000"]).unwrap();
        assert_eq!(p.auto_compaction, Some(Policy::Revisions(1000)));
    }
}
