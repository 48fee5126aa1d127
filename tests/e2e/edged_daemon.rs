//! The real edgecore binary with Edged enabled, against a real private containerd, apiserver-lite
//! and the real cloudcore — configured only through edgecore.yaml, as an operator would:
//!
//! - the node registers itself and is Ready in the API;
//! - a pod with an init container, a configMap volume, env from a secret and resource limits
//!   runs: the init container completed first, the content and env are visible inside the
//!   container, the memory limit is in its cgroup, and the API shows Running with a pod IP;
//! - Edged's kubelet-style server (`readOnlyPort`) serves the containers' logs;
//! - pods the runtime rejects (a missing image, a command that does not exist) are reported
//!   with a clear reason and nothing crashes;
//! - a static pod from the manifests folder runs and shows in the API as a mirror pod;
//! - a deleted pod's preStop hook runs, and its delete, made while the cloud is away, is
//!   repeated until the cloud is back;
//! - with the cloud stopped, a crashed container is restarted; a restarted edgecore takes its
//!   pods up from SQLite and the same containers keep running.

use kubeedge_e2e as common;

use std::path::Path;
use std::time::Duration;

use common::{CloudSide, until};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use kube::Api;
use kube::api::PostParams;
use kubeedge_cri::Cri;
use kubeedge_cri::v1;
use kubeedge_testkit::containerd::{self, PrivateContainerd};
use kubeedge_testkit::{Process, link};
use serde_json::json;

const NODE: &str = "edge-d";

fn edge_settings(ctrd: &PrivateContainerd, dir: &Path, kubelet_port: u16) -> Vec<(&'static [&'static str], String)> {
    let q = |p: &Path| format!("\"{}\"", p.display());
    let mut settings = ctrd.edged_settings(dir, kubelet_port);
    settings.extend([
        (&["modules", "edged", "tailoredKubeletConfig", "staticPodPath"][..], q(&dir.join("edge/manifests"))),
        (&["modules", "edged", "tailoredKubeletConfig", "fileCheckFrequency"], "\"1s\"".into()),
    ]);
    settings
}

fn pod(v: serde_json::Value) -> Pod {
    serde_json::from_value(v).unwrap()
}

