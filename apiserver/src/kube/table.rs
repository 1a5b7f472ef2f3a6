//! `Accept: application/json;as=Table;g=meta.k8s.io;v=v1`: objects as
//! kube-apiserver's Table, with its printer columns per kind.
//!
//! The columns and cells follow kube-apiserver's built-in printers
//! (`pkg/printers/internalversion`): the server always fills the wide
//! (priority 1) cells and kubectl shows them with `-o wide`. Kinds without a
//! printer there get the generic "Name, Created At" table; custom resources
//! get their version's `additionalPrinterColumns` (or "Age" when none are
//! declared).

use serde_json::{Map, Value, json};

use super::resources::ResourceType;

/// Whether the client asked for a Table (kubectl get does, with JSON as
/// the fallback).
pub fn wants_table(accept: &str) -> bool {
    accept.split(',').next().is_some_and(|first| first.contains("as=Table"))
}

/// What a row's `object` carries (`includeObject` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// `object: null`.
    None,
    /// A `PartialObjectMetadata` (kube-apiserver's default).
    #[default]
    Metadata,
    /// The whole object.
    Object,
}

impl IncludeObject {
    /// The `includeObject` query parameter's value; anything unknown is the
    /// default (metadata).
    pub fn parse(value: Option<&str>) -> Self {
        match value {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn parse_ts(ts: &Value) -> Option<i64> {
    ts.as_str().and_then(|s| s.parse::<jiff::Timestamp>().ok()).map(|t| t.as_millisecond())
}

/// "5s", "3m", "2d": kube's `HumanDuration` of the time since `ts`
/// ("<unknown>" when unset).
pub fn age(ts: &Value) -> String {
    age_at(ts, now_ms())
}

fn age_at(ts: &Value, now: i64) -> String {
    match parse_ts(ts) {
        Some(t) => human_duration_ms(now - t),
        None => "<unknown>".into(),
    }
}

/// kube's `duration.HumanDuration` for a whole number of seconds.
pub fn human_duration(secs: i64) -> String {
    human_duration_ms(secs.saturating_mul(1000))
}

/// kube's `duration.HumanDuration`: ~2-3 significant figures.
fn human_duration_ms(ms: i64) -> String {
    let seconds = ms / 1000;
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 { format!("{minutes}m") } else { format!("{minutes}m{s}s") };
    }
    if minutes < 3 * 60 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 { format!("{hours}h") } else { format!("{hours}h{m}m") };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 { format!("{}d", hours / 24) } else { format!("{}d{h}h", hours / 24) };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

// ---------------------------------------------------------------------------
// Column definitions.

const NAME_DESC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DESC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const CONTAINERS_DESC: &str = "Names of each container in the template.";
const IMAGES_DESC: &str = "Images referenced by each container in the template.";
const SELECTOR_DESC: &str = "A label query over pods that should match the replica count. It must match the pod template's labels. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors";

/// One column definition: (name, type, format, description, priority).
type Col = (&'static str, &'static str, &'static str, &'static str, i64);

const fn c(name: &'static str, ty: &'static str, desc: &'static str) -> Col {
    (name, ty, "", desc, 0)
}

const fn wide(name: &'static str, ty: &'static str, desc: &'static str) -> Col {
    (name, ty, "", desc, 1)
}

const NAME: Col = ("Name", "string", "name", NAME_DESC, 0);
const AGE: Col = c("Age", "string", AGE_DESC);

fn column(name: &str, ty: &str, format: &str, description: &str, priority: i64) -> Value {
    json!({ "name": name, "type": ty, "format": format, "description": description, "priority": priority })
}

/// The built-in printer's columns for a kind, if kube-apiserver has one.
fn builtin_columns(rt: &ResourceType) -> Option<Vec<Col>> {
    let cols = match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Pod") => vec![
            NAME,
            c("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
            c("Status", "string", "The aggregate status of the containers in this pod."),
            c(
                "Restarts",
                "string",
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            ),
            AGE,
            wide(
                "IP",
                "string",
                "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
            ),
            wide(
                "Node",
                "string",
                "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName.",
            ),
            wide(
                "Nominated Node",
                "string",
                "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods.",
            ),
            wide(
                "Readiness Gates",
                "string",
                "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to \"True\"",
            ),
        ],
        ("", "Namespace") => vec![NAME, c("Status", "string", "The status of the namespace"), AGE],
        ("", "Node") => vec![
            NAME,
            c("Status", "string", "The status of the node"),
            c("Roles", "string", "The roles of the node"),
            AGE,
            c("Version", "string", "Kubelet Version reported by the node."),
            wide(
                "Internal-IP",
                "string",
                "List of addresses reachable to the node. Queried from cloud provider, if available.",
            ),
            wide(
                "External-IP",
                "string",
                "List of addresses reachable to the node. Queried from cloud provider, if available.",
            ),
            wide(
                "OS-Image",
                "string",
                "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
            ),
            wide(
                "Kernel-Version",
                "string",
                "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
            ),
            wide(
                "Container-Runtime",
                "string",
                "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
            ),
        ],
        ("", "Service") => vec![
            NAME,
            c(
                "Type",
                "string",
                "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, ClusterIP, NodePort, and LoadBalancer.",
            ),
            c(
                "Cluster-IP",
                "string",
                "clusterIP is the IP address of the service and is usually assigned randomly.",
            ),
            c(
                "External-IP",
                "string",
                "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
            ),
            c("Port(s)", "string", "The list of ports that are exposed by this service."),
            AGE,
            wide(
                "Selector",
                "string",
                "Route service traffic to pods with label keys and values matching this selector.",
            ),
        ],
        ("", "Endpoints") => vec![
            NAME,
            c(
                "Endpoints",
                "string",
                "The set of all endpoints is the union of all subsets. Addresses are placed into subsets according to the IPs they share.",
            ),
            AGE,
        ],
        ("", "ConfigMap") => vec![
            NAME,
            c(
                "Data",
                "string",
                "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'.",
            ),
            AGE,
        ],
        ("", "Secret") => vec![
            NAME,
            c(
                "Type",
                "string",
                "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types",
            ),
            c(
                "Data",
                "string",
                "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'.",
            ),
            AGE,
        ],
        ("", "ServiceAccount") => vec![
            NAME,
            c(
                "Secrets",
                "string",
                "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.",
            ),
            AGE,
        ],
        ("", "Event") => vec![
            c(
                "Last Seen",
                "string",
                "The time at which the most recent occurrence of this event was recorded.",
            ),
            c(
                "Type",
                "string",
                "Type of this event (Normal, Warning), new types could be added in the future",
            ),
            c(
                "Reason",
                "string",
                "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
            ),
            c("Object", "string", "The object that this event is about."),
            wide(
                "Subobject",
                "string",
                "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2].",
            ),
            wide(
                "Source",
                "string",
                "The component reporting this event. Should be a short machine understandable string.",
            ),
            c("Message", "string", "A human-readable description of the status of this operation."),
            wide(
                "First Seen",
                "string",
                "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
            ),
            wide("Count", "string", "The number of times this event has occurred."),
            ("Name", "string", "name", NAME_DESC, 1),
        ],
        ("", "ResourceQuota") => vec![
            NAME,
            AGE,
            c(
                "Request",
                "string",
                "Request represents a minimum amount of cpu/memory that a container may consume.",
            ),
            c(
                "Limit",
                "string",
                "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node.",
            ),
        ],
        ("apps", "Deployment") => vec![
            NAME,
            c("Ready", "string", "Number of the pod with ready state"),
            c(
                "Up-to-date",
                "string",
                "Total number of non-terminating pods targeted by this deployment that have the desired template spec.",
            ),
            c(
                "Available",
                "string",
                "Total number of available non-terminating pods (ready for at least minReadySeconds) targeted by this deployment.",
            ),
            AGE,
            wide("Containers", "string", CONTAINERS_DESC),
            wide("Images", "string", IMAGES_DESC),
            wide(
                "Selector",
                "string",
                "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment. It must match the pod template's labels.",
            ),
        ],
        ("apps", "ReplicaSet") => vec![
            NAME,
            c(
                "Desired",
                "integer",
                "Replicas is the number of desired pods. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1.",
            ),
            c("Current", "integer", "Replicas is the most recently observed number of non-terminating pods."),
            c(
                "Ready",
                "integer",
                "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition.",
            ),
            AGE,
            wide("Containers", "string", CONTAINERS_DESC),
            wide("Images", "string", IMAGES_DESC),
            wide("Selector", "string", SELECTOR_DESC),
        ],
        ("apps", "StatefulSet") => vec![
            NAME,
            c("Ready", "string", "Number of the pod with ready state"),
            AGE,
            wide("Containers", "string", CONTAINERS_DESC),
            wide("Images", "string", IMAGES_DESC),
        ],
        ("apps", "DaemonSet") => vec![
            NAME,
            c(
                "Desired",
                "integer",
                "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod).",
            ),
            c(
                "Current",
                "integer",
                "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod.",
            ),
            c(
                "Ready",
                "integer",
                "numberReady is the number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition.",
            ),
            c("Up-to-date", "integer", "The total number of nodes that are running updated daemon pod"),
            c(
                "Available",
                "integer",
                "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)",
            ),
            c(
                "Node Selector",
                "string",
                "NodeSelector is a selector which must be true for the pod to fit on a node. Selector which must match a node's labels for the pod to be scheduled on that node.",
            ),
            AGE,
            wide("Containers", "string", CONTAINERS_DESC),
            wide("Images", "string", IMAGES_DESC),
            wide(
                "Selector",
                "string",
                "A label query over pods that are managed by the daemon set. Must match in order to be controlled. It must match the pod template's labels.",
            ),
        ],
        ("batch", "Job") => vec![
            NAME,
            c("Status", "string", "Status of the job."),
            c("Completions", "string", "The number of pods which reached phase Succeeded."),
            c("Duration", "string", "Time required to complete the job."),
            AGE,
            wide("Containers", "string", CONTAINERS_DESC),
            wide("Images", "string", IMAGES_DESC),
            wide(
                "Selector",
                "string",
                "A label query over pods that should match the pod count. Normally, the system sets this field for you.",
            ),
        ],
        ("batch", "CronJob") => vec![
            NAME,
            c("Schedule", "string", "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron."),
            c(
                "Timezone",
                "string",
                "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones.",
            ),
            c(
                "Suspend",
                "boolean",
                "This flag tells the controller to suspend subsequent executions, it does not apply to already started executions. Defaults to false.",
            ),
            c("Active", "integer", "A list of pointers to currently running jobs."),
            c(
                "Last Schedule",
                "string",
                "Information when was the last time the job was successfully scheduled.",
            ),
            AGE,
            wide("Containers", "string", CONTAINERS_DESC),
            wide("Images", "string", IMAGES_DESC),
            wide(
                "Selector",
                "string",
                "A label query over pods that should match the pod count. Normally, the system sets this field for you.",
            ),
        ],
        ("coordination.k8s.io", "Lease") => vec![
            NAME,
            c("Holder", "string", "holderIdentity contains the identity of the holder of a current lease."),
            AGE,
        ],
        ("rbac.authorization.k8s.io", "RoleBinding") => vec![
            NAME,
            c(
                "Role",
                "string",
                "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace. If the RoleRef cannot be resolved, the Authorizer must return an error.",
            ),
            AGE,
            wide("Users", "string", "Users in the roleBinding"),
            wide("Groups", "string", "Groups in the roleBinding"),
            wide("ServiceAccounts", "string", "ServiceAccounts in the roleBinding"),
        ],
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => vec![
            NAME,
            c(
                "Role",
                "string",
                "RoleRef can only reference a ClusterRole in the global namespace. If the RoleRef cannot be resolved, the Authorizer must return an error.",
            ),
            AGE,
            wide("Users", "string", "Users in the clusterRoleBinding"),
            wide("Groups", "string", "Groups in the clusterRoleBinding"),
            wide("ServiceAccounts", "string", "ServiceAccounts in the clusterRoleBinding"),
        ],
        ("discovery.k8s.io", "EndpointSlice") => vec![
            NAME,
            c(
                "AddressType",
                "string",
                "addressType specifies the type of address carried by this EndpointSlice. All addresses in this slice must be the same type.",
            ),
            c(
                "Ports",
                "string",
                "ports specifies the list of network ports exposed by each endpoint in this slice.",
            ),
            c(
                "Endpoints",
                "string",
                "endpoints is a list of unique endpoints in this slice. Each slice may include a maximum of 1000 endpoints.",
            ),
            AGE,
        ],
        _ => return None,
    };
    Some(cols)
}

/// The printer columns a custom resource version declares, or kube's
/// default ("Age") when it declares none.
fn custom_columns(printer_columns: &[Value]) -> Vec<(Value, String)> {
    let mut out = Vec::new();
    for col in printer_columns {
        let path = col["jsonPath"].as_str().unwrap_or_default().to_string();
        let description = match col["description"].as_str() {
            Some(d) if !d.is_empty() => d.to_string(),
            _ => format!("Custom resource definition column (in JSONPath format): {path}"),
        };
        let def = column(
            col["name"].as_str().unwrap_or_default(),
            col["type"].as_str().unwrap_or("string"),
            col["format"].as_str().unwrap_or_default(),
            &description,
            col["priority"].as_i64().unwrap_or(0),
        );
        out.push((def, path));
    }
    if out.is_empty() {
        out.push((column("Age", "date", "", AGE_DESC, 0), ".metadata.creationTimestamp".into()));
    }
    out
}

/// The column definitions for a kind.
pub fn columns(rt: &ResourceType) -> Vec<Value> {
    if let Some(custom) = &rt.custom {
        let mut cols = vec![column(NAME.0, NAME.1, NAME.2, NAME.3, 0)];
        cols.extend(custom_columns(&custom.printer_columns).into_iter().map(|(def, _)| def));
        return cols;
    }
    match builtin_columns(rt) {
        Some(cols) => cols.iter().map(|&(n, t, f, d, p)| column(n, t, f, d, p)).collect(),
        None => {
            vec![column(NAME.0, NAME.1, NAME.2, NAME.3, 0), column("Created At", "date", "", AGE_DESC, 0)]
        }
    }
}

// ---------------------------------------------------------------------------
// Cells.

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

fn int(v: &Value) -> i64 {
    v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)).unwrap_or(0)
}

