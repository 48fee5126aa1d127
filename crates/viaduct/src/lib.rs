//! viaduct: the cloud–edge transport, wire-compatible with upstream KubeEdge's WebSocket mode
//! (kubeedge/kubeedge `pkg/viaduct`; handshakes as recorded in `tests/fixtures/upstream/`).
//!
//! - Mutual TLS (≥ 1.2): the server requires a client certificate signed by the cluster CA.
//! - The edge dials `wss://{server}/{projectID}/{node}/events` with headers `node_id`,
//!   `project_id` and `ConnectionUse: msg`. Header names are matched case-insensitively (Go
//!   sends `Node_id`, `Connectionuse`), repeated `Connectionuse` headers are accepted, and the
//!   path is not trusted: identity comes from the headers and the certificate.
//! - In [`AuthMode::Strict`] (our default) the client certificate's CN must be
//!   `system:node:{node_id}`; [`AuthMode::Permissive`] restores upstream's default, which does not
//!   tie the certificate to the node (needed for v1.15 edges, whose CN is `kubeedge.io`).
//! - Features beyond upstream's protocol are negotiated in the handshake: an edge of ours lists
//!   what it can do in [`HEADER_FEATURES`], the server answers in the same header of its 101
//!   response with those it supports too ([`ServerOptions::features`]), and both ends read the
//!   result from [`Connection::features`]. No header is sent when nothing is agreed, so a
//!   handshake with an upstream peer is upstream's byte for byte; an upstream cloud never
//!   answers the header, so an edge of ours then speaks upstream's protocol only.
//! - One JSON [`Message`] per frame: written as text, read from text or binary, a trailing
//!   newline tolerated, frames and messages capped (32 MiB by default). A malformed frame is a
//!   per-message error; the connection stays usable.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use kubeedge_model::{DecodeError, MAX_MESSAGE_SIZE, Message};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message as Frame};
use tracing::debug;

/// Header carrying the node name.
pub const HEADER_NODE_ID: &str = "node_id";
/// Header carrying the project id.
pub const HEADER_PROJECT_ID: &str = "project_id";
/// Header telling message connections from stream connections.
pub const HEADER_CONNECTION_USE: &str = "ConnectionUse";
/// Header in which an edge of ours lists what it can do beyond upstream's protocol
/// (comma-separated, e.g. `inventory`), and in which a server of ours answers, in its 101
/// response, with those it supports too; upstream peers neither send nor read it.
pub const HEADER_FEATURES: &str = "X-KubeEdge-Rs-Features";
/// Features read from one handshake, at most.
const MAX_FEATURES: usize = 16;

/// Errors of the transport.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// TCP or TLS failed.
    #[error("connection failed")]
    Io(#[from] std::io::Error),
    /// The WebSocket handshake or framing failed.
    #[error("websocket")]
    WebSocket(#[from] tungstenite::Error),
    /// The peer was refused during the handshake (status and reason).
    #[error("handshake refused: {0}")]
    Refused(String),
    /// The TLS configuration is invalid.
    #[error("TLS configuration")]
    Tls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("TLS client verifier")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// A frame did not hold a valid message; the connection is still usable.
    #[error("malformed message")]
    Malformed(#[source] DecodeError),
    /// The handshake took too long.
    #[error("handshake timed out")]
    Timeout,
}

impl Error {
    /// Whether the connection is still usable after this error.
    pub fn is_recoverable(&self) -> bool {
        matches!(self, Error::Malformed(_))
    }

    /// The size and the limit of a message refused for its size: a frame whose header
    /// announces more than the reader's cap is refused before its payload is read (the
    /// connection is then unusable: the payload is still on the wire).
    pub fn too_large(&self) -> Option<(usize, usize)> {
        use tungstenite::error::CapacityError;
        match self {
            Error::WebSocket(tungstenite::Error::Capacity(CapacityError::MessageTooLong { size, max_size })) => {
                Some((*size, *max_size))
            }
            Error::Malformed(DecodeError::TooLarge { len, max }) => Some((*len, *max)),
            _ => None,
        }
    }
}

/// How the server ties a certificate to the node it claims to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// The certificate's CN must be `system:node:{node_id}`.
    #[default]
    Strict,
    /// Upstream's default: any certificate signed by the CA may claim any node.
    Permissive,
}

/// Server-side options.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The largest message read from an edge: frames and messages over it are refused from
    /// their header, before the payload is buffered ([`Error::too_large`]). What the server
    /// writes is not capped here (the edge's own reader caps it), so CloudHub can take less
    /// from edges than it sends them.
    pub max_message: usize,
    /// How long TLS plus the WebSocket handshake may take.
    pub handshake_timeout: Duration,
    /// Certificate-to-node check.
    pub auth: AuthMode,
    /// The features this server supports: those of them an edge announces are echoed in the
    /// 101 response's [`HEADER_FEATURES`] (none by default: no header, as upstream).
    pub features: Vec<String>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            max_message: MAX_MESSAGE_SIZE,
            handshake_timeout: Duration::from_secs(30),
            auth: AuthMode::Strict,
            features: Vec::new(),
        }
    }
}

