//! Edged's kubelet server: the endpoints upstream's edged (a kubelet) serves on
//! `tailoredKubeletConfig.address:readOnlyPort` (127.0.0.1:10350 by default), which EdgeStream
//! calls when CloudStream tunnels `kubectl logs`, `exec`, `attach` and `port-forward` to the
//! edge.
//!
//! - `GET /containerLogs/{namespace}/{pod}/{container}`: the container's log, read from the file
//!   CRI names (`ContainerStatus.log_path`, in the CRI log format), with kubelet's query
//!   parameters (`follow`, `tailLines`/`tail`, `timestamps`, `previous`, `limitBytes`,
//!   `sinceSeconds`, `sinceTime`, `stream`). The body is chunked `text/plain`; with `follow` the
//!   file is polled every [`FOLLOW_POLL`] and the response ends once the container has stopped
//!   and the file is drained, when the client goes away, or at shutdown.
//! - `GET|POST /exec/{namespace}/{pod}[/{uid}]/{container}?command=..`: CRI `Exec`, then, as
//!   kubelet with `redirectContainerStreaming=false`, the client's upgrade request (SPDY/3.1 or
//!   WebSocket) is forwarded to the runtime's streaming server, its `101 Switching Protocols`
//!   relayed, and bytes copied both ways until one side closes.
//! - `GET|POST /attach/{namespace}/{pod}[/{uid}]/{container}`: CRI `Attach` to the current run
//!   of the container, with exec's stream flags (no command), then proxied as exec is. The TTY
//!   flag is the client's (kubectl sets it from the container's spec, as kubelet would).
//! - `GET|POST /portForward/{namespace}/{pod}[/{uid}]`: CRI `PortForward` into the pod's
//!   newest sandbox (a ready one first), then proxied as exec is. SPDY clients
//!   (`portforward.k8s.io`) name a port per stream; WebSocket clients (`v4.channel.k8s.io`)
//!   name them in the query as kubelet reads it (`port`, repeated or comma-separated,
//!   required), and the ports go into the CRI request, where the runtime's streaming server
//!   takes them from ([`portforward`]).
//! - `GET /stats/summary` and `GET /metrics/resource`: kubelet's resource endpoints, from CRI
//!   stats and `/proc` ([`stats`]).
//! - `GET /metrics/probes`: kubelet's `prober_probe_total` counter, from the probe workers'
//!   counts ([`ProbeMetrics`]); a deleted pod's series are gone.
//! - `GET /healthz` (and `/healthz/{check}`, upstream edged polls `/healthz/syncloop`): `ok`.
//!
//! Pods are found through CRI (not through Edged's pod list): the newest sandbox labelled with
//! the pod's namespace and name, and in it the container's runs by name, ordered by
//! `metadata.attempt` (the last is the current one, the one before it is `previous`).
//!
//! Errors are plain text with kubelet's status codes and messages: 404 for an unknown pod or
//! container, 400 for a query that does not decode (`tailLines=abc`) and for log failures
//! (`previous` without an earlier run), 422 for values kubelet's validation rejects
//! (`tailLines=-1`, `limitBytes=0`), and for exec, attach and port-forward the runtime's gRPC
//! code as kubelet maps it (NotFound → 404, ResourceExhausted → 429, else 500). A streaming
//! request that is not an upgrade gets 400 `Upgrade request required`.
//!
//! Idle connections cannot starve the rest (issue #18): every connection is registered in a
//! [`Connections`] registry, busy while a request is in flight (a followed log for as long as it
//! streams, an exec, attach or port-forward once upgraded until its relay ends) and idle
//! otherwise. A connection without a complete request head within 10 s, or idle for 60 s (5 s
//! once three quarters of [`MAX_CONNECTIONS`] are open), is closed; at the cap, a new connection
//! is admitted at once by closing the connection idle longest; and when accept runs out of file
//! descriptors, the connection idle longest is closed too. Busy connections are never closed.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{Read, Seek, SeekFrom};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioIo, TokioTimer};
use kubeedge_cri::v1::{self, ContainerState};
use kubeedge_cri::{Cri, Error as CriError};
use kubeedge_kube_serve::request::{percent_decode, query_pairs};
use kubeedge_telemetry::conns::{self, Acceptor, Busy, Conn, Limits};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::pods::{LABEL_CONTAINER_NAME, LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID};
use super::probes::ProbeMetrics;

