//! OpenAPI v3, as kube-apiserver serves it: `GET /openapi/v3` is the index
//! of group-versions (`{"paths": {"api/v1": {"serverRelativeURL":
//! "/openapi/v3/api/v1?hash=…"}}}`) and `GET /openapi/v3/api/v1`,
//! `/openapi/v3/apis/{group}/{version}` are one OpenAPI 3.0 document each.
//!
//! What kubectl reads from them:
//! - `kubectl explain` finds the kind through the `x-kubernetes-group-version-kind`
//!   extension (one object) of an operation on the resource's path, then
//!   the component schema whose extension (a list) contains the same map,
//!   and follows `$ref`/`allOf` from there.
//! - `--validate=strict` (create, apply, replace) sends `fieldValidation=Strict`
//!   when the PATCH operation of the kind lists a `fieldValidation` query
//!   parameter (inline, not a `$ref`); every PATCH of a kind (main resource
//!   and subresources) lists it, since kubectl looks at the first it meets.
//! - client-side `kubectl apply` computes strategic merge patches from the
//!   kind's schema when its PATCH request body lists
//!   `application/strategic-merge-patch+json` (built-in kinds only), using
//!   `x-kubernetes-patch-strategy`/`x-kubernetes-patch-merge-key`.
//!
//! Schemas of the built-in kinds come from k8s-openapi's `schemars`
//! implementations (generated with the OpenAPI 3.0 settings, so references
//! are `#/components/schemas/io.k8s…` and a `$ref` with a description is an
//! `allOf` as kube-apiserver writes it); custom resources use their
//! definition's `openAPIV3Schema` with `apiVersion`, `kind` and `metadata`
//! added. A document is generated once per group-version and kept until the
//! served types of that group-version change (custom resource definitions);
//! its hash (sha256 of the JSON) is the `hash` of the index and the ETag.
//!
//! Every document is JSON (`application/json`), whatever the `Accept`
//! header asks for; kubectl only asks for JSON.
//!
//! `/openapi/v2` is not served (404). kubectl 1.32 reads OpenAPI v3 for
//! explain, for the fieldValidation check and for apply's patch metadata,
//! and falls back to v2 only when v3 fails (checked: `kubectl explain`,
//! `create` and `apply` against Keelson never ask for v2). v2 is fetched as
//! gnostic protobuf, which Keelson does not produce; were v3 to fail,
//! kubectl's further fallbacks (its compiled-in types for strategic merge
//! patches) still work.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use parking_lot::Mutex;
use schemars::JsonSchema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::handlers::KubeApi;
use super::resources::ResourceType;
use super::status::ApiError;
use crate::backend::Backend;

const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1";
const REF_PREFIX: &str = "#/components/schemas/";

/// One group-version's document as served.
#[derive(Clone)]
struct Doc {
    /// The types it was generated from (compared to decide whether it is
    /// still current).
    types: Vec<Arc<ResourceType>>,
    body: Bytes,
    hash: String,
}

/// Generated documents by group-version path ("api/v1", "apis/apps/v1").
/// Shared by every API server of the process: an entry is reused only for
/// the very same types.
static CACHE: LazyLock<Mutex<HashMap<String, Doc>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// "api/v1" or "apis/apps/v1".
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") }
}

fn same_types(a: &[Arc<ResourceType>], b: &[Arc<ResourceType>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| Arc::ptr_eq(x, y) || x == y)
}

/// The document of a group-version, from the cache or generated now.
fn document_for(types: Vec<Arc<ResourceType>>, group: &str, version: &str) -> Doc {
    let key = gv_path(group, version);
    if let Some(doc) = CACHE.lock().get(&key)
        && same_types(&doc.types, &types)
    {
        return doc.clone();
    }
    let refs: Vec<&ResourceType> = types.iter().map(|t| t.as_ref()).collect();
    let body = serde_json::to_vec(&generate(&refs, group, version)).unwrap_or_default();
    let hash: String = Sha256::digest(&body).iter().map(|b| format!("{b:02X}")).collect();
    let doc = Doc { types, body: Bytes::from(body), hash };
    CACHE.lock().insert(key, doc.clone());
    doc
}

/// The served group-versions with their types, in discovery order.
fn served<B: Backend>(api: &KubeApi<B>) -> Vec<(String, String, Vec<Arc<ResourceType>>)> {
    let all = api.registry.all();
    let mut out = Vec::new();
    for (group, versions) in api.registry.groups() {
        for version in versions {
            let types: Vec<Arc<ResourceType>> =
                all.iter().filter(|r| r.group == group && r.version == version).cloned().collect();
            out.push((group.clone(), version, types));
        }
    }
    out
}

fn etag_matches(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == etag
        })
}

fn query_param(req: &Request, name: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| v.to_string())
    })
}

/// What `/openapi/v2` answers a protobuf request with: kubectl asks for
/// `application/com.github.proto-openapi.spec.v2@v1.0+protobuf` (gnostic's
/// `openapi.v2.Document`), whose `@` Go's media type parser refuses in a
/// response, so the answer is labelled `application/octet-stream`, as
/// kube-apiserver labels it.
pub const V2_PROTOBUF_RESPONSE: &str = "application/octet-stream";

/// `GET /openapi/v2`: a Swagger 2.0 document with no paths and no
/// definitions (the schemas are served by `/openapi/v3`). kubectl reads
/// `/openapi/v2` (as protobuf) only to validate a `kind: List` file on the
/// client side; finding no definition for the items' kinds it leaves them
/// to the server, whose Strict field validation judges each item as it
/// judges any object. Without the endpoint `kubectl create -f list.yaml`
/// failed with "the server could not find the requested resource".
pub async fn v2(req: Request) -> Response {
    let version = format!("v1.33.0+keelson-{}", env!("CARGO_PKG_VERSION"));
    let wants_protobuf = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("protobuf") && !a.contains("json"));
    if wants_protobuf {
        return (StatusCode::OK, [(header::CONTENT_TYPE, V2_PROTOBUF_RESPONSE)], v2_protobuf(&version))
            .into_response();
    }
    let doc = json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": version},
        "paths": {},
        "definitions": {},
    });
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], doc.to_string()).into_response()
}

