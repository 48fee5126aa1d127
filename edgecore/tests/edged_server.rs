//! Edged's kubelet server (`/containerLogs`, `/exec`, `/attach`, `/portForward`, `/stats`,
//! `/metrics/*`, `/healthz`) against a real, private containerd: pods started through
//! [`PodRuntime`], the server in the test's runtime on a port of its own, plain HTTP/1.1 and
//! WebSocket clients.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use edgecore::edged::pods::{PodRuntime, container_config, sandbox_config};
use edgecore::edged::probes::{ProbeMetrics, Prober};
use edgecore::edged::server;
use edgecore::edged::volumes::ObjectSource;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Pod;
use kubeedge_cri::Cri;
use kubeedge_cri::v1::ContainerState;
use kubeedge_testkit::containerd::{self, PrivateContainerd};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;

const HOST_IP: &str = "192.0.2.10";

/// No configmaps or secrets: the pods here need none.
struct NoObjects;

impl ObjectSource for NoObjects {
    fn object<'a>(&'a self, _: &'a str, _: &'a str, _: &'a str) -> futures::future::BoxFuture<'a, Option<Value>> {
        Box::pin(async { None })
    }
    fn token<'a>(&'a self, _: &'a str, _: &'a str, _: Value) -> futures::future::BoxFuture<'a, Option<String>> {
        Box::pin(async { None })
    }
}

/// A host-network pod `name` with containers `(name, shell script)`.
fn pod(name: &str, image: &str, containers: &[(&str, &str)]) -> Pod {
    let containers: Vec<Value> = containers
        .iter()
        .map(|(c, script)| json!({"name": c, "image": image, "command": ["sh", "-c"], "args": [script]}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {"hostNetwork": true, "restartPolicy": "Never", "containers": containers}
    }))
    .unwrap()
}

/// A test's surroundings: the pod runtime and the server's address.
struct Env {
    rt: PodRuntime,
    addr: SocketAddr,
    http: Client<HttpConnector, Empty<Bytes>>,
    /// Where the server reads probe counts.
    probes: ProbeMetrics,
    /// The server's shutdown token.
    stop: CancellationToken,
}

impl Env {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A GET whose response head has arrived.
    async fn open(&self, path: &str) -> hyper::Response<Incoming> {
        let fut = self.http.get(self.url(path).parse().unwrap());
        tokio::time::timeout(Duration::from_secs(20), fut).await.expect("response head in time").expect("GET")
    }