mod exec;
mod logs;
mod portforward;
mod stats;

use exec::*;
use logs::*;
use portforward::*;

/// Where upstream's edged serves by default (`address: 127.0.0.1`, `readOnlyPort: 10350`).
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 10350);

/// How often a followed log file is checked for new lines (and for rotation).
pub const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// How often a followed container is asked whether it still runs (kubelet's
/// `logForceCheckPeriod`).
const RUNNING_CHECK: Duration = Duration::from_secs(1);
/// Open connections at most. An exec session keeps its connection's slot until the relay ends.
/// Past it, a new client takes the slot of the connection idle longest (which is closed); with
/// none idle, it waits in the listen backlog. As many as EdgeStream opens at once (its
/// `MAX_CONNECTIONS`), so every tunnelled stream gets an answer.
pub const MAX_CONNECTIONS: usize = 1024;
/// The largest request head accepted from a client (hyper's read buffer cap).
const MAX_REQUEST_HEAD: usize = 64 * 1024;
/// The largest response head accepted from the runtime's streaming server.
const MAX_UPGRADE_RESPONSE_HEAD: usize = 16 * 1024;
/// The largest error body relayed from the streaming server.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// How long a client may take to send a request's headers, also between kept-alive requests:
/// hyper's own timer, a backstop for the registry's shorter first-head and pressured timeouts.
const HEADER_READ_TIMEOUT: Duration = conns::IDLE_TIMEOUT;
/// How long dialling the streaming server and getting its response head may take.
const BACKEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long open connections get to finish after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Bytes read from a log file at a time.
const READ_CHUNK: usize = 32 * 1024;
/// A log "line" longer than this without a newline is dropped (CRI runtimes split long lines
/// into 16 KiB partials, so only a corrupt file gets here).
const MAX_LINE: usize = 1024 * 1024;
/// Block size of the backwards scan for `tailLines`.
const TAIL_BLOCK: usize = 8 * 1024;

/// A response body: full or streaming (log streams are not `Sync`).
type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// What starting the server can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address could not be bound.
    #[error("binding the kubelet server to {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
}

/// Binds `addr` (port 0 picks a free one) and serves on it in a spawned task until `stop`.
/// Returns the bound address and the task, which ends once open connections have finished (or
/// the shutdown grace period has passed).
pub async fn serve(
    cri: Cri,
    node: String,
    probes: ProbeMetrics,
    addr: SocketAddr,
    stop: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<()>), Error> {
    let listener = TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source })?;
    let local = listener.local_addr().map_err(|source| Error::Bind { addr, source })?;
    info!(server.addr = %local, "Edged's kubelet server is listening.");
    Ok((local, tokio::spawn(run(listener, cri, node, probes, stop))))
}

/// Serves on an already-bound listener until `stop`, then waits (a while) for open connections,
/// log streams and streaming sessions to end; each of them observes `stop` too. `node` is the
/// node's name, as `/stats/summary` reports it; `probes` is where the probe workers' counts
/// are read.
pub async fn run(listener: TcpListener, cri: Cri, node: String, probes: ProbeMetrics, stop: CancellationToken) {
    let tasks = TaskTracker::new();
    let shared = Arc::new(Shared {
        cri,
        node,
        node_cpu: stats::NodeCpu::default(),
        probes,
        stop: stop.clone(),
        tasks: tasks.clone(),
    });
    let mut acceptor = Acceptor::new(listener, "edged-kubelet-server", Limits::with_cap(MAX_CONNECTIONS));
    while let Some((stream, peer, permit)) = acceptor.next(&stop).await {
        tasks.spawn(connection(stream, peer, shared.clone(), Arc::new(permit), acceptor.registry().register()));
    }
    drop(acceptor);
    tasks.close();
    // Every task ends by itself within the grace period after `stop`; this only reports.
    if tokio::time::timeout(SHUTDOWN_GRACE * 2, tasks.wait()).await.is_err() {
        warn!(tasks = tasks.len(), "Kubelet server tasks still running after the shutdown grace period.");
    }
    info!("Edged's kubelet server stopped.");
}

