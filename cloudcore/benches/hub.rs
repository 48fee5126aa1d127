//! CloudHub figures with the in-process fleet (real mTLS WebSockets on loopback, every edge
//! with its own certificate, ACKing as MetaManager would): handshakes/s, memory per connected
//! edge, and ACKed message throughput to one edge and to 1,000. Prints figures.
//! Run: `cargo bench -p cloudcore --bench hub`.

use std::time::{Duration, Instant};

use cloudcore::cloudhub::fleet::{FleetEvent, connect_fleet};
use cloudcore::cloudhub::session::Hub;
use kubeedge_beehive::{Registry, RestartPolicy};
use kubeedge_model::{Content, Message};
use kubeedge_pki::Ca;
use kubeedge_viaduct::ServerOptions;
use tokio_util::sync::CancellationToken;

const EDGES: usize = 1000;

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
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
            tokio::task::yield_now().await;
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let ca = Ca::generate().expect("ca");
    let server = ca.issue_server(&["127.0.0.1".parse().expect("ip")], &[]).expect("cert");
    let sup = Registry::new().start(RestartPolicy::default());
    let hub = Hub::new(sup.bus(), EDGES + 1, Duration::from_secs(300), None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let tls = kubeedge_viaduct::server_tls(ca.cert_der(), &server.cert_der, &server.key_sec1).expect("tls");
    let stop = CancellationToken::new();
    tokio::spawn(hub.clone().serve(listener, tls, ServerOptions::default(), stop.clone()));
    // Certificates are signed before the clock starts (that is the CA's work, not the hub's).
    let nodes: Vec<String> = (0..EDGES).map(|i| format!("edge-{i:04}")).collect();
    let before = rss_kb();
    let start = Instant::now();
    let mut events = connect_fleet(&ca, &addr, &nodes, 64).await;
    let signed = start.elapsed();
    let start = Instant::now();
    let mut connected = 0;
    while connected < EDGES {
        if let Some(FleetEvent::Connected(_)) = events.recv().await {
            connected += 1;
        }
    }
    let took = start.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kb();
    println!(
        "connect: {EDGES} edges (mTLS + WebSocket handshake) in {:.2} s = {:.0} handshakes/s ({:.2} s signing their certificates beforehand)",
        took.as_secs_f64(),
        EDGES as f64 / took.as_secs_f64(),
        signed.as_secs_f64()
    );
    println!(
        "memory: +{:.1} MB RSS for {EDGES} connected idle edges = {:.1} KB per edge, cloud and client side together (upper bound for the cloud)",
        (after - before) as f64 / 1024.0,
        (after - before) as f64 / EDGES as f64
    );

    // Cloud → one edge: one ACKed message in flight at a time, as upstream.
    const ONE: usize = 5000;
    let start = Instant::now();
    let node = nodes[0].clone();
    let h = hub.clone();
    tokio::spawn(async move { push(&h, (0..ONE).map(|i| pod(&node, i)).collect()).await });
    let mut got = 0;
    while got < ONE {
        if let Some(FleetEvent::Received(..)) = events.recv().await {
            got += 1;
        }
    }
    let took = start.elapsed();
    println!(
        "ack: {ONE} messages to 1 edge, each ACKed before the next, in {:.2} s = {:.0} msg/s",
        took.as_secs_f64(),
        ONE as f64 / took.as_secs_f64()
    );

    // Cloud → 1,000 edges.
    const EACH: usize = 20;
    let start = Instant::now();
    let h = hub.clone();
    let all = nodes.clone();
    tokio::spawn(async move {
        for i in 0..EACH {
            push(&h, all.iter().map(|n| pod(n, ONE + i)).collect()).await;
        }
    });
    let total = EACH * EDGES;
    let mut got = 0;
    while got < total {
        if let Some(FleetEvent::Received(..)) = events.recv().await {
            got += 1;
        }
    }
    let took = start.elapsed();
    println!(
        "ack: {total} messages to {EDGES} edges ({EACH} each, ACKed) in {:.2} s = {:.0} msg/s aggregate",
        took.as_secs_f64(),
        total as f64 / took.as_secs_f64()
    );
    stop.cancel();
}
