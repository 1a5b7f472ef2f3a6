//! `authorization.k8s.io/v1` self reviews, answered for the first
//! identity model: every authenticated user may do everything (until the
//! authorization issue lands), so `kubectl auth can-i` answers yes for a
//! client with a certificate from the cluster CA; and
//! `authentication.k8s.io/v1` SelfSubjectReview (`kubectl auth whoami`):
//! the user and groups of the client's certificate.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::handlers::Identity;
use super::resources::ResourceType;
use super::status::ApiError;

pub fn review(rt: &ResourceType, body: &[u8], identity: Option<&Identity>) -> Result<Response, ApiError> {
    let mut obj: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("couldn't decode {}: {e}", rt.kind)))?;
    if !obj.is_object() {
        return Err(ApiError::bad_request(format!("{} must be an object", rt.kind)));
    }
    let allowed = identity.is_some();
    obj["apiVersion"] = json!(rt.api_version());
    obj["kind"] = json!(rt.kind);
    if obj.get("metadata").is_none_or(|m| !m.is_object()) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]["creationTimestamp"] = Value::Null;
    match rt.kind.as_str() {
        "SelfSubjectAccessReview" => {
            let attrs = &obj["spec"];
            if attrs["resourceAttributes"].is_null() && attrs["nonResourceAttributes"].is_null() {
                return Err(ApiError::invalid(
                    &rt.group,
                    &rt.kind,
                    "",
                    vec![super::status::FieldError::required("spec.resourceAttributes")],
                ));
            }
            obj["status"] = if allowed {
                json!({"allowed": true, "reason": "keelson: every authenticated user is allowed everything until authorization is configured"})
            } else {
                json!({"allowed": false})
            };
        }
        "SelfSubjectReview" => {
            let Some(id) = identity else { return Err(ApiError::unauthorized()) };
            let mut groups = id.groups.clone();
            groups.push("system:authenticated".into());
            obj["status"] = json!({"userInfo": {"username": id.user, "groups": groups}});
        }
        _ => {
            obj["status"] = json!({
                "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                "incomplete": false,
            });
        }
    }
    Ok((
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(&obj).unwrap_or_default(),
    )
        .into_response())
}
