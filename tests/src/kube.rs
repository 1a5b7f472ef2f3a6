//! Fixtures for the Kubernetes API: [`KubeServer`] is a one-member
//! [`Server`] that also serves the API (`--listen-api-urls`), waits for
//! `/readyz` and runs the real `kubectl` with the admin kubeconfig the member
//! wrote; [`Cluster`] members get the API with [`ClusterOptions::api`].
//!
//! [`ClusterOptions::api`]: crate::ClusterOptions::api

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{Cluster, Server, free_port};

/// How long one kubectl invocation may take before it is killed.
const KUBECTL_TIMEOUT: &str = "60";

/// The HTTP status of an HTTPS request made without a client certificate
/// (`curl -k`, so also without checking the server's), and the body.
pub fn anonymous_get(url: &str) -> anyhow::Result<(u16, String)> {
    let out = Command::new("curl")
        .args(["-sk", "--max-time", "5", "-w", "\n%{http_code}", url])
        .output()
        .context("run curl")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').context("curl printed no status")?;
    Ok((code.trim().parse().with_context(|| format!("curl status {code:?}"))?, body.to_string()))
}

/// Waits until `https://127.0.0.1:{port}/readyz` answers `ok`.
pub fn wait_api_ready(port: u16, timeout: Duration) -> anyhow::Result<()> {
    let url = format!("https://127.0.0.1:{port}/readyz");
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        match anonymous_get(&url) {
            Ok((200, body)) if body.trim() == "ok" => return Ok(()),
            Ok((code, body)) => last = format!("{code} {body}"),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{url} not ready after {timeout:?}: {last}")
}

/// kubectl's discovery cache, beside the kubeconfig (so in the test's
/// temporary dir rather than `~/.kube/cache`).
pub fn kubectl_cache(kubeconfig: &Path) -> PathBuf {
    kubeconfig.parent().unwrap_or(Path::new(".")).join("kubectl-cache")
}

/// Runs the real `kubectl` with `KUBECONFIG=kubeconfig` (killed after a
/// minute) and `input` on its standard input.
pub fn kubectl_with(kubeconfig: &Path, args: &[&str], input: Option<&[u8]>) -> Output {
    let mut child = Command::new("timeout")
        .arg(KUBECTL_TIMEOUT)
        .arg("kubectl")
        .args(args)
        .arg(format!("--cache-dir={}", kubectl_cache(kubeconfig).display()))
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    if let Some(input) = input {
        child.stdin.take().expect("piped stdin").write_all(input).expect("write kubectl stdin");
    }
    child.wait_with_output().expect("wait for kubectl")
}

/// kubectl's stdout, failing with its output if it failed.
pub fn kubectl_ok_with(kubeconfig: &Path, args: &[&str]) -> String {
    let out = kubectl_with(kubeconfig, args, None);
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A running one-member `keelson server` serving the Kubernetes API.
pub struct KubeServer {
    pub server: Server,
    pub api_port: u16,
}

impl KubeServer {
    /// Starts a member with `--listen-api-urls https://127.0.0.1:<free port>`
    /// (and `extra` flags) in a new temporary data dir; waits for `/readyz`.
    pub fn start(extra: &[&str]) -> anyhow::Result<KubeServer> {
        let api_port = free_port();
        let url = format!("https://127.0.0.1:{api_port}");
        let mut args = vec!["--listen-api-urls", url.as_str()];
        args.extend_from_slice(extra);
        let server = Server::start(&args)?;
        let s = KubeServer { server, api_port };
        s.wait_ready(Duration::from_secs(20))?;
        Ok(s)
    }

    pub fn api_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.api_port)
    }

    /// `<data-dir>/admin.kubeconfig`, written by the member.
    pub fn kubeconfig(&self) -> PathBuf {
        self.server.data_dir.join("admin.kubeconfig")
    }

    /// The etcd API's endpoint (`127.0.0.1:<client port>`).
    pub fn endpoint(&self) -> String {
        self.server.endpoint()
    }

    pub fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        wait_api_ready(self.api_port, timeout)
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        kubectl_with(&self.kubeconfig(), args, None)
    }

    /// kubectl with `input` on its standard input (`apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Output {
        kubectl_with(&self.kubeconfig(), args, Some(input.as_bytes()))
    }

    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        kubectl_ok_with(&self.kubeconfig(), args)
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        self.server.kill9();
    }

    /// Starts the process again on the same ports and data dir; waits for
    /// `/readyz`.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.server.kill9();
        self.server.spawn()?;
        self.wait_ready(Duration::from_secs(20))
    }
}

impl Cluster {
    /// Member `i`'s Kubernetes API port (members started with
    /// [`ClusterOptions::api`](crate::ClusterOptions::api)).
    pub fn api_port(&self, i: usize) -> u16 {
        self.members[i].api_port.expect("member started with the Kubernetes API")
    }

    pub fn api_url(&self, i: usize) -> String {
        format!("https://127.0.0.1:{}", self.api_port(i))
    }

    /// The admin kubeconfig member `i` wrote (it names member `i`'s API).
    pub fn kubeconfig(&self, i: usize) -> PathBuf {
        self.members[i].data_dir.join("admin.kubeconfig")
    }

    /// Waits until member `i`'s API answers `/readyz`.
    pub fn wait_api_ready(&self, i: usize, timeout: Duration) -> anyhow::Result<()> {
        wait_api_ready(self.api_port(i), timeout)
    }
}
