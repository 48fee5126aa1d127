//! Issue #19: what an idle node sends the cloud, per second, as an upstream edge and as an edge
//! of ours (compact lease renewal, keepalive left out while renewals flow). A measurement, not
//! a regression test: ignored by default, run with
//!
//! ```text
//! cargo build -p cloudcore && cargo test -p kubeedge-hollow --test idle_uplink -- --ignored --nocapture
//! ```
//!
//! apiserver-lite in this process, the real cloudcore binary, and hollow nodes (upstream's
//! timings: heartbeat 15 s, lease 40 s renewed every 10 s, status every 5 min) connected
//! through a TCP relay of the test's that counts the bytes each way above TCP (TLS records).
//! Each mode runs `KUBEEDGE_IDLE_NODES` nodes (20) for `KUBEEDGE_IDLE_SECS` (60 s) once every
//! node has renewed its lease; the message JSON per kind comes from the fleet's own counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kubeedge_hollow::{Config, Fleet, Kind, Stats};
use kubeedge_pki::Ca;
use kubeedge_testkit::link::{self, Cloud};
use kubeedge_testkit::{Process, free_port, patience, set_yaml_path, workspace_bin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// TLS 1.3 record overhead (5-byte header, content type, 16-byte AEAD tag).
const TLS_RECORD: f64 = 22.0;

/// Bytes through the relay: (edge → cloud, cloud → edge).
#[derive(Default)]
struct Counted {
    up: AtomicU64,
    down: AtomicU64,
}

/// Copies `r` to `w`, counting what passes.
async fn pump(
    mut r: impl tokio::io::AsyncRead + Unpin,
    mut w: impl tokio::io::AsyncWrite + Unpin,
    counter: Arc<Counted>,
    up: bool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 || w.write_all(&buf[..n]).await.is_err() {
            break;
        }
        let c = if up { &counter.up } else { &counter.down };
        c.fetch_add(n as u64, Ordering::Relaxed);
    }
    let _ = w.shutdown().await;
}

