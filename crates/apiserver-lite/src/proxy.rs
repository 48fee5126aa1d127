//! Requests kube-apiserver hands to a node's kubelet: `pods/log`, `pods/exec`, `pods/attach`,
//! `pods/portforward` and `nodes/proxy`.
//!
//! The kubelet is found as kube-apiserver finds it: the node's address (InternalIP first) and
//! `status.daemonEndpoints.kubeletEndpoint.Port` (10250 when unset). Every connection is HTTPS
//! presenting the kubelet-client certificate made at start from the cluster CA
//! ([`KUBELET_CLIENT_CN`], [`KUBELET_CLIENT_GROUP`]), so a kubelet (or CloudStream's stream
//! server) that trusts `kube-root-ca.crt` accepts it. The kubelet's own certificate is not
//! verified: kube-apiserver's behaviour without `--kubelet-certificate-authority`.
//!
//! Upgrades (exec's and attach's SPDY or WebSocket, nodes/proxy upgrades) are spliced through
//! after the kubelet's 101. A port-forward asked for as SPDY tunnelled in WebSocket
//! (`SPDY/3.1+portforward.k8s.io`, what kubectl ≥ 1.30 tries first) is translated as
//! kube-apiserver's `TunnelingHandler` does: the kubelet is asked for a plain SPDY upgrade and
//! the SPDY bytes travel in binary WebSocket messages on the caller's side. Exec's WebSocket v5
//! is *not* translated to SPDY (kube-apiserver's `StreamTranslator`): it goes through as is.
//!
//! Deliberate differences from kube-apiserver: loopback node addresses are allowed (tests put
//! fake kubelets on 127.0.0.1; kube-apiserver answers 400 "address not allowed" for nodes/proxy),
//! InternalIP is preferred over Hostname (kube-apiserver's default order starts with Hostname),
//! and the query of a nodes/proxy upgrade is passed on (kube-apiserver drops it).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use kubeedge_kube_serve::request::query_pairs;
use kubeedge_kube_serve::status::ApiError;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::server::{Body, Shared};
use crate::tls::{CertPair, TlsError};

/// The kubelet-client certificate's common name, as kubeadm names it.
pub const KUBELET_CLIENT_CN: &str = "kube-apiserver-kubelet-client";
/// Its organisation: kubeadm ≥ 1.29 uses `kubeadm:cluster-admins` (bound to cluster-admin)
/// where older releases used `system:masters`.
pub const KUBELET_CLIENT_GROUP: &str = "kubeadm:cluster-admins";

