//! Three openraft members in one process, each with its own WAL, mvcc
//! store and watch hub, talking over the gRPC peer transport on their own
//! 127.0.0.1 ports: election, replication, failover, a snapshot sent to a
//! member cut off while the log it needed was purged, restart from a data
//! dir holding an installed snapshot, leader transfer, and a peer from
//! another cluster refused.
//!
//! Peers reach each member through a TCP proxy on the member's advertised
//! port; cutting a member off closes its proxy and every connection
//! through it, while the member itself keeps running.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use keelson_proto::etcdserverpb::{PutRequest, RangeRequest, WatchCreateRequest};
use keelson_proto::keelsonraftpb::internal_request::Request;
use keelson_proto::keelsonraftpb::internal_response::Response;
use keelson_proto::keelsonraftpb::{InternalRequest, InternalResponse};
use keelson_raftstore::lessor::Lessor;
use keelson_raftstore::openraft::async_runtime::watch::WatchReceiver;
use keelson_raftstore::openraft::error::{ClientWriteError, RaftError};
use keelson_raftstore::openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use keelson_raftstore::openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, ClientWriteResponse, VoteRequest,
};
use keelson_raftstore::openraft::{Config as RaftConfig, Raft, RaftMetrics, ServerState, SnapshotPolicy};
use keelson_raftstore::state_machine::{Shared, StateMachine, StoreHandle};
use keelson_raftstore::transport::{GrpcNetwork, TransportConfig, peer_routes};
use keelson_raftstore::types::{Command, LeaderId, Member, Vote};
use keelson_raftstore::{TypeConfig, WalConfig, WalLogStore};
use keelson_watch::{WatchConfig, WatchHub};
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const CLUSTER_ID: u64 = 0x6b65_656c_736f_6e31;
const TIMEOUT: Duration = Duration::from_secs(20);

type KRaft = Raft<TypeConfig, StateMachine>;

fn raft_config(snapshots: bool) -> Arc<RaftConfig> {
    let mut c = RaftConfig {
        cluster_name: format!("{CLUSTER_ID:016x}"),
        // etcd's heartbeat; a shorter election timeout for a quick test. A
        // follower waits out the leader lease (election_timeout_max), then
        // its own election timeout: a new leader comes after 1.0 to 1.2 s.
        heartbeat_interval: 100,
        election_timeout_min: 500,
        election_timeout_max: 600,
        enable_pre_vote: Some(true),
        ..Default::default()
    };
    if snapshots {
        c.snapshot_policy = SnapshotPolicy::LogsSinceLast(40);
        c.max_in_snapshot_log_to_keep = 0;
        c.purge_batch_size = 1;
    }
    Arc::new(c.validate().expect("valid raft config"))
}

/// One running member: raft over its WAL and store, serving the peer
/// transport on its port.
struct Node {
    id: u64,
    raft: KRaft,
    store: StoreHandle,
    hub: WatchHub,
    /// Where its peer server listens (behind the proxy).
    port: SocketAddr,
    server: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

/// A TCP proxy from a member's advertised address to its server.
struct Proxy {
    tasks: Arc<parking_lot::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    async fn start(listen: SocketAddr, target: SocketAddr) -> Proxy {
        let listener = bind(listen).await;
        let tasks: Arc<parking_lot::Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let t = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = inbound.set_nodelay(true);
                        let _ = outbound.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                t.lock().push(conn.abort_handle());
            }
        });
        tasks.lock().push(accept.abort_handle());
        Proxy { tasks }
    }

    fn stop(self) {
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
    }
}

struct Cluster {
    dir: tempfile::TempDir,
    /// The advertised peer addresses: where the proxies listen.
    addrs: BTreeMap<u64, SocketAddr>,
    proxies: BTreeMap<u64, Proxy>,
    nodes: BTreeMap<u64, Node>,
    config: Arc<RaftConfig>,
}

impl Cluster {
    async fn start(n: u64, snapshots: bool) -> Cluster {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let mut cluster = Cluster {
            dir: tempfile::tempdir().unwrap(),
            addrs: BTreeMap::new(),
            proxies: BTreeMap::new(),
            nodes: BTreeMap::new(),
            config: raft_config(snapshots),
        };
        for id in 1..=n {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            cluster.addrs.insert(id, l.local_addr().unwrap());
            drop(l);
        }
        for id in 1..=n {
            cluster.restart(id).await;
        }
        let members: BTreeMap<u64, Member> = cluster
            .addrs
            .iter()
            .map(|(id, a)| {
                (
                    *id,
                    Member {
                        name: format!("m{id}"),
                        peer_urls: vec![format!("http://{a}")],
                        client_urls: vec![],
                    },
                )
            })
            .collect();
        cluster.nodes[&1].raft.initialize(members).await.expect("initialize");
        cluster
    }

