//! What kube-apiserver's registries and built-in controllers do around a
//! write, for the kinds that need it: custom resource definitions become
//! served types, services get a cluster IP, a deleted namespace takes its
//! contents with it, bound pods terminate gracefully.

use std::sync::Arc;

use serde_json::{Value, json};

use super::handlers::KubeApi;
use super::resources::ResourceType;
use super::status::ApiError;
use super::storage::{ReadAt, prefix_end};
use crate::backend::Backend;

fn is(rt: &ResourceType, group: &str, kind: &str) -> bool {
    rt.custom.is_none() && rt.group == group && rt.kind == kind
}

/// A cluster IP from 10.96.0.0/12 (not .0.0, .0.1 or the broadcast).
fn allocate_cluster_ip() -> String {
    let b = uuid::Uuid::new_v4().into_bytes();
    let n = (u32::from_be_bytes([0, b[0], b[1], b[2]]) % ((1 << 20) - 3)) + 2;
    let ip = (10u32 << 24) | (96 << 16) | n;
    std::net::Ipv4Addr::from(ip).to_string()
}

pub async fn before_create<B: Backend>(
    _api: &KubeApi<B>,
    rt: &ResourceType,
    obj: &mut Value,
) -> Result<(), ApiError> {
    if is(rt, "apiextensions.k8s.io", "CustomResourceDefinition") {
        let errs = super::crd::establish(obj);
        if !errs.is_empty() {
            let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
            return Err(ApiError::invalid(&rt.group, &rt.kind, &name, errs));
        }
    }
    if is(rt, "batch", "Job") && obj["spec"]["manualSelector"] != true {
        // The job controller's labels, selected by a generated selector.
        let uid = obj["metadata"]["uid"].clone();
        let name = obj["metadata"]["name"].clone();
        let labels = &mut obj["spec"]["template"]["metadata"]["labels"];
        for (k, v) in [
            ("batch.kubernetes.io/controller-uid", &uid),
            ("batch.kubernetes.io/job-name", &name),
            ("controller-uid", &uid),
            ("job-name", &name),
        ] {
            labels[k] = v.clone();
        }
        obj["spec"]["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
    }
    if is(rt, "", "Service") {
        let spec = &mut obj["spec"];
        let external = spec["type"] == "ExternalName";
        if !external && spec["clusterIP"].as_str().is_none_or(str::is_empty) {
            let ip = allocate_cluster_ip();
            spec["clusterIP"] = json!(ip);
            spec["clusterIPs"] = json!([ip]);
        } else if let Some(ip) = spec["clusterIP"].as_str().map(str::to_string)
            && spec["clusterIPs"].is_null()
        {
            spec["clusterIPs"] = json!([ip]);
        }
    }
    Ok(())
}

pub async fn before_update<B: Backend>(
    _api: &KubeApi<B>,
    rt: &ResourceType,
    old: &Value,
    new: &mut Value,
) -> Result<(), ApiError> {
    if is(rt, "", "Service") {
        for f in ["clusterIP", "clusterIPs"] {
            if new["spec"][f].is_null() || new["spec"][f] == "" {
                new["spec"][f] = old["spec"][f].clone();
            }
        }
    }
    Ok(())
}

/// Whether deleting `obj` must wait for something besides finalizers
/// (a namespace's `spec.finalizers`).
pub fn held(rt: &ResourceType, obj: &Value) -> bool {
    is(rt, "", "Namespace") && obj["spec"]["finalizers"].as_array().is_some_and(|f| !f.is_empty())
}

/// The grace period a delete gives `obj`: bound, running pods get theirs
/// (the request's, else the pod's, else 30 s); everything else is deleted
/// at once.
pub fn grace_period(rt: &ResourceType, obj: &Value, opts: &Value) -> i64 {
    if !is(rt, "", "Pod") {
        return 0;
    }
    let bound = obj["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty());
    let finished = matches!(obj["status"]["phase"].as_str(), Some("Succeeded" | "Failed"));
    if !bound || finished {
        return 0;
    }
    opts["gracePeriodSeconds"]
        .as_i64()
        .or_else(|| obj["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30)
        .max(0)
}

/// Changes an object gets when it starts terminating.
pub fn on_terminating(rt: &ResourceType, obj: &mut Value) {
    if is(rt, "", "Namespace") {
        obj["status"]["phase"] = json!("Terminating");
    }
}

pub async fn after_write<B: Backend>(api: &KubeApi<B>, rt: &ResourceType, obj: &Value) {
    if is(rt, "apiextensions.k8s.io", "CustomResourceDefinition") {
        reload_definitions(api).await;
    }
    if is(rt, "", "Namespace") && obj["metadata"]["deletionTimestamp"].is_string() {
        let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
        finalize_namespace(api, name).await;
    }
}

pub async fn after_delete<B: Backend>(api: &KubeApi<B>, rt: &ResourceType, obj: &Value) {
    if is(rt, "apiextensions.k8s.io", "CustomResourceDefinition") {
        // The custom resources go with their definition.
        let group = obj["spec"]["group"].as_str().unwrap_or_default();
        let plural = obj["spec"]["names"]["plural"].as_str().unwrap_or_default();
        if !group.is_empty() && !plural.is_empty() {
            let prefix = format!("/registry/{group}/{plural}/");
            let _ = api.storage.delete_range(prefix.as_bytes(), &prefix_end(prefix.as_bytes())).await;
        }
        reload_definitions(api).await;
    }
}

/// Reads every custom resource definition and serves what they define.
pub async fn reload_definitions<B: Backend>(api: &KubeApi<B>) {
    let Some(crds) = api.registry.lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions") else {
        return;
    };
    let prefix = crds.prefix(None);
    match api.storage.list(prefix.as_bytes(), &prefix_end(prefix.as_bytes()), 0, 0).await {
        Ok(page) => {
            let defs: Vec<Value> = page.items.into_iter().map(|s| s.object).collect();
            api.registry.set_custom(&defs);
        }
        Err(e) => tracing::warn!("reading custom resource definitions: {e}"),
    }
}

/// The namespace controller's work, done in line: delete everything in a
/// terminating namespace (at once: no grace periods), then the namespace
/// itself. Objects held by finalizers are marked terminating and keep the
/// namespace until they go (deleting the namespace again retries), as do
/// the namespace's own finalizers.
async fn finalize_namespace<B: Backend>(api: &KubeApi<B>, ns: String) {
    let mut left = 0;
    for rt in api.registry.all().into_iter().filter(|r| r.namespaced && r.verbs.len() > 1) {
        let prefix = rt.prefix(Some(&ns));
        let page = match api.storage.list(prefix.as_bytes(), &prefix_end(prefix.as_bytes()), 0, 0).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("namespace {ns}: listing {}: {e}", rt.plural);
                left += 1;
                continue;
            }
        };
        for s in page.items {
            let key = String::from_utf8_lossy(&s.key).into_owned();
            let finalizers = s.object["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
            if !finalizers {
                let _ = api.storage.delete_if(&key, s.mod_revision).await;
                continue;
            }
            left += 1;
            if s.object["metadata"]["deletionTimestamp"].is_null() {
                let mut obj = s.object.clone();
                obj["metadata"]["deletionTimestamp"] = json!(super::objects::now_rfc3339());
                obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                let _ = api.storage.put_if(&key, &obj, s.mod_revision).await;
            }
        }
    }
    if left > 0 {
        return;
    }
    let Some(namespaces) = api.registry.lookup("", "v1", "namespaces") else { return };
    let key = namespaces.key(None, &ns);
    // The namespace's own finalizers (metadata.finalizers) hold it, as
    // any object's: the write that removes the last one deletes it.
    if let Ok(Some(cur)) = api.storage.get(&key, ReadAt::Latest).await
        && cur.object["metadata"]["finalizers"].as_array().is_none_or(|f| f.is_empty())
    {
        let _ = api.storage.delete_if(&key, cur.mod_revision).await;
    }
}

/// Creates the namespaces every cluster has, if missing.
pub async fn bootstrap<B: Backend>(api: &Arc<KubeApi<B>>) -> Result<(), ApiError> {
    let Some(namespaces) = api.registry.lookup("", "v1", "namespaces") else { return Ok(()) };
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let key = namespaces.key(None, name);
        if api.storage.get(&key, ReadAt::Latest).await?.is_some() {
            continue;
        }
        let mut obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        super::objects::apply_defaults(&namespaces, &mut obj);
        obj["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
        obj["metadata"]["creationTimestamp"] = json!(super::objects::now_rfc3339());
        // Another member may create it at the same time: either wins.
        let _ = api.storage.put_if(&key, &obj, 0).await;
    }
    Ok(())
}
