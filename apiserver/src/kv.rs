//! The `etcdserverpb.KV` service: Range and RangeStream read the local
//! store (after a read barrier unless serializable); Put, DeleteRange, Txn
//! and Compact go through raft. Requests are checked first as etcd's
//! `v3rpc/key.go` checks them; the apply side checks again.

use std::sync::Arc;

use keelson_proto::etcdserverpb::kv_server::Kv;
use keelson_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use keelson_proto::etcdserverpb::request_op::Request as Op;
use keelson_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, RangeStreamResponse, TxnRequest, TxnResponse,
};
use keelson_proto::keelsonraftpb::internal_request::Request as Proposal;
use prost::Message;
use tonic::{Request, Response, Status};

use crate::backend::Backend;
use crate::context::{Ctx, expect_response};
use crate::errors::EtcdError;

/// Target size of one RangeStream chunk's key-values.
const RANGE_STREAM_CHUNK_BYTES: usize = 1 << 20;

pub struct KvService<B> {
    ctx: Arc<Ctx<B>>,
}

impl<B: Backend> KvService<B> {
    pub(crate) fn new(ctx: Arc<Ctx<B>>) -> Self {
        KvService { ctx }
    }

    /// A Range as etcd serves it: checked, linearizable unless
    /// serializable, read from the local store. The header carries only the
    /// revision.
    async fn read_range(&self, req: RangeRequest) -> Result<RangeResponse, EtcdError> {
        check_range(&req)?;
        self.ctx.check_not_corrupt()?;
        if !req.serializable {
            self.ctx.backend.read_barrier().await?;
        }
        if req.range_end.is_empty() {
            // One key: an index lookup and one RocksDB point read, cheaper
            // than the hop to the blocking pool and back.
            return Ok(self.ctx.backend.store().range(&req)?);
        }
        Ok(self.ctx.with_store(move |s| s.range(&req)).await??)
    }

    /// A Txn that only reads is served locally, as etcd does: after a read
    /// barrier unless every range in it is serializable. The compares are
    /// decided by the store's own Txn code inside a write batch that writes
    /// nothing and is dropped.
    async fn read_txn(&self, req: TxnRequest) -> Result<TxnResponse, EtcdError> {
        self.ctx.check_not_corrupt()?;
        if !txn_serializable(&req) {
            self.ctx.backend.read_barrier().await?;
        }
        let resp = self
            .ctx
            .with_store(move |s| -> Result<TxnResponse, EtcdError> {
                let mut batch = s.write()?;
                let resp = batch.txn(&req)?;
                drop(batch);
                Ok(resp)
            })
            .await??;
        Ok(resp)
    }
}

#[tonic::async_trait]
impl<B: Backend> Kv for KvService<B> {
    async fn range(&self, request: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let mut resp = self.read_range(request.into_inner()).await?;
        self.ctx.fill(&mut resp.header);
        Ok(Response::new(resp))
    }

    type RangeStreamStream = futures::stream::Iter<std::vec::IntoIter<Result<RangeStreamResponse, Status>>>;

