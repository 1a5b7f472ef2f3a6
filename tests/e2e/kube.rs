//! The Kubernetes API (issue 7) end to end: the real `kubectl` against one
//! member, a `kube` crate reflector through 10,000 changes, a compaction
//! and a `kill -9`, and a 3-member cluster where every member serves the API.

use std::collections::BTreeMap;
use std::fs::File;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ::kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use ::kube::runtime::reflector::{self, Store};
use ::kube::runtime::watcher;
use k8s_openapi::api::core::v1::ConfigMap;
use keelson_tests::kube::{anonymous_get, kubectl_ok_with, kubectl_with};
use keelson_tests::{Cluster, ClusterOptions, KubeServer};
use serde_json::{Value, json};
use tokio_stream::StreamExt;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Steps that go on after a failure, so one run reports every missing
/// piece; the test fails at the end if any did.
struct Steps<'a> {
    ks: &'a KubeServer,
    failures: Vec<String>,
    count: usize,
}

impl<'a> Steps<'a> {
    fn new(ks: &'a KubeServer) -> Self {
        Steps { ks, failures: Vec::new(), count: 0 }
    }

    fn record(&mut self, step: &str, ok: bool, detail: impl FnOnce() -> String) -> bool {
        self.count += 1;
        eprintln!("[{}] {step}", if ok { "ok" } else { "FAIL" });
        if !ok {
            self.failures.push(format!("{step}: {}", detail()));
        }
        ok
    }

    /// Runs kubectl (with `input` on stdin) and checks its output.
    fn kubectl(
        &mut self,
        step: &str,
        args: &[&str],
        input: Option<&str>,
        want: impl FnOnce(&Output, &str, &str) -> bool,
    ) -> Output {
        let out = match input {
            Some(i) => self.ks.kubectl_stdin(args, i),
            None => self.ks.kubectl(args),
        };
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        let ok = want(&out, &stdout, &stderr);
        self.record(step, ok, || {
            format!(
                "kubectl {}: exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
                args.join(" "),
                out.status.code(),
                stdout.trim_end(),
                stderr.trim_end()
            )
        });
        out
    }

    /// kubectl that must succeed with stdout containing every `needles`.
    fn ok_contains(&mut self, step: &str, args: &[&str], input: Option<&str>, needles: &[&str]) -> String {
        let out = self.kubectl(step, args, input, |o, so, _| {
            o.status.success() && needles.iter().all(|n| so.contains(n))
        });
        text(&out.stdout)
    }

    /// `kubectl get … -o jsonpath=<path>` must print exactly `want`.
    fn jsonpath(&mut self, step: &str, args: &[&str], path: &str, want: &str) {
        let jp = format!("jsonpath={path}");
        let mut all = args.to_vec();
        all.extend(["-o", jp.as_str()]);
        self.kubectl(step, &all, None, |o, so, _| o.status.success() && so.trim() == want);
    }

    fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "{} of {} kubectl acceptance steps failed:\n\n{}",
            self.failures.len(),
            self.count,
            self.failures.join("\n\n")
        );
    }
}

fn deployment(replicas: u32, extra_label: bool) -> String {
    let tier = if extra_label { ", tier: front" } else { "" };
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: demo
  labels: {{app: web{tier}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
"
    )
}

fn pod(name: &str, app: &str) -> String {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "demo", "labels": {"app": app}},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.35"}]}
    })
    .to_string()
}

const CRD: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
";

/// `kubectl get -w` in the background, its output going to a file.
struct Watch {
    child: Child,
    out: std::path::PathBuf,
}

