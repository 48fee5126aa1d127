//! CloudHub figures with the in-process fleet (real mTLS WebSockets on loopback, every edge
//! with its own certificate, ACKing as MetaManager would): handshakes/s, memory per connected
//! edge, ACKed message throughput to one edge and to 1,000, and the time for 1,000 edges to be
//! connected again after CloudHub restarts. Prints figures.
//!
//! The hub and the fleet run on two separate runtimes (threads named `cloud-*` and `fleet-*`),
//! so the CPU time each side spends is read per thread from /proc: the cloud's CPU per message
//! gives what CloudHub alone could do on this machine's two cores when the edges are elsewhere.
//! Run: `cargo bench -p cloudcore --bench hub`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudcore::cloudhub::session::Hub;
use kubeedge_beehive::{Registry, RestartPolicy};
use kubeedge_hollow::ack_fleet::{FleetEvent, connect_fleet};
use kubeedge_model::{Content, Message};
use kubeedge_pki::Ca;
use kubeedge_viaduct::ServerOptions;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

// `--features mimalloc` measures the hub with mimalloc (docs/performance.md, "Scale").
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: kubeedge_malloc::MiMalloc = kubeedge_malloc::MiMalloc;

const EDGES: usize = 1000;

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds (user + system) used so far by this process's threads whose name starts with
/// `prefix`.
fn cpu_secs(prefix: &str) -> f64 {
    let mut ticks = 0u64;
    for task in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the command (which is in parentheses): utime and stime are 14 and 15.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = rest.split_whitespace().collect();
        ticks += fields.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        ticks += fields.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    ticks as f64 / 100.0
}

