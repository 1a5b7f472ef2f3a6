//! The real etcdctl (Debian's etcd-client, API v3) against a single member
//! and against a 3-member cluster with every endpoint given: each flow runs
//! against both.

use std::process::{Command, Stdio};
use std::time::Duration;

use keelson_tests::{Cluster, Server, etcdctl, etcdctl_ok, etcdctl_stdin, http_get, http_get_host};

/// What a flow runs against.
enum Target {
    One(Server),
    Cluster(Cluster),
}

impl Target {
    fn start(members: usize) -> Target {
        if members == 1 {
            Target::One(Server::start(&[]).unwrap())
        } else {
            Target::Cluster(Cluster::start(members, &[]).unwrap())
        }
    }

    /// `--endpoints`: the member, or every member.
    fn ep(&self) -> String {
        match self {
            Target::One(s) => s.endpoint(),
            Target::Cluster(c) => c.endpoints(),
        }
    }

    /// One member's endpoint (etcdctl takes only one for `snapshot save`).
    fn one_ep(&self) -> String {
        match self {
            Target::One(s) => s.endpoint(),
            Target::Cluster(c) => c.endpoint(0),
        }
    }

    /// An HTTP GET on the (first) member's client port.
    fn http(&self, path: &str) -> String {
        match self {
            Target::One(s) => http_get(s.client_port, path).unwrap(),
            Target::Cluster(c) => http_get_host(&c.members[0].host, c.members[0].client_port, path).unwrap(),
        }
    }
}

/// A test of `flow` against one member and one against three.
macro_rules! against_one_and_three {
    ($flow:ident, $one:ident, $three:ident) => {
        #[test]
        fn $one() {
            $flow(&Target::start(1));
        }

        #[test]
        fn $three() {
            $flow(&Target::start(3));
        }
    };
}

against_one_and_three!(
    kv_txn_compaction_and_errors,
    kv_txn_compaction_and_errors_one_member,
    kv_txn_compaction_and_errors_three_members
);

