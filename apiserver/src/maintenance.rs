//! The `etcdserverpb.Maintenance` service: Status, Hash, HashKV,
//! Defragment and Alarm GET answer from the local member; Alarm
//! ACTIVATE/DEACTIVATE go through raft; Snapshot streams the backend's
//! snapshot as etcd does (see [`SnapshotSender`]). MoveLeader only knows the
//! single-member cases until HA support; Downgrade is not supported.

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use keelson_proto::etcdserverpb::alarm_request::AlarmAction;
use keelson_proto::etcdserverpb::maintenance_server::Maintenance;
use keelson_proto::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, AlarmType, DefragmentRequest, DefragmentResponse,
    DowngradeRequest, DowngradeResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse,
    MoveLeaderRequest, MoveLeaderResponse, ResponseHeader, SnapshotRequest, SnapshotResponse, StatusRequest,
    StatusResponse,
};
use keelson_proto::keelsonraftpb::internal_request::Request as Proposal;
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use crate::backend::{Backend, BackendError, SnapshotReader};
use crate::context::{Ctx, expect_response};
use crate::errors::EtcdError;

/// The etcd version Keelson reports in Status (the API it speaks).
pub const SERVER_VERSION: &str = "3.6.0";
/// The storage version reported in Status and on snapshot chunks.
pub const STORAGE_VERSION: &str = "3.6.0";
/// Largest blob per SnapshotResponse (etcd's `snapshotSendBufferSize`).
const SNAPSHOT_CHUNK_BYTES: usize = 32 * 1024;
/// etcd clients (3.5+) check that a saved snapshot is `n * 512` bytes plus a
/// sha256; the streamed database is padded with zeros to that boundary.
const SNAPSHOT_ALIGN: u64 = 512;

pub struct MaintenanceService<B> {
    ctx: Arc<Ctx<B>>,
}

impl<B: Backend> MaintenanceService<B> {
    pub(crate) fn new(ctx: Arc<Ctx<B>>) -> Self {
        MaintenanceService { ctx }
    }
}

/// An alarm as etcd's Status lists it (the protobuf text form).
fn alarm_text(a: &AlarmMember) -> String {
    let name =
        AlarmType::try_from(a.alarm).map_or_else(|_| a.alarm.to_string(), |t| t.as_str_name().to_owned());
    format!("memberID:{} alarm:{} ", a.member_id, name)
}

