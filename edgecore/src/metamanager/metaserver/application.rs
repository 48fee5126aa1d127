//! Upstream's *Application* protocol (`pkg/metaserver/application.go`, `constants.go`;
//! kubeedge/kubeedge): how MetaServer asks the cloud's DynamicController
//! to do a Kubernetes API call for it.
//!
//! A request is a message from source `metaserver` to group `dynamiccontroller`, resource and
//! operation `null`, sent with `send_sync` to EdgeHub; its content is an [`Application`] as Go's
//! `encoding/json` writes the struct (no JSON tags, so Go field names; `[]byte` fields as
//! base64, `nil` as `null`). The cloud answers with operation `applicationResponse`, parent id
//! = the request's id, and the Application back with `Status`, `RespBody`, `Reason` and `Error`
//! filled in.

use std::time::Duration;

use base64::Engine;
use kubeedge_beehive::BusError;
use kubeedge_kube_serve::status::ApiError;
use kubeedge_model::constants::{module, source};
use kubeedge_model::{Content, Message};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use super::Remote;

/// The message group DynamicController listens on (`modules.DynamicControllerModuleGroup`).
pub const GROUP: &str = "dynamiccontroller";
/// Resource and operation of an Application request (upstream writes `"null"`).
pub const NULL: &str = "null";
/// The operation of the cloud's answer (`metaserver.ApplicationResp`).
pub const RESPONSE_OPERATION: &str = "applicationResponse";
/// Go's zero `time.Time`, which an Application carries until it is closed.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// `ApplicationVerb`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    /// `get`
    Get,
    /// `list`
    List,
    /// `watch`
    Watch,
    /// `create`
    Create,
    /// `delete`
    Delete,
    /// `update`
    Update,
    /// `updatestatus`
    UpdateStatus,
    /// `patch`
    Patch,
    /// Anything else (Go's zero value is `""`).
    #[default]
    #[serde(rename = "", other)]
    Unknown,
}

impl Verb {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Delete => "delete",
            Verb::Update => "update",
            Verb::UpdateStatus => "updatestatus",
            Verb::Patch => "patch",
            Verb::Unknown => "",
        }
    }
}

/// `ApplicationStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Status {
    /// Waiting to be sent (edge).
    PreApplying,
    /// Being sent (edge); what a request carries.
    InApplying,
    /// Being processed by the cloud.
    InProcessing,
    /// Done by the cloud; `RespBody` holds the result.
    Approved,
    /// Refused by the cloud; `Error` (or `Reason`) says why.
    Rejected,
    /// No answer could be had; `Reason` says why.
    Failed,
    /// Finished and waiting to be recycled.
    Completed,
    /// Anything else (Go's zero value is `""`).
    #[default]
    #[serde(rename = "", other)]
    Unknown,
}

/// `apierrors.StatusError`: `{"ErrStatus": metav1.Status}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusError {
    /// The `metav1.Status`.
    #[serde(rename = "ErrStatus", default = "empty_status", deserialize_with = "null_as_empty_status")]
    pub err_status: Value,
}

impl Default for StatusError {
    fn default() -> Self {
        Self { err_status: empty_status() }
    }
}

/// Go's zero `metav1.Status` as `encoding/json` writes it.
fn empty_status() -> Value {
    json!({"metadata": {}})
}

fn null_as_empty_status<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
    Ok(Option::<Value>::deserialize(d)?.filter(|v| !v.is_null()).unwrap_or_else(empty_status))
}

