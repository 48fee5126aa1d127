//! Several cloudcore replicas against one API server, edges through a real TCP load balancer:
//! one apiserver-lite process, three cloudcore processes (each its own ports and state) and
//! haproxy in TCP mode (`balance leastconn`, TLS passed through) in front of their CloudHub
//! ports, as upstream's chart runs `cloudCore.replicaCount` replicas behind a load balancer.
//!
//! The edges: 300 hollow nodes (`kubeedge_hollow::Fleet`: they register, renew leases and
//! report their pods Running) and 30 observer edges (`ack_fleet`: they ACK and report every
//! message, so every delivery of every object version is counted), two pods each, the pods
//! using ten configmaps.
//!
//! 1. Every node connects through haproxy, and every replica serves some (its
//!    `KubeEdge_CloudHub_connected_nodes`); the pods run; the ObjectSyncs settle on what the
//!    nodes ACKed.
//! 2. Four configmaps are updated and, at once, the replica with the most nodes is killed
//!    (SIGKILL): every node is connected to the two others within 10 s.
//! 3. Pods are created, updated and deleted and configmaps updated and deleted: every node
//!    converges (the observers hold exactly what the API says, each hollow node ACKed every
//!    object at its version and runs exactly its pods), and the ObjectSyncs say exactly what
//!    the nodes ACKed.
//! 4. **Zero duplicated.** No object version reaches a node twice after the kill, with one
//!    exception: a version the killed replica sent to one of its nodes whose ACK it had not
//!    recorded in an ObjectSync before it died (the message was in flight, or its ACK was in
//!    the replica's memory and writer queue): the replica that takes the node over cannot know
//!    the node has it, and sends it once more. That is what the configmap updates made at the
//!    kill are for; which versions may come again is read from the ObjectSyncs in the API
//!    right after the kill. Anything else sent again is the stale-record bug this test guards:
//!    each replica used to know only its own edges' ACKs, so a node that moved to it was sent
//!    again all it had, and not sent the deletes of what it had received elsewhere.
//!
//! Needs haproxy (`hack/install-deps.sh`); skipped loudly without it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kubeedge_apis::reliablesyncs::parse_object_sync_name;
use kubeedge_apis::reliablesyncs::v1alpha1::ObjectSync;
use kubeedge_hollow::ack_fleet::{Tally, connect_fleet};
use kubeedge_hollow::{Config as FleetConfig, Fleet};
use kubeedge_testkit::replicas::{self, Replicas, Spec};
use kubeedge_testkit::{TempDir, workspace_bin};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const REPLICAS: usize = 3;
const HOLLOW: usize = 300;
const OBSERVERS: usize = 30;
const CONFIGMAPS: usize = 10;
/// How long the nodes of a killed replica may take to be connected to the others.
const RECONNECT_LIMIT: Duration = Duration::from_secs(10);
const NS: &str = "default";

/// Node `g` of the whole set (hollow nodes first, then the observers).
fn node_name(g: usize) -> String {
    if g < HOLLOW { format!("hollow-{g:05}") } else { format!("observer-{:05}", g - HOLLOW) }
}

fn cm_name(i: usize) -> String {
    format!("cm-{}", i % CONFIGMAPS)
}

/// A pod on `node` using configmap `cm` (as a volume).
fn pod(name: &str, node: &str, cm: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "replicas"}},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "c", "image": "localhost/busybox:1.35",
                "volumeMounts": [{"name": "cfg", "mountPath": "/cfg"}]}],
            "volumes": [{"name": "cfg", "configMap": {"name": cm}}],
        }
    }))
    .unwrap()
}

/// What each node should hold, from the API: node → `ns/type/name` → (uid, resourceVersion).
type Holdings = HashMap<String, kubeedge_hollow::ack_fleet::Holdings>;

async fn desired(client: &kube::Client) -> Holdings {
    kubeedge_hollow::ack_fleet::desired(client, NS, None).await.unwrap()
}

/// The ObjectSyncs: (node, uid) → (`ns/type/name`, recorded version).
async fn object_syncs(client: &kube::Client) -> HashMap<(String, String), (String, String)> {
    let list = Api::<ObjectSync>::all(client.clone()).list(&ListParams::default()).await.unwrap();
    list.items
        .into_iter()
        .filter_map(|os| {
            let (node, uid) = parse_object_sync_name(os.metadata.name.as_deref()?)?;
            let ns = os.metadata.namespace.clone()?;
            let res = format!("{ns}/{}/{}", os.spec.object_kind.to_lowercase(), os.spec.object_name);
            let rv = os.status.map(|s| s.object_resource_version).unwrap_or_default();
            Some(((node.to_owned(), uid.to_owned()), (res, rv)))
        })
        .collect()
}