    /// A GET read to its end: status and body.
    async fn get(&self, path: &str) -> (u16, String) {
        let resp = self.open(path).await;
        let status = resp.status().as_u16();
        let body = tokio::time::timeout(Duration::from_secs(20), resp.into_body().collect())
            .await
            .unwrap_or_else(|_| panic!("{path}: body did not end"))
            .unwrap()
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// Polls `path` until its body satisfies `want`.
    async fn get_until(&self, path: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + kubeedge_testkit::patience();
        loop {
            let (status, body) = self.get(path).await;
            if status == 200 && want(&body) {
                return body;
            }
            assert!(Instant::now() < deadline, "gave up on {path}: {status} {body:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Runs `body` with a private containerd, a pod runtime on it and the server on 127.0.0.1:0;
/// checks the server stops at the end. Skips loudly without root.
fn with_server(test: &str, body: impl AsyncFnOnce(&PrivateContainerd, &Env)) {
    if let Some(why) = containerd::unavailable() {
        eprintln!("SKIPPED {test}: {why}");
        return;
    }
    let ctrd = PrivateContainerd::start().unwrap_or_else(|e| panic!("private containerd: {e}"));
    let tokio_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    tokio_rt.block_on(async {
        let cri = Cri::connect(ctrd.socket()).await.unwrap();
        let rt = PodRuntime { cri: cri.clone(), log_root: ctrd.pod_log_root(), pods_root: ctrd.dir().join("pods") };
        let stop = CancellationToken::new();
        let probes = ProbeMetrics::default();
        let (addr, task) =
            server::serve(cri, "edge-stats".into(), probes.clone(), "127.0.0.1:0".parse().unwrap(), stop.clone())
                .await
                .unwrap();
        let http = Client::builder(TokioExecutor::new()).build_http();
        let env = Env { rt, addr, http, probes, stop: stop.clone() };
        assert_eq!(env.get("/healthz").await, (200, "ok".into()));
        body(&ctrd, &env).await;
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(15), task).await.expect("server stops at shutdown").unwrap();
    });
}

/// Waits until the pod's container `name` has exited.
async fn wait_exited(rt: &PodRuntime, uid: &str, name: &str) {
    let deadline = Instant::now() + kubeedge_testkit::patience();
    loop {
        let sb = rt.sandboxes_of(uid).await.unwrap().into_iter().next().expect("sandbox");
        let filter = kubeedge_cri::v1::ContainerFilter { pod_sandbox_id: sb.id, ..Default::default() };
        let exited = rt.cri.list_containers(Some(filter)).await.unwrap().iter().any(|c| {
            c.metadata.as_ref().is_some_and(|m| m.name == name)
                && ContainerState::try_from(c.state) == Ok(ContainerState::ContainerExited)
        });
        if exited {
            return;
        }
        assert!(Instant::now() < deadline, "{name} did not exit");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads the next data frame of a streaming body.
async fn next_data(body: &mut Incoming) -> Option<String> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(20), body.frame()).await.expect("a frame in time")?;
        if let Ok(data) = frame.expect("body frame").into_data() {
            return Some(String::from_utf8_lossy(&data).into_owned());
        }
    }
}

/// How many of this process's open files have a path ending in `suffix`.
fn open_files_ending_with(suffix: &str) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return 0 };
    dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .count()
}

/// Reads a streaming body to its end.
async fn drain(mut body: Incoming) {
    while let Some(Ok(_)) = body.frame().await {}
}

/// Parses the `N` of each `tick N` line.
fn ticks(text: &str) -> Vec<u64> {
    text.lines().filter_map(|l| l.strip_prefix("tick ")).map(|n| n.trim().parse().unwrap()).collect()
}

#[test]
fn container_logs_serve_tail_timestamps_follow_and_previous() {
    with_server("kubelet server logs test", async |ctrd, env| {
        let img = ctrd.busybox_image();
        // Pauses keep the stdout/stderr order in the file deterministic (separate pipes).
        let p = pod(
            "logs",
            img,
            &[
                ("main", "echo one; sleep 0.3; echo two >&2; sleep 0.3; echo three; sleep 3600"),
                ("ticker", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.3; done"),
            ],
        );
        env.rt.start(&p, &NoObjects, HOST_IP).await.unwrap_or_else(|e| panic!("{e:#}\n{}", ctrd.log()));

        // All of it, stdout and stderr interleaved in file order.
        let all = env.get_until("/containerLogs/default/logs/main", |b| b.contains("three")).await;
        assert_eq!(all, "one\ntwo\nthree\n");
        assert_eq!(env.get("/containerLogs/default/logs/main?tailLines=1").await, (200, "three\n".into()));
        assert_eq!(env.get("/containerLogs/default/logs/main?tail=2").await, (200, "two\nthree\n".into()));
        assert_eq!(env.get("/containerLogs/default/logs/main?limitBytes=5").await, (200, "one\nt".into()));
        assert_eq!(env.get("/containerLogs/default/logs/main?sinceSeconds=3600").await, (200, all.clone()));
        let (status, stamped) = env.get("/containerLogs/default/logs/main?timestamps=true").await;
        assert_eq!(status, 200);
        let lines: Vec<&str> = stamped.lines().collect();
        assert_eq!(lines.len(), 3, "{stamped}");
        for (line, want) in lines.iter().zip(["one", "two", "three"]) {
            let (ts, text) = line.split_once(' ').unwrap_or_else(|| panic!("no timestamp: {line}"));
            assert_eq!(text, want);
            // RFC 3339 with nine fraction digits, as kubelet prints it.
            let b = ts.as_bytes();
            assert!(ts.len() >= 30 && b[4] == b'-' && b[10] == b'T' && b[19] == b'.', "{ts}");
            assert!(b[20..29].iter().all(u8::is_ascii_digit), "{ts}");
        }

        // Follow: new lines stream as they are written; the client leaves after two more.
        env.get_until("/containerLogs/default/logs/ticker", |b| b.contains("tick 1\n")).await;
        let resp = env.open("/containerLogs/default/logs/ticker?follow=true&tailLines=1").await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/plain");
        assert_eq!(resp.headers()["transfer-encoding"], "chunked");
        let mut body = resp.into_body();
        let mut seen = String::new();
        while ticks(&seen).len() < 3 {
            seen.push_str(&next_data(&mut body).await.expect("the stream goes on"));
        }
        let got = ticks(&seen);
        assert!(got.windows(2).all(|w| w[1] == w[0] + 1), "consecutive ticks: {seen:?}");
        assert_eq!(open_files_ending_with("/ticker/0.log"), 1, "the server follows the file");
        drop(body);
        // The server notices the client left and closes the file it was following.
        let deadline = Instant::now() + Duration::from_secs(10);
        while open_files_ending_with("/ticker/0.log") > 0 {
            assert!(Instant::now() < deadline, "the followed log is still open after the client left");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // Rotation as kubelet's log manager does it (rename, then CRI ReopenContainerLog), then
        // truncation in place: a follower goes on with the new lines.
        let running = env.rt.running_containers("uid-logs").await.unwrap();
        let ticker = running.into_iter().find(|(n, _)| n == "ticker").unwrap().1;
        let log_path = env.rt.cri.container_status(&ticker).await.unwrap().log_path;
        let mut body = env.open("/containerLogs/default/logs/ticker?follow=true&tailLines=0").await.into_body();
        let mut seen = next_data(&mut body).await.unwrap();
        std::fs::rename(&log_path, format!("{log_path}.1")).unwrap();
        let reopen = kubeedge_cri::v1::ReopenContainerLogRequest { container_id: ticker.clone() };
        env.rt.cri.runtime.clone().reopen_container_log(reopen).await.unwrap();
        assert!(std::path::Path::new(&log_path).exists(), "the runtime made a new file");
        let before = ticks(&seen).len();
        while ticks(&seen).len() < before + 4 {
            seen.push_str(&next_data(&mut body).await.expect("the stream goes on after rotation"));
        }
        let got = ticks(&seen);
        assert!(got.windows(2).all(|w| w[1] == w[0] + 1), "no tick lost or repeated across the rotation: {seen:?}");
        let last = *got.last().unwrap();
        std::fs::OpenOptions::new().write(true).open(&log_path).unwrap().set_len(0).unwrap();
        let mut after = String::new();
        while ticks(&after).len() < 3 {
            after.push_str(&next_data(&mut body).await.expect("the stream goes on after truncation"));
        }
        let got = ticks(&after);
        assert!(got[0] > last && got.windows(2).all(|w| w[1] == w[0] + 1), "after {last}: {after:?}");
        drop(body);

        // Unknown pods and containers, bad queries.
        let (status, text) = env.get("/containerLogs/default/nope/main").await;
        assert_eq!((status, text.as_str()), (404, "pod \"nope\" does not exist"));
        let (status, text) = env.get("/containerLogs/default/logs/nope").await;
        assert_eq!((status, text.as_str()), (404, "container \"nope\" not found in pod \"logs\""));
        assert_eq!(env.get("/containerLogs/other/logs/main").await.0, 404, "namespaces count");
        assert_eq!(env.get("/containerLogs/default/logs/main?tailLines=abc").await.0, 400);
        assert_eq!(env.get("/containerLogs/default/logs/main?sinceTime=yesterday").await.0, 400);
        assert_eq!(env.get("/containerLogs/default/logs/main?tailLines=-1").await.0, 422);
        assert_eq!(env.get("/containerLogs/default/logs/main?limitBytes=0").await.0, 422);
        assert_eq!(env.get("/nothing/here").await.0, 404);

        // previous: none yet → 400 as kubelet says it.
        let q = pod("prev", img, &[("c", "echo first run; echo first end")]);
        env.rt.start(&q, &NoObjects, HOST_IP).await.unwrap();
        let (status, text) = env.get("/containerLogs/default/prev/c?previous=true").await;
        assert_eq!((status, text.as_str()), (400, "previous terminated container \"c\" in pod \"prev\" not found"));
        wait_exited(&env.rt, "uid-prev", "c").await;
        // Following an exited container drains its log and ends.
        assert_eq!(env.get("/containerLogs/default/prev/c?follow=true").await, (200, "first run\nfirst end\n".into()));

        // The second run (attempt 1), as a restart creates it.
        let sandbox = env.rt.sandboxes_of("uid-prev").await.unwrap().remove(0);
        let mut spec = q.spec.as_ref().unwrap().containers[0].clone();
        spec.args = Some(vec!["echo second run; sleep 3600".into()]);
        let cfg = container_config(&q, &spec, 1).unwrap();
        let sandbox_cfg = sandbox_config(&ctrd.pod_log_root(), &q).unwrap();
        let id = env.rt.cri.create_container(&sandbox.id, cfg, &sandbox_cfg).await.unwrap();
        env.rt.cri.start_container(&id).await.unwrap();
        env.get_until("/containerLogs/default/prev/c", |b| b == "second run\n").await;
        assert_eq!(
            env.get("/containerLogs/default/prev/c?previous=true").await,
            (200, "first run\nfirst end\n".into())
        );
        assert_eq!(env.get("/containerLogs/default/prev/c?previous=1&tailLines=1").await, (200, "first end\n".into()));

        // A followed log ends once its container is gone…
        let follow_to_end = async |path: &str| {
            let mut body = env.open(path).await.into_body();
            assert!(next_data(&mut body).await.is_some());
            body
        };
        let drained = tokio::spawn(drain(follow_to_end("/containerLogs/default/prev/c?follow=true").await));
        env.rt.kill("uid-prev", Duration::from_secs(1)).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), drained).await.expect("stream ends with its container").unwrap();
        // …and at shutdown (with_server then checks that the server task ends).
        let drained =
            tokio::spawn(drain(follow_to_end("/containerLogs/default/logs/ticker?follow=true&tailLines=0").await));
        env.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), drained).await.expect("stream ends at shutdown").unwrap();
        env.rt.kill("uid-logs", Duration::from_secs(1)).await.unwrap();
    });
}

