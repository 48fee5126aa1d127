//! DMI in DeviceTwin (upstream `dmiserver`, `dmiclient`, `dmicache` and the DMI worker):
//! edgecore serves `DeviceManagerService` on `{deviceTwin.dmiSockPath}/dmi.sock` and calls each
//! registered mapper's `DeviceMapperService` when devices and models change.
//!
//! DeviceTwin's task owns [`Dmi`]: the node's Devices and DeviceModels (as MetaManager stores
//! them), the mappers by protocol (persisted in `meta` as upstream: key
//! `node/nodeID/namespace/devicemapper/{name}`, type `devicemapper`), and a queue of calls per
//! protocol. A Device goes to the mapper of its `spec.protocol.protocolName`, a model to the
//! mapper of its `spec.protocol`; a call to a mapper that is down, or not registered yet, waits
//! in its queue (coalesced per object) and is retried with backoff; a mapper that registers
//! with data gets every device and model of its protocol in the answer, which replaces its
//! queue. An update that changes nothing of a Device's spec is not sent (upstream's
//! `CompareDeviceSpecHasChanged`), so status churn never makes a mapper recreate a device.

pub mod calls;
pub mod convert;
pub mod server;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use base64::Engine as _;
use kubeedge_apis::devices::v1beta1 as crd;
use kubeedge_beehive::Spawner;
use kubeedge_dmi::v1beta1 as pb;
use kubeedge_metastore::{MetaRow, Op, Store};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{info, warn};

use calls::{Call, CallError, Queue};

/// The largest DMI message edgecore reads (tonic's default, stated).
pub const MAX_MESSAGE: usize = 4 << 20;

/// The `meta` type of a registered mapper.
pub const MAPPER_TYPE: &str = "devicemapper";

/// The socket edgecore serves, from `deviceTwin.dmiSockPath` as upstream reads it: a path
/// ending in `.sock` names its folder, an empty one is `/etc/kubeedge`.
pub fn socket_path(dmi_sock_path: &str) -> PathBuf {
    let dir = if dmi_sock_path.ends_with(".sock") {
        Path::new(dmi_sock_path).parent().map(Path::to_path_buf).unwrap_or_default()
    } else {
        PathBuf::from(dmi_sock_path)
    };
    let dir = if dir.as_os_str().is_empty() { PathBuf::from("/etc/kubeedge") } else { dir };
    dir.join("dmi.sock")
}

/// A mapper's registration, answered by DeviceTwin's task.
pub struct Registration {
    /// Who.
    pub mapper: pb::MapperInfo,
    /// Whether to answer with its devices and models.
    pub with_data: bool,
    /// The answer.
    pub reply: oneshot::Sender<Result<pb::MapperRegisterResponse, Status>>,
}

/// What MetaManager did to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// insert.
    Insert,
    /// update.
    Update,
    /// delete.
    Delete,
}

#[derive(Debug, Default)]
struct Mapper {
    name: String,
    socket: Option<PathBuf>,
    queue: Queue,
    busy: bool,
    attempts: u32,
    retry_at: Option<Instant>,
    /// Bumped by each registration with data: a call started before it is stale.
    generation: u64,
    /// Whether "no mapper for this protocol" was already logged.
    waiting_logged: bool,
}

/// The result of one call: (protocol, the mapper's generation it was made for, the call, how it
/// went).
pub type Done = (String, u64, Call, Result<(), CallError>);

/// Where calls run: DeviceTwin's tracked tasks, their results coming back on `done`, all
/// stopped by `stop`.
struct Runner {
    spawner: Spawner,
    done: mpsc::Sender<Done>,
    stop: CancellationToken,
}

/// DMI's state (see the module docs).
#[derive(Default)]
pub struct Dmi {
    devices: BTreeMap<String, crd::Device>,
    models: BTreeMap<String, crd::DeviceModel>,
    mappers: HashMap<String, Mapper>,
    /// None: calls wait (before DeviceTwin runs, and in unit tests).
    runner: Option<Runner>,
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, value: &str) -> Option<T> {
    serde_json::from_str(value).map_err(|e| warn!(what, error = %e, "Skipped an undecodable stored object.")).ok()
}