/// The kubelet port when the node reports none (kube-apiserver's `--kubelet-port` default).
const DEFAULT_KUBELET_PORT: u16 = 10250;
/// Bound on the TCP connect to a kubelet (kube-apiserver's kubelet dialer uses 30 s).
const DIAL_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on the TLS handshake (Go's `TLSHandshakeTimeout` default).
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on waiting for the kubelet's response head; longer than CloudStream's 30 s wait for
/// an edge's answer so its clearer error reaches the caller first.
const RESPONSE_HEAD_TIMEOUT: Duration = Duration::from_secs(60);
/// Buffer per direction of a spliced or tunnelled stream: nothing else is buffered.
const SPLICE_BUF: usize = 32 * 1024;
/// Largest WebSocket message or frame accepted from a port-forward tunnel's caller (kubectl
/// writes one message per SPDY frame, at most 32 KiB of data each).
const TUNNEL_MAX_MESSAGE: usize = 4 * 1024 * 1024;
/// The WebSocket subprotocol prefix of SPDY tunnelled in WebSocket.
const SPDY_TUNNEL_PREFIX: &str = "SPDY/3.1+";
/// The header SPDY upgrades carry their subprotocols in.
const STREAM_PROTOCOL: &str = "x-stream-protocol-version";

/// The body of a request sent to a kubelet.
type UpBody = BoxBody<Bytes, hyper::Error>;

// === impl KubeletClient ===

/// Dials kubelets: TLS presenting the kubelet-client certificate, the server not verified.
pub struct KubeletClient {
    identified: Arc<rustls::ClientConfig>,
    /// For `nodes/{name}:{port}/proxy` to a port other than the kubelet's: kube-apiserver uses
    /// its generic proxy transport there, without the kubelet-client certificate.
    anonymous: Arc<rustls::ClientConfig>,
}

impl KubeletClient {
    /// A client presenting `identity` (PEM certificate and PKCS#8 key).
    pub fn new(identity: &CertPair) -> Result<Self, TlsError> {
        let anonymous = kubeedge_pki::insecure_client_config()?;
        let provider = rustls::crypto::ring::default_provider();
        let chain = vec![CertificateDer::from(crate::tls::pem_der(&identity.cert_pem)?)];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(crate::tls::pem_der(&identity.key_pem)?));
        let certified = rustls::sign::CertifiedKey::from_der(chain, key, &provider)?;
        let mut identified = anonymous.clone();
        identified.client_auth_cert_resolver = Arc::new(FixedIdentity(Arc::new(certified)));
        Ok(Self { identified: Arc::new(identified), anonymous: Arc::new(anonymous) })
    }

    /// Connects to `target` and returns an HTTP/1.1 sender. The connection's task ends with
    /// the connection (or after an upgrade, once both sides have taken their halves).
    async fn open(&self, target: &Target) -> Result<SendRequest<UpBody>, BackendError> {
        let addr = target.authority();
        let tcp = match tokio::time::timeout(DIAL_TIMEOUT, tokio::net::TcpStream::connect(&addr)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => return Err(BackendError::Dial(format!("dial tcp {addr}: {}", go_dial_error(&e)))),
            Err(_) => return Err(BackendError::Dial(format!("dial tcp {addr}: i/o timeout"))),
        };
        let io: Box<dyn Io> = match target.scheme {
            Scheme::Http => Box::new(tcp),
            Scheme::Https { identified } => {
                let config = if identified { self.identified.clone() } else { self.anonymous.clone() };
                let name = ServerName::try_from(target.host.clone())
                    .map_err(|_| BackendError::Dial(format!("invalid host {:?}", target.host)))?;
                let connect = tokio_rustls::TlsConnector::from(config).connect(name, tcp);
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, connect).await {
                    Ok(Ok(tls)) => Box::new(tls),
                    Ok(Err(e)) => return Err(BackendError::Dial(format!("tls handshake with {addr}: {e}"))),
                    Err(_) => return Err(BackendError::Dial("net/http: TLS handshake timeout".into())),
                }
            }
        };
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| BackendError::Http(format!("HTTP with {addr}: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                debug!(error = %e, "Kubelet connection ended with an error.");
            }
        });
        Ok(sender)
    }

    /// Sends one request on a new connection and waits (bounded) for the response head.
    async fn send(&self, target: &Target, req: Request<UpBody>) -> Result<Response<Incoming>, BackendError> {
        let mut sender = self.open(target).await?;
        match tokio::time::timeout(RESPONSE_HEAD_TIMEOUT, sender.send_request(req)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(BackendError::Http(e.to_string())),
            Err(_) => Err(BackendError::Http("net/http: timeout awaiting response headers".into())),
        }
    }
}

/// Always presents the one kubelet-client certificate.
#[derive(Debug)]
struct FixedIdentity(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for FixedIdentity {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A byte stream to a kubelet, TLS or not.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Why a kubelet could not be reached; the text reads like Go's net errors.
#[derive(Debug)]
enum BackendError {
    /// TCP connect or TLS handshake.
    Dial(String),
    /// The HTTP exchange after connecting.
    Http(String),
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::Dial(m) | BackendError::Http(m) => f.write_str(m),
        }
    }
}

/// An I/O error as Go's dialer words it (`connect: connection refused`).
fn go_dial_error(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connect: connection refused".into(),
        TimedOut => "i/o timeout".into(),
        NetworkUnreachable => "connect: network is unreachable".into(),
        HostUnreachable => "connect: no route to host".into(),
        AddrNotAvailable => "connect: cannot assign requested address".into(),
        _ => format!("connect: {e}"),
    }
}