fn arr(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

fn len_of(v: &Value) -> i64 {
    match v {
        Value::Object(m) => m.len() as i64,
        Value::Array(a) => a.len() as i64,
        _ => 0,
    }
}

fn or_none(v: &str) -> String {
    if v.is_empty() { "<none>".into() } else { v.into() }
}

fn deleting(obj: &Value) -> bool {
    obj["metadata"]["deletionTimestamp"].as_str().is_some_and(|t| !t.is_empty())
}

/// `labels.FormatLabels`: "a=b,c=d" sorted by key, "<none>" when empty.
fn format_labels(map: &Value) -> String {
    let Some(m) = map.as_object().filter(|m| !m.is_empty()) else {
        return "<none>".into();
    };
    let mut pairs: Vec<String> = m.iter().map(|(k, v)| format!("{k}={}", s(v))).collect();
    pairs.sort();
    pairs.join(",")
}

/// `LabelSelectorAsSelector(sel).String()`: requirements sorted by key.
fn selector_string(sel: &Value) -> String {
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(m) = sel["matchLabels"].as_object() {
        for (k, v) in m {
            reqs.push((k.clone(), format!("{k}={}", s(v))));
        }
    }
    for e in arr(&sel["matchExpressions"]) {
        let key = s(&e["key"]).to_string();
        let mut values: Vec<&str> = arr(&e["values"]).iter().map(s).collect();
        values.sort();
        values.dedup();
        let text = match s(&e["operator"]) {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.clone(),
            "DoesNotExist" => format!("!{key}"),
            _ => return "<error>".into(),
        };
        reqs.push((key, text));
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    reqs.into_iter().map(|(_, t)| t).collect::<Vec<_>>().join(",")
}

/// `metav1.FormatLabelSelector`: the selector, "<none>" when empty.
fn format_label_selector(sel: &Value) -> String {
    or_none(&selector_string(sel))
}

/// Container names and images, comma-separated.
fn container_cells(pod_spec: &Value) -> (String, String) {
    let cs = arr(&pod_spec["containers"]);
    let names: Vec<&str> = cs.iter().map(|c| s(&c["name"])).collect();
    let images: Vec<&str> = cs.iter().map(|c| s(&c["image"])).collect();
    (names.join(","), images.join(","))
}

fn condition_true(conditions: &Value, ty: &str) -> bool {
    arr(conditions).iter().any(|c| c["type"] == ty && c["status"] == "True")
}

/// The status of the first condition of this type is "True" (kube's
/// `hasJobCondition`).
fn first_condition_true(conditions: &Value, ty: &str) -> bool {
    arr(conditions).iter().find(|c| c["type"] == ty).is_some_and(|c| c["status"] == "True")
}

fn pod_cells(obj: &Value, now: i64) -> (Vec<Value>, Option<Value>) {
    let spec = &obj["spec"];
    let status = &obj["status"];
    let phase = s(&status["phase"]);
    let mut reason = phase.to_string();
    if !s(&status["reason"]).is_empty() {
        reason = s(&status["reason"]).to_string();
    }
    if arr(&status["conditions"])
        .iter()
        .any(|c| c["type"] == "PodScheduled" && c["reason"] == "SchedulingGated")
    {
        reason = "SchedulingGated".into();
    }
    let row_conditions = match phase {
        "Succeeded" => Some(
            json!([{"type": "Completed", "status": "True", "reason": "Succeeded", "message": "The pod has completed successfully."}]),
        ),
        "Failed" => Some(
            json!([{"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."}]),
        ),
        _ => None,
    };

    let init_specs = arr(&spec["initContainers"]);
    let restartable =
        |name: &str| init_specs.iter().any(|c| c["name"] == name && c["restartPolicy"] == "Always");
    let mut total = arr(&spec["containers"]).len() as i64;
    total += init_specs.iter().filter(|c| c["restartPolicy"] == "Always").count() as i64;
    let mut ready = 0i64;
    let mut restarts = 0i64;
    let mut sidecar_restarts = 0i64;
    let mut last_restart: Option<i64> = None;
    let mut last_sidecar_restart: Option<i64> = None;
    let finished = |cs: &Value| parse_ts(&cs["lastState"]["terminated"]["finishedAt"]);

    let mut initializing = false;
    for (i, cs) in arr(&status["initContainerStatuses"]).iter().enumerate() {
        restarts += int(&cs["restartCount"]);
        if let Some(t) = finished(cs) {
            last_restart = last_restart.max(Some(t));
        }
        let sidecar = restartable(s(&cs["name"]));
        if sidecar {
            sidecar_restarts += int(&cs["restartCount"]);
            if let Some(t) = finished(cs) {
                last_sidecar_restart = last_sidecar_restart.max(Some(t));
            }
        }
        let terminated = &cs["state"]["terminated"];
        let waiting = &cs["state"]["waiting"];
        if terminated.is_object() && int(&terminated["exitCode"]) == 0 {
            continue;
        }
        if sidecar && cs["started"] == true {
            if cs["ready"] == true {
                ready += 1;
            }
            continue;
        }
        if terminated.is_object() {
            reason = if s(&terminated["reason"]).is_empty() {
                if int(&terminated["signal"]) != 0 {
                    format!("Init:Signal:{}", int(&terminated["signal"]))
                } else {
                    format!("Init:ExitCode:{}", int(&terminated["exitCode"]))
                }
            } else {
                format!("Init:{}", s(&terminated["reason"]))
            };
        } else if waiting.is_object()
            && !s(&waiting["reason"]).is_empty()
            && s(&waiting["reason"]) != "PodInitializing"
        {
            reason = format!("Init:{}", s(&waiting["reason"]));
        } else {
            reason = format!("Init:{i}/{}", init_specs.len());
        }
        initializing = true;
        break;
    }

    if !initializing || condition_true(&status["conditions"], "Initialized") {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for cs in arr(&status["containerStatuses"]).iter().rev() {
            restarts += int(&cs["restartCount"]);
            if let Some(t) = finished(cs) {
                last_restart = last_restart.max(Some(t));
            }
            let state = &cs["state"];
            let terminated = &state["terminated"];
            if state["waiting"].is_object() && !s(&state["waiting"]["reason"]).is_empty() {
                reason = s(&state["waiting"]["reason"]).to_string();
            } else if terminated.is_object() && !s(&terminated["reason"]).is_empty() {
                reason = s(&terminated["reason"]).to_string();
            } else if terminated.is_object() {
                reason = if int(&terminated["signal"]) != 0 {
                    format!("Signal:{}", int(&terminated["signal"]))
                } else {
                    format!("ExitCode:{}", int(&terminated["exitCode"]))
                };
            } else if cs["ready"] == true && state["running"].is_object() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if condition_true(&status["conditions"], "Ready") {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }

    if deleting(obj) && s(&status["reason"]) == "NodeLost" {
        reason = "Unknown".into();
    } else if deleting(obj) && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".into();
    }

    let restarts_cell = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", human_duration_ms(now - t)),
        _ => restarts.to_string(),
    };
    let ip = arr(&status["podIPs"])
        .first()
        .map(|p| s(&p["ip"]))
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| s(&status["podIP"]));
    let gates = arr(&spec["readinessGates"]);
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let ok = gates
            .iter()
            .filter(|g| {
                arr(&status["conditions"])
                    .iter()
                    .find(|c| c["type"] == g["conditionType"])
                    .is_some_and(|c| c["status"] == "True")
            })
            .count();
        format!("{ok}/{}", gates.len())
    };
    let cells = vec![
        obj["metadata"]["name"].clone(),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_cell),
        json!(age_at(&obj["metadata"]["creationTimestamp"], now)),
        json!(or_none(ip)),
        json!(or_none(s(&spec["nodeName"]))),
        json!(or_none(s(&status["nominatedNodeName"]))),
        json!(readiness_gates),
    ];
    (cells, row_conditions)
}

