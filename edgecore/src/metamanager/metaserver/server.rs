//! The HTTP side: the accept loop (HTTP/1.1 and h2c), request routing to discovery, reads,
//! watches and writes, body caps, and rendering results in the form the client asked for.
//!
//! Idle connections cannot starve the rest (issue #18): every connection is registered in a
//! [`Connections`] registry, busy while a request is in flight (a watch for as long as it
//! streams) and idle otherwise. A connection without a complete first request head (or TLS
//! handshake) within 10 s, or idle for 60 s (5 s once three quarters of the cap are open), is
//! closed; at the cap, a new connection is admitted at once by closing the connection idle
//! longest; and when accept runs out of file descriptors, the connection idle longest is closed
//! too. Busy connections (watches, requests being answered) are never closed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use kubeedge_kube_serve::discovery;
use kubeedge_kube_serve::object;
use kubeedge_kube_serve::request::{ApiPath, ResourceRequest, Verb, parse_path, parse_query, verb};
use kubeedge_kube_serve::status::ApiError;
use kubeedge_kube_serve::table::{self, AcceptKind};
use kubeedge_kube_serve::time;
use kubeedge_metastore::Store;
use kubeedge_telemetry::conns::{self, Acceptor, Busy, Conn, Limits};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::catalog::Catalog;
use super::watch::Hub;
use super::{Options, Remote, read, watch, write};
use crate::metamanager::Gvr;

/// A response body: full or streaming.
pub(crate) type Body = BoxBody<Bytes, std::io::Error>;

/// How long open connections get to finish after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a client may take to send an HTTP/1 request's headers, also between kept-alive
/// requests: hyper's own timer, a backstop for the registry's shorter first-head and pressured
/// timeouts (which also cover a silent client: hyper-util's version detection has no timeout).
const HEADER_READ_TIMEOUT: Duration = conns::IDLE_TIMEOUT;
/// How long a client may take to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = conns::HEADER_TIMEOUT;

/// What every request handler shares.
pub(crate) struct Shared {
    /// MetaManager's store.
    pub(crate) store: Store,
    /// The way to the cloud for writes.
    pub(crate) remote: Remote,
    /// The change feed with its replay history.
    pub(crate) hub: Arc<Hub>,
    /// The served resources.
    pub(crate) catalog: Catalog,
    /// The listener's address, for `/api`.
    pub(crate) address: SocketAddr,
    /// Ends watches at shutdown.
    pub(crate) shutdown: CancellationToken,
    /// Tuning.
    pub(crate) opts: Options,
}

/// Accepts connections until `shutdown`, then waits (a while) for open ones to finish; those
/// still open after [`SHUTDOWN_GRACE`] are aborted.
pub(crate) async fn run(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut connections = JoinSet::new();
    let cap = shared.opts.max_connections.max(1);
    let mut acceptor = Acceptor::new(listener, "metaserver", Limits::with_cap(cap));
    loop {
        // Finished connections are reaped as new ones come.
        while connections.try_join_next().is_some() {}
        let Some((stream, peer, permit)) = acceptor.next(&shutdown).await else { break };
        let registered = acceptor.registry().register();
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _ = stream.set_nodelay(true);
            match shared.opts.tls.clone() {
                None => connection(stream, peer, shared, shutdown, registered).await,
                // Off loopback: mutual TLS, the client's certificate verified against
                // `tlsCaFile` before any request is read. The handshake is fresh: it may be shed.
                Some(tls) => {
                    let accept = tokio_rustls::TlsAcceptor::from(tls).accept(stream);
                    let accepted = tokio::select! {
                        a = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, accept) => a,
                        () = registered.shed() => {
                            debug!(%peer, "Closed a pending MetaServer TLS handshake to make room.");
                            return;
                        }
                    };
                    match accepted {
                        Ok(Ok(tls)) => connection(tls, peer, shared, shutdown, registered).await,
                        Ok(Err(e)) => debug!(%peer, error = %e, "MetaServer TLS handshake failed."),
                        Err(_) => debug!(%peer, "MetaServer TLS handshake timed out."),
                    }
                }
            }
            drop(permit);
        });
    }
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async { while connections.join_next().await.is_some() {} });
    if drained.await.is_err() {
        warn!(
            connections = connections.len(),
            "MetaServer connections still open after the shutdown grace period; aborting them."
        );
        connections.shutdown().await;
    }
}

