//! The real etcdctl (Debian's etcd-client, API v3) against a single member.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use keelson_tests::{Server, etcdctl, etcdctl_ok, http_get};

#[test]
fn kv_txn_compaction_and_errors_via_etcdctl() {
    let server = Server::start(&[]).unwrap();
    let ep = server.endpoint();
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
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={ep}"))
        .args(["txn", "--interactive=false"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"value(\"foo\") = \"baz\"\n\nput txnkey yes\n\nput txnkey no\n\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("SUCCESS"), "{text}");
    assert_eq!(etcdctl_ok(&ep, &["get", "txnkey", "--print-value-only"]), "yes\n");

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
    assert!(etcdctl_ok(&ep, &["member", "list"]).contains("n1"));
    assert_eq!(etcdctl_ok(&ep, &["alarm", "list"]), "");
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("snap.db");
    let saved = etcdctl_ok(&ep, &["snapshot", "save", snap.to_str().unwrap()]);
    assert!(saved.contains("Snapshot saved at"), "{saved}");
    assert!(std::fs::metadata(&snap).unwrap().len() > 0);
    assert!(etcdctl_ok(&ep, &["defrag"]).contains("Finished defragmenting"));

    // /health and /metrics on the client port.
    assert!(http_get(server.client_port, "/health").unwrap().contains("\"health\":\"true\""));
    let metrics = http_get(server.client_port, "/metrics").unwrap();
    assert!(metrics.contains("etcd_server_has_leader 1"), "{metrics}");
    assert!(metrics.contains("etcd_mvcc_db_total_size_in_bytes"), "{metrics}");
    assert!(metrics.contains("etcd_disk_wal_fsync_duration_seconds"), "{metrics}");
}

#[test]
fn leases_via_etcdctl() {
    let server = Server::start(&[]).unwrap();
    let ep = server.endpoint();
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

#[test]
fn watch_via_etcdctl() {
    let server = Server::start(&[]).unwrap();
    let ep = server.endpoint();
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
