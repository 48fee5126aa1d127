//! `pods/log`, `exec`, `attach`, `portforward` and `nodes/proxy` reach the node's kubelet
//! endpoint as through kube-apiserver, presenting the kubelet-client certificate.
//!
//! The node here is a fake kubelet: HTTPS with its own self-signed certificate, on a free port of
//! 127.0.0.1, *requiring* a client certificate signed by the cluster CA (what CloudStream's
//! stream server trusts: `kube-root-ca.crt`). It records every request with the identity
//! presented, serves a log and stats, answers exec with 101 and echoes, and answers a SPDY
//! port-forward with 101 and reports the first bytes it receives.

mod common;

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::Cluster;
use http::HeaderMap;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, mpsc};

/// One request as the fake kubelet saw it.
#[derive(Debug)]
struct Seen {
    method: String,
    uri: String,
    headers: HeaderMap,
    /// The CN of the client certificate presented.
    cn: String,
}

struct Kubelet {
    port: u16,
    seen: mpsc::UnboundedReceiver<Seen>,
    /// The first bytes received on each upgraded port-forward connection.
    forwarded: mpsc::UnboundedReceiver<Vec<u8>>,
    /// Lets `/stream` send its second chunk.
    release: Arc<Notify>,
}

type FakeBody = BoxBody<Bytes, Infallible>;

fn full(b: &'static str) -> FakeBody {
    Full::new(Bytes::from_static(b.as_bytes())).boxed()
}

fn pem_der(pem: &str) -> Vec<u8> {
    kubeedge_pki::parse_pem(pem).unwrap().1
}

