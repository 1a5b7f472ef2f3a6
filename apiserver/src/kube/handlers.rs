//! The REST verbs: path parsing, query parameters and the semantics of
//! get, list, watch, create, update, patch, delete and deletecollection.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use super::nscache::Phase;
use super::objects::{self, FieldValidation};
use super::patch::{self, PatchType};
use super::resources::{Registry, ResourceType};
use super::selectors::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::storage::{Page, ReadAt, Storage, Stored, WriteError, prefix_end};
use super::{table, watch};
use crate::backend::Backend;

/// Largest request body accepted (kube-apiserver's 3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// The authenticated user of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
}

/// The API server's shared state.
pub struct KubeApi<B> {
    pub storage: Storage<B>,
    pub registry: Arc<Registry>,
    /// How often a watch with `allowWatchBookmarks` gets a BOOKMARK.
    pub bookmark_interval: Duration,
    /// Items read from the store per batch while streaming a LIST.
    pub list_batch: i64,
    /// host:port clients reach this server at (discovery's
    /// serverAddressByClientCIDRs).
    pub advertise: String,
    /// Watch events decoded and encoded once for every watcher.
    pub events: watch::EventCache,
    /// The namespaces' phases, for NamespaceLifecycle (`nscache`).
    pub namespaces: super::nscache::NamespaceCache,
}

pub type Query = HashMap<String, String>;

/// What a guaranteed update does to the current object (None: absent);
/// `Ok(None)` means not found.
pub type Change<'a> = dyn Fn(Option<&Stored>) -> Result<Option<Value>, ApiError> + Sync + 'a;

fn parse_query(q: Option<&str>) -> Query {
    let mut out = HashMap::new();
    for pair in q.unwrap_or_default().split('&').filter(|s| !s.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let dec = |s: &str| {
            let s = s.replace('+', " ");
            percent_decode(&s)
        };
        out.insert(dec(k), dec(v));
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], serde_json::to_vec(v).unwrap_or_default())
        .into_response()
}

fn with_warnings(mut resp: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('"', "\\\""));
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append("warning", v);
        }
    }
    resp
}

/// What a request path names.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub group: String,
    pub version: String,
    pub namespace: Option<String>,
    pub resource: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// The legacy `/watch/` path prefix.
    pub watch_path: bool,
}

/// Parses `/api/v1/…` or `/apis/{group}/{version}/…`; `None` for a
/// discovery path (no resource).
pub fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, mut rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest.to_vec()),
        ["apis", g, v, rest @ ..] => (*g, *v, rest.to_vec()),
        _ => return None,
    };
    let mut watch_path = false;
    if rest.first() == Some(&"watch") {
        watch_path = true;
        rest.remove(0);
    }
    if rest.is_empty() || rest.iter().any(|s| s.is_empty()) {
        return None;
    }
    let ns_scoped = rest[0] == "namespaces"
        && rest.len() >= 3
        && !(group.is_empty() && rest.len() == 3 && matches!(rest[2], "status" | "finalize"));
    let (namespace, rest) =
        if ns_scoped { (Some(rest[1].to_string()), &rest[2..]) } else { (None, &rest[..]) };
    if rest.len() > 3 {
        return None;
    }
    Some(Target {
        group: group.into(),
        version: version.into(),
        namespace,
        resource: rest[0].into(),
        name: rest.get(1).map(|s| s.to_string()),
        subresource: rest.get(2).map(|s| s.to_string()),
        watch_path,
    })
}

fn not_found_path() -> ApiError {
    ApiError::new(404, "NotFound", "the server could not find the requested resource")
}

/// The continue token: the revision and the next key (kube-apiserver's
/// format, base64 of `{"v":"meta.k8s.io/v1","rv":…,"start":…}`).
fn encode_continue(rev: i64, next_key: &[u8], prefix: &str) -> String {
    use base64::Engine;
    let start = String::from_utf8_lossy(&next_key[prefix.len().min(next_key.len())..]).into_owned();
    let v = json!({"v": "meta.k8s.io/v1", "rv": rev, "start": start});
    base64::engine::general_purpose::URL_SAFE.encode(v.to_string())
}

fn decode_continue(token: &str, prefix: &str) -> Result<(i64, Vec<u8>), ApiError> {
    use base64::Engine;
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(token))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rev = v["rv"].as_i64().filter(|r| *r > 0).ok_or_else(bad)?;
    let start = v["start"].as_str().ok_or_else(bad)?;
    if start.contains("..") || start.starts_with('/') {
        return Err(bad());
    }
    Ok((rev, format!("{prefix}{start}").into_bytes()))
}

fn parse_rv(s: &str) -> Result<i64, ApiError> {
    s.parse::<i64>()
        .ok()
        .filter(|v| *v >= 0)
        .ok_or_else(|| ApiError::bad_request(format!("invalid resource version: {s:?}")))
}

/// The field manager of a write: `fieldManager`, else the client's name
/// from its User-Agent (as kube-apiserver), put into the query by
/// [`KubeApi::handle`].
fn manager_of(q: &Query) -> String {
    q.get("fieldManager").or_else(|| q.get(USER_AGENT_MANAGER)).cloned().unwrap_or_else(|| "unknown".into())
}

/// The query key [`KubeApi::handle`] stores the User-Agent's manager name
/// under (not a valid parameter name, so no client can send it).
const USER_AGENT_MANAGER: &str = "\u{0}user-agent";

fn bool_param(q: &Query, name: &str) -> bool {
    matches!(q.get(name).map(String::as_str), Some("true" | "1"))
}

impl<B: Backend> KubeApi<B> {
    pub fn new(storage: Storage<B>, registry: Arc<Registry>) -> Self {
        KubeApi {
            storage,
            registry,
            bookmark_interval: Duration::from_secs(10),
            list_batch: 500,
            advertise: "127.0.0.1:6443".into(),
            events: watch::EventCache::default(),
            namespaces: Default::default(),
        }
    }

