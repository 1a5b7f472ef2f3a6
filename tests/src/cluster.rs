//! [`Cluster`]: N real `keelson server` processes forming one cluster on
//! loopback (or, with [`Cluster::start_isolated`], each in a network
//! namespace of its own so the test can cut a member off its peers).
//!
//! Members are started with etcd's flags exactly as an operator would start
//! etcd: the same `--initial-cluster` on every member, `--initial-cluster-state
//! existing` for a member added later. Every process is killed when the
//! cluster is dropped; namespaces and the bridge are removed too.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{free_port, http_get_host, keelson_bin};

/// One member's process and addresses.
pub struct Member {
    pub name: String,
    /// The address the member's client and peer URLs are on.
    pub host: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: std::path::PathBuf,
    pub child: Option<Child>,
    /// `--initial-cluster-state existing` (a member added to a running
    /// cluster).
    pub joins: bool,
    /// The network namespace the member runs in, if isolated.
    pub netns: Option<String>,
    /// Extra flags for this member only.
    pub extra: Vec<String>,
    /// Environment variables for this member's process (e.g. `FAILPOINTS`).
    pub env: Vec<(String, String)>,
    /// The peer URL the other members are given for this one
    /// (`--initial-cluster`, `--initial-advertise-peer-urls`) when it is not
    /// the one it listens on: a proxy in front of it
    /// ([`ClusterOptions::peer_proxy`]).
    pub peer_advertise: Option<String>,
    /// The port the member serves the Kubernetes API on
    /// (`--listen-api-urls https://127.0.0.1:<port>`), if it does.
    pub api_port: Option<u16>,
}

impl Member {
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.host, self.client_port)
    }

    /// The peer URL the other members reach this one on.
    pub fn peer_url(&self) -> String {
        self.peer_advertise.clone().unwrap_or_else(|| self.listen_peer_url())
    }

    /// The peer URL the member listens on.
    pub fn listen_peer_url(&self) -> String {
        format!("http://{}:{}", self.host, self.peer_port)
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }
}

/// See the module docs.
pub struct Cluster {
    pub members: Vec<Member>,
    /// Extra flags every member gets.
    pub extra: Vec<String>,
    /// The `keelson` binary the members run.
    pub bin: std::path::PathBuf,
    /// See [`ClusterOptions::log_dir`].
    pub log_dir: Option<std::path::PathBuf>,
    net: Option<Bridge>,
    _dir: tempfile::TempDir,
}

/// A bridge in the host namespace with one veth per member namespace.
struct Bridge {
    name: String,
    /// The first three octets of the /24 the members are on.
    prefix: String,
}