/// What differs between what should be and what is, for every node: the first few.
struct Check {
    problems: Vec<String>,
}

impl Check {
    fn expect(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok && self.problems.len() < 6 {
            self.problems.push(what());
        }
    }
}

/// Whether every node holds what it should and the ObjectSyncs say exactly that. A pod whose
/// status alone changed (the hollow nodes report theirs Running) is not sent again for that
/// (EdgeController sends metadata and spec changes): a hollow node holds its pod at the
/// version of the test's last create or patch of it (`spec_rv`) or newer.
fn converged(
    want: &Holdings,
    spec_rv: &HashMap<String, u64>,
    observed: &Tally,
    fleet: &Fleet,
    syncs: &HashMap<(String, String), (String, String)>,
) -> Check {
    let mut c = Check { problems: Vec::new() };
    let acked = fleet.acked();
    let mut hollow_pods = 0;
    let mut expected_syncs = HashSet::new();
    let num = |v: Option<&String>| v.and_then(|v| v.parse::<u64>().ok());
    for g in 0..HOLLOW + OBSERVERS {
        let node = node_name(g);
        let empty = BTreeMap::new();
        let should = want.get(&node).unwrap_or(&empty);
        for (res, (uid, rv)) in should {
            expected_syncs.insert((node.clone(), uid.clone()));
            let recorded = syncs.get(&(node.clone(), uid.clone())).map(|(_, r)| r);
            if g < HOLLOW {
                let got = acked.get(&(node.clone(), res.clone()));
                let ok = match res.split_once("/pod/") {
                    Some((_, name)) => {
                        num(got).is_some_and(|v| spec_rv.get(name).is_some_and(|s| v >= *s) && Some(v) <= num(Some(rv)))
                    }
                    None => got == Some(rv),
                };
                c.expect(ok, || format!("{node} ACKed {res} at {got:?}; the API has {rv}"));
                // A pod's record may be at the API's version when only the node's own status
                // report changed it since what the node ACKed (recorded as held, not sent).
                let status_only = res.contains("/pod/") && recorded == Some(rv);
                c.expect(recorded.is_some() && (recorded == got || status_only), || {
                    format!("{node}: the ObjectSync of {res} says {recorded:?}, the node ACKed {got:?}")
                });
            } else {
                c.expect(recorded == Some(rv), || {
                    format!("{node}: the ObjectSync of {res} says {recorded:?}, want {rv}")
                });
            }
        }
        if g < HOLLOW {
            hollow_pods += should.keys().filter(|r| r.contains("/pod/")).count();
        } else {
            let holds = observed.holds(&node).unwrap_or(&empty);
            c.expect(holds == should, || format!("{node} holds {holds:?}, want {should:?}"));
        }
    }
    let running = fleet.stats().pods.load(std::sync::atomic::Ordering::Relaxed) as usize;
    c.expect(running == hollow_pods, || format!("the hollow nodes run {running} pods, want {hollow_pods}"));
    for (key, (res, rv)) in syncs {
        c.expect(expected_syncs.contains(key), || format!("an ObjectSync for {res} ({rv}) on {} is left", key.0));
    }
    c
}

