//! apiserver-lite's memory per object under the scale bench's load: the `apiserver-lite`
//! binary in its own process (so its RSS is its own), `--pods` pods created through the API as
//! `bench-scale` creates them (one container, `spec.nodeName` set), then `--updates` rounds of
//! status patches per pod as cloudcore writes the edge's podpatch (a strategic-merge patch of
//! `pods/{name}/status` pinned to the pod's UID), with one watch of every pod open throughout
//! as cloudcore keeps one. Prints, per phase, the requests per second, the mean time per
//! request, and the server's RSS (`VmRSS`) and its growth per pod.
//!
//! Run: `cargo bench -p apiserver-lite --bench memory -- --pods 100000` (also `--updates N`,
//! `--history N`, the server's flag, 1,000,000 as `bench-scale` passes it, `--history-bytes N`,
//! `--no-watch`, and `--server PATH` to measure another build of the binary).
//! Free ports only: the server listens on 127.0.0.1:0 and writes its kubeconfig.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{AsyncBufReadExt, StreamExt};
use serde_json::{Value, json};

/// Requests in flight, as `bench-scale --inflight` defaults.
const INFLIGHT: usize = 64;
/// Hollow nodes the pods are spread over (the 10,000 × 10 run).
const NODES: usize = 10_000;

struct Flags {
    pods: usize,
    updates: usize,
    history: usize,
    history_bytes: Option<usize>,
    watch: bool,
    server: String,
}

impl Flags {
    /// Hand-parsed: `cargo bench` adds its own `--bench`, which is ignored.
    fn parse() -> Self {
        let mut f = Self {
            pods: 10_000,
            updates: 3,
            history: 1_000_000,
            history_bytes: None,
            watch: true,
            server: env!("CARGO_BIN_EXE_apiserver-lite").to_owned(),
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut num = |name: &str| -> usize {
                args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{name} needs a number"))
            };
            match a.as_str() {
                "--pods" => f.pods = num("--pods"),
                "--updates" => f.updates = num("--updates"),
                "--history" => f.history = num("--history"),
                "--history-bytes" => f.history_bytes = Some(num("--history-bytes")),
                "--server" => f.server = args.next().expect("--server needs a path"),
                "--no-watch" => f.watch = false,
                _ => {}
            }
        }
        f
    }
}

/// The server process, stopped with SIGTERM when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

/// CPU seconds (user + system) a process has used.
fn cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("").split_whitespace().collect();
    let ticks: u64 = [11, 12].iter().filter_map(|i| fields.get(*i)?.parse::<u64>().ok()).sum();
    // USER_HZ is 100 on Linux.
    ticks as f64 / 100.0
}

/// (VmRSS, VmHWM) of a process, KiB.
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn pod(i: usize) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("density-{i:06}"), "labels": {"bench": "density"}},
        "spec": {"nodeName": format!("hollow-{:05}", i % NODES),
            "containers": [{"name": "pause", "image": "localhost/pause:busybox"}]}})
}

/// Round `round` of a pod's status, as the hollow node reports it: ContainerCreating, then
/// Running, then Running again with a later probe time on its Ready condition.
fn status_patch(i: usize, uid: &str, round: usize) -> Value {
    let ip = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
    let host = format!("172.16.{}.{}", (i % NODES) >> 8, (i % NODES) & 255);
    let started = "2026-12-01T10:00:00Z";
    let cond = |t: &str, s: &str| json!({"type": t, "status": s, "lastTransitionTime": started});
    let status = if round == 0 {
        json!({"phase": "Pending", "hostIP": host, "startTime": started,
            "conditions": [cond("Initialized", "True"), cond("Ready", "False"), cond("ContainersReady", "False"), cond("PodScheduled", "True")],
            "containerStatuses": [{"name": "pause", "state": {"waiting": {"reason": "ContainerCreating"}}, "lastState": {},
                "ready": false, "restartCount": 0, "image": "localhost/pause:busybox", "imageID": "", "started": false}]})
    } else {
        let mut ready = cond("Ready", "True");
        ready["lastProbeTime"] = json!(format!("2026-12-01T10:{:02}:00Z", round));
        json!({"phase": "Running", "hostIP": host, "podIP": ip, "podIPs": [{"ip": ip}], "startTime": started,
            "conditions": [cond("Initialized", "True"), ready, cond("ContainersReady", "True"), cond("PodScheduled", "True")],
            "containerStatuses": [{"name": "pause", "state": {"running": {"startedAt": started}}, "lastState": {},
                "ready": true, "restartCount": 0, "image": "localhost/pause:busybox",
                "imageID": format!("sha256:{:064x}", 0), "containerID": format!("fake://{uid}-0"), "started": true}]})
    };
    json!({"metadata": {"uid": uid}, "status": status})
}

fn request(method: &str, uri: &str, content_type: &str, body: &Value) -> http::Request<Vec<u8>> {
    http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", content_type)
        .body(serde_json::to_vec(body).expect("json"))
        .expect("request")
}

/// Runs `count` requests `INFLIGHT` at a time; returns their results in order, the wall time
/// and the summed per-request latency.
async fn phase<T, F>(count: usize, f: impl Fn(usize) -> F) -> (Vec<T>, Duration, Duration)
where
    F: std::future::Future<Output = T>,
{
    let start = Instant::now();
    let mut out: Vec<(usize, T, Duration)> = futures::stream::iter(0..count)
        .map(|i| {
            let fut = f(i);
            async move {
                let at = Instant::now();
                let r = fut.await;
                (i, r, at.elapsed())
            }
        })
        .buffer_unordered(INFLIGHT)
        .collect()
        .await;
    let wall = start.elapsed();
    let latency = out.iter().map(|(_, _, d)| *d).sum();
    out.sort_by_key(|(i, _, _)| *i);
    (out.into_iter().map(|(_, r, _)| r).collect(), wall, latency)
}

