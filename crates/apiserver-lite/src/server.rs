//! The HTTPS server: TLS with optional client certificates, authentication, body caps, and
//! dispatch of API paths to discovery and resource handlers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kubeedge_kube_serve::request::{ApiPath, parse_path};
use kubeedge_kube_serve::status::ApiError;
use kubeedge_kube_serve::table::AcceptKind;
use kubeedge_kube_serve::{discovery, protobuf, table};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::auth::{Authenticator, User};
use crate::store::Store;
use crate::{api, tls};

/// The largest request body accepted (kube-apiserver's limit for objects is about 3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// A response body: full or streaming.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// What every request handler shares.
pub struct Shared {
    /// The objects.
    pub store: Arc<Store>,
    /// Bearer tokens.
    pub auth: Arc<Authenticator>,
    /// The cluster CA, PEM (for `kube-root-ca.crt` in new namespaces).
    pub ca_pem: String,
    /// Stops watches and log streams at shutdown.
    pub shutdown: CancellationToken,
    /// Cancelled (and replaced) to end every open watch, as a dropped connection would.
    pub watch_reset: parking_lot::Mutex<CancellationToken>,
    /// The server's own address, for `/api` discovery.
    pub address: SocketAddr,
    /// Dials kubelets with the kubelet-client certificate (pods/log, exec, attach,
    /// portforward, nodes/proxy).
    pub kubelet: crate::proxy::KubeletClient,
}

/// Accepts connections until `shutdown`, serving HTTP/1.1 and HTTP/2 over TLS.
pub async fn serve(listener: TcpListener, tls_config: rustls::ServerConfig, shared: Arc<Shared>) {
    let acceptor = TlsAcceptor::from(Arc::new(tls_config));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "Accept failed.");
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    debug!(%peer, error = %e, "TLS handshake failed.");
                    return;
                }
                Err(_) => {
                    debug!(%peer, "TLS handshake timed out.");
                    return;
                }
            };
            let cert_user = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| tls::identity_from_cert(c))
                .map(|(name, groups)| User { name, groups });
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                let cert_user = cert_user.clone();
                async move { Ok::<_, Infallible>(handle(shared, req, cert_user, peer).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
            if let Err(e) = conn.await {
                debug!(%peer, error = %e, "Connection ended with an error.");
            }
        });
    }
}

/// A full JSON response.
pub fn json_response(code: StatusCode, value: &Value) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    bytes_response(code, "application/json", body)
}

/// A full response with a content type.
pub fn bytes_response(code: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()).map_err(|never| match never {}).boxed());
    *resp.status_mut() = code;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

/// The Status body of an error.
pub fn error_response(err: &ApiError) -> Response<Body> {
    json_response(StatusCode::from_u16(err.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), &err.to_status())
}

/// Renders a successful object or list in the format the client asked for: protobuf when it
/// prefers that and the object has a protobuf form (else JSON, if it accepts JSON), YAML, JSON.
pub fn object_response(code: StatusCode, accept: &str, value: &Value) -> Response<Body> {
    if let AcceptKind::Protobuf { json_too } = table::parse_accept(accept) {
        let mode = if json_too { protobuf::Mode::Strict } else { protobuf::Mode::Lenient };
        match protobuf::encode(value, mode) {
            Ok(bytes) => return bytes_response(code, protobuf::CONTENT_TYPE, bytes),
            Err(e) if !json_too => {
                return error_response(&ApiError::not_acceptable(format!("no protobuf form: {}", e.0)));
            }
            Err(_) => {}
        }
    }
    if accept_yaml(accept) {
        let yaml = yaml_serde::to_string(value).unwrap_or_default();
        return bytes_response(code, "application/yaml", yaml.into_bytes());
    }
    json_response(code, value)
}

/// A JSON body with an explicit content type (Tables, partial metadata).
pub fn typed_response(code: StatusCode, content_type: &str, value: &Value) -> Response<Body> {
    bytes_response(code, content_type, serde_json::to_vec(value).unwrap_or_default())
}

