#!/usr/bin/env python3
"""Writes the committed seed corpora under fuzz/seeds/<target>/ (run by hand, not by CI).

Sources: the upstream v1.15.4 captures in tests/fixtures/upstream/ (real frames, resource
strings and the real `/edge.crt` request), the config fixtures in crates/config/tests/fixtures/,
the `--defaultconfig` / `--minconfig` output of the debug cloudcore and edgecore binaries (host
name and IP replaced by the placeholders), and hand-written requests. The CSRs of the
`edge_cert_request` seeds are made with Python's `cryptography` package, and their join tokens
are HS256 JWTs signed with the key the fuzz target uses. Re-running rewrites every seed (the
CSR keys are fresh each time).

Usage: python3 fuzz/make_seeds.py   (after `cargo build -p cloudcore -p edgecore`)
"""

import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = os.path.join(ROOT, "fuzz", "seeds")
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "upstream")

# Must match fuzz_targets/edge_cert_request.rs.
KEY = b"kubeedge-fuzz-hmac-key"
EXP = 1_900_000_000  # after the target's "now" (1_800_000_000)


def write(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def reset(target):
    shutil.rmtree(os.path.join(SEEDS, target), ignore_errors=True)


def transcript():
    with open(os.path.join(FIXTURES, "transcript.jsonl")) as f:
        return [json.loads(line) for line in f]


def message_decode(records):
    reset("message_decode")
    seen = set()
    for r in records:
        if "raw" not in r:
            continue
        m = r.get("msg") if isinstance(r.get("msg"), dict) else {}
        route = m.get("route") or {}
        res = route.get("resource", "")
        key = (r["dir"], route.get("operation"), res.split("/")[1] if "/" in res else res)
        if key in seen:
            continue
        seen.add(key)
        name = "-".join(str(k or "none") for k in key).replace(">", "").replace("/", "_")
        write("message_decode", f"wire-{name}", r["raw"])
    with open(os.path.join(FIXTURES, "malformed-cloud-messages.json")) as f:
        for i, case in enumerate(json.load(f)["cases"]):
            if isinstance(case.get("sent"), dict):
                write("message_decode", f"malformed-{i}", json.dumps(case["sent"], separators=(",", ":")))
    hand = {
        "shutdown": '{"header":{"msg_id":"","timestamp":0},"route":{},"content":null}\n',
        "nulls": '{"header":null,"route":{"source":null,"resource":null},"content":null}',
        "empty-object": "{}",
        "all-header-keys": '{"header":{"msg_id":"a","parent_msg_id":"p","timestamp":5,"resourceversion":"7",'
        '"sync":true,"type":"channel"},"route":{"source":"s","destination":"d","group":"g",'
        '"operation":"insert","resource":"node/e/default/pod/x"},"content":{"a":[1,2.5e3,true,null]}}',
        "string-content-json": '{"header":{"msg_id":"x","timestamp":1},"route":{"operation":"patch",'
        '"resource":"default/podpatch/p"},"content":"{\\"status\\":{\\"phase\\":\\"Running\\"}}"}',
        "escapes": '{"header":{"msg_id":"\\u00e9\\ud83d\\ude00","timestamp":-1},"route":{"operation":"\\n"},'
        '"content":"\\u0000\\t\\"\\\\"}',
        "err-status": '{"header":{"msg_id":"r","parent_msg_id":"q","timestamp":2},"route":{"operation":"response",'
        '"resource":"default/node/n"},"content":{"ErrStatus":{"code":404,"reason":"NotFound"}}}',
        "error-op": '{"header":{"msg_id":"r","timestamp":2},"route":{"operation":"error"},"content":"boom"}',
        "connection": '{"header":{"msg_id":"c","timestamp":3},"route":{"resource":"node/connection"},'
        '"content":"connected"}',
        "duplicate-key": '{"header":{"msg_id":"a","msg_id":"b"}}',
        "deep": "{" + '"content":' + "[" * 64 + "]" * 64 + "}",
    }
    for name, text in hand.items():
        write("message_decode", f"hand-{name}", text)


def resource_path(records):
    reset("resource_path")
    resources = []
    for r in records:
        m = r.get("msg") if isinstance(r.get("msg"), dict) else {}
        res = (m.get("route") or {}).get("resource")
        if res and res not in resources:
            resources.append(res)
    for i, res in enumerate(resources):
        write("resource_path", f"wire-{i:02}", f"{res}\nedge-capture")
    hand = [
        "node/edge-capture/default/pod/capture-pod\nedge-capture",
        "node/edge-1/membership/detail\nedge-1",
        "node/edge-1\nedge-1",
        "node//default/pod/x\n",
        "nodes/x/default/pod/y\nx",
        "null/node/edge-1\nedge-1",
        "default/configmap\nn",
        "a//b\nn",
        "/pod/x\nn",
        "a/b/\nn",
        "a/b/c/d\nn",
        "node/a.b-c/kube-node-lease/lease/a.b-c\na.b-c",
        "default/pod/\u00e9\u00e9\nn\u00e9",
        "\nnode/with/slashes",
        "node/\n-bad-",
    ]
    for i, text in enumerate(hand):
        write("resource_path", f"hand-{i:02}", text)


def jwt(claims, key=KEY, alg="HS256"):
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    head = b64(json.dumps({"alg": alg, "typ": "JWT"}, separators=(",", ":")).encode())
    body = b64(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def csr(subject, rsa=False, sans=(), server=False):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric import rsa as rsa_mod
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    oids = {"C": NameOID.COUNTRY_NAME, "ST": NameOID.STATE_OR_PROVINCE_NAME, "L": NameOID.LOCALITY_NAME,
            "O": NameOID.ORGANIZATION_NAME, "CN": NameOID.COMMON_NAME}
    key = rsa_mod.generate_private_key(65537, 2048) if rsa else ec.generate_private_key(ec.SECP256R1())
    b = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(oids[k], v) for k, v in subject]))
    if sans:
        import ipaddress
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address(s)) for s in sans]), critical=False)
    if server:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def request(headers, body, path="/edge.crt"):
    head = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    if body and not any(k.lower() == "content-length" for k, _ in headers):
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def edge_cert_request():
    reset("edge_cert_request")
    with open(os.path.join(FIXTURES, "edge-crt-request.json")) as f:
        fx = json.load(f)
    der = base64.b64decode(fx["csr"]["der_base64"])
    # The real v1.15.4 request, headers as on the wire (its token is signed by another key).
    write("edge_cert_request", "upstream-v1.15.4", request([tuple(h) for h in fx["headers"]], der, fx["path"]))
    try:
        import cryptography  # noqa: F401
    except ImportError:
        print("make_seeds: no python3 cryptography; only the upstream edge_cert_request seed", file=sys.stderr)
        return
    node = [("C", "CN"), ("ST", "Zhejiang"), ("L", "Hangzhou"), ("O", "system:nodes"), ("CN", "system:node:edge-1")]
    shared = "Bearer " + jwt({"exp": EXP})
    bound = "Bearer " + jwt({"exp": EXP, "sub": "system:node:edge-1"})
    own = csr(node)
    cases = {
        "join-shared-token": ([("NodeName", "edge-1"), ("Authorization", shared)], own),
        "join-bound-token": ([("Nodename", "edge-1"), ("Authorization", bound)], own),
        "other-node": ([("NodeName", "edge-2"), ("Authorization", shared)], own),
        "legacy-subject": ([("NodeName", "edge-capture"), ("Authorization", shared)],
                           csr([("C", "CN"), ("O", "kubeEdge"), ("CN", "kubeedge.io")])),
        "rsa-key": ([("NodeName", "edge-1"), ("Authorization", shared)], csr(node, rsa=True)),
        "asks-for-server": ([("NodeName", "edge-1"), ("Authorization", shared), ("ExtKeyUsages", "[1]")],
                            csr(node + [("O", "system:masters")], sans=["127.0.0.1"], server=True)),
        "expired-token": ([("NodeName", "edge-1"), ("Authorization", "Bearer " + jwt({"exp": 1}))], own),
        "alg-none": ([("NodeName", "edge-1"), ("Authorization", "Bearer " + jwt({"exp": EXP}, alg="none"))], own),
        "bad-sub": ([("NodeName", "edge-1"), ("Authorization", "Bearer " + jwt({"exp": EXP, "sub": 5}))], own),
        "no-credentials": ([("NodeName", "edge-1")], own),
        "built-subject": ([("NodeName", "edge-1"), ("Fuzz-Subject", "system:node:edge-1|x|system:nodes")], b""),
        "oversize": ([("NodeName", "edge-1"), ("Authorization", shared), ("Content-Length", "65537")], own),
        "not-der": ([("NodeName", "edge-1"), ("Authorization", shared)], b"-----BEGIN CERTIFICATE REQUEST-----\n"),
    }
    for name, (headers, body) in cases.items():
        write("edge_cert_request", name, request(headers, body))