fn kv_txn_compaction_and_errors(t: &Target) {
    let ep = t.ep();
    assert_eq!(etcdctl_ok(&ep, &["put", "foo", "bar"]), "OK\n");
    assert_eq!(etcdctl_ok(&ep, &["get", "foo"]), "foo\nbar\n");
    etcdctl_ok(&ep, &["put", "foo", "baz"]);
    etcdctl_ok(&ep, &["put", "fop", "1"]);
    assert_eq!(etcdctl_ok(&ep, &["get", "fo", "--prefix", "--keys-only"]), "foo\n\nfop\n\n");
    // As in etcd, the first change of a new store is revision 2.
    assert_eq!(etcdctl_ok(&ep, &["get", "foo", "--rev=2"]), "foo\nbar\n");
    let json = etcdctl_ok(&ep, &["get", "fo", "--prefix", "-w", "json"]);
    assert!(json.contains("\"count\":2"), "{json}");
    assert!(json.contains("\"revision\":4"), "{json}");

    // A transaction read from stdin, as `etcdctl txn` takes it.
    let txn = |script: &[u8]| etcdctl_stdin(&ep, &["txn", "--interactive=false"], script);
    let out = txn(b"value(\"foo\") = \"baz\"\n\nput txnkey yes\n\nput txnkey no\n\n");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("SUCCESS"), "{text}");
    assert_eq!(etcdctl_ok(&ep, &["get", "txnkey", "--print-value-only"]), "yes\n");

    // Limit, sort and count.
    for (k, v) in [("s/a", "3"), ("s/b", "1"), ("s/c", "2")] {
        etcdctl_ok(&ep, &["put", k, v]);
    }
    assert_eq!(etcdctl_ok(&ep, &["get", "s/", "--prefix", "--limit=2", "--keys-only"]), "s/a\n\ns/b\n\n");
    let sorted = etcdctl_ok(
        &ep,
        &["get", "s/", "--prefix", "--sort-by=VALUE", "--order=DESCEND", "--print-value-only"],
    );
    assert_eq!(sorted, "3\n2\n1\n");
    let limited = etcdctl_ok(&ep, &["get", "s/", "--prefix", "--limit=1", "-w", "json"]);
    assert!(limited.contains("\"more\":true") && limited.contains("\"count\":3"), "{limited}");
    // Delete with prefix and prev-kv.
    assert_eq!(etcdctl_ok(&ep, &["del", "s/", "--prefix", "--prev-kv"]), "3\ns/a\n3\ns/b\n1\ns/c\n2\n");

    // The failure branch of a transaction.
    let out = txn(b"value(\"foo\") = \"nope\"\n\nput txnkey yes\n\nput txnkey no\n\n");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("FAILURE"));
    assert_eq!(etcdctl_ok(&ep, &["get", "txnkey", "--print-value-only"]), "no\n");

    // A 1.7 MB put is refused with etcd's message (value from stdin).
    let out = etcdctl_stdin(&ep, &["put", "big"], &vec![b'x'; 1_700_000]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("etcdserver: request is too large"), "{err}");

    assert_eq!(etcdctl_ok(&ep, &["del", "fop"]), "1\n");
    assert_eq!(etcdctl_ok(&ep, &["compaction", "4"]), "compacted revision 4\n");
    let old = etcdctl(&ep, &["get", "foo", "--rev=2"]);
    assert!(!old.status.success());
    let err = String::from_utf8_lossy(&old.stderr);
    assert!(err.contains("etcdserver: mvcc: required revision has been compacted"), "{err}");
    let future = etcdctl(&ep, &["get", "foo", "--rev=1000"]);
    let err = String::from_utf8_lossy(&future.stderr);
    assert!(err.contains("etcdserver: mvcc: required revision is a future revision"), "{err}");

    // Maintenance and cluster.
    // etcdctl 3.4 prints the health line on stderr.
    let health = etcdctl(&ep, &["endpoint", "health"]);
    assert!(health.status.success());
    assert!(String::from_utf8_lossy(&health.stderr).contains("is healthy"), "{health:?}");
    let status = etcdctl_ok(&ep, &["endpoint", "status", "-w", "json"]);
    assert!(status.contains("\"leader\""), "{status}");
    let hash = etcdctl_ok(&ep, &["endpoint", "hashkv", "-w", "json"]);
    assert!(hash.contains("\"hash\""), "{hash}");
    // Endpoints given as URLs, and the members' advertised client URLs
    // (--cluster): etcdctl then sends a URL as the HTTP/2 authority.
    let urls: Vec<String> = ep.split(',').map(|e| format!("http://{e}")).collect();
    let status = etcdctl_ok(&urls.join(","), &["endpoint", "status", "--cluster", "-w", "json"]);
    assert_eq!(status.matches("\"leader\"").count(), ep.split(',').count(), "{status}");
    let hashes = etcdctl_ok(&urls.join(","), &["endpoint", "hashkv", "--cluster"]);
    assert_eq!(hashes.lines().count(), ep.split(',').count(), "{hashes}");
    assert!(etcdctl_ok(&ep, &["member", "list"]).contains("n1"));
    assert_eq!(etcdctl_ok(&ep, &["alarm", "list"]), "");
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("snap.db");
    let saved = etcdctl_ok(&t.one_ep(), &["snapshot", "save", snap.to_str().unwrap()]);
    assert!(saved.contains("Snapshot saved at"), "{saved}");
    assert!(std::fs::metadata(&snap).unwrap().len() > 0);
    assert!(etcdctl_ok(&ep, &["defrag"]).contains("Finished defragmenting"));

    // /health and /metrics on the client port.
    assert!(t.http("/health").contains("\"health\":\"true\""));
    let metrics = t.http("/metrics");
    assert!(metrics.contains("etcd_server_has_leader 1"), "{metrics}");
    assert!(metrics.contains("etcd_mvcc_db_total_size_in_bytes"), "{metrics}");
    assert!(metrics.contains("etcd_disk_wal_fsync_duration_seconds"), "{metrics}");
}

against_one_and_three!(leases, leases_one_member, leases_three_members);

fn leases(t: &Target) {
    let ep = t.ep();
    let granted = etcdctl_ok(&ep, &["lease", "grant", "60"]);
    // "lease 694d77e0a5b3a20c granted with TTL(60s)"
    let id = granted.split_whitespace().nth(1).unwrap().to_string();
    assert!(granted.contains("granted with TTL(60s)"), "{granted}");
    etcdctl_ok(&ep, &["put", "leased", "v", &format!("--lease={id}")]);
    let ttl = etcdctl_ok(&ep, &["lease", "timetolive", &id, "--keys"]);
    assert!(ttl.contains("granted with TTL(60s)") && ttl.contains("attached keys([leased])"), "{ttl}");
    let ka = etcdctl_ok(&ep, &["lease", "keep-alive", "--once", &id]);
    assert!(ka.contains("keepalived with TTL(60)"), "{ka}");
    assert!(etcdctl_ok(&ep, &["lease", "list"]).contains(&id));
    let revoked = etcdctl_ok(&ep, &["lease", "revoke", &id]);
    assert!(revoked.contains("revoked"), "{revoked}");
    assert_eq!(etcdctl_ok(&ep, &["get", "leased"]), "");
    let missing = etcdctl(&ep, &["lease", "revoke", &id]);
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("etcdserver: requested lease not found"), "{err}");
}