fn node_cells(obj: &Value, age: String) -> Vec<Value> {
    let status = &obj["status"];
    let mut states: Vec<String> = Vec::new();
    if let Some(c) = arr(&status["conditions"]).iter().rev().find(|c| c["type"] == "Ready") {
        states.push(if c["status"] == "True" { "Ready".into() } else { "NotReady".into() });
    }
    if states.is_empty() {
        states.push("Unknown".into());
    }
    if obj["spec"]["unschedulable"] == true {
        states.push("SchedulingDisabled".into());
    }
    let mut roles: Vec<String> = Vec::new();
    if let Some(labels) = obj["metadata"]["labels"].as_object() {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.push(role.to_string());
                }
            } else if k == "kubernetes.io/role" && !s(v).is_empty() {
                roles.push(s(v).to_string());
            }
        }
    }
    roles.sort();
    roles.dedup();
    let address = |ty: &str| {
        arr(&status["addresses"])
            .iter()
            .find(|a| a["type"] == ty)
            .map(|a| s(&a["address"]).to_string())
            .unwrap_or_else(|| "<none>".into())
    };
    let info = &status["nodeInfo"];
    let unknown = |v: &Value| if s(v).is_empty() { "<unknown>".to_string() } else { s(v).to_string() };
    vec![
        obj["metadata"]["name"].clone(),
        json!(states.join(",")),
        json!(or_none(&roles.join(","))),
        json!(age),
        json!(s(&info["kubeletVersion"])),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(unknown(&info["osImage"])),
        json!(unknown(&info["kernelVersion"])),
        json!(unknown(&info["containerRuntimeVersion"])),
    ]
}

