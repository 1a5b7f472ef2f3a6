//! Traffic profiles (etcd-style and Kubernetes-style), the watchers and the
//! compactor. Every client is a task that runs until `stop` is set.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use keelson_proto::etcdserverpb as pb;
use keelson_proto::etcdserverpb::watch_client::WatchClient;
use keelson_tests::checker::history::prefix_end;
use keelson_tests::checker::{
    Bytes, ClientId, Compare, CompareOp, CompareTarget, DeleteRequest, Outcome, PutRequest, RangeRequest,
    Request, Response, TxnOp, TxnOpResponse, TxnRequest, WatchRecord, WatchRequest, WatchResponse,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::client::{KvConn, Recorder, channel, event_from, now};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Etcd,
    Kubernetes,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Etcd => "etcd",
            Profile::Kubernetes => "kubernetes",
        }
    }
    /// The prefix every key of the profile's history is under (what the
    /// watches watch).
    pub fn prefix(self) -> &'static str {
        match self {
            Profile::Etcd => "key/",
            Profile::Kubernetes => "/registry/",
        }
    }
}

/// Lease TTL: far longer than any run (the checker does not model expiry).
const LEASE_TTL: i64 = 24 * 3600;
const ETCD_KEYS: usize = 10;
const PODS: usize = 10;

fn range(key: &str) -> RangeRequest {
    RangeRequest { key: key.into(), ..Default::default() }
}

fn prefix_range(prefix: &str) -> RangeRequest {
    RangeRequest { key: prefix.into(), range_end: prefix_end(prefix.as_bytes()), ..Default::default() }
}

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest { key: key.into(), value: value.into(), ..Default::default() }
}

fn cmp(key: &str, op: CompareOp, target: CompareTarget) -> Compare {
    Compare { key: key.into(), op, target }
}

/// What a client last saw of each key: (mod_revision, value); `None`: gone.
type Seen = HashMap<Bytes, Option<(i64, Bytes)>>;

fn from_range(seen: &mut Seen, r: &RangeRequest, kvs: &[keelson_tests::checker::KeyValue]) {
    if r.range_end.is_empty() && !r.count_only && r.revision == 0 {
        seen.insert(r.key.clone(), kvs.first().map(|kv| (kv.mod_revision, kv.value.clone())));
    }
}

