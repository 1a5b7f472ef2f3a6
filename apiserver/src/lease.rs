//! The `etcdserverpb.Lease` service: grant and revoke go through raft;
//! keep-alive, time-to-live and the lease list ask the member's lessor.
//!
//! etcd's answers for a lease that does not exist: Revoke fails with
//! "requested lease not found"; a keep-alive answers TTL 0 (the stream goes
//! on); TimeToLive answers TTL -1.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::{Stream, StreamExt};
use keelson_proto::etcdserverpb::lease_server::Lease;
use keelson_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest,
    LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse,
};
use keelson_proto::keelsonraftpb::internal_request::Request as Proposal;
use tonic::{Request, Response, Status, Streaming};

use crate::backend::{Backend, BackendError};
use crate::context::{Ctx, expect_response};
use crate::errors::{EtcdError, is_decode_limit};
use crate::leader_monitor::LeaderMonitor;

/// The longest lease TTL etcd grants, in seconds (etcd's `MaxLeaseTTL`).
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

pub struct LeaseService<B> {
    ctx: Arc<Ctx<B>>,
    ids: IdGen,
}

impl<B: Backend> LeaseService<B> {
    pub(crate) fn new(ctx: Arc<Ctx<B>>) -> Self {
        let ids = IdGen::new(ctx.backend.status().member_id, unix_millis());
        LeaseService { ctx, ids }
    }
}