/// kube-apiserver's message for a kubelet that cannot be reached on the upgrade and
/// streaming paths (a 500 without a reason, as Go reports non-API errors).
fn dial_backend_error(e: &BackendError) -> ApiError {
    ApiError::new(500, "", format!("error dialing backend: {e}"))
}

// === Where a node's kubelet is ===

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Http,
    /// `identified`: present the kubelet-client certificate.
    Https {
        identified: bool,
    },
}

/// A backend address.
#[derive(Debug)]
struct Target {
    host: String,
    port: u16,
    scheme: Scheme,
}

impl Target {
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The preferred address types, most preferred first.
const ADDRESS_PREFERENCE: [&str; 5] = ["InternalIP", "InternalDNS", "ExternalIP", "ExternalDNS", "Hostname"];

/// The kubelet of node `name`: its preferred address and reported port.
fn kubelet_of(shared: &Shared, name: &str) -> Result<Target, ApiError> {
    let nodes = shared.store.resolve("", "v1", "nodes").ok_or_else(|| ApiError::internal("no nodes type"))?;
    let node = shared.store.get(&nodes, None, name)?.value();
    let addresses = node.pointer("/status/addresses").and_then(Value::as_array).cloned().unwrap_or_default();
    let host = ADDRESS_PREFERENCE
        .iter()
        .find_map(|ty| {
            addresses.iter().find(|a| a["type"] == *ty).and_then(|a| a["address"].as_str()).filter(|a| !a.is_empty())
        })
        .ok_or_else(|| {
            // Go's NoMatchError, returned as a plain (500) error.
            let known: Vec<String> = addresses
                .iter()
                .map(|a| {
                    format!(
                        "{{{} {}}}",
                        a["type"].as_str().unwrap_or_default(),
                        a["address"].as_str().unwrap_or_default()
                    )
                })
                .collect();
            ApiError::new(500, "", format!("no preferred addresses found; known addresses: [{}]", known.join(" ")))
        })?
        .to_owned();
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    Ok(Target { host, port, scheme: Scheme::Https { identified: true } })
}

/// kube-apiserver refuses to proxy to link-local, multicast and unspecified addresses (and
/// loopback, which is allowed here: see the module docs).
fn proxyable(host: &str) -> Result<(), ApiError> {
    match host.parse::<IpAddr>() {
        Ok(ip) if ip.is_loopback() => Ok(()),
        Ok(ip) if ip.is_unspecified() || ip.is_multicast() || is_link_local(&ip) => {
            Err(ApiError::bad_request("address not allowed"))
        }
        _ => Ok(()),
    }
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

// === pods/log, exec, attach, portforward ===

/// Proxies a pod's `log`, `exec`, `attach` or `portforward` to its node's kubelet.
pub async fn pod_to_kubelet(
    shared: &Shared,
    ns: &str,
    name: &str,
    sub: &str,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, ApiError> {
    let upgrade = is_upgrade(req.headers());
    if sub != "log" && !upgrade {
        // kube-apiserver's upgrade-aware handler for these requires the upgrade.
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    let pods = shared.store.resolve("", "v1", "pods").ok_or_else(|| ApiError::internal("no pods type"))?;
    let pod = shared.store.get(&pods, Some(ns), name)?.value();
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("pod {name} does not have a host assigned")))?;
    let target = kubelet_of(shared, node_name)?;
    let query = req.uri().query().unwrap_or_default().to_owned();
    let path = match sub {
        "portforward" => {
            // As kube-apiserver's streamParams: `ports` become one comma-separated `port`.
            let ports: Vec<String> =
                query_pairs(&query).into_iter().filter(|(k, _)| k == "ports").map(|(_, v)| v).collect();
            let mut path = format!("/portForward/{ns}/{name}");
            if !ports.is_empty() {
                path = format!("{path}?port={}", enc(&ports.join(",")));
            }
            path
        }
        _ => {
            let container = container_name(&pod, &query)?;
            let rest: Vec<String> = query_pairs(&query)
                .into_iter()
                .filter(|(k, _)| k != "container")
                .map(|(k, v)| format!("{}={}", enc(&k), enc(&v)))
                .collect();
            let base = if sub == "log" { "containerLogs" } else { sub };
            let mut path = format!("/{base}/{ns}/{name}/{container}");
            if !rest.is_empty() {
                path = format!("{path}?{}", rest.join("&"));
            }
            path
        }
    };
    debug!(node.name = %node_name, kubelet = %target.authority(), %path, "Proxying to the kubelet.");
    if sub == "portforward"
        && let Some(protocols) = spdy_tunnel_protocols(req.headers())
    {
        return tunnel_spdy(shared, &target, &path, req, protocols, peer).await;
    }
    let url = format!("https://{}{path}", target.authority());
    let mut req = req;
    let on_client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    parts.uri = path.parse().map_err(|_| ApiError::bad_request("invalid proxy path"))?;
    // The caller may speak HTTP/2; the kubelet is spoken to in HTTP/1.1 (hyper would otherwise
    // frame an HTTP/2 request's body of unknown length as nothing).
    parts.version = http::Version::HTTP_11;
    prepare_headers(&mut parts.headers, upgrade, &target, peer)?;
    let resp = match shared.kubelet.send(&target, Request::from_parts(parts, body.boxed())).await {
        Ok(resp) => resp,
        // pods/log is a plain GET in kube-apiserver (Go's url.Error wording).
        Err(e) if sub == "log" => return Err(ApiError::new(500, "", format!("Get \"{url}\": {e}"))),
        Err(e) => return Err(dial_backend_error(&e)),
    };
    Ok(relay_response(resp, on_client_upgrade, &shared.shutdown))
}

/// The container a log/exec request names, or the pod's only container.
fn container_name(pod: &Value, query: &str) -> Result<String, ApiError> {
    let names: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| cs.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    if let Some((_, c)) = query_pairs(query).into_iter().find(|(k, _)| k == "container") {
        let all = ["initContainers", "containers", "ephemeralContainers"];
        let known = all.iter().any(|l| {
            pod.pointer(&format!("/spec/{l}"))
                .and_then(Value::as_array)
                .is_some_and(|cs| cs.iter().any(|x| x["name"].as_str() == Some(c.as_str())))
        });
        if !known {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {}",
                pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default()
            )));
        }
        return Ok(c);
    }
    match names.as_slice() {
        [only] => Ok((*only).to_owned()),
        _ => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {}, choose one of: [{}]",
            pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default(),
            names.join(" ")
        ))),
    }
}

