//! `keadm ctl` and `keadm debug` against the real daemons: apiserver-lite, cloudcore and
//! edgecore on loopback (free ports), the real keadm binary pointed at the test's edgecore.yaml.
//!
//! - With the cloud stopped, `keadm ctl get|describe pod` still answer from MetaServer and
//!   `keadm debug diagnose node` says exactly that the cloud is the broken part; with edgecore
//!   stopped too, `keadm ctl` fails fast and clearly while `keadm debug get` reads the database.
//! - With Edged and a private containerd (skipped, loudly, when containerd is absent): `logs`,
//!   `exec` (with the command's exit code and stdin) and `restart pod` work with the cloud down.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::PostParams;
use kubeedge_e2e::{CloudSide, until};
use kubeedge_testkit::containerd::{self, PrivateContainerd};
use kubeedge_testkit::{Process, free_port, link, run, workspace_bin};
use serde_json::{Value, json};

fn keadm() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_keadm"))
}

/// `keadm ARGS --config CFG`: (exit code, stdout, stderr).
fn ctl(cfg: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    // Global flags go right after the command (`exec` passes everything after `--` on).
    let mut full: Vec<&str> = vec![args[0], "--config", cfg.to_str().unwrap()];
    full.extend(&args[1..]);
    let started = Instant::now();
    let (status, out, err) = run(keadm(), &full);
    assert!(started.elapsed() < Duration::from_secs(40), "keadm {args:?} took {:?}", started.elapsed());
    (status.code(), out, err)
}

struct Stack {
    cloud: Option<CloudSide>,
    edge: Process,
    cfg: PathBuf,
    client: kube::Client,
}

impl Stack {
    /// Cloud and edge, MetaServer on a free port; Edged only with `settings` for it.
    fn start(dir: &Path, node: &str, register: bool, settings: Vec<(&'static [&'static str], String)>) -> Self {
        let cloud = CloudSide::start(dir);
        let mut cloud = cloud;
        cloud.proc.wait_for_line("Loaded what edge nodes have acknowledged.");
        let client = cloud.client();
        if register {
            // Without Edged the node is registered here, with the label Edged would set.
            let n: Node = serde_json::from_value(json!({"metadata": {"name": node,
                "labels": {"node-role.kubernetes.io/edge": "", "node-role.kubernetes.io/agent": ""}}}))
            .unwrap();
            cloud.rt.block_on(Api::<Node>::all(client.clone()).create(&PostParams::default(), &n)).unwrap();
        }
        let mut all: Vec<(&[&str], String)> = vec![
            (&["modules", "metaManager", "metaServer", "enable"], "true".into()),
            (&["modules", "metaManager", "metaServer", "server"], format!("127.0.0.1:{}", free_port())),
            (&["commonConfig", "monitorServer", "bindAddress"], format!("127.0.0.1:{}", free_port())),
        ];
        all.extend(settings);
        let bin = workspace_bin("edgecore");
        let cfg = link::edgecore(&bin, dir, node, &cloud.token(), &cloud.link(), &all);
        let mut edge = Process::spawn(&bin, &["--config", cfg.to_str().unwrap()]).unwrap();
        edge.wait_for_line("Connected to CloudHub.");
        Self { cloud: Some(cloud), edge, cfg, client }
    }

    fn create_pod(&self, pod: Value) {
        let cloud = self.cloud.as_ref().unwrap();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), "default");
        cloud.rt.block_on(api.create(&PostParams::default(), &serde_json::from_value(pod).unwrap())).unwrap();
    }

    fn stop_cloud(&mut self) {
        self.cloud.take().unwrap().stop();
    }

    fn stop_edge(&mut self) {
        self.edge.signal("TERM");
        assert!(self.edge.wait_exit(kubeedge_testkit::patience()).is_some_and(|s| s.success()), "{}", self.edge.log());
    }
}

