//! The machine's real kubectl against apiserver-lite, as a user would drive a cluster.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Cluster;
use serde_json::json;

const POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web, tier: front}
spec:
  containers:
  - name: httpd
    image: localhost/busybox:1.35
    command: ["httpd", "-f", "-p", "8080"]
    env: [{name: A, value: "1"}]
"#;

#[test]
fn discovery_version_and_api_resources() {
    let c = Cluster::start();
    let v: serde_json::Value = serde_json::from_str(&c.ok(&["version", "-o", "json"])).unwrap();
    assert_eq!(v["serverVersion"]["major"], "1");
    let resources = c.ok(&["api-resources"]);
    for want in
        ["pods", "po", "leases", "coordination.k8s.io", "customresourcedefinitions", "certificatesigningrequests"]
    {
        assert!(resources.contains(want), "api-resources lacks {want}:\n{resources}");
    }
    let raw: serde_json::Value = serde_json::from_str(&c.ok(&["get", "--raw", "/api/v1"])).unwrap();
    assert_eq!(raw["kind"], "APIResourceList");
    assert!(raw["resources"].as_array().unwrap().iter().any(|r| r["name"] == "pods/status"));
    let groups: serde_json::Value = serde_json::from_str(&c.ok(&["get", "--raw", "/apis"])).unwrap();
    assert!(groups["groups"].as_array().unwrap().iter().any(|g| g["name"] == "coordination.k8s.io"));
    let ns = c.ok(&["get", "namespaces"]);
    assert!(ns.contains("default") && ns.contains("kube-system") && ns.contains("Active"), "{ns}");
}

#[test]
fn create_get_in_every_output_format() {
    let c = Cluster::start();
    c.ok_stdin(&["create", "-f", "-"], POD);
    let pod = c.json(&["get", "pod", "web"]);
    assert_eq!(pod["status"]["phase"], "Pending");
    assert_eq!(pod["spec"]["securityContext"], json!({}));
    assert_eq!(pod["spec"]["restartPolicy"], "Always");
    assert!(pod["metadata"]["uid"].as_str().is_some_and(|u| u.len() == 36));
    let yaml = c.ok(&["get", "pod", "web", "-o", "yaml"]);
    assert!(yaml.contains("name: web") && yaml.contains("phase: Pending"), "{yaml}");
    let table = c.ok(&["get", "pods"]);
    let header = table.lines().next().unwrap();
    for col in ["NAME", "READY", "STATUS", "RESTARTS", "AGE"] {
        assert!(header.contains(col), "{table}");
    }
    assert!(table.contains("web") && table.contains("0/1") && table.contains("Pending"), "{table}");
    let wide = c.ok(&["get", "pods", "-o", "wide"]);
    assert!(wide.lines().next().unwrap().contains("NODE"), "{wide}");
    let names = c.ok(&["get", "pods", "-l", "app=web", "-o", "name"]);
    assert_eq!(names.trim(), "pod/web");
    assert!(c.ok(&["get", "pods", "-l", "app notin (web)", "-o", "name"]).trim().is_empty());
    let by_field = c.ok(&["get", "pods", "--field-selector", "status.phase=Pending", "-o", "name"]);
    assert_eq!(by_field.trim(), "pod/web");
    let dup = c.kubectl_stdin(&["create", "-f", "-"], Some(POD));
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));
    let missing = c.kubectl(&["get", "pod", "nope"]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("pods \"nope\" not found"));
    let unknown = c.kubectl(&["get", "flurbs"]);
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("the server doesn't have a resource type"),
        "{:?}",
        unknown
    );
}

#[test]
fn apply_client_side_and_server_side() {
    let c = Cluster::start();
    let cm = |v: &str| format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  mode: {v}\n");
    c.ok_stdin(&["apply", "-f", "-"], &cm("a"));
    c.ok_stdin(&["apply", "-f", "-"], &cm("b"));
    let got = c.json(&["get", "configmap", "settings"]);
    assert_eq!(got["data"]["mode"], "b");
    assert!(got["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"].is_string());

    let ss = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  k: v1\n";
    c.ok_stdin(&["apply", "--server-side", "-f", "-"], ss);
    c.ok_stdin(&["apply", "--server-side", "-f", "-"], &ss.replace("k: v1", "k: v2"));
    let got = c.json(&["get", "configmap", "ssa", "--show-managed-fields"]);
    assert_eq!(got["data"]["k"], "v2");
    let managers: Vec<_> =
        got["metadata"]["managedFields"].as_array().unwrap().iter().map(|m| m["manager"].clone()).collect();
    assert!(managers.contains(&json!("kubectl")), "{managers:?}");
}

