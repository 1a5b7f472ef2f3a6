//! A recording client: checker requests sent over etcd's gRPC API (the
//! generated tonic stubs of `keelson-proto`), answers turned back into the
//! checker's types, every call recorded into one shared [`History`] with
//! times from one monotonic clock.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use keelson_proto::etcdserverpb as pb;
use keelson_proto::etcdserverpb::kv_client::KvClient;
use keelson_proto::etcdserverpb::lease_client::LeaseClient;
use keelson_proto::mvccpb;
use keelson_tests::checker::{
    Bytes, ClientId, Compaction, Compare, CompareOp, CompareTarget, History, KeyValue, Outcome, Request,
    Response, TxnOp, TxnOpResponse, WatchRecord,
};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

/// Monotonic nanoseconds since the first call in this process: the one
/// clock of every history.
pub fn now() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// How long a client waits for one answer before it calls the outcome
/// Unknown.
pub const OP_TIMEOUT: Duration = Duration::from_secs(3);

/// The history being recorded, shared by every client of a run.
#[derive(Clone, Default)]
pub struct Recorder {
    inner: Arc<Mutex<History>>,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder { inner: Arc::new(Mutex::new(History::new())) }
    }
    pub fn record(&self, client: ClientId, call: u64, ret: u64, req: Request, outcome: Outcome) {
        self.inner.lock().unwrap().record(client, call, ret, req, outcome);
    }
    pub fn add_compaction(&self, time: u64, revision: i64) {
        self.inner.lock().unwrap().compactions.push(Compaction { time, revision });
    }
    pub fn add_watch(&self, w: WatchRecord) {
        self.inner.lock().unwrap().watches.push(w);
    }
    pub fn take(&self) -> History {
        std::mem::take(&mut *self.inner.lock().unwrap())
    }
}

/// A lazily connecting channel to one member.
pub fn channel(endpoint: &str) -> Channel {
    Endpoint::from_shared(format!("http://{endpoint}"))
        .expect("endpoint URL")
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .connect_lazy()
}

/// What a gRPC error means for the outcome: rejected (definitely not
/// applied) or unknown (it may have been).
pub fn classify(status: &tonic::Status) -> Outcome {
    let msg = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        Code::InvalidArgument
        | Code::OutOfRange
        | Code::NotFound
        | Code::FailedPrecondition
        | Code::ResourceExhausted
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::AlreadyExists => Outcome::Failed(msg),
        _ => Outcome::Unknown(msg),
    }
}

/// One logical client of the history: sequential calls, one member at a
/// time, moving on to the next member when its member fails it.
pub struct KvConn {
    pub id: ClientId,
    endpoints: Vec<String>,
    at: usize,
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
    rec: Recorder,
}

impl KvConn {
    pub fn new(id: ClientId, endpoints: Vec<String>, first: usize, rec: Recorder) -> KvConn {
        let at = first % endpoints.len();
        let ch = channel(&endpoints[at]);
        KvConn { id, kv: KvClient::new(ch.clone()), lease: LeaseClient::new(ch), endpoints, at, rec }
    }

    /// Moves to the next member.
    pub fn rotate(&mut self) {
        self.at = (self.at + 1) % self.endpoints.len();
        let ch = channel(&self.endpoints[self.at]);
        self.kv = KvClient::new(ch.clone());
        self.lease = LeaseClient::new(ch);
    }

    /// Sends `req`, records it with its outcome, and returns the outcome.
    pub async fn exec(&mut self, req: Request) -> Outcome {
        let call = now();
        let outcome = match tokio::time::timeout(OP_TIMEOUT, send(&mut self.kv, &mut self.lease, &req)).await
        {
            Ok(Ok(resp)) => Outcome::Ok(resp),
            Ok(Err(o)) => o,
            Err(_) => Outcome::Unknown("timeout".into()),
        };
        let ret = now();
        self.rec.record(self.id, call, ret, req, outcome.clone());
        if matches!(outcome, Outcome::Unknown(_)) {
            self.rotate();
        }
        outcome
    }

    /// Compact (not part of the history: the checker does not model it).
    pub async fn compact(&mut self, revision: i64) -> Result<(), String> {
        // Recorded whatever the answer: it may have been applied.
        self.rec.add_compaction(now(), revision);
        let req = pb::CompactionRequest { revision, physical: false };
        match tokio::time::timeout(OP_TIMEOUT, self.kv.compact(req)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(s)) => Err(s.message().to_string()),
            Err(_) => Err("timeout".into()),
        }
    }
}

