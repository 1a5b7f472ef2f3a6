//! What the API server does to an object on its way into the store:
//! decoding through the typed schema (unknown fields found, the served
//! shape normalized), metadata rules, defaulting and validation.

use serde_json::{Map, Value, json};

use super::resources::ResourceType;
use super::status::{ApiError, FieldError};

/// `fieldValidation`: what to do with unknown or duplicate fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    Strict,
    #[default]
    Warn,
    Ignore,
}

impl FieldValidation {
    pub fn parse(s: Option<&str>) -> Result<Self, ApiError> {
        match s {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation parameter unsupported: {other}. Supported values are \"Ignore\", \"Warn\", \"Strict\""
            ))),
        }
    }
}

macro_rules! typed_roundtrip {
    ($group:expr, $kind:expr, $v:expr, { $( ($g:literal, $k:literal) => $t:ty ),* $(,)? }) => {
        match ($group, $kind) {
            $( ($g, $k) => Some(serde_json::from_value::<$t>($v).and_then(|o| serde_json::to_value(&o))), )*
            _ => None,
        }
    };
}

/// Decodes `v` as the built-in type and encodes it again: the result is
/// the object in the served shape, without fields the type does not have.
/// `None` for types without a compiled schema (custom resources).
fn roundtrip(group: &str, kind: &str, v: Value) -> Option<Result<Value, serde_json::Error>> {
    use k8s_openapi::api::{apps, batch, coordination, core, discovery, rbac};
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions;
    typed_roundtrip!(group, kind, v, {
        ("", "Namespace") => core::v1::Namespace,
        ("", "Pod") => core::v1::Pod,
        ("", "Node") => core::v1::Node,
        ("", "Service") => core::v1::Service,
        ("", "Endpoints") => core::v1::Endpoints,
        ("", "ConfigMap") => core::v1::ConfigMap,
        ("", "Secret") => core::v1::Secret,
        ("", "ServiceAccount") => core::v1::ServiceAccount,
        ("", "Event") => core::v1::Event,
        ("", "LimitRange") => core::v1::LimitRange,
        ("", "ResourceQuota") => core::v1::ResourceQuota,
        ("apps", "Deployment") => apps::v1::Deployment,
        ("apps", "ReplicaSet") => apps::v1::ReplicaSet,
        ("apps", "StatefulSet") => apps::v1::StatefulSet,
        ("apps", "DaemonSet") => apps::v1::DaemonSet,
        ("batch", "Job") => batch::v1::Job,
        ("batch", "CronJob") => batch::v1::CronJob,
        ("coordination.k8s.io", "Lease") => coordination::v1::Lease,
        ("rbac.authorization.k8s.io", "Role") => rbac::v1::Role,
        ("rbac.authorization.k8s.io", "ClusterRole") => rbac::v1::ClusterRole,
        ("rbac.authorization.k8s.io", "RoleBinding") => rbac::v1::RoleBinding,
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => rbac::v1::ClusterRoleBinding,
        ("discovery.k8s.io", "EndpointSlice") => discovery::v1::EndpointSlice,
        ("apiextensions.k8s.io", "CustomResourceDefinition") => apiextensions::v1::CustomResourceDefinition,
    })
}

