//! The stream server on `streamPort`, which the API server reaches as if it were a kubelet: TLS
//! requiring a client certificate of the cluster's CA, then each request is sent through the
//! tunnel of the node it is about, as upstream's `streamserver.go`:
//!
//! - `/containerLogs/{ns}/{pod}/{container}`: the node is the pod's `spec.nodeName` (read from
//!   the API); LOGS_CONNECT; the edge's DATA is the response body, streamed, until its
//!   REMOVE_CONNECT; a caller that goes away sends REMOVE_CONNECT to the edge;
//! - `/stats/...` and `/metrics...`: the node from `X-Forwarded-Uri`
//!   (`/api/v1/nodes/{node}/proxy/...`), else the node whose internal IP is the `Host`;
//!   METRIC_CONNECT, streamed the same way;
//! - `/exec/{ns}/{pod}[/{uid}]/{container}` and `/attach/...`: the node is the pod's;
//!   EXEC_CONNECT or ATTACH_CONNECT with the method; the edge relays Edged's raw answer, whose
//!   head becomes this response (a `101` upgrades the API server's connection, and from then
//!   on bytes are copied both ways, see `relay`);
//! - `/portForward/{ns}/{pod}[/{uid}]`: the node is the pod's; upstream's tunnel has no
//!   port-forward type, so it is sent as EXEC_CONNECT with its own path, an upgraded stream
//!   like exec (an upstream edge replays it to its kubelet the same way).
//!
//! A node with no tunnel session gets a clear 502; a pod that does not exist, 404.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use k8s_openapi::api::core::v1::Pod;
use kubeedge_beehive::Spawner;
use kubeedge_stream::{ConnectRequest, GoUrl, MessageType};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::registry::{Key, Registry};
use super::session::Stream;

/// Edged's server, where the edge replays requests (upstream rewrites every URL to it).
const EDGE_SERVER: &str = "127.0.0.1:10350";
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections the stream server holds at once (each open log stream is one).
const MAX_CONNECTIONS: usize = 2048;

/// A response body; its error aborts the response (a chunked one ends without its last chunk,
/// so the API server's caller sees the stream cut, not a clean end).
pub(crate) type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// What the stream server needs.
#[derive(Clone)]
pub struct StreamServer {
    /// TLS requiring the API server's client certificate.
    pub tls: tokio_rustls::TlsAcceptor,
    /// The tunnel sessions.
    pub registry: Registry,
    /// For pods' `spec.nodeName`.
    pub kube: kube::Client,
    /// The module's spawner.
    pub spawner: Spawner,
}

pub(crate) fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(message.into())).map_err(|never| match never {}).boxed_unsync());
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// Serves until `stop`.
pub async fn serve(listener: TcpListener, s: StreamServer, stop: CancellationToken) {
    let spawner = s.spawner.clone();
    super::accept_loop(listener, stop.clone(), spawner, "stream", MAX_CONNECTIONS, move |tcp, peer| {
        let (s, stop) = (s.clone(), stop.clone());
        async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, s.tls.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return debug!(%peer, error = %e, "Stream server TLS failed."),
                Err(_) => return debug!(%peer, "No TLS handshake within 10 s."),
            };
            let service = service_fn(move |req| {
                let s = s.clone();
                async move { Ok::<_, Infallible>(handle(&s, req).await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(HANDSHAKE_TIMEOUT);
            let conn = builder.serve_connection(TokioIo::new(tls), service).with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
            }
        }
    })
    .await;
}

/// The body of a stream: the edge's DATA until its REMOVE_CONNECT; an error if the tunnel
/// session ends first.
fn body(stream: Stream) -> Body {
    StreamBody::new(frames(None, stream, None)).boxed_unsync()
}

/// `first`, then the stream's DATA, `length` bytes in all when given (then it ends at once, and
/// dropping the stream tells the edge: the answer is complete); a stream lost with its session
/// ends with an error.
pub(crate) fn frames(
    first: Option<Bytes>,
    stream: Stream,
    length: Option<usize>,
) -> impl futures::Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Send {
    futures::stream::unfold(Some((first, stream, length)), |state| async move {
        let (mut first, mut stream, mut left) = state?;
        if left == Some(0) {
            return None;
        }
        let data = match first.take() {
            Some(d) => d,
            None => match stream.next_data().await {
                Some(d) => d,
                None if stream.lost() => {
                    let cut = std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "the node's tunnel was lost");
                    return Some((Err(cut), None));
                }
                None => return None,
            },
        };
        let data = match left {
            Some(n) => {
                let take = data.len().min(n);
                left = Some(n - take);
                data.slice(..take)
            }
            None => data,
        };
        Some((Ok(Frame::data(data)), Some((first, stream, left))))
    })
}

/// Headers that carry the caller's credentials: never sent to an edge.
const CREDENTIALS: &[&str] = &["authorization", "proxy-authorization", "cookie"];

fn connect_request(req: &Request<Incoming>) -> Option<ConnectRequest> {
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut url = GoUrl::parse(&format!("http://{EDGE_SERVER}{target}"))?;
    url.scheme = "http".into();
    let mut header = std::collections::BTreeMap::<String, Vec<String>>::new();
    for (name, value) in req.headers() {
        if CREDENTIALS.contains(&name.as_str()) {
            continue;
        }
        if let Ok(v) = value.to_str() {
            header.entry(canonical(name.as_str())).or_default().push(v.to_owned());
        }
    }
    Some(ConnectRequest { mess_id: 0, url, header, method: None })
}

