//! One device: its definition as DMI gives it (a `Device` plus its `DeviceModel`) and the task
//! that owns the connection to it.
//!
//! The task polls each property at its `collectCycle`, reports its latest value to edgecore
//! every `reportCycle` (upstream's 1 s when 0) when `reportToCloud` is set, pushes it to the
//! property's push target, writes desired values (`spec.properties[].desired`) to ReadWrite
//! properties after each (re)connect, and reports the device state: `online` while the device
//! answers, `offline` while it does not (reconnecting with backoff), `unhealthy` while its
//! configuration cannot work. A state change is reported at once; with `status.reportToCloud`
//! the state is also reported every `status.reportCycle`, as upstream does.

use std::sync::Arc;
use std::time::Duration;

use kubeedge_dmi::v1beta1::{Device, DeviceModel, Twin, TwinProperty};
use kubeedge_dmi::{any, state};
use parking_lot::Mutex;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::now_ms;
use crate::data::{DataType, DataValue};
use crate::edgecore::Edgecore;
use crate::error::{ErrorKind, ProtocolError};
use crate::protocol::{Property, Protocol};
use crate::push::{Pusher, Sample};

/// Upstream's collect and report cycle when a Device gives 0.
pub const DEFAULT_CYCLE: Duration = Duration::from_secs(1);
/// The deadline of one connect, read or write when the configuration is invalid (the
/// protocol's [`Protocol::timeout`] otherwise).
const IO_TIMEOUT: Duration = Duration::from_secs(5);
const RECONNECT_START: Duration = Duration::from_millis(500);
const RECONNECT_MAX: Duration = Duration::from_secs(30);
/// Requests (REST reads and writes) queued for one device.
pub(crate) const COMMAND_QUEUE: usize = 32;

/// What the rest of the mapper may ask a device task.
pub(crate) enum Command {
    /// Read a property now (REST `GET /device/...`): the value and its type.
    Read { property: String, reply: oneshot::Sender<Result<(String, DataType), String>> },
    /// Write a value (REST device method).
    Write { property: String, value: String, reply: oneshot::Sender<Result<(), String>> },
}

/// What a device task publishes for readers (GetDevice, REST): written only by the task.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// `online`, `offline` or `unhealthy`.
    pub state: String,
    /// Why the device is not online, if it is not.
    pub error: Option<String>,
    /// Latest value, type and timestamp per property.
    pub reported: std::collections::BTreeMap<String, (String, String, i64)>,
}

/// A property as the task works with it.
struct Prop<P: Protocol> {
    name: String,
    visitor: Result<P::Visitor, ProtocolError>,
    ty: Result<DataType, ProtocolError>,
    writable: bool,
    desired: String,
    collect: Duration,
    report: Duration,
    report_to_cloud: bool,
    pusher: Option<Pusher>,
    next_collect: Instant,
    next_report: Instant,
    latest: Option<(String, i64)>,
    /// The last read error, so a failing property logs once per distinct error, not per read.
    failing: Option<String>,
}

impl<P: Protocol> Prop<P> {
    /// The visitor and type, or why this property cannot be used.
    fn usable(&self) -> Result<Property<'_, P::Visitor>, &ProtocolError> {
        let visitor = self.visitor.as_ref()?;
        let ty = *self.ty.as_ref()?;
        Ok(Property { name: &self.name, visitor, ty })
    }
}

/// Parses a DMI `configData` into a protocol's typed config (unpacking the `Any` values).
fn parse_config<T: serde::de::DeserializeOwned>(
    data: Option<&kubeedge_dmi::v1beta1::CustomizedValue>,
    what: &str,
) -> Result<T, ProtocolError> {
    let (map, errors) = data.map(|d| any::map_from_any(&d.data)).unwrap_or_default();
    if let Some((key, e)) = errors.first() {
        return Err(ProtocolError::config(format!("{what}.configData.{key}: {e}")));
    }
    serde_json::from_value(Value::Object(map)).map_err(|e| ProtocolError::config(format!("{what}.configData: {e}")))
}

fn cycle(ms: i64) -> Duration {
    u64::try_from(ms).ok().filter(|ms| *ms > 0).map_or(DEFAULT_CYCLE, Duration::from_millis)
}

