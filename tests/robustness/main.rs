//! The robustness suite (issue 5): a cluster of 3 (or, in the soak, 5)
//! real `keelson server` processes under client traffic (etcd-style or
//! Kubernetes-style) while faults are injected (kill -9, SIGSTOP, network
//! partition, packet delay and loss between members through a peer proxy,
//! failpoint crashes and slow disks, compaction throughout). Every client
//! call and every watch response is recorded into a history, which the
//! checkers of `keelson_tests::checker` then judge: linearizability, each
//! watch guarantee, revisions never going backwards, no acknowledged write
//! lost; and at the end every member must hold the same keyspace and the
//! same HashKV.
//!
//! One short seeded run per fault × profile (the tests below, run one at a
//! time); `soak` (ignored) runs random scenarios for `ROBUSTNESS_SOAK_SECS`.
//! A failing run prints its seed and keeps its history file. See
//! `docs/testing.md`.

mod client;
mod faults;
mod proxy;
mod traffic;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keelson_proto::etcdserverpb as pb;
use keelson_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use keelson_tests::checker::{
    CheckOptions, FinalState, History, KeyValue, Outcome, RangeRequest, Request, Response, check_history,
};
use keelson_tests::{Cluster, ClusterOptions, keelson_failpoints_bin};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use client::{KvConn, Recorder, channel};
use faults::Fault;
use traffic::Profile;

/// Flags of every member: fast elections (more leader changes for the
/// same run time) and frequent snapshots (followers that fall behind get
/// one).
const MEMBER_FLAGS: &[&str] = &["--heartbeat-interval=50", "--election-timeout=500", "--snapshot-count=200"];

/// [`MEMBER_FLAGS`], plus `ROBUSTNESS_MEMBER_FLAGS` (space-separated; a
/// flag given there replaces the default one, e.g. `--snapshot-count=100000` to leave snapshots out).
fn member_flags() -> Vec<&'static str> {
    let mut flags = MEMBER_FLAGS.to_vec();
    if let Ok(extra) = std::env::var("ROBUSTNESS_MEMBER_FLAGS") {
        for f in extra.leak().split_whitespace() {
            let name = f.split('=').next().unwrap_or(f);
            flags.retain(|g| g.split('=').next() != Some(name));
            flags.push(f);
        }
    }
    flags
}

/// Client ids: traffic 1.., compactor 50, watchers 60.., final reads 90..
const COMPACTOR: u64 = 50;
const WATCHERS: u64 = 60;
const FINAL: u64 = 90;

#[derive(Clone, Debug)]
struct Scenario {
    fault: Fault,
    profile: Profile,
    seed: u64,
    traffic: Duration,
    /// Inject the fault again every this often (soak).
    repeat: Option<Duration>,
    clients: usize,
    pace: Duration,
    /// Cluster size.
    members: usize,
}

impl Scenario {
    fn name(&self) -> String {
        let size = if self.members == 3 { String::new() } else { format!("-{}members", self.members) };
        format!("{}-{}{size}-seed{}", self.profile.name(), self.fault.name(), self.seed)
    }
}

/// Scenarios of one process run one at a time (the machine has 2 cores;
/// two 3-member clusters at once would mostly measure the overload).
static SERIAL: Mutex<()> = Mutex::new(());

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The seed of a CI run: `ROBUSTNESS_SEED`, or one fixed per scenario.
fn ci_seed(fault: Fault, profile: Profile) -> u64 {
    env_u64("ROBUSTNESS_SEED").unwrap_or_else(|| {
        let name = format!("{}/{}", profile.name(), fault.name());
        name.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
    })
}

fn ci(fault: Fault, profile: Profile) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let secs = env_u64("ROBUSTNESS_TRAFFIC_SECS").unwrap_or(6);
    let s = Scenario {
        fault,
        profile,
        seed: ci_seed(fault, profile),
        traffic: Duration::from_secs(if fault == Fault::SnapshotInstall { secs + 3 } else { secs }),
        repeat: None,
        clients: 3,
        pace: Duration::from_millis(4),
        members: 3,
    };
    if let Err(e) = run(&s) {
        panic!("{}: {e}", s.name());
    }
}

