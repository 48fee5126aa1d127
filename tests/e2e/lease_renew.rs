//! Issue #19: the compact lease renewal between ends that are both ours, with the real cloudcore
//! (apiserver-lite in-process) and an edge's EdgeHub, MetaManager and node agent in this
//! process. A relay of the test's stands between them: towards the edge it is a viaduct server
//! supporting the features the test gives it; towards cloudcore it connects as the same node,
//! announcing what it agreed with the edge; it forwards every message both ways and keeps a copy
//! of what the edge sent.
//!
//! - Agreed (`lease-renew`, as CloudHub of ours agrees): after one `insert` (the first renewal's
//!   404) the edge renews with `renew` only — no Lease goes up — and cloudcore moves the Lease's
//!   `renewTime` in the API; the keepalive message is left out while renewals flow.
//! - Not agreed (the relay supports nothing, as an upstream cloudcore, which never answers the
//!   header): the edge announces `lease-renew`, hears nothing back, and sends upstream's
//!   `update` of the whole Lease and a keepalive every heartbeat.

use kubeedge_e2e as common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{CloudSide, until};
use edgecore::edged::node::NodeSpec;
use edgecore::edged::{NodeAgent, Timings};
use edgecore::edgehub::module::EdgeHubModule;
use edgecore::metamanager::module::MetaManagerModule;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kubeedge_beehive::{Registry, RestartPolicy};
use kubeedge_config::edgecore::EdgeCoreConfig;
use kubeedge_metastore::Store;
use kubeedge_model::protocol::lease;
use kubeedge_model::{Message, Operation};
use kubeedge_pki::{Ca, ExtKeyUsage};
use kubeedge_testkit::link;
use kubeedge_viaduct::{ClientOptions, ServerOptions};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const NODE: &str = "edge-lr";
const LEASE_RESOURCE: &str = "kube-node-lease/lease/edge-lr";

/// What the relay saw.
#[derive(Default)]
struct Seen {
    /// What the edge sent, in order.
    from_edge: Vec<Message>,
    /// What the relay and cloudcore agreed on (the relay announced what it agreed with the edge).
    cloud_agreed: Option<Vec<String>>,
}