/// Who connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// From the `node_id` header (checked against the certificate in strict mode).
    pub node_id: String,
    /// From the `project_id` header.
    pub project_id: String,
    /// The client certificate's CN.
    pub cert_cn: String,
    /// The client certificate's notBefore (Unix seconds): tells a rotated certificate from an
    /// older one.
    pub cert_not_before: i64,
    /// Hex SHA-256 of the client certificate (DER): tells the same certificate reconnecting.
    pub cert_sha256: String,
    /// What the edge announced in [`HEADER_FEATURES`] (empty for upstream edges); what both
    /// ends agreed on is [`Connection::features`].
    pub features: Vec<String>,
}

impl Identity {
    /// Whether the edge announced `feature`.
    pub fn has_feature(&self, feature: &str) -> bool {
        self.features.iter().any(|f| f == feature)
    }
}

/// Frame buffers start small: an idle edge costs little, and buffers grow with the messages
/// actually sent (tungstenite's 128 KiB defaults would cost ~256 KiB per idle connection).
const IO_BUFFER: usize = 4 * 1024;

fn ws_config(max: usize) -> WebSocketConfig {
    let mut c = WebSocketConfig::default();
    c.max_message_size = Some(max);
    c.max_frame_size = Some(max);
    c.read_buffer_size = IO_BUFFER;
    c.write_buffer_size = IO_BUFFER;
    c
}

/// The features both ends agree on: those `announced` that are also `supported`, in the
/// announced order.
pub fn negotiate(announced: &[String], supported: &[String]) -> Vec<String> {
    let mut agreed: Vec<String> = Vec::new();
    for f in announced {
        if supported.contains(f) && !agreed.contains(f) {
            agreed.push(f.clone());
        }
    }
    agreed
}

/// The features in a [`HEADER_FEATURES`] value: comma-separated, trimmed, at most
/// [`MAX_FEATURES`] of at most 64 bytes each.
fn parse_features(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty() && f.len() <= 64)
        .take(MAX_FEATURES)
        .map(str::to_owned)
        .collect()
}

/// The header an answer carries for `agreed` features: none when nothing was agreed (the
/// response is then upstream's exactly).
fn features_header(agreed: &[String]) -> Option<http::HeaderValue> {
    if agreed.is_empty() {
        return None;
    }
    http::HeaderValue::from_str(&agreed.join(",")).ok()
}

/// A TLS server config for CloudHub: the serving certificate, TLS ≥ 1.2, HTTP/1.1, and a
/// client certificate required and verified against the CA.
pub fn server_tls(ca_der: &[u8], cert_der: &[u8], key_sec1: &[u8]) -> Result<rustls::ServerConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca_der.to_vec()))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![CertificateDer::from(cert_der.to_vec())], kubeedge_pki::rustls_key(key_sec1))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A TLS client config for EdgeHub: trusts the CA, presents the node's certificate.
pub fn client_tls(ca_der: &[u8], cert_der: &[u8], key_sec1: &[u8]) -> Result<rustls::ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca_der.to_vec()))?;
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![CertificateDer::from(cert_der.to_vec())], kubeedge_pki::rustls_key(key_sec1))?)
}

