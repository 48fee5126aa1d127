//! The Router's messages to an edge and ServiceBus's replies (upstream's `common/types/http.go`,
//! `cloud/pkg/router/provider/{eventbus,servicebus}` and `edge/pkg/servicebus`).
//!
//! - rest → eventbus: `{source: router_eventbus, group: user, op: publish, resource:
//!   node/{node}/{topic}, content: the body as a string}`; the edge publishes it on `{topic}`.
//!   `subscribe` / `unsubscribe` (resource `node/{node}/{ns}/{topic}`) make the edge forward
//!   that topic to the cloud (eventbus → rest).
//! - rest → servicebus: `{source: router_servicebus, group: user, op: <HTTP method>, resource:
//!   node/{node}/{port}:{path}, content: HttpRequest}`; the edge calls
//!   `http://127.0.0.1:{port}{path}` and replies `{parent, source: servicebus, group: user, op:
//!   upload, resource: "", content: HttpResponse}`.
//! - servicebus → rest: `start` / `stop` (resource `node/{node}/{targetURL}`) change the edge's
//!   allow-list; an edge app's call is `{source: servicebus, group: user, op: upload, resource:
//!   targetURL, content: the request's bytes}` (Go `[]byte`: a base64 JSON string on the
//!   WebSocket lane), answered by `{parent, op: response, content: the cloud's body}`.
//!
//! `body` fields are Go `[]byte`: base64 in JSON. `header` is Go's `http.Header`
//! (`{"Name": ["v1", …]}`).

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::constants::{group, operation, source};
use crate::{Content, Message};

/// ServiceBus's module and source name on the edge.
pub const SERVICEBUS: &str = "servicebus";
/// Upstream's `maxBodySize` of ServiceBus: 5,000,000 bytes, requests and responses.
pub const MAX_BODY: usize = 5_000_000;
/// The reply message of ServiceBus to the edge app on success.
pub const REPLY_OK: &str = "receive response from cloud successfully";

/// Go's `http.Header`.
pub type Header = BTreeMap<String, Vec<String>>;

/// Upstream's `types.HTTPRequest`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRequest {
    /// The caller's headers.
    #[serde(default, deserialize_with = "null_default")]
    pub header: Header,
    /// The body (base64 in JSON).
    #[serde(default, with = "go_bytes")]
    pub body: Vec<u8>,
    /// The HTTP method.
    #[serde(default)]
    pub method: String,
    /// Unused by upstream (always empty).
    #[serde(default)]
    pub url: String,
}

/// Upstream's `types.HTTPResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpResponse {
    /// The edge app's response headers.
    #[serde(default, deserialize_with = "null_default")]
    pub header: Header,
    /// Its status code.
    #[serde(default)]
    pub status_code: i32,
    /// Its body (base64 in JSON).
    #[serde(default, with = "go_bytes")]
    pub body: Vec<u8>,
}

/// What an edge app sends ServiceBus: `{"method","targetURL","payload"}`. Read as Go's
/// `encoding/json` reads it: keys match case-insensitively (`TargetURL`, `targeturl`; an exact
/// match wins), unknown keys are ignored, `null` is the zero value.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EdgeRequest {
    /// The HTTP method to use on the cloud side (POST when empty).
    #[serde(default)]
    pub method: String,
    /// A URL the cloud allowed with a Rule (servicebus → rest).
    #[serde(rename = "targetURL", default)]
    pub target_url: String,
    /// The body: a string is sent as is, any other value as its JSON.
    #[serde(default)]
    pub payload: serde_json::Value,
}

impl<'de> Deserialize<'de> for EdgeRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let Some(map) = Option::<serde_json::Map<String, serde_json::Value>>::deserialize(d)? else {
            return Ok(Self::default());
        };
        let field = |name: &str| {
            map.get(name).or_else(|| map.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
        };
        let text = |name: &str| match field(name) {
            None | Some(serde_json::Value::Null) => Ok(String::new()),
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(D::Error::custom(format!("{name}: expected a string, got {other}"))),
        };
        Ok(Self {
            method: text("method")?,
            target_url: text("targetURL")?,
            payload: field("payload").cloned().unwrap_or_default(),
        })
    }
}

