//! ServiceBus on a real bus, a real SQLite file and real sockets: a stand-in for EdgeHub
//! (`websocket`, group `hub`) plays the cloud, and small local servers play the edge apps.
//! Every port is picked by the OS.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use edgecore::servicebus::{MAX_CALLS, ServiceBusModule};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use kubeedge_beehive::{BoxFuture, Bus, Module, ModuleContext, ModuleError, Registry, RestartPolicy, Supervisor};
use kubeedge_config::edgecore::ServiceBus;
use kubeedge_metastore::{Options, Store, Tables};
use kubeedge_model::constants::group;
use kubeedge_model::protocol::edge;
use kubeedge_model::protocol::servicebus::{self as wire, EdgeReply, Header, HttpRequest, HttpResponse, REPLY_OK};
use kubeedge_model::{Content, Message, trim_node_prefix};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(30);
const NODE: &str = "edge-1";

/// EdgeHub and the cloud behind it: records what reaches it and answers the edge apps'
/// uploads as the Router does (`…/error` with an error, `…/silent` never, others with
/// `Hello World`), through `send_resp` as EdgeHub hands the cloud's replies over.
struct Hub {
    seen: mpsc::UnboundedSender<Message>,
}

impl Module for Hub {
    fn name(&self) -> &'static str {
        "websocket"
    }
    fn group(&self) -> &'static str {
        "hub"
    }
    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(async move {
            while let Some(m) = ctx.recv().await {
                let target = m.router.resource.clone();
                if m.router.operation == "upload" && !target.is_empty() {
                    if target.ends_with("/error") {
                        ctx.bus.send_resp(Message::error_response_to(&m, "the rest target failed"));
                    } else if !target.ends_with("/silent") {
                        ctx.bus.send_resp(Message::response_to(&m, Content::string("Hello World")));
                    }
                }
                let _ = self.seen.send(m);
            }
            Ok(())
        })
    }
}

struct Edge {
    sup: Supervisor,
    bus: Bus,
    addr: SocketAddr,
    hub: mpsc::UnboundedReceiver<Message>,
}

fn open_store(path: &std::path::Path) -> Store {
    let tables = Tables { service_bus: true, ..Tables::default() };
    Store::open(path, Options { tables, ..Options::default() }).unwrap()
}

/// ServiceBus (on port 0, with this call timeout in seconds) and the hub stand-in, running;
/// the link to the cloud is up when `connected`.
async fn start(store: Store, timeout: i32, connected: bool) -> Edge {
    let cfg = ServiceBus { enable: true, port: 0, timeout, ..ServiceBus::default() };
    let mut module = ServiceBusModule::new(cfg, store);
    module.prepare().await.unwrap();
    let addr = module.local_addr().unwrap();
    let (seen, hub) = mpsc::unbounded_channel();
    let mut reg = Registry::new();
    reg.register(Box::new(module)).unwrap();
    reg.register(Box::new(Hub { seen })).unwrap();
    reg.prepare().await.unwrap();
    let sup = reg.start(RestartPolicy::default());
    let bus = sup.bus();
    if connected {
        bus.send("servicebus", edge::connection_notice(group::BUS, true)).await.unwrap();
    }
    Edge { sup, bus, addr, hub }
}

/// The Router's message as the edge gets it (CloudHub strips `node/{node}/`).
fn at_edge(mut m: Message) -> Message {
    m.router.resource = trim_node_prefix(&m.router.resource).to_owned();
    m
}

fn call(port: u16, path: &str, req: &HttpRequest) -> Message {
    at_edge(wire::call(NODE, port, path, req).unwrap())
}

async fn allow(bus: &Bus, url: &str, start: bool) {
    bus.send("servicebus", at_edge(wire::allow(NODE, url, start))).await.unwrap();
}

/// ServiceBus's reply to the call `id`.
async fn reply_to(hub: &mut mpsc::UnboundedReceiver<Message>, id: &str) -> (Message, HttpResponse) {
    loop {
        let m = tokio::time::timeout(WAIT, hub.recv()).await.expect("a reply in time").expect("the hub runs");
        if m.header.parent_id == id {
            let resp = m.content.decode().unwrap();
            return (m, resp);
        }
    }
}

