//! SyncController: the record of what each edge node has acknowledged, kept in ObjectSync
//! objects (`reliablesyncs.kubeedge.io/v1alpha1`, named `{node}.{uid}` in the object's
//! namespace), and the loop that makes every connected node converge on it.
//!
//! - CloudHub's sessions tell this module what their nodes acknowledged, in batches coalesced
//!   per node and handed over with backpressure, never dropped ([`crate::delivery::acks`]): an
//!   insert or update sets the ObjectSync's `status.objectResourceVersion` (creating it
//!   first), a delete removes it. EdgeController reads the same record so it does not resend
//!   what a node has.
//! - When a node (re)connects its own Node object is sent again (as `update`).
//! - A reconcile loop over a queue of nodes brings each connected node to EdgeController's
//!   view: objects newer than their ObjectSync are sent as `update`, objects it should have but
//!   never acknowledged as `insert`, and ObjectSyncs whose object vanished (or was replaced
//!   under the same name) become a `delete` carrying namespace, name and uid. Changes queue a
//!   node: it (re)connects — upstream waits for its next 5 s loop —, an ObjectSync write for it
//!   failed, a message for it was dropped before its session, a view has just listed. A safety
//!   sweep visits each connected node once every [`SWEEP_EVERY`] (upstream: all every 5 s); a
//!   node is in the queue at most once, and ACKs are handled between two nodes, so a long
//!   queue never holds them up.
//!
//! The module task is the only writer of the acknowledged versions ([`SyncsWriter`]):
//! EdgeController reads them, and the ObjectSync writers report failures back to it.
//! - ObjectSyncs of nodes that no longer exist are deleted at start and when a node is deleted.
//! - Anti-entropy ([`inventory`]): an edge of ours (it announces the `inventory` feature) is
//!   asked what it holds when it connects and every [`INVENTORY_EVERY`], and whatever differs
//!   from the view is repaired — what the ObjectSyncs cannot know (an ACK whose record was lost
//!   with a crash, a delete made while cloudcore was down).

mod inventory;
mod watch;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kubeedge_apis::reliablesyncs::v1alpha1::{ObjectSync, ObjectSyncSpec};
use kubeedge_apis::reliablesyncs::{object_sync_name, parse_object_sync_name};
use kubeedge_beehive::{BoxFuture, Bus, Module, ModuleContext, ModuleError, Spawner};
use kubeedge_config::cloudcore::KubeApiConfig;
use kubeedge_model::constants::{module, resource_type};
use kubeedge_model::{CloudResource, Content, Message, Operation};
use prometheus::{IntCounterVec, Opts, Registry};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::cloudhub::module::SESSIONS_QUERY;
use crate::delivery::acks::{AckInbox, AckNote, Notes};
use crate::delivery::devices::{DeviceView, MemberDevice, membership_message};
use crate::delivery::messages::{Sender, delete_message, object_message};
pub use crate::delivery::syncs::{Synced, Syncs, SyncsWriter};
use crate::delivery::view::{View, api_version_of, kind_of};
use crate::kubeclient::kube_client;

/// How often the reconcile loop's timer ticks (a slice of the safety sweep, anti-entropy
/// questions due).
pub const RECONCILE_EVERY: Duration = Duration::from_secs(5);
/// How often each connected node is reconciled without a change asking for it: a safety net
/// (upstream walks every node every 5 s).
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// How often the ObjectSyncs of nodes that no longer exist are looked for (besides at start
/// and on EdgeController's notice of a deleted node, which may be lost when this module's
/// inbox is full).
const COLLECT_EVERY: Duration = Duration::from_secs(600);
/// How often an edge of ours is asked what it holds (and at once when it connects); each node
/// is asked up to a fifth earlier, so a fleet that connected together spreads out.
pub const INVENTORY_EVERY: Duration = Duration::from_secs(300);
/// The next question after an unanswered or unreadable one (doubling with each failure in a
/// row, up to [`INVENTORY_EVERY`]).
const INVENTORY_RETRY: Duration = Duration::from_secs(30);
/// The next question after an answer that showed objects to confirm ([`inventory::Plan::suspects`])
/// or more to repair than one answer does.
const INVENTORY_CONFIRM: Duration = Duration::from_secs(10);
/// How long an edge has to answer.
const INVENTORY_TIMEOUT: Duration = Duration::from_secs(60);
/// Questions awaiting their answer at once, at most.
const MAX_ASKING: usize = 32;

