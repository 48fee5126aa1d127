//! An HTTP/2 server with real TLS that records what it gets, standing in for the API server
//! where a test needs to decide how it answers (`lean_client`, `lease_renewer`).

#![allow(dead_code)] // not every test that shares this module uses all of it

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use tokio::net::TcpListener;

/// What the server saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub connection: usize,
    pub method: Method,
    pub path: String,
    pub authorization: String,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// An HTTP/2 server on loopback (TLS with ALPN `h2`): a path ending in `/gone` gets a 404
/// `Status`, `/busy` a 503, `/close` ends the connection without an answer, `/goaway` is answered and the
/// connection then closed gracefully (GOAWAY), anything else gets `{}`.
pub async fn server(ca: &kubeedge_pki::Ca) -> (u16, Arc<Mutex<Vec<Seen>>>) {
    let mut cfg = server_tls(ca);
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        for connection in 0.. {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, log) = (acceptor.clone(), log.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let Ok(mut h2) = h2::server::handshake(tls).await else { return };
                while let Some(Ok((req, mut respond))) = h2.accept().await {
                    let (head, mut body) = req.into_parts();
                    let mut bytes = Vec::new();
                    while let Some(Ok(chunk)) = body.data().await {
                        let _ = body.flow_control().release_capacity(chunk.len());
                        bytes.extend_from_slice(&chunk);
                    }
                    let header = |n: &str| {
                        head.headers.get(n).map(|v| v.to_str().unwrap_or_default().to_owned()).unwrap_or_default()
                    };
                    let path = head.uri.path_and_query().map_or(head.uri.path(), |p| p.as_str()).to_owned();
                    log.lock().unwrap().push(Seen {
                        connection,
                        method: head.method.clone(),
                        path: path.clone(),
                        authorization: header("authorization"),
                        content_type: header("content-type"),
                        body: bytes,
                    });
                    if path.ends_with("/close") {
                        return;
                    }
                    if path.ends_with("/goaway") {
                        // As kube-apiserver's --goaway-chance: this request is answered, no more.
                        h2.graceful_shutdown();
                    }
                    let (status, answer) = if path.ends_with("/busy") {
                        let s = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"the server is busy","reason":"ServiceUnavailable","code":503}"#;
                        (StatusCode::SERVICE_UNAVAILABLE, s)
                    } else if path.ends_with("/gone") {
                        let s = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"leases.coordination.k8s.io \"gone\" not found","reason":"NotFound","details":{"name":"gone","group":"coordination.k8s.io","kind":"leases"},"code":404}"#;
                        (StatusCode::NOT_FOUND, s)
                    } else {
                        (StatusCode::OK, "{}")
                    };
                    let Ok(mut send) =
                        respond.send_response(Response::builder().status(status).body(()).unwrap(), false)
                    else {
                        return;
                    };
                    let _ = send.send_data(Bytes::from_static(answer.as_bytes()), true);
                }
            });
        }
    });
    (port, seen)
}

/// TLS for 127.0.0.1 with a certificate of `ca`.
pub fn server_tls(ca: &kubeedge_pki::Ca) -> rustls::ServerConfig {
    let leaf = ca.issue_server(&[IpAddr::V4(Ipv4Addr::LOCALHOST)], &[]).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::Sec1(leaf.key_sec1.clone().into());
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.cert_der.clone().into()], key)
        .unwrap()
}

/// A client configuration for the server on `port`, trusting `ca`, with a bearer token.
pub fn config(port: u16, ca: &kubeedge_pki::Ca) -> kube::Config {
    let mut c = kube::Config::new(format!("https://127.0.0.1:{port}").parse().unwrap());
    c.root_cert = Some(vec![ca.cert_der().to_vec()]);
    c.auth_info.token = Some("the-token".to_owned().into());
    c
}
