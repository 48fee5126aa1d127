#!/usr/bin/env python3
"""Writes crates/kube-serve/src/protobuf/schema.txt: the field numbers, wire types and JSON names
of the Kubernetes built-in types that apiserver-lite and MetaServer read and write as protobuf.

Facts only, from two published crates already in the cargo registry:
  * k8s-pb (field numbers and wire types, generated from Kubernetes' generated.proto files);
  * k8s-openapi (JSON field names, and which fields are required).
Run it again after bumping either crate:  python3 hack/gen-protobuf-schema.py
"""
import glob
import os
import re
import sys

REG = glob.glob(os.path.expanduser("~/.cargo/registry/src/*/"))
PB = sorted(d for r in REG for d in glob.glob(r + "k8s-pb-0.9.*"))[-1]
OA_CRATE = sorted(d for r in REG for d in glob.glob(r + "k8s-openapi-0.29.*"))[-1]
OA = OA_CRATE + "/src/v1_35"
OUT = os.path.join(os.path.dirname(__file__), "..", "crates/kube-serve/src/protobuf/schema.txt")

# (apiVersion, kind, message); each root's List is added when k8s-pb has one.
ROOTS = [
    ("v1", "Pod", "api.core.v1.Pod"),
    ("v1", "Node", "api.core.v1.Node"),
    ("v1", "ConfigMap", "api.core.v1.ConfigMap"),
    ("v1", "Secret", "api.core.v1.Secret"),
    ("v1", "Namespace", "api.core.v1.Namespace"),
    ("v1", "ServiceAccount", "api.core.v1.ServiceAccount"),
    ("v1", "Event", "api.core.v1.Event"),
    ("v1", "Binding", "api.core.v1.Binding"),
    ("v1", "Service", "api.core.v1.Service"),
    ("v1", "Endpoints", "api.core.v1.Endpoints"),
    ("v1", "PersistentVolume", "api.core.v1.PersistentVolume"),
    ("v1", "PersistentVolumeClaim", "api.core.v1.PersistentVolumeClaim"),
    ("coordination.k8s.io/v1", "Lease", "api.coordination.v1.Lease"),
    ("events.k8s.io/v1", "Event", "api.events.v1.Event"),
    ("authentication.k8s.io/v1", "TokenRequest", "api.authentication.v1.TokenRequest"),
    ("certificates.k8s.io/v1", "CertificateSigningRequest", "api.certificates.v1.CertificateSigningRequest"),
    ("storage.k8s.io/v1", "VolumeAttachment", "api.storage.v1.VolumeAttachment"),
    ("discovery.k8s.io/v1", "EndpointSlice", "api.discovery.v1.EndpointSlice"),
    ("policy/v1", "Eviction", "api.policy.v1.Eviction"),
    ("*", "DeleteOptions", "apimachinery.pkg.apis.meta.v1.DeleteOptions"),
    ("v1", "Status", "apimachinery.pkg.apis.meta.v1.Status"),
]

# Messages with a JSON form of their own.
SPECIAL = {
    "apimachinery.pkg.apis.meta.v1.Time": "t",
    "apimachinery.pkg.apis.meta.v1.MicroTime": "u",
    "apimachinery.pkg.api.resource.Quantity": "q",
    "apimachinery.pkg.util.intstr.IntOrString": "x",
    "apimachinery.pkg.runtime.RawExtension": "r",
    "apimachinery.pkg.apis.meta.v1.FieldsV1": "r",
    "apimachinery.pkg.apis.meta.v1.Duration": "D",
    "api.certificates.v1.ExtraValue": "l",
}
# Go structs embedded inline (`json:",inline"`): their fields are the parent's in JSON.
INLINE = {"volume_source", "ephemeral_container_common", "handler", "local_object_reference",
          "persistent_volume_source"}
SCALAR = {"string": "s", "int32": "i", "int64": "i", "bool": "b", "bytes": "y", "double": "f"}


def short(full):
    for long, s in (("api.", ""), ("apimachinery.pkg.apis.", ""), ("apimachinery.pkg.", "")):
        if full.startswith(long):
            return s + full[len(long):]
    return full


def parse_pb():
    msgs = {}
    for path in glob.glob(PB + "/src/**/mod.rs", recursive=True):
        mod = os.path.relpath(os.path.dirname(path), PB + "/src").split(os.sep)
        text = open(path).read()
        for m in re.finditer(r"^pub struct (\w+) \{\n(.*?)^\}", text, re.M | re.S):
            name, body = m.group(1), m.group(2)
            body = "\n".join(l for l in body.split("\n") if not l.strip().startswith("///"))
            fields = []
            for chunk in body.split("#[prost(")[1:]:
                attr, rest = chunk.split(")]", 1)
                fm = re.match(r"\s*pub (r#)?(\w+):\s*(.*?),\s*$", rest, re.S)
                rname, ty = fm.group(2), fm.group(3)
                tag = int(re.search(r'tag = "(\d+)"', attr).group(1))
                paths = [p for p in re.findall(r"(?:super::)*[A-Za-z_][\w:]*", ty)
                         if not p.startswith(("prost", "core", "Option", "Vec", "String")) and p[0] != ":"]
                target = None
                if paths:
                    segs = paths[-1].split("::")
                    base = list(mod)
                    while segs and segs[0] == "super":
                        segs.pop(0)
                        base.pop()
                    target = ".".join(base + segs)
                fields.append((rname, attr, tag, target))
            msgs[".".join(mod + [name])] = fields
    return msgs


