//! Edged's kubelet server: the endpoints upstream's edged (a kubelet) serves on
//! `tailoredKubeletConfig.address:readOnlyPort` (127.0.0.1:10350 by default), which EdgeStream
//! calls when CloudStream tunnels `kubectl logs` and `kubectl exec` to the edge.
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
//! - `GET /healthz` (and `/healthz/{check}`, upstream edged polls `/healthz/syncloop`): `ok`.
//!
//! Pods are found through CRI (not through Edged's pod list): the newest sandbox labelled with
//! the pod's namespace and name, and in it the container's runs by name, ordered by
//! `metadata.attempt` (the last is the current one, the one before it is `previous`).
//!
//! Errors are plain text with kubelet's status codes and messages: 404 for an unknown pod or
//! container, 400 for a query that does not decode (`tailLines=abc`) and for log failures
//! (`previous` without an earlier run), 422 for values kubelet's validation rejects
//! (`tailLines=-1`, `limitBytes=0`), and for exec the runtime's gRPC code as kubelet maps it
//! (NotFound → 404, ResourceExhausted → 429, else 500).

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{Read, Seek, SeekFrom};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::pods::{LABEL_CONTAINER_NAME, LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID};

/// Where upstream's edged serves by default (`address: 127.0.0.1`, `readOnlyPort: 10350`).
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 10350);

/// How often a followed log file is checked for new lines (and for rotation).
pub const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// How often a followed container is asked whether it still runs (kubelet's
/// `logForceCheckPeriod`).
const RUNNING_CHECK: Duration = Duration::from_secs(1);
/// Open connections at most; past it, new clients wait in the listen backlog. An exec session
/// keeps its connection's slot until the relay ends.
const MAX_CONNECTIONS: usize = 128;
/// The largest request head accepted from a client (hyper's read buffer cap).
const MAX_REQUEST_HEAD: usize = 64 * 1024;
/// The largest response head accepted from the runtime's streaming server.
const MAX_UPGRADE_RESPONSE_HEAD: usize = 16 * 1024;
/// The largest error body relayed from the streaming server.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long dialling the streaming server and getting its response head may take.
const BACKEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long open connections get to finish after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pause after a failed `accept` (e.g. out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
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
pub async fn serve(cri: Cri, addr: SocketAddr, stop: CancellationToken) -> Result<(SocketAddr, JoinHandle<()>), Error> {
    let listener = TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source })?;
    let local = listener.local_addr().map_err(|source| Error::Bind { addr, source })?;
    info!(server.addr = %local, "Edged's kubelet server is listening.");
    Ok((local, tokio::spawn(run(listener, cri, stop))))
}

