#!/usr/bin/env python3
"""Generates apiserver/src/kube/proto_schema.json: the protobuf layout of the
served built-in kinds (every message reachable from them), with each field's
JSON name, for decoding `application/vnd.kubernetes.protobuf` request bodies
(apiserver/src/kube/protobuf.rs).

Sources (none is needed at build or run time):
  --k8s-pb DIR       the k8s-pb crate's src/ (prost-generated from Kubernetes'
                     generated.proto files): messages, tags, proto types.
  --openapi FILE     (scripts/dump_openapi_defs.rs) k8s-openapi 0.29's schemars definitions reachable from the
                     same kinds, dumped as {"io.k8s…Name": {"properties": [...],
                     "required": [...]}} (a small program over k8s-openapi):
                     the JSON names (prost lost their case: hostIP → host_ip).
  --go NAME=GITDIR   optional, repeatable: git repositories kubernetes/api,
                     kubernetes/apimachinery, kubernetes/apiextensions-apiserver.
                     Their Go structs tell which fields are pointers or lack
                     `omitempty` (a zero value then means something and is kept)
                     and which are inlined in JSON (`VolumeSource` in `Volume`).

Usage:
  python3 scripts/gen_proto_schema.py --k8s-pb ~/.cargo/registry/src/*/k8s-pb-0.9.0/src \
      --openapi /tmp/openapi_defs.json --go api=/path/api.git --go apimachinery=... \
      --go apiextensions-apiserver=... > apiserver/src/kube/proto_schema.json

Output: {"kinds": {"apiVersion/Kind": message}, "messages": {message:
[[tag, jsonName, type, flags], ...]}}, where type is a scalar (string, bytes,
bool, int32, int64, double) or a message name, and flags holds `r` (repeated),
`m` (map<string, type>), `z` (a zero value is kept: pointer or not
omitempty), `i` (inlined: the message's fields go into the parent object).
"""

import argparse
import json
import os
import re
import subprocess
import sys

