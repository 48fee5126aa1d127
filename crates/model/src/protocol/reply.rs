//! The cloud's answers to an edge's requests, as upstream v1.15's EdgeController writes them
//! (`cloud-reply-*.json`), built on the cloud side and parsed on the edge side:
//!
//! - `"OK"`: node update, nodestatus, podstatus and pod delete;
//! - an ObjectResp, `{"Object": <object or null>, "Err": <StatusError or null>}`: node insert,
//!   node and pod status patches, and every lease request;
//! - queries: the object itself (with `resourceversion` in the header), or the Go error value,
//!   a `StatusError` `{"ErrStatus": <Status>}`.
//!
//! Locally, MetaManager answers with an `error` message (upstream `NewErrorMessage`) when it
//! cannot ask the cloud; [`object_of`] folds all of these into one `Result`.

use serde_json::{Value, json};

use crate::constants::{content, group, module, operation};
use crate::{Content, Message, Operation};

/// `"OK"`: the content of an ACK and of the replies that carry no object.
pub fn ok() -> Content {
    Content::string(content::OK)
}

/// Whether `content` is `"OK"`.
pub fn is_ok(content: &Content) -> bool {
    content.as_str().as_deref() == Some(content::OK)
}

/// Whether `content` is a Go `error` value: a plain error marshals as `{}`, a `StatusError` as
/// `{"ErrStatus": …}` and nothing else.
pub fn is_go_error(content: &Content) -> bool {
    let raw = content.raw().trim_start();
    raw == "{}"
        || (raw.starts_with("{\"ErrStatus\"")
            && content.decode::<serde_json::Map<String, Value>>().is_ok_and(|m| m.len() == 1))
}

/// EdgeController's reply to `request`: `parent_msg_id` = the request's id, its resource,
/// source `edgecontroller`, group `resource`, operation `response`.
pub fn response(request: &Message, content: Content) -> Message {
    let mut m = Message::response_to(request, content);
    m.router.source = module::EDGECONTROLLER.to_owned();
    m.router.group = group::RESOURCE.to_owned();
    m
}

/// An ObjectResp's content: `{"Object": …, "Err": …}`. The object is Go's typed object from the
/// client, whose TypeMeta is empty: `kind` and `apiVersion` are removed.
pub fn object_resp(object: Option<Value>, err: Option<Value>) -> Content {
    let object = object.map(|mut o| {
        if let Some(m) = o.as_object_mut() {
            m.remove("kind");
            m.remove("apiVersion");
        }
        o
    });
    Content::from_value(&json!({"Object": object, "Err": err}))
}

/// A failed Kubernetes `Status`, to be written as Go's `StatusError` marshals it.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusError {
    /// The HTTP code (`404`, `409`…).
    pub code: i32,
    /// The reason (`NotFound`, `Conflict`…).
    pub reason: String,
    /// The human-readable message.
    pub message: String,
    /// `details` (name, group, kind), when known.
    pub details: Option<Value>,
}

impl StatusError {
    /// A failure with no details.
    pub fn new(code: i32, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self { code, reason: reason.into(), message: message.into(), details: None }
    }

    /// With `details`.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// A 400 for content the cloud cannot use.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// Upstream's own NotFound for what its informers answer (node and lease queries): the
    /// singular resource, `lease.coordination.k8s.io "n" not found`, details {name, group, kind}.
    pub fn not_found(resource: &str, group: &str, name: &str) -> Self {
        let qualified = if group.is_empty() { resource.to_owned() } else { format!("{resource}.{group}") };
        let mut details = json!({"name": name, "kind": resource});
        if !group.is_empty() {
            details["group"] = json!(group);
        }
        Self::new(404, "NotFound", format!("{qualified} {name:?} not found")).with_details(details)
    }

    /// `{"ErrStatus": {"metadata": {}, "status": "Failure", "message", "reason", "details"?, "code"}}`.
    pub fn to_value(&self) -> Value {
        let mut status = json!({"metadata": {}, "status": "Failure", "message": self.message,
            "reason": self.reason, "code": self.code});
        if let Some(d) = &self.details {
            status["details"] = d.clone();
        }
        json!({ "ErrStatus": status })
    }
}

/// Why a reply carries no object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// An `error` reply (MetaManager could not ask the cloud): its text.
    #[error("{0}")]
    Failed(String),
    /// The API refused the request: the Status's reason and code.
    #[error("{reason} ({code})")]
    Status {
        /// `reason` (`Unknown` when absent).
        reason: String,
        /// `code` (0 when absent).
        code: i64,
    },
}

impl ReplyError {
    /// The Status reason, or an `error` reply's text.
    pub fn reason(&self) -> &str {
        match self {
            Self::Failed(text) => text,
            Self::Status { reason, .. } => reason,
        }
    }

    /// The HTTP code; 0 for an `error` reply or a Status without one.
    pub fn code(&self) -> i64 {
        match self {
            Self::Failed(_) => 0,
            Self::Status { code, .. } => *code,
        }
    }

    /// The object is not there (`NotFound`, or HTTP 404).
    pub fn is_not_found(&self) -> bool {
        self.reason() == "NotFound" || self.code() == 404
    }

    /// A stale resourceVersion (`Conflict`).
    pub fn is_conflict(&self) -> bool {
        self.reason() == "Conflict"
    }