macro_rules! ci_tests {
    ($($name:ident: $fault:ident, $profile:ident;)*) => {
        $(
            #[test]
            fn $name() {
                ci(Fault::$fault, Profile::$profile);
            }
        )*
    };
}

ci_tests! {
    etcd_kill_leader: KillLeader, Etcd;
    etcd_kill_follower: KillFollower, Etcd;
    etcd_kill_two: KillTwo, Etcd;
    etcd_kill_all: KillAll, Etcd;
    etcd_pause: Pause, Etcd;
    etcd_partition: Partition, Etcd;
    etcd_failpoint_crash: FailpointCrash, Etcd;
    etcd_snapshot_install: SnapshotInstall, Etcd;
    etcd_slow_disk: SlowDisk, Etcd;
    etcd_delay: Delay, Etcd;
    etcd_drop: Drop, Etcd;
    kubernetes_kill_leader: KillLeader, Kubernetes;
    kubernetes_kill_follower: KillFollower, Kubernetes;
    kubernetes_kill_two: KillTwo, Kubernetes;
    kubernetes_kill_all: KillAll, Kubernetes;
    kubernetes_pause: Pause, Kubernetes;
    kubernetes_partition: Partition, Kubernetes;
    kubernetes_failpoint_crash: FailpointCrash, Kubernetes;
    kubernetes_snapshot_install: SnapshotInstall, Kubernetes;
    kubernetes_slow_disk: SlowDisk, Kubernetes;
    kubernetes_delay: Delay, Kubernetes;
    kubernetes_drop: Drop, Kubernetes;
}

/// A long run: random fault × profile scenarios until
/// `ROBUSTNESS_SOAK_SECS` (default 1800) have passed, each with
/// `ROBUSTNESS_TRAFFIC_SECS` (default 40) of traffic and its fault
/// repeated every ~6 s. Seeded by `ROBUSTNESS_SEED` (default: the time).
/// Clusters of 3 and 5 members alternate: in each round every pair runs
/// with one size, in the next round with the other
/// (`ROBUSTNESS_MEMBERS=N` runs every scenario with N).
#[test]
#[ignore]
fn soak() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let total = Duration::from_secs(env_u64("ROBUSTNESS_SOAK_SECS").unwrap_or(1800));
    let traffic = Duration::from_secs(env_u64("ROBUSTNESS_TRAFFIC_SECS").unwrap_or(40));
    let seed = env_u64("ROBUSTNESS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    });
    eprintln!("soak: seed {seed}, {total:?}, {traffic:?} of traffic per scenario");
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let (mut runs, mut runs5, mut failures) = (0, 0, Vec::new());
    let fixed_members = env_u64("ROBUSTNESS_MEMBERS").map(|n| n as usize);
    let mut order: Vec<(Fault, Profile, usize)> = Vec::new();
    let mut round = 0;
    while started.elapsed() < total {
        if order.is_empty() {
            for f in faults::ALL {
                for p in [Profile::Etcd, Profile::Kubernetes] {
                    let members =
                        fixed_members.unwrap_or(if (round + order.len()).is_multiple_of(2) { 3 } else { 5 });
                    order.push((f, p, members));
                }
            }
            round += 1;
            // A shuffle, so that every pair comes once per round.
            for i in (1..order.len()).rev() {
                order.swap(i, rng.random_range(0..=i));
            }
        }
        let (fault, profile, members) = order.pop().unwrap();
        let s = Scenario {
            fault,
            profile,
            seed: rng.random(),
            traffic,
            repeat: Some(Duration::from_secs(6)),
            clients: 4,
            pace: Duration::from_millis(3),
            members,
        };
        runs += 1;
        runs5 += usize::from(members == 5);
        if let Err(e) = run(&s) {
            eprintln!("soak: {} FAILED: {e}", s.name());
            failures.push(format!("{}: {e}", s.name()));
        }
    }
    eprintln!(
        "soak: {runs} scenarios ({} with 5 members) in {:?}, {} failed",
        runs5,
        started.elapsed(),
        failures.len()
    );
    assert!(failures.is_empty(), "soak failures:\n{}", failures.join("\n"));
}