/// The resourceVersion of an object the API returned.
fn rv_of(p: &Pod) -> (String, u64) {
    let m = &p.metadata;
    (m.name.clone().unwrap_or_default(), m.resource_version.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// Polls `f` every 200 ms until it holds or `limit` passes; returns the time taken.
fn wait(what: &str, limit: Duration, mut f: impl FnMut() -> Result<(), String>) -> Duration {
    let start = Instant::now();
    loop {
        match f() {
            Ok(()) => return start.elapsed(),
            Err(e) if start.elapsed() > limit => panic!("timed out after {limit:?} waiting for {what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

#[test]
fn replicas_share_the_edges_and_a_failed_ones_move_without_loss_or_duplicates() {
    if !kubeedge_testkit::haproxy::available() {
        kubeedge_testkit::skip("replicas", "haproxy is not installed (hack/install-deps.sh)");
        return;
    }
    let _ = rlimit::increase_nofile_limit(65_536);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = TempDir::new();
    let kubeconfig = dir.path().join("kubeconfig");
    let _api = replicas::apiserver_lite(&workspace_bin("apiserver-lite"), &kubeconfig, 100_000).unwrap();
    let client = rt.block_on(async {
        let kc = kube::config::Kubeconfig::from_yaml(&std::fs::read_to_string(&kubeconfig).unwrap()).unwrap();
        kube::Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap()).unwrap()
    });
    let ca = Arc::new(kubeedge_pki::Ca::generate().unwrap());
    let key_pem = kubeedge_pki::pem("EC PRIVATE KEY", ca.key_sec1());
    let started = Instant::now();
    let mut cloud = Replicas::start(&Spec {
        bin: &workspace_bin("cloudcore"),
        dir: dir.path(),
        kubeconfig: &kubeconfig,
        count: REPLICAS,
        ca_pem: (&ca.cert_pem(), &key_pem),
        settings: &[],
        maxconn: 4 * (HOLLOW + OBSERVERS),
    })
    .unwrap();
    eprintln!("{REPLICAS} replicas and haproxy up in {:.1} s", started.elapsed().as_secs_f64());

    // The observers' Nodes (the hollow nodes register their own) and the configmaps.
    let nodes: Api<Node> = Api::all(client.clone());
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    rt.block_on(async {
        for g in HOLLOW..HOLLOW + OBSERVERS {
            let n: Node = serde_json::from_value(
                json!({"metadata": {"name": node_name(g), "labels": {"node-role.kubernetes.io/edge": ""}}}),
            )
            .unwrap();
            nodes.create(&PostParams::default(), &n).await.unwrap();
        }
        for i in 0..CONFIGMAPS {
            let cm: ConfigMap =
                serde_json::from_value(json!({"metadata": {"name": cm_name(i)}, "data": {"v": "0"}})).unwrap();
            cms.create(&PostParams::default(), &cm).await.unwrap();
        }
    });

    // The edges, all through haproxy.
    let server = cloud.ws_server();
    let mut fcfg = FleetConfig::new(server.clone(), HOLLOW);
    fcfg.record_acks = true;
    fcfg.parallel = 32;
    let fleet = rt.block_on(async { Fleet::start(ca.clone(), fcfg) });
    let stop = CancellationToken::new();
    let observed: Arc<Mutex<Tally>> = Arc::default();
    let observer_names: Vec<String> = (HOLLOW..HOLLOW + OBSERVERS).map(node_name).collect();
    let mut events = rt.block_on(connect_fleet(&ca, &server, &observer_names, 8, stop.clone()));
    {
        let observed = observed.clone();
        rt.spawn(async move {
            while let Some(ev) = events.recv().await {
                observed.lock().unwrap().on(ev);
            }
        });
    }
    let stats = fleet.stats();
    let took = wait("every node connected", Duration::from_secs(60), || {
        let hollow = stats.connected.load(std::sync::atomic::Ordering::Relaxed) as usize;
        let registered = stats.registered.load(std::sync::atomic::Ordering::Relaxed) as usize;
        let obs = observed.lock().unwrap().connected();
        let per = cloud.connected();
        let ok = hollow == HOLLOW && registered == HOLLOW && obs == OBSERVERS;
        let total: i64 = per.iter().sum();
        if ok && total == (HOLLOW + OBSERVERS) as i64 {
            Ok(())
        } else {
            Err(format!("hollow {hollow} (registered {registered}), observers {obs}, per replica {per:?}"))
        }
    });
    let spread = cloud.connected();
    eprintln!("{} nodes connected in {:.1} s; per replica {spread:?}", HOLLOW + OBSERVERS, took.as_secs_f64());
    for (i, n) in spread.iter().enumerate() {
        assert!(*n > 0, "replica {i} serves no node: {spread:?}");
    }

    // Two pods per node, each using a configmap.
    let t = Instant::now();
    let spec_rv: Mutex<HashMap<String, u64>> = Mutex::default();
    let created = rt.block_on(async {
        futures::stream::iter(0..HOLLOW + OBSERVERS)
            .flat_map(|g| futures::stream::iter([(g, 0), (g, 1)]))
            .map(|(g, k)| {
                let pods = pods.clone();
                async move {
                    let p = pod(&format!("p-{g}-{k}"), &node_name(g), &cm_name(g + 3 * k));
                    pods.create(&PostParams::default(), &p).await.map(|p| rv_of(&p))
                }
            })
            .buffer_unordered(32)
            .try_collect::<Vec<(String, u64)>>()
            .await
            .unwrap()
    });
    spec_rv.lock().unwrap().extend(created);
    wait("the hollow nodes' pods Running", Duration::from_secs(60), || {
        let list = rt.block_on(pods.list(&ListParams::default())).map_err(|e| e.to_string())?;
        let running =
            list.items.iter().filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")).count();
        if running == 2 * HOLLOW { Ok(()) } else { Err(format!("{running} of {} Running", 2 * HOLLOW)) }
    });
    eprintln!(
        "{} pods created, the hollow nodes' {} Running, in {:.1} s",
        2 * (HOLLOW + OBSERVERS),
        2 * HOLLOW,
        (t.elapsed()).as_secs_f64()
    );
    let check = |rt: &tokio::runtime::Runtime| {
        let (want, syncs) = rt.block_on(async { (desired(&client).await, object_syncs(&client).await) });
        let c = converged(&want, &spec_rv.lock().unwrap(), &observed.lock().unwrap(), &fleet, &syncs);
        if c.problems.is_empty() { Ok(()) } else { Err(c.problems.join("\n")) }
    };
    let took = wait("the ObjectSyncs to settle on what the nodes ACKed", Duration::from_secs(30), || check(&rt));
    eprintln!("converged {:.1} s later", took.as_secs_f64());

    // Configmap updates in flight, and the busiest replica killed.
    let victim = (0..REPLICAS).max_by_key(|i| cloud.connected()[*i]).unwrap();
    let moving = cloud.connected()[victim];
    rt.block_on(async {
        for i in 5..9 {
            let patch = json!({"data": {"v": "in-flight"}});
            cms.patch(&cm_name(i), &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        }
    });
    observed.lock().unwrap().mark_kill();
    cloud.replicas[victim].kill();
    let killed_at = Instant::now();
    // What the killed replica recorded is all it ever will.
    let recorded_at_kill = rt.block_on(object_syncs(&client));
    let took = wait("every node connected to the other replicas", Duration::from_secs(60), || {
        let per = cloud.connected();
        let hollow = stats.connected.load(std::sync::atomic::Ordering::Relaxed) as usize;
        let obs = observed.lock().unwrap().connected();
        let total: i64 = per.iter().sum();
        if total == (HOLLOW + OBSERVERS) as i64 && hollow == HOLLOW && obs == OBSERVERS {
            Ok(())
        } else {
            Err(format!("per replica {per:?}, hollow {hollow}, observers {obs}"))
        }
    });
    let reconnect = killed_at.elapsed();
    let after = cloud.connected();
    eprintln!(
        "replica {victim} killed with {moving} nodes: all connected to the others {:.2} s later (polled every \
         200 ms from {:.2} s); per replica {after:?}",
        reconnect.as_secs_f64(),
        (reconnect - took).as_secs_f64()
    );
    assert!(reconnect <= RECONNECT_LIMIT, "the nodes took {reconnect:?} to reconnect (limit {RECONNECT_LIMIT:?})");

    // Changes after the failover: on every fifth node a pod replaced (deleted, and a new one
    // using the same configmap), on the next a pod updated; five configmaps updated, one
    // deleted.
    rt.block_on(async {
        let grace0 = DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
        for g in 0..HOLLOW + OBSERVERS {
            match g % 5 {
                0 => {
                    pods.delete(&format!("p-{g}-1"), &grace0).await.unwrap();
                    let p = pod(&format!("p-{g}-2"), &node_name(g), &cm_name(g + 3));
                    let (name, rv) = rv_of(&pods.create(&PostParams::default(), &p).await.unwrap());
                    spec_rv.lock().unwrap().insert(name, rv);
                }
                1 => {
                    let patch = json!({"metadata": {"labels": {"changed": "yes"}}});
                    let p = pods.patch(&format!("p-{g}-0"), &PatchParams::default(), &Patch::Merge(&patch)).await;
                    let (name, rv) = rv_of(&p.unwrap());
                    spec_rv.lock().unwrap().insert(name, rv);
                }
                _ => {}
            }
        }
        for i in 0..5 {
            let patch = json!({"data": {"v": "after"}});
            cms.patch(&cm_name(i), &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        }
        cms.delete(&cm_name(9), &DeleteParams::default()).await.unwrap();
    });
    let took = wait("every node converged after the changes", Duration::from_secs(30), || check(&rt));
    eprintln!("every node converged {:.1} s after the changes", took.as_secs_f64());

    // Zero duplicated: no version twice after the kill, but what the killed replica had not
    // recorded, once more to a node that moved.
    let recorded: HashMap<(String, String), u64> =
        recorded_at_kill.into_iter().map(|(k, (_, rv))| (k, rv.parse().unwrap_or(0))).collect();
    let f = observed.lock().unwrap().failover(&recorded);
    eprintln!(
        "{} observers moved; {} versions in flight at the kill sent once more; {} sent twice before the kill",
        f.moved, f.resent, f.before
    );
    assert!(f.moved > 0, "no observer was on the killed replica");
    assert!(
        f.duplicates.is_empty(),
        "{} object versions delivered twice after the failover:\n{}",
        f.duplicates.len(),
        f.duplicates.join("\n")
    );

    stop.cancel();
    rt.block_on(fleet.stop());
    // The survivors stop cleanly.
    for r in cloud.replicas.iter_mut() {
        if let Some(p) = r.proc.as_mut() {
            p.signal("TERM");
            let status = p.wait_exit(kubeedge_testkit::patience());
            assert!(status.is_some_and(|s| s.success()), "{}", p.log());
        }
    }
}
