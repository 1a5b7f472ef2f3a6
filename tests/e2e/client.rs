//! The acceptance flows again, with the `etcd-client` crate.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, EventType, GetOptions, LeaseGrantOptions, PutOptions,
    SortOrder, SortTarget, Txn, TxnOp, WatchOptions,
};
use keelson_tests::Server;

async fn client(server: &Server) -> Client {
    Client::connect([format!("http://{}", server.endpoint())], None).await.unwrap()
}

fn keys(resp: &etcd_client::GetResponse) -> Vec<String> {
    resp.kvs().iter().map(|kv| kv.key_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_txn_compaction_and_errors_with_etcd_client() {
    let server = Server::start(&[]).unwrap();
    let mut c = client(&server).await;
    let first = c.put("foo", "bar", None).await.unwrap();
    assert_eq!(first.header().unwrap().revision(), 2);
    c.put("foo", "baz", None).await.unwrap();
    for (k, v) in [("p/a", "3"), ("p/b", "1"), ("p/c", "2")] {
        c.put(k, v, None).await.unwrap();
    }
    let all = c.get("p/", Some(GetOptions::new().with_prefix())).await.unwrap();
    assert_eq!(keys(&all), ["p/a", "p/b", "p/c"]);
    let limited = c.get("p/", Some(GetOptions::new().with_prefix().with_limit(2))).await.unwrap();
    assert_eq!((limited.kvs().len(), limited.count(), limited.more()), (2, 3, true));
    let sorted = c
        .get("p/", Some(GetOptions::new().with_prefix().with_sort(SortTarget::Value, SortOrder::Descend)))
        .await
        .unwrap();
    assert_eq!(keys(&sorted), ["p/a", "p/c", "p/b"]);
    let counted = c.get("p/", Some(GetOptions::new().with_prefix().with_count_only())).await.unwrap();
    assert_eq!((counted.kvs().len(), counted.count()), (0, 3));
    let old = c.get("foo", Some(GetOptions::new().with_revision(2))).await.unwrap();
    assert_eq!(old.kvs()[0].value_str().unwrap(), "bar");
    let prev = c.put("foo", "qux", Some(PutOptions::new().with_prev_key())).await.unwrap();
    assert_eq!(prev.prev_key().unwrap().value_str().unwrap(), "baz");

    let del = c.delete("p/", Some(DeleteOptions::new().with_prefix().with_prev_key())).await.unwrap();
    assert_eq!(del.deleted(), 3);
    assert_eq!(del.prev_kvs().len(), 3);

    let txn = Txn::new()
        .when([Compare::value("foo", CompareOp::Equal, "qux")])
        .and_then([TxnOp::put("t", "then", None)])
        .or_else([TxnOp::put("t", "else", None)]);
    assert!(c.txn(txn).await.unwrap().succeeded());
    let txn = Txn::new()
        .when([Compare::version("foo", CompareOp::Greater, 100)])
        .and_then([TxnOp::put("t", "then", None)])
        .or_else([TxnOp::put("t", "else", None), TxnOp::get("foo", None)]);
    let resp = c.txn(txn).await.unwrap();
    assert!(!resp.succeeded());
    assert_eq!(c.get("t", None).await.unwrap().kvs()[0].value_str().unwrap(), "else");

    let rev = c.get("foo", None).await.unwrap().header().unwrap().revision();
    c.compact(rev - 1, None).await.unwrap();
    let err = c.get("foo", Some(GetOptions::new().with_revision(2))).await.unwrap_err().to_string();
    assert!(err.contains("etcdserver: mvcc: required revision has been compacted"), "{err}");
    let err = c.put("big", vec![b'x'; 1_700_000], None).await.unwrap_err().to_string();
    assert!(err.contains("etcdserver: request is too large"), "{err}");

    let members = c.member_list().await.unwrap();
    assert_eq!(members.members().len(), 1);
    assert_eq!(members.members()[0].name(), "n1");
    let status = c.status().await.unwrap();
    assert_ne!(status.leader(), 0);
    assert!(status.db_size() > 0);
    let h1 = c.hash_kv(0).await.unwrap();
    let h2 = c.hash_kv(0).await.unwrap();
    assert_eq!(h1.hash(), h2.hash());
    c.defragment().await.unwrap();
    assert!(
        c.alarm(etcd_client::AlarmAction::Get, etcd_client::AlarmType::None, None)
            .await
            .unwrap()
            .alarms()
            .is_empty()
    );
    let mut snap = c.snapshot().await.unwrap();
    let mut bytes = 0;
    while let Some(chunk) = snap.message().await.unwrap() {
        bytes += chunk.blob().len();
    }
    assert!(bytes > 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_with_etcd_client() {
    let server = Server::start(&[]).unwrap();
    let mut c = client(&server).await;
    c.put("w", "1", None).await.unwrap(); // rev 2
    c.put("w", "2", None).await.unwrap(); // rev 3
    // From a past revision, with prev_kv.
    let mut stream =
        c.watch("w", Some(WatchOptions::new().with_start_revision(3).with_prev_key())).await.unwrap();
    c.put("w", "3", None).await.unwrap(); // rev 4, live
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let resp =
            tokio::time::timeout(Duration::from_secs(5), stream.message()).await.unwrap().unwrap().unwrap();
        for ev in resp.events() {
            let kv = ev.kv().unwrap();
            let prev = ev.prev_kv().map(|p| p.value_str().unwrap().to_string());
            seen.push((kv.mod_revision(), kv.value_str().unwrap().to_string(), prev));
        }
    }
    assert_eq!(
        seen,
        [(3, "2".to_string(), Some("1".to_string())), (4, "3".to_string(), Some("2".to_string()))]
    );
    drop(stream);

    c.compact(4, None).await.unwrap();
    let mut stream = c.watch("w", Some(WatchOptions::new().with_start_revision(2))).await.unwrap();
    let mut compacted = 0;
    while compacted == 0 {
        match tokio::time::timeout(Duration::from_secs(5), stream.message()).await.unwrap() {
            Ok(Some(resp)) => compacted = resp.compact_revision(),
            Ok(None) => break,
            Err(e) => {
                assert!(e.to_string().contains("compacted"), "{e}");
                compacted = -1;
            }
        }
    }
    assert!(compacted == 4 || compacted == -1, "compact revision {compacted}");

    let mut stream = c.watch("d", None).await.unwrap();
    c.put("d", "x", None).await.unwrap();
    c.delete("d", None).await.unwrap();
    let mut types = Vec::new();
    while types.len() < 2 {
        let resp =
            tokio::time::timeout(Duration::from_secs(5), stream.message()).await.unwrap().unwrap().unwrap();
        types.extend(resp.events().iter().map(|e| e.event_type()));
    }
    assert_eq!(types, [EventType::Put, EventType::Delete]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_with_etcd_client() {
    let server = Server::start(&[]).unwrap();
    let mut c = client(&server).await;
    let lease = c.lease_grant(60, None).await.unwrap();
    assert_eq!(lease.ttl(), 60);
    c.put("l", "v", Some(PutOptions::new().with_lease(lease.id()))).await.unwrap();
    let ttl = c
        .lease_time_to_live(lease.id(), Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    assert_eq!(ttl.granted_ttl(), 60);
    assert_eq!(ttl.keys(), [b"l".to_vec()]);
    let (mut keeper, mut responses) = c.lease_keep_alive(lease.id()).await.unwrap();
    keeper.keep_alive().await.unwrap();
    let ka = responses.message().await.unwrap().unwrap();
    assert_eq!(ka.ttl(), 60);
    let leases = c.leases().await.unwrap();
    assert!(leases.leases().iter().any(|l| l.id() == lease.id()));
    c.lease_revoke(lease.id()).await.unwrap();
    assert!(c.get("l", None).await.unwrap().kvs().is_empty());
    let err = c.lease_revoke(lease.id()).await.unwrap_err().to_string();
    assert!(err.contains("etcdserver: requested lease not found"), "{err}");

    // A key on an expired lease disappears.
    let short = c.lease_grant(2, Some(LeaseGrantOptions::new().with_id(4242))).await.unwrap();
    assert_eq!(short.id(), 4242);
    c.put("s", "v", Some(PutOptions::new().with_lease(4242))).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !c.get("s", None).await.unwrap().kvs().is_empty() {
        assert!(std::time::Instant::now() < deadline, "key outlived its lease");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ttl = c.lease_time_to_live(4242, None).await.unwrap();
    assert_eq!(ttl.ttl(), -1);
}
