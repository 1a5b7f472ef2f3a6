//! The `etcdserverpb.Auth` service of a member without etcd auth: it
//! behaves as etcd does with authentication disabled and no users or roles.
//! AuthStatus says disabled, AuthDisable is a no-op, the lists are empty,
//! reads and changes of a named user or role say it does not exist, and
//! whatever would create or use credentials (Authenticate, AuthEnable,
//! UserAdd, RoleAdd) fails with "etcdserver: authentication is not enabled".
//!
//! Kubernetes-side authentication lives in `keelson-auth`, not here.

use std::sync::Arc;

use keelson_proto::etcdserverpb::auth_server::Auth;
use keelson_proto::etcdserverpb::*;
use tonic::{Request, Response, Status};

use crate::backend::Backend;
use crate::context::Ctx;
use crate::errors::EtcdError;

/// etcd's auth revision of a store where auth was never touched.
const AUTH_REVISION: u64 = 1;

pub struct AuthService<B> {
    ctx: Arc<Ctx<B>>,
}

impl<B: Backend> AuthService<B> {
    pub(crate) fn new(ctx: Arc<Ctx<B>>) -> Self {
        AuthService { ctx }
    }

    fn header(&self) -> Option<ResponseHeader> {
        Some(self.ctx.header(0))
    }
}

/// What etcd answers for a user that does not exist.
fn no_user(name: &str) -> Status {
    if name.is_empty() { EtcdError::UserEmpty } else { EtcdError::UserNotFound }.into()
}

/// What etcd answers for a role that does not exist.
fn no_role(name: &str) -> Status {
    if name.is_empty() { EtcdError::RoleEmpty } else { EtcdError::RoleNotFound }.into()
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl<B: Backend> Auth for AuthService<B> {
    async fn auth_enable(&self, _r: Request<AuthEnableRequest>) -> Reply<AuthEnableResponse> {
        Err(EtcdError::AuthNotEnabled.into())
    }

    async fn auth_disable(&self, _r: Request<AuthDisableRequest>) -> Reply<AuthDisableResponse> {
        Ok(Response::new(AuthDisableResponse { header: self.header() }))
    }

    async fn auth_status(&self, _r: Request<AuthStatusRequest>) -> Reply<AuthStatusResponse> {
        Ok(Response::new(AuthStatusResponse {
            header: self.header(),
            enabled: false,
            auth_revision: AUTH_REVISION,
        }))
    }

    async fn authenticate(&self, _r: Request<AuthenticateRequest>) -> Reply<AuthenticateResponse> {
        Err(EtcdError::AuthNotEnabled.into())
    }

    async fn user_add(&self, _r: Request<AuthUserAddRequest>) -> Reply<AuthUserAddResponse> {
        Err(EtcdError::AuthNotEnabled.into())
    }

    async fn user_get(&self, r: Request<AuthUserGetRequest>) -> Reply<AuthUserGetResponse> {
        Err(no_user(&r.into_inner().name))
    }

    async fn user_list(&self, _r: Request<AuthUserListRequest>) -> Reply<AuthUserListResponse> {
        Ok(Response::new(AuthUserListResponse { header: self.header(), users: vec![] }))
    }

    async fn user_delete(&self, r: Request<AuthUserDeleteRequest>) -> Reply<AuthUserDeleteResponse> {
        Err(no_user(&r.into_inner().name))
    }

    async fn user_change_password(
        &self,
        r: Request<AuthUserChangePasswordRequest>,
    ) -> Reply<AuthUserChangePasswordResponse> {
        Err(no_user(&r.into_inner().name))
    }

    async fn user_grant_role(
        &self,
        r: Request<AuthUserGrantRoleRequest>,
    ) -> Reply<AuthUserGrantRoleResponse> {
        Err(no_user(&r.into_inner().user))
    }

    async fn user_revoke_role(
        &self,
        r: Request<AuthUserRevokeRoleRequest>,
    ) -> Reply<AuthUserRevokeRoleResponse> {
        Err(no_user(&r.into_inner().name))
    }

    async fn role_add(&self, _r: Request<AuthRoleAddRequest>) -> Reply<AuthRoleAddResponse> {
        Err(EtcdError::AuthNotEnabled.into())
    }

    async fn role_get(&self, r: Request<AuthRoleGetRequest>) -> Reply<AuthRoleGetResponse> {
        Err(no_role(&r.into_inner().role))
    }

    async fn role_list(&self, _r: Request<AuthRoleListRequest>) -> Reply<AuthRoleListResponse> {
        Ok(Response::new(AuthRoleListResponse { header: self.header(), roles: vec![] }))
    }

    async fn role_delete(&self, r: Request<AuthRoleDeleteRequest>) -> Reply<AuthRoleDeleteResponse> {
        Err(no_role(&r.into_inner().role))
    }

    async fn role_grant_permission(
        &self,
        r: Request<AuthRoleGrantPermissionRequest>,
    ) -> Reply<AuthRoleGrantPermissionResponse> {
        Err(no_role(&r.into_inner().name))
    }

    async fn role_revoke_permission(
        &self,
        r: Request<AuthRoleRevokePermissionRequest>,
    ) -> Reply<AuthRoleRevokePermissionResponse> {
        Err(no_role(&r.into_inner().role))
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;
    use crate::testing::TestServer;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn auth_is_disabled_and_empty() {
        let srv = TestServer::start().await;
        let mut a = srv.auth_client().await;
        let st = a.auth_status(AuthStatusRequest {}).await.unwrap().into_inner();
        assert!(!st.enabled);
        srv.assert_header(st.header.as_ref(), 1);
        a.auth_disable(AuthDisableRequest {}).await.unwrap();
        assert!(a.user_list(AuthUserListRequest {}).await.unwrap().into_inner().users.is_empty());
        assert!(a.role_list(AuthRoleListRequest {}).await.unwrap().into_inner().roles.is_empty());

        let err = a
            .authenticate(AuthenticateRequest { name: "root".into(), password: "x".into() })
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (Code::FailedPrecondition, "etcdserver: authentication is not enabled")
        );
        let err = a.user_get(AuthUserGetRequest { name: "bob".into() }).await.unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (Code::FailedPrecondition, "etcdserver: user name not found")
        );
        let err = a.role_get(AuthRoleGetRequest { role: "r".into() }).await.unwrap_err();
        assert_eq!(err.message(), "etcdserver: role name not found");
        let err = a.user_delete(AuthUserDeleteRequest { name: String::new() }).await.unwrap_err();
        assert_eq!((err.code(), err.message()), (Code::InvalidArgument, "etcdserver: user name is empty"));
        let err = a.auth_enable(AuthEnableRequest {}).await.unwrap_err();
        assert_eq!(err.message(), "etcdserver: authentication is not enabled");
    }
}