def parse_oa(full):
    """JSON names (normalized -> (json name, required)) of a type in k8s-openapi."""
    parts = full.split(".")
    d = os.path.join(OA, *parts[:-1])
    for f in glob.glob(d + "/*.rs"):
        text = open(f).read()
        # prost spells acronyms as words (`AwsElasticBlockStore…`), k8s-openapi as Go (`AWS…`).
        m = re.search(r"^pub struct (?i:" + parts[-1] + r") \{\n(.*?)^\}", text, re.M | re.S)
        if not m:
            continue
        required = {fm.group(1): not fm.group(2).startswith("Option<")
                    for fm in re.finditer(r"^\s*pub (\w+): (.*),$", m.group(1), re.M)}
        names = {}
        for jm in re.finditer(r'"(\w+)" => Field::Key_(\w+)', text):
            names[jm.group(1).lower()] = (jm.group(1), required.get(jm.group(2), False))
        return names
    return None


def main():
    msgs = parse_pb()
    todo = [r[2] for r in ROOTS]
    for _, kind, full in ROOTS:
        if full + "List" in msgs:
            todo.append(full + "List")
    seen, lines, problems = set(), [], []
    # An embedded struct that k8s-openapi does not have on its own (VolumeSource, …) takes its
    # JSON names from the type it is embedded in.
    inline_parent = {}
    while todo:
        full = todo.pop(0)
        if full in seen or full in SPECIAL:
            continue
        seen.add(full)
        oa = parse_oa(full)
        if oa is None and full in inline_parent:
            oa = parse_oa(inline_parent[full])
        out = []
        for rname, attr, tag, target in sorted(msgs[full], key=lambda f: f[2]):
            norm = rname.replace("_", "").lower()
            if oa is not None and norm in oa:
                jname, req = oa[norm]
            elif rname in INLINE:
                jname, req = None, False
                inline_parent[target] = inline_parent.get(full, full)
            else:
                # Lists are generic in k8s-openapi; their two fields are spelled as in protobuf.
                if not (full.endswith("List") and rname in ("metadata", "items")):
                    problems.append(f"{full}.{rname}: no JSON name in k8s-openapi")
                head, *tail = rname.split("_")
                jname, req = head + "".join(t[:1].upper() + t[1:] for t in tail), False
            inline = jname is None
            if "map" in attr:
                k, v = re.search(r'map = "(\w+), (\w+)"', attr).groups()
                if v == "message":
                    code = SPECIAL.get(target) or "m(" + short(target) + ")"
                    todo.append(target)
                else:
                    code = SCALAR[v]
                code = "{" + code + "}"
            else:
                kind = re.match(r"\s*(\w+)", attr).group(1)
                if kind == "message":
                    code = SPECIAL.get(target) or "m(" + short(target) + ")"
                    todo.append(target)
                else:
                    code = SCALAR[kind]
                if "repeated" in attr:
                    code += "*"
            if inline:
                out.append(f"~={tag}:{code}")
            else:
                out.append(f"{jname}={tag}:{code}{'!' if req else ''}")
        lines.append(short(full) + " " + " ".join(out))
    roots = [f"@{a} {k} {short(m)}" for a, k, m in ROOTS]
    roots += [f"@{a} {k}List {short(m)}List" for a, k, m in ROOTS if m + "List" in msgs]
    with open(OUT, "w") as fh:
        fh.write("# Generated by hack/gen-protobuf-schema.py from k8s-pb "
                 f"{os.path.basename(PB)[7:]} and k8s-openapi {os.path.basename(OA_CRATE)[12:]} (v1_35).\n")
        fh.write("# @apiVersion Kind message: a kind sent as protobuf; then one message per line:\n")
        fh.write("# jsonName=field:type, type s string, i int, b bool, y bytes, f double, t Time, u MicroTime,\n")
        fh.write("# q Quantity, x IntOrString, r raw JSON, D Duration, l list of strings, m(T) message; * repeated, {..} map, ! required;\n# a field named ~ is an embedded struct whose fields are inline in JSON.\n")
        fh.write("\n".join(roots + sorted(lines)) + "\n")
    for p in problems:
        print("error:", p, file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"{len(lines)} messages, {len(roots)} kinds -> {os.path.normpath(OUT)}")


main()
