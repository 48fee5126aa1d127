//! DeviceTwin (`twin`/`twin`): device twins kept in upstream's `device`, `device_attr` and
//! `device_twin` tables, synced with mappers over MQTT (through EventBus) and with the cloud,
//! as upstream's `edge/pkg/devicetwin`.
//!
//! - **From MQTT** (EventBus hands over `{source: bus, resource: base64url(topic)}`):
//!   `twin/update` (validated, versioned, stored; result on `twin/update/result`, changes on
//!   `twin/update/document`, differences on `twin/update/delta`, the change reported to the
//!   cloud), `twin/get`, `twin/cloud_updated`, `state/update`, `membership/get`.
//! - **From the cloud**: membership updates (group `twin`, resource `membership`), device
//!   objects through MetaManager (`{ns}/device/{name}`: the device is added if missing and the
//!   desired values of `spec.properties[].desired.value` become the twins' expected values →
//!   document and delta on MQTT; a delete removes the device), and confirmations of reports
//!   (any message with a `parent_msg_id`).
//! - **To the cloud**: `device/{ns}/{name}/twin/edge_updated` and `…/state/update` (source
//!   `twin`, group `resource`, op `update`), kept in `device_report_outbox` until the cloud
//!   answers (parent id = the report's id), resent every [`RESEND_AFTER`] and at once when the
//!   link comes back, across edgecore restarts too. Reports are coalesced per device property
//!   (and per device state): the latest value wins, so the backlog is bounded by the number of
//!   twins, not by the update rate. One message per device and kind is in flight at a time:
//!   values arriving meanwhile wait in the outbox and go, merged, once it is confirmed (or
//!   after [`RESEND_AFTER`]), so EdgeHub's `messageQPS` never queues stale values.
//!
//! One task owns the devices in memory and is the only writer of the tables; every change is
//! committed (with its report, in one transaction) before anything is published.

pub mod store;
pub mod types;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use base64::Engine as _;
use kubeedge_beehive::{BoxFuture, Bus, Module, ModuleContext, ModuleError};
use kubeedge_metastore::{Op, Store};
use kubeedge_model::constants::{group, module, operation};
use kubeedge_model::protocol::edge;
use kubeedge_model::{Content, Message, ResourcePath, now_millis};
use serde::Deserialize;
use tracing::{debug, info, warn};

use store::{AttrRow, DeviceState, TwinRow};
use types::*;

/// The `deleted` type of a removed twin.
pub const TYPE_DELETED: &str = "deleted";
/// How long a report waits for the cloud's confirmation before it is sent again.
pub const RESEND_AFTER: Duration = Duration::from_secs(15);
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Reports sent per flush at most (the rest wait for the next one).
const FLUSH_MAX: usize = 512;

const DEVICE_PREFIX: &str = "$hw/events/device/";
const NODE_PREFIX: &str = "$hw/events/node/";

/// Upstream's error texts (`dttype/types.go`).
pub mod reason {
    /// Undecodable twin update.
    pub const UNMARSHAL: &str = "Unmarshal update request body failed, please check the request";
    /// No `twin` key.
    pub const NO_TWIN: &str = "Update twin error, key:twin does not exist";
    /// A bad key.
    pub const KEY: &str = "The key of twin must only include upper or lowercase letters, number, english, and special letter - _ . , : / @ # and the length of key should be less than 128 bytes";
    /// A bad value.
    pub const VALUE: &str = "The value of twin must only include upper or lowercase letters, number, english, and special letter - _ . , : / @ # and the length of value should be less than 512 bytes";
    /// Unknown device.
    pub const NO_DEVICE: &str = "update rejected due to the device is not existed";
}

/// Upstream's twin key rule `^[a-zA-Z0-9-_.,:/@#]{1,128}$` (values: up to 512).
pub fn valid_token(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b',' | b':' | b'/' | b'@' | b'#'))
}

/// Upstream's `ValidateValue`: the value must parse as its type.
pub fn validate_value(ty: &str, value: &str) -> Result<(), &'static str> {
    match ty {
        "" | "string" | TYPE_DELETED => Ok(()),
        "int" | "integer" => value.parse::<i64>().map(drop).map_err(|_| "the value is not int or integer"),
        "float" => value.parse::<f64>().map(drop).map_err(|_| "the value is not float"),
        "boolean" => {
            if value == "true" || value == "false" {
                Ok(())
            } else {
                Err("the bool value must be true or false")
            }
        }
        _ => Err("the value type is not allowed"),
    }
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// A pending report in the outbox.
#[derive(Debug, Clone)]
struct Report {
    device: String,
    /// `twin` or `state`.
    kind: &'static str,
    /// Twin property name (empty for state).
    name: String,
    value: String,
    seq: i64,
    sent: Option<Instant>,
}

