//! The resource types the API serves: the built-in table and the types
//! custom resource definitions add once established.

use std::sync::Arc;

use parking_lot::RwLock;
use serde_json::Value;

/// One served resource (a group/version/resource with its kind).
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    /// The plural resource name in URLs and keys ("pods").
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Subresources served ("status", "scale", "binding", "token").
    pub subresources: Vec<String>,
    pub verbs: Vec<String>,
    /// For custom resources: the version's `openAPIV3Schema` and printer
    /// columns.
    pub custom: Option<CustomSchema>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CustomSchema {
    pub schema: Option<Value>,
    pub printer_columns: Vec<Value>,
    /// The versions of the custom resource definition, storage one first.
    pub served_versions: Vec<String>,
}

const CRUD: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

impl ResourceType {
    fn builtin(
        group: &str,
        version: &str,
        kind: &str,
        plural: &str,
        namespaced: bool,
        short: &[&str],
        subresources: &[&str],
    ) -> Self {
        let all = matches!(
            plural,
            "pods"
                | "services"
                | "deployments"
                | "replicasets"
                | "statefulsets"
                | "daemonsets"
                | "jobs"
                | "cronjobs"
                | "replicationcontrollers"
        );
        ResourceType {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            singular: kind.to_lowercase(),
            namespaced,
            short_names: short.iter().map(|s| s.to_string()).collect(),
            categories: if all { vec!["all".into()] } else { vec![] },
            subresources: subresources.iter().map(|s| s.to_string()).collect(),
            verbs: CRUD.iter().map(|s| s.to_string()).collect(),
            custom: None,
        }
    }

    /// "v1" or "apps/v1".
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    /// The key prefix every object of this type lives under, ending in '/'.
    pub fn type_prefix(&self) -> String {
        if self.custom.is_some() || self.group == "apiextensions.k8s.io" {
            format!("/registry/{}/{}/", self.group, self.plural)
        } else {
            format!("/registry/{}/", self.plural)
        }
    }

    /// The prefix for a list: one namespace or all of them.
    pub fn prefix(&self, namespace: Option<&str>) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("{}{ns}/", self.type_prefix()),
            _ => self.type_prefix(),
        }
    }

    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("{}{ns}/{name}", self.type_prefix()),
            _ => format!("{}{name}", self.type_prefix()),
        }
    }

    pub fn has_subresource(&self, sub: &str) -> bool {
        self.subresources.iter().any(|s| s == sub)
    }

    /// "pods" or "deployments.apps", as kube-apiserver names a resource in
    /// its messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() { self.plural.clone() } else { format!("{}.{}", self.plural, self.group) }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
}

/// The built-in types.
pub fn builtins() -> Vec<ResourceType> {
    let t = ResourceType::builtin;
    let mut v = vec![
        t("", "v1", "Namespace", "namespaces", false, &["ns"], &["status", "finalize"]),
        t("", "v1", "Pod", "pods", true, &["po"], &["status", "binding"]),
        t("", "v1", "Node", "nodes", false, &["no"], &["status"]),
        t("", "v1", "Service", "services", true, &["svc"], &["status"]),
        t("", "v1", "Endpoints", "endpoints", true, &["ep"], &[]),
        t("", "v1", "ConfigMap", "configmaps", true, &["cm"], &[]),
        t("", "v1", "Secret", "secrets", true, &[], &[]),
        t("", "v1", "ServiceAccount", "serviceaccounts", true, &["sa"], &["token"]),
        t("", "v1", "Event", "events", true, &["ev"], &[]),
        t("", "v1", "LimitRange", "limitranges", true, &["limits"], &[]),
        t("", "v1", "ResourceQuota", "resourcequotas", true, &["quota"], &["status"]),
        t("apps", "v1", "Deployment", "deployments", true, &["deploy"], &["status", "scale"]),
        t("apps", "v1", "ReplicaSet", "replicasets", true, &["rs"], &["status", "scale"]),
        t("apps", "v1", "StatefulSet", "statefulsets", true, &["sts"], &["status", "scale"]),
        t("apps", "v1", "DaemonSet", "daemonsets", true, &["ds"], &["status"]),
        t("batch", "v1", "Job", "jobs", true, &[], &["status"]),
        t("batch", "v1", "CronJob", "cronjobs", true, &["cj"], &["status"]),
        t("coordination.k8s.io", "v1", "Lease", "leases", true, &[], &[]),
        t("rbac.authorization.k8s.io", "v1", "Role", "roles", true, &[], &[]),
        t("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", false, &[], &[]),
        t("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", true, &[], &[]),
        t("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", false, &[], &[]),
        t("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", true, &[], &[]),
        t(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
            &["crd", "crds"],
            &["status"],
        ),
    ];
    for (group, kind, plural) in [
        ("authorization.k8s.io", "SelfSubjectAccessReview", "selfsubjectaccessreviews"),
        ("authorization.k8s.io", "SelfSubjectRulesReview", "selfsubjectrulesreviews"),
        ("authentication.k8s.io", "SelfSubjectReview", "selfsubjectreviews"),
    ] {
        let mut r = t(group, "v1", kind, plural, false, &[], &[]);
        r.verbs = vec!["create".into()];
        v.push(r);
    }
    v
}

