//! The tunnel server on `tunnelPort`: TLS with the hub CA requiring the node's client
//! certificate, then the WebSocket upgrade on `/v1/kubeedge/connect` with upstream's headers
//! `SessionHostNameOverride` and `SessionInternalIP`. With `nodeIdentityCheck` (our default)
//! the certificate must be `system:node:{SessionHostNameOverride}`: an edge can only open the
//! tunnel of its own node (upstream trusts the header).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use kubeedge_beehive::Spawner;
use kubeedge_stream::ws::{FrameReader, FrameWriter, Role};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::endpoint::Endpoints;
use super::metrics::StreamMetrics;
use super::registry::Registry;
use super::session;

/// The tunnel's path.
pub const CONNECT_PATH: &str = "/v1/kubeedge/connect";
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// TLS and the HTTP upgrade together.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Numbers sessions, so a node's old session never removes its replacement.
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// What the accept loop needs.
#[derive(Clone)]
pub struct Tunnel {
    /// TLS requiring a node certificate of the hub CA.
    pub tls: tokio_rustls::TlsAcceptor,
    /// Where sessions are registered.
    pub registry: Registry,
    /// `nodeIdentityCheck`: the certificate must be the node's.
    pub identity_check: bool,
    /// The module's spawner.
    pub spawner: Spawner,
    /// Points a node's kubelet endpoint at this cloudcore when its session starts.
    pub endpoints: Endpoints,
    /// Sessions and streams.
    pub metrics: StreamMetrics,
}

fn answer(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(text.to_owned())));
    *r.status_mut() = status;
    r
}

/// Accepts edges until `stop`.
pub async fn serve(listener: TcpListener, t: Tunnel, stop: CancellationToken) {
    let spawner = t.spawner.clone();
    // One tunnel per node; the cap only bounds what a flood of half-open handshakes can take.
    super::accept_loop(listener, stop.clone(), spawner, "tunnel", 16_384, move |tcp, peer| {
        let (t, stop) = (t.clone(), stop.clone());
        async move {
            if let Err(e) = connection(tcp, peer, &t, &stop).await {
                debug!(%peer, error = %e, "A tunnel connection failed.");
            }
        }
    })
    .await;
}

async fn connection(
    tcp: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    t: &Tunnel,
    stop: &CancellationToken,
) -> Result<(), String> {
    let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, t.tls.accept(tcp))
        .await
        .map_err(|_| "no TLS handshake within 10 s".to_owned())?
        .map_err(|e| format!("TLS: {e}"))?;
    let cn = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| kubeedge_pki::subject(c).ok())
        .map(|(cn, _)| cn)
        .unwrap_or_default();
    let t2 = t.clone();
    let stop2 = stop.clone();
    let service = service_fn(move |mut req: Request<Incoming>| {
        let (t, stop, cn) = (t2.clone(), stop2.clone(), cn.clone());
        async move {
            if req.uri().path() != CONNECT_PATH {
                return Ok::<_, Infallible>(answer(StatusCode::NOT_FOUND, "404 page not found"));
            }
            let h = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            let (node, mut ip, key) = (h("SessionHostNameOverride"), h("SessionInternalIP"), h("Sec-WebSocket-Key"));
            if ip.is_empty() {
                // As upstream: the peer's address when the edge does not say.
                ip = peer.ip().to_string();
            }
            if !kubeedge_model::valid_node_name(&node) {
                return Ok(answer(StatusCode::BAD_REQUEST, "SessionHostNameOverride is not a valid node name"));
            }
            if key.is_empty() || !h("Upgrade").eq_ignore_ascii_case("websocket") {
                return Ok(answer(
                    StatusCode::BAD_REQUEST,
                    "a WebSocket upgrade with SessionHostNameOverride is required",
                ));
            }
            if t.identity_check && cn != format!("system:node:{node}") {
                warn!(node, certificate = %cn, "Refusing a tunnel: the certificate is not the node's.");
                return Ok(answer(StatusCode::FORBIDDEN, "the client certificate is not this node's"));
            }
            let accept = base64::engine::general_purpose::STANDARD.encode(
                ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, format!("{key}{WS_GUID}").as_bytes())
                    .as_ref(),
            );
            let on_upgrade = hyper::upgrade::on(&mut req);
            let spawner = t.spawner.clone();
            t.spawner.spawn(async move {
                let Ok(upgraded) = on_upgrade.await else { return };
                let (r, w) = tokio::io::split(TokioIo::new(upgraded));
                let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
                let (registry, node2) = (t.registry.clone(), node.clone());
                let rt = tokio::runtime::Handle::current();
                let handle = session::start(
                    FrameReader::new(r, Role::Server, kubeedge_stream::MAX_DATA + 32),
                    FrameWriter::new(w, Role::Server),
                    stop.child_token(),
                    &spawner,
                    &t.metrics,
                    move |why| {
                        info!(node = %node2, reason = %why, "Tunnel session ended.");
                        rt.spawn(async move { registry.remove(node2, generation).await });
                    },
                );
                info!(node, ip, "Tunnel session started.");
                t.registry.add(node.clone(), ip, generation, handle).await;
                t.endpoints.point(node).await;
            });
            let mut resp = answer(StatusCode::SWITCHING_PROTOCOLS, "");
            let headers = resp.headers_mut();
            headers.insert(header::CONNECTION, http::HeaderValue::from_static("Upgrade"));
            headers.insert(header::UPGRADE, http::HeaderValue::from_static("websocket"));
            headers.insert(kubeedge_stream::CLOUD_PINGS_HEADER, http::HeaderValue::from(session::PING_EVERY.as_secs()));
            if let Ok(v) = http::HeaderValue::from_str(&accept) {
                headers.insert(header::SEC_WEBSOCKET_ACCEPT, v);
            }
            Ok(resp)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HANDSHAKE_TIMEOUT);
    builder.serve_connection(TokioIo::new(tls), service).with_upgrades().await.map_err(|e| format!("HTTP: {e}"))
}

/// The accept loop's TLS: the hub CA verifies client certificates.
pub fn acceptor(ca_der: &[u8], cert_der: &[u8], key_sec1: &[u8]) -> Result<tokio_rustls::TlsAcceptor, String> {
    let cfg = kubeedge_viaduct::server_tls(ca_der, cert_der, key_sec1).map_err(|e| e.to_string())?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}