/// Accepts one edge on an accepted TCP stream: TLS, the WebSocket handshake with the identity
/// checks, all within the handshake timeout.
pub async fn accept(
    tcp: TcpStream,
    tls: tokio_rustls::TlsAcceptor,
    opts: &ServerOptions,
) -> Result<(Identity, Connection<tokio_rustls::server::TlsStream<TcpStream>>), Error> {
    let run = async {
        let stream = tls.accept(tcp).await?;
        let cert =
            stream.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default();
        let cert_cn = kubeedge_pki::subject(&cert).map(|(cn, _)| cn).unwrap_or_default();
        let cert_not_before = kubeedge_pki::validity(&cert).map(|(nb, _)| nb).unwrap_or_default();
        let cert_sha256 = kubeedge_pki::ca_hash(&cert);
        let auth = opts.auth;
        let mut identity = None;
        let mut agreed = Vec::new();
        // The callback's signature is tungstenite's.
        #[allow(clippy::result_large_err)]
        let callback = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
            match check_handshake(req, &cert_cn, auth) {
                Ok(mut id) => {
                    id.cert_not_before = cert_not_before;
                    id.cert_sha256 = cert_sha256.clone();
                    agreed = negotiate(&id.features, &opts.features);
                    if let Some(v) = features_header(&agreed) {
                        resp.headers_mut().insert(HEADER_FEATURES, v);
                    }
                    identity = Some(id);
                    Ok(resp)
                }
                Err((status, why)) => {
                    debug!(reason = %why, "Refused an edge handshake.");
                    let mut err = ErrorResponse::new(Some(why));
                    *err.status_mut() = status;
                    Err(err)
                }
            }
        };
        let ws = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(ws_config(opts.max_message)))
            .await?;
        let identity = identity.ok_or_else(|| Error::Refused("no identity".into()))?;
        Ok((identity, Connection::new(ws, opts.max_message, agreed)))
    };
    tokio::time::timeout(opts.handshake_timeout, run).await.map_err(|_| Error::Timeout)?
}

/// The identity a handshake claims, or the status and reason to refuse it with.
fn check_handshake(req: &Request, cert_cn: &str, auth: AuthMode) -> Result<Identity, (http::StatusCode, String)> {
    let headers = req.headers();
    // http::HeaderMap compares names case-insensitively: `Node_id` and `node_id` alike.
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).unwrap_or_default();
    let uses_msg = headers.get_all(HEADER_CONNECTION_USE).iter().any(|v| v.to_str().is_ok_and(|v| v.trim() == "msg"));
    if !uses_msg {
        return Err((http::StatusCode::BAD_REQUEST, "ConnectionUse: msg is required".into()));
    }
    let node_id = get(HEADER_NODE_ID);
    if !valid_node_name(node_id) {
        return Err((http::StatusCode::BAD_REQUEST, format!("invalid node_id {node_id:?}")));
    }
    if auth == AuthMode::Strict && cert_cn != format!("system:node:{node_id}") {
        return Err((
            http::StatusCode::FORBIDDEN,
            format!("certificate CN {cert_cn:?} may not connect as node {node_id:?}"),
        ));
    }
    Ok(Identity {
        node_id: node_id.to_owned(),
        project_id: get(HEADER_PROJECT_ID).to_owned(),
        cert_cn: cert_cn.to_owned(),
        cert_not_before: 0,
        cert_sha256: String::new(),
        features: parse_features(get(HEADER_FEATURES)),
    })
}

/// A DNS-1123 subdomain, as node names are.
pub use kubeedge_model::valid_node_name;

/// Client-side options.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `host:port` of CloudHub's WebSocket server.
    pub server: String,
    /// The node name.
    pub node_id: String,
    /// The project id (`e632aba927ea4ac2b575ec1603d56f10` upstream).
    pub project_id: String,
    /// The largest message accepted.
    pub max_message: usize,
    /// How long TCP, TLS and the handshake may take.
    pub handshake_timeout: Duration,
    /// Features announced in [`HEADER_FEATURES`] (none: the handshake is upstream's exactly).
    pub features: Vec<String>,
}

