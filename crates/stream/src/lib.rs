//! The wire format of upstream's stream tunnel (kubeedge/kubeedge `pkg/stream`), between
//! CloudStream (cloudcore, `tunnelPort` 10004) and EdgeStream (edgecore), which carries
//! `kubectl logs`, `exec`, `attach`, `port-forward` and metrics to edge nodes:
//!
//! - [`message`]: one tunnel message is `uvarint(connectID) ‖ uvarint(messageType) ‖ data`,
//!   with upstream's seven message types and its 1 MiB cap on `data`;
//! - [`connect`]: the JSON payload of the `*_CONNECT` messages (`MessID`, Go's `net/url.URL`
//!   as JSON, the header map, and `method` for exec and attach);
//! - [`ws`]: WebSocket frames after the handshake. Upstream sends every tunnel message as one
//!   *text* frame whose payload is binary (often invalid UTF-8), which a conforming WebSocket
//!   library refuses; this reader takes text and binary frames alike, checks lengths before
//!   buffering, and answers nothing by itself (pings are returned to the caller).

pub mod connect;
pub mod message;
pub mod ws;

pub use connect::{ConnectRequest, GoUrl};
pub use message::{DecodeError, MAX_DATA, Message, MessageType};

/// Our extension header on the tunnel's `101`: the cloud pings the edge every this many
/// seconds from a writer that never waits on a slow stream, so the edge may treat a short
/// silence as a dead link. Upstream's cloud only answers the edge's pings, and only once it has
/// read them (which a slow `kubectl logs` caller can hold up), so without the header the edge
/// waits much longer.
pub const CLOUD_PINGS_HEADER: &str = "X-KubeEdge-Rs-Cloud-Pings";