impl EdgeRequest {
    /// The bytes to send: a JSON string's text, nothing for null, else the JSON.
    pub fn payload_bytes(&self) -> Vec<u8> {
        match &self.payload {
            serde_json::Value::Null => Vec::new(),
            serde_json::Value::String(s) => s.clone().into_bytes(),
            other => other.to_string().into_bytes(),
        }
    }
}

/// ServiceBus's answer to an edge app: `{"code","msg","body"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeReply {
    /// 200 when the cloud answered, else the error's code.
    pub code: i32,
    /// What happened.
    pub msg: String,
    /// The cloud's response body.
    pub body: String,
}

/// The message to the edge that publishes `body` on `topic` (rest → eventbus).
pub fn publish(node: &str, topic: &str, body: &[u8]) -> Message {
    Message::build(
        source::ROUTER_EVENTBUS,
        group::USER,
        format!("node/{node}/{topic}"),
        operation::PUBLISH,
        Content::string(&String::from_utf8_lossy(body)),
    )
}

/// `subscribe` or `unsubscribe` of `topic` on the edge (eventbus → rest).
pub fn subscription(node: &str, topic: &str, subscribe: bool) -> Message {
    let op = if subscribe { operation::SUBSCRIBE } else { operation::UNSUBSCRIBE };
    Message::build(source::ROUTER_EVENTBUS, group::USER, format!("node/{node}/{topic}"), op, Content::null())
}

/// `start` or `stop` of `target_url` on the edge's ServiceBus allow-list (servicebus → rest).
pub fn allow(node: &str, target_url: &str, start: bool) -> Message {
    let op = if start { operation::START } else { operation::STOP };
    Message::build(source::ROUTER_SERVICEBUS, group::USER, format!("node/{node}/{target_url}"), op, Content::null())
}

/// The call of `http://127.0.0.1:{port}{path}` on `node` (rest → servicebus).
pub fn call(node: &str, port: u16, path: &str, request: &HttpRequest) -> Result<Message, serde_json::Error> {
    Ok(Message::build(
        source::ROUTER_SERVICEBUS,
        group::USER,
        format!("node/{node}/{port}:{path}"),
        &request.method,
        Content::json(request)?,
    ))
}

/// ServiceBus's reply to a call (also its error replies, with an error status and text).
pub fn call_reply(request: &Message, response: &HttpResponse) -> Message {
    let mut msg = Message::build(
        SERVICEBUS,
        group::USER,
        "",
        operation::UPLOAD,
        Content::json(response).unwrap_or_else(|_| Content::null()),
    );
    msg.header.parent_id = request.header.id.clone();
    msg
}

/// An error reply to a call: upstream's `buildErrorResponse` body and `Server` header.
pub fn call_error(request: &Message, status: i32, text: &str) -> Message {
    let header = Header::from([("Server".to_owned(), vec!["kubeedge-edgecore".to_owned()])]);
    call_reply(request, &HttpResponse { header, status_code: status, body: text.as_bytes().to_vec() })
}

/// An edge app's call going up to the cloud (servicebus → rest): the raw request bytes as Go
/// sends a `[]byte` over the WebSocket lane (base64 in a JSON string).
pub fn upload(target_url: &str, raw_request: &[u8]) -> Message {
    let b64 = base64::engine::general_purpose::STANDARD.encode(raw_request);
    Message::build(SERVICEBUS, group::USER, target_url, operation::UPLOAD, Content::string(&b64))
}

