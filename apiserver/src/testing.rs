//! Test fixtures (compiled for unit tests only): a fake [`Backend`] over a
//! REAL `keelson_mvcc::Store` in a temporary directory and a real
//! `WatchHub`, proposals applied straight to the store; a tonic server on
//! 127.0.0.1:0 serving [`crate::routes`]; clients for it; and `etcdctl`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use keelson_mvcc::{MvccError, Store, WriteTxn};
use keelson_proto::etcdserverpb::alarm_request::AlarmAction;
use keelson_proto::etcdserverpb::auth_client::AuthClient;
use keelson_proto::etcdserverpb::cluster_client::ClusterClient;
use keelson_proto::etcdserverpb::kv_client::KvClient;
use keelson_proto::etcdserverpb::lease_client::LeaseClient;
use keelson_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use keelson_proto::etcdserverpb::request_op::Request as Op;
use keelson_proto::etcdserverpb::watch_client::WatchClient;
use keelson_proto::etcdserverpb::{
    AlarmMember, AlarmResponse, CompactionResponse, DeleteRangeRequest, LeaseGrantResponse,
    LeaseRevokeResponse, LeaseTimeToLiveResponse, RangeRequest, RequestOp, ResponseHeader, TxnRequest,
};
use keelson_proto::keelsonraftpb::internal_request::Request as R;
use keelson_proto::keelsonraftpb::internal_response::Response as A;
use keelson_proto::keelsonraftpb::{ApplyError, ApplyErrorKind, InternalRequest, InternalResponse};
use keelson_raftstore::state_machine::StoreSource;
use keelson_watch::{WatchConfig, WatchHub};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tonic::transport::{Channel, Endpoint};

use crate::backend::{Backend, BackendError, BoxFuture, MemberInfo, MemberStatus, SnapshotReader};
use crate::config::GrpcConfig;

pub const CLUSTER_ID: u64 = 0xc1c1_0000_0000_0001;
pub const MEMBER_ID: u64 = 0x8e9e_05c5_2164_694d;
pub const RAFT_TERM: u64 = 7;
/// What the test backend answers a membership change: it has one member.
pub const TEST_BACKEND_NO_MEMBERSHIP: &str = "the test backend has one member and changes no membership";
/// Size of the fake snapshot: not a multiple of 512, to exercise padding.
pub const SNAPSHOT_BYTES: usize = 100_003;