pub type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<B: Backend> Maintenance for MaintenanceService<B> {
    /// GET lists the active alarms (of one type, or all for NONE) after a
    /// read barrier; ACTIVATE and DEACTIVATE are proposed.
    async fn alarm(&self, request: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        let req = request.into_inner();
        let mut resp = match AlarmAction::try_from(req.action) {
            Ok(AlarmAction::Get) => {
                self.ctx.backend.read_barrier().await?;
                let alarms = self
                    .ctx
                    .backend
                    .store()
                    .alarms()
                    .into_iter()
                    .filter(|a| req.alarm == AlarmType::None as i32 || a.alarm == req.alarm)
                    .collect();
                AlarmResponse { header: None, alarms }
            }
            _ => expect_response!(self.ctx.propose(Proposal::Alarm(req)).await?, Alarm)?,
        };
        self.ctx.fill(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn status(&self, _request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let st = self.ctx.backend.status();
        let store = self.ctx.backend.store();
        let db_size = store.db_size() as i64;
        let mut errors = Vec::new();
        if st.leader == 0 {
            errors.push(EtcdError::NoLeader.to_string());
        }
        errors.extend(store.alarms().iter().map(alarm_text));
        Ok(Response::new(StatusResponse {
            header: Some(self.ctx.header(0)),
            version: SERVER_VERSION.into(),
            db_size,
            leader: st.leader,
            raft_index: st.raft_index,
            raft_term: st.raft_term,
            raft_applied_index: st.raft_applied_index,
            errors,
            // RocksDB keeps no free pages to tell apart.
            db_size_in_use: db_size,
            is_learner: st.is_learner,
            storage_version: STORAGE_VERSION.into(),
            db_size_quota: store.config().quota_bytes as i64,
            downgrade_info: None,
        }))
    }

    async fn defragment(
        &self,
        _request: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        self.ctx.try_with_store(|s| s.defragment()).await?;
        Ok(Response::new(DefragmentResponse { header: Some(self.ctx.header(0)) }))
    }

    /// The hash of the whole key-value history the member holds.
    async fn hash(&self, _request: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        let h = self.ctx.try_with_store(|s| s.hash_kv(0)).await?;
        Ok(Response::new(HashResponse { header: Some(self.ctx.header(h.current_revision)), hash: h.hash }))
    }

    async fn hash_kv(&self, request: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        let rev = request.into_inner().revision;
        let h = self.ctx.try_with_store(move |s| s.hash_kv(rev)).await?;
        Ok(Response::new(HashKvResponse {
            header: Some(self.ctx.header(h.current_revision)),
            hash: h.hash,
            // etcd reports -1 for a store that was never compacted.
            compact_revision: if h.compact_revision == 0 { -1 } else { h.compact_revision },
            hash_revision: h.hash_revision,
        }))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        _request: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let reader = self.ctx.backend.snapshot().await?;
        let sender = SnapshotSender::new(reader, self.ctx.header(0));
        let out =
            futures::stream::unfold(sender, |mut s| async move { s.next().await.map(|item| (item, s)) });
        Ok(Response::new(Box::pin(out)))
    }

    /// A single member: moving leadership to itself succeeds when it leads;
    /// any other target is refused as etcd refuses it.
    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        let target = request.into_inner().target_id;
        let st = self.ctx.backend.status();
        if st.leader != st.member_id {
            return Err(EtcdError::NotLeader.into());
        }
        match self.ctx.backend.members().into_iter().find(|m| m.id == target) {
            None => Err(EtcdError::BadLeaderTransferee.into()),
            Some(m) if m.is_learner => Err(EtcdError::BadLeaderTransferee.into()),
            Some(_) => {
                self.ctx.backend.move_leader(target).await?;
                Ok(Response::new(MoveLeaderResponse { header: Some(self.ctx.header(0)) }))
            }
        }
    }

    async fn downgrade(
        &self,
        _request: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        Err(EtcdError::Unsupported("downgrade").into())
    }
}

/// Streams a snapshot the way etcd's Maintenance.Snapshot does: blobs of at
/// most [`SNAPSHOT_CHUNK_BYTES`], each with the bytes still to come in
/// `remaining_bytes`, the first with the header; then one last message
/// whose blob is the sha256 of everything sent before it. The database is
/// padded with zeros to a multiple of [`SNAPSHOT_ALIGN`] bytes (counted in
/// `remaining_bytes` and in the hash), so the saved file passes etcd
/// clients' "sha256 checksum not found" check.
struct SnapshotSender {
    reader: SnapshotReader,
    /// Bytes of the database still expected from the reader.
    unread: u64,
    /// Database plus padding still to send.
    remaining: u64,
    pending: Bytes,
    hasher: Sha256,
    header: Option<ResponseHeader>,
    done: bool,
}

impl SnapshotSender {
    fn new(reader: SnapshotReader, header: ResponseHeader) -> Self {
        let total = reader.total_size;
        let padded = total.div_ceil(SNAPSHOT_ALIGN) * SNAPSHOT_ALIGN;
        SnapshotSender {
            reader,
            unread: total,
            remaining: padded,
            pending: Bytes::new(),
            hasher: Sha256::new(),
            header: Some(header),
            done: false,
        }
    }

    fn message(&mut self, blob: Bytes) -> SnapshotResponse {
        SnapshotResponse {
            header: self.header.take(),
            remaining_bytes: self.remaining,
            blob,
            version: STORAGE_VERSION.into(),
        }
    }

    async fn next(&mut self) -> Option<Result<SnapshotResponse, Status>> {
        if self.done {
            return None;
        }
        match self.next_blob().await {
            Ok(Some(blob)) => {
                self.hasher.update(&blob);
                self.remaining -= blob.len() as u64;
                Some(Ok(self.message(blob)))
            }
            Ok(None) => {
                self.done = true;
                let sha = Bytes::copy_from_slice(&self.hasher.clone().finalize());
                Some(Ok(self.message(sha)))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e.into()))
            }
        }
    }

    /// The next blob of database or padding; `None` when all is sent.
    async fn next_blob(&mut self) -> Result<Option<Bytes>, EtcdError> {
        while self.pending.is_empty() && self.unread > 0 {
            match self.reader.chunks.next().await {
                Some(Ok(chunk)) => {
                    if chunk.len() as u64 > self.unread {
                        return Err(size_mismatch());
                    }
                    self.unread -= chunk.len() as u64;
                    self.pending = chunk;
                }
                Some(Err(e)) => return Err(snapshot_error(e)),
                None => return Err(size_mismatch()),
            }
        }
        if !self.pending.is_empty() {
            let n = self.pending.len().min(SNAPSHOT_CHUNK_BYTES);
            return Ok(Some(self.pending.split_to(n)));
        }
        if self.remaining > 0 {
            // Only padding is left: less than SNAPSHOT_ALIGN zeros.
            return Ok(Some(Bytes::from(vec![0u8; self.remaining as usize])));
        }
        Ok(None)
    }
}