def metaserver_request():
    reset("metaserver_request")
    json_ = "application/json"
    table = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
    lines = [
        ("/api/v1/namespaces/default/pods?limit=500", table, "GET"),
        ("/api/v1/pods?fieldSelector=spec.nodeName%3Dedge-1&resourceVersion=0", "application/vnd.kubernetes.protobuf, */*", "GET"),
        ("/api/v1/namespaces/default/pods?watch=1&resourceVersion=120&allowWatchBookmarks=true&timeoutSeconds=300", json_, "GET"),
        ("/api/v1/namespaces/kube-system/configmaps?labelSelector=app%3Dweb%2Ctier+in+%28a%2Cb%29", json_, "GET"),
        ("/api/v1/nodes/edge-1/status", json_, "PATCH"),
        ("/api/v1/namespaces/default/pods/nginx/log?container=c", "*/*", "GET"),
        ("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/edge-1", json_, "PUT"),
        ("/apis/apps/v1/namespaces/default/deployments?sendInitialEvents=true&resourceVersionMatch=NotOlderThan&watch=true", json_, "GET"),
        ("/api/v1/namespaces/default/configmaps/a%2Fb%25c", "application/yaml", "DELETE"),
        ("/api/v1/namespaces/default/pods?continue=eyJrIjoiYSIsInJ2IjoxfQ&limit=2", json_, "GET"),
        ("/api/v1/namespaces?labelSelector=!kubernetes.io%2Fmetadata.name", json_, "GET"),
        ("/api/v1/namespaces/x/finalize", json_, "PUT"),
        ("/api", "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json", "GET"),
        ("/apis", "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList;q=0.9, application/json;q=0.8", "GET"),
        ("/apis/apps/v1", json_, "GET"),
        ("/version", "", "GET"),
        ("/openapi/v3/api/v1", json_, "GET"),
        ("/readyz/ping", "text/plain", "GET"),
        ("/api/v1/namespaces/default/pods/p?gracePeriodSeconds=0&propagationPolicy=Background&dryRun=All", json_, "DELETE"),
        ("/api/v1/namespaces/default/pods/p?fieldManager=kubectl&force=true", "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io", "PATCH"),
        ("/api/v1/pods?watch&watch=false&limit=ten", json_, "GET"),
        ("/api/v1/pods?timeoutSeconds=-1", json_, "GET"),
        ("/api/v1/pods?fieldSelector=metadata.name%3Da%5C%2Cb%2Cstatus.phase!%3DFailed", json_, "GET"),
        ("//api///v1/", "application/json;q=0, application/yaml;q=0.5", "OPTIONS"),
        ("/api/v1/namespaces/default/services/s:80/proxy/some/path?x=%zz%4", "application/json;as=PartialObjectMetadataList;v=v1beta1;g=meta.k8s.io", "GET"),
    ]
    for i, (target, accept, method) in enumerate(lines):
        write("metaserver_request", f"req-{i:02}", f"{target}\n{accept}\n{method}")