    /// The object exists already (`AlreadyExists`).
    pub fn is_already_exists(&self) -> bool {
        self.reason() == "AlreadyExists"
    }
}

/// The object a reply carries, from any of the reply shapes: an ObjectResp's `Object`, or the
/// content itself (a query's object, `"OK"`, a list of stored values; content that is not JSON
/// reads as `null`). An `error` reply, an ObjectResp's non-null `Err` and a bare
/// `StatusError` are errors.
pub fn object_of(reply: &Message) -> Result<Value, ReplyError> {
    if reply.router.operation == operation::ERROR {
        return Err(ReplyError::Failed(reply.content.as_str().map(|s| s.into_owned()).unwrap_or_default()));
    }
    let v: Value = reply.content.decode().unwrap_or(Value::Null);
    let err = v.get("Err").filter(|e| !e.is_null()).or_else(|| v.get("ErrStatus").map(|_| &v));
    if let Some(e) = err {
        let status = e.get("ErrStatus").unwrap_or(e);
        let code = status.get("code").and_then(Value::as_i64).unwrap_or(0);
        let reason = status.get("reason").and_then(Value::as_str).unwrap_or("Unknown").to_owned();
        return Err(ReplyError::Status { reason, code });
    }
    Ok(v.get("Object").cloned().unwrap_or(v))
}

/// MetaManager answers a local query with the stored values (a JSON array of JSON texts), the
/// cloud with the object: the object either way (the first stored value parsed, or `value`).
pub fn first_stored(value: Value) -> Value {
    match value {
        Value::Array(mut v) if !v.is_empty() => {
            let first = v.swap_remove(0);
            first.as_str().and_then(|s| serde_json::from_str(s).ok()).unwrap_or(first)
        }
        other => other,
    }
}

/// Whether `msg` is a reply (operation `response` or `error`).
pub fn is_reply(msg: &Message) -> bool {
    matches!(msg.operation(), Operation::Response | Operation::Error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(content: Value) -> Message {
        let req = Message::build("edged", "meta", "kube-node-lease/lease/e", "update", Content::null());
        response(&req, Content::from_value(&content))
    }

    #[test]
    fn object_of_every_reply_shape() {
        let lease = json!({"metadata": {"name": "e"}});
        assert_eq!(object_of(&reply(json!({"Object": lease, "Err": null}))), Ok(lease.clone()));
        assert_eq!(object_of(&reply(lease.clone())), Ok(lease));
        let gone =
            object_of(&reply(json!({"Object": null, "Err": {"ErrStatus": {"reason": "NotFound", "code": 404}}})));
        let gone = gone.unwrap_err();
        assert!(gone.is_not_found() && !gone.is_conflict());
        assert_eq!(gone.to_string(), "NotFound (404)");
        let stale = object_of(&reply(json!({"ErrStatus": {"reason": "Conflict", "code": 409}}))).unwrap_err();
        assert!(stale.is_conflict() && stale.code() == 409);
        let req = Message::build("edged", "meta", "default/pod/p", "delete", Content::null());
        let failed = object_of(&Message::error_response_to(&req, "the cloud is not reachable")).unwrap_err();
        assert_eq!(failed, ReplyError::Failed("the cloud is not reachable".into()));
        assert_eq!((failed.reason(), failed.code()), ("the cloud is not reachable", 0));
        assert_eq!(object_of(&response(&req, ok())), Ok(Value::Null));
    }

    #[test]
    fn built_replies_parse_back() {
        let nf = StatusError::not_found("lease", "coordination.k8s.io", "e").to_value();
        assert_eq!(nf["ErrStatus"]["message"], r#"lease.coordination.k8s.io "e" not found"#);
        assert_eq!(nf["ErrStatus"]["details"], json!({"name": "e", "kind": "lease", "group": "coordination.k8s.io"}));
        let r = reply(serde_json::from_str(object_resp(None, Some(nf)).raw()).unwrap());
        assert!(object_of(&r).unwrap_err().is_not_found());
        let obj = json!({"kind": "Lease", "apiVersion": "coordination.k8s.io/v1", "metadata": {}});
        let content = object_resp(Some(obj), None);
        assert_eq!(content.raw(), r#"{"Err":null,"Object":{"metadata":{}}}"#);
        let bad = StatusError::bad_request("no").to_value();
        assert_eq!(
            serde_json::to_string(&bad).unwrap(),
            r#"{"ErrStatus":{"code":400,"message":"no","metadata":{},"reason":"BadRequest","status":"Failure"}}"#
        );
        assert!(is_go_error(&Content::from_value(&bad)) && is_go_error(&Content::from_raw_json("{}").unwrap()));
        assert!(!is_go_error(&Content::from_value(&json!({"ErrStatus": {}, "x": 1}))));
        assert!(is_ok(&ok()) && !is_ok(&Content::null()));
        let r = response(&Message::build("edged", "meta", "x/y/z", "query", Content::null()), ok());
        assert_eq!((r.router.source.as_str(), r.router.group.as_str()), ("edgecontroller", "resource"));
        assert!(is_reply(&r));
    }

    #[test]
    fn stored_values_unwrap_to_the_first_object() {
        assert_eq!(first_stored(json!([r#"{"a":1}"#, "x"])), json!({"a": 1}));
        assert_eq!(first_stored(json!({"a": 1})), json!({"a": 1}));
        assert_eq!(first_stored(json!([])), json!([]));
    }
}