/// An edge app's POST of `body` to ServiceBus: (HTTP status, the JSON answer).
async fn post(addr: SocketAddr, body: impl Into<Bytes>) -> (u16, EdgeReply) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::post("/any/path").header("host", "localhost").body(Full::new(body.into())).unwrap();
    let resp = tokio::time::timeout(WAIT, sender.send_request(req)).await.expect("an answer in time").unwrap();
    let status = resp.status().as_u16();
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{e}: {body:?}")))
}

fn edge_request(target: &str) -> String {
    serde_json::json!({"method": "POST", "targetURL": target, "payload": "hi"}).to_string()
}

/// What the edge app got: method, path, headers (lowercase names), body.
type Seen = (String, String, Vec<(String, String)>, Bytes);

/// An edge app answering 201 with a header and a body, reporting each request.
async fn app() -> (u16, mpsc::UnboundedReceiver<Seen>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.unwrap().to_bytes();
                        let headers = parts
                            .headers
                            .iter()
                            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
                            .collect();
                        let _ = tx.send((parts.method.to_string(), parts.uri.to_string(), headers, body));
                        let resp = http::Response::builder()
                            .status(201)
                            .header("x-app", "yes")
                            .body(Full::new(Bytes::from_static(b"created")))
                            .unwrap();
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).await;
            });
        }
    });
    (port, rx)
}

#[tokio::test]
async fn a_cloud_call_reaches_the_app_and_its_answer_goes_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut edge = start(open_store(&dir.path().join("edgecore.db")), 10, true).await;
    let (port, mut seen) = app().await;
    let req = HttpRequest {
        header: Header::from([
            ("User".to_owned(), vec!["u1".to_owned()]),
            ("Passwd".to_owned(), vec!["p1".to_owned()]),
            ("Connection".to_owned(), vec!["close".to_owned()]),
        ]),
        body: b"Hello World!".to_vec(),
        method: "POST".to_owned(),
        url: String::new(),
    };
    let msg = call(port, "/url?x=1", &req);
    assert_eq!(msg.router.resource, format!("{port}:/url?x=1"));
    edge.bus.send("servicebus", msg.clone()).await.unwrap();

    let (method, path, headers, body) = tokio::time::timeout(WAIT, seen.recv()).await.unwrap().unwrap();
    assert_eq!((method.as_str(), path.as_str(), &body[..]), ("POST", "/url?x=1", &b"Hello World!"[..]));
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    assert_eq!((header("user"), header("passwd"), header("accept")), (Some("u1"), Some("p1"), Some("*/*")));
    assert_eq!(header("connection"), None, "hop-by-hop headers are not passed on");

    let (reply, resp) = reply_to(&mut edge.hub, &msg.header.id).await;
    assert_eq!(
        (reply.router.source.as_str(), reply.router.group.as_str(), reply.router.operation.as_str()),
        ("servicebus", "user", "upload")
    );
    assert_eq!(reply.router.resource, "");
    assert_eq!(resp.status_code, 201);
    assert_eq!(resp.body, b"created");
    assert_eq!(resp.header["X-App"], ["yes"]);
    assert_eq!(resp.header["Content-Length"], ["7"]);

    // No method in the request: the operation is the method.
    let msg = call(port, "/x", &HttpRequest::default());
    let mut msg = msg;
    msg.router.operation = "DELETE".into();
    edge.bus.send("servicebus", msg.clone()).await.unwrap();
    assert_eq!(tokio::time::timeout(WAIT, seen.recv()).await.unwrap().unwrap().0, "DELETE");
    assert_eq!(reply_to(&mut edge.hub, &msg.header.id).await.1.status_code, 201);

    // Malformed resources and contents are 400s with upstream's texts.
    let mut bad = call(port, "/x", &req);
    bad.router.resource = "9000/x".into();
    edge.bus.send("servicebus", bad.clone()).await.unwrap();
    let resp = reply_to(&mut edge.hub, &bad.header.id).await.1;
    assert_eq!((resp.status_code, resp.body.as_slice()), (400, &b"the format of resource 9000/x is incorrect"[..]));
    assert_eq!(resp.header["Server"], ["kubeedge-edgecore"]);
    let mut bad = call(port, "/x", &req);
    bad.content = Content::string("not a request");
    edge.bus.send("servicebus", bad.clone()).await.unwrap();
    let resp = reply_to(&mut edge.hub, &bad.header.id).await.1;
    assert_eq!((resp.status_code, resp.body.as_slice()), (400, &b"error to parse http request"[..]));
    edge.sup.shutdown(WAIT).await;
}