/// `openapi.v2.Document{swagger: "2.0", info: {title, version}, paths: {},
/// definitions: {}}` in protobuf (field numbers from gnostic's
/// OpenAPIv2.proto: Document.swagger 1, info 2, paths 8, definitions 9;
/// Info.title 1, version 2).
fn v2_protobuf(version: &str) -> Vec<u8> {
    fn field(out: &mut Vec<u8>, number: u8, bytes: &[u8]) {
        out.push(number << 3 | 2);
        let mut len = bytes.len();
        while len >= 0x80 {
            out.push((len as u8 & 0x7f) | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
        out.extend_from_slice(bytes);
    }
    let mut info = Vec::new();
    field(&mut info, 1, b"Kubernetes");
    field(&mut info, 2, version.as_bytes());
    let mut doc = Vec::new();
    field(&mut doc, 1, b"2.0");
    field(&mut doc, 2, &info);
    field(&mut doc, 8, &[]);
    field(&mut doc, 9, &[]);
    doc
}

/// `GET /openapi/v3`: the index of group-version documents.
pub async fn index<B: Backend>(State(api): State<Arc<KubeApi<B>>>, req: Request) -> Response {
    let mut paths = Map::new();
    for (group, version, types) in served(&api) {
        let path = gv_path(&group, &version);
        let doc = document_for(types, &group, &version);
        paths.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={}", doc.hash)}),
        );
    }
    let body = serde_json::to_vec(&json!({ "paths": paths })).unwrap_or_default();
    let hash: String = Sha256::digest(&body).iter().take(16).map(|b| format!("{b:02X}")).collect();
    let etag = format!("\"{hash}\"");
    let mut resp = if etag_matches(req.headers(), &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    };
    if let Ok(v) = HeaderValue::from_str(&etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

/// `GET /openapi/v3/api/{version}`, `GET /openapi/v3/apis/{group}/{version}`.
pub async fn group_version<B: Backend>(State(api): State<Arc<KubeApi<B>>>, req: Request) -> Response {
    let rest = req.uri().path().trim_start_matches("/openapi/v3/").trim_end_matches('/');
    let segs: Vec<&str> = rest.split('/').collect();
    let (group, version) = match segs.as_slice() {
        ["api", v] => ("", *v),
        ["apis", g, v] => (*g, *v),
        _ => return not_found(),
    };
    let types: Vec<Arc<ResourceType>> =
        api.registry.all().into_iter().filter(|r| r.group == group && r.version == version).collect();
    if types.is_empty() {
        return not_found();
    }
    let doc = document_for(types, group, version);
    if let Some(asked) = query_param(&req, "hash")
        && asked != doc.hash
    {
        let to = format!("/openapi/v3/{}?hash={}", gv_path(group, version), doc.hash);
        let mut resp = StatusCode::MOVED_PERMANENTLY.into_response();
        if let Ok(v) = HeaderValue::from_str(&to) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        return resp;
    }
    let etag = format!("\"{}\"", doc.hash);
    let mut resp = if etag_matches(req.headers(), &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], doc.body.clone()).into_response()
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    if query_param(&req, "hash").is_some() {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, immutable"));
    }
    resp
}

fn not_found() -> Response {
    ApiError::new(404, "NotFound", "the server could not find the requested resource").into_response()
}

// ---------------------------------------------------------------------------
// Schemas

/// A built-in kind with a compiled schema.
struct Builtin {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    /// Adds the kind's schema (and what it refers to) to the generator;
    /// returns the schema's name.
    add: fn(&mut SchemaGenerator) -> String,
    name: fn() -> std::borrow::Cow<'static, str>,
}

fn add_schema<T: JsonSchema>(g: &mut SchemaGenerator) -> String {
    g.subschema_for::<T>();
    T::schema_name().into_owned()
}

fn builtin<T: JsonSchema + k8s_openapi::Resource>() -> Builtin {
    Builtin {
        group: T::GROUP,
        version: T::VERSION,
        kind: T::KIND,
        add: add_schema::<T>,
        name: T::schema_name,
    }
}

/// The kinds whose schemas k8s-openapi compiles in: the served built-ins
/// and the kinds their subresources take.
fn builtins() -> Vec<Builtin> {
    use k8s_openapi::api::{
        apps, authentication, authorization, autoscaling, batch, coordination, core, discovery, rbac,
    };
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions;
    vec![
        builtin::<core::v1::Namespace>(),
        builtin::<core::v1::Pod>(),
        builtin::<core::v1::Node>(),
        builtin::<core::v1::Service>(),
        builtin::<core::v1::Endpoints>(),
        builtin::<core::v1::ConfigMap>(),
        builtin::<core::v1::Secret>(),
        builtin::<core::v1::ServiceAccount>(),
        builtin::<core::v1::Event>(),
        builtin::<core::v1::LimitRange>(),
        builtin::<core::v1::ResourceQuota>(),
        builtin::<core::v1::PersistentVolume>(),
        builtin::<core::v1::PersistentVolumeClaim>(),
        builtin::<core::v1::ReplicationController>(),
        builtin::<core::v1::PodTemplate>(),
        builtin::<core::v1::Binding>(),
        builtin::<apps::v1::Deployment>(),
        builtin::<apps::v1::ReplicaSet>(),
        builtin::<apps::v1::StatefulSet>(),
        builtin::<apps::v1::DaemonSet>(),
        builtin::<apps::v1::ControllerRevision>(),
        builtin::<batch::v1::Job>(),
        builtin::<batch::v1::CronJob>(),
        builtin::<coordination::v1::Lease>(),
        builtin::<rbac::v1::Role>(),
        builtin::<rbac::v1::ClusterRole>(),
        builtin::<rbac::v1::RoleBinding>(),
        builtin::<rbac::v1::ClusterRoleBinding>(),
        builtin::<discovery::v1::EndpointSlice>(),
        builtin::<apiextensions::v1::CustomResourceDefinition>(),
        builtin::<authorization::v1::SelfSubjectAccessReview>(),
        builtin::<authorization::v1::SelfSubjectRulesReview>(),
        builtin::<authorization::v1::SubjectAccessReview>(),
        builtin::<authorization::v1::LocalSubjectAccessReview>(),
        builtin::<authentication::v1::TokenRequest>(),
        builtin::<authentication::v1::SelfSubjectReview>(),
        builtin::<authentication::v1::TokenReview>(),
        builtin::<autoscaling::v1::Scale>(),
    ]
}

fn find_builtin(group: &str, version: &str, kind: &str) -> Option<Builtin> {
    builtins().into_iter().find(|b| b.group == group && b.version == version && b.kind == kind)
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "kind": kind, "version": version})
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("{REF_PREFIX}{name}")})
}

