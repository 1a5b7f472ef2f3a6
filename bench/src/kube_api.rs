//! `keelson bench kube`: the Kubernetes API's own figures (issue 7),
//! measured against a real `keelson server --listen-api-urls …` process
//! started here (temporary data dir, free ports), over HTTPS and HTTP/2 with
//! the admin client certificate from the `admin.kubeconfig` it writes:
//!
//! 1. **creates**: ~2 KB Pods POSTed through the REST API by 64 clients over
//!    8 HTTP/2 connections, against Puts of the same bytes through the gRPC
//!    KV API by 64 clients over 8 gRPC connections, alternating REST, KV,
//!    REST, KV, … for several rounds; medians and the REST/KV ratio;
//! 2. **list**: an unpaginated LIST of every pod of a namespace holding
//!    10,000 and 100,000 pods (stored through gRPC Txns of the JSON the API
//!    stores): time to the first body byte, total time, and the server's RSS
//!    growth while it streams (VmRSS sampled every 2 ms and VmHWM reset at
//!    the start);
//! 3. **watch**: 1,000 label-selected pod watches over a few HTTP/2
//!    connections, then changes to the one matching pod: delivery latency
//!    to every watcher, from just before the write and from its
//!    acknowledgement.
//!
//! Nothing here asserts a timing. The server is killed and its data removed
//! however the run ends (a `Drop` guard; Ctrl-C and SIGTERM drop the run).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use bytes::Bytes;
use etcd_client::{PutOptions, Txn, TxnOp};
use futures::FutureExt;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use indicatif::ProgressBar;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Serialize;
use serde_json::{Value, json};

use crate::load::{self, Conns, Outcome};
use crate::procstat;

/// The namespace pods are created and watched in.
const NS: &str = "bench";
/// Seconds any one request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The command line of `keelson bench kube`.
#[derive(Debug, Clone, clap::Args)]
pub struct KubeArgs {
    /// A smoke run: small counts (a few seconds).
    #[arg(long)]
    pub quick: bool,
    /// Rounds of REST creates and KV puts, alternating; medians are
    /// reported. Default 5 (2 with --quick).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Pods created (and keys put) per round. Default 5000 (200 with --quick).
    #[arg(long)]
    pub creates: Option<u64>,
    /// Concurrent clients of the creates and puts.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Connections the clients share: HTTP/2 for REST, gRPC for KV.
    #[arg(long, default_value_t = 8)]
    pub conns: usize,
    /// Bytes of each pod's JSON as sent (padded with an annotation).
    #[arg(long, default_value_t = 2048)]
    pub pod_size: usize,
    /// Pods in each listed namespace. Default 10000,100000 (300,1500 with
    /// --quick).
    #[arg(long, value_delimiter = ',')]
    pub list_sizes: Vec<u64>,
    /// LISTs of each size (alternating sizes); medians are reported.
    /// Default 3 (1 with --quick).
    #[arg(long)]
    pub list_repeats: Option<usize>,
    /// Concurrent label-selected watches. Default 1000 (50 with --quick).
    #[arg(long)]
    pub watchers: Option<usize>,
    /// HTTP/2 connections the watches share (the server allows 200 streams
    /// per connection). Default 8 (2 with --quick).
    #[arg(long)]
    pub watch_conns: Option<usize>,
    /// Changes to the watched pod. Default 20 (3 with --quick).
    #[arg(long)]
    pub changes: Option<usize>,
    /// Also write the report (every sample) as JSON to this file ("-" for
    /// stdout).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Directory under which the server's data dir is made (the disk being
    /// measured). Default: the current directory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The keelson binary whose `server` is measured (default: this one).
    #[arg(long)]
    pub keelson: Option<PathBuf>,
}

/// The resolved settings of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub rounds: usize,
    pub creates: u64,
    pub clients: usize,
    pub conns: usize,
    pub pod_size: usize,
    pub list_sizes: Vec<u64>,
    pub list_repeats: usize,
    pub watchers: usize,
    pub watch_conns: usize,
    pub changes: usize,
    pub data_dir: PathBuf,
    pub keelson: PathBuf,
}

impl KubeArgs {
    /// Applies the defaults; `this_binary` is the server unless `--keelson`
    /// names another.
    pub fn plan(&self, this_binary: PathBuf) -> anyhow::Result<Plan> {
        let q = |quick: u64, full: u64| if self.quick { quick } else { full };
        let data_dir = match &self.data_dir {
            Some(d) => d.clone(),
            None => std::env::current_dir().context("current dir")?,
        };
        let list_sizes = if self.list_sizes.is_empty() {
            if self.quick { vec![300, 1500] } else { vec![10_000, 100_000] }
        } else {
            self.list_sizes.clone()
        };
        Ok(Plan {
            rounds: self.rounds.unwrap_or(q(2, 5) as usize).max(1),
            creates: self.creates.unwrap_or(q(200, 5000)).max(1),
            clients: self.clients.max(1),
            conns: self.conns.max(1),
            pod_size: self.pod_size,
            list_sizes,
            list_repeats: self.list_repeats.unwrap_or(q(1, 3) as usize).max(1),
            watchers: self.watchers.unwrap_or(q(50, 1000) as usize).max(1),
            watch_conns: self.watch_conns.unwrap_or(q(2, 8) as usize).max(1),
            changes: self.changes.unwrap_or(q(3, 20) as usize).max(1),
            data_dir,
            keelson: self.keelson.clone().unwrap_or(this_binary),
        })
    }
}

// ---------------------------------------------------------------------------
// The server.

