//! Starting and stopping the servers being compared: a real etcd cluster or
//! a Keelson one, each member a child process on free loopback ports with
//! its data in a temporary directory on the disk being measured.
//!
//! **Invariant:** a [`Cluster`] kills its processes and removes its data
//! directory when dropped, so every way out of a run (an error, a panic
//! unwinding, Ctrl-C dropping the run's future) leaves nothing behind.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The two systems under comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    Etcd,
    Keelson,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Etcd => "etcd",
            System::Keelson => "keelson",
        }
    }
}

/// Where each system's server binary is.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// The `etcd` server (Debian's `etcd-server`).
    pub etcd: PathBuf,
    /// A `keelson` binary; its `server` subcommand takes etcd's flags.
    pub keelson: PathBuf,
}

impl Binaries {
    /// `etcd` from PATH, or a message saying how to install it.
    pub fn find_etcd() -> anyhow::Result<PathBuf> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path).map(|d| d.join("etcd")).find(|p| p.is_file()).context(
            "etcd not found on PATH: the comparison runs a real etcd server beside Keelson; \
             install it with `apt-get install etcd-server` (Debian/Ubuntu)",
        )
    }

    /// The first line of `etcd --version`, e.g. "etcd Version: 3.4.23".
    pub fn etcd_version(&self) -> String {
        Command::new(&self.etcd)
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.lines().next().map(|l| l.trim_start_matches("etcd Version:").trim().to_string()))
            .unwrap_or_else(|| "unknown".into())
    }
}

/// One running member.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
    log: PathBuf,
}

/// A running cluster of one system; stopped and removed when dropped.
pub struct Cluster {
    system: System,
    members: Vec<Member>,
    dir: Option<tempfile::TempDir>,
}

impl Cluster {
    /// Starts `members` members of `system` with their data under `base`
    /// and waits until every member's `/health` says true.
    pub async fn start(
        system: System,
        bins: &Binaries,
        members: usize,
        base: &Path,
        timeout: Duration,
    ) -> anyhow::Result<Cluster> {
        let dir = tempfile::Builder::new()
            .prefix(&format!(".keelson-bench-{}-", system.name()))
            .tempdir_in(base)
            .with_context(|| format!("create a data dir under {}", base.display()))?;
        let ports = free_ports(2 * members)?;
        let mut cluster = Cluster {
            system,
            members: (0..members)
                .map(|i| Member {
                    name: format!("m{}", i + 1),
                    client_port: ports[2 * i],
                    peer_port: ports[2 * i + 1],
                    child: None,
                    log: dir.path().join(format!("m{}.log", i + 1)),
                })
                .collect(),
            dir: Some(dir),
        };
        let initial_cluster = cluster
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let data_root = cluster.dir.as_ref().map(|d| d.path().to_path_buf()).unwrap_or_default();
        for m in &mut cluster.members {
            let client = format!("http://127.0.0.1:{}", m.client_port);
            let peer = format!("http://127.0.0.1:{}", m.peer_port);
            let data_dir = data_root.join(format!("{}.etcd", m.name));
            // The same flags for both: a script that starts etcd starts
            // Keelson by changing only the binary.
            let flags = [
                "--name",
                &m.name,
                "--data-dir",
                &data_dir.display().to_string(),
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &initial_cluster,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "keelson-bench",
                "--log-level",
                "warn",
            ]
            .map(String::from);
            let mut cmd = match system {
                System::Etcd => Command::new(&bins.etcd),
                System::Keelson => {
                    let mut c = Command::new(&bins.keelson);
                    // A start-up error then ends the log, not a backtrace.
                    c.arg("server").env("RUST_BACKTRACE", "0").env("RUST_LIB_BACKTRACE", "0");
                    c
                }
            };
            let log = std::fs::File::create(&m.log).context("create server log")?;
            cmd.args(flags).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
            let child = cmd.spawn().with_context(|| format!("start {} member {}", system.name(), m.name))?;
            m.child = Some(child);
        }
        cluster.wait_healthy(timeout).await?;
        Ok(cluster)
    }