/// Frames of a v4 channel session, by channel: 1 stdout, 2 stderr, 3 the status JSON.
async fn websocket_exec(addr: SocketAddr, path: &str) -> Result<[Vec<u8>; 4], String> {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", "v4.channel.k8s.io".parse().unwrap());
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async(req, tcp).await.map_err(|e| format!("handshake: {e}"))?;
    assert_eq!(resp.headers()["sec-websocket-protocol"], "v4.channel.k8s.io");
    let mut channels: [Vec<u8>; 4] = Default::default();
    let session = async {
        while let Some(msg) = ws.next().await {
            let data = match msg {
                Ok(Message::Binary(b)) => b.to_vec(),
                Ok(Message::Text(t)) => t.as_bytes().to_vec(),
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            if let Some((&ch, rest)) = data.split_first()
                && let Some(buf) = channels.get_mut(usize::from(ch))
            {
                buf.extend_from_slice(rest);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), session).await.map_err(|_| "session did not end".to_owned())?;
    let _ = ws.close(None).await;
    Ok(channels)
}

#[test]
fn exec_is_proxied_to_the_runtimes_streaming_server() {
    with_server("kubelet server exec test", async |ctrd, env| {
        let p = pod("shell", ctrd.busybox_image(), &[("main", "sleep 3600")]);
        env.rt.start(&p, &NoObjects, HOST_IP).await.unwrap_or_else(|e| panic!("{e:#}\n{}", ctrd.log()));
        let deadline = Instant::now() + kubeedge_testkit::patience();
        while env.rt.running_containers("uid-shell").await.unwrap().is_empty() {
            assert!(Instant::now() < deadline, "container never ran");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // WebSocket, v4 channels: "hello\n" on stdout, Success on the status channel.
        let [_, stdout, stderr, status] =
            websocket_exec(env.addr, "/exec/default/shell/main?command=echo&command=hello&output=1&error=1")
                .await
                .unwrap();
        assert_eq!(String::from_utf8_lossy(&stdout), "hello\n");
        assert!(stderr.is_empty(), "{}", String::from_utf8_lossy(&stderr));
        let status: Value = serde_json::from_slice(&status).unwrap_or_else(|e| panic!("status JSON: {e}"));
        assert_eq!(status, json!({"metadata": {}, "status": "Success"}));

        // A failing command: its stderr on channel 2, the exit code in a Failure status.
        let [_, _, stderr, status] = websocket_exec(
            env.addr,
            "/exec/default/shell/main?command=sh&command=-c&command=echo%20oops%20%3E%262%3B%20exit%203&stdout=1&stderr=1",
        )
        .await
        .unwrap();
        assert_eq!(String::from_utf8_lossy(&stderr), "oops\n");
        let status: Value = serde_json::from_slice(&status).unwrap();
        assert_eq!(status["status"], "Failure", "{status}");
        assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
        assert_eq!(status["details"]["causes"][0]["message"], "3", "{status}");

        // stdin flows the other way: channel 0 in, the line echoed back on stdout.
        let mut req = format!("ws://{}/exec/default/shell/main?command=head&command=-n1&input=1&output=1", env.addr)
            .into_client_request()
            .unwrap();
        req.headers_mut().insert("Sec-WebSocket-Protocol", "v4.channel.k8s.io".parse().unwrap());
        let tcp = tokio::net::TcpStream::connect(env.addr).await.unwrap();
        let (mut ws, _) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
        ws.send(Message::Binary(Bytes::from_static(b"\x00ping\n"))).await.unwrap();
        let mut out = Vec::new();
        let session = async {
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Binary(b) = msg
                    && b.first() == Some(&1)
                {
                    out.extend_from_slice(&b[1..]);
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), session).await.expect("the stdin session ends");
        assert_eq!(String::from_utf8_lossy(&out), "ping\n");

        // SPDY: the upgrade is forwarded and the runtime's 101 relayed (no SPDY client here, so
        // the session itself is not driven).
        let mut tcp = tokio::net::TcpStream::connect(env.addr).await.unwrap();
        let req = format!(
            "POST /exec/default/shell/main?command=true&output=1 HTTP/1.1\r\nHost: {}\r\n\
             Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\
             Content-Length: 0\r\n\r\n",
            env.addr
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(20), tcp.read(&mut buf)).await.unwrap().unwrap();
            assert!(n > 0, "closed before the response head: {}", String::from_utf8_lossy(&head));
            head.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(head.contains("upgrade: spdy/3.1"), "{head}");
        assert!(head.contains("x-stream-protocol-version: v4.channel.k8s.io"), "{head}");
        drop(tcp);

        // Errors: no upgrade, unknown pod or container, no streams, no command.
        let (status, text) = env.get("/exec/default/shell/main?command=true&output=1").await;
        assert_eq!((status, text.as_str()), (400, "Upgrade request required"));
        for (path, code) in [
            ("/exec/default/nope/main?command=true&output=1", 404),
            ("/exec/default/shell/nope?command=true&output=1", 404),
            ("/exec/default/shell/uid-other/main?command=true&output=1", 404),
            ("/exec/default/shell/main?command=true", 400),
            ("/exec/default/shell/main?output=1", 400),
        ] {
            let mut req = format!("ws://{}{path}", env.addr).into_client_request().unwrap();
            req.headers_mut().insert("Sec-WebSocket-Protocol", "v4.channel.k8s.io".parse().unwrap());
            let tcp = tokio::net::TcpStream::connect(env.addr).await.unwrap();
            match tokio_tungstenite::client_async(req, tcp).await {
                Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                    assert_eq!(resp.status().as_u16(), code, "{path}")
                }
                other => panic!("{path}: {:?}", other.map(|(_, r)| r.status())),
            }
        }
        // The 4-segment form with the right uid works.
        let [_, stdout, ..] =
            websocket_exec(env.addr, "/exec/default/shell/uid-shell/main?command=echo&command=hi&output=1")
                .await
                .unwrap();
        assert_eq!(String::from_utf8_lossy(&stdout), "hi\n");

        env.rt.kill("uid-shell", Duration::from_secs(1)).await.unwrap();
    });
}

#[test]
fn stats_summary_and_resource_metrics_come_from_cri_stats() {
    with_server("kubelet server stats test", async |ctrd, env| {
        let p = pod("stats", ctrd.busybox_image(), &[("main", "sleep 3600"), ("side", "sleep 3600")]);
        env.rt.start(&p, &NoObjects, HOST_IP).await.unwrap_or_else(|e| panic!("{e:#}\n{}", ctrd.log()));
        let deadline = Instant::now() + kubeedge_testkit::patience();
        while env.rt.running_containers("uid-stats").await.unwrap().len() < 2 {
            assert!(Instant::now() < deadline, "containers never ran");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let (code, body) = env.get("/stats/summary").await;
        assert_eq!(code, 200, "{body}");
        let summary: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(summary["node"]["nodeName"], "edge-stats");
        assert!(summary["node"]["cpu"]["usageCoreNanoSeconds"].as_u64().is_some_and(|n| n > 0), "{summary}");
        assert!(summary["node"]["memory"]["workingSetBytes"].as_u64().is_some_and(|n| n > 0), "{summary}");
        let pods = summary["pods"].as_array().unwrap();
        let ours = pods.iter().find(|p| p["podRef"]["name"] == "stats").unwrap_or_else(|| panic!("{summary}"));
        assert_eq!(ours["podRef"], json!({"name": "stats", "namespace": "default", "uid": "uid-stats"}));
        let names: Vec<&str> =
            ours["containers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["main", "side"]);
        for c in ours["containers"].as_array().unwrap() {
            assert!(c["cpu"]["usageCoreNanoSeconds"].is_u64(), "{c}");
            assert!(c["memory"]["workingSetBytes"].is_u64(), "{c}");
            assert!(c["startTime"].as_str().is_some_and(|t| t.ends_with('Z')), "{c}");
        }
        let sum = |k: &str, f: &str| -> u64 {
            ours["containers"].as_array().unwrap().iter().map(|c| c[k][f].as_u64().unwrap()).sum()
        };
        assert_eq!(ours["memory"]["workingSetBytes"].as_u64(), Some(sum("memory", "workingSetBytes")));
        // A summary a second later has a previous node sample: a CPU rate, at most all cores.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (_, body) = env.get("/stats/summary").await;
        let again: Value = serde_json::from_str(&body).unwrap();
        let cores = std::thread::available_parallelism().map_or(64, |n| n.get() as u64);
        let rate = again["node"]["cpu"]["usageNanoCores"].as_u64().unwrap_or_else(|| panic!("{again}"));
        assert!(rate <= cores * 1_000_000_000 * 11 / 10, "{rate} nanocores on {cores} cores");

        let (code, text) = env.get("/metrics/resource").await;
        assert_eq!(code, 200, "{text}");
        for want in [
            "# TYPE container_cpu_usage_seconds_total counter",
            "container_cpu_usage_seconds_total{container=\"main\",namespace=\"default\",pod=\"stats\"} ",
            "container_memory_working_set_bytes{container=\"side\",namespace=\"default\",pod=\"stats\"} ",
            "container_start_time_seconds{container=\"main\",namespace=\"default\",pod=\"stats\"} ",
            "pod_cpu_usage_seconds_total{namespace=\"default\",pod=\"stats\"} ",
            "node_cpu_usage_seconds_total ",
            "node_memory_working_set_bytes ",
            "resource_scrape_error 0",
        ] {
            assert!(text.contains(want), "no {want:?} in:\n{text}");
        }
        // Each sample line: name{labels} value timestamp, all numbers.
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.starts_with("resource_scrape_error")) {
            let mut f = line.rsplitn(3, ' ');
            let (ts, v) = (f.next().unwrap(), f.next().unwrap());
            assert!(ts.parse::<u64>().is_ok() && v.parse::<f64>().is_ok(), "{line}");
        }
        let (code, _) = env.get("/stats/nope").await;
        assert_eq!(code, 404);
        env.rt.kill("uid-stats", Duration::from_secs(1)).await.ok();
    });
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Opens a WebSocket with the `v4.channel.k8s.io` protocol at `path`; the refusal's status
/// code when the server answers without upgrading.
async fn ws_open(addr: SocketAddr, path: &str) -> Result<Ws, u16> {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", "v4.channel.k8s.io".parse().unwrap());
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(20), tokio_tungstenite::client_async(req, tcp)).await {
        Ok(Ok((ws, resp))) => {
            assert_eq!(resp.headers()["sec-websocket-protocol"], "v4.channel.k8s.io");
            Ok(ws)
        }
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => Err(resp.status().as_u16()),
        Ok(Err(e)) => panic!("{path}: {e}"),
        Err(_) => panic!("{path}: no handshake answer"),
    }
}

/// Reads binary frames until channel `ch` holds something `want` accepts (or the session
/// ends, or 20 s pass); returns what the channel got.
async fn ws_read_until(ws: &mut Ws, ch: u8, want: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut got = Vec::new();
    let read = async {
        while let Some(Ok(msg)) = ws.next().await {
            if let Message::Binary(b) = msg
                && b.first() == Some(&ch)
            {
                got.extend_from_slice(&b[1..]);
                if want(&got) {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(20), read).await;
    got
}

/// Sends an upgrade request with `Upgrade: SPDY/3.1` and `protocol`; returns the response head
/// in lower case.
async fn spdy_upgrade(addr: SocketAddr, path: &str, protocol: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
         X-Stream-Protocol-Version: {protocol}\r\nContent-Length: 0\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(20), tcp.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed before the response head: {}", String::from_utf8_lossy(&head));
        head.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&head).to_ascii_lowercase()
}

/// Waits until the pod `uid` has `n` running containers.
async fn wait_running(rt: &PodRuntime, uid: &str, n: usize) -> Vec<(String, String)> {
    let deadline = Instant::now() + kubeedge_testkit::patience();
    loop {
        let running = rt.running_containers(uid).await.unwrap();
        if running.len() >= n {
            return running;
        }
        assert!(Instant::now() < deadline, "{uid}: containers never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn attach_reaches_the_containers_main_process() {
    with_server("kubelet server attach test", async |ctrd, env| {
        // `cat` with its stdin kept open by the runtime (the spec's `stdin`): it echoes what an
        // attached client types.
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "echo", "namespace": "default", "uid": "uid-echo"},
            "spec": {"hostNetwork": true, "restartPolicy": "Never", "containers": [
                {"name": "cat", "image": ctrd.busybox_image(), "command": ["cat"], "stdin": true}]}
        }))
        .unwrap();
        env.rt.start(&p, &NoObjects, HOST_IP).await.unwrap_or_else(|e| panic!("{e:#}\n{}", ctrd.log()));
        wait_running(&env.rt, "uid-echo", 1).await;

        // WebSocket, v4 channels: channel 0 in, the echo on channel 1.
        let mut ws = ws_open(env.addr, "/attach/default/echo/cat?input=1&output=1&error=1").await.unwrap();
        ws.send(Message::Binary(Bytes::from_static(b"\x00hello attach\n"))).await.unwrap();
        let out = ws_read_until(&mut ws, 1, |b| b.ends_with(b"hello attach\n")).await;
        assert_eq!(String::from_utf8_lossy(&out), "hello attach\n");
        let _ = ws.close(None).await;
        drop(ws);

        // The same process for the next client (the uid form of the path): detaching left it
        // running.
        let mut ws = ws_open(env.addr, "/attach/default/echo/uid-echo/cat?stdin=1&stdout=1").await.unwrap();
        ws.send(Message::Binary(Bytes::from_static(b"\x00again\n"))).await.unwrap();
        let out = ws_read_until(&mut ws, 1, |b| b.ends_with(b"again\n")).await;
        assert_eq!(String::from_utf8_lossy(&out), "again\n");
        drop(ws);
        assert_eq!(wait_running(&env.rt, "uid-echo", 1).await.len(), 1, "still running after detach");

        // SPDY: the runtime's 101 is relayed.
        let head = spdy_upgrade(env.addr, "/attach/default/echo/cat?output=1", "v4.channel.k8s.io").await;
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(head.contains("x-stream-protocol-version: v4.channel.k8s.io"), "{head}");

        // Errors: no upgrade, no streams, unknown pod, container or uid.
        let (status, text) = env.get("/attach/default/echo/cat?output=1").await;
        assert_eq!((status, text.as_str()), (400, "Upgrade request required"));
        for (path, code) in [
            ("/attach/default/echo/cat", 400),
            ("/attach/default/nope/cat?output=1", 404),
            ("/attach/default/echo/nope?output=1", 404),
            ("/attach/default/echo/uid-other/cat?output=1", 404),
        ] {
            assert_eq!(ws_open(env.addr, path).await.err(), Some(code), "{path}");
        }
        env.rt.kill("uid-echo", Duration::from_secs(1)).await.unwrap();
    });
}

/// One WebSocket port forward of an HTTP/1.0 GET to `port`: the port announced on both of its
/// channels, then the response on the data channel until the pod's side closes.
async fn ws_forward_get(addr: SocketAddr, path: &str, port: u16) -> String {
    let mut ws = ws_open(addr, path).await.unwrap_or_else(|code| panic!("{path}: {code}"));
    // The streaming server opens each channel with its port, little-endian.
    let (mut data, mut error) = (Vec::new(), Vec::new());
    while data.len() < 2 || error.len() < 2 {
        let msg =
            tokio::time::timeout(Duration::from_secs(20), ws.next()).await.expect("port frames").unwrap().unwrap();
        if let Message::Binary(b) = msg {
            match b.first() {
                Some(0) => data.extend_from_slice(&b[1..]),
                Some(1) => error.extend_from_slice(&b[1..]),
                other => panic!("channel {other:?}"),
            }
        }
    }
    assert_eq!((&data[..2], &error[..2]), (&port.to_le_bytes()[..], &port.to_le_bytes()[..]));
    ws.send(Message::Binary(Bytes::from_static(b"\x00GET /index.html HTTP/1.0\r\n\r\n"))).await.unwrap();
    let mut got = data[2..].to_vec();
    got.extend(ws_read_until(&mut ws, 0, |_| false).await);
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn port_forward_carries_http_to_a_pods_port() {
    with_server("kubelet server port-forward test", async |ctrd, env| {
        // On the bridge network: port 8080 is the pod's own, not the host's.
        let script = "mkdir -p /www && echo hello from the pod > /www/index.html && exec httpd -f -p 8080 -h /www";
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "uid-web"},
            "spec": {"restartPolicy": "Never", "containers": [
                {"name": "httpd", "image": ctrd.busybox_image(), "command": ["sh", "-c", script]}]}
        }))
        .unwrap();
        env.rt.start(&p, &NoObjects, HOST_IP).await.unwrap_or_else(|e| panic!("{e:#}\n{}", ctrd.log()));
        wait_running(&env.rt, "uid-web", 1).await;

        // httpd may not listen yet: forward until it answers.
        let deadline = Instant::now() + kubeedge_testkit::patience();
        let answer = loop {
            let answer = ws_forward_get(env.addr, "/portForward/default/web?port=8080", 8080).await;
            if answer.contains("hello from the pod") || Instant::now() > deadline {
                break answer;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert!(answer.starts_with("HTTP/1.") && answer.contains(" 200 "), "{answer}");
        assert!(answer.ends_with("\r\n\r\nhello from the pod\n"), "{answer}");
        let answer = ws_forward_get(env.addr, "/portForward/default/web/uid-web?port=8080", 8080).await;
        assert!(answer.ends_with("hello from the pod\n"), "the uid form: {answer}");

        // SPDY (what kubectl speaks to a kubelet): the runtime's 101 is relayed.
        let head = spdy_upgrade(env.addr, "/portForward/default/web", "portforward.k8s.io").await;
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(head.contains("x-stream-protocol-version: portforward.k8s.io"), "{head}");

        // Errors: unknown pod or uid, no upgrade, WebSocket ports missing or bad.
        for (path, code) in [
            ("/portForward/default/nope?port=8080", 404),
            ("/portForward/other/web?port=8080", 404),
            ("/portForward/default/web/uid-other?port=8080", 404),
            ("/portForward/default/web", 400),
            ("/portForward/default/web?port=0", 400),
            ("/portForward/default/web?port=http", 400),
        ] {
            assert_eq!(ws_open(env.addr, path).await.err(), Some(code), "{path}");
        }
        let (status, text) = env.get("/portForward/default/web").await;
        assert_eq!((status, text.as_str()), (400, "Upgrade request required"));
        let (status, text) = env.get("/portForward/default/nope").await;
        assert_eq!((status, text.as_str()), (404, "pod \"nope\" does not exist"));
        env.rt.kill("uid-web", Duration::from_secs(1)).await.unwrap();
    });
}

/// The value of the `prober_probe_total` series with these label values, if present.
fn probe_total(text: &str, container: &str, pod: &str, kind: &str, result: &str) -> Option<u64> {
    let series = format!(
        "prober_probe_total{{container=\"{container}\",namespace=\"default\",pod=\"{pod}\",pod_uid=\"uid-{pod}\",\
         probe_type=\"{kind}\",result=\"{result}\"}} "
    );
    text.lines().find_map(|l| l.strip_prefix(series.as_str())).map(|v| v.parse().unwrap())
}

#[test]
fn probe_counts_are_served_while_the_pods_prober_lives() {
    with_server("kubelet server probe metrics test", async |ctrd, env| {
        assert_eq!(env.get("/metrics/probes").await, (200, String::new()), "no probe has run");
        // `main`: an exec readiness probe and a TCP liveness probe (to a port this test
        // listens on) that pass; `side`: an exec readiness probe that fails.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "probed", "namespace": "default", "uid": "uid-probed"},
            "spec": {"hostNetwork": true, "restartPolicy": "Never", "containers": [{
                "name": "main", "image": ctrd.busybox_image(), "command": ["sleep", "3600"],
                "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 2},
                "livenessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 2}
            }, {
                "name": "side", "image": ctrd.busybox_image(), "command": ["sleep", "3600"],
                "readinessProbe": {"exec": {"command": ["false"]}, "periodSeconds": 2}
            }]}
        }))
        .unwrap();
        env.rt.start(&p, &NoObjects, HOST_IP).await.unwrap_or_else(|e| panic!("{e:#}\n{}", ctrd.log()));
        let running = wait_running(&env.rt, "uid-probed", 2).await;
        let id = |name: &str| running.iter().find(|(n, _)| n == name).unwrap().1.clone();
        let (main, side) = (id("main"), id("side"));

        // The prober a pod's worker owns, registered where the server reads.
        let mut prober = Prober::new(env.probes.clone());
        let check_all = async |prober: &mut Prober| {
            let v = prober.check(&env.rt.cri, &p, "main", &main, "127.0.0.1").await;
            assert!(v.ready && !v.kill, "{v:?}");
            let v = prober.check(&env.rt.cri, &p, "side", &side, "127.0.0.1").await;
            assert!(!v.ready && !v.kill, "{v:?}");
        };
        check_all(&mut prober).await;
        let (code, text) = env.get("/metrics/probes").await;
        assert_eq!(code, 200);
        assert!(
            text.starts_with(
                "# HELP prober_probe_total [ALPHA] Cumulative number of a liveness, readiness or startup probe \
                 for a container by result.\n# TYPE prober_probe_total counter\n"
            ),
            "{text}"
        );
        let totals = |text: &str| {
            [
                probe_total(text, "main", "probed", "Readiness", "successful"),
                probe_total(text, "main", "probed", "Liveness", "successful"),
                probe_total(text, "side", "probed", "Readiness", "failed"),
            ]
        };
        assert_eq!(totals(&text), [Some(1); 3], "{text}");
        assert_eq!(text.lines().count(), 5, "nothing else counted: {text}");

        // A period later the probes run again and the counters go up. (2 s periods: the checks
        // themselves, exec probes in containerd, take a good part of a second on a busy host.)
        tokio::time::sleep(Duration::from_millis(2100)).await;
        check_all(&mut prober).await;
        let (_, text) = env.get("/metrics/probes").await;
        assert_eq!(totals(&text), [Some(2); 3], "{text}");
        // Within the period nothing runs, and nothing is counted.
        check_all(&mut prober).await;
        let (_, again) = env.get("/metrics/probes").await;
        assert_eq!(again, text);
        drop(listener);

        // The pod goes, its worker (and prober) with it: so do its series.
        env.rt.kill("uid-probed", Duration::from_secs(1)).await.unwrap();
        drop(prober);
        assert_eq!(env.get("/metrics/probes").await, (200, String::new()));
    });
}