/// The reports the cloud has not confirmed.
#[derive(Default)]
struct Outbox {
    rows: BTreeMap<String, Report>,
    in_flight: HashMap<String, Vec<(String, i64)>>,
    /// The unconfirmed message of each (device, kind) and when it went: one in flight per
    /// device and kind, so newer values wait here, coalesced, instead of queueing behind
    /// EdgeHub's `messageQPS` as stale messages.
    busy: HashMap<(String, &'static str), (String, Instant)>,
    seq: i64,
    connected: bool,
}

impl Outbox {
    fn twin_key(device: &str, name: &str) -> String {
        format!("{device}\ttwin\t{name}")
    }

    fn state_key(device: &str) -> String {
        format!("{device}\tstate")
    }

    /// The op storing a twin report (merged with a pending one), and the row to hold after
    /// the commit.
    fn twin(&mut self, device: &str, name: &str, t: &MsgTwin) -> (Op, String, Report) {
        let key = Self::twin_key(device, name);
        let merged = match self.rows.get(&key).and_then(|r| serde_json::from_str::<MsgTwin>(&r.value).ok()) {
            Some(old) => old.merged_with(t),
            None => t.clone(),
        };
        self.seq += 1;
        let value = serde_json::to_string(&merged).unwrap_or_default();
        let op = store::put_report(&key, device, "twin", name, &value, self.seq);
        let r =
            Report { device: device.to_owned(), kind: "twin", name: name.to_owned(), value, seq: self.seq, sent: None };
        (op, key, r)
    }

    fn state(&mut self, device: &str, msg: &DeviceCloudMsg) -> (Op, String, Report) {
        let key = Self::state_key(device);
        self.seq += 1;
        let value = serde_json::to_string(msg).unwrap_or_default();
        let op = store::put_report(&key, device, "state", "", &value, self.seq);
        let r =
            Report { device: device.to_owned(), kind: "state", name: String::new(), value, seq: self.seq, sent: None };
        (op, key, r)
    }
}

/// The device JSON fields DeviceTwin reads (v1beta1 `Device`).
#[derive(Deserialize, Default)]
struct DeviceObject {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: DeviceSpec,
}

#[derive(Deserialize, Default)]
struct ObjectMeta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
struct DeviceSpec {
    #[serde(default)]
    properties: Vec<DeviceProperty>,
}

#[derive(Deserialize, Default)]
struct DeviceProperty {
    #[serde(default)]
    name: String,
    #[serde(default)]
    desired: Option<Desired>,
}

#[derive(Deserialize, Default)]
struct Desired {
    #[serde(default)]
    value: String,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

/// What to publish after a commit.
type Publications = Vec<(String, Vec<u8>)>;

/// DeviceTwin as a bus module.
pub struct DeviceTwinModule {
    store: Store,
    node: String,
    devices: HashMap<String, DeviceState>,
    outbox: Outbox,
}

impl DeviceTwinModule {
    /// A module for `node` over `store` (opened with the DeviceTwin tables).
    pub fn new(store: Store, node: String) -> Self {
        Self { store, node, devices: HashMap::new(), outbox: Outbox::default() }
    }

    async fn load(&mut self) -> Result<(), ModuleError> {
        self.devices = store::load(&self.store).await?;
        let reports = store::load_reports(&self.store).await?;
        let n = reports.len();
        self.outbox.rows.clear();
        for (key, device, kind, name, value, seq) in reports {
            let kind = if kind == "state" { "state" } else { "twin" };
            self.outbox.seq = self.outbox.seq.max(seq);
            self.outbox.rows.insert(key, Report { device, kind, name, value, seq, sent: None });
        }
        info!(devices = self.devices.len(), unconfirmed_reports = n, "DeviceTwin loaded its devices.");
        Ok(())
    }

    /// Commits `ops`, then holds `reports` and publishes `pubs`. On failure nothing is
    /// published and the devices are read back from the database.
    async fn commit(&mut self, bus: &Bus, ops: Vec<Op>, reports: Vec<(String, Report)>, pubs: Publications) -> bool {
        if !ops.is_empty()
            && let Err(e) = self.store.apply(ops).await
        {
            warn!(error = %e, "Writing the device tables failed.");
            if let Ok(d) = store::load(&self.store).await {
                self.devices = d;
            }
            return false;
        }
        for (k, r) in reports {
            self.outbox.rows.insert(k, r);
        }
        for (topic, payload) in pubs {
            publish(bus, topic, payload).await;
        }
        true
    }