/// Serves one connection (HTTP/1.1, or HTTP/2 with prior knowledge) until it closes, the
/// registry sheds it, or the server shuts down. `registered` is the connection's entry: each
/// request (an HTTP/2 stream) marks it busy until its response body is done.
async fn connection<S>(stream: S, peer: SocketAddr, shared: Arc<Shared>, shutdown: CancellationToken, registered: Conn)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let registered = Arc::new(registered);
    let svc = service_fn({
        let registered = registered.clone();
        move |req| {
            // Called as soon as the request head is complete.
            let busy = registered.request();
            let shared = shared.clone();
            async move { Ok::<_, Infallible>(busy_until_sent(handle(shared, req).await, busy)) }
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let mut closing = false;
    let result = loop {
        tokio::select! {
            r = conn.as_mut() => break r,
            () = registered.shed(), if !closing => {
                // Idle (or fresh): closed at once. A request that started since the registry
                // chose this connection finishes first.
                if !registered.is_busy() {
                    debug!(%peer, "Closed an idle MetaServer connection.");
                    return;
                }
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                break conn.await;
            }
        }
    };
    if let Err(e) = result {
        debug!(%peer, error = %e, "MetaServer connection ended with an error.");
    }
}

/// Keeps the connection busy until `resp`'s body is done (a watch for as long as it streams).
fn busy_until_sent(resp: Response<Body>, busy: Busy) -> Response<Body> {
    resp.map(|body| {
        body.map_frame(move |frame| {
            let _busy = &busy;
            frame
        })
        .boxed()
    })
}

/// One request's context.
pub(crate) struct Req<'a> {
    /// Shared server state.
    pub(crate) shared: &'a Shared,
    /// The HTTP method.
    pub(crate) method: &'a Method,
    /// The form the Accept header asks for.
    pub(crate) accept: AcceptKind,
    /// The raw query string.
    pub(crate) query: &'a str,
    /// The Content-Type header.
    pub(crate) content_type: &'a str,
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let resp = match route(&shared, req).await {
        Ok(resp) => resp,
        Err(e) => error_response(&e),
    };
    debug!(http.method = %method, http.path = %path, http.status = resp.status().as_u16(), "Served request.");
    resp
}

/// 404 for a path that names nothing.
pub(crate) fn no_such_path() -> ApiError {
    ApiError::new(404, "NotFound", "the server could not find the requested resource")
}

async fn route(shared: &Shared, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let method = req.method().clone();
    let accept_raw = header_str(req.headers(), header::ACCEPT).to_owned();
    let accept = table::parse_accept_no_protobuf(&accept_raw);
    if path.trim_end_matches('/') == CONFIRM_UPGRADE_PATH {
        return confirm_upgrade(shared, &method).await;
    }
    let parsed = parse_path(&path);
    let is_get = method == Method::GET || method == Method::HEAD;
    if !matches!(parsed, ApiPath::Resource(_)) && !is_get {
        return Err(ApiError::method_not_allowed(format!("{method} is not supported on {path}")));
    }
    match parsed {
        ApiPath::Root => Ok(json_response(
            StatusCode::OK,
            &json!({"paths": ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/openapi/v3", "/readyz", "/version"]}),
        )),
        ApiPath::Version => Ok(json_response(StatusCode::OK, &discovery::version_info())),
        ApiPath::LegacyApi => match accept {
            AcceptKind::AggregatedDiscovery { v2 } => {
                let (core, _) = discovery::aggregated_discovery(&shared.catalog.infos(), v2);
                Ok(typed_response(StatusCode::OK, accept.content_type(), &core))
            }
            _ => Ok(json_response(StatusCode::OK, &discovery::api_versions(&shared.address.to_string()))),
        },
        ApiPath::LegacyVersion => {
            Ok(json_response(StatusCode::OK, &discovery::api_resource_list("v1", &shared.catalog.infos_in("", "v1"))))
        }
        ApiPath::Groups => match accept {
            AcceptKind::AggregatedDiscovery { v2 } => {
                let (_, groups) = discovery::aggregated_discovery(&shared.catalog.infos(), v2);
                Ok(typed_response(StatusCode::OK, accept.content_type(), &groups))
            }
            _ => Ok(json_response(StatusCode::OK, &discovery::api_group_list(&shared.catalog.groups()))),
        },
        ApiPath::Group { group } => match shared.catalog.groups().into_iter().find(|(g, _)| *g == group) {
            Some((g, versions)) => Ok(json_response(StatusCode::OK, &discovery::api_group(&g, &versions))),
            None => Err(no_such_path()),
        },
        ApiPath::GroupVersion { group, version } => {
            let infos = shared.catalog.infos_in(&group, &version);
            if infos.is_empty() || group.is_empty() {
                return Err(no_such_path());
            }
            Ok(json_response(StatusCode::OK, &discovery::api_resource_list(&format!("{group}/{version}"), &infos)))
        }
        ApiPath::Other => other_path(shared, &path),
        ApiPath::Resource(r) => {
            let content_type = header_str(req.headers(), header::CONTENT_TYPE).to_owned();
            let ctx = Req { shared, method: &method, accept, query: &query, content_type: &content_type };
            resource(ctx, r, req).await
        }
    }
}

/// `keadm ctl confirm`'s request (upstream's `ConfirmUpgrade`).
pub(crate) const CONFIRM_UPGRADE_PATH: &str = "/api/v1/taskupgrade/confirm-upgrade";

/// How long a confirmation waits for the task manager.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// `POST /api/v1/taskupgrade/confirm-upgrade`: the task manager continues the upgrade that
/// waits for confirmation (200), or there is none (400, upstream's text). It is asked over the
/// bus, so this handler only waits for its answer.
async fn confirm_upgrade(shared: &Shared, method: &Method) -> Result<Response<Body>, ApiError> {
    if method != Method::POST {
        return Err(ApiError::method_not_allowed(format!("{method} is not supported on {CONFIRM_UPGRADE_PATH}")));
    }
    let text = "text/plain; charset=utf-8";
    match crate::taskmanager::confirm(&shared.remote.bus, CONFIRM_TIMEOUT).await {
        Ok(()) => Ok(bytes_response(StatusCode::OK, text, b"ok".to_vec())),
        Err(crate::taskmanager::ConfirmError::Nothing(why)) => {
            Ok(bytes_response(StatusCode::BAD_REQUEST, text, why.into_bytes()))
        }
        Err(e) => {
            warn!(error = %e, "A confirmation of an upgrade got no answer.");
            Ok(bytes_response(StatusCode::GATEWAY_TIMEOUT, text, e.to_string().into_bytes()))
        }
    }
}

/// Health endpoints and OpenAPI; anything else is 404.
fn other_path(shared: &Shared, path: &str) -> Result<Response<Body>, ApiError> {
    let trimmed = path.trim_end_matches('/');
    for health in ["/healthz", "/livez", "/readyz"] {
        // `/readyz/ping` and friends: the individual checks all pass too.
        if trimmed == health || trimmed.strip_prefix(health).is_some_and(|rest| rest.starts_with('/')) {
            return Ok(bytes_response(StatusCode::OK, "text/plain; charset=utf-8", b"ok".to_vec()));
        }
    }
    if let Some(rest) = trimmed.strip_prefix("/openapi/v3") {
        return shared
            .catalog
            .openapi_v3(rest.trim_start_matches('/'))
            .map(|doc| json_response(StatusCode::OK, &doc))
            .ok_or_else(no_such_path);
    }
    Err(no_such_path())
}

/// A resource request: resolves the resource, checks the path's shape and dispatches by verb.
async fn resource(ctx: Req<'_>, r: ResourceRequest, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let (gvr, info) = ctx.shared.catalog.resolve(&r.group, &r.version, &r.resource).ok_or_else(no_such_path)?;
    if let Some(sub) = &r.subresource
        && !info.subresources.contains(sub)
    {
        return Err(no_such_path());
    }
    // `/api/v1/namespaces/{ns}/nodes` and `/api/v1/pods/{name}` address nothing.
    if (!gvr.namespaced && r.namespace.is_some()) || (gvr.namespaced && r.name.is_some() && r.namespace.is_none()) {
        return Err(no_such_path());
    }
    let opts = parse_query(ctx.query)?;
    let v = verb(ctx.method.as_str(), r.name.is_some(), opts.watch)
        .ok_or_else(|| ApiError::method_not_allowed(format!("{} is not supported", ctx.method)))?;
    let ns = r.namespace.as_deref();
    let name = r.name.as_deref();
    let sub = r.subresource.as_deref();
    let not_allowed = || {
        ApiError::method_not_allowed(format!(
            "{} is not supported on {}{}",
            ctx.method,
            gvr.plural,
            sub.map(|s| format!("/{s}")).unwrap_or_default()
        ))
    };
    match (v, sub, name) {
        (Verb::List, None, None) => read::list(&ctx, &gvr, ns, &opts).await,
        (Verb::Watch, None, _) => watch::serve(&ctx, gvr, ns, name, &opts).await,
        (Verb::Get, _, Some(name)) => read::get(&ctx, &gvr, ns, name).await,
        (Verb::Create | Verb::Update | Verb::Patch | Verb::Delete, _, _) => {
            let body = read_body(req, ctx.shared.opts.max_body).await?;
            match (v, sub, name) {
                (Verb::Create, None, None) => write::create(&ctx, &gvr, ns, &body).await,
                (Verb::Update, _, Some(name)) => write::update(&ctx, &gvr, ns, name, sub, &body).await,
                (Verb::Patch, _, Some(name)) => write::patch(&ctx, &gvr, ns, name, sub, &body).await,
                (Verb::Delete, None, Some(name)) => write::delete(&ctx, &gvr, ns, name, &body).await,
                _ => Err(not_allowed()),
            }
        }
        _ => Err(not_allowed()),
    }
}

fn header_str(headers: &http::HeaderMap, name: header::HeaderName) -> &str {
    headers.get(name).and_then(|h| h.to_str().ok()).unwrap_or_default()
}

/// Bodies over the cap but under this many times it are read and discarded before the 413, so
/// the client finishes sending and sees the answer; larger ones are refused without reading.
const DRAIN_FACTOR: usize = 4;

/// Reads a request body up to `max` bytes: a larger declared or actual size is 413.
async fn read_body(req: Request<Incoming>, max: usize) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::too_large(format!("the request body is larger than {max} bytes"));
    let drain_limit = max.saturating_mul(DRAIN_FACTOR);
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > drain_limit) {
        return Err(too_large());
    }
    let mut body = req.into_body();
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            seen = seen.saturating_add(data.len());
            if seen > drain_limit {
                return Err(too_large());
            }
            if seen <= max {
                buf.extend_from_slice(&data);
            }
        }
    }
    if seen > max { Err(too_large()) } else { Ok(buf.freeze()) }
}

