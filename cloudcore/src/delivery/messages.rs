//! The messages that carry objects to edge nodes, and the sender that skips what a node has
//! acknowledged already.

use kubeedge_beehive::Bus;
use kubeedge_model::constants::{group, module, resource_type};
use kubeedge_model::{Content, Message, Operation, ResourcePath};
use tracing::{debug, warn};

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
    /// Sends a message as is.
    pub async fn raw(&self, msg: Message) {
        let _ = self.bus.send(module::CLOUDHUB, msg).await;
    }
}

/// Messages decided while the view is being changed, sent afterwards: what EdgeController's
/// store task produces for one watch event, queued synchronously and flushed (with the bus'
/// backpressure) before the next event is read.
pub struct Outbox {
    sender: Sender,
    queued: Vec<(&'static str, Message)>,
}

impl Outbox {
    /// An empty outbox sending through `sender`.
    pub fn new(sender: Sender) -> Self {
        Self { sender, queued: Vec::new() }
    }

    /// Whether `node` acknowledged `obj` at its version or a newer one.
    pub fn has(&self, node: &str, obj: &Obj) -> bool {
        self.sender.syncs.as_ref().is_some_and(|s| s.is_current(node, &obj.uid, obj.rv))
    }

    /// Queues one object message to `node` unless the node already acknowledged this version.
    pub fn object(&mut self, node: &str, obj: &Obj, op: Operation) {
        if op != Operation::Delete && self.sender.syncs.as_ref().is_some_and(|s| s.is_current(node, &obj.uid, obj.rv)) {
            debug!(node, uid = %obj.uid, rv = obj.rv, "Already acknowledged; not sent.");
            return;
        }
        self.queued.push((module::CLOUDHUB, object_message(node, obj, op)));
    }

    /// Queues a message for CloudHub as is.
    pub fn raw(&mut self, msg: Message) {
        self.queued.push((module::CLOUDHUB, msg));
    }

    /// Hands a notice to another module now, without waiting: dropped (and logged) when its
    /// inbox is full.
    pub fn notify(&mut self, module: &'static str, msg: Message) {
        if let Err(e) = self.sender.bus.try_send(module, msg) {
            warn!(module, error = %e, "A notice was not delivered.");
        }
    }

    /// Sends everything queued, in order, waiting while the bus is full.
    pub async fn flush(&mut self) {
        for (module, msg) in self.queued.drain(..) {
            let _ = self.sender.bus.send(module, msg).await;
        }
    }
}

/// The module a message carrying an object of edge type `ty` comes from: DeviceController for
/// devices and device models (the edge's MetaManager hands only its messages to DeviceTwin, so
/// SyncController's re-sends of them must carry it too), EdgeController for the rest.
pub fn source_of(ty: &str) -> &'static str {
    match ty {
        resource_type::DEVICE | resource_type::DEVICE_MODEL => module::DEVICECONTROLLER,
        _ => module::EDGECONTROLLER,
    }
}

/// The message carrying `obj` to `node`.
pub fn object_message(node: &str, obj: &Obj, op: Operation) -> Message {
    let mut m = Message::build(
        source_of(obj.ty),
        group::RESOURCE,
        ResourcePath::new(&obj.namespace, obj.ty, &obj.name).for_node(node).to_string(),
        op,
        obj.content.clone(),
    );
    m.header.resource_version = obj.rv.to_string();
    m
}

/// A delete for an object known only by identity (upstream sends an unstructured object with
/// namespace, name and uid).
pub fn delete_message(node: &str, ty: &str, api_version: &str, kind: &str, ns: &str, name: &str, uid: &str) -> Message {
    let content = Content::from_value(&serde_json::json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"namespace": ns, "name": name, "uid": uid},
    }));
    Message::build(
        source_of(ty),
        group::RESOURCE,
        ResourcePath::new(ns, ty, name).for_node(node).to_string(),
        Operation::Delete,
        content,
    )
}
