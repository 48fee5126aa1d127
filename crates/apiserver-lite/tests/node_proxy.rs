//! `pods/log` and `pods/exec` reach the node's kubelet endpoint, as through kube-apiserver.
//! The node here is a small HTTPS server standing in for a kubelet (edged's server arrives
//! later): it serves a log and, for exec, answers 101 and echoes the upgraded stream.

mod common;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use common::Cluster;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Starts the fake kubelet; returns its port and a receiver of the paths it was asked for.
async fn kubelet() -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let pki = apiserver_lite::tls::Pki::generate().unwrap();
    let (_, config) = pki.issue_server(&["127.0.0.1"]).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let svc = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let _ = tx.send(req.uri().to_string());
                        if req.uri().path().starts_with("/exec/") {
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
                            let resp = http::Response::builder()
                                .status(101)
                                .header("connection", "Upgrade")
                                .header("upgrade", "websocket")
                                .body(Full::new(Bytes::new()))
                                .unwrap();
                            return Ok::<_, Infallible>(resp);
                        }
                        Ok(http::Response::new(Full::new(Bytes::from_static(b"hello from the node\n"))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    (port, rx)
}

#[test]
fn logs_and_exec_go_to_the_node() {
    let c = Cluster::start();
    let (port, mut asked) = c.rt.block_on(kubelet());
    let node = format!(
        r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"edge-1"}},"status":{{"addresses":[{{"type":"InternalIP","address":"127.0.0.1"}}],"daemonEndpoints":{{"kubeletEndpoint":{{"Port":{port}}}}}}}}}"#
    );
    c.ok_stdin(&["create", "-f", "-"], &node);
    c.ok(&["patch", "node", "edge-1", "--subresource", "status", "--type", "merge", "-p",
        &format!(r#"{{"status":{{"addresses":[{{"type":"InternalIP","address":"127.0.0.1"}}],"daemonEndpoints":{{"kubeletEndpoint":{{"Port":{port}}}}}}}}}"#)]);
    c.ok_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  nodeName: edge-1\n  containers:\n  - name: httpd\n    image: busybox\n",
    );

    let logs = c.ok(&["logs", "web", "--tail", "5"]);
    assert_eq!(logs, "hello from the node\n");
    let path = c.rt.block_on(asked.recv()).unwrap();
    assert_eq!(path, "/containerLogs/default/web/httpd?tailLines=5");

    // exec: the upgrade is spliced through; bytes written come back.
    let server = c.server();
    let (url, ca) = (server.url(), server.ca_pem().to_owned());
    let token = server.admin_token().to_owned();
    c.rt.block_on(async move {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(kubeedge_pki::parse_pem(&ca).unwrap().1.into()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let addr = url.trim_start_matches("https://").to_owned();
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(conn.with_upgrades());
        let req = http::Request::builder()
            .uri("/api/v1/namespaces/default/pods/web/exec?command=sh&stdin=true&stdout=true")
            .header("host", addr)
            .header("authorization", format!("Bearer {token}"))
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 101, "{:?}", resp.into_body().collect().await.map(|b| b.to_bytes()));
        let mut io = TokioIo::new(hyper::upgrade::on(resp).await.unwrap());
        io.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        io.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
    });
    let path = c.rt.block_on(asked.recv()).unwrap();
    assert_eq!(path, "/exec/default/web/httpd?command=sh&stdin=true&stdout=true");

    // A pod without a node cannot be reached.
    c.ok_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: idle\nspec:\n  containers:\n  - name: c\n    image: busybox\n",
    );
    let out = c.kubectl(&["logs", "idle"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not have a host assigned"));
}