/// Paths present in `original` but not in `decoded` (fields the type does
/// not declare), as kube-apiserver prints them (`spec.containers[0].foo`).
pub fn unknown_fields(original: &Value, decoded: &Value, path: &str, out: &mut Vec<String>) {
    match (original, decoded) {
        (Value::Object(a), Value::Object(b)) => {
            // Paths are only formatted where needed: most fields are
            // known scalars.
            let join = |k: &str| if path.is_empty() { k.to_string() } else { format!("{path}.{k}") };
            for (k, v) in a {
                match b.get(k) {
                    Some(w) if v.is_object() || v.is_array() => unknown_fields(v, w, &join(k), out),
                    Some(_) => {}
                    None if v.is_null() => {}
                    None => out.push(join(k)),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                if v.is_object() || v.is_array() {
                    unknown_fields(v, w, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// Decodes a request body through the type's schema. Returns the object in
/// the served shape and the warnings to send (fieldValidation=Warn).
pub fn decode_body(
    rt: &ResourceType,
    body: Value,
    fv: FieldValidation,
) -> Result<(Value, Vec<String>), ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: the object must be a JSON object",
            rt.kind, rt.version, rt.kind
        )));
    }
    let mut body = body;
    // Missing apiVersion/kind are filled from the URL; wrong ones are refused.
    let api_version = rt.api_version();
    match body.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            body["apiVersion"] = json!(api_version);
        }
        Some(v) if v == api_version => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )));
        }
    }
    match body.get("kind").and_then(Value::as_str) {
        None | Some("") => body["kind"] = json!(rt.kind),
        Some(k) if k == rt.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                rt.kind
            )));
        }
    }
    if body.get("metadata").is_none_or(Value::is_null) {
        body["metadata"] = json!({});
    }
    let mut unknown = Vec::new();
    let decoded = match roundtrip(&rt.group, &rt.kind, body.clone()) {
        Some(result) => {
            let decoded = result.map_err(|e| {
                ApiError::bad_request(format!(
                    "{} in version \"{}\" cannot be handled as a {}: {e}",
                    rt.kind, rt.version, rt.kind
                ))
            })?;
            unknown_fields(&body, &decoded, "", &mut unknown);
            decoded
        }
        None => {
            let mut pruned = body;
            if let Some(schema) = rt.custom.as_ref().and_then(|c| c.schema.as_ref()) {
                super::crd::prune(schema, &mut pruned, "", &mut unknown);
            }
            pruned
        }
    };
    let warnings: Vec<String> = unknown.iter().map(|p| format!("unknown field \"{p}\"")).collect();
    match fv {
        FieldValidation::Strict if !warnings.is_empty() => Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
            rt.kind,
            rt.version,
            rt.kind,
            warnings.join(", ")
        ))),
        FieldValidation::Warn => Ok((decoded, warnings)),
        _ => Ok((decoded, vec![])),
    }
}

const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label)
}

/// Name rules: namespaces and services are DNS-1123 labels, the rest
/// DNS-1123 subdomains (kube-apiserver's per-kind name validators).
pub fn validate_name(rt: &ResourceType, name: &str, field: &str) -> Vec<FieldError> {
    if name.is_empty() {
        return vec![FieldError::required(field)];
    }
    let label_only = rt.group.is_empty() && matches!(rt.kind.as_str(), "Namespace" | "Service");
    if rt.group == "rbac.authorization.k8s.io" {
        // Path segment names: anything but "." / ".." and no '/' or '%'.
        if name == "." || name == ".." || name.contains('/') || name.contains('%') {
            return vec![FieldError::invalid(field, &json!(name), "may not contain '/' or '%'")];
        }
        return vec![];
    }
    if label_only {
        if !is_label(name) {
            return vec![FieldError::invalid(field, &json!(name), DNS1123_LABEL_MSG)];
        }
    } else if !is_subdomain(name) {
        return vec![FieldError::invalid(field, &json!(name), DNS1123_SUBDOMAIN_MSG)];
    }
    vec![]
}

fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    name_ok && prefix.is_none_or(is_subdomain)
}

fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric())
}

