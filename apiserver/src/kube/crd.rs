//! Custom resources: validation against the definition's structural
//! `openAPIV3Schema`, pruning of fields it does not declare, and the
//! definition's own status (accepted names, Established).

use serde_json::{Map, Value, json};

use super::status::FieldError;

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() { field.to_string() } else { format!("{path}.{field}") }
}

fn check(schema: &Value, v: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if v.is_null() {
        return;
    }
    if schema["x-kubernetes-int-or-string"] == true {
        if !(v.is_string() || type_name(v) == "integer") {
            errs.push(FieldError::invalid(
                path,
                v,
                &format!("{path} in body must be of type int-or-string: {:?}", type_name(v)),
            ));
        }
        return;
    }
    let actual = type_name(v);
    if let Some(want) = schema["type"].as_str() {
        let ok = want == actual || (want == "number" && actual == "integer");
        if !ok {
            errs.push(FieldError::invalid(
                path,
                &json!(actual),
                &format!("{path} in body must be of type {want}: {actual:?}"),
            ));
            return;
        }
    }
    if let Some(options) = schema["enum"].as_array()
        && !options.contains(v)
    {
        let list: Vec<String> = options.iter().map(|o| o.to_string()).collect();
        errs.push(FieldError {
            reason: "FieldValueNotSupported",
            field: path.into(),
            message: format!("Unsupported value: {v}: supported values: {}", list.join(", ")),
        });
    }
    match v {
        Value::Object(m) => {
            let props = schema["properties"].as_object();
            for req in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                if m.get(req).is_none_or(Value::is_null) {
                    errs.push(FieldError::required(join(path, req)));
                }
            }
            for (k, val) in m {
                if let Some(s) = props.and_then(|p| p.get(k)) {
                    check(s, val, &join(path, k), errs);
                } else if schema["additionalProperties"].is_object() {
                    check(&schema["additionalProperties"], val, &join(path, k), errs);
                }
            }
        }
        Value::Array(items) => {
            if let Some(max) = schema["maxItems"].as_u64()
                && items.len() as u64 > max
            {
                errs.push(FieldError {
                    reason: "FieldValueTooMany",
                    field: path.into(),
                    message: format!("Too many: {}: must have at most {max} items", items.len()),
                });
            }
            for (i, item) in items.iter().enumerate() {
                check(&schema["items"], item, &format!("{path}[{i}]"), errs);
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if let Some(min) = schema["minimum"].as_f64()
                && x < min
            {
                errs.push(FieldError::invalid(
                    path,
                    v,
                    &format!("{path} in body should be greater than or equal to {min}"),
                ));
            }
            if let Some(max) = schema["maximum"].as_f64()
                && x > max
            {
                errs.push(FieldError::invalid(
                    path,
                    v,
                    &format!("{path} in body should be less than or equal to {max}"),
                ));
            }
        }
        Value::String(s) => {
            if let Some(min) = schema["minLength"].as_u64()
                && (s.chars().count() as u64) < min
            {
                errs.push(FieldError::invalid(
                    path,
                    v,
                    &format!("{path} in body should be at least {min} chars long"),
                ));
            }
            if let Some(max) = schema["maxLength"].as_u64()
                && s.chars().count() as u64 > max
            {
                errs.push(FieldError {
                    reason: "FieldValueTooLong",
                    field: path.into(),
                    message: format!("Too long: may not be more than {max} bytes"),
                });
            }
        }
        _ => {}
    }
}

/// Validates a custom resource (everything but apiVersion, kind and
/// metadata, which the API server checks itself).
pub fn validate(schema: &Value, obj: &Value, errs: &mut Vec<FieldError>) {
    let Some(m) = obj.as_object() else { return };
    let mut body = Map::new();
    for (k, v) in m {
        if !matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            body.insert(k.clone(), v.clone());
        }
    }
    let mut root = schema.clone();
    if let Some(req) = root["required"].as_array().cloned() {
        root["required"] = json!(
            req.into_iter()
                .filter(|r| !matches!(r.as_str(), Some("apiVersion" | "kind" | "metadata")))
                .collect::<Vec<_>>()
        );
    }
    check(&root, &Value::Object(body), "", errs);
}

