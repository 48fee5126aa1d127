//! Devices: state updates and gets, membership from the cloud and for mappers, and the Device
//! objects MetaManager forwards.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kubeedge_apis::devices::v1beta1 as crd;
use kubeedge_model::constants::{operation, resource_type};
use kubeedge_model::{Message, ResourcePath, now_millis};
use tracing::{debug, info, warn};

use super::dmi::Change;
use super::rules::{desired_of, validate_value};
use super::store::{self, AttrRow, DeviceState};
use super::types::*;
use super::{DEVICE_PREFIX, DeviceTwinModule, NODE_PREFIX, json, rfc3339_now, uuid};

impl DeviceTwinModule {
    /// `state/update` (upstream `dealDeviceStateUpdate`).
    pub(super) fn state_update(&mut self, id: &str, payload: &[u8]) {
        let Ok(req) = serde_json::from_slice::<DeviceUpdate>(payload) else {
            warn!(device = id, "Dropped an undecodable device state update.");
            return;
        };
        let Some(mut dev) = self.devices.get(id).cloned() else {
            warn!(device = id, "Dropped a state update of an unknown device.");
            return;
        };
        let state = req.state.to_lowercase();
        if !["online", "offline", "ok", "unknown", "unhealthy"].contains(&state.as_str()) {
            warn!(device = id, state = %req.state, "Dropped a state update with an unknown state.");
            return;
        }
        let last_online = if state == "online" || state == "ok" { rfc3339_now() } else { String::new() };
        dev.state = req.state.clone();
        dev.last_online = last_online.clone();
        let cloud = DeviceCloudMsg {
            name: dev.name.clone(),
            state: dev.state.clone(),
            last_online_time: last_online.clone(),
            ..DeviceCloudMsg::default()
        };
        let result = DeviceMsg { event_id: uuid(), timestamp: now_millis(), device: cloud.clone() };
        let (op, key, report) = self.outbox.state(id, &cloud);
        let ops = vec![store::update_state(id, &dev.state, &last_online), op];
        self.devices.insert(id.to_owned(), dev);
        let pubs = vec![(format!("{DEVICE_PREFIX}{id}/state/update/result"), json(&result))];
        self.commit(ops, vec![(key, report)], pubs);
    }

    /// `state/get`: the device's state on `state/get/result`.
    pub(super) fn state_get(&mut self, id: &str, payload: &[u8]) {
        let topic = format!("{DEVICE_PREFIX}{id}/state/get/result");
        let event_id = serde_json::from_slice::<BaseMessage>(payload).map(|b| b.event_id).unwrap_or_default();
        let Some(dev) = self.devices.get(id) else {
            let reason = format!("Device {id} not found while getting state");
            return self.error_result(topic, &event_id, 404, &reason);
        };
        let device = DeviceCloudMsg {
            name: dev.name.clone(),
            state: dev.state.clone(),
            last_online_time: dev.last_online.clone(),
            ..DeviceCloudMsg::default()
        };
        self.emit(topic, json(&DeviceMsg { event_id, timestamp: now_millis(), device }));
    }

    /// `membership/get` (upstream `dealMembershipGetInner`).
    pub(super) fn membership_get(&mut self, payload: &[u8]) {
        let topic = format!("{NODE_PREFIX}{}/membership/get/result", self.node);
        let req: BaseMessage = match serde_json::from_slice(payload) {
            Ok(r) => r,
            Err(e) => {
                let reason = format!("Unmarshal get membership info failed, err: {e}");
                return self.error_result(topic, "", 400, &reason);
            }
        };
        let mut ids: Vec<&String> = self.devices.keys().collect();
        ids.sort();
        let devices = ids.into_iter().map(|id| self.devices[id].to_device(id)).collect();
        let r = MembershipGetResult { event_id: req.event_id, timestamp: now_millis(), devices };
        self.emit(topic, json(&r));
    }

    /// A membership update from the cloud (upstream `dealMembershipUpdate`).
    pub(super) fn membership_update(&mut self, payload: &[u8]) {
        let Ok(update) = serde_json::from_slice::<MembershipUpdate>(payload) else {
            warn!("Dropped an undecodable membership update.");
            return;
        };
        for d in update.added_devices.unwrap_or_default() {
            self.add_device(d);
        }
        for d in update.removed_devices.unwrap_or_default() {
            self.remove_device(d);
        }
    }

