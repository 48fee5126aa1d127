//! Edged's figures against a real private containerd, with the release binaries:
//!
//! - edgecore's resident memory when idle with its default modules (EdgeHub, MetaManager with
//!   MetaServer, Edged; connected, node registered, no pods), then with 50 running pods;
//! - pod create → Running visible in the API, one pod at a time on one node (p50/p90/p99);
//! - the size of the release binaries, as built and stripped;
//! - how long after edgecore starts its node is Ready in the API.
//!
//! Run as root: `cargo build --release -p cloudcore -p edgecore && cargo bench -p kubeedge-e2e --bench edged`
//! (`PODS=N` changes the pod count). Prints the figures; asserts nothing about speed.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kubeedge_e2e::{CloudSide, until};
use kubeedge_testkit::containerd::{self, PrivateContainerd};
use kubeedge_testkit::{Process, link};
use serde_json::json;

const NODE: &str = "edge-bench";

/// Anonymous (heap, stacks) and file-backed (the binary's code) resident memory and threads.
fn rss_parts(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("RssAnon") || l.starts_with("RssFile") || l.starts_with("Threads"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ")
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The RSS over `secs` seconds, sampled every 200 ms: (median, max) in KB.
fn settle_rss(pid: u32, secs: u64) -> (u64, u64) {
    let mut samples = Vec::new();
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        samples.push(rss_kb(pid));
        std::thread::sleep(Duration::from_millis(200));
    }
    samples.sort_unstable();
    (samples[samples.len() / 2], *samples.last().unwrap_or(&0))
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn size(path: &Path) -> (u64, u64) {
    let built = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let stripped = std::env::temp_dir().join(format!("stripped-{}", std::process::id()));
    let ok = std::process::Command::new("strip").arg("-o").arg(&stripped).arg(path).status().is_ok_and(|s| s.success());
    let s = if ok { std::fs::metadata(&stripped).map(|m| m.len()).unwrap_or(0) } else { 0 };
    let _ = std::fs::remove_file(&stripped);
    (built, s)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if let Some(why) = containerd::unavailable() {
        eprintln!("SKIPPED edged bench: {why}");
        return;
    }
    let pods_n: usize = std::env::var("PODS").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    let ctrd = PrivateContainerd::start().unwrap_or_else(|e| panic!("private containerd: {e}"));
    let dir = tempfile::tempdir().unwrap();
    let mut cloud = CloudSide::start(dir.path());
    cloud.proc.wait_for_line("Loaded what edge nodes have acknowledged.");
    let token = cloud.token();
    let edge_bin = &kubeedge_testkit::workspace_bin("edgecore");
    let q = |p: &Path| format!("\"{}\"", p.display());
    let settings: Vec<(&[&str], String)> = vec![
        (&["modules", "edged", "enable"], "true".into()),
        (&["modules", "edged", "nodeIP"], "127.0.0.1".into()),
        (&["modules", "edged", "rootDirectory"], q(&dir.path().join("edge/kubelet"))),
        (
            &["modules", "edged", "tailoredKubeletConfig", "containerRuntimeEndpoint"],
            format!("\"unix://{}\"", ctrd.socket().display()),
        ),
        (&["modules", "edged", "tailoredKubeletConfig", "podLogsDir"], q(&ctrd.pod_log_root())),
        (&["modules", "edged", "tailoredKubeletConfig", "staticPodPath"], q(&dir.path().join("edge/manifests"))),
        (&["modules", "edged", "tailoredKubeletConfig", "readOnlyPort"], kubeedge_testkit::free_port().to_string()),
        (
            &["modules", "metaManager", "metaServer", "server"],
            format!("\"127.0.0.1:{}\"", kubeedge_testkit::free_port()),
        ),
    ];
    let cfg = link::edgecore(edge_bin, dir.path(), NODE, &token, &cloud.link(), &settings);
    let client = cloud.client();
    let nodes: Api<Node> = Api::all(client.clone());
    // Node Ready after start: from spawning edgecore (it joins by token) to Ready in the API,
    // polled every 10 ms.
    let started = Instant::now();
    let mut edge = Process::spawn(edge_bin, &["--config", cfg.to_str().unwrap()]).unwrap();
    let pid = edge.pid();
    loop {
        let ready = cloud
            .rt
            .block_on(nodes.get_opt(NODE))
            .ok()
            .flatten()
            .and_then(|n| n.status?.conditions)
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if ready {
            break;
        }
        assert!(started.elapsed() < kubeedge_testkit::patience(), "the node never became Ready");
        std::thread::sleep(Duration::from_millis(10));
    }
    let ready_after = started.elapsed();
    edge.wait_for_line("Started.");
    let (idle_med, idle_max) = settle_rss(pid, 10);
    let parts = rss_parts(pid);

    // Pods one at a time: create → Running (and Ready) seen by a watch.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let (tx, rx) = std::sync::mpsc::channel::<(String, Instant)>();
    let watch_pods = pods.clone();
    cloud.rt.spawn(async move {
        let mut seen = std::collections::HashSet::new();
        let mut stream = watcher(watch_pods, watcher::Config::default()).applied_objects().boxed();
        while let Ok(Some(p)) = stream.try_next().await {
            let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            let name = p.metadata.name.clone().unwrap_or_default();
            if running && seen.insert(name.clone()) && tx.send((name, Instant::now())).is_err() {
                return;
            }
        }
    });
    let image = ctrd.busybox_image().to_owned();
    let mut latencies = Vec::new();
    for i in 0..pods_n {
        let name = format!("p{i}");
        let p: Pod = serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"nodeName": NODE,
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": image, "command": ["sleep", "3600"]}]}}))
        .unwrap();
        let t0 = Instant::now();
        cloud.rt.block_on(pods.create(&PostParams::default(), &p)).unwrap();
        loop {
            let (n, at) = rx.recv_timeout(kubeedge_testkit::patience()).expect("a pod to run");
            if n == name {
                latencies.push(at - t0);
                break;
            }
        }
    }
    let (busy_med, busy_max) = settle_rss(pid, 10);
    let busy_parts = rss_parts(pid);
    let cpu_ticks = |pid: u32| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
        fields.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            + fields.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
    };
    let c0 = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(10));
    let cpu_pct = (cpu_ticks(pid) - c0) as f64 / 10.0; // 100 ticks/s: ticks per 10 s / 10 = % of a core

    latencies.sort();
    println!("edgecore (release), default modules: EdgeHub, MetaManager + MetaServer, Edged; containerd 1.6");
    println!(
        "  node Ready in the API after edgecore starts (join by token included): {:.0} ms",
        ready_after.as_secs_f64() * 1e3
    );
    println!("  idle RSS, node registered, no pods: median {idle_med} KB, max {idle_max} KB ({parts})");
    println!("  RSS with {pods_n} running pods:       median {busy_med} KB, max {busy_max} KB ({busy_parts})");
    println!("  CPU with {pods_n} running pods, idle: {cpu_pct:.1} % of one core");
    println!(
        "  pod create → Running in the API, one at a time ({} pods): p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        latencies.len(),
        pct(&latencies, 0.5).as_secs_f64() * 1e3,
        pct(&latencies, 0.9).as_secs_f64() * 1e3,
        pct(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
    );
    for bin in ["edgecore", "cloudcore"] {
        let path = kubeedge_testkit::workspace_bin(bin);
        let (built, stripped) = size(&path);
        println!(
            "  {bin} release binary: {:.1} MB as built, {:.1} MB stripped",
            built as f64 / 1e6,
            stripped as f64 / 1e6
        );
    }

    for i in 0..pods_n {
        let _ = cloud.rt.block_on(pods.delete(&format!("p{i}"), &DeleteParams::default()));
    }
    until("the pods to be gone", || {
        cloud.rt.block_on(pods.list(&Default::default())).ok().filter(|l| l.items.is_empty()).map(|_| ())
    });
    edge.signal("TERM");
    let _ = edge.wait_exit(kubeedge_testkit::patience());
    cloud.stop();
}