/// Validates metadata and the kind-specific rules kube-apiserver applies.
pub fn validate(rt: &ResourceType, obj: &Value) -> Vec<FieldError> {
    let meta = &obj["metadata"];
    let mut errs = Vec::new();
    let name = meta["name"].as_str().unwrap_or_default();
    if meta["generateName"].as_str().is_none_or(str::is_empty) || !name.is_empty() {
        errs.extend(validate_name(rt, name, "metadata.name"));
    }
    if let Some(labels) = meta["labels"].as_object() {
        for (k, v) in labels {
            if !is_qualified_name(k) {
                errs.push(FieldError::invalid("metadata.labels", &json!(k), "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"));
            }
            if !v.as_str().is_some_and(is_label_value) {
                errs.push(FieldError::invalid("metadata.labels", v, "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"));
            }
        }
    }
    if let Some(annotations) = meta["annotations"].as_object() {
        for k in annotations.keys() {
            if !is_qualified_name(k) {
                errs.push(FieldError::invalid("metadata.annotations", &json!(k), "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"));
            }
        }
    }
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Pod") => validate_pod_spec(&obj["spec"], "spec", &mut errs),
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet") => {
            let spec = &obj["spec"];
            if spec["selector"].is_null() {
                errs.push(FieldError::required("spec.selector"));
            } else if let Some(want) = spec["selector"]["matchLabels"].as_object() {
                let labels = &spec["template"]["metadata"]["labels"];
                let matches = want.iter().all(|(k, v)| labels.get(k) == Some(v));
                if !matches {
                    errs.push(FieldError::invalid(
                        "spec.template.metadata.labels",
                        labels,
                        "`selector` does not match template `labels`",
                    ));
                }
            }
            if let Some(r) = spec["replicas"].as_i64()
                && r < 0
            {
                errs.push(FieldError::invalid(
                    "spec.replicas",
                    &json!(r),
                    "must be greater than or equal to 0",
                ));
            }
            validate_pod_spec(&spec["template"]["spec"], "spec.template.spec", &mut errs);
        }
        ("batch", "Job") => {
            validate_pod_spec(&obj["spec"]["template"]["spec"], "spec.template.spec", &mut errs)
        }
        ("", "ConfigMap" | "Secret") => {
            for field in ["data", "binaryData", "stringData"] {
                if let Some(m) = obj[field].as_object() {
                    for k in m.keys() {
                        let ok = !k.is_empty()
                            && k.len() <= 253
                            && k.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
                        if !ok {
                            errs.push(FieldError::invalid(format!("{field}[{k}]"), &json!(k), "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"));
                        }
                    }
                }
            }
        }
        ("", "Service") => {
            if let Some(ports) = obj["spec"]["ports"].as_array() {
                for (i, p) in ports.iter().enumerate() {
                    match p["port"].as_i64() {
                        Some(1..=65535) => {}
                        Some(n) => errs.push(FieldError::invalid(
                            format!("spec.ports[{i}].port"),
                            &json!(n),
                            "must be between 1 and 65535, inclusive",
                        )),
                        None => errs.push(FieldError::required(format!("spec.ports[{i}].port"))),
                    }
                }
            }
        }
        _ => {}
    }
    errs
}

fn validate_pod_spec(spec: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let containers = spec["containers"].as_array();
    match containers {
        None => errs.push(FieldError::required(format!("{path}.containers"))),
        Some(cs) if cs.is_empty() => errs.push(FieldError::required(format!("{path}.containers"))),
        Some(cs) => {
            let mut names = Vec::new();
            for (i, c) in cs.iter().enumerate() {
                let name = c["name"].as_str().unwrap_or_default();
                if name.is_empty() {
                    errs.push(FieldError::required(format!("{path}.containers[{i}].name")));
                } else if !is_label(name) {
                    errs.push(FieldError::invalid(
                        format!("{path}.containers[{i}].name"),
                        &json!(name),
                        DNS1123_LABEL_MSG,
                    ));
                } else if names.contains(&name) {
                    errs.push(FieldError::duplicate(format!("{path}.containers[{i}].name"), &json!(name)));
                }
                names.push(name);
                if c["image"].as_str().is_none_or(|s| s.trim().is_empty()) {
                    errs.push(FieldError::required(format!("{path}.containers[{i}].image")));
                }
            }
        }
    }
    if let Some(p) = spec["restartPolicy"].as_str()
        && !["Always", "OnFailure", "Never"].contains(&p)
    {
        errs.push(FieldError::not_supported(
            format!("{path}.restartPolicy"),
            &json!(p),
            &["Always", "OnFailure", "Never"],
        ));
    }
}

fn set_default(obj: &mut Value, field: &str, value: Value) {
    if let Some(m) = obj.as_object_mut()
        && m.get(field).is_none_or(Value::is_null)
    {
        m.insert(field.into(), value);
    }
}

fn object_at<'a>(obj: &'a mut Value, field: &str) -> &'a mut Value {
    if obj.get(field).is_none_or(|v| !v.is_object()) {
        obj[field] = Value::Object(Map::new());
    }
    &mut obj[field]
}