impl Watch {
    fn start(kubeconfig: &std::path::Path, args: &[&str], out: std::path::PathBuf) -> Watch {
        let file = File::create(&out).expect("watch output file");
        let cache = keelson_tests::kube::kubectl_cache(kubeconfig);
        let child = Command::new("timeout")
            .arg("60")
            .arg("kubectl")
            .args(args)
            .arg(format!("--cache-dir={}", cache.display()))
            .env("KUBECONFIG", kubeconfig)
            .stdout(Stdio::from(file))
            .stderr(Stdio::null())
            .spawn()
            .expect("run kubectl get -w");
        Watch { child, out }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits until the output has a line equal to `line`.
    fn wait_line(&self, line: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.output().lines().any(|l| l.trim() == line) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The kubectl acceptance flow against one member.
#[test]
fn kubectl_acceptance() {
    let ks = KubeServer::start(&[]).unwrap();
    let mut s = Steps::new(&ks);

    s.ok_contains("version", &["version"], None, &["Client Version:", "Server Version: v1.33"]);
    let resources = s.ok_contains("api-resources", &["api-resources"], None, &[]);
    let row = |name: &str| -> Vec<String> {
        resources
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    };
    let (pods, deploys) = (row("pods"), row("deployments"));
    s.record("api-resources: pods (po, v1, Pod)", pods == ["pods", "po", "v1", "true", "Pod"], || {
        format!("{pods:?} in\n{resources}")
    });
    s.record(
        "api-resources: deployments (deploy, apps/v1, Deployment)",
        deploys == ["deployments", "deploy", "apps/v1", "true", "Deployment"],
        || format!("{deploys:?} in\n{resources}"),
    );
    s.kubectl("get all -A (empty)", &["get", "all", "-A"], None, |o, _, _| o.status.success());

    // Namespaces, through the generator and, if that fails, from a manifest
    // so the rest of the flow still runs.
    let created = s
        .kubectl("create namespace", &["create", "namespace", "demo"], None, |o, so, _| {
            o.status.success() && so.trim() == "namespace/demo created"
        })
        .status
        .success();
    if !created {
        ks.kubectl_stdin(
            &["create", "-f", "-"],
            r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"demo"}}"#,
        );
    }
    s.jsonpath("namespace is Active", &["get", "ns", "demo"], "{.status.phase}", "Active");

    // Client-side apply and its 3-way merge.
    s.ok_contains(
        "apply -f (create)",
        &["apply", "-f", "-"],
        Some(&deployment(2, true)),
        &["deployment.apps/web created"],
    );
    s.jsonpath("applied labels", &["get", "deploy", "web", "-n", "demo"], "{.metadata.labels.tier}", "front");
    s.ok_contains(
        "apply -f (changed manifest)",
        &["apply", "-f", "-"],
        Some(&deployment(3, false)),
        &["deployment.apps/web configured"],
    );
    s.jsonpath(
        "3-way apply: the removed label is gone, the rest kept",
        &["get", "deploy", "web", "-n", "demo"],
        "{.metadata.labels} {.spec.replicas}",
        r#"{"app":"web"} 3"#,
    );
    s.ok_contains(
        "apply -f (unchanged)",
        &["apply", "-f", "-"],
        Some(&deployment(3, false)),
        &["deployment.apps/web unchanged"],
    );

    // Server-side apply: a field the manager stops applying is removed.
    let ssa = |data: Value| {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa", "namespace": "demo"}, "data": data})
            .to_string()
    };
    s.ok_contains(
        "apply --server-side",
        &["apply", "--server-side", "-f", "-"],
        Some(&ssa(json!({"a": "1", "b": "2"}))),
        &["configmap/ssa serverside-applied"],
    );
    s.jsonpath(
        "server-side apply records its manager",
        &["get", "cm", "ssa", "-n", "demo", "--show-managed-fields"],
        "{.metadata.managedFields[0].manager} {.metadata.managedFields[0].operation}",
        "kubectl Apply",
    );
    s.ok_contains(
        "apply --server-side (field dropped)",
        &["apply", "--server-side", "-f", "-"],
        Some(&ssa(json!({"a": "1"}))),
        &["configmap/ssa serverside-applied"],
    );
    s.jsonpath(
        "server-side apply removed the dropped field",
        &["get", "cm", "ssa", "-n", "demo"],
        "{.data}",
        r#"{"a":"1"}"#,
    );

    // Pods, patches, labels and annotations.
    s.ok_contains("create -f pod", &["create", "-f", "-"], Some(&pod("p1", "x")), &["pod/p1 created"]);
    s.ok_contains("create -f second pod", &["create", "-f", "-"], Some(&pod("p2", "y")), &["pod/p2 created"]);
    s.ok_contains(
        "patch --type strategic",
        &[
            "patch",
            "pod",
            "p1",
            "-n",
            "demo",
            "--type",
            "strategic",
            "-p",
            r#"{"metadata":{"labels":{"s":"1"}},"spec":{"containers":[{"name":"c","image":"busybox:1.36"}]}}"#,
        ],
        None,
        &["pod/p1 patched"],
    );
    s.jsonpath(
        "strategic patch merged the container by name",
        &["get", "pod", "p1", "-n", "demo"],
        "{range .spec.containers[*]}{.name}={.image} {end}",
        "c=busybox:1.36",
    );
    s.ok_contains(
        "patch --type merge",
        &[
            "patch",
            "pod",
            "p1",
            "-n",
            "demo",
            "--type",
            "merge",
            "-p",
            r#"{"metadata":{"labels":{"m":"2"}}}"#,
        ],
        None,
        &["pod/p1 patched"],
    );
    s.ok_contains(
        "patch --type json",
        &[
            "patch",
            "pod",
            "p1",
            "-n",
            "demo",
            "--type",
            "json",
            "-p",
            r#"[{"op":"add","path":"/metadata/labels/j","value":"3"},{"op":"remove","path":"/metadata/labels/s"}]"#,
        ],
        None,
        &["pod/p1 patched"],
    );
    s.ok_contains("label", &["label", "pod", "p1", "-n", "demo", "l=4"], None, &["pod/p1 labeled"]);
    s.ok_contains(
        "annotate",
        &["annotate", "pod", "p1", "-n", "demo", "note=hi"],
        None,
        &["pod/p1 annotated"],
    );
    s.jsonpath(
        "patches, label and annotation applied",
        &["get", "pod", "p1", "-n", "demo"],
        "{.metadata.labels} {.metadata.annotations.note}",
        r#"{"app":"x","j":"3","l":"4","m":"2"} hi"#,
    );

    // The create generators.
    s.ok_contains(
        "create configmap --from-literal",
        &["create", "configmap", "cm1", "-n", "demo", "--from-literal=k=v"],
        None,
        &["configmap/cm1 created"],
    );
    s.jsonpath("configmap data", &["get", "cm", "cm1", "-n", "demo"], "{.data.k}", "v");
    s.ok_contains(
        "create secret generic",
        &["create", "secret", "generic", "s1", "-n", "demo", "--from-literal=pw=hunter2"],
        None,
        &["secret/s1 created"],
    );
    s.jsonpath(
        "secret data (base64)",
        &["get", "secret", "s1", "-n", "demo"],
        "{.data.pw} {.type}",
        "aHVudGVyMg== Opaque",
    );

    // generateName, and a chunked list over the generated objects.
    let mut generated = Vec::new();
    for i in 0..7 {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"generateName": "gen-", "namespace": "demo", "labels": {"batch": "gen"}},
            "data": {"i": i.to_string()}});
        let out = s.kubectl(
            "create -f with generateName",
            &["create", "-f", "-"],
            Some(&cm.to_string()),
            |o, so, _| {
                o.status.success()
                    && so
                        .trim()
                        .strip_prefix("configmap/gen-")
                        .and_then(|r| r.strip_suffix(" created"))
                        .is_some_and(|suffix| suffix.len() == 5)
            },
        );
        if let Some(name) = text(&out.stdout).split_whitespace().next() {
            generated.push(name.to_string());
        }
    }
    generated.sort();
    generated.dedup();
    s.record("generateName gives distinct names", generated.len() == 7, || format!("{generated:?}"));
    // A `kind: List` file (what `kubectl get -o yaml` writes), under the
    // default --validate=strict: kubectl reads /openapi/v2 for it.
    let list = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "listed-a", "namespace": "demo"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "listed-b", "namespace": "demo"}},
    ]});
    s.kubectl("create -f of a List", &["create", "-f", "-"], Some(&list.to_string()), |o, so, _| {
        o.status.success()
            && so.contains("configmap/listed-a created")
            && so.contains("configmap/listed-b created")
    });
    let bad = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "listed-c", "namespace": "demo"}, "bogus": 1},
    ]});
    s.kubectl(
        "create -f of a List with an unknown field",
        &["create", "-f", "-"],
        Some(&bad.to_string()),
        |o, _, se| !o.status.success() && se.contains("unknown field \"bogus\""),
    );
    let out = s.kubectl(
        "get --chunk-size=2",
        &["get", "cm", "-n", "demo", "-l", "batch=gen", "--chunk-size=2", "-o", "name", "-v=6"],
        None,
        |o, so, se| {
            let mut names: Vec<String> = so.lines().map(str::to_string).collect();
            names.sort();
            o.status.success() && names == generated && se.matches("continue=").count() == 3
        },
    );
    let _ = out;

    // Selectors.
    s.kubectl("get -l", &["get", "pods", "-n", "demo", "-l", "app=x", "-o", "name"], None, |o, so, _| {
        o.status.success() && so.trim() == "pod/p1"
    });
    s.kubectl(
        "get -l (set-based)",
        &["get", "pods", "-n", "demo", "-l", "app in (x,y),j!=3", "-o", "name"],
        None,
        |o, so, _| o.status.success() && so.trim() == "pod/p2",
    );
    s.kubectl(
        "get --field-selector",
        &["get", "pods", "-n", "demo", "--field-selector", "metadata.name=p2", "-o", "name"],
        None,
        |o, so, _| o.status.success() && so.trim() == "pod/p2",
    );
    s.kubectl(
        "get --field-selector status.phase",
        &["get", "pods", "-A", "--field-selector", "status.phase=Running", "-o", "name"],
        None,
        |o, so, _| o.status.success() && so.trim().is_empty(),
    );

    // get -w sees an object created after it started.
    let watch_out = ks.server.data_dir.parent().unwrap().join("watch.out");
    let w = Watch::start(&ks.kubeconfig(), &["get", "cm", "-n", "demo", "-w", "-o", "name"], watch_out);
    let listed = w.wait_line("configmap/ssa", Duration::from_secs(15));
    s.record("get -w lists the current objects", listed, || format!("output:\n{}", w.output()));
    s.ok_contains(
        "create while watching",
        &["create", "-f", "-"],
        Some(r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"watched","namespace":"demo"}}"#),
        &["configmap/watched created"],
    );
    let seen = w.wait_line("configmap/watched", Duration::from_secs(10));
    s.record("get -w sees the new object", seen, || format!("output:\n{}", w.output()));
    drop(w);

    // Tables and describe.
    s.ok_contains("get all -A", &["get", "all", "-A"], None, &["deployment.apps/web", "pod/p1", "pod/p2"]);
    s.kubectl("get pods: table columns", &["get", "pods", "-n", "demo"], None, |o, so, _| {
        let header: Vec<&str> = so.lines().next().unwrap_or_default().split_whitespace().collect();
        o.status.success() && header == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    });
    s.kubectl("get deployments: table columns", &["get", "deploy", "-n", "demo"], None, |o, so, _| {
        let header: Vec<&str> = so.lines().next().unwrap_or_default().split_whitespace().collect();
        o.status.success() && header == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    });
    s.ok_contains(
        "describe pod",
        &["describe", "pod", "p1", "-n", "demo"],
        None,
        &["Name:", "p1", "Namespace:", "demo", "busybox:1.36", "note: hi"],
    );

    // Optimistic concurrency: replace with a stale resourceVersion.
    let stale = ks.kubectl(&["get", "pod", "p1", "-n", "demo", "-o", "json"]);
    s.ok_contains(
        "label (bumps resourceVersion)",
        &["label", "pod", "p1", "-n", "demo", "v=2"],
        None,
        &["pod/p1 labeled"],
    );
    s.kubectl(
        "replace with a stale resourceVersion",
        &["replace", "-f", "-"],
        Some(&text(&stale.stdout)),
        |o, _, se| !o.status.success() && se.contains("the object has been modified"),
    );

    // delete --wait.
    s.ok_contains(
        "delete --wait",
        &["delete", "pod", "p2", "-n", "demo", "--wait"],
        None,
        &[r#"pod "p2" deleted"#],
    );
    s.kubectl("deleted pod is gone", &["get", "pod", "p2", "-n", "demo"], None, |o, _, se| {
        !o.status.success() && se.contains(r#"pods "p2" not found"#)
    });

    // OpenAPI, explain and access review.
    s.ok_contains(
        "explain pod.spec",
        &["explain", "pod.spec"],
        None,
        &["KIND:", "Pod", "containers", "<[]Container>"],
    );
    s.kubectl("auth can-i create pods", &["auth", "can-i", "create", "pods"], None, |o, so, _| {
        o.status.success() && so.trim() == "yes"
    });
    s.kubectl(
        "auth whoami",
        &["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"],
        None,
        |o, so, _| o.status.success() && so.trim() == "admin",
    );
    s.kubectl("get --raw /openapi/v3", &["get", "--raw", "/openapi/v3"], None, |o, so, _| {
        let v: Value = serde_json::from_str(so).unwrap_or_default();
        o.status.success()
            && v["paths"]["api/v1"]["serverRelativeURL"]
                .as_str()
                .is_some_and(|u| u.starts_with("/openapi/v3/api/v1"))
            && v["paths"]["apis/apps/v1"].is_object()
    });

    // A custom resource definition, then its objects through kubectl.
    s.ok_contains(
        "create -f CRD",
        &["create", "-f", "-"],
        Some(CRD),
        &["customresourcedefinition.apiextensions.k8s.io/widgets.example.com created"],
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline && !ks.kubectl(&["get", "widgets", "-n", "demo"]).status.success() {
        std::thread::sleep(Duration::from_millis(200));
    }
    let widget =
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1, namespace: demo}\nspec: {size: 3}\n";
    s.ok_contains(
        "apply -f custom resource",
        &["apply", "-f", "-"],
        Some(widget),
        &["widget.example.com/w1 created"],
    );
    s.ok_contains("get <custom resource>", &["get", "widgets", "-n", "demo"], None, &["NAME", "w1"]);
    s.jsonpath(
        "get <custom resource> by short name",
        &["get", "wd", "w1", "-n", "demo"],
        "{.spec.size}",
        "3",
    );

    // Anonymous requests.
    let anon = anonymous_get(&format!("{}/api/v1/namespaces", ks.api_url()));
    s.record(
        "anonymous request → 401",
        matches!(&anon, Ok((401, body)) if body.contains(r#""reason":"Unauthorized""#)),
        || format!("{anon:?}"),
    );
    let anon = anonymous_get(&format!("{}/version", ks.api_url()));
    s.record(
        "anonymous /version is public",
        matches!(&anon, Ok((200, body)) if body.contains("gitVersion")),
        || format!("{anon:?}"),
    );

    s.finish();
}

async fn client_for(kubeconfig: &std::path::Path) -> ::kube::Client {
    let kc = ::kube::config::Kubeconfig::read_from(kubeconfig).expect("read the admin kubeconfig");
    let cfg = ::kube::Config::from_custom_kubeconfig(kc, &::kube::config::KubeConfigOptions::default())
        .await
        .expect("kube config from the admin kubeconfig");
    ::kube::Client::try_from(cfg).expect("kube client")
}

fn status_code(e: &::kube::Error) -> Option<u16> {
    match e {
        ::kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// What a reflector is compared on: name → (resourceVersion, data).
fn summary<'a>(items: impl Iterator<Item = &'a ConfigMap>) -> BTreeMap<String, (String, String)> {
    items
        .map(|cm| {
            let name = cm.metadata.name.clone().unwrap_or_default();
            let rv = cm.metadata.resource_version.clone().unwrap_or_default();
            (name, (rv, format!("{:?}", cm.data)))
        })
        .collect()
}

/// Changes made by concurrent writers, each on names of its own.
struct Writers {
    total: AtomicUsize,
    paused: AtomicBool,
    parked: AtomicUsize,
    done: AtomicBool,
    errors: AtomicUsize,
}

const WRITERS: usize = 16;
const NAMES_PER_WRITER: usize = 24;
const CHANGES: usize = 10_000;

async fn writer(api: Api<ConfigMap>, w: usize, st: Arc<Writers>) {
    let mut present = [false; NAMES_PER_WRITER];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ (w as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut n = 0u64;
    while !st.done.load(Ordering::SeqCst) {
        if st.paused.load(Ordering::SeqCst) {
            st.parked.fetch_add(1, Ordering::SeqCst);
            while st.paused.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            st.parked.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let k = (next() % NAMES_PER_WRITER as u64) as usize;
        let name = format!("w{w}-{k}");
        n += 1;
        let res = if !present[k] {
            let cm: ConfigMap = serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"writer": w.to_string()}},
                "data": {"n": n.to_string()}
            }))
            .unwrap();
            api.create(&PostParams::default(), &cm).await.map(|_| true)
        } else if next() % 4 == 0 {
            api.delete(&name, &DeleteParams::default()).await.map(|_| false)
        } else {
            let p = Patch::Merge(json!({"data": {"n": n.to_string()}}));
            api.patch(&name, &PatchParams::default(), &p).await.map(|_| true)
        };
        match res {
            Ok(now) => {
                present[k] = now;
                st.total.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) if status_code(&e) == Some(409) => present[k] = true,
            Err(e) if status_code(&e) == Some(404) => present[k] = false,
            Err(_) => {
                // The member is restarting (or the answer was lost): find
                // out what happened once it answers again.
                st.errors.fetch_add(1, Ordering::SeqCst);
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    match api.get_opt(&name).await {
                        Ok(o) => {
                            present[k] = o.is_some();
                            break;
                        }
                        Err(_) if !st.done.load(Ordering::SeqCst) => continue,
                        Err(_) => return,
                    }
                }
            }
        }
        if st.total.load(Ordering::SeqCst) >= CHANGES {
            st.done.store(true, Ordering::SeqCst);
        }
    }
}