fn service_external_ip(obj: &Value) -> String {
    let spec = &obj["spec"];
    let external: Vec<&str> = arr(&spec["externalIPs"]).iter().map(s).collect();
    match s(&spec["type"]) {
        "ClusterIP" | "NodePort" | "" => {
            if external.is_empty() {
                "<none>".into()
            } else {
                external.join(",")
            }
        }
        "LoadBalancer" => {
            let mut lb: Vec<&str> = Vec::new();
            for ing in arr(&obj["status"]["loadBalancer"]["ingress"]) {
                let v = if !s(&ing["ip"]).is_empty() { s(&ing["ip"]) } else { s(&ing["hostname"]) };
                if !v.is_empty() && !lb.contains(&v) {
                    lb.push(v);
                }
            }
            lb.extend(external);
            if lb.is_empty() { "<pending>".into() } else { lb.join(",") }
        }
        "ExternalName" => s(&spec["externalName"]).to_string(),
        _ => "<unknown>".into(),
    }
}

/// "80/TCP,443:30443/TCP".
fn service_ports(spec: &Value) -> String {
    let pieces: Vec<String> = arr(&spec["ports"])
        .iter()
        .map(|p| {
            let proto = p["protocol"].as_str().unwrap_or("TCP");
            let node_port = int(&p["nodePort"]);
            if node_port > 0 {
                format!("{}:{node_port}/{proto}", int(&p["port"]))
            } else {
                format!("{}/{proto}", int(&p["port"]))
            }
        })
        .collect();
    or_none(&pieces.join(","))
}

fn service_cells(obj: &Value, age: String) -> Vec<Value> {
    let spec = &obj["spec"];
    let cluster_ip = arr(&spec["clusterIPs"])
        .first()
        .map(s)
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| s(&spec["clusterIP"]));
    vec![
        obj["metadata"]["name"].clone(),
        json!(s(&spec["type"])),
        json!(or_none(cluster_ip)),
        json!(service_external_ip(obj)),
        json!(service_ports(spec)),
        json!(age),
        json!(format_labels(&spec["selector"])),
    ]
}

fn host_port(ip: &str, port: i64) -> String {
    if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") }
}

fn with_more(list: Vec<String>, count: usize, max: usize, empty: &str) -> String {
    let joined = list.join(",");
    if count > max {
        format!("{joined} + {} more...", count - max)
    } else if joined.is_empty() {
        empty.into()
    } else {
        joined
    }
}

/// kube's `formatEndpoints`: up to three "ip:port", then "+ N more...".
fn format_endpoints(obj: &Value) -> String {
    let subsets = arr(&obj["subsets"]);
    if subsets.is_empty() {
        return "<none>".into();
    }
    const MAX: usize = 3;
    let mut list = Vec::new();
    let mut count = 0;
    for ss in subsets {
        let addrs = arr(&ss["addresses"]);
        let ports = arr(&ss["ports"]);
        if ports.is_empty() {
            count += addrs.len();
            for a in addrs {
                if list.len() == MAX {
                    break;
                }
                list.push(s(&a["ip"]).to_string());
            }
            continue;
        }
        for p in ports {
            count += addrs.len();
            for a in addrs {
                if list.len() == MAX {
                    break;
                }
                list.push(host_port(s(&a["ip"]), int(&p["port"])));
            }
        }
    }
    with_more(list, count, MAX, "")
}

fn endpoint_slice_cells(obj: &Value, age: String) -> Vec<Value> {
    const MAX: usize = 3;
    let ports = arr(&obj["ports"]);
    let port_list: Vec<String> = ports
        .iter()
        .take(MAX)
        .map(|p| {
            if p["port"].is_number() {
                int(&p["port"]).to_string()
            } else if let Some(n) = p["name"].as_str() {
                n.to_string()
            } else {
                "*".into()
            }
        })
        .collect();
    let addresses: Vec<&str> =
        arr(&obj["endpoints"]).iter().flat_map(|e| arr(&e["addresses"]).iter().map(s)).collect();
    let endpoint_list: Vec<String> = addresses.iter().take(MAX).map(|a| a.to_string()).collect();
    vec![
        obj["metadata"]["name"].clone(),
        json!(s(&obj["addressType"])),
        json!(with_more(port_list, ports.len(), MAX, "<unset>")),
        json!(with_more(endpoint_list, addresses.len(), MAX, "<unset>")),
        json!(age),
    ]
}

fn event_cells(obj: &Value, now: i64) -> Vec<Value> {
    let first = if parse_ts(&obj["firstTimestamp"]).is_some() {
        age_at(&obj["firstTimestamp"], now)
    } else {
        age_at(&obj["eventTime"], now)
    };
    let mut last = if parse_ts(&obj["lastTimestamp"]).is_some() {
        age_at(&obj["lastTimestamp"], now)
    } else {
        first.clone()
    };
    let mut count = int(&obj["count"]);
    if obj["series"].is_object() {
        last = age_at(&obj["series"]["lastObservedTime"], now);
        count = int(&obj["series"]["count"]);
    } else if count == 0 {
        count = 1;
    }
    let involved = &obj["involvedObject"];
    let kind = s(&involved["kind"]).to_lowercase();
    let target =
        if s(&involved["name"]).is_empty() { kind } else { format!("{kind}/{}", s(&involved["name"])) };
    let component = [s(&obj["source"]["component"]), s(&obj["reportingComponent"])]
        .into_iter()
        .find(|v| !v.is_empty())
        .unwrap_or_default();
    let instance = [s(&obj["source"]["host"]), s(&obj["reportingInstance"])]
        .into_iter()
        .find(|v| !v.is_empty())
        .unwrap_or_default();
    let source = if instance.is_empty() { component.to_string() } else { format!("{component}, {instance}") };
    vec![
        json!(last),
        json!(s(&obj["type"])),
        json!(s(&obj["reason"])),
        json!(target),
        json!(s(&involved["fieldPath"])),
        json!(source),
        json!(s(&obj["message"]).trim()),
        json!(first),
        json!(count),
        obj["metadata"]["name"].clone(),
    ]
}

