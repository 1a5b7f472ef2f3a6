// Input of scripts/gen_proto_schema.py (--openapi): the k8s-openapi definitions
// reachable from the served kinds. Run as the main.rs of a scratch crate with
//   k8s-openapi = { version = "0.29", features = ["v1_33", "schemars"] }, schemars = "1", serde_json = "1"
// `cargo run --release > /tmp/openapi_defs.json`. Not built with the workspace.
//! Dumps the OpenAPI (k8s-openapi schemars) definitions reachable from the
//! served kinds: {definitionName: {"properties": [...], "required": [...]}}.
use k8s_openapi::api::{apps, authentication, authorization, autoscaling, batch, coordination, core, discovery, rbac};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

fn main() {
    let mut g = SchemaSettings::openapi3().into_generator();
    macro_rules! add { ($($t:ty),* $(,)?) => { $( g.subschema_for::<$t>(); )* } }
    add!(
        core::v1::Namespace, core::v1::Pod, core::v1::Node, core::v1::Service, core::v1::Endpoints,
        core::v1::ConfigMap, core::v1::Secret, core::v1::ServiceAccount, core::v1::Event,
        core::v1::LimitRange, core::v1::ResourceQuota, core::v1::Binding,
        apps::v1::Deployment, apps::v1::ReplicaSet, apps::v1::StatefulSet, apps::v1::DaemonSet,
        autoscaling::v1::Scale, batch::v1::Job, batch::v1::CronJob, coordination::v1::Lease,
        rbac::v1::Role, rbac::v1::ClusterRole, rbac::v1::RoleBinding, rbac::v1::ClusterRoleBinding,
        discovery::v1::EndpointSlice, apiextensions::v1::CustomResourceDefinition,
        authorization::v1::SelfSubjectAccessReview, authorization::v1::SelfSubjectRulesReview,
        authentication::v1::TokenRequest, authentication::v1::SelfSubjectReview, meta::DeleteOptions,
    );
    let defs = g.take_definitions(true);
    let mut out = Map::new();
    for (name, schema) in defs {
        let props: Vec<String> = schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        let required = schema.get("required").cloned().unwrap_or(json!([]));
        out.insert(name, json!({"properties": props, "required": required}));
    }
    println!("{}", serde_json::to_string_pretty(&Value::Object(out)).unwrap());
}