    async fn handle(&mut self, bus: &Bus, msg: Message) {
        if let Some(up) = edge::connection_state(&msg) {
            self.outbox.connected = up;
            if up {
                // Everything unconfirmed goes again now.
                for r in self.outbox.rows.values_mut() {
                    r.sent = None;
                }
                self.outbox.in_flight.clear();
                self.outbox.busy.clear();
            }
            return;
        }
        if let Some(parent) = msg.parent_id() {
            self.confirm(parent).await;
            return;
        }
        match msg.router.source.as_str() {
            "bus" => {
                let Ok(topic) = base64::engine::general_purpose::URL_SAFE.decode(msg.router.resource.as_bytes()) else {
                    debug!(resource = %msg.router.resource, "A bus message whose resource is not a base64 topic; dropped.");
                    return;
                };
                let topic = String::from_utf8_lossy(&topic).into_owned();
                let payload = msg.content.data().into_owned();
                self.mqtt(bus, &topic, &payload).await;
            }
            module::METAMANAGER | "meta" => self.object(bus, &msg).await,
            _ => {
                let res = msg.router.resource.as_str();
                if res.contains("membership/detail") {
                    debug!("Ignored a membership detail (the v1beta1 cloud does not send one).");
                } else if res.contains(kubeedge_model::constants::resource_type::MEMBERSHIP) {
                    self.membership_update(bus, &msg.content.data()).await;
                } else if res.contains("twin/cloud_updated") {
                    if let Some(id) = res.strip_prefix("device/").and_then(|r| r.strip_suffix("/twin/cloud_updated")) {
                        let id = id.to_owned();
                        self.cloud_sync(bus, &id, &msg.content.data()).await;
                    }
                } else {
                    debug!(source = %msg.router.source, resource = res, "DeviceTwin ignored a message.");
                }
            }
        }
    }

    /// A message from MQTT, classified by topic as upstream's `classifyMsg`.
    async fn mqtt(&mut self, bus: &Bus, topic: &str, payload: &[u8]) {
        if let Some(rest) = topic.strip_prefix(DEVICE_PREFIX) {
            let mut parts = rest.splitn(3, '/');
            let (Some(ns), Some(name), Some(action)) = (parts.next(), parts.next(), parts.next()) else {
                debug!(topic, "A device topic without an action; dropped.");
                return;
            };
            let id = format!("{ns}/{name}");
            match action {
                "twin/update" => self.twin_update(bus, &id, payload).await,
                "twin/get" => self.twin_get(bus, &id, payload).await,
                "twin/cloud_updated" => self.cloud_sync(bus, &id, payload).await,
                "state/update" => self.state_update(bus, &id, payload).await,
                "state/get" => self.state_get(bus, &id, payload).await,
                _ => debug!(topic, "No twin action for this topic."),
            }
        } else if let Some(rest) = topic.strip_prefix(NODE_PREFIX) {
            if rest.ends_with("/membership/get") {
                self.membership_get(bus, payload).await;
            } else {
                debug!(topic, "No twin action for this node topic.");
            }
        }
    }

    async fn error_result(&self, bus: &Bus, topic: String, event_id: &str, code: i32, reason: &str) {
        let r = ErrorResult { event_id: event_id.to_owned(), timestamp: now_millis(), code, reason: reason.to_owned() };
        publish(bus, topic, json(&r)).await;
    }

