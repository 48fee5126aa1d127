//! The device panel: the models and devices this mapper manages, each device with its running
//! task. Changed by registration answers and by edgecore's DMI calls; read by the REST API.
//!
//! The maps sit behind one mutex held only for map operations (never across an `.await`); the
//! device tasks own everything else.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use kubeedge_dmi::v1beta1::{Device, DeviceModel, DeviceStatus, Twin, TwinProperty};
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::device::{self, Command, Running, View};
use crate::edgecore::Edgecore;
use crate::protocol::Protocol;

/// `{namespace}/{name}`.
pub fn resource_id(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

struct Entry {
    device: Device,
    running: Running,
}

#[derive(Default)]
struct State {
    models: HashMap<String, DeviceModel>,
    devices: BTreeMap<String, Entry>,
}

struct Inner<P: Protocol> {
    protocol: Arc<P>,
    edgecore: Edgecore,
    tracker: TaskTracker,
    stop: CancellationToken,
    state: Mutex<State>,
}

/// The panel. Cheap to clone.
pub struct Panel<P: Protocol> {
    inner: Arc<Inner<P>>,
}

impl<P: Protocol> Clone for Panel<P> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner) }
    }
}

impl<P: Protocol> Panel<P> {
    /// An empty panel whose device tasks run on `tracker` until `stop`.
    pub fn new(protocol: Arc<P>, edgecore: Edgecore, tracker: TaskTracker, stop: CancellationToken) -> Self {
        Self { inner: Arc::new(Inner { protocol, edgecore, tracker, stop, state: Mutex::new(State::default()) }) }
    }

    fn start(&self, state: &State, device: &Device) -> Running {
        let model_id =
            resource_id(&device.namespace, device.spec.as_ref().map_or("", |s| s.device_model_reference.as_str()));
        let model = state.models.get(&model_id);
        if model.is_none() {
            tracing::warn!(device = %device.id(), model = %model_id, "The device's model is not known; types come from the visitors.");
        }
        let i = &self.inner;
        device::spawn(Arc::clone(&i.protocol), device, model, i.edgecore.clone(), &i.tracker, i.stop.child_token())
    }

    /// Adopts a registration answer: the models replace ours; devices that are new or changed
    /// are (re)started, devices no longer listed are stopped.
    pub fn sync(&self, models: Vec<DeviceModel>, devices: Vec<Device>) {
        let mut state = self.inner.state.lock();
        state.models = models.into_iter().map(|m| (m.id(), m)).collect();
        let wanted: HashMap<String, Device> = devices.into_iter().map(|d| (d.id(), d)).collect();
        state.devices.retain(|id, e| {
            let keep = wanted.get(id).is_some_and(|d| *d == e.device);
            if !keep {
                e.running.stop.cancel();
            }
            keep
        });
        for (id, device) in wanted {
            if !state.devices.contains_key(&id) {
                tracing::info!(device = %id, "Starting the device.");
                let running = self.start(&state, &device);
                state.devices.insert(id, Entry { device, running });
            }
        }
    }

    /// Adds or replaces a device (RegisterDevice, UpdateDevice).
    pub fn upsert_device(&self, device: Device) {
        let mut state = self.inner.state.lock();
        let id = device.id();
        if let Some(old) = state.devices.remove(&id) {
            old.running.stop.cancel();
        }
        tracing::info!(device = %id, "Starting the device.");
        let running = self.start(&state, &device);
        state.devices.insert(id, Entry { device, running });
    }

    /// Stops and forgets a device; false if it was not there.
    pub fn remove_device(&self, namespace: &str, name: &str) -> bool {
        let removed = self.inner.state.lock().devices.remove(&resource_id(namespace, name));
        if let Some(e) = &removed {
            tracing::info!(device = %e.device.id(), "Removed the device.");
            e.running.stop.cancel();
        }
        removed.is_some()
    }

