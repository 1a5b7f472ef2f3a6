//! `metadata.managedFields`: which manager owns which fields, conflicts
//! between appliers, and fields an applier stopped setting.

use serde_json::{Map, Value, json};

use super::resources::ResourceType;
use super::status::ApiError;

/// Leaf paths of a FieldsV1 set, as lists of path elements.
fn leaves(set: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let Some(m) = set.as_object() else { return };
    let children: Vec<(&String, &Value)> = m.iter().filter(|(k, _)| k.as_str() != ".").collect();
    if children.is_empty() {
        out.push(prefix.clone());
        return;
    }
    for (k, v) in children {
        prefix.push(k.clone());
        leaves(v, prefix, out);
        prefix.pop();
    }
}

/// The value at a FieldsV1 path in an object.
fn value_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut v = obj;
    for el in path {
        if let Some(f) = el.strip_prefix("f:") {
            v = v.get(f)?;
        } else if let Some(k) = el.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(k).ok()?;
            v = v.as_array()?.iter().find(|item| key.iter().all(|(kk, kv)| item.get(kk) == Some(kv)))?;
        } else if let Some(val) = el.strip_prefix("v:") {
            let want: Value = serde_json::from_str(val).ok()?;
            v = v.as_array()?.iter().find(|item| **item == want)?;
        } else {
            return None;
        }
    }
    Some(v)
}

fn contains(set: &Value, path: &[String]) -> bool {
    let mut v = set;
    for el in path {
        match v.get(el) {
            Some(c) => v = c,
            None => return false,
        }
    }
    true
}

fn display(path: &[String]) -> String {
    let mut s = String::new();
    for el in path {
        if let Some(f) = el.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = el.strip_prefix("k:") {
            s.push('[');
            s.push_str(k);
            s.push(']');
        } else if let Some(v) = el.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        }
    }
    s
}

/// 409 when another manager owns a field this apply sets to a different
/// value (unless `force`).
#[allow(clippy::too_many_arguments)]
pub fn check_conflicts(
    managed: &[Value],
    manager: &str,
    fields: &Value,
    current: &Value,
    applied: &Value,
    force: bool,
    rt: &ResourceType,
    name: &str,
) -> Result<(), ApiError> {
    if force {
        return Ok(());
    }
    let mut paths = Vec::new();
    leaves(fields, &mut Vec::new(), &mut paths);
    let mut causes = Vec::new();
    for entry in managed {
        let other = entry["manager"].as_str().unwrap_or_default();
        if other == manager {
            continue;
        }
        for p in &paths {
            if contains(&entry["fieldsV1"], p) && value_at(current, p) != value_at(applied, p) {
                causes.push((other.to_string(), display(p)));
            }
        }
    }
    if causes.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = causes.iter().map(|(m, f)| format!("conflict with \"{m}\": {f}")).collect();
    let message = if list.len() == 1 {
        format!("Apply failed with 1 conflict: {}", list[0])
    } else {
        format!("Apply failed with {} conflicts: {}", list.len(), list.join("\n"))
    };
    let mut err = ApiError::new(409, "Conflict", message);
    let mut details = json!({"name": name, "kind": rt.plural});
    if !rt.group.is_empty() {
        details["group"] = json!(rt.group);
    }
    details["causes"] = causes
        .iter()
        .map(|(m, f)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\""), "field": f}))
        .collect();
    err.details = Some(details);
    Err(err)
}

fn remove_path(set: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut v = set;
    for el in parents {
        match v.get_mut(el) {
            Some(c) => v = c,
            None => return,
        }
    }
    if let Some(m) = v.as_object_mut() {
        m.remove(last);
    }
}

/// Other managers lose the fields a forced apply takes.
pub fn release(managed: &[Value], manager: &str, fields: &Value) -> Vec<Value> {
    let mut paths = Vec::new();
    leaves(fields, &mut Vec::new(), &mut paths);
    managed
        .iter()
        .map(|e| {
            if e["manager"] == manager {
                return e.clone();
            }
            let mut e = e.clone();
            for p in &paths {
                remove_path(&mut e["fieldsV1"], p);
            }
            e
        })
        .collect()
}

