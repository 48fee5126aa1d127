//! Kubernetes → edges (upstream `downstream.go`): watches on edge nodes, pods, configmaps and
//! secrets, turned into `insert`/`update`/`delete` messages for CloudHub (source
//! `edgecontroller`, group `resource`, `resourceversion` = the object's).
//!
//! - Nodes labelled `node-role.kubernetes.io/edge`: added or modified → `update` of
//!   `node/{n}/null/node/{n}` when labels, annotations or spec changed (upstream also echoes
//!   status-only changes; the edge ignores them); deleted → `delete`.
//! - Pods bound to an edge node: `insert`, `update` when metadata or spec changed (a pod
//!   already terminating is sent as `update`), `delete`; a pod that leaves its node is deleted
//!   there.
//! - ConfigMaps and Secrets go to every edge node running a pod that uses them (secrets always
//!   as `update`, as upstream), and along with the pod when it is added — upstream waits for
//!   edged to query them.
//! - After a re-list (a watch that expired), objects that vanished meanwhile are deleted.
//! - A message an edge already acknowledged at this resourceVersion (its ObjectSync says so) is
//!   not sent again, so a cloudcore restart does not resend every pod.
//!
//! One task, the store task, reads all four watches and owns the view's only writer: every
//! change of the view and what is sent because of it happen there, in watch order. Pods are
//! read only once the first list of edge nodes is in, so they are judged against a complete
//! set of edge nodes.

use std::collections::{HashMap, HashSet};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kubeedge_model::constants::{group, module, resource_type};
use kubeedge_model::{CloudResource, Content, Message, Operation, ResourcePath};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use crate::delivery::messages::{Outbox, Sender, delete_message, object_message};
use crate::delivery::refs::{meta_spec_hash, pod_spec, refs_of, spec_hash};
use crate::delivery::view::{Obj, PodChange, ViewWriter};

/// The label that makes a node an edge node.
pub const EDGE_NODE_LABEL: &str = "node-role.kubernetes.io/edge";

fn node_meta_hash(n: &Node) -> u64 {
    meta_spec_hash(&n.metadata, &n.spec)
}

type WatchEvent<K> = Result<Event<K>, watcher::Error>;

/// A watch of `K` (all namespaces), its errors retried with kube-rs' default backoff.
fn watch<K>(api: Api<K>, cfg: watcher::Config) -> futures::stream::BoxStream<'static, WatchEvent<K>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher::watcher(api, cfg).default_backoff().boxed()
}

/// The store task: reads the watches on edge nodes, pods, configmaps and secrets until `stop`,
/// applies them to the view through its only writer and sends what follows from each change.
pub async fn run(client: kube::Client, view: ViewWriter, tx: Sender, stop: CancellationToken) {
    let tx = Outbox::new(tx);
    let mut nodes = watch(Api::<Node>::all(client.clone()), watcher::Config::default().labels(EDGE_NODE_LABEL));
    let mut pods =
        watch(Api::<DynamicObject>::all_with(client.clone(), &ApiResource::erase::<Pod>(&())), Default::default());
    let mut configmaps = watch(
        Api::<DynamicObject>::all_with(client.clone(), &ApiResource::erase::<ConfigMap>(&())),
        Default::default(),
    );
    let mut secrets =
        watch(Api::<DynamicObject>::all_with(client, &ApiResource::erase::<Secret>(&())), Default::default());
    let mut store = Store {
        view,
        tx,
        nodes: HashMap::new(),
        nodes_seen: HashSet::new(),
        nodes_listed: false,
        seen: Seen::default(),
    };
    // Not `biased`: a burst on one watch does not hold up the others.
    while !stop.is_cancelled() {
        // A closed stream (it never closes: errors are retried) ends the task like `stop`.
        let done = tokio::select! {
            _ = stop.cancelled() => true,
            ev = nodes.next() => ev.map(|e| store.on_node(e)).is_none(),
            ev = pods.next(), if store.nodes_listed => ev.map(|e| store.on_pod(e)).is_none(),
            ev = configmaps.next() => ev.map(|e| store.on_object(resource_type::CONFIGMAP, e)).is_none(),
            ev = secrets.next() => ev.map(|e| store.on_object(resource_type::SECRET, e)).is_none(),
        };
        if done {
            return;
        }
        // Sending waits while CloudHub is full; a stop ends the wait (and the task) at once.
        tokio::select! {
            _ = stop.cancelled() => return,
            () = store.flush() => {}
        }
    }
}