async fn wait_total(st: &Writers, n: usize) {
    while st.total.load(Ordering::SeqCst) < n {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the reflector's store equals a fresh LIST.
async fn converged(
    api: &Api<ConfigMap>,
    store: &Store<ConfigMap>,
    timeout: Duration,
) -> Result<usize, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let listed = api.list(&ListParams::default()).await.map_err(|e| e.to_string())?;
        let want = summary(listed.items.iter());
        let state = store.state();
        let have = summary(state.iter().map(|a| a.as_ref()));
        if want == have {
            return Ok(want.len());
        }
        if Instant::now() > deadline {
            let missing: Vec<_> = want.iter().filter(|(k, v)| have.get(*k) != Some(v)).take(10).collect();
            let extra: Vec<_> = have.iter().filter(|(k, v)| want.get(*k) != Some(v)).take(10).collect();
            return Err(format!(
                "store has {} objects, LIST has {}; differing in LIST: {missing:?}; differing in store: {extra:?}",
                have.len(),
                want.len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A `kube::runtime` reflector over ConfigMaps stays in sync through
/// 10,000 concurrent changes, a compaction that expires its watch (410 →
/// re-list) and a `kill -9` + restart of the member.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reflector_survives_changes_compaction_and_restart() {
    let mut ks = KubeServer::start(&[]).unwrap();
    let client = client_for(&ks.kubeconfig()).await;
    let nsapi: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    for ns in ["reflect", "elsewhere"] {
        let obj = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        nsapi.create(&PostParams::default(), &obj).await.expect("create namespace");
    }
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "reflect");
    let elsewhere: Api<ConfigMap> = Api::namespaced(client.clone(), "elsewhere");

    // The watch is re-established every few seconds (timeoutSeconds) and
    // has no bookmarks, so its resourceVersion only moves with the
    // namespace's own changes.
    let (store, writer_half) = reflector::store::<ConfigMap>();
    let cfg = watcher::Config::default().timeout(3).disable_bookmarks();
    let stream = reflector::reflector(writer_half, watcher::watcher(api.clone(), cfg));
    let inits = Arc::new(AtomicUsize::new(0));
    let gone = Arc::new(AtomicUsize::new(0));
    let other_errors = Arc::new(AtomicUsize::new(0));
    let events = Arc::new(AtomicUsize::new(0));
    let watch_task = {
        let (inits, gone, other_errors, events) =
            (inits.clone(), gone.clone(), other_errors.clone(), events.clone());
        tokio::spawn(async move {
            let mut stream = Box::pin(stream);
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(watcher::Event::Init) => {
                        inits.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(_) => {
                        events.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(watcher::Error::WatchError(s)) if s.code == 410 => {
                        gone.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => {
                        other_errors.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        })
    };
    tokio::time::timeout(Duration::from_secs(20), store.wait_until_ready())
        .await
        .expect("reflector ready")
        .unwrap();

    let st = Arc::new(Writers {
        total: AtomicUsize::new(0),
        paused: AtomicBool::new(false),
        parked: AtomicUsize::new(0),
        done: AtomicBool::new(false),
        errors: AtomicUsize::new(0),
    });
    let started = Instant::now();
    let writers: Vec<_> = (0..WRITERS).map(|w| tokio::spawn(writer(api.clone(), w, st.clone()))).collect();

    // 1. A compaction past the watch's resourceVersion.
    wait_total(&st, CHANGES * 3 / 10).await;
    st.paused.store(true, Ordering::SeqCst);
    while st.parked.load(Ordering::SeqCst) < WRITERS {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let n = converged(&api, &store, Duration::from_secs(20)).await.expect("in sync before the compaction");
    eprintln!("{} changes in {:?}; {n} objects in sync", st.total.load(Ordering::SeqCst), started.elapsed());
    for i in 0..20 {
        let cm = serde_json::from_value(json!({"metadata": {"name": format!("other-{i}")}})).unwrap();
        elsewhere.create(&PostParams::default(), &cm).await.expect("write elsewhere");
    }
    let mut etcd = etcd_client::Client::connect([format!("http://{}", ks.endpoint())], None).await.unwrap();
    let rev = etcd.status().await.unwrap().header().expect("header").revision();
    etcd.compact(rev, Some(etcd_client::CompactionOptions::new().with_physical())).await.expect("compact");
    let (gone_before, inits_before) = (gone.load(Ordering::SeqCst), inits.load(Ordering::SeqCst));
    let deadline = Instant::now() + Duration::from_secs(20);
    while (gone.load(Ordering::SeqCst) == gone_before || inits.load(Ordering::SeqCst) == inits_before)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        gone.load(Ordering::SeqCst) > gone_before,
        "no 410 ERROR event after compacting to {rev} (other watch errors: {})",
        other_errors.load(Ordering::SeqCst)
    );
    assert!(inits.load(Ordering::SeqCst) > inits_before, "the watcher did not re-list after the 410");
    eprintln!("compacted to {rev}: 410 seen, re-listed");
    st.paused.store(false, Ordering::SeqCst);

    // 2. kill -9 and a restart on the same ports and data dir, during writes.
    wait_total(&st, CHANGES * 6 / 10).await;
    tokio::task::block_in_place(|| {
        ks.kill9();
        ks.restart().expect("restart the member");
    });
    eprintln!("restarted at {} changes", st.total.load(Ordering::SeqCst));

    // 3. The rest of the changes, then the store must equal a fresh LIST.
    for w in writers {
        tokio::time::timeout(Duration::from_secs(120), w).await.expect("writers finish").unwrap();
    }
    let total = st.total.load(Ordering::SeqCst);
    let n = converged(&api, &store, Duration::from_secs(30)).await.expect("reflector equals a fresh LIST");
    eprintln!(
        "{total} changes in {:?} ({} retried errors); reflector holds {n} objects; {} events, {} lists, {} 410s, {} other watch errors",
        started.elapsed(),
        st.errors.load(Ordering::SeqCst),
        events.load(Ordering::SeqCst),
        inits.load(Ordering::SeqCst),
        gone.load(Ordering::SeqCst),
        other_errors.load(Ordering::SeqCst)
    );
    assert!(total >= CHANGES);
    assert!(n > 0, "the writers left objects behind");
    assert!(events.load(Ordering::SeqCst) >= CHANGES / 2, "the reflector saw the changes as events");
    watch_task.abort();
}

/// Every member of a 3-member cluster serves the API from the shared store.
#[test]
fn cluster_serves_the_api_on_every_member() {
    let mut c = Cluster::start_with(3, &[], &ClusterOptions { api: true, ..Default::default() }).unwrap();
    for i in 0..3 {
        c.wait_api_ready(i, Duration::from_secs(30)).unwrap();
    }
    // One cluster CA: each member's ca.crt is the same.
    let ca = |i: usize| std::fs::read_to_string(c.members[i].data_dir.join("pki/ca.crt")).unwrap();
    assert_eq!(ca(0), ca(1));
    assert_eq!(ca(0), ca(2));

    // Member 1's admin kubeconfig, pointed at each member in turn.
    let kc = c.kubeconfig(0);
    let urls: Vec<String> = (0..3).map(|i| c.api_url(i)).collect();
    let on = |i: usize| format!("--server={}", urls[i]);
    let kubectl = |i: usize, args: &[&str]| {
        let mut all = vec![on(i)];
        all.extend(args.iter().map(|s| s.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        kubectl_with(&kc, &all, None)
    };
    let kubectl_in = |i: usize, args: &[&str], input: &str| {
        let mut all = vec![on(i)];
        all.extend(args.iter().map(|s| s.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        kubectl_with(&kc, &all, Some(input.as_bytes()))
    };
    let cm = |name: &str, v: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}, "data": {"k": v}})
            .to_string()
    };
    let ok = |o: Output| {
        assert!(o.status.success(), "kubectl failed: {}{}", text(&o.stdout), text(&o.stderr));
        text(&o.stdout)
    };

    // Watches through members 2 and 3, started before the write.
    let dir = c.members[0].data_dir.parent().unwrap().to_path_buf();
    let watches: Vec<Watch> = (1..3)
        .map(|i| {
            Watch::start(
                &kc,
                &[on(i).as_str(), "get", "cm", "-n", "default", "-w", "-o", "name"],
                dir.join(format!("w{i}")),
            )
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));

    assert_eq!(
        ok(kubectl_in(0, &["create", "-f", "-"], &cm("shared", "one"))).trim(),
        "configmap/shared created"
    );
    for i in 1..3 {
        // A linearizable read on a follower sees the write at once.
        let v = ok(kubectl(i, &["get", "cm", "shared", "-n", "default", "-o", "jsonpath={.data.k}"]));
        assert_eq!(v, "one", "read through member {}", i + 1);
        let names = ok(kubectl(i, &["get", "cm", "-n", "default", "-o", "name"]));
        assert!(names.lines().any(|l| l == "configmap/shared"), "list through member {}: {names}", i + 1);
    }
    for (i, w) in watches.iter().enumerate() {
        assert!(
            w.wait_line("configmap/shared", Duration::from_secs(10)),
            "watch through member {} did not see the create: {:?}",
            i + 2,
            w.output()
        );
    }
    drop(watches);
    // Updates through a follower are seen everywhere.
    ok(kubectl(
        2,
        &["patch", "cm", "shared", "-n", "default", "--type", "merge", "-p", r#"{"data":{"k":"two"}}"#],
    ));
    assert_eq!(ok(kubectl(0, &["get", "cm", "shared", "-n", "default", "-o", "jsonpath={.data.k}"])), "two");

    // kill -9 of the leader: the others keep serving.
    let leader = c.wait_leader(Duration::from_secs(10)).unwrap();
    c.kill9(leader);
    let rest: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    c.wait_leader(Duration::from_secs(15)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let o = kubectl_in(rest[0], &["create", "-f", "-"], &cm("after-failover", "three"));
        if o.status.success() {
            break;
        }
        let last = format!("{}{}", text(&o.stdout), text(&o.stderr));
        // A create that committed but whose answer was lost is AlreadyExists.
        if last.contains("AlreadyExists") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no write through member {} after the failover: {last}",
            rest[0] + 1
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    for &i in &rest {
        let v = ok(kubectl(i, &["get", "cm", "after-failover", "-n", "default", "-o", "jsonpath={.data.k}"]));
        assert_eq!(v, "three", "read through member {} after the failover", i + 1);
        let v = ok(kubectl(i, &["get", "cm", "shared", "-n", "default", "-o", "jsonpath={.data.k}"]));
        assert_eq!(v, "two");
    }
    // The killed member's own kubeconfig names its (dead) address; another
    // member's works.
    let kc2 = c.kubeconfig(rest[1]);
    let names = kubectl_ok_with(&kc2, &["get", "cm", "-n", "default", "-o", "name"]);
    assert!(names.contains("configmap/after-failover"), "{names}");
}