fn remove_from_object(obj: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut v = obj;
    for el in parents {
        let next = if let Some(f) = el.strip_prefix("f:") {
            v.get_mut(f)
        } else if let Some(k) = el.strip_prefix("k:") {
            let Ok(key) = serde_json::from_str::<Map<String, Value>>(k) else { return };
            v.as_array_mut()
                .and_then(|a| a.iter_mut().find(|item| key.iter().all(|(kk, kv)| item.get(kk) == Some(kv))))
        } else {
            None
        };
        match next {
            Some(n) => v = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        v.as_object_mut().map(|m| m.remove(f));
    } else if let Some(k) = last.strip_prefix("k:") {
        if let (Ok(key), Some(a)) = (serde_json::from_str::<Map<String, Value>>(k), v.as_array_mut()) {
            a.retain(|item| !key.iter().all(|(kk, kv)| item.get(kk) == Some(kv)));
        }
    } else if let Some(val) = last.strip_prefix("v:")
        && let (Ok(want), Some(a)) = (serde_json::from_str::<Value>(val), v.as_array_mut())
    {
        a.retain(|item| *item != want);
    }
}

/// Removes from `obj` the fields `manager` applied before (`previous`) but
/// not now (`fields`), unless another manager also owns them.
pub fn remove_released(obj: &mut Value, previous: &Value, fields: &Value, managed: &[Value], manager: &str) {
    let mut paths = Vec::new();
    collect_items(previous, &mut Vec::new(), &mut paths);
    for p in paths {
        if contains(fields, &p) {
            continue;
        }
        let shared = managed.iter().any(|e| e["manager"] != manager && contains(&e["fieldsV1"], &p));
        if !shared {
            remove_from_object(obj, &p);
        }
    }
}

/// Every path in a set whose parent is still wanted: leaves and whole list
/// items (marked with ".").
fn collect_items(set: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let Some(m) = set.as_object() else { return };
    let children: Vec<(&String, &Value)> = m.iter().filter(|(k, _)| k.as_str() != ".").collect();
    if m.contains_key(".") || children.is_empty() {
        out.push(prefix.clone());
    }
    for (k, v) in children {
        prefix.push(k.clone());
        collect_items(v, prefix, out);
        prefix.pop();
    }
}

/// The fields `new` sets differently from `old` (all of them when `old`
/// is null), as a FieldsV1 set.
fn changed(old: &Value, new: &Value, field: &str, top: bool) -> Option<Value> {
    match (old, new) {
        (_, Value::Object(n)) if !top || n.is_empty() || old.is_object() || old.is_null() => {
            let o = old.as_object();
            let mut out = Map::new();
            for (k, v) in n {
                if top && matches!(k.as_str(), "apiVersion" | "kind") {
                    continue;
                }
                if top && k == "metadata" {
                    let mut meta = Map::new();
                    for f in ["labels", "annotations", "finalizers", "ownerReferences"] {
                        let before =
                            o.and_then(|o| o.get("metadata")).and_then(|m| m.get(f)).unwrap_or(&Value::Null);
                        if let Some(c) = v.get(f).and_then(|nv| changed(before, nv, f, false)) {
                            meta.insert(format!("f:{f}"), c);
                        }
                    }
                    if !meta.is_empty() {
                        out.insert("f:metadata".into(), Value::Object(meta));
                    }
                    continue;
                }
                let before = o.and_then(|o| o.get(k)).unwrap_or(&Value::Null);
                if let Some(c) = changed(before, v, k, false) {
                    out.insert(format!("f:{k}"), c);
                }
            }
            if out.is_empty() && old == new { None } else { Some(Value::Object(out)) }
        }
        (_, Value::Array(items)) => match super::patch::merge_key_of(field, items) {
            Some(key) if !key.is_empty() => {
                let before = old.as_array().cloned().unwrap_or_default();
                let mut out = Map::new();
                for item in items {
                    let id = item.get(key).cloned().unwrap_or(Value::Null);
                    let prev = before.iter().find(|b| b.get(key) == Some(&id)).unwrap_or(&Value::Null);
                    if let Some(mut c) = changed(prev, item, "", false) {
                        if prev.is_null()
                            && let Some(m) = c.as_object_mut()
                        {
                            m.insert(".".into(), json!({}));
                        }
                        out.insert(format!("k:{}", json!({ key: id })), c);
                    }
                }
                if out.is_empty() { None } else { Some(Value::Object(out)) }
            }
            _ => (old != new).then(|| json!({})),
        },
        _ => (old != new).then(|| json!({})),
    }
}

fn merge_sets(into: &mut Value, from: &Value) {
    let (Some(a), Some(b)) = (into.as_object_mut(), from.as_object()) else { return };
    for (k, v) in b {
        match a.get_mut(k) {
            Some(existing) => merge_sets(existing, v),
            None => {
                a.insert(k.clone(), v.clone());
            }
        }
    }
}

fn is_empty_set(v: &Value) -> bool {
    v.as_object().is_none_or(|m| m.is_empty())
}

/// Records a create, update or patch by `manager` in `new`'s managedFields:
/// it owns every field it changed, and other managers lose those fields.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    sub: Option<&str>,
) {
    let Some(fields) = changed(old.unwrap_or(&Value::Null), new, "", true).filter(|f| !is_empty_set(f))
    else {
        return;
    };
    let mut managed = match new["metadata"].get_mut("managedFields").map(Value::take) {
        Some(Value::Array(entries)) => entries,
        _ => Vec::new(),
    };
    // Other managers lose the fields this one changed.
    if managed.iter().any(|e| !(e["manager"] == manager && e["operation"] == "Update")) {
        let mut paths = Vec::new();
        leaves(&fields, &mut Vec::new(), &mut paths);
        for e in managed.iter_mut() {
            if e["manager"] == manager && e["operation"] == "Update" {
                continue;
            }
            for p in &paths {
                remove_path(&mut e["fieldsV1"], p);
            }
            prune_empty(&mut e["fieldsV1"]);
        }
        managed.retain(|e| !is_empty_set(&e["fieldsV1"]));
    }
    let subresource = sub.filter(|s| *s == "status" || *s == "scale");
    match managed.iter_mut().find(|e| {
        e["manager"] == manager && e["operation"] == "Update" && e["subresource"].as_str() == subresource
    }) {
        Some(e) => {
            merge_sets(&mut e["fieldsV1"], &fields);
            e["time"] = json!(super::objects::now_rfc3339());
            e["apiVersion"] = json!(api_version);
        }
        None => {
            let mut e = json!({
                "manager": manager,
                "operation": "Update",
                "apiVersion": api_version,
                "time": super::objects::now_rfc3339(),
                "fieldsType": "FieldsV1",
                "fieldsV1": fields,
            });
            if let Some(s) = subresource {
                e["subresource"] = json!(s);
            }
            managed.push(e);
        }
    }
    new["metadata"]["managedFields"] = Value::Array(managed);
}