/// The types whose delivery is recorded in ObjectSyncs.
pub(crate) fn tracked(ty: &str) -> bool {
    matches!(
        ty,
        resource_type::POD
            | resource_type::CONFIGMAP
            | resource_type::SECRET
            | resource_type::DEVICE
            | resource_type::DEVICE_MODEL
    )
}

fn is_device_type(ty: &str) -> bool {
    ty == resource_type::DEVICE || ty == resource_type::DEVICE_MODEL
}

/// The SyncController module (`synccontroller`).
pub struct SyncControllerModule {
    kube: KubeApiConfig,
    view: View,
    devices: Option<DeviceView>,
    syncs: Syncs,
    metrics: Option<InventoryMetrics>,
    /// What CloudHub's sessions report their nodes acknowledged.
    acks: Option<AckInbox>,
}

/// Counters of the anti-entropy questions and what they repaired.
#[derive(Clone)]
pub struct InventoryMetrics {
    asked: IntCounterVec,
    repairs: IntCounterVec,
}

impl InventoryMetrics {
    /// Registers `kubeedge_synccontroller_inventories_total{result}` and
    /// `kubeedge_synccontroller_inventory_repairs_total{action}`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            asked: IntCounterVec::new(
                Opts::new(
                    "kubeedge_synccontroller_inventories_total",
                    "Anti-entropy questions to edges, by result (answered, unanswered, malformed).",
                ),
                &["result"],
            )?,
            repairs: IntCounterVec::new(
                Opts::new(
                    "kubeedge_synccontroller_inventory_repairs_total",
                    "What anti-entropy found different on edges, by action (insert, update, delete, record).",
                ),
                &["action"],
            )?,
        };
        registry.register(Box::new(m.asked.clone()))?;
        registry.register(Box::new(m.repairs.clone()))?;
        Ok(m)
    }
}

impl SyncControllerModule {
    /// A module reading EdgeController's `view` and keeping `syncs`.
    pub fn new(kube: KubeApiConfig, view: View, syncs: Syncs) -> Self {
        Self { kube, view, devices: None, syncs, metrics: None, acks: None }
    }

    /// Records what CloudHub's sessions report through `acks` (CloudHub's [`AckFeed`]
    /// side, made with it by [`crate::delivery::acks::channel`]).
    ///
    /// [`AckFeed`]: crate::delivery::acks::AckFeed
    pub fn with_acks(mut self, acks: AckInbox) -> Self {
        self.acks = Some(acks);
        self
    }

    /// Counts the anti-entropy questions and repairs.
    pub fn with_metrics(mut self, metrics: InventoryMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Also reconciles devices and device models against DeviceController's `devices`.
    pub fn with_devices(mut self, devices: DeviceView) -> Self {
        self.devices = Some(devices);
        self
    }
}

struct Controller {
    client: kube::Client,
    view: View,
    devices: Option<DeviceView>,
    syncs: SyncsWriter,
    tx: Sender,
    writers: AckWriters,
    connected: HashSet<String>,
    /// The current session of each connected node.
    sessions: HashMap<String, u64>,
    /// Nodes to reconcile, each at most once.
    queue: NodeQueue,
    /// Ticks so far: which slice of the connected nodes the safety sweep visits.
    ticks: u64,
    /// Whether EdgeController's and DeviceController's views had listed at the last tick.
    views_synced: (bool, bool),
    /// Anti-entropy: the connected edges that answer inventory questions.
    asked: HashMap<String, Asked>,
    /// Questions awaiting their answer.
    asking: usize,
    /// Whether the types asked included devices: when they start to, every edge is asked again.
    asked_devices: bool,
    bus: Bus,
    spawner: Spawner,
    answers: mpsc::Sender<Answer>,
    metrics: Option<InventoryMetrics>,
}

/// An edge of ours, for anti-entropy.
struct Asked {
    session: u64,
    /// When to ask next.
    next: Instant,
    /// A question is awaiting its answer.
    pending: bool,
    /// Questions unanswered (or unreadable) in a row.
    failures: u32,
    /// What the last answer showed that nothing knows (deleted if the next shows it too).
    suspects: HashSet<String>,
}

/// An edge's answer, read (or why there is none).
struct Answer {
    node: String,
    session: u64,
    types: Vec<&'static str>,
    /// The inventory and its size in bytes, or (`unanswered` or `malformed`, why).
    reply: Result<(kubeedge_model::protocol::inventory::Inventory, usize), (&'static str, String)>,
}

/// A FIFO of node names without duplicates.
#[derive(Default)]
struct NodeQueue {
    order: VecDeque<String>,
    queued: HashSet<String>,
}

impl NodeQueue {
    fn push(&mut self, node: &str) {
        if self.queued.insert(node.to_owned()) {
            self.order.push_back(node.to_owned());
        }
    }