fn socket_of(address: &[u8]) -> PathBuf {
    let s = String::from_utf8_lossy(address);
    PathBuf::from(s.strip_prefix("unix://").unwrap_or(&s).to_owned())
}

/// The protocol a device's mapper speaks.
fn protocol_of(d: &crd::Device) -> &str {
    &d.spec.protocol.protocol_name
}

/// A spec compared as upstream does: properties and methods in name order.
fn sorted_spec(d: &crd::Device) -> crd::DeviceSpec {
    let mut s = d.spec.clone();
    s.properties.sort_by(|a, b| a.name.cmp(&b.name));
    s.methods.sort_by(|a, b| a.name.cmp(&b.name));
    s
}

fn split_id(id: &str) -> (String, String) {
    id.split_once('/').map(|(a, b)| (a.to_owned(), b.to_owned())).unwrap_or_default()
}

impl Dmi {
    /// Runs calls with `spawner` until `stop`, their results coming back on `done` (one call per
    /// protocol is in flight, so the channel never holds more than the number of protocols).
    pub fn start(&mut self, spawner: Spawner, done: mpsc::Sender<Done>, stop: CancellationToken) {
        self.runner = Some(Runner { spawner, done, stop });
        let protocols: Vec<String> = self.mappers.keys().cloned().collect();
        for p in protocols {
            if let Some(m) = self.mappers.get_mut(&p) {
                m.busy = false;
            }
            self.pump(&p);
        }
    }