fn resource_quota_cells(obj: &Value, age: String) -> Vec<Value> {
    let hard = obj["status"]["hard"].as_object().cloned().unwrap_or_default();
    let used = &obj["status"]["used"];
    let mut names: Vec<&String> = hard.keys().collect();
    names.sort();
    let (mut request, mut limit) = (Vec::new(), Vec::new());
    for name in names {
        let u = used[name.as_str()].as_str().unwrap_or("0");
        let entry = format!("{name}: {u}/{}", s(&hard[name.as_str()]));
        if name.split('.').count() > 1 && name.starts_with("limits.") {
            limit.push(entry);
        } else {
            request.push(entry);
        }
    }
    vec![obj["metadata"]["name"].clone(), json!(age), json!(request.join(", ")), json!(limit.join(", "))]
}

fn binding_cells(obj: &Value, age: String) -> Vec<Value> {
    let role = format!("{}/{}", s(&obj["roleRef"]["kind"]), s(&obj["roleRef"]["name"]));
    let (mut users, mut groups, mut sas) = (Vec::new(), Vec::new(), Vec::new());
    for subject in arr(&obj["subjects"]) {
        match s(&subject["kind"]) {
            "User" => users.push(s(&subject["name"]).to_string()),
            "Group" => groups.push(s(&subject["name"]).to_string()),
            "ServiceAccount" => sas.push(format!("{}/{}", s(&subject["namespace"]), s(&subject["name"]))),
            _ => {}
        }
    }
    vec![
        obj["metadata"]["name"].clone(),
        json!(role),
        json!(age),
        json!(users.join(", ")),
        json!(groups.join(", ")),
        json!(sas.join(", ")),
    ]
}

fn job_cells(obj: &Value, now: i64, age: String) -> Vec<Value> {
    let spec = &obj["spec"];
    let status = &obj["status"];
    let succeeded = int(&status["succeeded"]);
    let completions = if spec["completions"].is_number() {
        format!("{succeeded}/{}", int(&spec["completions"]))
    } else if int(&spec["parallelism"]) > 1 {
        format!("{succeeded}/1 of {}", int(&spec["parallelism"]))
    } else {
        format!("{succeeded}/1")
    };
    let duration = match (parse_ts(&status["startTime"]), parse_ts(&status["completionTime"])) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration_ms(now - start),
        (Some(start), Some(end)) => human_duration_ms(end - start),
    };
    let conds = &status["conditions"];
    let state = if first_condition_true(conds, "Complete") {
        "Complete"
    } else if first_condition_true(conds, "Failed") {
        "Failed"
    } else if deleting(obj) {
        "Terminating"
    } else if first_condition_true(conds, "SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else if first_condition_true(conds, "Suspended") {
        "Suspended"
    } else if first_condition_true(conds, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let (names, images) = container_cells(&spec["template"]["spec"]);
    vec![
        obj["metadata"]["name"].clone(),
        json!(state),
        json!(completions),
        json!(duration),
        json!(age),
        json!(names),
        json!(images),
        json!(format_label_selector(&spec["selector"])),
    ]
}

fn cronjob_cells(obj: &Value, now: i64, age: String) -> Vec<Value> {
    let spec = &obj["spec"];
    let last = match parse_ts(&obj["status"]["lastScheduleTime"]) {
        Some(t) => human_duration_ms(now - t),
        None => "<none>".into(),
    };
    let suspend = match spec["suspend"].as_bool() {
        Some(true) => "True",
        Some(false) => "False",
        None => "<unset>",
    };
    let job_spec = &spec["jobTemplate"]["spec"];
    let (names, images) = container_cells(&job_spec["template"]["spec"]);
    vec![
        obj["metadata"]["name"].clone(),
        json!(s(&spec["schedule"])),
        json!(spec["timeZone"].as_str().unwrap_or("<none>")),
        json!(suspend),
        json!(len_of(&obj["status"]["active"])),
        json!(last),
        json!(age),
        json!(names),
        json!(images),
        json!(format_label_selector(&job_spec["selector"])),
    ]
}

/// The cells of a kind with a built-in printer (and the row's conditions).
fn builtin_cells(rt: &ResourceType, obj: &Value, now: i64) -> Option<(Vec<Value>, Option<Value>)> {
    let name = obj["metadata"]["name"].clone();
    let age = age_at(&obj["metadata"]["creationTimestamp"], now);
    let spec = &obj["spec"];
    let status = &obj["status"];
    let cells = match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Pod") => return Some(pod_cells(obj, now)),
        ("", "Namespace") => vec![name, json!(s(&status["phase"])), json!(age)],
        ("", "Node") => node_cells(obj, age),
        ("", "Service") => service_cells(obj, age),
        ("", "Endpoints") => vec![name, json!(format_endpoints(obj)), json!(age)],
        ("", "ConfigMap") => vec![name, json!(len_of(&obj["data"]) + len_of(&obj["binaryData"])), json!(age)],
        ("", "Secret") => vec![name, json!(s(&obj["type"])), json!(len_of(&obj["data"])), json!(age)],
        ("", "ServiceAccount") => vec![name, json!(len_of(&obj["secrets"])), json!(age)],
        ("", "Event") => event_cells(obj, now),
        ("", "ResourceQuota") => resource_quota_cells(obj, age),
        ("apps", "Deployment") => {
            let (names, images) = container_cells(&spec["template"]["spec"]);
            let selector = selector_string(&spec["selector"]);
            vec![
                name,
                json!(format!("{}/{}", int(&status["readyReplicas"]), int(&spec["replicas"]))),
                json!(int(&status["updatedReplicas"])),
                json!(int(&status["availableReplicas"])),
                json!(age),
                json!(names),
                json!(images),
                json!(selector),
            ]
        }
        ("apps", "ReplicaSet") => {
            let (names, images) = container_cells(&spec["template"]["spec"]);
            vec![
                name,
                json!(int(&spec["replicas"])),
                json!(int(&status["replicas"])),
                json!(int(&status["readyReplicas"])),
                json!(age),
                json!(names),
                json!(images),
                json!(format_label_selector(&spec["selector"])),
            ]
        }
        ("apps", "StatefulSet") => {
            let (names, images) = container_cells(&spec["template"]["spec"]);
            vec![
                name,
                json!(format!("{}/{}", int(&status["readyReplicas"]), int(&spec["replicas"]))),
                json!(age),
                json!(names),
                json!(images),
            ]
        }
        ("apps", "DaemonSet") => {
            let (names, images) = container_cells(&spec["template"]["spec"]);
            vec![
                name,
                json!(int(&status["desiredNumberScheduled"])),
                json!(int(&status["currentNumberScheduled"])),
                json!(int(&status["numberReady"])),
                json!(int(&status["updatedNumberScheduled"])),
                json!(int(&status["numberAvailable"])),
                json!(format_labels(&spec["template"]["spec"]["nodeSelector"])),
                json!(age),
                json!(names),
                json!(images),
                json!(format_label_selector(&spec["selector"])),
            ]
        }
        ("batch", "Job") => job_cells(obj, now, age),
        ("batch", "CronJob") => cronjob_cells(obj, now, age),
        ("coordination.k8s.io", "Lease") => vec![name, json!(s(&spec["holderIdentity"])), json!(age)],
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => binding_cells(obj, age),
        ("discovery.k8s.io", "EndpointSlice") => endpoint_slice_cells(obj, age),
        _ => return None,
    };
    Some((cells, None))
}

