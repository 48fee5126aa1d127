//! Idle connections cannot starve health checks (issue #18): the real edgecore, with Edged (on
//! a private containerd) and MetaServer on free ports, gets its connection caps plus 100 idle
//! connections on each server — some that never send a request, some kept alive after one —
//! and still answers `/healthz` (and MetaServer `/readyz` and an API list) within
//! [`PROMPT`], because the oldest idle connections make room. A log follow on Edged and a
//! watch on MetaServer, opened before the flood, are busy and so never shed: both still deliver
//! afterwards.
//!
//! Then out of file descriptors: with edgecore's limit lowered to 64 above what it has open,
//! 200 idle connections to MetaServer make accept fail (EMFILE); the loop closes its oldest idle
//! connections to go on accepting, and `/healthz` answers well before the header timeout would
//! have freed anything.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use kubeedge_e2e::{CloudSide, until};
use kubeedge_testkit::containerd::{self, PrivateContainerd};
use kubeedge_testkit::{Process, link};
use serde_json::json;

const NODE: &str = "edge-idle";
/// How soon a health check must answer with the servers full of idle connections.
const PROMPT: Duration = Duration::from_secs(2);
/// Past the cap: these many connections more than a server serves at once.
const OVER_CAP: usize = 100;
/// Of each flood, this many send one request first and stay open (kept alive) after it.
const KEPT_ALIVE: usize = 50;
/// How soon MetaServer must answer out of file descriptors: well under the header timeout
/// (10 s), so it is shedding on EMFILE that made room (each accept failure pauses 10 ms).
const OUT_OF_FDS_PROMPT: Duration = Duration::from_secs(5);

#[test]
fn idle_connections_do_not_starve_health_checks() {
    if let Some(why) = containerd::unavailable() {
        kubeedge_testkit::skip("idle connection e2e", &why);
        return;
    }
    // The test holds about 1,500 sockets: more than the usual soft limit of 1,024.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let ctrd = PrivateContainerd::start().unwrap_or_else(|e| panic!("private containerd: {e}"));
    let dir = tempfile::tempdir().unwrap();
    let mut cloud = CloudSide::start(dir.path());
    cloud.proc.wait_for_line("Loaded what edge nodes have acknowledged.");
    let edge_bin = kubeedge_testkit::workspace_bin("edgecore");
    let (kubelet_port, meta_port) = (kubeedge_testkit::free_port(), kubeedge_testkit::free_port());
    let q = |p: &std::path::Path| format!("\"{}\"", p.display());
    let settings: Vec<(&[&str], String)> = vec![
        (&["modules", "edged", "enable"], "true".into()),
        (&["modules", "edged", "nodeIP"], "127.0.0.1".into()),
        (&["modules", "edged", "rootDirectory"], q(&dir.path().join("edge/kubelet"))),
        (
            &["modules", "edged", "tailoredKubeletConfig", "containerRuntimeEndpoint"],
            format!("\"unix://{}\"", ctrd.socket().display()),
        ),
        (&["modules", "edged", "tailoredKubeletConfig", "podLogsDir"], q(&ctrd.pod_log_root())),
        (&["modules", "edged", "tailoredKubeletConfig", "readOnlyPort"], kubelet_port.to_string()),
        (&["modules", "metaManager", "metaServer", "enable"], "true".into()),
        (&["modules", "metaManager", "metaServer", "server"], format!("\"127.0.0.1:{meta_port}\"")),
    ];
    let cfg = link::edgecore(&edge_bin, dir.path(), NODE, &cloud.token(), &cloud.link(), &settings);
    let mut edge = Process::spawn(&edge_bin, &["--config", cfg.to_str().unwrap()]).unwrap();
    edge.wait_for_line("Started.");
    let kubelet: SocketAddr = format!("127.0.0.1:{kubelet_port}").parse().unwrap();
    let meta: SocketAddr = format!("127.0.0.1:{meta_port}").parse().unwrap();

    // A pod that logs a line a second, known to MetaServer.
    let pods: Api<Pod> = Api::namespaced(cloud.client(), "default");
    let ticker: Pod = serde_json::from_value(json!({"metadata": {"name": "ticker"},
        "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 0, "containers": [{"name": "c",
            "image": ctrd.busybox_image(), "command": ["sh", "-c", "while true; do echo tick; sleep 1; done"]}]}}))
    .unwrap();
    cloud.rt.block_on(pods.create(&PostParams::default(), &ticker)).unwrap();
    until("the ticker to log", || {
        let (code, body) = kubeedge_testkit::http_get(kubelet, "/containerLogs/default/ticker/c").ok()?;
        (code == 200 && body.contains("tick")).then_some(())
    });
    until("MetaServer to have the ticker", || {
        let (code, _) = kubeedge_testkit::http_get(meta, "/api/v1/namespaces/default/pods/ticker").ok()?;
        (code == 200).then_some(())
    });

    // The long-lived requests, opened before the flood.
    let mut follow = Stream::open(kubelet, "/containerLogs/default/ticker/c?follow=true");
    let mut watch = Stream::open(meta, "/api/v1/namespaces/default/pods?watch=true");
    assert!(follow.read_until("tick", kubeedge_testkit::patience()), "the follow starts");
    assert!(watch.read_until("\"ADDED\"", kubeedge_testkit::patience()), "the watch starts");

    // The floods: each cap plus 100.
    let pid = edge.pid();
    let fds_before = open_fds(pid);
    let edged_cap = edgecore::edged::server::MAX_CONNECTIONS;
    let meta_cap = edgecore::metamanager::metaserver::DEFAULT_MAX_CONNECTIONS;
    let mut held = flood(kubelet, "/healthz", edged_cap + OVER_CAP);
    held.extend(flood(meta, "/healthz", meta_cap + OVER_CAP));
    // Taken in: the listen backlogs are empty (while they fill, a new client's SYN may be
    // dropped and retried a second later, which says nothing about the server).
    until("Edged and MetaServer to take in the floods", || {
        (accept_queue(kubelet_port) == Some(0) && accept_queue(meta_port) == Some(0)).then_some(())
    });
    eprintln!(
        "holding {} connections ({edged_cap} + {OVER_CAP} on Edged, {meta_cap} + {OVER_CAP} on MetaServer)",
        held.len()
    );

    let mut timings = Vec::new();
    for (name, addr, path) in [
        ("edged /healthz", kubelet, "/healthz"),
        ("metaserver /healthz", meta, "/healthz"),
        ("metaserver /readyz", meta, "/readyz"),
        ("metaserver list pods", meta, "/api/v1/namespaces/default/pods"),
    ] {
        let (code, took) = timed_get(addr, path);
        eprintln!("{name}: {code} in {:.3} s under the flood", took.as_secs_f64());
        timings.push((name, code, took));
    }

    // The busy streams were not shed: the follow gets new lines, the watch a change made now.
    assert!(follow.read_until("tick", Duration::from_secs(10)), "the log follow was cut by the flood");
    let label = PatchParams::default();
    let patch = json!({"metadata": {"labels": {"flood": "survived"}}});
    cloud.rt.block_on(pods.patch("ticker", &label, &Patch::Merge(&patch))).unwrap();
    assert!(watch.read_until("survived", kubeedge_testkit::patience()), "the watch was cut by the flood");
    for (name, code, took) in timings {
        assert_eq!(code, 200, "{name}");
        assert!(took < PROMPT, "{name} took {took:?} with the servers full of idle connections");
    }
    let log = edge.log();
    assert!(log.contains("Closed the oldest idle connection"), "no shedding reported in the log:\n{log}");
    drop(held);

    // Out of file descriptors.
    until("edgecore to close the flood's connections", || (open_fds(pid) <= fds_before + 10).then_some(()));
    let limit = open_fds(pid) + 64;
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={limit}:{limit}")])
        .status()
        .expect("prlimit (util-linux)");
    assert!(status.success());
    let held = flood(meta, "/healthz", 200);
    let (code, took) = timed_get(meta, "/healthz");
    eprintln!("metaserver /healthz: {code} in {:.3} s out of file descriptors", took.as_secs_f64());
    assert_eq!(code, 200);
    assert!(took < OUT_OF_FDS_PROMPT, "MetaServer took {took:?} to answer out of file descriptors");
    assert!(follow.read_until("tick", Duration::from_secs(10)), "the log follow was cut out of fds");
    drop(held);

    edge.signal("TERM");
    assert!(edge.wait_exit(kubeedge_testkit::patience()).is_some_and(|s| s.success()), "{}", edge.log());
    cloud.stop();
}