/// What each watch listed since its last `Init`, to find what vanished during a re-list.
#[derive(Default)]
struct Seen {
    pods: HashSet<String>,
    configmaps: HashSet<(String, String)>,
    secrets: HashSet<(String, String)>,
}

/// The store task's state: the view's writer, the sender, the watches' bookkeeping and the
/// messages one event produced, sent (with backpressure) before the next event is read.
struct Store {
    view: ViewWriter,
    tx: Outbox,
    /// Edge nodes and the hash of what of them is sent (metadata and spec).
    nodes: HashMap<String, u64>,
    nodes_seen: HashSet<String>,
    /// Whether the first list of edge nodes is in.
    nodes_listed: bool,
    seen: Seen,
}

impl Store {
    /// Sends what the last event produced. Kept apart from the handlers so they stay
    /// synchronous: the view is never borrowed across an await.
    async fn flush(&mut self) {
        self.tx.flush().await;
    }

    fn on_node(&mut self, ev: WatchEvent<Node>) {
        match ev {
            Ok(Event::Init) => self.nodes_seen.clear(),
            Ok(Event::InitApply(n) | Event::Apply(n)) => {
                let Some(name) = n.metadata.name.clone() else { return };
                self.nodes_seen.insert(name.clone());
                let hash = node_meta_hash(&n);
                for pod in self.view.set_edge_node(&name, true) {
                    self.tx.object(&name, &pod, Operation::Insert);
                }
                if self.nodes.insert(name.clone(), hash) == Some(hash) {
                    return;
                }
                let mut n = n;
                n.metadata.managed_fields = None;
                let Ok(mut value) = serde_json::to_value(&n) else { return };
                value["apiVersion"] = "v1".into();
                value["kind"] = "Node".into();
                let Ok(content) = Content::json(&value) else { return };
                let mut m = Message::build(
                    module::EDGECONTROLLER,
                    group::RESOURCE,
                    ResourcePath::cluster_scoped(resource_type::NODE, &name).for_node(&name).to_string(),
                    Operation::Update,
                    content,
                );
                m.header.resource_version = n.metadata.resource_version.clone().unwrap_or_default();
                self.view.set_node_message(&name, Some(m.clone()));
                self.tx.raw(m);
            }
            Ok(Event::Delete(n)) => {
                let Some(name) = n.metadata.name.clone() else { return };
                self.node_gone(&name);
            }
            Ok(Event::InitDone) => {
                let gone: Vec<String> = self.nodes.keys().filter(|k| !self.nodes_seen.contains(*k)).cloned().collect();
                for name in gone {
                    self.node_gone(&name);
                }
                self.view.mark_synced("nodes");
                self.nodes_listed = true;
            }
            Err(e) => warn!(error = %e, "Watching edge nodes failed; retrying."),
        }
    }

    /// An edge node was deleted (or lost its label): its Node is deleted on the edge and
    /// SyncController collects its ObjectSyncs.
    fn node_gone(&mut self, name: &str) {
        self.nodes.remove(name);
        self.view.set_edge_node(name, false);
        self.view.set_node_message(name, None);
        info!(node = name, "Edge node deleted.");
        let m = Message::build(
            module::EDGECONTROLLER,
            group::RESOURCE,
            ResourcePath::cluster_scoped(resource_type::NODE, name).for_node(name).to_string(),
            Operation::Delete,
            Content::null(),
        );
        self.tx.raw(m);
        let note = Message::build(
            module::EDGECONTROLLER,
            module::SYNCCONTROLLER,
            CloudResource::node_notice(name),
            Operation::Delete,
            Content::null(),
        );
        // Never waited for: the store task must not stall on SyncController. A notice lost
        // to a full inbox is made up by SyncController's periodic collection.
        self.tx.notify(module::SYNCCONTROLLER, note);
    }

    fn on_pod(&mut self, ev: WatchEvent<DynamicObject>) {
        match ev {
            Ok(Event::Init) => self.seen.pods.clear(),
            Ok(ev @ (Event::InitApply(_) | Event::Apply(_))) => {
                let (listed, p) = match ev {
                    Event::InitApply(p) => (true, p),
                    Event::Apply(p) => (false, p),
                    _ => return,
                };
                if let Some(uid) = &p.metadata.uid {
                    self.seen.pods.insert(uid.clone());
                }
                self.apply_pod(p, listed);
            }
            Ok(Event::Delete(p)) => {
                let Some(obj) = Obj::from_dynamic(p, resource_type::POD, "v1", "Pod") else { return };
                if let Some(node) = self.view.remove_pod(&obj.uid) {
                    self.tx.object(&node, &obj, Operation::Delete);
                }
            }
            Ok(Event::InitDone) => {
                // Deleted while the watch was down: SyncController deletes them on the edge
                // (their ObjectSyncs now point at nothing).
                for uid in self.view.view().pod_uids().into_iter().filter(|u| !self.seen.pods.contains(u)) {
                    if let Some(node) = self.view.remove_pod(&uid) {
                        debug!(node, uid, "A pod vanished during a re-list.");
                    }
                }
                self.view.mark_synced("pods");
            }
            Err(e) => warn!(error = %e, "Watching pods failed; retrying."),
        }
    }