    fn member_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("m{id}"))
    }

    /// Starts member `id` from its data dir, serving on a new port behind
    /// its proxy.
    async fn restart(&mut self, id: u64) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let node = self.start_node(id, listener).await;
        self.nodes.insert(id, node);
        self.proxies.insert(id, Proxy::start(self.addrs[&id], target).await);
    }

    async fn start_node(&self, id: u64, listener: TcpListener) -> Node {
        let dir = self.member_dir(id);
        let mvcc = keelson_mvcc::Config { member_id: id, ..Default::default() };
        let store = StoreHandle::open(dir.join("kv"), mvcc).expect("open store");
        let current = store.load();
        let hub = WatchHub::start(
            Arc::new(store.clone()),
            WatchConfig::default(),
            current.current_revision(),
            current.compacted_revision(),
        )
        .expect("start hub");
        drop(current);
        let shared =
            Shared::new(&store, hub.clone(), Arc::new(Lessor::new(1)), id, dir.join("snap")).unwrap();
        let wal = WalConfig { segment_size: 4 * 1024 * 1024, ..WalConfig::default() };
        let log = open_wal(&dir.join("wal"), wal).await;
        let network = GrpcNetwork::new(CLUSTER_ID, id, transport_config());
        let sm = StateMachine::new(Arc::new(shared));
        let raft = Raft::new(id, self.config.clone(), network, log, sm).await.expect("start raft");
        let port = listener.local_addr().unwrap();
        let routes = peer_routes(raft.clone(), CLUSTER_ID, id, dir.join("snap"), &transport_config());
        Node { id, raft, store, hub, port, server: Some(serve(routes, listener)) }
    }

    /// Closes a member's proxy and its connections: no peer reaches the
    /// member any more; it still runs (and still reaches them).
    fn cut_off(&mut self, id: u64) {
        if let Some(p) = self.proxies.remove(&id) {
            p.stop();
        }
    }

    /// Opens a cut-off member's proxy again.
    async fn reconnect(&mut self, id: u64) {
        let target = self.nodes[&id].port;
        self.proxies.insert(id, Proxy::start(self.addrs[&id], target).await);
    }

    /// Shuts a member down: its port closes and raft stops.
    async fn kill(&mut self, id: u64) {
        self.cut_off(id);
        let mut node = self.nodes.remove(&id).unwrap();
        stop_server(node.server.take());
        node.raft.shutdown().await.expect("shutdown raft");
        // A restart in the same process must wait until the store is closed
        // (a real one starts a new process).
        let store = Arc::downgrade(&node.store.load());
        drop(node);
        let deadline = Instant::now() + TIMEOUT;
        while store.strong_count() > 0 {
            assert!(Instant::now() < deadline, "member {id}'s store is still open after shutdown");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every running member sees the same leader, and returns it.
    async fn leader(&self) -> u64 {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let seen: Vec<(Option<u64>, ServerState, u64)> = self
                .nodes
                .values()
                .map(|n| {
                    let m = n.raft.metrics().borrow_watched().clone();
                    (m.current_leader, m.state, n.id)
                })
                .collect();
            if let Some((Some(l), _, _)) = seen.first()
                && seen.iter().all(|(x, _, _)| *x == Some(*l))
                && seen.iter().any(|(_, s, id)| *s == ServerState::Leader && id == l)
            {
                return *l;
            }
            assert!(Instant::now() < deadline, "no leader agreed on: {seen:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every running member has applied up to the leader's
    /// last log index.
    async fn settle(&self) -> u64 {
        let leader = self.leader().await;
        let last = self.nodes[&leader].raft.metrics().borrow_watched().last_log_index;
        for n in self.nodes.values() {
            n.raft
                .wait(Some(TIMEOUT))
                .applied_index_at_least(last, format!("member {} applies", n.id))
                .await
                .expect("apply");
        }
        last.unwrap_or(0)
    }

    fn metrics(&self, id: u64) -> RaftMetrics<TypeConfig> {
        self.nodes[&id].raft.metrics().borrow_watched().clone()
    }
}

/// Small snapshot pieces, so even a test snapshot goes in many.
fn transport_config() -> TransportConfig {
    TransportConfig { snapshot_chunk_size: 16 * 1024, ..TransportConfig::default() }
}

async fn open_wal(dir: &Path, cfg: WalConfig) -> WalLogStore {
    // A member shut down moments ago may still be letting go of its WAL.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match WalLogStore::open(dir, cfg.clone()) {
            Ok(w) => return w,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "wal not yet free");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("open wal: {e}"),
        }
    }
}

