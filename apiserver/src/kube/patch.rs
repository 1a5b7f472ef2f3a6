//! PATCH bodies: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and
//! strategic merge patch (merge keys and directives of the built-in types).

use serde_json::{Map, Value};

use super::resources::ResourceType;
use super::status::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Result<Self, ApiError> {
        let base = ct.split(';').next().unwrap_or_default().trim();
        match base {
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Ok(PatchType::Apply),
            other => Err(ApiError::unsupported_media_type(other)),
        }
    }
}

/// Applies a JSON or merge or strategic patch to `current`.
pub fn apply_patch(
    rt: &ResourceType,
    kind: PatchType,
    current: &Value,
    body: &[u8],
) -> Result<Value, ApiError> {
    let bad = |e: String| ApiError::bad_request(e);
    match kind {
        PatchType::Json => {
            let patch: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| bad(format!("json: cannot unmarshal patch: {e}")))?;
            let mut doc = current.clone();
            json_patch::patch(&mut doc, &patch).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
            })?;
            Ok(doc)
        }
        PatchType::Merge => {
            let patch: Value =
                serde_json::from_slice(body).map_err(|e| bad(format!("error decoding patch: {e}")))?;
            let mut doc = current.clone();
            json_patch::merge(&mut doc, &patch);
            Ok(doc)
        }
        PatchType::Strategic => {
            if rt.custom.is_some() {
                return Err(ApiError::unsupported_media_type("application/strategic-merge-patch+json"));
            }
            let patch: Value =
                serde_json::from_slice(body).map_err(|e| bad(format!("error decoding patch: {e}")))?;
            if !patch.is_object() {
                return Err(bad("strategic merge patch must be a JSON object".into()));
            }
            Ok(strategic_merge(current, &patch))
        }
        PatchType::Apply => Err(ApiError::internal("apply patches go through server-side apply")),
    }
}

/// The merge key of a list field of the built-in types (from their
/// `patchMergeKey` tags); `Some("")` for lists of scalars merged as sets.
pub fn merge_key_of(field: &str, patch_items: &[Value]) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "conditions" | "addresses" => "type",
        "hostAliases" | "podIPs" | "hostIPs" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        "taints" => "key",
        "ownerReferences" => "uid",
        "finalizers" => "",
        "ports" => {
            if patch_items.iter().any(|p| p.get("containerPort").is_some()) {
                "containerPort"
            } else {
                "port"
            }
        }
        _ => return None,
    })
}

/// Strategic merge: maps merge as JSON merge patch does, lists with a
/// merge key merge element by element, `$patch`, `$retainKeys`,
/// `$setElementOrder/…` and `$deleteFromPrimitiveList/…` directives apply.
pub fn strategic_merge(current: &Value, patch: &Value) -> Value {
    let Value::Object(p) = patch else { return patch.clone() };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut out = p.clone();
        out.remove("$patch");
        return Value::Object(out);
    }
    let mut out: Map<String, Value> = current.as_object().cloned().unwrap_or_default();
    if let Some(retain) = p.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        out.retain(|k, _| keep.contains(&k.as_str()));
    }
    let mut orders = Vec::new();
    for (k, v) in p {
        if k == "$retainKeys" || k == "$patch" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            orders.push((field.to_string(), v.clone()));
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Some(del)) = (out.get_mut(field), v.as_array()) {
                items.retain(|i| !del.contains(i));
            }
            continue;
        }
        match v {
            Value::Null => {
                out.remove(k);
            }
            Value::Object(_) => {
                let cur = out.get(k).cloned().unwrap_or(Value::Null);
                let merged =
                    if cur.is_object() { strategic_merge(&cur, v) } else { strategic_merge(&Value::Null, v) };
                out.insert(k.clone(), merged);
            }
            Value::Array(items) => {
                let cur = out.get(k).and_then(Value::as_array).cloned().unwrap_or_default();
                let merged = match merge_key_of(k, items) {
                    Some("") => {
                        let mut list = cur;
                        for i in items {
                            if !list.contains(i) {
                                list.push(i.clone());
                            }
                        }
                        list
                    }
                    Some(key) => merge_list(&cur, items, key),
                    None => items.iter().filter(|i| !is_directive_only(i)).cloned().collect(),
                };
                out.insert(k.clone(), Value::Array(merged));
            }
            other => {
                out.insert(k.clone(), other.clone());
            }
        }
    }
    for (field, order) in orders {
        if let (Some(Value::Array(items)), Some(order)) = (out.get_mut(&field), order.as_array()) {
            reorder(items, order, merge_key_of(&field, order).unwrap_or(""));
        }
    }
    Value::Object(out)
}

fn is_directive_only(v: &Value) -> bool {
    v.as_object().is_some_and(|m| m.contains_key("$patch"))
}

fn merge_list(current: &[Value], patch: &[Value], key: &str) -> Vec<Value> {
    if patch.iter().any(|p| p.get("$patch").and_then(Value::as_str) == Some("replace")) {
        return patch.iter().filter(|p| !is_directive_only(p)).cloned().collect();
    }
    let mut out: Vec<Value> = current.to_vec();
    for item in patch {
        let id = item.get(key);
        let pos = id.and_then(|id| out.iter().position(|c| c.get(key) == Some(id)));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                out.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => out[i] = strategic_merge(&out[i], item),
            (None, false) => out.push(strategic_merge(&Value::Null, item)),
        }
    }
    out
}

/// Orders `items` as `order` lists them (by merge key, or by value for
/// scalars); items not listed keep their place after the listed ones.
fn reorder(items: &mut [Value], order: &[Value], key: &str) {
    let id = |v: &Value| if key.is_empty() { v.clone() } else { v.get(key).cloned().unwrap_or(Value::Null) };
    let rank = |v: &Value| order.iter().position(|o| id(o) == id(v)).unwrap_or(usize::MAX);
    items.sort_by_key(|v| rank(v));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_merge_by_name_and_scalars_replace() {
        let cur = json!({"spec": {"containers": [{"name": "a", "image": "x:1"}, {"name": "b", "image": "y:1"}],
            "tolerations": [{"key": "k"}]}, "metadata": {"finalizers": ["f1"]}});
        let patch = json!({"spec": {"containers": [{"name": "b", "image": "y:2"}, {"name": "c", "image": "z"}],
            "tolerations": [{"key": "j"}]}, "metadata": {"finalizers": ["f2"]}});
        let out = strategic_merge(&cur, &patch);
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "a", "image": "x:1"}, {"name": "b", "image": "y:2"}, {"name": "c", "image": "z"}])
        );
        assert_eq!(out["spec"]["tolerations"], json!([{"key": "j"}]));
        assert_eq!(out["metadata"]["finalizers"], json!(["f1", "f2"]));
    }

    #[test]
    fn directives_delete_replace_and_order() {
        let cur = json!({"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]}, "x": {"y": 1, "z": 2}});
        let patch = json!({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
            "containers": [{"name": "a", "$patch": "delete"}]}, "x": {"$patch": "replace", "w": 3}});
        let out = strategic_merge(&cur, &patch);
        assert_eq!(out["spec"]["containers"], json!([{"name": "b", "image": "2"}]));
        assert_eq!(out["x"], json!({"w": 3}));
    }

    #[test]
    fn null_removes_a_field() {
        let out = strategic_merge(&json!({"a": 1, "b": {"c": 2}}), &json!({"b": {"c": null}, "a": null}));
        assert_eq!(out, json!({"b": {}}));
    }
}
