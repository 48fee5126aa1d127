//! Kubernetes → edges for devices (upstream `devicecontroller/controller/downstream.go`):
//! watches on DeviceModels and Devices, turned into messages for CloudHub.
//!
//! - A Device bound to a node (`spec.nodeName`): a `membership` update adding it (group `twin`,
//!   no ACK), its DeviceModel as `insert` when no other device of that node uses the model,
//!   then the Device as `insert` (group `resource`, source `devicecontroller`,
//!   `resourceversion` = the object's; acknowledged by the edge and recorded in ObjectSyncs).
//! - A spec change: the model and the device as `update`. A change of `nodeName`: removed from
//!   the old node (membership, the model when no other device there uses it, the device as
//!   `delete`) and added to the new one. A deleted Device: the same removal.
//! - A DeviceModel change goes at once to every node with a device of it (upstream only
//!   stores it and lets the next device change carry it).
//! - Every Device gets its DeviceStatus (same name, owned by the Device) when it has none.
//!
//! One task, the store task, reads both watches and owns the device view's only writer;
//! Devices are read once the first list of models is in (upstream sleeps a second instead).
//! What an edge missed while offline is not this task's concern: SyncController reconciles
//! every connected node against the device view and the node's ObjectSyncs.

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kubeedge_apis::devices::v1beta1::{API_VERSION, Device, DeviceModel};
use kubeedge_model::Operation;
use kubeedge_model::constants::resource_type;
use serde_json::Value;
use std::collections::HashSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::upstream::Statuses;
use crate::delivery::devices::{DeviceEntry, DeviceViewWriter, Key, membership_message};
use crate::delivery::messages::{Outbox, Sender};
use crate::delivery::refs::meta_spec_hash;
use crate::delivery::view::Obj;

type WatchEvent = Result<Event<DynamicObject>, watcher::Error>;

fn watch(api: Api<DynamicObject>) -> futures::stream::BoxStream<'static, WatchEvent> {
    watcher::watcher(api, watcher::Config::default()).default_backoff().boxed()
}

/// The store task: reads the DeviceModel and Device watches until `stop`, applies them to the
/// device view through its only writer and sends what follows from each change.
pub async fn run(
    client: kube::Client,
    view: DeviceViewWriter,
    tx: Sender,
    statuses: Statuses,
    stop: CancellationToken,
) {
    let mut models = watch(Api::all_with(client.clone(), &ApiResource::erase::<DeviceModel>(&())));
    let mut devices = watch(Api::all_with(client, &ApiResource::erase::<Device>(&())));
    let mut store = Store {
        view,
        tx: Outbox::new(tx),
        statuses,
        models_listed: false,
        seen_models: HashSet::new(),
        seen_devices: HashSet::new(),
    };
    while !stop.is_cancelled() {
        let done = tokio::select! {
            _ = stop.cancelled() => true,
            ev = models.next() => ev.map(|e| store.on_model(e)).is_none(),
            ev = devices.next(), if store.models_listed => ev.map(|e| store.on_device(e)).is_none(),
        };
        if done {
            return;
        }
        // Sending waits while CloudHub is full; a stop ends the wait (and the task) at once.
        tokio::select! {
            _ = stop.cancelled() => return,
            () = store.tx.flush() => {}
        }
    }
}

struct Store {
    view: DeviceViewWriter,
    tx: Outbox,
    statuses: Statuses,
    models_listed: bool,
    seen_models: HashSet<Key>,
    seen_devices: HashSet<Key>,
}

/// The device view's entry for a watched Device.
fn entry(mut o: DynamicObject) -> Option<DeviceEntry> {
    o.metadata.managed_fields = None;
    let spec = o.data.get("spec").cloned().unwrap_or(Value::Null);
    let text = |p: &str| spec.pointer(p).and_then(Value::as_str).unwrap_or_default().to_owned();
    let (node, model) = (text("/nodeName"), text("/deviceModelRef/name"));
    let properties = spec
        .get("properties")
        .and_then(Value::as_array)
        .map(|ps| ps.iter().filter_map(|p| p.get("name").and_then(Value::as_str).map(str::to_owned)).collect())
        .unwrap_or_default();
    let description = o.metadata.labels.as_ref().and_then(|l| l.get("description")).cloned().unwrap_or_default();
    // Upstream sends a device again only when its spec changed.
    let spec_hash = meta_spec_hash(&Default::default(), &spec);
    let obj = Obj::from_dynamic(o, resource_type::DEVICE, API_VERSION, "Device")?;
    Some(DeviceEntry { obj, node, model, description, properties, spec_hash })
}