/// `{"allOf": [{"$ref": …}], "description": …}`, kube-apiserver's form of
/// a described reference.
fn described_ref(name: &str, description: &str) -> Value {
    json!({"allOf": [schema_ref(name)], "description": description})
}

const API_VERSION_DOC: &str = "APIVersion defines the versioned schema of this representation of an object. \
Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. \
More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources";
const KIND_DOC: &str = "Kind is a string value representing the REST resource this object represents. \
Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. \
More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds";
const METADATA_DOC: &str = "Standard object's metadata. \
More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

/// The `{Kind}List` schema over a kind's schema.
fn list_schema(item_schema: &str, group: &str, version: &str, kind: &str) -> Value {
    json!({
        "description": format!("{kind}List is a list of {kind}."),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"description": API_VERSION_DOC, "type": "string"},
            "kind": {"description": KIND_DOC, "type": "string"},
            "items": {
                "description": format!("List of {}.", kind.to_lowercase()),
                "type": "array",
                "items": schema_ref(item_schema),
            },
            "metadata": described_ref(&format!("{META}.ListMeta"),
                "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"),
        },
        "x-kubernetes-group-version-kind": [gvk(group, version, &format!("{kind}List"))],
    })
}

/// A custom resource's schema name, reversed-domain as kube-apiserver
/// names it ("com.example.stable.v1.CronTab").
fn custom_schema_name(rt: &ResourceType) -> String {
    let mut parts: Vec<&str> = rt.group.split('.').collect();
    parts.reverse();
    format!("{}.{}.{}", parts.join("."), rt.version, rt.kind)
}

/// A custom resource's schema: the definition's `openAPIV3Schema` with
/// `apiVersion`, `kind` and `metadata` as kube-apiserver publishes them.
fn custom_schema(rt: &ResourceType) -> Value {
    let mut schema = rt
        .custom
        .as_ref()
        .and_then(|c| c.schema.clone())
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    let obj = schema.as_object_mut().expect("checked above");
    obj.entry("type").or_insert_with(|| json!("object"));
    let props = obj.entry("properties").or_insert_with(|| json!({}));
    if let Some(props) = props.as_object_mut() {
        props.insert("apiVersion".into(), json!({"description": API_VERSION_DOC, "type": "string"}));
        props.insert("kind".into(), json!({"description": KIND_DOC, "type": "string"}));
        props.insert("metadata".into(), described_ref(&format!("{META}.ObjectMeta"), METADATA_DOC));
    }
    obj.insert("x-kubernetes-group-version-kind".into(), json!([gvk(&rt.group, &rt.version, &rt.kind)]));
    schema
}

/// Patch strategies of list and map fields (the `patchStrategy` and
/// `patchMergeKey` tags of the Go types), which k8s-openapi's schemas do
/// not carry: (schema, field, strategy, merge key).
const PATCH_META: &[(&str, &str, &str, &str)] = &[
    ("io.k8s.api.core.v1.PodSpec", "containers", "merge", "name"),
    ("io.k8s.api.core.v1.PodSpec", "initContainers", "merge", "name"),
    ("io.k8s.api.core.v1.PodSpec", "ephemeralContainers", "merge", "name"),
    ("io.k8s.api.core.v1.PodSpec", "volumes", "merge,retainKeys", "name"),
    ("io.k8s.api.core.v1.PodSpec", "imagePullSecrets", "merge", "name"),
    ("io.k8s.api.core.v1.PodSpec", "hostAliases", "merge", "ip"),
    ("io.k8s.api.core.v1.PodSpec", "topologySpreadConstraints", "merge", "topologyKey"),
    ("io.k8s.api.core.v1.PodSpec", "resourceClaims", "merge,retainKeys", "name"),
    ("io.k8s.api.core.v1.PodSpec", "schedulingGates", "merge", "name"),
    ("io.k8s.api.core.v1.Container", "env", "merge", "name"),
    ("io.k8s.api.core.v1.Container", "ports", "merge", "containerPort"),
    ("io.k8s.api.core.v1.Container", "volumeMounts", "merge", "mountPath"),
    ("io.k8s.api.core.v1.Container", "volumeDevices", "merge", "devicePath"),
    ("io.k8s.api.core.v1.EphemeralContainer", "env", "merge", "name"),
    ("io.k8s.api.core.v1.EphemeralContainer", "ports", "merge", "containerPort"),
    ("io.k8s.api.core.v1.EphemeralContainer", "volumeMounts", "merge", "mountPath"),
    ("io.k8s.api.core.v1.EphemeralContainer", "volumeDevices", "merge", "devicePath"),
    ("io.k8s.api.core.v1.ServiceSpec", "ports", "merge", "port"),
    ("io.k8s.api.core.v1.PodStatus", "conditions", "merge", "type"),
    ("io.k8s.api.core.v1.PodStatus", "podIPs", "merge", "ip"),
    ("io.k8s.api.core.v1.PodStatus", "hostIPs", "merge", "ip"),
    ("io.k8s.api.core.v1.NodeStatus", "conditions", "merge", "type"),
    ("io.k8s.api.core.v1.NodeStatus", "addresses", "merge", "type"),
    ("io.k8s.api.core.v1.NamespaceStatus", "conditions", "merge", "type"),
    ("io.k8s.api.core.v1.ServiceStatus", "conditions", "merge", "type"),
    ("io.k8s.api.apps.v1.DeploymentSpec", "strategy", "retainKeys", ""),
    ("io.k8s.api.apps.v1.DeploymentStatus", "conditions", "merge", "type"),
    ("io.k8s.api.apps.v1.ReplicaSetStatus", "conditions", "merge", "type"),
    ("io.k8s.api.apps.v1.StatefulSetStatus", "conditions", "merge", "type"),
    ("io.k8s.api.apps.v1.DaemonSetStatus", "conditions", "merge", "type"),
    ("io.k8s.api.apps.v1.DaemonSetSpec", "updateStrategy", "retainKeys", ""),
    ("io.k8s.api.batch.v1.JobStatus", "conditions", "merge", "type"),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "finalizers", "merge", ""),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "ownerReferences", "merge", "uid"),
];