async fn send(
    kv: &mut KvClient<Channel>,
    lease: &mut LeaseClient<Channel>,
    req: &Request,
) -> Result<Response, Outcome> {
    let err = |s: tonic::Status| classify(&s);
    Ok(match req {
        Request::Range(r) => {
            let resp = kv.range(range_pb(r)).await.map_err(err)?.into_inner();
            Response::Range {
                revision: rev(&resp.header),
                kvs: resp.kvs.iter().map(kv_from).collect(),
                count: resp.count,
                more: resp.more,
            }
        }
        Request::Put(p) => {
            let resp = kv.put(put_pb(p)).await.map_err(err)?.into_inner();
            Response::Put { revision: rev(&resp.header), prev_kv: resp.prev_kv.as_ref().map(kv_from) }
        }
        Request::DeleteRange(d) => {
            let resp = kv.delete_range(delete_pb(d)).await.map_err(err)?.into_inner();
            Response::DeleteRange {
                revision: rev(&resp.header),
                deleted: resp.deleted,
                prev_kvs: resp.prev_kvs.iter().map(kv_from).collect(),
            }
        }
        Request::Txn(t) => {
            let txn = pb::TxnRequest {
                compare: t.compare.iter().map(compare_pb).collect(),
                success: t.success.iter().map(op_pb).collect(),
                failure: t.failure.iter().map(op_pb).collect(),
            };
            let resp = kv.txn(txn).await.map_err(err)?.into_inner();
            Response::Txn {
                revision: rev(&resp.header),
                succeeded: resp.succeeded,
                responses: resp.responses.iter().map(op_resp).collect(),
            }
        }
        Request::LeaseGrant { id, ttl } => {
            let resp = lease
                .lease_grant(pb::LeaseGrantRequest { ttl: *ttl, id: *id })
                .await
                .map_err(err)?
                .into_inner();
            if !resp.error.is_empty() {
                return Err(Outcome::Failed(resp.error));
            }
            Response::LeaseGrant { revision: rev(&resp.header), id: resp.id }
        }
        Request::LeaseRevoke { id } => {
            let resp =
                lease.lease_revoke(pb::LeaseRevokeRequest { id: *id }).await.map_err(err)?.into_inner();
            Response::LeaseRevoke { revision: rev(&resp.header) }
        }
    })
}

fn rev(h: &Option<pb::ResponseHeader>) -> i64 {
    h.as_ref().map_or(0, |h| h.revision)
}

fn b(x: &Bytes) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(x.as_slice())
}

pub fn kv_from(kv: &mvccpb::KeyValue) -> KeyValue {
    KeyValue {
        key: Bytes(kv.key.to_vec()),
        value: Bytes(kv.value.to_vec()),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        lease: kv.lease,
    }
}

fn range_pb(r: &keelson_tests::checker::RangeRequest) -> pb::RangeRequest {
    pb::RangeRequest {
        key: b(&r.key),
        range_end: b(&r.range_end),
        revision: r.revision,
        limit: r.limit,
        count_only: r.count_only,
        keys_only: r.keys_only,
        ..Default::default()
    }
}

fn put_pb(p: &keelson_tests::checker::PutRequest) -> pb::PutRequest {
    pb::PutRequest {
        key: b(&p.key),
        value: b(&p.value),
        lease: p.lease,
        prev_kv: p.prev_kv,
        ..Default::default()
    }
}

fn delete_pb(d: &keelson_tests::checker::DeleteRequest) -> pb::DeleteRangeRequest {
    pb::DeleteRangeRequest { key: b(&d.key), range_end: b(&d.range_end), prev_kv: d.prev_kv }
}

fn compare_pb(c: &Compare) -> pb::Compare {
    use pb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    let result = match c.op {
        CompareOp::Equal => R::Equal,
        CompareOp::NotEqual => R::NotEqual,
        CompareOp::Less => R::Less,
        CompareOp::Greater => R::Greater,
    };
    let (target, union) = match &c.target {
        CompareTarget::Value(v) => (T::Value, U::Value(b(v))),
        CompareTarget::Version(v) => (T::Version, U::Version(*v)),
        CompareTarget::CreateRevision(v) => (T::Create, U::CreateRevision(*v)),
        CompareTarget::ModRevision(v) => (T::Mod, U::ModRevision(*v)),
        CompareTarget::Lease(v) => (T::Lease, U::Lease(*v)),
    };
    pb::Compare {
        result: result as i32,
        target: target as i32,
        key: b(&c.key),
        target_union: Some(union),
        range_end: Default::default(),
    }
}

fn op_pb(op: &TxnOp) -> pb::RequestOp {
    use pb::request_op::Request as R;
    let request = match op {
        TxnOp::Range(r) => R::RequestRange(range_pb(r)),
        TxnOp::Put(p) => R::RequestPut(put_pb(p)),
        TxnOp::Delete(d) => R::RequestDeleteRange(delete_pb(d)),
    };
    pb::RequestOp { request: Some(request) }
}

fn op_resp(r: &pb::ResponseOp) -> TxnOpResponse {
    use pb::response_op::Response as R;
    match &r.response {
        Some(R::ResponseRange(r)) => {
            TxnOpResponse::Range { kvs: r.kvs.iter().map(kv_from).collect(), count: r.count, more: r.more }
        }
        Some(R::ResponsePut(p)) => TxnOpResponse::Put { prev_kv: p.prev_kv.as_ref().map(kv_from) },
        Some(R::ResponseDeleteRange(d)) => {
            TxnOpResponse::Delete { deleted: d.deleted, prev_kvs: d.prev_kvs.iter().map(kv_from).collect() }
        }
        // Nested Txns are never sent.
        Some(R::ResponseTxn(_)) | None => TxnOpResponse::Range { kvs: vec![], count: 0, more: false },
    }
}

/// Converts a received watch event.
pub fn event_from(e: &mvccpb::Event) -> keelson_tests::checker::Event {
    use keelson_tests::checker::{Event, EventKind};
    let kind =
        if e.r#type == mvccpb::event::EventType::Delete as i32 { EventKind::Delete } else { EventKind::Put };
    Event {
        kind,
        kv: e.kv.as_ref().map(kv_from).unwrap_or_default(),
        prev_kv: e.prev_kv.as_ref().map(kv_from),
    }
}