against_one_and_three!(
    expired_lease_takes_its_key_with_it,
    lease_expiry_one_member,
    lease_expiry_three_members
);

fn expired_lease_takes_its_key_with_it(t: &Target) {
    let ep = t.ep();
    // The minimum TTL with etcd's default election timeout is 2s.
    let granted = etcdctl_ok(&ep, &["lease", "grant", "2"]);
    let id = granted.split_whitespace().nth(1).unwrap().to_string();
    etcdctl_ok(&ep, &["put", "short", "lived", &format!("--lease={id}")]);
    assert_eq!(etcdctl_ok(&ep, &["get", "short", "--print-value-only"]), "lived\n");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while etcdctl_ok(&ep, &["get", "short", "--print-value-only"]) == "lived\n" {
        assert!(std::time::Instant::now() < deadline, "key outlived its lease");
        std::thread::sleep(Duration::from_millis(200));
    }
    let ttl = etcdctl_ok(&ep, &["lease", "timetolive", &id]);
    assert!(ttl.contains("already expired"), "{ttl}");
}

/// Collects what `etcdctl watch ARGS` prints while `during` runs.
fn watch_output(ep: &str, args: &[&str], during: impl FnOnce()) -> String {
    let mut watch = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={ep}"))
        .arg("watch")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    during();
    std::thread::sleep(Duration::from_millis(500));
    let _ = watch.kill();
    let out = watch.wait_with_output().unwrap();
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

against_one_and_three!(
    watch_from_the_past_and_from_a_compacted_revision,
    watch_history_one_member,
    watch_history_three_members
);

fn watch_from_the_past_and_from_a_compacted_revision(t: &Target) {
    let ep = t.ep();
    etcdctl_ok(&ep, &["put", "h", "1"]); // rev 2
    etcdctl_ok(&ep, &["put", "h", "2"]); // rev 3
    etcdctl_ok(&ep, &["put", "h", "3"]); // rev 4
    let past = watch_output(&ep, &["h", "--rev=3"], || {});
    assert_eq!(past, "PUT\nh\n2\nPUT\nh\n3\n", "{past}");
    etcdctl_ok(&ep, &["compaction", "4"]);
    let compacted = watch_output(&ep, &["h", "--rev=2"], || {});
    assert!(compacted.contains("required revision has been compacted"), "{compacted}");
}

against_one_and_three!(check_perf_load_s_passes, check_perf_one_member, check_perf_three_members);

/// `etcdctl check perf` runs its whole minute against the member(s) and the
/// throughput check passes. Its latency checks (slowest request under
/// 500 ms, standard deviation) are timing on a shared 2-core machine where
/// other tests run at the same time, so they are printed, not asserted.
fn check_perf_load_s_passes(t: &Target) {
    let out = etcdctl(&t.ep(), &["check", "perf", "--load=s"]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("PASS: Throughput is"), "{text}");
    assert!(!text.contains("FAIL: Throughput"), "{text}");
    assert!(!text.contains("errors"), "{text}");
    let verdict =
        text.lines().filter(|l| l.starts_with("PASS") || l.starts_with("FAIL") || l.starts_with("Slowest"));
    eprintln!("check perf: {}", verdict.collect::<Vec<_>>().join("; "));
}

against_one_and_three!(watch, watch_one_member, watch_three_members);

fn watch(t: &Target) {
    let ep = t.ep();
    let mut watch = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={ep}"))
        .args(["watch", "w", "--prefix", "--prev-kv"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    etcdctl_ok(&ep, &["put", "w1", "a"]);
    etcdctl_ok(&ep, &["put", "w1", "b"]);
    etcdctl_ok(&ep, &["del", "w1"]);
    std::thread::sleep(Duration::from_millis(500));
    let _ = watch.kill();
    let out = watch.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text, "PUT\nw1\na\nPUT\nw1\na\nw1\nb\nDELETE\nw1\nb\nw1\n\n", "{text}");
}

#[test]
fn bad_flags_and_foreign_data_dirs_are_refused() {
    let out = Command::new(keelson_tests::keelson_bin())
        .args(["server", "--heartbeat-interval", "500", "--election-timeout", "1000"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least as 5 times"));

    let mut server = Server::start(&[]).unwrap();
    server.terminate().unwrap();
    server.extra = vec!["--initial-cluster-token".into(), "other".into()];
    let err = server.spawn().unwrap_err().to_string();
    assert!(err.contains("exited early"), "{err}");
}
