//! etcd v3 wire types for Keelson, generated from the `.proto` files in
//! `proto/proto/` by `tonic-prost-build`.
//!
//! This crate owns the gRPC surface that etcd clients (`etcdctl`, the
//! `etcd-client` crate, ...) speak: the `etcdserverpb` services (`KV`, `Watch`,
//! `Lease`, `Cluster`, `Maintenance`, `Auth`) with their request and response
//! messages, plus the `mvccpb` and `authpb` records they embed. Package,
//! service, method, message and field names and field numbers match etcd's, so
//! `/etcdserverpb.KV/Range` and every message interoperate byte for byte.
//! Every protobuf `bytes` field is a [`bytes::Bytes`].
//!
//! Beside etcd's API it holds Keelson's own: `keelsonraftpb` (what the raft
//! log carries) and `keelsonraftpeerpb` (the peer transport between members).
//!
//! It must not hold logic: no storage, consensus or request handling lives
//! here, only generated types, client stubs and server traits.

/// Stored key-values and watch events (etcd's `mvccpb`).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// Users, roles and permissions (etcd's `authpb`).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod authpb {
    tonic::include_proto!("authpb");
}

/// The client-facing gRPC services and their messages (etcd's `etcdserverpb`).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// What Keelson writes into its raft log and what applying an entry answers
/// (not part of etcd's API).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod keelsonraftpb {
    tonic::include_proto!("keelsonraftpb");
}

/// The raft peer transport between members: AppendEntries (unary and
/// streamed), Vote, PreVote, InstallSnapshot in chunks and TransferLeader
/// (not part of etcd's API).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod keelsonraftpeerpb {
    tonic::include_proto!("keelsonraftpeerpb");
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use prost::Message;

    use crate::etcdserverpb::{
        PutRequest, RangeRequest, RequestOp, TxnRequest, cluster_server, kv_client, kv_server, lease_server,
        maintenance_server, range_request, request_op, watch_server,
    };

    #[test]
    fn range_request_round_trips() {
        let req = RangeRequest {
            key: Bytes::from_static(b"a"),
            range_end: Bytes::from_static(b"\0"),
            limit: 10,
            revision: 42,
            sort_order: range_request::SortOrder::Descend as i32,
            sort_target: range_request::SortTarget::Mod as i32,
            serializable: true,
            min_mod_revision: 3,
            max_create_revision: 99,
            ..Default::default()
        };
        let buf = req.encode_to_vec();
        assert_eq!(RangeRequest::decode(buf.as_slice()).unwrap(), req);
    }

    #[test]
    fn put_inside_txn_round_trips() {
        let put = PutRequest {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
            lease: 7,
            prev_kv: true,
            ..Default::default()
        };
        // Hand-checked etcd encoding: key=1 "k", value=2 "v", lease=3 7, prev_kv=4 true.
        assert_eq!(put.encode_to_vec(), b"\x0a\x01k\x12\x01v\x18\x07\x20\x01");
        let txn = TxnRequest {
            success: vec![RequestOp { request: Some(request_op::Request::RequestPut(put.clone())) }],
            ..Default::default()
        };
        let decoded = TxnRequest::decode(Bytes::from(txn.encode_to_vec())).unwrap();
        assert_eq!(decoded, txn);
        assert!(matches!(
            &decoded.success[0].request,
            Some(request_op::Request::RequestPut(p)) if *p == put
        ));
    }

    #[test]
    fn grpc_service_names_match_etcd() {
        assert_eq!(kv_server::SERVICE_NAME, "etcdserverpb.KV");
        assert_eq!(watch_server::SERVICE_NAME, "etcdserverpb.Watch");
        assert_eq!(lease_server::SERVICE_NAME, "etcdserverpb.Lease");
        assert_eq!(cluster_server::SERVICE_NAME, "etcdserverpb.Cluster");
        assert_eq!(maintenance_server::SERVICE_NAME, "etcdserverpb.Maintenance");
        // The client type exists for every service; one is enough to check it compiles.
        let _ = std::mem::size_of::<kv_client::KvClient<tonic::transport::Channel>>();
    }
}