fn accept_yaml(accept: &str) -> bool {
    let first = accept.split(',').next().unwrap_or_default().trim();
    first.starts_with("application/yaml")
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    cert_user: Option<User>,
    peer: SocketAddr,
) -> Response<Body> {
    let bearer =
        req.headers().get(header::AUTHORIZATION).and_then(|h| h.to_str().ok()).and_then(|h| shared.auth.bearer(h));
    let path = req.uri().path().to_owned();
    // Health endpoints answer anyone, as kube-apiserver's do by default.
    if matches!(path.as_str(), "/healthz" | "/livez" | "/readyz") {
        return bytes_response(StatusCode::OK, "text/plain", b"ok".to_vec());
    }
    let Some(_user) = bearer.or(cert_user) else {
        return error_response(&ApiError::unauthorized());
    };
    let accept =
        req.headers().get(header::ACCEPT).and_then(|h| h.to_str().ok()).unwrap_or("application/json").to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let method = req.method().clone();
    // Service-account issuer discovery, for verifying the tokens it signs.
    if path == "/openid/v1/jwks" {
        return json_response(StatusCode::OK, &shared.auth.signer.jwks());
    }
    if path == "/.well-known/openid-configuration" {
        let base = format!("https://{}", shared.address);
        return json_response(StatusCode::OK, &crate::satoken::openid_configuration(&base));
    }
    if let Some(rest) = path.strip_prefix("/openapi/v3") {
        return match api::openapi_v3(&shared.store, rest.trim_start_matches('/')) {
            Some(doc) => json_response(StatusCode::OK, &doc),
            None => error_response(&api::no_such_path()),
        };
    }
    // nodes/proxy keeps the path after `proxy`, which `parse_path` (shared with MetaServer)
    // drops; any method is proxied.
    if let Some(np) = crate::proxy::NodeProxyPath::parse(&path) {
        return match crate::proxy::node_proxy(&shared, np, req, peer).await {
            Ok(resp) => resp,
            Err(e) => error_response(&e),
        };
    }
    let parsed = parse_path(&path);
    if method != Method::GET && !matches!(parsed, ApiPath::Resource(_)) {
        return error_response(&ApiError::method_not_allowed(format!("{method} is not supported on {path}")));
    }
    let store = &shared.store;
    match parsed {
        ApiPath::Root => {
            let paths =
                serde_json::json!({"paths": ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/readyz", "/version"]});
            json_response(StatusCode::OK, &paths)
        }
        ApiPath::Version => json_response(StatusCode::OK, &discovery::version_info()),
        ApiPath::LegacyApi => json_response(StatusCode::OK, &discovery::api_versions(&shared.address.to_string())),
        ApiPath::LegacyVersion => {
            json_response(StatusCode::OK, &discovery::api_resource_list("v1", &api::infos(store, "", "v1")))
        }
        ApiPath::Groups => json_response(StatusCode::OK, &discovery::api_group_list(&api::groups(store))),
        ApiPath::Group { group } => match api::groups(store).into_iter().find(|(g, _)| *g == group) {
            Some((g, versions)) => json_response(StatusCode::OK, &discovery::api_group(&g, &versions)),
            None => error_response(&api::no_such_path()),
        },
        ApiPath::GroupVersion { group, version } => {
            let infos = api::infos(store, &group, &version);
            if infos.is_empty() {
                error_response(&api::no_such_path())
            } else {
                json_response(StatusCode::OK, &discovery::api_resource_list(&format!("{group}/{version}"), &infos))
            }
        }
        ApiPath::Resource(r) => {
            let (parts, body) = req.into_parts();
            if matches!(r.subresource.as_deref(), Some("log" | "exec" | "attach" | "portforward")) {
                // Streams go to the node: the request (and its upgrade) is handed over whole.
                let req = Request::from_parts(parts, body);
                return api::proxy_to_node(&shared, &r, req, peer).await;
            }
            let body = match read_body(&parts.headers, body).await {
                Ok(b) => b,
                Err(e) => return error_response(&e),
            };
            let ctx = api::RequestCtx {
                shared: &shared,
                method: &method,
                accept: &accept,
                table: table::parse_accept(&accept),
                query: &query,
                content_type: parts.headers.get(header::CONTENT_TYPE).and_then(|h| h.to_str().ok()).unwrap_or_default(),
            };
            api::handle_resource(ctx, r, body).await
        }
        ApiPath::Other => error_response(&api::no_such_path()),
    }
}

/// Bodies over the cap but under this are read and discarded before the 413, so the client
/// finishes sending and sees the answer; larger ones are refused without reading them.
const DRAIN_LIMIT: usize = 4 * MAX_BODY;

/// Reads a request body up to [`MAX_BODY`]: a larger declared or actual size is 413.
async fn read_body(headers: &http::HeaderMap, mut body: Incoming) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::too_large(format!("the request body is larger than {MAX_BODY} bytes"));
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > DRAIN_LIMIT) {
        return Err(too_large());
    }
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen > DRAIN_LIMIT {
                return Err(too_large());
            }
            if seen <= MAX_BODY {
                buf.extend_from_slice(&data);
            }
        }
    }
    if seen > MAX_BODY { Err(too_large()) } else { Ok(buf.freeze()) }
}
