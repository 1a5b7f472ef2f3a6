//! The corruption check: a member whose data was changed behind raft's back
//! is refused at start with `--experimental-initial-corrupt-check`, and the
//! periodic check (`--experimental-corrupt-check-time`) raises the CORRUPT
//! alarm, after which the cluster refuses requests as etcd does.

use std::time::{Duration, Instant};

use keelson_proto::mvccpb::KeyValue;
use keelson_tests::{Cluster, etcdctl, etcdctl_ok};
use prost::Message;

/// Changes the value of the newest revision in a stopped member's store,
/// keeping its length: the hash changes, nothing else does.
fn corrupt_store(dir: &std::path::Path) {
    let opts = rocksdb::Options::default();
    let db = rocksdb::DB::open_cf(&opts, dir, ["default", "kv", "meta"]).expect("open the member's store");
    let kv = db.cf_handle("kv").expect("kv column family");
    let (key, value) = db
        .iterator_cf(&kv, rocksdb::IteratorMode::End)
        .next()
        .expect("a revision")
        .expect("read the newest revision");
    let mut record = KeyValue::decode(&*value).expect("a stored KeyValue");
    let mut changed = record.value.to_vec();
    changed[0] ^= 0x20;
    record.value = changed.into();
    db.put_cf(&kv, key, record.encode_to_vec()).expect("write the changed revision");
    db.flush_cf(&kv).expect("flush");
}

#[test]
fn a_corrupted_member_is_caught_at_start_and_by_the_periodic_check() {
    let mut c = Cluster::start(3, &["--experimental-corrupt-check-time=1s"]).unwrap();
    let eps = c.endpoints();
    for i in 0..20 {
        etcdctl_ok(&eps, &["put", &format!("k{i}"), "value"]);
    }
    let leader = c.wait_leader(Duration::from_secs(10)).unwrap();
    let victim = (leader + 1) % 3;
    // Let the victim apply everything, then stop it and change its data.
    etcdctl_ok(&c.endpoint(victim), &["get", "k19"]);
    c.kill9(victim);
    corrupt_store(&c.store_dir(victim));

    // The initial check refuses to start it.
    c.members[victim].extra = vec!["--experimental-initial-corrupt-check".into()];
    c.spawn(victim).unwrap();
    let err = c.wait_healthy(victim, Duration::from_secs(30)).unwrap_err().to_string();
    assert!(err.contains("exited early"), "{err}");

    // Started without it, the leader's periodic check finds it.
    c.members[victim].extra.clear();
    c.spawn(victim).unwrap();
    c.wait_healthy(victim, Duration::from_secs(30)).ok();
    let rest: String = (0..3).filter(|&i| i != victim).map(|i| c.endpoint(i)).collect::<Vec<_>>().join(",");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let alarms = etcdctl_ok(&rest, &["alarm", "list"]);
        if alarms.contains("alarm:CORRUPT") {
            break;
        }
        assert!(Instant::now() < deadline, "no CORRUPT alarm: {alarms:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let put = etcdctl(&rest, &["put", "after", "x"]);
    assert!(!put.status.success());
    let err = String::from_utf8_lossy(&put.stderr);
    assert!(err.contains("etcdserver: corrupt cluster"), "{err}");
}