/// A TCP relay to `target` on a free port, counting bytes each way.
async fn relay(target: String) -> (String, Arc<Counted>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let counted = Arc::new(Counted::default());
    let c = counted.clone();
    tokio::spawn(async move {
        while let Ok((edge, _)) = listener.accept().await {
            let Ok(cloud) = tokio::net::TcpStream::connect(&target).await else { continue };
            let (er, ew) = edge.into_split();
            let (cr, cw) = cloud.into_split();
            tokio::spawn(pump(er, cw, c.clone(), true));
            tokio::spawn(pump(cr, ew, c.clone(), false));
        }
    });
    (addr, counted)
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One mode's figures, per node per second.
struct Figures {
    label: &'static str,
    /// Message JSON, all kinds.
    json: f64,
    /// Message JSON of lease requests and of keepalives.
    lease_json: f64,
    keepalive_json: f64,
    /// The JSON with WebSocket (client, masked) and TLS 1.3 framing added per message and ping.
    estimated: f64,
    /// TLS records measured at the relay, edge → cloud and cloud → edge.
    up: f64,
    down: f64,
}

fn sent(stats: &Stats) -> Vec<(Kind, u64, u64)> {
    [Kind::Keepalive, Kind::Ping, Kind::Ack, Kind::NodeInsert, Kind::NodeStatus, Kind::Lease, Kind::Query]
        .into_iter()
        .chain([Kind::PodPatch, Kind::PodDelete])
        .map(|k| (k, stats.sent(k), stats.sent_bytes(k)))
        .collect()
}

/// Runs `nodes` hollow nodes (as upstream edges or as ours) until each renewed its lease, then
/// measures `secs` seconds of idle.
async fn measure(label: &'static str, relay_addr: &str, counted: &Counted, ca: Arc<Ca>, upstream: bool) -> Figures {
    let nodes = env_or("KUBEEDGE_IDLE_NODES", 20) as usize;
    let secs = env_or("KUBEEDGE_IDLE_SECS", 60);
    let mut cfg = Config::new(relay_addr, nodes);
    cfg.prefix = if upstream { "upstream-".into() } else { "ours-".into() };
    cfg.parallel = 16;
    cfg.upstream_edge = upstream;
    let fleet = Fleet::start(ca, cfg);
    let stats = fleet.stats();
    let deadline = Instant::now() + patience() + Duration::from_secs(30);
    while stats.lease_renewals.load(Ordering::Relaxed) < 2 * nodes as u64 {
        assert!(Instant::now() < deadline, "the fleet never settled: {}", stats.render());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (before, up0, down0) = (sent(&stats), counted.up.load(Ordering::Relaxed), counted.down.load(Ordering::Relaxed));
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (after, up1, down1) = (sent(&stats), counted.up.load(Ordering::Relaxed), counted.down.load(Ordering::Relaxed));
    assert_eq!(stats.connected.load(Ordering::Relaxed) as usize, nodes, "every node stayed connected");
    if !upstream {
        assert!(stats.lease_renewals_compact.load(Ordering::Relaxed) > 0, "{}", stats.render());
    }
    fleet.stop().await;

    let per = (nodes as f64) * (secs as f64);
    let (mut json, mut lease_json, mut keepalive_json, mut estimated) = (0.0, 0.0, 0.0, 0.0);
    for ((kind, n0, b0), (_, n1, b1)) in before.iter().zip(&after) {
        let (n, b) = ((n1 - n0) as f64, (b1 - b0) as f64);
        if *kind == Kind::Ping {
            // A masked empty ping: 2 + 4 bytes of frame in its own record.
            estimated += n * (6.0 + TLS_RECORD);
            continue;
        }
        json += b;
        match kind {
            Kind::Lease => lease_json += b,
            Kind::Keepalive => keepalive_json += b,
            _ => {}
        }
        // Client frames are masked (4 bytes); 126–65535 bytes take a 2-byte extended length.
        let avg = if n > 0.0 { b / n } else { 0.0 };
        let frame = 2.0 + 4.0 + if avg > 125.0 { 2.0 } else { 0.0 };
        estimated += b + n * (frame + TLS_RECORD);
    }
    Figures {
        label,
        json: json / per,
        lease_json: lease_json / per,
        keepalive_json: keepalive_json / per,
        estimated: estimated / per,
        up: (up1 - up0) as f64 / per,
        down: (down1 - down0) as f64 / per,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: minutes long, needs the cloudcore binary"]
async fn idle_uplink_per_node_upstream_edge_vs_ours() {
    let dir = kubeedge_testkit::TempDir::new();
    let api = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        apiserver_lite::ApiServer::start(l, Default::default()).await.unwrap()
    };
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    let ca = Arc::new(Ca::generate().unwrap());
    std::fs::create_dir_all(dir.path().join("cloud")).unwrap();
    std::fs::write(dir.path().join("cloud/ca.crt"), ca.cert_pem()).unwrap();
    std::fs::write(dir.path().join("cloud/ca.key"), kubeedge_pki::pem("EC PRIVATE KEY", ca.key_sec1())).unwrap();
    let (ws_port, https_port) = (free_port(), free_port());
    let bin = workspace_bin("cloudcore");
    let cfg =
        link::cloudcore(&bin, dir.path(), &Cloud { kubeconfig: &kubeconfig, ip: "127.0.0.1", ws_port, https_port });
    let yaml = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, set_yaml_path(&yaml, &["modules", "cloudHub", "nodeLimit"], "1000")).unwrap();
    let mut cloud = Process::spawn(&bin, &["--config", cfg.to_str().unwrap()]).unwrap();
    cloud.wait_for_line("Loaded what edge nodes have acknowledged.");
    let (relay_addr, counted) = relay(format!("127.0.0.1:{ws_port}")).await;

    let upstream = measure("upstream edge (full Lease, keepalive)", &relay_addr, &counted, ca.clone(), true).await;
    let ours = measure("ours ⇄ ours (lease-renew)", &relay_addr, &counted, ca.clone(), false).await;
    println!(
        "idle uplink per node, B/s: message JSON (lease, keepalive) | estimated with WS+TLS | measured TLS up | down"
    );
    for f in [&upstream, &ours] {
        println!(
            "{:<40} {:>6.1} ({:>5.1}, {:>4.1}) | {:>6.1} ({:.3} kbit/s) | {:>6.1} ({:.3} kbit/s) | {:>6.1}",
            f.label,
            f.json,
            f.lease_json,
            f.keepalive_json,
            f.estimated,
            f.estimated * 8.0 / 1000.0,
            f.up,
            f.up * 8.0 / 1000.0,
            f.down
        );
    }
    assert!(ours.up < upstream.up / 2.0, "ours {:.1} B/s vs upstream {:.1} B/s", ours.up, upstream.up);
    assert!(ours.up * 8.0 / 1000.0 <= 0.25, "ours sends {:.3} kbit/s per node", ours.up * 8.0 / 1000.0);

    cloud.signal("TERM");
    assert!(cloud.wait_exit(patience()).is_some_and(|s| s.success()), "{}", cloud.log());
    api.shutdown().await;
}