fn run(cmd: &str) -> anyhow::Result<()> {
    let out = Command::new("sh").arg("-c").arg(cmd).output().with_context(|| format!("run {cmd}"))?;
    if !out.status.success() {
        bail!("{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// How [`Cluster::start_with`] starts a cluster.
#[derive(Clone, Debug, Default)]
pub struct ClusterOptions {
    /// One network namespace per member ([`Cluster::start_isolated`]).
    pub isolated: bool,
    /// The binary the members run (default: [`keelson_bin`]).
    pub bin: Option<std::path::PathBuf>,
    /// Per-member environment for the first start, by member index.
    pub env: Vec<(usize, String, String)>,
    /// Where members write their logs (`<name>.log`, appended across
    /// restarts) instead of the test's stderr.
    pub log_dir: Option<std::path::PathBuf>,
    /// With `isolated`: each member advertises its peer URL on the host's
    /// end of the bridge (a free port each, which the proxy may change in
    /// [`Member::peer_advertise`] before the members start, see `deferred`),
    /// where the test runs a proxy to the member's own peer URL
    /// ([`Member::listen_peer_url`]); the proxy tells the sending member by
    /// its source address.
    pub peer_proxy: bool,
    /// Set the members up but start none: the caller starts them with
    /// [`Cluster::start_all`] (e.g. once its peer proxy runs).
    pub deferred: bool,
    /// Every member also serves the Kubernetes API on a free loopback port
    /// (not with `isolated`).
    pub api: bool,
}

impl Cluster {
    /// Starts `n` members on 127.0.0.1 and waits until every one is
    /// healthy (it knows a leader).
    pub fn start(n: usize, extra: &[&str]) -> anyhow::Result<Cluster> {
        Cluster::start_with(n, extra, &ClusterOptions::default())
    }

    /// Starts `n` members, each in a network namespace of its own joined to
    /// the host by a bridge, on 10.x.y.(10+i). Needs root.
    pub fn start_isolated(n: usize, extra: &[&str]) -> anyhow::Result<Cluster> {
        Cluster::start_with(n, extra, &ClusterOptions { isolated: true, ..Default::default() })
    }

    /// Starts `n` members as `opts` says and waits until every one is
    /// healthy.
    pub fn start_with(n: usize, extra: &[&str], opts: &ClusterOptions) -> anyhow::Result<Cluster> {
        let mut c = Cluster::new(extra)?;
        if let Some(bin) = &opts.bin {
            c.bin = bin.clone();
        }
        c.log_dir = opts.log_dir.clone();
        if opts.isolated {
            c.add_bridge(n)?;
        } else {
            for i in 0..n {
                c.push_member(i, None);
            }
        }
        if opts.peer_proxy {
            let prefix = c.net.as_ref().context("peer_proxy needs isolated")?.prefix.clone();
            for m in &mut c.members {
                m.peer_advertise = Some(format!("http://{prefix}.1:{}", free_port()));
            }
        }
        for (i, k, v) in &opts.env {
            c.members[*i].env.push((k.clone(), v.clone()));
        }
        if opts.api {
            for m in &mut c.members {
                m.api_port = Some(free_port());
            }
        }
        if !opts.deferred {
            c.start_all()?;
        }
        Ok(c)
    }

    fn add_bridge(&mut self, n: usize) -> anyhow::Result<()> {
        let c = self;
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n_th = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = (std::process::id() % 1000) * 10 + n_th % 10;
        let name = format!("kbr{tag}");
        let prefix = format!("10.{}.{}", 100 + tag / 250 % 100, tag % 250);
        run(&format!(
            "ip link add {name} type bridge && ip addr add {prefix}.1/24 dev {name} && ip link set {name} up"
        ))?;
        c.net = Some(Bridge { name: name.clone(), prefix: prefix.clone() });
        for i in 0..n {
            let ns = format!("k{tag}n{i}");
            let host_end = format!("k{tag}v{i}");
            run(&format!(
                "ip netns add {ns} && ip link add {host_end} type veth peer name eth0 netns {ns} && \
                 ip link set {host_end} master {name} && ip link set {host_end} up && \
                 ip netns exec {ns} ip addr add {prefix}.{}/24 dev eth0 && \
                 ip netns exec {ns} ip link set eth0 up && ip netns exec {ns} ip link set lo up",
                10 + i
            ))?;
            c.push_member(i, Some(ns));
        }
        Ok(())
    }

    fn new(extra: &[&str]) -> anyhow::Result<Cluster> {
        Ok(Cluster {
            members: Vec::new(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            bin: keelson_bin(),
            log_dir: None,
            net: None,
            _dir: tempfile::tempdir()?,
        })
    }

    fn push_member(&mut self, i: usize, netns: Option<String>) {
        let host = match &self.net {
            Some(b) => format!("{}.{}", b.prefix, 10 + i),
            None => "127.0.0.1".to_string(),
        };
        // In a namespace of its own a member has the ports to itself.
        let (client_port, peer_port) =
            if netns.is_some() { (2379, 2380) } else { (free_port(), free_port()) };
        self.members.push(Member {
            name: format!("n{}", i + 1),
            host,
            client_port,
            peer_port,
            data_dir: self._dir.path().join(format!("n{}", i + 1)),
            child: None,
            joins: false,
            netns,
            extra: Vec::new(),
            env: Vec::new(),
            peer_advertise: None,
            api_port: None,
        });
    }

    /// Starts every member and waits until each is healthy.
    pub fn start_all(&mut self) -> anyhow::Result<()> {
        for i in 0..self.members.len() {
            self.spawn(i)?;
        }
        for i in 0..self.members.len() {
            self.wait_healthy(i, Duration::from_secs(30))?;
        }
        Ok(())
    }

    /// `--initial-cluster` naming every member.
    pub fn initial_cluster(&self) -> String {
        self.members.iter().map(|m| format!("{}={}", m.name, m.peer_url())).collect::<Vec<_>>().join(",")
    }

    /// The client endpoints of the running members, comma-separated.
    pub fn endpoints(&self) -> String {
        self.members.iter().filter(|m| m.running()).map(Member::endpoint).collect::<Vec<_>>().join(",")
    }

    pub fn endpoint(&self, i: usize) -> String {
        self.members[i].endpoint()
    }

    /// Starts member `i`'s process (again), not waiting for it.
    pub fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let initial = self.initial_cluster();
        let m = &self.members[i];
        let client = format!("http://{}:{}", m.host, m.client_port);
        let mut listen_client = client.clone();
        if m.netns.is_some() {
            // Also on the namespace's own loopback, so a test can reach a
            // member it cut off from everyone.
            listen_client.push_str(&format!(",http://127.0.0.1:{}", m.client_port));
        }
        let mut args: Vec<String> = vec![
            "server".into(),
            "--name".into(),
            m.name.clone(),
            "--data-dir".into(),
            m.data_dir.display().to_string(),
            "--listen-client-urls".into(),
            listen_client,
            "--advertise-client-urls".into(),
            client,
            "--listen-peer-urls".into(),
            m.listen_peer_url(),
            "--initial-advertise-peer-urls".into(),
            m.peer_url(),
            "--initial-cluster".into(),
            initial,
            "--initial-cluster-token".into(),
            "keelson-test".into(),
            "--initial-cluster-state".into(),
            if m.joins { "existing".into() } else { "new".into() },
            "--log-level".into(),
            "warn".into(),
        ];
        if let Some(port) = m.api_port {
            args.extend(["--listen-api-urls".into(), format!("https://127.0.0.1:{port}")]);
        }
        args.extend(self.extra.iter().cloned());
        args.extend(m.extra.iter().cloned());
        let mut cmd = match &m.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        let stderr = match &self.log_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                let log = dir.join(format!("{}.log", m.name));
                Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(&log)?)
            }
            None => Stdio::inherit(),
        };
        let child = cmd
            .args(&args)
            .envs(m.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("spawn keelson server")?;
        self.members[i].child = Some(child);
        Ok(())
    }

    /// Waits until member `i` answers `/health` with `true`.
    pub fn wait_healthy(&mut self, i: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let m = &mut self.members[i];
            if let Some(c) = m.child.as_mut()
                && let Some(status) = c.try_wait()?
            {
                m.child = None;
                bail!("member {} exited early: {status}", m.name);
            }
            if http_get_host(&m.host, m.client_port, "/health").is_ok_and(|b| b.contains("\"true\"")) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("member {} not healthy after {timeout:?}", self.members[i].name)
    }

    /// Where member `i`'s current MVCC store is (its RocksDB directory).
    pub fn store_dir(&self, i: usize) -> std::path::PathBuf {
        let member = self.members[i].data_dir.join("member");
        match std::fs::read_to_string(member.join("kv.current")) {
            Ok(name) => member.join(name.trim()),
            Err(_) => member.join("kv"),
        }
    }

    /// `kill -9` of member `i`.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops member `i`'s process with SIGSTOP (it keeps its sockets but
    /// answers nothing) or, with `pause == false`, resumes it (SIGCONT).
    pub fn signal_pause(&self, i: usize, pause: bool) -> anyhow::Result<()> {
        let pid = self.members[i].child.as_ref().context("member not running")?.id();
        run(&format!("kill -{} {pid}", if pause { "STOP" } else { "CONT" }))
    }

    /// Whether member `i`'s process has exited by itself (and reaps it).
    pub fn exited(&mut self, i: usize) -> bool {
        match self.members[i].child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(_))) => {
                self.members[i].child = None;
                true
            }
            Some(_) => false,
            None => true,
        }
    }

    /// Whether member `i` says it is the leader (`etcd_server_is_leader`).
    pub fn is_leader(&self, i: usize) -> bool {
        let m = &self.members[i];
        m.running()
            && http_get_host(&m.host, m.client_port, "/metrics")
                .is_ok_and(|b| b.lines().any(|l| l.trim() == "etcd_server_is_leader 1"))
    }

    /// The running member that says it is the leader.
    pub fn leader(&self) -> Option<usize> {
        (0..self.members.len()).find(|&i| self.is_leader(i))
    }

    /// Waits for a leader among the running members.
    pub fn wait_leader(&self, timeout: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(l) = self.leader() {
                return Ok(l);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("no leader after {timeout:?}")
    }

    /// Adds a member process (not started) that joins the running cluster;
    /// returns its index. Add it to the membership first (MemberAdd).
    pub fn add_joining_member(&mut self) -> usize {
        let i = self.members.len();
        self.push_member(i, None);
        self.members[i].joins = true;
        i
    }

    /// Runs `cmd` (a shell command) inside member `i`'s namespace.
    pub fn in_netns(&self, i: usize, cmd: &str) -> anyhow::Result<()> {
        let ns = self.members[i].netns.as_ref().context("member not in a namespace")?;
        run(&format!("ip netns exec {ns} sh -c '{cmd}'"))
    }

    /// Cuts member `i` off the network (its end of the link goes down):
    /// neither its peers nor clients outside its namespace reach it.
    pub fn isolate(&self, i: usize) -> anyhow::Result<()> {
        self.in_netns(i, "ip link set eth0 down")
    }

    /// Puts member `i` back on the network.
    pub fn heal(&self, i: usize) -> anyhow::Result<()> {
        let prefix = &self.net.as_ref().context("not isolated")?.prefix;
        self.in_netns(i, &format!("ip link set eth0 up && ip addr replace {prefix}.{}/24 dev eth0", 10 + i))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill9(i);
        }
        if let Some(b) = &self.net {
            for m in &self.members {
                if let Some(ns) = &m.netns {
                    let _ = run(&format!("ip netns del {ns}"));
                }
            }
            let _ = run(&format!("ip link del {}", b.name));
        }
    }
}
