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

use std::collections::HashSet;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kubeedge_model::constants::{group, module, operation, resource_type};
use kubeedge_model::{Content, Message};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use crate::delivery::messages::{Sender, delete_message, object_message};
use crate::delivery::view::{Obj, PodChange, View, pod_spec, refs_of, spec_hash};

/// The label that makes a node an edge node.
pub const EDGE_NODE_LABEL: &str = "node-role.kubernetes.io/edge";

/// The next item of a watch stream; `None` once `stop` fires or the stream ends.
async fn next_event<S: futures::Stream + Unpin>(stream: &mut S, stop: &CancellationToken) -> Option<S::Item> {
    tokio::select! {
        _ = stop.cancelled() => None,
        ev = stream.next() => ev,
    }
}

fn node_meta_hash(n: &Node) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut meta = n.metadata.clone();
    meta.resource_version = None;
    meta.generation = None;
    meta.managed_fields = None;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&meta).unwrap_or_default().hash(&mut h);
    serde_json::to_string(&n.spec).unwrap_or_default().hash(&mut h);
    h.finish()
}

/// Watches edge nodes until `stop`. Node deletions are also told to SyncController, which
/// collects that node's ObjectSyncs.
/// `nodes_listed` fires once the first list is in, so pods are only judged against a complete
/// set of edge nodes.
pub async fn watch_nodes(
    client: kube::Client,
    view: View,
    tx: Sender,
    stop: CancellationToken,
    nodes_listed: tokio::sync::oneshot::Sender<()>,
) {
    let mut nodes_listed = Some(nodes_listed);
    let api: Api<Node> = Api::all(client);
    let cfg = watcher::Config::default().labels(EDGE_NODE_LABEL);
    let mut stream = watcher::watcher(api, cfg).default_backoff().boxed();
    let mut known: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let mut seen: HashSet<String> = HashSet::new();
    loop {
        let Some(ev) = next_event(&mut stream, &stop).await else { return };
        match ev {
            Ok(Event::Init) => seen.clear(),
            Ok(Event::InitApply(n) | Event::Apply(n)) => {
                let Some(name) = n.metadata.name.clone() else { continue };
                seen.insert(name.clone());
                let hash = node_meta_hash(&n);
                for pod in view.set_edge_node(&name, true) {
                    tx.object(&name, &pod, operation::INSERT).await;
                }
                if known.insert(name.clone(), hash) == Some(hash) {
                    continue;
                }
                let mut n = n;
                n.metadata.managed_fields = None;
                let Ok(mut value) = serde_json::to_value(&n) else { continue };
                value["apiVersion"] = "v1".into();
                value["kind"] = "Node".into();
                let Ok(content) = Content::json(&value) else { continue };
                let mut m = Message::build(
                    module::EDGECONTROLLER,
                    group::RESOURCE,
                    format!("node/{name}/null/node/{name}"),
                    operation::UPDATE,
                    content,
                );
                m.header.resource_version = n.metadata.resource_version.clone().unwrap_or_default();
                view.set_node_message(&name, Some(m.clone()));
                tx.raw(m).await;
            }
            Ok(Event::Delete(n)) => {
                let Some(name) = n.metadata.name.clone() else { continue };
                node_gone(&view, &tx, &mut known, &name).await;
            }
            Ok(Event::InitDone) => {
                let gone: Vec<String> = known.keys().filter(|k| !seen.contains(*k)).cloned().collect();
                for name in gone {
                    node_gone(&view, &tx, &mut known, &name).await;
                }
                view.mark_synced("nodes");
                if let Some(tx) = nodes_listed.take() {
                    let _ = tx.send(());
                }
            }
            Err(e) => warn!(error = %e, "Watching edge nodes failed; retrying."),
        }
    }
}

async fn node_gone(view: &View, tx: &Sender, known: &mut std::collections::HashMap<String, u64>, name: &str) {
    known.remove(name);
    view.set_edge_node(name, false);
    view.set_node_message(name, None);
    info!(node = name, "Edge node deleted.");
    let m = Message::build(
        module::EDGECONTROLLER,
        group::RESOURCE,
        format!("node/{name}/null/node/{name}"),
        operation::DELETE,
        Content::null(),
    );
    tx.raw(m).await;
    let note = Message::build(
        module::EDGECONTROLLER,
        module::SYNCCONTROLLER,
        format!("node/{name}"),
        operation::DELETE,
        Content::null(),
    );
    // Not dropped when busy: a lost notice would leave the node's ObjectSyncs behind.
    let _ = tx.bus.send(module::SYNCCONTROLLER, note).await;
}