    fn pop(&mut self) -> Option<String> {
        let node = self.order.pop_front()?;
        self.queued.remove(&node);
        Some(node)
    }

    fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

impl Controller {
    fn api(&self, ns: &str) -> Api<ObjectSync> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// Loads every ObjectSync into the shared record.
    async fn load(&mut self) -> Result<(), kube::Error> {
        let all: Api<ObjectSync> = Api::all(self.client.clone());
        let list = all.list(&ListParams::default()).await?;
        let mut records = Vec::new();
        for os in list.items {
            let (Some(name), Some(ns)) = (os.metadata.name.as_deref(), os.metadata.namespace.as_deref()) else {
                continue;
            };
            let Some((node, uid)) = parse_object_sync_name(name) else { continue };
            let rv = os.status.as_ref().and_then(|s| s.object_resource_version.parse().ok()).unwrap_or(0);
            let ty = os.spec.object_kind.to_lowercase();
            if !tracked(&ty) {
                continue;
            }
            let s = Synced { rv, ty, namespace: ns.to_owned(), name: os.spec.object_name.clone() };
            records.push((node.to_owned(), uid.to_owned(), s));
        }
        info!(objectsyncs = records.len(), "Loaded what edge nodes have acknowledged.");
        self.syncs.replace_all(records);
        Ok(())
    }

    /// Deletes the ObjectSyncs of nodes that do not exist (upstream: 5 attempts, 1 s apart):
    /// `only` that node (it was deleted), or every node missing from one list of the nodes.
    async fn collect_deleted_nodes(&mut self, only: Option<&str>) {
        let existing: Option<HashSet<String>> = match only {
            Some(_) => None,
            None => {
                let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(self.client.clone());
                match nodes.list_metadata(&ListParams::default()).await {
                    Ok(list) => Some(list.items.into_iter().filter_map(|n| n.metadata.name).collect()),
                    Err(e) => {
                        warn!(error = %e, "Listing nodes failed; ObjectSyncs of deleted nodes are collected later.");
                        return;
                    }
                }
            }
        };
        for (node, uid, ns) in self.syncs.syncs().all() {
            if only.is_some_and(|o| o != node) || existing.as_ref().is_some_and(|e| e.contains(&node)) {
                continue;
            }
            let name = object_sync_name(&node, &uid);
            for attempt in 1..=5 {
                match self.api(&ns).delete(&name, &DeleteParams::default()).await {
                    Ok(_) => break,
                    Err(kube::Error::Api(s)) if s.code == 404 => break,
                    Err(e) if attempt == 5 => warn!(objectsync = name, error = %e, "Could not delete an ObjectSync."),
                    Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
                }
            }
            self.syncs.remove(&node, &uid);
            debug!(objectsync = name, "Collected the ObjectSync of a deleted node.");
        }
    }

    /// A session's batch: what its node acknowledged, and whether to reconcile it.
    async fn on_notes(&mut self, notes: Notes) {
        for note in notes.acks {
            self.record_ack(&notes.node, note).await;
        }
        if notes.resync && self.connected.contains(&notes.node) {
            self.queue.push(&notes.node);
        }
    }

    /// An edge acknowledged an object message. The shared record is updated here, at once and
    /// in ACK order, so the reconcile loop never resends what was ACKed; the ObjectSync write
    /// goes to the node's writer (see [`AckWriters`]).
    async fn record_ack(&mut self, node: &str, note: AckNote) {
        let AckNote { uid, ty, namespace: ns, name, rv } = note;
        let Some(rv) = rv else {
            self.syncs.remove(node, &uid);
            self.writers.send(AckWrite::Delete { node: node.to_owned(), uid, ns }).await;
            return;
        };
        let before = self.syncs.syncs().get(node, &uid);
        if before.as_ref().is_some_and(|s| s.rv >= rv) {
            return;
        }
        let synced = Synced { rv, ty: ty.clone(), namespace: ns.clone(), name: name.clone() };
        self.syncs.set(node, &uid, synced);
        let create = before.is_none().then(|| ObjectSyncSpec {
            object_api_version: api_version_of(&ty).to_owned(),
            object_kind: kind_of(&ty).to_owned(),
            object_name: name,
        });
        self.writers.send(AckWrite::Upsert { node: node.to_owned(), uid, ns, rv, create }).await;
    }