    /// `listed`: from a (re-)list, which may have skipped versions.
    fn apply_pod(&mut self, p: DynamicObject, listed: bool) {
        let node = p.data.pointer("/spec/nodeName").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        let terminating = p.metadata.deletion_timestamp.is_some();
        let namespace = p.metadata.namespace.clone().unwrap_or_default();
        let pod_name = p.metadata.name.clone().unwrap_or_default();
        // KubeEdge's own key material never follows a pod to an edge (nor may the edge read it).
        let refs: Vec<_> =
            refs_of(&namespace, &pod_name, &pod_spec(&p)).into_iter().filter(crate::authz::may_follow).collect();
        let hash = spec_hash(&p);
        let mut p = p;
        p.metadata.managed_fields = None;
        let Some(obj) = Obj::from_dynamic(p, resource_type::POD, "v1", "Pod") else { return };
        let change = if listed {
            self.view.apply_listed_pod(obj.clone(), &node, hash, refs.clone())
        } else {
            self.view.apply_pod(obj.clone(), &node, hash, refs.clone())
        };
        let sends_pod = change == PodChange::Added || change == PodChange::Updated;
        match change {
            PodChange::Added if terminating => self.tx.object(&node, &obj, Operation::Update),
            PodChange::Added => self.tx.object(&node, &obj, Operation::Insert),
            PodChange::Updated => self.tx.object(&node, &obj, Operation::Update),
            PodChange::Left { from } => self.tx.object(&from, &obj, Operation::Delete),
            PodChange::Unchanged | PodChange::Ignored => {}
        }
        if sends_pod {
            // What the pod uses follows it (upstream sends nothing and waits for edged to ask):
            // the edge then holds it before it goes offline. The pod goes first, so it never
            // waits behind these ACKs; an edge that asks meanwhile is answered from the cloud.
            // Nothing is resent that the node has.
            for r in &refs {
                if let Some(o) = self.view.view().object(r) {
                    let op = if r.0 == resource_type::SECRET { Operation::Update } else { Operation::Insert };
                    self.tx.object(&node, &o, op);
                }
            }
        }
    }

    /// A configmap (`ty` = `configmap`) or secret (`secret`) event.
    fn on_object(&mut self, ty: &'static str, ev: WatchEvent<DynamicObject>) {
        let kind = if ty == resource_type::SECRET { "Secret" } else { "ConfigMap" };
        let seen = if ty == resource_type::SECRET { &mut self.seen.secrets } else { &mut self.seen.configmaps };
        match ev {
            Ok(Event::Init) => seen.clear(),
            Ok(Event::InitApply(o) | Event::Apply(o)) => {
                let mut o = o;
                o.metadata.managed_fields = None;
                let Some(obj) = Obj::from_dynamic(o, ty, "v1", kind) else { return };
                seen.insert((obj.namespace.clone(), obj.name.clone()));
                let known = self.view.view().object(&(ty, obj.namespace.clone(), obj.name.clone())).is_some();
                let op = if ty == resource_type::SECRET || known { Operation::Update } else { Operation::Insert };
                for node in self.view.apply_object(obj.clone()) {
                    self.tx.object(&node, &obj, op.clone());
                }
            }
            Ok(Event::Delete(o)) => {
                let Some(obj) = Obj::from_dynamic(o, ty, "v1", kind) else { return };
                for node in self.view.remove_object(ty, &obj.namespace, &obj.name) {
                    self.tx.object(&node, &obj, Operation::Delete);
                }
            }
            Ok(Event::InitDone) => {
                let gone: Vec<_> = self
                    .view
                    .view()
                    .object_keys(ty)
                    .into_iter()
                    .filter(|(_, ns, name)| !seen.contains(&(ns.clone(), name.clone())))
                    .collect();
                for (t, ns, name) in gone {
                    self.view.remove_object(t, &ns, &name);
                }
                self.view.mark_synced(if ty == resource_type::SECRET { "secrets" } else { "configmaps" });
            }
            Err(e) => warn!(error = %e, "Watching {ty}s failed; retrying."),
        }
    }
}