fn learn(seen: &mut Seen, req: &Request, outcome: &Outcome) {
    let Outcome::Ok(resp) = outcome else { return };
    match (req, resp) {
        (Request::Range(r), Response::Range { kvs, .. }) => from_range(seen, r, kvs),
        (Request::Put(p), Response::Put { revision, .. }) => {
            seen.insert(p.key.clone(), Some((*revision, p.value.clone())));
        }
        (Request::Txn(t), Response::Txn { revision, succeeded, responses }) => {
            let ops = if *succeeded { &t.success } else { &t.failure };
            for (op, r) in ops.iter().zip(responses) {
                match (op, r) {
                    (TxnOp::Put(p), _) => {
                        seen.insert(p.key.clone(), Some((*revision, p.value.clone())));
                    }
                    (TxnOp::Delete(d), _) if d.range_end.is_empty() => {
                        seen.insert(d.key.clone(), None);
                    }
                    (TxnOp::Range(rr), TxnOpResponse::Range { kvs, .. }) => from_range(seen, rr, kvs),
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

/// One etcd-style client: gets, ranges with limits, puts (some with a
/// lease or prev_kv), deletes, Txns comparing mod_revision or value, lease
/// grants and revokes.
pub async fn etcd_client(mut conn: KvConn, seed: u64, stop: Arc<AtomicBool>, pace: Duration) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut seen = Seen::new();
    let mut leases: Vec<i64> = Vec::new();
    let mut lease_seq = 0;
    let mut seq = 0u64;
    let mut last_rev = 1;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let key = format!("key/{}", rng.random_range(0..ETCD_KEYS));
        let value = format!("c{}-{seq}", conn.id);
        let roll = rng.random_range(0..100);
        let req = match roll {
            0..15 => Request::Range(range(&key)),
            15..22 => Request::Range(RangeRequest {
                limit: [0, 1, 3, 5][rng.random_range(0..4)],
                keys_only: rng.random_bool(0.2),
                ..prefix_range("key/")
            }),
            22..25 => Request::Range(RangeRequest { count_only: true, ..prefix_range("key/") }),
            // A read at a recent revision (may be compacted: then it fails).
            25..29 => Request::Range(RangeRequest {
                revision: (last_rev - rng.random_range(0..20)).max(1),
                ..prefix_range("key/")
            }),
            29..50 => Request::Put(PutRequest { prev_kv: rng.random_bool(0.3), ..put(&key, &value) }),
            50..55 if !leases.is_empty() => {
                let lease = leases[rng.random_range(0..leases.len())];
                Request::Put(PutRequest { lease, ..put(&key, &value) })
            }
            55..60 => Request::DeleteRange(DeleteRequest {
                key: key.as_str().into(),
                prev_kv: rng.random_bool(0.5),
                ..Default::default()
            }),
            60..62 => Request::DeleteRange(DeleteRequest {
                key: "key/3".into(),
                range_end: "key/5".into(),
                ..Default::default()
            }),
            62..77 => {
                let target = match seen.get(key.as_bytes()) {
                    Some(Some((m, _))) => CompareTarget::ModRevision(*m),
                    _ => CompareTarget::ModRevision(0),
                };
                Request::Txn(TxnRequest {
                    compare: vec![cmp(&key, CompareOp::Equal, target)],
                    success: vec![TxnOp::Put(put(&key, &value))],
                    failure: vec![TxnOp::Range(range(&key))],
                })
            }
            77..83 => {
                let old = match seen.get(key.as_bytes()) {
                    Some(Some((_, v))) => v.clone(),
                    _ => Bytes::from("none"),
                };
                Request::Txn(TxnRequest {
                    compare: vec![cmp(&key, CompareOp::Equal, CompareTarget::Value(old))],
                    success: vec![TxnOp::Delete(DeleteRequest {
                        key: key.as_str().into(),
                        ..Default::default()
                    })],
                    failure: vec![TxnOp::Range(range(&key))],
                })
            }
            83..90 => {
                // Several keys in one revision.
                let k2 = format!("key/{}", rng.random_range(0..ETCD_KEYS));
                let k3 = format!("key/{}", rng.random_range(0..ETCD_KEYS));
                let mut success = vec![TxnOp::Put(put(&k2, &value))];
                if k3 != k2 {
                    success.push(TxnOp::Put(put(&k3, &format!("{value}b"))));
                }
                Request::Txn(TxnRequest {
                    compare: vec![cmp(&key, CompareOp::Greater, CompareTarget::Version(0))],
                    success,
                    failure: vec![
                        TxnOp::Put(put(&key, &format!("{value}f"))),
                        TxnOp::Range(prefix_range("key/")),
                    ],
                })
            }
            90..95 => {
                lease_seq += 1;
                Request::LeaseGrant { id: ((conn.id as i64) << 32) | lease_seq, ttl: LEASE_TTL }
            }
            95..100 if !leases.is_empty() => {
                let i = rng.random_range(0..leases.len());
                Request::LeaseRevoke { id: leases.swap_remove(i) }
            }
            _ => Request::Range(range(&key)),
        };
        let outcome = conn.exec(req.clone()).await;
        if let Outcome::Ok(r) = &outcome {
            last_rev = last_rev.max(r.revision());
            if let Response::LeaseGrant { id, .. } = r {
                leases.push(*id);
            }
        }
        learn(&mut seen, &req, &outcome);
        pause(&outcome, pace).await;
    }
}

async fn pause(outcome: &Outcome, pace: Duration) {
    let d = if matches!(outcome, Outcome::Ok(_)) { pace } else { Duration::from_millis(100) };
    tokio::time::sleep(d).await;
}

fn pod(i: usize) -> String {
    format!("/registry/pods/default/pod-{i}")
}

/// One Kubernetes-style client, as kube-apiserver's storage layer talks to
/// etcd: reads of one object, creates (`create_revision == 0`), updates and
/// deletes guarded by the mod_revision last seen, paginated lists with a
/// limit and the first page's revision, count-only ranges.
pub async fn kubernetes_client(mut conn: KvConn, seed: u64, stop: Arc<AtomicBool>, pace: Duration) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut seen = Seen::new();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let key = pod(rng.random_range(0..PODS));
        let value = format!("{{\"pod\":\"{key}\",\"by\":{},\"gen\":{seq}}}", conn.id);
        let roll = rng.random_range(0..100);
        let last = seen.get(key.as_bytes()).cloned();
        let req = match roll {
            0..20 => Request::Range(range(&key)),
            20..35 => Request::Txn(TxnRequest {
                compare: vec![cmp(&key, CompareOp::Equal, CompareTarget::CreateRevision(0))],
                success: vec![TxnOp::Put(put(&key, &value))],
                failure: vec![TxnOp::Range(range(&key))],
            }),
            35..60 if matches!(last, Some(Some(_))) => {
                let m = last.as_ref().and_then(|l| l.as_ref()).map_or(0, |l| l.0);
                Request::Txn(TxnRequest {
                    compare: vec![cmp(&key, CompareOp::Equal, CompareTarget::ModRevision(m))],
                    success: vec![TxnOp::Put(put(&key, &value))],
                    failure: vec![TxnOp::Range(range(&key))],
                })
            }
            60..66 if matches!(last, Some(Some(_))) => {
                let m = last.as_ref().and_then(|l| l.as_ref()).map_or(0, |l| l.0);
                Request::Txn(TxnRequest {
                    compare: vec![cmp(&key, CompareOp::Equal, CompareTarget::ModRevision(m))],
                    success: vec![TxnOp::Delete(DeleteRequest {
                        key: key.as_str().into(),
                        ..Default::default()
                    })],
                    failure: vec![TxnOp::Range(range(&key))],
                })
            }
            66..80 => {
                list(&mut conn, &stop).await;
                continue;
            }
            80..88 => Request::Range(RangeRequest { count_only: true, ..prefix_range("/registry/pods/") }),
            _ => Request::Range(range(&key)),
        };
        let outcome = conn.exec(req.clone()).await;
        learn(&mut seen, &req, &outcome);
        pause(&outcome, pace).await;
    }
}

/// A paginated list: pages of 3, the first at the current revision, the
/// rest at the first page's revision from the key after the last one seen.
async fn list(conn: &mut KvConn, stop: &AtomicBool) {
    let prefix = "/registry/pods/";
    let mut req = RangeRequest { limit: 3, ..prefix_range(prefix) };
    loop {
        let outcome = conn.exec(Request::Range(req.clone())).await;
        let Outcome::Ok(Response::Range { revision, kvs, more, .. }) = outcome else { return };
        if !more || stop.load(Ordering::Relaxed) {
            return;
        }
        let Some(last) = kvs.last() else { return };
        let mut next = last.key.0.clone();
        next.push(0);
        req = RangeRequest { key: Bytes(next), revision, ..req };
    }
}

/// Compaction throughout the run, about every second at the revision seen
/// a tick earlier. Kubernetes-style: kube-apiserver's `compact_rev_key`
/// Txn (recorded) decides whether this apiserver compacts; etcd-style: a
/// plain Compact. Compact requests themselves are not recorded (the
/// checker does not model them).
pub async fn compactor(mut conn: KvConn, profile: Profile, stop: Arc<AtomicBool>) {
    let mut prev_rev = 0;
    let mut version = 0;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let (rev, compact) = match profile {
            Profile::Etcd => {
                let o = conn
                    .exec(Request::Range(RangeRequest { count_only: true, ..prefix_range("key/") }))
                    .await;
                (o, true)
            }
            Profile::Kubernetes => {
                let key = "compact_rev_key";
                let txn = TxnRequest {
                    compare: vec![cmp(key, CompareOp::Equal, CompareTarget::Version(version))],
                    success: vec![TxnOp::Put(put(key, &prev_rev.to_string()))],
                    failure: vec![TxnOp::Range(range(key))],
                };
                let o = conn.exec(Request::Txn(txn)).await;
                let mut compact = false;
                if let Outcome::Ok(Response::Txn { succeeded, responses, .. }) = &o {
                    if *succeeded {
                        version += 1;
                        compact = true;
                    } else if let Some(TxnOpResponse::Range { kvs, .. }) = responses.first() {
                        version = kvs.first().map_or(0, |kv| kv.version);
                    }
                }
                (o, compact)
            }
        };
        let Outcome::Ok(resp) = rev else { continue };
        if compact && prev_rev > 1 {
            let _ = conn.compact(prev_rev).await;
        }
        prev_rev = resp.revision();
    }
}