    /// A message from CloudHub (connected, disconnected) or EdgeController (a node deleted).
    async fn handle(&mut self, msg: Message) {
        let node = CloudResource::node_of(&msg.router.resource).unwrap_or_default();
        let notice = msg.router.resource == CloudResource::node_notice(node);
        match (msg.router.source.as_str(), msg.operation()) {
            (module::CLOUDHUB, Operation::Connected) => {
                let node = node.to_owned();
                self.connected.insert(node.clone());
                self.sessions.insert(node.clone(), session_of(&msg));
                if answers_inventory(&msg) {
                    let a = Asked {
                        session: session_of(&msg),
                        next: Instant::now(),
                        pending: false,
                        failures: 0,
                        suspects: HashSet::new(),
                    };
                    self.asked.insert(node.clone(), a);
                    self.ask_due();
                } else {
                    self.asked.remove(&node);
                }
                // Its Node object too: it may have changed while it was away.
                if let Some(mut m) = self.view.node_message(&node) {
                    m.header.id = Message::new().header.id;
                    self.tx.raw(m).await;
                }
                self.queue.push(&node);
            }
            (module::CLOUDHUB, Operation::Disconnected) => {
                // A late notice of a session already replaced is ignored.
                if self.sessions.get(node).is_none_or(|s| *s == session_of(&msg)) {
                    self.connected.remove(node);
                    self.sessions.remove(node);
                    self.asked.remove(node);
                }
            }
            (module::EDGECONTROLLER, Operation::Delete) if notice => {
                let node = node.to_owned();
                self.collect_deleted_nodes(Some(&node)).await;
            }
            _ => debug!(resource = %msg.router.resource, "SyncController ignored a message."),
        }
    }

    /// Every [`RECONCILE_EVERY`]: a slice of the connected nodes is reconciled, so that each is
    /// visited once every [`SWEEP_EVERY`] — a safety net; delivery is driven by changes (a node
    /// connecting, a failed ObjectSync write, a message dropped before its session), not by this
    /// walk. Every connected node is reconciled when a view has just listed (a node that
    /// connected before could not be). Anti-entropy questions that are due are asked.
    fn on_tick(&mut self) {
        let synced = (self.view.is_synced(), self.devices.as_ref().is_some_and(DeviceView::is_synced));
        let listed = (synced.0 && !self.views_synced.0) || (synced.1 && !self.views_synced.1);
        self.views_synced = synced;
        let slices = (SWEEP_EVERY.as_secs() / RECONCILE_EVERY.as_secs()).max(1);
        let slice = self.ticks % slices;
        self.ticks = self.ticks.wrapping_add(1);
        for node in &self.connected {
            if listed || slice_of(node, slices) == slice {
                self.queue.push(node);
            }
        }
        // Pods whose status alone changed: their records move forward (nothing is sent).
        for node in self.view.take_status_only() {
            if self.connected.contains(&node) {
                self.queue.push(&node);
            }
        }
        self.ask_due();
    }

    /// The types an edge can be asked about now: those whose view has listed.
    fn inventory_types(&self) -> Vec<&'static str> {
        let mut types = Vec::new();
        if self.view.is_synced() {
            types.extend([resource_type::POD, resource_type::CONFIGMAP, resource_type::SECRET]);
        }
        if self.devices.as_ref().is_some_and(DeviceView::is_synced) {
            types.extend([resource_type::DEVICE, resource_type::DEVICE_MODEL]);
        }
        types
    }

