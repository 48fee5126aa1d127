//! Node tasks end to end (issue #21): a cloudcore with the TaskManager, two real edgecores with
//! the task manager, each with its own private containerd.
//!
//! - An ImagePrePullJob for both nodes, one at a time: an image from the test's own registry
//!   (`kubeedge_e2e::registry`, on loopback) is in both containerds afterwards, the image both
//!   have counts as pulled; an image only node A's containerd holds fails on B only (its
//!   imageStatus says which), and within `failureTolerate: "0.5"` the job is Completed.
//! - Bad input, each a clear error in the job's status and nothing sent: a version with shell
//!   metacharacters, an image reference with path traversal, a node that does not exist (that
//!   node Failure, the others run), both nodeNames and labelSelector.
//! - A node held at WaitingConfirmation goes silent: Unknown after `timeoutSeconds`.
//! - A report on another node's task over HTTPS with node A's own certificate → 403; with no
//!   certificate → 401.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{DynamicObject, PostParams};
use kubeedge_apis::operations::task::TaskType;
use kubeedge_e2e::{CloudSide, until};
use kubeedge_testkit::containerd::{self, PrivateContainerd};
use kubeedge_testkit::{Process, free_port, link};
use serde_json::{Value, json};

/// An image only node A's containerd holds (no registry has it).
const ONLY_ON_A: &str = "localhost/only-on-a:1";

fn q(p: &Path) -> String {
    format!("\"{}\"", p.display())
}

/// One edge node: its containerd, folder and edgecore (stopped on drop).
struct Edge {
    name: &'static str,
    ctrd: PrivateContainerd,
    dir: PathBuf,
    _proc: Process,
}

fn start_edge(cloud: &CloudSide, root: &Path, name: &'static str, token: &str) -> Edge {
    let ctrd = PrivateContainerd::start().unwrap_or_else(|e| panic!("private containerd: {e}"));
    let dir = root.join(name);
    std::fs::create_dir_all(dir.join("edge/manifests")).unwrap();
    let mut settings = ctrd.edged_settings(&dir, free_port());
    settings.extend([
        (&["modules", "edged", "tailoredKubeletConfig", "staticPodPath"][..], q(&dir.join("edge/manifests"))),
        (&["modules", "metaManager", "metaServer", "server"], format!("\"127.0.0.1:{}\"", free_port())),
        (&["modules", "taskManager", "enable"], "true".into()),
    ]);
    let bin = kubeedge_testkit::workspace_bin("edgecore");
    let cfg = link::edgecore(&bin, &dir, name, token, &cloud.link(), &settings);
    let mut proc = Process::spawn(&bin, &["--config", cfg.to_str().unwrap()]).unwrap();
    proc.wait_for_line("Connected to CloudHub.");
    Edge { name, ctrd, dir, _proc: proc }
}

fn node_ready(cloud: &CloudSide, name: &str) -> bool {
    let nodes: Api<Node> = Api::all(cloud.client());
    let Ok(Some(node)) = cloud.rt.block_on(nodes.get_opt(name)) else { return false };
    node.status.and_then(|s| s.conditions).is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn jobs(cloud: &CloudSide, ty: TaskType) -> Api<DynamicObject> {
    Api::all_with(cloud.client(), &cloudcore::taskmanager::job::api_resource(ty))
}

fn create(cloud: &CloudSide, ty: TaskType, name: &str, spec: Value) {
    let mut o = DynamicObject::new(name, &cloudcore::taskmanager::job::api_resource(ty));
    o.data = json!({ "spec": spec });
    cloud.rt.block_on(jobs(cloud, ty).create(&PostParams::default(), &o)).unwrap();
}

fn status(cloud: &CloudSide, ty: TaskType, name: &str) -> Value {
    let o = cloud.rt.block_on(jobs(cloud, ty).get(name)).unwrap();
    o.data.get("status").cloned().unwrap_or(Value::Null)
}

/// Waits until the job's phase is one of `phases`; returns its status.
fn wait_phase(cloud: &CloudSide, ty: TaskType, name: &str, phases: &[&str]) -> Value {
    until(&format!("job {name} in {phases:?}"), || {
        let st = status(cloud, ty, name);
        phases.contains(&st["phase"].as_str()?).then_some(st)
    })
}

fn node_entry<'a>(st: &'a Value, node: &str) -> &'a Value {
    st["nodeStatus"].as_array().unwrap().iter().find(|n| n["nodeName"] == node).unwrap_or_else(|| panic!("{st}"))
}

