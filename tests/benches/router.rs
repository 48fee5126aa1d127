//! Router figures: rest → servicebus → rest round trips on one edge node, with the real
//! daemons (apiserver-lite, cloudcore with the Router, edgecore with ServiceBus) and an HTTP
//! app on the edge side. Each request is `POST /{node}/default/bench` with a 64-byte body, a
//! new TCP connection each (as a simple client does): router → CloudHub → the edge →
//! ServiceBus → `POST http://127.0.0.1:{port}/echo` → back.
//!
//! Every reply leaves the edge through EdgeHub's token bucket (`messageQPS` 30, `messageBurst`
//! 60 by default, as upstream), which caps one node at about 30 round trips a second: `QPS`
//! sets both (default 30, upstream's; e.g. `QPS=100000` to measure the path itself).
//!
//! Run: `cargo build --release -p cloudcore -p edgecore && cargo bench -p kubeedge-e2e --bench
//! router`. `CONCURRENCY=1,8,32` (callers at once), `SECS=5` (per level). Prints requests/s and
//! p50/p99; asserts nothing about speed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, PostParams};
use kubeedge_e2e::CloudSide;
use kubeedge_e2e::httpapp::App;
use kubeedge_e2e::measure::{cpu_ticks, pct_ms};
use kubeedge_testkit::{Process, free_port, http_request, link, until};
use serde_json::json;

const NODE: &str = "edge-router-bench";

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let levels: Vec<usize> = std::env::var("CONCURRENCY")
        .unwrap_or_else(|_| "1,8,32".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let secs: u64 = std::env::var("SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let qps: u32 = std::env::var("QPS").ok().and_then(|v| v.parse().ok()).unwrap_or(30);
    let dir = tempfile::tempdir().unwrap();
    let (router_port, sb_port) = (free_port(), free_port());
    let mut cloud = CloudSide::start_with(
        dir.path(),
        &[
            (&["modules", "router", "enable"], "true".into()),
            (&["modules", "router", "address"], "127.0.0.1".into()),
            (&["modules", "router", "port"], router_port.to_string()),
            (&["modules", "router", "allowUnauthenticated"], "true".into()),
        ],
    );
    cloud.proc.wait_for_line("Router REST listener serving.");
    let edge_bin = kubeedge_testkit::workspace_bin("edgecore");
    let cfg = link::edgecore(
        &edge_bin,
        dir.path(),
        NODE,
        &cloud.token(),
        &cloud.link(),
        &[
            (&["modules", "eventBus", "enable"], "false".into()),
            (&["modules", "deviceTwin", "enable"], "false".into()),
            (&["modules", "serviceBus", "enable"], "true".into()),
            (&["modules", "serviceBus", "port"], sb_port.to_string()),
            (&["modules", "edgeHub", "messageQPS"], qps.to_string()),
            (&["modules", "edgeHub", "messageBurst"], (2 * qps).to_string()),
        ],
    );
    let mut edge = Process::spawn(&edge_bin, &["--config", cfg.to_str().unwrap()]).unwrap();
    edge.wait_for_line("Connected to CloudHub.");
    let app = App::start();
    let ar = |kind: &str, plural: &str| kube::api::ApiResource {
        group: "rules.kubeedge.io".into(),
        version: "v1".into(),
        api_version: "rules.kubeedge.io/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    };
    let eps: Api<DynamicObject> = Api::namespaced_with(cloud.client(), "default", &ar("RuleEndpoint", "ruleendpoints"));
    let rules: Api<DynamicObject> = Api::namespaced_with(cloud.client(), "default", &ar("Rule", "rules"));
    for (name, kind, props) in
        [("rest", "rest", json!({})), ("sb", "servicebus", json!({"service_port": app.addr.port().to_string()}))]
    {
        let o: DynamicObject = serde_json::from_value(json!({"apiVersion": "rules.kubeedge.io/v1",
            "kind": "RuleEndpoint", "metadata": {"name": name, "namespace": "default"},
            "spec": {"ruleEndpointType": kind, "properties": props}}))
        .unwrap();
        cloud.rt.block_on(eps.create(&PostParams::default(), &o)).unwrap();
    }
    let rule: DynamicObject = serde_json::from_value(json!({"apiVersion": "rules.kubeedge.io/v1", "kind": "Rule",
        "metadata": {"name": "bench", "namespace": "default"},
        "spec": {"source": "rest", "sourceResource": {"path": "/bench"}, "target": "sb", "targetResource": {"path": "/echo"}}}))
    .unwrap();
    cloud.rt.block_on(rules.create(&PostParams::default(), &rule)).unwrap();
    let router: std::net::SocketAddr = format!("127.0.0.1:{router_port}").parse().unwrap();
    let path = format!("/{NODE}/default/bench");
    let body = [b'x'; 64];
    until("the rule to route", || {
        let (code, _, _) = http_request(router, "POST", &path, &[], &body).ok()?;
        (code == 200).then_some(())
    });
    let (cloud_pid, edge_pid) = (cloud.proc.pid(), edge.pid());
    println!(
        "rest → servicebus → rest round trips on one edge node, {secs} s per level, a new connection per request, \
         edgeHub messageQPS {qps}"
    );
    for c in levels {
        let lat: Arc<Mutex<Vec<Duration>>> = Arc::default();
        let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (cpu_c, cpu_e) = (cpu_ticks(cloud_pid), cpu_ticks(edge_pid));
        let start = Instant::now();
        let end = start + Duration::from_secs(secs);
        let workers: Vec<_> = (0..c)
            .map(|_| {
                let (lat, errors, path) = (lat.clone(), errors.clone(), path.clone());
                std::thread::spawn(move || {
                    let mut mine = Vec::new();
                    while Instant::now() < end {
                        let t = Instant::now();
                        match http_request(router, "POST", &path, &[], &body) {
                            Ok((200, _, b)) if b == "Hello World" => mine.push(t.elapsed()),
                            _ => {
                                errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                    }
                    lat.lock().unwrap().extend(mine);
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        let took = start.elapsed().as_secs_f64();
        let mut lat = lat.lock().unwrap().clone();
        lat.sort();
        let ticks = |before: u64, pid: u32| (cpu_ticks(pid) - before) as f64 / 100.0 / took * 100.0;
        println!(
            "concurrency {c:>3}: {:>7.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} errors; cloudcore {:.0} % of a core, edgecore {:.0} %",
            lat.len() as f64 / took,
            pct_ms(&lat, 0.50),
            pct_ms(&lat, 0.99),
            errors.load(std::sync::atomic::Ordering::Relaxed),
            ticks(cpu_c, cloud_pid),
            ticks(cpu_e, edge_pid),
        );
    }
    edge.signal("TERM");
    let _ = edge.wait_exit(kubeedge_testkit::patience());
    cloud.stop();
}