/// A `keelson server --listen-api-urls https://127.0.0.1:PORT` child
/// process; killed, and its data dir removed, when dropped.
pub struct ApiServer {
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
    pub client_port: u16,
    pub api_port: u16,
    log: PathBuf,
}

impl ApiServer {
    /// Starts the server with its data under `base` and waits until
    /// `/readyz` answers `ok` over HTTPS with the admin certificate.
    pub async fn start(bin: &Path, base: &Path, timeout: Duration) -> anyhow::Result<(ApiServer, Client)> {
        let dir = tempfile::Builder::new()
            .prefix(".keelson-bench-kube-")
            .tempdir_in(base)
            .with_context(|| format!("create a data dir under {}", base.display()))?;
        let ports = crate::cluster::free_ports(3)?;
        let log = dir.path().join("server.log");
        let data = dir.path().join("m1.etcd");
        let client = format!("http://127.0.0.1:{}", ports[0]);
        let peer = format!("http://127.0.0.1:{}", ports[1]);
        let api = format!("https://127.0.0.1:{}", ports[2]);
        let out = std::fs::File::create(&log).context("create server log")?;
        let child = Command::new(bin)
            .arg("server")
            .args(["--name", "m1", "--data-dir", &data.display().to_string()])
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("m1={peer}"), "--initial-cluster-state", "new"])
            .args(["--listen-api-urls", &api, "--log-level", "warn"])
            .env("RUST_BACKTRACE", "0")
            .env("RUST_LIB_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("start {} server", bin.display()))?;
        let mut server =
            ApiServer { child: Some(child), dir: Some(dir), client_port: ports[0], api_port: ports[2], log };
        let deadline = Instant::now() + timeout;
        let kubeconfig = data.join("admin.kubeconfig");
        let mut last = String::from("admin.kubeconfig not written yet");
        loop {
            server.check_running()?;
            if Instant::now() > deadline {
                bail!(
                    "the API server was not ready after {timeout:?} ({last}); log:\n{}",
                    server.log_tail(15)
                );
            }
            if kubeconfig.exists() {
                let ready = async {
                    let tls = tls_config(&std::fs::read_to_string(&kubeconfig)?)?;
                    let c = Client::connect(server.api_port, tls).await?;
                    let (status, body) = c.call(Method::GET, "/readyz", None, Bytes::new()).await?;
                    if status == StatusCode::OK && body.as_ref() == b"ok" {
                        return anyhow::Ok(c);
                    }
                    bail!("/readyz: {status} {}", String::from_utf8_lossy(&body))
                };
                match tokio::time::timeout(Duration::from_secs(5), ready).await {
                    Ok(Ok(c)) => return Ok((server, c)),
                    Ok(Err(e)) => last = format!("{e:#}"),
                    Err(_) => last = "readyz timed out".into(),
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// The data dir's `admin.kubeconfig`.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.as_ref().map(|d| d.path().join("m1.etcd/admin.kubeconfig")).unwrap_or_default()
    }

    pub fn grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Fails, with the end of its log, if the server has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(c) = self.child.as_mut()
            && let Some(status) = c.try_wait()?
        {
            bail!("keelson server exited ({status}); end of its log:\n{}", self.log_tail(15));
        }
        Ok(())
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Kills the server (SIGKILL) and removes its data dir.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(d) = self.dir.take() {
            let _ = d.close();
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------
// The HTTPS client.

/// A field of a kubeconfig as `keelson` writes it (`name: base64`), decoded.
fn kubeconfig_field(text: &str, name: &str) -> anyhow::Result<Vec<u8>> {
    let value = text
        .lines()
        .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))
        .with_context(|| format!("no {name} in the kubeconfig"))?;
    base64::engine::general_purpose::STANDARD.decode(value.trim()).with_context(|| format!("{name}: base64"))
}

/// TLS with the kubeconfig's CA as the only root and its client
/// certificate, offering HTTP/2 (ring provider).
pub fn tls_config(kubeconfig: &str) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let ca = kubeconfig_field(kubeconfig, "certificate-authority-data")?;
    let cert = kubeconfig_field(kubeconfig, "client-certificate-data")?;
    let key = kubeconfig_field(kubeconfig, "client-key-data")?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&ca) {
        roots.add(c.context("CA certificate")?)?;
    }
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&cert).collect::<Result<_, _>>().context("client certificate")?;
    let key = PrivateKeyDer::from_pem_slice(&key).context("client key")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// One HTTP/2 connection to the API; clones share it (one stream each).
#[derive(Clone)]
pub struct Client {
    send: SendRequest<Full<Bytes>>,
    base: String,
}

impl Client {
    pub async fn connect(port: u16, tls: Arc<rustls::ClientConfig>) -> anyhow::Result<Client> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.context("connect")?;
        tcp.set_nodelay(true)?;
        let name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
        let stream =
            tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.context("TLS handshake")?;
        // Go's HTTP/2 client windows (kubectl's, client-go's): 4 MiB a
        // stream; more for the connection, shared by many watches.
        let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(4 << 20)
            .initial_connection_window_size(64 << 20)
            .handshake(TokioIo::new(stream))
            .await
            .context("HTTP/2 handshake")?;
        tokio::spawn(conn);
        Ok(Client { send, base: format!("https://127.0.0.1:{port}") })
    }

    /// Sends a request; the response's body is left to the caller.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> anyhow::Result<Response<hyper::body::Incoming>> {
        let mut send = self.send.clone();
        send.ready().await.context("connection closed")?;
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("accept", "application/json");
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        Ok(send.send_request(req.body(Full::new(body))?).await?)
    }

    /// A request and its whole response.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let fut = async {
            let resp = self.send(method, path, content_type, body).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await.context("read body")?.to_bytes();
            anyhow::Ok((status, body))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, fut).await.context("request timed out")?
    }

    /// A JSON request that must answer `want`; returns the body as JSON.
    pub async fn expect(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: &Value,
        want: StatusCode,
    ) -> anyhow::Result<Value> {
        let m = method.clone();
        let (status, resp) =
            self.call(method, path, Some(content_type), Bytes::from(serde_json::to_vec(body)?)).await?;
        if status != want {
            bail!("{m} {path}: {status} (expected {want}): {}", short(&resp));
        }
        serde_json::from_slice(&resp).with_context(|| format!("{m} {path}: response not JSON"))
    }
}