#[tokio::test]
async fn a_port_without_an_app_is_a_404() {
    let dir = tempfile::tempdir().unwrap();
    let mut edge = start(open_store(&dir.path().join("edgecore.db")), 10, true).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let msg = call(port, "/url", &HttpRequest { method: "GET".into(), ..HttpRequest::default() });
    edge.bus.send("servicebus", msg.clone()).await.unwrap();
    let resp = reply_to(&mut edge.hub, &msg.header.id).await.1;
    assert_eq!((resp.status_code, resp.body.as_slice()), (404, &b"error to call service"[..]));
    edge.sup.shutdown(WAIT).await;
}

#[tokio::test]
async fn an_app_that_never_answers_is_a_504_and_holds_up_no_other_call() {
    let dir = tempfile::tempdir().unwrap();
    let mut edge = start(open_store(&dir.path().join("edgecore.db")), 2, true).await;
    // Accepts and keeps every connection, never answering.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            held.push(tcp);
        }
    });
    let get = HttpRequest { method: "GET".into(), ..HttpRequest::default() };
    let started = tokio::time::Instant::now();
    let calls: Vec<Message> = (0..MAX_CALLS).map(|_| call(port, "/slow", &get)).collect();
    for c in &calls {
        edge.bus.send("servicebus", c.clone()).await.unwrap();
    }
    // One more than the limit: refused at once.
    let extra = call(port, "/slow", &get);
    edge.bus.send("servicebus", extra.clone()).await.unwrap();
    let resp = reply_to(&mut edge.hub, &extra.header.id).await.1;
    assert_eq!(resp.status_code, 503);
    assert!(started.elapsed() < Duration::from_secs(2), "refused at once, not after the timeout");
    // The others time out together, after the timeout and not one after another.
    let mut timed_out = 0;
    while timed_out < MAX_CALLS {
        let m = tokio::time::timeout(WAIT, edge.hub.recv()).await.unwrap().unwrap();
        if calls.iter().any(|c| c.header.id == m.header.parent_id) {
            let resp: HttpResponse = m.content.decode().unwrap();
            assert_eq!(resp.status_code, 504);
            assert_eq!(resp.body, b"timeout calling the edge application after 2s");
            timed_out += 1;
        }
    }
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(10), "{elapsed:?}");
    edge.sup.shutdown(WAIT).await;
}

/// Waits until ServiceBus no longer answers `target` with 403 (the `start` is applied) and
/// returns that answer.
async fn when_allowed(addr: SocketAddr, target: &str) -> (u16, EdgeReply) {
    kubeedge_testkit::until_async(&format!("{target} to be allowed"), async || {
        let got = post(addr, edge_request(target)).await;
        (got.0 != 403).then_some(got)
    })
    .await
}

