//! viaduct over real mutual TLS on loopback: identities, refusals, caps, and the exact
//! handshake and frames of an upstream v1.15.4 edge.

use std::sync::Arc;
use std::time::Duration;

use kubeedge_model::{Content, Message};
use kubeedge_pki::{Ca, ExtKeyUsage, edge_csr};
use kubeedge_viaduct::{
    AuthMode, ClientOptions, Error, Identity, RawFrame, ServerOptions, accept, client_tls, connect, server_tls,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const PATIENCE: Duration = Duration::from_secs(60);

struct Pki {
    ca: Ca,
    server: kubeedge_pki::CertAndKey,
}

fn pki() -> Pki {
    let ca = Ca::generate().unwrap();
    let server = ca.issue_server(&["127.0.0.1".parse().unwrap()], &[]).unwrap();
    Pki { ca, server }
}

/// A certificate for `cn` (edge CSR subject style).
fn edge_cert(ca: &Ca, node: &str) -> (Vec<u8>, Vec<u8>) {
    let (csr, key) = edge_csr(node).unwrap();
    (ca.sign_csr(&csr, 365, &[ExtKeyUsage::ClientAuth]).unwrap(), key)
}

async fn serve_one(
    p: &Pki,
    opts: ServerOptions,
) -> (String, tokio::task::JoinHandle<Result<(Identity, Vec<Result<Message, String>>), Error>>) {
    let tls = tokio_rustls::TlsAcceptor::from(Arc::new(
        server_tls(p.ca.cert_der(), &p.server.cert_der, &p.server.key_sec1).unwrap(),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let (id, mut conn) = accept(tcp, tls, &opts).await?;
        let mut got = Vec::new();
        loop {
            match conn.recv().await {
                Ok(Some(m)) => {
                    let reply = Message::response_to(&m, Content::string("OK"));
                    let _ = conn.send(&reply).await;
                    got.push(Ok(m));
                }
                Ok(None) => break,
                Err(e) if e.is_recoverable() => got.push(Err(e.to_string())),
                Err(_) => break,
            }
        }
        Ok((id, got))
    });
    (addr, task)
}

fn client_opts(addr: &str, node: &str) -> ClientOptions {
    ClientOptions {
        server: addr.to_owned(),
        node_id: node.to_owned(),
        project_id: "e632aba927ea4ac2b575ec1603d56f10".to_owned(),
        max_message: 1024 * 1024,
        handshake_timeout: PATIENCE,
        features: Vec::new(),
    }
}

#[tokio::test]
async fn messages_flow_both_ways_with_the_node_identity() {
    let p = pki();
    let (addr, server) = serve_one(&p, ServerOptions::default()).await;
    let (cert, key) = edge_cert(&p.ca, "edge-1");
    let tls = Arc::new(client_tls(p.ca.cert_der(), &cert, &key).unwrap());
    let opts = ClientOptions { features: vec!["inventory".into(), "future".into()], ..client_opts(&addr, "edge-1") };
    let mut conn = connect(&opts, tls).await.unwrap();
    let mut msg = Message::build("websocket", "resource", "node", "keepalive", Content::string("ping"));
    msg.header.sync = true;
    conn.send(&msg).await.unwrap();
    let reply = tokio::time::timeout(PATIENCE, conn.recv()).await.unwrap().unwrap().unwrap();
    assert_eq!(reply.parent_id(), Some(msg.id()));
    assert_eq!(reply.content.as_str().as_deref(), Some("OK"));
    conn.close().await.unwrap();
    let (id, got) = tokio::time::timeout(PATIENCE, server).await.unwrap().unwrap().unwrap();
    assert_eq!(id.node_id, "edge-1");
    assert_eq!(id.project_id, "e632aba927ea4ac2b575ec1603d56f10");
    assert_eq!(id.cert_cn, "system:node:edge-1");
    assert!(id.has_feature("inventory") && id.has_feature("future") && !id.has_feature("other"));
    let first = got[0].as_ref().unwrap();
    assert!(!first.header.sync, "the writer clears sync, as upstream");
    assert_eq!(first.content.as_str().as_deref(), Some("ping"));
}

/// The 101 response echoes the announced features the server supports, and both ends see what
/// was agreed; with nothing agreed (an upstream edge, or a server supporting none of them) there
/// is no header and nothing is agreed.
#[tokio::test]
async fn the_handshake_agrees_on_the_features_both_ends_support() {
    let p = pki();
    let supported = vec!["inventory".to_owned(), "lease-renew".to_owned()];
    let (cert, key) = edge_cert(&p.ca, "edge-1");
    let tls = Arc::new(client_tls(p.ca.cert_der(), &cert, &key).unwrap());
    for (announced, server_supports, want) in [
        (vec!["lease-renew", "future", "inventory"], supported.clone(), vec!["lease-renew", "inventory"]),
        (vec!["lease-renew"], Vec::new(), vec![]),
        (vec![], supported.clone(), vec![]),
    ] {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(
            server_tls(p.ca.cert_der(), &p.server.cert_der, &p.server.key_sec1).unwrap(),
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let opts = ServerOptions { features: server_supports, ..Default::default() };
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let (id, conn) = accept(tcp, acceptor, &opts).await.unwrap();
            (id.features.clone(), conn.features().to_vec())
        });
        let features: Vec<String> = announced.iter().map(|s| (*s).to_owned()).collect();
        let opts = ClientOptions { features: features.clone(), ..client_opts(&addr, "edge-1") };
        let conn = connect(&opts, tls.clone()).await.unwrap();
        let (server_announced, server_agreed) = tokio::time::timeout(PATIENCE, server).await.unwrap().unwrap();
        assert_eq!(server_announced, features, "Identity.features is what the edge announced");
        assert_eq!(server_agreed, want, "announced {announced:?}");
        assert_eq!(conn.features(), want.as_slice(), "the edge sees what the server agreed to");
        assert_eq!(conn.has_feature("lease-renew"), want.contains(&"lease-renew"));
    }
}