/// Serves on an already-bound listener until `stop`, then waits (a while) for open connections,
/// log streams and exec sessions to end; each of them observes `stop` too.
pub async fn run(listener: TcpListener, cri: Cri, stop: CancellationToken) {
    let tasks = TaskTracker::new();
    let shared = Arc::new(Shared { cri, stop: stop.clone(), tasks: tasks.clone() });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        // A slot first, then the connection; both waits are cancel-safe.
        let next = async {
            let permit = slots.clone().acquire_owned().await;
            (permit, listener.accept().await)
        };
        let (permit, accepted) = tokio::select! {
            _ = stop.cancelled() => break,
            n = next => n,
        };
        let Ok(permit) = permit else { break };
        match accepted {
            Ok((stream, peer)) => {
                tasks.spawn(connection(stream, peer, shared.clone(), Arc::new(permit)));
            }
            Err(e) => {
                warn!(error = %e, "Kubelet server could not accept a connection.");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    drop(listener);
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
    stop: CancellationToken,
    /// Connections, exec relays and their backend connections.
    tasks: TaskTracker,
}

/// Serves one HTTP/1.1 connection (with upgrades) until it closes or the server shuts down.
/// `permit` is the connection's slot; an exec relay keeps a clone of it.
async fn connection(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>, permit: Arc<OwnedSemaphorePermit>) {
    let _ = stream.set_nodelay(true);
    let stop = shared.stop.clone();
    let svc = service_fn(move |req| {
        let (shared, permit) = (shared.clone(), permit.clone());
        async move { Ok::<_, Infallible>(handle(shared, req, peer, permit).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).max_buf_size(MAX_REQUEST_HEAD);
    let conn = builder.serve_connection(TokioIo::new(stream), svc).with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await {
                Ok(r) => r,
                Err(_) => return,
            }
        }
    };
    if let Err(e) = result {
        debug!(%peer, error = %e, "Kubelet server connection ended with an error.");
    }
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
    /// Only in exec's `/{ns}/{pod}/{uid}/{container}` form.
    uid: Option<String>,
    container: String,
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Healthz,
    Logs(Target),
    Exec(Target),
}

/// Maps a method and path to an endpoint (path segments percent-decoded).
fn route(method: &Method, path: &str) -> Result<Route, HttpError> {
    let segments: Vec<String> = path.trim_start_matches('/').split('/').map(percent_decode).collect();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let not_found = || HttpError::not_found("404 page not found");
    let get_only = |r: Route| {
        if method == Method::GET || method == Method::HEAD {
            Ok(r)
        } else {
            Err(HttpError::new(StatusCode::METHOD_NOT_ALLOWED, "405: Method Not Allowed"))
        }
    };
    match segs.as_slice() {
        ["healthz"] | ["healthz", _] => get_only(Route::Healthz),
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
        ["exec", ns, pod, rest @ ..] if matches!(rest.len(), 1 | 2) && !ns.is_empty() && !pod.is_empty() => {
            let (uid, container) = match rest {
                [c] => (None, *c),
                [u, c] => (Some((*u).to_owned()), *c),
                _ => return Err(not_found()),
            };
            if container.is_empty() {
                return Err(not_found());
            }
            if method != Method::GET && method != Method::POST {
                return Err(HttpError::new(StatusCode::METHOD_NOT_ALLOWED, "405: Method Not Allowed"));
            }
            Ok(Route::Exec(Target { namespace: (*ns).into(), pod: (*pod).into(), uid, container: container.into() }))
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
        Err(e) => Err(e),
    };
    let resp = result.unwrap_or_else(|e| e.response());
    debug!(http.method = %method, http.path = %path, http.status = resp.status().as_u16(), "Served request.");
    resp
}

/// The runs of the target container in the pod's newest sandbox, oldest attempt first; 404 when
/// there is no such pod or container.
async fn container_runs(cri: &Cri, t: &Target) -> Result<Vec<v1::Container>, HttpError> {
    let filter = v1::PodSandboxFilter {
        label_selector: HashMap::from([
            (LABEL_POD_NAMESPACE.to_owned(), t.namespace.clone()),
            (LABEL_POD_NAME.to_owned(), t.pod.clone()),
        ]),
        ..Default::default()
    };
    let sandboxes = cri.list_pod_sandbox(Some(filter)).await.map_err(runtime_error)?;
    let sandbox = sandboxes
        .into_iter()
        .filter(|s| t.uid.as_ref().is_none_or(|uid| s.labels.get(LABEL_POD_UID) == Some(uid)))
        .max_by_key(|s| s.created_at)
        .ok_or_else(|| HttpError::not_found(format!("pod {:?} does not exist", t.pod)))?;
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

/// Which streams a log request wants (`stream`, kubelet's PodLogsQuerySplitStreams).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Streams {
    #[default]
    All,
    Stdout,
    Stderr,
}

/// The query of a log request, as kubelet decodes `PodLogOptions`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct LogOptions {
    follow: bool,
    previous: bool,
    timestamps: bool,
    tail_lines: Option<u64>,
    limit_bytes: Option<u64>,
    /// Lines older than this (Unix nanoseconds) are skipped: the later of `sinceSeconds` before
    /// now and `sinceTime`.
    since: Option<i128>,
    streams: Streams,
}

/// Apimachinery's query bool: absent is false; `false`/`0` (any case) is false; anything else,
/// even an empty value, is true.
fn query_bool(v: Option<&str>) -> bool {
    v.is_some_and(|v| !v.eq_ignore_ascii_case("false") && v != "0")
}

fn now_nanos() -> i128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i128).unwrap_or(0)
}

impl LogOptions {
    /// Decodes the query (the first value of each key counts, unknown keys are ignored) and
    /// validates it as kubelet does: 400 when a value does not decode, 422 when it is invalid.
    fn parse(query: &str, now: i128) -> Result<Self, HttpError> {
        let mut first: HashMap<String, String> = HashMap::new();
        for (k, v) in query_pairs(query) {
            first.entry(k).or_insert(v);
        }
        // `tail` is the old spelling of `tailLines`; `tail=all` means no limit.
        if let Some(tail) = first.get("tail").filter(|t| !t.is_empty()).cloned() {
            if tail == "all" {
                first.remove("tailLines");
            } else {
                first.insert("tailLines".into(), tail);
            }
        }
        let undecodable = || HttpError::bad_request(r#"{"message": "Unable to decode query."}"#);
        let invalid = || HttpError::new(StatusCode::UNPROCESSABLE_ENTITY, r#"{"message": "Invalid request."}"#);
        let int = |key: &str| -> Result<Option<i64>, HttpError> {
            match first.get(key).map(String::as_str) {
                None | Some("") => Ok(None),
                Some(v) => v.parse::<i64>().map(Some).map_err(|_| undecodable()),
            }
        };
        let flag = |key: &str| query_bool(first.get(key).map(String::as_str));
        let tail_lines = int("tailLines")?;
        let limit_bytes = int("limitBytes")?;
        let since_seconds = int("sinceSeconds")?;
        let since_time = match first.get("sinceTime").map(String::as_str) {
            None | Some("") | Some("null") => None,
            Some(v) => Some(Timestamp::parse(v).ok_or_else(undecodable)?.unix_nanos),
        };
        let streams = match first.get("stream").map(String::as_str) {
            None | Some("") | Some("All") => Streams::All,
            Some("Stdout") => Streams::Stdout,
            Some("Stderr") => Streams::Stderr,
            Some(_) => return Err(invalid()),
        };
        // ValidatePodLogOptions.
        if tail_lines.is_some_and(|n| n < 0)
            || limit_bytes.is_some_and(|n| n < 1)
            || since_seconds.is_some_and(|n| n < 1)
            || (since_seconds.is_some() && since_time.is_some())
            || (streams != Streams::All && tail_lines.is_some())
        {
            return Err(invalid());
        }
        let since = since_seconds.map(|s| now - i128::from(s) * 1_000_000_000).into_iter().chain(since_time).max();
        Ok(Self {
            follow: flag("follow"),
            previous: flag("previous"),
            timestamps: flag("timestamps"),
            tail_lines: tail_lines.and_then(|n| u64::try_from(n).ok()),
            limit_bytes: limit_bytes.and_then(|n| u64::try_from(n).ok()),
            since,
            streams,
        })
    }
}

async fn container_logs(shared: &Shared, target: &Target, query: &str) -> Result<Response<Body>, HttpError> {
    let opts = LogOptions::parse(query, now_nanos())?;
    let runs = container_runs(&shared.cri, target).await?;
    let run = if opts.previous { runs.len().checked_sub(2).and_then(|i| runs.get(i)) } else { runs.last() };
    let Some(run) = run else {
        return Err(HttpError::bad_request(format!(
            "previous terminated container {:?} in pod {:?} not found",
            target.container, target.pod
        )));
    };
    // From here on, failures are 400s, as kubelet answers errors of GetContainerLogs.
    let status = shared.cri.container_status(&run.id).await.map_err(|e| HttpError::bad_request(e.to_string()))?;
    if status.log_path.is_empty() {
        return Err(HttpError::bad_request(format!(
            "container {:?} in pod {:?} has no log file",
            target.container, target.pod
        )));
    }
    let follow = opts.follow;
    let reader =
        LogReader::open(PathBuf::from(&status.log_path), opts, shared.cri.clone(), run.id.clone(), shared.stop.clone())
            .await
            .map_err(|e| HttpError::bad_request(format!("failed to open log file {:?}: {e}", status.log_path)))?;
    debug!(container.id = %run.id, follow, "Streaming container log.");
    let chunks = futures::stream::unfold(reader, |mut r| async move {
        r.next_chunk().await.map(|chunk| (Ok::<_, std::io::Error>(Frame::data(chunk)), r))
    });
    let mut resp = Response::new(StreamBody::new(chunks).boxed_unsync());
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(resp)
}

/// A CRI log timestamp (RFC 3339 with optional fraction and a `Z` or `±hh:mm` zone).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Timestamp {
    unix_nanos: i128,
    /// Kubelet's output form: nine fraction digits, the zone kept (`Z` for UTC).
    fixed: String,
}

fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u32, |acc, d| acc.checked_mul(10)?.checked_add(u32::from(d - b'0')))
}