// === nodes/proxy ===

/// A parsed `/api/v1/nodes/{name}/proxy[/{path}]`.
#[derive(Debug, PartialEq, Eq)]
pub struct NodeProxyPath {
    /// `name`, `name:port` or `scheme:name:port`.
    pub id: String,
    /// What follows `/proxy`, still escaped: empty or starting with `/`.
    pub rest: String,
}

impl NodeProxyPath {
    /// Matches a nodes/proxy path (the path only, without the query).
    pub fn parse(path: &str) -> Option<Self> {
        let after = path.strip_prefix("/api/v1/nodes/")?;
        let (id, tail) = after.split_once('/')?;
        let rest = tail.strip_prefix("proxy")?;
        if id.is_empty() || !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        Some(Self { id: kubeedge_kube_serve::request::percent_decode(id), rest: rest.to_owned() })
    }
}

/// Go's `SplitSchemeNamePort`: `name`, `name:port`, `scheme:name:port` (scheme http or https).
fn split_scheme_name_port(id: &str) -> Option<(&str, &str, Option<u16>)> {
    let parts: Vec<&str> = id.split(':').collect();
    let (scheme, name, port) = match parts.as_slice() {
        [name] => ("", *name, None),
        [name, port] => ("", *name, Some(*port)),
        [scheme, name, port] if matches!(*scheme, "http" | "https") => (*scheme, *name, Some(*port)),
        _ => return None,
    };
    if name.is_empty() {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p > 0)?),
    };
    Some((scheme, name, port))
}