/// Removes fields the schema does not declare (kube's pruning), listing
/// them for `fieldValidation`.
pub fn prune(schema: &Value, v: &mut Value, path: &str, unknown: &mut Vec<String>) {
    if schema["x-kubernetes-preserve-unknown-fields"] == true && schema["properties"].is_null() {
        return;
    }
    match v {
        Value::Object(m) => {
            let props = schema["properties"].as_object();
            let additional =
                schema["additionalProperties"].is_object() || schema["additionalProperties"] == true;
            let preserve = schema["x-kubernetes-preserve-unknown-fields"] == true;
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                if path.is_empty() && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let p = join(path, &k);
                match props.and_then(|p| p.get(&k)) {
                    Some(s) => prune(s, m.get_mut(&k).expect("key listed"), &p, unknown),
                    None if additional => {
                        if schema["additionalProperties"].is_object() {
                            prune(
                                &schema["additionalProperties"],
                                m.get_mut(&k).expect("key listed"),
                                &p,
                                unknown,
                            );
                        }
                    }
                    None if preserve => {}
                    None => {
                        m.remove(&k);
                        unknown.push(p);
                    }
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                prune(&schema["items"], item, &format!("{path}[{i}]"), unknown);
            }
        }
        _ => {}
    }
}

/// Checks a new definition and fills the status kube-apiserver's
/// controllers would (names accepted, established).
pub fn establish(crd: &mut Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default().to_string();
    let plural = spec["names"]["plural"].as_str().unwrap_or_default().to_string();
    if group.is_empty() {
        errs.push(FieldError::required("spec.group"));
    }
    if plural.is_empty() {
        errs.push(FieldError::required("spec.names.plural"));
    }
    if spec["names"]["kind"].as_str().is_none_or(str::is_empty) {
        errs.push(FieldError::required("spec.names.kind"));
    }
    let name = crd["metadata"]["name"].as_str().unwrap_or_default();
    if !plural.is_empty() && !group.is_empty() && name != format!("{plural}.{group}") {
        errs.push(FieldError::invalid(
            "metadata.name",
            &json!(name),
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    if versions.is_empty() {
        errs.push(FieldError::required("spec.versions"));
    }
    let storage: Vec<&Value> = versions.iter().filter(|v| v["storage"] == true).collect();
    if !versions.is_empty() && storage.len() != 1 {
        errs.push(FieldError::invalid(
            "spec.versions",
            &json!(versions.iter().map(|v| v["name"].clone()).collect::<Vec<_>>()),
            "must have exactly one version marked as storage version",
        ));
    }
    if !errs.is_empty() {
        return errs;
    }
    let now = super::objects::now_rfc3339();
    let mut accepted = spec["names"].clone();
    if accepted["singular"].is_null() {
        accepted["singular"] = json!(spec["names"]["kind"].as_str().unwrap_or_default().to_lowercase());
    }
    if accepted["listKind"].is_null() {
        accepted["listKind"] = json!(format!("{}List", spec["names"]["kind"].as_str().unwrap_or_default()));
    }
    crd["status"] = json!({
        "acceptedNames": accepted,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now},
        ],
        "storedVersions": [storage[0]["name"]],
    });
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["size"], "properties": {
                "size": {"type": "integer", "minimum": 1},
                "color": {"type": "string", "enum": ["red", "blue"]},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}},
            "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}}})
    }

    #[test]
    fn custom_resources_are_checked_against_their_schema() {
        let mut errs = Vec::new();
        validate(
            &schema(),
            &json!({"apiVersion": "x/v1", "kind": "W", "metadata": {}, "spec": {"size": "big", "color": "green"}}),
            &mut errs,
        );
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["spec.color", "spec.size"]);
        let mut errs = Vec::new();
        validate(&schema(), &json!({"spec": {}}), &mut errs);
        assert_eq!(errs[0], FieldError::required("spec.size"));
    }

    #[test]
    fn undeclared_fields_are_pruned_unless_preserved() {
        let mut obj = json!({"apiVersion": "x/v1", "kind": "W", "metadata": {"name": "a"},
            "spec": {"size": 2, "bogus": 1, "extra": {"anything": true}}, "top": 1});
        let mut unknown = Vec::new();
        prune(&schema(), &mut obj, "", &mut unknown);
        assert_eq!(unknown, vec!["spec.bogus", "top"]);
        assert_eq!(obj["spec"]["extra"]["anything"], true);
    }
}