fn pod(node: &str, i: usize) -> Message {
    let mut m = Message::build(
        "edgecontroller",
        "resource",
        format!("node/{node}/default/pod/p{i}"),
        "insert",
        Content::json(&serde_json::json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":format!("p{i}"),"uid":format!("{node}-{i}"),"resourceVersion":"1"}}))
            .expect("content"),
    );
    m.header.resource_version = "1".into();
    m
}

async fn push(hub: &Hub, msgs: Vec<Message>) {
    for m in msgs {
        while !hub.dispatch(m.clone()) {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
}

fn runtime(name: &'static str) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("runtime")
}

struct Cloud {
    hub: Arc<Hub>,
    stop: CancellationToken,
    served: tokio::task::JoinHandle<()>,
}

async fn start_hub(ca: &Ca, server: &kubeedge_pki::CertAndKey, bind: &str) -> (Cloud, String) {
    let sup = Registry::new().start(RestartPolicy::default());
    let hub = Hub::new(sup.bus(), EDGES + 1, Duration::from_secs(300), None);
    std::mem::forget(sup);
    let listener = tokio::net::TcpListener::bind(bind).await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let tls = kubeedge_viaduct::server_tls(ca.cert_der(), &server.cert_der, &server.key_sec1).expect("tls");
    let stop = CancellationToken::new();
    let served = tokio::spawn(hub.clone().serve(listener, tls, ServerOptions::default(), stop.clone()));
    (Cloud { hub, stop, served }, addr)
}

fn wait_for(
    rt: &tokio::runtime::Runtime,
    events: &mut UnboundedReceiver<FleetEvent>,
    n: usize,
    f: fn(&FleetEvent) -> bool,
) {
    rt.block_on(async {
        let mut seen = 0;
        while seen < n {
            let ev = events.recv().await.expect("the fleet runs");
            if f(&ev) {
                seen += 1;
            }
        }
    });
}

/// The child process of the memory phase: a fleet connected to `addr` with the CA in `dir`,
/// idle until killed.
fn fleet_child(spec: &str) {
    let (addr, dir) = spec.split_once('|').expect("addr|dir");
    let cert = std::fs::read(format!("{dir}/ca.der")).expect("ca");
    let key = std::fs::read(format!("{dir}/ca.key")).expect("key");
    let ca = Ca::from_der(&cert, &key).expect("ca");
    let rt = runtime("fleet");
    let nodes: Vec<String> = (0..EDGES).map(|i| format!("edge-{i:04}")).collect();
    let _events = rt.block_on(connect_fleet(&ca, addr, &nodes, 64, CancellationToken::new()));
    std::thread::park();
}

/// Cloud-side memory alone: the fleet runs in a child process, so this process's RSS growth is
/// CloudHub's own.
fn cloud_memory(cloud_rt: &tokio::runtime::Runtime, ca: &Ca, server: &kubeedge_pki::CertAndKey) {
    let (cloud, addr) = cloud_rt.block_on(start_hub(ca, server, "127.0.0.1:0"));
    let dir = std::env::temp_dir().join(format!("hub-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("ca.der"), ca.cert_der()).expect("write");
    std::fs::write(dir.join("ca.key"), ca.key_sec1()).expect("write");
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_kb();
    let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
        .env("HUB_BENCH_FLEET", format!("{addr}|{}", dir.display()))
        .spawn()
        .expect("fleet process");
    let deadline = Instant::now() + Duration::from_secs(120);
    while cloud.hub.connected().len() < EDGES {
        assert!(Instant::now() < deadline, "the fleet process did not connect");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    let after = rss_kb();
    println!(
        "memory: +{:.1} MB cloud RSS for {EDGES} connected idle edges (fleet in another process) = {:.1} KB per edge",
        (after - before) as f64 / 1024.0,
        (after - before) as f64 / EDGES as f64
    );
    let _ = child.kill();
    let _ = child.wait();
    cloud.stop.cancel();
    let _ = cloud_rt.block_on(cloud.served);
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    if let Ok(spec) = std::env::var("HUB_BENCH_FLEET") {
        fleet_child(&spec);
        return;
    }
    let cloud_rt = runtime("cloud");
    let fleet_rt = runtime("fleet");
    let ca = Ca::generate().expect("ca");
    let server = ca.issue_server(&["127.0.0.1".parse().expect("ip")], &[]).expect("cert");
    cloud_memory(&cloud_rt, &ca, &server);
    let (cloud, addr) = cloud_rt.block_on(start_hub(&ca, &server, "127.0.0.1:0"));
    let nodes: Vec<String> = (0..EDGES).map(|i| format!("edge-{i:04}")).collect();
    let fleet_stop = CancellationToken::new();

    // Connect. Certificates are signed inside connect_fleet before the first handshake.
    let before = rss_kb();
    let (cpu0, start) = (cpu_secs("cloud"), Instant::now());
    let mut events = fleet_rt.block_on(connect_fleet(&ca, &addr, &nodes, 64, fleet_stop.clone()));
    wait_for(&fleet_rt, &mut events, EDGES, |e| matches!(e, FleetEvent::Connected(_)));
    let took = start.elapsed();
    let cloud_cpu = cpu_secs("cloud") - cpu0;
    std::thread::sleep(Duration::from_secs(1));
    let after = rss_kb();
    println!(
        "connect: {EDGES} edges (mTLS + WebSocket handshake) in {:.2} s = {:.0} handshakes/s; cloud CPU {:.0} µs per handshake",
        took.as_secs_f64(),
        EDGES as f64 / took.as_secs_f64(),
        cloud_cpu * 1e6 / EDGES as f64
    );
    println!(
        "memory: +{:.1} MB RSS for {EDGES} connected idle edges with the fleet in-process = {:.1} KB per edge, both sides",
        (after - before) as f64 / 1024.0,
        (after - before) as f64 / EDGES as f64
    );

    // Cloud → one edge: one ACKed message in flight at a time, as upstream.
    const ONE: usize = 5000;
    let (cpu0, start) = (cpu_secs("cloud"), Instant::now());
    let (h, node) = (cloud.hub.clone(), nodes[0].clone());
    cloud_rt.spawn(async move { push(&h, (0..ONE).map(|i| pod(&node, i)).collect()).await });
    wait_for(&fleet_rt, &mut events, ONE, |e| matches!(e, FleetEvent::Received(..)));
    let took = start.elapsed();
    let cloud_cpu = cpu_secs("cloud") - cpu0;
    println!(
        "ack: {ONE} messages to 1 edge, a window of 16 in flight, each ACKed, in {:.2} s = {:.0} msg/s; cloud CPU {:.1} µs per message",
        took.as_secs_f64(),
        ONE as f64 / took.as_secs_f64(),
        cloud_cpu * 1e6 / ONE as f64
    );

    // Cloud → 1,000 edges.
    const EACH: usize = 20;
    let total = EACH * EDGES;
    let (cpu0, fcpu0, start) = (cpu_secs("cloud"), cpu_secs("fleet"), Instant::now());
    let (h, all) = (cloud.hub.clone(), nodes.clone());
    cloud_rt.spawn(async move {
        for i in 0..EACH {
            push(&h, all.iter().map(|n| pod(n, ONE + i)).collect()).await;
        }
    });
    wait_for(&fleet_rt, &mut events, total, |e| matches!(e, FleetEvent::Received(..)));
    let took = start.elapsed();
    let (cloud_cpu, fleet_cpu) = (cpu_secs("cloud") - cpu0, cpu_secs("fleet") - fcpu0);
    let per_msg = cloud_cpu / total as f64;
    println!(
        "ack: {total} messages to {EDGES} edges ({EACH} each, ACKed) in {:.2} s = {:.0} msg/s aggregate; CPU per message: cloud {:.1} µs, fleet {:.1} µs => CloudHub alone on 2 cores: {:.0} msg/s",
        took.as_secs_f64(),
        total as f64 / took.as_secs_f64(),
        per_msg * 1e6,
        fleet_cpu * 1e6 / total as f64,
        2.0 / per_msg
    );

    // Restart: CloudHub goes away (every session closed, the port closed) for two seconds,
    // then a new one listens on the same address. The fleet reconnects as EdgeHub does.
    cloud.stop.cancel();
    cloud_rt.block_on(cloud.served).expect("serve");
    wait_for(&fleet_rt, &mut events, EDGES, |e| matches!(e, FleetEvent::Disconnected(_)));
    std::thread::sleep(Duration::from_secs(2));
    let (cloud2, _) = cloud_rt.block_on(start_hub(&ca, &server, &addr));
    let start = Instant::now();
    wait_for(&fleet_rt, &mut events, EDGES, |e| matches!(e, FleetEvent::Connected(_)));
    let took = start.elapsed();
    assert_eq!(cloud2.hub.connected().len(), EDGES);
    println!(
        "restart: {EDGES} edges connected again {:.2} s after CloudHub came back (down 2 s; edges retry about every second)",
        took.as_secs_f64()
    );
    fleet_stop.cancel();
    cloud2.stop.cancel();
}