/// An Application, field for field as upstream's struct is encoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Application {
    /// SHA-256 (hex) of node, key, verb, option, request body and subresource.
    #[serde(rename = "ID", default, deserialize_with = "null_default")]
    pub id: String,
    /// The `meta_v2` key form of the request: `/{group|core}/{version}/{plural}/{ns|null}/{name|null}`.
    #[serde(rename = "Key", default, deserialize_with = "null_default")]
    pub key: String,
    /// The verb.
    #[serde(rename = "Verb", default, deserialize_with = "null_default")]
    pub verb: Verb,
    /// The node asking.
    #[serde(rename = "Nodename", default, deserialize_with = "null_default")]
    pub nodename: String,
    /// The verb's options as JSON (`CreateOptions`, `PatchInfo`, …).
    #[serde(rename = "Option", default, with = "go_bytes")]
    pub option: Option<Vec<u8>>,
    /// The request object as JSON (create, update).
    #[serde(rename = "ReqBody", default, with = "go_bytes")]
    pub req_body: Option<Vec<u8>>,
    /// The subresource (`status`) or empty.
    #[serde(rename = "Subresource", default, deserialize_with = "null_default")]
    pub subresource: String,
    /// The result object as JSON (filled in by the cloud).
    #[serde(rename = "RespBody", default, with = "go_bytes")]
    pub resp_body: Option<Vec<u8>>,
    /// Where the application is.
    #[serde(rename = "Status", default, deserialize_with = "null_default")]
    pub status: Status,
    /// Why it is in that status.
    #[serde(rename = "Reason", default, deserialize_with = "null_default")]
    pub reason: String,
    /// The Kubernetes error of a rejected application.
    #[serde(rename = "Error", default, deserialize_with = "null_default")]
    pub error: StatusError,
    /// When the application was last closed (Go's zero time until then).
    #[serde(rename = "Timestamp", default = "zero_time", deserialize_with = "null_default")]
    pub timestamp: String,
}

fn zero_time() -> String {
    ZERO_TIME.to_owned()
}

impl Application {
    /// A request as upstream's agent sends it: status `InApplying`, the ID computed.
    pub fn request(
        node: &str,
        key: String,
        verb: Verb,
        subresource: &str,
        option: Option<Vec<u8>>,
        req_body: Option<Vec<u8>>,
    ) -> Self {
        let mut app = Self {
            id: String::new(),
            key,
            verb,
            nodename: node.to_owned(),
            option,
            req_body,
            subresource: subresource.to_owned(),
            resp_body: None,
            status: Status::InApplying,
            reason: String::new(),
            error: StatusError::default(),
            timestamp: zero_time(),
        };
        app.id = app.identifier();
        app
    }

    /// Upstream's `Identifier()`: the hex SHA-256 of nodename, key, verb, option, request body
    /// and subresource, concatenated.
    pub fn identifier(&self) -> String {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(self.nodename.as_bytes());
        ctx.update(self.key.as_bytes());
        ctx.update(self.verb.as_str().as_bytes());
        ctx.update(self.option.as_deref().unwrap_or_default());
        ctx.update(self.req_body.as_deref().unwrap_or_default());
        ctx.update(self.subresource.as_bytes());
        ctx.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The bus message carrying this application to the cloud.
    pub fn to_message(&self) -> Result<Message, serde_json::Error> {
        Ok(Message::build(source::METASERVER, GROUP, NULL, NULL, Content::json(self)?))
    }
}

/// `PatchInfo`: a patch's name, type, data and options, sent as an Application's `Option`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchInfo {
    /// The object's name.
    #[serde(rename = "Name", default, deserialize_with = "null_default")]
    pub name: String,
    /// The patch content type, e.g. `application/merge-patch+json`.
    #[serde(rename = "PatchType", default, deserialize_with = "null_default")]
    pub patch_type: String,
    /// The patch document.
    #[serde(rename = "Data", default, with = "go_bytes")]
    pub data: Option<Vec<u8>>,
    /// `metav1.PatchOptions`.
    #[serde(rename = "Options", default)]
    pub options: Value,
    /// The subresource, `[""]` for none (upstream's `[]string{reqInfo.Subresource}`).
    #[serde(rename = "Subresources", default, deserialize_with = "null_default")]
    pub subresources: Vec<String>,
}