    /// Asks the edges whose question is due, at most [`MAX_ASKING`] awaiting at once.
    fn ask_due(&mut self) {
        let types = self.inventory_types();
        if !self.view.is_synced() {
            return;
        }
        let now = Instant::now();
        let devices = types.contains(&resource_type::DEVICE);
        if devices && !self.asked_devices {
            // DeviceController's view has listed: what edges hold of devices is asked now, not
            // at their next turn.
            for a in self.asked.values_mut() {
                a.next = a.next.min(now);
            }
        }
        self.asked_devices = devices;
        for (node, a) in &mut self.asked {
            if self.asking >= MAX_ASKING {
                break;
            }
            if a.pending || a.next > now {
                continue;
            }
            a.pending = true;
            self.asking += 1;
            let (bus, tx, node, session, types) =
                (self.bus.clone(), self.answers.clone(), node.clone(), a.session, types.clone());
            self.spawner.spawn(async move {
                use kubeedge_model::protocol::inventory;
                let question = inventory::request(&node, &types);
                // Read here, off the module's task.
                let reply = match bus.send_sync(module::CLOUDHUB, question, INVENTORY_TIMEOUT).await {
                    Err(e) => Err(("unanswered", e.to_string())),
                    Ok(m) => match inventory::parse_answer(&m) {
                        Ok(inv) => Ok((inv, m.content.raw().len())),
                        Err(e) => Err(("malformed", e.to_string())),
                    },
                };
                let _ = tx.send(Answer { node, session, types, reply }).await;
            });
        }
    }

    /// An edge answered (or did not): whatever differs from the view is repaired.
    async fn on_answer(&mut self, a: Answer) {
        self.asking = self.asking.saturating_sub(1);
        self.repair(a).await;
        // A freed slot goes to the next edge due, not to the next tick.
        self.ask_due();
    }

    async fn repair(&mut self, a: Answer) {
        let Some(asked) = self.asked.get_mut(&a.node).filter(|s| s.session == a.session) else {
            return; // gone or reconnected since: its new session is asked on its own
        };
        asked.pending = false;
        let metrics = self.metrics.clone();
        let count = |result: &str| {
            if let Some(m) = &metrics {
                m.asked.with_label_values(&[result]).inc();
            }
        };
        let (inv, bytes) = match a.reply {
            Err((result, why)) => {
                asked.failures = asked.failures.saturating_add(1);
                let wait = INVENTORY_RETRY.saturating_mul(1 << asked.failures.min(4)).min(INVENTORY_EVERY);
                asked.next = Instant::now() + wait;
                count(result);
                warn!(node = a.node, result, error = why, retry_in = ?wait, "No usable answer to the inventory question.");
                return;
            }
            Ok(answer) => answer,
        };
        asked.failures = 0;
        count("answered");
        let devices = self.devices.as_ref().filter(|d| d.is_synced());
        let mut desired = self.view.desired(&a.node);
        if let Some(d) = devices {
            desired.extend(d.desired(&a.node));
        }
        let types: Vec<&str> = a.types.iter().copied().filter(|t| !is_device_type(t) || devices.is_some()).collect();
        let known = inventory::Known {
            desired: &desired,
            syncs: self.syncs.syncs(),
            view: &self.view,
            devices,
            suspects: &asked.suspects,
        };
        let plan = inventory::plan(&a.node, &inv, &types, &known);
        // Suspects are confirmed (or cleared) by the next answer, soon; so is what one answer
        // could not repair.
        let soon = !plan.suspects.is_empty() || plan.cut;
        asked.next =
            Instant::now() + if soon { INVENTORY_CONFIRM } else { spread(&a.node, a.session, INVENTORY_EVERY) };
        asked.suspects = plan.suspects;
        if plan.sends.is_empty() && plan.records.is_empty() {
            debug!(
                node = a.node,
                objects = inv.len(),
                bytes,
                suspects = asked.suspects.len(),
                "The edge holds what it should."
            );
            return;
        }
        let recorded = plan.records.len();
        for (uid, s) in plan.records {
            let before = self.syncs.syncs().get(&a.node, &uid);
            let create = before.is_none().then(|| ObjectSyncSpec {
                object_api_version: api_version_of(&s.ty).to_owned(),
                object_kind: kind_of(&s.ty).to_owned(),
                object_name: s.name.clone(),
            });
            let (ns, rv) = (s.namespace.clone(), s.rv);
            self.syncs.set(&a.node, &uid, s);
            self.writers.send(AckWrite::Upsert { node: a.node.clone(), uid, ns, rv, create }).await;
        }
        for m in plan.sends {
            self.tx.raw(m).await;
        }
        if let Some(m) = &self.metrics {
            for (action, n) in
                [("insert", plan.inserts), ("update", plan.updates), ("delete", plan.deletes), ("record", recorded)]
            {
                m.repairs.with_label_values(&[action]).inc_by(n as u64);
            }
        }
        info!(
            node = a.node,
            objects = inv.len(),
            bytes,
            inserted = plan.inserts,
            updated = plan.updates,
            deleted = plan.deletes,
            recorded,
            cut = plan.cut,
            "Anti-entropy repaired an edge node."
        );
    }