/// The data type of a property: the visitor's `dataType`, else the model's `type`, else the
/// desired value's `type` metadata.
fn data_type(
    visitor: &Map<String, Value>,
    model: Option<&DeviceModel>,
    property: &kubeedge_dmi::v1beta1::DeviceProperty,
) -> Result<DataType, ProtocolError> {
    let from_visitor = visitor.get("dataType").and_then(Value::as_str).filter(|s| !s.is_empty());
    let from_model = model
        .and_then(|m| m.spec.as_ref())
        .and_then(|s| s.properties.iter().find(|p| p.name == property.name))
        .map(|p| p.r#type.as_str())
        .filter(|s| !s.is_empty());
    let from_desired =
        property.desired.as_ref().and_then(|d| d.metadata.get("type")).map(String::as_str).filter(|s| !s.is_empty());
    let name = from_visitor
        .or(from_model)
        .or(from_desired)
        .ok_or_else(|| ProtocolError::config("no data type (model property type, visitor dataType or desired type)"))?;
    DataType::parse(name)
}

/// The handle the panel keeps for a running device.
pub(crate) struct Running {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) view: Arc<Mutex<View>>,
    pub(crate) stop: CancellationToken,
}

/// Starts the task of `device` on `tracker`.
pub(crate) fn spawn<P: Protocol>(
    protocol: Arc<P>,
    device: &Device,
    model: Option<&DeviceModel>,
    edgecore: Edgecore,
    tracker: &TaskTracker,
    stop: CancellationToken,
) -> Running {
    let spec = device.spec.clone().unwrap_or_default();
    let config =
        parse_config::<P::DeviceConfig>(spec.protocol.as_ref().and_then(|p| p.config_data.as_ref()), "protocol");
    let now = Instant::now();
    let id = device.id();
    let props: Vec<Prop<P>> = spec
        .properties
        .iter()
        .map(|p| {
            let what = format!("properties[{}].visitors", p.name);
            let raw = p.visitors.as_ref().and_then(|v| v.config_data.as_ref());
            let (map, _) = raw.map(|d| any::map_from_any(&d.data)).unwrap_or_default();
            let ty = data_type(&map, model, p);
            let visitor = parse_config::<P::Visitor>(raw, &what).and_then(|v| {
                protocol
                    .check(&v, *ty.as_ref().unwrap_or(&DataType::String))
                    .map_err(|e| ProtocolError { kind: e.kind, message: format!("{what}: {}", e.message) })?;
                Ok(v)
            });
            let access = model
                .and_then(|m| m.spec.as_ref())
                .and_then(|s| s.properties.iter().find(|mp| mp.name == p.name))
                .map(|mp| mp.access_mode.clone());
            let pusher = Pusher::start(
                p.push_method.as_ref(),
                &format!("{}-{}-{}", id.replace('/', "-"), p.name, std::process::id()),
                tracker,
                &stop,
            )
            .unwrap_or_else(|e| {
                tracing::warn!(device = %id, property = %p.name, error = %e, "Ignoring the property's push method.");
                None
            });
            Prop {
                name: p.name.clone(),
                visitor,
                ty,
                writable: access.as_deref() != Some("ReadOnly"),
                desired: p.desired.as_ref().map(|d| d.value.clone()).unwrap_or_default(),
                collect: cycle(p.collect_cycle),
                report: cycle(p.report_cycle),
                report_to_cloud: p.report_to_cloud,
                pusher,
                next_collect: now,
                next_report: now + cycle(p.report_cycle),
                latest: None,
                failing: None,
            }
        })
        .collect();
    let status = device.status.clone().unwrap_or_default();
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let view = Arc::new(Mutex::new(View { state: state::OFFLINE.to_owned(), ..View::default() }));
    let io_timeout = config.as_ref().map_or(IO_TIMEOUT, |c| protocol.timeout(c));
    let task = Task {
        protocol,
        namespace: device.namespace.clone(),
        name: device.name.clone(),
        config,
        io_timeout,
        props,
        state_cycle: status.report_to_cloud.then(|| cycle(status.report_cycle)),
        edgecore,
        view: Arc::clone(&view),
        commands: rx,
        stop: stop.clone(),
    };
    tracker.spawn(task.run());
    Running { commands: tx, view, stop }
}

struct Task<P: Protocol> {
    protocol: Arc<P>,
    namespace: String,
    name: String,
    config: Result<P::DeviceConfig, ProtocolError>,
    /// [`Protocol::timeout`] for this configuration.
    io_timeout: Duration,
    props: Vec<Prop<P>>,
    state_cycle: Option<Duration>,
    edgecore: Edgecore,
    view: Arc<Mutex<View>>,
    commands: mpsc::Receiver<Command>,
    stop: CancellationToken,
}

