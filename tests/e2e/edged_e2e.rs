//! Edged end to end, with a real private containerd: apiserver-lite and the real cloudcore, and
//! an edge (EdgeHub, MetaManager, Edged) in this process. The node registers itself; a pod
//! created with the API runs in containerd and shows Running with a pod IP and Ready in the
//! API; deleted, its containers go and it leaves the API. With the cloud stopped, a restarted
//! edge takes its pods up from SQLite and adopts their running containers.

use kubeedge_e2e as common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{CloudSide, until};
use edgecore::edged::module::EdgedModule;
use edgecore::edged::node::NodeSpec;
use edgecore::edged::pods::PodRuntime;
use edgecore::edged::{NodeAgent, Timings};
use edgecore::edgehub::module::EdgeHubModule;
use edgecore::metamanager::module::MetaManagerModule;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use kubeedge_beehive::{Registry, RestartPolicy};
use kubeedge_config::edgecore::EdgeCoreConfig;
use kubeedge_cri::Cri;
use kubeedge_metastore::Store;
use kubeedge_testkit::containerd::{self, PrivateContainerd};
use kubeedge_testkit::link;
use serde_json::json;

#[test]
fn a_pod_runs_in_containerd_reports_running_and_is_deleted() {
    if let Some(why) = containerd::unavailable() {
        eprintln!("SKIPPED edged e2e: {why}");
        return;
    }
    let ctrd = PrivateContainerd::start().unwrap_or_else(|e| panic!("private containerd: {e}"));
    let dir = tempfile::tempdir().unwrap();
    let mut cloud = CloudSide::start(dir.path());
    cloud.proc.wait_for_line("Loaded what edge nodes have acknowledged.");
    let token = cloud.token();
    let edge_bin = &kubeedge_testkit::workspace_bin("edgecore");
    let cfg_path = link::edgecore(edge_bin, dir.path(), "edge-k", &token, &cloud.link(), &[]);
    let cfg: EdgeCoreConfig = kubeedge_config::load_file(&cfg_path).unwrap().config;
    let client = cloud.client();

    std::fs::create_dir_all(dir.path().join("edge")).unwrap();
    let start_edge = || {
        let _guard = cloud.rt.enter();
        let store = Store::open(dir.path().join("edge/edgecore.db"), Default::default()).unwrap();
        let cri = cloud.rt.block_on(Cri::connect(ctrd.socket())).unwrap();
        let runtime = PodRuntime { cri, log_root: ctrd.pod_log_root(), pods_root: ctrd.dir().join("pods") };
        let mut reg = Registry::new();
        reg.register(Box::new(EdgeHubModule::new(cfg.modules.edge_hub.clone(), "edge-k".into()))).unwrap();
        reg.register(Box::new(MetaManagerModule::new(store, "edge-k".into(), Duration::from_secs(30), None))).unwrap();
        let agent = NodeAgent {
            bus: Registry::new().start(RestartPolicy::default()).bus(),
            spec: NodeSpec {
                name: "edge-k".into(),
                node_ip: "127.0.0.1".into(),
                labels: BTreeMap::new(),
                max_pods: 110,
                runtime_version: String::new(),
                schedulable: true,
            },
            namespace: "default".into(),
            timings: Timings::default(),
            link: Default::default(),
        };
        let edged = EdgedModule::new(runtime, Some(agent), "127.0.0.1".into(), Duration::from_secs(1))
            .with_restart_backoff(Duration::from_millis(200));
        reg.register(Box::new(edged)).unwrap();
        reg.start(RestartPolicy::default())
    };
    let sup = start_edge();

    let nodes: Api<Node> = Api::all(client.clone());
    let node = until("the node to register", || cloud.rt.block_on(nodes.get_opt("edge-k")).ok().flatten());
    let runtime_version = node.status.unwrap().node_info.unwrap().container_runtime_version;
    assert!(runtime_version.starts_with("containerd://"), "{runtime_version}");

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {"nodeName": "edge-k",
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "web", "image": ctrd.busybox_image(), "command": ["sh", "-c", "echo up; sleep 3600"]}]}}))
    .unwrap();
    let created = cloud.rt.block_on(pods.create(&PostParams::default(), &pod)).unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    let running = until("the pod to be Running in the API", || {
        let p = cloud.rt.block_on(pods.get_opt("web")).ok().flatten()?;
        (p.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(p)
    });
    let status = running.status.unwrap();
    assert!(status.pod_ip.as_deref().is_some_and(|ip| !ip.is_empty()), "{status:?}");
    let ready = status.conditions.unwrap().into_iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.status, "True");
    let cs = &status.container_statuses.unwrap()[0];
    assert!(cs.ready && cs.state.as_ref().unwrap().running.is_some(), "{cs:?}");

    // Probes: a liveness probe that starts failing restarts the container (the count shows in
    // the API); a readiness probe that never passes keeps the pod Running but not Ready.
    let probed: Pod = serde_json::from_value(json!({"metadata": {"name": "probed"}, "spec": {"nodeName": "edge-k",
        "terminationGracePeriodSeconds": 1,
        "containers": [
            {"name": "live", "image": ctrd.busybox_image(),
             "command": ["sh", "-c", "touch /tmp/healthy; sleep 2; rm /tmp/healthy; sleep 3600"],
             "livenessProbe": {"exec": {"command": ["cat", "/tmp/healthy"]}, "periodSeconds": 1, "failureThreshold": 1}},
            {"name": "unready", "image": ctrd.busybox_image(), "command": ["sh", "-c", "sleep 3600"],
             "readinessProbe": {"exec": {"command": ["test", "-f", "/tmp/ready"]}, "periodSeconds": 1}}]}}))
    .unwrap();
    cloud.rt.block_on(pods.create(&PostParams::default(), &probed)).unwrap();
    let st = until("a liveness restart to show in the API", || {
        let p = cloud.rt.block_on(pods.get_opt("probed")).ok().flatten()?;
        let st = p.status?;
        let live = st.container_statuses.as_ref()?.iter().find(|c| c.name == "live")?.clone();
        (live.restart_count >= 1).then_some(st)
    });
    assert_eq!(st.phase.as_deref(), Some("Running"));
    let unready = st.container_statuses.as_ref().unwrap().iter().find(|c| c.name == "unready").unwrap().clone();
    assert!(!unready.ready, "{unready:?}");
    let ready = st.conditions.unwrap().into_iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.status, "False");
    cloud.rt.block_on(pods.delete("probed", &DeleteParams::default())).unwrap();
    until("probed to leave the API", || cloud.rt.block_on(pods.get_opt("probed")).ok()?.is_none().then_some(()));

    // A pod whose configmap does not exist yet waits, reported Pending, and starts once the
    // configmap is created (it reaches the edge because the pod uses it).
    let waits: Pod = serde_json::from_value(json!({"metadata": {"name": "waits"}, "spec": {"nodeName": "edge-k",
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "c", "image": ctrd.busybox_image(), "command": ["sh", "-c", "sleep 3600"],
            "envFrom": [{"configMapRef": {"name": "late"}}]}]}}))
    .unwrap();
    cloud.rt.block_on(pods.create(&PostParams::default(), &waits)).unwrap();
    until("waits to be reported Pending with the reason", || {
        let st = cloud.rt.block_on(pods.get_opt("waits")).ok().flatten()?.status?;
        (st.reason.as_deref() == Some("RuntimeError")).then_some(())
    });
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), "default");
    let late: k8s_openapi::api::core::v1::ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "late"}, "data": {"K": "v"}})).unwrap();
    cloud.rt.block_on(cms.create(&PostParams::default(), &late)).unwrap();
    until("waits to run once its configmap exists", || {
        let st = cloud.rt.block_on(pods.get_opt("waits")).ok().flatten()?.status?;
        (st.phase.as_deref() == Some("Running")).then_some(())
    });
    cloud.rt.block_on(pods.delete("waits", &DeleteParams::default())).unwrap();
    until("waits to leave the API", || cloud.rt.block_on(pods.get_opt("waits")).ok()?.is_none().then_some(()));

    // Delete with a grace period: the edge stops it and the pod leaves the API.
    cloud.rt.block_on(pods.delete("web", &DeleteParams::default())).unwrap();
    // Terminating, its status never steps back to Pending (issue #13): the last report keeps
    // the phase and shows the containers terminated, as kubelet's.
    let mut phases = Vec::new();
    until("the pod to leave the API", || match cloud.rt.block_on(pods.get_opt("web")).ok()? {
        None => Some(()),
        Some(p) => {
            phases.extend(p.status.and_then(|s| s.phase));
            None
        }
    });
    assert!(!phases.iter().any(|p| p == "Pending"), "phases while terminating: {phases:?}");
    let runtime = cloud.rt.block_on(Cri::connect(ctrd.socket())).unwrap();
    let left = cloud
        .rt
        .block_on(
            PodRuntime { cri: runtime, log_root: ctrd.pod_log_root(), pods_root: ctrd.dir().join("pods") }
                .sandboxes_of(&uid),
        )
        .unwrap();
    assert!(left.is_empty(), "sandboxes left: {left:?}");

    // Another pod; then the cloud goes away and edgecore restarts: the pod is taken up from
    // the local database and its containers are adopted, not recreated.
    let keep: Pod = serde_json::from_value(json!({"metadata": {"name": "keep"}, "spec": {"nodeName": "edge-k",
        "containers": [{"name": "c", "image": ctrd.busybox_image(), "command": ["sh", "-c", "sleep 3600"]}]}}))
    .unwrap();
    let keep_uid = cloud.rt.block_on(pods.create(&PostParams::default(), &keep)).unwrap().metadata.uid.unwrap();
    let container_id = until("keep to run", || {
        let p = cloud.rt.block_on(pods.get_opt("keep")).ok().flatten()?;
        let cs = p.status?.container_statuses?.into_iter().next()?;
        cs.ready.then_some(cs.container_id?)
    });
    cloud.proc.signal("TERM");
    assert!(cloud.proc.wait_exit(kubeedge_testkit::patience()).is_some_and(|s| s.success()));
    cloud.rt.block_on(sup.shutdown(Duration::from_secs(10)));
    let sup = start_edge();
    let check = PodRuntime {
        cri: cloud.rt.block_on(Cri::connect(ctrd.socket())).unwrap(),
        log_root: ctrd.pod_log_root(),
        pods_root: ctrd.dir().join("pods"),
    };
    let status = until("the pod to be taken up after the restart", || {
        let st = cloud.rt.block_on(check.status(&keep_with_uid(&keep, &keep_uid), "127.0.0.1")).ok()?;
        (st["phase"] == "Running").then_some(st)
    });
    assert_eq!(
        status["containerStatuses"][0]["containerID"],
        container_id.as_str(),
        "the same container keeps running"
    );
    assert_eq!(cloud.rt.block_on(check.sandboxes_of(&keep_uid)).unwrap().len(), 1, "no second sandbox");

    cloud.rt.block_on(sup.shutdown(Duration::from_secs(10)));
    cloud.rt.block_on(check.kill(&keep_uid, Duration::from_secs(1))).unwrap();
    cloud.rt.block_on(cloud.api.shutdown());
}

fn keep_with_uid(p: &Pod, uid: &str) -> Pod {
    let mut p = p.clone();
    p.metadata.namespace = Some("default".into());
    p.metadata.uid = Some(uid.into());
    p
}