/// Proxies any method on `/api/v1/nodes/{id}/proxy/{rest}` to the node's kubelet, streaming the
/// answer, with kube-apiserver's `X-Forwarded-*` headers; upgrades are spliced.
pub async fn node_proxy(
    shared: &Shared,
    np: NodeProxyPath,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, ApiError> {
    let (scheme, name, port) = split_scheme_name_port(&np.id)
        .ok_or_else(|| ApiError::bad_request(format!("invalid node request {:?}", np.id)))?;
    let mut target = kubelet_of(shared, name)?;
    proxyable(&target.host)?;
    if let Some(port) = port.filter(|p| *p != target.port) {
        // Another port on the node: kube-apiserver's generic proxy transport, plain HTTP
        // unless asked for https, without the kubelet-client certificate.
        target.port = port;
        target.scheme = if scheme == "https" { Scheme::Https { identified: false } } else { Scheme::Http };
    }
    let upgrade = is_upgrade(req.headers());
    let query = req.uri().query().map(str::to_owned);
    let original_path = req.uri().path().to_owned();
    if np.rest.is_empty() && !upgrade && matches!(*req.method(), Method::GET | Method::HEAD) {
        // kube-apiserver redirects an empty proxy path to the one ending in `/`.
        let location = match &query {
            Some(q) if !q.is_empty() => format!("{original_path}/?{q}"),
            _ => format!("{original_path}/"),
        };
        let mut resp = Response::new(Empty::new().map_err(|never| match never {}).boxed());
        *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
        resp.headers_mut().insert(header::LOCATION, hv(&location)?);
        return Ok(resp);
    }
    let mut path = if np.rest.is_empty() { "/".to_owned() } else { np.rest.clone() };
    if let Some(q) = query.as_deref().filter(|q| !q.is_empty()) {
        path = format!("{path}?{q}");
    }
    debug!(node.name = %name, kubelet = %target.authority(), %path, "Proxying nodes/proxy to the kubelet.");
    let forwarded_host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    let mut req = req;
    let on_client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    parts.uri = path.parse::<Uri>().map_err(|_| ApiError::bad_request("invalid proxy path"))?;
    parts.version = http::Version::HTTP_11;
    prepare_headers(&mut parts.headers, upgrade, &target, peer)?;
    parts.headers.insert(HeaderName::from_static("x-forwarded-uri"), hv(&original_path)?);
    if let Some(h) = forwarded_host {
        parts.headers.insert(HeaderName::from_static("x-forwarded-host"), hv(&h)?);
    }
    parts.headers.insert(HeaderName::from_static("x-forwarded-proto"), HeaderValue::from_static("https"));
    let resp = match shared.kubelet.send(&target, Request::from_parts(parts, body.boxed())).await {
        Ok(resp) => resp,
        Err(e) if upgrade => return Err(dial_backend_error(&e)),
        Err(e) => return Err(ApiError::service_unavailable(format!("error trying to reach service: {e}"))),
    };
    let mut resp = relay_response(resp, on_client_upgrade, &shared.shutdown);
    // kube-apiserver's corsRemovingTransport: the kubelet's CORS headers are not passed on.
    let cors: Vec<HeaderName> =
        resp.headers().keys().filter(|k| k.as_str().starts_with("access-control-")).cloned().collect();
    for k in cors {
        resp.headers_mut().remove(k);
    }
    Ok(resp)
}

// === shared request and response handling ===

fn hv(s: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(s).map_err(|_| ApiError::bad_request("invalid header value"))
}

/// `Connection: upgrade` with an `Upgrade` header (Go's `httpstream.IsUpgradeRequest`).
fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade"))))
}