fn default_container(c: &mut Value) {
    let image = c["image"].as_str().unwrap_or_default().to_string();
    let last = image.rsplit('/').next().unwrap_or_default();
    let latest = !image.contains('@') && (!last.contains(':') || last.ends_with(":latest"));
    set_default(c, "imagePullPolicy", json!(if latest { "Always" } else { "IfNotPresent" }));
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    set_default(c, "resources", json!({}));
    if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports {
            set_default(p, "protocol", json!("TCP"));
        }
    }
}

/// kube-apiserver's defaults for a pod spec.
pub fn default_pod_spec(spec: &mut Value) {
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "enableServiceLinks", json!(true));
    for field in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(field).and_then(Value::as_array_mut) {
            for c in cs {
                default_container(c);
            }
        }
    }
}

fn default_template(spec: &mut Value) {
    let template = object_at(spec, "template");
    object_at(template, "metadata");
    default_pod_spec(object_at(template, "spec"));
}

/// Fills the defaults kube-apiserver fills for the built-in kinds.
pub fn apply_defaults(rt: &ResourceType, obj: &mut Value) {
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Pod") => {
            let spec = object_at(obj, "spec");
            default_pod_spec(spec);
            // The Priority admission plugin's defaults.
            set_default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
            set_default(spec, "priority", json!(0));
            let qos = qos_class(&obj["spec"]);
            let status = object_at(obj, "status");
            set_default(status, "phase", json!("Pending"));
            set_default(status, "qosClass", json!(qos));
        }
        ("", "Namespace") => {
            let name = obj["metadata"]["name"].clone();
            let labels = object_at(object_at(obj, "metadata"), "labels");
            labels["kubernetes.io/metadata.name"] = name;
            set_default(object_at(obj, "spec"), "finalizers", json!(["kubernetes"]));
            set_default(object_at(obj, "status"), "phase", json!("Active"));
        }
        ("", "Service") => {
            let spec = object_at(obj, "spec");
            set_default(spec, "type", json!("ClusterIP"));
            set_default(spec, "sessionAffinity", json!("None"));
            set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
            set_default(spec, "ipFamilies", json!(["IPv4"]));
            set_default(spec, "internalTrafficPolicy", json!("Cluster"));
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports {
                    set_default(p, "protocol", json!("TCP"));
                    let port = p["port"].clone();
                    set_default(p, "targetPort", port);
                }
            }
            set_default(object_at(obj, "status"), "loadBalancer", json!({}));
        }
        ("", "Secret") => {
            set_default(obj, "type", json!("Opaque"));
            // stringData is write-only: merged into data as base64.
            if let Some(string_data) = obj.get("stringData").and_then(Value::as_object).cloned() {
                use base64::Engine;
                let data = object_at(obj, "data");
                for (k, v) in string_data {
                    let s = v.as_str().unwrap_or_default();
                    data[k.as_str()] = json!(base64::engine::general_purpose::STANDARD.encode(s));
                }
                obj.as_object_mut().map(|m| m.remove("stringData"));
            }
        }
        ("apps", "Deployment") => {
            let spec = object_at(obj, "spec");
            set_default(spec, "replicas", json!(1));
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(spec, "progressDeadlineSeconds", json!(600));
            set_default(
                spec,
                "strategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
            );
            default_template(spec);
            object_at(obj, "status");
        }
        ("apps", "ReplicaSet") => {
            let spec = object_at(obj, "spec");
            set_default(spec, "replicas", json!(1));
            default_template(spec);
            set_default(object_at(obj, "status"), "replicas", json!(0));
        }
        ("apps", "StatefulSet") => {
            let spec = object_at(obj, "spec");
            set_default(spec, "replicas", json!(1));
            set_default(spec, "podManagementPolicy", json!("OrderedReady"));
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
            );
            set_default(
                spec,
                "persistentVolumeClaimRetentionPolicy",
                json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
            );
            default_template(spec);
            set_default(object_at(obj, "status"), "replicas", json!(0));
        }
        ("apps", "DaemonSet") => {
            let spec = object_at(obj, "spec");
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
            );
            default_template(spec);
            let status = object_at(obj, "status");
            for f in ["currentNumberScheduled", "numberMisscheduled", "desiredNumberScheduled", "numberReady"]
            {
                set_default(status, f, json!(0));
            }
        }
        ("batch", "Job") => {
            let spec = object_at(obj, "spec");
            set_default(spec, "parallelism", json!(1));
            set_default(spec, "completions", json!(1));
            set_default(spec, "backoffLimit", json!(6));
            set_default(spec, "completionMode", json!("NonIndexed"));
            set_default(spec, "suspend", json!(false));
            set_default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
            default_template(spec);
            object_at(obj, "status");
        }
        ("batch", "CronJob") => {
            let spec = object_at(obj, "spec");
            set_default(spec, "concurrencyPolicy", json!("Allow"));
            set_default(spec, "suspend", json!(false));
            set_default(spec, "successfulJobsHistoryLimit", json!(3));
            set_default(spec, "failedJobsHistoryLimit", json!(1));
            object_at(obj, "status");
        }
        _ => {}
    }
}

