//! A lean HTTP/2 path to the API server, for the request cloudcore makes a thousand times a
//! second: the node Lease renewals of an idle fleet (10,000 nodes each renew every 10 s).
//!
//! kube-rs's client puts every request through a buffer task, retry and tracing layers and
//! hyper's pool of HTTP/1.1 connections: one request per connection at a time, a write and a
//! read system call and several task wake-ups each. Here the caller's task owns one HTTP/2
//! connection (the `h2` crate, hyper's own HTTP/2; client-go speaks HTTP/2 to kube-apiserver
//! too) and drives it itself ([`LeanConn::drive`]): the requests it starts together leave in
//! one write and their answers come back to the same task, with no task spawned per request.
//!
//! Authentication (a token file that rotates is read again, as kube-rs does) and the extra
//! headers (impersonation) are kube-rs's own layers over the same
//! [`kube::Config`], and TLS is its `rustls` configuration with ALPN `h2`. A configuration this
//! path does not serve (a plain `http://` server, a proxy) gets the reason from
//! [`LeanClient::from_config`], and a server that does not agree to HTTP/2 fails
//! [`LeanClient::connect`]: the caller keeps using kube-rs's client then.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::RecvStream;
use h2::client::{Connection, SendRequest};
use http::{Request, Response, StatusCode};
use kube::client::ConfigExt;
use kube::client::middleware::{AuthLayer, ExtraHeadersLayer};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tower::util::BoxService;
use tower::{BoxError, Layer, Service};

/// The longest a connection may take (shorter than kube-rs's: renewals wait for it).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The most of an error's body read (a `Status` is a few hundred bytes).
const MAX_ERROR_BODY: usize = 64 << 10;

/// Why a request on the lean path failed.
#[derive(Debug, thiserror::Error)]
pub enum LeanError {
    /// The API server answered with an error status (its `Status`, or one made from the code).
    #[error("the API server answered {}: {}", .0.code, .0.message)]
    Api(Box<kube::core::Status>),
    /// No answer: connecting, TLS, HTTP/2 or authentication failed, or the time ran out.
    #[error("{0}")]
    Transport(String),
    /// The server is closing the connection gracefully (HTTP/2 GOAWAY without an error, as
    /// kube-apiserver's `--goaway-chance` or a restart sends): the request was not handled
    /// and may go again on a new connection.
    #[error("the API server is closing the connection: {0}")]
    GoingAway(String),
    /// The server refused this one stream (`REFUSED_STREAM`): not handled, may go again.
    #[error("the API server refused the request before handling it: {0}")]
    Refused(String),
}

impl LeanError {
    /// The same error as kube-rs's client would give, for the callers' shared error shapes.
    pub fn into_kube(self) -> kube::Error {
        match self {
            Self::Api(s) => kube::Error::Api(s),
            other => kube::Error::Service(other.to_string().into()),
        }
    }

    /// An error of the HTTP/2 stack (or a layer over it), told apart: a graceful GOAWAY is
    /// [`LeanError::GoingAway`], a refused stream [`LeanError::Refused`], anything else
    /// [`LeanError::Transport`].
    fn of(e: &(dyn std::error::Error + 'static)) -> Self {
        let mut cause = Some(e);
        while let Some(c) = cause {
            if let Some(h2) = c.downcast_ref::<h2::Error>() {
                if h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR) {
                    return Self::GoingAway(h2.to_string());
                }
                if h2.reason() == Some(h2::Reason::REFUSED_STREAM) {
                    return Self::Refused(h2.to_string());
                }
                break;
            }
            cause = c.source();
        }
        Self::Transport(e.to_string())
    }
}

/// What a connection needs, built once from the client configuration.
pub struct LeanClient {
    /// The server's URL without a trailing `/` (its path, if any, prefixes every request's).
    base: String,
    auth: Option<AuthLayer>,
    extra: ExtraHeadersLayer,
    tls: TlsConnector,
    server_name: ServerName<'static>,
    host: String,
    port: u16,
    connect_timeout: Duration,
}