/// Days from 1970-01-01 to a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl Timestamp {
    fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() < 20
            || b[4] != b'-'
            || b[7] != b'-'
            || !matches!(b[10], b'T' | b't')
            || b[13] != b':'
            || b[16] != b':'
        {
            return None;
        }
        let (year, month, day) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
        let (hour, minute, second) = (digits(&b[11..13])?, digits(&b[14..16])?, digits(&b[17..19])?);
        if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
            return None;
        }
        let mut rest = &b[19..];
        let mut frac = String::new();
        if let Some(r) = rest.strip_prefix(b".") {
            let n = r.iter().take_while(|c| c.is_ascii_digit()).count();
            if n == 0 || n > 9 {
                return None;
            }
            frac = String::from_utf8_lossy(&r[..n]).into_owned();
            rest = &r[n..];
        }
        let offset_secs: i64 = match rest {
            b"Z" | b"z" => 0,
            [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
                let (h, m) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
                if h > 23 || m > 59 {
                    return None;
                }
                let secs = i64::from(h * 3600 + m * 60);
                if *sign == b'-' { -secs } else { secs }
            }
            _ => return None,
        };
        while frac.len() < 9 {
            frac.push('0');
        }
        let nanos_frac = i128::from(digits(frac.as_bytes())?);
        let days = days_from_civil(i64::from(year), month, day);
        let local = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
        let unix_nanos = i128::from(local - offset_secs) * 1_000_000_000 + nanos_frac;
        let zone = if offset_secs == 0 { "Z".to_owned() } else { String::from_utf8_lossy(rest).into_owned() };
        let fixed = format!("{}.{frac}{zone}", &s[..19]);
        Some(Self { unix_nanos, fixed })
    }
}