    /// etcd 3.7's RangeStream: the Range result in chunks of about
    /// `RANGE_STREAM_CHUNK_BYTES`; concatenating the chunks' `kvs` gives
    /// Range's `kvs`; header, `more` and `count` ride on the last chunk.
    async fn range_stream(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<Self::RangeStreamStream>, Status> {
        let mut resp = self.read_range(request.into_inner()).await?;
        self.ctx.fill(&mut resp.header);
        let chunks = split_range(resp, RANGE_STREAM_CHUNK_BYTES);
        Ok(Response::new(futures::stream::iter(chunks.into_iter().map(Ok).collect::<Vec<_>>())))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let req = request.into_inner();
        check_put(&req)?;
        let resp = self.ctx.propose(Proposal::Put(req)).await?;
        let mut resp = expect_response!(resp, Put)?;
        self.ctx.fill(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let req = request.into_inner();
        check_delete(&req)?;
        let resp = self.ctx.propose(Proposal::DeleteRange(req)).await?;
        let mut resp = expect_response!(resp, DeleteRange)?;
        self.ctx.fill(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let req = request.into_inner();
        check_txn(&req, self.ctx.backend.store().config().max_txn_ops)?;
        let mut resp = if txn_read_only(&req) {
            self.read_txn(req).await?
        } else {
            expect_response!(self.ctx.propose(Proposal::Txn(req)).await?, Txn)?
        };
        self.ctx.fill(&mut resp.header);
        Ok(Response::new(resp))
    }

    /// Proposed as is; with `physical` the apply side answers once the old
    /// revisions are gone.
    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let resp = self.ctx.propose(Proposal::Compaction(request.into_inner())).await?;
        let mut resp = expect_response!(resp, Compaction)?;
        self.ctx.fill(&mut resp.header);
        Ok(Response::new(resp))
    }
}

/// etcd's `checkRangeRequest`.
pub(crate) fn check_range(r: &RangeRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    if SortOrder::try_from(r.sort_order).is_err() || SortTarget::try_from(r.sort_target).is_err() {
        return Err(EtcdError::InvalidSortOption);
    }
    Ok(())
}

/// etcd's `checkPutRequest` (the store's own check, run before proposing).
pub(crate) fn check_put(r: &PutRequest) -> Result<(), EtcdError> {
    Ok(keelson_mvcc::txn_check::check_put(r)?)
}

/// etcd's `checkDeleteRequest`.
pub(crate) fn check_delete(r: &DeleteRangeRequest) -> Result<(), EtcdError> {
    Ok(keelson_mvcc::txn_check::check_delete(r)?)
}

/// etcd's `checkTxnRequest` and `checkIntervals`: operation limits, keys,
/// duplicate writes in a branch (the store's check), and every Range's sort
/// options.
pub(crate) fn check_txn(r: &TxnRequest, max_ops: usize) -> Result<(), EtcdError> {
    keelson_mvcc::txn_check::check_txn(r, max_ops)?;
    check_txn_ranges(r)
}

fn check_txn_ranges(r: &TxnRequest) -> Result<(), EtcdError> {
    for op in r.success.iter().chain(&r.failure) {
        match &op.request {
            Some(Op::RequestRange(rr)) => check_range(rr)?,
            Some(Op::RequestTxn(t)) => check_txn_ranges(t)?,
            _ => {}
        }
    }
    Ok(())
}

/// Whether every operation of the Txn, nested ones included, is a Range.
fn txn_read_only(r: &TxnRequest) -> bool {
    r.success.iter().chain(&r.failure).all(|op| match &op.request {
        Some(Op::RequestRange(_)) | None => true,
        Some(Op::RequestTxn(t)) => txn_read_only(t),
        _ => false,
    })
}

/// Whether every Range of a read-only Txn is serializable (etcd's
/// `isTxnSerializable`).
fn txn_serializable(r: &TxnRequest) -> bool {
    r.success.iter().chain(&r.failure).all(|op| match &op.request {
        Some(Op::RequestRange(rr)) => rr.serializable,
        Some(Op::RequestTxn(t)) => txn_serializable(t),
        _ => true,
    })
}

/// Splits a Range answer into RangeStream chunks of about `chunk_bytes` of
/// key-values each; the last chunk carries header, `more` and `count`.
fn split_range(resp: RangeResponse, chunk_bytes: usize) -> Vec<RangeStreamResponse> {
    let RangeResponse { header, kvs, more, count } = resp;
    let mut chunks = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    for kv in kvs {
        let len = kv.encoded_len();
        if !current.is_empty() && size + len > chunk_bytes {
            chunks.push(RangeStreamResponse {
                range_response: Some(RangeResponse {
                    kvs: std::mem::take(&mut current),
                    ..Default::default()
                }),
            });
            size = 0;
        }
        size += len;
        current.push(kv);
    }
    chunks.push(RangeStreamResponse {
        range_response: Some(RangeResponse { header, kvs: current, more, count }),
    });
    chunks
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use keelson_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
    use keelson_proto::etcdserverpb::{Compare, RequestOp, ResponseHeader};
    use keelson_proto::mvccpb::KeyValue;
    use tonic::Code;

    use super::*;
    use crate::testing::{TestServer, key};

    fn put_op(k: &str, v: &str) -> RequestOp {
        RequestOp {
            request: Some(Op::RequestPut(PutRequest { key: key(k), value: key(v), ..Default::default() })),
        }
    }

    fn range_op(k: &str) -> RequestOp {
        RequestOp { request: Some(Op::RequestRange(RangeRequest { key: key(k), ..Default::default() })) }
    }

    #[test]
    fn checks_follow_etcds_key_go() {
        let empty = RangeRequest::default();
        assert_eq!(check_range(&empty), Err(EtcdError::EmptyKey));
        let bad_sort = RangeRequest { key: key("a"), sort_order: 7, ..Default::default() };
        assert_eq!(check_range(&bad_sort), Err(EtcdError::InvalidSortOption));
        let bad_target = RangeRequest { key: key("a"), sort_target: 9, ..Default::default() };
        assert_eq!(check_range(&bad_target), Err(EtcdError::InvalidSortOption));

        let value_and_ignore =
            PutRequest { key: key("a"), value: key("v"), ignore_value: true, ..Default::default() };
        assert_eq!(check_put(&value_and_ignore), Err(EtcdError::ValueProvided));
        let lease_and_ignore =
            PutRequest { key: key("a"), lease: 5, ignore_lease: true, ..Default::default() };
        assert_eq!(check_put(&lease_and_ignore), Err(EtcdError::LeaseProvided));
        assert_eq!(check_delete(&DeleteRangeRequest::default()), Err(EtcdError::EmptyKey));

        let many = TxnRequest {
            success: (0..5).map(|i| put_op(&format!("k{i}"), "v")).collect(),
            ..Default::default()
        };
        assert_eq!(check_txn(&many, 4), Err(EtcdError::TooManyOps));
        check_txn(&many, 5).unwrap();
        let nested = TxnRequest {
            success: vec![RequestOp { request: Some(Op::RequestTxn(many.clone())) }],
            ..Default::default()
        };
        // The nested Txn gets what the outer one leaves: 5 - 1 = 4.
        assert_eq!(check_txn(&nested, 5), Err(EtcdError::TooManyOps));
        let empty_compare = TxnRequest { compare: vec![Compare::default()], ..Default::default() };
        assert_eq!(check_txn(&empty_compare, 128), Err(EtcdError::EmptyKey));
    }

    #[test]
    fn read_only_and_serializable_txns_are_recognised() {
        let reads =
            TxnRequest { success: vec![range_op("a")], failure: vec![range_op("b")], ..Default::default() };
        assert!(txn_read_only(&reads));
        assert!(!txn_serializable(&reads));
        let writes = TxnRequest {
            success: vec![range_op("a")],
            failure: vec![put_op("b", "v")],
            ..Default::default()
        };
        assert!(!txn_read_only(&writes));
    }

    #[test]
    fn range_stream_chunks_concatenate_to_the_range() {
        let kvs: Vec<KeyValue> = (0..10)
            .map(|i| KeyValue {
                key: key(&format!("k{i}")),
                value: Bytes::from(vec![b'x'; 100]),
                ..Default::default()
            })
            .collect();
        let header = Some(ResponseHeader { revision: 9, ..Default::default() });
        let resp = RangeResponse { header, kvs: kvs.clone(), more: true, count: 20 };
        let chunks = split_range(resp, 250);
        assert!(chunks.len() > 2);
        let mut all = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let r = c.range_response.as_ref().unwrap();
            all.extend(r.kvs.iter().cloned());
            if i + 1 < chunks.len() {
                assert!(r.header.is_none() && !r.more && r.count == 0);
            } else {
                assert_eq!((r.header.as_ref().unwrap().revision, r.more, r.count), (9, true, 20));
            }
        }
        assert_eq!(all, kvs);
        let empty = split_range(RangeResponse { count: 0, ..Default::default() }, 10);
        assert_eq!(empty.len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn put_get_delete_txn_compact_through_grpc() {
        let srv = TestServer::start().await;
        let mut kv = srv.kv_client().await;
        let put = kv
            .put(PutRequest { key: key("foo"), value: key("bar"), ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        // An empty store is at revision 1: the first put makes 2.
        let h = put.header.unwrap();
        assert_eq!((h.cluster_id, h.member_id, h.revision, h.raft_term), srv.header_ids(2));

        let got =
            kv.range(RangeRequest { key: key("foo"), ..Default::default() }).await.unwrap().into_inner();
        assert_eq!(got.kvs.len(), 1);
        assert_eq!(got.kvs[0].value, key("bar"));
        assert_eq!(got.header.unwrap().member_id, srv.header_ids(0).1);

        let prev = kv
            .put(PutRequest { key: key("foo"), value: key("baz"), prev_kv: true, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(prev.prev_kv.unwrap().value, key("bar"));

        // A Txn comparing the value, then a read-only one served locally.
        let txn = TxnRequest {
            compare: vec![Compare {
                key: key("foo"),
                target: CompareTarget::Value as i32,
                result: CompareResult::Equal as i32,
                target_union: Some(TargetUnion::Value(key("baz"))),
                ..Default::default()
            }],
            success: vec![put_op("foo", "qux")],
            failure: vec![range_op("foo")],
        };
        let t = kv.txn(txn.clone()).await.unwrap().into_inner();
        assert!(t.succeeded);
        assert_eq!(t.header.unwrap().revision, 4);
        let read_only = TxnRequest { success: vec![range_op("foo")], ..txn };
        let t = kv.txn(read_only).await.unwrap().into_inner();
        assert!(!t.succeeded, "value is qux now");
        assert_eq!(t.header.as_ref().unwrap().revision, 4, "a read-only txn makes no revision");
        assert_eq!(srv.store().current_revision(), 4);

        let del = kv
            .delete_range(DeleteRangeRequest { key: key("foo"), prev_kv: true, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(del.deleted, 1);
        assert_eq!(del.header.unwrap().revision, 5);

        // Compact at the txn's revision: the second put's is gone.
        kv.compact(CompactionRequest { revision: 4, physical: true }).await.unwrap();
        let err =
            kv.range(RangeRequest { key: key("foo"), revision: 3, ..Default::default() }).await.unwrap_err();
        assert_eq!(err.code(), Code::OutOfRange);
        assert_eq!(err.message(), "etcdserver: mvcc: required revision has been compacted");
        let err =
            kv.range(RangeRequest { key: key("foo"), revision: 99, ..Default::default() }).await.unwrap_err();
        assert_eq!(err.message(), "etcdserver: mvcc: required revision is a future revision");
        let err = kv.compact(CompactionRequest { revision: 3, physical: false }).await.unwrap_err();
        assert_eq!(err.message(), "etcdserver: mvcc: required revision has been compacted");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn request_errors_are_etcds() {
        let srv = TestServer::start().await;
        let mut kv = srv.kv_client().await;
        let err = kv.put(PutRequest::default()).await.unwrap_err();
        assert_eq!((err.code(), err.message()), (Code::InvalidArgument, "etcdserver: key is not provided"));
        let err = kv
            .put(PutRequest { key: key("nope"), ignore_value: true, ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!((err.code(), err.message()), (Code::InvalidArgument, "etcdserver: key not found"));
        let dup = TxnRequest { success: vec![put_op("a", "1"), put_op("a", "2")], ..Default::default() };
        let err = kv.txn(dup).await.unwrap_err();
        assert_eq!(err.message(), "etcdserver: duplicate key given in txn request");
        let many = TxnRequest {
            success: (0..129).map(|i| put_op(&format!("k{i}"), "v")).collect(),
            ..Default::default()
        };
        let err = kv.txn(many).await.unwrap_err();
        assert_eq!(err.message(), "etcdserver: too many operations in txn request");
        let err = kv
            .put(PutRequest { key: key("leased"), value: key("v"), lease: 42, ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!((err.code(), err.message()), (Code::NotFound, "etcdserver: requested lease not found"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn linearizable_reads_wait_for_the_barrier_and_serializable_ones_do_not() {
        let srv = TestServer::start().await;
        let mut kv = srv.kv_client().await;
        srv.backend.set_leader(false);
        let err = kv.range(RangeRequest { key: key("a"), ..Default::default() }).await.unwrap_err();
        assert_eq!((err.code(), err.message()), (Code::Unavailable, "etcdserver: no leader"));
        let ok = kv.range(RangeRequest { key: key("a"), serializable: true, ..Default::default() }).await;
        assert!(ok.is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn oversized_requests_fail_with_request_too_large() {
        let srv = TestServer::start().await;
        let mut kv = srv.kv_client().await;
        // Over --max-request-bytes but within the receive limit: refused
        // before proposing.
        let big = Bytes::from(vec![b'x'; 1_600_000]);
        let err = kv.put(PutRequest { key: key("big"), value: big, ..Default::default() }).await.unwrap_err();
        assert_eq!((err.code(), err.message()), (Code::InvalidArgument, "etcdserver: request is too large"));
        // Over the receive limit as well: same answer, not a transport error.
        let huge = Bytes::from(vec![b'x'; 3_000_000]);
        let err =
            kv.put(PutRequest { key: key("huge"), value: huge, ..Default::default() }).await.unwrap_err();
        assert_eq!((err.code(), err.message()), (Code::InvalidArgument, "etcdserver: request is too large"));
        // The connection still works.
        kv.put(PutRequest { key: key("small"), value: key("v"), ..Default::default() }).await.unwrap();
        assert_eq!(srv.store().current_revision(), 2, "only the small put made a revision");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn range_stream_with_the_etcd_client_crate() {
        let srv = TestServer::start().await;
        let mut kv = srv.kv_client().await;
        for i in 0..50 {
            let value = Bytes::from(vec![b'v'; 64 * 1024]);
            kv.put(PutRequest { key: key(&format!("s/{i:02}")), value, ..Default::default() }).await.unwrap();
        }
        let mut client = srv.etcd_client().await;
        let opts = etcd_client::GetOptions::new().with_prefix();
        let mut stream = client.kv_client().get_stream("s/", Some(opts.clone())).await.unwrap();
        let mut keys = Vec::new();
        let mut chunks = 0;
        let mut last = None;
        while let Some(resp) = stream.message().await.unwrap() {
            chunks += 1;
            keys.extend(resp.kvs().iter().map(|kv| kv.key().to_vec()));
            last = Some(resp);
        }
        assert!(chunks > 1, "3.2 MiB of values come in several chunks");
        let last = last.unwrap();
        assert_eq!(last.count(), 50);
        assert_eq!(last.header().unwrap().revision(), 51, "50 puts after the empty store's revision 1");
        let whole = client.get("s/", Some(opts)).await.unwrap();
        let expected: Vec<Vec<u8>> = whole.kvs().iter().map(|kv| kv.key().to_vec()).collect();
        assert_eq!(keys, expected);
    }
}
