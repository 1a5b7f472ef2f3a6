//! [`Ctx`]: what every service shares: the backend, the config, and the
//! three things each request does the same way: fill the response header,
//! propose a write (size check, apply error mapping), run a blocking store
//! read off the async workers.

use std::sync::Arc;

use keelson_mvcc::Store;
use keelson_proto::etcdserverpb::ResponseHeader;
use keelson_proto::keelsonraftpb::{InternalRequest, internal_request, internal_response};
use prost::Message;

use crate::backend::Backend;
use crate::config::GrpcConfig;
use crate::errors::EtcdError;

pub(crate) struct Ctx<B> {
    pub backend: Arc<B>,
    pub cfg: GrpcConfig,
}

impl<B: Backend> Ctx<B> {
    pub fn new(backend: Arc<B>, cfg: GrpcConfig) -> Arc<Self> {
        Arc::new(Ctx { backend, cfg })
    }

    /// etcd's `header.fill`: who answers, at which term, and the store's
    /// current revision unless the operation set one.
    pub fn header(&self, revision: i64) -> ResponseHeader {
        let st = self.backend.status();
        let revision = if revision == 0 { self.backend.store().current_revision() } else { revision };
        ResponseHeader {
            cluster_id: st.cluster_id,
            member_id: st.member_id,
            revision,
            raft_term: st.raft_term,
        }
    }

    /// A header at exactly `revision` (watch responses speak for the hub's
    /// revision, which may trail the store's).
    pub fn header_at(&self, revision: i64) -> ResponseHeader {
        let st = self.backend.status();
        ResponseHeader {
            cluster_id: st.cluster_id,
            member_id: st.member_id,
            revision,
            raft_term: st.raft_term,
        }
    }

    /// etcd's corrupt applier refuses reads too once the CORRUPT alarm is
    /// up.
    pub fn check_not_corrupt(&self) -> Result<(), EtcdError> {
        if self.backend.store().alarms().iter().any(|a| a.alarm == keelson_mvcc::ALARM_CORRUPT) {
            return Err(EtcdError::Corrupt);
        }
        Ok(())
    }

    /// Fills (or creates) a response's header, keeping a revision it has.
    pub fn fill(&self, header: &mut Option<ResponseHeader>) {
        let rev = header.as_ref().map_or(0, |h| h.revision);
        *header = Some(self.header(rev));
    }

    /// Proposes a write through raft and returns what applying it answered,
    /// with an apply error mapped to etcd's. Fails with "request is too
    /// large" above `--max-request-bytes`, as etcd checks the marshalled
    /// raft request.
    #[tracing::instrument(level = "debug", skip_all, fields(op = op_name(&request)))]
    pub async fn propose(
        &self,
        request: internal_request::Request,
    ) -> Result<internal_response::Response, EtcdError> {
        let req = InternalRequest { request: Some(request) };
        if req.encoded_len() > self.cfg.max_request_bytes {
            return Err(EtcdError::RequestTooLarge);
        }
        let resp = self.backend.propose(req).await?;
        match resp.response {
            Some(internal_response::Response::Error(e)) => Err(EtcdError::from(&e)),
            Some(r) => Ok(r),
            None => Err(EtcdError::Unknown("etcdserver: empty apply response".into())),
        }
    }

    /// [`Ctx::with_store`] for a fallible `f`.
    pub async fn try_with_store<T, E, F>(&self, f: F) -> Result<T, EtcdError>
    where
        T: Send + 'static,
        E: Into<EtcdError> + Send + 'static,
        F: FnOnce(&Store) -> Result<T, E> + Send + 'static,
    {
        self.with_store(f).await?.map_err(Into::into)
    }

    /// Runs `f` on the local store in the blocking pool: RocksDB reads do
    /// I/O and must not stall the async workers.
    pub async fn with_store<T, F>(&self, f: F) -> Result<T, EtcdError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> T + Send + 'static,
    {
        let store = self.backend.store();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| EtcdError::Unknown(format!("store task failed: {e}")))
    }
}

/// The proposal's kind, for traces.
fn op_name(request: &internal_request::Request) -> &'static str {
    use internal_request::Request as R;
    match request {
        R::Put(_) => "put",
        R::DeleteRange(_) => "delete_range",
        R::Txn(_) => "txn",
        R::Compaction(_) => "compaction",
        R::LeaseGrant(_) => "lease_grant",
        R::LeaseRevoke(_) => "lease_revoke",
        R::Alarm(_) => "alarm",
        R::LeaseRenewAll(_) => "lease_renew_all",
        R::Batch(_) => "batch",
    }
}

/// Unwraps the expected variant of an apply response; another variant means
/// the backend answered a different request.
macro_rules! expect_response {
    ($resp:expr, $variant:ident) => {
        match $resp {
            keelson_proto::keelsonraftpb::internal_response::Response::$variant(r) => Ok(r),
            other => Err($crate::errors::EtcdError::Unknown(format!(
                "etcdserver: unexpected apply response {:?}",
                std::mem::discriminant(&other)
            ))),
        }
    };
}
pub(crate) use expect_response;
