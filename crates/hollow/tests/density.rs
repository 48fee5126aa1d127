//! A small density run with correctness assertions only (no timing): apiserver-lite, the real
//! cloudcore binary, and 50 hollow nodes in this process, each registering itself over the
//! link as edged does. 2 pods per node are created through the API; every one must become
//! Running in the API, and every pod each node ACKed must be recorded in its ObjectSync at the
//! version the node ACKed. Then pods are deleted gracefully: the nodes stop them and delete
//! them (grace 0, UID precondition), and their ObjectSyncs go.
//!
//! Needs the debug `cloudcore` binary (`cargo build -p cloudcore`, or a workspace build).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use kubeedge_apis::reliablesyncs::v1alpha1::ObjectSync;
use kubeedge_hollow::{Config, Fleet, Timings};
use kubeedge_pki::Ca;
use kubeedge_testkit::link::{self, Cloud};
use kubeedge_testkit::{Process, free_port, patience, set_yaml_path, workspace_bin};
use serde_json::json;

const NODES: usize = 50;
const PODS_PER_NODE: usize = 2;

async fn until<F, Fut>(what: &str, mut f: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + patience();
    loop {
        match f().await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(format!("timed out waiting for {what}: {e}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pod_on_fifty_hollow_nodes_runs_and_every_object_is_acked() {
    let dir = kubeedge_testkit::TempDir::new();
    let api = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        apiserver_lite::ApiServer::start(l, Default::default()).await.unwrap()
    };
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    let kc = kube::config::Kubeconfig::from_yaml(&api.kubeconfig()).unwrap();
    let client =
        kube::Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap()).unwrap();

    let ca = Arc::new(Ca::generate().unwrap());
    std::fs::create_dir_all(dir.path().join("cloud")).unwrap();
    std::fs::write(dir.path().join("cloud/ca.crt"), ca.cert_pem()).unwrap();
    std::fs::write(dir.path().join("cloud/ca.key"), kubeedge_pki::pem("EC PRIVATE KEY", ca.key_sec1())).unwrap();
    let (ws_port, https_port) = (free_port(), free_port());
    let bin = workspace_bin("cloudcore");
    let cfg =
        link::cloudcore(&bin, dir.path(), &Cloud { kubeconfig: &kubeconfig, ip: "127.0.0.1", ws_port, https_port });
    let yaml = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, set_yaml_path(&yaml, &["modules", "cloudHub", "nodeLimit"], "100")).unwrap();
    let mut cloud = Process::spawn(&bin, &["--config", cfg.to_str().unwrap()]).unwrap();
    cloud.wait_for_line("Loaded what edge nodes have acknowledged.");

    let mut fcfg = Config::new(format!("127.0.0.1:{ws_port}"), NODES);
    fcfg.parallel = 16;
    fcfg.record_acks = true;
    // A short lease, so its renewal shows within the test.
    fcfg.timings = Timings { lease_duration: Duration::from_secs(8), ..Timings::default() };
    let fleet = Fleet::start(ca.clone(), fcfg);
    let stats = fleet.stats();
    let names = fleet.names();
    let r = until("every node to register", || {
        let stats = stats.clone();
        async move {
            let (c, r) = (
                stats.connected.load(std::sync::atomic::Ordering::Relaxed),
                stats.registered.load(std::sync::atomic::Ordering::Relaxed),
            );
            if c as usize == NODES && r as usize == NODES {
                Ok(())
            } else {
                Err(format!("{c} connected, {r} registered"))
            }
        }
    })
    .await;
    r.unwrap_or_else(|e| panic!("{e}\ncloudcore log:\n{}", cloud.log()));

    // Registered through the link: the Nodes exist with the edge label.
    let nodes: Api<Node> = Api::all(client.clone());
    let edge_nodes = nodes.list(&ListParams::default().labels("node-role.kubernetes.io/edge")).await.unwrap();
    assert_eq!(edge_nodes.items.len(), NODES);

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut node_of = HashMap::new();
    for i in 0..NODES * PODS_PER_NODE {
        let (name, node) = (format!("density-{i:04}"), names[i % NODES].clone());
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": name, "labels": {"group": "density"}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "localhost/pause:busybox"}]}}))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
        node_of.insert(name, node);
    }

    let r = until("every pod to be Running in the API", || {
        let pods = pods.clone();
        async move {
            let list = pods.list(&ListParams::default().labels("group=density")).await.map_err(|e| e.to_string())?;
            let running =
                list.items.iter().filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"));
            let n = running.count();
            if n == NODES * PODS_PER_NODE { Ok(()) } else { Err(format!("{n} Running")) }
        }
    })
    .await;
    r.unwrap_or_else(|e| panic!("{e}\ncloudcore log:\n{}", cloud.log()));
    let list = pods.list(&ListParams::default().labels("group=density")).await.unwrap();
    for p in &list.items {
        let st = p.status.as_ref().unwrap();
        assert!(st.pod_ip.as_deref().is_some_and(|ip| !ip.is_empty()), "{p:?}");
        let ready = st.conditions.iter().flatten().find(|c| c.type_ == "Ready").map(|c| c.status.as_str());
        assert_eq!(ready, Some("True"));
        assert_eq!(st.container_statuses.as_ref().map(Vec::len), Some(1));
    }

    // Every pod was ACKed by its node, and the ObjectSync holds the version it ACKed.
    let syncs: Api<ObjectSync> = Api::namespaced(client.clone(), "default");
    let r = until("every ACK to be recorded in an ObjectSync", || {
        let (syncs, acked, list) = (syncs.clone(), fleet.acked(), list.clone());
        let node_of = &node_of;
        async move {
            let all_syncs = syncs.list(&ListParams::default()).await.map_err(|e| e.to_string())?.items;
            let recorded: HashMap<String, String> = all_syncs
                .iter()
                .cloned()
                .filter_map(|o| Some((o.metadata.name?, o.status?.object_resource_version)))
                .collect();
            // Every object recorded (pods, and the configmap their service account volume
            // uses) at the version its node ACKed; a pod's record may be at a later version
            // that changed only its status (below).
            for o in &all_syncs {
                let (node, _) = o.metadata.name.as_deref().unwrap_or_default().split_once('.').unwrap_or_default();
                let res = format!("default/{}/{}", o.spec.object_kind.to_lowercase(), o.spec.object_name);
                let acked = acked.get(&(node.to_owned(), res.clone()));
                let recorded = o.status.as_ref().map(|s| &s.object_resource_version);
                if acked.is_none() || (acked != recorded && o.spec.object_kind != "Pod") {
                    return Err(format!("{node} ACKed {res} at {acked:?}, its ObjectSync says {recorded:?}"));
                }
            }
            for p in &list.items {
                let name = p.metadata.name.clone().unwrap_or_default();
                let node = &node_of[&name];
                let Some(rv) = acked.get(&(node.clone(), format!("default/pod/{name}"))) else {
                    return Err(format!("{node} has not ACKed {name}"));
                };
                let os = format!("{node}.{}", p.metadata.uid.clone().unwrap_or_default());
                // The version ACKed (the insert), or the pod's version now, which only the
                // node's own status report changed since: recorded as held, not sent back.
                let now = p.metadata.resource_version.as_deref().unwrap_or_default();
                match recorded.get(&os) {
                    Some(r) if r == rv || (r == now && rv.parse::<u64>().ok() < now.parse().ok()) => {}
                    other => return Err(format!("ObjectSync {os}: {other:?}, ACKed {rv}, the pod is at {now}")),
                }
            }
            Ok(())
        }
    })
    .await;
    r.unwrap_or_else(|e| panic!("{e}\ncloudcore log:\n{}", cloud.log()));

    // Every node holds a Lease, renewed through the link.
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let r = until("every node's lease", || {
        let leases = leases.clone();
        async move {
            let n = leases.list(&ListParams::default()).await.map_err(|e| e.to_string())?.items.len();
            if n == NODES { Ok(()) } else { Err(format!("{n} leases")) }
        }
    })
    .await;
    r.unwrap_or_else(|e| panic!("{e}\ncloudcore log:\n{}", cloud.log()));

    // Graceful deletes: the node stops the pod and deletes it (grace 0, UID precondition).
    let gone: Vec<String> = (0..NODES).map(|i| format!("density-{i:04}")).collect();
    for name in &gone {
        pods.delete(name, &DeleteParams::default()).await.unwrap();
    }
    let r = until("the deleted pods and their ObjectSyncs to go", || {
        let (pods, syncs) = (pods.clone(), syncs.clone());
        let gone = &gone;
        async move {
            let left = pods.list(&ListParams::default().labels("group=density")).await.map_err(|e| e.to_string())?;
            let still: Vec<_> =
                left.items.iter().filter_map(|p| p.metadata.name.clone()).filter(|n| gone.contains(n)).collect();
            if !still.is_empty() {
                return Err(format!("{} deleted pods still there", still.len()));
            }
            let all = syncs.list(&ListParams::default()).await.map_err(|e| e.to_string())?.items;
            let n = all.iter().filter(|o| o.spec.object_kind == "Pod").count();
            let want = NODES * PODS_PER_NODE - gone.len();
            if n == want { Ok(()) } else { Err(format!("{n} ObjectSyncs of pods, want {want}")) }
        }
    })
    .await;
    r.unwrap_or_else(|e| panic!("{e}\ncloudcore log:\n{}", cloud.log()));
    assert_eq!(stats.pods.load(std::sync::atomic::Ordering::Relaxed) as usize, NODES * PODS_PER_NODE - gone.len());

    fleet.stop().await;
    cloud.signal("TERM");
    assert!(cloud.wait_exit(patience()).is_some_and(|s| s.success()), "{}", cloud.log());
    api.shutdown().await;
}
