//! Propagation latency, API write → edge commit: apiserver-lite (in this process), the real
//! cloudcore binary (CloudHub, EdgeController, SyncController), and 100 edges in this process
//! that do what MetaManager does with a pod — commit it to their own SQLite database
//! (`kubeedge-metastore`, synchronous=FULL) and then ACK. Pods are created through the API at
//! a steady pace, 10 per edge, and each one's latency is from just before its create call to
//! the moment its edge's commit returned. Prints p50/p90/p99 and the rates.
//! Run: `cargo bench -p cloudcore --bench propagation`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::PostParams;
use kubeedge_metastore::{MetaRow, Op, Store};
use kubeedge_model::{Content, Message};
use kubeedge_pki::{Ca, ExtKeyUsage};
use kubeedge_testkit::link::{self, Cloud};
use kubeedge_testkit::{Process, free_port};
use kubeedge_viaduct::ClientOptions;
use parking_lot::Mutex;
use serde_json::json;

const EDGES: usize = 100;
const PODS_PER_EDGE: usize = 10;
/// Pods created per second, spread evenly.
const RATE: f64 = 200.0;

type Commits = Arc<Mutex<HashMap<String, Instant>>>;

async fn edge(ca: Arc<Ca>, addr: String, node: String, db: std::path::PathBuf, commits: Commits) {
    let (csr, key) = kubeedge_pki::edge_csr(&node).expect("csr");
    let cert = ca.sign_csr(&csr, 1, &[ExtKeyUsage::ClientAuth]).expect("sign");
    let tls = Arc::new(kubeedge_viaduct::client_tls(ca.cert_der(), &cert, &key).expect("tls"));
    let opts = ClientOptions {
        server: addr,
        node_id: node.clone(),
        project_id: "e632aba927ea4ac2b575ec1603d56f10".into(),
        max_message: kubeedge_model::MAX_MESSAGE_SIZE,
        handshake_timeout: Duration::from_secs(60),
        features: Vec::new(),
    };
    let store = Store::open(&db, Default::default()).expect("store");
    let mut conn = kubeedge_viaduct::connect(&opts, tls).await.expect("connect");
    while let Ok(Some(msg)) = conn.recv().await {
        if msg.router.operation == "keepalive" {
            continue;
        }
        let ty = msg.router.resource.split('/').nth(1).unwrap_or_default().to_owned();
        let row = MetaRow { key: msg.router.resource.clone(), ty: ty.clone(), value: msg.content.raw().to_owned() };
        store.apply(vec![Op::UpsertMeta(row)]).await.expect("commit");
        if ty == "pod" && msg.router.operation == "insert" {
            commits.lock().insert(msg.router.resource.clone(), Instant::now());
        }
        if conn.send(&Message::response_to(&msg, Content::string("OK"))).await.is_err() {
            return;
        }
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let dir = tempfile::tempdir().expect("dir");
    let api = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        apiserver_lite::ApiServer::start(l, Default::default()).await.expect("apiserver")
    });
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).expect("kubeconfig");
    let client = rt.block_on(async {
        let kc = kube::config::Kubeconfig::from_yaml(&api.kubeconfig()).expect("kc");
        kube::Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.expect("cfg"))
            .expect("client")
    });
    let ca = Arc::new(Ca::generate().expect("ca"));
    std::fs::create_dir_all(dir.path().join("cloud")).expect("dir");
    std::fs::write(dir.path().join("cloud/ca.crt"), ca.cert_pem()).expect("ca");
    std::fs::write(dir.path().join("cloud/ca.key"), kubeedge_pki::pem("EC PRIVATE KEY", ca.key_sec1())).expect("key");
    let (ws_port, https_port) = (free_port(), free_port());
    let bin = Path::new(env!("CARGO_BIN_EXE_cloudcore"));
    let cfg =
        link::cloudcore(bin, dir.path(), &Cloud { kubeconfig: &kubeconfig, ip: "127.0.0.1", ws_port, https_port });
    let yaml = std::fs::read_to_string(&cfg).expect("cfg");
    std::fs::write(&cfg, kubeedge_testkit::set_yaml_path(&yaml, &["modules", "cloudHub", "nodeLimit"], "1000"))
        .expect("cfg");
    let mut cloud = Process::spawn(bin, &["--config", cfg.to_str().expect("utf-8")]).expect("cloudcore");
    cloud.wait_for_line("Loaded what edge nodes have acknowledged.");

    let nodes: Vec<String> = (0..EDGES).map(|i| format!("edge-{i:03}")).collect();
    let commits: Commits = Arc::default();
    rt.block_on(async {
        let api: Api<Node> = Api::all(client.clone());
        for n in &nodes {
            let node: Node = serde_json::from_value(
                json!({"metadata": {"name": n, "labels": {"node-role.kubernetes.io/edge": ""}}}),
            )
            .expect("node");
            api.create(&PostParams::default(), &node).await.expect("create node");
        }
    });
    for n in &nodes {
        let db = dir.path().join(format!("{n}.db"));
        rt.spawn(edge(ca.clone(), format!("127.0.0.1:{ws_port}"), n.clone(), db, commits.clone()));
    }
    // Let every edge connect and settle (its node update is ACKed).
    std::thread::sleep(Duration::from_secs(5));

    let total = EDGES * PODS_PER_EDGE;
    let mut created: HashMap<String, Instant> = HashMap::new();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let start = Instant::now();
    for i in 0..total {
        let node = &nodes[i % EDGES];
        let name = format!("p{i:05}");
        let due = start + Duration::from_secs_f64(i as f64 / RATE);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"nodeName": node,
            "containers": [{"name": "c", "image": "busybox"}]}}))
        .expect("pod");
        created.insert(format!("default/pod/{name}"), Instant::now());
        rt.block_on(pods.create(&PostParams::default(), &pod)).expect("create pod");
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while commits.lock().len() < total {
        assert!(Instant::now() < deadline, "only {} of {total} pods committed", commits.lock().len());
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = start.elapsed();
    let commits = commits.lock();
    let mut lat: Vec<Duration> = created.iter().map(|(k, t0)| commits[k].saturating_duration_since(*t0)).collect();
    lat.sort();
    println!(
        "propagation: {total} pods to {EDGES} edges at {RATE:.0}/s, API create → edge commit (SQLite FULL) : p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms; all committed {:.2} s after the first create",
        pct(&lat, 0.5).as_secs_f64() * 1e3,
        pct(&lat, 0.9).as_secs_f64() * 1e3,
        pct(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        took.as_secs_f64()
    );
    cloud.signal("TERM");
    let _ = cloud.wait_exit(Duration::from_secs(30));
}
