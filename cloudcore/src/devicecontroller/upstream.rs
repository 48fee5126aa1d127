//! Edges → Kubernetes for devices (upstream `devicecontroller/controller/upstream.go`): twin
//! and state reports become JSON merge patches of the device's DeviceStatus, each answered
//! `"OK"` (group `twin`, resource `node/{node}/twin`, operation `response`, parent = the
//! report's id).
//!
//! - `device/{ns}/{name}/twin/edge_updated` (a DeviceTwinResult): for each twin naming one of
//!   the Device's properties, `status.twins[].reported` (value, metadata `timestamp` and
//!   `type`) from `actual` and `observedDesired` from `expected`. A merge patch replaces a
//!   list, so the patch carries the whole list: the current twins, with these merged in.
//! - `device/{ns}/{name}/state/update`: `status.state` and `status.lastOnlineTime`.
//! - `membership/detail` is ignored, as upstream's v1beta1 DeviceController does.
//!
//! A node may only report devices bound to it (the node authorizer decides, from the device
//! view). Malformed content is logged and dropped, unanswered, as upstream.
//!
//! **Coalescing.** Reports are gathered per device in [`Statuses`]: one pending entry per
//! device (bounded by the number of devices), into which every new report is merged — per
//! property the newest value wins (by the value's own timestamp, else the report's), so an
//! older report never overwrites a newer one, neither in the entry nor in the API (the
//! reported timestamp already there is compared too). A pool of workers takes entries and
//! patches; while a device's patch is in flight its new reports wait in a new entry, so one
//! device never has two patches racing. The patch carries the DeviceStatus's resourceVersion
//! (a conflict is read again and retried).
//!
//! **Answers.** A report is answered `"OK"` only once the patch that carries it has landed:
//! until then the edge keeps it and re-sends it, so a cloudcore that stops with reports still
//! pending loses nothing. A device keeps at most [`MAX_WAITING`] unanswered reports; beyond
//! that, taking its reports waits for the patch (backpressure onto the edge's session).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams, PostParams};
use kubeedge_apis::devices::v1beta1::{API_VERSION, DeviceStatus, DeviceStatusSpec, Twin, TwinProperty};
use kubeedge_beehive::Bus;
use kubeedge_model::constants::{group, module};
use kubeedge_model::protocol::reply;
use kubeedge_model::{CloudResource, Message, Operation};
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::wire::{DeviceStateUpdate, DeviceTwinUpdate};
use crate::authz::{Attributes, NodeAuthorizer};
use crate::delivery::devices::{DeviceView, Key};

/// Unanswered reports one device may have waiting for their patch.
pub const MAX_WAITING: usize = 1024;
/// Attempts of one patch when its resourceVersion conflicts.
const CONFLICT_ATTEMPTS: usize = 5;
/// Pause before a failed patch is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// What one edge message asks of DeviceController.
#[derive(Debug, PartialEq, Eq)]
pub enum Report {
    /// `…/twin/edge_updated`.
    Twin,
    /// `…/state/update`.
    State,
    /// `membership/detail`: ignored.
    MembershipDetail,
}

/// Parses `node/{node}/device/{ns}/{name}/{twin/edge_updated|state/update}` into (node, device,
/// report), or the membership detail request.
pub fn parse_resource(resource: &str) -> Option<(String, Key, Report)> {
    let parts: Vec<&str> = resource.split('/').collect();
    match parts.as_slice() {
        ["node", node, "membership", "detail"] if !node.is_empty() => {
            Some((node.to_string(), Key::default(), Report::MembershipDetail))
        }
        ["node", node, "device", ns, name, a, b] if !node.is_empty() && !ns.is_empty() && !name.is_empty() => {
            let report = match (*a, *b) {
                ("twin", "edge_updated") => Report::Twin,
                ("state", "update") => Report::State,
                _ => return None,
            };
            Some((node.to_string(), (ns.to_string(), name.to_string()), report))
        }
        _ => None,
    }
}

// === the pending set ===

/// One property's newest report: the value and the timestamp that orders it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamped {
    value: TwinProperty,
    at: i64,
}

