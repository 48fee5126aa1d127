//! Edged's node agent with the real EdgeHub and MetaManager (in this process) and the real
//! cloudcore: the node registers itself (labels, capacity, nodeInfo, Ready), its lease is
//! created and renewed, and a restarted agent finds both existing and carries on.

use kubeedge_e2e as common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{CloudSide, until};
use edgecore::edged::node::NodeSpec;
use edgecore::edged::{NodeAgent, Timings};
use edgecore::edgehub::module::EdgeHubModule;
use edgecore::metamanager::module::MetaManagerModule;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kubeedge_beehive::{Registry, RestartPolicy};
use kubeedge_config::edgecore::EdgeCoreConfig;
use kubeedge_metastore::Store;
use kubeedge_testkit::link;
use tokio_util::sync::CancellationToken;

#[test]
fn the_node_registers_itself_and_keeps_its_lease_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let mut cloud = CloudSide::start(dir.path());
    cloud.proc.wait_for_line("EdgeController started.");
    let token = cloud.token();
    let edge_bin = &kubeedge_testkit::workspace_bin("edgecore");
    let cfg_path = link::edgecore(edge_bin, dir.path(), "edge-r1", &token, &cloud.link(), &[]);
    let cfg: EdgeCoreConfig = kubeedge_config::load_file(&cfg_path).unwrap().config;
    let client = cloud.client();

    let start_edge = || {
        let _guard = cloud.rt.enter();
        let store = Store::open(dir.path().join("edge/edgecore.db"), Default::default()).unwrap();
        let mut reg = Registry::new();
        reg.register(Box::new(EdgeHubModule::new(cfg.modules.edge_hub.clone(), "edge-r1".into()))).unwrap();
        reg.register(Box::new(MetaManagerModule::new(store, "edge-r1".into(), Duration::from_secs(30), None))).unwrap();
        let sup = reg.start(RestartPolicy::default());
        let agent = NodeAgent {
            bus: sup.bus(),
            spec: NodeSpec {
                name: "edge-r1".into(),
                node_ip: "127.0.0.1".into(),
                labels: BTreeMap::from([("site".to_owned(), "lab".to_owned())]),
                max_pods: 110,
                runtime_version: "remote://unknown".into(),
                schedulable: true,
            },
            namespace: "default".into(),
            timings: Timings { lease_duration: Duration::from_secs(4), ..Timings::default() },
            // Upstream's full Lease update (tests/e2e/lease_renew.rs covers the compact one).
            link: Default::default(),
        };
        let stop = CancellationToken::new();
        cloud.rt.spawn(agent.run(stop.clone()));
        (sup, stop)
    };
    std::fs::create_dir_all(dir.path().join("edge")).unwrap();
    let (sup, stop) = start_edge();

    let nodes: Api<Node> = Api::all(client.clone());
    let node = until("the node to register", || cloud.rt.block_on(nodes.get_opt("edge-r1")).ok().flatten());
    let labels = node.metadata.labels.clone().unwrap();
    assert_eq!(labels.get("node-role.kubernetes.io/edge").map(String::as_str), Some(""));
    assert_eq!(labels.get("site").map(String::as_str), Some("lab"));
    let status = node.status.clone().unwrap();
    let ready = status.conditions.unwrap().into_iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.status, "True");
    assert!(status.capacity.unwrap().contains_key("cpu"));
    assert_eq!(status.daemon_endpoints.unwrap().kubelet_endpoint.unwrap().port, 10350);
    assert!(status.node_info.unwrap().kubelet_version.contains("kubeedge"));

    // The lease is created and renewed (every second with a 4 s duration).
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let first = until("the lease", || {
        cloud.rt.block_on(leases.get_opt("edge-r1")).ok().flatten().and_then(|l| l.spec?.renew_time)
    });
    until("the lease to be renewed", || {
        let now = cloud.rt.block_on(leases.get_opt("edge-r1")).ok().flatten()?.spec?.renew_time?;
        (now.0 > first.0).then_some(())
    });

    // Restarted, the agent finds the node and lease there and renews the lease again.
    stop.cancel();
    cloud.rt.block_on(sup.shutdown(Duration::from_secs(10)));
    let before = cloud.rt.block_on(leases.get("edge-r1")).unwrap().spec.unwrap().renew_time.unwrap();
    let (sup, stop) = start_edge();
    until("the lease to be renewed after a restart", || {
        let now = cloud.rt.block_on(leases.get_opt("edge-r1")).ok().flatten()?.spec?.renew_time?;
        (now.0 > before.0).then_some(())
    });
    stop.cancel();
    cloud.rt.block_on(sup.shutdown(Duration::from_secs(10)));
    cloud.stop();
}