/// POSTs a report to `/task/…` on :10002 with `cert` (node A's) or none; the status code.
fn post_report(cloud: &CloudSide, a: &Edge, path: &str, with_cert: bool) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let [ca, cert, key] = link::edge_cert_paths(&a.dir);
    let ca = kubeedge_pki::parse_pem(&std::fs::read_to_string(ca).unwrap()).unwrap().1;
    let cert = kubeedge_pki::parse_pem(&std::fs::read_to_string(cert).unwrap()).unwrap().1;
    let key = kubeedge_pki::key_from_pem(&std::fs::read_to_string(key).unwrap()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(ca)).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let tls = if with_cert {
        builder.with_client_auth_cert(vec![cert.into()], kubeedge_pki::rustls_key(&key)).unwrap()
    } else {
        builder.with_no_client_auth()
    };
    let addr: SocketAddr = format!("127.0.0.1:{}", cloud.https_port).parse().unwrap();
    let body = r#"{"action":"Pull","succ":true,"finishTime":"","reason":"","extend":""}"#;
    cloud.rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let mut s = tokio_rustls::TlsConnector::from(Arc::new(tls)).connect(name, tcp).await.unwrap();
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
    })
}

#[test]
fn prepull_jobs_bad_input_and_foreign_reports() {
    if let Some(why) = containerd::unavailable() {
        kubeedge_testkit::skip("prepull_jobs_bad_input_and_foreign_reports", &why);
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let cloud = CloudSide::start_with(root.path(), &[(&["modules", "taskManager", "enable"], "true".into())]);
    let token = cloud.token();
    let a = start_edge(&cloud, root.path(), "task-a", &token);
    let b = start_edge(&cloud, root.path(), "task-b", &token);
    for e in [&a, &b] {
        until(&format!("node {} Ready", e.name), || node_ready(&cloud, e.name).then_some(()));
    }
    let busybox = a.ctrd.busybox_image().to_owned();
    a.ctrd.ctr(&["images", "tag", &busybox, ONLY_ON_A]);
    // An image neither node has, from the test's own registry.
    let registry = kubeedge_e2e::registry::Registry::start();
    let hello = registry.add("kubeedge/hello", "v1", &[("hello.txt", b"hello from the registry\n")]);
    for e in [&a, &b] {
        assert!(!e.ctrd.ctr(&["images", "ls", "-q"]).lines().any(|l| l == hello), "{hello} already on {}", e.name);
    }

    // Both nodes, one at a time; B lacks one image.
    let t = Instant::now();
    create(
        &cloud,
        TaskType::ImagePrePull,
        "prepull",
        json!({"imagePrePullTemplate": {"images": [busybox, hello, ONLY_ON_A], "nodeNames": ["task-a", "task-b"],
            "concurrency": 1, "failureTolerate": "0.5", "checkItems": ["mem"]}}),
    );
    let st = wait_phase(&cloud, TaskType::ImagePrePull, "prepull", &["Completed", "Failure"]);
    eprintln!(
        "MEASURED ImagePrePullJob on 2 nodes (concurrency 1): {:.2} s to {}",
        t.elapsed().as_secs_f64(),
        st["phase"]
    );
    assert_eq!(st["phase"], "Completed", "{st}");
    let na = node_entry(&st, "task-a");
    assert_eq!(na["phase"], "Successful", "{st}");
    let flow: Vec<&str> = na["actionFlow"].as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap()).collect();
    assert_eq!(flow, ["Check", "Pull"], "{st}");
    let nb = node_entry(&st, "task-b");
    assert_eq!(nb["phase"], "Failure", "{st}");
    let images = nb["imageStatus"].as_array().unwrap_or_else(|| panic!("{st}"));
    let of = |img: &str| images.iter().find(|i| i["image"] == img).unwrap_or_else(|| panic!("{st}"))["status"].clone();
    assert_eq!(of(&busybox), "True", "{st}");
    assert_eq!(of(&hello), "True", "{st}");
    assert_eq!(of(ONLY_ON_A), "False", "{st}");
    // Pulled into each node's containerd, once each.
    for e in [&a, &b] {
        assert!(e.ctrd.ctr(&["images", "ls", "-q"]).lines().any(|l| l == hello), "{hello} not on {}", e.name);
    }
    assert_eq!(registry.pulls("kubeedge/hello"), 2, "one pull per node");

    // Bad input: failed before any node sees it.
    create(
        &cloud,
        TaskType::NodeUpgrade,
        "inject",
        json!({"version": "v1.21.0; touch /tmp/pwned", "nodeNames": ["task-a"]}),
    );
    let st = wait_phase(&cloud, TaskType::NodeUpgrade, "inject", &["Failure"]);
    assert!(st["reason"].as_str().unwrap().contains("invalid version"), "{st}");
    assert!(st["nodeStatus"].is_null(), "{st}");
    create(
        &cloud,
        TaskType::ImagePrePull,
        "traversal",
        json!({"imagePrePullTemplate": {"images": ["../../etc/passwd:1"], "nodeNames": ["task-a"]}}),
    );
    let st = wait_phase(&cloud, TaskType::ImagePrePull, "traversal", &["Failure"]);
    assert!(st["reason"].as_str().unwrap().contains("invalid image"), "{st}");
    create(
        &cloud,
        TaskType::ImagePrePull,
        "both",
        json!({"imagePrePullTemplate": {"images": [busybox], "nodeNames": ["task-a"],
            "labelSelector": {"matchLabels": {"node-role.kubernetes.io/edge": ""}}}}),
    );
    let st = wait_phase(&cloud, TaskType::ImagePrePull, "both", &["Failure"]);
    assert_eq!(st["reason"], "nodeNames and nodeSelector cannot be specified at the same time", "{st}");
    create(
        &cloud,
        TaskType::ImagePrePull,
        "ghost",
        json!({"imagePrePullTemplate": {"images": [busybox], "nodeNames": ["task-a", "no-such-node"],
            "failureTolerate": "0.5"}}),
    );
    let st = wait_phase(&cloud, TaskType::ImagePrePull, "ghost", &["Completed", "Failure"]);
    assert_eq!(node_entry(&st, "no-such-node")["reason"], "failed to get node, err: nodes \"no-such-node\" not found");
    assert_eq!(node_entry(&st, "task-a")["phase"], "Successful", "{st}");
    assert_eq!(st["phase"], "Completed", "{st}");

    // A node that goes silent (an upgrade held for a confirmation that never comes) is Unknown
    // after timeoutSeconds, though the edge repeats its last report whenever asked.
    let t = Instant::now();
    create(
        &cloud,
        TaskType::NodeUpgrade,
        "held",
        json!({"version": "v1.99.0", "nodeNames": ["task-b"], "requireConfirmation": true, "timeoutSeconds": 3}),
    );
    let st = wait_phase(&cloud, TaskType::NodeUpgrade, "held", &["Completed", "Failure"]);
    eprintln!("MEASURED a silent node timed out (timeoutSeconds 3): {:.2} s", t.elapsed().as_secs_f64());
    let nb = node_entry(&st, "task-b");
    assert_eq!(
        (nb["phase"].as_str(), nb["reason"].as_str()),
        (Some("Unknown"), Some("The node task has timed out")),
        "{st}"
    );
    let flow: Vec<&str> = nb["actionFlow"].as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap()).collect();
    assert_eq!(flow, ["Check", "WaitingConfirmation"], "{st}");

    // A report on B's task with A's certificate: 403; none: 401; A's own: accepted.
    assert_eq!(post_report(&cloud, &a, "/task/imageprepulljob/name/ghost/node/task-b/status", true), 403);
    assert_eq!(post_report(&cloud, &a, "/task/imageprepulljob/name/ghost/node/task-a/status", false), 401);
    assert_eq!(post_report(&cloud, &a, "/task/imageprepulljob/name/ghost/node/task-a/status", true), 200);
    let (_, metrics) = kubeedge_testkit::http_get(cloud.monitor, "/metrics").unwrap();
    let sent =
        metrics.lines().find(|l| l.starts_with("kubeedge_taskmanager_tasks_sent_total{type=\"imageprepulljob\"}"));
    eprintln!("MEASURED tasks sent for 3 prepull node tasks: {sent:?}");
    drop((a, b));
    cloud.stop();
}