fn short(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    if s.chars().count() > 300 {
        format!("{}…", s.chars().take(300).collect::<String>())
    } else {
        s.into_owned()
    }
}

/// Connects `n` HTTP/2 connections.
async fn connect_many(port: u16, tls: &Arc<rustls::ClientConfig>, n: usize) -> anyhow::Result<Vec<Client>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        out.push(Client::connect(port, tls.clone()).await?);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Pods.

/// A pod's JSON of about `size` bytes (exactly, unless the fixed part is
/// longer): one container, requests, labels, and an annotation padding it.
pub fn pod_json(ns: &str, name: &str, labels: &[(&str, &str)], size: usize) -> Vec<u8> {
    let labels: serde_json::Map<String, Value> =
        labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": labels,
            "annotations": {"bench.keelson.dev/padding": ""},
        },
        "spec": {
            "containers": [{
                "name": "app",
                "image": "registry.k8s.io/pause:3.10",
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
            }],
            "restartPolicy": "Always",
        },
    });
    let fixed = serde_json::to_vec(&pod).map(|v| v.len()).unwrap_or(0);
    pod["metadata"]["annotations"]["bench.keelson.dev/padding"] =
        json!("x".repeat(size.saturating_sub(fixed)));
    serde_json::to_vec(&pod).unwrap_or_default()
}

fn namespace_json(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

// ---------------------------------------------------------------------------
// The report.

/// Throughput and latency of one phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Throughput {
    pub ops_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub ok: u64,
    pub errors: u64,
    pub elapsed_s: f64,
    /// Server CPU microseconds per successful operation.
    pub server_cpu_us_per_op: f64,
    pub first_error: Option<String>,
}

impl Throughput {
    fn of(o: &Outcome, server_cpu_s: f64) -> Throughput {
        let ms = |q: f64| if o.ok > 0 { o.latency_us.value_at_quantile(q) as f64 / 1000.0 } else { 0.0 };
        Throughput {
            ops_per_s: o.throughput(),
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            max_ms: if o.ok > 0 { o.latency_us.max() as f64 / 1000.0 } else { 0.0 },
            ok: o.ok,
            errors: o.errors,
            elapsed_s: o.elapsed.as_secs_f64(),
            server_cpu_us_per_op: if o.ok > 0 { server_cpu_s * 1e6 / o.ok as f64 } else { 0.0 },
            first_error: o.first_error.clone(),
        }
    }