/// Hop-by-hop headers (Go's `httputil.ReverseProxy` list), never forwarded in either direction.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Headers named in Connection are hop-by-hop too.
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
        .filter(|t| !t.is_empty() && t != "upgrade")
        .collect();
    for n in named {
        headers.remove(n.as_str());
    }
    for h in HOP_BY_HOP {
        headers.remove(h);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// The caller's request headers as the kubelet sees them: credentials gone (kube-apiserver's
/// authentication and impersonation filters remove them), hop-by-hop gone except the upgrade,
/// the kubelet's `Host`, and the caller appended to `X-Forwarded-For`.
fn prepare_headers(headers: &mut HeaderMap, upgrade: bool, target: &Target, peer: SocketAddr) -> Result<(), ApiError> {
    headers.remove(header::AUTHORIZATION);
    let impersonation: Vec<HeaderName> =
        headers.keys().filter(|k| k.as_str().starts_with("impersonate-")).cloned().collect();
    for k in impersonation {
        headers.remove(k);
    }
    strip_hop_by_hop(headers, upgrade);
    headers.insert(header::HOST, hv(&target.authority())?);
    let xff = HeaderName::from_static("x-forwarded-for");
    let prior: Vec<String> = headers.get_all(&xff).iter().filter_map(|v| v.to_str().ok()).map(str::to_owned).collect();
    let mut chain = prior.join(", ");
    if !chain.is_empty() {
        chain.push_str(", ");
    }
    chain.push_str(&peer.ip().to_string());
    headers.insert(xff, hv(&chain)?);
    Ok(())
}

/// The kubelet's response for the caller: streamed as it comes; after a 101, both upgraded
/// connections are spliced until either side closes or the server stops.
fn relay_response(
    mut resp: Response<Incoming>,
    on_client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    shutdown: &CancellationToken,
) -> Response<Body> {
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching && let Some(client) = on_client_upgrade {
        let upstream = hyper::upgrade::on(&mut resp);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            match (client.await, upstream.await) {
                (Ok(client), Ok(upstream)) => splice(TokioIo::new(client), TokioIo::new(upstream), shutdown).await,
                (c, u) => debug!(client = ?c.err(), kubelet = ?u.err(), "An upgrade did not complete."),
            }
        });
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, switching);
    Response::from_parts(parts, body.map_err(std::io::Error::other).boxed())
}

/// Copies both ways with one fixed buffer each until either side ends, then closes both.
async fn splice<A, B>(a: A, b: B, shutdown: CancellationToken)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut a_rd, mut a_wr) = tokio::io::split(a);
    let (mut b_rd, mut b_wr) = tokio::io::split(b);
    tokio::select! {
        r = pump(&mut a_rd, &mut b_wr) => debug!(result = ?r, "The caller's side of a stream ended."),
        r = pump(&mut b_rd, &mut a_wr) => debug!(result = ?r, "The kubelet's side of a stream ended."),
        _ = shutdown.cancelled() => {}
    }
    let _ = a_wr.shutdown().await;
    let _ = b_wr.shutdown().await;
}

async fn pump<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(rd: &mut R, wr: &mut W) -> std::io::Result<()> {
    let mut buf = vec![0u8; SPLICE_BUF];
    loop {
        let n = rd.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        wr.write_all(&buf[..n]).await?;
        wr.flush().await?;
    }
}

// === SPDY tunnelled in WebSocket (port-forward) ===

/// The SPDY protocols a WebSocket upgrade asks to tunnel (`SPDY/3.1+portforward.k8s.io` →
/// `portforward.k8s.io`), if it is such a request.
fn spdy_tunnel_protocols(headers: &HeaderMap) -> Option<Vec<String>> {
    let websocket =
        headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !websocket {
        return None;
    }
    let protocols: Vec<String> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|p| p.trim().strip_prefix(SPDY_TUNNEL_PREFIX).map(str::to_owned))
        .collect();
    (!protocols.is_empty()).then_some(protocols)
}

