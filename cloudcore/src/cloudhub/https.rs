//! CloudHub's join API on :10002 (upstream `cloudhub/servers/httpserver`), over TLS ≥ 1.2 with
//! an optional client certificate:
//!
//! - `GET /ca.crt` → the CA certificate, DER.
//! - `GET /edge.crt` with a DER CSR body, a `NodeName` header, and either
//!   `Authorization: Bearer {jwt}` (first join) or the node's current client certificate
//!   (rotation) → the node's certificate, DER.
//! - `GET /node/{name}` → 200 `Node found` or 404 `Node not found` (what `keadm join` checks).
//! - `POST /task/{type}/name/{job}/node/{node}/status` → a node's report on its task, with
//!   the node's client certificate ([`super::task_report`]).
//!
//! Unlike upstream:
//! - the certificate is **built, not copied**: only the CSR's public key is used; it says
//!   `CN=system:node:{NodeName}`, `O=system:nodes`, ExtKeyUsage clientAuth only, no SANs, so
//!   it can never claim another identity nor serve as CloudHub (`ExtKeyUsages` is ignored);
//! - the CSR must still name the node it is for (`CN=system:node:{NodeName}`,
//!   `O=system:nodes`), and a rotating certificate must belong to that node; the permissive
//!   mode (`nodeIdentityCheck: false`) also accepts v1.15's legacy subject (`CN=kubeedge.io`);
//! - **a join token cannot take over a node**: upstream's shared token issues no certificate
//!   for a node that is connected, nor for a Node an edge registered whose certificate may
//!   still be valid (the Node's [`CERT_NOT_AFTER`] annotation, written at each issue, must be
//!   in the past; a Node the operator created and no edge used yet is free). A token bound to
//!   the node (`keadm gettoken --node NAME`) is the operator's explicit
//!   re-join and may. Bodies are capped.

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
use kube::api::{Patch, PatchParams};
use kubeedge_pki::{Ca, CertAndKey, NodeCsrError};
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::session::Hub;

/// The largest request body accepted (a CSR is a few hundred bytes); the CSR checks
/// ([`kubeedge_pki::check_node_csr`]) refuse a larger one too.
pub const MAX_BODY: usize = kubeedge_pki::MAX_CSR_BODY;

/// Node annotation recording when the node's latest certificate expires (RFC 3339), written
/// when the join API issues one.
pub const CERT_NOT_AFTER: &str = "kubeedge.io/client-certificate-not-after";
/// Node annotation set when an edge registers its Node through EdgeController: an edge holds
/// a certificate for it, valid until [`CERT_NOT_AFTER`] says otherwise.
pub const REGISTERED_BY_EDGE: &str = "kubeedge.io/registered-by-edge";

/// What the join API needs.
pub struct JoinApi {
    /// The cluster CA.
    pub ca: Arc<Ca>,
    /// Days an edge certificate is valid (`edgeCertSigningDuration`).
    pub signing_days: u32,
    /// Accept v1.15's legacy certificate subject (`CN=kubeedge.io`, `O=kubeEdge`).
    pub permissive: bool,
    /// For `/node/{name}` and the registration checks.
    pub client: kube::Client,
    /// The connected nodes.
    pub hub: Arc<Hub>,
    /// Where node task reports go (the TaskManager's inbox); `None` in tests without one.
    pub bus: Option<kubeedge_beehive::Bus>,
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

/// How long a client may take to send a request's head (also the idle time allowed between
/// requests on a kept-alive connection).
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves the join API on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, tls: rustls::ServerConfig, api: Arc<JoinApi>, shutdown: CancellationToken) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    if let Ok(addr) = listener.local_addr() {
        info!(address = %addr, "CloudHub HTTPS server listening.");
    }
    let mut backoff = kubeedge_telemetry::AcceptBackoff::new("cloudhub-https");
    // Which connections are idle (a TLS handshake under way, or no request in flight): a
    // connection that completed no request head within 10 s is closed (hyper's header timer
    // does not cover a client silent after TLS: version detection has no timeout), and out of
    // file descriptors the one idle longest is closed so that accepting can go on. No cap.
    let conns =
        kubeedge_telemetry::Connections::new("cloudhub-https", kubeedge_telemetry::conns::Limits::with_cap(usize::MAX));
    let mut sweep = tokio::time::interval(kubeedge_telemetry::conns::SWEEP_EVERY);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = sweep.tick() => {
                conns.sweep();
                continue;
            }
            a = listener.accept() => match a {
                Ok(a) => {
                    backoff.succeeded();
                    a
                }
                Err(e) => {
                    conns.on_accept_error(&e);
                    backoff.failed(&e).await;
                    continue;
                }
            },
        };
        let (acceptor, api, shutdown) = (acceptor.clone(), api.clone(), shutdown.clone());
        let registered = Arc::new(conns.register());
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(tcp));
            let tls = tokio::select! {
                t = handshake => match t {
                    Ok(Ok(t)) => t,
                    _ => {
                        debug!(%peer, "TLS handshake failed.");
                        return;
                    }
                },
                () = registered.shed() => {
                    debug!(%peer, "Dropped a pending TLS handshake to free a file descriptor.");
                    return;
                }
            };
            let client_cert = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec());
            let svc = service_fn({
                let registered = registered.clone();
                move |req| {
                    // Busy from a complete request head until the answer is sent.
                    let busy = registered.request();
                    let (api, client_cert) = (api.clone(), client_cert.clone());
                    async move {
                        let resp = handle(&api, req, client_cert.as_deref(), peer).await;
                        Ok::<_, Infallible>(resp.map(|body| {
                            body.map_frame(move |frame| {
                                let _busy = &busy;
                                frame
                            })
                        }))
                    }
                }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // A head sent slowly, or never after a keep-alive answer, closes the connection.
            builder.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
            let conn = builder.serve_connection(TokioIo::new(tls), svc);
            tokio::pin!(conn);
            let mut closing = false;
            loop {
                tokio::select! {
                    _ = conn.as_mut() => return,
                    _ = shutdown.cancelled() => return,
                    // Idle: closed at once; a request that started meanwhile is answered first.
                    () = registered.shed(), if !closing => {
                        if !registered.is_busy() {
                            return;
                        }
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
            }
        });
    }
}

