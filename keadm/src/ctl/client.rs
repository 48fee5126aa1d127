//! A small HTTP/1.1 client for the edge's local servers (MetaServer, Edged's kubelet server):
//! one connection per request, plain or TLS with a client certificate, the body read whole
//! (capped) or streamed to a writer as it arrives (`logs -f`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::Error;

/// How long connecting may take (a local server answers at once, or is not there).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the TLS handshake and the response head may take (the body may stream longer).
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// The largest body read whole.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// TLS towards a server that wants a client certificate.
pub struct Tls {
    config: Arc<rustls::ClientConfig>,
}

impl Tls {
    /// Trusts `ca` and presents `cert` + `key` (PEM files).
    pub fn client(ca: &Path, cert: &Path, key: &Path) -> Result<Self, Error> {
        let read = |field: &'static str, path: &Path| {
            std::fs::read_to_string(path).map_err(|e| Error::Tls {
                field,
                path: path.to_owned(),
                reason: e.to_string(),
            })
        };
        let bad = |field: &'static str, path: &Path, e: &dyn std::fmt::Display| Error::Tls {
            field,
            path: path.to_owned(),
            reason: e.to_string(),
        };
        let (_, ca_der) = kubeedge_pki::parse_pem(&read("modules.metaManager.metaServer.tlsCaFile", ca)?)
            .map_err(|e| bad("modules.metaManager.metaServer.tlsCaFile", ca, &e))?;
        let (_, cert_der) = kubeedge_pki::parse_pem(&read("modules.edgeHub.tlsCertFile", cert)?)
            .map_err(|e| bad("modules.edgeHub.tlsCertFile", cert, &e))?;
        let key_der = kubeedge_pki::key_from_pem(&read("modules.edgeHub.tlsPrivateKeyFile", key)?)
            .map_err(|e| bad("modules.edgeHub.tlsPrivateKeyFile", key, &e))?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_der.into()).map_err(|e| bad("modules.metaManager.metaServer.tlsCaFile", ca, &e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad("modules.edgeHub.tlsCertFile", cert, &e))?
            .with_root_certificates(roots)
            .with_client_auth_cert(vec![cert_der.into()], kubeedge_pki::rustls_key(&key_der))
            .map_err(|e| bad("modules.edgeHub.tlsCertFile", cert, &e))?;
        Ok(Self { config: Arc::new(config) })
    }
}

/// A server on the edge.
#[derive(Clone)]
pub struct Endpoint {
    /// What it is, for messages ("MetaServer").
    pub what: &'static str,
    /// Where.
    pub addr: SocketAddr,
    tls: Option<Arc<Tls>>,
}

impl Endpoint {
    /// Plain HTTP.
    pub fn plain(what: &'static str, addr: SocketAddr) -> Self {
        Self { what, addr, tls: None }
    }

    /// HTTPS with a client certificate.
    pub fn tls(what: &'static str, addr: SocketAddr, tls: Arc<Tls>) -> Self {
        Self { what, addr, tls: Some(tls) }
    }

    /// `http://addr` or `https://addr`.
    pub fn base(&self) -> String {
        format!("{}://{}", if self.tls.is_some() { "https" } else { "http" }, self.addr)
    }

    /// Sends one request and returns the response (its body not read yet).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<http::Response<Incoming>, Error> {
        let connect = async {
            let tcp = TcpStream::connect(self.addr).await?;
            let _ = tcp.set_nodelay(true);
            Ok::<_, std::io::Error>(tcp)
        };
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))
            .and_then(|r| r)
            .map_err(|source| Error::Connect { what: self.what, addr: self.addr, source })?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.addr.to_string())
            .header(header::ACCEPT, "application/json, */*")
            .header(header::USER_AGENT, concat!("keadm/", env!("CARGO_PKG_VERSION")));
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default()))).map_err(|e| self.protocol(e))?;
        let exchange = async {
            match &self.tls {
                None => exchange(tcp, req).await.map_err(|e| self.protocol(e)),
                Some(tls) => {
                    let name = rustls::pki_types::ServerName::IpAddress(self.addr.ip().into());
                    let stream = tokio_rustls::TlsConnector::from(tls.config.clone())
                        .connect(name, tcp)
                        .await
                        .map_err(|e| self.protocol(format!("TLS handshake: {e}")))?;
                    exchange(stream, req).await.map_err(|e| self.protocol(e))
                }
            }
        };
        tokio::time::timeout(TIMEOUT, exchange).await.map_err(|_| self.protocol("no answer in time"))?
    }

    /// `GET path`; a 2xx body parsed as JSON, else the server's message as an error.
    pub async fn get_json(&self, path: &str) -> Result<Value, Error> {
        let (status, body) = self.call(Method::GET, path, None).await?;
        if !status.is_success() {
            return Err(self.status(path, status, &body));
        }
        serde_json::from_slice(&body).map_err(|source| Error::Decode { url: format!("{}{path}", self.base()), source })
    }

    /// One request, the whole body read.
    pub async fn call(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<(StatusCode, Bytes), Error> {
        let resp = self.send(method, path, body).await?;
        let status = resp.status();
        // The body within the same bound as the head: a server that stalls mid-body fails.
        let body = tokio::time::timeout(TIMEOUT, http_body_util::Limited::new(resp.into_body(), MAX_BODY).collect())
            .await
            .map_err(|_| self.protocol("the answer stalled"))?
            .map_err(|e| self.protocol(e))?
            .to_bytes();
        Ok((status, body))
    }

    /// The error for a non-2xx answer: the `message` of a Kubernetes Status, or the body's text.
    pub fn status(&self, path: &str, status: StatusCode, body: &[u8]) -> Error {
        let message = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
        Error::Status { url: format!("{}{path}", self.base()), code: status.as_u16(), message }
    }

    pub(super) fn protocol(&self, e: impl std::fmt::Display) -> Error {
        Error::Protocol { what: self.what, addr: self.addr, reason: e.to_string() }
    }
}

async fn exchange<T>(io: T, req: Request<Full<Bytes>>) -> Result<http::Response<Incoming>, hyper::Error>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    // The connection task ends with the response body (or when the server closes).
    tokio::spawn(conn);
    sender.send_request(req).await
}

impl Endpoint {
    /// Copies a response body to `out` as it arrives, flushing every chunk (`logs -f`). With
    /// `idle`, a body that sends nothing for that long is an error rather than a hang.
    pub async fn stream_to(
        &self,
        body: Incoming,
        out: &mut (impl std::io::Write + ?Sized),
        idle: Option<Duration>,
    ) -> Result<(), Error> {
        let mut body = body;
        loop {
            let next = body.frame();
            let frame = match idle {
                Some(d) => tokio::time::timeout(d, next)
                    .await
                    .map_err(|_| self.protocol(format!("the body stalled for {}s", d.as_secs())))?,
                None => next.await,
            };
            let Some(frame) = frame else { return Ok(()) };
            let frame = frame.map_err(|e| self.protocol(e))?;
            if let Ok(data) = frame.into_data() {
                out.write_all(&data).and_then(|()| out.flush()).map_err(Error::Output)?;
            }
        }
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters kept).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