/// One phase's requests, timed.
struct Phase {
    what: String,
    count: usize,
    wall: Duration,
    /// Summed over the requests.
    latency: Duration,
    /// CPU seconds the server used in the phase.
    server_cpu: f64,
}

/// Prints a phase's figures with the server's RSS after it.
#[allow(clippy::cast_precision_loss)]
fn report(p: &Phase, pid: u32, base: u64, pods: usize) {
    std::thread::sleep(Duration::from_millis(500));
    let (now, peak) = rss(pid);
    let count = p.count as f64;
    println!(
        "{}: {} requests in {:.1} s = {:.0}/s, {:.2} ms per request ({INFLIGHT} in flight), server CPU {:.0} µs per request; RSS {:.0} MB (peak {:.0} MB), {:.2} KB per pod over the empty server",
        p.what,
        p.count,
        p.wall.as_secs_f64(),
        count / p.wall.as_secs_f64(),
        p.latency.as_secs_f64() * 1e3 / count,
        p.server_cpu * 1e6 / count,
        now as f64 / 1024.0,
        peak as f64 / 1024.0,
        now.saturating_sub(base) as f64 / pods as f64,
    );
}

fn start_server(dir: &Path, flags: &Flags) -> (Server, String) {
    let kubeconfig = dir.join("kubeconfig");
    let mut cmd = Command::new(&flags.server);
    cmd.args(["--listen", "127.0.0.1:0", "--history", &flags.history.to_string(), "--kubeconfig-out"]).arg(&kubeconfig);
    if let Some(b) = flags.history_bytes {
        cmd.args(["--history-bytes", &b.to_string()]);
    }
    let mut child = cmd
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting apiserver-lite");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().expect("stdout")), &mut line)
        .expect("address line");
    assert!(line.starts_with("listening on "), "{line}");
    (Server(child), std::fs::read_to_string(kubeconfig).expect("kubeconfig"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let flags = Flags::parse();
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, kubeconfig) = start_server(dir.path(), &flags);
    let pid = server.0.id();
    let kc = kube::config::Kubeconfig::from_yaml(&kubeconfig).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.expect("config");
    let client = kube::Client::try_from(cfg).expect("client");
    let n = flags.pods;
    println!(
        "== apiserver-lite memory: {n} pods, {} status updates each, --history {}{}, {} watch",
        flags.updates,
        flags.history,
        flags.history_bytes.map(|b| format!(" --history-bytes {b}")).unwrap_or_default(),
        if flags.watch { "one" } else { "no" }
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (base, _) = rss(pid);
    println!("empty server (pid {pid}): RSS {:.1} MB", base as f64 / 1024.0);

    // One watch of every pod, read line by line as cloudcore's watcher would.
    let events = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let watch = flags.watch.then(|| {
        let (client, events) = (client.clone(), events.clone());
        tokio::spawn(async move {
            let req = http::Request::get("/api/v1/pods?watch=true&resourceVersion=0&allowWatchBookmarks=true")
                .body(Vec::new())
                .expect("request");
            let mut lines = client.request_stream(req).await.expect("watch").lines();
            while let Some(Ok(_)) = lines.next().await {
                events.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        })
    });

    let cpu0 = cpu(pid);
    let (uids, wall, latency) = phase(n, |i| {
        let client = client.clone();
        async move {
            let req = request("POST", "/api/v1/namespaces/default/pods", "application/json", &pod(i));
            let text = client.request_text(req).await.expect("create");
            let created: Value = serde_json::from_str(&text).expect("created pod");
            created["metadata"]["uid"].as_str().expect("uid").to_owned()
        }
    })
    .await;
    let p = Phase { what: "create".to_owned(), count: n, wall, latency, server_cpu: cpu(pid) - cpu0 };
    report(&p, pid, base, n);

    for round in 0..flags.updates {
        let uids = &uids;
        let cpu0 = cpu(pid);
        let (_, wall, latency) = phase(n, |i| {
            let client = client.clone();
            async move {
                let uri = format!("/api/v1/namespaces/default/pods/density-{i:06}/status");
                let body = status_patch(i, &uids[i], round);
                let req = request("PATCH", &uri, "application/strategic-merge-patch+json", &body);
                client.request_text(req).await.expect("status patch");
            }
        })
        .await;
        let what = format!("status round {}", round + 1);
        report(&Phase { what, count: n, wall, latency, server_cpu: cpu(pid) - cpu0 }, pid, base, n);
    }

    let start = Instant::now();
    let req = http::Request::get("/api/v1/namespaces/default/pods").body(Vec::new()).expect("request");
    let body = client.request_text(req).await.expect("list");
    println!("list: {n} pods, {:.1} MB, in {:.0} ms", body.len() as f64 / 1e6, start.elapsed().as_secs_f64() * 1e3);
    drop(body);
    if let Some(w) = watch {
        let want = n * (1 + flags.updates);
        let deadline = Instant::now() + Duration::from_secs(60);
        while events.load(std::sync::atomic::Ordering::Relaxed) < want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!(
            "watch: {} events received (at least {want} expected)",
            events.load(std::sync::atomic::Ordering::Relaxed)
        );
        w.abort();
    }
    let (now, peak) = rss(pid);
    println!("end: RSS {:.0} MB, peak {:.0} MB", now as f64 / 1024.0, peak as f64 / 1024.0);
}
