//! The compact lease renewal, between an edge and a cloud that are both ours.
//!
//! Upstream's edge renews its node Lease every quarter of the lease's duration (10 s by
//! default) by sending the whole stored Lease ([`edge::lease_update`], about 680 bytes), and the
//! cloud answers with the whole Lease. When both ends agreed on [`FEATURE`] in the WebSocket
//! handshake (`X-KubeEdge-Rs-Features`, see `kubeedge_viaduct`), the edge sends instead:
//!
//! - the request ([`renew`]): source `edged`, operation `renew`, resource
//!   `kube-node-lease/lease/{node}`, content `null`, no group — about 190 bytes:
//!   `{"header":{"msg_id":"…","timestamp":…},"route":{"source":"edged","operation":"renew",
//!   "resource":"kube-node-lease/lease/edge-1"},"content":null}`;
//! - the cloud sets the Lease's `spec.renewTime` to its own current time (a merge patch: no
//!   resourceVersion, so no conflicts), once the node authorizer allowed a `patch` of the
//!   node's own lease;
//! - the reply: operation `response`, `parent_msg_id` = the request's id, content `"OK"`, or on
//!   failure Go's `StatusError` (`{"ErrStatus": …}`); a `NotFound` means the Lease is gone and
//!   the edge creates it with the full [`edge::lease_insert`]. The reply needs no ACK.
//!
//! The envelope is the standard one: Go's `omitempty` leaves out the empty group and every
//! empty optional header field (`parent_msg_id`, `resourceversion`, `sync`, `type`), and
//! `msg_id`, `timestamp` and `content`, which Go always writes, are written, so any Go decoder
//! reads it. The bytes saved are the Lease's, in both directions.
//!
//! [`edge::lease_update`]: super::edge::lease_update
//! [`edge::lease_insert`]: super::edge::lease_insert

use super::{LEASE_NAMESPACE, ReplyError, reply};
use crate::constants::{module, resource_type};
use crate::{Content, Message, Operation, ResourcePath};

/// The handshake feature of the compact renewal. Between ours it also lets EdgeHub leave out
/// its `keepalive` message while it sends others (CloudHub of ours counts every message as a
/// sign of life; upstream's counts keepalives only).
pub const FEATURE: &str = "lease-renew";

/// The edge's compact renewal of `node`'s lease (edge form; CloudHub adds `node/{node}/`).
pub fn renew(node: &str) -> Message {
    let resource = ResourcePath::new(LEASE_NAMESPACE, resource_type::LEASE, node).to_string();
    Message::build(module::EDGED, "", resource, Operation::Renew, Content::null())
}

/// What the cloud's reply to [`renew`] says: renewed, or why not (`NotFound`: there is no
/// Lease to renew).
pub fn renew_result(reply: &Message) -> Result<(), ReplyError> {
    reply::object_of(reply)?;
    if reply::is_ok(&reply.content) {
        Ok(())
    } else {
        Err(ReplyError::Failed(format!("unexpected answer to a lease renewal: {}", reply.content.raw())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::StatusError;

    #[test]
    fn the_renewal_is_a_small_standard_envelope() {
        let mut m = renew("edge-1");
        assert_eq!((m.router.source.as_str(), m.router.group.as_str()), ("edged", ""));
        assert_eq!((m.router.resource.as_str(), m.operation()), ("kube-node-lease/lease/edge-1", Operation::Renew));
        assert!(m.content.is_null());
        m.header.id = "3f1c2a9e-5b7d-4c2e-9a61-0d8e4b6f7a21".into();
        m.header.timestamp = 1_764_100_000_000;
        let wire = String::from_utf8(m.encode()).unwrap();
        assert_eq!(
            wire,
            r#"{"header":{"msg_id":"3f1c2a9e-5b7d-4c2e-9a61-0d8e4b6f7a21","timestamp":1764100000000},"route":{"source":"edged","operation":"renew","resource":"kube-node-lease/lease/edge-1"},"content":null}"#
        );
        assert_eq!(wire.len(), 190);
        let back = Message::decode(wire.as_bytes(), 1 << 10).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.operation(), Operation::Renew);
        // A cloud of ours adds the node prefix; the edge form parses as the node's lease.
        let path = ResourcePath::parse(&back.router.resource).unwrap();
        assert_eq!(
            (path.namespace(), path.resource_type.as_str(), path.name.as_deref()),
            (Some("kube-node-lease"), "lease", Some("edge-1"))
        );
    }

    #[test]
    fn the_reply_says_renewed_missing_or_refused() {
        let req = renew("edge-1");
        let ok = reply::response(&req, reply::ok());
        assert_eq!(ok.parent_id(), Some(req.id()));
        assert_eq!(renew_result(&ok), Ok(()));
        let wire = Message::decode(&ok.encode(), 1 << 10).unwrap();
        assert_eq!(renew_result(&wire), Ok(()));

        let gone = StatusError::not_found("lease", "coordination.k8s.io", "edge-1").to_value();
        let gone = reply::response(&req, Content::from_value(&gone));
        assert!(renew_result(&gone).unwrap_err().is_not_found());

        let forbidden = StatusError::new(403, "Forbidden", "no").to_value();
        let forbidden = renew_result(&reply::response(&req, Content::from_value(&forbidden))).unwrap_err();
        assert_eq!((forbidden.code(), forbidden.is_not_found()), (403, false));

        // MetaManager's own failure (offline) and an answer that is not ours.
        let offline = renew_result(&Message::error_response_to(&req, "the cloud is not reachable")).unwrap_err();
        assert_eq!(offline.reason(), "the cloud is not reachable");
        let odd = reply::response(&req, Content::from_value(&serde_json::json!({"metadata": {}})));
        assert!(renew_result(&odd).is_err());
    }
}