/// Decodes a JSON, YAML or (for the kinds kube-serve knows) protobuf request body.
pub(crate) fn decode_body(content_type: &str, body: &[u8]) -> Result<Value, ApiError> {
    let ct = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    if kubeedge_kube_serve::protobuf::is_protobuf(&ct) {
        return kubeedge_kube_serve::protobuf::decode(body);
    }
    if ct.contains("yaml") {
        let text = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
        return yaml_serde::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("the body is not valid YAML: {e}")));
    }
    if ct.is_empty() || ct.contains("json") {
        return serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")));
    }
    Err(ApiError::unsupported_media_type(content_type))
}

// === responses ===

/// A full JSON response.
pub(crate) fn json_response(code: StatusCode, value: &Value) -> Response<Body> {
    typed_response(code, "application/json", value)
}

/// A JSON body with an explicit content type (Tables, partial metadata, discovery).
pub(crate) fn typed_response(code: StatusCode, content_type: &str, value: &Value) -> Response<Body> {
    bytes_response(code, content_type, serde_json::to_vec(value).unwrap_or_default())
}

/// A full response with a content type.
pub(crate) fn bytes_response(code: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed());
    *resp.status_mut() = code;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

/// The `Status` body of an error, with its code.
pub(crate) fn error_response(err: &ApiError) -> Response<Body> {
    json_response(StatusCode::from_u16(err.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), &err.to_status())
}