pub fn key(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

struct Lease {
    ttl: i64,
    expires: Instant,
}

/// A single member that applies every proposal at once.
pub struct FakeBackend {
    store: Arc<Store>,
    hub: WatchHub,
    leases: Mutex<HashMap<i64, Lease>>,
    leader: AtomicBool,
    _dir: TempDir,
}

fn apply_error(e: MvccError) -> ApplyError {
    keelson_raftstore::state_machine::mvcc_apply_error(&e)
}

fn fail(kind: ApplyErrorKind) -> A {
    A::Error(ApplyError { kind: kind as i32, message: kind.as_str_name().into() })
}

impl FakeBackend {
    pub fn new() -> Arc<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = keelson_mvcc::Config { member_id: MEMBER_ID, ..Default::default() };
        let store = Arc::new(Store::open(dir.path(), config).expect("open store"));
        let hub = WatchHub::start(
            Arc::new(StoreSource(store.clone())),
            WatchConfig::default(),
            store.current_revision(),
            store.compacted_revision(),
        )
        .expect("start hub");
        Arc::new(FakeBackend {
            store,
            hub,
            leases: Mutex::new(HashMap::new()),
            leader: AtomicBool::new(true),
            _dir: dir,
        })
    }

    /// Whether the member knows a leader (itself).
    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::SeqCst);
    }

    fn has_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }

    /// Runs `f` in a write batch, commits it and hands each revision to the
    /// hub, as the raft apply path does.
    fn write<T>(&self, f: impl FnOnce(&mut WriteTxn<'_>) -> Result<T, MvccError>) -> Result<T, MvccError> {
        let leases: Vec<i64> = self.leases.lock().unwrap().keys().copied().collect();
        let check = move |id: i64| leases.contains(&id);
        let mut batch = self.store.write()?;
        batch.set_lease_check(&check);
        let out = f(&mut batch)?;
        let committed = batch.commit()?;
        for rev in committed.events {
            self.hub.notify(rev.revision, rev.events);
        }
        Ok(out)
    }

    fn apply(&self, req: InternalRequest) -> InternalResponse {
        let resp = match req.request {
            Some(R::Put(p)) => self.write(|w| w.put(&p)).map(A::Put),
            Some(R::DeleteRange(d)) => self.write(|w| w.delete_range(&d)).map(A::DeleteRange),
            Some(R::Txn(t)) => self.write(|w| w.txn(&t)).map(A::Txn),
            Some(R::Compaction(c)) => self.write(|w| w.compact(c.revision)).map(|wait| {
                self.hub.compacted(c.revision);
                if c.physical {
                    wait.wait();
                }
                A::Compaction(CompactionResponse::default())
            }),
            Some(R::LeaseGrant(g)) => Ok(self.grant(g.id, g.ttl)),
            Some(R::LeaseRevoke(r)) => self.revoke(r.id),
            // As etcd's apply: the answer lists the alarm that changed.
            Some(R::Alarm(a)) => self
                .write(|w| {
                    let changed = match AlarmAction::try_from(a.action) {
                        Ok(AlarmAction::Activate) => {
                            w.activate_alarm(a.member_id, a.alarm);
                            true
                        }
                        Ok(AlarmAction::Deactivate) => w.deactivate_alarm(a.member_id, a.alarm),
                        _ => false,
                    };
                    Ok(changed)
                })
                .map(|changed| {
                    let alarms = if changed {
                        vec![AlarmMember { member_id: a.member_id, alarm: a.alarm }]
                    } else {
                        Vec::new()
                    };
                    A::Alarm(AlarmResponse { header: None, alarms })
                }),
            Some(R::LeaseRenewAll(r)) => Ok(A::LeaseRenewAll(r)),
            // Batches are the raft proposer's; nothing sends one here.
            Some(R::Batch(_)) | None => Ok(fail(ApplyErrorKind::ApplyErrorUnknown)),
        };
        InternalResponse { response: Some(resp.unwrap_or_else(|e| A::Error(apply_error(e)))) }
    }

    fn grant(&self, id: i64, ttl: i64) -> A {
        let mut leases = self.leases.lock().unwrap();
        if leases.contains_key(&id) {
            return fail(ApplyErrorKind::LeaseExists);
        }
        leases.insert(id, Lease { ttl, expires: Instant::now() + Duration::from_secs(ttl as u64) });
        A::LeaseGrant(LeaseGrantResponse { id, ttl, ..Default::default() })
    }

    fn revoke(&self, id: i64) -> Result<A, MvccError> {
        if self.leases.lock().unwrap().remove(&id).is_none() {
            return Ok(fail(ApplyErrorKind::LeaseNotFound));
        }
        let keys = self.lease_keys(id)?;
        if !keys.is_empty() {
            let deletes = keys
                .into_iter()
                .map(|key| RequestOp {
                    request: Some(Op::RequestDeleteRange(DeleteRangeRequest { key, ..Default::default() })),
                })
                .collect();
            let txn = TxnRequest { success: deletes, ..Default::default() };
            self.write(|w| w.txn(&txn))?;
        }
        Ok(A::LeaseRevoke(LeaseRevokeResponse::default()))
    }

    fn lease_keys(&self, id: i64) -> Result<Vec<Bytes>, MvccError> {
        let all = RangeRequest { key: key("\0"), range_end: key("\0"), ..Default::default() };
        Ok(self.store.range(&all)?.kvs.into_iter().filter(|kv| kv.lease == id).map(|kv| kv.key).collect())
    }

    fn snapshot_bytes() -> Vec<u8> {
        (0..SNAPSHOT_BYTES).map(|i| (i % 251) as u8).collect()
    }
}

