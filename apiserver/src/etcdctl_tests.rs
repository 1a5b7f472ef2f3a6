//! NEEDS ETCDCTL: tests that drive the real `etcdctl` 3.4 binary
//! (`/usr/bin/etcdctl`, installed by `scripts/deps.sh` here and in CI)
//! against the services on a fake backend, and check its output and error
//! messages are what it prints against etcd. Every test name starts with
//! `etcdctl_`.

use std::process::Stdio;
use std::time::Duration;

use keelson_proto::etcdserverpb::alarm_request::AlarmAction;
use keelson_proto::etcdserverpb::{AlarmRequest, AlarmType};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::testing::{MEMBER_ID, SNAPSHOT_BYTES, TestServer, snapshot_bytes};

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("etcdctl printed no JSON ({e}): {s}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_put_get_del() {
    let srv = TestServer::start().await;
    assert_eq!(srv.etcdctl_ok(&["put", "foo", "bar"]).await, "OK\n");
    assert_eq!(srv.etcdctl_ok(&["put", "foo2", "baz"]).await, "OK\n");
    assert_eq!(srv.etcdctl_ok(&["get", "foo"]).await, "foo\nbar\n");
    assert_eq!(srv.etcdctl_ok(&["get", "foo", "--prefix", "--keys-only"]).await, "foo\n\nfoo2\n\n");
    assert_eq!(srv.etcdctl_ok(&["get", "foo", "--consistency=s", "--print-value-only"]).await, "bar\n");

    let out = json(&srv.etcdctl_ok(&["get", "foo", "-w", "json"]).await);
    let header = &out["header"];
    assert_eq!(header["cluster_id"].as_u64(), Some(crate::testing::CLUSTER_ID));
    assert_eq!(header["member_id"].as_u64(), Some(MEMBER_ID));
    assert_eq!(header["revision"].as_i64(), Some(3));
    assert_eq!(header["raft_term"].as_u64(), Some(crate::testing::RAFT_TERM));
    assert_eq!(out["count"].as_i64(), Some(1));
    assert_eq!(out["kvs"][0]["create_revision"].as_i64(), Some(2));

    // Whole keyspace, from-key, sorting, limits, counting.
    srv.etcdctl_ok(&["put", "a", "1"]).await;
    assert_eq!(srv.etcdctl_ok(&["get", "", "--prefix", "--keys-only"]).await, "a\n\nfoo\n\nfoo2\n\n");
    assert_eq!(srv.etcdctl_ok(&["get", "b", "--from-key", "--keys-only"]).await, "foo\n\nfoo2\n\n");
    let sorted =
        srv.etcdctl_ok(&["get", "", "--prefix", "--keys-only", "--sort-by=MODIFY", "--order=DESCEND"]).await;
    assert_eq!(sorted, "a\n\nfoo2\n\nfoo\n\n");
    assert_eq!(srv.etcdctl_ok(&["get", "", "--prefix", "--keys-only", "--limit=1"]).await, "a\n\n");
    let limited = json(&srv.etcdctl_ok(&["get", "", "--prefix", "--limit=1", "-w", "json"]).await);
    assert_eq!((limited["count"].as_i64(), limited["more"].as_bool()), (Some(3), Some(true)));

    assert_eq!(srv.etcdctl_ok(&["del", "foo", "--prefix"]).await, "2\n");
    assert_eq!(srv.etcdctl_ok(&["get", "foo"]).await, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_txn() {
    let srv = TestServer::start().await;
    srv.etcdctl_ok(&["put", "key1", "v1"]).await;
    let script = b"mod(\"key1\") > \"0\"\n\nput key1 \"overwrote-key1\"\n\nput key1 \"created-key1\"\nput key2 \"some extra key\"\n\n";
    let out = srv.etcdctl_with_input(&["txn"], script).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "SUCCESS\n\nOK\n");
    assert_eq!(srv.etcdctl_ok(&["get", "key1", "--print-value-only"]).await, "overwrote-key1\n");

    let script = b"value(\"key1\") = \"nope\"\n\nput key1 \"x\"\n\nget key1\nput key2 \"some extra key\"\n\n";
    let out = srv.etcdctl_with_input(&["txn"], script).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "FAILURE\n\nkey1\noverwrote-key1\n\nOK\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_compaction_and_revision_errors() {
    let srv = TestServer::start().await;
    // An empty store is at revision 1, so the puts make revisions 2, 3, 4.
    for v in ["1", "2", "3"] {
        srv.etcdctl_ok(&["put", "foo", v]).await;
    }
    assert_eq!(srv.etcdctl_ok(&["get", "foo", "--rev=2", "--print-value-only"]).await, "1\n");
    assert_eq!(srv.etcdctl_ok(&["compaction", "3"]).await, "compacted revision 3\n");
    let err = srv.etcdctl_err(&["get", "foo", "--rev=2"]).await;
    assert!(err.contains("etcdserver: mvcc: required revision has been compacted"), "{err}");
    let err = srv.etcdctl_err(&["get", "foo", "--rev=99"]).await;
    assert!(err.contains("etcdserver: mvcc: required revision is a future revision"), "{err}");
    let err = srv.etcdctl_err(&["compaction", "2"]).await;
    assert!(err.contains("etcdserver: mvcc: required revision has been compacted"), "{err}");
    assert_eq!(srv.etcdctl_ok(&["compaction", "--physical", "4"]).await, "compacted revision 4\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_request_too_large() {
    let srv = TestServer::start().await;
    // `etcdctl put KEY` reads the value from stdin.
    let value = vec![b'x'; 1_600_000];
    let out = srv.etcdctl_with_input(&["put", "big"], &value).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("etcdserver: request is too large"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_watch() {
    let srv = TestServer::start().await;
    srv.etcdctl_ok(&["put", "foo", "v1"]).await;
    // From revision 2 (the first put's), so nothing is missed while
    // etcdctl connects.
    let mut child = srv
        .etcdctl_command(&["watch", "foo", "--prefix", "--rev=2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run etcdctl watch");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    srv.etcdctl_ok(&["put", "foo/a", "v2"]).await;
    srv.etcdctl_ok(&["del", "foo"]).await;
    let mut seen = Vec::new();
    while seen.len() < 8 {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("etcdctl watch printed only {seen:?}"))
            .expect("read etcdctl output")
            .expect("etcdctl watch exited early");
        seen.push(line);
    }
    assert_eq!(seen, ["PUT", "foo", "v1", "PUT", "foo/a", "v2", "DELETE", "foo"]);
    child.kill().await.expect("stop etcdctl watch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_endpoint_status_hashkv_health() {
    let srv = TestServer::start().await;
    srv.etcdctl_ok(&["put", "a", "1"]).await;
    srv.etcdctl_ok(&["put", "b", "2"]).await;

    let status = json(&srv.etcdctl_ok(&["endpoint", "status", "-w", "json"]).await);
    let st = &status[0]["Status"];

    assert_eq!(status[0]["Endpoint"].as_str(), Some(srv.endpoint().as_str()));
    assert_eq!(st["version"].as_str(), Some(crate::SERVER_VERSION));
    assert_eq!(st["leader"].as_u64(), Some(MEMBER_ID));
    assert_eq!(st["header"]["member_id"].as_u64(), Some(MEMBER_ID));
    assert_eq!(st["header"]["revision"].as_i64(), Some(3));
    assert_eq!(st["raftIndex"].as_u64(), Some(13));
    let table = srv.etcdctl_ok(&["endpoint", "status"]).await;
    assert!(
        table.contains(&format!("{}, {MEMBER_ID:x}, {}", srv.endpoint(), crate::SERVER_VERSION)),
        "{table}"
    );

    let hashkv = json(&srv.etcdctl_ok(&["endpoint", "hashkv", "-w", "json"]).await);
    let expected = srv.store().hash_kv(0).unwrap();
    assert_eq!(hashkv[0]["HashKV"]["hash"].as_u64(), Some(u64::from(expected.hash)));
    // At the first put's revision.
    let line = srv.etcdctl_ok(&["endpoint", "hashkv", "--rev=2"]).await;
    let at_first = srv.store().hash_kv(2).unwrap().hash;
    assert_eq!(line, format!("{}, {at_first}\n", srv.endpoint()));

    // etcdctl 3.4 prints health to stderr.
    let out = srv.etcdctl(&["endpoint", "health"]).await;
    let health = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success());
    assert!(health.starts_with(&format!("{} is healthy", srv.endpoint())), "{health}");
    let health = json(&srv.etcdctl_ok(&["endpoint", "health", "-w", "json"]).await);
    assert_eq!(health[0]["health"].as_bool(), Some(true), "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_alarm_list_and_disarm() {
    let srv = TestServer::start().await;
    assert_eq!(srv.etcdctl_ok(&["alarm", "list"]).await, "");
    let mut m = srv.maintenance_client().await;
    let activate = AlarmRequest {
        action: AlarmAction::Activate as i32,
        member_id: MEMBER_ID,
        alarm: AlarmType::Nospace as i32,
    };
    m.alarm(activate).await.unwrap();
    let line = format!("memberID:{MEMBER_ID} alarm:NOSPACE \n");
    assert_eq!(srv.etcdctl_ok(&["alarm", "list"]).await, line);
    let err = srv.etcdctl_err(&["put", "k", "v"]).await;
    assert!(err.contains("etcdserver: mvcc: database space exceeded"), "{err}");
    assert_eq!(srv.etcdctl_ok(&["alarm", "disarm"]).await, line);
    assert_eq!(srv.etcdctl_ok(&["alarm", "list"]).await, "");
    assert_eq!(srv.etcdctl_ok(&["put", "k", "v"]).await, "OK\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_leases() {
    let srv = TestServer::start().await;
    let granted = srv.etcdctl_ok(&["lease", "grant", "60"]).await;
    // "lease 694d77aa9e38260f granted with TTL(60s)"
    let id = granted.split_whitespace().nth(1).expect("lease id").to_owned();
    assert_eq!(granted, format!("lease {id} granted with TTL(60s)\n"));
    srv.etcdctl_ok(&["put", "leased", "v", &format!("--lease={id}")]).await;
    let ttl = srv.etcdctl_ok(&["lease", "timetolive", &id, "--keys"]).await;
    assert!(ttl.starts_with(&format!("lease {id} granted with TTL(60s), remaining(")), "{ttl}");
    assert!(ttl.ends_with("attached keys([leased])\n"), "{ttl}");
    assert_eq!(srv.etcdctl_ok(&["lease", "list"]).await, format!("found 1 leases\n{id}\n"));
    assert_eq!(
        srv.etcdctl_ok(&["lease", "keep-alive", "--once", &id]).await,
        format!("lease {id} keepalived with TTL(60)\n")
    );
    assert_eq!(srv.etcdctl_ok(&["lease", "revoke", &id]).await, format!("lease {id} revoked\n"));
    assert_eq!(srv.etcdctl_ok(&["lease", "timetolive", &id]).await, format!("lease {id} already expired\n"));
    assert_eq!(srv.etcdctl_ok(&["get", "leased"]).await, "");
    let err = srv.etcdctl_err(&["lease", "revoke", &id]).await;
    assert!(err.contains("etcdserver: requested lease not found"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_member_list_and_membership_errors() {
    let srv = TestServer::start().await;
    assert_eq!(
        srv.etcdctl_ok(&["member", "list"]).await,
        format!("{MEMBER_ID:x}, started, default, http://127.0.0.1:2380, http://127.0.0.1:2379, false\n")
    );
    let err = srv.etcdctl_err(&["member", "remove", "1234"]).await;
    assert!(err.contains("etcdserver: member not found"), "{err}");
    let err = srv.etcdctl_err(&["member", "add", "n2", "--peer-urls=http://127.0.0.1:2380"]).await;
    assert!(err.contains("etcdserver: Peer URLs already exists"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_snapshot_save_and_defrag() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap.db");
    let path = path.to_str().unwrap();
    let out = srv.etcdctl_ok(&["snapshot", "save", path]).await;
    assert!(out.contains(&format!("Snapshot saved at {path}")), "{out}");
    let saved = std::fs::read(path).unwrap();
    assert_eq!(saved.len() % 512, 32, "padded database plus sha256");
    assert_eq!(&saved[..SNAPSHOT_BYTES], snapshot_bytes().as_slice());

    assert_eq!(
        srv.etcdctl_ok(&["defrag"]).await,
        format!("Finished defragmenting etcd member[{}]\n", srv.endpoint())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_auth_probes() {
    let srv = TestServer::start().await;
    assert_eq!(srv.etcdctl_ok(&["user", "list"]).await, "");
    assert_eq!(srv.etcdctl_ok(&["role", "list"]).await, "");
    let err = srv.etcdctl_err(&["user", "get", "bob"]).await;
    assert!(err.contains("etcdserver: user name not found"), "{err}");
    assert_eq!(srv.etcdctl_ok(&["auth", "disable"]).await, "Authentication Disabled\n");
    // etcd clients shrug off "authentication is not enabled" when they
    // authenticate, so credentials on a member without auth still work.
    srv.etcdctl_ok(&["put", "foo", "bar"]).await;
    assert_eq!(srv.etcdctl_ok(&["--user=root:pw", "get", "foo", "--print-value-only"]).await, "bar\n");
}

/// `etcdctl lock` is a client-side recipe over leases, Txn and watches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lock() {
    let srv = TestServer::start().await;
    assert_eq!(srv.etcdctl_ok(&["lock", "mylock", "echo", "acquired"]).await, "acquired\n");
    assert_eq!(srv.etcdctl_ok(&["get", "mylock", "--prefix"]).await, "", "the lock is released");
}