    pub(super) fn add_device(&mut self, d: Device) {
        if d.id.is_empty() {
            return;
        }
        let id = d.id.clone();
        let mut ops = Vec::new();
        let mut pubs = Vec::new();
        let existed = self.devices.contains_key(&id);
        let mut state = self.devices.get(&id).cloned().unwrap_or_default();
        if !existed {
            state = DeviceState {
                name: d.name.clone(),
                description: d.description.clone(),
                state: d.state.clone(),
                ..DeviceState::default()
            };
            ops.push(store::insert_device(&id, &state));
            let mut shown = d.clone();
            for t in shown.twin.values_mut() {
                if let Some(m) = t {
                    if m.is_deleted() {
                        *t = None;
                    } else {
                        *m = m.without_versions();
                    }
                }
            }
            let update = MembershipUpdate {
                event_id: uuid(),
                timestamp: now_millis(),
                added_devices: Some(vec![shown]),
                removed_devices: None,
            };
            pubs.push((format!("{NODE_PREFIX}{}/membership/updated", self.node), json(&update)));
        }
        for (k, a) in &d.attributes {
            let row = attr_row(a);
            ops.extend(store::put_attr(&id, k, &row));
            state.attrs.insert(k.clone(), row);
        }
        self.devices.insert(id.clone(), state);
        self.commit(ops, Vec::new(), pubs);
        if !existed {
            info!(device = %id, "Device added.");
        }
        let desired = desired_of(d.twin);
        if !desired.is_empty() {
            self.apply_desired(&id, "", &desired);
        }
    }

    pub(super) fn remove_device(&mut self, d: Device) {
        if self.devices.remove(&d.id).is_none() {
            debug!(device = %d.id, "Remove of an unknown device.");
            return;
        }
        let mut ops = store::delete_device(&d.id);
        ops.push(store::drop_reports(&d.id));
        self.outbox.rows.retain(|_, r| r.device != d.id);
        let update = MembershipUpdate {
            event_id: uuid(),
            timestamp: now_millis(),
            added_devices: None,
            removed_devices: Some(vec![d.clone()]),
        };
        let pubs = vec![(format!("{NODE_PREFIX}{}/membership/updated", self.node), json(&update))];
        self.commit(ops, Vec::new(), pubs);
        info!(device = %d.id, "Device removed.");
    }

    /// Attributes from the cloud (op `updated` on `device/{id}`; upstream
    /// `dealDeviceAttrUpdate`): new ones added, changed ones updated (`optional` only from
    /// true to false), `null` ones removed when optional. What changed is published on
    /// `$hw/events/device/{id}/updated`, each changed attribute with only its changed fields.
    pub(super) fn attr_update(&mut self, id: &str, payload: &[u8]) {
        let Ok(req) = serde_json::from_slice::<DeviceUpdate>(payload) else {
            warn!(device = id, "Dropped an undecodable attribute update.");
            return;
        };
        let Some(mut dev) = self.devices.get(id).cloned() else {
            warn!(device = id, "Dropped an attribute update of an unknown device.");
            return;
        };
        let mut ops = Vec::new();
        let mut result = BTreeMap::new();
        for (k, a) in req.attributes.unwrap_or_default() {
            match (dev.attrs.get(&k).cloned(), a) {
                (Some(old), None) => {
                    if old.optional {
                        ops.push(store::delete_attr(id, &k));
                        dev.attrs.remove(&k);
                        result.insert(k, None);
                    }
                }
                (Some(mut row), Some(a)) => {
                    let mut shown = MsgAttr::default();
                    let mut changed = false;
                    if a.value != row.value {
                        row.value = a.value.clone();
                        shown.value = a.value;
                        changed = true;
                    }
                    if let Some(m) = a.metadata
                        && m.ty != row.attr_type
                    {
                        row.attr_type = m.ty.clone();
                        shown.metadata = Some(m);
                        changed = true;
                    }
                    if let Some(o) = a.optional
                        && o != row.optional
                        && row.optional
                    {
                        row.optional = o;
                        shown.optional = Some(o);
                        changed = true;
                    }
                    if changed {
                        ops.extend(store::put_attr(id, &k, &row));
                        dev.attrs.insert(k.clone(), row);
                        result.insert(k, Some(shown));
                    }
                }
                (None, Some(a)) => {
                    let row = attr_row(&a);
                    ops.extend(store::put_attr(id, &k, &row));
                    dev.attrs.insert(k.clone(), row);
                    result.insert(k, Some(a));
                }
                (None, None) => {}
            }
        }
        if ops.is_empty() {
            return;
        }
        let event_id = if req.event_id.is_empty() { uuid() } else { req.event_id };
        let update = DeviceUpdate { event_id, timestamp: now_millis(), state: String::new(), attributes: Some(result) };
        self.devices.insert(id.to_owned(), dev);
        self.commit(ops, Vec::new(), vec![(format!("{DEVICE_PREFIX}{id}/updated"), json(&update))]);
    }