/// Dials CloudHub as an edge node.
pub async fn connect(
    opts: &ClientOptions,
    tls: Arc<rustls::ClientConfig>,
) -> Result<Connection<tokio_rustls::client::TlsStream<TcpStream>>, Error> {
    let run = async {
        let tcp = TcpStream::connect(&opts.server).await?;
        let host = opts.server.rsplit_once(':').map(|(h, _)| h).unwrap_or(&opts.server);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name =
            ServerName::try_from(host.to_owned()).map_err(|_| Error::Refused(format!("bad server name {host}")))?;
        let stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await?;
        let request = http::Request::builder()
            .uri(format!("wss://{}/{}/{}/events", opts.server, opts.project_id, opts.node_id))
            .header("Host", &opts.server)
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", tungstenite::handshake::client::generate_key())
            .header(HEADER_NODE_ID, &opts.node_id)
            .header(HEADER_PROJECT_ID, &opts.project_id)
            .header(HEADER_CONNECTION_USE, "msg");
        let request =
            if opts.features.is_empty() { request } else { request.header(HEADER_FEATURES, opts.features.join(",")) };
        let request = request.body(()).map_err(|e| Error::Refused(e.to_string()))?;
        let (ws, resp) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config(opts.max_message)))
                .await
                .map_err(|e| match e {
                    tungstenite::Error::Http(resp) => Error::Refused(format!(
                        "{} {}",
                        resp.status(),
                        resp.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default()
                    )),
                    other => Error::WebSocket(other),
                })?;
        // What the server agreed to: only ever what this edge announced (an upstream server
        // sends no header, so nothing).
        let echoed = resp.headers().get(HEADER_FEATURES).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let agreed = negotiate(&parse_features(echoed), &opts.features);
        Ok(Connection::new(ws, opts.max_message, agreed))
    };
    tokio::time::timeout(opts.handshake_timeout, run).await.map_err(|_| Error::Timeout)?
}

/// An established message connection.
pub struct Connection<S> {
    ws: WebSocketStream<S>,
    max: usize,
    last_activity: std::time::Instant,
    peer_close: Option<(u16, String)>,
    features: Vec<String>,
}

impl<S> Connection<S> {
    fn new(ws: WebSocketStream<S>, max: usize, features: Vec<String>) -> Self {
        Self { ws, max, last_activity: std::time::Instant::now(), peer_close: None, features }
    }

    /// The features both ends agreed on in the handshake (see [`HEADER_FEATURES`]): empty
    /// with an upstream peer.
    pub fn features(&self) -> &[String] {
        &self.features
    }