/// Starts the fake kubelet, trusting client certificates from `cluster_ca_pem` only.
async fn kubelet(cluster_ca_pem: &str) -> Kubelet {
    // Its own serving certificate, from a CA the API server has never seen.
    let own = apiserver_lite::tls::Pki::generate().unwrap();
    let (pair, _) = own.issue_server(&["127.0.0.1"]).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(pem_der(cluster_ca_pem))).unwrap();
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from(pem_der(&pair.cert_pem))],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pem_der(&pair.key_pem))),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, seen) = mpsc::unbounded_channel();
    let (fwd_tx, forwarded) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let rel = release.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, tx, fwd_tx, release) = (acceptor.clone(), tx.clone(), fwd_tx.clone(), rel.clone());
            tokio::spawn(async move {
                // A caller without a certificate from the cluster CA fails here.
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let cn = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| kubeedge_pki::subject(c).ok())
                    .map(|(cn, _)| cn)
                    .unwrap_or_default();
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (tx, fwd_tx, release, cn) = (tx.clone(), fwd_tx.clone(), release.clone(), cn.clone());
                    async move { Ok::<_, Infallible>(serve(req, cn, tx, fwd_tx, release).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Kubelet { port, seen, forwarded, release }
}

async fn serve(
    mut req: http::Request<hyper::body::Incoming>,
    cn: String,
    tx: mpsc::UnboundedSender<Seen>,
    fwd_tx: mpsc::UnboundedSender<Vec<u8>>,
    release: Arc<Notify>,
) -> http::Response<FakeBody> {
    let _ = tx.send(Seen {
        method: req.method().to_string(),
        uri: req.uri().to_string(),
        headers: req.headers().clone(),
        cn,
    });
    let path = req.uri().path().to_owned();
    if path.starts_with("/exec/") {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = upgrade.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 64];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        return http::Response::builder()
            .status(101)
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .body(full(""))
            .unwrap();
    }
    if path.starts_with("/portForward/") {
        // A kubelet's SPDY answer; the bytes that follow are SPDY frames from kubectl.
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = upgrade.await {
                let mut io = TokioIo::new(up);
                let mut first = [0u8; 4];
                if io.read_exact(&mut first).await.is_ok() {
                    let _ = fwd_tx.send(first.to_vec());
                }
                let mut sink = [0u8; 1024];
                while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {}
            }
        });
        return http::Response::builder()
            .status(101)
            .header("connection", "Upgrade")
            .header("upgrade", "SPDY/3.1")
            .header("x-stream-protocol-version", "portforward.k8s.io")
            .body(full(""))
            .unwrap();
    }
    match path.as_str() {
        "/stats/summary" => http::Response::builder()
            .header("content-type", "application/json")
            .header("access-control-allow-origin", "*")
            .body(full(r#"{"node":{"nodeName":"edge-1"},"pods":[]}"#))
            .unwrap(),
        "/echo" => {
            let method = req.method().to_string();
            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let text = format!("{method} {}", String::from_utf8_lossy(&body));
            http::Response::new(Full::new(Bytes::from(text)).boxed())
        }
        "/stream" => {
            // The second chunk only once the test has seen the first: a buffering proxy hangs.
            let chunks = futures::stream::unfold(0, move |i| {
                let release = release.clone();
                async move {
                    match i {
                        0 => Some((Ok(Frame::data(Bytes::from_static(b"first\n"))), 1)),
                        1 => {
                            release.notified().await;
                            Some((Ok(Frame::data(Bytes::from_static(b"second\n"))), 2))
                        }
                        _ => None,
                    }
                }
            });
            http::Response::new(StreamBody::new(chunks).boxed())
        }
        p if p.starts_with("/containerLogs/") => http::Response::new(full("hello from the node\n")),
        _ => http::Response::builder().status(404).body(full("404 page not found\n")).unwrap(),
    }
}

/// Registers node `name` with the given kubelet address and port.
fn add_node(c: &Cluster, name: &str, address: Option<&str>, port: u16) {
    let addresses = match address {
        Some(a) => format!(r#"[{{"type":"Hostname","address":"{name}"}},{{"type":"InternalIP","address":"{a}"}}]"#),
        None => "[]".to_owned(),
    };
    let status = format!(r#"{{"addresses":{addresses},"daemonEndpoints":{{"kubeletEndpoint":{{"Port":{port}}}}}}}"#);
    let node = format!(r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"{name}"}},"status":{status}}}"#);
    c.ok_stdin(&["create", "-f", "-"], &node);
    c.ok(&[
        "patch",
        "node",
        name,
        "--subresource",
        "status",
        "--type",
        "merge",
        "-p",
        &format!(r#"{{"status":{status}}}"#),
    ]);
}

fn add_pod(c: &Cluster, name: &str, node: &str) {
    c.ok_stdin(
        &["create", "-f", "-"],
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: {node}\n  containers:\n  - name: httpd\n    image: busybox\n"
        ),
    );
}

/// The next request the kubelet saw (waiting at most 10 s).
fn next(c: &Cluster, k: &mut Kubelet) -> Seen {
    c.rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), k.seen.recv()).await })
        .expect("the kubelet saw no request")
        .unwrap()
}

/// A port nothing listens on.
fn dead_port(c: &Cluster) -> u16 {
    c.rt.block_on(async { tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port() })
}

/// An HTTP/1.1 connection to the API server with the admin token.
async fn api_conn(url: &str, ca: &str) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(pem_der(ca))).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(url.trim_start_matches("https://")).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn.with_upgrades());
    send
}

fn api_request(c: &Cluster, method: &str, path: &str) -> http::request::Builder {
    let server = c.server();
    http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", server.addr().to_string())
        .header("authorization", format!("Bearer {}", server.admin_token()))
}

/// Sends an upgrade through the API server and checks the kubelet's echo comes back.
async fn upgrade_and_echo(url: &str, ca: &str, req: http::Request<Empty<Bytes>>) {
    let mut send = api_conn(url, ca).await;
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 101, "{:?}", resp.into_body().collect().await.map(|b| b.to_bytes()));
    let mut io = TokioIo::new(hyper::upgrade::on(resp).await.unwrap());
    io.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    io.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
}

fn assert_identity(seen: &Seen) {
    assert_eq!(seen.cn, "kube-apiserver-kubelet-client", "{seen:?}");
    assert!(seen.headers.get("authorization").is_none(), "the caller's credentials reached the kubelet: {seen:?}");
}