def selector():
    reset("selector")
    texts = [
        "app=web", "app==web,tier!=db", "env in (prod, staging),!canary", "env notin (dev,qa),team",
        "node-role.kubernetes.io/edge", "x in (in,notin),y=in", "n>3,m<10", "a in (,x)", "a=,b==",
        "  env in (prod) ,  team , ! nope ", "a in (", "a=b=c", "Foo.com/a=b", "a/b/c=d",
        "spec.nodeName=edge-1,status.phase!=Failed", r"metadata.name=a\,b\=c\\d,x!=y", r"a\ =x", "a=b\\",
        "metadata.name=caf\u00e9", '{"matchLabels":{"app":"web"},"matchExpressions":[{"key":"env","operator":"In","values":["prod","qa"]},{"key":"canary","operator":"DoesNotExist"}]}',
        '{"matchExpressions":[{"key":"n","operator":"Gt","values":["3"]}]}', "{}", "null",
    ]
    for i, t in enumerate(texts):
        write("selector", f"sel-{i:02}", t)


def config_yaml():
    reset("config_yaml")
    fx = os.path.join(ROOT, "crates", "config", "tests", "fixtures")
    for name in sorted(os.listdir(fx)):
        with open(os.path.join(fx, name), "rb") as f:
            write("config_yaml", f"fixture-{name}", f.read())
    host = subprocess.run(["hostname"], capture_output=True, text=True).stdout.strip()
    ip = None
    for daemon in ("cloudcore", "edgecore"):
        exe = os.path.join(ROOT, "target", "debug", daemon)
        if not os.path.exists(exe):
            print(f"make_seeds: {exe} not built; skipping its --defaultconfig seeds", file=sys.stderr)
            continue
        for flag in ("--defaultconfig", "--minconfig"):
            out = subprocess.run([exe, flag], capture_output=True, text=True, check=True).stdout
            # This machine's facts become upstream's placeholders.
            found = re.search(r"advertiseAddress:\n\s*- (\S+)\n", out)
            ip = ip or (found.group(1) if found else None)
            if ip:
                out = out.replace(ip, "127.0.0.1")
            if host:
                out = out.replace(f"hostnameOverride: {host}\n", "hostnameOverride: default-edge-node\n")
            write("config_yaml", f"{daemon}{flag}.yaml", out)
    hand = {
        "partial.yaml": "apiVersion: edgecore.config.kubeedge.io/v1alpha2\nkind: EdgeCore\nmodules:\n"
        "  edgeHub:\n    heartbeat: 15\n    fooBar: 1\n  edged:\n    tailoredKubeletConfig:\n"
        "      nodeStatusUpdateFrequency: 1h2m3.5s\n      someFutureKey: {a: [1, 2]}\n",
        "anchors.yaml": "x: &a {enable: true}\nmodules:\n  cloudHub: *a\n  edgeController: *a\n"
        "kubeAPIConfig: {qps: -1, burst: 2147483647}\n",
        "wrong-type.yaml": "modules:\n  cloudHub:\n    nodeLimit: many\n",
        "tagged.yaml": "!CloudCore\napiVersion: v1\n",
        "empty.yaml": "# nothing\n---\n",
        "scalar.yaml": "just a string\n",
    }
    for name, text in hand.items():
        write("config_yaml", f"hand-{name}", text)


def main():
    records = transcript()
    message_decode(records)
    resource_path(records)
    edge_cert_request()
    metaserver_request()
    selector()
    config_yaml()
    for t in sorted(os.listdir(SEEDS)):
        d = os.path.join(SEEDS, t)
        files = os.listdir(d)
        size = sum(os.path.getsize(os.path.join(d, f)) for f in files)
        print(f"{t}: {len(files)} seeds, {size} bytes")


if __name__ == "__main__":
    main()
