//! The machine's real kubectl (v1.32) against MetaServer, as a user on the edge node would
//! drive it: reads from the local store, a watch that follows MetaManager's changes, and writes
//! that go to the (fake) cloud as Applications.

mod metaserver_common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use edgecore::metamanager::ChangeKind;
use metaserver_common::{Env, PATIENCE, pod, reject_with};
use serde_json::{Value, json};

fn names(list: &Value) -> Vec<String> {
    let mut v: Vec<String> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn discovery_and_version() {
    let env = Env::start();
    let v = env.json(&["version"]);
    assert_eq!(v["serverVersion"]["major"], "1");
    let resources = env.ok(&["api-resources"]);
    for want in ["pods", "po", "configmaps", "cm", "nodes", "leases", "coordination.k8s.io", "persistentvolumeclaims"] {
        assert!(resources.contains(want), "api-resources lacks {want}:\n{resources}");
    }
    assert!(!resources.contains("deployments"), "only stored resources are served:\n{resources}");
    let raw: Value = serde_json::from_str(&env.ok(&["get", "--raw", "/api/v1"])).expect("json");
    assert_eq!(raw["kind"], "APIResourceList");
    let groups: Value = serde_json::from_str(&env.ok(&["get", "--raw", "/apis"])).expect("json");
    assert_eq!(groups["groups"][0]["name"], "coordination.k8s.io");
    assert_eq!(env.ok(&["get", "--raw", "/healthz"]).trim(), "ok");
    assert_eq!(env.ok(&["get", "--raw", "/readyz"]).trim(), "ok");
    let openapi: Value = serde_json::from_str(&env.ok(&["get", "--raw", "/openapi/v3"])).expect("json");
    assert!(openapi["paths"]["api/v1"]["serverRelativeURL"].is_string(), "{openapi}");
}

#[test]
fn get_pods_in_every_form() {
    let env = Env::start();
    let all = env.ok(&["get", "pods", "-A"]);
    let header = all.lines().next().expect("header");
    for col in ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"] {
        assert!(header.contains(col), "{all}");
    }
    for want in ["web-1", "web-2", "dns", "kube-system", "Running", "Pending"] {
        assert!(all.contains(want), "{all}");
    }
    let ns = env.ok(&["get", "pods", "-n", "kube-system"]);
    assert!(ns.contains("dns") && !ns.contains("web-1"), "{ns}");
    let default = env.ok(&["get", "pods"]);
    assert!(default.contains("web-1") && !default.contains("dns"), "{default}");

    let list = env.json(&["get", "pods", "-A"]);
    assert_eq!(names(&list), ["dns", "web-1", "web-2"]);
    let one = env.json(&["get", "pod", "web-1"]);
    assert_eq!(one["kind"], "Pod");
    assert_eq!(one["status"]["podIP"], "10.0.0.11");
    assert_eq!(one["metadata"]["resourceVersion"], "100");

    let wide = env.ok(&["get", "pods", "-o", "wide"]);
    let header = wide.lines().next().expect("header");
    assert!(header.contains("IP") && header.contains("NODE"), "{wide}");
    assert!(wide.contains("10.0.0.11") && wide.contains("edge-1"), "{wide}");

    assert_eq!(env.ok(&["get", "pods", "-A", "-l", "app=web", "-o", "name"]).trim(), "pod/web-1\npod/web-2");
    assert_eq!(env.ok(&["get", "pods", "-A", "-l", "app notin (web)", "-o", "name"]).trim(), "pod/dns");
    let by_field = env.ok(&["get", "pods", "-A", "--field-selector", "metadata.name=web-2", "-o", "name"]);
    assert_eq!(by_field.trim(), "pod/web-2");
    let by_phase = env.ok(&["get", "pods", "-A", "--field-selector", "status.phase=Running", "-o", "name"]);
    // In key order, namespace first, as kube-apiserver lists.
    assert_eq!(by_phase.trim(), "pod/web-1\npod/dns");
    // Paged through by kubectl itself.
    let paged = env.ok(&["get", "pods", "-A", "--chunk-size", "1", "-o", "name"]);
    assert_eq!(paged.lines().count(), 3, "{paged}");

    let missing = env.fails(&["get", "pod", "nope"]);
    assert!(missing.contains("pods \"nope\" not found"), "{missing}");
    let bad = env.fails(&["get", "pods", "-l", "app in ("]);
    assert!(!bad.is_empty());
}

#[test]
fn get_nodes_and_configmaps() {
    let env = Env::start();
    let nodes = env.ok(&["get", "nodes"]);
    assert!(nodes.contains("edge-1") && nodes.contains("Ready"), "{nodes}");
    assert!(nodes.contains("v1.29.5-kubeedge-v1.23.0"), "{nodes}");
    let node = env.json(&["get", "node", "edge-1"]);
    assert_eq!((node["apiVersion"].as_str(), node["kind"].as_str()), (Some("v1"), Some("Node")));
    let yaml = env.ok(&["get", "configmap", "settings", "-o", "yaml"]);
    assert!(yaml.contains("kind: ConfigMap") && yaml.contains("mode: edge"), "{yaml}");
    let cms = env.ok(&["get", "cm"]);
    assert!(cms.contains("settings") && cms.contains("DATA"), "{cms}");
    let leases = env.ok(&["get", "leases", "-A"]);
    assert!(leases.contains("kube-node-lease") && leases.contains("HOLDER"), "{leases}");
    let svc = env.ok(&["get", "svc", "-o", "wide"]);
    assert!(svc.contains("10.96.0.20") && svc.contains("80/TCP"), "{svc}");
    let none = env.ok(&["get", "secrets,pvc,endpoints"]);
    assert!(none.is_empty(), "{none}");
    let err = env.fails(&["get", "deployments"]);
    assert!(err.contains("the server doesn't have a resource type"), "{err}");
}