impl Backend for FakeBackend {
    fn propose(&self, req: InternalRequest) -> BoxFuture<'_, Result<InternalResponse, BackendError>> {
        Box::pin(async move {
            if !self.has_leader() {
                return Err(BackendError::NoLeader);
            }
            Ok(tokio::task::block_in_place(|| self.apply(req)))
        })
    }

    fn read_barrier(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move { if self.has_leader() { Ok(()) } else { Err(BackendError::NoLeader) } })
    }

    fn store(&self) -> Arc<Store> {
        self.store.clone()
    }

    fn hub(&self) -> &WatchHub {
        &self.hub
    }

    fn status(&self) -> MemberStatus {
        let index = self.store.current_revision() as u64 + 10;
        MemberStatus {
            cluster_id: CLUSTER_ID,
            member_id: MEMBER_ID,
            leader: if self.has_leader() { MEMBER_ID } else { 0 },
            raft_term: RAFT_TERM,
            raft_index: index,
            raft_applied_index: index,
            is_learner: false,
        }
    }

    fn members(&self) -> Vec<MemberInfo> {
        vec![MemberInfo {
            id: MEMBER_ID,
            name: "default".into(),
            peer_urls: vec!["http://127.0.0.1:2380".into()],
            client_urls: vec!["http://127.0.0.1:2379".into()],
            is_learner: false,
        }]
    }

    fn lease_keep_alive(&self, id: i64) -> BoxFuture<'_, Result<i64, BackendError>> {
        Box::pin(async move {
            let mut leases = self.leases.lock().unwrap();
            let lease = leases.get_mut(&id).ok_or(BackendError::LeaseNotFound)?;
            lease.expires = Instant::now() + Duration::from_secs(lease.ttl as u64);
            Ok(lease.ttl)
        })
    }

    fn lease_time_to_live(
        &self,
        id: i64,
        keys: bool,
    ) -> BoxFuture<'_, Result<LeaseTimeToLiveResponse, BackendError>> {
        Box::pin(async move {
            let (ttl, remaining) = {
                let leases = self.leases.lock().unwrap();
                let lease = leases.get(&id).ok_or(BackendError::LeaseNotFound)?;
                (lease.ttl, lease.expires.saturating_duration_since(Instant::now()).as_secs() as i64)
            };
            let keys = if keys {
                self.lease_keys(id).map_err(|e| BackendError::Internal(e.to_string()))?
            } else {
                Vec::new()
            };
            Ok(LeaseTimeToLiveResponse { header: None, id, ttl: remaining, granted_ttl: ttl, keys })
        })
    }

    fn change_members(
        &self,
        _change: crate::backend::MemberChange,
    ) -> BoxFuture<'_, Result<(u64, Vec<MemberInfo>), BackendError>> {
        Box::pin(async move { Err(BackendError::Internal(TEST_BACKEND_NO_MEMBERSHIP.into())) })
    }

    fn move_leader(&self, target: u64) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move { if target == MEMBER_ID { Ok(()) } else { Err(BackendError::BadTransferee) } })
    }

    fn lease_ids(&self) -> BoxFuture<'_, Result<Vec<i64>, BackendError>> {
        Box::pin(async move {
            let mut ids: Vec<i64> = self.leases.lock().unwrap().keys().copied().collect();
            ids.sort_unstable();
            Ok(ids)
        })
    }

    fn snapshot(&self) -> BoxFuture<'_, Result<SnapshotReader, BackendError>> {
        Box::pin(async move {
            let data = FakeBackend::snapshot_bytes();
            // Uneven chunks, one of them larger than a gRPC message chunk.
            let cuts = [0, 10, 70_000, 70_001, data.len()];
            let chunks: Vec<Result<Bytes, BackendError>> =
                cuts.windows(2).map(|w| Ok(Bytes::copy_from_slice(&data[w[0]..w[1]]))).collect();
            Ok(SnapshotReader {
                total_size: data.len() as u64,
                chunks: Box::pin(futures::stream::iter(chunks)),
            })
        })
    }
}