impl LeanClient {
    /// The lean path for `config`, or `None` (with the reason) when it does not apply.
    pub fn from_config(config: &kube::Config) -> Result<Self, String> {
        let url = &config.cluster_url;
        if url.scheme_str() != Some("https") {
            return Err(format!("the API server is not HTTPS ({url})"));
        }
        if config.proxy_url.is_some() {
            return Err("a proxy is configured".into());
        }
        let host = url.host().ok_or_else(|| format!("no host in {url}"))?;
        // An IPv6 literal comes bracketed in a URL.
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = url.port_u16().unwrap_or(443);
        let name = config.tls_server_name.clone().unwrap_or_else(|| host.clone());
        let server_name = ServerName::try_from(name).map_err(|e| format!("TLS server name: {e}"))?;
        let mut tls = config.rustls_client_config().map_err(|e| format!("TLS: {e}"))?;
        tls.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            // As kube-rs's BaseUri: scheme, authority and path (no query), no trailing `/`.
            base: format!("https://{}{}", url.authority().map_or("", |a| a.as_str()), url.path().trim_end_matches('/')),
            auth: config.auth_layer().map_err(|e| format!("authentication: {e}"))?,
            extra: config.extra_headers_layer().map_err(|e| format!("headers: {e}"))?,
            tls: TlsConnector::from(Arc::new(tls)),
            server_name,
            host,
            port,
            connect_timeout: config.connect_timeout.unwrap_or(CONNECT_TIMEOUT).min(CONNECT_TIMEOUT),
        })
    }

    /// A new HTTP/2 connection to the API server.
    pub async fn connect(&self) -> Result<LeanConn, LeanError> {
        let transport = |e: &dyn std::fmt::Display| LeanError::Transport(format!("{}:{}: {e}", self.host, self.port));
        let connecting = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port)).await.map_err(|e| transport(&e))?;
            let _ = tcp.set_nodelay(true);
            let tls = self.tls.connect(self.server_name.clone(), tcp).await.map_err(|e| transport(&e))?;
            if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                return Err(transport(&"the server did not agree to HTTP/2 (ALPN h2)"));
            }
            h2::client::handshake(tls).await.map_err(|e| transport(&e))
        };
        let (send, conn) = tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| transport(&format!("no connection within {:?}", self.connect_timeout)))??;
        let h2 = H2 { send };
        let svc = self.extra.layer(h2);
        let svc: BoxService<Request<Payload>, Response<RecvStream>, BoxError> = match &self.auth {
            Some(auth) => BoxService::new(auth.layer(svc)),
            None => BoxService::new(svc),
        };
        Ok(LeanConn { svc, driver: Box::pin(conn), closed: false, started: 0, base: self.base.clone() })
    }
}

/// One HTTP/2 connection: requests are started with [`LeanConn::request`], and the owner
/// polls [`LeanConn::drive`] alongside them (it does the connection's reads and writes).
pub struct LeanConn {
    svc: BoxService<Request<Payload>, Response<RecvStream>, BoxError>,
    driver: Pin<Box<Connection<TlsStream<TcpStream>, Bytes>>>,
    closed: bool,
    started: u64,
    base: String,
}

impl LeanConn {
    /// Requests started on this connection (HTTP/2 stream ids run out after 2³⁰).
    pub fn started(&self) -> u64 {
        self.started
    }

    /// Whether the connection has ended (the owner connects again).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Runs the connection until it ends: `Ok` when it was closed gracefully (by either end,
    /// or by the server's GOAWAY without an error), else why it failed. Poll it while
    /// requests are open.
    pub async fn drive(&mut self) -> Result<(), String> {
        if self.closed {
            return std::future::pending().await;
        }
        let ended = match self.driver.as_mut().await {
            Ok(()) => Ok(()),
            Err(e) => match LeanError::of(&e) {
                LeanError::GoingAway(_) | LeanError::Refused(_) => Ok(()),
                other => Err(other.to_string()),
            },
        };
        self.closed = true;
        ended
    }