    /// A device or device model object stored by MetaManager: devices to the twin, both to
    /// the mappers over DMI.
    pub(super) fn object(&mut self, msg: &Message) {
        let Ok(path) = ResourcePath::parse(&msg.router.resource) else { return };
        let Some(name) = path.name.clone() else { return };
        let change = match msg.router.operation.as_str() {
            operation::INSERT => Change::Insert,
            operation::DELETE => Change::Delete,
            _ => Change::Update,
        };
        let meta =
            ObjectMeta { name: Some(name.clone()), namespace: Some(path.namespace.clone()), ..Default::default() };
        let id = format!("{}/{name}", path.namespace);
        if path.resource_type == resource_type::DEVICE_MODEL {
            let model = match msg.content.decode::<crd::DeviceModel>() {
                Ok(m) => m,
                Err(_) if change == Change::Delete => crd::DeviceModel { metadata: meta, ..Default::default() },
                Err(e) => return warn!(model = %id, error = %e, "Dropped an undecodable DeviceModel."),
            };
            self.dmi.model(change, model);
            return;
        }
        if path.resource_type != resource_type::DEVICE {
            return;
        }
        let obj = match msg.content.decode::<crd::Device>() {
            Ok(o) => o,
            Err(_) if change == Change::Delete => crd::Device { metadata: meta, ..Default::default() },
            Err(e) => return warn!(device = %id, error = %e, "Dropped an undecodable Device."),
        };
        if change == Change::Delete {
            self.dmi.device(Change::Delete, obj);
            self.remove_device(Device { id, name, ..Device::default() });
            return;
        }
        let desired: BTreeMap<String, (String, String)> = obj
            .spec
            .properties
            .iter()
            .filter_map(|p| {
                let d = &p.desired;
                if p.name.is_empty() || d.value.is_empty() {
                    return None;
                }
                let ty = d.metadata.get("type").map(|t| t.to_lowercase()).unwrap_or_default();
                let ty = if validate_value(&ty, &d.value).is_ok() { ty } else { "string".to_owned() };
                Some((p.name.clone(), (d.value.clone(), ty)))
            })
            .collect();
        if !self.devices.contains_key(&id) {
            let description =
                obj.metadata.labels.as_ref().and_then(|l| l.get("description")).cloned().unwrap_or_default();
            self.add_device(Device { id: id.clone(), name, description, ..Device::default() });
        }
        // A property gone from the Device takes the desired value the cloud gave its twin with
        // it (twins only a mapper ever wrote are the mapper's).
        let listed: BTreeSet<&str> = obj.spec.properties.iter().map(|p| p.name.as_str()).collect();
        let gone: Vec<String> = self.devices[&id]
            .twins
            .iter()
            .filter(|(k, t)| {
                !t.is_deleted() && t.expected_version.is_some_and(|v| v.cloud > 0) && !listed.contains(k.as_str())
            })
            .map(|(k, _)| k.clone())
            .collect();
        self.remove_desired(&id, &gone, true);
        // A property still listed whose desired value was cleared takes it back too.
        let cleared: Vec<String> = obj
            .spec
            .properties
            .iter()
            .filter(|p| p.desired.value.is_empty())
            .filter(|p| {
                self.devices[&id].twins.get(&p.name).is_some_and(|t| {
                    !t.is_deleted() && t.expected.is_some() && t.expected_version.is_some_and(|v| v.cloud > 0)
                })
            })
            .map(|p| p.name.clone())
            .collect();
        self.remove_desired(&id, &cleared, false);
        self.apply_desired(&id, "", &desired);
        self.dmi.device(change, obj);
    }
}

/// A new attribute's row (upstream `MsgAttrToDeviceAttr`: optional unless said, `string`
/// unless typed).
fn attr_row(a: &MsgAttr) -> AttrRow {
    AttrRow {
        description: String::new(),
        value: a.value.clone(),
        optional: a.optional.unwrap_or(true),
        attr_type: a.metadata.as_ref().map_or_else(|| "string".to_owned(), |m| m.ty.clone()),
        metadata: String::new(),
    }
}
