//! REST watches: a hub watch on the resource's prefix (with `prev_kv`),
//! turned into kube-apiserver's newline-delimited JSON events.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use keelson_proto::etcdserverpb::WatchCreateRequest;
use keelson_proto::mvccpb::{Event as MvccEvent, event::EventType};
use serde_json::{Value, json};

use super::handlers::KubeApi;
use super::resources::ResourceType;
use super::selectors::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::storage::{Stored, decode, prefix_end};
use crate::backend::Backend;

/// What one REST watch asked for.
pub struct WatchRequest {
    pub rt: Arc<ResourceType>,
    pub namespace: Option<String>,
    /// Only this object (a watch on a single name).
    pub name: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    /// Events after this revision are sent.
    pub after: i64,
    /// Objects sent first as ADDED (the initial state).
    pub initial: Vec<Stored>,
    /// Send the `k8s.io/initial-events-end` bookmark after `initial`.
    pub initial_end_bookmark: bool,
    pub bookmarks: bool,
    pub timeout: Duration,
    /// Each event as a Table row (`as=Table`), its object as `includeObject` asks.
    pub table: Option<super::table::IncludeObject>,
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({ "type": kind, "object": object })).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

fn bookmark(rt: &ResourceType, rev: i64, initial_end: bool) -> Bytes {
    let mut meta = json!({ "resourceVersion": rev.to_string() });
    if initial_end {
        meta["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    line("BOOKMARK", &json!({ "kind": rt.kind, "apiVersion": rt.api_version(), "metadata": meta }))
}

impl WatchRequest {
    fn selected(&self, object: &Value) -> bool {
        if let Some(name) = &self.name
            && object["metadata"]["name"].as_str() != Some(name.as_str())
        {
            return false;
        }
        self.labels.matches(object) && self.fields.matches(object)
    }

    /// The watch event one MVCC event becomes, if any: its type, the
    /// object, and the (key, revision) the shared encodings are keyed by.
    fn translate(&self, cache: &EventCache, ev: &MvccEvent) -> Result<Option<Translated>, ApiError> {
        let Some(kv) = &ev.kv else { return Ok(None) };
        let prev = ev.prev_kv.as_ref().map(|p| cache.object(p, None)).transpose()?;
        let was = prev.as_ref().is_some_and(|p| self.selected(p));
        if ev.r#type == EventType::Delete as i32 {
            if !was {
                return Ok(None);
            }
            // The last state, at the revision of the delete.
            let gone = cache.object(ev.prev_kv.as_ref().expect("checked above"), Some(kv.mod_revision))?;
            return Ok(Some(("DELETED", gone, kv.mod_revision)));
        }
        let now = cache.object(kv, None)?;
        let is = self.selected(&now);
        Ok(match (was, is) {
            (false, true) => Some(("ADDED", now, kv.mod_revision)),
            (true, true) => Some(("MODIFIED", now, kv.mod_revision)),
            (true, false) => Some(("DELETED", now, kv.mod_revision)),
            _ => None,
        })
    }
}

/// A watch event: its type, its object, the revision it is keyed by.
type Translated = (&'static str, Arc<Value>, i64);

/// Decoded objects and encoded event lines of recent revisions, shared by
/// every REST watch: an event is decoded and encoded once however many
/// watchers want it (the cache keeps the last [`EventCache::CAPACITY`]).
#[derive(Default)]
pub struct EventCache {
    inner: parking_lot::Mutex<CacheInner>,
}

type CacheKey = (Bytes, i64);

#[derive(Default)]
struct CacheInner {
    objects: std::collections::HashMap<CacheKey, Arc<Value>>,
    lines: std::collections::HashMap<(Bytes, i64, &'static str), Bytes>,
    order: std::collections::VecDeque<CacheKey>,
}

impl EventCache {
    pub const CAPACITY: usize = 8192;

    /// `kv` decoded, its resourceVersion set to `at` (default: its own
    /// mod_revision).
    fn object(&self, kv: &keelson_proto::mvccpb::KeyValue, at: Option<i64>) -> Result<Arc<Value>, ApiError> {
        let rev = at.unwrap_or(kv.mod_revision);
        // A delete's object is keyed by the negated revision: the key has
        // no put at that revision, but keep the two apart anyway.
        let id = (kv.key.clone(), if at.is_some() { -rev } else { rev });
        if let Some(o) = self.inner.lock().objects.get(&id) {
            return Ok(o.clone());
        }
        let mut stored = decode(kv)?;
        if at.is_some() {
            super::storage::set_resource_version(&mut stored.object, rev);
        }
        let obj = Arc::new(stored.object);
        let mut inner = self.inner.lock();
        if inner.objects.insert(id.clone(), obj.clone()).is_none() {
            inner.order.push_back(id);
            while inner.order.len() > Self::CAPACITY {
                if let Some((k, r)) = inner.order.pop_front() {
                    inner.objects.remove(&(k.clone(), r));
                    for t in ["ADDED", "MODIFIED", "DELETED"] {
                        inner.lines.remove(&(k.clone(), r.abs(), t));
                    }
                }
            }
        }
        Ok(obj)
    }

    /// The JSON line of an event, encoded once.
    fn line(&self, key: &Bytes, rev: i64, kind: &'static str, obj: &Value) -> Bytes {
        let id = (key.clone(), rev, kind);
        if let Some(l) = self.inner.lock().lines.get(&id) {
            return l.clone();
        }
        let l = line(kind, obj);
        self.inner.lock().lines.insert(id, l.clone());
        l
    }
}

/// Streams the watch as the response body (HTTP 200, chunked).
pub fn respond<B: Backend>(api: Arc<KubeApi<B>>, req: WatchRequest) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let _ = run(api, req, tx).await;
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    ([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-cache, private")], body)
        .into_response()
}

type Tx = tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>;

async fn send(tx: &Tx, b: Bytes) -> Result<(), ()> {
    tx.send(Ok(b)).await.map_err(|_| ())
}

async fn run<B: Backend>(api: Arc<KubeApi<B>>, req: WatchRequest, tx: Tx) -> Result<(), ()> {
    let encode = |kind: &str, obj: &Value| -> Bytes {
        if let Some(include) = req.table {
            line(kind, &super::table::event_table_with(&req.rt, obj, include))
        } else {
            line(kind, obj)
        }
    };
    for s in &req.initial {
        if req.selected(&s.object) {
            send(&tx, encode("ADDED", &s.object)).await?;
        }
    }
    if req.initial_end_bookmark {
        send(&tx, bookmark(&req.rt, req.after, true)).await?;
    }
    let prefix = match &req.name {
        Some(n) => req.rt.key(req.namespace.as_deref(), n),
        None => req.rt.prefix(req.namespace.as_deref()),
    };
    let range_end = if req.name.is_some() { vec![] } else { prefix_end(prefix.as_bytes()) };
    let (stream, mut rx) = api.storage.ctx.backend.hub().new_stream();
    let create = WatchCreateRequest {
        key: prefix.into_bytes().into(),
        range_end: range_end.into(),
        start_revision: req.after + 1,
        prev_kv: true,
        progress_notify: false,
        ..Default::default()
    };
    if stream.watch(&create).is_err() {
        return Ok(());
    }
    let deadline = tokio::time::sleep(req.timeout);
    tokio::pin!(deadline);
    let mut ticks = tokio::time::interval(api.bookmark_interval);
    ticks.tick().await;
    let mut last_rev = req.after;
    loop {
        tokio::select! {
            _ = &mut deadline => return Ok(()),
            _ = tx.closed() => return Ok(()),
            _ = ticks.tick(), if req.bookmarks => stream.request_progress(),
            resp = rx.recv() => {
                let Some(resp) = resp else { return Ok(()) };
                if resp.compact_revision > 0 {
                    let err = ApiError::expired(format!(
                        "too old resource version: {} ({})", req.after, resp.compact_revision
                    ));
                    let _ = send(&tx, line("ERROR", &err.to_status())).await;
                    return Ok(());
                }
                if resp.canceled {
                    let err = ApiError::internal(resp.cancel_reason.clone());
                    let _ = send(&tx, line("ERROR", &err.to_status())).await;
                    return Ok(());
                }
                if resp.events.is_empty() {
                    let rev = resp.header.as_ref().map_or(0, |h| h.revision);
                    if req.bookmarks && !resp.created && rev >= last_rev && rev > 0 {
                        last_rev = rev;
                        send(&tx, bookmark(&req.rt, rev, false)).await?;
                    }
                    continue;
                }
                for ev in &resp.events {
                    match req.translate(&api.events, ev) {
                        Ok(Some((kind, obj, rev))) => {
                            let bytes = match req.table {
                                Some(_) => encode(kind, &obj),
                                None => {
                                    let key = ev.kv.as_ref().map(|kv| kv.key.clone()).unwrap_or_default();
                                    api.events.line(&key, rev, kind, &obj)
                                }
                            };
                            send(&tx, bytes).await?
                        }
                        Ok(None) => {}
                        Err(e) => {
                            let _ = send(&tx, line("ERROR", &e.to_status())).await;
                            return Ok(());
                        }
                    }
                    if let Some(kv) = &ev.kv {
                        last_rev = last_rev.max(kv.mod_revision);
                    }
                }
            }
        }
    }
}
