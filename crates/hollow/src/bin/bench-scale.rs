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
//! With `--replicas N` (N ≥ 2) N cloudcores run against the one apiserver-lite, with haproxy
//! in front of them (TCP mode, `balance leastconn`, `kubeedge_testkit::replicas`): the fleet
//! connects through it, and each phase reports per-replica node counts and the replicas'
//! summed CPU and RSS. Instead of the restart, `--kill-replica` SIGKILLs the replica with the
//! most nodes after the idle phase (with pods being created at that moment) and reports the
//! time until every node is connected to the others, and whether anything was lost or
//! duplicated: every node must run exactly its pods and hold an ObjectSync for each, and the
//! `--observers` edges (an in-process `ack_fleet`, counting every message) must hold exactly
//! what the API says and have received no object version twice since the kill, but what the
//! killed replica sent without recording its ACK (`ack_fleet::Tally::failover`).
//!
//! Run through `hack/bench-scale.sh [nodes] [pods-per-node] [flags…]` (release build, raised
//! fd limit), e.g. `hack/bench-scale.sh 9000 1 --replicas 3 --kill-replica`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::runtime::watcher;
use kubeedge_hollow::ack_fleet::{Holdings, Tally, connect_fleet};
use kubeedge_testkit::haproxy::Haproxy;
use kubeedge_testkit::replicas::{Replica, Replicas, Spec, start_replicas};
use kubeedge_testkit::{Process, field, free_port, http_get};
use parking_lot::Mutex;
use serde_json::json;
use tokio_util::sync::CancellationToken;

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
    /// cloudcore replicas; from 2 on, behind haproxy (the fleet connects through it).
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// With replicas: SIGKILL the busiest one after the idle phase (instead of the restart)
    /// and report the failover.
    #[arg(long)]
    kill_replica: bool,
    /// Edges that count every message they get (`ack_fleet`), for the failover's lost and
    /// duplicated check; 0: 1 % of the nodes, at least 10 and at most 100.
    #[arg(long, default_value_t = 0)]
    observers: usize,
    /// Fleet nodes behave as upstream edgecores (no `lease-renew` feature: a full Lease
    /// update every 10 s and a keepalive every 15 s), for the upstream-peer figures.
    #[arg(long)]
    upstream_edge: bool,
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
fn warnings(clouds: &mut [Replica]) {
    let mut counts: HashMap<String, usize> = HashMap::new();
    let log: String = clouds.iter_mut().filter_map(|r| r.proc.as_mut()).map(|p| p.log() + "\n").collect();
    for line in log.lines().filter(|l| l.contains(" WARN ")) {
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

/// What cloudcore resent on its own so far, from its log: reconciles that sent something
/// (count, objects sent or deleted) and anti-entropy repairs, with the latest such line.
fn resends(clouds: &mut [Replica]) -> (usize, u64, usize, Option<String>) {
    let log: String = clouds.iter_mut().filter_map(|r| r.proc.as_mut()).map(|p| p.log() + "\n").collect();
    let (mut n, mut objects, mut repairs, mut last) = (0, 0, 0, None);
    for line in log.lines() {
        if line.contains("Reconciled an edge node.") {
            n += 1;
            objects += ["sent", "deleted"].iter().map(|k| field(line, k).parse::<u64>().unwrap_or(0)).sum::<u64>();
            last = Some(line.to_owned());
        } else if line.contains("Anti-entropy repaired an edge node.") {
            repairs += 1;
            last = Some(line.to_owned());
        }
    }
    (n, objects, repairs, last)
}

/// The replicas' summed (RSS KiB, CPU seconds); a killed one counts no more.
fn cloud_usage(clouds: &[Replica]) -> (u64, f64) {
    clouds.iter().filter_map(|r| r.proc.as_ref()).map(|p| usage(p.pid())).fold((0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
}

/// Each replica's connected nodes (0 for a killed one).
fn per_replica(clouds: &[Replica]) -> Vec<i64> {
    clouds.iter().map(|r| if r.proc.is_some() { r.connected_nodes().unwrap_or(0) } else { 0 }).collect()
}

/// What the kill-replica phase needs from the rest of the bench.
struct KillCtx<'a> {
    rt: &'a tokio::runtime::Runtime,
    client: &'a kube::Client,
    ca: &'a kubeedge_pki::Ca,
    /// The fleet's metrics.
    maddr: SocketAddr,
    /// Hollow nodes.
    n: usize,
    observers: usize,
    pods_per_node: usize,
}

/// The ObjectSyncs: (node, uid) → (kind, recorded version).
async fn object_syncs(client: &kube::Client) -> anyhow::Result<HashMap<(String, String), (String, u64)>> {
    let ar = ApiResource {
        group: "reliablesyncs.kubeedge.io".into(),
        version: "v1alpha1".into(),
        api_version: "reliablesyncs.kubeedge.io/v1alpha1".into(),
        kind: "ObjectSync".into(),
        plural: "objectsyncs".into(),
    };
    let list = Api::<DynamicObject>::all_with(client.clone(), &ar).list(&ListParams::default()).await?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|o| {
            let (node, uid) = o.metadata.name.as_deref()?.rsplit_once('.')?;
            let kind = o.data.pointer("/spec/objectKind").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
            let rv = o.data.pointer("/status/objectResourceVersion").and_then(|v| v.as_str()?.parse().ok());
            Some(((node.to_owned(), uid.to_owned()), (kind, rv.unwrap_or(0))))
        })
        .collect())
}

/// A pod on `node` labelled `bench={label}`.
fn bench_pod(name: &str, node: &str, label: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"bench": label}},
        "spec": {"nodeName": node, "containers": [{"name": "pause", "image": "localhost/pause:busybox"}]}}))?)
}

