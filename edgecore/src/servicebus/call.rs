//! rest → servicebus: the cloud's calls of edge applications.
//!
//! A message from `router_servicebus` with resource `{port}:{path}` and an `HttpRequest` as
//! content is sent as `{method} http://127.0.0.1:{port}{path}` (the request's method, or the
//! operation when it has none), with the caller's headers minus the hop-by-hop ones and its
//! body. The answer goes back to the cloud as `call_reply` (status, headers in Go's canonical
//! form, body); what goes wrong goes back as `call_error` with a status:
//!
//! | what | status | text |
//! |---|---|---|
//! | resource not `{port}:{path}` | 400 | `the format of resource <res> is incorrect` |
//! | content not an `HttpRequest`, or a bad method | 400 | `error to parse http request` |
//! | nothing answers (refused, reset, not HTTP) | 404 | `error to call service` (upstream's) |
//! | no complete answer within `timeout` | 504 | `timeout calling the edge application after Ns` |
//! | a response body over 5,000,000 bytes | 502 | `response body larger than 5000000 bytes` |
//! | the body breaks off | 500 | `error to receive response, err: …` (upstream's) |
//! | [`MAX_CALLS`] calls already running | 503 | `servicebus is busy: … calls in progress` |
//!
//! Upstream truncated a large body silently and gave every call 10 s whatever `timeout` said.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kubeedge_beehive::Bus;
use kubeedge_model::Message;
use kubeedge_model::protocol::servicebus::{self as wire, Header, HttpRequest, HttpResponse, MAX_BODY};
use tracing::{debug, warn};

use super::Metrics;

/// Cloud calls running at once; one more is answered 503 at once.
pub const MAX_CALLS: usize = 64;

/// How long an idle connection to an edge app is kept for the next call.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// Headers that belong to one connection, never passed on (RFC 9110 §7.6.1), plus `Host` and
/// `Content-Length`, which the client sets for the new request.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// Where a call goes: `{port}:{path}`, split at the first `:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallTarget {
    /// The app's port on 127.0.0.1.
    pub port: u16,
    /// Path (and query) starting with `/`.
    pub path: String,
}

impl CallTarget {
    /// Parses a call's resource: a port in 1..=65535 (digits only), `:`, a path starting with
    /// `/` that makes a valid URI. Upstream split on every `:` and wanted two parts, so a path
    /// holding a `:` was refused there.
    pub fn parse(resource: &str) -> Option<Self> {
        let (port, path) = resource.split_once(':')?;
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || !path.starts_with('/') {
            return None;
        }
        let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
        let target = Self { port, path: path.to_owned() };
        target.uri().ok()?;
        Some(target)
    }

    /// `http://127.0.0.1:{port}{path}`.
    pub fn uri(&self) -> Result<Uri, http::uri::InvalidUri> {
        format!("http://127.0.0.1:{}{}", self.port, self.path).parse()
    }
}

/// Go's `http.CanonicalHeaderKey`: `content-type` → `Content-Type`. A name with a character
/// that is not a token character is returned as is, as Go does.
pub fn canonical_header_key(name: &str) -> String {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if !name.bytes().all(token) {
        return name.to_owned();
    }
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() };
            upper = c == '-';
            out
        })
        .collect()
}

/// Why a call got no answer to pass on.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("the format of resource {0} is incorrect")]
    Resource(String),
    #[error("error to parse http request")]
    Request,
    #[error("error to call service")]
    Unreachable,
    #[error("timeout calling the edge application after {}s", .0.as_secs())]
    Timeout(Duration),
    #[error("response body larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("error to receive response, err: {0}")]
    Body(String),
}

impl Failure {
    fn status(&self) -> i32 {
        match self {
            Failure::Resource(_) | Failure::Request => 400,
            Failure::Unreachable => 404,
            Failure::Timeout(_) => 504,
            Failure::TooLarge => 502,
            Failure::Body(_) => 500,
        }
    }
}

/// Makes the calls and sends the replies. Cheap to clone: one per call task.
#[derive(Clone)]
pub(super) struct Caller {
    client: Client<HttpConnector, Full<Bytes>>,
    bus: Bus,
    timeout: Duration,
    metrics: Metrics,
}