/// The pod's QoS class from its containers' requests and limits.
fn qos_class(spec: &Value) -> &'static str {
    let containers = spec["containers"].as_array().cloned().unwrap_or_default();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        let req = c["resources"]["requests"].as_object();
        let lim = c["resources"]["limits"].as_object();
        if req.is_some_and(|m| !m.is_empty()) || lim.is_some_and(|m| !m.is_empty()) {
            any = true;
        }
        for r in ["cpu", "memory"] {
            let l = lim.and_then(|m| m.get(r));
            let q = req.and_then(|m| m.get(r)).or(l);
            if l.is_none() || q != l {
                guaranteed = false;
            }
        }
    }
    if guaranteed && any {
        "Guaranteed"
    } else if any {
        "Burstable"
    } else {
        "BestEffort"
    }
}

/// A random suffix for `generateName` (kube's 5 characters from
/// "bcdfghjklmnpqrstvwxz2456789").
pub fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes[..5].iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect()
}

/// Now, as kube-apiserver writes metadata timestamps (RFC 3339, seconds).
pub fn now_rfc3339() -> String {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second()).unwrap_or(now).to_string()
}

/// Whether `spec` (everything but metadata and status) differs: kube bumps
/// `metadata.generation` then.
pub fn spec_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("metadata");
            m.remove("status");
        }
        v
    };
    strip(old) != strip(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::resources::Registry;

    #[test]
    fn unknown_fields_are_found_through_the_typed_schema() {
        let reg = Registry::default();
        let pods = reg.lookup("", "v1", "pods").unwrap();
        let body = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "nginx", "bogus": 1}], "nope": true}});
        let (_, warnings) = decode_body(&pods, body.clone(), FieldValidation::Warn).unwrap();
        assert_eq!(
            warnings,
            vec!["unknown field \"spec.containers[0].bogus\"", "unknown field \"spec.nope\""]
        );
        let err = decode_body(&pods, body, FieldValidation::Strict).unwrap_err();
        assert_eq!(err.code, 400);
        assert!(err.message.contains("strict decoding error: unknown field \"spec.containers[0].bogus\""));
    }

    #[test]
    fn names_follow_dns_1123() {
        let reg = Registry::default();
        let cm = reg.lookup("", "v1", "configmaps").unwrap();
        let ns = reg.lookup("", "v1", "namespaces").unwrap();
        assert!(validate_name(&cm, "a.b-c", "metadata.name").is_empty());
        assert_eq!(validate_name(&cm, "Bad", "metadata.name")[0].reason, "FieldValueInvalid");
        assert!(!validate_name(&ns, "a.b", "metadata.name").is_empty());
    }

    #[test]
    fn pods_get_kube_apiservers_defaults() {
        let reg = Registry::default();
        let pods = reg.lookup("", "v1", "pods").unwrap();
        let mut pod =
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
        apply_defaults(&pods, &mut pod);
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(pod["status"]["phase"], "Pending");
        assert_eq!(pod["status"]["qosClass"], "BestEffort");
    }
}
