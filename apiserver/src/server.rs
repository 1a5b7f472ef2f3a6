//! [`routes`]: the six etcd services on one gRPC router, behind one guard
//! middleware that does what etcd's gRPC interceptors and limits do:
//!
//! - a request carrying the metadata `hasleader: true` (the Go client's
//!   `WithRequireLeader`, used by `etcdctl watch`) fails with Unavailable
//!   "etcdserver: no leader" while the member knows no leader;
//! - each service receives messages up to `--max-request-bytes` plus etcd's
//!   512 KiB gRPC overhead; writes over `--max-request-bytes` are refused
//!   before proposing (see [`crate::context::Ctx::propose`]), and a message
//!   over the receive limit gets the same answer, InvalidArgument
//!   "etcdserver: request is too large", instead of tonic's transport
//!   error.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::Response;
use keelson_proto::etcdserverpb::auth_server::AuthServer;
use keelson_proto::etcdserverpb::cluster_server::ClusterServer;
use keelson_proto::etcdserverpb::kv_server::KvServer;
use keelson_proto::etcdserverpb::lease_server::LeaseServer;
use keelson_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use keelson_proto::etcdserverpb::watch_server::WatchServer;
use tonic::Status;
use tonic::codegen::http::HeaderMap;
use tonic::service::Routes;

use crate::auth::AuthService;
use crate::backend::Backend;
use crate::cluster::ClusterService;
use crate::config::GrpcConfig;
use crate::context::Ctx;
use crate::errors::{EtcdError, is_decode_limit};
use crate::kv::KvService;
use crate::lease::LeaseService;
use crate::maintenance::MaintenanceService;
use crate::watch::WatchService;

/// etcd's `rpctypes.MetadataRequireLeaderKey` and its one value.
const REQUIRE_LEADER_KEY: &str = "hasleader";
const REQUIRE_LEADER_VALUE: &[u8] = b"true";

/// The etcd v3 gRPC services (KV, Watch, Lease, Cluster, Maintenance, Auth)
/// over `backend`, ready for `tonic::transport::Server::add_routes`.
/// `cfg` should have passed [`GrpcConfig::validate`].
pub fn routes<B: Backend>(backend: Arc<B>, cfg: &GrpcConfig) -> Routes {
    let ctx = Ctx::new(backend.clone(), cfg.clone());
    let limit = cfg.max_recv_bytes();
    let mut builder = Routes::builder();
    builder
        .add_service(KvServer::new(KvService::new(ctx.clone())).max_decoding_message_size(limit))
        .add_service(WatchServer::new(WatchService::new(ctx.clone())).max_decoding_message_size(limit))
        .add_service(LeaseServer::new(LeaseService::new(ctx.clone())).max_decoding_message_size(limit))
        .add_service(ClusterServer::new(ClusterService::new(ctx.clone())).max_decoding_message_size(limit))
        .add_service(
            MaintenanceServer::new(MaintenanceService::new(ctx.clone())).max_decoding_message_size(limit),
        )
        .add_service(AuthServer::new(AuthService::new(ctx)).max_decoding_message_size(limit));
    let router = builder.routes().into_axum_router().layer(from_fn_with_state(backend, guard::<B>));
    Routes::from(router)
}

/// Whether a request asks to be served only while there is a leader.
pub(crate) fn requires_leader(headers: &HeaderMap) -> bool {
    headers.get(REQUIRE_LEADER_KEY).is_some_and(|v| v.as_bytes() == REQUIRE_LEADER_VALUE)
}

async fn guard<B: Backend>(State(backend): State<Arc<B>>, req: Request, next: Next) -> Response {
    if requires_leader(req.headers()) && backend.status().leader == 0 {
        return Status::from(EtcdError::NoLeader).into_http();
    }
    let resp = next.run(req).await;
    if resp.extensions().get::<Status>().is_some_and(is_decode_limit) {
        return Status::from(EtcdError::RequestTooLarge).into_http();
    }
    resp
}

#[cfg(test)]
mod tests {
    use keelson_proto::etcdserverpb::{PutRequest, RangeRequest};
    use tonic::{Code, Request};

    use super::*;
    use crate::testing::{TestServer, key};

    #[test]
    fn hasleader_is_read_from_metadata() {
        let mut h = HeaderMap::new();
        assert!(!requires_leader(&h));
        h.insert(REQUIRE_LEADER_KEY, "false".parse().unwrap());
        assert!(!requires_leader(&h));
        h.insert(REQUIRE_LEADER_KEY, "true".parse().unwrap());
        assert!(requires_leader(&h));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hasleader_unary_requests_fail_without_a_leader() {
        let srv = TestServer::start().await;
        let mut kv = srv.kv_client().await;
        srv.backend.set_leader(false);
        let with_leader = || {
            let mut r =
                Request::new(RangeRequest { key: key("a"), serializable: true, ..Default::default() });
            r.metadata_mut().insert(REQUIRE_LEADER_KEY, "true".parse().unwrap());
            r
        };
        let err = kv.range(with_leader()).await.unwrap_err();
        assert_eq!((err.code(), err.message()), (Code::Unavailable, "etcdserver: no leader"));
        // Without the metadata a serializable read is served.
        kv.range(RangeRequest { key: key("a"), serializable: true, ..Default::default() }).await.unwrap();
        srv.backend.set_leader(true);
        kv.range(with_leader()).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_smaller_max_request_bytes_is_honoured() {
        let srv = TestServer::start_with(GrpcConfig { max_request_bytes: 1024 }).await;
        let mut kv = srv.kv_client().await;
        let value = bytes::Bytes::from(vec![b'x'; 2000]);
        let err = kv.put(PutRequest { key: key("k"), value, ..Default::default() }).await.unwrap_err();
        assert_eq!((err.code(), err.message()), (Code::InvalidArgument, "etcdserver: request is too large"));
        let value = bytes::Bytes::from(vec![b'x'; 900]);
        kv.put(PutRequest { key: key("k"), value, ..Default::default() }).await.unwrap();
    }
}
