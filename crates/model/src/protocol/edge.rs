//! What an edge sends: EdgeHub's keepalive and connection notices, MetaManager's ACKs, and
//! edged's requests (through MetaManager to the cloud). Edged's requests have source `edged`
//! and group `meta`, as upstream's edge writes them; EdgeHub forwards them unchanged.

use serde_json::{Value, json};

use super::{LEASE_NAMESPACE, objects, reply};
use crate::constants::{group, module, resource_type, source};
use crate::{Content, Message, Operation, ResourcePath};

/// The connection notice's content when the link is up.
const CONNECTED: &str = "connected";
/// The connection notice's content when the link is down.
const DISCONNECTED: &str = "disconnected";

// === EdgeHub ===

/// EdgeHub's keepalive: source `websocket`, group `resource`, resource `node`, operation
/// `keepalive`, content `"ping"` (`edge-keepalive.json`). No reply is expected.
pub fn keepalive() -> Message {
    Message::build(
        module::EDGEHUB,
        group::RESOURCE,
        resource_type::NODE,
        Operation::Keepalive,
        Content::string(crate::constants::content::PING),
    )
}

/// EdgeHub's notice to the modules of `group` that the cloud link is up or down: source
/// `edgehub`, resource `node/connection`, operation `connect`, content `"connected"` or
/// `"disconnected"`.
pub fn connection_notice(group: &str, connected: bool) -> Message {
    let content = if connected { CONNECTED } else { DISCONNECTED };
    Message::build(source::EDGEHUB, group, resource_type::NODE_CONNECTION, Operation::Connect, Content::string(content))
}

/// Whether the link is up, if `msg` is a connection notice (any content but `"connected"`
/// means down).
pub fn connection_state(msg: &Message) -> Option<bool> {
    (msg.router.resource == resource_type::NODE_CONNECTION).then(|| msg.content.as_str().as_deref() == Some(CONNECTED))
}

// === MetaManager ===

/// MetaManager's ACK of a cloud message: upstream's `NewRespByMessage` with content `"OK"`,
/// so it keeps the message's source and group (`edge-ack.json`: `edgecontroller`/`resource`).
pub fn ack(msg: &Message) -> Message {
    Message::response_to(msg, reply::ok())
}

/// Whether an edge ACKs a reply to its own request: when it came through the cloud's ACK path,
/// which stamps the object's resourceVersion (query, insert and update replies; not the
/// replies to patches or pod deletes).
pub fn reply_needs_ack(reply: &Message) -> bool {
    !reply.header.resource_version.is_empty()
}

/// Whether an edge ACKs this cloud message: every pushed object, replies as
/// [`reply_needs_ack`] says, never a keepalive.
pub fn needs_ack(msg: &Message) -> bool {
    match msg.operation() {
        Operation::Keepalive => false,
        Operation::Response => reply_needs_ack(msg),
        _ => true,
    }
}

// === Edged ===

/// An edged request to MetaManager (source `edged`, group `meta`).
fn edged(resource: String, op: Operation, content: Content) -> Message {
    Message::build(module::EDGED, group::META, resource, op, content)
}

fn resource(ns: &str, ty: &str, name: &str) -> String {
    ResourcePath::new(ns, ty, name).to_string()
}

/// A query: `query` of `resource` (`{ns}/{type}/{name}`, or `{ns}/{type}` for a list), with
/// `content` (`null`, or a TokenRequest for service-account tokens). `edge-query-*.json`.
pub fn query(resource: impl Into<String>, content: Content) -> Message {
    edged(resource.into(), Operation::Query, content)
}

/// Registration: `insert` of the Node to `{namespace}/node/{name}` (`edge-node-insert.json`;
/// the object as [`objects::node_object`] makes it, without TypeMeta).
pub fn node_insert(namespace: &str, name: &str, node: &Value) -> Message {
    edged(resource(namespace, resource_type::NODE, name), Operation::Insert, Content::from_value(node))
}

/// A strategic-merge patch of the node's status: `patch` of `{namespace}/nodepatch/{name}`,
/// the patch as a JSON string (`edge-nodepatch.json`; the first one upstream sends is `"{}"`).
pub fn node_patch(namespace: &str, name: &str, patch: &Value) -> Message {
    edged(resource(namespace, resource_type::NODE_PATCH, name), Operation::Patch, Content::string(&patch.to_string()))
}

/// Creates the node's lease: `insert` of `kube-node-lease/lease/{node}` (`edge-lease-insert.json`).
pub fn lease_insert(node: &str, node_uid: &str, duration_secs: i32, renew_time: &str) -> Message {
    let lease = objects::lease_object(node, node_uid, duration_secs, renew_time);
    edged(resource(LEASE_NAMESPACE, resource_type::LEASE, node), Operation::Insert, Content::from_value(&lease))
}

