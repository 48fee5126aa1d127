//! Stream figures on the real path, with the release binaries: kubectl → apiserver-lite → the
//! iptables manager's DNAT → CloudStream → tunnel → EdgeStream → Edged → containerd, cloud and
//! edge in separate network namespaces (`kubeedge_e2e::netstreams`).
//!
//! - `kubectl exec web -- true`: wall time of each run (kubectl's own start included), p50/p99;
//! - one `kubectl logs -f` of a 100 MiB container log: MB/s through the whole path;
//! - cloudcore and edgecore resident memory per open `kubectl logs -f` (STREAMS of them).
//!
//! Run as root: `cargo build --release -p cloudcore -p edgecore -p apiserver-lite && cargo bench
//! -p kubeedge-e2e --bench streams` (`EXECS=N`, `STREAMS=N` change the counts). Prints the
//! figures; asserts nothing about speed.

use std::io::Read;
use std::time::{Duration, Instant};

use kubeedge_e2e::measure::{pct_ms, rss_kb};
use kubeedge_e2e::netstreams::{Net, pod_yaml};
use kubeedge_testkit::{containerd, netns, until};

const LOG_BYTES: u64 = 100 << 20;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    if let Some(why) = netns::unavailable().or_else(containerd::unavailable) {
        eprintln!("SKIPPED streams bench: {why}");
        return;
    }
    let mut net = Net::start();
    let image = net.ctrd.busybox_image().to_owned();
    net.apply("web", &pod_yaml(&image));
    // 100 MiB of 64-byte lines, then idle.
    let flood = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: flood, namespace: default}}
spec:
  nodeName: {node}
  containers:
  - name: flood
    image: {image}
    imagePullPolicy: Never
    command: ["sh", "-c", "yes 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde | head -c {LOG_BYTES}; sleep 36000"]
"#,
        node = kubeedge_e2e::netstreams::NODE
    );
    net.apply("flood", &flood);
    for pod in ["web", "flood"] {
        until(&format!("pod {pod} to run"), || {
            let (ok, out, _) = net.kubectl_raw(&["get", "pod", pod, "-o", "jsonpath={.status.phase}"]);
            (ok && out.trim() == "Running").then_some(())
        });
    }
    let (cloud_pid, edge_pid) = (net.cloud.pid(), net.edge.pid());

    // Exec round trips.
    let execs = env("EXECS", 50);
    let mut times = Vec::with_capacity(execs);
    for _ in 0..execs {
        let t = Instant::now();
        net.kubectl(&["exec", "web", "-c", "app", "--", "true"]);
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "kubectl exec web -- true through the tunnel ({execs} runs): p50 {:.0} ms, p99 {:.0} ms",
        pct_ms(&times, 0.5),
        pct_ms(&times, 0.99)
    );
    // For scale: kubectl's own start and one API round trip, no tunnel.
    let mut gets = Vec::with_capacity(execs);
    for _ in 0..execs {
        let t = Instant::now();
        net.kubectl(&["get", "pod", "web", "-o", "name"]);
        gets.push(t.elapsed());
    }
    gets.sort();
    println!(
        "  for scale, kubectl get pod web (no tunnel): p50 {:.0} ms, p99 {:.0} ms",
        pct_ms(&gets, 0.5),
        pct_ms(&gets, 0.99)
    );

    // One followed log, read as fast as kubectl can print it.
    std::thread::sleep(Duration::from_secs(5));
    let mut follow = std::process::Command::new("ip")
        .args(["netns", "exec", net.pair.cloud(), "kubectl", "--kubeconfig"])
        .arg(&net.kubeconfig)
        .args(["logs", "-f", "flood"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("kubectl");
    let mut out = follow.stdout.take().expect("stdout");
    let t = Instant::now();
    let mut got = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    // All of it but the last, cut line.
    while got < LOG_BYTES - 64 {
        let n = out.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    let secs = t.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let mb = got as f64 / (1 << 20) as f64;
    println!("kubectl logs -f of a {mb:.0} MiB log: {:.1} s, {:.1} MiB/s", secs, mb / secs);
    let _ = follow.kill();
    let _ = follow.wait();

    // Memory per open stream.
    let streams = env("STREAMS", 100);
    std::thread::sleep(Duration::from_secs(3));
    let base = (rss_kb(cloud_pid), rss_kb(edge_pid));
    let mut open = Vec::new();
    for _ in 0..streams {
        let mut f = net.kubectl_spawn(&["logs", "-f", "web", "-c", "app", "--tail=1"]);
        f.wait_for_line("line ");
        open.push(f);
    }
    std::thread::sleep(Duration::from_secs(3));
    let peak = (rss_kb(cloud_pid), rss_kb(edge_pid));
    let open_gauges =
        (net.gauge(false, "kubeedge_cloudstream_streams"), net.gauge(true, "kubeedge_edgestream_streams"));
    for f in open {
        f.stop();
    }
    until("every stream closed", || {
        (net.gauge(false, "kubeedge_cloudstream_streams") == 0 && net.gauge(true, "kubeedge_edgestream_streams") == 0)
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    let after = (rss_kb(cloud_pid), rss_kb(edge_pid));
    #[allow(clippy::cast_precision_loss)]
    let per = |b: u64, p: u64| (p.saturating_sub(b)) as f64 / streams as f64;
    println!(
        "{streams} open kubectl logs -f (gauges {open_gauges:?}): cloudcore {} → {} → {} KB ({:.1} KB per stream), \
         edgecore {} → {} → {} KB ({:.1} KB per stream) (idle → open → closed)",
        base.0,
        peak.0,
        after.0,
        per(base.0, peak.0),
        base.1,
        peak.1,
        after.1,
        per(base.1, peak.1)
    );
}
