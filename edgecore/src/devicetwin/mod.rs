//! DeviceTwin (`twin`/`twin`): device twins kept in upstream's `device`, `device_attr` and
//! `device_twin` tables, synced with mappers over MQTT (through EventBus) and with the cloud,
//! as upstream's `edge/pkg/devicetwin`.
//!
//! - **From MQTT** (EventBus hands over `{source: bus, resource: base64url(topic)}`):
//!   `twin/update` (validated, versioned, stored; result on `twin/update/result`, changes on
//!   `twin/update/document`, differences on `twin/update/delta`, the change reported to the
//!   cloud), `twin/get`, `twin/cloud_updated`, `state/update`, `membership/get`.
//! - **From the cloud**: membership updates (group `twin`, resource `membership`), device
//!   attributes (op `updated` on `device/{id}`: stored, and what changed published on
//!   `$hw/events/device/{id}/updated`), device objects through MetaManager
//!   (`{ns}/device/{name}`: the device is added if missing, the desired values of
//!   `spec.properties[].desired.value` become the twins' expected values and a twin the cloud
//!   gave a desired value is deleted when its property leaves the Device → document and delta on
//!   MQTT; a delete removes the device), and confirmations of reports (any message with a
//!   `parent_msg_id`).
//! - **To the cloud**: `device/{ns}/{name}/twin/edge_updated` and `…/state/update` (source
//!   `twin`, group `resource`, op `update`), kept in `device_report_outbox` until the cloud
//!   answers (parent id = the report's id), resent every [`RESEND_AFTER`] and at once when the
//!   link comes back, across edgecore restarts too. Reports are coalesced per device property
//!   (and per device state): the latest value wins, so the backlog is bounded by the number of
//!   twins, not by the update rate. One message per device and kind is in flight at a time:
//!   values arriving meanwhile wait in the outbox and go, merged, once it is confirmed (or
//!   after [`RESEND_AFTER`]), so EdgeHub's `messageQPS` never queues stale values.
//!
//! One task owns the devices in memory and is the only writer of the tables. It takes what is
//! queued in its inbox (up to [`BATCH_MAX`] messages) as one batch: every change of the batch,
//! with its reports, is committed in one transaction before anything of it is published, in
//! order. A failed commit reads the tables back and answers the batch's twin updates with 500.

mod devices;
pub mod dmi;
mod outbox;
mod rules;
pub mod store;
mod twins;
pub mod types;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use kubeedge_beehive::{BoxFuture, Bus, Module, ModuleContext, ModuleError};
use kubeedge_dmi::v1beta1::device_manager_service_server::DeviceManagerServiceServer;
use kubeedge_metastore::{Op, Store};
use kubeedge_model::constants::{group, module, operation};
use kubeedge_model::protocol::edge;
use kubeedge_model::{Content, Message, now_millis};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use outbox::{Outbox, Report};
use store::DeviceState;
use types::*;

pub use kubeedge_model::twin::TYPE_DELETED;
pub use rules::{reason, valid_token, validate_value};
/// How long a report waits for the cloud's confirmation before it is sent again.
pub const RESEND_AFTER: Duration = Duration::from_secs(15);
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Reports sent per flush at most (the rest wait for the next one).
const FLUSH_MAX: usize = 512;

const DEVICE_PREFIX: &str = "$hw/events/device/";
const NODE_PREFIX: &str = "$hw/events/node/";

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// What to publish after a commit.
type Publications = Vec<(String, Vec<u8>)>;
/// How long a batch's publications may wait for room in EventBus's inbox, all together (a
/// broker that is slow or half-open must not stall the twin: after it, what finds no room is
/// dropped).
const PUBLISH_DEADLINE: Duration = Duration::from_secs(2);
/// Registrations waiting for DeviceTwin's task.
const REGISTRATIONS_QUEUE: usize = 16;
/// Results of calls to mappers (one in flight per protocol).
const CALL_RESULTS_QUEUE: usize = 64;
/// Messages taken from the inbox into one batch (one transaction) at most.
pub const BATCH_MAX: usize = 256;

/// When a publication of a batch goes out.
#[derive(Debug, Clone, Copy)]
enum Publish {
    /// In any case.
    Always,
    /// Once the batch is committed.
    Committed,
    /// Only if the batch failed to commit.
    Failed,
}

