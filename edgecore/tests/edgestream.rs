//! EdgeStream in the edgecore binary against a test tunnel server (real TLS with the hub CA and
//! the node's certificate, the WebSocket handshake, upstream's framing in text frames) and a
//! test kubelet-style server standing in for Edged's: a followed log streamed back as DATA, a
//! metrics request, an exec stream relayed raw both ways (the `101` included), REMOVE_CONNECT
//! in both directions, a malformed message dropped without ending the tunnel, and a redial
//! after the cloud closes the tunnel or refuses the session (CLOSE_CONNECT).

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Empty;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use kubeedge_stream::ws::{Frame, FrameReader, FrameWriter, Role};
use kubeedge_stream::{ConnectRequest, GoUrl, Message, MessageType};
use kubeedge_testkit::set_yaml_path;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(20);

type Io = TokioIo<hyper::upgrade::Upgraded>;

/// One accepted tunnel: the session headers and the two directions.
struct Session {
    headers: http::HeaderMap,
    reader: FrameReader<ReadHalf<Io>>,
    writer: FrameWriter<WriteHalf<Io>>,
}

impl Session {
    async fn send(&mut self, m: Message) {
        self.writer.text(&m.encode()).await.unwrap();
    }

    /// The next tunnel message, answering pings; panics after `T`.
    async fn recv(&mut self) -> Message {
        loop {
            let frame = tokio::time::timeout(T, self.reader.next()).await.expect("no message within T").unwrap();
            match frame.expect("the tunnel ended") {
                Frame::Message(b) => return Message::decode(b).unwrap(),
                Frame::Ping(p) => self.writer.pong(&p).await.unwrap(),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// Collects DATA for `id` until its REMOVE_CONNECT (or `until` is seen in it).
    async fn collect(&mut self, id: u64, until: Option<&str>) -> (Vec<u8>, bool) {
        let mut data = Vec::new();
        loop {
            let m = self.recv().await;
            assert_eq!(m.connect_id, id, "{m:?}");
            match m.kind {
                MessageType::Data => data.extend_from_slice(&m.data),
                MessageType::RemoveConnect => return (data, true),
                other => panic!("unexpected {other:?}"),
            }
            if until.is_some_and(|u| String::from_utf8_lossy(&data).contains(u)) {
                return (data, false);
            }
        }
    }
}

/// The tunnel server: TLS requiring a client certificate of the CA, the WebSocket upgrade on
/// `/v1/kubeedge/connect`; each accepted session is handed to the test.
async fn tunnel_server(ca: &kubeedge_pki::Ca) -> (u16, mpsc::Receiver<Session>) {
    let server = ca.issue_server(&["127.0.0.1".parse().unwrap()], &[]).unwrap();
    let tls = kubeedge_viaduct::server_tls(ca.cert_der(), &server.cert_der, &server.key_sec1).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let Ok(tls) = acceptor.accept(tcp).await else { continue };
            let tx = tx.clone();
            let service = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                let tx = tx.clone();
                async move {
                    assert_eq!(req.uri().path(), "/v1/kubeedge/connect");
                    let key = req.headers()["sec-websocket-key"].to_str().unwrap().to_owned();
                    let accept = base64::engine::general_purpose::STANDARD.encode(
                        ring::digest::digest(
                            &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
                            format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes(),
                        )
                        .as_ref(),
                    );
                    let headers = req.headers().clone();
                    let on_upgrade = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        let io = TokioIo::new(on_upgrade.await.unwrap());
                        let (r, w) = tokio::io::split(io);
                        let session = Session {
                            headers,
                            reader: FrameReader::new(r, Role::Server, 2 << 20),
                            writer: FrameWriter::new(w, Role::Server),
                        };
                        let _ = tx.send(session).await;
                    });
                    Ok::<_, std::convert::Infallible>(
                        Response::builder()
                            .status(StatusCode::SWITCHING_PROTOCOLS)
                            .header("connection", "Upgrade")
                            .header("upgrade", "websocket")
                            .header("sec-websocket-accept", accept)
                            .body(Empty::<Bytes>::new())
                            .unwrap(),
                    )
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    (port, rx)
}

/// A stand-in for Edged's server: a followed log (a line every 50 ms until the client goes),
/// `/stats/summary`, and `/exec/...` answering `101` then echoing bytes upper-cased. Each
/// request's head is handed to the test.
async fn kubelet_server() -> (u16, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else { return };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if tcp.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8(head).unwrap();
                let _ = tx.send(head.clone());
                let target = head.split(' ').nth(1).unwrap_or_default().to_owned();
                if target.starts_with("/containerLogs/") {
                    let _ = tcp
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
                        .await;
                    for i in 0.. {
                        let line = format!("line {i}\n");
                        if tcp.write_all(format!("{:x}\r\n{line}\r\n", line.len()).as_bytes()).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                } else if target.starts_with("/stats/summary") {
                    let body = r#"{"node":{"nodeName":"edge-1"}}"#;
                    let _ = tcp
                        .write_all(
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes(),
                        )
                        .await;
                } else if target.starts_with("/exec/") {
                    let _ = tcp
                        .write_all(
                            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n",
                        )
                        .await;
                    let mut buf = [0u8; 1024];
                    loop {
                        let n = tcp.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        if tcp.write_all(&buf[..n].to_ascii_uppercase()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (port, rx)
}

fn connect(id: u64, kind: MessageType, target: &str, method: Option<&str>) -> Message {
    let req = ConnectRequest {
        mess_id: id,
        url: GoUrl::parse(&format!("http://127.0.0.1:10350{target}")).unwrap(),
        header: [("Accept".to_owned(), vec!["*/*".to_owned()])].into(),
        method: method.map(str::to_owned),
    };
    Message::new(id, kind, serde_json::to_vec(&req).unwrap())
}

fn config(dir: &Path, tunnel_port: u16, kubelet_port: u16) -> std::path::PathBuf {
    let path = edgecore_config(dir, free_port(), None, free_port(), free_port());
    let mut y = std::fs::read_to_string(&path).unwrap();
    let q = |f: &str| format!("\"{}\"", dir.join(f).display());
    let settings: Vec<(&[&str], String)> = vec![
        (&["modules", "edgeHub", "enable"], "false".into()),
        (&["modules", "metaManager", "enable"], "false".into()),
        (&["modules", "deviceTwin", "enable"], "false".into()),
        (&["modules", "edged", "nodeIP"], "10.1.2.3".into()),
        (&["modules", "edged", "tailoredKubeletConfig", "address"], "127.0.0.1".into()),
        (&["modules", "edged", "tailoredKubeletConfig", "readOnlyPort"], kubelet_port.to_string()),
        (&["modules", "edgeStream", "enable"], "true".into()),
        (&["modules", "edgeStream", "server"], format!("127.0.0.1:{tunnel_port}")),
        (&["modules", "edgeStream", "tlsTunnelCAFile"], q("certs/ca.crt")),
        (&["modules", "edgeStream", "tlsTunnelCertFile"], q("certs/edge.crt")),
        (&["modules", "edgeStream", "tlsTunnelPrivateKeyFile"], q("certs/edge.key")),
    ];
    for (path, value) in settings {
        y = set_yaml_path(&y, path, &value);
    }
    std::fs::write(&path, y).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edgestream_replays_logs_metrics_and_exec_through_the_tunnel() {
    let dir = tempfile::tempdir().unwrap();
    let ca = kubeedge_pki::Ca::generate().unwrap();
    let (csr, key) = kubeedge_pki::edge_csr(NODE).unwrap();
    let cert = ca.issue_node_client(&csr, NODE, Duration::from_secs(86_400)).unwrap();
    std::fs::create_dir_all(dir.path().join("certs")).unwrap();
    std::fs::write(dir.path().join("certs/ca.crt"), kubeedge_pki::pem("CERTIFICATE", ca.cert_der())).unwrap();
    std::fs::write(dir.path().join("certs/edge.crt"), kubeedge_pki::pem("CERTIFICATE", &cert)).unwrap();
    std::fs::write(dir.path().join("certs/edge.key"), kubeedge_pki::pem("EC PRIVATE KEY", &key)).unwrap();
    let (tunnel_port, mut sessions) = tunnel_server(&ca).await;
    let (kubelet_port, mut heads) = kubelet_server().await;
    let mut edge = spawn_edgecore(&config(dir.path(), tunnel_port, kubelet_port));

    let mut s = tokio::time::timeout(T, sessions.recv()).await.expect("no tunnel within T").unwrap();
    assert_eq!(s.headers["sessionhostnameoverride"], NODE);
    assert_eq!(s.headers["sessioninternalip"], "10.1.2.3");

    // A followed log: lines stream back as DATA until the cloud sends REMOVE_CONNECT.
    s.send(connect(1, MessageType::LogsConnect, "/containerLogs/default/web/app?follow=true&tailLines=5", None)).await;
    let (data, removed) = s.collect(1, Some("line 3\n")).await;
    assert!(!removed && String::from_utf8_lossy(&data).starts_with("line 0\n"), "{data:?}");
    let head = heads.recv().await.unwrap();
    assert!(head.starts_with("GET /containerLogs/default/web/app?follow=true&tailLines=5 HTTP/1.1\r\n"), "{head}");
    assert!(head.to_ascii_lowercase().contains(&format!("host: 127.0.0.1:{kubelet_port}")), "{head}");
    s.send(Message::new(1, MessageType::RemoveConnect, Bytes::new())).await;
    // The edge confirms with its own REMOVE_CONNECT (after any DATA already in flight).
    let (_, removed) = s.collect(1, None).await;
    assert!(removed);

    // A malformed frame and a message for no stream are dropped; the tunnel goes on.
    s.writer.text(&[0xff; 11]).await.unwrap();
    s.send(Message::new(99, MessageType::Data, Bytes::from_static(b"nobody"))).await;

    // Metrics: the body, then REMOVE_CONNECT from the edge.
    s.send(connect(2, MessageType::MetricConnect, "/stats/summary", None)).await;
    let (data, removed) = s.collect(2, None).await;
    assert!(removed);
    assert_eq!(data, br#"{"node":{"nodeName":"edge-1"}}"#);
    let head = heads.recv().await.unwrap();
    assert!(head.to_ascii_lowercase().contains("accept-encoding: identity"), "{head}");

    // Exec: the request written raw, the 101 relayed, bytes both ways.
    s.send(connect(3, MessageType::ExecConnect, "/exec/default/web/app?command=sh&input=1&output=1", Some("POST")))
        .await;
    let (data, _) = s.collect(3, Some("\r\n\r\n")).await;
    assert!(String::from_utf8_lossy(&data).starts_with("HTTP/1.1 101 Switching Protocols\r\n"), "{data:?}");
    let head = heads.recv().await.unwrap();
    assert!(head.starts_with("POST /exec/default/web/app?command=sh&input=1&output=1 HTTP/1.1\r\n"), "{head}");
    s.send(Message::new(3, MessageType::Data, Bytes::from_static(b"echo hi\xff"))).await;
    let mut data = Vec::new();
    while data.len() < 8 {
        let (more, removed) = s.collect(3, Some("")).await;
        assert!(!removed);
        data.extend(more);
    }
    assert_eq!(data, b"ECHO HI\xff");
    s.send(Message::new(3, MessageType::RemoveConnect, Bytes::new())).await;
    let (_, removed) = s.collect(3, None).await;
    assert!(removed);

    // The cloud closes the tunnel: the edge dials again (2 s later, as upstream).
    s.writer.close(1000, "bye").await.unwrap();
    drop(s);
    let mut again = tokio::time::timeout(T, sessions.recv()).await.expect("no redial within T").unwrap();
    again.send(connect(4, MessageType::MetricConnect, "/stats/summary", None)).await;
    let (data, removed) = again.collect(4, None).await;
    assert!(removed && !data.is_empty(), "{}", edge.log());
    // CLOSE_CONNECT (id 0): the cloud refuses the session; the edge ends it and dials again.
    again.send(Message::new(0, MessageType::CloseConnect, Bytes::from_static(b"node update failed"))).await;
    let third = tokio::time::timeout(T, sessions.recv()).await.expect("no redial after CLOSE_CONNECT").unwrap();
    drop(third);
    edge.wait_for_line("CLOSE_CONNECT: \"node update failed\"");

    edge.signal("TERM");
    assert!(edge.wait_exit(Duration::from_secs(15)).is_some_and(|s| s.success()));
}