/// One scenario as the soak runs it, to reproduce a soak failure:
/// `ROBUSTNESS_SCENARIO=<profile>-<fault>` (e.g. `kubernetes-kill-leader`),
/// `ROBUSTNESS_SEED` (the scenario's seed from the failure message),
/// `ROBUSTNESS_MEMBERS` (default 3; 5 for a scenario named
/// `…-5members-…`), `ROBUSTNESS_TRAFFIC_SECS` (default 40).
#[test]
#[ignore]
fn scenario() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let name = std::env::var("ROBUSTNESS_SCENARIO").expect("ROBUSTNESS_SCENARIO=<profile>-<fault>");
    let (fault, profile) = faults::ALL
        .iter()
        .flat_map(|&f| [(f, Profile::Etcd), (f, Profile::Kubernetes)])
        .find(|(f, p)| format!("{}-{}", p.name(), f.name()) == name)
        .expect("a known scenario");
    let s = Scenario {
        fault,
        profile,
        seed: env_u64("ROBUSTNESS_SEED").unwrap_or(1),
        traffic: Duration::from_secs(env_u64("ROBUSTNESS_TRAFFIC_SECS").unwrap_or(40)),
        repeat: Some(Duration::from_secs(6)),
        clients: 4,
        pace: Duration::from_millis(3),
        members: env_u64("ROBUSTNESS_MEMBERS").unwrap_or(3) as usize,
    };
    if let Err(e) = run(&s) {
        panic!("{}: {e}", s.name());
    }
}

/// Re-runs the checkers on a kept history: `ROBUSTNESS_REPLAY=<history.json>`
/// (with `<history>.final.json` beside it if there is one).
#[test]
#[ignore]
fn replay() {
    let path =
        std::path::PathBuf::from(std::env::var("ROBUSTNESS_REPLAY").expect("ROBUSTNESS_REPLAY=<file>"));
    let h = History::load(&path).unwrap();
    let final_path = path.with_extension("final.json");
    let fs: Option<FinalState> =
        std::fs::read_to_string(&final_path).ok().map(|t| serde_json::from_str(&t).expect("final state"));
    let report = check_history(&h, fs.as_ref(), &check_options());
    println!("{report}");
    assert!(report.passed());
}

fn check_options() -> CheckOptions {
    CheckOptions { timeout: Some(Duration::from_secs(90)), ..CheckOptions::default() }
}