    /// Brings `node` to what it should have.
    async fn reconcile(&mut self, node: &str) {
        if !self.view.is_synced() {
            return;
        }
        // Devices are reconciled once DeviceController's view is complete; their records are
        // left alone before that (and when DeviceController does not run).
        let devices = self.devices.clone().filter(DeviceView::is_synced);
        let devices = devices.as_ref();
        let mut desired = self.view.desired(node);
        if let Some(d) = devices {
            desired.extend(d.desired(node));
        }
        let mut present: HashSet<String> = HashSet::new();
        let (mut sent, mut deleted, mut advanced) = (0, 0, 0);
        for obj in &desired {
            present.insert(obj.uid.clone());
            let op = match self.syncs.syncs().get(node, &obj.uid) {
                None => Operation::Insert,
                Some(s) if s.rv < obj.since => Operation::Update,
                Some(s) if s.rv < obj.rv => {
                    // Only the pod's status changed since what the node holds, and the edge
                    // reports that itself: the record moves forward, nothing is sent (as
                    // EdgeController sends nothing for a status-only change).
                    let note = AckNote {
                        uid: obj.uid.clone(),
                        ty: obj.ty.to_owned(),
                        namespace: obj.namespace.clone(),
                        name: obj.name.clone(),
                        rv: Some(obj.rv),
                    };
                    self.record_ack(node, note).await;
                    advanced += 1;
                    continue;
                }
                Some(_) => continue,
            };
            if obj.ty == resource_type::DEVICE && op == Operation::Insert {
                // A device the node never acknowledged: its membership goes with it (it asks
                // for no ACK, so it is repeated with every re-send of the device).
                if let Some(d) = devices.and_then(|d| d.device(&obj.namespace, &obj.name)) {
                    self.tx.raw(membership_message(node, vec![d.member()], vec![])).await;
                }
            }
            self.tx.raw(object_message(node, obj, op)).await;
            sent += 1;
        }
        for (uid, s) in self.syncs.syncs().for_node(node) {
            if present.contains(&uid) {
                continue;
            }
            if is_device_type(&s.ty) && devices.is_none() {
                continue;
            }
            // Not wanted on this node any more. Configmaps and secrets stay while they exist
            // (upstream keeps them too); pods, devices (moved or deleted), models no device of
            // the node uses any more, and vanished objects are deleted.
            let still_exists = (s.ty == resource_type::CONFIGMAP || s.ty == resource_type::SECRET)
                && self
                    .view
                    .object(&(kind_static(&s.ty), s.namespace.clone(), s.name.clone()))
                    .is_some_and(|o| o.uid == uid);
            if still_exists {
                continue;
            }
            if s.ty == resource_type::DEVICE {
                let gone = MemberDevice {
                    id: format!("{}/{}", s.namespace, s.name),
                    name: s.name.clone(),
                    ..Default::default()
                };
                self.tx.raw(membership_message(node, vec![], vec![gone])).await;
            }
            let (api_version, kind) = (api_version_of(&s.ty), kind_of(&s.ty));
            self.tx.raw(delete_message(node, &s.ty, api_version, kind, &s.namespace, &s.name, &uid)).await;
            deleted += 1;
        }
        if sent + deleted > 0 {
            info!(node, sent, deleted, advanced, "Reconciled an edge node.");
        } else if advanced > 0 {
            debug!(node, advanced, "Recorded status-only pod versions of an edge node.");
        }
    }
}

/// ObjectSync writers: the API writes that record ACKs, off the module's task. One writer per
/// shard of nodes keeps each node's writes in order (create before status, a delete after the
/// writes before it); the shards write concurrently. Done in the module's task, one ACK at a
/// time (1–2 API round trips each), the records fell behind the ACKs at a few hundred per
/// second, and every object whose record lagged was sent again by the next reconcile loop —
/// more ACKs, further behind (the 1,000-node density run: 4.6 messages per pod, and 700 ACKs/s
/// that never settled).
struct AckWriters {
    shards: Vec<tokio::sync::mpsc::Sender<AckWrite>>,
}

/// Writers (shards of nodes).
const ACK_WRITERS: usize = 16;
/// Writes queued per writer; full ⇒ the module waits (backpressure onto CloudHub's ACK
/// notices, which are dropped when SyncController's inbox is full — the record is then
/// repaired by the reconcile loop).
const ACK_WRITER_CAP: usize = 1024;

/// An ObjectSync write that failed: the module forgets the record (if no newer ACK replaced
/// it) and reconciles the node, which resends the object.
struct AckFailed {
    node: String,
    uid: String,
    rv: u64,
}

enum AckWrite {
    Upsert { node: String, uid: String, ns: String, rv: u64, create: Option<ObjectSyncSpec> },
    Delete { node: String, uid: String, ns: String },
}

impl AckWriters {
    /// Starts the writers; they end when the module drops this. Failures go to `failed`
    /// (unbounded: at most one per queued write, and the writers must never wait on the module
    /// while it waits on them).
    fn start(client: kube::Client, failed: mpsc::UnboundedSender<AckFailed>, spawner: &Spawner) -> Self {
        let shards = (0..ACK_WRITERS)
            .map(|_| {
                let (tx, mut rx) = mpsc::channel(ACK_WRITER_CAP);
                let (client, failed) = (client.clone(), failed.clone());
                spawner.spawn(async move {
                    while let Some(w) = rx.recv().await {
                        if let Some(f) = write_ack(&client, w).await {
                            let _ = failed.send(f);
                        }
                    }
                });
                tx
            })
            .collect();
        Self { shards }
    }

