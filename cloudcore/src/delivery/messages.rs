//! The messages that carry objects to edge nodes, and the sender that skips what a node has
//! acknowledged already.

use kubeedge_beehive::Bus;
use kubeedge_model::constants::{group, module, operation};
use kubeedge_model::{Content, Message};
use tracing::debug;

use super::syncs::Syncs;
use crate::delivery::view::Obj;

/// Where downstream messages go and what decides whether to send them.
#[derive(Clone)]
pub struct Sender {
    /// The bus (messages go to CloudHub).
    pub bus: Bus,
    /// Acknowledged versions, when SyncController runs.
    pub syncs: Option<Syncs>,
}

impl Sender {
    /// Sends one object message to `node` unless the node already acknowledged this version.
    pub async fn object(&self, node: &str, obj: &Obj, op: &str) {
        if op != operation::DELETE && self.syncs.as_ref().is_some_and(|s| s.is_current(node, &obj.uid, obj.rv)) {
            debug!(node, uid = %obj.uid, rv = obj.rv, "Already acknowledged; not sent.");
            return;
        }
        let msg = object_message(node, obj, op);
        let _ = self.bus.send(module::CLOUDHUB, msg).await;
    }

    /// Sends a message as is.
    pub async fn raw(&self, msg: Message) {
        let _ = self.bus.send(module::CLOUDHUB, msg).await;
    }
}

/// The message carrying `obj` to `node`.
pub fn object_message(node: &str, obj: &Obj, op: &str) -> Message {
    let mut m = Message::build(
        module::EDGECONTROLLER,
        group::RESOURCE,
        format!("node/{node}/{}/{}/{}", obj.namespace, obj.ty, obj.name),
        op,
        obj.content.clone(),
    );
    m.header.resource_version = obj.rv.to_string();
    m
}

/// A delete for an object known only by identity (upstream sends an unstructured object with
/// namespace, name and uid).
pub fn delete_message(node: &str, ty: &str, api_version: &str, kind: &str, ns: &str, name: &str, uid: &str) -> Message {
    let content = Content::json(&serde_json::json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"namespace": ns, "name": name, "uid": uid},
    }))
    .unwrap_or_else(|_| Content::null());
    Message::build(
        module::EDGECONTROLLER,
        group::RESOURCE,
        format!("node/{node}/{ns}/{ty}/{name}"),
        operation::DELETE,
        content,
    )
}