/// `n` connections to `addr`: the first [`KEPT_ALIVE`] each send a keep-alive `GET path` and
/// read the answer, the rest send nothing.
fn flood(addr: SocketAddr, path: &str, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = TcpStream::connect(addr).unwrap();
        if i < KEPT_ALIVE {
            write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
            s.set_read_timeout(Some(kubeedge_testkit::patience())).unwrap();
            let mut buf = Vec::new();
            let mut byte = [0u8; 1024];
            // One small answer with a Content-Length: its head and body arrive together.
            while !String::from_utf8_lossy(&buf).contains("\r\n\r\n") {
                let n = s.read(&mut byte).unwrap();
                assert!(n > 0, "closed before answering");
                buf.extend_from_slice(&byte[..n]);
            }
        }
        held.push(s);
    }
    held
}

/// How many connections wait to be accepted on the loopback listener of `port`
/// (`/proc/net/tcp`: a listening socket's `rx_queue` is its accept queue).
fn accept_queue(port: u16) -> Option<usize> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let local = format!(":{port:04X}");
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // sl, local_address, rem_address, st (0A: listen), tx_queue:rx_queue
        if f.len() < 5 || !f[1].ends_with(&local) || f[3] != "0A" {
            return None;
        }
        usize::from_str_radix(f[4].split_once(':')?.1, 16).ok()
    })
}

/// How many file descriptors process `pid` has open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(Iterator::count).unwrap_or(0)
}

/// A `GET path` on a new connection: its status and how long the whole answer took.
fn timed_get(addr: SocketAddr, path: &str) -> (u16, Duration) {
    let start = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    let code = buf.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, start.elapsed())
}

/// A streaming `GET` (a log follow, a watch) read as it goes.
struct Stream {
    s: TcpStream,
}

impl Stream {
    fn open(addr: SocketAddr, path: &str) -> Self {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        Self { s }
    }

    /// Reads until what arrives from now on contains `needle`, at most `within`.
    fn read_until(&mut self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut fresh = String::new();
        let mut buf = [0u8; 4096];
        while !fresh.contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.s.set_read_timeout(Some(left)).unwrap();
            match self.s.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => fresh.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => return false,
            }
        }
        true
    }
}