fn add_patch_meta(schemas: &mut Map<String, Value>) {
    for (schema, field, strategy, key) in PATCH_META {
        let Some(prop) =
            schemas.get_mut(*schema).and_then(|s| s.pointer_mut(&format!("/properties/{field}")))
        else {
            continue;
        };
        let Some(prop) = prop.as_object_mut() else { continue };
        prop.insert("x-kubernetes-patch-strategy".into(), json!(strategy));
        if !key.is_empty() {
            prop.insert("x-kubernetes-patch-merge-key".into(), json!(key));
        }
    }
}

/// The schema name and GVK of what a subresource takes and returns.
fn subresource_kind(rt: &ResourceType, sub: &str) -> (String, String, String) {
    match sub {
        "scale" => ("autoscaling".into(), "v1".into(), "Scale".into()),
        "binding" => ("".into(), "v1".into(), "Binding".into()),
        "token" => ("authentication.k8s.io".into(), "v1".into(), "TokenRequest".into()),
        "eviction" => ("policy".into(), "v1".into(), "Eviction".into()),
        _ => (rt.group.clone(), rt.version.clone(), rt.kind.clone()),
    }
}

// ---------------------------------------------------------------------------
// Operations

fn query(name: &str, description: &str, ty: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": ty, "uniqueItems": true}})
}

fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "description": description,
        "schema": {"type": "string", "uniqueItems": true}})
}

fn pretty() -> Value {
    query("pretty", "If 'true', then the output is pretty printed.", "string")
}

fn dry_run() -> Value {
    query(
        "dryRun",
        "When present, indicates that modifications should not be persisted. An invalid or unrecognized \
         dryRun directive will result in an error response and no further processing of the request. \
         Valid values are: - All: all dry run stages will be processed",
        "string",
    )
}

fn field_manager(patch: bool) -> Value {
    let text = if patch {
        "fieldManager is a name associated with the actor or entity that is making these changes. The value \
         must be less than or 128 characters long, and only contain printable characters, as defined by \
         https://golang.org/pkg/unicode/#IsPrint. This field is required for apply requests \
         (application/apply-patch) but optional for non-apply patch types (JsonPatch, MergePatch, \
         StrategicMergePatch)."
    } else {
        "fieldManager is a name associated with the actor or entity that is making these changes. The value \
         must be less than or 128 characters long, and only contain printable characters, as defined by \
         https://golang.org/pkg/unicode/#IsPrint."
    };
    query("fieldManager", text, "string")
}

fn field_validation() -> Value {
    query(
        "fieldValidation",
        "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) \
         containing unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown \
         fields that are silently dropped from the object, and will ignore all but the last duplicate field \
         that the decoder encounters. - Warn: This will send a warning via the standard warning response \
         header for each unknown field that is dropped from the object, and for each duplicate field that is \
         encountered. The request will still succeed if there are no other errors, and will only persist the \
         last of any duplicate fields. - Strict: This will fail the request with a BadRequest error if any \
         unknown fields would be dropped from the object, or if any duplicate fields are present. The error \
         returned from the server will contain all unknown and duplicate fields encountered.",
        "string",
    )
}

fn force() -> Value {
    query(
        "force",
        "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by \
         other people. Force flag must be unset for non-apply patch requests.",
        "boolean",
    )
}

fn write_params() -> Vec<Value> {
    vec![dry_run(), field_manager(false), field_validation()]
}

fn list_params() -> Vec<Value> {
    vec![
        query(
            "allowWatchBookmarks",
            "allowWatchBookmarks requests watch events with type \"BOOKMARK\". Servers that do not implement \
             bookmarks may ignore this flag and bookmarks are sent at the server's discretion.",
            "boolean",
        ),
        query(
            "continue",
            "The continue option should be set when retrieving more results from the server. The value is \
             the continue token of the previous list response; the list is served at the revision of the \
             first page. An expired token yields a 410 ResourceExpired error.",
            "string",
        ),
        query(
            "fieldSelector",
            "A selector to restrict the list of returned objects by their fields. Defaults to everything.",
            "string",
        ),
        query(
            "labelSelector",
            "A selector to restrict the list of returned objects by their labels. Defaults to everything.",
            "string",
        ),
        query(
            "limit",
            "limit is a maximum number of responses to return for a list call. If more items exist, the \
             server will set the `continue` field on the list metadata to a value that can be used with the \
             same initial query to retrieve the next set of results.",
            "integer",
        ),
        query(
            "resourceVersion",
            "resourceVersion sets a constraint on what resource versions a request may be served from. See \
             https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for details. \
             Defaults to unset",
            "string",
        ),
        query(
            "resourceVersionMatch",
            "resourceVersionMatch determines how resourceVersion is applied to list calls. It is highly \
             recommended that resourceVersionMatch be set for list calls where resourceVersion is set. See \
             https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for details. \
             Defaults to unset",
            "string",
        ),
        query(
            "sendInitialEvents",
            "`sendInitialEvents=true` may be set together with `watch=true`. In that case, the watch stream \
             will begin with synthetic events to produce the current state of objects in the collection, \
             followed by a BOOKMARK event annotated with \"k8s.io/initial-events-end\".",
            "boolean",
        ),
        query(
            "timeoutSeconds",
            "Timeout for the list/watch call. This limits the duration of the call, regardless of any \
             activity or inactivity.",
            "integer",
        ),
        query(
            "watch",
            "Watch for changes to the described resources and return them as a stream of add, update, and \
             remove notifications. Specify resourceVersion.",
            "boolean",
        ),
    ]
}