pub type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<B: Backend> Lease for LeaseService<B> {
    /// An id of 0 gets one chosen here, before proposing, as etcd's server
    /// does: positive, unique per member (member id, time, counter).
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let mut req = request.into_inner();
        if req.ttl > MAX_LEASE_TTL {
            return Err(EtcdError::LeaseTtlTooLarge.into());
        }
        if req.id == 0 {
            req.id = self.ids.next();
        }
        let resp = self.ctx.propose(Proposal::LeaseGrant(req)).await?;
        let mut resp = expect_response!(resp, LeaseGrant)?;
        self.ctx.fill(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let resp = self.ctx.propose(Proposal::LeaseRevoke(request.into_inner())).await?;
        let mut resp = expect_response!(resp, LeaseRevoke)?;
        self.ctx.fill(&mut resp.header);
        Ok(Response::new(resp))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    /// One answer per request, in order. The header is taken before the
    /// renewal (as etcd does), so its revision never runs ahead of the
    /// keep-alive. The stream ends when the client stops sending; an error
    /// other than "not found" ends it with that error, and so does losing
    /// the leader when the stream asked for one (`hasleader`).
    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let session = KeepAlive {
            leader: LeaderMonitor::for_request(request.metadata()),
            inbound: request.into_inner(),
            ctx: self.ctx.clone(),
        };
        let out = futures::stream::unfold(Some(session), |session| async move {
            let mut s = session?;
            match s.next().await {
                Some(Ok(resp)) => Some((Ok(resp), Some(s))),
                Some(Err(status)) => Some((Err(status), None)),
                None => None,
            }
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let req = request.into_inner();
        let mut resp = match self.ctx.backend.lease_time_to_live(req.id, req.keys).await {
            Ok(resp) => resp,
            Err(BackendError::LeaseNotFound) => {
                LeaseTimeToLiveResponse { id: req.id, ttl: -1, ..Default::default() }
            }
            Err(e) => return Err(e.into()),
        };
        self.ctx.fill(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn lease_leases(
        &self,
        _request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let ids = self.ctx.backend.lease_ids().await?;
        let leases = ids.into_iter().map(|id| LeaseStatus { id }).collect();
        Ok(Response::new(LeaseLeasesResponse { header: Some(self.ctx.header(0)), leases }))
    }
}

/// One LeaseKeepAlive call.
struct KeepAlive<B> {
    ctx: Arc<Ctx<B>>,
    inbound: Streaming<LeaseKeepAliveRequest>,
    leader: LeaderMonitor,
}

impl<B: Backend> KeepAlive<B> {
    /// The answer to the next request; `None` when the client is done.
    async fn next(&mut self) -> Option<Result<LeaseKeepAliveResponse, Status>> {
        let req = tokio::select! {
            req = self.inbound.next() => req?,
            () = self.leader.lost(&*self.ctx.backend) => return Some(Err(EtcdError::NoLeader.into())),
        };
        let req = match req {
            Ok(req) => req,
            Err(status) if is_decode_limit(&status) => return Some(Err(EtcdError::RequestTooLarge.into())),
            Err(status) => return Some(Err(status)),
        };
        let header = Some(self.ctx.header(0));
        let ttl = match self.ctx.backend.lease_keep_alive(req.id).await {
            Ok(ttl) => ttl,
            Err(BackendError::LeaseNotFound) => 0,
            Err(e) => return Some(Err(e.into())),
        };
        Some(Ok(LeaseKeepAliveResponse { header, id: req.id, ttl }))
    }
}

fn unix_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Lease ids as etcd's `idutil.Generator` makes them: the low 16 bits of the
/// member id, then 40 bits of milliseconds at start, then an 8-bit counter
/// that carries into the time; the sign bit cleared.
#[derive(Debug)]
struct IdGen {
    prefix: u64,
    suffix: AtomicU64,
}

impl IdGen {
    const SUFFIX_BITS: u32 = 48;

    fn new(member_id: u64, millis: u64) -> Self {
        let prefix = (member_id & 0xffff) << Self::SUFFIX_BITS;
        let suffix = (millis & 0xff_ffff_ffff) << 8;
        IdGen { prefix, suffix: AtomicU64::new(suffix) }
    }

    fn next(&self) -> i64 {
        loop {
            let suffix = self.suffix.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
            let id = (self.prefix | (suffix & ((1 << Self::SUFFIX_BITS) - 1))) & (i64::MAX as u64);
            if id != 0 {
                return id as i64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::mpsc;
    use tokio_stream::wrappers::ReceiverStream;
    use tonic::Code;

    use super::*;
    use crate::testing::{MEMBER_ID, TestServer};

    #[test]
    fn ids_are_positive_unique_and_carry_the_member() {
        let g = IdGen::new(MEMBER_ID, 1_700_000_000_000);
        let a = g.next();
        let b = g.next();
        assert!(a > 0 && b > 0 && a != b);
        assert_eq!((a as u64) >> 48, MEMBER_ID & 0xffff);
        let wide = IdGen::new(u64::MAX, u64::MAX);
        assert!(wide.next() > 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn grant_keepalive_ttl_list_revoke() {
        let srv = TestServer::start().await;
        let mut lease = srv.lease_client().await;
        let granted = lease.lease_grant(LeaseGrantRequest { ttl: 60, id: 0 }).await.unwrap().into_inner();
        assert!(granted.id > 0);
        assert_eq!(granted.ttl, 60);
        srv.assert_header(granted.header.as_ref(), 1);
        let id = granted.id;

        let err = lease.lease_grant(LeaseGrantRequest { ttl: 60, id }).await.unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (Code::FailedPrecondition, "etcdserver: lease already exists")
        );
        let err = lease.lease_grant(LeaseGrantRequest { ttl: MAX_LEASE_TTL + 1, id: 0 }).await.unwrap_err();
        assert_eq!((err.code(), err.message()), (Code::OutOfRange, "etcdserver: too large lease TTL"));

        let (tx, rx) = mpsc::channel(4);
        let mut answers = lease.lease_keep_alive(ReceiverStream::new(rx)).await.unwrap().into_inner();
        tx.send(LeaseKeepAliveRequest { id }).await.unwrap();
        let ka = answers.message().await.unwrap().unwrap();
        assert_eq!((ka.id, ka.ttl), (id, 60));
        srv.assert_header(ka.header.as_ref(), 1);
        tx.send(LeaseKeepAliveRequest { id: 12345 }).await.unwrap();
        let ka = answers.message().await.unwrap().unwrap();
        assert_eq!((ka.id, ka.ttl), (12345, 0), "an unknown lease answers TTL 0");
        drop(tx);
        assert!(
            tokio::time::timeout(Duration::from_secs(5), answers.message()).await.unwrap().unwrap().is_none()
        );

        let ttl =
            lease.lease_time_to_live(LeaseTimeToLiveRequest { id, keys: true }).await.unwrap().into_inner();
        assert_eq!((ttl.id, ttl.granted_ttl), (id, 60));
        assert!(ttl.ttl > 0 && ttl.ttl <= 60);
        let list = lease.lease_leases(LeaseLeasesRequest {}).await.unwrap().into_inner();
        assert_eq!(list.leases.iter().map(|l| l.id).collect::<Vec<_>>(), vec![id]);

        lease.lease_revoke(LeaseRevokeRequest { id }).await.unwrap();
        let err = lease.lease_revoke(LeaseRevokeRequest { id }).await.unwrap_err();
        assert_eq!((err.code(), err.message()), (Code::NotFound, "etcdserver: requested lease not found"));
        let gone =
            lease.lease_time_to_live(LeaseTimeToLiveRequest { id, keys: false }).await.unwrap().into_inner();
        assert_eq!((gone.id, gone.ttl), (id, -1));
        srv.assert_header(gone.header.as_ref(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hasleader_keepalive_streams_fail_without_a_leader() {
        let srv = TestServer::start().await;
        let mut lease = srv.lease_client().await;
        let (tx, rx) = mpsc::channel(4);
        let mut req = Request::new(ReceiverStream::new(rx));
        req.metadata_mut().insert("hasleader", "true".parse().unwrap());
        let mut answers = lease.lease_keep_alive(req).await.unwrap().into_inner();
        tx.send(LeaseKeepAliveRequest { id: 1 }).await.unwrap();
        assert_eq!(answers.message().await.unwrap().unwrap().ttl, 0);
        srv.backend.set_leader(false);
        let err =
            tokio::time::timeout(Duration::from_secs(10), answers.message()).await.unwrap().unwrap_err();
        assert_eq!((err.code(), err.message()), (Code::Unavailable, "etcdserver: no leader"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_etcd_client_crate_keeps_a_lease_alive() {
        let srv = TestServer::start().await;
        let mut client = srv.etcd_client().await;
        let granted = client.lease_grant(30, None).await.unwrap();
        let (mut keeper, mut stream) = client.lease_keep_alive(granted.id()).await.unwrap();
        keeper.keep_alive().await.unwrap();
        let resp = stream.message().await.unwrap().unwrap();
        assert_eq!((resp.id(), resp.ttl()), (granted.id(), 30));
        client
            .put("leased", "v", Some(etcd_client::PutOptions::new().with_lease(granted.id())))
            .await
            .unwrap();
        let ttl = client
            .lease_time_to_live(granted.id(), Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()))
            .await
            .unwrap();
        assert_eq!(ttl.keys(), &[b"leased".to_vec()]);
        client.lease_revoke(granted.id()).await.unwrap();
        assert_eq!(client.get("leased", None).await.unwrap().count(), 0);
    }
}
