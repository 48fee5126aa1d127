//! Dialling the tunnel: TLS with the node's certificate (read again at every dial, so a
//! rotated certificate is used from the next connection on), then the WebSocket handshake on
//! `/v1/kubeedge/connect` with upstream's session headers, through hyper's upgrade (bytes the
//! server sends right after its `101` are kept).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http::{Request, StatusCode, header};
use http_body_util::Empty;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use kubeedge_stream::ws::{FrameReader, FrameWriter, Role};
use rustls::pki_types::ServerName;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;

/// The tunnel's path on CloudStream's `tunnelPort`.
pub const CONNECT_PATH: &str = "/v1/kubeedge/connect";
/// Upstream's session headers: the node's name and its internal IP.
pub const HEADER_HOSTNAME: &str = "SessionHostNameOverride";
/// See [`HEADER_HOSTNAME`].
pub const HEADER_INTERNAL_IP: &str = "SessionInternalIP";
/// RFC 6455's key suffix.
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Where and as whom to dial.
#[derive(Debug, Clone)]
pub struct DialSettings {
    /// CloudStream's tunnel, `host:port` (`modules.edgeStream.server`).
    pub server: String,
    /// The hub CA, which signed the tunnel server's certificate (`tlsTunnelCAFile`).
    pub ca: PathBuf,
    /// The node's certificate and key (`tlsTunnelCertFile`, `tlsTunnelPrivateKeyFile`).
    pub cert: PathBuf,
    /// See [`DialSettings::cert`].
    pub key: PathBuf,
    /// `SessionHostNameOverride`.
    pub node: String,
    /// `SessionInternalIP`.
    pub node_ip: String,
    /// TCP, TLS and WebSocket handshakes together (`handshakeTimeout`).
    pub handshake_timeout: Duration,
}

/// Why a dial failed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// A certificate file cannot be read (EdgeHub has not fetched it yet, or it is gone).
    #[error("reading {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A certificate file is not PEM of the expected kind.
    #[error("{}: {message}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The TLS settings cannot be built from the files.
    #[error("TLS settings")]
    Tls(#[from] kubeedge_viaduct::Error),
    /// `server` is not `host:port`.
    #[error("modules.edgeStream.server {0:?} is not host:port")]
    Server(String),
    /// TCP or TLS failed.
    #[error("connecting to {server}")]
    Connect {
        /// The tunnel server.
        server: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("the WebSocket handshake with {server}: {message}")]
    Handshake {
        /// The tunnel server.
        server: String,
        /// What went wrong.
        message: String,
    },
    /// The server answered something other than `101`.
    #[error("{server} refused the tunnel: HTTP {status}")]
    Refused {
        /// The tunnel server.
        server: String,
        /// Its answer.
        status: StatusCode,
    },
    /// Nothing within `handshakeTimeout`.
    #[error("no tunnel to {0} within the handshake timeout")]
    Timeout(String),
}

/// One open tunnel, split into its two directions.
pub struct Tunnel {
    /// Frames from the cloud.
    pub reader: FrameReader<ReadHalf<TokioIo<Upgraded>>>,
    /// Frames to the cloud.
    pub writer: FrameWriter<WriteHalf<TokioIo<Upgraded>>>,
    /// How often the cloud said it pings us ([`kubeedge_stream::CLOUD_PINGS_HEADER`]).
    pub cloud_pings: Option<Duration>,
}

async fn read_pem(path: &Path, want_key: bool) -> Result<Vec<u8>, DialError> {
    let text = tokio::fs::read_to_string(path).await.map_err(|source| DialError::Read { path: path.into(), source })?;
    let pem = |e: &dyn std::fmt::Display| DialError::Pem { path: path.into(), message: e.to_string() };
    if want_key {
        kubeedge_pki::key_from_pem(&text).map_err(|e| pem(&e))
    } else {
        Ok(kubeedge_pki::parse_pem(&text).map_err(|e| pem(&e))?.1)
    }
}

/// Dials the tunnel, all within the handshake timeout.
pub async fn dial(s: &DialSettings) -> Result<Tunnel, DialError> {
    tokio::time::timeout(s.handshake_timeout, dial_inner(s))
        .await
        .unwrap_or_else(|_| Err(DialError::Timeout(s.server.clone())))
}

async fn dial_inner(s: &DialSettings) -> Result<Tunnel, DialError> {
    let (ca, cert, key) =
        (read_pem(&s.ca, false).await?, read_pem(&s.cert, false).await?, read_pem(&s.key, true).await?);
    let tls = kubeedge_viaduct::client_tls(&ca, &cert, &key)?;
    let host = s
        .server
        .rsplit_once(':')
        .map(|(h, _)| h.trim_matches(['[', ']']))
        .ok_or_else(|| DialError::Server(s.server.clone()))?;
    let name = ServerName::try_from(host.to_owned()).map_err(|_| DialError::Server(s.server.clone()))?;
    let connect = |source| DialError::Connect { server: s.server.clone(), source };
    let tcp = TcpStream::connect(&s.server).await.map_err(connect)?;
    let _ = tcp.set_nodelay(true);
    let tls = tokio_rustls::TlsConnector::from(Arc::new(tls)).connect(name, tcp).await.map_err(connect)?;

    let handshake =
        |e: &dyn std::fmt::Display| DialError::Handshake { server: s.server.clone(), message: e.to_string() };
    let key: [u8; 16] = rand::random();
    let key = base64::engine::general_purpose::STANDARD.encode(key);
    let request = Request::get(CONNECT_PATH)
        .header(header::HOST, &s.server)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_VERSION, "13")
        .header(header::SEC_WEBSOCKET_KEY, &key)
        .header(HEADER_HOSTNAME, &s.node)
        .header(HEADER_INTERNAL_IP, &s.node_ip)
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| handshake(&e))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| handshake(&e))?;
    // The connection is driven until the answer arrives. After a 101 its future ends once the
    // stream is handed over to the upgrade, possibly before the answer is read here.
    let mut conn = std::pin::pin!(conn.with_upgrades());
    let mut send = std::pin::pin!(sender.send_request(request));
    let mut conn_done = false;
    let response = loop {
        tokio::select! {
            biased;
            r = &mut send => break r.map_err(|e| handshake(&e))?,
            r = &mut conn, if !conn_done => {
                r.map_err(|e| handshake(&e))?;
                conn_done = true;
            }
        }
    };
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(DialError::Refused { server: s.server.clone(), status: response.status() });
    }
    if !conn_done {
        conn.await.map_err(|e| handshake(&e))?;
    }
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, format!("{key}{WS_GUID}").as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
    let accept = response.headers().get(header::SEC_WEBSOCKET_ACCEPT).and_then(|v| v.to_str().ok());
    if accept != Some(expected.as_str()) {
        return Err(handshake(&"Sec-WebSocket-Accept does not match the key"));
    }
    let cloud_pings = response
        .headers()
        .get(kubeedge_stream::CLOUD_PINGS_HEADER)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .filter(|s| (1..=60).contains(s))
        .map(Duration::from_secs);
    let upgraded = hyper::upgrade::on(response).await.map_err(|e| handshake(&e))?;
    let (read, write) = tokio::io::split(TokioIo::new(upgraded));
    Ok(Tunnel {
        reader: FrameReader::new(read, Role::Client, kubeedge_stream::MAX_DATA + 32),
        writer: FrameWriter::new(write, Role::Client),
        cloud_pings,
    })
}