#[test]
fn ctl_reads_pods_with_the_cloud_down_and_debug_reads_the_db_with_edgecore_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Stack::start(dir.path(), "edge-c", true, vec![]);
    s.create_pod(json!({"metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"nodeName": "edge-c", "containers": [{"name": "main", "image": "busybox"}]}}));
    s.create_pod(json!({"metadata": {"name": "other", "labels": {"app": "other"}},
        "spec": {"nodeName": "edge-c", "containers": [{"name": "main", "image": "busybox"}]}}));
    until("both pods to be served by MetaServer", || {
        let (code, out, _) = ctl(&s.cfg, &["ctl", "get", "pods"]);
        (code == Some(0) && out.contains("web") && out.contains("other")).then_some(())
    });

    s.stop_cloud();

    // The table, with kubectl's columns.
    let (code, out, err) = ctl(&s.cfg, &["ctl", "get", "pods"]);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("NAME") && lines[0].contains("READY") && lines[0].contains("STATUS"), "{out}");
    assert_eq!(lines.len(), 3, "{out}");
    // -A, -l, one by name as JSON, -o wide, -o name.
    let (code, out, _) = ctl(&s.cfg, &["ctl", "get", "pod", "-A", "-l", "app=web"]);
    assert_eq!(code, Some(0));
    assert!(
        out.starts_with("NAMESPACE") && out.contains("default") && out.contains("web") && !out.contains("other"),
        "{out}"
    );
    let (code, out, _) = ctl(&s.cfg, &["ctl", "get", "pod", "web", "-o", "json"]);
    assert_eq!(code, Some(0));
    let pod: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((pod["metadata"]["name"].as_str(), pod["spec"]["nodeName"].as_str()), (Some("web"), Some("edge-c")));
    let (_, out, _) = ctl(&s.cfg, &["ctl", "get", "pods", "-o", "wide"]);
    assert!(out.lines().next().unwrap().contains("NODE") && out.contains("edge-c"), "{out}");
    let (_, out, _) = ctl(&s.cfg, &["ctl", "get", "pods", "-o", "name"]);
    assert_eq!(out, "pod/other\npod/web\n");
    let (code, _, err) = ctl(&s.cfg, &["ctl", "get", "pods", "-n", "nowhere"]);
    assert_eq!((code, err.trim()), (Some(0), "No resources found in nowhere namespace."));
    let (code, _, err) = ctl(&s.cfg, &["ctl", "get", "pod", "missing"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("404"), "{err}");
    // describe.
    let (code, out, err) = ctl(&s.cfg, &["ctl", "describe", "pod", "web"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("Name:             web\nNamespace:        default\n"), "{out}");
    assert!(
        out.contains("Labels:           app=web")
            && out.contains("  main:\n")
            && out.contains("Image:          busybox"),
        "{out}"
    );

    // diagnose node: everything local answers, the cloud connection is what fails.
    let (code, out, _) = ctl(&s.cfg, &["debug", "diagnose", "node"]);
    assert_eq!(code, Some(1), "{out}");
    for ok in ["ok    config", "ok    database", "ok    edgecore", "ok    metaserver"] {
        assert!(out.contains(ok), "{ok:?} in\n{out}");
    }
    assert!(out.contains("FAIL  cloud-connection") && out.contains("fix: "), "{out}");
    assert!(out.contains("skip  edged-server"), "Edged is off here: {out}");
    let (code, out, _) = ctl(&s.cfg, &["debug", "diagnose", "pod", "web"]);
    assert!(
        out.contains("ok    pod                web found in MetaServer")
            || out.contains("default/web found in MetaServer"),
        "{code:?} {out}"
    );

    // edgecore down too: keadm ctl fails at once and says why; keadm debug get reads the db.
    s.stop_edge();
    let started = Instant::now();
    let (code, _, err) = ctl(&s.cfg, &["ctl", "get", "pods"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("connecting to MetaServer") && err.contains("is edgecore running?"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    let (code, out, err) = ctl(&s.cfg, &["debug", "get", "pods"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("NAME") && out.contains("web") && out.contains("other"), "{out}");
    let (code, out, _) = ctl(&s.cfg, &["debug", "get", "pod", "web", "-o", "yaml"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("name: web") && out.contains("nodeName: edge-c"), "{out}");
    let (code, out, _) = ctl(&s.cfg, &["debug", "get", "node", "-o", "name"]);
    assert_eq!((code, out.trim()), (Some(0), "node/edge-c"));
    let db = dir.path().join("edge/edgecore.db");
    let (status, out, _) = run(keadm(), &["debug", "get", "pods", "-A", "--edgedb-path", db.to_str().unwrap()]);
    assert!(status.success());
    assert!(out.starts_with("NAMESPACE"), "{out}");
}

#[test]
fn logs_exec_and_restart_go_through_edged_and_the_runtime_with_the_cloud_down() {
    if let Some(why) = containerd::unavailable() {
        eprintln!("SKIPPED keadm ctl logs/exec/restart test: {why}");
        return;
    }
    let ctrd = PrivateContainerd::start().unwrap_or_else(|e| panic!("private containerd: {e}"));
    let dir = tempfile::tempdir().unwrap();
    let settings = ctrd.edged_settings(dir.path(), free_port());
    let mut s = Stack::start(dir.path(), "edge-x", false, settings);
    s.create_pod(
        json!({"metadata": {"name": "shell"}, "spec": {"nodeName": "edge-x", "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "main", "image": ctrd.busybox_image(),
            "command": ["sh", "-c", "echo started; while true; do sleep 1; done"]}]}}),
    );
    until("the container's log", || {
        let (code, out, _) = ctl(&s.cfg, &["ctl", "logs", "shell"]);
        (code == Some(0) && out == "started\n").then_some(())
    });
    s.stop_cloud();

    let (code, out, err) = ctl(&s.cfg, &["ctl", "logs", "shell", "-c", "main", "--tail", "1"]);
    assert_eq!((code, out.as_str()), (Some(0), "started\n"), "{err}");
    let (code, _, err) = ctl(&s.cfg, &["ctl", "logs", "shell", "-c", "nope"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("404"), "{err}");

    let (code, out, err) = ctl(&s.cfg, &["ctl", "exec", "shell", "--", "echo", "hello", "world"]);
    assert_eq!((code, out.as_str()), (Some(0), "hello world\n"), "{err}");
    let (code, out, err) = ctl(&s.cfg, &["ctl", "exec", "shell", "--", "sh", "-c", "echo oops >&2; exit 3"]);
    assert_eq!((code, out.as_str(), err.as_str()), (Some(3), "", "oops\n"));
    let mut child = std::process::Command::new(keadm())
        .args(["ctl", "exec", "-i", "shell", "--config", s.cfg.to_str().unwrap(), "--", "head", "-n1"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"ping\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!((out.status.code(), String::from_utf8_lossy(&out.stdout).as_ref()), (Some(0), "ping\n"));

    // restart: the running container is stopped, Edged starts it again (attempt 1).
    let (code, out, err) = ctl(&s.cfg, &["ctl", "restart", "pod", "shell"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), "pod/shell restarted (stopped: main)");
    until("the second run's log, the first as --previous", || {
        let (_, prev, _) = ctl(&s.cfg, &["ctl", "logs", "shell", "--previous"]);
        let (_, now, _) = ctl(&s.cfg, &["ctl", "logs", "shell"]);
        (prev == "started\n" && now == "started\n").then_some(())
    });
    let (code, _, err) = ctl(&s.cfg, &["ctl", "restart", "pod", "ghost"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("\"ghost\" has no sandbox"), "{err}");

    let (code, out, _) = ctl(&s.cfg, &["debug", "diagnose", "node"]);
    assert!(out.contains("ok    edged-server") && out.contains("ok    runtime"), "{code:?} {out}");
    s.stop_edge();
}