#[derive(Debug, Clone, Default)]
struct TwinChange {
    reported: Option<Stamped>,
    observed: Option<Stamped>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct StateChange {
    state: String,
    last_online_time: String,
    at: i64,
}

/// A report to answer once its patch lands.
#[derive(Debug, Clone)]
struct Waiter {
    node: String,
    msg_id: String,
}

/// What one device's next patch carries.
#[derive(Debug, Default)]
struct Pending {
    twins: BTreeMap<String, TwinChange>,
    state: Option<StateChange>,
    waiters: Vec<Waiter>,
}

/// `new` replaces `old` unless `old` is newer.
fn newest(old: &mut Option<Stamped>, new: Option<Stamped>) {
    if let Some(n) = new
        && old.as_ref().is_none_or(|o| n.at >= o.at)
    {
        *old = Some(n);
    }
}

impl Pending {
    /// Merges `other` (taken earlier, its patch failed) back in: newer values stay.
    fn absorb(&mut self, other: Pending) {
        for (name, t) in other.twins {
            let mine = self.twins.entry(name).or_default();
            newest(&mut mine.reported, t.reported);
            newest(&mut mine.observed, t.observed);
        }
        if let Some(s) = other.state
            && self.state.as_ref().is_none_or(|m| s.at > m.at)
        {
            self.state = Some(s);
        }
        let mut waiters = other.waiters;
        waiters.append(&mut self.waiters);
        self.waiters = waiters;
    }

    fn is_empty(&self) -> bool {
        self.twins.is_empty() && self.state.is_none()
    }
}

/// What a report changes.
#[derive(Debug)]
pub enum Change {
    /// Twin values.
    Twin(DeviceTwinUpdate),
    /// The device's state.
    State(DeviceStateUpdate),
}

impl Change {
    fn merge_into(self, p: &mut Pending) {
        match self {
            Change::Twin(u) => {
                let event_at = u.timestamp;
                for (name, twin) in u.twin {
                    let Some(twin) = twin else { continue };
                    let ty = twin.metadata.as_ref().map(|m| m.ty.clone());
                    let stamp = |v: Option<super::wire::TwinValue>| {
                        let v = v?;
                        let value = v.value?;
                        let ts = v.metadata.as_ref().map(|m| m.timestamp).unwrap_or(0);
                        let mut metadata = BTreeMap::new();
                        if v.metadata.is_some() {
                            metadata.insert("timestamp".to_owned(), ts.to_string());
                        }
                        if let Some(t) = &ty {
                            metadata.insert("type".to_owned(), t.clone());
                        }
                        Some(Stamped {
                            value: TwinProperty { value, metadata },
                            at: if ts > 0 { ts } else { event_at },
                        })
                    };
                    let entry = p.twins.entry(name).or_default();
                    newest(&mut entry.reported, stamp(twin.actual));
                    newest(&mut entry.observed, stamp(twin.expected));
                }
            }
            Change::State(u) => {
                let s =
                    StateChange { state: u.device.state, last_online_time: u.device.last_online_time, at: u.timestamp };
                if p.state.as_ref().is_none_or(|m| s.at >= m.at) {
                    p.state = Some(s);
                }
            }
        }
    }
}

#[derive(Default)]
struct State {
    pending: HashMap<Key, Pending>,
    /// Devices whose DeviceStatus must exist (a new Device), without a report.
    ensure: HashSet<Key>,
    /// Devices with work, each once, in order.
    ready: VecDeque<Key>,
    queued: HashSet<Key>,
    /// Devices a worker is patching now.
    in_flight: HashSet<Key>,
}

impl State {
    fn queue(&mut self, key: &Key) {
        if !self.in_flight.contains(key) && self.queued.insert(key.clone()) {
            self.ready.push_back(key.clone());
        }
    }
}

struct Shared {
    state: Mutex<State>,
    /// Wakes a worker: a device has work.
    work: Notify,
    /// Wakes reports waiting for room: a patch landed.
    room: Notify,
}

/// The pending DeviceStatus changes, per device, and the handle workers take them from.
/// Cheap to clone; the lock is held only to merge or take an entry, never across an await.
#[derive(Clone)]
pub struct Statuses(Arc<Shared>);

impl Default for Statuses {
    fn default() -> Self {
        Self(Arc::new(Shared { state: Mutex::default(), work: Notify::new(), room: Notify::new() }))
    }
}

impl Statuses {
    /// Asks for the device's DeviceStatus to be created when it is missing.
    pub fn ensure(&self, key: &Key) {
        let mut g = self.0.state.lock();
        g.ensure.insert(key.clone());
        g.queue(key);
        drop(g);
        self.0.work.notify_one();
    }