#[test]
fn get_watch_follows_metamanager_changes() {
    let env = Env::start();
    let mut watch = env
        .kubectl_cmd(&["get", "pods", "-w", "--output-watch-events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl");
    let stdout = watch.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + PATIENCE;
    let mut seen: Vec<String> = Vec::new();
    let mut published = false;
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            seen.push(line);
        }
        // Once the initial list is shown, MetaManager commits a new pod.
        if !published && seen.iter().any(|l| l.contains("web-2")) {
            env.put(ChangeKind::Added, "pod", pod("default", "fresh", "web", "Pending", ""), 200);
            published = true;
        }
        if seen.iter().any(|l| l.contains("ADDED") && l.contains("fresh")) {
            break;
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(seen.iter().any(|l| l.contains("ADDED") && l.contains("fresh")), "watch output: {seen:#?}");
    assert!(!seen.iter().any(|l| l.contains("dns")), "other namespaces stay out: {seen:#?}");
}

#[test]
fn writes_fail_fast_while_offline() {
    let env = Env::start();
    let err = env.fails(&["create", "configmap", "x", "--from-literal", "a=b"]);
    assert!(err.contains("the edge is offline"), "{err}");
    let err = env.fails(&["label", "pod", "web-1", "x=y"]);
    assert!(err.contains("the edge is offline"), "{err}");
    assert!(env.received().is_empty(), "nothing reaches the cloud");
    // Reads keep working.
    env.ok(&["get", "pods"]);
}

#[test]
fn writes_go_to_the_cloud_as_applications() {
    let env = Env::start();
    env.set_connected(true);

    let created = env.json(&["create", "configmap", "made", "--from-literal", "a=b"]);
    assert_eq!(created["metadata"]["uid"], "0f0e0d0c-uid", "the cloud's object is returned");
    assert_eq!(created["data"]["a"], "b");
    let app = env.received().pop().expect("an application");
    assert_eq!(app.verb.as_str(), "create");
    assert_eq!(app.key, "/core/v1/configmaps/default/null");
    assert_eq!(app.nodename, "edge-1");
    assert_eq!(app.id.len(), 64);
    let opts: Value = serde_json::from_slice(app.option.as_deref().expect("options")).expect("json");
    assert_eq!(opts["kind"], "CreateOptions");
    let body: Value = serde_json::from_slice(app.req_body.as_deref().expect("body")).expect("json");
    assert_eq!(body["metadata"]["namespace"], "default", "the request namespace is filled in");
    // Nothing is written locally: the object arrives through the cloud's sync.
    env.fails(&["get", "configmap", "made"]);

    env.ok(&["label", "pod", "web-1", "tier=front"]);
    let app = env.received().pop().expect("a patch");
    assert_eq!(app.verb.as_str(), "patch");
    assert_eq!(app.key, "/core/v1/pods/default/web-1");
    let info: Value = serde_json::from_slice(app.option.as_deref().expect("PatchInfo")).expect("json");
    assert_eq!(info["Name"], "web-1");
    assert_eq!(info["PatchType"], "application/merge-patch+json");
    assert_eq!(info["Subresources"], json!([""]));
    let data = base64_decode(info["Data"].as_str().expect("base64 data"));
    let patch: Value = serde_json::from_slice(&data).expect("patch json");
    assert_eq!(patch["metadata"]["labels"]["tier"], "front");

    let out = env.ok(&["delete", "pod", "web-2", "--wait=false"]);
    assert!(out.contains("pod \"web-2\" deleted"), "{out}");
    let app = env.received().pop().expect("a delete");
    assert_eq!((app.verb.as_str(), app.key.as_str()), ("delete", "/core/v1/pods/default/web-2"));

    env.answer_with(reject_with(json!({"metadata": {}, "status": "Failure",
        "message": "Operation cannot be fulfilled on pods \"web-1\": the object has been modified; please apply your changes to the latest version and try again",
        "reason": "Conflict", "details": {"name": "web-1", "kind": "pods"}, "code": 409})));
    let err = env.fails(&["annotate", "pod", "web-1", "note=x"]);
    assert!(err.contains("Error from server (Conflict)"), "{err}");
    assert!(err.contains("the object has been modified"), "{err}");
}

#[test]
fn malformed_requests_get_status_errors() {
    let env = Env::start();
    let err = env.fails(&["get", "--raw", "/api/v1/namespaces/default/flurbs"]);
    assert!(err.contains("NotFound") || err.contains("could not find"), "{err}");
    let err = env.fails(&["get", "--raw", "/apis/apps/v1/deployments"]);
    assert!(err.contains("NotFound") || err.contains("could not find"), "{err}");
    let err = env.fails(&["get", "--raw", "/api/v1/pods?limit=ten"]);
    assert!(err.contains("BadRequest") || err.contains("invalid value for limit"), "{err}");
    let out =
        env.kubectl_stdin(&["create", "--raw", "/api/v1/namespaces/default/configmaps", "-f", "-"], Some("{not json"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("BadRequest") || err.contains("not valid JSON"), "{err}");
    let huge = format!(
        "{{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{{\"name\":\"big\"}},\"data\":{{\"x\":\"{}\"}}}}",
        "a".repeat(edgecore::metamanager::metaserver::MAX_BODY + 10)
    );
    let out = env.kubectl_stdin(&["create", "--raw", "/api/v1/namespaces/default/configmaps", "-f", "-"], Some(&huge));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("RequestEntityTooLarge"), "{err}");
    // Still serving.
    assert!(env.ok(&["get", "pods"]).contains("web-1"));
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).expect("base64")
}