/// What every request handler shares.
struct Shared {
    cri: Cri,
    /// The node's name, for `/stats/summary`.
    node: String,
    /// The node's CPU counter at the last summary (for `usageNanoCores`).
    node_cpu: stats::NodeCpu,
    /// The probe workers' counts, for `/metrics/probes`.
    probes: ProbeMetrics,
    stop: CancellationToken,
    /// Connections, streaming relays and their backend connections.
    tasks: TaskTracker,
}

/// Serves one HTTP/1.1 connection (with upgrades) until it closes, the registry sheds it, or
/// the server shuts down. `permit` is the connection's slot; a streaming relay keeps a clone of
/// it. `registered` is the connection's entry: each request marks it busy until its response
/// body is done (an upgrade until the connection is handed over).
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    permit: Arc<OwnedSemaphorePermit>,
    registered: Conn,
) {
    let _ = stream.set_nodelay(true);
    let stop = shared.stop.clone();
    let registered = Arc::new(registered);
    let svc = service_fn({
        let registered = registered.clone();
        move |req| {
            // Called as soon as the request head is complete.
            let busy = registered.request();
            let (shared, permit) = (shared.clone(), permit.clone());
            async move { Ok::<_, Infallible>(busy_until_sent(handle(shared, req, peer, permit).await, busy)) }
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).max_buf_size(MAX_REQUEST_HEAD);
    let conn = builder.serve_connection(TokioIo::new(stream), svc).with_upgrades();
    tokio::pin!(conn);
    let mut closing = false;
    let result = loop {
        tokio::select! {
            r = conn.as_mut() => break r,
            () = registered.shed(), if !closing => {
                // Idle (or fresh): closed at once. A request that started since the registry
                // chose this connection finishes first.
                if !registered.is_busy() {
                    debug!(%peer, "Closed an idle kubelet server connection to make room.");
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
        debug!(%peer, error = %e, "Kubelet server connection ended with an error.");
    }
}

/// Keeps the connection busy while `resp` is sent: until its body is done (a followed log for as
/// long as it streams), or, for a `101 Switching Protocols`, until the connection is handed to
/// the relay and leaves the server.
fn busy_until_sent(resp: Response<Body>, busy: Busy) -> Response<Body> {
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        busy.hand_over();
        return resp;
    }
    resp.map(|body| {
        body.map_frame(move |frame| {
            let _busy = &busy;
            frame
        })
        .boxed_unsync()
    })
}

// === routing and errors ===

/// An error answer: kubelet's status code and its plain-text message.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HttpError {
    status: StatusCode,
    message: String,
}

impl HttpError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    fn response(&self) -> Response<Body> {
        text(self.status, self.message.clone())
    }
}

/// A CRI failure outside the streaming calls: the runtime is unwell.
fn runtime_error(e: CriError) -> HttpError {
    HttpError::internal(e.to_string())
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

/// Which container an endpoint is about.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    namespace: String,
    pod: String,
    /// Only in the streaming endpoints' `/{ns}/{pod}/{uid}/…` form.
    uid: Option<String>,
    /// Empty for a port forward (a pod's, not a container's).
    container: String,
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Healthz,
    Logs(Target),
    Exec(Target),
    Attach(Target),
    PortForward(Target),
    StatsSummary,
    MetricsResource,
    MetricsProbes,
}

/// Maps a method and path to an endpoint (path segments percent-decoded).
fn route(method: &Method, path: &str) -> Result<Route, HttpError> {
    let segments: Vec<String> = path.trim_start_matches('/').split('/').map(percent_decode).collect();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let not_found = || HttpError::not_found("404 page not found");
    let not_allowed = || HttpError::new(StatusCode::METHOD_NOT_ALLOWED, "405: Method Not Allowed");
    let get_only = |r: Route| if method == Method::GET || method == Method::HEAD { Ok(r) } else { Err(not_allowed()) };
    // The streaming endpoints take GET (WebSocket) and POST (SPDY), as kubelet.
    let streaming = |r: Route| if method == Method::GET || method == Method::POST { Ok(r) } else { Err(not_allowed()) };
    match segs.as_slice() {
        ["healthz"] | ["healthz", _] => get_only(Route::Healthz),
        ["stats", "summary"] => get_only(Route::StatsSummary),
        ["metrics", "resource"] => get_only(Route::MetricsResource),
        ["metrics", "probes"] => get_only(Route::MetricsProbes),
        ["containerLogs", ns, pod, container] => {
            // Kubelet's own messages (JSON-looking, yet sent as plain text).
            if pod.is_empty() {
                return Err(HttpError::bad_request(r#"{"message": "Missing podID."}"#));
            }
            if container.is_empty() {
                return Err(HttpError::bad_request(r#"{"message": "Missing container name."}"#));
            }
            if ns.is_empty() {
                return Err(HttpError::bad_request(r#"{"message": "Missing podNamespace."}"#));
            }
            let t = Target { namespace: (*ns).into(), pod: (*pod).into(), uid: None, container: (*container).into() };
            get_only(Route::Logs(t))
        }
        [kind @ ("exec" | "attach"), ns, pod, rest @ ..]
            if matches!(rest.len(), 1 | 2) && !ns.is_empty() && !pod.is_empty() =>
        {
            let (uid, container) = match rest {
                [c] => (None, *c),
                [u, c] => (Some((*u).to_owned()), *c),
                _ => return Err(not_found()),
            };
            if container.is_empty() {
                return Err(not_found());
            }
            let t = Target { namespace: (*ns).into(), pod: (*pod).into(), uid, container: container.into() };
            streaming(if *kind == "exec" { Route::Exec(t) } else { Route::Attach(t) })
        }
        ["portForward", ns, pod, rest @ ..] if rest.len() <= 1 && !ns.is_empty() && !pod.is_empty() => {
            let uid = match rest {
                [u] if !u.is_empty() => Some((*u).to_owned()),
                [] => None,
                _ => return Err(not_found()),
            };
            streaming(Route::PortForward(Target {
                namespace: (*ns).into(),
                pod: (*pod).into(),
                uid,
                container: String::new(),
            }))
        }
        _ => Err(not_found()),
    }
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    peer: SocketAddr,
    permit: Arc<OwnedSemaphorePermit>,
) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let result = match route(&method, &path) {
        Ok(Route::Healthz) => Ok(text(StatusCode::OK, "ok".into())),
        Ok(Route::Logs(target)) => container_logs(&shared, &target, &query).await,
        Ok(Route::Exec(target)) => exec(&shared, &target, &query, req, peer, permit).await,
        Ok(Route::Attach(target)) => attach(&shared, &target, &query, req, peer, permit).await,
        Ok(Route::PortForward(target)) => port_forward(&shared, &target, &query, req, peer, permit).await,
        Ok(Route::StatsSummary) => match stats::summary(&shared.cri, &shared.node, &shared.node_cpu).await {
            Ok(summary) => {
                let mut resp = Response::new(full(summary.to_string()));
                resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                Ok(resp)
            }
            Err(e) => Err(runtime_error(e)),
        },
        Ok(Route::MetricsResource) => Ok(prometheus(stats::resource_metrics(&shared.cri).await)),
        Ok(Route::MetricsProbes) => Ok(prometheus(stats::probe_metrics(&shared.probes))),
        Err(e) => Err(e),
    };
    let resp = result.unwrap_or_else(|e| e.response());
    debug!(http.method = %method, http.path = %path, http.status = resp.status().as_u16(), "Served request.");
    resp
}

/// A Prometheus text answer.
fn prometheus(body: String) -> Response<Body> {
    let mut resp = Response::new(full(body));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    resp
}

/// The target pod's sandboxes (those of its `uid` when the path names one); 404 when it has
/// none.
async fn pod_sandboxes(cri: &Cri, t: &Target) -> Result<Vec<v1::PodSandbox>, HttpError> {
    let filter = v1::PodSandboxFilter {
        label_selector: HashMap::from([
            (LABEL_POD_NAMESPACE.to_owned(), t.namespace.clone()),
            (LABEL_POD_NAME.to_owned(), t.pod.clone()),
        ]),
        ..Default::default()
    };
    let sandboxes: Vec<v1::PodSandbox> = (cri.list_pod_sandbox(Some(filter)).await.map_err(runtime_error)?)
        .into_iter()
        .filter(|s| t.uid.as_ref().is_none_or(|uid| s.labels.get(LABEL_POD_UID) == Some(uid)))
        .collect();
    if sandboxes.is_empty() {
        return Err(HttpError::not_found(format!("pod {:?} does not exist", t.pod)));
    }
    Ok(sandboxes)
}

/// The runs of the target container in the pod's newest sandbox, oldest attempt first; 404 when
/// there is no such pod or container.
async fn container_runs(cri: &Cri, t: &Target) -> Result<Vec<v1::Container>, HttpError> {
    let sandbox = pod_sandboxes(cri, t).await?.into_iter().max_by_key(|s| s.created_at);
    let Some(sandbox) = sandbox else { return Err(HttpError::not_found(format!("pod {:?} does not exist", t.pod))) };
    let filter = v1::ContainerFilter {
        pod_sandbox_id: sandbox.id,
        label_selector: HashMap::from([(LABEL_CONTAINER_NAME.to_owned(), t.container.clone())]),
        ..Default::default()
    };
    let mut runs = cri.list_containers(Some(filter)).await.map_err(runtime_error)?;
    if runs.is_empty() {
        return Err(HttpError::not_found(format!("container {:?} not found in pod {:?}", t.container, t.pod)));
    }
    runs.sort_by_key(|c| c.metadata.as_ref().map(|m| m.attempt).unwrap_or(0));
    Ok(runs)
}

// === /containerLogs ===

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i128 = 1_700_000_000_000_000_000;

    fn opts(q: &str) -> LogOptions {
        LogOptions::parse(q, NOW).unwrap_or_else(|e| panic!("{q}: {e:?}"))
    }

    #[test]
    fn paths_route_as_kubelets() {
        let t = |ns: &str, pod: &str, uid: Option<&str>, c: &str| Target {
            namespace: ns.into(),
            pod: pod.into(),
            uid: uid.map(Into::into),
            container: c.into(),
        };
        assert_eq!(route(&Method::GET, "/healthz"), Ok(Route::Healthz));
        assert_eq!(route(&Method::GET, "/healthz/syncloop"), Ok(Route::Healthz));
        assert_eq!(route(&Method::GET, "/containerLogs/ns/p/c"), Ok(Route::Logs(t("ns", "p", None, "c"))));
        assert_eq!(route(&Method::GET, "/containerLogs/ns/p%2Dx/c"), Ok(Route::Logs(t("ns", "p-x", None, "c"))));
        assert_eq!(route(&Method::POST, "/exec/ns/p/c"), Ok(Route::Exec(t("ns", "p", None, "c"))));
        assert_eq!(route(&Method::GET, "/exec/ns/p/u/c"), Ok(Route::Exec(t("ns", "p", Some("u"), "c"))));
        assert_eq!(route(&Method::POST, "/attach/ns/p/c"), Ok(Route::Attach(t("ns", "p", None, "c"))));
        assert_eq!(route(&Method::GET, "/attach/ns/p/u/c"), Ok(Route::Attach(t("ns", "p", Some("u"), "c"))));
        assert_eq!(route(&Method::GET, "/portForward/ns/p"), Ok(Route::PortForward(t("ns", "p", None, ""))));
        assert_eq!(route(&Method::POST, "/portForward/ns/p/u"), Ok(Route::PortForward(t("ns", "p", Some("u"), ""))));
        assert_eq!(route(&Method::GET, "/metrics/probes"), Ok(Route::MetricsProbes));
        let status = |m: Method, p: &str| route(&m, p).unwrap_err().status;
        assert_eq!(status(Method::GET, "/containerLogs/ns/p/"), StatusCode::BAD_REQUEST);
        assert_eq!(status(Method::GET, "/containerLogs//p/c"), StatusCode::BAD_REQUEST);
        assert_eq!(status(Method::POST, "/containerLogs/ns/p/c"), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(status(Method::PUT, "/exec/ns/p/c"), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(status(Method::DELETE, "/attach/ns/p/c"), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(status(Method::PUT, "/portForward/ns/p"), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(status(Method::POST, "/metrics/probes"), StatusCode::METHOD_NOT_ALLOWED);
        for p in [
            "/",
            "/pods",
            "/containerLogs/ns/p",
            "/exec/ns/p",
            "/exec/ns/p/u/c/x",
            "/attach/ns/p",
            "/attach//p/c",
            "/portForward/ns",
            "/portForward/ns/p/",
            "/portForward/ns/p/u/x",
            "/portforward/ns/p",
            "/metrics/probes/x",
        ] {
            assert_eq!(status(Method::GET, p), StatusCode::NOT_FOUND, "{p}");
        }
    }

    #[test]
    fn log_queries_decode_and_validate_as_kubelets() {
        assert_eq!(opts(""), LogOptions::default());
        let o = opts("follow=true&timestamps=1&previous&tailLines=5&limitBytes=10");
        assert!(o.follow && o.timestamps && o.previous, "an empty value is true: {o:?}");
        assert_eq!((o.tail_lines, o.limit_bytes), (Some(5), Some(10)));
        assert!(!opts("follow=false&timestamps=0&previous=FALSE").follow);
        assert_eq!(opts("tail=3").tail_lines, Some(3), "the old spelling");
        assert_eq!(opts("tailLines=3&tail=all").tail_lines, None);
        assert_eq!(opts("tailLines=1&tailLines=2").tail_lines, Some(1), "the first value counts");
        assert_eq!(opts("sinceSeconds=10").since, Some(NOW - 10_000_000_000));
        let t = opts("sinceTime=2023-11-14T22:13:20Z").since;
        assert_eq!(t, Some(NOW), "1700000000 s");
        assert_eq!(opts("stream=Stderr").streams, Streams::Stderr);
        for (q, code) in [
            ("tailLines=abc", 400),
            ("limitBytes=1.5", 400),
            ("sinceSeconds=x", 400),
            ("sinceTime=yesterday", 400),
            ("tailLines=-1", 422),
            ("limitBytes=0", 422),
            ("sinceSeconds=0", 422),
            ("sinceSeconds=5&sinceTime=2023-11-14T22:13:20Z", 422),
            ("stream=Both", 422),
            ("stream=Stdout&tailLines=1", 422),
        ] {
            assert_eq!(LogOptions::parse(q, NOW).unwrap_err().status.as_u16(), code, "{q}");
        }
    }

    #[test]
    fn timestamps_parse_and_print_in_kubelets_fixed_form() {
        let t = Timestamp::parse("2016-10-06T00:17:09.669794202Z").unwrap();
        assert_eq!(t.fixed, "2016-10-06T00:17:09.669794202Z");
        assert_eq!(t.unix_nanos, 1_475_713_029_669_794_202);
        let t = Timestamp::parse("2016-10-06T00:17:09.5Z").unwrap();
        assert_eq!(t.fixed, "2016-10-06T00:17:09.500000000Z");
        let t = Timestamp::parse("2016-10-06T02:17:09+02:00").unwrap();
        assert_eq!(
            (t.fixed.as_str(), t.unix_nanos),
            ("2016-10-06T02:17:09.000000000+02:00", 1_475_713_029_000_000_000)
        );
        assert_eq!(Timestamp::parse("2016-10-06T00:17:09+00:00").unwrap().fixed, "2016-10-06T00:17:09.000000000Z");
        assert_eq!(Timestamp::parse("1970-01-01T00:00:00Z").unwrap().unix_nanos, 0);
        assert_eq!(Timestamp::parse("2000-03-01T00:00:00Z").unwrap().unix_nanos, 951_868_800 * 1_000_000_000);
        for bad in [
            "",
            "2016-10-06",
            "2016-13-06T00:17:09Z",
            "2016-10-06T00:17:09",
            "2016-10-06T00:17:09.Z",
            "x016-10-06T00:17:09Z",
            "2016-10-06T00:17:09.1234567890Z",
        ] {
            assert_eq!(Timestamp::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn cri_lines_parse_with_full_and_partial_tags() {
        let r = parse_cri_line(b"2016-10-06T00:17:09.669794202Z stdout F log content 1\n").unwrap();
        assert_eq!((r.stream, r.content), (LogStream::Stdout, &b"log content 1\n"[..]));
        let r = parse_cri_line(b"2016-10-06T00:17:09.669794203Z stderr P part\n").unwrap();
        assert_eq!((r.stream, r.content), (LogStream::Stderr, &b"part"[..]));
        let r = parse_cri_line(b"2016-10-06T00:17:09Z stdout F:x \n").unwrap();
        assert_eq!(r.content, b"\n", "an empty line; tags after ':' are ignored");
        for bad in [&b"garbage\n"[..], b"2016-10-06T00:17:09Z stdin F x\n", b"2016-10-06T00:17:09Z stdout F\n", b""] {
            assert_eq!(parse_cri_line(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    fn write_all(o: &LogOptions, lines: &[&str]) -> String {
        let mut w = LineWriter::new(o);
        let mut out = Vec::new();
        for l in lines {
            if !w.write(l.as_bytes(), &mut out) {
                break;
            }
        }
        String::from_utf8(out).unwrap()
    }

    const LINES: [&str; 5] = [
        "2023-11-14T22:13:18.000000001Z stdout F one\n",
        "2023-11-14T22:13:19Z stderr F two\n",
        "2023-11-14T22:13:20Z stdout P thr\n",
        "2023-11-14T22:13:21Z stdout F ee\n",
        "not a cri line\n",
    ];

    #[test]
    fn lines_are_written_as_kubelets_log_writer_does() {
        assert_eq!(write_all(&opts(""), &LINES), "one\ntwo\nthree\n", "partials join, stdout and stderr interleave");
        assert_eq!(
            write_all(&opts("timestamps=true"), &LINES),
            "2023-11-14T22:13:18.000000001Z one\n2023-11-14T22:13:19.000000000Z two\n\
             2023-11-14T22:13:20.000000000Z three\n",
            "a continued partial line gets no second prefix"
        );
        assert_eq!(write_all(&opts("stream=Stdout"), &LINES), "one\nthree\n");
        assert_eq!(write_all(&opts("stream=Stderr"), &LINES), "two\n");
        assert_eq!(write_all(&opts("limitBytes=6"), &LINES), "one\ntw");
        assert_eq!(write_all(&opts("sinceTime=2023-11-14T22:13:19Z"), &LINES), "two\nthree\n");
        assert_eq!(write_all(&opts("tailLines=2"), &LINES), "one\ntwo\n", "counts file lines (seeking is separate)");
        assert_eq!(write_all(&opts("tailLines=2&follow=1"), &LINES), "one\ntwo\nthree\n", "follow does not stop");
    }

    #[test]
    fn tail_starts_after_the_right_newline() {
        let start = |text: &str, n: u64| tail_start(&mut std::io::Cursor::new(text.as_bytes().to_vec()), n).unwrap();
        assert_eq!(start("a\nb\n", 1), 2);
        assert_eq!(start("a\nb\n", 0), 4);
        assert_eq!(start("a\nb\n", 2), 0);
        assert_eq!(start("a\nb\n", 9), 0);
        assert_eq!(start("a\nb", 1), 0, "as kubelet: an unterminated last line counts with the one before");
        assert_eq!(start("", 3), 0);
        // Across blocks.
        let big: String = (0..5000).map(|i| format!("line {i}\n")).collect();
        let at = start(&big, 3) as usize;
        assert_eq!(&big[at..], "line 4997\nline 4998\nline 4999\n");
    }

    #[test]
    fn exec_queries_accept_both_spellings() {
        let o = ExecOptions::parse("command=sh&command=-c&command=echo%20hi&output=1&error=1").unwrap();
        assert_eq!(o.command, ["sh", "-c", "echo hi"]);
        assert!(o.stdout && o.stderr && !o.stdin && !o.tty);
        let o = ExecOptions::parse("command=sh&stdin=true&stdout=1&stderr=1&tty=1").unwrap();
        assert!(o.stdin && o.stdout && o.tty && !o.stderr, "a TTY merges stderr: {o:?}");
        assert_eq!(ExecOptions::parse("command=sh&tty=1").unwrap_err().status, StatusCode::BAD_REQUEST);
        assert_eq!(ExecOptions::parse("output=1").unwrap_err().status, StatusCode::BAD_REQUEST);
        let o = ExecOptions::parse_attach("input=1&output=1&tty=1&error=1&command=ignored").unwrap();
        assert!(o.stdin && o.stdout && o.tty && !o.stderr && o.command.is_empty(), "{o:?}");
        assert_eq!(ExecOptions::parse_attach("tty=1").unwrap_err().status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn upgrade_requests_are_recognised() {
        let mut h = HeaderMap::new();
        assert!(!is_upgrade(&h));
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        assert!(!is_upgrade(&h));
        h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        assert!(is_upgrade(&h));
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        assert!(!is_upgrade(&h));
    }
}
