//! A single member end to end in one process: proposals through openraft
//! and the WAL into mvcc, restarts, leases, snapshots.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keelson_proto::etcdserverpb::{LeaseGrantRequest, LeaseRevokeRequest, PutRequest, RangeRequest};
use keelson_proto::keelsonraftpb::internal_request::Request;
use keelson_proto::keelsonraftpb::internal_response::Response;
use keelson_proto::keelsonraftpb::{InternalRequest, InternalResponse};
use keelson_raftstore::{Node, NodeConfig};

fn config(dir: &Path) -> NodeConfig {
    NodeConfig {
        name: "n1".into(),
        data_dir: dir.to_path_buf(),
        initial_cluster: vec![("n1".into(), vec!["http://127.0.0.1:2380".into()])],
        initial_cluster_token: "test".into(),
        initial_cluster_state: Default::default(),
        client_urls: vec!["http://127.0.0.1:2379".into()],
        peer_urls: vec!["http://127.0.0.1:2380".into()],
        heartbeat_interval: Duration::from_millis(50),
        election_timeout: Duration::from_millis(300),
        snapshot_count: 100,
        mvcc: keelson_mvcc::Config::default(),
        watch: keelson_watch::WatchConfig::default(),
        transport: Default::default(),
    }
}

async fn start(dir: &Path) -> Arc<Node> {
    let node = Node::start(config(dir)).await.expect("start node");
    for _ in 0..200 {
        if node.status().is_leader {
            return node;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("single member never became leader");
}

async fn propose(node: &Node, r: Request) -> Response {
    let resp: InternalResponse = node.propose(InternalRequest { request: Some(r) }).await.expect("propose");
    resp.response.expect("a response")
}

fn put(k: &str, v: &str, lease: i64) -> Request {
    Request::Put(PutRequest {
        key: Bytes::from(k.to_string()),
        value: Bytes::from(v.to_string()),
        lease,
        ..Default::default()
    })
}

fn get(node: &Node, k: &str) -> Option<Bytes> {
    let r =
        node.store().range(&RangeRequest { key: Bytes::from(k.to_string()), ..Default::default() }).unwrap();
    r.kvs.into_iter().next().map(|kv| kv.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_restart_and_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    for i in 0..350 {
        let Response::Put(p) = propose(&node, put(&format!("k{i}"), &format!("v{i}"), 0)).await else {
            panic!("put response expected")
        };
        assert_eq!(p.header.unwrap().revision, i + 2);
    }
    node.read_barrier().await.unwrap();
    assert_eq!(get(&node, "k349").as_deref(), Some(&b"v349"[..]));
    // snapshot_count 100: a snapshot has been built and the log purged.
    let mut snaps = 0;
    for _ in 0..100 {
        snaps = std::fs::read_dir(dir.path().join("member/snap"))
            .map(|d| d.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "keel")).count())
            .unwrap_or(0);
        if snaps > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(snaps, 1, "one snapshot kept");
    node.shutdown().await;
    drop(node);

    let node = start(dir.path()).await;
    assert_eq!(node.store().current_revision(), 351);
    assert_eq!(get(&node, "k0").as_deref(), Some(&b"v0"[..]));
    let Response::Put(p) = propose(&node, put("after", "restart", 0)).await else { panic!() };
    assert_eq!(p.header.unwrap().revision, 352);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_revoke_and_expiry_delete_keys_in_one_revision() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let Response::LeaseGrant(g) =
        propose(&node, Request::LeaseGrant(LeaseGrantRequest { ttl: 60, id: 0 })).await
    else {
        panic!("grant response expected")
    };
    assert!(g.id > 0);
    assert_eq!(g.ttl, 60);
    propose(&node, put("a", "1", g.id)).await;
    propose(&node, put("b", "1", g.id)).await;
    let before = node.store().current_revision();
    let Response::LeaseRevoke(r) =
        propose(&node, Request::LeaseRevoke(LeaseRevokeRequest { id: g.id })).await
    else {
        panic!("revoke response expected")
    };
    assert_eq!(r.header.unwrap().revision, before + 1);
    assert!(get(&node, "a").is_none() && get(&node, "b").is_none());
    // Revoking again: lease not found.
    let Response::Error(e) = propose(&node, Request::LeaseRevoke(LeaseRevokeRequest { id: g.id })).await
    else {
        panic!("error expected")
    };
    assert_eq!(e.message, "requested lease not found");
    // A put naming a missing lease fails.
    let Response::Error(e) = propose(&node, put("c", "1", 12345)).await else { panic!("error expected") };
    assert_eq!(e.message, "requested lease not found");

    // Expiry: TTL 1s (the minimum here), driven by the leader.
    let Response::LeaseGrant(g) =
        propose(&node, Request::LeaseGrant(LeaseGrantRequest { ttl: 1, id: 77 })).await
    else {
        panic!("grant response expected")
    };
    assert_eq!(g.id, 77);
    propose(&node, put("x", "1", 77)).await;
    propose(&node, put("y", "1", 77)).await;
    let mut gone = false;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if get(&node, "x").is_none() {
            gone = true;
            break;
        }
    }
    assert!(gone, "expired lease's keys deleted");
    assert!(get(&node, "y").is_none());
    assert!(!node.lessor().exists(77));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    propose(&node, Request::LeaseGrant(LeaseGrantRequest { ttl: 100, id: 5 })).await;
    propose(&node, put("held", "1", 5)).await;
    node.shutdown().await;
    drop(node);
    let node = start(dir.path()).await;
    let info = node.lessor().info(5, true).expect("lease kept");
    assert_eq!(info.granted_ttl, 100);
    assert_eq!(info.keys, vec![Bytes::from_static(b"held")]);
    // Remaining TTL restarted at the full TTL (plus the election timeout).
    assert!(info.remaining_ttl >= 100);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_of_another_cluster_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    node.shutdown().await;
    drop(node);
    let mut other = config(dir.path());
    other.initial_cluster_token = "another".into();
    let err = Node::start(other).await.unwrap_err().to_string();
    assert!(err.contains("belongs to cluster"), "{err}");
}

/// Linearizable reads share read index rounds: every read must still see
/// each write acknowledged before it began, with writers and 64 readers
/// running at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_read_barriers_see_every_acknowledged_write() {
    use std::sync::atomic::{AtomicI64, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let acked = Arc::new(AtomicI64::new(0));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (node, acked) = (node.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..100 {
                let Response::Put(p) = propose(&node, put(&format!("w{w}/{i}"), "v", 0)).await else {
                    panic!("put response expected")
                };
                acked.fetch_max(p.header.unwrap().revision, Ordering::SeqCst);
            }
        }));
    }
    let mut readers = Vec::new();
    for _ in 0..64 {
        let (node, acked) = (node.clone(), acked.clone());
        readers.push(tokio::spawn(async move {
            let mut reads = 0;
            while acked.load(Ordering::SeqCst) < 801 {
                let before = acked.load(Ordering::SeqCst);
                node.read_barrier().await.unwrap();
                let seen = node.store().current_revision();
                assert!(
                    seen >= before,
                    "read saw revision {seen}, write {before} was acknowledged before it"
                );
                reads += 1;
            }
            reads
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let mut reads = 0;
    for r in readers {
        reads += r.await.unwrap();
    }
    assert!(reads >= 64, "every reader read at least once");
    node.shutdown().await;
}

/// A data dir of an older format is marked with the current one when
/// opened (its log may now hold batched entries an older binary would not
/// apply); one of a newer format is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_format_is_upgraded_in_place_and_newer_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("member/identity.json");
    let set_format = |n: u64| {
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        v["format"] = n.into();
        std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    };
    let format = || {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        v["format"].as_u64().unwrap()
    };
    let node = start(dir.path()).await;
    node.shutdown().await;
    drop(node);
    assert_eq!(format(), keelson_raftstore::node::DATA_FORMAT as u64);

    set_format(1);
    let node = start(dir.path()).await;
    assert_eq!(format(), keelson_raftstore::node::DATA_FORMAT as u64, "upgraded on open");
    node.shutdown().await;
    drop(node);

    set_format(keelson_raftstore::node::DATA_FORMAT as u64 + 1);
    let err = Node::start(config(dir.path())).await.unwrap_err().to_string();
    assert!(err.contains("format"), "{err}");
}

/// Concurrent writes share log entries (`proposer.rs`), yet each is its own
/// revision with its own answer: 256 concurrent puts get 256 distinct
/// consecutive revisions in fewer log entries, a failing Txn in the middle
/// fails alone, and all of it is there after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_entries_but_keep_their_own_revisions_and_answers() {
    use keelson_proto::etcdserverpb::{RequestOp, TxnRequest, request_op};
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let index_before = node.status().last_log_index;
    let rev_before = node.store().current_revision();
    let mut tasks = Vec::new();
    for i in 0..256 {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            if i == 100 {
                // Two puts of one key in a Txn: refused, as etcd refuses it.
                let op = || RequestOp {
                    request: Some(request_op::Request::RequestPut(PutRequest {
                        key: Bytes::from_static(b"dup"),
                        ..Default::default()
                    })),
                };
                let txn = TxnRequest { success: vec![op(), op()], ..Default::default() };
                return (
                    i,
                    node.propose(InternalRequest { request: Some(Request::Txn(txn)) }).await.unwrap(),
                );
            }
            (
                i,
                node.propose(InternalRequest { request: Some(put(&format!("c{i}"), &format!("{i}"), 0)) })
                    .await
                    .unwrap(),
            )
        }));
    }
    let mut revisions = Vec::new();
    for t in tasks {
        let (i, resp) = t.await.unwrap();
        match resp.response {
            Some(Response::Put(p)) => revisions.push(p.header.unwrap().revision),
            Some(Response::Error(e)) => assert_eq!(i, 100, "only the bad Txn fails: {e:?}"),
            other => panic!("request {i}: unexpected answer {other:?}"),
        }
    }
    revisions.sort();
    assert_eq!(revisions, ((rev_before + 1)..=(rev_before + 255)).collect::<Vec<_>>());
    let entries = node.status().last_log_index - index_before;
    assert!(entries < 255, "255 writes took {entries} log entries: none were batched");
    node.shutdown().await;
    drop(node);
    let node = start(dir.path()).await;
    assert_eq!(node.store().current_revision(), rev_before + 255);
    for i in (0..256).filter(|&i| i != 100) {
        assert_eq!(get(&node, &format!("c{i}")), Some(Bytes::from(format!("{i}"))), "c{i}");
    }
    node.shutdown().await;
}
