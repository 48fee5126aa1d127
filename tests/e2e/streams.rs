//! CloudStream ⇄ EdgeStream with the real daemons (issue #17): apiserver-lite, cloudcore with
//! CloudStream (tunnel and stream servers on free ports, the stream server's certificate issued
//! by the hub CA, API-server clients from a separate CA), edgecore with EdgeStream, and a
//! stand-in for Edged's server on the edge side. The caller is a TLS client holding the
//! stream CA's certificate, as the API server is:
//! - `containerLogs` of a pod bound to the node streams through the tunnel; the caller going
//!   away closes the edge's request;
//! - `stats/summary` by the node's IP in `Host`, and by `X-Forwarded-Uri`;
//! - exec: the SPDY upgrade reaches Edged's server, its 101 comes back, bytes flow both ways,
//!   and the caller leaving closes the edge's connection;
//! - a pod that does not exist (404), a node with no tunnel (502), port-forward as an upgrade (and 400 without one), and a
//!   caller without a certificate (refused).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kube::Api;
use kube::api::PostParams;
use kubeedge_e2e::CloudSide;
use kubeedge_e2e::measure::rss_kb;
use kubeedge_testkit::{Process, free_port, link};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const NODE: &str = "edge-stream";
const NODE_IP: &str = "127.0.0.7";

/// A stand-in for Edged's server: a followed log (a line every 50 ms; "log closed" is reported
/// when the reader goes away) and `/stats/summary`.
async fn kubelet(events: mpsc::UnboundedSender<String>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else { return };
            let events = events.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if tcp.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let _ = events.send(head.lines().next().unwrap_or_default().to_owned());
                if !head.starts_with("GET /containerLogs/") {
                    let _ = events.send(format!("HEAD {head}"));
                }
                if head.starts_with("POST /exec/default/web/nope") {
                    // Edged's error for an unknown container, its connection kept open.
                    let _ =
                        tcp.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 19\r\n\r\ncontainer not found").await;
                    tokio::time::sleep(Duration::from_secs(60)).await;
                } else if head.starts_with("POST /exec/") || head.starts_with("POST /portForward/") {
                    // The 101 and the first output in one write.
                    let _ = tcp
                        .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\nready\n")
                        .await;
                    let mut buf = [0u8; 1024];
                    loop {
                        let n = tcp.read(&mut buf).await.unwrap_or(0);
                        if n == 0 || tcp.write_all(&buf[..n].to_ascii_uppercase()).await.is_err() {
                            let _ = events.send("exec closed".into());
                            return;
                        }
                    }
                } else if head.starts_with("GET /containerLogs/") {
                    let _ = tcp.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").await;
                    for i in 0.. {
                        let line = format!("line {i}\n");
                        if tcp.write_all(format!("{:x}\r\n{line}\r\n", line.len()).as_bytes()).await.is_err() {
                            let _ = events.send("log closed".into());
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                } else {
                    let body = format!(r#"{{"node":{{"nodeName":"{NODE}"}}}}"#);
                    let _ = tcp
                        .write_all(
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes(),
                        )
                        .await;
                }
            });
        }
    });
    port
}

/// A TLS client of the stream server (`cert` is the caller's certificate, or none).
struct Caller {
    port: u16,
    tls: Arc<rustls::ClientConfig>,
}

impl Caller {
    /// Sends `GET path` with `headers` and returns the connection after the request.
    async fn open(&self, path: &str, headers: &str) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        self.open_as(path, &format!("{NODE_IP}:10350"), headers).await
    }

    /// As [`Caller::open`], with this `Host`.
    async fn open_as(
        &self,
        path: &str,
        host: &str,
        headers: &str,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(("127.0.0.1", self.port)).await?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(self.tls.clone()).connect(name, tcp).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n");
        tls.write_all(request.as_bytes()).await?;
        Ok(tls)
    }

    /// Sends an exec upgrade request (as the API server does, SPDY) and returns the connection.
    async fn open_exec(&self, path: &str) -> tokio_rustls::client::TlsStream<TcpStream> {
        let headers = "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n";
        let tcp = TcpStream::connect(("127.0.0.1", self.port)).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(self.tls.clone()).connect(name, tcp).await.unwrap();
        let request = format!("POST {path} HTTP/1.1\r\nHost: {NODE_IP}:10350\r\n{headers}Content-Length: 0\r\n\r\n");
        tls.write_all(request.as_bytes()).await.unwrap();
        tls
    }

    /// The whole response (status line and body text).
    async fn get(&self, path: &str, headers: &str) -> (u16, String) {
        let mut tls = self.open(path, headers).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut out)).await;
        let text = String::from_utf8_lossy(&out).into_owned();
        (text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0), text)
    }
}