/// Runs one scenario; `Err` describes every violation found (the history
/// is kept and its path is in the message).
fn run(s: &Scenario) -> Result<(), String> {
    let t0 = Instant::now();
    let mut rng = StdRng::seed_from_u64(s.seed);
    // ROBUSTNESS_BIN: another server binary (e.g. a candidate fix built
    // with the failpoints feature).
    let bin =
        std::env::var_os("ROBUSTNESS_BIN").map(std::path::PathBuf::from).or_else(keelson_failpoints_bin);
    if s.fault.needs_failpoints() && bin.is_none() {
        eprintln!("{}: SKIPPED: no keelson-failpoints binary (scripts/test builds it)", s.name());
        return Ok(());
    }
    let n = s.members;
    let mut env = s.fault.initial_env(&mut rng, n);
    // ROBUSTNESS_MEMBER_LOG=info (a RUST_LOG filter) for the members' logs.
    if let Ok(filter) = std::env::var("ROBUSTNESS_MEMBER_LOG") {
        env.extend((0..n).map(|i| (i, "RUST_LOG".to_string(), filter.clone())));
    }
    let out_dir = std::env::temp_dir().join("keelson-robustness");
    let log_dir = out_dir.join(format!("{}-{}-logs", s.name(), std::process::id()));
    let opts = ClusterOptions {
        isolated: s.fault.isolated(),
        peer_proxy: s.fault.proxied(),
        deferred: s.fault.proxied(),
        bin,
        env,
        log_dir: Some(log_dir.clone()),
        ..Default::default()
    };
    let mut cluster =
        Cluster::start_with(n, &member_flags(), &opts).map_err(|e| format!("start cluster: {e}"))?;
    // The peer proxy (delay and drop faults) runs before the members start.
    let proxy = match s.fault.proxied() {
        true => {
            let p = proxy::PeerProxy::start(&mut cluster, rng.random())
                .map_err(|e| format!("peer proxy: {e:#}"))?;
            cluster.start_all().map_err(|e| format!("start cluster: {e:#}"))?;
            Some(p)
        }
        false => None,
    };
    let links = proxy.as_ref().map(|p| p.links.clone());
    let endpoints: Vec<String> = (0..n).map(|i| cluster.endpoint(i)).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    // Channels are made (lazily) inside the runtime.
    let _in_runtime = rt.enter();
    let rec = Recorder::new();
    let stop = Arc::new(AtomicBool::new(false));

    // Traffic, compaction and watches.
    let mut tasks = Vec::new();
    for c in 0..s.clients {
        let conn = KvConn::new(c as u64 + 1, endpoints.clone(), c, rec.clone());
        let (seed, stop) = (s.seed ^ (c as u64 + 1).wrapping_mul(0x9e3779b97f4a7c15), stop.clone());
        tasks.push(match s.profile {
            Profile::Etcd => rt.spawn(traffic::etcd_client(conn, seed, stop, s.pace)),
            Profile::Kubernetes => rt.spawn(traffic::kubernetes_client(conn, seed, stop, s.pace)),
        });
    }
    let conn = KvConn::new(COMPACTOR, endpoints.clone(), 0, rec.clone());
    // ROBUSTNESS_NO_COMPACTION=1 leaves compaction out (to narrow down a
    // failure).
    if std::env::var_os("ROBUSTNESS_NO_COMPACTION").is_none() {
        tasks.push(rt.spawn(traffic::compactor(conn, s.profile, stop.clone())));
    }
    for w in 0..2 {
        let prefix = s.profile.prefix();
        tasks.push(rt.spawn(traffic::watcher(
            WATCHERS + w,
            endpoints.clone(),
            prefix,
            rec.clone(),
            stop.clone(),
        )));
    }

    // Faults, from a thread that owns the cluster meanwhile.
    let (fault, repeat) = (s.fault, s.repeat);
    let mut fault_rng = StdRng::seed_from_u64(rng.random());
    let fstop = stop.clone();
    let injector = std::thread::spawn(move || {
        let log = faults::inject(
            &mut cluster,
            fault,
            &mut fault_rng,
            fstop,
            Duration::from_millis(1000),
            repeat,
            links,
        );
        (cluster, log)
    });
    std::thread::sleep(s.traffic);
    stop.store(true, Ordering::Relaxed);
    let (mut cluster, fault_log) = injector.join().map_err(|_| "fault thread panicked".to_string())?;
    rt.block_on(async {
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    });
    let traffic_done = t0.elapsed();

    // Everything back, then a final linearizable read and HashKV on every
    // member (recorded too: the final reads are part of the history).
    let mut problems: Vec<String> = Vec::new();
    let proxied = proxy.as_ref().map(|p| {
        p.links.clear();
        let (chunks, held) = p.links.counts();
        format!("; peer proxy: {chunks} chunks, {held} held back")
    });
    if let Err(e) = faults::recover(&mut cluster) {
        problems.push(format!("cluster did not recover: {e}"));
    }
    for name in &fault_log.unexpected_exits {
        problems.push(format!("member {name} exited while no fault stopped it"));
    }
    let finals = rt.block_on(final_reads(&endpoints, &rec));
    let mut final_state = None;
    match &finals {
        Ok(reads) => {
            let (rev0, kvs0) = &reads[0];
            for (i, (rev, kvs)) in reads.iter().enumerate().skip(1) {
                if rev != rev0 || kvs != kvs0 {
                    problems.push(format!(
                        "member n{} ends at revision {rev} with {} keys, n1 at {rev0} with {} keys",
                        i + 1,
                        kvs.len(),
                        kvs0.len()
                    ));
                }
            }
            final_state = Some(FinalState { revision: *rev0, kvs: kvs0.clone() });
            match rt.block_on(hashes(&endpoints, *rev0)) {
                Ok(hs) => {
                    if hs.iter().any(|h| *h != hs[0]) {
                        problems.push(format!("HashKV at revision {rev0} differs between members: {hs:?}"));
                    }
                }
                Err(e) => problems.push(format!("HashKV: {e}")),
            }
        }
        Err(e) => problems.push(format!("final reads: {e}")),
    }
    drop(cluster);
    drop(proxy);

    let history = rec.take();
    let check_started = Instant::now();
    let report = check_history(&history, final_state.as_ref(), &check_options());
    let stats = Stats::of(&history);
    eprintln!(
        "{}: {stats}; faults: {} actions, {} crashes restarted{}; traffic+faults {:.1}s, check {:.2}s \
         ({:?}, {} steps), total {:.1}s",
        s.name(),
        fault_log.actions.len(),
        fault_log.crashes_restarted,
        proxied.unwrap_or_default(),
        traffic_done.as_secs_f64(),
        check_started.elapsed().as_secs_f64(),
        report.linearizability.verdict,
        report.linearizability.steps,
        t0.elapsed().as_secs_f64()
    );
    if !report.passed() {
        problems.push(format!("checkers:\n{report}"));
    }
    if problems.is_empty() {
        let _ = std::fs::remove_dir_all(&log_dir);
        return Ok(());
    }
    let _ = std::fs::create_dir_all(&out_dir);
    let path = out_dir.join(format!("{}-{}.json", s.name(), std::process::id()));
    let saved = history.save(&path);
    if let Some(fs) = &final_state {
        let _ = std::fs::write(path.with_extension("final.json"), serde_json::to_string_pretty(fs).unwrap());
    }
    let actions = fault_log.actions.join("\n  ");
    Err(format!(
        "FAILED (seed {}; rerun with ROBUSTNESS_SEED={} ROBUSTNESS_MEMBERS={}); history kept at {} \
         ({saved:?}; replay with ROBUSTNESS_REPLAY={} cargo test --release -p keelson-tests --test \
         robustness -- --ignored replay); member logs in {}\nfaults:\n  {actions}\n{}",
        s.seed,
        s.seed,
        s.members,
        path.display(),
        path.display(),
        log_dir.display(),
        problems.join("\n")
    ))
}