/// The changes of a run of inbox messages, committed in one transaction.
#[derive(Default)]
struct Batch {
    ops: Vec<Op>,
    pubs: Vec<(Publish, String, Vec<u8>)>,
    messages: Vec<Message>,
}

/// DeviceTwin as a bus module.
pub struct DeviceTwinModule {
    store: Store,
    node: String,
    devices: HashMap<String, DeviceState>,
    outbox: Outbox,
    batch: Batch,
    dmi: dmi::Dmi,
    /// edgecore's DMI socket, and its listener once bound.
    dmi_socket: Option<PathBuf>,
    dmi_listener: Option<tokio::net::UnixListener>,
}

impl DeviceTwinModule {
    /// A module for `node` over `store` (opened with the DeviceTwin tables).
    pub fn new(store: Store, node: String) -> Self {
        Self {
            store,
            node,
            devices: HashMap::new(),
            outbox: Outbox::default(),
            batch: Batch::default(),
            dmi: dmi::Dmi::default(),
            dmi_socket: None,
            dmi_listener: None,
        }
    }

    /// Serves DMI on `socket` (see [`dmi::socket_path`]).
    pub fn with_dmi(mut self, socket: PathBuf) -> Self {
        self.dmi_socket = Some(socket);
        self
    }

    async fn bind_dmi(&self) -> Result<Option<tokio::net::UnixListener>, ModuleError> {
        let Some(path) = &self.dmi_socket else { return Ok(None) };
        let listener = kubeedge_dmi::bind_unix(path)
            .await
            .map_err(|e| format!("modules.deviceTwin.dmiSockPath: cannot serve DMI on {}: {e}", path.display()))?;
        info!(socket = %path.display(), "DMI is served.");
        Ok(Some(listener))
    }

