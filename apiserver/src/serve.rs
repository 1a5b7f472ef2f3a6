//! Serving a member's client URLs: the gRPC services and `/health` +
//! `/metrics` on one port (HTTP/2 for gRPC, HTTP/1.1 for the rest), as etcd
//! serves them; and `--listen-metrics-urls` with only the HTTP routes.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::StreamExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::Routes;

use crate::authority::AuthorityFix;
use crate::backend::Backend;
use crate::coalesce::Coalesce;
use crate::config::GrpcConfig;

/// Serves gRPC plus `/health` and `/metrics` on `listener` until `stop`
/// resolves.
pub async fn serve_client<B: Backend>(
    backend: Arc<B>,
    cfg: GrpcConfig,
    listener: TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let router =
        crate::server::routes(backend.clone(), &cfg).into_axum_router().merge(crate::http::router(backend));
    tonic::transport::Server::builder()
        .accept_http1(true)
        .add_routes(Routes::from(router))
        .serve_with_incoming_shutdown(incoming(listener), stop)
        .await
}

/// Serves only `/health` and `/metrics` on `listener` until `stop`.
pub async fn serve_metrics<B: Backend>(
    backend: Arc<B>,
    listener: TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .accept_http1(true)
        .add_routes(Routes::from(crate::http::router(backend)))
        .serve_with_incoming_shutdown(incoming(listener), stop)
        .await
}

/// Accepted connections with Nagle's algorithm off (small gRPC responses
/// must not wait for the peer's delayed ACK, that costs ~40 ms each), and a
/// URL as `:authority` made acceptable (`authority.rs`), and responses that
/// finish together written together (`coalesce.rs`).
fn incoming(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<AuthorityFix<Coalesce<TcpStream>>>> {
    TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok(AuthorityFix::new(Coalesce::new(conn)))
    })
}

/// Binds `addr`, naming it in the error.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| std::io::Error::new(e.kind(), format!("listen on {addr}: {e}")))
}