    /// Loads the stored devices, models and mappers. What was waiting for a mapper when
    /// edgecore stopped is not stored, so each known mapper gets its protocol's models and
    /// devices again (updates, which replace what it has).
    pub async fn load(&mut self, store: &Store) -> Result<(), kubeedge_metastore::Error> {
        *self = Dmi::default();
        for row in store.list_by_type(kubeedge_model::constants::resource_type::DEVICE_MODEL).await? {
            if let Some(m) = decode::<crd::DeviceModel>("devicemodel", &row.value) {
                self.models.insert(convert::id(&m.metadata), m);
            }
        }
        for row in store.list_by_type(kubeedge_model::constants::resource_type::DEVICE).await? {
            if let Some(d) = decode::<crd::Device>("device", &row.value) {
                self.devices.insert(convert::id(&d.metadata), d);
            }
        }
        for row in store.list_by_type(MAPPER_TYPE).await? {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&row.value) else { continue };
            let (Some(protocol), Some(address)) = (v["protocol"].as_str(), v["address"].as_str()) else { continue };
            let Ok(address) = base64::engine::general_purpose::STANDARD.decode(address) else { continue };
            let m = self.mappers.entry(protocol.to_owned()).or_default();
            m.name = v["name"].as_str().unwrap_or_default().to_owned();
            m.socket = Some(socket_of(&address));
        }
        let known: Vec<String> = self.mappers.keys().cloned().collect();
        let models: Vec<crd::DeviceModel> =
            self.models.values().filter(|m| known.contains(&m.spec.protocol)).cloned().collect();
        for m in models {
            self.queue(&m.spec.protocol.clone(), Call::UpdateModel(convert::model(&m)));
        }
        let devices: Vec<crd::Device> =
            self.devices.values().filter(|d| known.iter().any(|p| p == protocol_of(d))).cloned().collect();
        for d in devices {
            if let Some(pb) = self.converted(&d) {
                self.queue(protocol_of(&d), Call::UpdateDevice(pb));
            }
        }
        info!(
            devices = self.devices.len(),
            models = self.models.len(),
            mappers = self.mappers.len(),
            "DMI loaded its devices, models and mappers."
        );
        Ok(())
    }

    fn queue(&mut self, protocol: &str, call: Call) {
        if protocol.is_empty() {
            warn!(object = %call.key().1, "The object names no protocol; no mapper will serve it.");
            return;
        }
        let m = self.mappers.entry(protocol.to_owned()).or_default();
        if m.socket.is_none() && !m.waiting_logged {
            m.waiting_logged = true;
            warn!(protocol, "No mapper has registered for this protocol yet; its devices wait for one.");
        }
        m.queue.push(call);
        self.pump(protocol);
    }

    fn model_of(&self, d: &crd::Device) -> Option<&crd::DeviceModel> {
        let ns = d.metadata.namespace.as_deref().unwrap_or_default();
        d.spec.device_model_ref.as_ref().and_then(|r| self.models.get(&format!("{ns}/{}", r.name)))
    }

    /// The device as its mapper gets it (model defaults laid under it).
    fn converted(&self, d: &crd::Device) -> Option<pb::Device> {
        match convert::device(&convert::overridden(d, self.model_of(d))) {
            Ok(pb) => Some(pb),
            Err(e) => {
                warn!(device = %convert::id(&d.metadata), error = %e, "The device cannot be handed to a mapper.");
                None
            }
        }
    }

    /// A Device stored (or deleted) by MetaManager. An insert of a device DMI already holds
    /// (a resend) is an update: a mapper ignores a registration of a device it has.
    pub fn device(&mut self, change: Change, d: crd::Device) {
        let id = convert::id(&d.metadata);
        let old = self.devices.get(&id).cloned();
        if change == Change::Delete {
            let d = old.unwrap_or(d);
            self.devices.remove(&id);
            let (namespace, name) = split_id(&id);
            self.queue(protocol_of(&d), Call::RemoveDevice { namespace, name });
            return;
        }
        let moved = old.as_ref().is_some_and(|o| protocol_of(o) != protocol_of(&d));
        if let Some(old) = &old {
            if !moved && sorted_spec(old) == sorted_spec(&d) {
                self.devices.insert(id, d);
                return;
            }
            if moved {
                let (namespace, name) = split_id(&id);
                self.queue(protocol_of(old), Call::RemoveDevice { namespace, name });
            }
        }
        let pb = self.converted(&d);
        let protocol = protocol_of(&d).to_owned();
        self.devices.insert(id, d);
        let Some(pb) = pb else { return };
        let call = if old.is_none() || moved { Call::RegisterDevice(pb) } else { Call::UpdateDevice(pb) };
        self.queue(&protocol, call);
    }

    /// A DeviceModel stored (or deleted) by MetaManager. The devices that take defaults from it
    /// are sent again when what their mapper gets changes.
    pub fn model(&mut self, change: Change, m: crd::DeviceModel) {
        let id = convert::id(&m.metadata);
        let (namespace, name) = split_id(&id);
        if change == Change::Delete {
            let m = self.models.remove(&id).unwrap_or(m);
            self.queue(&m.spec.protocol, Call::RemoveModel { namespace, name });
            return;
        }
        let old = self.models.get(&id).cloned();
        if old.as_ref().is_some_and(|o| o.spec == m.spec) {
            self.models.insert(id, m);
            return;
        }
        let users: Vec<crd::Device> = self
            .devices
            .values()
            .filter(|d| {
                d.metadata.namespace.as_deref() == Some(namespace.as_str())
                    && d.spec.device_model_ref.as_ref().is_some_and(|r| r.name == name)
            })
            .cloned()
            .collect();
        let before: Vec<Option<pb::Device>> = users.iter().map(|d| self.converted(d)).collect();
        let protocol = m.spec.protocol.clone();
        let call = match &old {
            Some(o) if o.spec.protocol != protocol => {
                self.queue(&o.spec.protocol.clone(), Call::RemoveModel { namespace, name });
                Call::CreateModel(convert::model(&m))
            }
            Some(_) => Call::UpdateModel(convert::model(&m)),
            None => Call::CreateModel(convert::model(&m)),
        };
        self.models.insert(id, m);
        self.queue(&protocol, call);
        for (d, before) in users.iter().zip(before) {
            // A device sent without its model's defaults (the model came later) is updated: the
            // mapper has it, or has it queued as a registration (then it stays one).
            if let Some(after) = self.converted(d).filter(|a| Some(a) != before.as_ref()) {
                self.queue(protocol_of(d), Call::UpdateDevice(after));
            }
        }
    }

    /// What a registering mapper is answered: with data, every device of its protocol (model
    /// defaults laid under it) and every model of its protocol or used by those devices.
    pub fn answer(&self, mapper: &pb::MapperInfo, with_data: bool) -> pb::MapperRegisterResponse {
        let mut answer = pb::MapperRegisterResponse::default();
        if !with_data {
            return answer;
        }
        let protocol = mapper.protocol.as_str();
        let mut models: BTreeMap<String, pb::DeviceModel> = self
            .models
            .iter()
            .filter(|(_, m)| m.spec.protocol == protocol)
            .map(|(id, m)| (id.clone(), convert::model(m)))
            .collect();
        for d in self.devices.values().filter(|d| protocol_of(d) == protocol) {
            let Some(model) = self.model_of(d) else {
                let model = d.spec.device_model_ref.as_ref().map(|r| r.name.clone()).unwrap_or_default();
                warn!(device = %convert::id(&d.metadata), model, "The device's model is not on this node yet; it goes to the mapper once it is.");
                continue;
            };
            let Some(pb) = self.converted(d) else { continue };
            models.entry(convert::id(&model.metadata)).or_insert_with(|| convert::model(model));
            answer.device_list.push(pb);
        }
        answer.model_list = models.into_values().collect();
        answer
    }

    /// A mapper registered (its row stored, its answer built): remembered; with data, what
    /// waited for it is dropped (the answer holds everything) and a call still in flight is
    /// stale.
    pub fn registered(&mut self, mapper: &pb::MapperInfo, with_data: bool) {
        let protocol = mapper.protocol.clone();
        let socket = socket_of(&mapper.address);
        info!(mapper = %mapper.name, protocol = %protocol, socket = %socket.display(), with_data, "A mapper registered.");
        let m = self.mappers.entry(protocol.clone()).or_default();
        m.name = mapper.name.clone();
        m.socket = Some(socket);
        m.attempts = 0;
        m.retry_at = None;
        m.waiting_logged = false;
        if with_data {
            m.queue.clear();
            m.generation += 1;
        }
        self.pump(&protocol);
    }

    /// A call finished.
    pub fn done(&mut self, (protocol, generation, call, result): Done) {
        let Some(m) = self.mappers.get_mut(&protocol) else { return };
        m.busy = false;
        if generation != m.generation {
            info!(protocol, rpc = call.rpc(), object = %call.key().1, "A call made before the mapper registered again is dropped (its answer held the object).");
            self.pump(&protocol);
            return;
        }
        match result {
            Ok(()) => {
                m.attempts = 0;
                info!(protocol, rpc = call.rpc(), object = %call.key().1, "Mapper call done.");
            }
            Err(CallError::Refused(e)) => {
                m.attempts = 0;
                warn!(protocol, rpc = call.rpc(), object = %call.key().1, error = %e, "The mapper refused the call; it is not retried.");
            }
            Err(CallError::Unreachable(e)) => {
                m.attempts += 1;
                let wait = calls::backoff(m.attempts - 1);
                if m.attempts == 1 || m.attempts.is_multiple_of(10) {
                    warn!(protocol, rpc = call.rpc(), object = %call.key().1, error = %e, retry_in = ?wait, attempts = m.attempts, "The mapper is unreachable; the call waits.");
                }
                m.retry_at = Some(Instant::now() + wait);
                m.queue.retry(call);
            }
        }
        self.pump(&protocol);
    }

    /// When the next retry is due, if one waits.
    pub fn next_retry(&self) -> Option<Instant> {
        self.mappers
            .values()
            .filter(|m| !m.busy && !m.queue.is_empty() && m.socket.is_some())
            .filter_map(|m| m.retry_at)
            .min()
    }

    /// Starts the calls whose retry is due.
    pub fn retry_due(&mut self) {
        let now = Instant::now();
        let due: Vec<String> =
            self.mappers.iter().filter(|(_, m)| m.retry_at.is_some_and(|t| t <= now)).map(|(p, _)| p.clone()).collect();
        for p in due {
            if let Some(m) = self.mappers.get_mut(&p) {
                m.retry_at = None;
            }
            self.pump(&p);
        }
    }

    /// Starts the protocol's next call if its mapper is known, idle and not backing off.
    fn pump(&mut self, protocol: &str) {
        let Some(m) = self.mappers.get_mut(protocol) else { return };
        if m.busy || m.retry_at.is_some_and(|t| t > Instant::now()) {
            return;
        }
        let Some(socket) = m.socket.clone() else { return };
        let Some(runner) = &self.runner else { return };
        let Some(call) = m.queue.pop() else { return };
        m.busy = true;
        let (protocol, generation, done, stop) =
            (protocol.to_owned(), m.generation, runner.done.clone(), runner.stop.clone());
        runner.spawner.spawn(async move {
            let result = tokio::select! {
                r = calls::run(socket, call.clone()) => r,
                () = stop.cancelled() => return,
            };
            let _ = done.send((protocol, generation, call, result)).await;
        });
    }
}