/// The generic table's "Created At": the creation time in RFC 3339, UTC.
fn created_at(obj: &Value) -> String {
    obj["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".into())
}

fn cells_and_conditions(rt: &ResourceType, obj: &Value, now: i64) -> (Vec<Value>, Option<Value>) {
    if let Some(custom) = &rt.custom {
        let mut cells = vec![obj["metadata"]["name"].clone()];
        for (def, path) in custom_columns(&custom.printer_columns) {
            cells.push(custom_cell(s(&def["type"]), &path, obj, now));
        }
        return (cells, None);
    }
    builtin_cells(rt, obj, now)
        .unwrap_or_else(|| (vec![obj["metadata"]["name"].clone(), json!(created_at(obj))], None))
}

/// One object's cells, in the order of [`columns`].
pub fn cells(rt: &ResourceType, obj: &Value) -> Vec<Value> {
    cells_and_conditions(rt, obj, now_ms()).0
}

// ---------------------------------------------------------------------------
// Custom resource columns: the simple JSONPath kube-apiserver accepts in
// `additionalPrinterColumns`.

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(i64),
    Wildcard,
    Filter { path: Vec<Step>, op: Option<(String, Value)> },
}

fn parse_literal(text: &str) -> Option<Value> {
    let t = text.trim();
    if t.len() >= 2
        && ((t.starts_with('"') && t.ends_with('"')) || (t.starts_with('\'') && t.ends_with('\'')))
    {
        return Some(json!(t[1..t.len() - 1]));
    }
    match t {
        "true" => return Some(json!(true)),
        "false" => return Some(json!(false)),
        "null" | "nil" => return Some(Value::Null),
        _ => {}
    }
    t.parse::<i64>().map(|n| json!(n)).ok().or_else(|| t.parse::<f64>().ok().map(|f| json!(f)))
}

fn parse_filter(expr: &str) -> Option<Step> {
    let expr = expr.trim();
    for op in ["==", "!=", "<=", ">=", "<", ">"] {
        if let Some((lhs, rhs)) = expr.split_once(op) {
            let path = parse_jsonpath(lhs.trim().strip_prefix('@')?)?;
            return Some(Step::Filter { path, op: Some((op.to_string(), parse_literal(rhs)?)) });
        }
    }
    Some(Step::Filter { path: parse_jsonpath(expr.strip_prefix('@')?)?, op: None })
}

/// Parses ".a.b[0].c", ".a[*].b", ".a[?(@.type==\"Ready\")].status",
/// ".metadata.labels['app.kubernetes.io/name']" (braces optional).
fn parse_jsonpath(path: &str) -> Option<Vec<Step>> {
    let p = path.trim();
    let p = p.strip_prefix('{').and_then(|p| p.strip_suffix('}')).unwrap_or(p);
    let p = p.strip_prefix('$').unwrap_or(p);
    let chars: Vec<char> = p.chars().collect();
    let mut steps = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                i += 1;
                if chars.get(i) == Some(&'.') {
                    return None;
                }
                let start = i;
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    i += 1;
                }
                let name: String = chars[start..i].iter().collect();
                match name.as_str() {
                    "" => {}
                    "*" => steps.push(Step::Wildcard),
                    _ => steps.push(Step::Field(name)),
                }
            }
            '[' => {
                let mut depth = 0;
                let mut quote: Option<char> = None;
                let start = i + 1;
                let mut end = None;
                while i < chars.len() {
                    let ch = chars[i];
                    match quote {
                        Some(q) if ch == q => quote = None,
                        Some(_) => {}
                        None if ch == '\'' || ch == '"' => quote = Some(ch),
                        None if ch == '[' => depth += 1,
                        None if ch == ']' => {
                            depth -= 1;
                            if depth == 0 {
                                end = Some(i);
                                break;
                            }
                        }
                        None => {}
                    }
                    i += 1;
                }
                let inner: String = chars[start..end?].iter().collect();
                i += 1;
                let inner = inner.trim();
                if inner == "*" {
                    steps.push(Step::Wildcard);
                } else if let Some(f) = inner.strip_prefix("?(").and_then(|f| f.strip_suffix(')')) {
                    steps.push(parse_filter(f)?);
                } else if let Ok(n) = inner.parse::<i64>() {
                    steps.push(Step::Index(n));
                } else if let Some(Value::String(key)) = parse_literal(inner) {
                    steps.push(Step::Field(key));
                } else {
                    return None;
                }
            }
            _ => {
                // A leading bare name ("spec.replicas").
                let start = i;
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    i += 1;
                }
                steps.push(Step::Field(chars[start..i].iter().collect()));
            }
        }
    }
    Some(steps)
}

fn compare(lhs: &Value, op: &str, rhs: &Value) -> bool {
    let ord = match (lhs, rhs) {
        (Value::Number(a), Value::Number(b)) => a.as_f64().partial_cmp(&b.as_f64()),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
        _ => None,
    };
    match (op, ord) {
        ("==", Some(o)) => o.is_eq(),
        ("!=", Some(o)) => o.is_ne(),
        ("!=", None) => true,
        ("<", Some(o)) => o.is_lt(),
        ("<=", Some(o)) => o.is_le(),
        (">", Some(o)) => o.is_gt(),
        (">=", Some(o)) => o.is_ge(),
        _ => false,
    }
}

fn eval_steps<'a>(steps: &[Step], root: &'a Value) -> Vec<&'a Value> {
    let mut current = vec![root];
    for step in steps {
        let mut next = Vec::new();
        for v in current {
            match step {
                Step::Field(name) => {
                    if let Some(x) = v.get(name.as_str()) {
                        next.push(x);
                    }
                }
                Step::Index(n) => {
                    if let Some(a) = v.as_array() {
                        let idx = if *n < 0 { a.len() as i64 + n } else { *n };
                        if idx >= 0
                            && let Some(x) = a.get(idx as usize)
                        {
                            next.push(x);
                        }
                    }
                }
                Step::Wildcard => match v {
                    Value::Array(a) => next.extend(a.iter()),
                    Value::Object(m) => next.extend(m.values()),
                    _ => {}
                },
                Step::Filter { path, op } => {
                    let items: Vec<&Value> = match v {
                        Value::Array(a) => a.iter().collect(),
                        Value::Object(m) => m.values().collect(),
                        _ => vec![],
                    };
                    for item in items {
                        let found = eval_steps(path, item);
                        let keep = match op {
                            None => !found.is_empty(),
                            Some((op, lit)) => found.first().is_some_and(|x| compare(x, op, lit)),
                        };
                        if keep {
                            next.push(item);
                        }
                    }
                }
            }
        }
        current = next;
    }
    current
}

/// The first value a simple JSONPath selects.
fn jsonpath_first<'a>(path: &str, obj: &'a Value) -> Option<&'a Value> {
    let steps = parse_jsonpath(path)?;
    eval_steps(&steps, obj).into_iter().next()
}

/// How kube's jsonpath prints a value as text (Go's `fmt.Print`).
fn go_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(a) => format!("[{}]", a.iter().map(go_text).collect::<Vec<_>>().join(" ")),
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> =
                keys.iter().map(|k| format!("{k}:{}", go_text(&m[k.as_str()]))).collect();
            format!("map[{}]", parts.join(" "))
        }
    }
}

