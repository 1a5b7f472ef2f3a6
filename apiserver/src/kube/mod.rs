//! The Kubernetes REST API, served from the member's own store and watch
//! hub (see `docs/design/kube-api.md`). [`start`] is the entry point:
//! certificates, bootstrap objects, then an HTTPS listener per address.

pub mod access;
pub mod apply;
pub mod crd;
pub mod discovery;
pub mod handlers;
pub mod hooks;
pub mod managed;
pub mod nscache;
pub mod objects;
pub mod openapi;
pub mod patch;
pub mod pki;
pub mod protobuf;
pub mod resources;
pub mod selectors;
pub mod status;
pub mod storage;
pub mod table;
pub mod token;
pub mod watch;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::json;

pub use handlers::{Identity, KubeApi};
use resources::Registry;
use status::ApiError;
use storage::Storage;

use crate::backend::Backend;
use crate::context::Ctx;

/// The API server's settings (`--listen-api-urls` and the TLS flags).
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub listen: Vec<SocketAddr>,
    /// Extra names for the serving certificate (advertised host names).
    pub hosts: Vec<String>,
    pub data_dir: PathBuf,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_private_key_file: Option<PathBuf>,
    pub client_ca_file: Option<PathBuf>,
}

/// Key of the cluster CA in the replicated store.
pub const CA_KEY: &str = "/keelson/pki/ca";

/// The kube-apiserver version this API corresponds to.
fn version() -> serde_json::Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": format!("v1.33.0+keelson-{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "n/a (Rust)",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if cfg!(target_arch = "x86_64") { "amd64" } else { std::env::consts::ARCH }),
    })
}

/// Paths anonymous clients may read (kube's system:public-info-viewer).
fn public(path: &str) -> bool {
    matches!(path, "/healthz" | "/livez" | "/readyz" | "/version")
        || path.starts_with("/healthz/")
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/")
}

async fn authenticate(req: Request, next: Next) -> Response {
    if req.extensions().get::<Identity>().is_none() && !public(req.uri().path()) {
        return ApiError::unauthorized().into_response();
    }
    next.run(req).await
}

async fn health<B: Backend>(State(api): State<Arc<KubeApi<B>>>) -> Response {
    let status = api.storage.ctx.backend.status();
    if status.leader == 0 {
        return (StatusCode::INTERNAL_SERVER_ERROR, "[-]etcd failed: no leader\nhealthz check failed")
            .into_response();
    }
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "ok").into_response()
}

async fn resource<B: Backend>(State(api): State<Arc<KubeApi<B>>>, req: Request) -> Response {
    api.handle(req).await
}

/// The REST API as an axum router (the TLS layer adds [`Identity`]).
pub fn router<B: Backend>(api: Arc<KubeApi<B>>) -> Router {
    Router::new()
        .route("/healthz", get(health::<B>))
        .route("/livez", get(health::<B>))
        .route("/readyz", get(health::<B>))
        .route("/version", get(|| async { axum::Json(version()) }))
        .route("/openapi/v2", get(openapi::v2))
        .route("/openapi/v3", get(openapi::index::<B>))
        .route("/openapi/v3/{*rest}", get(openapi::group_version::<B>))
        .route("/api", any(resource::<B>))
        .route("/api/{*rest}", any(resource::<B>))
        .route("/apis", any(resource::<B>))
        .route("/apis/{*rest}", any(resource::<B>))
        .fallback(|| async {
            ApiError::new(404, "NotFound", "the server could not find the requested resource")
        })
        .layer(axum::middleware::from_fn(authenticate))
        .with_state(api)
}