/// Every served type: the built-ins and the established custom types.
pub struct Registry {
    builtin: Vec<Arc<ResourceType>>,
    custom: RwLock<Vec<Arc<ResourceType>>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry { builtin: builtins().into_iter().map(Arc::new).collect(), custom: RwLock::new(Vec::new()) }
    }
}

impl Registry {
    pub fn all(&self) -> Vec<Arc<ResourceType>> {
        let mut v = self.builtin.clone();
        v.extend(self.custom.read().iter().cloned());
        v
    }

    /// The type served at `group`/`version` under `plural`.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        let hit = |r: &Arc<ResourceType>| r.group == group && r.version == version && r.plural == plural;
        if let Some(r) = self.builtin.iter().find(|r| hit(r)) {
            return Some(r.clone());
        }
        self.custom.read().iter().find(|r| hit(r)).cloned()
    }

    pub fn by_kind(&self, group: &str, kind: &str) -> Option<Arc<ResourceType>> {
        self.all().into_iter().find(|r| r.group == group && r.kind == kind)
    }

    /// Replaces the custom types with those the given (established)
    /// definitions declare.
    pub fn set_custom(&self, definitions: &[Value]) {
        let mut types = Vec::new();
        for crd in definitions {
            types.extend(custom_types(crd));
        }
        *self.custom.write() = types.into_iter().map(Arc::new).collect();
    }

    /// The API groups, in discovery order (core first, as the table).
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for r in self.all() {
            match out.iter_mut().find(|(g, _)| *g == r.group) {
                Some((_, versions)) => {
                    if !versions.contains(&r.version) {
                        versions.push(r.version.clone());
                    }
                }
                None => out.push((r.group.clone(), vec![r.version.clone()])),
            }
        }
        out
    }
}

/// The types a custom resource definition serves (one per served
/// version), if it is established.
pub fn custom_types(crd: &Value) -> Vec<ResourceType> {
    let established = crd["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Established" && c["status"] == "True"));
    if !established || crd["metadata"]["deletionTimestamp"].is_string() {
        return vec![];
    }
    let spec = &crd["spec"];
    let names = &spec["names"];
    let str_list = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    let served: Vec<String> = versions
        .iter()
        .filter(|v| v["served"].as_bool().unwrap_or(false))
        .filter_map(|v| v["name"].as_str().map(str::to_string))
        .collect();
    versions
        .iter()
        .filter(|v| v["served"].as_bool().unwrap_or(false))
        .map(|v| {
            let mut subresources = Vec::new();
            if v["subresources"]["status"].is_object() {
                subresources.push("status".to_string());
            }
            if v["subresources"]["scale"].is_object() {
                subresources.push("scale".to_string());
            }
            let kind = names["kind"].as_str().unwrap_or_default().to_string();
            ResourceType {
                group: spec["group"].as_str().unwrap_or_default().into(),
                version: v["name"].as_str().unwrap_or_default().into(),
                singular: names["singular"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| kind.to_lowercase()),
                kind,
                plural: names["plural"].as_str().unwrap_or_default().into(),
                namespaced: spec["scope"] != "Cluster",
                short_names: str_list(&names["shortNames"]),
                categories: str_list(&names["categories"]),
                subresources,
                verbs: CRUD.iter().map(|s| s.to_string()).collect(),
                custom: Some(CustomSchema {
                    schema: v.get("schema").and_then(|s| s.get("openAPIV3Schema")).cloned(),
                    printer_columns: v["additionalPrinterColumns"].as_array().cloned().unwrap_or_default(),
                    served_versions: served.clone(),
                }),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_kube_apiservers_layout() {
        let reg = Registry::default();
        let pods = reg.lookup("", "v1", "pods").unwrap();
        assert_eq!(pods.key(Some("default"), "web"), "/registry/pods/default/web");
        assert_eq!(pods.prefix(None), "/registry/pods/");
        let ns = reg.lookup("", "v1", "namespaces").unwrap();
        assert_eq!(ns.key(None, "kube-system"), "/registry/namespaces/kube-system");
        let deploy = reg.lookup("apps", "v1", "deployments").unwrap();
        assert_eq!(deploy.key(Some("a"), "b"), "/registry/deployments/a/b");
        assert!(reg.lookup("apps", "v1", "pods").is_none());
    }

    #[test]
    fn an_established_definition_adds_its_served_versions() {
        let crd = serde_json::json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wg"]},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object"}}, "subresources": {"status": {}}},
                    {"name": "v0", "served": false, "storage": false}]},
            "status": {"conditions": [{"type": "Established", "status": "True"}]}
        });
        let reg = Registry::default();
        reg.set_custom(&[crd]);
        let w = reg.lookup("example.com", "v1", "widgets").unwrap();
        assert_eq!(w.key(Some("ns"), "x"), "/registry/example.com/widgets/ns/x");
        assert!(w.has_subresource("status"));
        assert!(reg.lookup("example.com", "v0", "widgets").is_none());
    }
}