    /// Whether another request may start now: not while a stream the server's limit of
    /// concurrent streams holds back waits to open (with kube-rs's refreshable token the
    /// request opens its stream when its future first runs, and the limit shows there instead:
    /// the caller bounds what it has open). Not ready: try again when an open request ended.
    /// An error means the connection cannot take requests any more.
    pub fn has_room(&mut self) -> Result<bool, LeanError> {
        let waker = futures::task::noop_waker();
        match self.svc.poll_ready(&mut Context::from_waker(&waker)) {
            Poll::Ready(Ok(())) => Ok(true),
            Poll::Ready(Err(e)) => Err(LeanError::of(&*e)),
            Poll::Pending => Ok(false),
        }
    }

    /// Starts `req` (path and query only: the server's URL is added) and returns the future
    /// of its status, after [`LeanConn::has_room`] said yes. The future makes progress only
    /// while [`LeanConn::drive`] is polled.
    pub fn request(
        &mut self,
        req: Request<Payload>,
        timeout: Duration,
    ) -> impl Future<Output = Result<StatusCode, LeanError>> + Send + 'static {
        self.started += 1;
        let (mut head, body) = req.into_parts();
        let full = format!("{}{}", self.base, head.uri.path_and_query().map_or("/", |p| p.as_str()));
        let call = match http::Uri::try_from(full) {
            Ok(uri) => {
                head.uri = uri;
                Ok(self.svc.call(Request::from_parts(head, body)))
            }
            Err(e) => Err(LeanError::Transport(format!("request URL: {e}"))),
        };
        async move {
            let answer = async {
                let response = call?.await.map_err(|e| LeanError::of(&*e))?;
                read(response).await
            };
            tokio::time::timeout(timeout, answer)
                .await
                .map_err(|_| LeanError::Transport(format!("no answer within {timeout:?}")))?
        }
    }
}

/// A successful answer's status (its body is read and let go: the callers need none), or the
/// API's error.
async fn read(response: Response<RecvStream>) -> Result<StatusCode, LeanError> {
    let status = response.status();
    let mut body = response.into_body();
    let mut kept = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| LeanError::of(&e))?;
        let _ = body.flow_control().release_capacity(chunk.len());
        if !status.is_success() && kept.len() < MAX_ERROR_BODY {
            kept.extend_from_slice(&chunk[..chunk.len().min(MAX_ERROR_BODY - kept.len())]);
        }
    }
    if status.is_success() {
        return Ok(status);
    }
    let parsed = serde_json::from_slice::<kube::core::Status>(&kept).ok().filter(|s| s.code != 0);
    let s = parsed.unwrap_or_else(|| {
        let mut s = kube::core::Status::failure(
            &String::from_utf8_lossy(&kept),
            status.canonical_reason().unwrap_or("Failure"),
        );
        s.code = status.as_u16();
        s
    });
    Err(LeanError::Api(Box::new(s)))
}

/// A request's body: the bytes, sent in one frame.
pub struct Payload(pub Bytes);

impl hyper::body::Body for Payload {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let data = std::mem::take(&mut self.get_mut().0);
        Poll::Ready((!data.is_empty()).then(|| Ok(hyper::body::Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.0.len() as u64)
    }
}

/// The HTTP/2 sender as the innermost service of kube-rs's layers.
#[derive(Clone)]
struct H2 {
    send: SendRequest<Bytes>,
}

impl Service<Request<Payload>> for H2 {
    type Response = Response<RecvStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<RecvStream>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.send.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<Payload>) -> Self::Future {
        let (head, Payload(body)) = req.into_parts();
        let started =
            self.send.send_request(Request::from_parts(head, ()), body.is_empty()).and_then(|(fut, mut stream)| {
                if !body.is_empty() {
                    stream.send_data(body, true)?;
                }
                Ok(fut)
            });
        Box::pin(async move { Ok(started?.await?) })
    }
}