/// Go decodes `null` into a field as "leave the zero value"; serde would fail. Accept both.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Go's `[]byte` in JSON: a base64 string, `null` for nil. Decoding also accepts unpadded
/// base64 and, from peers that nest it, a JSON object or array (taken as its JSON text).
mod go_bytes {
    use super::*;

    pub(super) fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            None => s.serialize_none(),
            Some(b) => s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b)),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        match Option::<Value>::deserialize(d)? {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => {
                let cleaned: String = s.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
                base64::engine::general_purpose::STANDARD
                    .decode(&cleaned)
                    .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(&cleaned))
                    .map(Some)
                    .map_err(serde::de::Error::custom)
            }
            Some(v @ (Value::Object(_) | Value::Array(_))) => Ok(Some(v.to_string().into_bytes())),
            Some(other) => Err(serde::de::Error::custom(format!("expected base64 bytes, found {other}"))),
        }
    }
}

/// Sends an application to the cloud and waits for its answer: `Ok` with the decoded result
/// body (if any) when the cloud approved it, else the error a client should see.
///
/// - offline (`remote.connected` false): 503 at once;
/// - EdgeHub missing or stopped: 503; no answer in time: 504;
/// - `Rejected` with a Kubernetes error: that `Status` and its code; other failures: 500.
pub(crate) async fn apply(remote: &Remote, app: &Application, timeout: Duration) -> Result<Option<Value>, ApiError> {
    if !remote.connected.load(std::sync::atomic::Ordering::Acquire) {
        return Err(offline());
    }
    let msg = app.to_message().map_err(|e| ApiError::internal(format!("encoding the application: {e}")))?;
    debug!(app.id = %app.id, app.key = %app.key, app.verb = app.verb.as_str(), msg.id = %msg.header.id,
        "Sending an application to the cloud.");
    let reply = match remote.bus.send_sync(module::EDGEHUB, msg, timeout).await {
        Ok(reply) => reply,
        Err(BusError::Timeout { .. }) => {
            warn!(app.key = %app.key, app.verb = app.verb.as_str(), ?timeout, "The cloud did not answer an application.");
            return Err(ApiError::timeout(format!(
                "the cloud did not answer the {} of {} within {timeout:?}",
                app.verb.as_str(),
                app.key
            )));
        }
        Err(e @ (BusError::UnknownModule(_) | BusError::Closed(_))) => {
            return Err(ApiError::service_unavailable(format!("the way to the cloud is down ({e}); retry later")));
        }
        Err(e) => return Err(ApiError::internal(format!("sending the application to the cloud: {e}"))),
    };
    if reply.router.operation != RESPONSE_OPERATION {
        // EdgeHub answers `error` when it cannot deliver; anything else is not an answer.
        let text = reply.content.as_str().map(|s| s.into_owned()).unwrap_or_else(|| reply.content.raw().to_owned());
        return Err(ApiError::service_unavailable(format!("the cloud could not be reached: {text}")));
    }
    let answer: Application = reply
        .content
        .decode()
        .map_err(|e| ApiError::internal(format!("failed to get Application from resp msg: {e}")))?;
    outcome(app, answer)
}

/// The 503 a write gets while the edge is offline.
pub(crate) fn offline() -> ApiError {
    ApiError::service_unavailable(
        "the edge is offline: writes go to the cloud, which cannot be reached now; retry once the node is connected",
    )
}