#[tokio::test]
async fn an_allowed_edge_call_goes_up_and_the_cloud_answer_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut edge = start(open_store(&dir.path().join("edgecore.db")), 2, false).await;
    let echo = "http://127.0.0.1:9000/echo";
    allow(&edge.bus, echo, true).await;
    // Allowed, but EdgeHub has no session yet.
    let (status, answer) = when_allowed(edge.addr, echo).await;
    assert_eq!((status, answer.code), (503, 503), "{answer:?}");
    edge.bus.send("servicebus", edge::connection_notice(group::BUS, true)).await.unwrap();
    let (status, answer) = kubeedge_testkit::until_async("ServiceBus to see the link up", async || {
        let got = post(edge.addr, edge_request(echo)).await;
        (got.0 != 503).then_some(got)
    })
    .await;
    assert_eq!(status, 200);
    assert_eq!(answer, EdgeReply { code: 200, msg: REPLY_OK.to_owned(), body: "Hello World".to_owned() });
    // It went up as upstream's upload: the target URL as resource, the request's bytes as content.
    let up = loop {
        let m = tokio::time::timeout(WAIT, edge.hub.recv()).await.unwrap().unwrap();
        if m.router.resource == echo {
            break m;
        }
    };
    assert_eq!(
        (up.router.source.as_str(), up.router.group.as_str(), up.router.operation.as_str()),
        ("servicebus", "user", "upload")
    );
    assert!(up.header.sync);
    let sent = wire::parse_upload(&up.content).unwrap();
    assert_eq!((sent.target_url.as_str(), sent.payload_bytes().as_slice()), (echo, &b"hi"[..]));

    // The cloud's error, and no answer at all.
    let failing = "http://127.0.0.1:9000/error";
    allow(&edge.bus, failing, true).await;
    let (status, answer) = when_allowed(edge.addr, failing).await;
    assert_eq!((status, answer.code, answer.msg.as_str()), (502, 502, "the rest target failed"));
    let silent = "http://127.0.0.1:9000/silent";
    allow(&edge.bus, silent, true).await;
    let (status, answer) = when_allowed(edge.addr, silent).await;
    assert_eq!((status, answer.code), (504, 504));
    assert!(answer.msg.starts_with("timeout to get response for message "), "{answer:?}");
    edge.sup.shutdown(WAIT).await;
}