/// The stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogStream {
    Stdout,
    Stderr,
}

/// One line of a CRI log file: `<timestamp> <stream> <tag>[:<more tags>] <content>`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record<'a> {
    timestamp: Timestamp,
    stream: LogStream,
    /// The content, with its newline for a full (`F`) line, without one for a partial (`P`).
    content: &'a [u8],
}

fn parse_cri_line(line: &[u8]) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let timestamp = Timestamp::parse(std::str::from_utf8(parts.next()?).ok()?)?;
    let stream = match parts.next()? {
        b"stdout" => LogStream::Stdout,
        b"stderr" => LogStream::Stderr,
        _ => return None,
    };
    let tags = parts.next()?;
    let mut content = parts.next()?;
    let partial = tags.split(|b| *b == b':').next() == Some(&b"P"[..]);
    if partial {
        content = content.strip_suffix(b"\n").unwrap_or(content);
    }
    Some(Record { timestamp, stream, content })
}

/// Turns CRI log lines into the response bytes as kubelet's log writer does: filters by time
/// and stream, prefixes timestamps at the start of each logical line, and counts lines
/// (`tailLines` without `follow`) and bytes (`limitBytes`).
#[derive(Debug)]
struct LineWriter {
    timestamps: bool,
    since: Option<i128>,
    streams: Streams,
    remaining_bytes: u64,
    remaining_lines: Option<u64>,
    at_line_start: bool,
}

impl LineWriter {
    fn new(opts: &LogOptions) -> Self {
        Self {
            timestamps: opts.timestamps,
            since: opts.since,
            streams: opts.streams,
            remaining_bytes: opts.limit_bytes.unwrap_or(u64::MAX),
            // With follow, tailLines only picks the starting point.
            remaining_lines: if opts.follow { None } else { opts.tail_lines },
            at_line_start: true,
        }
    }

    /// Whether more output may follow.
    fn open(&self) -> bool {
        self.remaining_bytes > 0 && self.remaining_lines != Some(0)
    }

