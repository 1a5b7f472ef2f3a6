//! Server-side apply (`application/apply-patch+yaml`): the applied
//! configuration is merged into the live object and the manager's fields
//! are recorded in `metadata.managedFields` (FieldsV1).

use std::sync::Arc;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::handlers::{KubeApi, Query};
use super::objects::{self, FieldValidation};
use super::resources::ResourceType;
use super::status::ApiError;
use crate::backend::Backend;

/// The FieldsV1 set of the fields `v` sets (associative lists keyed by
/// their merge key, other lists atomic).
pub fn fields_of(v: &Value, field: &str) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, child) in m {
                if field.is_empty() && matches!(k.as_str(), "apiVersion" | "kind") {
                    continue;
                }
                if field.is_empty() && k == "metadata" {
                    let mut meta = Map::new();
                    for (mk, mv) in child.as_object().into_iter().flatten() {
                        if matches!(mk.as_str(), "labels" | "annotations" | "finalizers" | "ownerReferences")
                        {
                            meta.insert(format!("f:{mk}"), fields_of(mv, mk));
                        }
                    }
                    if !meta.is_empty() {
                        out.insert("f:metadata".into(), Value::Object(meta));
                    }
                    continue;
                }
                out.insert(format!("f:{k}"), fields_of(child, k));
            }
            Value::Object(out)
        }
        Value::Array(items) => {
            let key = super::patch::merge_key_of(field, items);
            match key {
                Some(k) if !k.is_empty() => {
                    let mut out = Map::new();
                    for item in items {
                        let id = json!({ k: item.get(k).cloned().unwrap_or(Value::Null) });
                        let mut child = fields_of(item, "");
                        if let Some(m) = child.as_object_mut() {
                            m.insert(".".into(), json!({}));
                        }
                        out.insert(format!("k:{id}"), child);
                    }
                    Value::Object(out)
                }
                Some(_) => {
                    let mut out = Map::new();
                    for item in items {
                        out.insert(format!("v:{item}"), json!({}));
                    }
                    Value::Object(out)
                }
                None => json!({}),
            }
        }
        _ => json!({}),
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn server_side_apply<B: Backend>(
    api: &KubeApi<B>,
    rt: &Arc<ResourceType>,
    ns: Option<&str>,
    name: &str,
    sub: Option<&str>,
    q: &Query,
    body: &[u8],
    fv: FieldValidation,
    dry_run: bool,
) -> Result<Response, ApiError> {
    let manager = q
        .get("fieldManager")
        .filter(|m| !m.is_empty())
        .cloned()
        .ok_or_else(|| ApiError::bad_request("PATCH /apply requires fieldManager to be set"))?;
    let applied: Value = serde_yaml::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    if !applied.is_object() {
        return Err(ApiError::bad_request("the applied configuration must be an object"));
    }
    if applied["metadata"]["name"].as_str().is_some_and(|n| n != name) {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            applied["metadata"]["name"].as_str().unwrap_or_default()
        )));
    }
    let (applied, warnings) = objects::decode_body(rt, applied, fv)?;
    let force = matches!(q.get("force").map(String::as_str), Some("true"));
    let api_version = rt.api_version();
    let (out, created) = api
        .guaranteed_update(rt, ns, name, sub, dry_run, None, &|cur| {
            let mut applied = applied.clone();
            applied["metadata"]["name"] = json!(name);
            if rt.namespaced
                && let Some(ns) = ns
            {
                applied["metadata"]["namespace"] = json!(ns);
            }
            let fields = fields_of(&applied, "");
            let (mut merged, mut managed) = match cur {
                Some(cur) => {
                    let mut base = cur.object.clone();
                    base["metadata"]["resourceVersion"] = Value::Null;
                    let managed = base["metadata"]["managedFields"].as_array().cloned().unwrap_or_default();
                    super::managed::check_conflicts(
                        &managed,
                        &manager,
                        &fields,
                        &cur.object,
                        &applied,
                        force,
                        rt,
                        name,
                    )?;
                    let previous = managed
                        .iter()
                        .find(|e| e["manager"] == manager.as_str() && e["operation"] == "Apply")
                        .map(|e| e["fieldsV1"].clone());
                    let mut merged = super::patch::strategic_merge(&base, &applied);
                    if let Some(prev) = previous {
                        super::managed::remove_released(&mut merged, &prev, &fields, &managed, &manager);
                    }
                    let managed =
                        if force { super::managed::release(&managed, &manager, &fields) } else { managed };
                    (merged, managed)
                }
                None => (applied.clone(), Vec::new()),
            };
            managed.retain(|e| !(e["manager"] == manager.as_str() && e["operation"] == "Apply"));
            managed.push(json!({
                "manager": manager,
                "operation": "Apply",
                "apiVersion": api_version,
                "time": objects::now_rfc3339(),
                "fieldsType": "FieldsV1",
                "fieldsV1": fields,
            }));
            merged["metadata"]["managedFields"] = json!(managed);
            if merged["metadata"]["resourceVersion"].is_null() {
                merged["metadata"].as_object_mut().map(|m| m.remove("resourceVersion"));
            }
            Ok(Some(merged))
        })
        .await?;
    let code = if created { StatusCode::CREATED } else { StatusCode::OK };
    let mut resp =
        (code, [(header::CONTENT_TYPE, "application/json")], serde_json::to_vec(&out).unwrap_or_default())
            .into_response();
    for w in warnings {
        if let Ok(v) = axum::http::HeaderValue::from_str(&format!("299 - \"{}\"", w.replace('"', "\\\""))) {
            resp.headers_mut().append("warning", v);
        }
    }
    Ok(resp)
}