#[test]
fn edgecore_runs_pods_in_containerd_from_its_config() {
    if let Some(why) = containerd::unavailable() {
        eprintln!("SKIPPED edged daemon e2e: {why}");
        return;
    }
    let ctrd = PrivateContainerd::start().unwrap_or_else(|e| panic!("private containerd: {e}"));
    let dir = tempfile::tempdir().unwrap();
    let mut cloud = CloudSide::start(dir.path());
    cloud.proc.wait_for_line("Loaded what edge nodes have acknowledged.");
    let token = cloud.token();
    let edge_bin = &kubeedge_testkit::workspace_bin("edgecore");
    let kubelet_port = kubeedge_testkit::free_port();
    let settings = edge_settings(&ctrd, dir.path(), kubelet_port);
    let cfg = link::edgecore(edge_bin, dir.path(), NODE, &token, &cloud.link(), &settings);
    std::fs::create_dir_all(dir.path().join("edge/manifests")).unwrap();
    let start_edge = || {
        let mut p = Process::spawn(edge_bin, &["--config", cfg.to_str().unwrap()]).unwrap();
        p.wait_for_line("Started.");
        p
    };
    let mut edge = start_edge();
    let client = cloud.client();
    let cri = cloud.rt.block_on(Cri::connect(ctrd.socket())).unwrap();

    // The node registers itself and is Ready.
    let nodes: Api<Node> = Api::all(client.clone());
    let node = until("the node to be Ready", || {
        let n = cloud.rt.block_on(nodes.get_opt(NODE)).ok().flatten()?;
        let ready = n.status.as_ref()?.conditions.as_ref()?.iter().any(|c| c.type_ == "Ready" && c.status == "True");
        ready.then_some(n)
    });
    let info = node.status.unwrap().node_info.unwrap();
    assert!(info.container_runtime_version.starts_with("containerd://"), "{info:?}");
    assert!(node.metadata.labels.unwrap().contains_key("node-role.kubernetes.io/edge"));

    // A pod using all of it.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    cloud
        .rt
        .block_on(
            cms.create(
                &PostParams::default(),
                &serde_json::from_value(
                    json!({"metadata": {"name": "cfg"}, "data": {"greeting": "hello from a configmap"}}),
                )
                .unwrap(),
            ),
        )
        .unwrap();
    cloud
        .rt
        .block_on(
            secrets.create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": "sec"}, "stringData": {"password": "s3cret"}}))
                    .unwrap(),
            ),
        )
        .unwrap();
    let image = ctrd.busybox_image();
    let full = pod(json!({"metadata": {"name": "full"}, "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 1,
        "initContainers": [{"name": "prepare", "image": image,
            "command": ["sh", "-c", "echo prepared | tee /work/ready"],
            "resources": {"limits": {"memory": "64Mi", "cpu": "250m"}},
            "volumeMounts": [{"name": "work", "mountPath": "/work"}]}],
        "containers": [{"name": "main", "image": image, "command": ["sh", "-c", "sleep 3600"],
            "env": [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}}],
            "resources": {"limits": {"memory": "64Mi", "cpu": "250m"}},
            "volumeMounts": [{"name": "work", "mountPath": "/work"}, {"name": "cfg", "mountPath": "/cfg"}]}],
        "volumes": [{"name": "work", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "cfg"}}]}}));
    cloud.rt.block_on(pods.create(&PostParams::default(), &full)).unwrap();
    let st = until("full to run", || {
        let st = cloud.rt.block_on(pods.get_opt("full")).ok().flatten()?.status?;
        let ready = st.conditions.as_ref()?.iter().any(|c| c.type_ == "Ready" && c.status == "True");
        (st.phase.as_deref() == Some("Running") && ready).then_some(st)
    });
    assert!(st.pod_ip.as_deref().is_some_and(|ip| !ip.is_empty()), "{st:?}");
    assert_eq!(st.qos_class.as_deref(), Some("Guaranteed"));
    let init = &st.init_container_statuses.as_ref().expect("initContainerStatuses")[0];
    let done = init.state.as_ref().and_then(|s| s.terminated.as_ref()).expect("init terminated");
    assert_eq!((done.exit_code, done.reason.as_deref()), (0, Some("Completed")));
    let id = st.container_statuses.unwrap()[0].container_id.clone().unwrap();
    let id = id.trim_start_matches("containerd://").to_owned();
    let run = |cmd: &str| {
        let r = cloud
            .rt
            .block_on(cri.exec_sync(&id, vec!["sh".into(), "-c".into(), cmd.into()], Duration::from_secs(10)))
            .unwrap();
        String::from_utf8_lossy(&r.stdout).trim().to_owned()
    };
    assert_eq!(run("cat /work/ready"), "prepared", "the init container ran first, in the same volume");
    assert_eq!(run("cat /cfg/greeting"), "hello from a configmap");
    assert_eq!(run("echo $PASSWORD"), "s3cret");
    let limit = std::fs::read_to_string(format!("/sys/fs/cgroup/memory/k8s.io/{id}/memory.limit_in_bytes"));
    if let Ok(limit) = limit {
        assert_eq!(limit.trim(), (64 * 1024 * 1024).to_string(), "the memory limit is in the cgroup");
    }

    // Edged's kubelet-style server has the container logs.
    let kubelet: std::net::SocketAddr = format!("127.0.0.1:{kubelet_port}").parse().unwrap();
    let (code, body) = kubeedge_testkit::http_get(kubelet, "/containerLogs/default/full/prepare").unwrap();
    assert_eq!((code, body.trim()), (200, "prepared"), "the init container's log");
    let (code, _) = kubeedge_testkit::http_get(kubelet, "/containerLogs/default/nope/main").unwrap();
    assert_eq!(code, 404);

    // Pods the runtime rejects: a clear reason in the API, and Edged keeps going.
    for (name, container) in [
        ("no-image", json!({"name": "c", "image": "localhost/does-not-exist:1", "command": ["true"]})),
        ("bad-cmd", json!({"name": "c", "image": image, "command": ["/no/such/binary"]})),
    ] {
        let p = pod(json!({"metadata": {"name": name}, "spec": {"nodeName": NODE, "containers": [container],
            "terminationGracePeriodSeconds": 0}}));
        cloud.rt.block_on(pods.create(&PostParams::default(), &p)).unwrap();
        let st = until(&format!("{name} to be reported"), || {
            let st = cloud.rt.block_on(pods.get_opt(name)).ok().flatten()?.status?;
            st.message.is_some().then_some(st)
        });
        assert_eq!(st.reason.as_deref(), Some("RuntimeError"), "{name}: {st:?}");
        let msg = st.message.unwrap();
        let want = if name == "no-image" { "PullImage" } else { "StartContainer" };
        assert!(msg.contains(want), "{name}: {msg}");
    }

    // A static pod: runs from its manifest and shows as a mirror pod.
    std::fs::write(
        dir.path().join("edge/manifests/static.yaml"),
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: local\nspec:\n  hostNetwork: true\n  \
             containers:\n  - name: c\n    image: {image}\n    command: [sh, -c, 'sleep 3600']\n"
        ),
    )
    .unwrap();
    let mirror_name = format!("local-{NODE}");
    let mirror = until("the static pod's mirror to be Running", || {
        let p = cloud.rt.block_on(pods.get_opt(&mirror_name)).ok().flatten()?;
        (p.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(p)
    });
    let ann = mirror.metadata.annotations.unwrap();
    assert_eq!(ann["kubernetes.io/config.source"], "file");
    assert_eq!(ann["kubernetes.io/config.mirror"], ann["kubernetes.io/config.hash"]);

    // A pod deleted just before the link goes down: the edge stops it within its grace
    // period, and its request to delete it from the API, made while the cloud is away, is
    // repeated until the cloud is back.
    let hook_dir = dir.path().join("hook");
    let bye = pod(json!({"metadata": {"name": "bye"}, "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 4,
        "containers": [{"name": "c", "image": image, "command": ["sleep", "3600"],
            "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", "echo bye > /hook/done"]}}},
            "volumeMounts": [{"name": "hook", "mountPath": "/hook"}]}],
        "volumes": [{"name": "hook", "hostPath": {"path": hook_dir.to_str().unwrap(), "type": "DirectoryOrCreate"}}]}}));
    cloud.rt.block_on(pods.create(&PostParams::default(), &bye)).unwrap();
    until("bye to run", || {
        let st = cloud.rt.block_on(pods.get_opt("bye")).ok().flatten()?.status?;
        (st.phase.as_deref() == Some("Running")).then_some(())
    });
    cloud.rt.block_on(pods.delete("bye", &Default::default())).unwrap();
    edge.wait_for_line("Stopping a pod being deleted.");
    cloud.proc.signal("TERM");
    assert!(cloud.proc.wait_exit(kubeedge_testkit::patience()).is_some_and(|s| s.success()));
    edge.wait_for_line("it will be retried");
    let cloud_cfg = dir.path().join("cloudcore.yaml");
    cloud.proc =
        Process::spawn(&kubeedge_testkit::workspace_bin("cloudcore"), &["--config", cloud_cfg.to_str().unwrap()])
            .unwrap();
    until("bye to leave the API once the cloud is back", || {
        cloud.rt.block_on(pods.get_opt("bye")).ok()?.is_none().then_some(())
    });
    assert_eq!(std::fs::read_to_string(hook_dir.join("done")).unwrap().trim(), "bye", "the preStop hook ran");

    // The cloud goes away. A crashed container is restarted by the edge alone.
    cloud.proc.signal("TERM");
    assert!(cloud.proc.wait_exit(kubeedge_testkit::patience()).is_some_and(|s| s.success()));
    cloud.rt.block_on(cri.stop_container(&id, Duration::ZERO)).unwrap();
    let sandbox_of = |id: &str| cloud.rt.block_on(cri.container_status(id)).map(|_| ()).is_ok();
    assert!(sandbox_of(&id));
    let restarted = until("the crashed container to be restarted offline", || {
        let running = running_containers(&cloud.rt, &cri, "full");
        running.into_iter().find(|(name, attempt, _)| name == "main" && *attempt == 1).map(|(_, _, id)| id)
    });

    // edgecore restarts, still offline: its pods come back from SQLite and the containers that
    // run keep running.
    let before = running_containers(&cloud.rt, &cri, "");
    edge.signal("TERM");
    assert!(edge.wait_exit(kubeedge_testkit::patience()).is_some_and(|s| s.success()), "{}", edge.log());
    let mut edge = start_edge();
    edge.wait_for_line("Pods taken up from the local database.");
    std::thread::sleep(Duration::from_secs(3));
    let after = running_containers(&cloud.rt, &cri, "");
    assert_eq!(before, after, "the same containers keep running");
    assert!(after.iter().any(|(_, _, id)| *id == restarted));

    edge.signal("TERM");
    assert!(edge.wait_exit(kubeedge_testkit::patience()).is_some_and(|s| s.success()), "{}", edge.log());
    cloud.rt.block_on(cloud.api.shutdown());
}

/// The running containers of pods named `pod` (any pod when empty): (name, attempt, id), sorted.
fn running_containers(rt: &tokio::runtime::Runtime, cri: &Cri, pod: &str) -> Vec<(String, u32, String)> {
    let mut out: Vec<(String, u32, String)> = rt
        .block_on(cri.list_containers(None))
        .unwrap()
        .into_iter()
        .filter(|c| c.state == v1::ContainerState::ContainerRunning as i32)
        .filter(|c| pod.is_empty() || c.labels.get("io.kubernetes.pod.name").is_some_and(|n| n == pod))
        .map(|c| {
            let m = c.metadata.unwrap_or_default();
            (m.name, m.attempt, c.id)
        })
        .collect();
    out.sort();
    out
}