    /// Adds or replaces a model; devices of that model restart with it.
    pub fn upsert_model(&self, model: DeviceModel) {
        let mut state = self.inner.state.lock();
        let id = model.id();
        state.models.insert(id.clone(), model);
        let users: Vec<Device> = state
            .devices
            .values()
            .filter(|e| {
                resource_id(
                    &e.device.namespace,
                    e.device.spec.as_ref().map_or("", |s| s.device_model_reference.as_str()),
                ) == id
            })
            .map(|e| e.device.clone())
            .collect();
        for device in users {
            if let Some(old) = state.devices.remove(&device.id()) {
                old.running.stop.cancel();
            }
            let running = self.start(&state, &device);
            state.devices.insert(device.id(), Entry { device, running });
        }
    }

    /// Forgets a model; false if it was not there.
    pub fn remove_model(&self, namespace: &str, name: &str) -> bool {
        self.inner.state.lock().models.remove(&resource_id(namespace, name)).is_some()
    }

    /// A model.
    pub fn model(&self, namespace: &str, name: &str) -> Option<DeviceModel> {
        self.inner.state.lock().models.get(&resource_id(namespace, name)).cloned()
    }

    /// The ids of the devices, sorted.
    pub fn device_ids(&self) -> Vec<String> {
        self.inner.state.lock().devices.keys().cloned().collect()
    }

    /// A device as DMI knows it, with its latest reported values in `status.twins`.
    pub fn device(&self, namespace: &str, name: &str) -> Option<Device> {
        let (mut device, view) = {
            let state = self.inner.state.lock();
            let e = state.devices.get(&resource_id(namespace, name))?;
            (e.device.clone(), e.running.view.lock().clone())
        };
        let status = device.status.get_or_insert_with(DeviceStatus::default);
        status.twins = view
            .reported
            .iter()
            .map(|(prop, (value, ty, ts))| Twin {
                property_name: prop.clone(),
                reported: Some(TwinProperty {
                    value: value.clone(),
                    metadata: [("type".to_owned(), ty.clone()), ("timestamp".to_owned(), ts.to_string())].into(),
                }),
                observed_desired: device
                    .spec
                    .as_ref()
                    .and_then(|s| s.properties.iter().find(|p| &p.name == prop))
                    .and_then(|p| p.desired.clone()),
            })
            .collect();
        Some(device)
    }

    /// A device's state and last error.
    pub fn view(&self, namespace: &str, name: &str) -> Option<View> {
        self.inner.state.lock().devices.get(&resource_id(namespace, name)).map(|e| e.running.view.lock().clone())
    }

    /// Reads a property from the device now: its value and type.
    pub async fn read(&self, namespace: &str, name: &str, property: &str) -> Result<(String, String), String> {
        let (tx, rx) = oneshot::channel();
        self.send(namespace, name, Command::Read { property: property.to_owned(), reply: tx }).await?;
        let (value, ty) = rx.await.map_err(|_| "the device was stopped".to_owned())??;
        Ok((value, ty.as_str().to_owned()))
    }

    /// Writes a property through device method `method` (which must list it).
    pub async fn write(
        &self,
        namespace: &str,
        name: &str,
        method: &str,
        property: &str,
        value: &str,
    ) -> Result<(), String> {
        let device = self.inner.state.lock().devices.get(&resource_id(namespace, name)).map(|e| e.device.clone());
        let device = device.ok_or_else(|| format!("not found device {}", resource_id(namespace, name)))?;
        let methods = device.spec.as_ref().map(|s| s.methods.clone()).unwrap_or_default();
        let m = methods
            .iter()
            .find(|m| m.name == method)
            .ok_or_else(|| format!("deviceMethod name {method} does not exist in device instance"))?;
        if !m.property_names.iter().any(|p| p == property) {
            return Err(format!("deviceProperty {property} to be written is not in the list defined by devicemethod"));
        }
        let (tx, rx) = oneshot::channel();
        self.send(
            namespace,
            name,
            Command::Write { property: property.to_owned(), value: value.to_owned(), reply: tx },
        )
        .await?;
        rx.await.map_err(|_| "the device was stopped".to_owned())?
    }

    async fn send(&self, namespace: &str, name: &str, cmd: Command) -> Result<(), String> {
        let id = resource_id(namespace, name);
        let tx = self
            .inner
            .state
            .lock()
            .devices
            .get(&id)
            .map(|e| e.running.commands.clone())
            .ok_or_else(|| format!("not found device {id}"))?;
        tx.send(cmd).await.map_err(|_| format!("device {id} was stopped"))
    }
}