/// Creates `pods` ((name, node)) labelled `bench={label}`, 64 calls at a time.
async fn create_pods(client: &kube::Client, pods: Vec<(String, String)>, label: &str) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    futures::stream::iter(pods)
        .map(|(name, node)| {
            let api = api.clone();
            async move {
                let pod = bench_pod(&name, &node, label)?;
                api.create(&PostParams::default(), &pod).await.with_context(|| format!("creating {name}"))?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(64)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Deletes pods by name at once (grace 0), 64 calls at a time.
async fn delete_pods(client: &kube::Client, names: Vec<String>) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let now = DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
    futures::stream::iter(names)
        .map(|name| {
            let (api, now) = (api.clone(), now.clone());
            async move {
                api.delete(&name, &now).await.with_context(|| format!("deleting {name}"))?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(64)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// The kill-replica phase: observers join; pods are being created as the busiest replica is
/// SIGKILLed; the time until every node is connected to the others; then pods replaced, and
/// the check that nothing was lost (every node runs or holds exactly its pods, each with its
/// ObjectSync) or duplicated (the observers' tally).
fn kill_replica(ctx: &KillCtx<'_>, clouds: &mut [Replica], lb: Option<&Haproxy>) -> anyhow::Result<()> {
    let KillCtx { rt, client, n, observers, pods_per_node, maddr, .. } = *ctx;
    let server = lb.context("no load balancer")?.addr(kubeedge_testkit::replicas::WS).to_string();
    let names: Vec<String> = (0..observers).map(|i| format!("observer-{i:05}")).collect();
    let nodes: Api<Node> = Api::all(client.clone());
    rt.block_on(async {
        for name in &names {
            let node: Node = serde_json::from_value(
                json!({"metadata": {"name": name, "labels": {"node-role.kubernetes.io/edge": ""}}}),
            )?;
            nodes.create(&PostParams::default(), &node).await?;
        }
        anyhow::Ok(())
    })?;
    let tally: Arc<Mutex<Tally>> = Arc::default();
    let stop = CancellationToken::new();
    let mut events = rt.block_on(connect_fleet(ctx.ca, &server, &names, 16, stop.clone()));
    {
        let tally = tally.clone();
        rt.spawn(async move {
            while let Some(ev) = events.recv().await {
                tally.lock().on(ev);
            }
        });
    }
    wait_until("the observers connected", Duration::from_secs(120), || tally.lock().connected() == observers)?;
    let pods: Vec<(String, String)> = (0..observers)
        .flat_map(|i| {
            (0..pods_per_node.max(1)).map(move |k| (format!("observer-pod-{i}-{k}"), format!("observer-{i:05}")))
        })
        .collect();
    rt.block_on(create_pods(client, pods, "observer"))?;
    let observers_hold = || -> anyhow::Result<Vec<String>> {
        let want = rt.block_on(kubeedge_hollow::ack_fleet::desired(client, "default", Some("bench=observer")))?;
        let t = tally.lock();
        let empty = Holdings::new();
        Ok(names
            .iter()
            .filter(|name| t.holds(name).unwrap_or(&empty) != want.get(*name).unwrap_or(&empty))
            .map(|name| format!("{name} holds {:?}, want {:?}", t.holds(name), want.get(name)))
            .collect())
    };
    wait_until("the observers hold their pods", Duration::from_secs(120), || {
        observers_hold().is_ok_and(|b| b.is_empty())
    })?;
    // The ObjectSyncs of all that settle (a few seconds of writes at most): every version an
    // observer holds is recorded.
    wait_until("the observers' ObjectSyncs", Duration::from_secs(60), || {
        let Ok(recorded) = rt.block_on(object_syncs(client)) else { return false };
        let t = tally.lock();
        names.iter().all(|name| {
            t.holds(name).into_iter().flatten().all(|(_, (uid, rv))| {
                recorded.get(&(name.clone(), uid.clone())).is_some_and(|(_, r)| r.to_string() == *rv)
            })
        })
    })?;

    // Pods created on every 20th node as the busiest replica dies.
    let before = per_replica(clouds);
    let victim = (0..clouds.len()).max_by_key(|i| before[*i]).unwrap_or(0);
    let churn: Vec<(String, String)> =
        (0..n).step_by(20).map(|i| (format!("churn-{i:05}"), format!("hollow-{i:05}"))).collect();
    let churning = {
        let (client, churn) = (client.clone(), churn.clone());
        rt.spawn(async move { create_pods(&client, churn, "churn").await })
    };
    // Killed once the first of them are in.
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), "default");
    wait_until("the churn to start", Duration::from_secs(60), || {
        rt.block_on(pods_api.list_metadata(&ListParams::default().labels("bench=churn")))
            .is_ok_and(|l| !l.items.is_empty())
    })?;
    tally.lock().mark_kill();
    clouds[victim].kill();
    let killed_at = Instant::now();
    // What the killed replica recorded is all it ever will.
    let recorded: HashMap<(String, String), u64> =
        rt.block_on(object_syncs(client))?.into_iter().map(|(k, (_, rv))| (k, rv)).collect();
    let total = (n + observers) as i64;
    let limit = Duration::from_secs(120) + Duration::from_millis(20 * n as u64);
    wait_until("every node connected to the other replicas", limit, || {
        per_replica(clouds).iter().sum::<i64>() == total
            && m(&metrics(maddr), "hollow_connected") as usize == n
            && tally.lock().connected() == observers
    })?;
    let reconnect = killed_at.elapsed();
    println!(
        "kill-replica: replica {victim} of {} SIGKILLed with {} of {total} nodes (pods being created meanwhile): every node connected to the others {:.2} s later; nodes per replica before {before:?}, after {:?}",
        clouds.len(),
        before[victim],
        reconnect.as_secs_f64(),
        per_replica(clouds)
    );
    rt.block_on(churning)??;

    // After the failover: the churn pods deleted, a new pod on every 20th node (another set),
    // each observer's first pod replaced.
    let t0 = Instant::now();
    let post: Vec<(String, String)> =
        (10..n).step_by(20).map(|i| (format!("post-{i:05}"), format!("hollow-{i:05}"))).collect();
    rt.block_on(async {
        delete_pods(client, churn.iter().map(|(p, _)| p.clone()).collect()).await?;
        create_pods(client, post.clone(), "post").await?;
        delete_pods(client, (0..observers).map(|i| format!("observer-pod-{i}-0")).collect()).await?;
        let again = (0..observers).map(|i| (format!("observer-pod-{i}-again"), format!("observer-{i:05}"))).collect();
        create_pods(client, again, "observer").await
    })?;
    let hollow_pods = n * pods_per_node + post.len();
    let lost = || -> anyhow::Result<Vec<String>> {
        let mut out = observers_hold()?;
        let held = m(&metrics(maddr), "hollow_pods") as usize;
        if held != hollow_pods {
            out.push(format!("the fleet runs {held} pods, want {hollow_pods}"));
        }
        let (list, syncs) = rt.block_on(async {
            let pods = Api::<Pod>::namespaced(client.clone(), "default").list(&ListParams::default()).await?;
            anyhow::Ok((pods, object_syncs(client).await?))
        })?;
        let mut want = std::collections::HashSet::new();
        for p in &list.items {
            let node = p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
            let uid = p.metadata.uid.clone().unwrap_or_default();
            let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            if node.starts_with("hollow-") && !running {
                out.push(format!("pod {:?} on {node} is not Running", p.metadata.name));
            }
            if !syncs.contains_key(&(node.clone(), uid.clone())) {
                out.push(format!("no ObjectSync for pod {:?} on {node}", p.metadata.name));
            }
            want.insert((node, uid));
        }
        for (key, (kind, _)) in &syncs {
            if kind == "Pod" && !want.contains(key) {
                out.push(format!("an ObjectSync of a deleted pod is left: {key:?}"));
            }
        }
        Ok(out)
    };
    let converged = wait_until("every node converged after the failover", Duration::from_secs(180), || {
        lost().is_ok_and(|l| l.is_empty())
    });
    let problems = lost()?;
    let f = tally.lock().failover(&recorded);
    println!(
        "kill-replica: after the failover {} pods deleted and {} created: {} ({:.1} s); lost: {}; observers: {} of {observers} moved, {} versions in flight at the kill sent once more, duplicated: {} ({} sent twice before the kill)",
        churn.len() + observers,
        post.len() + observers,
        if converged.is_ok() { "every node converged" } else { "NOT converged" },
        t0.elapsed().as_secs_f64(),
        problems.len(),
        f.moved,
        f.resent,
        f.duplicates.len(),
        f.before
    );
    for p in problems.iter().take(5).chain(f.duplicates.iter().take(5)) {
        println!("  {p}");
    }
    stop.cancel();
    if !problems.is_empty() || !f.duplicates.is_empty() {
        bail!("the failover lost {} and duplicated {} objects", problems.len(), f.duplicates.len());
    }
    Ok(())
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

    // cloudcore (or its replicas behind haproxy), with the CA the fleet signs its nodes'
    // certificates with.
    if flags.kill_replica && flags.replicas < 2 {
        bail!("--kill-replica needs --replicas 2 or more");
    }
    let observers = match flags.observers {
        0 => (n / 100).clamp(10, 100),
        k => k,
    };
    let ca = kubeedge_pki::Ca::generate()?;
    let (ca_crt, ca_key) = (dir.path().join("ca.crt"), dir.path().join("ca.key"));
    let ca_key_pem = kubeedge_pki::pem("EC PRIVATE KEY", ca.key_sec1());
    std::fs::write(&ca_crt, ca.cert_pem())?;
    std::fs::write(&ca_key, &ca_key_pem)?;
    let cloudcore = bin("cloudcore")?;
    // Each replica may have to take every node (the others killed).
    let node_limit = (n + observers + 10).to_string();
    let settings: Vec<(&[&str], String)> = vec![(&["modules", "cloudHub", "nodeLimit"], node_limit)];
    let spec = Spec {
        bin: &cloudcore,
        dir: dir.path(),
        kubeconfig: &kubeconfig,
        count: flags.replicas.max(1),
        ca_pem: (&ca.cert_pem(), &ca_key_pem),
        settings: &settings,
        // Sessions (each holds two descriptors in haproxy, which must fit the hard limit).
        maxconn: n + observers + 200,
    };
    let (mut clouds, lb) = if flags.replicas > 1 {
        let r = Replicas::start(&spec)?;
        (r.replicas, Some(r.lb))
    } else {
        (start_replicas(&spec)?, None)
    };
    for r in clouds.iter_mut().filter_map(|r| r.proc.as_mut()) {
        r.wait_for_line("Loaded what edge nodes have acknowledged.");
    }
    // Where the fleet connects: haproxy, or the one cloudcore.
    let fleet_port = match &lb {
        Some(lb) => lb.addr(kubeedge_testkit::replicas::WS).port(),
        None => clouds[0].ws_port,
    };
    if let Some(lb) = &lb {
        println!(
            "replicas: {} cloudcores behind haproxy (pid {}, balance leastconn) on 127.0.0.1:{fleet_port}",
            clouds.len(),
            lb.pid()
        );
    }
    std::thread::sleep(Duration::from_secs(1));
    let (rss0, _) = cloud_usage(&clouds);

    // The fleet.
    let start = Instant::now();
    let (server, nodes, parallel, workers) =
        (format!("127.0.0.1:{fleet_port}"), n.to_string(), flags.parallel.to_string(), flags.fleet_workers.to_string());
    let mut args = vec![
        "--server",
        &server,
        "--ca",
        ca_crt.to_str().context("utf-8")?,
        "--ca-key",
        ca_key.to_str().context("utf-8")?,
        "--nodes",
        &nodes,
        "--parallel",
        &parallel,
        "--workers",
        &workers,
    ];
    if flags.upstream_edge {
        args.push("--upstream-edge");
    }
    let mut fleet = Process::spawn(&bin("hollow-edge")?, &args)?;
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
    let (rss1, _) = cloud_usage(&clouds);
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
    if clouds.len() > 1 {
        println!(
            "connect: nodes per replica {:?} (cloudcore RSS and CPU here are the {} replicas' sums)",
            per_replica(&clouds),
            clouds.len()
        );
    }

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
    let (_, cpu0) = cloud_usage(&clouds);
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
    let (rss2, cpu1) = cloud_usage(&clouds);
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

    warnings(&mut clouds);

    // Idle.
    std::thread::sleep(Duration::from_secs(5));
    let r0 = resends(&mut clouds);
    let (s0, m0, (_, c0), i0) = (socket_bytes(fleet_port), metrics(maddr), cloud_usage(&clouds), Instant::now());
    std::thread::sleep(Duration::from_secs(flags.idle_secs));
    let (s1, m1, (rss3, c1), secs) = (socket_bytes(fleet_port), metrics(maddr), cloud_usage(&clouds), i0.elapsed());
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
    let r1 = resends(&mut clouds);
    println!(
        "idle: cloudcore resent {} objects in {} reconciles and made {} anti-entropy repairs ({} objects in {} reconciles before the idle phase){}",
        r1.1 - r0.1,
        r1.0 - r0.0,
        r1.2 - r0.2,
        r0.1,
        r0.0,
        r1.3.filter(|_| r1.0 + r1.2 > r0.0 + r0.2).map(|l| format!("; the latest: {l}")).unwrap_or_default()
    );

    if flags.kill_replica {
        let ctx =
            KillCtx { rt: &rt, client: &client, ca: &ca, maddr, n, observers, pods_per_node: flags.pods_per_node };
        kill_replica(&ctx, &mut clouds, lb.as_ref())?;
    } else if !flags.no_restart && clouds.len() == 1 {
        // Restart.
        let cloud = &mut clouds[0];
        cloud.kill();
        wait_until("every node to notice", Duration::from_secs(60), || m(&metrics(maddr), "hollow_connected") == 0)?;
        let start = Instant::now();
        cloud.restart(&cloudcore)?;
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
        let (rss4, _) = cloud_usage(&clouds);
        println!("after restart: cloudcore RSS {:.1} MB", rss4 as f64 / 1024.0);
    }
    for r in clouds.iter_mut().filter_map(|r| r.proc.as_mut()) {
        r.signal("TERM");
        let _ = r.wait_exit(Duration::from_secs(30));
    }
    fleet.signal("TERM");
    let _ = fleet.wait_exit(Duration::from_secs(30));
    drop(api);
    Ok(())
}