/// What the cloud's answer means for the client.
fn outcome(request: &Application, answer: Application) -> Result<Option<Value>, ApiError> {
    match answer.status {
        Status::Approved | Status::Completed => {
            info!(app.key = %request.key, app.verb = request.verb.as_str(), "The cloud approved an application.");
            match answer.resp_body.as_deref().filter(|b| !b.is_empty()) {
                None => Ok(None),
                Some(body) => serde_json::from_slice::<Value>(body)
                    .map(|v| Some(v).filter(|v| !v.is_null()))
                    .map_err(|e| ApiError::internal(format!("the cloud's answer is not JSON: {e}"))),
            }
        }
        Status::Rejected => {
            info!(app.key = %request.key, app.verb = request.verb.as_str(), reason = %answer.reason,
                "The cloud rejected an application.");
            Err(status_error(&answer))
        }
        status => {
            warn!(app.key = %request.key, ?status, reason = %answer.reason, "An application failed in the cloud.");
            Err(ApiError::internal(if answer.reason.is_empty() {
                format!("the cloud answered with status {status:?}")
            } else {
                answer.reason.clone()
            }))
        }
    }
}

/// The error of a rejected application: its `ErrStatus` when that is a Kubernetes error, else a
/// 500 with the `Reason`.
fn status_error(answer: &Application) -> ApiError {
    let s = &answer.error.err_status;
    let code =
        s.get("code").and_then(Value::as_u64).and_then(|c| u16::try_from(c).ok()).filter(|c| (400..600).contains(c));
    let Some(code) = code else {
        let reason = if answer.reason.is_empty() { "the cloud rejected the request" } else { &answer.reason };
        return ApiError::internal(reason.to_owned());
    };
    let message = s.get("message").and_then(Value::as_str).unwrap_or(&answer.reason).to_owned();
    let reason = s.get("reason").and_then(Value::as_str).map_or("", |r| known_reason(r, code));
    ApiError { code, reason, message, details: s.get("details").filter(|d| d.is_object()).cloned() }
}