/// Go's canonical header form (`x-forwarded-uri` → `X-Forwarded-Uri`).
fn canonical(name: &str) -> String {
    name.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + &c.as_str().to_ascii_lowercase()).unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// The node a metrics request is about.
fn metrics_node(req: &Request<Incoming>) -> Key {
    let forwarded = req.headers().get("x-forwarded-uri").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if let Some(rest) = forwarded.strip_prefix("/api/v1/nodes/")
        && let Some(id) = rest.split('/').next()
    {
        // `{name}`, `{name}:{port}` or `{scheme}:{name}:{port}`, as kube-apiserver accepts.
        let parts: Vec<&str> = id.split(':').collect();
        let node = match parts.as_slice() {
            [name] | [name, _] | [_, name, _] => *name,
            _ => "",
        };
        if !node.is_empty() {
            return Key::Node(node.to_owned());
        }
    }
    let host = req.headers().get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let ip = host.rsplit_once(':').map_or(host, |(h, _)| h).trim_matches(['[', ']']);
    Key::Ip(ip.to_owned())
}

/// The node a pod is bound to, or the answer to give.
async fn pod_node(s: &StreamServer, ns: &str, pod: &str) -> Result<String, Response<Body>> {
    let pods: kube::Api<Pod> = kube::Api::namespaced(s.kube.clone(), ns);
    match pods.get_opt(pod).await {
        Ok(Some(p)) => p
            .spec
            .and_then(|s| s.node_name)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| text(StatusCode::BAD_REQUEST, format!("pod {ns}/{pod} is not bound to a node"))),
        Ok(None) => Err(text(StatusCode::NOT_FOUND, format!("pod {ns}/{pod} not found"))),
        Err(e) => Err(text(StatusCode::BAD_GATEWAY, format!("reading pod {ns}/{pod}: {e}"))),
    }
}

async fn handle(s: &StreamServer, mut req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (key, kind) = match segs.as_slice() {
        ["containerLogs", ns, pod, container] if !ns.is_empty() && !pod.is_empty() && !container.is_empty() => {
            match pod_node(s, ns, pod).await {
                Ok(node) => (Key::Node(node), MessageType::LogsConnect),
                Err(answer) => return answer,
            }
        }
        [verb @ ("exec" | "attach"), ns, pod, rest @ ..]
            if matches!(rest.len(), 1 | 2)
                && !ns.is_empty()
                && !pod.is_empty()
                && rest.iter().all(|r| !r.is_empty()) =>
        {
            let kind = if *verb == "exec" { MessageType::ExecConnect } else { MessageType::AttachConnect };
            match pod_node(s, ns, pod).await {
                Ok(node) => (Key::Node(node), kind),
                Err(answer) => return answer,
            }
        }
        // Upstream's tunnel has no port-forward type: it travels as an upgraded stream like
        // exec (the edge replays the path to its kubelet, which serves `/portForward`).
        ["portForward", ns, pod, rest @ ..]
            if rest.len() <= 1 && !ns.is_empty() && !pod.is_empty() && rest.iter().all(|r| !r.is_empty()) =>
        {
            match pod_node(s, ns, pod).await {
                Ok(node) => (Key::Node(node), MessageType::ExecConnect),
                Err(answer) => return answer,
            }
        }
        ["stats", ..] | ["metrics", ..] => (metrics_node(&req), MessageType::MetricConnect),
        _ => return text(StatusCode::NOT_FOUND, "404 page not found"),
    };
    let Some(session) = s.registry.get(key.clone()).await else {
        return text(
            StatusCode::BAD_GATEWAY,
            format!("no tunnel session for {key:?}: is edgeStream enabled on the node?"),
        );
    };
    let Some(mut connect) = connect_request(&req) else {
        return text(StatusCode::BAD_REQUEST, "the request's URL cannot be tunnelled");
    };
    if matches!(kind, MessageType::ExecConnect | MessageType::AttachConnect) {
        // As upstream (`httpstream.IsUpgradeRequest`): exec, attach and port-forward are
        // upgrades or nothing.
        let has = |name: header::HeaderName, want: &str| {
            req.headers()
                .get_all(name)
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(want))))
        };
        if !has(header::CONNECTION, "upgrade") || req.headers().get(header::UPGRADE).is_none() {
            return text(StatusCode::BAD_REQUEST, "Upgrade request required");
        }
        connect.method = Some(req.method().as_str().to_owned());
        let on_upgrade = hyper::upgrade::on(&mut req);
        return match session.open(kind, connect).await {
            Ok(stream) => super::relay::upgrade(stream, on_upgrade, &s.spawner).await,
            Err(e) => text(StatusCode::BAD_GATEWAY, e),
        };
    }
    match session.open(kind, connect).await {
        Ok(stream) => {
            let mut resp = Response::new(body(stream));
            let ty = match segs.first() {
                Some(&"stats") => "application/json",
                Some(&"metrics") => "text/plain; version=0.0.4; charset=utf-8",
                _ => "text/plain; charset=utf-8",
            };
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ty));
            resp
        }
        Err(e) => text(StatusCode::BAD_GATEWAY, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_are_gos_canonical_form() {
        assert_eq!(canonical("x-forwarded-uri"), "X-Forwarded-Uri");
        assert_eq!(canonical("accept"), "Accept");
        assert_eq!(canonical("x-stream-protocol-version"), "X-Stream-Protocol-Version");
    }
}