/// What a server of ours answers on the wire: the header with the agreed features, or no
/// header at all when nothing is agreed (the 101 is then upstream's).
#[tokio::test]
async fn the_101_response_carries_the_header_only_when_something_is_agreed() {
    let p = pki();
    let (cert, key) = edge_cert(&p.ca, "edge-1");
    let tls = Arc::new(client_tls(p.ca.cert_der(), &cert, &key).unwrap());
    for (announce, want) in [(Some("lease-renew, future"), Some("lease-renew")), (Some("future"), None), (None, None)] {
        let opts = ServerOptions { features: vec!["inventory".into(), "lease-renew".into()], ..Default::default() };
        let (addr, _server) = serve_one(&p, opts).await;
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let mut s =
            tokio_rustls::TlsConnector::from(tls.clone()).connect("127.0.0.1".try_into().unwrap(), tcp).await.unwrap();
        let mut req = format!(
            "GET /e632aba927ea4ac2b575ec1603d56f10/edge-1/events HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             node_id: edge-1\r\nproject_id: e632aba927ea4ac2b575ec1603d56f10\r\nConnectionUse: msg\r\n"
        );
        if let Some(a) = announce {
            req.push_str(&format!("X-KubeEdge-Rs-Features: {a}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 1024];
        let n = s.read(&mut buf).await.unwrap();
        let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        let echoed = head.lines().find_map(|l| l.strip_prefix("x-kubeedge-rs-features:")).map(str::trim);
        assert_eq!(echoed, want, "{head}");
    }
}

#[tokio::test]
async fn a_certificate_for_another_node_is_refused_in_strict_mode() {
    let p = pki();
    let (addr, server) = serve_one(&p, ServerOptions::default()).await;
    let (cert, key) = edge_cert(&p.ca, "edge-2");
    let tls = Arc::new(client_tls(p.ca.cert_der(), &cert, &key).unwrap());
    let err = connect(&client_opts(&addr, "edge-1"), tls).await.err().unwrap();
    assert!(matches!(&err, Error::Refused(r) if r.starts_with("403")), "{err:?}");
    assert!(server.await.unwrap().is_err());
}

#[tokio::test]
async fn permissive_mode_accepts_upstreams_legacy_certificates() {
    let p = pki();
    // A v1.15 edge's certificate subject (CN=kubeedge.io, O=kubeEdge); the captured CSR's key
    // was not kept, so a CSR with the same subject stands in for it.
    let key = rcgen_legacy_csr();
    let cert = p.ca.sign_csr(&key.0, 365, &[ExtKeyUsage::ClientAuth]).unwrap();

    let (addr, strict) = serve_one(&p, ServerOptions::default()).await;
    let tls = Arc::new(client_tls(p.ca.cert_der(), &cert, &key.1).unwrap());
    assert!(connect(&client_opts(&addr, "edge-capture"), tls.clone()).await.is_err());
    assert!(strict.await.unwrap().is_err());

    let (addr, permissive) = serve_one(&p, ServerOptions { auth: AuthMode::Permissive, ..Default::default() }).await;
    let conn = connect(&client_opts(&addr, "edge-capture"), tls).await.unwrap();
    conn.close().await.unwrap();
    let (id, _) = permissive.await.unwrap().unwrap();
    assert_eq!((id.node_id.as_str(), id.cert_cn.as_str()), ("edge-capture", "kubeedge.io"));
    assert!(id.features.is_empty(), "no features header: the handshake is upstream's");
}

/// A CSR with the v1.15 subject, and its SEC1 key.
fn rcgen_legacy_csr() -> (Vec<u8>, Vec<u8>) {
    kubeedge_pki::csr_with_subject(&[
        ("C", "CN"),
        ("ST", "Zhejiang"),
        ("L", "Hangzhou"),
        ("O", "kubeEdge"),
        ("CN", "kubeedge.io"),
    ])
    .unwrap()
}

#[tokio::test]
async fn no_client_certificate_no_connection() {
    let p = pki();
    let (addr, server) = serve_one(&p, ServerOptions::default()).await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(p.ca.cert_der().to_vec().into()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    assert!(connect(&client_opts(&addr, "edge-1"), Arc::new(tls)).await.is_err());
    assert!(server.await.unwrap().is_err());
}

/// The v1.15.4 edge's exact upgrade request (Go-canonicalised header names, `Connectionuse`
/// repeated as on its 4th dial attempt), then its first frames byte for byte.
#[tokio::test]
async fn an_upstream_v1_15_handshake_and_frames_are_accepted() {
    let p = pki();
    // A server of ours supporting features answers an upstream edge as upstream does.
    let opts = ServerOptions { features: vec!["inventory".into(), "lease-renew".into()], ..Default::default() };
    let (addr, server) = serve_one(&p, opts).await;
    let (cert, key) = edge_cert(&p.ca, "edge-capture");
    let tls = Arc::new(client_tls(p.ca.cert_der(), &cert, &key).unwrap());
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut s = tokio_rustls::TlsConnector::from(tls).connect("127.0.0.1".try_into().unwrap(), tcp).await.unwrap();
    let hs: serde_json::Value = serde_json::from_slice(
        &std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/upstream/handshake.json")).unwrap(),
    )
    .unwrap();
    let mut req = format!("GET {} HTTP/1.1\r\n", hs["path"].as_str().unwrap());
    for h in hs["retry_attempt_4_headers"].as_array().unwrap() {
        req.push_str(&format!("{}: {}\r\n", h[0].as_str().unwrap(), h[1].as_str().unwrap()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("x-kubeedge-rs-features"), "no features header: {head}");

    // The edge's frames as it wrote them (text, trailing newline).
    let transcript =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/upstream/transcript.jsonl"))
            .unwrap();
    let frames: Vec<String> = transcript
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["dir"] == "edge->cloud")
        .filter_map(|r| r["raw"].as_str().map(str::to_owned))
        .take(20)
        .collect();
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        s,
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    use futures::SinkExt;
    for f in &frames {
        ws.send(RawFrame::text(f.clone())).await.unwrap();
    }
    ws.send(RawFrame::binary(frames[0].clone().into_bytes())).await.unwrap();
    ws.send(RawFrame::text("this is not json\n")).await.unwrap();
    ws.send(RawFrame::text(frames[1].clone())).await.unwrap();
    ws.close(None).await.unwrap();
    let (id, got) = tokio::time::timeout(PATIENCE, server).await.unwrap().unwrap().unwrap();
    assert_eq!(id.node_id, "edge-capture");
    assert_eq!(got.len(), frames.len() + 3);
    assert!(got[..frames.len() + 1].iter().all(Result::is_ok), "{got:?}");
    assert!(got[frames.len() + 1].is_err(), "the malformed frame is reported");
    assert!(got[frames.len() + 2].is_ok(), "and the connection carries on");
}

#[tokio::test]
async fn oversized_messages_are_refused() {
    let p = pki();
    let (addr, server) = serve_one(&p, ServerOptions { max_message: 4096, ..Default::default() }).await;
    let (cert, key) = edge_cert(&p.ca, "edge-1");
    let tls = Arc::new(client_tls(p.ca.cert_der(), &cert, &key).unwrap());
    let mut conn = connect(&client_opts(&addr, "edge-1"), tls).await.unwrap();
    conn.send(&Message::build("edged", "meta", "default/pod/p", "update", Content::string(&"x".repeat(100))))
        .await
        .unwrap();
    let _ = conn
        .send(&Message::build("edged", "meta", "default/pod/p", "update", Content::string(&"x".repeat(10_000))))
        .await;
    let (_, got) = tokio::time::timeout(PATIENCE, server).await.unwrap().unwrap().unwrap();
    assert_eq!(got.len(), 1, "the oversized frame ends the connection; only the small message arrived");
}

/// The server's cap is a read cap: an edge's frame over it is refused from its header (the
/// error says size and limit), while the server may still write larger messages (CloudHub takes
/// 8 MiB from edges and sends them up to 32 MiB).
#[tokio::test]
async fn the_server_cap_limits_what_it_reads_not_what_it_writes() {
    let p = pki();
    let tls = tokio_rustls::TlsAcceptor::from(Arc::new(
        server_tls(p.ca.cert_der(), &p.server.cert_der, &p.server.key_sec1).unwrap(),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let big =
        Message::build("edgecontroller", "resource", "default/pod/p", "update", Content::string(&"y".repeat(20_000)));
    let down = big.clone();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let (_, mut conn) = accept(tcp, tls, &ServerOptions { max_message: 4096, ..Default::default() }).await.unwrap();
        conn.send(&down).await.unwrap();
        conn.recv().await.map(|_| ()).map_err(|e| e.too_large())
    });
    let (cert, key) = edge_cert(&p.ca, "edge-1");
    let tls = Arc::new(client_tls(p.ca.cert_der(), &cert, &key).unwrap());
    let mut conn = connect(&client_opts(&addr, "edge-1"), tls).await.unwrap();
    let got = tokio::time::timeout(PATIENCE, conn.recv()).await.unwrap().unwrap().unwrap();
    assert_eq!(got.content, big.content, "20 kB down through a 4 kB read cap");
    let up = Message::build("edged", "meta", "default/pod/p", "update", Content::string(&"x".repeat(10_000)));
    let _ = conn.send(&up).await;
    let refused = tokio::time::timeout(PATIENCE, server).await.unwrap().unwrap();
    let (size, limit) = refused.expect_err("refused").expect("as too large");
    assert!(size > 10_000 && limit == 4096, "{size} / {limit}");
}