/// A custom column's cell, typed as kube-apiserver's CRD table convertor
/// types it (null when the path selects nothing).
fn custom_cell(ty: &str, path: &str, obj: &Value, now: i64) -> Value {
    let Some(v) = jsonpath_first(path, obj) else { return Value::Null };
    if ty == "string" {
        return if v.is_null() { Value::Null } else { json!(go_text(v)) };
    }
    match (ty, v) {
        ("integer", Value::Number(n)) => {
            n.as_i64().map(|i| json!(i)).unwrap_or_else(|| json!(n.as_f64().unwrap_or(0.0) as i64))
        }
        ("number", Value::Number(n)) => json!(n.as_f64().unwrap_or(0.0)),
        ("boolean", Value::Bool(b)) => json!(b),
        ("date", Value::String(t)) => match t.parse::<jiff::Timestamp>() {
            Ok(ts) => json!(human_duration_ms(now - ts.as_millisecond())),
            Err(_) => json!("<invalid>"),
        },
        _ => Value::Null,
    }
}

// ---------------------------------------------------------------------------
// Rows and tables.

/// The partial object metadata a row carries (`includeObject=Metadata`).
fn row_object(obj: &Value, include: IncludeObject) -> Value {
    match include {
        IncludeObject::None => Value::Null,
        IncludeObject::Metadata => {
            json!({ "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"] })
        }
        IncludeObject::Object => obj.clone(),
    }
}

fn row_at(rt: &ResourceType, obj: &Value, include: IncludeObject, now: i64) -> Value {
    let (cells, conditions) = cells_and_conditions(rt, obj, now);
    let mut row = Map::new();
    row.insert("cells".into(), Value::Array(cells));
    if let Some(c) = conditions {
        row.insert("conditions".into(), c);
    }
    row.insert("object".into(), row_object(obj, include));
    Value::Object(row)
}

pub fn row(rt: &ResourceType, obj: &Value) -> Value {
    row_at(rt, obj, IncludeObject::Metadata, now_ms())
}

/// A Table of `objects`; `meta` is the list metadata (resourceVersion,
/// continue). The column definitions are there even when there are no
/// rows.
pub fn table(rt: &ResourceType, objects: &[Value], meta: Value) -> Value {
    table_with(rt, objects, meta, IncludeObject::Metadata)
}

/// [`table`] with the rows' objects as `includeObject` asks.
pub fn table_with(rt: &ResourceType, objects: &[Value], meta: Value, include: IncludeObject) -> Value {
    let now = now_ms();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": columns(rt),
        "rows": objects.iter().map(|o| row_at(rt, o, include, now)).collect::<Vec<_>>(),
    })
}

/// A watch event's object as a one-row Table (columns only on the first
/// event in kube-apiserver; every event carries them here, which kubectl
/// accepts).
pub fn event_table(rt: &ResourceType, obj: &Value) -> Value {
    event_table_with(rt, obj, IncludeObject::Metadata)
}