/// Watches pods until `stop`.
pub async fn watch_pods(client: kube::Client, view: View, tx: Sender, stop: CancellationToken) {
    let api: Api<DynamicObject> = Api::all_with(client, &ApiResource::erase::<Pod>(&()));
    let mut stream = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
    let mut seen: HashSet<String> = HashSet::new();
    loop {
        let Some(ev) = next_event(&mut stream, &stop).await else { return };
        match ev {
            Ok(Event::Init) => seen.clear(),
            Ok(Event::InitApply(p) | Event::Apply(p)) => {
                if let Some(uid) = &p.metadata.uid {
                    seen.insert(uid.clone());
                }
                apply_pod(&view, &tx, p).await;
            }
            Ok(Event::Delete(p)) => {
                let Some(obj) = Obj::from_dynamic(p, resource_type::POD, "v1", "Pod") else { continue };
                if let Some(node) = view.remove_pod(&obj.uid) {
                    tx.object(&node, &obj, operation::DELETE).await;
                }
            }
            Ok(Event::InitDone) => {
                // Deleted while the watch was down: SyncController deletes them on the edge
                // (their ObjectSyncs now point at nothing).
                for uid in view.pod_uids().into_iter().filter(|u| !seen.contains(u)) {
                    if let Some(node) = view.remove_pod(&uid) {
                        debug!(node, uid, "A pod vanished during a re-list.");
                    }
                }
                view.mark_synced("pods");
            }
            Err(e) => warn!(error = %e, "Watching pods failed; retrying."),
        }
    }
}

async fn apply_pod(view: &View, tx: &Sender, p: DynamicObject) {
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
    let change = view.apply_pod(obj.clone(), &node, hash, refs.clone());
    let sends_pod = change == PodChange::Added || change == PodChange::Updated;
    match change {
        PodChange::Added if terminating => tx.object(&node, &obj, operation::UPDATE).await,
        PodChange::Added => tx.object(&node, &obj, operation::INSERT).await,
        PodChange::Updated => tx.object(&node, &obj, operation::UPDATE).await,
        PodChange::Left { from } => tx.object(&from, &obj, operation::DELETE).await,
        PodChange::Unchanged | PodChange::Ignored => {}
    }
    if sends_pod {
        // What the pod uses follows it (upstream sends nothing and waits for edged to ask): the
        // edge then holds it before it goes offline. The pod goes first, so it never waits
        // behind these ACKs; an edge that asks meanwhile is answered from the cloud. Nothing is
        // resent that the node has.
        for r in &refs {
            if let Some(o) = view.object(r) {
                let op = if r.0 == resource_type::SECRET { operation::UPDATE } else { operation::INSERT };
                tx.object(&node, &o, op).await;
            }
        }
    }
}

/// Watches configmaps (`ty` = `configmap`) or secrets (`secret`) until `stop`.
pub async fn watch_objects(client: kube::Client, ty: &'static str, view: View, tx: Sender, stop: CancellationToken) {
    let (ar, kind) = if ty == resource_type::SECRET {
        (ApiResource::erase::<Secret>(&()), "Secret")
    } else {
        (ApiResource::erase::<ConfigMap>(&()), "ConfigMap")
    };
    let api: Api<DynamicObject> = Api::all_with(client, &ar);
    let mut stream = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
    let mut seen: HashSet<(String, String)> = HashSet::new();
    loop {
        let Some(ev) = next_event(&mut stream, &stop).await else { return };
        match ev {
            Ok(Event::Init) => seen.clear(),
            Ok(Event::InitApply(o) | Event::Apply(o)) => {
                let mut o = o;
                o.metadata.managed_fields = None;
                let Some(obj) = Obj::from_dynamic(o, ty, "v1", kind) else { continue };
                seen.insert((obj.namespace.clone(), obj.name.clone()));
                let known = view.object(&(ty, obj.namespace.clone(), obj.name.clone())).is_some();
                let op = if ty == resource_type::SECRET || known { operation::UPDATE } else { operation::INSERT };
                for node in view.apply_object(obj.clone()) {
                    tx.object(&node, &obj, op).await;
                }
            }
            Ok(Event::Delete(o)) => {
                let Some(obj) = Obj::from_dynamic(o, ty, "v1", kind) else { continue };
                for node in view.remove_object(ty, &obj.namespace, &obj.name) {
                    tx.object(&node, &obj, operation::DELETE).await;
                }
            }
            Ok(Event::InitDone) => {
                for (t, ns, name) in view.object_keys(ty) {
                    if !seen.contains(&(ns.clone(), name.clone())) {
                        view.remove_object(t, &ns, &name);
                    }
                }
                view.mark_synced(if ty == resource_type::SECRET { "secrets" } else { "configmaps" });
            }
            Err(e) => warn!(error = %e, "Watching {ty}s failed; retrying."),
        }
    }
}