    /// `twin/update` from a mapper or app (upstream `dealTwinUpdate`, REST deal type).
    async fn twin_update(&mut self, bus: &Bus, id: &str, payload: &[u8]) {
        let topic = format!("{DEVICE_PREFIX}{id}/twin/update/result");
        let req: DeviceTwinUpdate = match serde_json::from_slice(payload) {
            Ok(r) => r,
            Err(_) => return self.error_result(bus, topic, "", 400, reason::UNMARSHAL).await,
        };
        let Some(twins) = req.twin else {
            return self.error_result(bus, topic, "", 400, reason::NO_TWIN).await;
        };
        for (k, v) in &twins {
            if !valid_token(k, 128) {
                return self.error_result(bus, topic, "", 400, reason::KEY).await;
            }
            let Some(v) = v else { continue };
            for tv in [&v.expected, &v.actual].into_iter().flatten() {
                if let Some(s) = tv.value.as_deref().filter(|s| !s.is_empty())
                    && !valid_token(s, 512)
                {
                    return self.error_result(bus, topic, "", 400, reason::VALUE).await;
                }
            }
        }
        let Some(device) = self.devices.get(id).cloned() else {
            return self.error_result(bus, topic, &req.event_id, 404, reason::NO_DEVICE).await;
        };
        let now = now_millis();
        let mut dev = device.clone();
        let mut ops = Vec::new();
        let mut result = Twins::new();
        let mut sync = BTreeMap::new();
        let mut docs = BTreeMap::new();
        for (key, msg_twin) in &twins {
            let outcome = match (dev.twins.get(key).cloned(), msg_twin) {
                (Some(old), None) => Ok(delete_twin(&old, now)),
                (Some(old), Some(m)) => compare_twin(&old, m, now),
                (None, Some(m)) => add_twin(m, now).map(Change::added),
                (None, None) => Err("the request body is wrong"),
            };
            let change = match outcome {
                Ok(c) => c,
                Err(reason) => return self.error_result(bus, topic, &req.event_id, 400, reason).await,
            };
            let Some(change) = change else { continue };
            let old = dev.twins.get(key);
            ops.push(match old {
                Some(_) => store::update_twin(id, key, &change.row),
                None => store::insert_twin(id, key, &change.row),
            });
            docs.insert(
                key.clone(),
                TwinDoc {
                    last: old.filter(|o| !o.is_deleted()).map(|o| o.to_msg().without_versions()),
                    current: (!change.row.is_deleted()).then(|| change.row.to_msg().without_versions()),
                },
            );
            result.insert(key.clone(), change.result.as_ref().map(MsgTwin::without_versions));
            sync.insert(key.clone(), change.sync.clone());
            dev.twins.insert(key.clone(), change.row);
        }
        let mut reports = Vec::new();
        for (k, t) in &sync {
            let (op, key, r) = self.outbox.twin(id, k, t);
            ops.push(op);
            reports.push((key, r));
        }
        let base = BaseMessage { event_id: req.event_id.clone(), timestamp: now };
        // The result skips deleted twins but keeps `null` ones, as upstream's BuildDeviceTwinResult.
        let shown: Twins = result.into_iter().filter(|(_, v)| !v.as_ref().is_some_and(MsgTwin::is_deleted)).collect();
        let mut pubs = vec![(
            topic.clone(),
            json(&DeviceTwinResult { event_id: base.event_id.clone(), timestamp: now, twin: shown }),
        )];
        if !docs.is_empty() {
            let doc = DeviceTwinDocument { event_id: base.event_id.clone(), timestamp: now, twin: docs };
            pubs.push((format!("{DEVICE_PREFIX}{id}/twin/update/document"), json(&doc)));
        }
        if let Some(delta) = delta_of(&dev) {
            pubs.push((format!("{DEVICE_PREFIX}{id}/twin/update/delta"), json(&delta)));
        }
        self.devices.insert(id.to_owned(), dev);
        if !self.commit(bus, ops, reports, pubs).await {
            self.error_result(bus, topic, &req.event_id, 500, "writing the device twin failed").await;
        }
    }

    /// `twin/get` (upstream `DealGetTwin`).
    async fn twin_get(&mut self, bus: &Bus, id: &str, payload: &[u8]) {
        let topic = format!("{DEVICE_PREFIX}{id}/twin/get/result");
        let req: BaseMessage = match serde_json::from_slice(payload) {
            Ok(r) => r,
            Err(e) => {
                let reason = format!("Unmarshal twin info failed, err: {e}");
                return self.error_result(bus, topic, "", 400, &reason).await;
            }
        };
        let Some(dev) = self.devices.get(id) else {
            let reason = format!("Device {id} not found while getting twin");
            return self.error_result(bus, topic, &req.event_id, 404, &reason).await;
        };
        let twin: Twins = dev
            .twins
            .iter()
            .filter(|(_, t)| !t.is_deleted())
            .map(|(k, t)| (k.clone(), Some(t.to_msg().without_versions())))
            .collect();
        let r = DeviceTwinResult { event_id: req.event_id, timestamp: now_millis(), twin };
        publish(bus, topic, json(&r)).await;
    }