/// Starts the relay (on the current runtime): its address and what it sees.
async fn relay(ca: Arc<Ca>, cloud_ws: String, supported: &[&str]) -> (String, Arc<Mutex<Seen>>) {
    let server = ca.issue_server(&["127.0.0.1".parse().unwrap()], &[]).unwrap();
    let tls = kubeedge_viaduct::server_tls(ca.cert_der(), &server.cert_der, &server.key_sec1).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let opts = ServerOptions { features: supported.iter().map(|f| (*f).to_owned()).collect(), ..Default::default() };
    let seen = Arc::new(Mutex::new(Seen::default()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok((id, mut edge)) = kubeedge_viaduct::accept(tcp, acceptor.clone(), &opts).await else { continue };
            let (csr, key) = kubeedge_pki::edge_csr(&id.node_id).unwrap();
            let cert = ca.sign_csr(&csr, 1, &[ExtKeyUsage::ClientAuth]).unwrap();
            let tls = kubeedge_viaduct::client_tls(ca.cert_der(), &cert, &key).unwrap();
            let copts = ClientOptions {
                server: cloud_ws.clone(),
                node_id: id.node_id.clone(),
                project_id: id.project_id.clone(),
                max_message: kubeedge_model::MAX_MESSAGE_SIZE,
                handshake_timeout: Duration::from_secs(30),
                features: edge.features().to_vec(),
            };
            let Ok(mut cloud) = kubeedge_viaduct::connect(&copts, Arc::new(tls)).await else { continue };
            record.lock().unwrap().cloud_agreed = Some(cloud.features().to_vec());
            let record = record.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        up = edge.recv() => match up {
                            Ok(Some(m)) => {
                                record.lock().unwrap().from_edge.push(m.clone());
                                if cloud.send(&m).await.is_err() { break }
                            }
                            Ok(None) | Err(_) => break,
                        },
                        down = cloud.recv() => match down {
                            Ok(Some(m)) => if edge.send(&m).await.is_err() { break },
                            Ok(None) | Err(_) => break,
                        },
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// What happened: the edge's messages, what the relay and cloudcore agreed on, and whether the
/// edge's EdgeHub held `lease-renew` at the end.
struct Outcome {
    from_edge: Vec<Message>,
    cloud_agreed: Option<Vec<String>>,
    edge_agreed: bool,
}

/// cloudcore, the relay supporting `supported`, and the edge (lease renewed every second,
/// heartbeat 2 s) until the Lease's renewTime has moved `renewals` times in the API.
fn run(supported: &[&str], renewals: usize) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    // The cluster CA is the test's: the relay needs certificates the edge and cloudcore trust.
    let ca = Arc::new(Ca::generate().unwrap());
    std::fs::create_dir_all(dir.path().join("cloud")).unwrap();
    std::fs::write(dir.path().join("cloud/ca.crt"), ca.cert_pem()).unwrap();
    std::fs::write(dir.path().join("cloud/ca.key"), kubeedge_pki::pem("EC PRIVATE KEY", ca.key_sec1())).unwrap();
    let mut cloud = CloudSide::start(dir.path());
    cloud.proc.wait_for_line("EdgeController started.");
    let (relay_addr, seen) = cloud.rt.block_on(relay(ca.clone(), format!("127.0.0.1:{}", cloud.ws_port), supported));
    let token = cloud.token();
    let edge_bin = &kubeedge_testkit::workspace_bin("edgecore");
    let extra: [(&[&str], String); 2] = [
        (&["modules", "edgeHub", "websocket", "server"], relay_addr.clone()),
        (&["modules", "edgeHub", "heartbeat"], "2".into()),
    ];
    let cfg_path = link::edgecore(edge_bin, dir.path(), NODE, &token, &cloud.link(), &extra);
    let cfg: EdgeCoreConfig = kubeedge_config::load_file(&cfg_path).unwrap().config;
    assert_eq!(cfg.modules.edge_hub.websocket.server, relay_addr);
    std::fs::create_dir_all(dir.path().join("edge")).unwrap();

    let (sup, stop, link_features) = {
        let _guard = cloud.rt.enter();
        let store = Store::open(dir.path().join("edge/edgecore.db"), Default::default()).unwrap();
        let hub = EdgeHubModule::new(cfg.modules.edge_hub.clone(), NODE.into());
        let link_features = hub.link_features();
        let mut reg = Registry::new();
        reg.register(Box::new(hub)).unwrap();
        reg.register(Box::new(MetaManagerModule::new(store, NODE.into(), Duration::from_secs(30), None))).unwrap();
        let sup = reg.start(RestartPolicy::default());
        let agent = NodeAgent {
            bus: sup.bus(),
            spec: NodeSpec {
                name: NODE.into(),
                node_ip: "127.0.0.1".into(),
                labels: BTreeMap::new(),
                max_pods: 110,
                runtime_version: "remote://unknown".into(),
                schedulable: true,
            },
            namespace: "default".into(),
            timings: Timings { lease_duration: Duration::from_secs(4), ..Timings::default() },
            link: link_features.clone(),
        };
        let stop = CancellationToken::new();
        cloud.rt.spawn(agent.run(stop.clone()));
        (sup, stop, link_features)
    };

    // The Lease is created, then renewed again and again, in the API.
    let leases: Api<Lease> = Api::namespaced(cloud.client(), "kube-node-lease");
    let renew_time = || -> Option<String> {
        let l = cloud.rt.block_on(leases.get_opt(NODE)).ok().flatten()?;
        Some(l.spec?.renew_time?.0.to_string())
    };
    let mut last = until("the lease", renew_time);
    for i in 0..renewals {
        last = until(&format!("renewal {i} of the lease in the API"), || renew_time().filter(|t| *t > last));
    }
    let edge_agreed = link_features.has(lease::FEATURE);

    stop.cancel();
    cloud.rt.block_on(sup.shutdown(Duration::from_secs(10)));
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    cloud.stop();
    Outcome { from_edge: seen.from_edge, cloud_agreed: seen.cloud_agreed, edge_agreed }
}

fn lease_messages<'a>(out: &'a Outcome, op: &'a Operation) -> impl Iterator<Item = &'a Message> + 'a {
    out.from_edge.iter().filter(move |m| m.router.resource == LEASE_RESOURCE && m.operation() == *op)
}

fn keepalives(out: &Outcome) -> usize {
    out.from_edge.iter().filter(|m| m.operation() == Operation::Keepalive).count()
}

#[test]
fn ours_and_ours_renew_the_lease_compactly() {
    let out = run(&[lease::FEATURE, "inventory"], 4);
    assert!(out.edge_agreed, "EdgeHub holds lease-renew");
    let agreed = out.cloud_agreed.clone().expect("the relay reached cloudcore");
    assert!(agreed.iter().any(|f| f == lease::FEATURE), "cloudcore agreed to {agreed:?}");

    let renews: Vec<&Message> = lease_messages(&out, &Operation::Renew).collect();
    assert!(renews.len() >= 4, "{} renewals: {:?}", renews.len(), ops(&out));
    for r in &renews {
        assert!(r.content.is_null(), "no Lease in a renewal: {:?}", r.content);
        assert!(r.encode().len() < 200, "{} bytes", r.encode().len());
    }
    assert_eq!(lease_messages(&out, &Operation::Update).count(), 0, "no full update: {:?}", ops(&out));
    // The first renewal found no Lease: created once, with the whole object.
    assert_eq!(lease_messages(&out, &Operation::Insert).count(), 1, "{:?}", ops(&out));
    // A renewal every second, heartbeat 2 s: the keepalive message waits for an idle heartbeat.
    assert!(keepalives(&out) * 4 <= renews.len(), "{} keepalives, {} renewals", keepalives(&out), renews.len());
}

#[test]
fn against_a_cloud_that_does_not_agree_the_whole_lease_is_sent() {
    let out = run(&[], 3);
    assert!(!out.edge_agreed, "nothing agreed");
    assert_eq!(out.cloud_agreed.as_deref(), Some(&[][..]), "the relay announced nothing to cloudcore");
    assert_eq!(lease_messages(&out, &Operation::Renew).count(), 0, "{:?}", ops(&out));
    let updates: Vec<&Message> = lease_messages(&out, &Operation::Update).collect();
    assert!(updates.len() >= 2, "{:?}", ops(&out));
    for u in &updates {
        let lease: Value = u.content.decode().unwrap();
        assert_eq!(lease.pointer("/metadata/name").and_then(Value::as_str), Some(NODE), "{lease}");
        assert_eq!(lease.pointer("/spec/holderIdentity").and_then(Value::as_str), Some(NODE), "{lease}");
    }
    assert!(keepalives(&out) >= 1, "upstream's keepalive every heartbeat: {:?}", ops(&out));
}

fn ops(out: &Outcome) -> Vec<String> {
    out.from_edge.iter().map(|m| format!("{} {}", m.router.operation, m.router.resource)).collect()
}