/// Loads or creates the certificates: the cluster CA from the store (or
/// `--client-ca-file`), a serving certificate (or `--tls-cert-file`), and
/// `<data-dir>/admin.kubeconfig` when the CA key is known.
async fn certificates<B: Backend>(
    api: &KubeApi<B>,
    cfg: &ApiConfig,
) -> anyhow::Result<(Arc<rustls::ServerConfig>, Option<PathBuf>)> {
    use anyhow::Context;
    let pki_dir = cfg.data_dir.join("pki");
    let ca: Option<pki::CertPair> = if cfg.client_ca_file.is_some() && cfg.tls_cert_file.is_some() {
        None
    } else {
        let fresh = serde_json::to_vec(&pki::new_ca("keelson-ca")?)?;
        let stored = api.storage.create_raw(CA_KEY, fresh).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        Some(serde_json::from_slice(&stored).context("cluster CA in the store")?)
    };
    let client_ca_pem = match (&cfg.client_ca_file, &ca) {
        (Some(path), _) => pki::read_file(path)?,
        (None, Some(ca)) => ca.cert_pem.clone(),
        (None, None) => unreachable!("a CA is created unless --client-ca-file is given"),
    };
    let serving = match (&cfg.tls_cert_file, &cfg.tls_private_key_file, &ca) {
        (Some(c), Some(k), _) => pki::CertPair { cert_pem: pki::read_file(c)?, key_pem: pki::read_file(k)? },
        (Some(_), None, _) | (None, Some(_), _) => {
            anyhow::bail!("--tls-cert-file and --tls-private-key-file must be given together")
        }
        (None, None, Some(ca)) => {
            let mut hosts = cfg.hosts.clone();
            hosts.extend(cfg.listen.iter().map(|a| a.ip().to_string()));
            if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
                hosts.push(h.trim().to_string());
            }
            let serving = pki::issue_serving(ca, &hosts)?;
            pki::write_private(&pki_dir.join("apiserver.crt"), &serving.cert_pem)?;
            pki::write_private(&pki_dir.join("apiserver.key"), &serving.key_pem)?;
            serving
        }
        (None, None, None) => unreachable!(),
    };
    let mut kubeconfig = None;
    if let Some(ca) = &ca {
        pki::write_private(&pki_dir.join("ca.crt"), &ca.cert_pem)?;
        let admin = pki::issue_client(ca, "admin", &["system:masters"])?;
        let addr = cfg.listen.first().context("no API listen address")?;
        let host = if addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { addr.ip().to_string() };
        let server = format!("https://{host}:{}", addr.port());
        let path = cfg.data_dir.join("admin.kubeconfig");
        pki::write_private(&path, &pki::kubeconfig(&server, &ca.cert_pem, &admin, "admin"))?;
        kubeconfig = Some(path);
    }
    Ok((pki::server_config(&serving, &client_ca_pem)?, kubeconfig))
}

/// Serves `router` over TLS on `listener` until `stop` resolves; a verified
/// client certificate becomes the request's [`Identity`].
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tower::ServiceExt;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::pin!(stop);
    loop {
        let (tcp, _) = tokio::select! {
            _ = &mut stop => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else { return };
            let identity = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(pki::identity_of)
                .map(|(user, groups)| Identity { user, groups });
            let service =
                hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    if let Some(id) = &identity {
                        req.extensions_mut().insert(id.clone());
                    }
                    router.clone().oneshot(req.map(axum::body::Body::new))
                });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // Coalesce above TLS: responses finishing together become one
            // TLS record and one socket write (`coalesce.rs`).
            let io = TokioIo::new(crate::coalesce::Coalesce::new(stream));
            let _ = builder.serve_connection_with_upgrades(io, service).await;
        });
    }
}

/// Starts the API server on `cfg.listen`; returns the serving tasks and the
/// admin kubeconfig's path (if this member wrote one).
pub async fn start<B: Backend>(
    backend: Arc<B>,
    grpc: crate::GrpcConfig,
    cfg: ApiConfig,
    stop: impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) -> anyhow::Result<(Vec<tokio::task::JoinHandle<std::io::Result<()>>>, Option<PathBuf>)> {
    let mut api = KubeApi::new(Storage::new(Ctx::new(backend, grpc)), Arc::new(Registry::default()));
    if let Some(addr) = cfg.listen.first() {
        api.advertise = addr.to_string();
    }
    let api = Arc::new(api);
    let (tls, kubeconfig) = certificates(&api, &cfg).await?;
    hooks::bootstrap(&api).await.map_err(|e| anyhow::anyhow!("create the default namespaces: {e}"))?;
    hooks::reload_definitions(&api).await;
    spawn_definition_watch(api.clone());
    nscache::spawn(api.clone());
    let router = router(api);
    let mut tasks = Vec::new();
    for addr in &cfg.listen {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        tracing::info!(%addr, "serving the Kubernetes API");
        tasks.push(tokio::spawn(serve_tls(listener, tls.clone(), router.clone(), stop())));
    }
    Ok((tasks, kubeconfig))
}

/// Keeps the served custom types current when definitions change on any
/// member (a hub watch on the definitions' prefix).
fn spawn_definition_watch<B: Backend>(api: Arc<KubeApi<B>>) {
    tokio::spawn(async move {
        let Some(crds) = api.registry.lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        else {
            return;
        };
        let prefix = crds.prefix(None);
        let (stream, mut rx) = api.storage.ctx.backend.hub().new_stream();
        let req = keelson_proto::etcdserverpb::WatchCreateRequest {
            key: prefix.clone().into_bytes().into(),
            range_end: storage::prefix_end(prefix.as_bytes()).into(),
            ..Default::default()
        };
        if stream.watch(&req).is_err() {
            return;
        }
        while let Some(resp) = rx.recv().await {
            if !resp.events.is_empty() {
                hooks::reload_definitions(&api).await;
            }
        }
    });
}