    /// Writes one file line (with its newline, if it has one) to `out`; false once the limits
    /// are reached.
    fn write(&mut self, line: &[u8], out: &mut Vec<u8>) -> bool {
        if !self.open() {
            return false;
        }
        let Some(rec) = parse_cri_line(line) else {
            debug!(line = %String::from_utf8_lossy(line), "Skipped a log line not in the CRI format.");
            return true;
        };
        let prefix = self.timestamps && self.at_line_start;
        self.at_line_start = rec.content.last().is_none_or(|b| *b == b'\n');
        if let Some(n) = self.remaining_lines.as_mut() {
            *n -= 1;
        }
        let wanted = matches!(
            (self.streams, rec.stream),
            (Streams::All, _) | (Streams::Stdout, LogStream::Stdout) | (Streams::Stderr, LogStream::Stderr)
        );
        if self.since.is_some_and(|since| rec.timestamp.unix_nanos < since) || !wanted {
            return self.open();
        }
        let start = out.len();
        if prefix {
            out.extend_from_slice(rec.timestamp.fixed.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(rec.content);
        let written = u64::try_from(out.len() - start).unwrap_or(u64::MAX);
        if written > self.remaining_bytes {
            out.truncate(start + usize::try_from(self.remaining_bytes).unwrap_or(usize::MAX));
            self.remaining_bytes = 0;
        } else {
            self.remaining_bytes -= written;
        }
        self.open()
    }
}

/// Where the last `lines` lines of a file start (kubelet's `findTailLineStartIndex`): just
/// after the `lines + 1`-th newline from the end, or 0.
fn tail_start<F: Read + Seek>(f: &mut F, lines: u64) -> std::io::Result<u64> {
    let mut end = f.seek(SeekFrom::End(0))?;
    let mut seen = 0u64;
    let mut buf = vec![0u8; TAIL_BLOCK];
    while end > 0 {
        let start = end.saturating_sub(TAIL_BLOCK as u64);
        let len = usize::try_from(end - start).unwrap_or(TAIL_BLOCK);
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut buf[..len])?;
        for (i, b) in buf[..len].iter().enumerate().rev() {
            if *b == b'\n' {
                seen += 1;
                if seen == lines + 1 {
                    return Ok(start + i as u64 + 1);
                }
            }
        }
        end = start;
    }
    Ok(0)
}

/// A file's identity, to notice rotation (the path now names another file).
fn identity(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

/// Opens the log (symlinks resolved, as kubelet does) positioned at the `tail` start; blocking,
/// for `spawn_blocking`.
fn open_at_tail(path: &std::path::Path, tail: Option<u64>) -> std::io::Result<(std::fs::File, (u64, u64), u64)> {
    let path = std::fs::canonicalize(path)?;
    let mut f = std::fs::File::open(path)?;
    let id = identity(&f.metadata()?);
    let offset = match tail {
        Some(n) => tail_start(&mut f, n)?,
        None => 0,
    };
    f.seek(SeekFrom::Start(offset))?;
    Ok((f, id, offset))
}

/// Reads a container's log file as response chunks, following it if asked.
struct LogReader {
    path: PathBuf,
    file: tokio::fs::File,
    id: (u64, u64),
    offset: u64,
    /// Read bytes not yet ending in a newline.
    pending: Vec<u8>,
    writer: LineWriter,
    follow: bool,
    cri: Cri,
    container_id: String,
    /// The container was seen not running: drain to the end, then finish.
    exited: bool,
    last_running_check: Option<Instant>,
    done: bool,
    stop: CancellationToken,
}

impl LogReader {
    async fn open(
        path: PathBuf,
        opts: LogOptions,
        cri: Cri,
        container_id: String,
        stop: CancellationToken,
    ) -> std::io::Result<Self> {
        let (p, tail) = (path.clone(), opts.tail_lines);
        let (file, id, offset) = tokio::task::spawn_blocking(move || open_at_tail(&p, tail))
            .await
            .map_err(|e| std::io::Error::other(format!("log open task: {e}")))??;
        Ok(Self {
            path,
            file: tokio::fs::File::from_std(file),
            id,
            offset,
            pending: Vec::new(),
            writer: LineWriter::new(&opts),
            follow: opts.follow,
            cri,
            container_id,
            exited: false,
            last_running_check: None,
            done: false,
            stop,
        })
    }

    /// The next non-empty chunk of output, or `None` at the end (limits reached, end of file
    /// without `follow`, container gone and file drained, read error, or shutdown).
    async fn next_chunk(&mut self) -> Option<Bytes> {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            if self.done || self.stop.is_cancelled() {
                return None;
            }
            let n = match self.file.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    warn!(path = %self.path.display(), error = %e, "Reading a container log failed.");
                    self.done = true;
                    return None;
                }
            };
            if n > 0 {
                self.offset += n as u64;
                self.pending.extend_from_slice(&buf[..n]);
                let out = self.drain(false);
                if !out.is_empty() {
                    return Some(Bytes::from(out));
                }
                continue;
            }
            // End of file.
            if !self.follow {
                self.done = true;
                let out = self.drain(true);
                return (!out.is_empty()).then(|| Bytes::from(out));
            }
            if self.exited {
                self.done = true;
                return None;
            }
            if self.reopen_if_rotated().await {
                let out = self.drain(false);
                if !out.is_empty() {
                    return Some(Bytes::from(out));
                }
                continue;
            }
            if self.last_running_check.is_none_or(|t| t.elapsed() >= RUNNING_CHECK) {
                self.last_running_check = Some(Instant::now());
                if !self.running().await {
                    // One more pass drains what was written before it stopped.
                    self.exited = true;
                    continue;
                }
            }
            tokio::select! {
                _ = self.stop.cancelled() => return None,
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
            }
        }
    }

    /// Writes the complete lines of `pending` (and, at the very end, an incomplete last one).
    fn drain(&mut self, flush_incomplete: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(nl) = self.pending[start..].iter().position(|b| *b == b'\n') {
            let end = start + nl + 1;
            let more = self.writer.write(&self.pending[start..end], &mut out);
            start = end;
            if !more {
                self.done = true;
                break;
            }
        }
        self.pending.drain(..start);
        if flush_incomplete && !self.done && !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.writer.write(&line, &mut out);
        }
        if self.pending.len() > MAX_LINE {
            warn!(path = %self.path.display(), "Dropped an overlong line of a container log.");
            self.pending.clear();
        }
        out
    }

    /// At end of file while following: when the path now names a new file (rotated, as
    /// kubelet's log manager does: rename, then CRI `ReopenContainerLog`), the rest of the old
    /// file is read and then the new one from its start; when the file shrank (truncated in
    /// place) reading restarts at 0. True when reading should go on at once (`pending` may
    /// have grown).
    async fn reopen_if_rotated(&mut self) -> bool {
        let Ok(meta) = tokio::fs::metadata(&self.path).await else {
            // Renamed away and not yet recreated: keep waiting.
            return false;
        };
        if identity(&meta) != self.id {
            // Lines the runtime wrote to the old file before it switched come first.
            let mut rest = Vec::new();
            if let Ok(n) = (&mut self.file).take(MAX_LINE as u64).read_to_end(&mut rest).await
                && n > 0
            {
                self.offset += n as u64;
                self.pending.extend_from_slice(&rest);
                return true;
            }
            match tokio::fs::File::open(&self.path).await {
                Ok(f) => {
                    debug!(path = %self.path.display(), "Container log rotated; following the new file.");
                    self.file = f;
                    self.id = identity(&meta);
                    self.offset = 0;
                    self.pending.clear();
                    return true;
                }
                Err(_) => return false,
            }
        }
        if meta.len() < self.offset && self.file.seek(SeekFrom::Start(0)).await.is_ok() {
            debug!(path = %self.path.display(), "Container log truncated; reading it from the start.");
            self.offset = 0;
            self.pending.clear();
            return true;
        }
        false
    }

    /// Whether the container still runs; an unreachable runtime counts as running (as in
    /// kubelet: containers outlive their runtime's API).
    async fn running(&self) -> bool {
        match self.cri.container_status(&self.container_id).await {
            Ok(st) => ContainerState::try_from(st.state) == Ok(ContainerState::ContainerRunning),
            Err(e) if e.code().map(i32::from) == Some(GRPC_UNAVAILABLE) => true,
            Err(_) => false,
        }
    }
}

