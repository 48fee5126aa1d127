//! The Kubernetes `Status` error type every REST handler returns, with kube-apiserver's
//! exact reasons, codes and messages (see `k8s.io/apimachinery/pkg/api/errors`).

use serde_json::{Map, Value, json};

/// A failed API call, rendered to clients as a `Status` object (see [`ApiError::to_status`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// HTTP status code (also `Status.code`).
    pub code: u16,
    /// The machine-readable `Status.reason`, e.g. `NotFound`.
    pub reason: &'static str,
    /// The human-readable `Status.message`.
    pub message: String,
    /// `Status.details` (`{name, group, kind, causes}`), when the error names an object.
    pub details: Option<Value>,
}

/// The standard message for a resourceVersion conflict on update.
pub const OBJECT_MODIFIED: &str =
    "the object has been modified; please apply your changes to the latest version and try again";

/// Splits `"deployments.apps"` into `("deployments", "apps")`; `"pods"` gives `("pods", "")`.
fn split_group(qualified: &str) -> (&str, &str) {
    match qualified.split_once('.') {
        Some((first, group)) => (first, group),
        None => (qualified, ""),
    }
}

/// `{name, group, kind}` details with empty members omitted, as Go's `omitempty` does.
fn details(qualified: &str, name: &str) -> Value {
    let (kind, group) = split_group(qualified);
    let mut d = Map::new();
    if !name.is_empty() {
        d.insert("name".into(), json!(name));
    }
    if !group.is_empty() {
        d.insert("group".into(), json!(group));
    }
    if !kind.is_empty() {
        d.insert("kind".into(), json!(kind));
    }
    Value::Object(d)
}

/// Go's `%q` formatting of a string (JSON escaping is close enough for names).
fn quote(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

impl ApiError {
    /// A bare error with the given code, reason and message.
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError { code, reason, message: message.into(), details: None }
    }

    /// 404 NotFound: `pods "x" not found`. `group_resource` is `pods` or `deployments.apps`.
    pub fn not_found(group_resource: &str, name: &str) -> Self {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: format!("{group_resource} {} not found", quote(name)),
            details: Some(details(group_resource, name)),
        }
    }

    /// 409 AlreadyExists: `pods "x" already exists`.
    pub fn already_exists(group_resource: &str, name: &str) -> Self {
        ApiError {
            code: 409,
            reason: "AlreadyExists",
            message: format!("{group_resource} {} already exists", quote(name)),
            details: Some(details(group_resource, name)),
        }
    }

    /// 409 Conflict: `Operation cannot be fulfilled on pods "x": {msg}`.
    pub fn conflict(group_resource: &str, name: &str, msg: &str) -> Self {
        ApiError {
            code: 409,
            reason: "Conflict",
            message: format!("Operation cannot be fulfilled on {group_resource} {}: {msg}", quote(name)),
            details: Some(details(group_resource, name)),
        }
    }

    /// 409 Conflict for a stale `resourceVersion` (the message kubectl users know).
    pub fn conflict_modified(group_resource: &str, name: &str) -> Self {
        Self::conflict(group_resource, name, OBJECT_MODIFIED)
    }

    /// 400 BadRequest with the message as given.
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", msg)
    }

    /// 422 Invalid: `Pod "x" is invalid: spec.containers: Required value`.
    ///
    /// `kind` is the kind, qualified with its group when not core (`Deployment.apps`);
    /// `causes` are `(field path, message)` pairs.
    pub fn invalid(kind: &str, name: &str, causes: Vec<(String, String)>) -> Self {
        let rendered: Vec<String> = causes
            .iter()
            .map(|(field, msg)| if field.is_empty() { msg.clone() } else { format!("{field}: {msg}") })
            .collect();
        let summary = match rendered.len() {
            0 => String::new(),
            1 => format!(": {}", rendered[0]),
            _ => format!(": [{}]", rendered.join(", ")),
        };
        let mut d = details(kind, name);
        if let Value::Object(map) = &mut d {
            let causes: Vec<Value> = causes
                .iter()
                .map(|(field, msg)| json!({"reason": "FieldValueInvalid", "message": msg, "field": field}))
                .collect();
            if !causes.is_empty() {
                map.insert("causes".into(), Value::Array(causes));
            }
        }
        ApiError {
            code: 422,
            reason: "Invalid",
            message: format!("{kind} {} is invalid{summary}", quote(name)),
            details: Some(d),
        }
    }

    /// 410 Expired with the given message.
    pub fn gone(msg: impl Into<String>) -> Self {
        Self::new(410, "Expired", msg)
    }

    /// 410 Expired: `too old resource version: {requested} ({oldest})`.
    pub fn too_old_resource_version(requested: &str, oldest: &str) -> Self {
        Self::gone(format!("too old resource version: {requested} ({oldest})"))
    }

    /// 413 RequestEntityTooLarge.
    pub fn too_large(msg: impl Into<String>) -> Self {
        Self::new(413, "RequestEntityTooLarge", msg)
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(msg: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", msg)
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403 Forbidden.
    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", msg)
    }

    /// 415 UnsupportedMediaType for a request body of content type `content_type`.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format ({content_type}) - accepted media types include: \
                 application/json, application/yaml, application/json-patch+json, application/merge-patch+json, \
                 application/strategic-merge-patch+json, application/apply-patch+yaml"
            ),
        )
    }

    /// 406 NotAcceptable.
    pub fn not_acceptable(msg: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", msg)
    }

    /// 500 InternalError: `Internal error occurred: {msg}`.
    pub fn internal(msg: impl Into<String>) -> Self {
        let msg = msg.into();
        ApiError {
            code: 500,
            reason: "InternalError",
            message: format!("Internal error occurred: {msg}"),
            details: Some(json!({"causes": [{"message": msg}]})),
        }
    }

    /// 504 Timeout: `Timeout: {msg}`.
    pub fn timeout(msg: impl Into<String>) -> Self {
        Self::new(504, "Timeout", format!("Timeout: {}", msg.into()))
    }

    /// 503 ServiceUnavailable.
    pub fn service_unavailable(msg: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", msg)
    }

    /// 429 TooManyRequests.
    pub fn too_many_requests(msg: impl Into<String>) -> Self {
        Self::new(429, "TooManyRequests", msg)
    }

    /// The `Status` object (kind `Status`, `status: Failure`) sent as the response body.
    pub fn to_status(&self) -> Value {
        let mut m = Map::new();
        m.insert("kind".into(), json!("Status"));
        m.insert("apiVersion".into(), json!("v1"));
        m.insert("metadata".into(), json!({}));
        m.insert("status".into(), json!("Failure"));
        m.insert("message".into(), json!(self.message));
        m.insert("reason".into(), json!(self.reason));
        if let Some(d) = &self.details {
            m.insert("details".into(), d.clone());
        }
        m.insert("code".into(), json!(self.code));
        Value::Object(m)
    }
}