/// `metav1.StatusReason`s as `&'static str` (what [`ApiError`] holds); an unknown reason is
/// kept as `Unknown`, which is how kube-apiserver spells an unclassified failure.
fn known_reason(reason: &str, code: u16) -> &'static str {
    const REASONS: [&str; 20] = [
        "Unauthorized",
        "Forbidden",
        "NotFound",
        "AlreadyExists",
        "Conflict",
        "Gone",
        "Invalid",
        "ServerTimeout",
        "StoreReadError",
        "Timeout",
        "TooManyRequests",
        "BadRequest",
        "MethodNotAllowed",
        "NotAcceptable",
        "RequestEntityTooLarge",
        "UnsupportedMediaType",
        "InternalError",
        "Expired",
        "ServiceUnavailable",
        "Unknown",
    ];
    match REASONS.iter().find(|r| **r == reason) {
        Some(r) => r,
        None if reason.is_empty() && code == 500 => "InternalError",
        None => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_as_go_does() {
        let app = Application::request(
            "edge-1",
            "/core/v1/configmaps/default/null".into(),
            Verb::Create,
            "",
            Some(br#"{"kind":"CreateOptions"}"#.to_vec()),
            None,
        );
        let text = serde_json::to_string(&app).expect("encode");
        let order = [
            "ID",
            "Key",
            "Verb",
            "Nodename",
            "Option",
            "ReqBody",
            "Subresource",
            "RespBody",
            "Status",
            "Reason",
            "Error",
            "Timestamp",
        ];
        let at: Vec<usize> =
            order.iter().map(|k| text.find(&format!("\"{k}\":")).unwrap_or_else(|| panic!("{k} missing"))).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "Go's field order: {text}");
        let v: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["Verb"], "create");
        assert_eq!(v["Status"], "InApplying");
        assert_eq!(v["Option"], "eyJraW5kIjoiQ3JlYXRlT3B0aW9ucyJ9");
        assert_eq!(v["ReqBody"], Value::Null);
        assert_eq!(v["Error"], json!({"ErrStatus": {"metadata": {}}}));
        assert_eq!(v["Timestamp"], ZERO_TIME);
        assert_eq!(app.id.len(), 64);
        assert_eq!(app.id, app.identifier());
        let msg = app.to_message().expect("message");
        assert_eq!(
            (msg.router.source.as_str(), msg.router.group.as_str(), msg.router.resource.as_str()),
            ("metaserver", "dynamiccontroller", "null")
        );
        assert_eq!(msg.router.operation, "null");
        let back: Application = msg.content.decode().expect("round trip");
        assert_eq!(back, app);
    }

    #[test]
    fn identifier_is_upstreams_sha256() {
        let app = Application::request("n", "/k".into(), Verb::Get, "s", Some(b"o".to_vec()), Some(b"r".to_vec()));
        // sha256("n/kgetors")
        let expect = ring::digest::digest(&ring::digest::SHA256, b"n/kgetors");
        let hex: String = expect.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(app.id, hex);
    }

    #[test]
    fn decodes_go_answers() {
        let go = r#"{"ID":"x","Key":"/core/v1/pods/default/p","Verb":"updatestatus","Nodename":"n",
            "Option":null,"ReqBody":"e30=","Subresource":"status","RespBody":"eyJhIjoxfQ==",
            "Status":"Approved","Reason":"","Error":{"ErrStatus":{"metadata":{}}},"Timestamp":"0001-01-01T00:00:00Z"}"#;
        let app: Application = serde_json::from_str(go).expect("decode");
        assert_eq!(app.verb, Verb::UpdateStatus);
        assert_eq!(app.status, Status::Approved);
        assert_eq!(app.req_body.as_deref(), Some(&b"{}"[..]));
        assert_eq!(outcome(&app, app.clone()).expect("approved"), Some(json!({"a": 1})));
        let sparse: Application =
            serde_json::from_str(r#"{"Status":"Weird","RespBody":{"a":2},"Error":null}"#).expect("d");
        assert_eq!(sparse.status, Status::Unknown);
        assert_eq!(sparse.resp_body.as_deref(), Some(&br#"{"a":2}"#[..]));
        assert_eq!(sparse.timestamp, ZERO_TIME);
        assert!(serde_json::from_str::<Application>(r#"{"RespBody":"***"}"#).is_err());
    }

    #[test]
    fn rejections_become_statuses() {
        let mut app = Application::request("n", "/k".into(), Verb::Create, "", None, None);
        app.status = Status::Rejected;
        app.error.err_status = json!({"metadata": {}, "status": "Failure", "message": "pods \"p\" already exists",
            "reason": "AlreadyExists", "details": {"name": "p", "kind": "pods"}, "code": 409});
        let e = outcome(&app, app.clone()).expect_err("rejected");
        assert_eq!((e.code, e.reason), (409, "AlreadyExists"));
        assert_eq!(e.message, "pods \"p\" already exists");
        assert_eq!(e.details, Some(json!({"name": "p", "kind": "pods"})));
        app.error = StatusError::default();
        app.reason = "no such thing".into();
        let e = outcome(&app, app.clone()).expect_err("plain");
        assert_eq!((e.code, e.message.as_str()), (500, "Internal error occurred: no such thing"));
        app.status = Status::Failed;
        assert_eq!(outcome(&app, app.clone()).expect_err("failed").code, 500);
        app.error.err_status = json!({"code": 418, "reason": "Teapot", "message": "short and stout"});
        app.status = Status::Rejected;
        assert_eq!(outcome(&app, app.clone()).expect_err("odd").reason, "Unknown");
    }

    #[test]
    fn patch_info_shape() {
        let pi = PatchInfo {
            name: "p".into(),
            patch_type: "application/merge-patch+json".into(),
            data: Some(b"{}".to_vec()),
            options: json!({"kind": "PatchOptions", "apiVersion": "meta.k8s.io/v1"}),
            subresources: vec![String::new()],
        };
        let v = serde_json::to_value(&pi).expect("encode");
        assert_eq!(v["Data"], "e30=");
        assert_eq!(v["Subresources"], json!([""]));
        assert_eq!(v["Options"]["kind"], "PatchOptions");
    }
}
