//! `bench-scale`: the scale harness (upstream's edgemark hollow nodes + ClusterLoader2's
//! density test, scaled to one machine). Starts apiserver-lite, cloudcore and a `hollow-edge`
//! fleet as three processes (the binaries next to this one), then:
//!
//! 1. connects the fleet (each node registers itself over the link) and reads cloudcore's RSS
//!    per connected node;
//! 2. density: creates `pods-per-node` pods per node through the API at `--rate` pods/s and
//!    watches them to Running: pod startup latency (create call → Running visible in a watch),
//!    ACKed messages/s, cloudcore CPU and RSS;
//! 3. idle: uplink and downlink bytes per node per second over `--idle-secs`, from the
//!    kernel's per-socket counters (`ss -ti`: TCP payload, i.e. TLS records) on the fleet's
//!    connections, and the fleet's own per-kind message counters;
//! 4. restart: SIGKILL cloudcore, start it again, time until every node is connected again.
//!
//! Run through `hack/bench-scale.sh [nodes] [pods-per-node]` (release build, raised fd limit).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use kube::runtime::watcher;
use kubeedge_testkit::link::{self, Cloud};
use kubeedge_testkit::{Process, field, free_port, http_get, set_yaml_path};
use parking_lot::Mutex;
use serde_json::json;

#[derive(Parser, Clone)]
#[command(about = "Scale harness: hollow edge nodes against cloudcore")]
struct Flags {
    /// Hollow nodes.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Pods per node in the density phase.
    #[arg(long, default_value_t = 10)]
    pods_per_node: usize,
    /// Pod creations per second (0: as fast as the API takes them).
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// Create calls in flight at most.
    #[arg(long, default_value_t = 64)]
    inflight: usize,
    /// Fleet handshakes in progress at most.
    #[arg(long, default_value_t = 64)]
    parallel: usize,
    /// Length of the idle measurement, seconds.
    #[arg(long, default_value_t = 60)]
    idle_secs: u64,
    /// Skip the cloudcore restart phase.
    #[arg(long)]
    no_restart: bool,
    /// Worker threads of the fleet process.
    #[arg(long, default_value_t = 2)]
    fleet_workers: usize,
}

fn bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let p = exe.parent().context("no parent directory")?.join(name);
    if !p.is_file() {
        bail!("{} is not built (cargo build --release -p apiserver-lite -p cloudcore -p kubeedge-hollow)", p.display());
    }
    Ok(p)
}

/// (RSS KiB, CPU seconds user+system) of a process.
fn usage(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12].iter().filter_map(|i| f.get(*i)?.parse::<u64>().ok()).sum();
    #[allow(clippy::cast_precision_loss)]
    let cpu = ticks as f64 / 100.0;
    (rss, cpu)
}