impl Store {
    fn on_model(&mut self, ev: WatchEvent) {
        match ev {
            Ok(Event::Init) => self.seen_models.clear(),
            Ok(Event::InitApply(mut o) | Event::Apply(mut o)) => {
                o.metadata.managed_fields = None;
                let Some(obj) = Obj::from_dynamic(o, resource_type::DEVICE_MODEL, API_VERSION, "DeviceModel") else {
                    return;
                };
                self.seen_models.insert((obj.namespace.clone(), obj.name.clone()));
                let known = self.view.view().model(&obj.namespace, &obj.name).is_some();
                self.view.apply_model(obj.clone());
                let view = self.view.view();
                for node in view.nodes_using_model(&obj.namespace, &obj.name) {
                    if known {
                        self.tx.object(&node, &obj, Operation::Update);
                        continue;
                    }
                    // Devices that arrived before their model (two watches, no order between
                    // them) waited for it: the model first, then them.
                    self.tx.object(&node, &obj, Operation::Insert);
                    for o in view.desired(&node).into_iter().filter(|o| o.ty == resource_type::DEVICE) {
                        if let Some(d) = view.device(&o.namespace, &o.name)
                            && d.model == obj.name
                            && d.obj.namespace == obj.namespace
                            && !self.tx.has(&d.node, &d.obj)
                        {
                            self.tx.raw(membership_message(&d.node, vec![d.member()], vec![]));
                            self.tx.object(&d.node, &d.obj, Operation::Insert);
                        }
                    }
                }
            }
            // Nodes that have it are sent a delete by SyncController's reconcile (their
            // ObjectSyncs now point at nothing), as upstream.
            Ok(Event::Delete(o)) => {
                let (ns, name) = (o.metadata.namespace.unwrap_or_default(), o.metadata.name.unwrap_or_default());
                self.view.remove_model(&ns, &name);
            }
            Ok(Event::InitDone) => {
                for (ns, name) in self.view.view().model_keys() {
                    if !self.seen_models.contains(&(ns.clone(), name.clone())) {
                        self.view.remove_model(&ns, &name);
                    }
                }
                self.view.mark_synced("devicemodels");
                self.models_listed = true;
            }
            Err(e) => warn!(error = %e, "Watching device models failed; retrying."),
        }
    }

    fn on_device(&mut self, ev: WatchEvent) {
        match ev {
            Ok(Event::Init) => self.seen_devices.clear(),
            Ok(Event::InitApply(o) | Event::Apply(o)) => {
                let Some(d) = entry(o) else { return };
                let key = (d.obj.namespace.clone(), d.obj.name.clone());
                self.seen_devices.insert(key.clone());
                let before = self.view.apply_device(d.clone());
                if before.is_none() {
                    self.statuses.ensure(&key);
                }
                match before {
                    Some(b) if b.node != d.node => {
                        if !b.node.is_empty() {
                            self.removed(&b);
                        }
                        if !d.node.is_empty() {
                            self.added(&d);
                        }
                    }
                    Some(b) if b.spec_hash != d.spec_hash && !d.node.is_empty() => {
                        if let Some(m) = self.view.view().model(&d.obj.namespace, &d.model) {
                            self.tx.object(&d.node, &m, Operation::Update);
                        }
                        self.tx.object(&d.node, &d.obj, Operation::Update);
                    }
                    Some(_) => {}
                    None if !d.node.is_empty() => self.added(&d),
                    None => {}
                }
            }
            Ok(Event::Delete(o)) => {
                let (ns, name) = (o.metadata.namespace.unwrap_or_default(), o.metadata.name.unwrap_or_default());
                if let Some(b) = self.view.remove_device(&ns, &name).filter(|b| !b.node.is_empty()) {
                    self.removed(&b);
                }
            }
            Ok(Event::InitDone) => {
                // Deleted while the watch was down: SyncController deletes them on their nodes.
                for (ns, name) in self.view.view().device_keys() {
                    if !self.seen_devices.contains(&(ns.clone(), name.clone())) {
                        debug!(namespace = ns, name, "A device vanished during a re-list.");
                        self.view.remove_device(&ns, &name);
                    }
                }
                self.view.mark_synced("devices");
            }
            Err(e) => warn!(error = %e, "Watching devices failed; retrying."),
        }
    }

    /// `d` is now bound to its node: membership, the model if the node has no other device of
    /// it, the device. Nothing when the node already acknowledged this version of the device
    /// (a cloudcore restart does not resend every device).
    fn added(&mut self, d: &DeviceEntry) {
        if self.tx.has(&d.node, &d.obj) {
            return;
        }
        // Its model not seen yet: the device waits for it (sent after the model, on_model).
        if !d.model.is_empty() && self.view.view().model(&d.obj.namespace, &d.model).is_none() {
            return;
        }
        self.tx.raw(membership_message(&d.node, vec![d.member()], vec![]));
        let key = (d.obj.namespace.clone(), d.obj.name.clone());
        if !self.view.view().node_uses_model(&d.node, &d.obj.namespace, &d.model, &key)
            && let Some(m) = self.view.view().model(&d.obj.namespace, &d.model)
        {
            self.tx.object(&d.node, &m, Operation::Insert);
        }
        self.tx.object(&d.node, &d.obj, Operation::Insert);
    }

    /// `d` (as it was) left its node: membership, the model if no other device there uses it
    /// (upstream's order: the model before the device), the device.
    fn removed(&mut self, d: &DeviceEntry) {
        self.tx.raw(membership_message(&d.node, vec![], vec![d.member()]));
        let key = (d.obj.namespace.clone(), d.obj.name.clone());
        if !self.view.view().node_uses_model(&d.node, &d.obj.namespace, &d.model, &key)
            && let Some(m) = self.view.view().model(&d.obj.namespace, &d.model)
        {
            self.tx.object(&d.node, &m, Operation::Delete);
        }
        self.tx.object(&d.node, &d.obj, Operation::Delete);
    }
}