/// A linearizable read of the whole keyspace on each member (retried until
/// it answers), recorded into the history.
async fn final_reads(endpoints: &[String], rec: &Recorder) -> Result<Vec<(i64, Vec<KeyValue>)>, String> {
    let mut out = Vec::new();
    for (i, ep) in endpoints.iter().enumerate() {
        let mut conn = KvConn::new(FINAL + i as u64, vec![ep.clone()], 0, rec.clone());
        let all = Request::Range(RangeRequest {
            key: vec![0].into(),
            range_end: vec![0].into(),
            ..Default::default()
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match conn.exec(all.clone()).await {
                Outcome::Ok(Response::Range { revision, kvs, .. }) => {
                    out.push((revision, kvs));
                    break;
                }
                o if Instant::now() > deadline => return Err(format!("member n{}: {o:?}", i + 1)),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
    Ok(out)
}

/// HashKV at `revision` on every member.
async fn hashes(endpoints: &[String], revision: i64) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for ep in endpoints {
        let mut m = MaintenanceClient::new(channel(ep));
        let r = tokio::time::timeout(Duration::from_secs(10), m.hash_kv(pb::HashKvRequest { revision }))
            .await
            .map_err(|_| format!("{ep}: timeout"))?
            .map_err(|e| format!("{ep}: {e}"))?;
        out.push(r.into_inner().hash);
    }
    Ok(out)
}

/// Counts for the log line of a run.
struct Stats {
    ops: usize,
    ok: usize,
    failed: usize,
    unknown: usize,
    writes_ok: usize,
    watch_streams: usize,
    events: usize,
}

impl Stats {
    fn of(h: &History) -> Stats {
        let count = |f: fn(&Outcome) -> bool| h.operations.iter().filter(|o| f(&o.outcome)).count();
        Stats {
            ops: h.operations.len(),
            ok: count(|o| matches!(o, Outcome::Ok(_))),
            failed: count(|o| matches!(o, Outcome::Failed(_))),
            unknown: count(|o| matches!(o, Outcome::Unknown(_))),
            writes_ok: h.operations.iter().filter(|o| o.request.is_write() && o.response().is_some()).count(),
            watch_streams: h.watches.len(),
            events: h.watches.iter().flat_map(|w| &w.responses).map(|r| r.events.len()).sum(),
        }
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ops ({} ok, {} writes ok, {} failed, {} unknown), {} watch streams, {} events",
            self.ops, self.ok, self.writes_ok, self.failed, self.unknown, self.watch_streams, self.events
        )
    }
}