    pub fn system(&self) -> System {
        self.system
    }

    /// The temporary directory holding the members' data and logs.
    pub fn data_dir(&self) -> Option<&Path> {
        self.dir.as_ref().map(|d| d.path())
    }

    /// Client endpoints, one per member: `http://127.0.0.1:port`.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| format!("http://127.0.0.1:{}", m.client_port)).collect()
    }

    /// Process ids of the running members.
    pub fn pids(&self) -> Vec<u32> {
        self.members.iter().filter_map(|m| m.child.as_ref().map(Child::id)).collect()
    }

    /// Fails, with the end of its log, if any member has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        for m in &mut self.members {
            if let Some(c) = m.child.as_mut()
                && let Some(status) = c.try_wait()?
            {
                bail!(
                    "{} member {} exited ({status}); end of its log:\n{}",
                    self.system.name(),
                    m.name,
                    log_tail(&m.log, 15)
                );
            }
        }
        Ok(())
    }

    async fn wait_healthy(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_running()?;
            let mut healthy = true;
            for m in &self.members {
                if !http_get(m.client_port, "/health").await.is_ok_and(|b| b.contains("\"true\"")) {
                    healthy = false;
                    break;
                }
            }
            if healthy {
                return Ok(());
            }
            if Instant::now() > deadline {
                let logs: Vec<String> =
                    self.members.iter().map(|m| format!("{}:\n{}", m.name, log_tail(&m.log, 10))).collect();
                bail!("{} not healthy after {timeout:?}; logs:\n{}", self.system.name(), logs.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills every member (SIGKILL) and removes the data directory.
    pub fn stop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `n` distinct free loopback ports (all held open while choosing).
pub(crate) fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .context("find free ports")?;
    listeners.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A plain HTTP/1.1 GET on loopback; returns the body of a 200.
async fn http_get(port: u16, path: &str) -> anyhow::Result<String> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        anyhow::Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(2), fut).await.context("GET timed out")??;
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP body")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starts a real single-member etcd (from PATH), then checks that
    /// dropping the cluster kills it and removes its data dir.
    #[tokio::test]
    async fn dropping_a_real_etcd_cluster_kills_it_and_removes_its_dir() {
        let base = tempfile::tempdir().unwrap();
        let bins = Binaries { etcd: Binaries::find_etcd().unwrap(), keelson: PathBuf::new() };
        let cluster =
            Cluster::start(System::Etcd, &bins, 1, base.path(), Duration::from_secs(30)).await.unwrap();
        let pids = cluster.pids();
        let dir = cluster.data_dir().unwrap().to_path_buf();
        assert_eq!(pids.len(), 1);
        assert!(dir.join("m1.etcd").exists());
        assert_eq!(cluster.endpoints().len(), 1);
        drop(cluster);
        assert!(!dir.exists(), "data dir left behind");
        assert!(!Path::new(&format!("/proc/{}", pids[0])).exists(), "etcd still running");
    }

    #[tokio::test]
    async fn a_member_that_cannot_start_fails_with_its_log() {
        let base = tempfile::tempdir().unwrap();
        // `false` exits at once: start must say so rather than wait.
        let bins = Binaries { etcd: PathBuf::from("/bin/false"), keelson: PathBuf::new() };
        let e =
            Cluster::start(System::Etcd, &bins, 1, base.path(), Duration::from_secs(30)).await.err().unwrap();
        assert!(e.to_string().contains("exited"), "{e}");
        assert_eq!(std::fs::read_dir(base.path()).unwrap().count(), 0, "data dir left behind");
    }

    #[test]
    fn ports_are_distinct() {
        let mut p = free_ports(6).unwrap();
        p.sort();
        p.dedup();
        assert_eq!(p.len(), 6);
    }
}
