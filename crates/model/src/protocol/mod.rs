//! The protocol: typed builders and parsers for the messages edgecore, cloudcore and the hollow
//! fleet send one another, in the shapes upstream v1.15 sends (the captures in
//! `tests/fixtures/upstream/`). One place for each shape, so the two ends and the load
//! generator cannot drift apart.
//!
//! - [`edge`]: what an edge sends: EdgeHub's keepalive and connection notices, MetaManager's
//!   ACKs (and which messages need one), edged's node registration, node and pod status
//!   patches, lease insert/update/query, pod deletes and queries.
//! - [`objects`]: the content of those requests: the Node and Lease an edge registers, the
//!   status heartbeat patch.
//! - [`inventory`]: the anti-entropy question the cloud asks an edge of ours, and its answer.
//! - [`lease`]: the compact lease renewal between an edge and a cloud that are both ours.
//! - [`servicebus`]: the Router's messages to an edge (publish, subscribe, allow-list, HTTP
//!   calls) and ServiceBus's replies, with upstream's `HTTPRequest` / `HTTPResponse`.
//! - [`reply`]: the cloud's answers: `"OK"`, ObjectResp (`{"Object","Err"}`) and Go's
//!   `StatusError` (`{"ErrStatus"}`), built (cloud) and parsed (edge).
//!
//! Everything here is pure: no I/O, no clock except the fresh id and timestamp every new
//! [`Message`](crate::Message) gets. Times inside objects are passed in.

pub mod edge;
pub mod inventory;
pub mod lease;
pub mod objects;
pub mod reply;
pub mod servicebus;

pub use reply::{ReplyError, StatusError};

/// The namespace of node leases (`kube-node-lease`).
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// Upstream's `registerNodeNamespace` default: node resources are `default/node/{name}` and
/// `default/nodepatch/{name}` (v1.15; master uses `null`).
pub const NODE_NAMESPACE: &str = "default";
/// The port of edged's kubelet-style server, announced as `daemonEndpoints.kubeletEndpoint`.
pub const KUBELET_PORT: u16 = 10350;