/// Renews the lease: `update` of the stored Lease (with its resourceVersion, kind and
/// apiVersion as the cloud returned them) with `spec.renewTime` set (`edge-lease-update.json`).
pub fn lease_update(node: &str, mut lease: Value, renew_time: &str) -> Message {
    lease["spec"]["renewTime"] = Value::String(renew_time.to_owned());
    edged(resource(LEASE_NAMESPACE, resource_type::LEASE, node), Operation::Update, Content::from_value(&lease))
}

/// Reads the node's lease (`edge-query-lease.json`).
pub fn lease_query(node: &str) -> Message {
    query(resource(LEASE_NAMESPACE, resource_type::LEASE, node), Content::null())
}

/// A pod status patch: `patch` of `{ns}/podpatch/{name}`, content a strategic-merge patch
/// `{"metadata":{"uid":…},"status":…}` as a JSON string (`edge-podpatch*.json`). A pod
/// without a UID writes `"uid":null`, as a Go pointer would.
pub fn pod_patch(ns: &str, name: &str, uid: Option<&str>, status: Value) -> Message {
    let patch = json!({"metadata": {"uid": uid}, "status": status});
    edged(resource(ns, resource_type::POD_PATCH, name), Operation::Patch, Content::string(&patch.to_string()))
}

/// After stopping a terminating pod, edged asks the cloud to delete it: `delete` of
/// `{ns}/pod/{name}` with DeleteOptions grace 0 and a UID precondition (`edge-pod-delete.json`).
pub fn pod_delete(ns: &str, name: &str, uid: &str) -> Message {
    let options = json!({"gracePeriodSeconds": 0, "preconditions": {"uid": uid}});
    edged(resource(ns, resource_type::POD, name), Operation::Delete, Content::from_value(&options))
}

/// Creates a pod in the cloud (a static pod's mirror): `insert` of `{ns}/pod/{name}`.
pub fn pod_insert(ns: &str, name: &str, pod: Content) -> Message {
    edged(resource(ns, resource_type::POD, name), Operation::Insert, pod)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_answer_pushed_objects_and_acked_replies_only() {
        let mut pod = Message::build("edgecontroller", "resource", "default/pod/p", "insert", Content::null());
        pod.header.resource_version = "7".into();
        let a = ack(&pod);
        assert_eq!(a.parent_id(), Some(pod.id()));
        assert_eq!(a.operation(), Operation::Response);
        assert_eq!((a.router.source.as_str(), a.router.group.as_str()), ("edgecontroller", "resource"));
        assert_eq!(a.content.as_str().as_deref(), Some("OK"));
        assert!(needs_ack(&pod));
        assert!(!needs_ack(&keepalive()));
        let mut reply = Message::response_to(&pod, Content::null());
        assert!(!needs_ack(&reply));
        reply.header.resource_version = "8".into();
        assert!(needs_ack(&reply) && reply_needs_ack(&reply));
    }

    #[test]
    fn connection_notices_round_trip() {
        let up = connection_notice("meta", true);
        assert_eq!((up.router.source.as_str(), up.router.group.as_str()), ("edgehub", "meta"));
        assert_eq!(up.operation(), Operation::Connect);
        assert_eq!(connection_state(&up), Some(true));
        assert_eq!(connection_state(&connection_notice("twin", false)), Some(false));
        assert_eq!(connection_state(&keepalive()), None);
    }

    #[test]
    fn edged_requests_have_edgeds_route() {
        let p = pod_patch("default", "p", Some("u1"), json!({"phase": "Running"}));
        assert_eq!((p.router.source.as_str(), p.router.group.as_str()), ("edged", "meta"));
        assert_eq!((p.router.resource.as_str(), p.operation()), ("default/podpatch/p", Operation::Patch));
        assert!(p.content.is_string());
        let body: Value = p.content.decode().unwrap();
        assert_eq!(body, json!({"metadata": {"uid": "u1"}, "status": {"phase": "Running"}}));
        let no_uid: Value = pod_patch("ns", "p", None, json!({})).content.decode().unwrap();
        assert_eq!(no_uid["metadata"]["uid"], Value::Null);
        let d = pod_delete("default", "p", "u1");
        assert_eq!((d.router.resource.as_str(), d.operation()), ("default/pod/p", Operation::Delete));
        assert_eq!(d.content.raw(), r#"{"gracePeriodSeconds":0,"preconditions":{"uid":"u1"}}"#);
        let n = node_patch("default", "e", &json!({}));
        assert_eq!((n.router.resource.as_str(), n.content.raw()), ("default/nodepatch/e", r#""{}""#));
        let l = lease_update("e", json!({"spec": {"renewTime": "old"}}), "new");
        assert_eq!(l.router.resource, "kube-node-lease/lease/e");
        assert_eq!(l.content.raw(), r#"{"spec":{"renewTime":"new"}}"#);
        assert_eq!(lease_query("e").operation(), Operation::Query);
        let m = pod_insert("ns", "p", Content::from_value(&json!({"kind": "Pod"})));
        assert_eq!((m.router.resource.as_str(), m.operation()), ("ns/pod/p", Operation::Insert));
    }
}