    pub fn advertise_address(&self) -> &str {
        &self.advertise
    }

    fn resolve_type(&self, t: &Target) -> Result<Arc<ResourceType>, ApiError> {
        let rt = self.registry.lookup(&t.group, &t.version, &t.resource).ok_or_else(not_found_path)?;
        if t.namespace.is_some() && !rt.namespaced {
            return Err(not_found_path());
        }
        Ok(rt)
    }

    /// Entry point for every `/api/…` and `/apis/…` resource request.
    pub async fn handle(self: Arc<Self>, req: Request) -> Response {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_string();
        let mut query = parse_query(parts.uri.query());
        query.remove(USER_AGENT_MANAGER);
        if let Some(agent) = parts.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()) {
            let name: String = agent.split('/').next().unwrap_or_default().chars().take(128).collect();
            if !name.is_empty() {
                query.insert(USER_AGENT_MANAGER.into(), name);
            }
        }
        let Some(target) = parse_path(&path) else {
            return super::discovery::serve(&self, &parts.method, &path, &parts.headers);
        };
        let body = match axum::body::to_bytes(body, MAX_BODY + 1).await {
            Ok(b) if b.len() > MAX_BODY => {
                return ApiError::too_large("Request entity too large: limit is 3145728").into_response();
            }
            Ok(b) => b,
            Err(e) => return ApiError::bad_request(format!("reading the body: {e}")).into_response(),
        };
        let identity = parts.extensions.get::<Identity>().cloned();
        match self.dispatch(&parts.method, &parts.headers, target, query, body, identity).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        }
    }

    async fn dispatch(
        self: &Arc<Self>,
        method: &Method,
        headers: &HeaderMap,
        t: Target,
        q: Query,
        body: Bytes,
        identity: Option<Identity>,
    ) -> Result<Response, ApiError> {
        let rt = self.resolve_type(&t)?;
        if let Some(sub) = &t.subresource
            && !rt.has_subresource(sub)
        {
            return Err(not_found_path());
        }
        let body = if *method == Method::PATCH { body } else { super::protobuf::json_body(headers, body)? };
        if rt.verbs == ["create"] {
            return match *method {
                Method::POST => super::access::review(&rt, &body, identity.as_ref()),
                _ => Err(ApiError::method_not_allowed(
                    "the server does not allow this method on the requested resource",
                )),
            };
        }
        let accept =
            headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        if matches!(*method, Method::POST | Method::PUT) {
            let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
            let base = ct.split(';').next().unwrap_or_default().trim();
            if !matches!(
                base,
                "" | "application/json" | "application/yaml" | "*/*" | super::protobuf::MEDIA_TYPE
            ) {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!(
                        "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf; got {base:?}"
                    ),
                ));
            }
        }
        let ns = t.namespace.as_deref();
        if rt.namespaced && ns.is_none() && t.name.is_some() {
            return Err(not_found_path());
        }
        match (method.clone(), t.name.as_deref(), t.subresource.as_deref()) {
            (Method::GET, None, _) if t.watch_path || bool_param(&q, "watch") => {
                self.watch(&rt, ns, None, &q, &accept).await
            }
            (Method::GET, Some(name), _) if t.watch_path => {
                self.watch(&rt, ns, Some(name), &q, &accept).await
            }
            (Method::GET, None, _) => self.list(&rt, ns, &q, &accept).await,
            (Method::GET, Some(name), sub) => self.get(&rt, ns, name, sub, &q, &accept).await,
            (Method::POST, None, None) => self.create(&rt, ns, &q, &body, headers).await,
            (Method::POST, Some(name), Some("binding")) => self.bind(&rt, ns, name, &body).await,
            (Method::POST, Some(name), Some("token")) => {
                super::token::request(self, &rt, ns, name, &body).await
            }
            (Method::PUT, Some(name), sub) => self.update(&rt, ns, name, sub, &q, &body).await,
            (Method::PATCH, Some(name), sub) => {
                let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
                self.patch(&rt, ns, name, sub, &q, ct, &body).await
            }
            (Method::DELETE, Some(name), None) => self.delete(&rt, ns, name, &q, &body).await,
            (Method::DELETE, None, None) => self.delete_collection(&rt, ns, &q, &body).await,
            _ => Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            )),
        }
    }

    fn read_at(q: &Query) -> Result<ReadAt, ApiError> {
        match q.get("resourceVersion").map(String::as_str) {
            None | Some("") => Ok(ReadAt::Latest),
            Some("0") => Ok(ReadAt::Local),
            Some(rv) => {
                let rev = parse_rv(rv)?;
                match q.get("resourceVersionMatch").map(String::as_str) {
                    Some("Exact") => Ok(ReadAt::Exact(rev)),
                    // NotOlderThan (the default for a given revision): the
                    // local state once it has reached `rev`.
                    None | Some("") | Some("NotOlderThan") => Ok(ReadAt::Exact(-rev)),
                    Some(other) => Err(ApiError::bad_request(format!(
                        "resourceVersionMatch: Unsupported value: {other:?}: supported values: \"Exact\", \"NotOlderThan\""
                    ))),
                }
            }
        }
    }

    /// Waits (up to 3 s, as kube-apiserver's watch cache) until the local
    /// store has reached `rev`.
    async fn wait_for_revision(&self, rev: i64) -> Result<(), ApiError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            let cur = self.storage.ctx.backend.store().current_revision();
            if cur >= rev {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(ApiError::timeout(format!("Too large resource version: {rev}, current: {cur}")));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The revision a read sees and whether it must be exactly that one.
    async fn read_revision(&self, at: ReadAt) -> Result<i64, ApiError> {
        match at {
            ReadAt::Exact(r) if r < 0 => {
                self.wait_for_revision(-r).await?;
                self.storage.resolve(ReadAt::Local).await
            }
            other => self.storage.resolve(other).await,
        }
    }

    async fn get(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        sub: Option<&str>,
        q: &Query,
        accept: &str,
    ) -> Result<Response, ApiError> {
        let at = Self::read_at(q)?;
        let rev = self.read_revision(at).await?;
        let key = rt.key(ns, name);
        let found = self.storage.get(&key, ReadAt::Exact(rev)).await?;
        let Some(stored) = found else {
            return Err(ApiError::not_found(&rt.group, &rt.plural, name));
        };
        if sub == Some("scale") {
            return Ok(json_response(StatusCode::OK, &scale_of(rt, &stored.object)));
        }
        if table::wants_table(accept) {
            let rv = stored.object["metadata"]["resourceVersion"].clone();
            return Ok(json_response(
                StatusCode::OK,
                &table::table_with(
                    rt,
                    std::slice::from_ref(&stored.object),
                    json!({"resourceVersion": rv}),
                    table::IncludeObject::parse(q.get("includeObject").map(String::as_str)),
                ),
            ));
        }
        Ok(json_response(StatusCode::OK, &stored.object))
    }

    fn selectors(rt: &ResourceType, q: &Query) -> Result<(LabelSelector, FieldSelector), ApiError> {
        let labels = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or_default())?;
        let fields =
            FieldSelector::parse(q.get("fieldSelector").map(String::as_str).unwrap_or_default(), rt)?;
        Ok((labels, fields))
    }

    /// Reads up to `limit` matching objects (0: all) from `start` at `rev`;
    /// returns them, the key to continue from (if more remain) and the
    /// number of keys left.
    async fn collect(
        &self,
        prefix: &str,
        start: Vec<u8>,
        rev: i64,
        limit: i64,
        keep: &(dyn Fn(&Value) -> bool + Sync),
    ) -> Result<(Vec<Stored>, Option<Vec<u8>>, i64), ApiError> {
        let end = prefix_end(prefix.as_bytes());
        let mut items = Vec::new();
        let mut start = start;
        loop {
            let want = if limit > 0 { (limit - items.len() as i64).max(1) } else { self.list_batch };
            let batch = if limit > 0 { want.max(if want < 50 { want } else { 50 }) } else { want };
            let Page { items: got, more, remaining, .. } =
                self.storage.list(&start, &end, rev, batch).await?;
            let last_key = got.last().map(|s| s.key.to_vec());
            let n = got.len();
            for (i, s) in got.into_iter().enumerate() {
                if keep(&s.object) {
                    items.push(s);
                    if limit > 0 && items.len() as i64 >= limit {
                        let left = remaining + (n - i - 1) as i64;
                        if left == 0 {
                            return Ok((items, None, 0));
                        }
                        let mut next = items.last().map(|s| s.key.to_vec()).unwrap_or_default();
                        next.push(0);
                        return Ok((items, Some(next), left));
                    }
                }
            }
            match (more, last_key) {
                (true, Some(mut k)) => {
                    k.push(0);
                    start = k;
                }
                _ => return Ok((items, None, 0)),
            }
        }
    }

    async fn list(
        &self,
        rt: &Arc<ResourceType>,
        ns: Option<&str>,
        q: &Query,
        accept: &str,
    ) -> Result<Response, ApiError> {
        let (labels, fields) = Self::selectors(rt, q)?;
        let prefix = rt.prefix(ns);
        let limit = q.get("limit").and_then(|l| l.parse::<i64>().ok()).unwrap_or(0).max(0);
        let (rev, start) = match q.get("continue").filter(|c| !c.is_empty()) {
            Some(token) => {
                let (rev, start) = decode_continue(token, &prefix)?;
                if rev < self.storage.ctx.backend.store().compacted_revision() {
                    return Err(ApiError::expired(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                    ));
                }
                (rev, start)
            }
            None => (self.read_revision(Self::read_at(q)?).await?, prefix.as_bytes().to_vec()),
        };
        let match_all = labels.is_empty() && fields.is_empty();
        let keep = move |o: &Value| labels.matches(o) && fields.matches(o);
        let list_meta = |rev: i64, cont: Option<String>, remaining: i64| {
            let mut m = json!({"resourceVersion": rev.to_string()});
            if let Some(c) = cont {
                m["continue"] = json!(c);
                if remaining > 0 {
                    m["remainingItemCount"] = json!(remaining);
                }
            }
            m
        };
        if table::wants_table(accept) || limit > 0 {
            let (items, next, remaining) = self.collect(&prefix, start, rev, limit, &keep).await?;
            let cont = next.map(|k| encode_continue(rev, &k, &prefix));
            let meta = list_meta(rev, cont, remaining);
            let objects: Vec<Value> = items.into_iter().map(|s| s.object).collect();
            if table::wants_table(accept) {
                let include = table::IncludeObject::parse(q.get("includeObject").map(String::as_str));
                return Ok(json_response(StatusCode::OK, &table::table_with(rt, &objects, meta, include)));
            }
            return Ok(json_response(
                StatusCode::OK,
                &json!({"kind": rt.list_kind(), "apiVersion": rt.api_version(), "metadata": meta, "items": objects}),
            ));
        }
        // Unlimited: stream the list, one store batch at a time.
        let head = format!(
            "{{\"kind\":{},\"apiVersion\":{},\"metadata\":{},\"items\":[",
            json!(rt.list_kind()),
            json!(rt.api_version()),
            list_meta(rev, None, 0)
        );
        let first =
            self.storage.list_raw(&start, &prefix_end(prefix.as_bytes()), rev, self.list_batch).await?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
        let storage = self.storage.clone();
        let batch = self.list_batch;
        tokio::spawn(async move {
            let end = prefix_end(prefix.as_bytes());
            let mut buf = head.into_bytes();
            let mut first_item = true;
            let mut page = first;
            loop {
                for kv in &page.kvs {
                    // Without selectors the stored bytes are served as they
                    // are, given their resourceVersion (no parse).
                    let mark = buf.len();
                    if !first_item {
                        buf.push(b',');
                    }
                    if match_all && super::storage::append_served(&kv.value, kv.mod_revision, &mut buf) {
                        first_item = false;
                        continue;
                    }
                    buf.truncate(mark);
                    let s = match super::storage::decode(kv) {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                            return;
                        }
                    };
                    if keep(&s.object) {
                        if !first_item {
                            buf.push(b',');
                        }
                        first_item = false;
                        let _ = serde_json::to_writer(&mut buf, &s.object);
                    }
                }
                if tx.send(Ok(Bytes::from(std::mem::take(&mut buf)))).await.is_err() {
                    return;
                }
                let next = match (page.more, page.kvs.last()) {
                    (true, Some(last)) => {
                        let mut k = last.key.to_vec();
                        k.push(0);
                        k
                    }
                    _ => break,
                };
                page = match storage.list_raw(&next, &end, rev, batch).await {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                        return;
                    }
                };
            }
            let _ = tx.send(Ok(Bytes::from_static(b"]}"))).await;
        });
        let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
        Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
    }

    async fn watch(
        self: &Arc<Self>,
        rt: &Arc<ResourceType>,
        ns: Option<&str>,
        name: Option<&str>,
        q: &Query,
        accept: &str,
    ) -> Result<Response, ApiError> {
        let (labels, fields) = Self::selectors(rt, q)?;
        let name = name.map(str::to_string).or_else(|| fields.exact_name().map(str::to_string));
        let bookmarks = bool_param(q, "allowWatchBookmarks");
        let send_initial = q.get("sendInitialEvents").map(String::as_str);
        let rv = q.get("resourceVersion").map(String::as_str).unwrap_or_default();
        let timeout = q
            .get("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(1800));
        let mut initial = Vec::new();
        let mut initial_end_bookmark = false;
        let after = match (send_initial, rv) {
            (Some("true"), _) => {
                if q.get("resourceVersionMatch").map(String::as_str) != Some("NotOlderThan") {
                    return Err(ApiError::invalid(
                        "meta.k8s.io",
                        "ListOptions",
                        "",
                        vec![super::status::FieldError::forbidden(
                            "resourceVersionMatch",
                            "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                        )],
                    ));
                }
                if !bookmarks {
                    return Err(ApiError::invalid(
                        "meta.k8s.io",
                        "ListOptions",
                        "",
                        vec![super::status::FieldError::forbidden(
                            "allowWatchBookmarks",
                            "sendInitialEvents requires allowWatchBookmarks=true",
                        )],
                    ));
                }
                let rev = if rv.is_empty() {
                    self.storage.resolve(ReadAt::Latest).await?
                } else {
                    let want = parse_rv(rv)?;
                    self.wait_for_revision(want).await?;
                    self.storage.resolve(ReadAt::Local).await?
                };
                initial = self.initial_state(rt, ns, name.as_deref(), rev).await?;
                initial_end_bookmark = true;
                rev
            }
            (_, "" | "0") => {
                let at = if rv.is_empty() { ReadAt::Latest } else { ReadAt::Local };
                let rev = self.storage.resolve(at).await?;
                initial = self.initial_state(rt, ns, name.as_deref(), rev).await?;
                rev
            }
            (_, rv) => parse_rv(rv)?,
        };
        Ok(watch::respond(
            self.clone(),
            watch::WatchRequest {
                rt: rt.clone(),
                namespace: ns.map(str::to_string),
                name,
                labels,
                fields,
                after,
                initial,
                initial_end_bookmark,
                bookmarks,
                timeout,
                table: table::wants_table(accept)
                    .then(|| table::IncludeObject::parse(q.get("includeObject").map(String::as_str))),
            },
        ))
    }

    async fn initial_state(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: Option<&str>,
        rev: i64,
    ) -> Result<Vec<Stored>, ApiError> {
        if let Some(name) = name {
            return Ok(self.storage.get(&rt.key(ns, name), ReadAt::Exact(rev)).await?.into_iter().collect());
        }
        let prefix = rt.prefix(ns);
        Ok(self.collect(&prefix, prefix.as_bytes().to_vec(), rev, 0, &|_| true).await?.0)
    }

    fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
        if body.is_empty() {
            return Err(ApiError::bad_request("the body of the request was empty"));
        }
        serde_json::from_slice(body)
            .or_else(|_| serde_yaml::from_slice::<Value>(body))
            .map_err(|e| ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}")))
    }

    fn dry_run(q: &Query) -> Result<bool, ApiError> {
        match q.get("dryRun").map(String::as_str) {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "Invalid dry run value: {other:?}: supported values: \"All\""
            ))),
        }
    }

    /// Checks the namespace a new object (`name`) goes into exists and is
    /// not terminating (kube's NamespaceLifecycle admission).
    async fn check_namespace(&self, rt: &ResourceType, ns: Option<&str>, name: &str) -> Result<(), ApiError> {
        let Some(ns) = ns.filter(|_| rt.namespaced) else { return Ok(()) };
        let phase = match self.namespaces.lookup(ns) {
            Some(phase) => phase,
            // Not (yet) in the cache: the store decides.
            None => {
                let namespaces = self.registry.lookup("", "v1", "namespaces").ok_or_else(not_found_path)?;
                match self.storage.get(&namespaces.key(None, ns), ReadAt::Local).await? {
                    None => return Err(ApiError::not_found("", "namespaces", ns)),
                    Some(n) if n.object["status"]["phase"] == "Terminating" => Phase::Terminating,
                    Some(_) => Phase::Active,
                }
            }
        };
        match phase {
            Phase::Terminating => Err(ApiError::forbidden(format!(
                "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                rt.plural,
            ))),
            Phase::Active => Ok(()),
        }
    }

    /// Fills server-set metadata of a new object and validates it.
    fn prepare_new(rt: &ResourceType, ns: Option<&str>, obj: &mut Value) -> Result<(), ApiError> {
        let meta = obj["metadata"]
            .as_object_mut()
            .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
        if rt.namespaced {
            match (meta.get("namespace").and_then(Value::as_str), ns) {
                (None | Some(""), Some(ns)) => {
                    meta.insert("namespace".into(), json!(ns));
                }
                (Some(a), Some(b)) if a != b => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {}
            }
        } else {
            meta.remove("namespace");
        }
        let name = meta.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
        if name.is_empty()
            && let Some(gen_name) = meta.get("generateName").and_then(Value::as_str).filter(|g| !g.is_empty())
        {
            let prefix: String = gen_name.chars().take(58).collect();
            meta.insert("name".into(), json!(format!("{prefix}{}", objects::name_suffix())));
        }
        if meta.get("resourceVersion").and_then(Value::as_str).is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::internal("resourceVersion should not be set on objects to be created"));
        }
        meta.remove("resourceVersion");
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(objects::now_rfc3339()));
        meta.remove("deletionTimestamp");
        meta.remove("deletionGracePeriodSeconds");
        meta.remove("selfLink");
        // kube-apiserver's strategies track generation for kinds with a
        // spec the controllers act on (and for every custom resource).
        let tracks_generation = rt.custom.is_some()
            || (rt.has_subresource("status")
                && !(rt.group.is_empty() && matches!(rt.kind.as_str(), "Namespace" | "Node")))
            || rt.group == "apiextensions.k8s.io";
        if tracks_generation {
            meta.insert("generation".into(), json!(1));
        }
        // Status is the controllers' to write (nodes excepted, as kube).
        if rt.has_subresource("status") && !(rt.group.is_empty() && rt.kind == "Node") {
            obj.as_object_mut().map(|m| m.remove("status"));
        }
        objects::apply_defaults(rt, obj);
        Self::validate(rt, obj)
    }

    fn validate(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
        let mut errs = objects::validate(rt, obj);
        if let Some(custom) = &rt.custom
            && let Some(schema) = &custom.schema
        {
            super::crd::validate(schema, obj, &mut errs);
        }
        if errs.is_empty() {
            return Ok(());
        }
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        Err(ApiError::invalid(&rt.group, &rt.kind, name, errs))
    }

    async fn create(
        &self,
        rt: &Arc<ResourceType>,
        ns: Option<&str>,
        q: &Query,
        body: &[u8],
        _headers: &HeaderMap,
    ) -> Result<Response, ApiError> {
        if rt.namespaced && ns.is_none() {
            return Err(not_found_path());
        }
        let fv = FieldValidation::parse(q.get("fieldValidation").map(String::as_str))?;
        let (mut obj, warnings) = objects::decode_body(rt, Self::parse_body(body)?, fv)?;
        Self::prepare_new(rt, ns, &mut obj)?;
        let ns = obj["metadata"]["namespace"].as_str().map(str::to_string);
        let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
        self.check_namespace(rt, ns.as_deref(), &name).await?;
        super::hooks::before_create(self, rt, &mut obj).await?;
        super::managed::record_update(None, &mut obj, &manager_of(q), &rt.api_version(), None);
        if Self::dry_run(q)? {
            return Ok(with_warnings(json_response(StatusCode::CREATED, &obj), &warnings));
        }
        let key = rt.key(ns.as_deref(), &name);
        match self.storage.put_if(&key, &obj, 0).await {
            Ok(rev) => {
                super::storage::set_resource_version(&mut obj, rev);
                super::hooks::after_write(self, rt, &obj).await;
                Ok(with_warnings(json_response(StatusCode::CREATED, &obj), &warnings))
            }
            Err(WriteError::Mismatch(_)) => Err(ApiError::already_exists(&rt.group, &rt.plural, &name)),
            Err(WriteError::Api(e)) => Err(e),
        }
    }

    /// Carries what a client cannot change from `old` into `new`.
    fn carry_over(rt: &ResourceType, old: &Value, new: &mut Value, sub: Option<&str>) {
        if sub == Some("status") {
            // The status subresource changes only status.
            let status = new.get("status").cloned();
            let mut merged = old.clone();
            match status {
                Some(s) => merged["status"] = s,
                None => {
                    merged.as_object_mut().map(|m| m.remove("status"));
                }
            }
            *new = merged;
            return;
        }
        for f in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"]
        {
            match old["metadata"].get(f) {
                Some(v) => new["metadata"][f] = v.clone(),
                None => {
                    new["metadata"].as_object_mut().map(|m| m.remove(f));
                }
            }
        }
        if rt.has_subresource("status") {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    new.as_object_mut().map(|m| m.remove("status"));
                }
            }
        }
        if objects::spec_changed(old, new) && new["metadata"]["generation"].is_number() {
            let g = new["metadata"]["generation"].as_i64().unwrap_or(0);
            new["metadata"]["generation"] = json!(g + 1);
        }
    }

    /// Reads, changes (with `change`) and writes an object, retrying when
    /// another write got in between, unless the client pinned a
    /// resourceVersion (then that is a 409). kube's GuaranteedUpdate.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn guaranteed_update(
        &self,
        rt: &Arc<ResourceType>,
        ns: Option<&str>,
        name: &str,
        sub: Option<&str>,
        dry_run: bool,
        manager: Option<&str>,
        change: &Change<'_>,
    ) -> Result<(Value, bool), ApiError> {
        let key = rt.key(ns, name);
        let mut current = self.storage.get(&key, ReadAt::Latest).await?;
        for _ in 0..16 {
            let Some(new) = change(current.as_ref())? else {
                return Err(ApiError::not_found(&rt.group, &rt.plural, name));
            };
            let mut new = new;
            let created = current.is_none();
            let pinned =
                new["metadata"]["resourceVersion"].as_str().filter(|s| !s.is_empty()).map(str::to_string);
            if let Some(cur) = &current {
                if let Some(rv) = &pinned
                    && *rv != cur.mod_revision.to_string()
                {
                    return Err(ApiError::modified(&rt.group, &rt.plural, name));
                }
                Self::carry_over(rt, &cur.object, &mut new, sub);
                if new["metadata"]["name"] != cur.object["metadata"]["name"] {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({}) does not match the name on the URL ({name})",
                        new["metadata"]["name"].as_str().unwrap_or_default()
                    )));
                }
                objects::apply_defaults(rt, &mut new);
                Self::validate(rt, &new)?;
                super::hooks::before_update(self, rt, &cur.object, &mut new).await?;
                // Unchanged: no write, the same resourceVersion (as kube).
                let mut cmp = cur.object.clone();
                super::storage::set_resource_version(&mut cmp, 0);
                let mut cmp_new = new.clone();
                super::storage::set_resource_version(&mut cmp_new, 0);
                if cmp == cmp_new {
                    return Ok((cur.object.clone(), false));
                }
            } else {
                Self::prepare_new(rt, ns, &mut new)?;
                self.check_namespace(rt, ns, name).await?;
                super::hooks::before_create(self, rt, &mut new).await?;
            }
            if let Some(m) = manager {
                super::managed::record_update(
                    current.as_ref().map(|c| &c.object),
                    &mut new,
                    m,
                    &rt.api_version(),
                    sub,
                );
            }
            if dry_run {
                return Ok((new, created));
            }
            let expected = current.as_ref().map_or(0, |c| c.mod_revision);
            // A terminating object whose last finalizer went is deleted.
            let finalized = new["metadata"]["deletionTimestamp"].is_string()
                && new["metadata"]["finalizers"].as_array().is_none_or(Vec::is_empty);
            let result = if finalized && expected > 0 {
                self.storage.delete_if(&key, expected).await
            } else {
                self.storage.put_if(&key, &new, expected).await
            };
            match result {
                Ok(rev) => {
                    super::storage::set_resource_version(&mut new, rev);
                    super::hooks::after_write(self, rt, &new).await;
                    return Ok((new, created));
                }
                Err(WriteError::Mismatch(now)) => {
                    if pinned.is_some() {
                        return Err(ApiError::modified(&rt.group, &rt.plural, name));
                    }
                    current = now;
                }
                Err(WriteError::Api(e)) => return Err(e),
            }
        }
        Err(ApiError::conflict(&rt.group, &rt.plural, name, "too many concurrent updates; please try again"))
    }

    async fn update(
        &self,
        rt: &Arc<ResourceType>,
        ns: Option<&str>,
        name: &str,
        sub: Option<&str>,
        q: &Query,
        body: &[u8],
    ) -> Result<Response, ApiError> {
        let fv = FieldValidation::parse(q.get("fieldValidation").map(String::as_str))?;
        if sub == Some("scale") {
            let scale = Self::parse_body(body)?;
            let replicas = scale["spec"]["replicas"].clone();
            let pinned = scale["metadata"]["resourceVersion"].clone();
            let (obj, _) = self
                .guaranteed_update(
                    rt,
                    ns,
                    name,
                    Some("scale"),
                    Self::dry_run(q)?,
                    Some(&manager_of(q)),
                    &|cur| {
                        Ok(cur.map(|c| {
                            let mut o = c.object.clone();
                            o["spec"]["replicas"] = replicas.clone();
                            o["metadata"]["resourceVersion"] =
                                if pinned.is_string() { pinned.clone() } else { Value::Null };
                            o
                        }))
                    },
                )
                .await?;
            return Ok(json_response(StatusCode::OK, &scale_of(rt, &obj)));
        }
        let (obj, warnings) = objects::decode_body(rt, Self::parse_body(body)?, fv)?;
        if obj["metadata"]["name"].as_str() != Some(name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                obj["metadata"]["name"].as_str().unwrap_or_default()
            )));
        }
        if let (Some(a), Some(b)) = (obj["metadata"]["namespace"].as_str(), ns)
            && a != b
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let (out, created) = self
            .guaranteed_update(rt, ns, name, sub, Self::dry_run(q)?, Some(&manager_of(q)), &|cur| {
                let mut o = obj.clone();
                if rt.namespaced
                    && let Some(ns) = ns
                {
                    o["metadata"]["namespace"] = json!(ns);
                }
                Ok(cur.map(|_| o))
            })
            .await?;
        let code = if created { StatusCode::CREATED } else { StatusCode::OK };
        Ok(with_warnings(json_response(code, &out), &warnings))
    }

    #[allow(clippy::too_many_arguments)]
    async fn patch(
        &self,
        rt: &Arc<ResourceType>,
        ns: Option<&str>,
        name: &str,
        sub: Option<&str>,
        q: &Query,
        content_type: &str,
        body: &[u8],
    ) -> Result<Response, ApiError> {
        let kind = PatchType::from_content_type(content_type)?;
        let fv = FieldValidation::parse(q.get("fieldValidation").map(String::as_str))?;
        let dry_run = Self::dry_run(q)?;
        if kind == PatchType::Apply {
            return super::apply::server_side_apply(self, rt, ns, name, sub, q, body, fv, dry_run).await;
        }
        let warnings = std::sync::Mutex::new(Vec::new());
        let (out, _) = self
            .guaranteed_update(rt, ns, name, sub, dry_run, Some(&manager_of(q)), &|cur| {
                let Some(cur) = cur else { return Ok(None) };
                let mut base = cur.object.clone();
                // A patch that does not name a resourceVersion applies to
                // whatever is current.
                base["metadata"]["resourceVersion"] = Value::Null;
                let patched = patch::apply_patch(rt, kind, &base, body)?;
                let (mut obj, w) = objects::decode_body(rt, patched, fv)?;
                if obj["metadata"]["resourceVersion"].is_null() {
                    obj["metadata"].as_object_mut().map(|m| m.remove("resourceVersion"));
                }
                *warnings.lock().unwrap_or_else(|e| e.into_inner()) = w;
                Ok(Some(obj))
            })
            .await?;
        let w = warnings.into_inner().unwrap_or_default();
        if sub == Some("scale") {
            return Ok(json_response(StatusCode::OK, &scale_of(rt, &out)));
        }
        Ok(with_warnings(json_response(StatusCode::OK, &out), &w))
    }

    /// `pods/binding`: sets spec.nodeName once.
    async fn bind(
        &self,
        rt: &Arc<ResourceType>,
        ns: Option<&str>,
        name: &str,
        body: &[u8],
    ) -> Result<Response, ApiError> {
        let binding = Self::parse_body(body)?;
        let node = binding["target"]["name"].as_str().unwrap_or_default().to_string();
        if node.is_empty() {
            return Err(ApiError::invalid(
                "",
                "Binding",
                name,
                vec![super::status::FieldError::required("target.name")],
            ));
        }
        self.guaranteed_update(rt, ns, name, Some("binding"), false, None, &|cur| {
            let Some(cur) = cur else { return Ok(None) };
            if cur.object["metadata"]["deletionTimestamp"].is_string() {
                return Err(ApiError::conflict(
                    "",
                    "pods",
                    name,
                    "pod is being deleted, cannot be assigned to a host",
                ));
            }
            if let Some(bound) = cur.object["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
                return Err(ApiError::conflict(
                    "",
                    "pods",
                    name,
                    &format!("pod {name} is already assigned to node \"{bound}\""),
                ));
            }
            let mut o = cur.object.clone();
            o["spec"]["nodeName"] = json!(node);
            o["metadata"]["resourceVersion"] = Value::Null;
            let conds = o["status"]["conditions"].as_array().cloned().unwrap_or_default();
            let mut conds: Vec<Value> = conds.into_iter().filter(|c| c["type"] != "PodScheduled").collect();
            conds.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null,
                "lastTransitionTime": objects::now_rfc3339()}));
            o["status"]["conditions"] = json!(conds);
            Ok(Some(o))
        })
        .await?;
        Ok(json_response(
            StatusCode::CREATED,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        ))
    }

    fn delete_options(q: &Query, body: &[u8]) -> Result<Value, ApiError> {
        let mut opts = if body.is_empty() { json!({}) } else { Self::parse_body(body)? };
        if let Some(g) = q.get("gracePeriodSeconds") {
            opts["gracePeriodSeconds"] =
                json!(g.parse::<i64>().map_err(|_| ApiError::bad_request("invalid gracePeriodSeconds"))?);
        }
        if let Some(p) = q.get("propagationPolicy") {
            opts["propagationPolicy"] = json!(p);
        }
        if let Some(p) = &opts["propagationPolicy"].as_str()
            && !["Orphan", "Background", "Foreground"].contains(p)
        {
            return Err(ApiError::invalid(
                "meta.k8s.io",
                "DeleteOptions",
                "",
                vec![super::status::FieldError::not_supported(
                    "propagationPolicy",
                    &json!(p),
                    &["Foreground", "Background", "Orphan", "nil"],
                )],
            ));
        }
        Ok(opts)
    }

    async fn delete(
        &self,
        rt: &Arc<ResourceType>,
        ns: Option<&str>,
        name: &str,
        q: &Query,
        body: &[u8],
    ) -> Result<Response, ApiError> {
        let opts = Self::delete_options(q, body)?;
        let dry_run =
            Self::dry_run(q)? || opts["dryRun"].as_array().is_some_and(|a| a.iter().any(|v| v == "All"));
        let (obj, gone) = self.delete_object(rt, ns, name, &opts, dry_run).await?;
        if gone && rt.kind != "Pod" {
            let mut details = json!({"name": name, "kind": rt.plural, "uid": obj["metadata"]["uid"]});
            if !rt.group.is_empty() {
                details["group"] = json!(rt.group);
            }
            return Ok(json_response(
                StatusCode::OK,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
            ));
        }
        Ok(json_response(if gone { StatusCode::OK } else { StatusCode::ACCEPTED }, &obj))
    }

    /// Deletes one object, or marks it terminating when finalizers (or a
    /// grace period) hold it. Returns the object and whether it is gone.
    pub async fn delete_object(
        &self,
        rt: &Arc<ResourceType>,
        ns: Option<&str>,
        name: &str,
        opts: &Value,
        dry_run: bool,
    ) -> Result<(Value, bool), ApiError> {
        let key = rt.key(ns, name);
        for _ in 0..16 {
            let Some(cur) = self.storage.get(&key, ReadAt::Latest).await? else {
                return Err(ApiError::not_found(&rt.group, &rt.plural, name));
            };
            let pre = &opts["preconditions"];
            if let Some(uid) = pre["uid"].as_str()
                && cur.object["metadata"]["uid"].as_str() != Some(uid)
            {
                return Err(ApiError::conflict(
                    &rt.group,
                    &rt.plural,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        cur.object["metadata"]["uid"].as_str().unwrap_or_default()
                    ),
                ));
            }
            if let Some(rv) = pre["resourceVersion"].as_str()
                && rv != cur.mod_revision.to_string()
            {
                return Err(ApiError::conflict(
                    &rt.group,
                    &rt.plural,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        cur.mod_revision
                    ),
                ));
            }
            let mut obj = cur.object.clone();
            let policy = opts["propagationPolicy"].as_str();
            let mut finalizers: Vec<Value> =
                obj["metadata"]["finalizers"].as_array().cloned().unwrap_or_default();
            let terminating = obj["metadata"]["deletionTimestamp"].is_string();
            if !terminating {
                let add = match policy {
                    Some("Foreground") => Some("foregroundDeletion"),
                    Some("Orphan") => Some("orphan"),
                    _ => None,
                };
                if let Some(f) = add
                    && !finalizers.is_empty()
                    && !finalizers.contains(&json!(f))
                {
                    finalizers.push(json!(f));
                }
            }
            let grace = super::hooks::grace_period(rt, &obj, opts);
            let held = super::hooks::held(rt, &obj);
            if !finalizers.is_empty() || grace > 0 || held {
                if terminating {
                    if held && !dry_run {
                        // Deleting a terminating namespace again retries
                        // its finalization.
                        super::hooks::after_write(self, rt, &obj).await;
                    }
                    return Ok((obj, false));
                }
                {
                    let now = jiff::Timestamp::now();
                    let at = jiff::Timestamp::from_second(now.as_second() + grace).unwrap_or(now);
                    obj["metadata"]["deletionTimestamp"] = json!(at.to_string());
                    obj["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
                    obj["metadata"]["finalizers"] = json!(finalizers);
                    if obj["metadata"]["finalizers"].as_array().is_some_and(Vec::is_empty) {
                        obj["metadata"].as_object_mut().map(|m| m.remove("finalizers"));
                    }
                    if let Some(g) = obj["metadata"]["generation"].as_i64() {
                        obj["metadata"]["generation"] = json!(g + 1);
                    }
                    super::hooks::on_terminating(rt, &mut obj);
                    if dry_run {
                        return Ok((obj, false));
                    }
                    match self.storage.put_if(&key, &obj, cur.mod_revision).await {
                        Ok(rev) => {
                            super::storage::set_resource_version(&mut obj, rev);
                            super::hooks::after_write(self, rt, &obj).await;
                            return Ok((obj, false));
                        }
                        Err(WriteError::Mismatch(_)) => continue,
                        Err(WriteError::Api(e)) => return Err(e),
                    }
                }
            }
            if dry_run {
                return Ok((obj, true));
            }
            match self.storage.delete_if(&key, cur.mod_revision).await {
                Ok(_) => {
                    super::hooks::after_delete(self, rt, &obj).await;
                    return Ok((obj, true));
                }
                Err(WriteError::Mismatch(_)) => continue,
                Err(WriteError::Api(e)) => return Err(e),
            }
        }
        Err(ApiError::conflict(&rt.group, &rt.plural, name, "too many concurrent updates; please try again"))
    }

    async fn delete_collection(
        &self,
        rt: &Arc<ResourceType>,
        ns: Option<&str>,
        q: &Query,
        body: &[u8],
    ) -> Result<Response, ApiError> {
        let (labels, fields) = Self::selectors(rt, q)?;
        let opts = Self::delete_options(q, body)?;
        let dry_run = Self::dry_run(q)?;
        let prefix = rt.prefix(ns);
        let rev = self.storage.resolve(ReadAt::Latest).await?;
        let keep = move |o: &Value| labels.matches(o) && fields.matches(o);
        let (items, _, _) = self.collect(&prefix, prefix.as_bytes().to_vec(), rev, 0, &keep).await?;
        let mut out = Vec::new();
        for s in items {
            let name = s.object["metadata"]["name"].as_str().unwrap_or_default().to_string();
            let item_ns = s.object["metadata"]["namespace"].as_str().map(str::to_string);
            match self.delete_object(rt, item_ns.as_deref(), &name, &opts, dry_run).await {
                Ok((obj, _)) => out.push(obj),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let rev = self.storage.ctx.backend.store().current_revision();
        Ok(json_response(
            StatusCode::OK,
            &json!({"kind": rt.list_kind(), "apiVersion": rt.api_version(),
                "metadata": {"resourceVersion": rev.to_string()}, "items": out}),
        ))
    }
}

/// The autoscaling/v1 Scale of a scalable object.
fn scale_of(rt: &ResourceType, obj: &Value) -> Value {
    let selector = obj["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": obj["metadata"]["name"],
            "namespace": obj["metadata"]["namespace"],
            "uid": obj["metadata"]["uid"],
            "resourceVersion": obj["metadata"]["resourceVersion"],
            "creationTimestamp": obj["metadata"]["creationTimestamp"],
        },
        "spec": {"replicas": obj["spec"]["replicas"]},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
    .as_object()
    .cloned()
    .map(Value::Object)
    .unwrap_or_else(|| json!({"kind": rt.kind}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_group_namespace_resource_and_subresource() {
        let t = parse_path("/api/v1/namespaces/default/pods/web/status").unwrap();
        assert_eq!(
            (
                t.group.as_str(),
                t.namespace.as_deref(),
                t.resource.as_str(),
                t.name.as_deref(),
                t.subresource.as_deref()
            ),
            ("", Some("default"), "pods", Some("web"), Some("status"))
        );
        let t = parse_path("/api/v1/namespaces/kube-system").unwrap();
        assert_eq!(
            (t.namespace, t.resource.as_str(), t.name.as_deref()),
            (None, "namespaces", Some("kube-system"))
        );
        let t = parse_path("/api/v1/namespaces/x/status").unwrap();
        assert_eq!((t.resource.as_str(), t.subresource.as_deref()), ("namespaces", Some("status")));
        let t = parse_path("/apis/apps/v1/deployments").unwrap();
        assert_eq!((t.group.as_str(), t.namespace, t.resource.as_str()), ("apps", None, "deployments"));
        assert!(parse_path("/apis/apps/v1").is_none());
        assert!(parse_path("/api").is_none());
    }

    #[test]
    fn continue_tokens_round_trip() {
        let token = encode_continue(42, b"/registry/pods/default/b\0", "/registry/pods/");
        assert_eq!(
            decode_continue(&token, "/registry/pods/").unwrap(),
            (42, b"/registry/pods/default/b\0".to_vec())
        );
        assert!(decode_continue("garbage", "/registry/pods/").is_err());
    }
}