pub(super) type Body = Full<Bytes>;

pub(super) fn text(code: StatusCode, body: &str) -> Response<Body> {
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
    let path = req.uri().path().to_owned();
    if super::task_report::is_task_path(&path) {
        if req.method() != Method::POST {
            return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        }
        return super::task_report::handle(api, req, client_cert).await;
    }
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
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
    if !kubeedge_viaduct::valid_node_name(&node) {
        return Err((StatusCode::BAD_REQUEST, format!("invalid NodeName {node:?}")));
    }
    let bearer = header("Authorization").and_then(|a| a.strip_prefix("Bearer ").map(str::to_owned));
    // Authenticate: the node's current certificate (rotation), else the token (first join).
    let by_cert = match client_cert {
        Some(cert) if kubeedge_pki::verify_signed_by(cert, api.ca.cert_der()) => {
            let (cn, orgs) = kubeedge_pki::subject(cert).map_err(|e| (StatusCode::UNAUTHORIZED, e.to_string()))?;
            if !kubeedge_pki::node_subject_matches(&cn, &orgs, &node, api.permissive) {
                return Err((StatusCode::FORBIDDEN, format!("certificate {cn:?} may not renew node {node:?}")));
            }
            // The certificate the node's live session uses may always renew itself (also when
            // the reply to an earlier renewal was lost).
            let live = api.hub.session_cert(&node).is_some_and(|sha| sha == kubeedge_pki::ca_hash(cert));
            if !live && cn == format!("system:node:{node}") {
                not_superseded(api, &node, cert).await?;
            } else if !live {
                // v1.15's shared subject names no node: it may not take one over either.
                may_take(api, &node).await?;
            }
            true
        }
        _ => false,
    };
    if !by_cert {
        let jwt =
            bearer.ok_or((StatusCode::UNAUTHORIZED, "a bearer token or a client certificate is required".into()))?;
        let claims = api.ca.verify_jwt(&jwt).map_err(|e| (StatusCode::UNAUTHORIZED, e.to_string()))?;
        match claims.node {
            Some(bound) if bound != node => {
                return Err((
                    StatusCode::FORBIDDEN,
                    format!("this join token admits node {bound:?} only, not {node:?}"),
                ));
            }
            Some(_) => info!(node, "Re-join with a token bound to the node."),
            None => may_take(api, &node).await?,
        }
    }
    let body = read_capped(req.into_body()).await?;
    kubeedge_pki::check_node_csr(&body, &node, api.permissive).map_err(|e| match e {
        NodeCsrError::TooLarge => too_large(),
        NodeCsrError::Invalid(e) => (StatusCode::BAD_REQUEST, format!("invalid CSR: {e}")),
        e @ NodeCsrError::Subject { .. } => (StatusCode::FORBIDDEN, e.to_string()),
    })?;
    let valid_for = std::time::Duration::from_secs(u64::from(api.signing_days) * 86_400);
    let cert = api
        .ca
        .issue_node_client(&body, &node, valid_for)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("signing the CSR: {e}")))?;
    record_not_after(api, &node, &cert).await?;
    Ok(cert)
}