/// The request inside an edge app's upload: base64 of the JSON as upstream sends it, or the
/// JSON itself (as a string or nested).
pub fn parse_upload(content: &Content) -> Option<EdgeRequest> {
    let data = content.data();
    if let Ok(req) = serde_json::from_slice::<EdgeRequest>(&data) {
        return Some(req);
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(data.as_ref()).ok()?;
    serde_json::from_slice(&raw).ok()
}

fn null_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Go's `[]byte` in JSON: a base64 string, `null` for nil.
mod go_bytes {
    use super::*;

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let Some(s) = Option::<String>::deserialize(d)? else { return Ok(Vec::new()) };
        base64::engine::general_purpose::STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_shapes_are_upstreams() {
        let req = HttpRequest {
            header: Header::from([("User".to_owned(), vec!["u".to_owned()])]),
            body: b"Hello".to_vec(),
            method: "POST".to_owned(),
            url: String::new(),
        };
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"header": {"User": ["u"]}, "body": "SGVsbG8=", "method": "POST", "url": ""})
        );
        let back: HttpResponse =
            serde_json::from_str(r#"{"header":null,"status_code":201,"body":"SGVsbG8="}"#).unwrap();
        assert_eq!((back.status_code, back.body.as_slice()), (201, &b"Hello"[..]));
        let nil: HttpResponse = serde_json::from_str(r#"{"header":{},"status_code":204,"body":null}"#).unwrap();
        assert!(nil.body.is_empty());
    }

    #[test]
    fn call_and_reply_carry_upstreams_routes() {
        let req = HttpRequest { method: "GET".to_owned(), ..HttpRequest::default() };
        let m = call("edge-1", 9000, "/url", &req).unwrap();
        assert_eq!(
            (
                m.router.source.as_str(),
                m.router.group.as_str(),
                m.router.operation.as_str(),
                m.router.resource.as_str()
            ),
            ("router_servicebus", "user", "GET", "node/edge-1/9000:/url")
        );
        let r = call_error(&m, 404, "error to call service");
        assert_eq!(r.header.parent_id, m.header.id);
        assert_eq!((r.router.source.as_str(), r.router.operation.as_str()), ("servicebus", "upload"));
        let resp: HttpResponse = r.content.decode().unwrap();
        assert_eq!(resp.body, b"error to call service");
    }

    #[test]
    fn uploads_read_back_as_upstream_and_ours_send_them() {
        let raw = br#"{"method":"POST","targetURL":"http://127.0.0.1:9000/echo","payload":""}"#;
        let up = upload("http://127.0.0.1:9000/echo", raw);
        let got = parse_upload(&up.content).unwrap();
        assert_eq!(got.target_url, "http://127.0.0.1:9000/echo");
        assert!(got.payload_bytes().is_empty());
        let nested = Content::from_raw_json(String::from_utf8(raw.to_vec()).unwrap()).unwrap();
        assert_eq!(parse_upload(&nested).unwrap().method, "POST");
        assert!(parse_upload(&Content::string("not json")).is_none());
        let obj = EdgeRequest { payload: serde_json::json!({"a": 1}), ..EdgeRequest::default() };
        assert_eq!(obj.payload_bytes(), br#"{"a":1}"#);
    }

    #[test]
    fn edge_requests_read_keys_as_go_does() {
        let go: EdgeRequest =
            serde_json::from_str(r#"{"Method":"GET","TARGETURL":"http://a/b","Payload":{"x":1},"extra":true}"#)
                .unwrap();
        assert_eq!((go.method.as_str(), go.target_url.as_str()), ("GET", "http://a/b"));
        assert_eq!(go.payload, serde_json::json!({"x": 1}));
        let exact: EdgeRequest = serde_json::from_str(r#"{"targeturl":"loose","targetURL":"exact"}"#).unwrap();
        assert_eq!(exact.target_url, "exact");
        assert_eq!(serde_json::from_str::<EdgeRequest>("null").unwrap(), EdgeRequest::default());
        assert!(serde_json::from_str::<EdgeRequest>(r#"{"targetURL":5}"#).is_err());
        assert!(serde_json::from_str::<EdgeRequest>("[]").is_err());
        let back: EdgeRequest = serde_json::from_value(serde_json::to_value(&go).unwrap()).unwrap();
        assert_eq!(back, go);
    }
}