impl Caller {
    pub(super) fn new(bus: Bus, timeout: Duration, metrics: Metrics) -> Self {
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            // Go's client writes `Content-Type`, not `content-type`; some apps care.
            .http1_title_case_headers(true)
            .build_http();
        Self { client, bus, timeout: super::or_default(timeout), metrics }
    }

    /// Calls the app for `msg` and sends the answer (or the error) to the cloud.
    pub(super) async fn handle(&self, msg: Message) {
        let reply = match self.call(&msg).await {
            Ok(resp) => {
                debug!(status = resp.status_code, bytes = resp.body.len(), "An edge app answered the cloud.");
                self.metrics.count("cloud", resp.status_code);
                wire::call_reply(&msg, &resp)
            }
            Err(f) => {
                debug!(status = f.status(), error = %f, "A call from the cloud failed.");
                self.metrics.count("cloud", f.status());
                wire::call_error(&msg, f.status(), &f.to_string())
            }
        };
        self.send(reply);
    }

    /// Answers 503 at once: [`MAX_CALLS`] calls are running.
    pub(super) fn busy(&self, msg: &Message) {
        warn!(msg.id = %msg.header.id, limit = MAX_CALLS, "Too many calls from the cloud in progress; refused one.");
        self.metrics.count("cloud", 503);
        let text = format!("servicebus is busy: {MAX_CALLS} calls in progress");
        self.send(wire::call_error(msg, 503, &text));
    }

    fn send(&self, reply: Message) {
        if !super::to_cloud(&self.bus, reply) {
            debug!("EdgeHub's queue is full or absent; dropped a reply to the cloud.");
        }
    }

    async fn call(&self, msg: &Message) -> Result<HttpResponse, Failure> {
        let resource = &msg.router.resource;
        let target = CallTarget::parse(resource).ok_or_else(|| Failure::Resource(resource.clone()))?;
        let req: HttpRequest = msg.content.decode().map_err(|_| Failure::Request)?;
        let request = build_request(&target, &req, &msg.router.operation)?;
        let exchange = async {
            let resp = self.client.request(request).await.map_err(|e| {
                debug!(port = target.port, error = %e, "Calling an edge app failed.");
                Failure::Unreachable
            })?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_BODY).collect().await.map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                    Failure::TooLarge
                } else {
                    Failure::Body(e.to_string())
                }
            })?;
            Ok(HttpResponse {
                header: response_header(&parts.headers),
                status_code: i32::from(parts.status.as_u16()),
                body: body.to_bytes().to_vec(),
            })
        };
        tokio::time::timeout(self.timeout, exchange).await.map_err(|_| Failure::Timeout(self.timeout))?
    }
}

/// The request to the app: its method (the operation when empty), its headers minus the
/// hop-by-hop ones (and those its `Connection` names), `Accept: */*` when absent (Go's
/// `HTTPDo`), and its body.
fn build_request(target: &CallTarget, req: &HttpRequest, op: &str) -> Result<Request<Full<Bytes>>, Failure> {
    let method = if req.method.is_empty() { op } else { &req.method };
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| Failure::Request)?;
    let uri = target.uri().map_err(|_| Failure::Resource(format!("{}:{}", target.port, target.path)))?;
    let mut builder = Request::builder().method(method).uri(uri);
    let headers = builder.headers_mut().ok_or(Failure::Request)?;
    let named_by_connection: Vec<String> = req
        .header
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.iter().flat_map(|v| v.split(',')).map(|t| t.trim().to_ascii_lowercase()))
        .collect();
    for (name, values) in &req.header {
        let lower = name.to_ascii_lowercase();
        if HOP_BY_HOP.contains(&lower.as_str()) || lower == "content-length" || named_by_connection.contains(&lower) {
            continue;
        }
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            debug!(header = %name, "Skipped a header with an invalid name.");
            continue;
        };
        for v in values {
            match HeaderValue::from_str(v) {
                Ok(v) => {
                    headers.append(name.clone(), v);
                }
                Err(_) => debug!(header = %name, "Skipped a header value that is not valid."),
            }
        }
    }
    if !headers.contains_key(http::header::ACCEPT) {
        headers.insert(http::header::ACCEPT, HeaderValue::from_static("*/*"));
    }
    builder.body(Full::new(Bytes::from(req.body.clone()))).map_err(|_| Failure::Request)
}

