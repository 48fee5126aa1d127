//! The REST listener (`modules.router.address:port`, 9443): `{METHOD} /{node}/{namespace}/{path…}`
//! goes where the namespace's Rule for that path says.
//!
//! - Credentials first: `Authorization: Bearer {tokenFile's token}` or a client certificate
//!   signed by `tlsCAFile` (HTTPS), unless `allowUnauthenticated`; else **401**.
//! - The body is read up to [`MAX_BODY`] (upstream's 12 MiB); more is **413**; a body not
//!   complete within `restTimeout` is **408**. At most [`MAX_CONNECTIONS`] connections.
//! - `.`, `..` and encoded separators in the path are **400** (the rule's path bounds what a
//!   caller reaches); so are MQTT wildcards in a topic to publish on.
//! - No rule for the path: **404**. An unknown node: **404**; a node not connected to this
//!   cloudcore: **503** (counted as a failed message) — told at once, never queued.
//! - rest → eventbus: the body is published on the target topic (plus whatever followed the
//!   rule's path) on the node: **200** `message delivered` once it is handed to the node's
//!   session, as upstream.
//! - rest → servicebus: the edge calls `http://127.0.0.1:{service_port}{path}` and its
//!   answer (status, headers, body) is the caller's. No answer within `restTimeout`: **504**.
//!   The caller's `Authorization` header is not passed on to the edge.
//!
//! Unlike upstream, a failed call is not retried (upstream sent the message to the edge up to
//! three times, so an edge app could see one request twice).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kubeedge_model::protocol::servicebus::{self, HttpRequest, HttpResponse};
use kubeedge_telemetry::conns::{Acceptor, Conn, Limits};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::Shared;
use super::rules::{Route, Target};
use super::status::Outcome;

/// The largest request body (upstream's `MaxMessageBytes`, 12 MiB).
pub const MAX_BODY: usize = 12 << 20;
/// Connections served at once: at the cap the one idle longest is closed for a new one.
pub const MAX_CONNECTIONS: usize = 4096;
/// How long a client may take to send a request head.
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

type Body = Full<Bytes>;

/// Serves until `shutdown`; HTTPS when `tls` is given.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    if let Ok(addr) = listener.local_addr() {
        info!(address = %addr, tls = tls.is_some(), "Router REST listener serving.");
    }
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut accept = Acceptor::new(listener, "router", Limits::with_cap(MAX_CONNECTIONS));
    let conns = tokio_util::task::TaskTracker::new();
    while let Some((tcp, peer, slot)) = accept.next(&shutdown).await {
        let _ = tcp.set_nodelay(true);
        let registered = Arc::new(accept.registry().register());
        let (tls, shared, shutdown) = (tls.clone(), shared.clone(), shutdown.clone());
        conns.spawn(async move {
            let _slot = slot;
            match tls {
                Some(tls) => {
                    // A handshake under way is fresh: it may be shed.
                    let tls = tokio::select! {
                        t = tokio::time::timeout(HEADER_READ_TIMEOUT, tls.accept(tcp)) => match t {
                            Ok(Ok(t)) => t,
                            _ => {
                                debug!(%peer, "Router: TLS handshake failed.");
                                return;
                            }
                        },
                        () = registered.shed() => return,
                    };
                    let cert = tls.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
                    connection(TokioIo::new(tls), shared, cert, registered, shutdown).await;
                }
                None => connection(TokioIo::new(tcp), shared, false, registered, shutdown).await,
            }
        });
    }
    conns.close();
    conns.wait().await;
}