/// gRPC's `Unavailable` status code (tonic is the CRI crate's dependency, not ours).
const GRPC_UNAVAILABLE: i32 = 14;
/// gRPC's `NotFound` status code.
const GRPC_NOT_FOUND: i32 = 5;
/// gRPC's `ResourceExhausted` status code.
const GRPC_RESOURCE_EXHAUSTED: i32 = 8;

// === /exec ===

/// What an exec asks for (kubelet's remotecommand options and `command` parameters).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ExecOptions {
    command: Vec<String>,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

impl ExecOptions {
    /// Reads the query: `command` (repeated), and the streams as the apiserver spells them to
    /// kubelet (`input`/`output`/`error`/`tty`, value `1`) or as `stdin`/`stdout`/`stderr`
    /// (`1` or `true`). With a TTY, stderr is merged into stdout, as kubelet does.
    fn parse(query: &str) -> Result<Self, HttpError> {
        let pairs = query_pairs(query);
        let flag = |keys: &[&str]| {
            pairs
                .iter()
                .find(|(k, _)| keys.contains(&k.as_str()))
                .is_some_and(|(_, v)| v == "1" || v.eq_ignore_ascii_case("true"))
        };
        let command: Vec<String> = pairs.iter().filter(|(k, _)| k == "command").map(|(_, v)| v.clone()).collect();
        let tty = flag(&["tty"]);
        let (stdin, stdout) = (flag(&["input", "stdin"]), flag(&["output", "stdout"]));
        let stderr = flag(&["error", "stderr"]) && !tty;
        if !stdin && !stdout && !stderr {
            return Err(HttpError::bad_request("you must specify at least 1 of stdin, stdout, stderr"));
        }
        if command.is_empty() {
            return Err(HttpError::bad_request("you must specify a command"));
        }
        Ok(Self { command, stdin, stdout, stderr, tty })
    }
}