/// [`event_table`] with the row's object as `includeObject` asks.
pub fn event_table_with(rt: &ResourceType, obj: &Value, include: IncludeObject) -> Value {
    let rv = obj["metadata"]["resourceVersion"].clone();
    table_with(rt, std::slice::from_ref(obj), json!({ "resourceVersion": rv }), include)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::resources::{Registry, custom_types};

    const NOW: i64 = 1_700_000_000_000;

    fn ts(secs_ago: i64) -> String {
        jiff::Timestamp::from_millisecond(NOW - secs_ago * 1000)
            .unwrap()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    }

    fn rt(group: &str, plural: &str) -> std::sync::Arc<ResourceType> {
        Registry::default().lookup(group, "v1", plural).unwrap()
    }

    fn col_names(rt: &ResourceType) -> Vec<String> {
        columns(rt).iter().map(|c| c["name"].as_str().unwrap().to_string()).collect()
    }

    fn cells_now(rt: &ResourceType, obj: &Value) -> Vec<Value> {
        cells_and_conditions(rt, obj, NOW).0
    }

    #[test]
    fn human_durations_follow_kube() {
        for (secs, want) in [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (150, "2m30s"),
            (599, "9m59s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 30 * 60, "3h30m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (2 * 86400, "2d"),
            (2 * 86400 + 5 * 3600, "2d5h"),
            (8 * 86400, "8d"),
            (729 * 86400, "729d"),
            (2 * 365 * 86400 + 10 * 86400, "2y10d"),
            (9 * 365 * 86400, "9y"),
        ] {
            assert_eq!(human_duration(secs), want, "{secs}s");
        }
        assert_eq!(age_at(&json!(ts(3 * 3600)), NOW), "3h");
        assert_eq!(age_at(&Value::Null, NOW), "<unknown>");
    }

    fn pod(status: Value) -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "default", "creationTimestamp": ts(300)},
            "spec": {"containers": [{"name": "a", "image": "nginx"}, {"name": "b", "image": "redis"}]},
            "status": status,
        })
    }

    #[test]
    fn pod_columns_and_status() {
        let pods = rt("", "pods");
        assert_eq!(
            col_names(&pods),
            ["Name", "Ready", "Status", "Restarts", "Age", "IP", "Node", "Nominated Node", "Readiness Gates"]
        );
        assert_eq!(columns(&pods)[5]["priority"], 1);

        let pending = pod(json!({"phase": "Pending"}));
        let c = cells_now(&pods, &pending);
        assert_eq!(c[..5], [json!("web"), json!("0/2"), json!("Pending"), json!("0"), json!("5m")]);
        assert_eq!(c[5..], [json!("<none>"), json!("<none>"), json!("<none>"), json!("<none>")]);

        let creating = pod(json!({"phase": "Pending", "containerStatuses": [
            {"name": "a", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}},
            {"name": "b", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}},
        ]}));
        assert_eq!(cells_now(&pods, &creating)[2], "ContainerCreating");

        let mut running =
            pod(json!({"phase": "Running", "podIPs": [{"ip": "10.0.0.5"}], "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}},
                 "lastState": {"terminated": {"exitCode": 1, "finishedAt": ts(600)}}},
                {"name": "b", "ready": true, "restartCount": 0, "state": {"running": {}}},
            ]}));
        running["spec"]["nodeName"] = json!("node-1");
        let c = cells_now(&pods, &running);
        assert_eq!(c[1..4], [json!("2/2"), json!("Running"), json!("2 (10m ago)")]);
        assert_eq!(c[5..7], [json!("10.0.0.5"), json!("node-1")]);

        running["metadata"]["deletionTimestamp"] = json!(ts(1));
        assert_eq!(cells_now(&pods, &running)[2], "Terminating");

        let completed = pod(json!({"phase": "Succeeded", "containerStatuses": [
            {"name": "a", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
        ]}));
        let (c, conds) = cells_and_conditions(&pods, &completed, NOW);
        assert_eq!(c[2], "Completed");
        assert_eq!(conds.unwrap()[0]["reason"], "Succeeded");

        let mut init = pod(json!({"phase": "Pending", "initContainerStatuses": [
            {"name": "setup", "ready": false, "restartCount": 0, "state": {"running": {}}},
        ]}));
        init["spec"]["initContainers"] = json!([{"name": "setup", "image": "busybox"}]);
        assert_eq!(cells_now(&pods, &init)[2], "Init:0/1");
    }

    #[test]
    fn deployment_ready_and_wide_cells() {
        let deploy = rt("apps", "deployments");
        assert_eq!(
            col_names(&deploy),
            ["Name", "Ready", "Up-to-date", "Available", "Age", "Containers", "Images", "Selector"]
        );
        let d = json!({
            "metadata": {"name": "web", "creationTimestamp": ts(90)},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}]},
                "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.25"}, {"name": "side", "image": "busybox"}]}}},
            "status": {"readyReplicas": 1, "updatedReplicas": 3, "availableReplicas": 1},
        });
        assert_eq!(
            cells_now(&deploy, &d),
            [
                json!("web"),
                json!("1/3"),
                json!(3),
                json!(1),
                json!("90s"),
                json!("nginx,side"),
                json!("nginx:1.25,busybox"),
                json!("app=web,tier in (a,b)")
            ]
        );
    }

    #[test]
    fn service_ports_and_ips() {
        let svc = rt("", "services");
        assert_eq!(
            col_names(&svc),
            ["Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age", "Selector"]
        );
        let s = json!({
            "metadata": {"name": "web", "creationTimestamp": ts(10)},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                "ports": [{"port": 80, "protocol": "TCP"}, {"port": 443, "nodePort": 30443, "protocol": "TCP"}],
                "selector": {"app": "web"}},
        });
        assert_eq!(
            cells_now(&svc, &s),
            [
                json!("web"),
                json!("NodePort"),
                json!("10.96.0.10"),
                json!("<none>"),
                json!("80/TCP,443:30443/TCP"),
                json!("10s"),
                json!("app=web")
            ]
        );
        let lb = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "ports": []}});
        assert_eq!(cells_now(&svc, &lb)[3..5], [json!("<pending>"), json!("<none>")]);
    }

    #[test]
    fn other_builtins() {
        let cm = rt("", "configmaps");
        let c = cells_now(
            &cm,
            &json!({"metadata": {"name": "x", "creationTimestamp": ts(5)}, "data": {"a": "1", "b": "2"}}),
        );
        assert_eq!(c, [json!("x"), json!(2), json!("5s")]);

        let ep = rt("", "endpoints");
        let e = json!({"metadata": {"name": "e"}, "subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
            "ports": [{"port": 80}, {"port": 443}]}]});
        assert_eq!(cells_now(&ep, &e)[1], "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 1 more...");

        let ns = rt("", "namespaces");
        assert_eq!(col_names(&ns), ["Name", "Status", "Age"]);

        let roles = Registry::default().lookup("rbac.authorization.k8s.io", "v1", "roles").unwrap();
        assert_eq!(col_names(&roles), ["Name", "Created At"]);
        let c = cells_now(
            &roles,
            &json!({"metadata": {"name": "r", "creationTimestamp": "2024-05-01T10:00:00Z"}}),
        );
        assert_eq!(c, [json!("r"), json!("2024-05-01T10:00:00Z")]);

        let ev = rt("", "events");
        let c = cells_now(
            &ev,
            &json!({"metadata": {"name": "web.1"}, "type": "Normal", "reason": "Scheduled", "message": " hi ",
                "involvedObject": {"kind": "Pod", "name": "web"}, "firstTimestamp": ts(120), "lastTimestamp": ts(60)}),
        );
        assert_eq!(c[..4], [json!("60s"), json!("Normal"), json!("Scheduled"), json!("pod/web")]);
        assert_eq!(c[6], "hi");
        assert_eq!(c[8], 1);

        let job = rt("batch", "jobs");
        let j = json!({"metadata": {"name": "j", "creationTimestamp": ts(100)},
            "spec": {"completions": 3, "template": {"spec": {"containers": []}}},
            "status": {"succeeded": 3, "startTime": ts(100), "completionTime": ts(40),
                "conditions": [{"type": "Complete", "status": "True"}]}});
        assert_eq!(cells_now(&job, &j)[1..4], [json!("Complete"), json!("3/3"), json!("60s")]);

        let rb = Registry::default().lookup("rbac.authorization.k8s.io", "v1", "rolebindings").unwrap();
        let b = json!({"metadata": {"name": "b"}, "roleRef": {"kind": "Role", "name": "r"},
            "subjects": [{"kind": "User", "name": "alice"}, {"kind": "ServiceAccount", "name": "sa", "namespace": "ns"}]});
        assert_eq!(cells_now(&rb, &b)[1], "Role/r");
        assert_eq!(cells_now(&rb, &b)[3..], [json!("alice"), json!(""), json!("ns/sa")]);
    }

    fn widget_type(columns: Value) -> ResourceType {
        let crd = json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                "versions": [{"name": "v1", "served": true, "storage": true, "additionalPrinterColumns": columns}]},
            "status": {"conditions": [{"type": "Established", "status": "True"}]}
        });
        custom_types(&crd).remove(0)
    }

    #[test]
    fn custom_resource_printer_columns() {
        let w = widget_type(json!([
            {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
            {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status",
             "description": "Readiness"},
            {"name": "Owner", "type": "string", "jsonPath": ".metadata.labels['example.com/owner']", "priority": 1},
            {"name": "Ports", "type": "string", "jsonPath": ".spec.ports[*].port"},
            {"name": "Missing", "type": "string", "jsonPath": ".spec.nothing"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ]));
        let cols = columns(&w);
        assert_eq!(cols.len(), 7);
        assert_eq!(cols[0]["format"], "name");
        assert_eq!(
            cols[1]["description"],
            "Custom resource definition column (in JSONPath format): .spec.replicas"
        );
        assert_eq!(cols[2]["description"], "Readiness");
        assert_eq!(cols[3]["priority"], 1);
        assert_eq!(cols[6]["type"], "date");
        let obj = json!({
            "metadata": {"name": "w1", "creationTimestamp": ts(3600), "labels": {"example.com/owner": "team-a"}},
            "spec": {"replicas": 2, "ports": [{"port": 80}, {"port": 81}]},
            "status": {"conditions": [{"type": "Synced", "status": "False"}, {"type": "Ready", "status": "True"}]},
        });
        assert_eq!(
            cells_now(&w, &obj),
            [json!("w1"), json!(2), json!("True"), json!("team-a"), json!("80"), Value::Null, json!("60m")]
        );

        let plain = widget_type(json!([]));
        assert_eq!(col_names(&plain), ["Name", "Age"]);
        assert_eq!(cells_now(&plain, &obj), [json!("w1"), json!("60m")]);
    }

    #[test]
    fn tables_carry_columns_and_honour_include_object() {
        let pods = rt("", "pods");
        let empty = table(&pods, &[], json!({"resourceVersion": "5"}));
        assert_eq!(empty["columnDefinitions"].as_array().unwrap().len(), 9);
        assert_eq!(empty["rows"], json!([]));

        let p = pod(json!({"phase": "Pending"}));
        let t = table(&pods, std::slice::from_ref(&p), json!({}));
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["rows"][0]["object"]["metadata"]["name"], "web");
        let t = table_with(&pods, std::slice::from_ref(&p), json!({}), IncludeObject::parse(Some("None")));
        assert!(t["rows"][0]["object"].is_null());
        let t = table_with(&pods, std::slice::from_ref(&p), json!({}), IncludeObject::parse(Some("Object")));
        assert_eq!(t["rows"][0]["object"]["spec"]["containers"][0]["image"], "nginx");
    }
}