fn size_mismatch() -> EtcdError {
    EtcdError::Unknown("etcdserver: snapshot stream does not match its announced size".into())
}

fn snapshot_error(e: BackendError) -> EtcdError {
    EtcdError::from(e)
}

#[cfg(test)]
mod tests {
    use keelson_proto::etcdserverpb::PutRequest;
    use sha2::{Digest, Sha256};
    use tonic::Code;

    use super::*;
    use crate::testing::{MEMBER_ID, RAFT_TERM, SNAPSHOT_BYTES, TestServer, key, snapshot_bytes};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn status_hash_hashkv_defragment() {
        let srv = TestServer::start().await;
        let mut kv = srv.kv_client().await;
        for v in ["a", "b", "c"] {
            kv.put(PutRequest { key: key("k"), value: key(v), ..Default::default() }).await.unwrap();
        }
        let mut m = srv.maintenance_client().await;
        let st = m.status(StatusRequest {}).await.unwrap().into_inner();
        // An empty store is at revision 1: the three puts make 2, 3, 4.
        srv.assert_header(st.header.as_ref(), 4);
        assert_eq!(st.version, SERVER_VERSION);
        assert_eq!(
            (st.leader, st.raft_term, st.raft_index, st.raft_applied_index),
            (MEMBER_ID, RAFT_TERM, 14, 14)
        );
        assert!(st.errors.is_empty());
        assert_eq!(st.db_size_quota, 2 << 30);

        let h = m.hash_kv(HashKvRequest { revision: 3 }).await.unwrap().into_inner();
        assert_eq!((h.hash_revision, h.compact_revision), (3, -1));
        srv.assert_header(h.header.as_ref(), 4);
        let again = m.hash_kv(HashKvRequest { revision: 3 }).await.unwrap().into_inner();
        assert_eq!(h.hash, again.hash);
        let latest = m.hash_kv(HashKvRequest { revision: 0 }).await.unwrap().into_inner();
        assert_eq!(latest.hash_revision, 4);
        assert_ne!(latest.hash, h.hash);
        let err = m.hash_kv(HashKvRequest { revision: 9 }).await.unwrap_err();
        assert_eq!(err.message(), "etcdserver: mvcc: required revision is a future revision");
        let whole = m.hash(HashRequest {}).await.unwrap().into_inner();
        assert_eq!(whole.hash, latest.hash);

        m.defragment(DefragmentRequest {}).await.unwrap();

        srv.backend.set_leader(false);
        let st = m.status(StatusRequest {}).await.unwrap().into_inner();
        assert_eq!(st.errors, vec!["etcdserver: no leader".to_owned()]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn alarms_activate_list_deactivate() {
        let srv = TestServer::start().await;
        let mut m = srv.maintenance_client().await;
        let activate = AlarmRequest {
            action: AlarmAction::Activate as i32,
            member_id: MEMBER_ID,
            alarm: AlarmType::Nospace as i32,
        };
        m.alarm(activate).await.unwrap();
        let list = m.alarm(AlarmRequest::default()).await.unwrap().into_inner();
        assert_eq!(list.alarms, vec![AlarmMember { member_id: MEMBER_ID, alarm: AlarmType::Nospace as i32 }]);
        let corrupt_only = AlarmRequest { alarm: AlarmType::Corrupt as i32, ..Default::default() };
        assert!(m.alarm(corrupt_only).await.unwrap().into_inner().alarms.is_empty());
        let st = m.status(StatusRequest {}).await.unwrap().into_inner();
        assert_eq!(st.errors, vec![format!("memberID:{MEMBER_ID} alarm:NOSPACE ")]);

        let mut kv = srv.kv_client().await;
        let err =
            kv.put(PutRequest { key: key("k"), value: key("v"), ..Default::default() }).await.unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (Code::ResourceExhausted, "etcdserver: mvcc: database space exceeded")
        );

        let deactivate = AlarmRequest {
            action: AlarmAction::Deactivate as i32,
            member_id: MEMBER_ID,
            alarm: AlarmType::Nospace as i32,
        };
        m.alarm(deactivate).await.unwrap();
        assert!(m.alarm(AlarmRequest::default()).await.unwrap().into_inner().alarms.is_empty());
        kv.put(PutRequest { key: key("k"), value: key("v"), ..Default::default() }).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn snapshot_streams_padded_data_then_its_sha256() {
        let srv = TestServer::start().await;
        let mut m = srv.maintenance_client().await;
        let mut stream = m.snapshot(SnapshotRequest {}).await.unwrap().into_inner();
        let mut msgs = Vec::new();
        while let Some(msg) = stream.message().await.unwrap() {
            msgs.push(msg);
        }
        srv.assert_header(msgs[0].header.as_ref(), 1);
        assert!(msgs[1..].iter().all(|m| m.header.is_none()));
        assert!(msgs.iter().all(|m| m.blob.len() <= SNAPSHOT_CHUNK_BYTES && m.version == STORAGE_VERSION));
        let (last, data) = msgs.split_last().unwrap();
        let mut body = Vec::new();
        for m in data {
            body.extend_from_slice(&m.blob);
            assert_eq!(m.remaining_bytes as usize, padded_len() - body.len());
        }
        assert_eq!(body.len(), padded_len());
        assert_eq!(&body[..SNAPSHOT_BYTES], snapshot_bytes().as_slice());
        assert!(body[SNAPSHOT_BYTES..].iter().all(|&b| b == 0));
        assert_eq!(last.remaining_bytes, 0);
        assert_eq!(last.blob.as_ref(), Sha256::digest(&body).as_slice());
        assert_eq!((body.len() + last.blob.len()) % 512, 32, "etcd clients' checksum check");
    }

    fn padded_len() -> usize {
        SNAPSHOT_BYTES.div_ceil(512) * 512
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn move_leader_and_downgrade() {
        let srv = TestServer::start().await;
        let mut m = srv.maintenance_client().await;
        m.move_leader(MoveLeaderRequest { target_id: MEMBER_ID }).await.unwrap();
        let err = m.move_leader(MoveLeaderRequest { target_id: 5 }).await.unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (Code::FailedPrecondition, "etcdserver: bad leader transferee")
        );
        let err = m.downgrade(DowngradeRequest::default()).await.unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented);
        srv.backend.set_leader(false);
        let err = m.move_leader(MoveLeaderRequest { target_id: MEMBER_ID }).await.unwrap_err();
        assert_eq!(err.message(), "etcdserver: not leader");
    }

    /// The Rust `etcd-client` crate's maintenance, cluster and txn calls.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_etcd_client_crate_sees_an_etcd() {
        use etcd_client::{Compare, CompareOp, Txn, TxnOp};

        let srv = TestServer::start().await;
        let mut c = srv.etcd_client().await;
        c.put("k", "1", None).await.unwrap();
        let txn = Txn::new()
            .when([Compare::value("k", CompareOp::Equal, "1")])
            .and_then([TxnOp::put("k", "2", None)])
            .or_else([TxnOp::get("k", None)]);
        assert!(c.txn(txn).await.unwrap().succeeded());

        let st = c.status().await.unwrap();
        assert_eq!((st.version(), st.leader(), st.raft_term()), (SERVER_VERSION, MEMBER_ID, RAFT_TERM));
        assert_eq!(st.header().unwrap().member_id(), MEMBER_ID);
        let members = c.member_list().await.unwrap();
        assert_eq!(members.members()[0].id(), MEMBER_ID);
        let h = c.hash_kv(0).await.unwrap();
        // The put made revision 2, the txn 3.
        assert_eq!((h.hash(), h.hash_revision()), (srv.store().hash_kv(0).unwrap().hash, 3));
        c.compact(3, None).await.unwrap();
        assert_eq!(c.hash_kv(0).await.unwrap().compact_version(), 3);
        let err = c.get("k", Some(etcd_client::GetOptions::new().with_revision(2))).await.unwrap_err();
        assert!(err.to_string().contains("etcdserver: mvcc: required revision has been compacted"), "{err}");
        c.defragment().await.unwrap();

        let mut snap = c.snapshot().await.unwrap();
        let mut body = Vec::new();
        while let Some(msg) = snap.message().await.unwrap() {
            body.extend_from_slice(msg.blob());
        }
        assert_eq!(body.len(), padded_len() + 32);
        assert_eq!(&body[..SNAPSHOT_BYTES], snapshot_bytes().as_slice());
    }
}