/// The next event of the stand-in kubelet accepted by `want` (others skipped), within 20 s.
async fn event(events: &mut mpsc::UnboundedReceiver<String>, what: &str, want: impl Fn(&str) -> bool) -> String {
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(e) = events.recv().await {
            if want(&e) {
                return Some(e);
            }
        }
        None
    })
    .await;
    found.ok().flatten().unwrap_or_else(|| panic!("no {what} within 20 s"))
}

fn pem_der(path: &Path) -> Vec<u8> {
    kubeedge_pki::parse_pem(&std::fs::read_to_string(path).unwrap()).unwrap().1
}

#[test]
fn logs_and_metrics_reach_the_edge_through_the_tunnel() {
    let dir = tempfile::tempdir().unwrap();
    // The API server's client CA (tlsStreamCAFile) and its client certificate.
    let api_ca = kubeedge_pki::Ca::generate().unwrap();
    let (csr, api_key) = kubeedge_pki::edge_csr("apiserver").unwrap();
    let api_cert = api_ca.issue_node_client(&csr, "apiserver", Duration::from_secs(3600)).unwrap();
    std::fs::write(dir.path().join("streamCA.crt"), kubeedge_pki::pem("CERTIFICATE", api_ca.cert_der())).unwrap();
    let (tunnel_port, stream_port) = (free_port(), free_port());
    let q = |p: &Path| format!("\"{}\"", p.display());
    let mut cloud = CloudSide::start_with(
        dir.path(),
        &[
            (&["modules", "cloudStream", "enable"], "true".into()),
            (&["modules", "cloudStream", "tunnelPort"], tunnel_port.to_string()),
            (&["modules", "cloudStream", "streamPort"], stream_port.to_string()),
            (&["modules", "cloudStream", "tlsStreamCAFile"], q(&dir.path().join("streamCA.crt"))),
            (&["modules", "cloudStream", "tlsStreamCertFile"], q(&dir.path().join("absent.crt"))),
            (&["modules", "cloudStream", "tlsStreamPrivateKeyFile"], q(&dir.path().join("absent.key"))),
        ],
    );
    cloud.proc.wait_for_line("CloudStream listening.");

    let (events_tx, mut events) = mpsc::unbounded_channel();
    let kubelet_port = cloud.rt.block_on(kubelet(events_tx));
    let [ca, cert, key] = link::edge_cert_paths(dir.path());
    let edge_bin = kubeedge_testkit::workspace_bin("edgecore");
    let edge_cfg = link::edgecore(
        &edge_bin,
        dir.path(),
        NODE,
        &cloud.token(),
        &cloud.link(),
        &[
            (&["modules", "edged", "nodeIP"], NODE_IP.into()),
            (&["modules", "edged", "tailoredKubeletConfig", "address"], "127.0.0.1".into()),
            (&["modules", "edged", "tailoredKubeletConfig", "readOnlyPort"], kubelet_port.to_string()),
            (&["modules", "edgeStream", "enable"], "true".into()),
            (&["modules", "edgeStream", "server"], format!("127.0.0.1:{tunnel_port}")),
            (&["modules", "edgeStream", "tlsTunnelCAFile"], q(&ca)),
            (&["modules", "edgeStream", "tlsTunnelCertFile"], q(&cert)),
            (&["modules", "edgeStream", "tlsTunnelPrivateKeyFile"], q(&key)),
        ],
    );
    let mut edge = Process::spawn(&edge_bin, &["--config", edge_cfg.to_str().unwrap()]).unwrap();
    edge.wait_for_line("Tunnel to CloudStream connected.");
    cloud.proc.wait_for_line("Tunnel session started.");

    // Pods: one on our node, one on a node with no tunnel.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(cloud.client(), "default");
    for (name, node) in [("web", NODE), ("far", "elsewhere")] {
        let pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node, "containers": [{"name": "app", "image": "busybox"}]}
        }))
        .unwrap();
        cloud.rt.block_on(pods.create(&PostParams::default(), &pod)).unwrap();
    }

    let hub_ca = pem_der(&ca);
    let with_cert = |cert: Option<(&[u8], &[u8])>| {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls::pki_types::CertificateDer::from(hub_ca.clone())).unwrap();
        let b = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        Arc::new(match cert {
            Some((c, k)) => b.with_client_auth_cert(vec![c.to_vec().into()], kubeedge_pki::rustls_key(k)).unwrap(),
            None => b.with_no_client_auth(),
        })
    };
    let caller = Caller { port: stream_port, tls: with_cert(Some((&api_cert, &api_key))) };
    let (cloud_mon, edge_mon) = (cloud.proc.monitor_addr(), edge.monitor_addr());
    let (cloud_pid, edge_pid) = (cloud.proc.pid(), edge.pid());
    let gauge = |addr: std::net::SocketAddr, name: &str| -> i64 {
        let (_, body) = kubeedge_testkit::http_get(addr, "/metrics").unwrap();
        body.lines().find_map(|l| l.strip_prefix(&format!("{name} ")).and_then(|v| v.trim().parse().ok())).unwrap()
    };

    cloud.rt.block_on(async {
        // A followed log: lines arrive through the tunnel; the caller leaving ends the edge's request.
        let mut tls = caller.open("/containerLogs/default/web/app?follow=true&tailLines=3", "").await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("line 3") {
            let n = tokio::time::timeout(Duration::from_secs(20), tls.read(&mut buf)).await.unwrap().unwrap();
            assert!(n > 0, "{}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("line 0\n"), "{text}");
        let first = events.recv().await.unwrap();
        assert_eq!(first, "GET /containerLogs/default/web/app?follow=true&tailLines=3 HTTP/1.1");
        drop(tls);
        event(&mut events, "closing of the edge's log request", |e| e == "log closed").await;

        // Metrics: by the node's IP in Host, and by X-Forwarded-Uri.
        let (code, text) = caller.get("/stats/summary", "").await;
        assert_eq!(code, 200, "{text}");
        assert!(text.contains(&format!(r#"{{"node":{{"nodeName":"{NODE}"}}}}"#)), "{text}");
        assert!(text.to_ascii_lowercase().contains("content-type: application/json"), "{text}");
        // X-Forwarded-Uri names the node (the Host names no node's IP here), and the caller's
        // credentials never reach the edge.
        let forwarded =
            format!("X-Forwarded-Uri: /api/v1/nodes/{NODE}/proxy/stats/summary\r\nAuthorization: Bearer secret\r\n");
        let mut tls = caller.open_as("/stats/summary", "10.9.9.9:10250", &forwarded).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut out)).await.unwrap().ok();
        let text = String::from_utf8_lossy(&out).into_owned();
        assert!(text.starts_with("HTTP/1.1 200") && text.contains(NODE), "{text}");
        let head = event(&mut events, "the forwarded request", |e| {
            e.starts_with("HEAD ") && e.to_ascii_lowercase().contains("x-forwarded-uri")
        })
        .await;
        assert!(!head.to_ascii_lowercase().contains("authorization"), "{head}");
        // A Host that names no node's IP, and no X-Forwarded-Uri: no session.
        let mut tls = caller.open_as("/stats/summary", "10.9.9.9:10250", "").await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut out)).await.unwrap().ok();
        let text = String::from_utf8_lossy(&out).into_owned();
        assert!(text.starts_with("HTTP/1.1 502"), "{text}");

        // Clear errors.
        let (code, text) = caller.get("/containerLogs/default/nope/app", "").await;
        assert_eq!(code, 404, "{text}");
        let (code, text) = caller.get("/containerLogs/default/far/app", "").await;
        assert_eq!(code, 502, "{text}");
        assert!(text.contains("no tunnel session"), "{text}");
        // Exec: the upgrade goes through both tunnels; Edged's 101 comes back; bytes both ways.
        let mut tls = caller.open_exec("/exec/default/web/app?command=sh&input=1&output=1").await;
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(20), tls.read(&mut buf)).await.unwrap().unwrap();
            assert!(n > 0, "{}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        while !got.ends_with(b"ready\n") {
            let n = tokio::time::timeout(Duration::from_secs(20), tls.read(&mut buf)).await.unwrap().unwrap();
            assert!(n > 0, "{}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8_lossy(&got).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(head.contains("upgrade: spdy/3.1"), "{head}");
        // What Edged sent right after its 101 came through.
        assert!(head.ends_with("\r\n\r\nready\n"), "{head}");
        let seen = event(&mut events, "the exec request", |e| e.starts_with("HEAD POST /exec/")).await;
        assert!(seen.starts_with("HEAD POST /exec/default/web/app?command=sh&input=1&output=1 HTTP/1.1"), "{seen}");
        assert!(seen.to_ascii_lowercase().contains("upgrade: spdy/3.1"), "{seen}");
        tls.write_all(b"echo hi\xff").await.unwrap();
        let mut echoed = Vec::new();
        while echoed.len() < 8 {
            let n = tokio::time::timeout(Duration::from_secs(20), tls.read(&mut buf)).await.unwrap().unwrap();
            assert!(n > 0);
            echoed.extend_from_slice(&buf[..n]);
        }
        assert_eq!(echoed, b"ECHO HI\xff");
        drop(tls);
        event(&mut events, "closing of the edge's exec connection", |e| e == "exec closed").await;
        // Port-forward travels as an exec-style upgrade with its own path.
        let (code, text) = caller.get("/portForward/default/web", "").await;
        assert_eq!(code, 400, "{text}");
        let mut tls = caller.open_exec("/portForward/default/web?port=80").await;
        let mut got = Vec::new();
        while !got.ends_with(b"ready\n") {
            let n = tokio::time::timeout(Duration::from_secs(20), tls.read(&mut buf)).await.unwrap().unwrap();
            assert!(n > 0, "{}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&got));
        let seen = event(&mut events, "the port-forward request", |e| e.starts_with("HEAD POST /portForward/")).await;
        assert!(seen.starts_with("HEAD POST /portForward/default/web?port=80 HTTP/1.1"), "{seen}");
        drop(tls);
        event(&mut events, "closing of the edge's port-forward connection", |e| e == "exec closed").await;
        // Edged's error answer comes back whole and at once (its connection stays open).
        let started = std::time::Instant::now();
        let mut tls = caller.open_exec("/exec/default/web/nope?command=true&output=1").await;
        let mut out = Vec::new();
        while !out.ends_with(b"container not found") {
            let n = tokio::time::timeout(Duration::from_secs(20), tls.read(&mut buf)).await.unwrap().unwrap();
            assert!(n > 0, "{}", String::from_utf8_lossy(&out));
            out.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 404") && text.ends_with("container not found"), "{text}");
        assert!(started.elapsed() < Duration::from_secs(10), "the error took {:?}", started.elapsed());
        // Exec that is not an upgrade: refused before anything reaches the edge.
        let (code, text) = caller.get("/exec/default/web/app?command=true&output=1", "").await;
        assert_eq!(code, 400, "{text}");
        // A caller without a certificate of the stream CA is refused.
        let anonymous = Caller { port: stream_port, tls: with_cert(None) };
        let refused = match anonymous.open("/stats/summary", "").await {
            Err(_) => true,
            Ok(mut tls) => {
                let mut out = Vec::new();
                let read = tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut out)).await;
                read.expect("the server neither answered nor closed").is_err() || out.is_empty()
            }
        };
        assert!(refused, "a caller without a certificate was served");

        // 1,000 followed logs at once, then all closed, four times: both ends count them and
        // then forget them all, and their memory is reused, not leaked. glibc keeps a burst's
        // memory in its per-thread arenas, so the peaks creep up for a few waves, by less each
        // time (edgecore, measured in three runs: +6–8, then +2–4 and +1–3 MB); a leak of 5 KB
        // per stream would add 10 MB from the second wave to the fourth.
        let settle = || async { tokio::time::sleep(Duration::from_secs(2)).await };
        let streams =
            || (gauge(cloud_mon, "kubeedge_cloudstream_streams"), gauge(edge_mon, "kubeedge_edgestream_streams"));
        kubeedge_testkit::eventually_async("no stream open", async || streams() == (0, 0)).await;
        settle().await;
        let mut rss = vec![(rss_kb(cloud_pid), rss_kb(edge_pid))];
        for _wave in 0..4 {
            let mut open = Vec::new();
            for _ in 0..1000 {
                open.push(caller.open("/containerLogs/default/web/app?follow=true", "").await.unwrap());
            }
            for tls in &mut open {
                let mut got = Vec::new();
                while !String::from_utf8_lossy(&got).contains("line 0") {
                    let n = tokio::time::timeout(Duration::from_secs(30), tls.read(&mut buf)).await.unwrap().unwrap();
                    assert!(n > 0, "{}", String::from_utf8_lossy(&got));
                    got.extend_from_slice(&buf[..n]);
                }
            }
            assert_eq!(streams(), (1000, 1000));
            rss.push((rss_kb(cloud_pid), rss_kb(edge_pid)));
            drop(open);
            let closing = std::time::Instant::now();
            while streams() != (0, 0) {
                assert!(
                    closing.elapsed() < Duration::from_secs(60),
                    "streams still open (cloud, edge): {:?}",
                    streams()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            settle().await;
            rss.push((rss_kb(cloud_pid), rss_kb(edge_pid)));
        }
        eprintln!("1,000 log streams four times, RSS KB (cloudcore, edgecore): idle, then open and closed: {rss:?}");
        for (what, second, fourth) in [("cloudcore", rss[3].0, rss[7].0), ("edgecore", rss[3].1, rss[7].1)] {
            assert!(fourth <= second + 10 * 1024, "{what} grows from wave to wave: {rss:?}");
        }
    });

    edge.signal("TERM");
    edge.wait_exit(Duration::from_secs(20));
    cloud.proc.signal("TERM");
    assert!(cloud.proc.wait_exit(Duration::from_secs(20)).is_some_and(|s| s.success()));
}

/// A hostile or broken edge on the tunnel: garbage, DATA for streams that do not exist and an
/// unknown message type are dropped with the session kept; a frame over the 1 MiB cap ends that
/// session alone (cloudcore stays healthy, the gauges return to zero); a certificate of another
/// node is refused.
#[test]
fn a_hostile_edge_ends_only_its_own_tunnel() {
    use kubeedge_stream::ws::{Frame, FrameReader, FrameWriter, Role};
    use kubeedge_stream::{Message, MessageType};

    let dir = tempfile::tempdir().unwrap();
    let tunnel_port = free_port();
    let mut cloud = CloudSide::start_with(
        dir.path(),
        &[
            (&["modules", "cloudStream", "enable"], "true".into()),
            (&["modules", "cloudStream", "tunnelPort"], tunnel_port.to_string()),
            (&["modules", "cloudStream", "streamPort"], free_port().to_string()),
        ],
    );
    cloud.proc.wait_for_line("CloudStream listening.");
    let mon = cloud.proc.monitor_addr();
    let gauge = |name: &str| -> i64 {
        let (_, body) = kubeedge_testkit::http_get(mon, "/metrics").unwrap();
        body.lines().find_map(|l| l.strip_prefix(&format!("{name} ")).and_then(|v| v.trim().parse().ok())).unwrap()
    };
    // A node certificate from the hub CA (kept in Secret kubeedge/casecret).
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(cloud.client(), "kubeedge");
    let ca_secret = cloud.rt.block_on(secrets.get("casecret")).unwrap().data.unwrap();
    let hub = kubeedge_pki::Ca::from_der(&ca_secret["cadata"].0, &ca_secret["cakeydata"].0).unwrap();
    let (csr, key) = kubeedge_pki::edge_csr("edge-bad").unwrap();
    let cert = hub.issue_node_client(&csr, "edge-bad", Duration::from_secs(3600)).unwrap();
    let tls = {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls::pki_types::CertificateDer::from(hub.cert_der().to_vec())).unwrap();
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_client_auth_cert(vec![cert.into()], kubeedge_pki::rustls_key(&key))
                .unwrap(),
        )
    };
    // Opens the tunnel claiming `node`; the server's status line, and the stream after a 101.
    let open = |node: &'static str| {
        let tls = tls.clone();
        async move {
            let tcp = TcpStream::connect(("127.0.0.1", tunnel_port)).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
            let mut s = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.unwrap();
            let req = format!(
                "GET /v1/kubeedge/connect HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                 Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                 SessionHostNameOverride: {node}\r\nSessionInternalIP: 127.0.0.9\r\n\r\n"
            );
            s.write_all(req.as_bytes()).await.unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if s.read(&mut byte).await.unwrap() == 0 {
                    break;
                }
                head.push(byte[0]);
            }
            (String::from_utf8_lossy(&head).into_owned(), s)
        }
    };
    cloud.rt.block_on(async {
        // Another node's name with this certificate: refused.
        let (head, _) = open("edge-other").await;
        assert!(head.starts_with("HTTP/1.1 403"), "{head}");

        let (head, s) = open("edge-bad").await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(head.to_ascii_lowercase().contains("x-kubeedge-rs-cloud-pings: 5"), "{head}");
        let (r, w) = tokio::io::split(s);
        let mut reader = FrameReader::new(r, Role::Client, 8 << 20);
        let mut writer = FrameWriter::new(w, Role::Client);
        kubeedge_testkit::eventually_async("the session", async || gauge("kubeedge_cloudstream_sessions") == 1).await;
        // Garbage, DATA and REMOVE_CONNECT for no stream, an unknown type: each dropped.
        writer.text(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff").await.unwrap();
        writer.text(&Message::new(999, MessageType::Data, bytes::Bytes::from_static(b"x")).encode()).await.unwrap();
        writer.text(&Message::new(998, MessageType::RemoveConnect, bytes::Bytes::new()).encode()).await.unwrap();
        writer.text(b"\x07\x63hello").await.unwrap();
        // Still alive: a ping is answered, and the cloud pings us too.
        writer.ping(b"still there").await.unwrap();
        let (mut pong, mut pinged) = (None, false);
        tokio::time::timeout(Duration::from_secs(10), async {
            while pong.is_none() || !pinged {
                match reader.next().await {
                    Ok(Some(Frame::Pong(p))) => pong = Some(p),
                    Ok(Some(Frame::Ping(_))) => pinged = true,
                    Ok(Some(_)) => {}
                    other => panic!("the tunnel ended: {other:?}"),
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(&pong.unwrap()[..], b"still there");
        assert_eq!(gauge("kubeedge_cloudstream_sessions"), 1);
        // A frame over the cap: this session ends, nothing else does.
        let huge = vec![b'a'; 2 << 20];
        let _ = writer.text(&huge).await;
        let ended = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match reader.next().await {
                    Ok(Some(Frame::Close(..))) | Ok(None) | Err(_) => return,
                    Ok(Some(_)) => {}
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "the tunnel stayed open after a frame over the cap");
        kubeedge_testkit::eventually_async("the session gone", async || gauge("kubeedge_cloudstream_sessions") == 0)
            .await;
        assert_eq!(gauge("kubeedge_cloudstream_streams"), 0);
        assert_eq!(kubeedge_testkit::http_get(mon, "/healthz").unwrap(), (200, "ok".to_owned()));
        // And the node may connect again.
        let (head, _s) = open("edge-bad").await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    });
    let log = cloud.proc.log();
    assert!(log.contains("Dropping a malformed tunnel message"), "{log}");
    cloud.proc.signal("TERM");
    assert!(cloud.proc.wait_exit(Duration::from_secs(20)).is_some_and(|s| s.success()));
}