fn delete_params() -> Vec<Value> {
    vec![
        dry_run(),
        query(
            "gracePeriodSeconds",
            "The duration in seconds before the object should be deleted. Value must be non-negative integer. \
             The value zero indicates delete immediately.",
            "integer",
        ),
        query(
            "ignoreStoreReadErrorWithClusterBreakingPotential",
            "if set to true, it will trigger an unsafe deletion of the resource in case the normal deletion \
             flow fails with a corrupt object error.",
            "boolean",
        ),
        query(
            "propagationPolicy",
            "Whether and how garbage collection will be performed. Acceptable values are: 'Orphan', \
             'Background', 'Foreground'.",
            "string",
        ),
    ]
}

/// `content` for a request or response body of the given schema.
fn content(schema: &Value, types: &[&str]) -> Value {
    let mut m = Map::new();
    for t in types {
        m.insert(t.to_string(), json!({ "schema": schema }));
    }
    Value::Object(m)
}

const JSON_YAML: &[&str] = &["application/json", "application/yaml"];

fn responses(codes: &[(&str, &str)], schema: &Value) -> Value {
    let mut m = Map::new();
    for (code, desc) in codes {
        m.insert(code.to_string(), json!({"description": desc, "content": content(schema, JSON_YAML)}));
    }
    m.insert("401".into(), json!({"description": "Unauthorized"}));
    Value::Object(m)
}

/// "Core", "Apps", "RbacAuthorization", "StableExampleCom".
fn group_camel(group: &str) -> String {
    if group.is_empty() {
        return "Core".into();
    }
    let g = group.strip_suffix(".k8s.io").unwrap_or(group);
    g.split(['.', '-']).map(capitalize).collect()
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn tag(group: &str, version: &str) -> String {
    if group.is_empty() {
        return format!("core_{version}");
    }
    let g = group_camel(group);
    let mut c = g.chars();
    let lower: String = c.next().map(|f| f.to_lowercase().chain(c).collect()).unwrap_or_default();
    format!("{lower}_{version}")
}

struct OpCtx {
    /// The GVK extension of the operations.
    gvk: Value,
    tag: String,
    /// `{verb}{Group}{Version}` prefix material.
    gv_camel: String,
}

impl OpCtx {
    fn op(&self, verb: &str, action: &str, name: &str, description: String) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("description".into(), json!(description));
        m.insert("operationId".into(), json!(format!("{verb}{}{name}", self.gv_camel)));
        m.insert("tags".into(), json!([self.tag]));
        m.insert("x-kubernetes-action".into(), json!(action));
        m.insert("x-kubernetes-group-version-kind".into(), self.gvk.clone());
        m
    }
}