    /// Answers a mapper's registration once its row is stored (nothing changes if it cannot
    /// be).
    async fn registered(&mut self, reg: dmi::Registration) {
        let answer = self.dmi.answer(&reg.mapper, reg.with_data);
        let result = match self.store.apply(vec![dmi::store_op(&reg.mapper)]).await {
            Ok(()) => {
                self.dmi.registered(&reg.mapper, reg.with_data);
                Ok(answer)
            }
            Err(e) => Err(tonic::Status::internal(format!("fail to save mapper {}: {e}", reg.mapper.name))),
        };
        if reg.reply.send(result).is_err() {
            warn!(mapper = %reg.mapper.name, "The mapper gave up waiting for its registration's answer.");
        }
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

    /// Stages a change: `ops` join the batch's transaction, `reports` wait in the outbox (not
    /// sent before the commit: flushes run between batches) and `pubs` are published once the
    /// batch is committed.
    fn commit(&mut self, ops: Vec<Op>, reports: Vec<(String, Report)>, pubs: Publications) {
        self.stage(ops, reports, pubs, None);
    }

    /// [`Self::commit`], with what to publish instead should the batch fail to commit.
    fn stage(
        &mut self,
        ops: Vec<Op>,
        reports: Vec<(String, Report)>,
        pubs: Publications,
        on_failure: Option<(String, Vec<u8>)>,
    ) {
        self.batch.ops.extend(ops);
        for (k, r) in reports {
            self.outbox.rows.insert(k, r);
        }
        self.batch.pubs.extend(pubs.into_iter().map(|(t, p)| (Publish::Committed, t, p)));
        if let Some((t, p)) = on_failure {
            self.batch.pubs.push((Publish::Failed, t, p));
        }
    }

    /// Publishes `payload` on `topic` after the batch, whether it commits or not (results that
    /// change nothing).
    fn emit(&mut self, topic: String, payload: Vec<u8>) {
        self.batch.pubs.push((Publish::Always, topic, payload));
    }

    /// Commits the batch in one transaction, then publishes what it holds, in order. If the
    /// commit fails, the devices and the outbox are read back from the database and the
    /// batch's messages are handled again one transaction each, so one bad message costs only
    /// itself (its failure results go out, nothing else of it).
    async fn finish(&mut self, bus: &Bus) {
        let batch = std::mem::take(&mut self.batch);
        let committed = self.commit_ops(batch.ops).await;
        if committed || batch.messages.len() <= 1 {
            publish_all(bus, batch.pubs, committed).await;
            return;
        }
        warn!(messages = batch.messages.len(), "The batch is handled again one message at a time.");
        for msg in batch.messages {
            self.handle(msg);
            let one = std::mem::take(&mut self.batch);
            let ok = self.commit_ops(one.ops).await;
            publish_all(bus, one.pubs, ok).await;
        }
    }

    /// Applies `ops` in one transaction; on failure reads the devices and the outbox back.
    async fn commit_ops(&mut self, ops: Vec<Op>) -> bool {
        if ops.is_empty() {
            return true;
        }
        match self.store.apply(ops).await {
            Ok(()) => true,
            Err(e) => {
                warn!(error = %e, "Writing the device tables failed; the change is dropped.");
                if let Err(e) = self.load().await {
                    warn!(error = %e, "Reading the device tables back failed.");
                }
                false
            }
        }
    }

    /// Takes `msg` into the batch (kept until the batch commits).
    fn take_in(&mut self, msg: Message) {
        self.batch.messages.push(msg.clone());
        self.handle(msg);
    }

    fn handle(&mut self, msg: Message) {
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
            self.confirm(parent);
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
                self.mqtt(&topic, &payload);
            }
            module::METAMANAGER | "meta" => self.object(&msg),
            _ => {
                let res = msg.router.resource.as_str();
                if res.contains("membership/detail") {
                    debug!("Ignored a membership detail (the v1beta1 cloud does not send one).");
                } else if res.contains(kubeedge_model::constants::resource_type::MEMBERSHIP) {
                    self.membership_update(&msg.content.data());
                } else if res.contains("twin/cloud_updated") {
                    if let Some(id) = res.strip_prefix("device/").and_then(|r| r.strip_suffix("/twin/cloud_updated")) {
                        let id = id.to_owned();
                        self.cloud_sync(&id, &msg.content.data());
                    }
                } else if msg.router.operation.contains("updated")
                    && let Some(id) = res.strip_prefix("device/").filter(|id| !id.is_empty())
                {
                    // Upstream's DeviceUpdated: a device's attributes from the cloud.
                    let id = id.to_owned();
                    self.attr_update(&id, &msg.content.data());
                } else {
                    debug!(source = %msg.router.source, resource = res, "DeviceTwin ignored a message.");
                }
            }
        }
    }

    /// A message from MQTT, classified by topic as upstream's `classifyMsg`.
    fn mqtt(&mut self, topic: &str, payload: &[u8]) {
        if let Some(rest) = topic.strip_prefix(DEVICE_PREFIX) {
            let mut parts = rest.splitn(3, '/');
            let (Some(ns), Some(name), Some(action)) = (parts.next(), parts.next(), parts.next()) else {
                debug!(topic, "A device topic without an action; dropped.");
                return;
            };
            let id = format!("{ns}/{name}");
            match action {
                "twin/update" => self.twin_update(&id, payload),
                "twin/get" => self.twin_get(&id, payload),
                "twin/cloud_updated" => self.cloud_sync(&id, payload),
                "state/update" => self.state_update(&id, payload),
                "state/get" => self.state_get(&id, payload),
                _ => debug!(topic, "No twin action for this topic."),
            }
        } else if let Some(rest) = topic.strip_prefix(NODE_PREFIX) {
            if rest.ends_with("/membership/get") {
                self.membership_get(payload);
            } else {
                debug!(topic, "No twin action for this node topic.");
            }
        }
    }

    fn error_result(&mut self, topic: String, event_id: &str, code: i32, reason: &str) {
        let r = ErrorResult { event_id: event_id.to_owned(), timestamp: now_millis(), code, reason: reason.to_owned() };
        self.emit(topic, json(&r));
    }
}

fn rfc3339_now() -> String {
    kubeedge_kube_serve::time::format_system(std::time::SystemTime::now())
}

