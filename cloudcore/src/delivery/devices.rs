//! What each edge node should have of devices: the Devices bound to it (`spec.nodeName`) and the
//! DeviceModels they use, kept from DeviceController's watches. It is the device half of the
//! [`View`](super::view::View): SyncController reconciles each node against both, and the node
//! authorizer reads it to decide which DeviceStatus a node may write.
//!
//! Written only through the one [`DeviceViewWriter`] (DeviceController's store task); read
//! through cheap clones of [`DeviceView`].

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use kubeedge_model::constants::{group, module, resource_type};
use kubeedge_model::{CloudResource, Content, Message, Operation};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use super::view::Obj;

/// `{namespace, name}` of a device or model.
pub type Key = (String, String);

/// The watches the device view is built from; it is complete once each has listed once.
pub const WATCHES: [&str; 2] = ["devicemodels", "devices"];

/// A Device as the view keeps it.
#[derive(Debug, Clone)]
pub struct DeviceEntry {
    /// The object as sent to edges.
    pub obj: Obj,
    /// `spec.nodeName` (empty when unbound).
    pub node: String,
    /// `spec.deviceModelRef.name` (empty when none).
    pub model: String,
    /// The label `description` (sent in membership updates, as upstream).
    pub description: String,
    /// The names of `spec.properties` (the twins a DeviceStatus may hold).
    pub properties: Vec<String>,
    /// A hash of the spec: a change of anything else (status, labels) is not sent.
    pub spec_hash: u64,
}

impl DeviceEntry {
    /// The device in a membership update: `{"id": "{ns}/{name}", "name", "description"}`.
    pub fn member(&self) -> MemberDevice {
        MemberDevice {
            id: format!("{}/{}", self.obj.namespace, self.obj.name),
            name: self.obj.name.clone(),
            description: self.description.clone(),
        }
    }
}

#[derive(Default)]
struct Inner {
    devices: HashMap<Key, DeviceEntry>,
    by_node: HashMap<String, BTreeSet<Key>>,
    models: HashMap<Key, Obj>,
    synced: HashSet<&'static str>,
}

/// The device view, read side. Cheap to clone.
#[derive(Clone, Default)]
pub struct DeviceView(Arc<RwLock<Inner>>);

impl DeviceView {
    /// Whether both watches have listed once (before that, nothing may be deleted because it
    /// is missing from the view).
    pub fn is_synced(&self) -> bool {
        let g = self.0.read();
        WATCHES.iter().all(|w| g.synced.contains(w))
    }

    /// Everything of devices `node` should have: the models its devices use, then the devices
    /// (a model goes before the devices of it, as upstream sends them).
    pub fn desired(&self, node: &str) -> Vec<Obj> {
        let g = self.0.read();
        let mut models: BTreeSet<Key> = BTreeSet::new();
        let mut devices = Vec::new();
        for key in g.by_node.get(node).into_iter().flatten() {
            if let Some(d) = g.devices.get(key) {
                if !d.model.is_empty() {
                    let model = (d.obj.namespace.clone(), d.model.clone());
                    // Never a device before its model: one whose model is not known yet waits.
                    if !g.models.contains_key(&model) {
                        continue;
                    }
                    models.insert(model);
                }
                devices.push(d.obj.clone());
            }
        }
        let mut out: Vec<Obj> = models.iter().filter_map(|k| g.models.get(k).cloned()).collect();
        out.extend(devices);
        out
    }

    /// The device `namespace/name`, if known.
    pub fn device(&self, namespace: &str, name: &str) -> Option<DeviceEntry> {
        self.0.read().devices.get(&(namespace.to_owned(), name.to_owned())).cloned()
    }

    /// The model `namespace/name`, if known.
    pub fn model(&self, namespace: &str, name: &str) -> Option<Obj> {
        self.0.read().models.get(&(namespace.to_owned(), name.to_owned())).cloned()
    }

    /// Whether a device bound to `node`, other than `except`, uses model `namespace/model`.
    pub fn node_uses_model(&self, node: &str, namespace: &str, model: &str, except: &Key) -> bool {
        let g = self.0.read();
        g.by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter(|k| *k != except)
            .any(|k| g.devices.get(k).is_some_and(|d| d.obj.namespace == namespace && d.model == model))
    }

    /// The nodes with a device using model `namespace/model`.
    pub fn nodes_using_model(&self, namespace: &str, model: &str) -> Vec<String> {
        let g = self.0.read();
        let mut nodes: Vec<String> = g
            .devices
            .values()
            .filter(|d| !d.node.is_empty() && d.obj.namespace == namespace && d.model == model)
            .map(|d| d.node.clone())
            .collect();
        nodes.sort();
        nodes.dedup();
        nodes
    }

    /// Keys of every device known (to find what vanished during a re-list).
    pub fn device_keys(&self) -> Vec<Key> {
        self.0.read().devices.keys().cloned().collect()
    }

    /// Keys of every model known.
    pub fn model_keys(&self) -> Vec<Key> {
        self.0.read().models.keys().cloned().collect()
    }
}

/// The device view's only writer, owned by DeviceController's store task. Not `Clone`.
pub struct DeviceViewWriter(DeviceView);

impl DeviceViewWriter {
    /// The writer of `view`. Crate-private: DeviceController makes one per run of its store
    /// task, after the previous run's task ended.
    pub(crate) fn new(view: DeviceView) -> Self {
        Self(view)
    }

    /// The read side.
    pub fn view(&self) -> &DeviceView {
        &self.0
    }

    /// Notes that watch `what` (one of [`WATCHES`]) has listed everything once.
    pub fn mark_synced(&mut self, what: &'static str) {
        self.0.0.write().synced.insert(what);
    }

