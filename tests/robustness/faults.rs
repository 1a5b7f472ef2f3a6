//! Faults injected into a running cluster, from a thread of their own that
//! owns the [`Cluster`] while the traffic runs. The same thread restarts
//! members that crash (a failpoint's `panic` aborts the process) and
//! reports any member that exits when nothing should have stopped it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use keelson_tests::Cluster;
use rand::Rng;
use rand::rngs::StdRng;

use crate::proxy::{LinkFault, Links};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9` of the leader, restarted a moment later.
    KillLeader,
    /// `kill -9` of a follower, restarted a moment later.
    KillFollower,
    /// `kill -9` of two members (the leader and a follower): no quorum.
    KillTwo,
    /// `kill -9` of every member, then all restarted.
    KillAll,
    /// SIGSTOP of a member (the leader or a follower), SIGCONT later.
    Pause,
    /// A member (the leader or a follower) cut off the network, healed later.
    Partition,
    /// Members crash at failpoints before/after the WAL fsync, before/after
    /// the apply commit and in physical compaction, and are restarted.
    FailpointCrash,
    /// A follower falls behind the leader's log, then crashes while
    /// installing the snapshot it gets, and is restarted.
    SnapshotInstall,
    /// Slow fsyncs and applies (failpoint sleeps) on every member, plus a
    /// leader kill.
    SlowDisk,
    /// What a member (the leader or a follower) sends one or all of its
    /// peers is delayed 200 ± 50 ms (the peer proxy), for a few seconds.
    Delay,
    /// What a member (the leader or a follower) sends one or all of its
    /// peers loses 30% of its packets (as TCP sees it: retransmission
    /// stalls; the peer proxy), for a few seconds.
    Drop,
}

pub const ALL: [Fault; 11] = [
    Fault::KillLeader,
    Fault::KillFollower,
    Fault::KillTwo,
    Fault::KillAll,
    Fault::Pause,
    Fault::Partition,
    Fault::FailpointCrash,
    Fault::SnapshotInstall,
    Fault::SlowDisk,
    Fault::Delay,
    Fault::Drop,
];

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::KillLeader => "kill-leader",
            Fault::KillFollower => "kill-follower",
            Fault::KillTwo => "kill-two",
            Fault::KillAll => "kill-all",
            Fault::Pause => "pause",
            Fault::Partition => "partition",
            Fault::FailpointCrash => "failpoint-crash",
            Fault::SnapshotInstall => "snapshot-install",
            Fault::SlowDisk => "slow-disk",
            Fault::Delay => "delay",
            Fault::Drop => "drop",
        }
    }

    /// Members run in network namespaces of their own.
    pub fn isolated(self) -> bool {
        matches!(self, Fault::Partition | Fault::Delay | Fault::Drop)
    }

    /// Peer traffic goes through the fault-injecting proxy.
    pub fn proxied(self) -> bool {
        matches!(self, Fault::Delay | Fault::Drop)
    }

    pub fn needs_failpoints(self) -> bool {
        matches!(self, Fault::FailpointCrash | Fault::SnapshotInstall | Fault::SlowDisk)
    }

    /// Members are expected to exit by themselves (failpoint crashes).
    pub fn crashes(self) -> bool {
        matches!(self, Fault::FailpointCrash | Fault::SnapshotInstall)
    }

    /// `FAILPOINTS` for each member at the start.
    pub fn initial_env(self, rng: &mut StdRng, n: usize) -> Vec<(usize, String, String)> {
        const CRASH: [(&str, u32, u32); 5] = [
            ("wal-before-fsync", 50, 400),
            ("wal-after-fsync", 50, 400),
            ("apply-before-commit", 50, 400),
            ("apply-after-commit", 50, 400),
            ("compaction-before-finish", 1, 4),
        ];
        match self {
            Fault::FailpointCrash => {
                // Each member crashes at another point, after a random
                // number of hits (and again after as many more once
                // restarted).
                let first = rng.random_range(0..CRASH.len());
                (0..n)
                    .map(|i| {
                        let (fp, lo, hi) = CRASH[(first + i) % CRASH.len()];
                        let hits = rng.random_range(lo..hi);
                        (i, "FAILPOINTS".to_string(), format!("{fp}={hits}*off->panic"))
                    })
                    .collect()
            }
            Fault::SlowDisk => (0..n)
                .map(|i| {
                    let v = "wal-before-fsync=20%sleep(40);apply-before-commit=10%sleep(20);\
                             compaction-before-finish=sleep(200)";
                    (i, "FAILPOINTS".to_string(), v.to_string())
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// What the fault thread saw and did.
#[derive(Debug, Default)]
pub struct FaultLog {
    pub actions: Vec<String>,
    /// Members that exited when nothing should have stopped them.
    pub unexpected_exits: Vec<String>,
    pub crashes_restarted: usize,
}

struct Ctx<'a> {
    c: &'a mut Cluster,
    log: FaultLog,
    start: Instant,
    crashes_expected: bool,
    links: Option<Arc<Links>>,
}

impl Ctx<'_> {
    fn note(&mut self, s: String) {
        self.log.actions.push(format!("{:>6.2}s {s}", self.start.elapsed().as_secs_f64()));
    }

    /// Sleeps `d`, restarting members that exited by themselves.
    fn wait(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.reap();
            std::thread::sleep(
                Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())),
            );
        }
    }

    fn reap(&mut self) {
        for i in 0..self.c.members.len() {
            // The exit status too (a signal, or the code), to tell a crash
            // from a shutdown.
            let status = match self.c.members[i].child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(st))) => st,
                _ => continue,
            };
            self.c.members[i].child = None;
            let name = self.c.members[i].name.clone();
            if self.crashes_expected {
                self.log.crashes_restarted += 1;
                self.note(format!("{name} crashed (failpoint, {status}), restarting"));
            } else {
                self.log.unexpected_exits.push(format!("{name} ({status})"));
                self.note(format!("{name} EXITED UNEXPECTEDLY ({status}), restarting"));
            }
            let _ = self.c.spawn(i);
        }
    }

    fn leader(&mut self) -> Option<usize> {
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Some(l) = self.c.leader() {
                return Some(l);
            }
            self.wait(Duration::from_millis(100));
        }
        None
    }

    fn leader_or_follower(&mut self, rng: &mut StdRng, leader: bool) -> usize {
        let n = self.c.members.len();
        let l = self.leader().unwrap_or(0);
        if leader { l } else { (l + 1 + rng.random_range(0..n - 1)) % n }
    }

    fn kill(&mut self, i: usize) {
        self.note(format!("kill -9 {}", self.c.members[i].name));
        self.c.kill9(i);
    }

    fn restart(&mut self, i: usize) {
        self.note(format!("restart {}", self.c.members[i].name));
        if let Err(e) = self.c.spawn(i) {
            self.note(format!("restart {} failed: {e}", self.c.members[i].name));
        }
    }
}

/// Runs `fault` against `c` until `stop`: after a warm-up, then (with
/// `repeat`) again every few seconds.
pub fn inject(
    c: &mut Cluster,
    fault: Fault,
    rng: &mut StdRng,
    stop: Arc<AtomicBool>,
    warmup: Duration,
    repeat: Option<Duration>,
    links: Option<Arc<Links>>,
) -> FaultLog {
    let mut x =
        Ctx { c, log: FaultLog::default(), start: Instant::now(), crashes_expected: fault.crashes(), links };
    x.wait(warmup);
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        once(&mut x, fault, rng);
        match repeat {
            Some(d) => {
                let until = Instant::now() + d;
                while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    x.wait(Duration::from_millis(100));
                }
            }
            None => {
                while !stop.load(Ordering::Relaxed) {
                    x.wait(Duration::from_millis(100));
                }
                break;
            }
        }
    }
    x.log
}

fn once(x: &mut Ctx<'_>, fault: Fault, rng: &mut StdRng) {
    let n = x.c.members.len();
    match fault {
        Fault::KillLeader | Fault::KillFollower => {
            let i = x.leader_or_follower(rng, fault == Fault::KillLeader);
            x.kill(i);
            x.wait(Duration::from_millis(rng.random_range(300..1500)));
            x.restart(i);
        }
        Fault::KillTwo => {
            let l = x.leader_or_follower(rng, true);
            let f = (l + 1 + rng.random_range(0..n - 1)) % n;
            x.kill(l);
            x.kill(f);
            x.wait(Duration::from_millis(rng.random_range(500..1500)));
            x.restart(f);
            x.restart(l);
        }
        Fault::KillAll => {
            for i in 0..n {
                x.kill(i);
            }
            x.wait(Duration::from_millis(rng.random_range(200..800)));
            for i in 0..n {
                x.restart(i);
            }
        }
        Fault::Pause => {
            let leader = rng.random_bool(0.5);
            let i = x.leader_or_follower(rng, leader);
            x.note(format!("SIGSTOP {}", x.c.members[i].name));
            let _ = x.c.signal_pause(i, true);
            // Not `wait`: a stopped process has not exited.
            std::thread::sleep(Duration::from_millis(rng.random_range(1000..2500)));
            x.note(format!("SIGCONT {}", x.c.members[i].name));
            let _ = x.c.signal_pause(i, false);
        }
        Fault::Partition => {
            let leader = rng.random_bool(0.5);
            let i = x.leader_or_follower(rng, leader);
            x.note(format!("isolate {}", x.c.members[i].name));
            if let Err(e) = x.c.isolate(i) {
                x.note(format!("isolate failed: {e}"));
            }
            x.wait(Duration::from_millis(rng.random_range(1500..3000)));
            x.note(format!("heal {}", x.c.members[i].name));
            if let Err(e) = x.c.heal(i) {
                x.note(format!("heal failed: {e}"));
            }
        }
        Fault::FailpointCrash => {
            // The failpoints do it; the reaper restarts.
        }
        Fault::SnapshotInstall => {
            let f = x.leader_or_follower(rng, false);
            x.kill(f);
            // Long enough for the leader to write past several snapshots
            // and purge what the follower misses.
            x.wait(Duration::from_millis(3000));
            let fp = ["snapshot-install-unpacked", "snapshot-install-switched"][rng.random_range(0..2)];
            x.c.members[f].env.retain(|(k, _)| k != "FAILPOINTS");
            x.c.members[f].env.push(("FAILPOINTS".into(), format!("{fp}=1*panic")));
            x.note(format!("restart {} with {fp}", x.c.members[f].name));
            let _ = x.c.spawn(f);
            let until = Instant::now() + Duration::from_secs(3);
            while Instant::now() < until && x.c.members[f].running() && !x.c.exited(f) {
                std::thread::sleep(Duration::from_millis(50));
            }
            x.c.members[f].env.retain(|(k, _)| k != "FAILPOINTS");
            if x.c.members[f].running() {
                x.note(format!("{} did not crash installing a snapshot (none sent?)", x.c.members[f].name));
            } else {
                x.log.crashes_restarted += 1;
                x.restart(f);
            }
        }
        Fault::SlowDisk => {
            let i = x.leader_or_follower(rng, true);
            x.kill(i);
            x.wait(Duration::from_millis(rng.random_range(300..1000)));
            x.restart(i);
        }
        Fault::Delay | Fault::Drop => {
            let Some(links) = x.links.clone() else {
                x.note("no peer proxy: fault not injected".to_string());
                return;
            };
            let leader = rng.random_bool(0.5);
            let i = x.leader_or_follower(rng, leader);
            let peers: Vec<usize> = if rng.random_bool(0.5) {
                (0..n).filter(|&p| p != i).collect()
            } else {
                vec![(i + 1 + rng.random_range(0..n - 1)) % n]
            };
            let f = match fault {
                Fault::Delay => {
                    LinkFault::Delay { base: Duration::from_millis(200), jitter: Duration::from_millis(50) }
                }
                _ => LinkFault::Loss { p: 0.3 },
            };
            for &p in &peers {
                links.set(i, p, f);
            }
            let names: Vec<&str> = peers.iter().map(|&p| x.c.members[p].name.as_str()).collect();
            x.note(format!("{f:?} from {} to {}", x.c.members[i].name, names.join(",")));
            x.wait(Duration::from_millis(rng.random_range(2000..4000)));
            links.clear();
            x.note("links healed".to_string());
        }
    }
}

/// Puts the cluster back together after the traffic: every member resumed,
/// on the network, running and healthy.
pub fn recover(c: &mut Cluster) -> anyhow::Result<()> {
    // Members with failpoints are restarted without them: the final reads
    // must not race a crash.
    for i in 0..c.members.len() {
        if c.members[i].env.iter().any(|(k, _)| k == "FAILPOINTS") {
            c.members[i].env.retain(|(k, _)| k != "FAILPOINTS");
            let _ = c.signal_pause(i, false);
            c.kill9(i);
        }
    }
    for i in 0..c.members.len() {
        let _ = c.signal_pause(i, false);
        if c.members[i].netns.is_some() {
            let _ = c.heal(i);
        }
        if !c.members[i].running() || c.exited(i) {
            c.spawn(i)?;
        }
    }
    for i in 0..c.members.len() {
        let mut tries = 0;
        loop {
            match c.wait_healthy(i, Duration::from_secs(30)) {
                Ok(()) => break,
                Err(e) if tries < 3 => {
                    tries += 1;
                    eprintln!("member {} not back yet ({e}), restarting", c.members[i].name);
                    if !c.members[i].running() {
                        c.spawn(i)?;
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}