/// The app's headers for the cloud, as Go's `resp.Header`: canonical names, and without
/// `Transfer-Encoding` (Go moves it out of the map) or the other hop-by-hop headers.
fn response_header(headers: &http::HeaderMap) -> Header {
    let mut out = Header::new();
    for (name, value) in headers {
        if HOP_BY_HOP.contains(&name.as_str()) {
            continue;
        }
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        out.entry(canonical_header_key(name.as_str())).or_default().push(value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_split_at_the_first_colon() {
        let t = CallTarget::parse("9000:/url").unwrap();
        assert_eq!((t.port, t.path.as_str()), (9000, "/url"));
        assert_eq!(t.uri().unwrap().to_string(), "http://127.0.0.1:9000/url");
        let t = CallTarget::parse("80:/a:b/c?x=1").unwrap();
        assert_eq!(t.path, "/a:b/c?x=1");
        assert_eq!(CallTarget::parse("65535:/").unwrap().port, 65535);
        for bad in ["", "9000", "9000:", "9000:url", ":/url", "0:/url", "65536:/url", "+80:/url", "-1:/x", "a:/x"] {
            assert_eq!(CallTarget::parse(bad), None, "{bad:?}");
        }
        assert_eq!(CallTarget::parse("80:/a b"), None, "not a URI");
    }

    #[test]
    fn header_names_are_canonical_as_go_writes_them() {
        assert_eq!(canonical_header_key("content-type"), "Content-Type");
        assert_eq!(canonical_header_key("X-FORWARDED-FOR"), "X-Forwarded-For");
        assert_eq!(canonical_header_key("etag"), "Etag");
        assert_eq!(canonical_header_key("bad header"), "bad header");
    }

    #[test]
    fn requests_drop_hop_by_hop_headers_and_fall_back_to_the_operation() {
        let target = CallTarget::parse("8080:/x").unwrap();
        let req = HttpRequest {
            header: Header::from([
                ("Host".into(), vec!["cloud:9443".into()]),
                ("Connection".into(), vec!["keep-alive, X-Drop".into()]),
                ("X-Drop".into(), vec!["1".into()]),
                ("Content-Length".into(), vec!["99".into()]),
                ("Transfer-Encoding".into(), vec!["chunked".into()]),
                ("User".into(), vec!["u1".into(), "u2".into()]),
            ]),
            body: b"hi".to_vec(),
            ..HttpRequest::default()
        };
        let r = build_request(&target, &req, "PUT").unwrap();
        assert_eq!(r.method(), Method::PUT);
        let names: Vec<_> = r.headers().keys().map(|k| k.as_str().to_owned()).collect();
        assert_eq!(names, ["user", "accept"]);
        assert_eq!(r.headers().get_all("user").iter().count(), 2);
        let bad = HttpRequest { method: "GE T".into(), ..HttpRequest::default() };
        assert!(matches!(build_request(&target, &bad, "GET"), Err(Failure::Request)));
    }

    #[test]
    fn response_headers_group_values_under_canonical_names() {
        let mut h = http::HeaderMap::new();
        h.append("content-type", HeaderValue::from_static("text/plain"));
        h.append("set-cookie", HeaderValue::from_static("a=1"));
        h.append("set-cookie", HeaderValue::from_static("b=2"));
        h.append("transfer-encoding", HeaderValue::from_static("chunked"));
        h.append("content-length", HeaderValue::from_static("5"));
        let out = response_header(&h);
        assert_eq!(out["Set-Cookie"], ["a=1", "b=2"]);
        assert_eq!(out["Content-Type"], ["text/plain"]);
        assert_eq!(out["Content-Length"], ["5"]);
        assert!(!out.contains_key("Transfer-Encoding"));
    }
}