    async fn send(&self, w: AckWrite) {
        let (AckWrite::Upsert { node, .. } | AckWrite::Delete { node, .. }) = &w;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(node, &mut h);
        let shard = usize::try_from(std::hash::Hasher::finish(&h) % ACK_WRITERS as u64).unwrap_or(0);
        let _ = self.shards[shard].send(w).await;
    }
}

/// One ACK's ObjectSync write; a failed upsert is returned.
async fn write_ack(client: &kube::Client, w: AckWrite) -> Option<AckFailed> {
    match w {
        AckWrite::Delete { node, uid, ns } => {
            let os_name = object_sync_name(&node, &uid);
            let api: Api<ObjectSync> = Api::namespaced(client.clone(), &ns);
            match api.delete(&os_name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => warn!(objectsync = os_name, error = %e, "Deleting an ObjectSync failed."),
            }
        }
        AckWrite::Upsert { node, uid, ns, rv, create } => {
            let os_name = object_sync_name(&node, &uid);
            let api: Api<ObjectSync> = Api::namespaced(client.clone(), &ns);
            if let Some(spec) = create {
                match api.create(&PostParams::default(), &ObjectSync::new(&os_name, spec)).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => {
                        warn!(objectsync = os_name, error = %e, "Creating an ObjectSync failed.");
                        return Some(AckFailed { node, uid, rv });
                    }
                }
            }
            let status = serde_json::json!({"status": {"objectResourceVersion": rv.to_string()}});
            if let Err(e) = api.patch_status(&os_name, &PatchParams::default(), &Patch::Merge(status)).await {
                warn!(objectsync = os_name, error = %e, "Recording an ACK failed; the node is reconciled again.");
                return Some(AckFailed { node, uid, rv });
            }
        }
    }
    None
}

/// Which of `slices` slices of the safety sweep `node` is in.
fn slice_of(node: &str, slices: u64) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(node, &mut h);
    std::hash::Hasher::finish(&h) % slices
}

/// The session id a CloudHub notice carries (0 if absent).
fn session_of(msg: &Message) -> u64 {
    msg.content.as_str().and_then(|s| s.split_whitespace().next().and_then(|id| id.parse().ok())).unwrap_or(0)
}

/// Whether a `connected` notice says the edge answers inventory questions.
fn answers_inventory(msg: &Message) -> bool {
    msg.content.as_str().is_some_and(|s| s.split_whitespace().skip(1).any(|f| f == "inventory"))
}

/// `every`, less up to a fifth chosen by node and session: edges that connected together are
/// not all asked together again.
fn spread(node: &str, session: u64, every: Duration) -> Duration {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(&(node, session), &mut h);
    let fifth = every / 5;
    let off = std::hash::Hasher::finish(&h) % (fifth.as_millis().max(1) as u64);
    every - Duration::from_millis(off)
}

fn kind_static(ty: &str) -> &'static str {
    match ty {
        resource_type::CONFIGMAP => resource_type::CONFIGMAP,
        resource_type::SECRET => resource_type::SECRET,
        _ => resource_type::POD,
    }
}

