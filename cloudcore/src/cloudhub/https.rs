//! CloudHub's join API on :10002 (upstream `cloudhub/servers/httpserver`), over TLS ≥ 1.2 with
//! an optional client certificate:
//!
//! - `GET /ca.crt` → the CA certificate, DER.
//! - `GET /edge.crt` with a DER CSR body, a `NodeName` header, and either
//!   `Authorization: Bearer {jwt}` (first join) or the node's current client certificate
//!   (rotation) → the signed certificate, DER. `ExtKeyUsages` (a JSON array of Go
//!   `x509.ExtKeyUsage` numbers: 1 ServerAuth, 2 ClientAuth) is honoured; default ClientAuth.
//! - `GET /node/{name}` → 200 `Node found` or 404 `Node not found` (what `keadm join` checks).
//!
//! Unlike upstream, the CSR must name the node it is for (`CN=system:node:{NodeName}`,
//! `O=system:nodes`), and a rotating certificate must belong to that node; the permissive mode
//! also accepts v1.15's legacy subject (`CN=kubeedge.io`). Bodies are capped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kubeedge_pki::{Ca, CertAndKey, ExtKeyUsage};
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The largest request body accepted (a CSR is a few hundred bytes).
pub const MAX_BODY: usize = 64 * 1024;

/// What the join API needs.
pub struct JoinApi {
    /// The cluster CA.
    pub ca: Arc<Ca>,
    /// Days an edge certificate is valid (`edgeCertSigningDuration`).
    pub signing_days: u32,
    /// Accept v1.15's legacy certificate subject (`CN=kubeedge.io`, `O=kubeEdge`).
    pub permissive: bool,
    /// For `/node/{name}`.
    pub client: kube::Client,
}

/// The TLS config of :10002: the serving certificate, TLS ≥ 1.2, a client certificate
/// requested (rotation) but not required (first join uses the token).
pub fn tls_config(ca: &Ca, server: &CertAndKey) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca.cert_der().to_vec()))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from(server.cert_der.clone())],
            kubeedge_pki::rustls_key(&server.key_sec1),
        )?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves the join API on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, tls: rustls::ServerConfig, api: Arc<JoinApi>, shutdown: CancellationToken) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    if let Ok(addr) = listener.local_addr() {
        info!(address = %addr, "CloudHub HTTPS server listening.");
    }
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "Accept failed.");
                    continue;
                }
            },
        };
        let (acceptor, api, shutdown) = (acceptor.clone(), api.clone(), shutdown.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(t)) => t,
                _ => {
                    debug!(%peer, "TLS handshake failed.");
                    return;
                }
            };
            let client_cert = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec());
            let svc = service_fn(move |req| {
                let (api, client_cert) = (api.clone(), client_cert.clone());
                async move { Ok::<_, Infallible>(handle(&api, req, client_cert.as_deref(), peer).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(tls), svc);
            tokio::select! {
                _ = conn => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

type Body = Full<Bytes>;

fn text(code: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_owned())));
    *r.status_mut() = code;
    r.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

fn der(body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/octet-stream"));
    r
}

async fn handle(api: &JoinApi, req: Request<Incoming>, client_cert: Option<&[u8]>, peer: SocketAddr) -> Response<Body> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    let path = req.uri().path().to_owned();
    match path.as_str() {
        "/ca.crt" => der(api.ca.cert_der().to_vec()),
        "/edge.crt" => match sign(api, req, client_cert).await {
            Ok(cert) => {
                info!(%peer, "Signed an edge certificate.");
                der(cert)
            }
            Err((code, why)) => {
                warn!(%peer, reason = %why, "Refused an edge certificate request.");
                text(code, &why)
            }
        },
        p if p.starts_with("/node/") => {
            let name = &p["/node/".len()..];
            let nodes: Api<Node> = Api::all(api.client.clone());
            match nodes.get_opt(name).await {
                Ok(Some(_)) => text(StatusCode::OK, "Node found"),
                Ok(None) => text(StatusCode::NOT_FOUND, "Node not found"),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("checking the node: {e}")),
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found"),
    }
}

type Refusal = (StatusCode, String);

async fn sign(api: &JoinApi, req: Request<Incoming>, client_cert: Option<&[u8]>) -> Result<Vec<u8>, Refusal> {
    // HeaderMap compares names case-insensitively: Go sends `Nodename`.
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::trim).map(str::to_owned);
    let node = header("NodeName")
        .filter(|n| !n.is_empty())
        .ok_or((StatusCode::BAD_REQUEST, "the NodeName header is required".into()))?;
    let usages = match header("ExtKeyUsages") {
        None => vec![ExtKeyUsage::ClientAuth],
        Some(v) => parse_usages(&v).ok_or((StatusCode::BAD_REQUEST, format!("invalid ExtKeyUsages {v:?}")))?,
    };
    let bearer = header("Authorization").and_then(|a| a.strip_prefix("Bearer ").map(str::to_owned));
    // Authenticate: the node's current certificate (rotation), else the token (first join).
    let by_cert = match client_cert {
        Some(cert) if kubeedge_pki::verify_signed_by(cert, api.ca.cert_der()) => {
            let (cn, orgs) = kubeedge_pki::subject(cert).map_err(|e| (StatusCode::UNAUTHORIZED, e.to_string()))?;
            if !subject_matches(&cn, &orgs, &node, api.permissive) {
                return Err((StatusCode::FORBIDDEN, format!("certificate {cn:?} may not renew node {node:?}")));
            }
            true
        }
        _ => false,
    };
    if !by_cert {
        let jwt =
            bearer.ok_or((StatusCode::UNAUTHORIZED, "a bearer token or a client certificate is required".into()))?;
        api.ca.verify_jwt(&jwt).map_err(|e| (StatusCode::UNAUTHORIZED, e.to_string()))?;
    }
    let body = read_capped(req.into_body()).await?;
    let csr_subject =
        kubeedge_pki::csr_subject(&body).map_err(|e| (StatusCode::BAD_REQUEST, format!("invalid CSR: {e}")))?;
    if !subject_matches(&csr_subject.0, &csr_subject.1, &node, api.permissive) {
        return Err((
            StatusCode::FORBIDDEN,
            format!(
                "the CSR subject CN={} O={:?} is not node {node:?} (CN=system:node:{node}, O=system:nodes)",
                csr_subject.0, csr_subject.1
            ),
        ));
    }
    api.ca
        .sign_csr(&body, api.signing_days, &usages)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("signing the CSR: {e}")))
}

fn subject_matches(cn: &str, orgs: &[String], node: &str, permissive: bool) -> bool {
    let strict = cn == format!("system:node:{node}") && orgs.iter().any(|o| o == "system:nodes");
    let legacy = cn == "kubeedge.io" && orgs.iter().any(|o| o.eq_ignore_ascii_case("kubeedge"));
    strict || (permissive && legacy)
}

fn parse_usages(v: &str) -> Option<Vec<ExtKeyUsage>> {
    let nums: Vec<i64> = serde_json::from_str(v).ok()?;
    nums.into_iter()
        .map(|n| match n {
            1 => Some(ExtKeyUsage::ServerAuth),
            2 => Some(ExtKeyUsage::ClientAuth),
            _ => None,
        })
        .collect()
}

async fn read_capped(body: Incoming) -> Result<Vec<u8>, Refusal> {
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes().to_vec()),
        Err(_) => Err((StatusCode::PAYLOAD_TOO_LARGE, format!("the body is larger than {MAX_BODY} bytes"))),
    }
}