/// The expected snapshot content.
pub fn snapshot_bytes() -> Vec<u8> {
    FakeBackend::snapshot_bytes()
}

/// A tonic server on 127.0.0.1 serving [`crate::routes`] over a fake backend.
pub struct TestServer {
    pub backend: Arc<FakeBackend>,
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(GrpcConfig::default()).await
    }

    pub async fn start_with(cfg: GrpcConfig) -> TestServer {
        let backend = FakeBackend::new();
        let routes = crate::routes(backend.clone(), &cfg);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_routes(routes)
                .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), async {
                    let _ = rx.await;
                })
                .await
                .expect("serve");
        });
        TestServer { backend, addr, shutdown: Some(tx) }
    }

    pub fn store(&self) -> Arc<Store> {
        self.backend.store()
    }

    /// `host:port`, as etcdctl's `--endpoints` takes it.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    pub async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.addr))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect")
    }

    pub async fn kv_client(&self) -> KvClient<Channel> {
        KvClient::new(self.channel().await).max_decoding_message_size(64 << 20)
    }

    pub async fn watch_client(&self) -> WatchClient<Channel> {
        WatchClient::new(self.channel().await)
    }

    pub async fn lease_client(&self) -> LeaseClient<Channel> {
        LeaseClient::new(self.channel().await)
    }

    pub async fn maintenance_client(&self) -> MaintenanceClient<Channel> {
        MaintenanceClient::new(self.channel().await)
    }

    pub async fn cluster_client(&self) -> ClusterClient<Channel> {
        ClusterClient::new(self.channel().await)
    }

    pub async fn auth_client(&self) -> AuthClient<Channel> {
        AuthClient::new(self.channel().await)
    }

    /// The `etcd-client` crate connected to this server.
    pub async fn etcd_client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.endpoint()], None).await.expect("etcd-client connect")
    }

    /// (cluster id, member id, revision, raft term) a header should carry.
    pub fn header_ids(&self, revision: i64) -> (u64, u64, i64, u64) {
        (CLUSTER_ID, MEMBER_ID, revision, RAFT_TERM)
    }

    pub fn assert_header(&self, header: Option<&ResponseHeader>, revision: i64) {
        let h = header.expect("response has a header");
        assert_eq!((h.cluster_id, h.member_id, h.revision, h.raft_term), self.header_ids(revision));
    }

    /// The real `etcdctl` (API v3) pointed at this server, not started.
    pub fn etcdctl_command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint()))
            .arg("--command-timeout=10s")
            .args(args)
            .kill_on_drop(true);
        cmd
    }

    /// Runs `etcdctl` to completion, with `stdin` as its input.
    pub async fn etcdctl_with_input(&self, args: &[&str], stdin: &[u8]) -> Output {
        use tokio::io::AsyncWriteExt;
        let mut child = self
            .etcdctl_command(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run etcdctl (is it installed? scripts/deps.sh installs it)");
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(stdin).await.expect("write etcdctl stdin");
        drop(input);
        child.wait_with_output().await.expect("wait for etcdctl")
    }

    /// Runs `etcdctl` to completion.
    pub async fn etcdctl(&self, args: &[&str]) -> Output {
        self.etcdctl_with_input(args, b"").await
    }

    /// Runs `etcdctl`, asserts it succeeded, and returns its stdout.
    pub async fn etcdctl_ok(&self, args: &[&str]) -> String {
        let out = self.etcdctl(args).await;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}\nstdout: {stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Runs `etcdctl`, asserts it failed, and returns its stderr.
    pub async fn etcdctl_err(&self, args: &[&str]) -> String {
        let out = self.etcdctl(args).await;
        assert!(
            !out.status.success(),
            "etcdctl {args:?} should fail: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
