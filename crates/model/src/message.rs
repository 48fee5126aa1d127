//! The message envelope (`beehive/pkg/core/model/message.go` upstream).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize};

use crate::constants::operation;
use crate::{Content, Operation};

/// The largest message accepted from any reader: upstream's 32 MiB cap (the fix for
/// CVE-2026-62370 in viaduct's packer).
pub const MAX_MESSAGE_SIZE: usize = 32 * 1024 * 1024;

/// A wire message: `{"header":…,"route":…,"content":…}`.
///
/// Field order and key spellings are upstream's. Missing or `null` fields decode to their zero
/// values, as Go's `encoding/json` does, so a v1.15 edge's shutdown frame
/// (`{"header":{"msg_id":"","timestamp":0},"route":{},"content":null}`) decodes cleanly.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Identity, correlation and timing.
    #[serde(default, deserialize_with = "null_default")]
    pub header: Header,
    /// Where the message comes from and what it is about.
    #[serde(rename = "route", default, deserialize_with = "null_default")]
    pub router: Route,
    /// The body: any JSON value, kept raw.
    #[serde(default)]
    pub content: Content,
}

/// `header`: identity and correlation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// `msg_id`: a UUIDv4. Always written, even when empty.
    #[serde(rename = "msg_id", default, deserialize_with = "null_default")]
    pub id: String,
    /// `parent_msg_id`: the `msg_id` of the request this message answers.
    #[serde(
        rename = "parent_msg_id",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub parent_id: String,
    /// `timestamp`: milliseconds since the Unix epoch. Always written.
    #[serde(default, deserialize_with = "null_default")]
    pub timestamp: i64,
    /// `resourceversion`: the Kubernetes resourceVersion of the object in `content`.
    #[serde(
        rename = "resourceversion",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub resource_version: String,
    /// `sync`: set by `send_sync`. The WebSocket writer clears it (upstream behaviour).
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "is_false")]
    pub sync: bool,
    /// `type`: the beehive context type (`""`, `channel`, `unixpacket`).
    #[serde(rename = "type", default, deserialize_with = "null_default", skip_serializing_if = "String::is_empty")]
    pub message_type: String,
}

/// `route`: source, group, operation and resource. Every field is omitted when empty.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The sending module (e.g. `edgecontroller`, `edged`, `websocket`).
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// The destination module; not used on the cloud–edge wire.
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "String::is_empty")]
    pub destination: String,
    /// The destination group (e.g. `resource`, `meta`, `twin`).
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// The operation (e.g. `insert`, `response`).
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "String::is_empty")]
    pub operation: String,
    /// The resource string (cloud form `node/{node}/{ns}/{type}/{name}` or edge form).
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "String::is_empty")]
    pub resource: String,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Go decodes `null` into a field as "leave the zero value"; serde would fail. Accept both.
fn null_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// The current time in milliseconds since the Unix epoch, as upstream stamps messages.
pub fn now_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)).unwrap_or(0)
}

/// Why bytes could not be decoded as a message (or content as a type).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The input is over the size cap; it was not parsed.
    #[error("message of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Bytes offered.
        len: usize,
        /// The cap in force.
        max: usize,
    },
    /// The input is not JSON (or ends early).
    #[error("malformed JSON")]
    Syntax {
        /// The parser's error, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// The input is JSON of the wrong shape (a field of the wrong type, a non-object envelope).
    #[error("JSON of the wrong shape")]
    Shape {
        /// The parser's error, naming the field where it could.
        #[source]
        source: serde_json::Error,
    },
}

impl DecodeError {
    pub(crate) fn from_json(source: serde_json::Error) -> Self {
        match source.classify() {
            serde_json::error::Category::Data => Self::Shape { source },
            _ => Self::Syntax { source },
        }
    }
}

impl Message {
    /// A new message: fresh UUIDv4 `msg_id`, the current millisecond timestamp, empty route
    /// and `null` content (upstream `NewMessage("")`).
    pub fn new() -> Self {
        Self {
            header: Header { id: uuid::Uuid::new_v4().to_string(), timestamp: now_millis(), ..Header::default() },
            ..Self::default()
        }
    }

    /// A new message with every routing field set (upstream `BuildRouter` + `FillBody`). The
    /// operation is an [`Operation`] or its wire string.
    pub fn build(
        source: &str,
        group: &str,
        resource: impl Into<String>,
        operation: impl AsRef<str>,
        content: Content,
    ) -> Self {
        let mut msg = Self::new();
        msg.router = Route {
            source: source.to_owned(),
            group: group.to_owned(),
            operation: operation.as_ref().to_owned(),
            resource: resource.into(),
            ..Route::default()
        };
        msg.content = content;
        msg
    }

    /// Decodes one message from bytes, refusing input over `max` bytes before parsing it.
    /// Trailing whitespace (Go's encoder ends frames with `\n`) is accepted.
    pub fn decode(bytes: &[u8], max: usize) -> Result<Self, DecodeError> {
        if bytes.len() > max {
            return Err(DecodeError::TooLarge { len: bytes.len(), max });
        }
        serde_json::from_slice(bytes).map_err(DecodeError::from_json)
    }