async fn bind(addr: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) => {
                assert!(Instant::now() < deadline, "bind {addr}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn serve(routes: tonic::service::Routes, listener: TcpListener) -> (oneshot::Sender<()>, JoinHandle<()>) {
    let (tx, rx) = oneshot::channel::<()>();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let task = tokio::spawn(async move {
        let shutdown = async {
            let _ = rx.await;
        };
        TransportConfig::default()
            .server()
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
            .expect("serve peer routes");
    });
    (tx, task)
}

/// Stops a peer server (its port is never reused: a restart binds anew).
fn stop_server(server: Option<(oneshot::Sender<()>, JoinHandle<()>)>) {
    let Some((tx, mut task)) = server else { return };
    let _ = tx.send(());
    // Graceful shutdown waits for open streams; do not wait forever.
    tokio::spawn(async move {
        if tokio::time::timeout(Duration::from_secs(2), &mut task).await.is_err() {
            task.abort();
        }
    });
}

/// Waits until a member's watch hub has fanned out its store's revision.
async fn hub_catches_up(n: &Node) {
    let want = n.store.load().current_revision();
    let deadline = Instant::now() + TIMEOUT;
    while n.hub.revision() < want {
        assert!(
            Instant::now() < deadline,
            "member {}'s watch hub stuck at {} < {want}",
            n.id,
            n.hub.revision()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(n.hub.revision(), want);
}

fn put_command(key: &str, value: &str) -> Command {
    let req = InternalRequest {
        request: Some(Request::Put(PutRequest {
            key: Bytes::from(key.to_string()),
            value: Bytes::from(value.to_string()),
            ..Default::default()
        })),
    };
    Command(Bytes::from(req.encode_to_vec()))
}

/// Proposes through `raft`, retrying while it is a leader that cannot
/// accept writes yet (just elected, or lease not yet confirmed by a
/// quorum), as a client would.
async fn write(raft: &KRaft, cmd: Command) -> ClientWriteResponse<TypeConfig> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match raft.client_write(cmd.clone()).await {
            Ok(r) => return r,
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) if Instant::now() < deadline => {
                tracing::info!(?f, "write refused, retrying");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("write: {e}"),
        }
    }
}

/// Puts through the leader; returns the revision of the last put.
async fn put_many(raft: &KRaft, prefix: &str, range: std::ops::Range<u32>) -> i64 {
    let mut rev = 0;
    for i in range {
        let resp = write(raft, put_command(&format!("{prefix}{i:04}"), &format!("v{i}"))).await;
        let r = InternalResponse::decode(resp.data.0).expect("decode response");
        match r.response {
            Some(Response::Put(p)) => rev = p.header.expect("header").revision,
            other => panic!("unexpected apply result {other:?}"),
        }
    }
    rev
}

fn get(store: &StoreHandle, key: &str) -> Option<Bytes> {
    let r = store
        .load()
        .range(&RangeRequest { key: Bytes::from(key.to_string()), ..Default::default() })
        .unwrap();
    r.kvs.into_iter().next().map(|kv| kv.value)
}

fn count(store: &StoreHandle, prefix: &str) -> i64 {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().unwrap() += 1;
    let r = store
        .load()
        .range(&RangeRequest {
            key: Bytes::from(prefix.to_string()),
            range_end: Bytes::from(end),
            count_only: true,
            ..Default::default()
        })
        .unwrap();
    r.count
}

fn assert_same_data(cluster: &Cluster, prefix: &str, expect: i64) {
    let revs: Vec<(u64, i64, u64)> = cluster
        .nodes
        .values()
        .map(|n| (n.id, n.store.load().current_revision(), n.store.load().hash_kv(0).unwrap().hash as u64))
        .collect();
    for n in cluster.nodes.values() {
        assert_eq!(count(&n.store, prefix), expect, "member {} holds every {prefix}* key", n.id);
        assert_eq!(get(&n.store, &format!("{prefix}0000")), Some(Bytes::from("v0")));
    }
    assert!(
        revs.windows(2).all(|w| w[0].1 == w[1].1 && w[0].2 == w[1].2),
        "same revision and hash: {revs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_elect_replicate_and_fail_over() {
    let mut cluster = Cluster::start(3, false).await;
    let leader = cluster.leader().await;
    put_many(&cluster.nodes[&leader].raft, "a/", 0..50).await;
    cluster.settle().await;
    assert_same_data(&cluster, "a/", 50);
    for n in cluster.nodes.values() {
        hub_catches_up(n).await;
    }

    // Kill the leader: the other two elect a new one and keep taking writes.
    let killed_at = Instant::now();
    cluster.kill(leader).await;
    let new_leader = cluster.leader().await;
    let elected_in = killed_at.elapsed();
    assert_ne!(new_leader, leader);
    eprintln!("new leader {new_leader} elected {} ms after leader {leader} stopped", elected_in.as_millis());
    put_many(&cluster.nodes[&new_leader].raft, "b/", 0..50).await;
    cluster.settle().await;
    assert_same_data(&cluster, "b/", 50);

    // The old leader restarts from its data dir and catches up from the log.
    cluster.restart(leader).await;
    put_many(&cluster.nodes[&cluster.leader().await].raft, "c/", 0..10).await;
    cluster.settle().await;
    assert_same_data(&cluster, "a/", 50);
    assert_same_data(&cluster, "b/", 50);
    assert_same_data(&cluster, "c/", 10);
    assert!(cluster.metrics(leader).snapshot.is_none(), "caught up from the log, without a snapshot");

    // Leadership moves on request.
    let from = cluster.leader().await;
    let to = cluster.nodes.keys().copied().find(|id| *id != from).unwrap();
    cluster.nodes[&from].raft.trigger().transfer_leader(to).await.expect("transfer leader");
    let deadline = Instant::now() + TIMEOUT;
    while cluster.leader().await != to {
        assert!(Instant::now() < deadline, "leadership never moved to {to}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    put_many(&cluster.nodes[&to].raft, "d/", 0..5).await;
    cluster.settle().await;
    assert_same_data(&cluster, "d/", 5);
    for id in [1, 2, 3] {
        cluster.kill(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_cut_off_past_the_purged_log_catches_up_by_snapshot() {
    let mut cluster = Cluster::start(3, true).await;
    let leader = cluster.leader().await;
    put_many(&cluster.nodes[&leader].raft, "a/", 0..10).await;
    cluster.settle().await;
    let lagging = cluster.nodes.keys().copied().find(|id| *id != leader).unwrap();
    let before_dir = cluster.nodes[&lagging].store.load().path().to_path_buf();

    // A watcher on the lagging member, at its head: it must see every later
    // revision exactly once, across the snapshot install.
    let from_rev = cluster.nodes[&lagging].store.load().current_revision() + 1;
    let (watch, mut events) = cluster.nodes[&lagging].hub.new_stream();
    watch
        .watch(&WatchCreateRequest {
            key: Bytes::from_static(b"\0"),
            range_end: Bytes::from_static(b"\0"),
            start_revision: from_rev,
            ..Default::default()
        })
        .expect("watch");

    cluster.cut_off(lagging);
    // Incompressible values: the snapshot is a few hundred KiB.
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    for i in 0..40 {
        let value: Vec<u8> = (0..8192)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let req = InternalRequest {
            request: Some(Request::Put(PutRequest {
                key: Bytes::from(format!("big/{i:04}")),
                value: Bytes::from(value),
                ..Default::default()
            })),
        };
        write(&cluster.nodes[&leader].raft, Command(Bytes::from(req.encode_to_vec()))).await;
    }
    let last_rev = put_many(&cluster.nodes[&leader].raft, "b/", 0..200).await;
    // The leader snapshots and purges the log the lagging member needs.
    let lagging_last = cluster.metrics(lagging).last_log_index.unwrap_or(0);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let purged = cluster.metrics(leader).purged.map_or(0, |p| p.index);
        if purged > lagging_last + 1 {
            break;
        }
        assert!(Instant::now() < deadline, "leader never purged past {lagging_last} (purged {purged})");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    cluster.reconnect(lagging).await;
    cluster.nodes[&lagging]
        .raft
        .wait(Some(TIMEOUT))
        .metrics(|m| m.snapshot.is_some(), "the lagging member installs a snapshot")
        .await
        .expect("snapshot installed");
    put_many(&cluster.nodes[&leader].raft, "c/", 0..20).await;
    cluster.settle().await;
    assert_same_data(&cluster, "b/", 200);
    assert_same_data(&cluster, "c/", 20);
    assert_eq!(count(&cluster.nodes[&lagging].store, "big/"), 40);
    let after_dir = cluster.nodes[&lagging].store.load().path().to_path_buf();
    assert_ne!(before_dir, after_dir, "the store was replaced");
    let lagging_node = &cluster.nodes[&lagging];
    hub_catches_up(lagging_node).await;

    // The watcher saw every revision from its start to the end, once each,
    // in order: the ones before the snapshot, the snapshot's own, and after.
    let end_rev = lagging_node.store.load().current_revision();
    assert!(end_rev > last_rev);
    let mut seen = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while seen.last().copied().unwrap_or(0) < end_rev {
        let resp = tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), events.recv())
            .await
            .unwrap_or_else(|_| panic!("watch stalled at {:?}, want {end_rev}", seen.last()))
            .expect("watch stream open");
        for ev in resp.events {
            seen.push(ev.kv.expect("kv").mod_revision);
        }
    }
    let want: Vec<i64> = (from_rev..=end_rev).collect();
    assert_eq!(seen, want, "the watcher got each revision once, in order");
    drop(watch);

    // Restart the member: it opens the installed store, not the first one.
    cluster.kill(lagging).await;
    cluster.restart(lagging).await;
    assert_eq!(cluster.nodes[&lagging].store.load().path(), after_dir);
    assert!(!before_dir.exists(), "the replaced store is gone after a restart");
    put_many(&cluster.nodes[&cluster.leader().await].raft, "d/", 0..5).await;
    cluster.settle().await;
    assert_same_data(&cluster, "b/", 200);
    assert_same_data(&cluster, "d/", 5);
    for id in [1, 2, 3] {
        cluster.kill(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_from_another_cluster_is_refused() {
    let cluster = Cluster::start(1, false).await;
    let addr = cluster.addrs[&1];
    let member = Member { name: "m1".into(), peer_urls: vec![format!("http://{addr}")], client_urls: vec![] };
    let vote =
        VoteRequest::new(Vote { leader_id: LeaderId { term: 99, node_id: 7 }, committed: false }, None);
    let option = RPCOption::new(Duration::from_secs(2));

    let mut stranger = GrpcNetwork::new(CLUSTER_ID ^ 1, 7, TransportConfig::default());
    let err = stranger.new_client(1, &member).await.vote(vote.clone(), option.clone()).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("different clusters"), "{msg}");
    assert!(matches!(err, keelson_raftstore::openraft::error::RPCError::Unreachable(_)), "{err:?}");

    // From this cluster, but a member the membership does not hold, asking
    // with no newer log than the membership's: a removed member, told so
    // (it then stops, as etcd's removed members do).
    let mut peer = GrpcNetwork::new(CLUSTER_ID, 7, TransportConfig::default());
    let mut removed = peer.removed();
    let mut client = peer.new_client(1, &member).await;
    // The member refuses once it has applied its own membership, which a
    // loaded machine may not have done yet right after start.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let err = loop {
        match client.vote(vote.clone(), option.clone()).await {
            Err(e) => break e,
            Ok(resp) if tokio::time::Instant::now() > deadline => panic!("never refused: {resp:?}"),
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    assert!(err.to_string().contains("permanently removed"), "{err}");
    let err = client.pre_vote(vote.clone(), option.clone()).await.unwrap_err();
    assert!(err.to_string().contains("permanently removed"), "{err}");
    assert!(*removed.borrow_and_update(), "the refused member learns it was removed");
    // Appends from this cluster reach raft: the member answers with its
    // higher vote.
    let append = AppendEntriesRequest::<TypeConfig> {
        vote: Vote { leader_id: LeaderId { term: 0, node_id: 7 }, committed: true },
        prev_log_id: None,
        leader_commit: None,
        entries: vec![],
    };
    let resp = client.append_entries(append, option.clone()).await.expect("append answered");
    assert!(matches!(resp, AppendEntriesResponse::HigherVote(_)), "{resp:?}");

    // Same cluster, but the URL points at another member than meant.
    let mut confused = GrpcNetwork::new(CLUSTER_ID, 7, TransportConfig::default());
    let err = confused.new_client(2, &member).await.vote(vote.clone(), option.clone()).await.unwrap_err();
    assert!(err.to_string().contains("wrong member"), "{err}");

    // Nobody listening: unreachable, quickly.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let nobody = closed.local_addr().unwrap();
    drop(closed);
    let ghost =
        Member { name: "m9".into(), peer_urls: vec![format!("http://{nobody}")], client_urls: vec![] };
    let started = Instant::now();
    let err = confused.new_client(9, &ghost).await.vote(vote, option).await.unwrap_err();
    assert!(matches!(err, keelson_raftstore::openraft::error::RPCError::Unreachable(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}
