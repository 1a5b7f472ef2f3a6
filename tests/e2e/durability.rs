//! Acknowledged writes survive `kill -9`; SIGTERM shuts down cleanly.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::Client;
use keelson_tests::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let mut server = Server::start(&[]).unwrap();
    let ep = format!("http://{}", server.endpoint());
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let max_rev = Arc::new(std::sync::atomic::AtomicI64::new(0));
    // 64 concurrent clients over 8 connections.
    let mut conns = Vec::new();
    for _ in 0..8 {
        conns.push(Client::connect([ep.clone()], None).await.unwrap());
    }
    let mut tasks = Vec::new();
    for w in 0..64 {
        let acked = acked.clone();
        let max_rev = max_rev.clone();
        let mut c = conns[w % 8].clone();
        tasks.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_millis(1500);
            let mut i = 0;
            while Instant::now() < deadline {
                let (k, v) = (format!("k/{w}/{i}"), format!("v{i}"));
                if let Ok(r) = c.put(k.clone(), v.clone(), None).await {
                    acked.lock().unwrap().push((k, v));
                    max_rev.fetch_max(r.header().unwrap().revision(), std::sync::atomic::Ordering::Relaxed);
                }
                i += 1;
            }
        }));
    }
    // Kill while writes are in flight.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    server.kill9();
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 100, "only {} writes acknowledged", acked.len());

    server.spawn().unwrap();
    let mut c = Client::connect([ep], None).await.unwrap();
    let resp = c.get("k/", Some(etcd_client::GetOptions::new().with_prefix())).await.unwrap();
    let stored: std::collections::HashMap<String, String> = resp
        .kvs()
        .iter()
        .map(|kv| (kv.key_str().unwrap().to_string(), kv.value_str().unwrap().to_string()))
        .collect();
    let lost: Vec<_> = acked.iter().filter(|(k, v)| stored.get(k) != Some(v)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
    // Revisions continue from where they were.
    let before = max_rev.load(std::sync::atomic::Ordering::Relaxed);
    assert!(resp.header().unwrap().revision() >= before);
    let next = c.put("after", "restart", None).await.unwrap().header().unwrap().revision();
    assert_eq!(next, resp.header().unwrap().revision() + 1);
}

#[test]
fn sigterm_shuts_down_cleanly_and_restarts() {
    let mut server = Server::start(&[]).unwrap();
    keelson_tests::etcdctl_ok(&server.endpoint(), &["put", "k", "v"]);
    let status = server.terminate().unwrap();
    assert!(status.success(), "exit status {status}");
    server.spawn().unwrap();
    assert_eq!(keelson_tests::etcdctl_ok(&server.endpoint(), &["get", "k", "--print-value-only"]), "v\n");
}