/// Publishes a batch's publications in order: those for `committed` (or for a failure),
/// and the ones that go in any case.
async fn publish_all(bus: &Bus, pubs: Vec<(Publish, String, Vec<u8>)>, committed: bool) {
    if !bus.has_module(module::EVENTBUS) {
        debug!(publications = pubs.len(), "No EventBus to publish on.");
        return;
    }
    let deadline = tokio::time::Instant::now() + PUBLISH_DEADLINE;
    let mut dropped = 0usize;
    for (when, topic, payload) in pubs {
        let go = match when {
            Publish::Always => true,
            Publish::Committed => committed,
            Publish::Failed => !committed,
        };
        if go && !publish(bus, topic, payload, deadline).await {
            dropped += 1;
        }
    }
    if dropped > 0 {
        warn!(dropped, "EventBus took no more publications of this batch in time; dropped.");
    }
}

/// Hands a payload to EventBus for MQTT (upstream `SendToEdge`), waiting for room until
/// `deadline` and not at all after it.
async fn publish(bus: &Bus, topic: String, payload: Vec<u8>, deadline: tokio::time::Instant) -> bool {
    let content = Content::string(&String::from_utf8_lossy(&payload));
    let msg = Message::build(module::TWIN, group::BUS, topic, operation::PUBLISH, content);
    if tokio::time::Instant::now() < deadline {
        matches!(tokio::time::timeout_at(deadline, bus.send(module::EVENTBUS, msg)).await, Ok(Ok(_)))
    } else {
        bus.try_send(module::EVENTBUS, msg).is_ok()
    }
}

impl Module for DeviceTwinModule {
    fn name(&self) -> &'static str {
        module::TWIN
    }

    fn group(&self) -> &'static str {
        group::TWIN
    }

    fn prepare(&mut self) -> BoxFuture<'_, Result<(), ModuleError>> {
        Box::pin(async move {
            self.dmi_listener = self.bind_dmi().await?;
            Ok(())
        })
    }

    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(async move {
            self.load().await?;
            self.dmi.load(&self.store).await?;
            let bus = ctx.bus.clone();
            // This run's tasks (the DMI server, calls to mappers) stop with it, also when it
            // fails and the supervisor runs it again.
            let stop = ctx.shutdown().child_token();
            let _stop_on_exit = stop.clone().drop_guard();
            // DMI: the server hands registrations here; calls to mappers report back on `done`.
            let (reg_tx, mut registrations) = mpsc::channel(REGISTRATIONS_QUEUE);
            let (done_tx, mut done) = mpsc::channel(CALL_RESULTS_QUEUE);
            let listener = match self.dmi_listener.take() {
                Some(l) => Some(l),
                None => self.bind_dmi().await?,
            };
            if let Some(listener) = listener {
                let svc = DeviceManagerServiceServer::new(dmi::server::Server::new(bus.clone(), reg_tx))
                    .max_decoding_message_size(dmi::MAX_MESSAGE);
                let router = tonic::transport::Server::builder().add_service(svc);
                let stop = stop.clone();
                ctx.spawn(async move {
                    if let Err(e) = kubeedge_dmi::serve_unix(router, listener, stop.cancelled_owned()).await {
                        warn!(error = %e, "The DMI server stopped.");
                    }
                });
            }
            self.dmi.start(ctx.spawner(), done_tx, stop.clone());
            let mut tick = tokio::time::interval(FLUSH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let retry = self.dmi.next_retry();
                tokio::select! {
                    // In this order: the rare branches first (a registering mapper waits at most
                    // a second, mapper-framework's deadline), the busy inbox last, so a flood of
                    // messages never starves the flush or the DMI calls.
                    biased;
                    Some(reg) = registrations.recv() => self.registered(reg).await,
                    Some(d) = done.recv() => self.dmi.done(d),
                    _ = tick.tick() => self.flush(&bus).await,
                    () = sleep_until_opt(retry), if retry.is_some() => self.dmi.retry_due(),
                    msg = ctx.recv() => {
                        let Some(msg) = msg else { return Ok(()) };
                        // Whatever else is already queued joins the same transaction.
                        self.take_in(msg);
                        for _ in 1..BATCH_MAX {
                            let Some(msg) = ctx.try_recv() else { break };
                            self.take_in(msg);
                        }
                        self.finish(&bus).await;
                    }
                }
            }
        })
    }
}

async fn sleep_until_opt(at: Option<std::time::Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
    }
}