/// kube-apiserver's `TunnelingHandler`: asks the kubelet for a SPDY upgrade; on its 101,
/// accepts the caller's WebSocket with `SPDY/3.1+{negotiated}` and carries the SPDY bytes in
/// binary messages. Any other answer from the kubelet goes back to the caller as is.
async fn tunnel_spdy(
    shared: &Shared,
    target: &Target,
    path: &str,
    mut req: Request<Incoming>,
    protocols: Vec<String>,
    peer: SocketAddr,
) -> Result<Response<Body>, ApiError> {
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| k.as_bytes().to_vec())
        .ok_or_else(|| ApiError::bad_request("a WebSocket upgrade needs Sec-WebSocket-Key"))?;
    let on_client_upgrade = hyper::upgrade::on(&mut req);
    let (mut parts, _) = req.into_parts();
    for h in [
        header::SEC_WEBSOCKET_PROTOCOL,
        header::SEC_WEBSOCKET_KEY,
        header::SEC_WEBSOCKET_VERSION,
        header::SEC_WEBSOCKET_EXTENSIONS,
    ] {
        parts.headers.remove(h);
    }
    prepare_headers(&mut parts.headers, true, target, peer)?;
    parts.headers.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    parts.headers.remove(STREAM_PROTOCOL);
    for p in &protocols {
        parts.headers.append(HeaderName::from_static(STREAM_PROTOCOL), hv(p)?);
    }
    parts.method = Method::POST;
    parts.uri = path.parse().map_err(|_| ApiError::bad_request("invalid proxy path"))?;
    parts.version = http::Version::HTTP_11;
    let body = Empty::<Bytes>::new().map_err(|never| match never {}).boxed();
    let mut resp =
        shared.kubelet.send(target, Request::from_parts(parts, body)).await.map_err(|e| dial_backend_error(&e))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(relay_response(resp, None, &shared.shutdown));
    }
    let negotiated = resp
        .headers()
        .get(STREAM_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| protocols[0].clone());
    let on_upstream_upgrade = hyper::upgrade::on(&mut resp);
    let shutdown = shared.shutdown.clone();
    tokio::spawn(async move {
        let (client, upstream) = match (on_client_upgrade.await, on_upstream_upgrade.await) {
            (Ok(c), Ok(u)) => (c, u),
            (c, u) => return debug!(client = ?c.err(), kubelet = ?u.err(), "A port-forward tunnel did not complete."),
        };
        let config = WebSocketConfig::default()
            .max_message_size(Some(TUNNEL_MAX_MESSAGE))
            .max_frame_size(Some(TUNNEL_MAX_MESSAGE));
        let ws =
            tokio_tungstenite::WebSocketStream::from_raw_socket(TokioIo::new(client), Role::Server, Some(config)).await;
        bridge(ws, TokioIo::new(upstream), shutdown).await;
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
    let mut out = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = out.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, hv(&accept)?);
    h.insert(header::SEC_WEBSOCKET_PROTOCOL, hv(&format!("{SPDY_TUNNEL_PREFIX}{negotiated}"))?);
    Ok(out)
}

