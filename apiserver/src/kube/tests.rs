//! Router tests: the REST semantics, in memory (`oneshot`) over the fake
//! backend's real MVCC store and watch hub.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::handlers::{Identity, KubeApi};
use super::resources::Registry;
use super::storage::Storage;
use crate::backend::Backend;
use crate::context::Ctx;
use crate::testing::FakeBackend;

struct Api {
    router: Router,
    backend: Arc<FakeBackend>,
}

async fn api() -> Api {
    let backend = FakeBackend::new();
    let ctx = Ctx::new(backend.clone(), crate::GrpcConfig::default());
    let mut api = KubeApi::new(Storage::new(ctx), Arc::new(Registry::default()));
    api.bookmark_interval = std::time::Duration::from_millis(200);
    api.list_batch = 3;
    let api = Arc::new(api);
    super::hooks::bootstrap(&api).await.unwrap();
    Api { router: super::router(api), backend }
}

fn admin() -> Identity {
    Identity { user: "admin".into(), groups: vec!["system:masters".into()] }
}

impl Api {
    async fn send(&self, method: &str, uri: &str, content_type: &str, body: Value) -> (StatusCode, Value) {
        let body = if body.is_null() { Body::empty() } else { Body::from(body.to_string()) };
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", content_type)
            .body(body)
            .unwrap();
        req.extensions_mut().insert(admin());
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        let v = serde_json::from_slice(&bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)));
        (status, v)
    }

    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.send("GET", uri, "application/json", Value::Null).await
    }

    async fn post(&self, uri: &str, body: Value) -> (StatusCode, Value) {
        self.send("POST", uri, "application/json", body).await
    }

    async fn put(&self, uri: &str, body: Value) -> (StatusCode, Value) {
        self.send("PUT", uri, "application/json", body).await
    }

    async fn patch(&self, uri: &str, ct: &str, body: Value) -> (StatusCode, Value) {
        self.send("PATCH", uri, ct, body).await
    }

    async fn delete(&self, uri: &str) -> (StatusCode, Value) {
        self.send("DELETE", uri, "application/json", Value::Null).await
    }

    /// Reads a watch response's lines until `n` events or `timeout`.
    async fn watch(&self, uri: &str, n: usize) -> (StatusCode, Vec<Value>) {
        use futures::StreamExt;
        let mut req = Request::builder().uri(uri).body(Body::empty()).unwrap();
        req.extensions_mut().insert(admin());
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let mut stream = resp.into_body().into_data_stream();
        let mut buf = Vec::new();
        let mut events = Vec::new();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while events.len() < n {
            let next = tokio::time::timeout_at(deadline, stream.next()).await;
            let Ok(Some(Ok(chunk))) = next else { break };
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                events.push(serde_json::from_slice(&line).unwrap());
            }
        }
        (status, events)
    }
}