/// What a handler returns: one object or a page of a list.
pub(crate) enum Shape {
    /// One object.
    One(Value),
    /// A list page.
    List {
        /// The objects.
        items: Vec<Value>,
        /// The list's resourceVersion.
        rv: u64,
        /// Where the next page starts.
        continue_token: Option<String>,
        /// Objects after this page, when known.
        remaining: Option<i64>,
    },
}

/// Renders a result in the form the Accept header asks for: the object or list itself (JSON or
/// YAML), a Table for `kubectl get`, or partial object metadata.
pub(crate) fn render(ctx: &Req<'_>, gvr: &Gvr, shape: Shape, code: StatusCode) -> Result<Response<Body>, ApiError> {
    let kind = ctx.accept;
    let list_meta = |rv: u64, continue_token: &Option<String>, remaining: Option<i64>| {
        let mut m = json!({"resourceVersion": rv.to_string()});
        if let Some(c) = continue_token.as_deref().filter(|c| !c.is_empty()) {
            m["continue"] = json!(c);
        }
        if let Some(r) = remaining {
            m["remainingItemCount"] = json!(r);
        }
        m
    };
    match kind {
        AcceptKind::Unsupported | AcceptKind::AggregatedDiscovery { .. } | AcceptKind::Protobuf { .. } => {
            Err(ApiError::not_acceptable("only JSON, YAML, Table and PartialObjectMetadata responses are served"))
        }
        AcceptKind::Table { version } => {
            let include = table::parse_include_object(ctx.query)?;
            let (objects, meta) = match shape {
                Shape::One(o) => (vec![o], json!({})),
                Shape::List { items, rv, continue_token, remaining } => {
                    (items, list_meta(rv, &continue_token, remaining))
                }
            };
            let mut tbl = table::to_table(gvr.plural, gvr.group, &objects, include, time::now_unix());
            tbl["apiVersion"] = json!(format!("meta.k8s.io/{version}"));
            tbl["metadata"] = meta;
            Ok(typed_response(code, kind.content_type(), &tbl))
        }
        AcceptKind::PartialObjectMetadata { version } | AcceptKind::PartialObjectMetadataList { version } => {
            let body = match shape {
                Shape::One(o) => partial_metadata(&o, version),
                Shape::List { items, rv, continue_token, remaining } => object::list(
                    "PartialObjectMetadataList",
                    &format!("meta.k8s.io/{version}"),
                    &rv.to_string(),
                    continue_token.as_deref(),
                    remaining,
                    items.iter().map(|o| partial_metadata(o, version)).collect(),
                ),
            };
            Ok(typed_response(code, kind.content_type(), &body))
        }
        AcceptKind::Json | AcceptKind::Yaml => {
            let body = match shape {
                Shape::One(o) => o,
                Shape::List { items, rv, continue_token, remaining } => object::list(
                    &format!("{}List", gvr.kind),
                    &gvr.api_version(),
                    &rv.to_string(),
                    continue_token.as_deref(),
                    remaining,
                    items,
                ),
            };
            if kind == AcceptKind::Yaml {
                let yaml = yaml_serde::to_string(&body).map_err(|e| ApiError::internal(e.to_string()))?;
                return Ok(bytes_response(code, "application/yaml", yaml.into_bytes()));
            }
            Ok(json_response(code, &body))
        }
    }
}

/// An object's `PartialObjectMetadata`.
pub(crate) fn partial_metadata(obj: &Value, version: &str) -> Value {
    json!({
        "apiVersion": format!("meta.k8s.io/{version}"),
        "kind": "PartialObjectMetadata",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}