    /// Merges a report into the device's pending entry, to be answered (`node`, `msg_id`) when
    /// its patch lands. Waits while the device has [`MAX_WAITING`] unanswered reports.
    pub async fn submit(&self, key: &Key, change: Change, node: &str, msg_id: &str) {
        let mut change = Some(change);
        loop {
            let room = self.0.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut g = self.0.state.lock();
                let p = g.pending.entry(key.clone()).or_default();
                if p.waiters.len() < MAX_WAITING {
                    if let Some(c) = change.take() {
                        c.merge_into(p);
                    }
                    p.waiters.push(Waiter { node: node.to_owned(), msg_id: msg_id.to_owned() });
                    g.queue(key);
                    drop(g);
                    self.0.work.notify_one();
                    return;
                }
            }
            room.await;
        }
    }

    /// The next device with work: its pending entry (taken) and whether its DeviceStatus must
    /// be ensured. Waits for one; `None` once `stop` is cancelled.
    async fn take(&self, stop: &CancellationToken) -> Option<(Key, Pending, bool)> {
        loop {
            let work = self.0.work.notified();
            tokio::pin!(work);
            work.as_mut().enable();
            {
                let mut g = self.0.state.lock();
                if let Some(key) = g.ready.pop_front() {
                    g.queued.remove(&key);
                    g.in_flight.insert(key.clone());
                    let pending = g.pending.remove(&key).unwrap_or_default();
                    let ensure = g.ensure.remove(&key);
                    return Some((key, pending, ensure));
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = &mut work => {}
            }
        }
    }

    /// A worker is done with `key`; `failed` (its patch did not land) goes back in, under
    /// what arrived meanwhile.
    fn done(&self, key: &Key, failed: Option<Pending>) {
        let mut g = self.0.state.lock();
        g.in_flight.remove(key);
        if let Some(f) = failed {
            g.pending.entry(key.clone()).or_default().absorb(f);
        }
        if g.pending.contains_key(key) {
            g.queue(key);
        }
        drop(g);
        self.0.work.notify_one();
        self.0.room.notify_waiters();
    }

    /// Devices with a pending entry (for tests and metrics).
    pub fn pending_devices(&self) -> usize {
        self.0.state.lock().pending.len()
    }
}

// === the workers ===

/// What the workers need.
#[derive(Clone)]
pub struct Patcher {
    /// The cluster.
    pub client: kube::Client,
    /// The bus (answers go to CloudHub).
    pub bus: Bus,
    /// The device view (a device's properties and uid).
    pub devices: DeviceView,
    /// The pending set.
    pub statuses: Statuses,
}

impl Patcher {
    /// A worker: takes devices' pending entries and patches until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        while let Some((key, pending, ensure)) = self.statuses.take(&stop).await {
            let failed = match self.apply(&key, &pending, ensure).await {
                Ok(()) => {
                    self.answer(&pending).await;
                    None
                }
                Err(Outcome::Dropped) => None,
                Err(Outcome::Retry) => {
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = tokio::time::sleep(RETRY_AFTER) => {}
                    }
                    Some(pending)
                }
            };
            self.statuses.done(&key, failed);
        }
    }

    async fn answer(&self, pending: &Pending) {
        for w in &pending.waiters {
            let mut m = Message::build(
                module::DEVICECONTROLLER,
                group::TWIN,
                format!("{}/twin", CloudResource::node_notice(&w.node)),
                Operation::Response,
                reply::ok(),
            );
            m.header.parent_id = w.msg_id.clone();
            let _ = self.bus.send(module::CLOUDHUB, m).await;
        }
    }

    /// Ensures the DeviceStatus and applies `p` to it.
    async fn apply(&self, key: &Key, p: &Pending, ensure: bool) -> Result<(), Outcome> {
        let (ns, name) = key;
        let Some(device) = self.devices.device(ns, name) else {
            // Gone (or not yet seen: the report waits for the watch).
            if p.waiters.is_empty() || !self.devices.is_synced() {
                return if p.waiters.is_empty() { Err(Outcome::Dropped) } else { Err(Outcome::Retry) };
            }
            debug!(namespace = ns, name, "Dropped reports of a device that no longer exists.");
            return Err(Outcome::Dropped);
        };
        if p.is_empty() && !ensure {
            return Ok(());
        }
        let api: Api<DeviceStatus> = Api::namespaced(self.client.clone(), ns);
        for _ in 0..CONFLICT_ATTEMPTS {
            let current = match api.get_opt(name).await {
                Ok(Some(s)) => s,
                Ok(None) => {
                    let mut status = DeviceStatus::new(name, DeviceStatusSpec {});
                    status.metadata.namespace = Some(ns.clone());
                    status.metadata.owner_references =
                        Some(vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                            api_version: API_VERSION.to_owned(),
                            kind: "Device".to_owned(),
                            name: name.clone(),
                            uid: device.obj.uid.clone(),
                            controller: Some(true),
                            block_owner_deletion: Some(true),
                        }]);
                    status.status = Some(Default::default());
                    match api.create(&PostParams::default(), &status).await {
                        Ok(s) => {
                            info!(namespace = ns, name, "Created a DeviceStatus.");
                            s
                        }
                        Err(kube::Error::Api(s)) if s.code == 409 => continue,
                        Err(e) => {
                            warn!(namespace = ns, name, error = %e, "Creating a DeviceStatus failed; retrying.");
                            return Err(Outcome::Retry);
                        }
                    }
                }
                Err(e) => {
                    warn!(namespace = ns, name, error = %e, "Reading a DeviceStatus failed; retrying.");
                    return Err(Outcome::Retry);
                }
            };
            if p.is_empty() {
                return Ok(());
            }
            let body = patch_body(&current, &device.properties, p);
            match api.patch(name, &PatchParams::default(), &Patch::Merge(body)).await {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(kube::Error::Api(s)) if s.code == 404 => continue,
                Err(e) => {
                    warn!(namespace = ns, name, error = %e, "Patching a DeviceStatus failed; retrying.");
                    return Err(Outcome::Retry);
                }
            }
        }
        Err(Outcome::Retry)
    }
}