    /// Whether both ends agreed on `feature`.
    pub fn has_feature(&self, feature: &str) -> bool {
        self.features.iter().any(|f| f == feature)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// The close code and reason the peer sent, once [`Connection::recv`] has seen its close
    /// frame (e.g. 1001 when CloudHub shuts down).
    pub fn peer_close(&self) -> Option<&(u16, String)> {
        self.peer_close.as_ref()
    }

    /// The next message; `Ok(None)` when the peer closed. A frame that is not a valid message
    /// gives [`Error::Malformed`], after which the connection is still usable.
    pub async fn recv(&mut self) -> Result<Option<Message>, Error> {
        loop {
            let frame = match self.ws.next().await {
                None => return Ok(None),
                Some(f) => f?,
            };
            self.last_activity = std::time::Instant::now();
            let bytes: &[u8] = match &frame {
                Frame::Text(t) => t.as_bytes(),
                Frame::Binary(b) => b,
                Frame::Close(cf) => {
                    self.peer_close = cf.as_ref().map(|c| (u16::from(c.code), c.reason.to_string()));
                    return Ok(None);
                }
                // Pings are answered by the WebSocket layer; pongs need nothing.
                _ => continue,
            };
            return Message::decode(bytes, self.max).map(Some).map_err(Error::Malformed);
        }
    }

    /// When a frame (message, ping or pong) last arrived: a silent partition shows here, since
    /// the peer answers pings even when it has nothing to say.
    pub fn last_activity(&self) -> std::time::Instant {
        self.last_activity
    }

    /// Sends one message as a text frame. `header.sync` is cleared, as upstream's writer does.
    pub async fn send(&mut self, msg: &Message) -> Result<(), Error> {
        self.ws.send(text_frame(msg)?).await?;
        Ok(())
    }

    /// Sends messages with one flush at the end: frames written together share TLS records
    /// and system calls (a window of messages to an edge goes out at once).
    pub async fn send_all(&mut self, msgs: &[Message]) -> Result<(), Error> {
        for msg in msgs {
            self.ws.feed(text_frame(msg)?).await?;
        }
        self.ws.flush().await?;
        Ok(())
    }

    /// Sends a raw frame (tests and fault injection).
    pub async fn send_raw(&mut self, frame: Frame) -> Result<(), Error> {
        self.ws.send(frame).await?;
        Ok(())
    }

    /// Closes the connection with a close code and reason (e.g. 1013 "node limit reached").
    pub async fn close_with(mut self, code: u16, reason: &str) -> Result<(), Error> {
        use tokio_tungstenite::tungstenite::protocol::CloseFrame;
        let frame = CloseFrame { code: code.into(), reason: reason.to_owned().into() };
        self.ws.close(Some(frame)).await?;
        Ok(())
    }

    /// Sends a WebSocket ping (the edge's liveness probe; the peer's pong counts as activity).
    pub async fn ping(&mut self) -> Result<(), Error> {
        self.ws.send(Frame::Ping(Vec::new().into())).await?;
        Ok(())
    }

    /// Closes the connection with a normal close frame.
    pub async fn close(mut self) -> Result<(), Error> {
        self.ws.close(None).await?;
        Ok(())
    }
}

/// `msg` as the text frame upstream's writer sends: `header.sync` cleared (a copy is made only
/// when it is set).
fn text_frame(msg: &Message) -> Result<Frame, Error> {
    let json = if msg.header.sync {
        let mut out = msg.clone();
        out.header.sync = false;
        out.encode()
    } else {
        msg.encode()
    };
    let text = String::from_utf8(json).map_err(|e| Error::Refused(e.to_string()))?;
    Ok(Frame::text(text))
}

pub use tokio_tungstenite::tungstenite::Message as RawFrame;

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_agreed_features_are_the_announced_ones_the_server_supports() {
        let supported = v(&["inventory", "lease-renew"]);
        assert_eq!(
            negotiate(&v(&["lease-renew", "future", "inventory"]), &supported),
            v(&["lease-renew", "inventory"])
        );
        assert_eq!(negotiate(&v(&["future"]), &supported), Vec::<String>::new());
        assert_eq!(negotiate(&v(&["inventory", "inventory"]), &supported), v(&["inventory"]));
        assert_eq!(negotiate(&v(&["inventory"]), &[]), Vec::<String>::new(), "a server supporting nothing");
        assert_eq!(negotiate(&[], &supported), Vec::<String>::new(), "an upstream edge announces nothing");
    }

    #[test]
    fn nothing_agreed_means_no_header() {
        assert_eq!(features_header(&[]), None);
        let h = features_header(&v(&["inventory", "lease-renew"])).unwrap();
        assert_eq!(h.to_str().unwrap(), "inventory,lease-renew");
    }

    #[test]
    fn feature_lists_are_trimmed_and_bounded() {
        assert_eq!(parse_features(" inventory , ,lease-renew,"), v(&["inventory", "lease-renew"]));
        assert_eq!(parse_features(""), Vec::<String>::new());
        assert_eq!(parse_features(&"x".repeat(65)), Vec::<String>::new());
        let many = (0..40).map(|i| format!("f{i}")).collect::<Vec<_>>().join(",");
        assert_eq!(parse_features(&many).len(), MAX_FEATURES);
    }
}