fn cm(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_get_and_duplicate() {
    let a = api().await;
    let (s, created) = a.post(CMS, cm("one", json!({}))).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert_eq!(created["metadata"]["namespace"], "default");
    assert!(created["metadata"]["uid"].is_string());
    assert!(created["metadata"]["creationTimestamp"].is_string());
    let rv = created["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let (s, got) = a.get(&format!("{CMS}/one")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got["metadata"]["resourceVersion"], rv.as_str());
    let (s, err) = a.post(CMS, cm("one", json!({}))).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(err["reason"], "AlreadyExists");
    assert_eq!(err["message"], "configmaps \"one\" already exists");
    let (s, err) = a.get(&format!("{CMS}/nope")).await;
    assert_eq!((s, err["reason"].as_str()), (StatusCode::NOT_FOUND, Some("NotFound")));
    assert_eq!(err["message"], "configmaps \"nope\" not found");
    // The stored value is the served JSON under kube-apiserver's key.
    let store = a.backend.store();
    let kv = store.kv_at(b"/registry/configmaps/default/one", store.current_revision()).unwrap().unwrap();
    let stored: Value = serde_json::from_slice(&kv.value).unwrap();
    assert_eq!(stored["data"]["k"], "v");
    assert!(stored["metadata"].get("resourceVersion").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_namespace_and_bad_names_are_refused() {
    let a = api().await;
    let (s, err) = a.post("/api/v1/namespaces/ghost/configmaps", cm("x", json!({}))).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{err}");
    assert_eq!(err["message"], "namespaces \"ghost\" not found");
    let (s, err) = a.post(CMS, cm("Bad_Name", json!({}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["reason"], "Invalid");
    assert_eq!(err["details"]["causes"][0]["field"], "metadata.name");
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}});
    let (s, err) = a.post("/api/v1/namespaces/default/pods", pod).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["message"], "Pod \"p\" is invalid: spec.containers[0].image: Required value");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_resource_version_conflicts() {
    let a = api().await;
    let (_, created) = a.post(CMS, cm("c", json!({}))).await;
    let mut first = created.clone();
    first["data"]["k"] = json!("v2");
    let (s, updated) = a.put(&format!("{CMS}/c"), first).await;
    assert_eq!(s, StatusCode::OK, "{updated}");
    let mut stale = created.clone();
    stale["data"]["k"] = json!("v3");
    let (s, err) = a.put(&format!("{CMS}/c"), stale).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(err["reason"], "Conflict");
    assert_eq!(
        err["message"],
        "Operation cannot be fulfilled on configmaps \"c\": the object has been modified; please apply your changes to the latest version and try again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_share_one_snapshot() {
    let a = api().await;
    for i in 0..7 {
        a.post(CMS, cm(&format!("cm{i}"), json!({"i": i.to_string()}))).await;
    }
    let (s, page1) = a.get(&format!("{CMS}?limit=3")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(page1["items"].as_array().unwrap().len(), 3);
    assert_eq!(page1["metadata"]["remainingItemCount"], 4);
    let token = page1["metadata"]["continue"].as_str().unwrap().to_string();
    // Written after the first page: not in the next pages.
    a.post(CMS, cm("cm35", json!({}))).await;
    let (_, page2) = a.get(&format!("{CMS}?limit=3&continue={token}")).await;
    let names: Vec<&str> =
        page2["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["cm3", "cm4", "cm5"]);
    assert_eq!(page2["metadata"]["resourceVersion"], page1["metadata"]["resourceVersion"]);
    let token = page2["metadata"]["continue"].as_str().unwrap().to_string();
    let (_, page3) = a.get(&format!("{CMS}?limit=3&continue={token}")).await;
    assert_eq!(page3["items"].as_array().unwrap().len(), 1);
    assert!(page3["metadata"].get("continue").is_none());
    // Unlimited lists stream every item (the batch size is 3 here).
    let (_, all) = a.get(CMS).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 8);
    assert_eq!(all["kind"], "ConfigMapList");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors_filter_lists() {
    let a = api().await;
    a.post(CMS, cm("a", json!({"app": "web", "tier": "front"}))).await;
    a.post(CMS, cm("b", json!({"app": "db"}))).await;
    a.post(CMS, cm("c", json!({}))).await;
    let names = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, l) = a.get(&format!("{CMS}?labelSelector=app%20in%20(web,db)")).await;
    assert_eq!(names(&l), vec!["a", "b"]);
    let (_, l) = a.get(&format!("{CMS}?labelSelector=!app")).await;
    assert_eq!(names(&l), vec!["c"]);
    let (_, l) = a.get(&format!("{CMS}?labelSelector=app!=web&limit=1")).await;
    assert_eq!(names(&l), vec!["b"]);
    let (_, l) = a.get(&format!("{CMS}?fieldSelector=metadata.name=b")).await;
    assert_eq!(names(&l), vec!["b"]);
    let (s, err) = a.get(&format!("{CMS}?fieldSelector=spec.nodeName=x")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(err["message"], "field label not supported: spec.nodeName");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_send_events_after_the_revision_and_410_when_compacted() {
    let a = api().await;
    let (_, first) = a.post(CMS, cm("w0", json!({"app": "x"}))).await;
    let rv = first["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let router = a.router.clone();
    let a2 = Api { router, backend: a.backend.clone() };
    let watcher = tokio::spawn(async move {
        a2.watch(&format!("{CMS}?watch=true&resourceVersion={rv}&labelSelector=app%3Dx"), 3).await
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    a.post(CMS, cm("w1", json!({"app": "x"}))).await;
    a.post(CMS, cm("other", json!({"app": "y"}))).await;
    a.patch(
        &format!("{CMS}/w1"),
        "application/merge-patch+json",
        json!({"metadata": {"labels": {"app": "z"}}}),
    )
    .await;
    a.delete(&format!("{CMS}/w0")).await;
    let (s, events) = watcher.await.unwrap();
    assert_eq!(s, StatusCode::OK);
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e["type"].as_str().unwrap(), e["object"]["metadata"]["name"].as_str().unwrap()))
        .collect();
    // w1 stops matching: DELETED; "other" never matched.
    assert_eq!(kinds, vec![("ADDED", "w1"), ("DELETED", "w1"), ("DELETED", "w0")]);
    // Compact, then watch from before it: an ERROR event with 410 on a 200.
    let rev = a.backend.store().current_revision();
    let compact = keelson_proto::etcdserverpb::CompactionRequest { revision: rev, physical: true };
    let req = keelson_proto::keelsonraftpb::InternalRequest {
        request: Some(keelson_proto::keelsonraftpb::internal_request::Request::Compaction(compact)),
    };
    a.backend.propose(req).await.unwrap();
    let (s, events) = a.watch(&format!("{CMS}?watch=true&resourceVersion=2"), 1).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(events[0]["type"], "ERROR");
    assert_eq!(events[0]["object"]["code"], 410);
    assert_eq!(events[0]["object"]["reason"], "Expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_events_end_with_a_bookmark() {
    let a = api().await;
    a.post(CMS, cm("i0", json!({}))).await;
    let (_, events) = a
        .watch(&format!("{CMS}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"), 2)
        .await;
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[1]["type"], "BOOKMARK");
    assert_eq!(events[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patches_of_every_kind() {
    let a = api().await;
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": {"metadata": {"labels": {"app": "d"}},
        "spec": {"containers": [{"name": "a", "image": "nginx:1"}, {"name": "b", "image": "redis:1"}]}}}});
    let url = "/apis/apps/v1/namespaces/default/deployments";
    let (s, created) = a.post(url, deploy).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert_eq!(created["spec"]["replicas"], 1);
    assert_eq!(created["metadata"]["generation"], 1);
    let (s, p) = a
        .patch(
            &format!("{url}/d"),
            "application/strategic-merge-patch+json",
            json!({"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "redis:2"}]}}}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    let images: Vec<&str> = p["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["image"].as_str().unwrap())
        .collect();
    assert_eq!(images, vec!["nginx:1", "redis:2"]);
    assert_eq!(p["metadata"]["generation"], 2);
    let (_, p) =
        a.patch(&format!("{url}/d"), "application/merge-patch+json", json!({"spec": {"replicas": 3}})).await;
    assert_eq!(p["spec"]["replicas"], 3);
    let (_, p) = a
        .patch(
            &format!("{url}/d"),
            "application/json-patch+json",
            json!([{"op": "replace", "path": "/spec/replicas", "value": 5}]),
        )
        .await;
    assert_eq!(p["spec"]["replicas"], 5);
    let (s, _) = a.patch(&format!("{url}/d"), "text/plain", json!({})).await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Scale subresource.
    let (_, scale) = a.get(&format!("{url}/d/scale")).await;
    assert_eq!((scale["kind"].as_str(), scale["spec"]["replicas"].as_i64()), (Some("Scale"), Some(5)));
    // Status ignores spec changes.
    let mut st = p.clone();
    st["spec"]["replicas"] = json!(9);
    st["status"] = json!({"replicas": 2});
    let (s, after) = a.put(&format!("{url}/d/status"), st).await;
    assert_eq!(s, StatusCode::OK, "{after}");
    assert_eq!(
        (after["spec"]["replicas"].as_i64(), after["status"]["replicas"].as_i64()),
        (Some(5), Some(2))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalizers_hold_a_delete_until_removed() {
    let a = api().await;
    let mut obj = cm("f", json!({}));
    obj["metadata"]["finalizers"] = json!(["example.com/hold"]);
    a.post(CMS, obj).await;
    let (s, held) = a.delete(&format!("{CMS}/f")).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{held}");
    assert!(held["metadata"]["deletionTimestamp"].is_string());
    let (s, _) = a.get(&format!("{CMS}/f")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = a
        .patch(&format!("{CMS}/f"), "application/merge-patch+json", json!({"metadata": {"finalizers": null}}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = a.get(&format!("{CMS}/f")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_sets_the_node_once() {
    let a = api().await;
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
    let pods = "/api/v1/namespaces/default/pods";
    a.post(pods, pod).await;
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": "n1"}});
    let (s, _) = a.post(&format!("{pods}/p/binding"), binding.clone()).await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, got) = a.get(&format!("{pods}/p")).await;
    assert_eq!(got["spec"]["nodeName"], "n1");
    let (s, err) = a.post(&format!("{pods}/p/binding"), binding).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(
        err["message"],
        "Operation cannot be fulfilled on pods \"p\": pod p is already assigned to node \"n1\""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_name_and_anonymous_requests() {
    let a = api().await;
    let (s, obj) = a.post(CMS, json!({"metadata": {"generateName": "gen-"}, "data": {}})).await;
    assert_eq!(s, StatusCode::CREATED, "{obj}");
    let name = obj["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
    let req = Request::builder().uri(CMS).body(Body::empty()).unwrap();
    let resp = a.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let req = Request::builder().uri("/healthz").body(Body::empty()).unwrap();
    assert_eq!(a.router.clone().oneshot(req).await.unwrap().status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_owns_fields_and_conflicts() {
    let a = api().await;
    let url = "/apis/apps/v1/namespaces/default/deployments/sa";
    let cfg = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "sa"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "sa"}}, "template": {"metadata": {"labels": {"app": "sa"}},
        "spec": {"containers": [{"name": "a", "image": "nginx"}]}}}});
    let (s, obj) =
        a.patch(&format!("{url}?fieldManager=alice"), "application/apply-patch+yaml", cfg.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{obj}");
    assert_eq!(obj["metadata"]["managedFields"][0]["manager"], "alice");
    let mut bob = cfg.clone();
    bob["spec"]["replicas"] = json!(5);
    let (s, err) =
        a.patch(&format!("{url}?fieldManager=bob"), "application/apply-patch+yaml", bob.clone()).await;
    assert_eq!(s, StatusCode::CONFLICT, "{err}");
    assert_eq!(err["message"], "Apply failed with 1 conflict: conflict with \"alice\": .spec.replicas");
    let (s, obj) =
        a.patch(&format!("{url}?fieldManager=bob&force=true"), "application/apply-patch+yaml", bob).await;
    assert_eq!(s, StatusCode::OK, "{obj}");
    assert_eq!(obj["spec"]["replicas"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_resources_are_served_once_defined() {
    let a = api().await;
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wg"]},
            "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}}}}]}});
    let (s, out) = a.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd).await;
    assert_eq!(s, StatusCode::CREATED, "{out}");
    let url = "/apis/example.com/v1/namespaces/default/widgets";
    let w = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 3, "junk": 1}});
    let (s, out) = a.post(url, w).await;
    assert_eq!(s, StatusCode::CREATED, "{out}");
    assert!(out["spec"].get("junk").is_none(), "pruned: {out}");
    let bad = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "b"}, "spec": {"size": "big"}});
    let (s, _) = a.post(url, bad).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, list) = a.get(url).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let (_, disc) = a.get("/apis/example.com/v1").await;
    assert_eq!(disc["resources"][0]["name"], "widgets");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_deletes_its_contents() {
    let a = api().await;
    let (s, _) = a.post("/api/v1/namespaces", json!({"metadata": {"name": "tmp"}})).await;
    assert_eq!(s, StatusCode::CREATED);
    a.post("/api/v1/namespaces/tmp/configmaps", cm("x", json!({}))).await;
    let (s, ns) = a.delete("/api/v1/namespaces/tmp").await;
    assert!(s.is_success(), "{ns}");
    let (s, _) = a.get("/api/v1/namespaces/tmp/configmaps/x").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = a.get("/api/v1/namespaces/tmp").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_subject_review_names_the_certificate_user() {
    let a = api().await;
    let (s, r) = a
        .post(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    assert_eq!(r["status"]["userInfo"]["username"], "admin");
    assert_eq!(r["status"]["userInfo"]["groups"], json!(["system:masters", "system:authenticated"]));
}

/// NamespaceLifecycle through the namespace cache (as a member runs it):
/// a terminating namespace refuses new content with kube's 403, and a
/// namespace created a moment ago is found even before the cache has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminating_namespace_refuses_new_content() {
    let backend = FakeBackend::new();
    let ctx = Ctx::new(backend.clone(), crate::GrpcConfig::default());
    let api = Arc::new(KubeApi::new(Storage::new(ctx), Arc::new(Registry::default())));
    super::hooks::bootstrap(&api).await.unwrap();
    super::nscache::spawn(api.clone());
    let a = Api { router: super::router(api.clone()), backend };
    let (s, _) = a
        .post("/api/v1/namespaces", json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, err) = a.post("/api/v1/namespaces/held/configmaps", cm("x", json!({}))).await;
    assert_eq!(s, StatusCode::CREATED, "{err}");
    let (s, ns) = a.delete("/api/v1/namespaces/held").await;
    assert!(s.is_success(), "{ns}");
    let (_, ns) = a.get("/api/v1/namespaces/held").await;
    assert_eq!(ns["status"]["phase"], "Terminating", "{ns}");
    // The cache follows the hub: wait until it has seen the change.
    for _ in 0..100 {
        if api.namespaces.lookup("held") == Some(super::nscache::Phase::Terminating) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(api.namespaces.lookup("held"), Some(super::nscache::Phase::Terminating));
    let (s, err) = a.post("/api/v1/namespaces/held/configmaps", cm("y", json!({}))).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{err}");
    assert_eq!(
        err["message"],
        "configmaps \"y\" is forbidden: unable to create new content in namespace held because it is being terminated"
    );
    let (s, _) = a
        .patch(
            "/api/v1/namespaces/held",
            "application/merge-patch+json",
            json!({"metadata": {"finalizers": null}}),
        )
        .await;
    assert!(s.is_success());
    let (s, _) = a.get("/api/v1/namespaces/held").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    for _ in 0..100 {
        if api.namespaces.lookup("held").is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (s, _) = a.post("/api/v1/namespaces/held/configmaps", cm("z", json!({}))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // A namespace just created is found whether or not the cache has it.
    let (s, _) = a.post("/api/v1/namespaces", json!({"metadata": {"name": "fresh"}})).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, err) = a.post("/api/v1/namespaces/fresh/configmaps", cm("x", json!({}))).await;
    assert_eq!(s, StatusCode::CREATED, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregated_discovery_lists_groups_with_short_names() {
    let a = api().await;
    let mut req = Request::builder()
        .uri("/apis")
        .header(
            "accept",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
        )
        .body(Body::empty())
        .unwrap();
    req.extensions_mut().insert(admin());
    let resp = a.router.clone().oneshot(req).await.unwrap();
    assert_eq!(
        resp.headers()["content-type"],
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    );
    let v: Value =
        serde_json::from_slice(&axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap()).unwrap();
    let apps = v["items"].as_array().unwrap().iter().find(|g| g["metadata"]["name"] == "apps").unwrap();
    let deploy = apps["versions"][0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resource"] == "deployments")
        .unwrap();
    assert_eq!(deploy["shortNames"], json!(["deploy"]));
    assert_eq!(deploy["categories"], json!(["all"]));
}