async fn connection<I>(
    io: I,
    shared: Arc<Shared>,
    client_cert: bool,
    registered: Arc<Conn>,
    shutdown: CancellationToken,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = service_fn({
        let registered = registered.clone();
        move |req| {
            // Busy from a complete request head until the answer is sent.
            let busy = registered.request();
            let shared = shared.clone();
            async move {
                let resp = handle(&shared, req, client_cert).await;
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
    builder.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            () = shutdown.cancelled() => return,
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
}

fn text(code: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.into())));
    *r.status_mut() = code;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// Whether the caller presented a credential the listener accepts.
fn authenticated(shared: &Shared, headers: &HeaderMap, client_cert: bool) -> bool {
    let auth = &shared.auth;
    if auth.open || (auth.client_certs && client_cert) {
        return true;
    }
    let Some(token) = &auth.token else { return false };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| constant_time_eq(given.trim().as_bytes(), token))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn handle(shared: &Shared, req: Request<Incoming>, client_cert: bool) -> Response<Body> {
    if !authenticated(shared, req.headers(), client_cert) {
        shared.metrics.requests.with_label_values(&["rest", "unauthorized"]).inc();
        let mut r = text(StatusCode::UNAUTHORIZED, "Unauthorized: a bearer token or a client certificate is required");
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    let uri = req.uri().clone();
    let mut parts = uri.path().trim_start_matches('/').splitn(3, '/');
    let (node, ns, rest) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if node.is_empty() || ns.is_empty() {
        return text(
            StatusCode::NOT_FOUND,
            format!("url format incorrect: {uri} (want /{{node}}/{{namespace}}/{{path}})"),
        );
    }
    if !kubeedge_model::valid_node_name(node) {
        return text(StatusCode::BAD_REQUEST, format!("invalid node name {node:?}"));
    }
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return text(StatusCode::PAYLOAD_TOO_LARGE, format!("request body larger than {MAX_BODY} bytes"));
    }
    // The rule's path bounds what the caller reaches: no way up out of it, on the edge app or
    // the topic tree.
    if rest.split('/').any(|seg| seg == "." || seg == ".." || seg.contains('\\') || has_encoded_separator(seg)) {
        return text(StatusCode::BAD_REQUEST, "path segments '.', '..', '\\' and encoded '.' or '/' are not allowed");
    }
    let table = shared.tables.borrow().clone();
    let Some((route, tail)) = table.match_rest(ns, rest) else {
        shared.metrics.requests.with_label_values(&["rest", "no_rule"]).inc();
        return text(StatusCode::NOT_FOUND, format!("Request error: no rule in namespace {ns} matches /{rest}"));
    };
    if matches!(route.target, Target::EventBus { .. }) && tail.contains(['+', '#']) {
        return text(StatusCode::BAD_REQUEST, "a topic to publish on has no MQTT wildcards (+, #)");
    }
    let (head, body) = req.into_parts();
    // A body sent slowly holds a connection and up to MAX_BODY bytes: restTimeout bounds it.
    let body = match tokio::time::timeout(shared.timeout, Limited::new(body, MAX_BODY).collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return text(StatusCode::PAYLOAD_TOO_LARGE, format!("request body larger than {MAX_BODY} bytes"));
        }
        Ok(Err(e)) => return text(StatusCode::BAD_REQUEST, format!("reading the request body: {e}")),
        Err(_) => return text(StatusCode::REQUEST_TIMEOUT, "the request body did not arrive within restTimeout"),
    };
    let key = (route.namespace.clone(), route.name.clone());
    let (resp, outcome) = match &route.target {
        Target::EventBus { topic } => to_eventbus(shared, node, topic, &tail, &body).await,
        Target::ServiceBus { port, path } => {
            let path = join_path(path, &tail, uri.query());
            to_servicebus(shared, node, *port, &path, &head, body, &route).await
        }
        Target::Rest { .. } => (text(StatusCode::NOT_FOUND, "Request error: a rest source needs another target"), None),
    };
    if let Some(outcome) = outcome {
        let result = if outcome == Outcome::Delivered { "ok" } else { "failed" };
        shared.metrics.requests.with_label_values(&[route_label(&route), result]).inc();
        shared.reporter.report(key, outcome).await;
    }
    resp
}

/// `%2e` or `%2f` (any case): a `.` or `/` the edge app might decode.
fn has_encoded_separator(seg: &str) -> bool {
    let lower = seg.to_ascii_lowercase();
    lower.contains("%2e") || lower.contains("%2f") || lower.contains("%5c")
}

fn route_label(route: &Route) -> &'static str {
    match route.target {
        Target::EventBus { .. } => "rest_eventbus",
        Target::ServiceBus { .. } => "rest_servicebus",
        Target::Rest { .. } => "rest_rest",
    }
}

/// The target path with what followed the rule's path, and the query.
fn join_path(base: &str, tail: &str, query: Option<&str>) -> String {
    let mut p = if tail.is_empty() { base.to_owned() } else { format!("{}/{tail}", base.trim_end_matches('/')) };
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        p.push('?');
        p.push_str(q);
    }
    p
}

/// 404 for a node the API does not have, 503 for one not connected here.
async fn not_connected(shared: &Shared, node: &str) -> (Response<Body>, Option<Outcome>) {
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(shared.client.clone());
    match nodes.get_opt(node).await {
        Ok(None) => (text(StatusCode::NOT_FOUND, format!("node {node:?} not found")), None),
        _ => {
            let why = format!("node {node:?} is not connected to this cloudcore");
            (text(StatusCode::SERVICE_UNAVAILABLE, why.clone()), Some(Outcome::Failed(why)))
        }
    }
}