#[test]
fn patch_label_annotate() {
    let c = Cluster::start();
    c.ok_stdin(&["create", "-f", "-"], POD);
    c.ok(&[
        "patch",
        "pod",
        "web",
        "-p",
        r#"{"spec":{"containers":[{"name":"httpd","image":"localhost/busybox:1.36"}]}}"#,
    ]);
    let pod = c.json(&["get", "pod", "web"]);
    assert_eq!(pod["spec"]["containers"][0]["image"], "localhost/busybox:1.36");
    assert_eq!(pod["spec"]["containers"][0]["env"][0]["name"], "A", "strategic merge keeps other fields");
    c.ok(&["patch", "pod", "web", "--type", "merge", "-p", r#"{"metadata":{"labels":{"tier":null,"x":"y"}}}"#]);
    c.ok(&["patch", "pod", "web", "--type", "json", "-p", r#"[{"op":"add","path":"/metadata/labels/j","value":"k"}]"#]);
    let labels = &c.json(&["get", "pod", "web"])["metadata"]["labels"];
    assert_eq!(labels, &json!({"app": "web", "x": "y", "j": "k"}));
    let bad = c.kubectl(&[
        "patch",
        "pod",
        "web",
        "--type",
        "json",
        "-p",
        r#"[{"op":"test","path":"/metadata/name","value":"other"}]"#,
    ]);
    assert!(!bad.status.success());

    c.ok(&["label", "pod", "web", "env=prod"]);
    let clash = c.kubectl(&["label", "pod", "web", "env=dev"]);
    assert!(!clash.status.success(), "relabel without --overwrite must fail");
    c.ok(&["label", "pod", "web", "env=dev", "--overwrite"]);
    c.ok(&["annotate", "pod", "web", "note=hello"]);
    let meta = &c.json(&["get", "pod", "web"])["metadata"];
    assert_eq!(meta["labels"]["env"], "dev");
    assert_eq!(meta["annotations"]["note"], "hello");

    c.ok(&[
        "patch",
        "pod",
        "web",
        "--subresource",
        "status",
        "--type",
        "merge",
        "-p",
        r#"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}"#,
    ]);
    c.ok(&["wait", "--for", "condition=Ready", "pod/web", "--timeout", "30s"]);
    assert_eq!(c.json(&["get", "pod", "web"])["status"]["phase"], "Running");
}

#[test]
fn delete_wait_and_graceful_pod_deletion() {
    let c = Cluster::start();
    c.ok(&["create", "configmap", "gone", "--from-literal", "a=b"]);
    c.ok(&["delete", "configmap", "gone", "--wait"]);
    assert!(!c.kubectl(&["get", "configmap", "gone"]).status.success());

    // A pod on a node: deletion sets a deletionTimestamp and waits for the node (grace 0).
    c.ok_stdin(&["create", "-f", "-"], &POD.replace("spec:\n", "spec:\n  nodeName: edge-1\n"));
    c.ok(&["delete", "pod", "web", "--wait=false"]);
    let pod = c.json(&["get", "pod", "web"]);
    assert!(pod["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(pod["metadata"]["deletionGracePeriodSeconds"], 30);
    let table = c.ok(&["get", "pods"]);
    assert!(table.contains("Terminating"), "{table}");
    c.ok(&["delete", "pod", "web", "--grace-period=0", "--force"]);
    assert!(!c.kubectl(&["get", "pod", "web"]).status.success());

    // Finalizers hold an object until they are removed.
    c.ok_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  finalizers: [example.com/hold]\n",
    );
    c.ok(&["delete", "configmap", "held", "--wait=false"]);
    assert!(c.json(&["get", "configmap", "held"])["metadata"]["deletionTimestamp"].is_string());
    c.ok(&["patch", "configmap", "held", "--type", "merge", "-p", r#"{"metadata":{"finalizers":null}}"#]);
    assert!(!c.kubectl(&["get", "configmap", "held"]).status.success());
}

#[test]
fn crd_then_custom_objects() {
    let c = Cluster::start();
    let crd = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wg]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#;
    c.ok_stdin(&["apply", "-f", "-"], crd);
    c.ok(&["wait", "--for", "condition=established", "crd/widgets.example.com", "--timeout", "30s"]);
    c.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w1\nspec:\n  size: 3\n",
    );
    let w = c.json(&["get", "wg", "w1"]);
    assert_eq!(w["spec"]["size"], 3);
    c.ok(&["patch", "widget", "w1", "--type", "merge", "-p", r#"{"spec":{"size":4}}"#]);
    assert_eq!(c.json(&["get", "widgets", "w1"])["metadata"]["generation"], 2);
    assert!(c.ok(&["get", "widgets"]).contains("w1"));
    c.ok(&["delete", "crd", "widgets.example.com"]);
    assert!(!c.kubectl(&["get", "widgets"]).status.success());
}

#[test]
fn get_watch_streams_changes() {
    let c = Cluster::start();
    let mut watch = Command::new("kubectl")
        .env("KUBECONFIG", &c.kubeconfig)
        .env("HOME", c.dir.path())
        .args(["get", "configmaps", "-w", "--output-watch-events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl is required for these tests");
    let stdout = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The initial list shows the namespace's root CA configmap.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    let mut created = false;
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(line);
        }
        if !created && seen.iter().any(|l| l.contains("kube-root-ca.crt")) {
            c.ok(&["create", "configmap", "watched", "--from-literal", "a=b"]);
            created = true;
        }
        if seen.iter().any(|l| l.contains("ADDED") && l.contains("watched")) {
            break;
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(seen.iter().any(|l| l.contains("ADDED") && l.contains("watched")), "watch output: {seen:#?}");
}

#[test]
fn bad_input_gets_status_errors() {
    let c = Cluster::start();
    let bad = c.kubectl(&["get", "--raw", "/api/v1/namespaces/default/nopes"]);
    assert!(!bad.status.success());
    let out =
        c.kubectl_stdin(&["create", "--raw", "/api/v1/namespaces/default/configmaps", "-f", "-"], Some("{not json"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("BadRequest") || err.contains("400") || err.contains("not valid JSON"), "{err}");
    let huge = format!(
        "{{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{{\"name\":\"big\"}},\"data\":{{\"x\":\"{}\"}}}}",
        "a".repeat(apiserver_lite::MAX_BODY + 10)
    );
    let out = c.kubectl_stdin(&["create", "--raw", "/api/v1/namespaces/default/configmaps", "-f", "-"], Some(&huge));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("RequestEntityTooLarge"), "{err}");
    // Still serving.
    c.ok(&["get", "namespaces"]);
}

/// What installers create (keadm init, helm install of the cloudcore chart): Deployments and
/// RBAC objects are served, discovered and applied server-side like any built-in kind.
#[test]
fn deployments_and_rbac_are_served() {
    let c = Cluster::start();
    let resources = c.ok(&["api-resources"]);
    for want in ["deployments", "deploy", "clusterroles", "clusterrolebindings", "roles", "rolebindings"] {
        assert!(resources.contains(want), "api-resources lacks {want}:\n{resources}");
    }
    let objects = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c, image: busybox}]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: reader}
rules: [{apiGroups: [""], resources: [pods], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: reader, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: reader}
subjects: [{kind: ServiceAccount, name: default, namespace: default}]
"#;
    c.ok_stdin(&["apply", "--server-side", "-f", "-"], objects);
    assert_eq!(c.json(&["get", "deployment", "web"])["spec"]["replicas"], 2);
    assert_eq!(c.json(&["get", "clusterrole", "reader"])["rules"][0]["verbs"], json!(["get"]));
    assert_eq!(c.json(&["get", "rolebinding", "reader"])["roleRef"]["name"], "reader");
    c.ok(&["delete", "deployment", "web"]);
    c.ok(&["delete", "clusterrole", "reader"]);
}