enum Outcome {
    /// Nothing to do any more (the device is gone): no answer.
    Dropped,
    /// Try again later.
    Retry,
}

/// The merge patch applying `p` to `current`: the whole twins list (a merge patch replaces
/// lists), kept to the Device's properties as upstream, each property's newest value winning
/// over what the API holds; `state` and `lastOnlineTime`; the resourceVersion read, so a
/// concurrent writer makes it conflict instead of being overwritten.
fn patch_body(current: &DeviceStatus, properties: &[String], p: &Pending) -> serde_json::Value {
    let mut status = serde_json::Map::new();
    if !p.twins.is_empty() {
        let existing = current.status.as_ref().map(|s| s.twins.clone()).unwrap_or_default();
        let mut twins: Vec<Twin> = existing.into_iter().filter(|t| properties.contains(&t.property_name)).collect();
        for (name, change) in &p.twins {
            if !properties.contains(name) {
                continue;
            }
            let i = match twins.iter().position(|t| &t.property_name == name) {
                Some(i) => i,
                None => {
                    twins.push(Twin { property_name: name.clone(), ..Default::default() });
                    twins.len() - 1
                }
            };
            let t = &mut twins[i];
            let at = |v: &TwinProperty| v.metadata.get("timestamp").and_then(|s| s.parse::<i64>().ok()).unwrap_or(0);
            if let Some(r) = &change.reported
                && r.at >= at(&t.reported)
            {
                t.reported = r.value.clone();
            }
            if let Some(o) = &change.observed
                && o.at >= at(&t.observed_desired)
            {
                t.observed_desired = o.value.clone();
            }
        }
        status.insert("twins".into(), serde_json::to_value(&twins).unwrap_or_default());
    }
    if let Some(s) = &p.state {
        if !s.state.is_empty() {
            status.insert("state".into(), s.state.clone().into());
        }
        if !s.last_online_time.is_empty() {
            status.insert("lastOnlineTime".into(), s.last_online_time.clone().into());
        }
    }
    json!({
        "metadata": {"resourceVersion": current.metadata.resource_version},
        "status": status,
    })
}