/// The `meta` row of a mapper, as upstream's `saveMapper` writes it (Go's JSON of
/// `MapperInfo`: `omitempty` keys, the address as base64).
pub fn store_op(m: &pb::MapperInfo) -> Op {
    let mut v = serde_json::Map::new();
    for (k, s) in
        [("name", &m.name), ("version", &m.version), ("api_version", &m.api_version), ("protocol", &m.protocol)]
    {
        if !s.is_empty() {
            v.insert(k.into(), s.clone().into());
        }
    }
    if !m.address.is_empty() {
        v.insert("address".into(), base64::engine::general_purpose::STANDARD.encode(&m.address).into());
    }
    if !m.state.is_empty() {
        v.insert("state".into(), m.state.clone().into());
    }
    Op::UpsertMeta(MetaRow {
        key: format!("node/nodeID/namespace/{MAPPER_TYPE}/{}", m.name),
        ty: MAPPER_TYPE.to_owned(),
        value: serde_json::Value::Object(v).to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_path_is_read_as_upstream_reads_it() {
        assert_eq!(socket_path("/etc/kubeedge/"), PathBuf::from("/etc/kubeedge/dmi.sock"));
        assert_eq!(socket_path("/run/ke/dmi.sock"), PathBuf::from("/run/ke/dmi.sock"));
        assert_eq!(socket_path("/run/ke/other.sock"), PathBuf::from("/run/ke/dmi.sock"));
        assert_eq!(socket_path(""), PathBuf::from("/etc/kubeedge/dmi.sock"));
    }

    #[test]
    fn a_mapper_is_stored_as_upstream_stores_it() {
        let m = pb::MapperInfo {
            name: "modbus-mapper".into(),
            version: "v1.0".into(),
            api_version: "v1beta1".into(),
            protocol: "modbus".into(),
            address: b"/etc/kubeedge/modbus.sock".to_vec(),
            state: String::new(),
        };
        let Op::UpsertMeta(row) = store_op(&m) else { panic!() };
        assert_eq!(row.key, "node/nodeID/namespace/devicemapper/modbus-mapper");
        assert_eq!(row.ty, "devicemapper");
        let v: serde_json::Value = serde_json::from_str(&row.value).unwrap();
        assert_eq!(v["address"], base64::engine::general_purpose::STANDARD.encode("/etc/kubeedge/modbus.sock"));
        assert!(v.get("state").is_none());
    }
}
