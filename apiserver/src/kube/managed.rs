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