    /// Expected values from the cloud (`twin/cloud_updated`, the membership's twins, a Device's
    /// desired values): the twins' expected values and cloud versions; document and delta on
    /// MQTT. Nothing is reported back.
    async fn apply_desired(
        &mut self,
        bus: &Bus,
        id: &str,
        event_id: &str,
        desired: &BTreeMap<String, (String, String)>,
    ) {
        let Some(mut dev) = self.devices.get(id).cloned() else { return };
        let now = now_millis();
        let mut ops = Vec::new();
        let mut docs = BTreeMap::new();
        for (key, (value, ty)) in desired {
            let old = dev.twins.get(key).cloned();
            if old.as_ref().is_some_and(|o| !o.is_deleted() && o.expected.as_deref() == Some(value.as_str())) {
                continue;
            }
            let mut row = old.clone().unwrap_or_else(|| TwinRow {
                optional: true,
                attr_type: if ty.is_empty() { "string".into() } else { ty.clone() },
                ..TwinRow::default()
            });
            if row.is_deleted() {
                row.attr_type = if ty.is_empty() { "string".into() } else { ty.clone() };
            }
            let mut v = row.expected_version.unwrap_or_default();
            v.cloud += 1;
            row.expected = Some(value.clone());
            row.expected_meta = Some(ValueMetadata { timestamp: now });
            row.expected_version = Some(v);
            ops.push(match &old {
                Some(_) => store::update_twin(id, key, &row),
                None => store::insert_twin(id, key, &row),
            });
            docs.insert(
                key.clone(),
                TwinDoc {
                    last: old.filter(|o| !o.is_deleted()).map(|o| o.to_msg().without_versions()),
                    current: Some(row.to_msg().without_versions()),
                },
            );
            dev.twins.insert(key.clone(), row);
        }
        if ops.is_empty() {
            return;
        }
        let mut pubs = Vec::new();
        let event_id = if event_id.is_empty() { uuid() } else { event_id.to_owned() };
        let doc = DeviceTwinDocument { event_id, timestamp: now, twin: docs };
        pubs.push((format!("{DEVICE_PREFIX}{id}/twin/update/document"), json(&doc)));
        if let Some(delta) = delta_of(&dev) {
            pubs.push((format!("{DEVICE_PREFIX}{id}/twin/update/delta"), json(&delta)));
        }
        self.devices.insert(id.to_owned(), dev);
        self.commit(bus, ops, Vec::new(), pubs).await;
    }

    /// `twin/cloud_updated` (legacy): the expected values of the update.
    async fn cloud_sync(&mut self, bus: &Bus, id: &str, payload: &[u8]) {
        let Ok(req) = serde_json::from_slice::<DeviceTwinUpdate>(payload) else {
            warn!(device = id, "Dropped an undecodable twin sync from the cloud.");
            return;
        };
        let desired = desired_of(req.twin.unwrap_or_default());
        self.apply_desired(bus, id, &req.event_id, &desired).await;
    }

    /// `state/update` (upstream `dealDeviceStateUpdate`).
    async fn state_update(&mut self, bus: &Bus, id: &str, payload: &[u8]) {
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
        self.commit(bus, ops, vec![(key, report)], pubs).await;
    }

    /// `state/get`: the device's state on `state/get/result`.
    async fn state_get(&mut self, bus: &Bus, id: &str, payload: &[u8]) {
        let topic = format!("{DEVICE_PREFIX}{id}/state/get/result");
        let event_id = serde_json::from_slice::<BaseMessage>(payload).map(|b| b.event_id).unwrap_or_default();
        let Some(dev) = self.devices.get(id) else {
            let reason = format!("Device {id} not found while getting state");
            return self.error_result(bus, topic, &event_id, 404, &reason).await;
        };
        let device = DeviceCloudMsg {
            name: dev.name.clone(),
            state: dev.state.clone(),
            last_online_time: dev.last_online.clone(),
            ..DeviceCloudMsg::default()
        };
        publish(bus, topic, json(&DeviceMsg { event_id, timestamp: now_millis(), device })).await;
    }

    /// `membership/get` (upstream `dealMembershipGetInner`).
    async fn membership_get(&mut self, bus: &Bus, payload: &[u8]) {
        let topic = format!("{NODE_PREFIX}{}/membership/get/result", self.node);
        let req: BaseMessage = match serde_json::from_slice(payload) {
            Ok(r) => r,
            Err(e) => {
                let reason = format!("Unmarshal get membership info failed, err: {e}");
                return self.error_result(bus, topic, "", 400, &reason).await;
            }
        };
        let mut ids: Vec<&String> = self.devices.keys().collect();
        ids.sort();
        let devices = ids.into_iter().map(|id| self.devices[id].to_device(id)).collect();
        let r = MembershipGetResult { event_id: req.event_id, timestamp: now_millis(), devices };
        publish(bus, topic, json(&r)).await;
    }

    /// A membership update from the cloud (upstream `dealMembershipUpdate`).
    async fn membership_update(&mut self, bus: &Bus, payload: &[u8]) {
        let Ok(update) = serde_json::from_slice::<MembershipUpdate>(payload) else {
            warn!("Dropped an undecodable membership update.");
            return;
        };
        for d in update.added_devices.unwrap_or_default() {
            self.add_device(bus, d).await;
        }
        for d in update.removed_devices.unwrap_or_default() {
            self.remove_device(bus, d).await;
        }
    }

    async fn add_device(&mut self, bus: &Bus, d: Device) {
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
            let row = AttrRow {
                description: String::new(),
                value: a.value.clone(),
                optional: a.optional.unwrap_or(true),
                attr_type: a.metadata.as_ref().map_or_else(|| "string".to_owned(), |m| m.ty.clone()),
                metadata: String::new(),
            };
            ops.extend(store::put_attr(&id, k, &row));
            state.attrs.insert(k.clone(), row);
        }
        self.devices.insert(id.clone(), state);
        if self.commit(bus, ops, Vec::new(), pubs).await {
            info!(device = %id, "Device added.");
        }
        let desired = desired_of(d.twin);
        if !desired.is_empty() {
            self.apply_desired(bus, &id, "", &desired).await;
        }
    }