/// Adds the operations of one resource (and its subresources) to `paths`.
fn resource_paths(
    paths: &mut Map<String, Value>,
    rt: &ResourceType,
    kind_schema: &str,
    list_schema_name: &str,
    builtin: bool,
) {
    let prefix = if rt.group.is_empty() {
        format!("/api/{}", rt.version)
    } else {
        format!("/apis/{}/{}", rt.group, rt.version)
    };
    let can = |v: &str| rt.verbs.iter().any(|x| x == v);
    let ctx = OpCtx {
        gvk: gvk(&rt.group, &rt.version, &rt.kind),
        tag: tag(&rt.group, &rt.version),
        gv_camel: format!("{}{}", group_camel(&rt.group), capitalize(&rt.version)),
    };
    let kind_ref = schema_ref(kind_schema);
    let status_ref = schema_ref(&format!("{META}.Status"));
    let ns = if rt.namespaced { "Namespaced" } else { "" };
    let kind = &rt.kind;
    let base = if rt.namespaced {
        format!("{prefix}/namespaces/{{namespace}}/{}", rt.plural)
    } else {
        format!("{prefix}/{}", rt.plural)
    };
    let ns_param = path_param("namespace", "object name and auth scope, such as for teams and projects");
    let name_param = path_param("name", &format!("name of the {kind}"));
    let mut common = Vec::new();
    if rt.namespaced {
        common.push(ns_param.clone());
    }
    common.push(pretty());

    let mut patch_types = vec!["application/json-patch+json", "application/merge-patch+json"];
    if builtin {
        patch_types.push("application/strategic-merge-patch+json");
    }
    patch_types.push("application/apply-patch+yaml");
    let patch_body = json!({"required": true,
        "content": content(&schema_ref(&format!("{META}.Patch")), &patch_types)});
    let patch_params = vec![dry_run(), field_manager(true), field_validation(), force()];

    // The collection.
    let mut coll = Map::new();
    if can("list") {
        let mut op =
            ctx.op("list", "list", &format!("{ns}{kind}"), format!("list or watch objects of kind {kind}"));
        op.insert("parameters".into(), json!(list_params()));
        op.insert("responses".into(), responses(&[("200", "OK")], &schema_ref(list_schema_name)));
        coll.insert("get".into(), Value::Object(op));
    }
    if can("create") {
        let mut op = ctx.op("create", "post", &format!("{ns}{kind}"), format!("create a {kind}"));
        op.insert("parameters".into(), json!(write_params()));
        op.insert("requestBody".into(), json!({"required": true, "content": content(&kind_ref, JSON_YAML)}));
        op.insert(
            "responses".into(),
            responses(&[("200", "OK"), ("201", "Created"), ("202", "Accepted")], &kind_ref),
        );
        coll.insert("post".into(), Value::Object(op));
    }
    if can("deletecollection") {
        let mut op = ctx.op(
            "delete",
            "deletecollection",
            &format!("Collection{ns}{kind}"),
            format!("delete collection of {kind}"),
        );
        let mut params = delete_params();
        params.extend(
            list_params().into_iter().filter(|p| p["name"] != "watch" && p["name"] != "allowWatchBookmarks"),
        );
        op.insert("parameters".into(), json!(params));
        op.insert(
            "requestBody".into(),
            json!({"content": content(&schema_ref(&format!("{META}.DeleteOptions")), JSON_YAML)}),
        );
        op.insert("responses".into(), responses(&[("200", "OK")], &status_ref));
        coll.insert("delete".into(), Value::Object(op));
    }
    if !coll.is_empty() {
        coll.insert("parameters".into(), json!(common));
        paths.insert(base.clone(), Value::Object(coll));
    }

    // Across namespaces.
    if rt.namespaced && can("list") {
        let mut op = ctx.op(
            "list",
            "list",
            &format!("{kind}ForAllNamespaces"),
            format!("list or watch objects of kind {kind}"),
        );
        op.insert("responses".into(), responses(&[("200", "OK")], &schema_ref(list_schema_name)));
        let mut params = list_params();
        params.push(pretty());
        paths.insert(
            format!("{prefix}/{}", rt.plural),
            json!({"get": Value::Object(op), "parameters": params}),
        );
    }

    // One object.
    let item = format!("{base}/{{name}}");
    let mut item_common = vec![name_param.clone()];
    if rt.namespaced {
        item_common.push(ns_param.clone());
    }
    item_common.push(pretty());
    let mut one = Map::new();
    if can("get") {
        let mut op = ctx.op("read", "get", &format!("{ns}{kind}"), format!("read the specified {kind}"));
        op.insert("responses".into(), responses(&[("200", "OK")], &kind_ref));
        one.insert("get".into(), Value::Object(op));
    }
    if can("update") {
        let mut op =
            ctx.op("replace", "put", &format!("{ns}{kind}"), format!("replace the specified {kind}"));
        op.insert("parameters".into(), json!(write_params()));
        op.insert("requestBody".into(), json!({"required": true, "content": content(&kind_ref, JSON_YAML)}));
        op.insert("responses".into(), responses(&[("200", "OK"), ("201", "Created")], &kind_ref));
        one.insert("put".into(), Value::Object(op));
    }
    if can("patch") {
        let mut op = ctx.op(
            "patch",
            "patch",
            &format!("{ns}{kind}"),
            format!("partially update the specified {kind}"),
        );
        op.insert("parameters".into(), json!(patch_params));
        op.insert("requestBody".into(), patch_body.clone());
        op.insert("responses".into(), responses(&[("200", "OK"), ("201", "Created")], &kind_ref));
        one.insert("patch".into(), Value::Object(op));
    }
    if can("delete") {
        let mut op = ctx.op("delete", "delete", &format!("{ns}{kind}"), format!("delete a {kind}"));
        op.insert("parameters".into(), json!(delete_params()));
        op.insert(
            "requestBody".into(),
            json!({"content": content(&schema_ref(&format!("{META}.DeleteOptions")), JSON_YAML)}),
        );
        op.insert("responses".into(), responses(&[("200", "OK"), ("202", "Accepted")], &kind_ref));
        one.insert("delete".into(), Value::Object(op));
    }
    if !one.is_empty() {
        one.insert("parameters".into(), json!(item_common));
        paths.insert(item.clone(), Value::Object(one));
    }

    // Subresources.
    for sub in &rt.subresources {
        let (g, v, k) = subresource_kind(rt, sub);
        let sub_schema =
            if (g.as_str(), v.as_str(), k.as_str()) == (rt.group.as_str(), rt.version.as_str(), kind) {
                kind_schema.to_string()
            } else {
                match find_builtin(&g, &v, &k) {
                    Some(b) => (b.name)().into_owned(),
                    None => continue,
                }
            };
        let sub_ref = schema_ref(&sub_schema);
        let sub_ctx = OpCtx { gvk: gvk(&g, &v, &k), tag: ctx.tag.clone(), gv_camel: ctx.gv_camel.clone() };
        let suffix = capitalize(sub);
        let name = format!("{ns}{kind}{suffix}");
        let mut m = Map::new();
        match sub.as_str() {
            "binding" | "token" | "eviction" => {
                let mut op = sub_ctx.op("create", "post", &name, format!("create {sub} of a {kind}"));
                op.insert("parameters".into(), json!(write_params()));
                op.insert(
                    "requestBody".into(),
                    json!({"required": true, "content": content(&sub_ref, JSON_YAML)}),
                );
                op.insert(
                    "responses".into(),
                    responses(&[("200", "OK"), ("201", "Created"), ("202", "Accepted")], &sub_ref),
                );
                m.insert("post".into(), Value::Object(op));
            }
            "finalize" => {
                let mut op =
                    sub_ctx.op("replace", "put", &name, format!("replace {sub} of the specified {kind}"));
                op.insert("parameters".into(), json!(write_params()));
                op.insert(
                    "requestBody".into(),
                    json!({"required": true, "content": content(&sub_ref, JSON_YAML)}),
                );
                op.insert("responses".into(), responses(&[("200", "OK"), ("201", "Created")], &sub_ref));
                m.insert("put".into(), Value::Object(op));
            }
            _ => {
                let mut op = sub_ctx.op("read", "get", &name, format!("read {sub} of the specified {kind}"));
                op.insert("responses".into(), responses(&[("200", "OK")], &sub_ref));
                m.insert("get".into(), Value::Object(op));
                let mut op =
                    sub_ctx.op("replace", "put", &name, format!("replace {sub} of the specified {kind}"));
                op.insert("parameters".into(), json!(write_params()));
                op.insert(
                    "requestBody".into(),
                    json!({"required": true, "content": content(&sub_ref, JSON_YAML)}),
                );
                op.insert("responses".into(), responses(&[("200", "OK"), ("201", "Created")], &sub_ref));
                m.insert("put".into(), Value::Object(op));
                let mut op = sub_ctx.op(
                    "patch",
                    "patch",
                    &name,
                    format!("partially update {sub} of the specified {kind}"),
                );
                op.insert("parameters".into(), json!(patch_params));
                op.insert("requestBody".into(), patch_body.clone());
                op.insert("responses".into(), responses(&[("200", "OK"), ("201", "Created")], &sub_ref));
                m.insert("patch".into(), Value::Object(op));
            }
        }
        m.insert("parameters".into(), json!(item_common));
        paths.insert(format!("{item}/{sub}"), Value::Object(m));
    }
}