impl Module for SyncControllerModule {
    fn name(&self) -> &'static str {
        module::SYNCCONTROLLER
    }

    fn group(&self) -> &'static str {
        module::SYNCCONTROLLER
    }

    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(async move {
            let client = kube_client(&self.kube).await?;
            let (failed_tx, mut failed) = mpsc::unbounded_channel();
            let (answers_tx, mut answers) = mpsc::channel(MAX_ASKING);
            let mut c = Controller {
                client: client.clone(),
                view: self.view.clone(),
                devices: self.devices.clone(),
                syncs: SyncsWriter::new(self.syncs.clone()),
                tx: Sender { bus: ctx.bus.clone(), syncs: None },
                writers: AckWriters::start(client.clone(), failed_tx, &ctx.spawner()),
                connected: HashSet::new(),
                sessions: HashMap::new(),
                queue: NodeQueue::default(),
                ticks: 0,
                views_synced: (false, false),
                asked: HashMap::new(),
                asking: 0,
                asked_devices: false,
                bus: ctx.bus.clone(),
                spawner: ctx.spawner(),
                answers: answers_tx,
                metrics: self.metrics.clone(),
            };
            crate::kubeclient::install_crds(&c.client, kubeedge_apis::reliablesyncs::GROUP).await?;
            c.load().await.map_err(|e| format!("listing ObjectSyncs failed: {e}"))?;
            // Other replicas' ObjectSync writes, merged into the record (see `watch`): from here
            // on the record remembers its own changes until the API shows them back.
            c.syncs.track_local_changes();
            let mut objectsyncs = watch::start(client.clone(), &ctx.spawner(), ctx.shutdown().clone());
            let mut merge = watch::Merge::default();
            c.collect_deleted_nodes(None).await;
            // This run knows no sessions yet (a restart forgets them): CloudHub announces each
            // live one as if it had just connected.
            if ctx.bus.has_module(module::CLOUDHUB) {
                let ask = Message::build(
                    module::SYNCCONTROLLER,
                    module::CLOUDHUB,
                    SESSIONS_QUERY,
                    Operation::Query,
                    Content::null(),
                );
                let _ = ctx.bus.send(module::CLOUDHUB, ask).await;
            }
            let mut tick = tokio::time::interval(RECONCILE_EVERY);
            // What CloudHub's sessions report (one run at a time holds the receiver).
            let mut acks = match &self.acks {
                Some(inbox) => Some(inbox.lock().await),
                None => None,
            };
            let mut collect = tokio::time::interval_at(tokio::time::Instant::now() + COLLECT_EVERY, COLLECT_EVERY);
            let shutdown = ctx.shutdown().clone();
            loop {
                // Not `biased`: ready branches are taken at random, so neither ACKs nor the
                // queue starve; a shutdown is seen at the latest on the next turn.
                if shutdown.is_cancelled() {
                    return Ok(());
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = collect.tick() => c.collect_deleted_nodes(None).await,
                    msg = ctx.recv() => {
                        let Some(msg) = msg else { return Ok(()) };
                        c.handle(msg).await;
                    }
                    Some(a) = answers.recv() => c.on_answer(a).await,
                    Some(change) = objectsyncs.recv() => merge.apply(&mut c.syncs, change),
                    Some(f) = failed.recv() => {
                        c.syncs.remove_if_at(&f.node, &f.uid, f.rv);
                        if c.connected.contains(&f.node) {
                            c.queue.push(&f.node);
                        }
                    }
                    _ = tick.tick() => c.on_tick(),
                    Some(notes) = async { match acks.as_mut() { Some(rx) => rx.recv().await, None => std::future::pending().await } } => {
                        c.on_notes(notes).await;
                    }
                    () = std::future::ready(()), if !c.queue.is_empty() => {
                        if let Some(node) = c.queue.pop().filter(|n| c.connected.contains(n)) {
                            tokio::select! {
                                _ = shutdown.cancelled() => return Ok(()),
                                () = c.reconcile(&node) => {}
                            }
                        }
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::NodeQueue;

    #[test]
    fn a_node_is_queued_once_and_in_order() {
        let mut q = NodeQueue::default();
        for n in ["a", "b", "a", "c", "b"] {
            q.push(n);
        }
        assert_eq!(q.pop().as_deref(), Some("a"));
        q.push("a");
        let rest: Vec<String> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(rest, ["b", "c", "a"]);
        assert!(q.is_empty());
    }
}
