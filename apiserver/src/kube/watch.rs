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

    /// The watch event one MVCC event becomes, if any.
    fn translate(&self, ev: &MvccEvent) -> Result<Option<(&'static str, Value)>, ApiError> {
        let Some(kv) = &ev.kv else { return Ok(None) };
        let prev = ev.prev_kv.as_ref().map(decode).transpose()?;
        let was = prev.as_ref().is_some_and(|p| self.selected(&p.object));
        if ev.r#type == EventType::Delete as i32 {
            let Some(mut prev) = prev else { return Ok(None) };
            if !was {
                return Ok(None);
            }
            super::storage::set_resource_version(&mut prev.object, kv.mod_revision);
            return Ok(Some(("DELETED", prev.object)));
        }
        let now = decode(kv)?;
        let is = self.selected(&now.object);
        Ok(match (was, is) {
            (_, true) if prev.is_none() || !was => Some(("ADDED", now.object)),
            (true, true) => Some(("MODIFIED", now.object)),
            (true, false) => Some(("DELETED", now.object)),
            _ => None,
        })
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
                    match req.translate(ev) {
                        Ok(Some((kind, obj))) => send(&tx, encode(kind, &obj)).await?,
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