/// Drops objects left empty after removing paths (a parent whose only
/// child went, unless it is itself a list item marked with ".").
fn prune_empty(set: &mut Value) {
    if let Some(m) = set.as_object_mut() {
        let keys: Vec<String> = m.keys().cloned().collect();
        for k in keys {
            if k == "." {
                continue;
            }
            let child = m.get_mut(&k).expect("listed");
            let had_children = child.as_object().is_some_and(|c| !c.is_empty());
            prune_empty(child);
            if had_children && child.as_object().is_some_and(|c| c.is_empty()) {
                m.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::apply::fields_of;
    use crate::kube::resources::Registry;

    #[test]
    fn a_field_owned_by_another_manager_conflicts_unless_forced() {
        let reg = Registry::default();
        let rt = reg.lookup("apps", "v1", "deployments").unwrap();
        let current = json!({"spec": {"replicas": 3}});
        let applied = json!({"spec": {"replicas": 1}});
        let managed = vec![json!({"manager": "kubectl-scale", "operation": "Update",
            "fieldsV1": {"f:spec": {"f:replicas": {}}}})];
        let fields = fields_of(&applied, "");
        let err =
            check_conflicts(&managed, "kubectl", &fields, &current, &applied, false, &rt, "d").unwrap_err();
        assert_eq!(err.code, 409);
        assert_eq!(
            err.message,
            "Apply failed with 1 conflict: conflict with \"kubectl-scale\": .spec.replicas"
        );
        assert!(check_conflicts(&managed, "kubectl", &fields, &current, &applied, true, &rt, "d").is_ok());
        let same = json!({"spec": {"replicas": 3}});
        assert!(
            check_conflicts(&managed, "kubectl", &fields_of(&same, ""), &current, &same, false, &rt, "d")
                .is_ok()
        );
    }

    #[test]
    fn an_update_takes_the_fields_it_changed() {
        let old = json!({"metadata": {"name": "d", "managedFields": [{"manager": "kubectl", "operation": "Apply",
            "fieldsV1": {"f:spec": {"f:replicas": {}, "f:paused": {}}}}]}, "spec": {"replicas": 1, "paused": false}});
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(3);
        record_update(Some(&old), &mut new, "kubectl-scale", "apps/v1", Some("scale"));
        let managed = new["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(managed[0]["fieldsV1"], json!({"f:spec": {"f:paused": {}}}));
        assert_eq!(managed[1]["manager"], "kubectl-scale");
        assert_eq!(managed[1]["subresource"], "scale");
        assert_eq!(managed[1]["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));
        // A create owns everything it set.
        let mut created = json!({"metadata": {"name": "c", "labels": {"a": "b"}}, "data": {"k": "v"}});
        record_update(None, &mut created, "kubectl-create", "v1", None);
        assert_eq!(
            created["metadata"]["managedFields"][0]["fieldsV1"],
            json!({"f:data": {"f:k": {}}, "f:metadata": {"f:labels": {"f:a": {}}}})
        );
    }

    #[test]
    fn fields_an_applier_drops_are_removed() {
        let mut obj = json!({"metadata": {"labels": {"a": "1", "b": "2"}},
            "spec": {"containers": [{"name": "x", "image": "i"}, {"name": "y", "image": "j"}]}});
        let before = json!({"metadata": {"labels": {"a": "1", "b": "2"}},
            "spec": {"containers": [{"name": "x", "image": "i"}, {"name": "y", "image": "j"}]}});
        let now = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"containers": [{"name": "x", "image": "i"}]}});
        remove_released(&mut obj, &fields_of(&before, ""), &fields_of(&now, ""), &[], "m");
        assert_eq!(obj["metadata"]["labels"], json!({"a": "1"}));
        assert_eq!(obj["spec"]["containers"], json!([{"name": "x", "image": "i"}]));
    }
}