    /// Encodes the message as compact JSON.
    pub fn encode(&self) -> Vec<u8> {
        // The envelope holds only strings, integers, bools and already-valid raw JSON, so
        // serialisation cannot fail; fall back to an empty object rather than panic.
        serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec())
    }

    /// A response to `request` (upstream `NewRespByMessage`): new id, `parent_msg_id` = the
    /// request's id, the request's source, group, resource and type, operation `response`.
    pub fn response_to(request: &Message, content: Content) -> Self {
        let mut msg = Self::new();
        msg.header.parent_id = request.header.id.clone();
        msg.header.message_type = request.header.message_type.clone();
        msg.router = Route {
            source: request.router.source.clone(),
            group: request.router.group.clone(),
            resource: request.router.resource.clone(),
            operation: operation::RESPONSE.to_owned(),
            ..Route::default()
        };
        msg.content = content;
        msg
    }

    /// An error response to `request` (upstream `NewErrorMessage`): `parent_msg_id` = the
    /// request's id, the same resource, operation `error`, the error text as content. Source
    /// and group stay empty, as upstream.
    pub fn error_response_to(request: &Message, error: &str) -> Self {
        let mut msg = Self::new();
        msg.header.parent_id = request.header.id.clone();
        msg.router.resource = request.router.resource.clone();
        msg.router.operation = operation::ERROR.to_owned();
        msg.content = Content::string(error);
        msg
    }

    /// The message id.
    pub fn id(&self) -> &str {
        &self.header.id
    }

    /// The id of the request this answers, if any.
    pub fn parent_id(&self) -> Option<&str> {
        Some(self.header.parent_id.as_str()).filter(|p| !p.is_empty())
    }

    /// The parsed operation.
    pub fn operation(&self) -> Operation {
        Operation::parse(&self.router.operation)
    }

    /// Whether this is the zero-value message a v1.15 edge writes on shutdown.
    pub fn is_empty_frame(&self) -> bool {
        self.header.id.is_empty() && self.header.timestamp == 0 && self.router == Route::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_message_has_id_and_millis() {
        let m = Message::new();
        assert_eq!(m.header.id.len(), 36);
        assert!(m.header.timestamp > 1_600_000_000_000, "ms, not s");
        assert!(m.content.is_null());
    }

    #[test]
    fn omitempty_rules_match_go() {
        let mut m = Message::new();
        m.header.id = "a".into();
        m.header.timestamp = 5;
        let json = String::from_utf8(m.encode()).unwrap();
        assert_eq!(json, r#"{"header":{"msg_id":"a","timestamp":5},"route":{},"content":null}"#);
        m.header.sync = true;
        m.header.parent_id = "p".into();
        m.header.resource_version = "7".into();
        m.header.message_type = "channel".into();
        m.router.operation = "insert".into();
        let json = String::from_utf8(m.encode()).unwrap();
        assert_eq!(
            json,
            r#"{"header":{"msg_id":"a","parent_msg_id":"p","timestamp":5,"resourceversion":"7","sync":true,"type":"channel"},"route":{"operation":"insert"},"content":null}"#
        );
    }

    #[test]
    fn response_and_error_constructors() {
        let req = Message::build("edged", "meta", "default/podpatch/p", "patch", Content::null());
        let resp = Message::response_to(&req, Content::string("OK"));
        assert_eq!(resp.parent_id(), Some(req.id()));
        assert_ne!(resp.id(), req.id());
        assert_eq!(resp.router.source, "edged");
        assert_eq!(resp.router.group, "meta");
        assert_eq!(resp.router.resource, "default/podpatch/p");
        assert_eq!(resp.operation(), Operation::Response);
        let err = Message::error_response_to(&req, "boom");
        assert_eq!(err.parent_id(), Some(req.id()));
        assert_eq!(err.operation(), Operation::Error);
        assert_eq!(err.router.source, "");
        assert_eq!(err.content.as_str().as_deref(), Some("boom"));
    }

    #[test]
    fn decode_errors_are_typed() {
        assert!(matches!(Message::decode(b"{not json", 100), Err(DecodeError::Syntax { .. })));
        assert!(matches!(Message::decode(b"", 100), Err(DecodeError::Syntax { .. })));
        assert!(matches!(Message::decode(b"[1,2]", 100), Err(DecodeError::Shape { .. })));
        assert!(matches!(Message::decode(br#"{"header":{"timestamp":"x"}}"#, 100), Err(DecodeError::Shape { .. })));
        assert!(matches!(Message::decode(&[b' '; 101], 100), Err(DecodeError::TooLarge { len: 101, max: 100 })));
    }

    #[test]
    fn tolerates_nulls_missing_fields_and_trailing_newline() {
        let m = Message::decode(b"{\"header\":null,\"route\":{\"source\":null}}\n", 1000).unwrap();
        assert_eq!(m, Message::default());
        let shutdown = br#"{"header":{"msg_id":"","timestamp":0},"route":{},"content":null}"#;
        assert!(Message::decode(shutdown, 1000).unwrap().is_empty_frame());
    }
}