#[tokio::test]
async fn bad_edge_requests_are_refused_with_their_code() {
    let dir = tempfile::tempdir().unwrap();
    let edge = start(open_store(&dir.path().join("edgecore.db")), 2, true).await;
    let (status, answer) = post(edge.addr, edge_request("http://elsewhere/x")).await;
    assert_eq!((status, answer.code), (403, 403));
    assert_eq!(answer.msg, "url http://elsewhere/x is not allowed and please make a rule for this url in the cloud");
    let (status, answer) = post(edge.addr, "{not json").await;
    assert_eq!((status, answer.msg.as_str()), (400, "invalid params"));
    let (status, answer) = post(edge.addr, "").await;
    assert_eq!((status, answer.msg.as_str()), (400, "invalid params"));

    // Over 5,000,000 bytes, declared: refused before the body is read.
    let too_large = |raw: String| {
        let status: u16 = raw.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let json = raw.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
        (status, json)
    };
    let mut tcp = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
    tcp.write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5000001\r\n\r\n").await.unwrap();
    let (status, json) = too_large(read_answer(&mut tcp).await);
    assert_eq!(status, 413);
    assert!(json.contains(r#""code":413"#) && json.contains("request body larger than 5000000 bytes"), "{json}");
    // Chunked, with no length: cut off at the limit.
    let mut tcp = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
    tcp.write_all(b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n4c4b41\r\n").await.unwrap();
    let (mut rd, mut wr) = tcp.into_split();
    let writer = tokio::spawn(async move {
        let chunk = vec![b' '; 5_000_001];
        let _ = wr.write_all(&chunk).await;
        let _ = wr.write_all(b"\r\n0\r\n\r\n").await;
        wr
    });
    let (status, json) = too_large(read_answer(&mut rd).await);
    assert_eq!(status, 413, "{json}");
    assert!(json.contains(r#""code":413"#), "{json}");
    drop(writer);
    let _ = edge.sup.shutdown(WAIT).await;
}

/// Reads an HTTP answer until the server closes (or resets) the connection.
async fn read_answer(rd: &mut (impl AsyncReadExt + Unpin)) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(WAIT, rd.read(&mut buf)).await.expect("the server answers") {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
        if String::from_utf8_lossy(&out).contains("}") {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn start_and_stop_change_the_allow_list_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("edgecore.db");
    let (a, b) = ("http://127.0.0.1:9000/a", "http://127.0.0.1:9000/b");
    let edge = start(open_store(&db), 2, true).await;
    allow(&edge.bus, a, true).await;
    allow(&edge.bus, b, true).await;
    assert_eq!(when_allowed(edge.addr, b).await.0, 200);
    allow(&edge.bus, a, false).await;
    // Only the Router's messages change it.
    let mut foreign = at_edge(wire::allow(NODE, "http://127.0.0.1:9000/c", true));
    foreign.router.source = "router_eventbus".into();
    edge.bus.send("servicebus", foreign).await.unwrap();
    kubeedge_testkit::eventually_async(&format!("{a} to be refused"), async || {
        post(edge.addr, edge_request(a)).await.0 == 403
    })
    .await;
    assert!(edge.sup.shutdown(WAIT).await.is_clean());

    // A new edgecore on the same file: b is allowed, a and c are not.
    let store = open_store(&db);
    let rows = store.query("SELECT `url` FROM `target_urls`", Vec::new()).await.unwrap();
    let urls: Vec<String> = rows.iter().map(|r| r[0].text()).collect();
    assert_eq!(urls, [b]);
    let edge = start(store, 2, true).await;
    let (status, answer) = post(edge.addr, edge_request(b)).await;
    assert_eq!((status, answer.body.as_str()), (200, "Hello World"));
    assert_eq!(post(edge.addr, edge_request(a)).await.0, 403);
    assert_eq!(post(edge.addr, edge_request("http://127.0.0.1:9000/c")).await.0, 403);
    edge.sup.shutdown(WAIT).await;
}

#[tokio::test]
async fn a_taken_port_is_a_start_up_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = i32::from(taken.local_addr().unwrap().port());
    let cfg = ServiceBus { enable: true, port, ..ServiceBus::default() };
    let mut module = ServiceBusModule::new(cfg, open_store(&dir.path().join("edgecore.db")));
    let e = module.prepare().await.expect_err("the port is taken");
    assert!(e.to_string().contains("modules.serviceBus.port"), "{e}");
    drop(taken);
}

/// Writes a serving certificate for 127.0.0.1 from a new CA; returns the CA's DER.
fn write_serving_pair(cert: &std::path::Path, key: &std::path::Path) -> Vec<u8> {
    let ca = kubeedge_pki::Ca::generate().unwrap();
    let server = ca.issue_server(&["127.0.0.1".parse().unwrap()], &[]).unwrap();
    std::fs::write(cert, kubeedge_pki::pem("CERTIFICATE", &server.cert_der)).unwrap();
    std::fs::write(key, kubeedge_pki::pem("EC PRIVATE KEY", &server.key_sec1)).unwrap();
    ca.cert_der().to_vec()
}

/// A TLS connection trusting only `ca`, or the handshake's error.
async fn tls_connect(
    addr: SocketAddr,
    ca: &[u8],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.to_vec().into()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg)).connect(name, tcp).await
}

#[tokio::test]
async fn with_tls_files_the_server_speaks_https_and_follows_a_renewed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("sb.crt"), dir.path().join("sb.key"));
    let first_ca = write_serving_pair(&cert, &key);
    let cfg = ServiceBus {
        enable: true,
        port: 0,
        tls_cert_file: cert.to_str().unwrap().to_owned(),
        tls_private_key_file: key.to_str().unwrap().to_owned(),
        ..ServiceBus::default()
    };
    let mut module = ServiceBusModule::new(cfg, open_store(&dir.path().join("edgecore.db")));
    module.prepare().await.unwrap();
    let addr = module.local_addr().unwrap();
    let mut reg = Registry::new();
    reg.register(Box::new(module)).unwrap();
    let sup = reg.start(RestartPolicy::default());

    let mut tls = tls_connect(addr, &first_ca).await.expect("the configured certificate");
    tls.write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}").await.unwrap();
    let raw = read_answer(&mut tls).await;
    assert!(raw.starts_with("HTTP/1.1 403"), "{raw}");
    // Plain HTTP is not served.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}").await.unwrap();
    assert!(!read_answer(&mut tcp).await.starts_with("HTTP/1.1"));

    // A renewed pair (another CA here) is served to the next connections.
    let second_ca = write_serving_pair(&cert, &key);
    // Their modification time moves on whatever the file system's clock granularity.
    let later = std::time::SystemTime::now() + Duration::from_secs(2);
    for p in [&cert, &key] {
        std::fs::File::options().write(true).open(p).unwrap().set_modified(later).unwrap();
    }
    kubeedge_testkit::eventually_async("the renewed certificate to be served", async || {
        tls_connect(addr, &second_ca).await.is_ok()
    })
    .await;
    assert!(tls_connect(addr, &first_ca).await.is_err(), "the old certificate is no longer served");
    sup.shutdown(WAIT).await;
}