async fn to_eventbus(
    shared: &Shared,
    node: &str,
    topic: &str,
    tail: &str,
    body: &[u8],
) -> (Response<Body>, Option<Outcome>) {
    let topic = if tail.is_empty() { topic.to_owned() } else { format!("{}/{tail}", topic.trim_end_matches('/')) };
    if !shared.links.dispatch(servicebus::publish(node, &topic, body)) {
        return not_connected(shared, node).await;
    }
    (text(StatusCode::OK, "message delivered"), Some(Outcome::Delivered))
}

/// Headers that belong to one hop, and the caller's credentials: not passed to the edge.
fn forwarded(name: &str) -> bool {
    !matches!(
        name,
        "authorization"
            | "host"
            | "connection"
            | "content-length"
            | "transfer-encoding"
            | "upgrade"
            | "te"
            | "trailer"
            | "keep-alive"
            | "proxy-authorization"
            | "proxy-connection"
    )
}

/// Go's canonical header name (`content-type` → `Content-Type`).
fn canonical(name: &str) -> String {
    name.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join("-")
}

async fn to_servicebus(
    shared: &Shared,
    node: &str,
    port: u16,
    path: &str,
    head: &http::request::Parts,
    body: Bytes,
    route: &Route,
) -> (Response<Body>, Option<Outcome>) {
    let mut header = servicebus::Header::new();
    for (name, value) in &head.headers {
        if forwarded(name.as_str()) {
            header
                .entry(canonical(name.as_str()))
                .or_default()
                .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
        }
    }
    let request = HttpRequest { header, body: body.to_vec(), method: head.method.to_string(), url: String::new() };
    let msg = match servicebus::call(node, port, path, &request) {
        Ok(m) => m,
        Err(e) => return (text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()), None),
    };
    let pending = match shared.bus.expect_reply(msg.id()) {
        Ok(p) => p,
        Err(e) => return (text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()), None),
    };
    if !shared.links.dispatch(msg) {
        return not_connected(shared, node).await;
    }
    let reply = match pending.wait(shared.timeout).await {
        Ok(r) => r,
        Err(_) => {
            let why = format!("no answer from node {node:?} within {} s (restTimeout)", shared.timeout.as_secs());
            return (text(StatusCode::GATEWAY_TIMEOUT, why.clone()), Some(Outcome::Failed(why)));
        }
    };
    let answer: HttpResponse = match reply.content.decode() {
        Ok(a) => a,
        Err(_) => {
            let why = format!("node {node:?} answered {} with no HTTP response", route.name);
            return (text(StatusCode::BAD_GATEWAY, why.clone()), Some(Outcome::Failed(why)));
        }
    };
    let status = u16::try_from(answer.status_code).ok().and_then(|s| StatusCode::from_u16(s).ok());
    let Some(status) = status else {
        let why = format!("node {node:?} answered with status {}", answer.status_code);
        return (text(StatusCode::BAD_GATEWAY, why.clone()), Some(Outcome::Failed(why)));
    };
    // ServiceBus's own errors (no app answer) carry its Server header.
    let from_edge = answer.header.get("Server").is_some_and(|v| v.iter().any(|s| s == "kubeedge-edgecore"));
    let outcome = if from_edge && status.as_u16() >= 400 {
        Outcome::Failed(format!("node {node:?}: {} {}", status.as_u16(), String::from_utf8_lossy(&answer.body)))
    } else {
        Outcome::Delivered
    };
    let mut resp = Response::new(Full::new(Bytes::from(answer.body)));
    *resp.status_mut() = status;
    for (name, values) in &answer.header {
        let lower = name.to_ascii_lowercase();
        if !forwarded(&lower) {
            continue;
        }
        let Ok(name) = http::HeaderName::from_bytes(lower.as_bytes()) else { continue };
        for v in values {
            if let Ok(v) = HeaderValue::from_str(v) {
                resp.headers_mut().append(name.clone(), v);
            }
        }
    }
    (resp, Some(outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_headers_and_tokens() {
        assert_eq!(join_path("/url", "", None), "/url");
        assert_eq!(join_path("/url/", "a/b", Some("x=1")), "/url/a/b?x=1");
        assert_eq!(canonical("content-type"), "Content-Type");
        assert_eq!(canonical("x-user-id"), "X-User-Id");
        assert!(!forwarded("authorization") && forwarded("user"));
        assert!(
            constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd") && !constant_time_eq(b"ab", b"abc")
        );
        let valid = kubeedge_model::valid_node_name;
        assert!(valid("edge-1.example") && !valid("Edge") && !valid("a/b") && !valid(""));
        assert!(!valid("..") && !valid(".") && !valid("-a") && !valid("a..b") && !valid("a-"));
        assert!(has_encoded_separator("a%2E%2e") && has_encoded_separator("x%2Fy") && !has_encoded_separator("a%20b"));
    }
}