KINDS = [
    ("v1", "Namespace", "api.core.v1.Namespace"),
    ("v1", "Pod", "api.core.v1.Pod"),
    ("v1", "Node", "api.core.v1.Node"),
    ("v1", "Service", "api.core.v1.Service"),
    ("v1", "Endpoints", "api.core.v1.Endpoints"),
    ("v1", "ConfigMap", "api.core.v1.ConfigMap"),
    ("v1", "Secret", "api.core.v1.Secret"),
    ("v1", "ServiceAccount", "api.core.v1.ServiceAccount"),
    ("v1", "Event", "api.core.v1.Event"),
    ("v1", "LimitRange", "api.core.v1.LimitRange"),
    ("v1", "ResourceQuota", "api.core.v1.ResourceQuota"),
    ("v1", "Binding", "api.core.v1.Binding"),
    ("apps/v1", "Deployment", "api.apps.v1.Deployment"),
    ("apps/v1", "ReplicaSet", "api.apps.v1.ReplicaSet"),
    ("apps/v1", "StatefulSet", "api.apps.v1.StatefulSet"),
    ("apps/v1", "DaemonSet", "api.apps.v1.DaemonSet"),
    ("autoscaling/v1", "Scale", "api.autoscaling.v1.Scale"),
    ("batch/v1", "Job", "api.batch.v1.Job"),
    ("batch/v1", "CronJob", "api.batch.v1.CronJob"),
    ("coordination.k8s.io/v1", "Lease", "api.coordination.v1.Lease"),
    ("rbac.authorization.k8s.io/v1", "Role", "api.rbac.v1.Role"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", "api.rbac.v1.ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", "api.rbac.v1.RoleBinding"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "api.rbac.v1.ClusterRoleBinding"),
    ("discovery.k8s.io/v1", "EndpointSlice", "api.discovery.v1.EndpointSlice"),
    (
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "apiextensions_apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition",
    ),
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview", "api.authorization.v1.SelfSubjectAccessReview"),
    ("authorization.k8s.io/v1", "SelfSubjectRulesReview", "api.authorization.v1.SelfSubjectRulesReview"),
    ("authentication.k8s.io/v1", "TokenRequest", "api.authentication.v1.TokenRequest"),
    ("authentication.k8s.io/v1", "SelfSubjectReview", "api.authentication.v1.SelfSubjectReview"),
    # DeleteOptions is sent with the group-version of the resource deleted;
    # protobuf.rs looks kinds up by "apiVersion/Kind", then by "Kind".
    ("", "DeleteOptions", "apimachinery.pkg.apis.meta.v1.DeleteOptions"),
]

# Messages with their own JSON form (protobuf.rs decodes them by name); their
# fields are not followed.
SPECIAL = {
    "apimachinery.pkg.apis.meta.v1.Time",
    "apimachinery.pkg.apis.meta.v1.MicroTime",
    "apimachinery.pkg.apis.meta.v1.Duration",
    "apimachinery.pkg.apis.meta.v1.FieldsV1",
    "apimachinery.pkg.api.resource.Quantity",
    "apimachinery.pkg.util.intstr.IntOrString",
    "apimachinery.pkg.runtime.RawExtension",
    "apiextensions_apiserver.pkg.apis.apiextensions.v1.Json",
    "apiextensions_apiserver.pkg.apis.apiextensions.v1.JsonSchemaPropsOrArray",
    "apiextensions_apiserver.pkg.apis.apiextensions.v1.JsonSchemaPropsOrBool",
    "apiextensions_apiserver.pkg.apis.apiextensions.v1.JsonSchemaPropsOrStringArray",
    "api.authorization.v1.ExtraValue",
    "api.authentication.v1.ExtraValue",
}
# Followed anyway: the special forms above embed JSONSchemaProps.
FOLLOW_SPECIAL = {
    "apiextensions_apiserver.pkg.apis.apiextensions.v1.JsonSchemaPropsOrArray",
    "apiextensions_apiserver.pkg.apis.apiextensions.v1.JsonSchemaPropsOrBool",
    "apiextensions_apiserver.pkg.apis.apiextensions.v1.JsonSchemaPropsOrStringArray",
}

SCALARS = {"string", "bytes", "bool", "int32", "int64", "double", "float", "uint32", "uint64"}


def norm(s):
    return s.replace("_", "").replace("-", "").lower()


def parse_k8s_pb(root):
    """{message: [(tag, proto_name, type, label)]}, label in opt/rep/map."""
    messages = {}
    for dirpath, _, files in os.walk(root):
        if "mod.rs" not in files:
            continue
        rel = os.path.relpath(dirpath, root)
        if rel == ".":
            continue
        module = rel.split(os.sep)
        with open(os.path.join(dirpath, "mod.rs")) as f:
            lines = f.read().split("\n")
        current = None
        i = 0
        while i < len(lines):
            line = lines[i].strip()
            m = re.match(r"pub struct (\w+) \{", line)
            if m:
                current = ".".join(module + [m.group(1)])
                messages[current] = []
            elif line == "}":
                current = None
            m = re.match(r"#\[prost\((.*)\)\]$", line)
            if m and current:
                attr = m.group(1)
                # The field declaration: `pub name: Type,` possibly over lines.
                j = i + 1
                decl = ""
                while True:
                    decl += lines[j].strip() + " "
                    if re.search(r"pub (r#)?\w+:", decl) and decl.count("<") == decl.count(">") and decl.rstrip().endswith(","):
                        break
                    j += 1
                name = re.search(r"pub (?:r#)?(\w+):", decl).group(1)
                ty_text = decl.split(":", 1)[1]
                tag = int(re.search(r'tag = "(\d+)"', attr).group(1))
                if attr.startswith("btree_map") or attr.startswith("map"):
                    value = re.search(r'map = "string, (\w+)"', attr).group(1)
                    label = "map"
                    ty = value
                else:
                    ty = re.match(r"(\w+)", attr).group(1)
                    label = "rep" if "repeated" in attr else "opt"
                if ty == "message" or ty == "enumeration":
                    refs = [
                        r
                        for r in re.findall(r"(?<![:\w])((?:super::)*(?:[a-z_0-9]+::)*[A-Z]\w*)", ty_text)
                        if r not in ("Option", "Vec", "Box", "String", "BTreeMap")
                    ]
                    assert len(refs) == 1, (current, name, ty_text, refs)
                    parts = refs[0].split("::")
                    mod = list(module)
                    while parts[0] == "super":
                        mod.pop()
                        parts.pop(0)
                    ty = ".".join(mod + parts)
                messages[current].append((tag, name, ty, label))
                i = j
            i += 1
    return messages


GO_FIELD = re.compile(r"^\s*(?:(\w+)\s+)?(\S+)\s+`([^`]*)`")


def parse_go(repos):
    """{(go package dir, lowercased struct): {tag: (json name, pointer, omitempty)}}."""
    structs = {}
    for prefix, gitdir in repos.items():
        files = subprocess.run(
            ["git", "--git-dir", gitdir, "ls-tree", "-r", "--name-only", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        for path in files:
            if not path.endswith(".go") or path.endswith("_test.go") or "generated" in path:
                continue
            src = subprocess.run(
                ["git", "--git-dir", gitdir, "show", "HEAD:" + path], capture_output=True, text=True
            ).stdout
            pkg = prefix + "/" + os.path.dirname(path)
            for m in re.finditer(r"^type (\w+) struct \{\n(.*?)^\}", src, re.S | re.M):
                fields = {}
                for fl in m.group(2).split("\n"):
                    if fl.strip().startswith("//"):
                        continue
                    fm = GO_FIELD.match(fl)
                    if not fm:
                        continue
                    tags = fm.group(3)
                    pb = re.search(r'protobuf:"([^"]*)"', tags)
                    js = re.search(r'json:"([^"]*)"', tags)
                    if not pb:
                        continue
                    pbparts = pb.group(1).split(",")
                    if len(pbparts) < 2 or not pbparts[1].isdigit():
                        continue
                    tag = int(pbparts[1])
                    jparts = (js.group(1) if js else "").split(",")
                    fields[tag] = (jparts[0], fm.group(2).startswith("*"), "omitempty" in jparts[1:])
                structs[(pkg, m.group(1).lower())] = fields
    return structs


def go_package(message):
    mod = message.split(".")[:-1]
    if mod[0] == "api":
        return "api/" + "/".join(mod[1:])
    if mod[0] == "apimachinery":
        return "apimachinery/" + "/".join(mod[1:])
    if mod[0] == "apiextensions_apiserver":
        return "apiextensions-apiserver/" + "/".join(mod[1:])
    return None


def openapi_name(message):
    return "io.k8s." + message.replace("apiextensions_apiserver", "apiextensions-apiserver")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--k8s-pb", required=True)
    ap.add_argument("--openapi", required=True)
    ap.add_argument("--go", action="append", default=[])
    args = ap.parse_args()

    messages = parse_k8s_pb(args.k8s_pb)
    with open(args.openapi) as f:
        defs = {k.lower(): v for k, v in json.load(f).items()}
    structs = parse_go(dict(g.split("=", 1) for g in args.go))

    # Messages reachable from the kinds.
    todo = [m for _, _, m in KINDS]
    seen = set()
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        if m in SPECIAL and m not in FOLLOW_SPECIAL:
            continue
        for _, _, ty, _ in messages[m]:
            if ty not in SCALARS:
                todo.append(ty)

    out_messages = {}
    warnings = []
    for m in sorted(seen):
        if m in SPECIAL:
            continue
        d = defs.get(openapi_name(m).lower())
        if d is None:
            warnings.append(f"{m}: no OpenAPI definition")
        props = {norm(p): p for p in (d or {}).get("properties", [])}
        required = set((d or {}).get("required", []))
        go = structs.get((go_package(m), m.split(".")[-1].lower()))
        if go is None and structs:
            warnings.append(f"{m}: no Go struct")
        fields = []
        for tag, name, ty, label in messages[m]:
            go_field = (go or {}).get(tag)
            json_name = props.get(norm(name))
            inline = go_field is not None and go_field[0] == ""
            if inline:
                json_name = ""
            elif json_name is None:
                if go_field:
                    json_name = go_field[0]
                    warnings.append(f"{m}.{name}: not in OpenAPI, Go says {json_name!r}")
                else:
                    parts = name.split("_")
                    json_name = parts[0] + "".join(p.capitalize() for p in parts[1:])
                    warnings.append(f"{m}.{name}: unknown, guessed {json_name!r}")
            elif go_field and go_field[0] != json_name:
                warnings.append(f"{m}.{name}: OpenAPI {json_name!r} but Go {go_field[0]!r}")
            flags = ""
            if label == "rep":
                flags += "r"
            if label == "map":
                flags += "m"
            keep_zero = json_name in required
            if go_field is not None:
                keep_zero = keep_zero or go_field[1] or not go_field[2]
            if keep_zero:
                flags += "z"
            if inline:
                flags += "i"
            fields.append([tag, json_name, ty, flags])
        out_messages[m] = fields

    kinds = {}
    for api_version, kind, m in KINDS:
        kinds[f"{api_version}/{kind}" if api_version else kind] = m
    for w in warnings:
        print("warning:", w, file=sys.stderr)
    print(f"{len(out_messages)} messages", file=sys.stderr)
    # One message per line: a reviewable diff when regenerated.
    lines = ['{"kinds": ' + json.dumps(kinds, separators=(",", ":")) + ',', '"messages": {']
    items = [json.dumps(m) + ":" + json.dumps(f, separators=(",", ":")) for m, f in out_messages.items()]
    lines.append(",\n".join(items))
    lines.append("}}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