/// A watcher: watches `prefix` from revision 1 with prev_kv and progress
/// notifications, asks for progress every ~500 ms, and when its stream
/// breaks or goes silent resumes on another member from the revision after
/// the last it knows complete (one [`WatchRecord`] per stream).
pub async fn watcher(
    id: ClientId,
    endpoints: Vec<String>,
    prefix: &'static str,
    rec: Recorder,
    stop: Arc<AtomicBool>,
) {
    let mut at = id as usize % endpoints.len();
    let mut start = 1;
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let request = WatchRequest {
            key: prefix.into(),
            range_end: prefix_end(prefix.as_bytes()),
            start_revision: start,
            prev_kv: true,
            progress_notify: true,
        };
        let mut record = WatchRecord { client: id, watch_id: n, request, responses: Vec::new() };
        let next = watch_once(&endpoints[at], &mut record, &stop).await;
        if !record.responses.is_empty() {
            rec.add_watch(record);
        }
        start = start.max(next);
        at = (at + 1) % endpoints.len();
        if !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Runs one watch stream into `record`; returns the revision to resume
/// from.
async fn watch_once(endpoint: &str, record: &mut WatchRecord, stop: &AtomicBool) -> i64 {
    let mut resume = record.request.start_revision;
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::WatchRequest>(16);
    let create = pb::WatchCreateRequest {
        key: bytes::Bytes::copy_from_slice(record.request.key.as_slice()),
        range_end: bytes::Bytes::copy_from_slice(record.request.range_end.as_slice()),
        start_revision: record.request.start_revision,
        progress_notify: true,
        prev_kv: true,
        ..Default::default()
    };
    let create =
        pb::WatchRequest { request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)) };
    if tx.send(create).await.is_err() {
        return resume;
    }
    let mut client = WatchClient::new(channel(endpoint));
    let stream = tokio::time::timeout(
        Duration::from_secs(2),
        client.watch(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
    .await;
    let Ok(Ok(stream)) = stream else { return resume };
    let mut stream = stream.into_inner();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut last_heard = now();
    loop {
        tokio::select! {
            msg = stream.message() => {
                let Ok(Some(m)) = msg else { return resume };
                last_heard = now();
                let resp = WatchResponse {
                    time: now(),
                    revision: m.header.as_ref().map_or(0, |h| h.revision),
                    events: m.events.iter().map(event_from).collect(),
                    created: m.created,
                    canceled: m.canceled,
                    compact_revision: m.compact_revision,
                    fragment: m.fragment,
                };
                if let Some(e) = resp.events.last() {
                    resume = resume.max(e.revision() + 1);
                }
                if resp.is_progress_notify() {
                    resume = resume.max(resp.revision + 1);
                }
                let (canceled, compacted) = (resp.canceled, resp.compact_revision);
                record.responses.push(resp);
                if compacted > 0 {
                    // What it missed is gone: start again at the oldest
                    // revision still there.
                    return resume.max(compacted);
                }
                if canceled {
                    return resume;
                }
            }
            _ = tick.tick() => {
                if stop.load(Ordering::Relaxed) {
                    return resume;
                }
                if now() - last_heard > 3_000_000_000 {
                    // Silent despite progress requests: the member is
                    // stopped or cut off.
                    return resume;
                }
                let progress = pb::WatchRequest {
                    request_union: Some(pb::watch_request::RequestUnion::ProgressRequest(pb::WatchProgressRequest {})),
                };
                if tx.send(progress).await.is_err() {
                    return resume;
                }
            }
        }
    }
}