/// The recorded expiry of `node`'s latest certificate: `Ok(None)` when there is no Node or no
/// record; an unreadable record is an error (fail closed).
async fn recorded_not_after(
    api: &JoinApi,
    node: &str,
) -> Result<Option<(Node, Option<k8s_openapi::jiff::Timestamp>)>, Refusal> {
    let nodes: Api<Node> = Api::all(api.client.clone());
    let existing = nodes
        .get_opt(node)
        .await
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, format!("checking node {node:?}: {e}")))?;
    let Some(existing) = existing else { return Ok(None) };
    let recorded = existing.metadata.annotations.as_ref().and_then(|a| a.get(CERT_NOT_AFTER)).cloned();
    let parsed = match recorded {
        None => None,
        Some(t) => Some(t.parse::<k8s_openapi::jiff::Timestamp>().map_err(|_| {
            (StatusCode::FORBIDDEN, format!("node {node:?} has an unreadable {CERT_NOT_AFTER} annotation {t:?}"))
        })?),
    };
    Ok(Some((existing, parsed)))
}

/// A rotation must present the node's latest certificate, not one it has replaced since (a
/// leaked old certificate must not mint a newer one). Certificates are issued for the same
/// duration, so an older one expires earlier than the recorded latest.
async fn not_superseded(api: &JoinApi, node: &str, cert: &[u8]) -> Result<(), Refusal> {
    let (_, not_after) = kubeedge_pki::validity(cert).map_err(|e| (StatusCode::UNAUTHORIZED, e.to_string()))?;
    if let Some((_, Some(latest))) = recorded_not_after(api, node).await?
        && not_after + 1 < latest.as_second()
    {
        return Err((
            StatusCode::FORBIDDEN,
            format!(
                "this certificate of node {node:?} was superseded by a newer one (valid until {latest}); \
                 rotate with the current certificate, or re-join with a token bound to the node \
                 (keadm gettoken --node {node})"
            ),
        ));
    }
    Ok(())
}

/// Whether upstream's shared token may issue a certificate for `node`: not while it is
/// connected, and not while it is registered with a certificate that may still be valid.
async fn may_take(api: &JoinApi, node: &str) -> Result<(), Refusal> {
    let rejoin = format!("to re-join it, use a token bound to the node (keadm gettoken --node {node})");
    if api.hub.is_connected(node) {
        return Err((
            StatusCode::FORBIDDEN,
            format!("node {node:?} is connected; a shared join token cannot replace it: {rejoin}"),
        ));
    }
    let Some((existing, not_after)) = recorded_not_after(api, node).await? else { return Ok(()) };
    let annotations = existing.metadata.annotations.unwrap_or_default();
    match not_after {
        Some(t) if t < k8s_openapi::jiff::Timestamp::now() => Ok(()),
        // A Node the operator created, never used by an edge: the first join.
        None if !annotations.contains_key(REGISTERED_BY_EDGE) => Ok(()),
        Some(t) => Err((
            StatusCode::FORBIDDEN,
            format!("node {node:?} is registered and its certificate is valid until {t}; {rejoin}, or delete the Node"),
        )),
        None => Err((
            StatusCode::FORBIDDEN,
            format!("node {node:?} is registered and its certificate may still be valid; {rejoin}, or delete the Node"),
        )),
    }
}

/// Notes the new certificate's expiry on the Node (when it exists yet), for [`may_take`] and
/// [`not_superseded`]. A certificate whose issue cannot be recorded is not handed out.
async fn record_not_after(api: &JoinApi, node: &str, cert: &[u8]) -> Result<(), Refusal> {
    let internal = |why: String| (StatusCode::INTERNAL_SERVER_ERROR, why);
    let (_, not_after) = kubeedge_pki::validity(cert).map_err(|e| internal(e.to_string()))?;
    let t = k8s_openapi::jiff::Timestamp::from_second(not_after).map_err(|e| internal(e.to_string()))?;
    let nodes: Api<Node> = Api::all(api.client.clone());
    let patch = serde_json::json!({"metadata": {"annotations": {CERT_NOT_AFTER: t.to_string()}}});
    match nodes.patch(node, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => {
            warn!(node, error = %e, "Recording the certificate's expiry on the Node failed; the certificate is withheld.");
            Err((StatusCode::SERVICE_UNAVAILABLE, format!("recording the certificate on node {node:?}: {e}")))
        }
    }
}

async fn read_capped(body: Incoming) -> Result<Vec<u8>, Refusal> {
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes().to_vec()),
        Err(_) => Err(too_large()),
    }
}

fn too_large() -> Refusal {
    (StatusCode::PAYLOAD_TOO_LARGE, format!("the body is larger than {MAX_BODY} bytes"))
}
