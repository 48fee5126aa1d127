//! Exec and attach: kubelet's `/exec` and `/attach`, the runtime's streaming server proxied
//! after the upgrade ([`proxy_upgrade`], which `/portForward` uses too).

use super::*;

/// gRPC's `Unavailable` status code (tonic is the CRI crate's dependency, not ours).
pub(super) const GRPC_UNAVAILABLE: i32 = 14;
/// gRPC's `NotFound` status code.
pub(super) const GRPC_NOT_FOUND: i32 = 5;
/// gRPC's `ResourceExhausted` status code.
pub(super) const GRPC_RESOURCE_EXHAUSTED: i32 = 8;

// === /exec ===

/// What an exec asks for (kubelet's remotecommand options and `command` parameters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ExecOptions {
    pub(super) command: Vec<String>,
    pub(super) stdin: bool,
    pub(super) stdout: bool,
    pub(super) stderr: bool,
    pub(super) tty: bool,
}

impl ExecOptions {
    /// Reads the query: `command` (repeated), and the streams as the apiserver spells them to
    /// kubelet (`input`/`output`/`error`/`tty`, value `1`) or as `stdin`/`stdout`/`stderr`
    /// (`1` or `true`). With a TTY, stderr is merged into stdout, as kubelet does.
    pub(super) fn parse(query: &str) -> Result<Self, HttpError> {
        Self::parse_with(query, true)
    }

    /// Reads an attach's query: the streams as [`ExecOptions::parse`] does; a `command` is
    /// ignored.
    pub(super) fn parse_attach(query: &str) -> Result<Self, HttpError> {
        let mut o = Self::parse_with(query, false)?;
        o.command.clear();
        Ok(o)
    }

    fn parse_with(query: &str, needs_command: bool) -> Result<Self, HttpError> {
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
        if needs_command && command.is_empty() {
            return Err(HttpError::bad_request("you must specify a command"));
        }
        Ok(Self { command, stdin, stdout, stderr, tty })
    }
}

/// Whether the request asks to switch protocols (`Connection: Upgrade` and an `Upgrade`).
pub(super) fn is_upgrade(headers: &HeaderMap) -> bool {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    connection_upgrade && headers.contains_key(header::UPGRADE)
}

/// A failure of CRI `Exec`, `Attach` or `PortForward`, as kubelet's streaming code maps it.
pub(super) fn streaming_error(e: CriError) -> HttpError {
    let status = match e.code().map(i32::from) {
        Some(GRPC_NOT_FOUND) => StatusCode::NOT_FOUND,
        Some(GRPC_RESOURCE_EXHAUSTED) => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    HttpError::new(status, e.to_string())
}

pub(super) async fn exec(
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
        return Err(upgrade_required());
    }
    let container_id = current_run(shared, target).await?;
    let request = v1::ExecRequest {
        container_id: container_id.clone(),
        cmd: opts.command,
        tty: opts.tty,
        stdin: opts.stdin,
        stdout: opts.stdout,
        stderr: opts.stderr,
    };
    let url = shared.cri.exec(request).await.map_err(streaming_error)?;
    debug!(container.id = %container_id, "Proxying exec to the runtime's streaming server.");
    let client = hyper::upgrade::on(&mut req);
    proxy_upgrade(shared, &url, req.method(), req.headers(), client, peer, permit).await
}

/// `/attach`: as exec, to the container's main process. A container whose spec has no
/// `stdin` gets no input from the runtime, whatever the client sends.
pub(super) async fn attach(
    shared: &Arc<Shared>,
    target: &Target,
    query: &str,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    permit: Arc<OwnedSemaphorePermit>,
) -> Result<Response<Body>, HttpError> {
    let opts = ExecOptions::parse_attach(query)?;
    if !is_upgrade(req.headers()) {
        return Err(upgrade_required());
    }
    let container_id = current_run(shared, target).await?;
    let request = v1::AttachRequest {
        container_id: container_id.clone(),
        stdin: opts.stdin,
        tty: opts.tty,
        stdout: opts.stdout,
        stderr: opts.stderr,
    };
    let url = shared.cri.attach(request).await.map_err(streaming_error)?;
    debug!(container.id = %container_id, "Proxying attach to the runtime's streaming server.");
    let client = hyper::upgrade::on(&mut req);
    proxy_upgrade(shared, &url, req.method(), req.headers(), client, peer, permit).await
}

/// What a streaming endpoint answers a plain request.
pub(super) fn upgrade_required() -> HttpError {
    HttpError::bad_request("Upgrade request required")
}

/// The id of the target container's current run.
async fn current_run(shared: &Shared, target: &Target) -> Result<String, HttpError> {
    let runs = container_runs(&shared.cri, target).await?;
    match runs.last() {
        Some(c) => Ok(c.id.clone()),
        None => {
            Err(HttpError::not_found(format!("container {:?} not found in pod {:?}", target.container, target.pod)))
        }
    }
}

/// Forwards the client's upgrade request to `url` (its path replacing the client's), then
/// either relays the `101` and starts copying bytes, or relays an error answer (status ≥ 400);
/// anything else is a 500, as in kubelet's upgrade-aware proxy.
pub(super) async fn proxy_upgrade(
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
pub(super) async fn relay(
    client: OnUpgrade,
    backend: OnUpgrade,
    stop: CancellationToken,
    _slot: Arc<OwnedSemaphorePermit>,
) {
    let upgraded = tokio::select! {
        _ = stop.cancelled() => return,
        r = async { tokio::try_join!(client, backend) } => r,
    };
    let (client, backend) = match upgraded {
        Ok(pair) => pair,
        Err(e) => {
            debug!(error = %e, "Streaming upgrade did not complete.");
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
                debug!(bytes = ?r.as_ref().ok(), "Streaming session ended by the runtime.");
                break;
            }
            r = &mut up, if !up_done => {
                up_done = true;
                debug!(bytes = ?r.as_ref().ok(), "Streaming client closed its side.");
            }
        }
    }
}