impl<P: Protocol> Task<P> {
    fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    async fn run(mut self) {
        let id = self.id();
        for p in &self.props {
            if let Err(e) = p.usable() {
                tracing::error!(device = %id, property = %p.name, error = %e, "Property cannot be used; the device is unhealthy.");
            }
        }
        if let Err(e) = &self.config {
            tracing::error!(device = %id, error = %e, "Device configuration is invalid; the device is unhealthy.");
        }
        let mut client: Option<P::Client> = None;
        let mut next_connect = Instant::now();
        let mut backoff = RECONNECT_START;
        let mut reported_state: Option<String> = None;
        let mut next_state = Instant::now();
        loop {
            // (Re)connect when due.
            if client.is_none()
                && let Ok(config) = &self.config
                && Instant::now() >= next_connect
            {
                let attempt = tokio::select! {
                    _ = self.stop.cancelled() => break,
                    r = tokio::time::timeout(self.io_timeout, self.protocol.connect(config)) => r,
                };
                match attempt.unwrap_or_else(|_| Err(ProtocolError::connection("connect timed out"))) {
                    Ok(mut c) => {
                        tracing::info!(device = %id, "Connected to the device.");
                        backoff = RECONNECT_START;
                        self.view.lock().error = None;
                        self.apply_desired(&mut c).await;
                        client = Some(c);
                    }
                    Err(e) if e.kind == ErrorKind::Config => {
                        tracing::error!(device = %id, error = %e, "Device configuration is invalid; the device is unhealthy.");
                        self.config = Err(e);
                    }
                    Err(e) => {
                        tracing::warn!(device = %id, error = %e, retry_in = ?backoff, "Cannot reach the device; retrying.");
                        self.view.lock().error = Some(e.message);
                        next_connect = Instant::now() + backoff;
                        backoff = (backoff * 2).min(RECONNECT_MAX);
                    }
                }
            }

            // The state, reported at once when it changes.
            let state = self.state(client.is_some());
            if reported_state.as_deref() != Some(state) {
                self.report_state(state).await;
                reported_state = Some(state.to_owned());
                next_state = Instant::now() + self.state_cycle.unwrap_or(DEFAULT_CYCLE);
            }

            let connected = client.is_some();
            let mut deadline = Instant::now() + Duration::from_secs(3600);
            if self.state_cycle.is_some() {
                deadline = deadline.min(next_state);
            }
            if !connected && self.config.is_ok() {
                deadline = deadline.min(next_connect);
            }
            for p in &self.props {
                if connected && p.usable().is_ok() {
                    deadline = deadline.min(p.next_collect);
                }
                deadline = deadline.min(p.next_report);
            }

            tokio::select! {
                _ = self.stop.cancelled() => break,
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.command(cmd, &mut client).await,
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => {}
            }

            let now = Instant::now();
            for i in 0..self.props.len() {
                if let Some(c) = client.as_mut()
                    && self.props[i].next_collect <= now
                    && self.props[i].usable().is_ok()
                {
                    self.props[i].next_collect = now + self.props[i].collect;
                    if let Err(e) = self.collect(i, c).await
                        && e.kind == ErrorKind::Connection
                    {
                        tracing::warn!(device = %id, error = %e, "Lost the device; reconnecting.");
                        self.view.lock().error = Some(e.message);
                        if let Some(c) = client.take() {
                            self.protocol.stop(c).await;
                        }
                        next_connect = Instant::now();
                    }
                }
                if self.props[i].next_report <= now {
                    self.props[i].next_report = now + self.props[i].report;
                    self.report(i).await;
                }
            }
            if self.state_cycle.is_some() && next_state <= now {
                next_state = now + self.state_cycle.unwrap_or(DEFAULT_CYCLE);
                self.report_state(self.state(client.is_some())).await;
            }
        }
        if let Some(c) = client {
            self.protocol.stop(c).await;
        }
        tracing::debug!(device = %id, "Device task stopped.");
    }

