//! servicebus → rest: the server edge applications call to reach a URL the cloud allowed.
//!
//! Any path and any method reach the one handler, as upstream. The body must be at most
//! 5,000,000 bytes of `{"method","targetURL","payload"}`; a `targetURL` on the allow-list goes
//! to the cloud as `upload` (content: the request's bytes) and the handler waits up to
//! `timeout` for the cloud's answer. The answer is always JSON `{"code","msg","body"}` with the
//! code also as the HTTP status (upstream answered HTTP 200 with the code in the JSON only):
//!
//! | what | code | msg |
//! |---|---|---|
//! | the cloud answered | 200 | `receive response from cloud successfully` (body: the answer) |
//! | body over 5,000,000 bytes | 413 | `request body larger than 5000000 bytes` |
//! | body not readable | 400 | `can't read data from body of the http's request` |
//! | not the JSON above | 400 | `invalid params` |
//! | `targetURL` not allowed | 403 | `url <targetURL> is not allowed and please make a rule for this url in the cloud` (upstream: 400) |
//! | the cloud answered with an error | 502 | the cloud's error text |
//! | no session to the cloud, no EdgeHub | 503 | why |
//! | no answer within `timeout` | 504 | `timeout to get response for message <id>` |

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use kubeedge_beehive::{Bus, BusError, Spawner};
use kubeedge_model::constants::{group, operation};
use kubeedge_model::protocol::servicebus::{self as wire, EdgeReply, EdgeRequest, MAX_BODY, REPLY_OK};
use kubeedge_telemetry::conns::{self, Acceptor, Conn, Limits};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::tls::ServerTls;
use super::{Metrics, View};

/// Connections served at once; at the cap the one idle longest makes room.
pub const MAX_CONNECTIONS: usize = 256;
/// How long open connections get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What every request needs.
pub(super) struct Handler {
    /// For the upload and its reply.
    pub bus: Bus,
    /// The module's allow-list and link state.
    pub view: watch::Receiver<View>,
    /// How long to wait for the cloud (`modules.serviceBus.timeout`).
    pub timeout: Duration,
    pub metrics: Metrics,
}

fn reply(code: u16, msg: impl Into<String>) -> EdgeReply {
    EdgeReply { code: i32::from(code), msg: msg.into(), body: String::new() }
}

impl Handler {
    /// Answers one request of an edge app.
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let answer = self.answer(req).await;
        self.metrics.count("edge", answer.code);
        let status = u16::try_from(answer.code)
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&answer).unwrap_or_default();
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = status;
        resp.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        resp
    }

    async fn answer(&self, req: Request<Incoming>) -> EdgeReply {
        let too_large = || reply(413, format!("request body larger than {MAX_BODY} bytes"));
        let declared =
            req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > MAX_BODY as u64) {
            return too_large();
        }
        let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => return too_large(),
            Err(_) => return reply(400, "can't read data from body of the http's request"),
        };
        let Ok(request) = serde_json::from_slice::<EdgeRequest>(&body) else {
            return reply(400, "invalid params");
        };
        let view = self.view.borrow().clone();
        if !view.allows(&request.target_url) {
            debug!(target_url = %request.target_url, "Refused an edge app's call of a URL not allowed.");
            return reply(
                403,
                format!("url {} is not allowed and please make a rule for this url in the cloud", request.target_url),
            );
        }
        let Some(hub) = self.bus.group_members(group::HUB).first().copied() else {
            return reply(503, "no connection to the cloud: EdgeHub is not running");
        };
        if !view.cloud_connected {
            return reply(503, "no connection to the cloud: EdgeHub is not connected");
        }
        let msg = wire::upload(&request.target_url, &body);
        let id = msg.header.id.clone();
        debug!(msg.id = %id, target_url = %request.target_url, "Sending an edge app's call to the cloud.");
        match self.bus.send_sync(hub, msg, super::or_default(self.timeout)).await {
            Ok(answer) => {
                let text = String::from_utf8_lossy(&answer.content.data()).into_owned();
                if answer.router.operation == operation::ERROR {
                    reply(502, text)
                } else {
                    EdgeReply { code: 200, msg: REPLY_OK.to_owned(), body: text }
                }
            }
            Err(BusError::Timeout { .. }) => reply(504, format!("timeout to get response for message {id}")),
            Err(e) => reply(503, format!("no connection to the cloud: {e}")),
        }
    }
}

/// Accepts connections until `stop`, then gives open ones [`SHUTDOWN_GRACE`] to finish.
pub(super) async fn run(
    listener: TcpListener,
    mut tls: Option<ServerTls>,
    handler: Arc<Handler>,
    spawner: Spawner,
    stop: CancellationToken,
) {
    let mut conns = Acceptor::new(listener, "servicebus", Limits::with_cap(MAX_CONNECTIONS));
    while let Some((stream, peer, permit)) = conns.next(&stop).await {
        let acceptor = match tls.as_mut() {
            Some(t) => Some(t.acceptor().await),
            None => None,
        };
        let registered = conns.registry().register();
        let (handler, stop) = (handler.clone(), stop.clone());
        spawner.spawn(async move {
            let _ = stream.set_nodelay(true);
            match acceptor {
                None => connection(stream, peer, handler, registered, stop).await,
                Some(acceptor) => tls_connection(acceptor, stream, peer, handler, registered, stop).await,
            }
            drop(permit);
        });
    }
    info!("ServiceBus's server stopped.");
}

async fn tls_connection(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    handler: Arc<Handler>,
    registered: Conn,
    stop: CancellationToken,
) {
    let accepted = tokio::select! {
        a = tokio::time::timeout(conns::HEADER_TIMEOUT, acceptor.accept(stream)) => a,
        () = registered.shed() => return,
        _ = stop.cancelled() => return,
    };
    match accepted {
        Ok(Ok(tls)) => connection(tls, peer, handler, registered, stop).await,
        Ok(Err(e)) => debug!(%peer, error = %e, "ServiceBus TLS handshake failed."),
        Err(_) => debug!(%peer, "ServiceBus TLS handshake timed out."),
    }
}

/// Serves one connection (HTTP/1.1, or HTTP/2 by ALPN or prior knowledge) until it closes, the
/// registry sheds it, or the server stops.
async fn connection<S>(stream: S, peer: SocketAddr, handler: Arc<Handler>, registered: Conn, stop: CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let registered = Arc::new(registered);
    let svc = service_fn({
        let registered = registered.clone();
        move |req| {
            // Busy from the complete request head until the answer is written.
            let busy = registered.request();
            let handler = handler.clone();
            async move {
                let resp = handler.handle(req).await;
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
    builder.http1().timer(TokioTimer::new()).header_read_timeout(conns::HEADER_TIMEOUT);
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let mut closing = false;
    let result = loop {
        tokio::select! {
            r = conn.as_mut() => break r,
            () = registered.shed(), if !closing => {
                if !registered.is_busy() {
                    debug!(%peer, "Closed an idle ServiceBus connection.");
                    return;
                }
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = stop.cancelled() => {
                conn.as_mut().graceful_shutdown();
                match tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await {
                    Ok(r) => break r,
                    Err(_) => return,
                }
            }
        }
    };
    if let Err(e) = result {
        debug!(%peer, error = %e, "ServiceBus connection ended with an error.");
    }
}