/// Whether the request asks to switch protocols (`Connection: Upgrade` and an `Upgrade`).
fn is_upgrade(headers: &HeaderMap) -> bool {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    connection_upgrade && headers.contains_key(header::UPGRADE)
}

/// A failure of CRI `Exec`, as kubelet's streaming code maps it.
fn streaming_error(e: CriError) -> HttpError {
    let status = match e.code().map(i32::from) {
        Some(GRPC_NOT_FOUND) => StatusCode::NOT_FOUND,
        Some(GRPC_RESOURCE_EXHAUSTED) => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    HttpError::new(status, e.to_string())
}

async fn exec(
    shared: &Arc<Shared>,
    target: &Target,
    query: &str,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    permit: Arc<OwnedSemaphorePermit>,
) -> Result<Response<Body>, HttpError> {
    let opts = ExecOptions::parse(query)?;
    // Checked before CRI Exec, so that no session is prepared for a request that cannot use it.
    if !is_upgrade(req.headers()) {
        return Err(HttpError::bad_request("Upgrade request required"));
    }
    let runs = container_runs(&shared.cri, target).await?;
    let Some(current) = runs.last() else {
        return Err(HttpError::not_found(format!(
            "container {:?} not found in pod {:?}",
            target.container, target.pod
        )));
    };
    let request = v1::ExecRequest {
        container_id: current.id.clone(),
        cmd: opts.command,
        tty: opts.tty,
        stdin: opts.stdin,
        stdout: opts.stdout,
        stderr: opts.stderr,
    };
    let url = shared.cri.exec(request).await.map_err(streaming_error)?;
    debug!(container.id = %current.id, "Proxying exec to the runtime's streaming server.");
    let client = hyper::upgrade::on(&mut req);
    proxy_upgrade(shared, &url, req.method(), req.headers(), client, peer, permit).await
}

/// Forwards the client's upgrade request to `url` (its path replacing the client's), then
/// either relays the `101` and starts copying bytes, or relays an error answer (status ≥ 400);
/// anything else is a 500, as in kubelet's upgrade-aware proxy.
async fn proxy_upgrade(
    shared: &Arc<Shared>,
    url: &str,
    method: &Method,
    headers: &HeaderMap,
    client: OnUpgrade,
    peer: SocketAddr,
    permit: Arc<OwnedSemaphorePermit>,
) -> Result<Response<Body>, HttpError> {
    let uri: Uri = url.parse().map_err(|e| HttpError::internal(format!("invalid streaming URL {url:?}: {e}")))?;
    let authority = match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(a)) => a.clone(),
        _ => return Err(HttpError::internal(format!("unsupported streaming URL {url:?}"))),
    };
    let target = format!("{}:{}", authority.host(), authority.port_u16().unwrap_or(80));
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let dial = async {
        let tcp = TcpStream::connect(&target).await?;
        let _ = tcp.set_nodelay(true);
        hyper::client::conn::http1::Builder::new()
            .max_buf_size(MAX_UPGRADE_RESPONSE_HEAD)
            .handshake::<_, Empty<Bytes>>(TokioIo::new(tcp))
            .await
            .map_err(std::io::Error::other)
    };
    let (mut sender, conn) = match tokio::time::timeout(BACKEND_TIMEOUT, dial).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return Err(HttpError::internal(format!("dialing the streaming server at {target}: {e}"))),
        Err(_) => return Err(HttpError::internal(format!("dialing the streaming server at {target}: timed out"))),
    };
    let stop = shared.stop.clone();
    shared.tasks.spawn(async move {
        // Ends once the response is read (and the connection handed over on a 101).
        tokio::select! {
            r = conn.with_upgrades() => if let Err(e) = r {
                debug!(error = %e, "Streaming server connection failed.");
            },
            _ = stop.cancelled() => {}
        }
    });

    let mut forward = Request::builder().method(method.clone()).uri(path);
    for (name, value) in headers {
        if [header::HOST, header::CONTENT_LENGTH, header::TRANSFER_ENCODING].contains(name)
            || name.as_str() == "x-forwarded-for"
        {
            continue;
        }
        forward = forward.header(name, value);
    }
    let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prior) => format!("{prior}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    let forward = forward
        .header(header::HOST, authority.as_str())
        .header("x-forwarded-for", forwarded_for)
        .body(Empty::<Bytes>::new())
        .map_err(|e| HttpError::internal(format!("building the upgrade request: {e}")))?;
    let mut resp = match tokio::time::timeout(BACKEND_TIMEOUT, sender.send_request(forward)).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => return Err(HttpError::internal(format!("upgrade request to {target} failed: {e}"))),
        Err(_) => return Err(HttpError::internal(format!("upgrade request to {target} timed out"))),
    };
    let status = resp.status();
    if status == StatusCode::SWITCHING_PROTOCOLS {
        let backend = hyper::upgrade::on(&mut resp);
        let mut out = Response::new(Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync());
        *out.status_mut() = status;
        *out.headers_mut() = resp.headers().clone();
        shared.tasks.spawn(relay(client, backend, shared.stop.clone(), permit));
        return Ok(out);
    }
    if status.as_u16() >= 400 {
        let mut out_headers = resp.headers().clone();
        for h in [header::CONTENT_LENGTH, header::TRANSFER_ENCODING, header::CONNECTION] {
            out_headers.remove(h);
        }
        let body = Limited::new(resp.into_body(), MAX_ERROR_BODY).collect();
        let body = match tokio::time::timeout(BACKEND_TIMEOUT, body).await {
            Ok(Ok(b)) => b.to_bytes(),
            _ => Bytes::new(),
        };
        let mut out = Response::new(full(body));
        *out.status_mut() = status;
        *out.headers_mut() = out_headers;
        return Ok(out);
    }
    Err(HttpError::internal(format!("invalid upgrade response: status code {}", status.as_u16())))
}