/// A `Status` with `status: Success`, as some deletes return; `details` is usually
/// `{name, group, kind, uid}`.
pub fn success_status(details: Option<Value>) -> Value {
    let mut m = Map::new();
    m.insert("kind".into(), json!("Status"));
    m.insert("apiVersion".into(), json!("v1"));
    m.insert("metadata".into(), json!({}));
    m.insert("status".into(), json!("Success"));
    if let Some(d) = details {
        m.insert("details".into(), d);
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_shape() {
        let s = ApiError::not_found("pods", "x").to_status();
        assert_eq!(
            s,
            json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
                   "message":"pods \"x\" not found","reason":"NotFound",
                   "details":{"name":"x","kind":"pods"},"code":404})
        );
    }

    #[test]
    fn grouped_resource_details() {
        let e = ApiError::already_exists("deployments.apps", "web");
        assert_eq!(e.code, 409);
        assert_eq!(e.message, "deployments.apps \"web\" already exists");
        assert_eq!(e.details, Some(json!({"name":"web","group":"apps","kind":"deployments"})));
    }

    #[test]
    fn conflict_message() {
        let e = ApiError::conflict_modified("pods", "x");
        assert_eq!(e.reason, "Conflict");
        assert_eq!(
            e.message,
            "Operation cannot be fulfilled on pods \"x\": the object has been modified; \
             please apply your changes to the latest version and try again"
        );
    }

    #[test]
    fn invalid_causes() {
        let e = ApiError::invalid("Pod", "p", vec![("metadata.name".into(), "Required value".into())]);
        assert_eq!(e.code, 422);
        assert_eq!(e.message, "Pod \"p\" is invalid: metadata.name: Required value");
        let d = e.details.unwrap_or_default();
        assert_eq!(d["causes"][0]["field"], "metadata.name");
        assert_eq!(d["kind"], "Pod");
        let two = ApiError::invalid("Deployment.apps", "d", vec![("a".into(), "x".into()), ("b".into(), "y".into())]);
        assert_eq!(two.message, "Deployment.apps \"d\" is invalid: [a: x, b: y]");
        assert_eq!(two.details.unwrap_or_default()["group"], "apps");
    }

    #[test]
    fn misc_codes() {
        assert_eq!(ApiError::too_old_resource_version("5", "10").message, "too old resource version: 5 (10)");
        assert_eq!(ApiError::gone("x").code, 410);
        assert_eq!(ApiError::gone("x").reason, "Expired");
        assert_eq!(ApiError::too_large("x").code, 413);
        assert_eq!(ApiError::method_not_allowed("x").code, 405);
        assert_eq!(ApiError::unauthorized().to_status()["reason"], "Unauthorized");
        assert_eq!(ApiError::forbidden("no").code, 403);
        assert_eq!(ApiError::unsupported_media_type("text/plain").code, 415);
        assert_eq!(ApiError::not_acceptable("x").code, 406);
        assert_eq!(ApiError::internal("boom").message, "Internal error occurred: boom");
        assert_eq!(ApiError::timeout("slow").code, 504);
        assert_eq!(ApiError::service_unavailable("x").code, 503);
        assert_eq!(ApiError::bad_request("bad").to_string(), "bad");
        assert!(ApiError::bad_request("bad").to_status().get("details").is_none());
    }

    #[test]
    fn success_shape() {
        let s = success_status(Some(json!({"name":"x","kind":"pods","uid":"u"})));
        assert_eq!(s["status"], "Success");
        assert_eq!(s["details"]["uid"], "u");
        assert_eq!(success_status(None).get("details"), None);
    }
}
