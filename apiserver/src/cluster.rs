//! The `etcdserverpb.Cluster` service. MemberList answers from the
//! member's view of the membership (after a read barrier if asked to be
//! linearizable). MemberAdd/Remove/Update/Promote check the request as etcd
//! does (bad URL, URL in use, unknown member, not a learner), then the
//! leader makes the change through raft (`keelson_raftstore::membership`);
//! a follower forwards it there.

use std::sync::Arc;

use keelson_proto::etcdserverpb::cluster_server::Cluster;
use keelson_proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse, MemberPromoteRequest,
    MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest,
    MemberUpdateResponse,
};
use tonic::{Request, Response, Status};

use crate::backend::{Backend, MemberChange, MemberInfo};
use crate::context::Ctx;
use crate::errors::EtcdError;

pub struct ClusterService<B> {
    ctx: Arc<Ctx<B>>,
}

impl<B: Backend> ClusterService<B> {
    pub(crate) fn new(ctx: Arc<Ctx<B>>) -> Self {
        ClusterService { ctx }
    }

    async fn change(&self, change: MemberChange) -> Result<(u64, Vec<MemberInfo>), Status> {
        Ok(self.ctx.backend.change_members(change).await?)
    }

    fn member(&self, id: u64) -> Result<MemberInfo, EtcdError> {
        self.ctx.backend.members().into_iter().find(|m| m.id == id).ok_or(EtcdError::MemberNotFound)
    }

    /// Peer URLs as etcd's `types.NewURLs` accepts them, not already used by
    /// another member than `except`.
    fn check_peer_urls(&self, urls: &[String], except: Option<u64>) -> Result<(), EtcdError> {
        if urls.is_empty() || !urls.iter().all(|u| valid_url(u)) {
            return Err(EtcdError::MemberBadUrls);
        }
        let taken = self
            .ctx
            .backend
            .members()
            .into_iter()
            .filter(|m| Some(m.id) != except)
            .any(|m| m.peer_urls.iter().any(|p| urls.contains(p)));
        if taken {
            return Err(EtcdError::PeerUrlExists);
        }
        Ok(())
    }
}

/// `scheme://host:port` with scheme http, https, unix or unixs and no path
/// (etcd's `types.NewURLs`).
fn valid_url(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once("://") else { return false };
    if !matches!(scheme, "http" | "https" | "unix" | "unixs") {
        return false;
    }
    let host_port = rest.strip_suffix('/').unwrap_or(rest);
    if host_port.contains('/') {
        return false;
    }
    match host_port.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && !port.is_empty() && port.parse::<u16>().is_ok(),
        None => false,
    }
}

fn sorted(mut members: Vec<MemberInfo>) -> Vec<Member> {
    members.sort_by_key(|m| m.id);
    members.into_iter().map(to_proto).collect()
}

pub(crate) fn to_proto(m: MemberInfo) -> Member {
    Member {
        id: m.id,
        name: m.name,
        peer_ur_ls: m.peer_urls,
        client_ur_ls: m.client_urls,
        is_learner: m.is_learner,
    }
}

#[tonic::async_trait]
impl<B: Backend> Cluster for ClusterService<B> {
    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        let req = request.into_inner();
        self.check_peer_urls(&req.peer_ur_ls, None)?;
        let change = MemberChange::Add {
            peer_urls: req.peer_ur_ls.clone(),
            is_learner: req.is_learner,
            name: String::new(),
        };
        let (id, members) = self.change(change).await?;
        let member = members.iter().find(|m| m.id == id).cloned().unwrap_or(MemberInfo {
            id,
            peer_urls: req.peer_ur_ls,
            is_learner: req.is_learner,
            ..Default::default()
        });
        Ok(Response::new(MemberAddResponse {
            header: Some(self.ctx.header(0)),
            member: Some(to_proto(member)),
            members: sorted(members),
        }))
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        let id = request.into_inner().id;
        self.member(id)?;
        let (_, members) = self.change(MemberChange::Remove(id)).await?;
        Ok(Response::new(MemberRemoveResponse { header: Some(self.ctx.header(0)), members: sorted(members) }))
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        let req = request.into_inner();
        self.member(req.id)?;
        self.check_peer_urls(&req.peer_ur_ls, Some(req.id))?;
        let change = MemberChange::Update {
            id: req.id,
            peer_urls: req.peer_ur_ls,
            name: String::new(),
            client_urls: Vec::new(),
        };
        let (_, members) = self.change(change).await?;
        Ok(Response::new(MemberUpdateResponse { header: Some(self.ctx.header(0)), members: sorted(members) }))
    }

    async fn member_list(
        &self,
        request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        if request.into_inner().linearizable {
            self.ctx.backend.read_barrier().await?;
        }
        let members = sorted(self.ctx.backend.members());
        Ok(Response::new(MemberListResponse { header: Some(self.ctx.header(0)), members }))
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        let id = request.into_inner().id;
        if !self.member(id)?.is_learner {
            return Err(EtcdError::MemberNotLearner.into());
        }
        let (_, members) = self.change(MemberChange::Promote(id)).await?;
        Ok(Response::new(MemberPromoteResponse {
            header: Some(self.ctx.header(0)),
            members: sorted(members),
        }))
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;
    use crate::testing::{MEMBER_ID, TEST_BACKEND_NO_MEMBERSHIP, TestServer};

    #[test]
    fn urls_are_checked_like_etcd() {
        assert!(valid_url("http://10.0.0.1:2380"));
        assert!(valid_url("https://node-1:2380/"));
        assert!(!valid_url("10.0.0.1:2380"));
        assert!(!valid_url("ftp://10.0.0.1:2380"));
        assert!(!valid_url("http://10.0.0.1"));
        assert!(!valid_url("http://10.0.0.1:2380/path"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn member_list_and_membership_errors() {
        let srv = TestServer::start().await;
        let mut c = srv.cluster_client().await;
        let list = c.member_list(MemberListRequest { linearizable: true }).await.unwrap().into_inner();
        srv.assert_header(list.header.as_ref(), 1);
        assert_eq!(list.members.len(), 1);
        assert_eq!((list.members[0].id, list.members[0].name.as_str()), (MEMBER_ID, "default"));

        let err = c.member_remove(MemberRemoveRequest { id: 42 }).await.unwrap_err();
        assert_eq!((err.code(), err.message()), (Code::NotFound, "etcdserver: member not found"));
        let err = c.member_promote(MemberPromoteRequest { id: MEMBER_ID }).await.unwrap_err();
        assert_eq!(err.message(), "etcdserver: can only promote a learner member");
        let taken = MemberAddRequest { peer_ur_ls: vec!["http://127.0.0.1:2380".into()], is_learner: false };
        let err = c.member_add(taken).await.unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (Code::FailedPrecondition, "etcdserver: Peer URLs already exists")
        );
        let bad = MemberAddRequest { peer_ur_ls: vec!["nonsense".into()], is_learner: false };
        assert_eq!(
            c.member_add(bad).await.unwrap_err().message(),
            "etcdserver: given member URLs are invalid"
        );
        // A valid change reaches the backend (the test backend makes none).
        let fine = MemberAddRequest { peer_ur_ls: vec!["http://10.0.0.2:2380".into()], is_learner: true };
        let err = c.member_add(fine).await.unwrap_err();
        assert_eq!(err.message(), TEST_BACKEND_NO_MEMBERSHIP);
    }
}