    fn state(&self, connected: bool) -> &'static str {
        let broken = self
            .config
            .as_ref()
            .err()
            .map(|e| e.message.clone())
            .or_else(|| self.props.iter().find_map(|p| p.usable().err().map(|e| format!("{}", e))));
        if let Some(why) = broken {
            let mut view = self.view.lock();
            view.state = state::UNHEALTHY.to_owned();
            view.error = Some(why);
            return state::UNHEALTHY;
        }
        let s = if connected { state::ONLINE } else { state::OFFLINE };
        self.view.lock().state = s.to_owned();
        s
    }

    async fn report_state(&self, state: &str) {
        if let Err(e) = self.edgecore.report_state(&self.namespace, &self.name, state).await {
            tracing::warn!(device = %self.id(), state, code = ?e.code(), error = %e.message(), "Reporting the device state failed.");
        }
    }

    async fn apply_desired(&self, client: &mut P::Client) {
        for p in self.props.iter().filter(|p| p.writable && !p.desired.is_empty()) {
            let Ok(prop) = p.usable() else { continue };
            let result = match prop.ty.value_of(&p.desired) {
                Ok(value) => io(self.io_timeout, self.protocol.write(client, prop, &value)).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => {
                    tracing::info!(device = %self.id(), property = %p.name, value = %p.desired, "Wrote the desired value.")
                }
                Err(e) => {
                    tracing::warn!(device = %self.id(), property = %p.name, value = %p.desired, error = %e, "Writing the desired value failed.")
                }
            }
        }
    }

    async fn collect(&mut self, i: usize, client: &mut P::Client) -> Result<(), ProtocolError> {
        let p = &self.props[i];
        let Ok(prop) = p.usable() else { return Ok(()) };
        let ty = prop.ty;
        match io(self.io_timeout, self.protocol.read(client, prop)).await {
            Ok(value) => {
                let (text, ts) = (value.to_string(), now_ms());
                self.view.lock().reported.insert(p.name.clone(), (text.clone(), ty.as_str().to_owned(), ts));
                if self.props[i].failing.take().is_some() {
                    tracing::info!(device = %self.id(), property = %self.props[i].name, "Reading the property works again.");
                }
                self.props[i].latest = Some((text, ts));
                Ok(())
            }
            Err(e) => {
                if p.failing.as_deref() != Some(e.message.as_str()) {
                    tracing::warn!(device = %self.id(), property = %p.name, error = %e, "Reading the property failed.");
                }
                self.props[i].failing = Some(e.message.clone());
                Err(e)
            }
        }
    }

    async fn report(&self, i: usize) {
        let p = &self.props[i];
        let (Some((value, ts)), Ok(ty)) = (&p.latest, &p.ty) else { return };
        if let Some(pusher) = &p.pusher {
            pusher.push(Sample { property: p.name.clone(), value: value.clone(), timestamp: *ts });
        }
        if !p.report_to_cloud {
            return;
        }
        let meta = || [("type".to_owned(), ty.as_str().to_owned()), ("timestamp".to_owned(), ts.to_string())].into();
        let twin = Twin {
            property_name: p.name.clone(),
            reported: Some(TwinProperty { value: value.clone(), metadata: meta() }),
            observed_desired: Some(TwinProperty { value: p.desired.clone(), metadata: meta() }),
        };
        if let Err(e) = self.edgecore.report_status(&self.namespace, &self.name, vec![twin], p.report_to_cloud).await {
            tracing::warn!(device = %self.id(), property = %p.name, code = ?e.code(), error = %e.message(), "Reporting the twin failed.");
        }
    }

    async fn command(&mut self, cmd: Command, client: &mut Option<P::Client>) {
        match cmd {
            Command::Read { property, reply } => {
                let result = self.live(&property, client, None).await.map(|(v, ty)| (v.to_string(), ty));
                let _ = reply.send(result);
            }
            Command::Write { property, value, reply } => {
                let result = self.live(&property, client, Some(&value)).await.map(drop);
                let _ = reply.send(result);
            }
        }
    }

    /// A read (`write` None) or a write of `property` now.
    async fn live(
        &self,
        property: &str,
        client: &mut Option<P::Client>,
        write: Option<&str>,
    ) -> Result<(DataValue, DataType), String> {
        let p = self
            .props
            .iter()
            .find(|p| p.name == property)
            .ok_or_else(|| format!("device {} has no property {property}", self.id()))?;
        let prop = p.usable().map_err(|e| e.to_string())?;
        let ty = prop.ty;
        let c = client.as_mut().ok_or_else(|| match self.view.lock().error.clone() {
            Some(why) => format!("device {} is not connected: {why}", self.id()),
            None => format!("device {} is not connected", self.id()),
        })?;
        match write {
            None => io(self.io_timeout, self.protocol.read(c, prop)).await.map(|v| (v, ty)).map_err(|e| e.to_string()),
            Some(text) => {
                let value = ty.value_of(text).map_err(|e| e.to_string())?;
                io(self.io_timeout, self.protocol.write(c, prop, &value)).await.map_err(|e| e.to_string())?;
                Ok((value, ty))
            }
        }
    }
}

/// A protocol call bounded by `timeout` (a timeout counts as a lost connection).
async fn io<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = Result<T, ProtocolError>>,
) -> Result<T, ProtocolError> {
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| Err(ProtocolError::connection("the device did not answer in time")))
}