    /// Records a model.
    pub fn apply_model(&mut self, obj: Obj) {
        let key = (obj.namespace.clone(), obj.name.clone());
        self.0.0.write().models.insert(key, obj);
    }

    /// Forgets a model.
    pub fn remove_model(&mut self, namespace: &str, name: &str) -> Option<Obj> {
        self.0.0.write().models.remove(&(namespace.to_owned(), name.to_owned()))
    }

    /// Records a device; returns what was recorded before.
    pub fn apply_device(&mut self, d: DeviceEntry) -> Option<DeviceEntry> {
        let key = (d.obj.namespace.clone(), d.obj.name.clone());
        let mut g = self.0.0.write();
        let previous = g.unlink(&key);
        if !d.node.is_empty() {
            g.by_node.entry(d.node.clone()).or_default().insert(key.clone());
        }
        g.devices.insert(key, d);
        previous
    }

    /// Forgets a device; returns it.
    pub fn remove_device(&mut self, namespace: &str, name: &str) -> Option<DeviceEntry> {
        self.0.0.write().unlink(&(namespace.to_owned(), name.to_owned()))
    }
}

impl Inner {
    fn unlink(&mut self, key: &Key) -> Option<DeviceEntry> {
        let d = self.devices.remove(key)?;
        if let Some(set) = self.by_node.get_mut(&d.node) {
            set.remove(key);
            if set.is_empty() {
                self.by_node.remove(&d.node);
            }
        }
        Some(d)
    }
}

// === membership ===

/// A device in a membership update (upstream `types.Device`, of which the cloud fills `id`,
/// `name` and `description`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberDevice {
    /// `{namespace}/{name}`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// The device's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The Device's label `description`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// A membership update (upstream `types.MembershipUpdate`): both lists are always written,
/// `null` when empty, as Go writes a nil slice.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipUpdate {
    /// A fresh UUID.
    pub event_id: String,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// Devices now bound to the node.
    pub added_devices: Option<Vec<MemberDevice>>,
    /// Devices no longer bound to it.
    pub removed_devices: Option<Vec<MemberDevice>>,
}

/// The membership update for `node` (source `devicecontroller`, group `twin`, resource
/// `node/{node}/membership`, operation `update`). No ACK is asked for it (upstream's
/// `noAckRequired`): it goes out with the Device message it accompanies, which is acknowledged
/// and re-sent until it is.
pub fn membership_message(node: &str, added: Vec<MemberDevice>, removed: Vec<MemberDevice>) -> Message {
    let content = MembershipUpdate {
        event_id: uuid::Uuid::new_v4().to_string(),
        timestamp: kubeedge_model::now_millis(),
        added_devices: (!added.is_empty()).then_some(added),
        removed_devices: (!removed.is_empty()).then_some(removed),
    };
    Message::build(
        module::DEVICECONTROLLER,
        group::TWIN,
        format!("{}/{}", CloudResource::node_notice(node), resource_type::MEMBERSHIP),
        Operation::Update,
        Content::json(&content).unwrap_or_else(|_| Content::null()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(ty: &'static str, name: &str, rv: u64) -> Obj {
        Obj {
            uid: format!("uid-{name}"),
            rv,
            since: rv,
            namespace: "default".into(),
            name: name.into(),
            ty,
            content: Content::null(),
        }
    }

    fn device(name: &str, node: &str, model: &str) -> DeviceEntry {
        DeviceEntry {
            obj: obj(resource_type::DEVICE, name, 1),
            node: node.into(),
            model: model.into(),
            description: String::new(),
            properties: vec![],
            spec_hash: 0,
        }
    }

    #[test]
    fn a_node_gets_the_models_of_its_devices_before_the_devices() {
        let mut w = DeviceViewWriter::new(DeviceView::default());
        w.apply_model(obj(resource_type::DEVICE_MODEL, "thermo", 1));
        w.apply_model(obj(resource_type::DEVICE_MODEL, "unused", 1));
        w.apply_device(device("t1", "e1", "thermo"));
        w.apply_device(device("t2", "e1", "thermo"));
        w.apply_device(device("t3", "e2", "thermo"));
        let names: Vec<String> = w.view().desired("e1").into_iter().map(|o| o.name).collect();
        assert_eq!(names, ["thermo", "t1", "t2"]);
        let key = ("default".to_owned(), "t1".to_owned());
        assert!(w.view().node_uses_model("e1", "default", "thermo", &key));
        assert!(!w.view().node_uses_model("e2", "default", "thermo", &("default".into(), "t3".into())));
        assert_eq!(w.view().nodes_using_model("default", "thermo"), ["e1", "e2"]);
        // Moving a device moves it between nodes.
        let before = w.apply_device(device("t2", "e2", "thermo")).unwrap();
        assert_eq!(before.node, "e1");
        assert_eq!(w.view().desired("e2").len(), 3);
        assert_eq!(w.remove_device("default", "t1").unwrap().node, "e1");
        assert!(w.view().desired("e1").is_empty());
    }

    #[test]
    fn membership_lists_are_null_when_empty_as_go_writes_them() {
        let m = membership_message(
            "e1",
            vec![MemberDevice { id: "ns/d".into(), name: "d".into(), ..Default::default() }],
            vec![],
        );
        assert_eq!(m.router.resource, "node/e1/membership");
        assert_eq!((m.router.group.as_str(), m.router.operation.as_str()), ("twin", "update"));
        let v: serde_json::Value = m.content.decode().unwrap();
        assert_eq!(v["added_devices"], serde_json::json!([{"id": "ns/d", "name": "d"}]));
        assert!(v["removed_devices"].is_null() && v.get("removed_devices").is_some());
        assert!(v["event_id"].as_str().is_some_and(|s| !s.is_empty()) && v["timestamp"].as_i64().is_some());
    }
}