/// The OpenAPI 3.0 document of one group-version.
pub fn generate(types: &[&ResourceType], group: &str, version: &str) -> Value {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
    let mut generator = SchemaSettings::openapi3().into_generator();
    for name in [
        add_schema::<meta::Status>(&mut generator),
        add_schema::<meta::DeleteOptions>(&mut generator),
        add_schema::<meta::Patch>(&mut generator),
        add_schema::<meta::ObjectMeta>(&mut generator),
        add_schema::<meta::ListMeta>(&mut generator),
    ] {
        debug_assert!(name.starts_with(META));
    }
    // (resource, kind schema, list schema, built-in)
    let mut plan: Vec<(&ResourceType, String, String, bool)> = Vec::new();
    let mut custom: Vec<(String, Value)> = Vec::new();
    for rt in types {
        let (name, is_builtin) =
            match (rt.custom.is_none()).then(|| find_builtin(&rt.group, &rt.version, &rt.kind)).flatten() {
                Some(b) => ((b.add)(&mut generator), true),
                None => {
                    let name = if rt.custom.is_some() {
                        custom_schema_name(rt)
                    } else {
                        format!("io.keelson.{}.{}.{}", group_camel(&rt.group), rt.version, rt.kind)
                    };
                    custom.push((name.clone(), custom_schema(rt)));
                    (name, false)
                }
            };
        plan.push((rt, name.clone(), format!("{name}List"), is_builtin));
        for sub in &rt.subresources {
            let (g, v, k) = subresource_kind(rt, sub);
            if let Some(b) = find_builtin(&g, &v, &k) {
                (b.add)(&mut generator);
            }
        }
    }
    let mut schemas: Map<String, Value> = generator.take_definitions(true).into_iter().collect();
    for (name, schema) in custom {
        schemas.insert(name, schema);
    }
    // GVK extensions on the kinds of this document (and subresource kinds).
    for b in builtins() {
        if let Some(Value::Object(s)) = schemas.get_mut((b.name)().as_ref()) {
            s.insert("x-kubernetes-group-version-kind".into(), json!([gvk(b.group, b.version, b.kind)]));
            // k8s-openapi requires `metadata` (not optional in Rust); the
            // API does not.
            if let Some(Value::Array(required)) = s.get_mut("required") {
                required.retain(|r| r != "metadata");
                if required.is_empty() {
                    s.remove("required");
                }
            }
        }
    }
    for (rt, name, list_name, _) in &plan {
        schemas.insert(list_name.clone(), list_schema(name, &rt.group, &rt.version, &rt.kind));
    }
    for kind in ["Status", "DeleteOptions"] {
        if let Some(Value::Object(s)) = schemas.get_mut(&format!("{META}.{kind}")) {
            s.insert("x-kubernetes-group-version-kind".into(), json!([gvk(group, version, kind)]));
        }
    }
    add_patch_meta(&mut schemas);

    let mut paths = Map::new();
    for (rt, name, list_name, is_builtin) in &plan {
        resource_paths(&mut paths, rt, name, list_name, *is_builtin);
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"BearerToken": {"type": "apiKey", "in": "header", "name": "authorization",
                "description": "Bearer Token authentication"}},
        },
        "security": [{"BearerToken": []}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::resources::Registry;

    #[test]
    fn openapi_v2_is_an_empty_swagger_document_in_protobuf() {
        let pb = v2_protobuf("v1.33.0");
        let mut want = vec![0x0a, 3, b'2', b'.', b'0', 0x12, 21, 0x0a, 10];
        want.extend_from_slice(b"Kubernetes");
        want.extend_from_slice(&[0x12, 7]);
        want.extend_from_slice(b"v1.33.0");
        want.extend_from_slice(&[0x42, 0, 0x4a, 0]);
        assert_eq!(pb, want);
    }

    fn doc(reg: &Registry, group: &str, version: &str) -> Value {
        let all = reg.all();
        let types: Vec<&ResourceType> =
            all.iter().map(|r| r.as_ref()).filter(|r| r.group == group && r.version == version).collect();
        generate(&types, group, version)
    }

    #[test]
    fn index_lists_the_served_group_versions() {
        let reg = Registry::default();
        let paths: Vec<String> = reg
            .groups()
            .into_iter()
            .flat_map(|(g, vs)| vs.into_iter().map(move |v| gv_path(&g, &v)))
            .collect();
        assert!(paths.contains(&"api/v1".to_string()));
        assert!(paths.contains(&"apis/apps/v1".to_string()));
        let all = reg.all();
        let core: Vec<Arc<ResourceType>> = all.iter().filter(|r| r.group.is_empty()).cloned().collect();
        let a = document_for(core.clone(), "", "v1");
        let b = document_for(core, "", "v1");
        assert_eq!(a.hash, b.hash);
        assert!(!a.hash.is_empty());
    }

    #[tokio::test]
    async fn the_router_serves_the_index_and_the_documents() {
        use crate::kube::handlers::Identity;
        use crate::kube::storage::Storage;
        use axum::body::Body;
        use tower::ServiceExt;

        let ctx = crate::context::Ctx::new(crate::testing::FakeBackend::new(), crate::GrpcConfig::default());
        let api = Arc::new(KubeApi::new(Storage::new(ctx), Arc::new(Registry::default())));
        let router = crate::kube::router(api);
        let get = |uri: String, etag: Option<String>| {
            let router = router.clone();
            async move {
                let mut req = axum::http::Request::builder().uri(uri).header("accept", "application/json");
                if let Some(e) = etag {
                    req = req.header("if-none-match", e);
                }
                let mut req = req.body(Body::empty()).unwrap();
                req.extensions_mut()
                    .insert(Identity { user: "admin".into(), groups: vec!["system:masters".into()] });
                let resp = router.oneshot(req).await.unwrap();
                let status = resp.status();
                let etag = resp.headers().get("etag").map(|v| v.to_str().unwrap().to_string());
                let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
                (status, etag, serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null))
            }
        };
        let (status, _, index) = get("/openapi/v3".into(), None).await;
        assert_eq!(status, StatusCode::OK);
        let url = index["paths"]["api/v1"]["serverRelativeURL"].as_str().unwrap().to_string();
        assert!(url.starts_with("/openapi/v3/api/v1?hash="));
        assert!(index["paths"]["apis/apps/v1"]["serverRelativeURL"].is_string());
        let (status, etag, doc) = get(url.clone(), None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(doc["components"]["schemas"]["io.k8s.api.core.v1.Pod"].is_object());
        let (status, _, _) = get(url, etag).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        let (status, _, _) = get("/openapi/v3/api/v1?hash=stale".into(), None).await;
        assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
        let (status, _, _) = get("/openapi/v3/apis/nothing.example/v1".into(), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn pod_schema_is_reachable_with_its_gvk() {
        let reg = Registry::default();
        let d = doc(&reg, "", "v1");
        let schemas = &d["components"]["schemas"];
        let pod = &schemas["io.k8s.api.core.v1.Pod"];
        assert_eq!(
            pod["x-kubernetes-group-version-kind"],
            json!([{"group": "", "kind": "Pod", "version": "v1"}])
        );
        // spec is a described reference to PodSpec, which resolves.
        let spec_ref = pod["properties"]["spec"]["allOf"][0]["$ref"].as_str().unwrap();
        let target = spec_ref.strip_prefix(REF_PREFIX).unwrap();
        assert_eq!(target, "io.k8s.api.core.v1.PodSpec");
        assert!(schemas[target]["properties"]["containers"].is_object());
        assert_eq!(schemas[target]["properties"]["containers"]["x-kubernetes-patch-merge-key"], "name");
        assert!(schemas["io.k8s.api.core.v1.PodList"]["properties"]["items"].is_object());
        // Every reference resolves.
        let text = d.to_string();
        for part in text.split(&format!("\"{REF_PREFIX}")).skip(1) {
            let name = &part[..part.find('"').unwrap()];
            assert!(schemas.get(name).is_some(), "dangling reference {name}");
        }
    }

    #[test]
    fn patch_on_pods_lists_field_validation() {
        let reg = Registry::default();
        let d = doc(&reg, "", "v1");
        let item = &d["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"];
        let patch = &item["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"],
            json!({"group": "", "kind": "Pod", "version": "v1"})
        );
        let names: Vec<&str> =
            patch["parameters"].as_array().unwrap().iter().filter_map(|p| p["name"].as_str()).collect();
        assert!(names.contains(&"fieldValidation") && names.contains(&"force") && names.contains(&"dryRun"));
        assert!(patch["requestBody"]["content"]["application/strategic-merge-patch+json"].is_object());
        assert_eq!(patch["operationId"], "patchCoreV1NamespacedPod");
        // Every PATCH of the Pod kind (status too) lists it.
        let status = &d["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/status"]["patch"];
        assert!(status["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "fieldValidation"));
        let list = &d["paths"]["/api/v1/namespaces/{namespace}/pods"]["get"];
        let names: Vec<&str> =
            list["parameters"].as_array().unwrap().iter().filter_map(|p| p["name"].as_str()).collect();
        for p in [
            "labelSelector",
            "fieldSelector",
            "limit",
            "continue",
            "resourceVersion",
            "resourceVersionMatch",
            "watch",
            "allowWatchBookmarks",
            "sendInitialEvents",
            "timeoutSeconds",
        ] {
            assert!(names.contains(&p), "{p}");
        }
        assert!(d["paths"]["/api/v1/pods"]["get"].is_object());
    }

    #[test]
    fn apps_scale_and_custom_resources() {
        let reg = Registry::default();
        let d = doc(&reg, "apps", "v1");
        let scale = &d["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]["patch"];
        assert_eq!(scale["x-kubernetes-group-version-kind"]["kind"], "Scale");
        assert!(d["components"]["schemas"]["io.k8s.api.autoscaling.v1.Scale"].is_object());
        assert_eq!(
            d["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"]["x-kubernetes-group-version-kind"][0]
                ["kind"],
            "Deployment"
        );

        let crd = json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                        "spec": {"type": "object", "description": "the spec",
                            "properties": {"size": {"type": "integer"}}}}}}}]},
            "status": {"conditions": [{"type": "Established", "status": "True"}]}
        });
        reg.set_custom(&[crd]);
        let d = doc(&reg, "example.com", "v1");
        let w = &d["components"]["schemas"]["com.example.v1.Widget"];
        assert_eq!(
            w["x-kubernetes-group-version-kind"],
            json!([{"group": "example.com", "kind": "Widget", "version": "v1"}])
        );
        assert_eq!(w["properties"]["spec"]["properties"]["size"]["type"], "integer");
        assert!(w["properties"]["metadata"]["allOf"].is_array());
        assert!(d["components"]["schemas"]["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"].is_object());
        let patch = &d["paths"]["/apis/example.com/v1/namespaces/{namespace}/widgets/{name}"]["patch"];
        assert!(patch["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "fieldValidation"));
        assert!(patch["requestBody"]["content"].get("application/strategic-merge-patch+json").is_none());
    }
}
