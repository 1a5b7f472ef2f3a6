//! keelson-tests: fixtures for tests that run real `keelson` processes.
//!
//! [`Server`] starts `keelson server` (the release binary beside the test
//! executable; `scripts/test` builds it first) on free loopback ports in a
//! temporary data dir, waits until `/health` answers, and kills the process
//! when dropped. [`etcdctl`] runs the real etcdctl against it.

pub mod checker;
pub mod cluster;
pub mod kube;

pub use cluster::{Cluster, ClusterOptions};
pub use kube::KubeServer;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The `keelson` binary built in the same target dir as the running test.
pub fn keelson_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // <target>/release/deps/<test> → <target>/release/keelson
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("keelson");
    assert!(bin.exists(), "{} not built: run scripts/test (it builds the binary first)", bin.display());
    bin
}

/// `keelson-failpoints` beside [`keelson_bin`]: the binary built with the
/// `failpoints` feature (`scripts/test` builds it), if it is there.
pub fn keelson_failpoints_bin() -> Option<PathBuf> {
    let bin = keelson_bin().with_file_name("keelson-failpoints");
    bin.exists().then_some(bin)
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A running `keelson server`.
pub struct Server {
    pub child: Option<Child>,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    pub extra: Vec<String>,
    _guard: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a single member in a new temporary data dir.
    pub fn start(extra: &[&str]) -> anyhow::Result<Server> {
        let guard = tempfile::tempdir()?;
        let data_dir = guard.path().join("data");
        let mut s = Server {
            child: None,
            client_port: free_port(),
            peer_port: free_port(),
            data_dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            _guard: Some(guard),
        };
        s.spawn()?;
        Ok(s)
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// The argument list etcd would take, with the binary changed.
    pub fn args(&self) -> Vec<String> {
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut args = vec![
            "server".to_string(),
            "--name".into(),
            "n1".into(),
            "--data-dir".into(),
            self.data_dir.display().to_string(),
            "--listen-client-urls".into(),
            client.clone(),
            "--advertise-client-urls".into(),
            client,
            "--listen-peer-urls".into(),
            peer.clone(),
            "--initial-advertise-peer-urls".into(),
            peer.clone(),
            "--initial-cluster".into(),
            format!("n1={peer}"),
            "--log-level".into(),
            "warn".into(),
        ];
        args.extend(self.extra.iter().cloned());
        args
    }

    /// Starts (or restarts) the process and waits for it to be healthy.
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        let child = Command::new(keelson_bin())
            .args(self.args())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawn keelson server")?;
        self.child = Some(child);
        self.wait_healthy(Duration::from_secs(20))
    }

    pub fn wait_healthy(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && let Some(status) = c.try_wait()?
            {
                bail!("keelson server exited early: {status}");
            }
            if http_get(self.client_port, "/health").is_ok_and(|b| b.contains("\"true\"")) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("keelson server not healthy after {timeout:?}")
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let mut c = self.child.take().context("not running")?;
        let pid = c.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = c.try_wait()? {
                return Ok(st);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                bail!("server did not exit after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A plain HTTP/1.1 GET on loopback; returns the body.
pub fn http_get(port: u16, path: &str) -> anyhow::Result<String> {
    http_get_host("127.0.0.1", port, path)
}

/// A plain HTTP/1.1 GET; returns the body.
pub fn http_get_host(host: &str, port: u16, path: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let addr: std::net::SocketAddr = format!("{host}:{port}").parse()?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let (head, body) = buf.split_once("\r\n\r\n").context("no HTTP body")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_string())
}

/// Runs the real `etcdctl` (API v3) against `endpoint`.
pub fn etcdctl(endpoint: &str, args: &[&str]) -> Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--command-timeout=10s")
        .args(args)
        .output()
        .expect("run etcdctl (install Debian's etcd-client)")
}

/// Runs the real `etcdctl` with `input` on its standard input (a `txn`
/// script, a value too large for the command line).
pub fn etcdctl_stdin(endpoint: &str, args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--command-timeout=10s")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run etcdctl (install Debian's etcd-client)");
    child.stdin.take().expect("piped stdin").write_all(input).expect("write etcdctl stdin");
    child.wait_with_output().expect("wait for etcdctl")
}

/// etcdctl's stdout, failing with its stderr if it failed.
pub fn etcdctl_ok(endpoint: &str, args: &[&str]) -> String {
    let out = etcdctl(endpoint, args);
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