#[test]
fn logs_and_exec_go_to_the_node() {
    let c = Cluster::start();
    let mut k = c.rt.block_on(kubelet(c.server().ca_pem()));
    add_node(&c, "edge-1", Some("127.0.0.1"), k.port);
    add_pod(&c, "web", "edge-1");

    let logs = c.ok(&["--context", "apiserver-lite-token", "logs", "web", "--tail", "5"]);
    assert_eq!(logs, "hello from the node\n");
    let seen = next(&c, &mut k);
    assert_eq!(seen.uri, "/containerLogs/default/web/httpd?tailLines=5");
    assert_identity(&seen);

    // exec: the upgrade is spliced through; bytes written come back.
    let (url, ca) = (c.server().url(), c.server().ca_pem().to_owned());
    let req = api_request(&c, "GET", "/api/v1/namespaces/default/pods/web/exec?command=sh&stdin=true&stdout=true")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(Empty::new())
        .unwrap();
    c.rt.block_on(upgrade_and_echo(&url, &ca, req));
    let seen = next(&c, &mut k);
    assert_eq!(seen.uri, "/exec/default/web/httpd?command=sh&stdin=true&stdout=true");
    assert_identity(&seen);
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");

    // exec without an upgrade is refused before reaching the node, as by kube-apiserver.
    let resp = c.rt.block_on(async {
        let mut send = api_conn(&url, &ca).await;
        let req = api_request(&c, "POST", "/api/v1/namespaces/default/pods/web/exec?command=sh").body(Empty::new());
        send.send_request(req.unwrap()).await.unwrap()
    });
    assert_eq!(resp.status(), 400);

    // A pod without a node cannot be reached.
    c.ok_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: idle\nspec:\n  containers:\n  - name: c\n    image: busybox\n",
    );
    let out = c.kubectl(&["logs", "idle"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not have a host assigned"));

    // A node whose kubelet is down: kube-apiserver's wording, naming the address.
    let port = dead_port(&c);
    add_node(&c, "down", Some("127.0.0.1"), port);
    add_pod(&c, "orphan", "down");
    let out = c.kubectl(&["logs", "orphan"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("dial tcp 127.0.0.1:{port}: connect: connection refused")), "{err}");
}

#[test]
fn node_proxy_reaches_the_kubelet_with_its_client_certificate() {
    let c = Cluster::start();
    let mut k = c.rt.block_on(kubelet(c.server().ca_pem()));
    add_node(&c, "edge-1", Some("127.0.0.1"), k.port);

    // With the token context, so there is an Authorization header to strip.
    let summary =
        c.ok(&["--context", "apiserver-lite-token", "get", "--raw", "/api/v1/nodes/edge-1/proxy/stats/summary"]);
    assert_eq!(summary, r#"{"node":{"nodeName":"edge-1"},"pods":[]}"#);
    let seen = next(&c, &mut k);
    assert_eq!((seen.method.as_str(), seen.uri.as_str()), ("GET", "/stats/summary"));
    assert_identity(&seen);
    assert_eq!(seen.headers["x-forwarded-uri"], "/api/v1/nodes/edge-1/proxy/stats/summary");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert_eq!(seen.headers["x-forwarded-host"], c.server().addr().to_string());
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["host"], format!("127.0.0.1:{}", k.port));

    // Any method, the body and the query go through; so do the kubelet's errors.
    let body = c.dir.path().join("body");
    std::fs::write(&body, "payload").unwrap();
    let echoed = c.ok(&["create", "--raw", "/api/v1/nodes/edge-1/proxy/echo?a=1&b=x+y", "-f", body.to_str().unwrap()]);
    let seen = next(&c, &mut k);
    assert_eq!(echoed, "POST payload", "{seen:?}");
    assert_eq!(seen.uri, "/echo?a=1&b=x+y");
    assert_eq!(seen.headers["x-forwarded-uri"], "/api/v1/nodes/edge-1/proxy/echo");
    let missing = c.kubectl(&["get", "--raw", "/api/v1/nodes/edge-1/proxy/nothing"]);
    assert!(!missing.status.success());
    // The kubelet's plain-text 404 reaches kubectl, which words it as any 404.
    assert!(String::from_utf8_lossy(&missing.stderr).contains("(NotFound)"), "{missing:?}");
    next(&c, &mut k);

    // The response is streamed: the first chunk arrives while the kubelet still holds the second.
    let (url, ca) = (c.server().url(), c.server().ca_pem().to_owned());
    let release = k.release.clone();
    let req = api_request(&c, "GET", "/api/v1/nodes/edge-1/proxy/stream").body(Empty::new()).unwrap();
    c.rt.block_on(async {
        let mut send = api_conn(&url, &ca).await;
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().get("access-control-allow-origin").is_none());
        let mut body = resp.into_body();
        let first = tokio::time::timeout(Duration::from_secs(10), body.frame()).await.expect("streamed").unwrap();
        assert_eq!(first.unwrap().into_data().unwrap(), "first\n");
        release.notify_one();
        let rest = body.collect().await.unwrap().to_bytes();
        assert_eq!(rest, "second\n");
    });
    next(&c, &mut k);

    // An empty proxy path is redirected to `…/proxy/`, as kube-apiserver does.
    let resp = c.rt.block_on(async {
        let mut send = api_conn(&url, &ca).await;
        send.send_request(api_request(&c, "GET", "/api/v1/nodes/edge-1/proxy?x=1").body(Empty::new()).unwrap())
            .await
            .unwrap()
    });
    assert_eq!(resp.status(), 301);
    assert_eq!(resp.headers()["location"], "/api/v1/nodes/edge-1/proxy/?x=1");

    // Callers are authenticated as for any other path.
    let resp = c.rt.block_on(async {
        let mut send = api_conn(&url, &ca).await;
        let req = http::Request::get("/api/v1/nodes/edge-1/proxy/stats/summary").header("host", "x");
        send.send_request(req.body(Empty::new()).unwrap()).await.unwrap()
    });
    assert_eq!(resp.status(), 401);

    // `{name}:{port}` naming the kubelet's own port is the kubelet.
    let raw = format!("/api/v1/nodes/edge-1:{}/proxy/stats/summary", k.port);
    assert!(c.ok(&["get", "--raw", &raw]).contains("edge-1"));
    assert_identity(&next(&c, &mut k));

    // Upgrades through nodes/proxy are spliced.
    let req = api_request(&c, "POST", "/api/v1/nodes/edge-1/proxy/exec/default/web/httpd?command=sh")
        .header("connection", "Upgrade")
        .header("upgrade", "SPDY/3.1")
        .body(Empty::new())
        .unwrap();
    c.rt.block_on(upgrade_and_echo(&url, &ca, req));
    let seen = next(&c, &mut k);
    assert_eq!((seen.method.as_str(), seen.uri.as_str()), ("POST", "/exec/default/web/httpd?command=sh"));
    assert_identity(&seen);

    // Unknown node, a node without an address, a node whose kubelet is down.
    let out = c.kubectl(&["get", "--raw", "/api/v1/nodes/nope/proxy/stats/summary"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(r#"nodes "nope" not found"#), "{out:?}");
    add_node(&c, "bare", None, k.port);
    let out = c.kubectl(&["get", "--raw", "/api/v1/nodes/bare/proxy/stats/summary"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no preferred addresses found"), "{out:?}");
    let port = dead_port(&c);
    add_node(&c, "down", Some("127.0.0.1"), port);
    let out = c.kubectl(&["get", "--raw", "/api/v1/nodes/down/proxy/stats/summary"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("error trying to reach service: dial tcp 127.0.0.1:{port}: connect: connection refused")),
        "{err}"
    );
    add_node(&c, "metadata-ip", Some("169.254.169.254"), 10250);
    let out = c.kubectl(&["get", "--raw", "/api/v1/nodes/metadata-ip/proxy/stats/summary"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("address not allowed"), "{out:?}");
}

/// Runs `kubectl port-forward pod/web :80` until it reports its local port; returns the child
/// and the port.
fn port_forward(c: &Cluster, extra_env: &[(&str, &str)]) -> (std::process::Child, u16) {
    let mut cmd = Command::new("kubectl");
    cmd.env("KUBECONFIG", &c.kubeconfig)
        .env("HOME", c.dir.path())
        .args(["port-forward", "pod/web", ":80"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("kubectl");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Keeps draining after the first line: a closed pipe would end kubectl (SIGPIPE).
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("kubectl port-forward did not start: {}", String::from_utf8_lossy(&out.stderr));
        }
    };
    // "Forwarding from 127.0.0.1:PORT -> 80"
    let port = line
        .strip_prefix("Forwarding from 127.0.0.1:")
        .and_then(|r| r.split_once(' '))
        .and_then(|(p, _)| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected kubectl output {line:?}"));
    (child, port)
}

#[test]
fn port_forward_reaches_the_kubelet() {
    let c = Cluster::start();
    let mut k = c.rt.block_on(kubelet(c.server().ca_pem()));
    add_node(&c, "edge-1", Some("127.0.0.1"), k.port);
    add_pod(&c, "web", "edge-1");
    // kubectl refuses to forward to a pod that is not running.
    c.ok(&[
        "patch",
        "pod",
        "web",
        "--subresource",
        "status",
        "--type",
        "merge",
        "-p",
        r#"{"status":{"phase":"Running"}}"#,
    ]);

    // kubectl first asks for SPDY tunnelled in WebSocket; the kubelet is asked for plain SPDY.
    // Then with KUBECTL_PORT_FORWARD_WEBSOCKETS=false, kubectl's SPDY upgrade is spliced as is.
    for env in [&[][..], &[("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")][..]] {
        let (mut child, local) = port_forward(&c, env);
        let seen = next(&c, &mut k);
        assert_eq!((seen.method.as_str(), seen.uri.as_str()), ("POST", "/portForward/default/web"), "{env:?}");
        assert_identity(&seen);
        assert_eq!(seen.headers["upgrade"], "SPDY/3.1");
        assert_eq!(seen.headers["x-stream-protocol-version"], "portforward.k8s.io");
        assert!(seen.headers.get("sec-websocket-key").is_none());
        // A local connection makes kubectl open SPDY streams: control frames, version 3, reach
        // the kubelet through the tunnel.
        let _conn = std::net::TcpStream::connect(("127.0.0.1", local)).unwrap();
        let Ok(Some(first)) =
            c.rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), k.forwarded.recv()).await })
        else {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("{env:?}: no SPDY bytes reached the kubelet; kubectl: {}", String::from_utf8_lossy(&out.stderr));
        };
        assert_eq!(&first[..2], &[0x80, 0x03], "{env:?}: not a SPDY/3 control frame: {first:?}");
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[test]
fn kubelet_client_certificate_and_root_ca_in_every_namespace() {
    let c = Cluster::start();
    let server = c.server();
    let ca_der = pem_der(server.ca_pem());
    let cert_der = pem_der(&server.kubelet_client_cert().cert_pem);
    assert!(kubeedge_pki::verify_signed_by(&cert_der, &ca_der));
    assert_eq!(
        kubeedge_pki::subject(&cert_der).unwrap(),
        ("kube-apiserver-kubelet-client".to_owned(), vec!["kubeadm:cluster-admins".to_owned()])
    );

    // What a stream server trusts is the CA every namespace publishes, at start and later
    // (created by POST, as cloudcore creates `kubeedge`, or by server-side apply).
    c.ok(&["create", "namespace", "kubeedge"]);
    c.ok_stdin(&["apply", "--server-side", "-f", "-"], "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: applied\n");
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease", "kubeedge", "applied"] {
        let cm = c.json(&["get", "configmap", "kube-root-ca.crt", "-n", ns]);
        assert_eq!(cm["data"]["ca.crt"], server.ca_pem(), "{ns}");
    }
}