/// Binary WebSocket messages one way, raw bytes the other, until either side ends.
async fn bridge<C, U>(ws: tokio_tungstenite::WebSocketStream<C>, upstream: U, shutdown: CancellationToken)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (mut up_rd, mut up_wr) = tokio::io::split(upstream);
    let to_kubelet = async {
        while let Some(msg) = ws_rx.next().await {
            match msg {
                Ok(Message::Binary(b)) => up_wr.write_all(&b).await?,
                Ok(Message::Text(t)) => up_wr.write_all(t.as_bytes()).await?,
                Ok(Message::Close(_)) => break,
                Ok(_) => continue,
                Err(e) => return Err(std::io::Error::other(e)),
            }
            up_wr.flush().await?;
        }
        Ok::<_, std::io::Error>(())
    };
    let to_caller = async {
        let mut buf = vec![0u8; SPLICE_BUF];
        loop {
            let n = up_rd.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            ws_tx.send(Message::Binary(Bytes::copy_from_slice(&buf[..n]))).await.map_err(std::io::Error::other)?;
        }
    };
    tokio::select! {
        r = to_kubelet => debug!(result = ?r, "The caller's side of a port-forward tunnel ended."),
        r = to_caller => debug!(result = ?r, "The kubelet's side of a port-forward tunnel ended."),
        _ = shutdown.cancelled() => {}
    }
    let _ = up_wr.shutdown().await;
    let _ = ws_tx.send(Message::Close(None)).await;
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn container_is_named_or_the_only_one() {
        let one = json!({"metadata":{"name":"p"},"spec":{"containers":[{"name":"c"}]}});
        assert_eq!(container_name(&one, "follow=true").unwrap(), "c");
        let two = json!({"metadata":{"name":"p"},"spec":{"containers":[{"name":"a"},{"name":"b"}]}});
        assert_eq!(container_name(&two, "container=b").unwrap(), "b");
        let bad = container_name(&two, "container=..%2F..%2Fexec").unwrap_err();
        assert!(bad.message.contains("is not valid for pod p"), "{}", bad.message);
        let err = container_name(&two, "").unwrap_err();
        assert!(err.message.contains("choose one of: [a b]"), "{}", err.message);
        assert_eq!(enc("echo hi"), "echo%20hi");
    }

    #[test]
    fn node_proxy_paths() {
        let p = NodeProxyPath::parse("/api/v1/nodes/edge-1/proxy/stats/summary").unwrap();
        assert_eq!((p.id.as_str(), p.rest.as_str()), ("edge-1", "/stats/summary"));
        let p = NodeProxyPath::parse("/api/v1/nodes/edge-1/proxy").unwrap();
        assert_eq!(p.rest, "");
        let p = NodeProxyPath::parse("/api/v1/nodes/https:edge-1:10250/proxy/").unwrap();
        assert_eq!((p.id.as_str(), p.rest.as_str()), ("https:edge-1:10250", "/"));
        assert_eq!(NodeProxyPath::parse("/api/v1/nodes/edge-1/proxyx"), None);
        assert_eq!(NodeProxyPath::parse("/api/v1/nodes/edge-1/status"), None);
        assert_eq!(NodeProxyPath::parse("/api/v1/nodes/edge-1"), None);
        assert_eq!(NodeProxyPath::parse("/api/v1/namespaces/d/pods/p/proxy/x"), None);
    }

    #[test]
    fn scheme_name_port() {
        assert_eq!(split_scheme_name_port("n"), Some(("", "n", None)));
        assert_eq!(split_scheme_name_port("n:8080"), Some(("", "n", Some(8080))));
        assert_eq!(split_scheme_name_port("https:n:443"), Some(("https", "n", Some(443))));
        assert_eq!(split_scheme_name_port("ftp:n:21"), None);
        assert_eq!(split_scheme_name_port("n:x"), None);
        assert_eq!(split_scheme_name_port(":80"), None);
    }

    #[test]
    fn forwarded_headers_drop_credentials_and_hops() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer secret"));
        h.insert("impersonate-user", HeaderValue::from_static("someone"));
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-hop"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.9"));
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let target = Target { host: "::1".into(), port: 10250, scheme: Scheme::Https { identified: true } };
        prepare_headers(&mut h, false, &target, "192.0.2.7:5555".parse().unwrap()).unwrap();
        assert!(h.get(header::AUTHORIZATION).is_none() && h.get("impersonate-user").is_none());
        assert!(h.get(header::CONNECTION).is_none() && h.get("x-hop").is_none());
        assert_eq!(h["x-forwarded-for"], "10.0.0.9, 192.0.2.7");
        assert_eq!(h[header::HOST], "[::1]:10250");
        assert_eq!(h[header::ACCEPT], "application/json");
    }

    #[test]
    fn tunnel_protocols_and_address_checks() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("SPDY/3.1+portforward.k8s.io, other"));
        assert_eq!(spdy_tunnel_protocols(&h), Some(vec!["portforward.k8s.io".to_owned()]));
        h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        assert_eq!(spdy_tunnel_protocols(&h), None);
        assert!(proxyable("127.0.0.1").is_ok() && proxyable("10.1.2.3").is_ok() && proxyable("edge-1").is_ok());
        assert_eq!(proxyable("169.254.169.254").unwrap_err().message, "address not allowed");
        assert!(proxyable("0.0.0.0").is_err() && proxyable("fe80::1").is_err());
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(go_dial_error(&refused), "connect: connection refused");
    }
}