/// Copies bytes both ways between the upgraded client and runtime connections. The session
/// ends when the runtime closes (its last bytes delivered), or at shutdown; the client closing
/// its side is passed on to the runtime, which then ends the session.
async fn relay(client: OnUpgrade, backend: OnUpgrade, stop: CancellationToken, _slot: Arc<OwnedSemaphorePermit>) {
    let upgraded = tokio::select! {
        _ = stop.cancelled() => return,
        r = async { tokio::try_join!(client, backend) } => r,
    };
    let (client, backend) = match upgraded {
        Ok(pair) => pair,
        Err(e) => {
            debug!(error = %e, "Exec upgrade did not complete.");
            return;
        }
    };
    let (mut client_rd, mut client_wr) = tokio::io::split(TokioIo::new(client));
    let (mut backend_rd, mut backend_wr) = tokio::io::split(TokioIo::new(backend));
    let up = async {
        let r = tokio::io::copy(&mut client_rd, &mut backend_wr).await;
        let _ = backend_wr.shutdown().await;
        r
    };
    let down = async {
        let r = tokio::io::copy(&mut backend_rd, &mut client_wr).await;
        let _ = client_wr.shutdown().await;
        r
    };
    tokio::pin!(up, down);
    let mut up_done = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            r = &mut down => {
                debug!(bytes = ?r.as_ref().ok(), "Exec session ended by the runtime.");
                break;
            }
            r = &mut up, if !up_done => {
                up_done = true;
                debug!(bytes = ?r.as_ref().ok(), "Exec client closed its side.");
            }
        }
    }
}

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
        let status = |m: Method, p: &str| route(&m, p).unwrap_err().status;
        assert_eq!(status(Method::GET, "/containerLogs/ns/p/"), StatusCode::BAD_REQUEST);
        assert_eq!(status(Method::GET, "/containerLogs//p/c"), StatusCode::BAD_REQUEST);
        assert_eq!(status(Method::POST, "/containerLogs/ns/p/c"), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(status(Method::PUT, "/exec/ns/p/c"), StatusCode::METHOD_NOT_ALLOWED);
        for p in ["/", "/pods", "/containerLogs/ns/p", "/exec/ns/p", "/exec/ns/p/u/c/x", "/attach/ns/p/c"] {
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