    async fn remove_device(&mut self, bus: &Bus, d: Device) {
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
        if self.commit(bus, ops, Vec::new(), pubs).await {
            info!(device = %d.id, "Device removed.");
        }
    }

    /// A device or device model object stored by MetaManager.
    async fn object(&mut self, bus: &Bus, msg: &Message) {
        let Ok(path) = ResourcePath::parse(&msg.router.resource) else { return };
        if path.resource_type != kubeedge_model::constants::resource_type::DEVICE {
            debug!(resource = %msg.router.resource, "Device model noted (used by mappers over DMI).");
            return;
        }
        let Some(name) = path.name.clone() else { return };
        let id = format!("{}/{name}", path.namespace);
        if msg.router.operation == operation::DELETE {
            self.remove_device(bus, Device { id, name, ..Device::default() }).await;
            return;
        }
        let obj: DeviceObject = match msg.content.decode() {
            Ok(o) => o,
            Err(e) => {
                warn!(device = %id, error = %e, "Dropped an undecodable Device.");
                return;
            }
        };
        let desired: BTreeMap<String, (String, String)> = obj
            .spec
            .properties
            .iter()
            .filter_map(|p| {
                let d = p.desired.as_ref()?;
                if p.name.is_empty() || d.value.is_empty() {
                    return None;
                }
                let ty = d.metadata.get("type").map(|t| t.to_lowercase()).unwrap_or_default();
                let ty = if validate_value(&ty, &d.value).is_ok() { ty } else { "string".to_owned() };
                Some((p.name.clone(), (d.value.clone(), ty)))
            })
            .collect();
        if !self.devices.contains_key(&id) {
            let name = if obj.metadata.name.is_empty() { name } else { obj.metadata.name.clone() };
            let description = obj.metadata.labels.get("description").cloned().unwrap_or_default();
            self.add_device(bus, Device { id: id.clone(), name, description, ..Device::default() }).await;
        }
        self.apply_desired(bus, &id, "", &desired).await;
    }

    /// The cloud confirmed a report.
    async fn confirm(&mut self, parent: &str) {
        self.outbox.busy.retain(|_, (id, _)| id != parent);
        let Some(sent) = self.outbox.in_flight.remove(parent) else {
            debug!(parent, "A confirmation of no pending report.");
            return;
        };
        let mut ops = Vec::new();
        for (key, seq) in sent {
            if self.outbox.rows.get(&key).is_some_and(|r| r.seq == seq) {
                self.outbox.rows.remove(&key);
                ops.push(store::confirm_report(&key, seq));
            }
        }
        if !ops.is_empty()
            && let Err(e) = self.store.apply(ops).await
        {
            warn!(error = %e, "Removing confirmed reports failed; they will be sent again.");
        }
    }