/// Kernel counters summed over established TCP connections to `port`, as the fleet's side
/// sees them: (bytes sent and acknowledged, bytes received, segments out, segments in).
fn socket_bytes(port: u16) -> (u64, u64, u64, u64) {
    let out = Command::new("ss")
        .args(["-tinH", "state", "established", &format!("( dport = :{port} )")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut sums = (0, 0, 0, 0);
    for tok in out.split_whitespace() {
        let Some((k, v)) = tok.split_once(':') else { continue };
        let Ok(v) = v.parse::<u64>() else { continue };
        match k {
            "bytes_acked" => sums.0 += v,
            "bytes_received" => sums.1 += v,
            "segs_out" => sums.2 += v,
            "segs_in" => sums.3 += v,
            _ => {}
        }
    }
    sums
}

fn metrics(addr: SocketAddr) -> HashMap<String, u64> {
    let body = http_get(addr, "/metrics").map(|(_, b)| b).unwrap_or_default();
    body.lines()
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

fn m(map: &HashMap<String, u64>, key: &str) -> u64 {
    map.get(key).copied().unwrap_or(0)
}

#[allow(clippy::cast_precision_loss)]
fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64()
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> anyhow::Result<Duration> {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(start.elapsed())
}

/// Prints what cloudcore warned about so far, grouped by message.
fn warnings(cloud: &mut Process) {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for line in cloud.log().lines().filter(|l| l.contains(" WARN ")) {
        let after = line.split_once(" WARN ").map(|(_, r)| r).unwrap_or(line);
        // The message and the module it concerns; other fields vary per line.
        let msg: Vec<&str> = after
            .split_whitespace()
            .filter(|w| w.starts_with("module=") || (!w.contains('=') && !w.ends_with(':')))
            .collect();
        *counts.entry(msg.join(" ")).or_default() += 1;
    }
    let mut v: Vec<_> = counts.into_iter().collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.1));
    let top: Vec<String> = v.iter().take(5).map(|(m, n)| format!("{n}× {m}")).collect();
    println!("cloudcore warnings so far: {}", if top.is_empty() { "none".to_owned() } else { top.join("; ") });
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let dir = kubeedge_testkit::TempDir::new();
    let n = flags.nodes;
    #[allow(clippy::cast_precision_loss)]
    let nf = n as f64;
    println!("== bench-scale: {n} hollow nodes, {} pods per node", flags.pods_per_node);

    // apiserver-lite, its own process.
    let kubeconfig = dir.path().join("kubeconfig");
    let api_port = free_port();
    let api = Child(
        Command::new(bin("apiserver-lite")?)
            .args(["--listen", &format!("127.0.0.1:{api_port}"), "--history", "1000000", "--kubeconfig-out"])
            .arg(&kubeconfig)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting apiserver-lite")?,
    );
    wait_until("apiserver-lite", Duration::from_secs(30), || {
        std::fs::metadata(&kubeconfig).is_ok_and(|m| m.len() > 0)
    })?;
    let client = rt.block_on(async {
        let kc = kube::config::Kubeconfig::from_yaml(&std::fs::read_to_string(&kubeconfig)?)?;
        anyhow::Ok(kube::Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?)?)
    })?;

    // cloudcore, with the CA the fleet signs its nodes' certificates with.
    let ca = kubeedge_pki::Ca::generate()?;
    std::fs::create_dir_all(dir.path().join("cloud"))?;
    let (ca_crt, ca_key) = (dir.path().join("cloud/ca.crt"), dir.path().join("cloud/ca.key"));
    std::fs::write(&ca_crt, ca.cert_pem())?;
    std::fs::write(&ca_key, kubeedge_pki::pem("EC PRIVATE KEY", ca.key_sec1()))?;
    let (ws_port, https_port) = (free_port(), free_port());
    let cloudcore = bin("cloudcore")?;
    let cfg = link::cloudcore(
        &cloudcore,
        dir.path(),
        &Cloud { kubeconfig: &kubeconfig, ip: "127.0.0.1", ws_port, https_port },
    );
    let yaml = std::fs::read_to_string(&cfg)?;
    let yaml = set_yaml_path(&yaml, &["modules", "cloudHub", "nodeLimit"], &(n + 10).to_string());
    std::fs::write(&cfg, yaml)?;
    let cfg_arg = cfg.to_str().context("utf-8 path")?.to_owned();
    let mut cloud = Process::spawn(&cloudcore, &["--config", &cfg_arg])?;
    cloud.wait_for_line("Loaded what edge nodes have acknowledged.");
    std::thread::sleep(Duration::from_secs(1));
    let (rss0, _) = usage(cloud.pid());

    // The fleet.
    let start = Instant::now();
    let mut fleet = Process::spawn(
        &bin("hollow-edge")?,
        &[
            "--server",
            &format!("127.0.0.1:{ws_port}"),
            "--ca",
            ca_crt.to_str().context("utf-8")?,
            "--ca-key",
            ca_key.to_str().context("utf-8")?,
            "--nodes",
            &n.to_string(),
            "--parallel",
            &flags.parallel.to_string(),
            "--workers",
            &flags.fleet_workers.to_string(),
        ],
    )?;
    let line = fleet.wait_for_line("Metrics server listening.");
    let maddr: SocketAddr = field(&line, "address").parse()?;
    let limit = Duration::from_secs(120) + Duration::from_millis(20 * n as u64);
    wait_until("every node connected and registered", limit, || {
        let mm = metrics(maddr);
        m(&mm, "hollow_connected") as usize == n && m(&mm, "hollow_registered") as usize == n
    })
    .map_err(|e| anyhow::anyhow!("{e}; metrics: {:?}", metrics(maddr)))?;
    let connect_secs = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(3));
    let (rss1, _) = usage(cloud.pid());
    let (frss, _) = usage(fleet.pid());
    #[allow(clippy::cast_precision_loss)]
    let per_node = (rss1.saturating_sub(rss0)) as f64 / nf;
    println!(
        "connect: {n} nodes connected and registered {connect_secs:.1} s after the fleet started; cloudcore RSS {:.1} MB (+{:.1} MB over its {:.1} MB at start = {per_node:.1} KB per node); fleet RSS {:.1} MB",
        rss1 as f64 / 1024.0,
        (rss1.saturating_sub(rss0)) as f64 / 1024.0,
        rss0 as f64 / 1024.0,
        frss as f64 / 1024.0
    );

    // Density.
    let total = n * flags.pods_per_node;
    let running: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let (listed_tx, listed_rx) = std::sync::mpsc::channel::<()>();
    let watch = {
        let (pods, running) = (pods.clone(), running.clone());
        rt.spawn(async move {
            let cfg = watcher::Config::default().labels("bench=density");
            let mut s = watcher(pods, cfg).boxed();
            while let Ok(Some(ev)) = s.try_next().await {
                let objs: Vec<Pod> = match ev {
                    watcher::Event::Apply(p) | watcher::Event::InitApply(p) => vec![p],
                    watcher::Event::InitDone => {
                        let _ = listed_tx.send(());
                        continue;
                    }
                    _ => continue,
                };
                let now = Instant::now();
                for p in objs {
                    if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
                        running.lock().entry(p.metadata.name.unwrap_or_default()).or_insert(now);
                    }
                }
            }
        })
    };
    // The watch is established (its initial list done) before the first create.
    listed_rx.recv_timeout(Duration::from_secs(60)).context("the pod watch did not start")?;
    let names: Vec<String> = (0..n).map(|i| format!("hollow-{i:05}")).collect();
    let before = metrics(maddr);
    let (_, cpu0) = usage(cloud.pid());
    let (_, fcpu0) = usage(fleet.pid());
    let t0 = Instant::now();
    let created: Vec<(String, Instant)> = rt.block_on(async {
        futures::stream::iter(0..total)
            .map(|i| {
                let (pods, node) = (pods.clone(), names[i % n].clone());
                let rate = flags.rate;
                async move {
                    if rate > 0.0 {
                        #[allow(clippy::cast_precision_loss)]
                        let due = t0 + Duration::from_secs_f64(i as f64 / rate);
                        tokio::time::sleep_until(due.into()).await;
                    }
                    let name = format!("density-{i:06}");
                    let pod: Pod = serde_json::from_value(json!({
                        "metadata": {"name": name, "labels": {"bench": "density"}},
                        "spec": {"nodeName": node, "containers": [{"name": "pause", "image": "localhost/pause:busybox"}]}}))?;
                    let at = Instant::now();
                    pods.create(&PostParams::default(), &pod).await.with_context(|| format!("creating {name}"))?;
                    anyhow::Ok((name, at))
                }
            })
            .buffer_unordered(flags.inflight.max(1))
            .try_collect()
            .await
    })?;
    let created_secs = t0.elapsed().as_secs_f64();
    let limit = Duration::from_secs(120) + Duration::from_millis(10 * total as u64);
    wait_until("every pod Running", limit, || running.lock().len() >= total).map_err(|e| {
        anyhow::anyhow!("{e}: {} of {total} Running; fleet: {:?}", running.lock().len(), metrics(maddr))
    })?;
    let all_running = t0.elapsed().as_secs_f64();
    let after = metrics(maddr);
    let (rss2, cpu1) = usage(cloud.pid());
    let (frss2, fcpu1) = usage(fleet.pid());
    watch.abort();
    let run = running.lock().clone();
    let mut lat: Vec<Duration> = created.iter().map(|(name, at)| run[name].saturating_duration_since(*at)).collect();
    lat.sort();
    let acks = m(&after, "hollow_sent_total{kind=\"ack\"}") - m(&before, "hollow_sent_total{kind=\"ack\"}");
    let received = m(&after, "hollow_received_total") - m(&before, "hollow_received_total");
    #[allow(clippy::cast_precision_loss)]
    let (acks_f, total_f) = (acks as f64, total as f64);
    println!(
        "density: {total} pods ({} per node) created in {created_secs:.1} s ({:.0}/s asked, {:.0}/s achieved); all Running {all_running:.1} s after the first create",
        flags.pods_per_node,
        flags.rate,
        total_f / created_secs
    );
    println!(
        "pod startup latency (create call → Running seen in a watch): p50 {:.3} s, p90 {:.3} s, p99 {:.3} s, max {:.3} s",
        pct(&lat, 0.5),
        pct(&lat, 0.9),
        pct(&lat, 0.99),
        lat.last().map_or(f64::NAN, Duration::as_secs_f64)
    );
    println!(
        "messages: {acks} cloud messages ACKed by the fleet ({received} received) in {all_running:.1} s = {:.0} ACKed msg/s",
        acks_f / all_running
    );
    println!(
        "cloudcore during density: CPU {:.1} s = {:.0} % of one core on average; RSS {:.1} MB; fleet CPU {:.1} s, RSS {:.1} MB",
        cpu1 - cpu0,
        100.0 * (cpu1 - cpu0) / all_running,
        rss2 as f64 / 1024.0,
        fcpu1 - fcpu0,
        frss2 as f64 / 1024.0
    );

    warnings(&mut cloud);

    // Idle.
    std::thread::sleep(Duration::from_secs(5));
    let (s0, m0, (_, c0), i0) = (socket_bytes(ws_port), metrics(maddr), usage(cloud.pid()), Instant::now());
    std::thread::sleep(Duration::from_secs(flags.idle_secs));
    let (s1, m1, (rss3, c1), secs) = (socket_bytes(ws_port), metrics(maddr), usage(cloud.pid()), i0.elapsed());
    let secs = secs.as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let per = |a: u64, b: u64| b.saturating_sub(a) as f64 / nf / secs;
    let up = per(s0.0, s1.0);
    // IPv4 + TCP with timestamps: 52 bytes of headers per segment.
    let up_wire = up + 52.0 * per(s0.2, s1.2);
    let down = per(s0.1, s1.1);
    println!(
        "idle ({secs:.0} s): uplink {up:.1} B/s per node of TCP payload = {:.3} kbit/s ({:.3} kbit/s with IP/TCP headers); downlink {down:.1} B/s per node; cloudcore CPU {:.1} % of one core, RSS {:.1} MB",
        up * 8.0 / 1000.0,
        up_wire * 8.0 / 1000.0,
        100.0 * (c1 - c0) / secs,
        rss3 as f64 / 1024.0
    );
    let kinds = ["keepalive", "ping", "ack", "lease", "node_status", "podpatch"];
    let parts: Vec<String> = kinds
        .iter()
        .map(|k| {
            let key = |s: &str| format!("hollow_{s}{{kind=\"{k}\"}}");
            format!(
                "{k} {:.3} msg/s {:.1} B/s",
                per(m(&m0, &key("sent_total")), m(&m1, &key("sent_total"))),
                per(m(&m0, &key("sent_bytes_total")), m(&m1, &key("sent_bytes_total")))
            )
        })
        .collect();
    println!("idle uplink per node, message JSON before framing: {}", parts.join("; "));

    // Restart.
    if !flags.no_restart {
        cloud.signal("KILL");
        let _ = cloud.wait_exit(Duration::from_secs(30));
        wait_until("every node to notice", Duration::from_secs(60), || m(&metrics(maddr), "hollow_connected") == 0)?;
        let start = Instant::now();
        let mut cloud2 = Process::spawn(&cloudcore, &["--config", &cfg_arg])?;
        cloud2.wait_for_line("CloudHub WebSocket server listening");
        let listening = start.elapsed();
        let limit = Duration::from_secs(120) + Duration::from_millis(20 * n as u64);
        let took =
            wait_until("every node connected again", limit, || m(&metrics(maddr), "hollow_connected") as usize == n)?;
        println!(
            "restart: cloudcore killed (SIGKILL) and started again: every node connected {:.2} s after the new process started ({:.2} s after it listened)",
            (listening + took).as_secs_f64(),
            took.as_secs_f64()
        );
        std::thread::sleep(Duration::from_secs(3));
        let (rss4, _) = usage(cloud2.pid());
        println!("after restart: cloudcore RSS {:.1} MB", rss4 as f64 / 1024.0);
        cloud2.signal("TERM");
        let _ = cloud2.wait_exit(Duration::from_secs(30));
    } else {
        cloud.signal("TERM");
        let _ = cloud.wait_exit(Duration::from_secs(30));
    }
    fleet.signal("TERM");
    let _ = fleet.wait_exit(Duration::from_secs(30));
    drop(api);
    Ok(())
}