    /// Field-wise medians; errors summed.
    fn median(s: &[Throughput]) -> Throughput {
        let med = |f: fn(&Throughput) -> f64| {
            let mut v: Vec<f64> = s.iter().map(f).collect();
            crate::report::median(&mut v)
        };
        Throughput {
            ops_per_s: med(|t| t.ops_per_s),
            p50_ms: med(|t| t.p50_ms),
            p99_ms: med(|t| t.p99_ms),
            max_ms: med(|t| t.max_ms),
            ok: med(|t| t.ok as f64) as u64,
            errors: s.iter().map(|t| t.errors).sum(),
            elapsed_s: med(|t| t.elapsed_s),
            server_cpu_us_per_op: med(|t| t.server_cpu_us_per_op),
            first_error: s.iter().find_map(|t| t.first_error.clone()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CreatesResult {
    pub rest: Vec<Throughput>,
    pub kv: Vec<Throughput>,
    pub rest_median: Throughput,
    pub kv_median: Throughput,
    /// REST creates/s ÷ KV puts/s (medians).
    pub ratio: f64,
    /// Bytes of each create's body and each put's value.
    pub body_bytes: usize,
}

/// One LIST.
#[derive(Debug, Clone, Serialize)]
pub struct ListSample {
    pub pods: u64,
    /// Items counted in the response.
    pub items: u64,
    pub bytes: u64,
    pub headers_ms: f64,
    pub first_byte_ms: f64,
    pub total_ms: f64,
    /// Server RSS just before the request.
    pub rss_before_mib: f64,
    /// Highest server RSS seen while the list ran (sampled every 2 ms, and
    /// the kernel's VmHWM, reset at the start).
    pub rss_peak_mib: f64,
    pub rss_growth_mib: f64,
    pub server_cpu_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ListResult {
    pub pods: u64,
    /// Seconds the preload (gRPC Txns of 100 puts) took.
    pub preload_s: f64,
    pub samples: Vec<ListSample>,
    pub median_first_byte_ms: f64,
    pub median_total_ms: f64,
    pub median_mib_per_s: f64,
    pub median_rss_growth_mib: f64,
    pub max_rss_growth_mib: f64,
    pub mib: f64,
}

/// Percentiles of a latency distribution, in ms.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    fn of(h: &hdrhistogram::Histogram<u64>) -> Latency {
        let ms = |q: f64| if h.is_empty() { 0.0 } else { h.value_at_quantile(q) as f64 / 1000.0 };
        Latency {
            count: h.len(),
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            max_ms: if h.is_empty() { 0.0 } else { h.max() as f64 / 1000.0 },
        }
    }
}

/// One change's delivery.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeSample {
    pub delivered: usize,
    /// The write's round trip (merge-patch).
    pub write_ms: f64,
    /// Delivery latency from just before the write.
    pub from_write: Latency,
    /// Delivery latency from the write's acknowledgement (0 for an event
    /// that arrived first).
    pub from_ack: Latency,
    /// Events that arrived before the write's acknowledgement.
    pub before_ack: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct WatchResult {
    pub watchers: usize,
    pub conns: usize,
    /// Seconds until every watch's response headers had arrived.
    pub open_s: f64,
    pub changes: Vec<ChangeSample>,
    /// Every delivery of every change.
    pub from_write: Latency,
    pub from_ack: Latency,
    pub expected: u64,
    pub delivered: u64,
    pub median_write_ms: f64,
    /// Median over changes of the time until the last watcher had it.
    pub median_last_ms: f64,
    pub server_rss_mib_with_watches: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct KubeReport {
    pub keelson_version: String,
    pub plan: Plan,
    pub cpus: usize,
    pub loadavg_at_start: String,
    pub loadavg_at_end: String,
    pub data_dir_fs: String,
    pub wall_s: f64,
    pub creates: CreatesResult,
    pub lists: Vec<ListResult>,
    pub watch: WatchResult,
    pub notes: Vec<String>,
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_string()
}

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

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn median_of(v: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = v.collect();
    if v.is_empty() { 0.0 } else { crate::report::median(&mut v) }
}

// ---------------------------------------------------------------------------
// The run.

/// Runs every measurement; Ctrl-C or SIGTERM stops it, and the server and
/// its data dir go with it.
pub async fn run(plan: &Plan) -> anyhow::Result<KubeReport> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("install SIGTERM handler")?;
    tokio::select! {
        r = run_uninterrupted(plan) => r,
        _ = tokio::signal::ctrl_c() => bail!("interrupted: server stopped, data dir removed"),
        _ = term.recv() => bail!("terminated: server stopped, data dir removed"),
    }
}

async fn run_uninterrupted(plan: &Plan) -> anyhow::Result<KubeReport> {
    let started = Instant::now();
    let loadavg_at_start = loadavg();
    let data_dir_fs = fs_type(&plan.data_dir);
    let mut notes = Vec::new();
    if data_dir_fs == "tmpfs" || data_dir_fs == "ramfs" {
        notes.push(format!(
            "data dir on {data_dir_fs}: fsync costs nothing there, so writes are faster than on a disk \
             (for REST and KV alike)"
        ));
    }
    eprintln!(
        "bench kube: {} cpus, load {loadavg_at_start} at start, data under {} ({data_dir_fs})",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        plan.data_dir.display()
    );
    let (mut server, admin) =
        ApiServer::start(&plan.keelson, &plan.data_dir, Duration::from_secs(60)).await?;
    let pid = server.pid();
    let tls = tls_config(&std::fs::read_to_string(server.kubeconfig()).context("read admin.kubeconfig")?)?;
    admin
        .expect(
            Method::POST,
            "/api/v1/namespaces",
            "application/json",
            &namespace_json(NS),
            StatusCode::CREATED,
        )
        .await?;

    let creates = creates(plan, &server, &tls, pid).await?;
    server.check_running()?;
    let lists = lists(plan, &server, &admin, &tls, pid).await?;
    server.check_running()?;
    let watch = watches(plan, &server, &admin, &tls, pid).await?;
    server.check_running()?;
    server.stop();
    Ok(KubeReport {
        keelson_version: env!("CARGO_PKG_VERSION").to_string(),
        plan: plan.clone(),
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        loadavg_at_start,
        loadavg_at_end: loadavg(),
        data_dir_fs,
        wall_s: started.elapsed().as_secs_f64(),
        creates,
        lists,
        watch,
        notes,
    })
}

/// 1. REST creates against KV puts of the same bytes, alternating.
async fn creates(
    plan: &Plan,
    server: &ApiServer,
    tls: &Arc<rustls::ClientConfig>,
    pid: u32,
) -> anyhow::Result<CreatesResult> {
    let http = connect_many(server.api_port, tls, plan.conns).await?;
    let grpc = Conns::connect(&[server.grpc_endpoint()], plan.conns).await?;
    let (mut rest, mut kv) = (Vec::new(), Vec::new());
    for round in 0..plan.rounds {
        let cpu0 = procstat::cpu_seconds(pid)?;
        let o = rest_creates(&http, plan, round).await?;
        let r = Throughput::of(&o, procstat::cpu_seconds(pid)? - cpu0);
        eprintln!(
            "  round {}: REST create {:>7.0}/s p99 {:>6.2} ms errors {}",
            round + 1,
            r.ops_per_s,
            r.p99_ms,
            r.errors
        );
        rest.push(r);
        let cpu0 = procstat::cpu_seconds(pid)?;
        let o = kv_puts(&grpc, plan, round).await?;
        let k = Throughput::of(&o, procstat::cpu_seconds(pid)? - cpu0);
        eprintln!(
            "  round {}: KV put      {:>7.0}/s p99 {:>6.2} ms errors {}",
            round + 1,
            k.ops_per_s,
            k.p99_ms,
            k.errors
        );
        kv.push(k);
    }
    let (rest_median, kv_median) = (Throughput::median(&rest), Throughput::median(&kv));
    let ratio =
        if kv_median.ops_per_s > 0.0 { rest_median.ops_per_s / kv_median.ops_per_s } else { f64::NAN };
    Ok(CreatesResult { rest, kv, rest_median, kv_median, ratio, body_bytes: plan.pod_size })
}

fn create_name(round: usize, i: u64) -> String {
    format!("c{round}-{i:07}")
}

async fn rest_creates(http: &[Client], plan: &Plan, round: usize) -> anyhow::Result<Outcome> {
    let tickets = load::Tickets::new(plan.creates, 0);
    let mut tasks = tokio::task::JoinSet::new();
    let path = format!("/api/v1/namespaces/{NS}/pods");
    for c in 0..plan.clients {
        let client = http[c % http.len()].clone();
        let (tickets, path, size) = (tickets.clone(), path.clone(), plan.pod_size);
        tasks.spawn(async move {
            let mut out = Outcome::empty();
            while let Some(i) = tickets.take().await {
                let body = Bytes::from(pod_json(NS, &create_name(round, i), &[("app", "bench")], size));
                let t0 = Instant::now();
                match client.call(Method::POST, &path, Some("application/json"), body).await {
                    Ok((StatusCode::CREATED, _)) => out.record(t0.elapsed()),
                    Ok((s, b)) => out.record_error(format!("POST {path}: {s}: {}", short(&b))),
                    Err(e) => out.record_error(format!("POST {path}: {e:#}")),
                }
                out.elapsed = tickets.elapsed();
            }
            out
        });
    }
    load::join_all(tasks).await
}

async fn kv_puts(grpc: &Conns, plan: &Plan, round: usize) -> anyhow::Result<Outcome> {
    let size = plan.pod_size;
    let op: load::OpFn = Arc::new(move |mut client, i| {
        let name = create_name(round, i);
        let value = pod_json(NS, &name, &[("app", "bench")], size);
        let key = format!("/bench/kv/{NS}/{name}");
        async move { client.put(key, value, None::<PutOptions>).await.map(drop) }.boxed()
    });
    load::drive(grpc, plan.clients, plan.creates, 0, &ProgressBar::hidden(), op).await
}

/// 2. LISTs of namespaces of each size, alternating sizes.
async fn lists(
    plan: &Plan,
    server: &ApiServer,
    admin: &Client,
    tls: &Arc<rustls::ClientConfig>,
    pid: u32,
) -> anyhow::Result<Vec<ListResult>> {
    // The stored form of a pod: what a create stored, without its
    // resourceVersion (the API sets it from the key's mod_revision).
    let body = serde_json::from_slice::<Value>(&pod_json(NS, "template", &[("app", "list")], plan.pod_size))?;
    let path = format!("/api/v1/namespaces/{NS}/pods");
    let mut template =
        admin.expect(Method::POST, &path, "application/json", &body, StatusCode::CREATED).await?;
    if let Some(m) = template["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    let grpc = Conns::connect(&[server.grpc_endpoint()], 8).await?;
    let mut results = Vec::new();
    for &pods in &plan.list_sizes {
        let ns = format!("bench-list-{pods}");
        admin
            .expect(
                Method::POST,
                "/api/v1/namespaces",
                "application/json",
                &namespace_json(&ns),
                StatusCode::CREATED,
            )
            .await?;
        let t0 = Instant::now();
        preload(&grpc, &ns, pods, &template).await?;
        let preload_s = t0.elapsed().as_secs_f64();
        eprintln!("  list: stored {pods} pods in {ns} in {preload_s:.1} s");
        results.push(ListResult {
            pods,
            preload_s,
            samples: Vec::new(),
            median_first_byte_ms: 0.0,
            median_total_ms: 0.0,
            median_mib_per_s: 0.0,
            median_rss_growth_mib: 0.0,
            max_rss_growth_mib: 0.0,
            mib: 0.0,
        });
    }
    // A fresh connection, used by nothing else.
    let client = Client::connect(server.api_port, tls.clone()).await?;
    for _ in 0..plan.list_repeats {
        for r in results.iter_mut() {
            let s = list_once(&client, pid, r.pods).await?;
            eprintln!(
                "  list {:>7} pods: first byte {:>8.1} ms, total {:>8.1} ms, {:.1} MiB, RSS +{:.1} MiB",
                r.pods,
                s.first_byte_ms,
                s.total_ms,
                mib(s.bytes),
                s.rss_growth_mib
            );
            if s.items != r.pods {
                bail!("LIST of {} pods returned {} items", r.pods, s.items);
            }
            r.samples.push(s);
        }
    }
    for r in &mut results {
        r.median_first_byte_ms = median_of(r.samples.iter().map(|s| s.first_byte_ms));
        r.median_total_ms = median_of(r.samples.iter().map(|s| s.total_ms));
        r.median_mib_per_s = median_of(r.samples.iter().map(|s| mib(s.bytes) / (s.total_ms / 1000.0)));
        r.median_rss_growth_mib = median_of(r.samples.iter().map(|s| s.rss_growth_mib));
        r.max_rss_growth_mib = r.samples.iter().map(|s| s.rss_growth_mib).fold(0.0, f64::max);
        r.mib = median_of(r.samples.iter().map(|s| mib(s.bytes)));
    }
    Ok(results)
}

/// Stores `n` pods in namespace `ns` as the API stores them, through gRPC
/// Txns of 100 puts from 8 concurrent clients.
async fn preload(grpc: &Conns, ns: &str, n: u64, template: &Value) -> anyhow::Result<()> {
    const PER_TXN: u64 = 100;
    let template = Arc::new(template.clone());
    let ns = Arc::new(ns.to_string());
    let op: load::OpFn = Arc::new(move |mut client, batch| {
        let ops: Vec<TxnOp> = (batch * PER_TXN..((batch + 1) * PER_TXN).min(n))
            .map(|i| {
                let name = format!("lp-{i:07}");
                let mut pod = (*template).clone();
                pod["metadata"]["name"] = json!(name);
                pod["metadata"]["namespace"] = json!(*ns);
                pod["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{i:012}"));
                let key = format!("/registry/pods/{ns}/{name}");
                TxnOp::put(key, serde_json::to_vec(&pod).unwrap_or_default(), None)
            })
            .collect();
        async move { client.txn(Txn::new().and_then(ops)).await.map(drop) }.boxed()
    });
    let out = load::drive(grpc, 8, n.div_ceil(PER_TXN), 0, &ProgressBar::hidden(), op).await?;
    if out.errors > 0 {
        bail!("storing {n} pods: {} Txns failed: {:?}", out.errors, out.first_error);
    }
    Ok(())
}

/// Samples a process's VmRSS every 2 ms on a thread of its own until
/// stopped; returns the highest seen.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let (stop, peak) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Ok(rss) = procstat::rss_bytes(pid) {
                    p.fetch_max(rss, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        RssSampler { stop, peak, thread: Some(thread) }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// Counts occurrences of a pattern in a stream of chunks.
struct Counter {
    pattern: &'static [u8],
    tail: Vec<u8>,
    count: u64,
}

impl Counter {
    fn new(pattern: &'static [u8]) -> Counter {
        Counter { pattern, tail: Vec::new(), count: 0 }
    }

    fn feed(&mut self, chunk: &[u8]) {
        let (p, k) = (self.pattern, self.pattern.len() - 1);
        // The last k bytes before this chunk: every window of them and the
        // chunk's first k bytes spans the boundary.
        let old = std::mem::take(&mut self.tail);
        let mut joint = old.clone();
        joint.extend_from_slice(&chunk[..chunk.len().min(k)]);
        self.count += joint.windows(p.len()).filter(|w| *w == p).count() as u64;
        self.count += chunk.windows(p.len()).filter(|w| *w == p).count() as u64;
        let mut tail = old;
        tail.extend_from_slice(&chunk[chunk.len().saturating_sub(k)..]);
        tail.drain(..tail.len().saturating_sub(k));
        self.tail = tail;
    }
}

async fn list_once(client: &Client, pid: u32, pods: u64) -> anyhow::Result<ListSample> {
    let path = format!("/api/v1/namespaces/bench-list-{pods}/pods");
    let before = procstat::rss_bytes(pid)?;
    let reset = procstat::reset_peak_rss(pid);
    let cpu0 = procstat::cpu_seconds(pid)?;
    let sampler = RssSampler::start(pid);
    let t0 = Instant::now();
    let fut = async {
        let resp = client.send(Method::GET, &path, None, Bytes::new()).await?;
        let headers = t0.elapsed();
        if resp.status() != StatusCode::OK {
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            bail!("GET {path}: {status}: {}", short(&body));
        }
        let mut body = resp.into_body();
        let (mut first, mut bytes) = (None, 0u64);
        let mut items = Counter::new(b"\"name\":\"lp-");
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.context("read LIST body")?.into_data()
                && !data.is_empty()
            {
                first.get_or_insert_with(|| t0.elapsed());
                bytes += data.len() as u64;
                items.feed(&data);
            }
        }
        anyhow::Ok((headers, first.unwrap_or_default(), t0.elapsed(), bytes, items.count))
    };
    let result = tokio::time::timeout(Duration::from_secs(600), fut).await;
    let sampled = sampler.finish();
    let (headers, first, total, bytes, items) = result.context("LIST timed out")??;
    let hwm = if reset { procstat::peak_rss_bytes(pid)? } else { 0 };
    let peak = sampled.max(hwm).max(before);
    Ok(ListSample {
        pods,
        items,
        bytes,
        headers_ms: headers.as_secs_f64() * 1000.0,
        first_byte_ms: first.as_secs_f64() * 1000.0,
        total_ms: total.as_secs_f64() * 1000.0,
        rss_before_mib: mib(before),
        rss_peak_mib: mib(peak),
        rss_growth_mib: mib(peak - before),
        server_cpu_s: procstat::cpu_seconds(pid)? - cpu0,
    })
}

/// 3. Label-selected watches and changes to the pod they select.
async fn watches(
    plan: &Plan,
    server: &ApiServer,
    admin: &Client,
    tls: &Arc<rustls::ClientConfig>,
    pid: u32,
) -> anyhow::Result<WatchResult> {
    let pods = format!("/api/v1/namespaces/{NS}/pods");
    let body = serde_json::from_slice::<Value>(&pod_json(NS, "w-target", &[("app", "w")], plan.pod_size))?;
    let created = admin.expect(Method::POST, &pods, "application/json", &body, StatusCode::CREATED).await?;
    let rv = created["metadata"]["resourceVersion"].as_str().context("no resourceVersion")?.to_string();
    let conns = connect_many(server.api_port, tls, plan.watch_conns).await?;
    let path = format!("{pods}?watch=true&labelSelector=app%3Dw&resourceVersion={rv}&timeoutSeconds=3600");
    // Every event as (change number, arrival).
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    let (open_tx, mut opened) = tokio::sync::mpsc::unbounded_channel::<anyhow::Result<()>>();
    let mut tasks = tokio::task::JoinSet::new();
    let t_open = Instant::now();
    for w in 0..plan.watchers {
        let client = conns[w % conns.len()].clone();
        let (path, events_tx, open_tx) = (path.clone(), events_tx.clone(), open_tx.clone());
        tasks.spawn(async move {
            let resp = match client.send(Method::GET, &path, None, Bytes::new()).await {
                Ok(r) if r.status() == StatusCode::OK => r,
                Ok(r) => {
                    let _ = open_tx.send(Err(anyhow::anyhow!("watch: {}", r.status())));
                    return;
                }
                Err(e) => {
                    let _ = open_tx.send(Err(e));
                    return;
                }
            };
            let _ = open_tx.send(Ok(()));
            let mut body = resp.into_body();
            let mut buf: Vec<u8> = Vec::new();
            while let Some(Ok(frame)) = body.frame().await {
                let Ok(data) = frame.into_data() else { continue };
                let at = Instant::now();
                buf.extend_from_slice(&data);
                while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    let change = serde_json::from_slice::<Value>(&line).ok().and_then(|ev| {
                        ev["object"]["metadata"]["annotations"]["bench.keelson.dev/change"]
                            .as_str()
                            .and_then(|s| s.parse::<usize>().ok())
                    });
                    if let Some(c) = change {
                        let _ = events_tx.send((c, at));
                    }
                }
            }
        });
    }
    drop((events_tx, open_tx));
    for _ in 0..plan.watchers {
        match tokio::time::timeout(Duration::from_secs(120), opened.recv()).await {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(e))) => return Err(e.context("open a watch")),
            Ok(None) | Err(_) => bail!("the watches did not all open"),
        }
    }
    let open_s = t_open.elapsed().as_secs_f64();
    eprintln!("  watch: {} watches open over {} connections in {open_s:.2} s", plan.watchers, conns.len());
    // Let every watch task register its hub watch.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_with_watches = procstat::rss_bytes(pid).map(mib).unwrap_or(0.0);
    let target = format!("{pods}/w-target");
    let (mut all_write, mut all_ack) = (load::new_histogram(), load::new_histogram());
    let mut changes = Vec::new();
    for change in 1..=plan.changes {
        let patch = json!({"metadata": {"annotations": {"bench.keelson.dev/change": change.to_string()}}});
        let t_write = Instant::now();
        admin.expect(Method::PATCH, &target, "application/merge-patch+json", &patch, StatusCode::OK).await?;
        let t_ack = Instant::now();
        let (mut from_write, mut from_ack) = (load::new_histogram(), load::new_histogram());
        let (mut delivered, mut before_ack) = (0, 0);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while delivered < plan.watchers {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some((c, at))) if c == change => {
                    delivered += 1;
                    let us = |d: Duration| (d.as_micros() as u64).max(1);
                    let _ = from_write.record(us(at.saturating_duration_since(t_write)));
                    let _ = from_ack.record(us(at.saturating_duration_since(t_ack)));
                    if at < t_ack {
                        before_ack += 1;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        let _ = all_write.add(&from_write);
        let _ = all_ack.add(&from_ack);
        let s = ChangeSample {
            delivered,
            write_ms: (t_ack - t_write).as_secs_f64() * 1000.0,
            from_write: Latency::of(&from_write),
            from_ack: Latency::of(&from_ack),
            before_ack,
        };
        eprintln!(
            "  watch change {change:>2}: {delivered}/{} delivered, p50 {:.2} ms p99 {:.2} ms last {:.2} ms \
             (write {:.2} ms)",
            plan.watchers, s.from_write.p50_ms, s.from_write.p99_ms, s.from_write.max_ms, s.write_ms
        );
        changes.push(s);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tasks.abort_all();
    let delivered = changes.iter().map(|c| c.delivered as u64).sum();
    Ok(WatchResult {
        watchers: plan.watchers,
        conns: conns.len(),
        open_s,
        from_write: Latency::of(&all_write),
        from_ack: Latency::of(&all_ack),
        expected: (plan.watchers * plan.changes) as u64,
        delivered,
        median_write_ms: median_of(changes.iter().map(|c| c.write_ms)),
        median_last_ms: median_of(changes.iter().map(|c| c.from_write.max_ms)),
        changes,
        server_rss_mib_with_watches: rss_with_watches,
    })
}

impl KubeReport {
    /// The table people read.
    pub fn table(&self) -> String {
        let p = &self.plan;
        let c = &self.creates;
        let mut out = format!(
            "keelson bench kube: keelson {} server, {} cpus, data on {}, load {} at start / {} at end, \
             wall {:.0} s\n\n",
            self.keelson_version,
            self.cpus,
            self.data_dir_fs,
            self.loadavg_at_start,
            self.loadavg_at_end,
            self.wall_s
        );
        out.push_str(&format!(
            "1. creates: {} x {} pods / puts of {} bytes per round, {} clients over {} connections, \
             medians of {} alternating rounds\n",
            p.rounds, p.creates, c.body_bytes, p.clients, p.conns, p.rounds
        ));
        out.push_str(&format!(
            "{:<26} {:>9} {:>8} {:>8} {:>8} {:>7} {:>10}\n",
            "path", "ops/s", "p50 ms", "p99 ms", "max ms", "errors", "cpu us/op"
        ));
        for (name, t) in [("REST POST pods (HTTP/2)", &c.rest_median), ("KV Put (gRPC)", &c.kv_median)] {
            out.push_str(&format!(
                "{:<26} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>7} {:>10.1}\n",
                name, t.ops_per_s, t.p50_ms, t.p99_ms, t.max_ms, t.errors, t.server_cpu_us_per_op
            ));
        }
        out.push_str(&format!(
            "{:<26} {:>8.2}x   (REST creates/s / KV puts/s; target >= 0.5)\n\n",
            "ratio", c.ratio
        ));
        out.push_str(&format!(
            "2. LIST (unpaginated, streamed), medians of {} per size\n\
             {:>8} {:>9} {:>14} {:>10} {:>8} {:>17} {:>14}\n",
            p.list_repeats,
            "pods",
            "MiB",
            "first byte ms",
            "total ms",
            "MiB/s",
            "RSS growth MiB",
            "max growth MiB"
        ));
        for l in &self.lists {
            out.push_str(&format!(
                "{:>8} {:>9.1} {:>14.1} {:>10.1} {:>8.1} {:>17.1} {:>14.1}\n",
                l.pods,
                l.mib,
                l.median_first_byte_ms,
                l.median_total_ms,
                l.median_mib_per_s,
                l.median_rss_growth_mib,
                l.max_rss_growth_mib
            ));
        }
        let w = &self.watch;
        out.push_str(&format!(
            "\n3. watch: {} watches (labelSelector app=w) over {} HTTP/2 connections, {} changes to the \
             matching pod\n{:<26} {:>8} {:>8} {:>8} {:>8}\n",
            w.watchers, w.conns, p.changes, "delivery latency from", "p50 ms", "p90 ms", "p99 ms", "max ms"
        ));
        for (name, l) in [("just before the write", &w.from_write), ("the write's ack", &w.from_ack)] {
            out.push_str(&format!(
                "{:<26} {:>8.2} {:>8.2} {:>8.2} {:>8.2}\n",
                name, l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
            ));
        }
        out.push_str(&format!(
            "delivered {}/{}; write (merge-patch) median {:.2} ms; last watcher median {:.2} ms after the write; \
             watches opened in {:.2} s; server RSS with the watches open {:.0} MiB\n",
            w.delivered, w.expected, w.median_write_ms, w.median_last_ms, w.open_s, w.server_rss_mib_with_watches
        ));
        for (name, t) in [("REST", &c.rest_median), ("KV", &c.kv_median)] {
            if let Some(e) = &t.first_error {
                out.push_str(&format!("note: {name}: first error: {e}\n"));
            }
        }
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_have_the_asked_size_and_are_json() {
        let p = pod_json("bench", "c0-0000001", &[("app", "bench")], 2048);
        assert_eq!(p.len(), 2048);
        let v: Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(v["metadata"]["labels"]["app"], "bench");
    }

    #[test]
    fn counting_spans_chunk_boundaries() {
        let text = b"xx\"name\":\"lp-1\",\"name\":\"lp-2\",\"name\":\"lp-3\"]";
        for size in 1..text.len() {
            let mut c = Counter::new(b"\"name\":\"lp-");
            for chunk in text.chunks(size) {
                c.feed(chunk);
            }
            assert_eq!(c.count, 3, "chunks of {size}");
        }
    }

    #[test]
    fn kubeconfig_fields_decode() {
        let b = base64::engine::general_purpose::STANDARD.encode("hello");
        let text = format!("users:\n- name: admin\n  user:\n    client-key-data: {b}\n");
        assert_eq!(kubeconfig_field(&text, "client-key-data").unwrap(), b"hello");
        assert!(kubeconfig_field(&text, "client-certificate-data").is_err());
    }

    /// The `keelson` binary beside this test's directory (`scripts/test`
    /// builds it before the tests run).
    fn keelson_bin() -> PathBuf {
        let exe = std::env::current_exe().unwrap();
        let bin = exe.parent().and_then(Path::parent).unwrap().join("keelson");
        assert!(bin.exists(), "{} not built: run scripts/test (it builds the binary first)", bin.display());
        bin
    }

    /// `keelson bench kube --quick` end to end against a real server: every
    /// create, put, list and watch event succeeds and nothing is left
    /// behind. Speeds are not checked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn quick_run_against_a_real_server() {
        let base = tempfile::tempdir().unwrap();
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            args: KubeArgs,
        }
        let dir = base.path().display().to_string();
        let args = <Wrap as clap::Parser>::parse_from(["kube", "--quick", "--data-dir", &dir]).args;
        let plan = args.plan(keelson_bin()).unwrap();
        let report = run(&plan).await.unwrap();
        let c = &report.creates;
        assert_eq!((c.rest.len(), c.kv.len()), (2, 2));
        for t in c.rest.iter().chain(&c.kv) {
            assert_eq!((t.ok, t.errors), (200, 0), "{:?}", t.first_error);
        }
        assert!(c.ratio > 0.0);
        assert_eq!(report.lists.len(), 2);
        for l in &report.lists {
            assert_eq!(l.samples.len(), 1);
            assert_eq!(l.samples[0].items, l.pods);
            assert!(l.median_total_ms >= l.median_first_byte_ms);
        }
        assert_eq!(report.watch.delivered, report.watch.expected);
        assert_eq!(report.watch.expected, 50 * 3);
        let table = report.table();
        assert!(table.contains("REST POST pods") && table.contains("first byte"), "{table}");
        serde_json::to_string(&report).unwrap();
        let left: Vec<_> = std::fs::read_dir(base.path()).unwrap().flatten().collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}