    /// Sends the reports not sent yet or unconfirmed for [`RESEND_AFTER`], one message per
    /// device and kind.
    async fn flush(&mut self, bus: &Bus) {
        if !self.outbox.connected || self.outbox.rows.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut groups: BTreeMap<(String, &'static str), Vec<String>> = BTreeMap::new();
        let mut n = 0;
        for (key, r) in &self.outbox.rows {
            if r.sent.is_some_and(|t| now.duration_since(t) < RESEND_AFTER) {
                continue;
            }
            if self
                .outbox
                .busy
                .get(&(r.device.clone(), r.kind))
                .is_some_and(|(_, t)| now.duration_since(*t) < RESEND_AFTER)
            {
                continue;
            }
            groups.entry((r.device.clone(), r.kind)).or_default().push(key.clone());
            n += 1;
            if n >= FLUSH_MAX {
                break;
            }
        }
        for ((device, kind), keys) in groups {
            let (resource, content) = if kind == "state" {
                let Some(r) = self.outbox.rows.get(&keys[0]) else { continue };
                let dev: DeviceCloudMsg = serde_json::from_str(&r.value).unwrap_or_default();
                let payload = DeviceMsg { event_id: uuid(), timestamp: now_millis(), device: dev };
                (format!("device/{device}/state/update"), Content::string(&String::from_utf8_lossy(&json(&payload))))
            } else {
                let twin: Twins = keys
                    .iter()
                    .filter_map(|k| self.outbox.rows.get(k))
                    .map(|r| (r.name.clone(), serde_json::from_str::<MsgTwin>(&r.value).ok()))
                    .collect();
                let payload = DeviceTwinResult { event_id: uuid(), timestamp: now_millis(), twin };
                (
                    format!("device/{device}/twin/edge_updated"),
                    Content::json(&payload).unwrap_or_else(|_| Content::null()),
                )
            };
            let msg = Message::build(module::TWIN, group::RESOURCE, resource, operation::UPDATE, content);
            let id = msg.header.id.clone();
            let mut sent = Vec::new();
            for k in &keys {
                if let Some(r) = self.outbox.rows.get_mut(k) {
                    r.sent = Some(now);
                    sent.push((k.clone(), r.seq));
                }
            }
            if bus.send_to_group(group::HUB, msg).await.is_err() {
                debug!("No EdgeHub to report to.");
                return;
            }
            self.outbox.busy.insert((device, kind), (id.clone(), now));
            self.outbox.in_flight.insert(id, sent);
        }
        // Forget sends whose confirmation can no longer matter (their rows were resent).
        if self.outbox.in_flight.len() > 4 * FLUSH_MAX {
            let live: std::collections::HashSet<i64> = self.outbox.rows.values().map(|r| r.seq).collect();
            self.outbox.in_flight.retain(|_, v| v.iter().any(|(_, s)| live.contains(s)));
        }
    }
}

/// One twin's new row, what the result shows (`None`: `null`, deleted) and what the cloud is
/// told.
struct Change {
    row: TwinRow,
    result: Option<MsgTwin>,
    sync: MsgTwin,
}

impl Change {
    fn added(row: TwinRow) -> Option<Change> {
        let msg = row.to_msg();
        Some(Change { result: Some(msg.clone()), sync: msg, row })
    }
}

fn value_type(old: &TwinRow, m: &MsgTwin) -> String {
    if old.is_deleted() {
        m.metadata.as_ref().map(|t| t.ty.clone()).unwrap_or_else(|| "string".into())
    } else {
        old.attr_type.clone()
    }
}

/// A twin set to `null` (upstream `dealTwinDelete`, REST): only optional twins, marked deleted.
fn delete_twin(old: &TwinRow, now: i64) -> Option<Change> {
    if !old.optional || old.is_deleted() {
        return None;
    }
    let _ = now;
    let mut row = old.clone();
    if let Some(mut v) = row.expected_version {
        v.edge += 1;
        row.expected_version = Some(v);
        row.expected = None;
        row.expected_meta = None;
    }
    if let Some(mut v) = row.actual_version {
        v.edge += 1;
        row.actual_version = Some(v);
        row.actual = None;
        row.actual_meta = None;
    }
    row.attr_type = TYPE_DELETED.into();
    let sync = row.to_msg();
    Some(Change { row, result: None, sync })
}

/// An update of an existing twin (upstream `dealTwinCompare`, REST): every value given is set
/// and its edge version bumped.
fn compare_twin(old: &TwinRow, m: &MsgTwin, now: i64) -> Result<Option<Change>, &'static str> {
    let ty = value_type(old, m);
    let mut row = old.clone();
    let mut sync = MsgTwin::default();
    let mut changed = false;
    if let Some(e) = &m.expected {
        let value = e.value.clone().ok_or("the request body is wrong")?;
        validate_value(&ty, &value)?;
        let mut v = row.expected_version.unwrap_or_default();
        v.edge += 1;
        let meta = ValueMetadata { timestamp: now };
        row.expected = Some(value.clone());
        row.expected_meta = Some(meta);
        row.expected_version = Some(v);
        sync.expected = Some(TwinValue { value: Some(value), metadata: Some(meta) });
        sync.expected_version = Some(v);
        changed = true;
    }
    if let Some(a) = &m.actual {
        let value = a.value.clone().ok_or("the request body is wrong")?;
        validate_value(&ty, &value)?;
        let mut v = row.actual_version.unwrap_or_default();
        v.edge += 1;
        let meta = ValueMetadata { timestamp: now };
        row.actual = Some(value.clone());
        row.actual_meta = Some(meta);
        row.actual_version = Some(v);
        sync.actual = Some(TwinValue { value: Some(value), metadata: Some(meta) });
        sync.actual_version = Some(v);
        changed = true;
    }
    if let Some(o) = m.optional
        && o != row.optional
        && row.optional
    {
        row.optional = o;
        changed = true;
    }
    match &m.metadata {
        Some(meta) if meta.ty != row.attr_type => {
            row.metadata = "{}".into();
            if row.is_deleted() {
                row.attr_type = meta.ty.clone();
            }
            changed = true;
        }
        None if row.is_deleted() => {
            row.attr_type = "string".into();
            changed = true;
        }
        _ => {}
    }
    if !changed {
        return Ok(None);
    }
    sync.optional = Some(row.optional);
    sync.metadata = Some(TypeMetadata { ty: row.attr_type.clone() });
    Ok(Some(Change { result: Some(sync.clone()), sync, row }))
}

/// A new twin (upstream `dealTwinAdd`, REST): versions start at edge 1.
fn add_twin(m: &MsgTwin, now: i64) -> Result<TwinRow, &'static str> {
    let ty = m.metadata.as_ref().map(|t| t.ty.clone()).unwrap_or_else(|| "string".into());
    let mut row = TwinRow {
        optional: m.optional.unwrap_or(true),
        attr_type: ty.clone(),
        metadata: if m.metadata.is_some() { "{}".into() } else { String::new() },
        ..TwinRow::default()
    };
    let first = TwinVersion { cloud: 0, edge: 1 };
    if let Some(e) = &m.expected {
        let value = e.value.clone().ok_or("the request body is wrong")?;
        validate_value(&ty, &value)?;
        row.expected = Some(value);
        row.expected_meta = Some(ValueMetadata { timestamp: now });
        row.expected_version = Some(first);
    }
    if let Some(a) = &m.actual {
        let value = a.value.clone().ok_or("the request body is wrong")?;
        validate_value(&ty, &value)?;
        row.actual = Some(value);
        row.actual_meta = Some(ValueMetadata { timestamp: now });
        row.actual_version = Some(first);
    }
    Ok(row)
}