// === the handler ===

/// Handles one edge message routed to DeviceController.
pub async fn handle(msg: Message, authz: &NodeAuthorizer, statuses: &Statuses) {
    let Some((node, key, report)) = parse_resource(&msg.router.resource) else {
        warn!(resource = %msg.router.resource, "Dropped a message not meant for DeviceController.");
        return;
    };
    let change = match report {
        Report::MembershipDetail => {
            debug!(node, "Ignored a membership detail request (as upstream's v1beta1 DeviceController).");
            return;
        }
        Report::Twin => msg.content.decode::<DeviceTwinUpdate>().map(Change::Twin),
        Report::State => msg.content.decode::<DeviceStateUpdate>().map(Change::State),
    };
    let change = match change {
        Ok(c) => c,
        Err(e) => {
            warn!(node, msg.id = %msg.header.id, resource = %msg.router.resource, error = %e, "Dropped a malformed device report.");
            return;
        }
    };
    let (ns, name) = &key;
    let attrs = Attributes::new(&node, "patch", kubeedge_apis::devices::GROUP, "devicestatuses", ns, name);
    if authz.authorize(&attrs, None).await.is_err() {
        // Logged and counted by the authorizer; unanswered, as upstream when its patch is
        // refused (the edge re-sends it until the device is bound to it or it gives up).
        return;
    }
    statuses.submit(&key, change, &node, &msg.header.id).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devicecontroller::wire::{MsgTwin, TwinValue, ValueMetadata};

    fn twin(value: &str, at: i64) -> Change {
        let t = MsgTwin {
            actual: Some(TwinValue { value: Some(value.into()), metadata: Some(ValueMetadata { timestamp: at }) }),
            ..Default::default()
        };
        Change::Twin(DeviceTwinUpdate {
            event_id: "e".into(),
            timestamp: at,
            twin: [("temp".to_owned(), Some(t))].into(),
        })
    }

    #[test]
    fn resources_parse() {
        assert_eq!(
            parse_resource("node/e1/device/default/thermo/twin/edge_updated"),
            Some(("e1".into(), ("default".into(), "thermo".into()), Report::Twin))
        );
        assert_eq!(parse_resource("node/e1/device/ns/d/state/update").map(|r| r.2), Some(Report::State));
        assert_eq!(parse_resource("node/e1/membership/detail").map(|r| r.2), Some(Report::MembershipDetail));
        for bad in ["node/e1/device/ns/d/twin/other", "node//device/ns/d/state/update", "device/ns/d/state/update", ""]
        {
            assert_eq!(parse_resource(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_newest_value_wins_whatever_the_order() {
        let mut p = Pending::default();
        twin("3", 300).merge_into(&mut p);
        twin("1", 100).merge_into(&mut p);
        twin("2", 200).merge_into(&mut p);
        assert_eq!(p.twins["temp"].reported.as_ref().unwrap().value.value, "3");
        // A failed entry put back under a newer one does not win.
        let mut older = Pending::default();
        twin("0", 50).merge_into(&mut older);
        p.absorb(older);
        assert_eq!(p.twins["temp"].reported.as_ref().unwrap().value.value, "3");
        // Nor does a report older than what the API holds.
        let mut current = DeviceStatus::new("d", DeviceStatusSpec {});
        let mut held = TwinProperty { value: "9".into(), ..Default::default() };
        held.metadata.insert("timestamp".into(), "900".into());
        current.status = Some(kubeedge_apis::devices::v1beta1::DeviceStatusStatus {
            twins: vec![Twin { property_name: "temp".into(), reported: held, ..Default::default() }],
            ..Default::default()
        });
        let body = patch_body(&current, &["temp".to_owned()], &p);
        assert_eq!(body["status"]["twins"][0]["reported"]["value"], "9");
        current.status = None;
        let body = patch_body(&current, &["temp".to_owned(), "other".to_owned()], &p);
        assert_eq!(
            body["status"]["twins"],
            json!([{"propertyName": "temp", "reported": {"value": "3", "metadata": {"timestamp": "300"}}, "observedDesired": {"value": ""}}])
        );
        // Twins that name no property of the device are left out.
        assert!(patch_body(&current, &[], &p)["status"]["twins"].as_array().unwrap().is_empty());
    }
}
