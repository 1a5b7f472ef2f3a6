//! Discovery: `/api`, `/apis`, `/api/v1`, `/apis/{group}/{version}`, and
//! the aggregated form (`apidiscovery.k8s.io/v2` APIGroupDiscoveryList)
//! kubectl asks for first.

use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::handlers::KubeApi;
use super::resources::ResourceType;
use super::status::ApiError;
use crate::backend::Backend;

const AGGREGATED_V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
const AGGREGATED_V2BETA1: &str = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";

fn subresource_verbs(sub: &str) -> Vec<&'static str> {
    match sub {
        "binding" | "token" => vec!["create"],
        "finalize" => vec!["update"],
        _ => vec!["get", "patch", "update"],
    }
}

fn subresource_kind(rt: &ResourceType, sub: &str) -> (String, String, String) {
    match sub {
        "scale" => ("autoscaling".into(), "v1".into(), "Scale".into()),
        "binding" => ("".into(), "v1".into(), "Binding".into()),
        "token" => ("authentication.k8s.io".into(), "v1".into(), "TokenRequest".into()),
        _ => (rt.group.clone(), rt.version.clone(), rt.kind.clone()),
    }
}

/// The `APIResource` entries of a group/version (main resources and
/// subresources).
fn api_resources(types: &[&ResourceType]) -> Vec<Value> {
    let mut out = Vec::new();
    for rt in types {
        let mut r = json!({
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": rt.verbs,
        });
        if !rt.short_names.is_empty() {
            r["shortNames"] = json!(rt.short_names);
        }
        if !rt.categories.is_empty() {
            r["categories"] = json!(rt.categories);
        }
        out.push(r);
        for sub in &rt.subresources {
            let (group, version, kind) = subresource_kind(rt, sub);
            let mut s = json!({
                "name": format!("{}/{sub}", rt.plural),
                "singularName": "",
                "namespaced": rt.namespaced,
                "kind": kind,
                "verbs": subresource_verbs(sub),
            });
            if group != rt.group || version != rt.version {
                s["group"] = json!(group);
                s["version"] = json!(version);
            }
            out.push(s);
        }
    }
    out
}

fn aggregated_resource(rt: &ResourceType) -> Value {
    let mut r = json!({
        "resource": rt.plural,
        "responseKind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
        "scope": if rt.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": rt.singular,
        "verbs": rt.verbs,
    });
    if !rt.short_names.is_empty() {
        r["shortNames"] = json!(rt.short_names);
    }
    if !rt.categories.is_empty() {
        r["categories"] = json!(rt.categories);
    }
    let subs: Vec<Value> = rt
        .subresources
        .iter()
        .map(|sub| {
            let (group, version, kind) = subresource_kind(rt, sub);
            json!({
                "subresource": sub,
                "responseKind": {"group": group, "version": version, "kind": kind},
                "verbs": subresource_verbs(sub),
            })
        })
        .collect();
    if !subs.is_empty() {
        r["subresources"] = json!(subs);
    }
    r
}

fn wants_aggregated(headers: &HeaderMap) -> Option<&'static str> {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    for part in accept.split(',') {
        let p = part.replace(' ', "");
        if p.contains("as=APIGroupDiscoveryList") && p.contains("g=apidiscovery.k8s.io") {
            if p.contains("v=v2beta1") {
                return Some(AGGREGATED_V2BETA1);
            }
            if p.contains("v=v2") {
                return Some(AGGREGATED_V2);
            }
        }
    }
    None
}

fn json_ok(content_type: &str, v: &Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, content_type.to_string())],
        serde_json::to_vec(v).unwrap_or_default(),
    )
        .into_response()
}

/// Answers a discovery path (or 404).
pub fn serve<B: Backend>(api: &KubeApi<B>, method: &Method, path: &str, headers: &HeaderMap) -> Response {
    if method != Method::GET {
        return ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        )
        .into_response();
    }
    let all = api.registry.all();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["api"] => match wants_aggregated(headers) {
            Some(ct) => json_ok(ct, &aggregated(&all, true, ct)),
            None => json_ok(
                "application/json",
                &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": api.advertise_address()}]}),
            ),
        },
        ["apis"] => match wants_aggregated(headers) {
            Some(ct) => json_ok(ct, &aggregated(&all, false, ct)),
            None => {
                let groups: Vec<Value> = api
                    .registry
                    .groups()
                    .into_iter()
                    .filter(|(g, _)| !g.is_empty())
                    .map(|(g, versions)| {
                        let vs: Vec<Value> = versions
                            .iter()
                            .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                            .collect();
                        json!({"name": g, "versions": vs, "preferredVersion": vs[0]})
                    })
                    .collect();
                json_ok(
                    "application/json",
                    &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
                )
            }
        },
        ["api", v] | ["apis", _, v] => {
            let group = if segs[0] == "api" { "" } else { segs[1] };
            let types: Vec<&ResourceType> =
                all.iter().map(|r| r.as_ref()).filter(|r| r.group == group && r.version == *v).collect();
            if types.is_empty() {
                return ApiError::new(404, "NotFound", "the server could not find the requested resource")
                    .into_response();
            }
            let gv = if group.is_empty() { v.to_string() } else { format!("{group}/{v}") };
            json_ok(
                "application/json",
                &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                    "resources": api_resources(&types)}),
            )
        }
        ["apis", g] => {
            let Some((_, versions)) = api.registry.groups().into_iter().find(|(name, _)| name == g) else {
                return ApiError::new(404, "NotFound", "the server could not find the requested resource")
                    .into_response();
            };
            let vs: Vec<Value> =
                versions.iter().map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v})).collect();
            json_ok(
                "application/json",
                &json!({"kind": "APIGroup", "apiVersion": "v1", "name": g, "versions": vs, "preferredVersion": vs[0]}),
            )
        }
        _ => {
            ApiError::new(404, "NotFound", "the server could not find the requested resource").into_response()
        }
    }
}

/// A group's versions, each with its resources.
type GroupResources = (String, Vec<(String, Vec<Value>)>);

fn aggregated(all: &[std::sync::Arc<ResourceType>], core: bool, content_type: &str) -> Value {
    let api_version = if content_type == AGGREGATED_V2BETA1 {
        "apidiscovery.k8s.io/v2beta1"
    } else {
        "apidiscovery.k8s.io/v2"
    };
    let mut groups: Vec<GroupResources> = Vec::new();
    for rt in all.iter().filter(|r| r.group.is_empty() == core) {
        let g = match groups.iter_mut().position(|(g, _)| *g == rt.group) {
            Some(i) => &mut groups[i],
            None => {
                groups.push((rt.group.clone(), Vec::new()));
                groups.last_mut().expect("just pushed")
            }
        };
        match g.1.iter_mut().position(|(v, _)| *v == rt.version) {
            Some(i) => g.1[i].1.push(aggregated_resource(rt)),
            None => g.1.push((rt.version.clone(), vec![aggregated_resource(rt)])),
        }
    }
    let items: Vec<Value> = groups
        .into_iter()
        .map(|(g, versions)| {
            let vs: Vec<Value> = versions
                .into_iter()
                .map(|(v, resources)| json!({"version": v, "resources": resources, "freshness": "Current"}))
                .collect();
            let meta = if g.is_empty() {
                json!({"creationTimestamp": null})
            } else {
                json!({"name": g, "creationTimestamp": null})
            };
            json!({"metadata": meta, "versions": vs})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": api_version, "metadata": {}, "items": items})
}