/// The expected values (and types) of cloud twins.
fn desired_of(twins: Twins) -> BTreeMap<String, (String, String)> {
    twins
        .into_iter()
        .filter_map(|(k, t)| {
            let t = t?;
            let v = t.expected.as_ref()?.value.clone().filter(|v| !v.is_empty())?;
            let ty = t.metadata.map(|m| m.ty).filter(|ty| validate_value(ty, &v).is_ok()).unwrap_or_default();
            Some((k, (v, ty)))
        })
        .collect()
}

/// The device's delta (upstream `BuildDeviceTwinDelta`): every twin with an expected value,
/// published only when one differs from its actual value.
fn delta_of(dev: &DeviceState) -> Option<DeviceTwinDelta> {
    let mut twin = BTreeMap::new();
    let mut delta = BTreeMap::new();
    for (k, t) in &dev.twins {
        if t.is_deleted() {
            continue;
        }
        let Some(expected) = t.expected.as_deref().filter(|e| !e.is_empty()) else { continue };
        if Some(expected) != t.actual.as_deref() {
            delta.insert(k.clone(), expected.to_owned());
        }
        twin.insert(k.clone(), t.to_msg().without_versions());
    }
    (!delta.is_empty()).then(|| DeviceTwinDelta { event_id: uuid(), timestamp: now_millis(), twin, delta })
}

fn rfc3339_now() -> String {
    kubeedge_kube_serve::time::format_system(std::time::SystemTime::now())
}

/// Hands a payload to EventBus for MQTT (upstream `SendToEdge`).
async fn publish(bus: &Bus, topic: String, payload: Vec<u8>) {
    let content = Content::string(&String::from_utf8_lossy(&payload));
    let msg = Message::build(module::TWIN, group::BUS, topic, operation::PUBLISH, content);
    if !bus.has_module(module::EVENTBUS) {
        debug!(resource = %msg.router.resource, "No EventBus to publish on.");
        return;
    }
    let _ = bus.send(module::EVENTBUS, msg).await;
}

impl Module for DeviceTwinModule {
    fn name(&self) -> &'static str {
        module::TWIN
    }

    fn group(&self) -> &'static str {
        group::TWIN
    }

    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(async move {
            self.load().await?;
            let bus = ctx.bus.clone();
            let mut tick = tokio::time::interval(FLUSH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    msg = ctx.recv() => {
                        let Some(msg) = msg else { return Ok(()) };
                        self.handle(&bus, msg).await;
                    }
                    _ = tick.tick() => self.flush(&bus).await,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_follow_upstream_rules() {
        assert!(valid_token("temperature", 128));
        assert!(valid_token("a-b_c.d,e:f/g@h#i", 128));
        assert!(!valid_token("", 128));
        assert!(!valid_token("sp ace", 128));
        assert!(valid_token(&"k".repeat(128), 128));
        assert!(!valid_token(&"k".repeat(129), 128));
        assert!(valid_token(&"v".repeat(512), 512));
        assert!(!valid_token(&"v".repeat(513), 512));
        assert!(validate_value("int", "12").is_ok());
        assert!(validate_value("int", "1.5").is_err());
        assert!(validate_value("float", "1.5").is_ok());
        assert!(validate_value("boolean", "yes").is_err());
        assert!(validate_value("double", "1").is_err());
    }
}
