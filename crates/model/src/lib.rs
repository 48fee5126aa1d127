//! The KubeEdge wire model: the [`Message`] envelope exactly as upstream's beehive encodes it,
//! resource strings in their cloud and edge forms, and the protocol constants (operations,
//! resource types, groups, module names).
//!
//! Every other crate speaks these types. The envelope is what crosses the cloud–edge link
//! unchanged, so its JSON must match upstream byte for byte where it matters:
//! `{"header":{…},"route":{…},"content":…}` with millisecond timestamps and Go's `omitempty`
//! rules. The `content` is kept as the raw JSON text it arrived as (see [`Content`]) and decoded
//! once, by the module that consumes it.
//!
//! [`protocol`] builds and parses the messages themselves (keepalives, ACKs, registration,
//! status patches, leases, replies), so no daemon or load generator spells a shape twice.

pub mod constants;
mod content;
pub mod go;
mod message;
mod operation;
pub mod protocol;
mod resource;
pub mod twin;
pub mod version;

pub use content::Content;
pub use message::{DecodeError, Header, MAX_MESSAGE_SIZE, Message, Route, now_millis};
pub use operation::Operation;
pub use resource::{CloudResource, ResourceError, ResourcePath, trim_node_prefix, valid_node_name};

/// `error: cause: cause…`: an error and its sources, for log lines and messages.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
