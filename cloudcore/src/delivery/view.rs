//! What each edge node should have: the pods bound to it and the configmaps and secrets those
//! pods reference, kept from EdgeController's watches. SyncController reads it to resend what a
//! node has not acknowledged and to delete what vanished.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use kube::api::DynamicObject;
use kubeedge_model::Content;
use kubeedge_model::constants::resource_type;
use parking_lot::RwLock;

pub use super::refs::Ref;

/// One object as sent to edges: identity, version and the wire content (with apiVersion and
/// kind), encoded once.
#[derive(Debug, Clone)]
pub struct Obj {
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.resourceVersion`, parsed.
    pub rv: u64,
    /// The version of the latest change edges need: for a pod, the latest version whose
    /// metadata or spec changed (later versions changed only its status, which the edge itself
    /// reports, and are not sent); for everything else, `rv`.
    pub since: u64,
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
    /// The edge resource type (`pod`, `configmap`, `secret`, `device`, `devicemodel`).
    pub ty: &'static str,
    /// The object JSON.
    pub content: Content,
}

impl Obj {
    /// Builds one from a watched object, setting its apiVersion and kind.
    pub fn from_dynamic(mut o: DynamicObject, ty: &'static str, api_version: &str, kind: &str) -> Option<Self> {
        o.types = Some(kube::api::TypeMeta { api_version: api_version.to_owned(), kind: kind.to_owned() });
        let uid = o.metadata.uid.clone()?;
        let rv = o.metadata.resource_version.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
        let namespace = o.metadata.namespace.clone().unwrap_or_default();
        let name = o.metadata.name.clone()?;
        let content = Content::json(&o).ok()?;
        Some(Self { uid, rv, since: rv, namespace, name, ty, content })
    }

    /// The Kubernetes kind of this object's type.
    pub fn kind(&self) -> &'static str {
        kind_of(self.ty)
    }
}

/// The Kubernetes kind for an edge resource type EdgeController sends.
pub fn kind_of(ty: &str) -> &'static str {
    match ty {
        resource_type::POD => "Pod",
        resource_type::CONFIGMAP => "ConfigMap",
        resource_type::SECRET => "Secret",
        resource_type::DEVICE => "Device",
        resource_type::DEVICE_MODEL => "DeviceModel",
        _ => "Unknown",
    }
}

/// The apiVersion of an edge resource type's objects.
pub fn api_version_of(ty: &str) -> &'static str {
    match ty {
        resource_type::DEVICE | resource_type::DEVICE_MODEL => kubeedge_apis::devices::v1beta1::API_VERSION,
        _ => "v1",
    }
}

struct PodEntry {
    obj: Obj,
    node: String,
    hash: u64,
    refs: Vec<Ref>,
}

#[derive(Default)]
struct Inner {
    edge_nodes: HashSet<String>,
    pods: HashMap<String, PodEntry>,
    pods_by_node: HashMap<String, HashSet<String>>,
    /// (type, ns, name) → the object.
    objects: HashMap<Ref, Obj>,
    /// (type, ns, name) → node → how many of its pods use it.
    users: HashMap<Ref, HashMap<String, usize>>,
    /// The watches whose first list is complete.
    synced: HashSet<&'static str>,
    /// Pods bound to nodes that are not (yet) edge nodes: node → uid → pod.
    pending: HashMap<String, HashMap<String, PodEntry>>,
    /// The last message sent for each edge node's own Node object.
    node_messages: HashMap<String, kubeedge_model::Message>,
    /// Edge nodes with a pod whose status alone changed since SyncController last asked.
    status_only: HashSet<String>,
}

/// The watches the view is built from; it is complete once each has listed once.
pub const WATCHES: [&str; 4] = ["nodes", "pods", "configmaps", "secrets"];

/// What changed when a pod was applied.
#[derive(Debug, PartialEq, Eq)]
pub enum PodChange {
    /// New on an edge node: send `insert`.
    Added,
    /// Metadata or spec changed: send `update`.
    Updated,
    /// Only status or the version changed: nothing to send.
    Unchanged,
    /// Moved off its node or the node is no longer an edge node: send `delete` to `from`.
    Left {
        /// The node it was on.
        from: String,
    },
    /// Not for an edge node.
    Ignored,
}

/// The view, read side: what the node authorizer and SyncController read. Cheap to clone.
/// Written only through the one [`ViewWriter`] (EdgeController's store task), as kube-rs's
/// reflector splits a `Store` from its `Writer`.
#[derive(Clone, Default)]
pub struct View(Arc<RwLock<Inner>>);

impl View {
    /// Whether every watch has listed once: before that, what is missing from the view may
    /// only not have been seen yet, so nothing may be deleted because of it.
    pub fn is_synced(&self) -> bool {
        let g = self.0.read();
        WATCHES.iter().all(|w| g.synced.contains(w))
    }

    /// The latest `update` message of `node`'s Node, if any.
    pub fn node_message(&self, node: &str) -> Option<kubeedge_model::Message> {
        self.0.read().node_messages.get(node).cloned()
    }

    /// The uids of every pod known, for a re-list to find what vanished.
    pub fn pod_uids(&self) -> Vec<String> {
        let g = self.0.read();
        g.pods.keys().chain(g.pending.values().flat_map(|p| p.keys())).cloned().collect()
    }

    /// The keys of every configmap or secret known, for a re-list to find what vanished.
    pub fn object_keys(&self, ty: &'static str) -> Vec<Ref> {
        self.0.read().objects.keys().filter(|k| k.0 == ty).cloned().collect()
    }

    /// A configmap or secret by key.
    pub fn object(&self, key: &Ref) -> Option<Obj> {
        self.0.read().objects.get(key).cloned()
    }

    /// The edge nodes with a pod whose status alone changed since the last call: SyncController
    /// moves their records forward without sending anything (see [`Obj::since`]).
    pub fn take_status_only(&self) -> Vec<String> {
        self.0.write().status_only.drain().collect()
    }

    /// Everything `node` should have: its pods, then the configmaps and secrets they use.
    pub fn desired(&self, node: &str) -> Vec<Obj> {
        let g = self.0.read();
        let mut out = Vec::new();
        let mut refs: HashSet<&Ref> = HashSet::new();
        for uid in g.pods_by_node.get(node).into_iter().flatten() {
            if let Some(p) = g.pods.get(uid) {
                out.push(p.obj.clone());
                refs.extend(p.refs.iter());
            }
        }
        for r in refs {
            if let Some(o) = g.objects.get(r) {
                out.push(o.clone());
            }
        }
        out
    }

    /// Whether a pod bound to `node` uses `r` (the node authorizer's relationship).
    pub fn node_uses(&self, node: &str, r: &Ref) -> bool {
        self.0.read().users.get(r).is_some_and(|m| m.contains_key(node))
    }

    /// The objects of type `ty` that pods bound to `node` use.
    pub fn node_refs(&self, node: &str, ty: &str) -> Vec<Ref> {
        let g = self.0.read();
        let mut out: Vec<Ref> = g
            .pods_by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|uid| g.pods.get(uid))
            .flat_map(|p| p.refs.iter().filter(|r| r.0 == ty).cloned())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The UID of pod `namespace/name` if the view has it bound to edge node `node`: what the
    /// node authorizer checks a pod write against without asking the API.
    pub fn pod_on_node(&self, node: &str, namespace: &str, name: &str) -> Option<String> {
        let g = self.0.read();
        g.pods_by_node.get(node)?.iter().find_map(|uid| {
            let p = g.pods.get(uid)?;
            (p.obj.namespace == namespace && p.obj.name == name).then(|| uid.clone())
        })
    }
}

/// The view's only writer, owned by EdgeController's store task: every change of the view,
/// and the decision of what to send because of it, happens in that one task, in watch order.
/// Not `Clone`.
pub struct ViewWriter(View);

impl ViewWriter {
    /// The writer of `view`. Crate-private: EdgeController makes one per run of its store task,
    /// after the previous run's task ended.
    pub(crate) fn new(view: View) -> Self {
        Self(view)
    }

    /// The read side.
    pub fn view(&self) -> &View {
        &self.0
    }

    /// Notes that watch `what` (one of [`WATCHES`]) has listed everything once.
    pub fn mark_synced(&mut self, what: &'static str) {
        self.0.0.write().synced.insert(what);
    }

    /// Marks `node` as an edge node or not. A node that becomes one gets the pods already
    /// bound to it (seen while it was not an edge node, or before its own watch event): they
    /// are returned, to be sent.
    pub fn set_edge_node(&mut self, node: &str, edge: bool) -> Vec<Obj> {
        let mut g = self.0.0.write();
        if !edge {
            g.edge_nodes.remove(node);
            return Vec::new();
        }
        if !g.edge_nodes.insert(node.to_owned()) {
            return Vec::new();
        }
        let waiting = g.pending.remove(node).unwrap_or_default();
        let mut out = Vec::new();
        for (uid, p) in waiting {
            g.link(&uid, node, &p.refs);
            out.push(p.obj.clone());
            g.pods.insert(uid, p);
        }
        out
    }

    /// Remembers the latest `update` message of an edge node's Node, to resend it when the
    /// node reconnects (it may have been offline when it was sent).
    pub fn set_node_message(&mut self, node: &str, msg: Option<kubeedge_model::Message>) {
        let mut g = self.0.0.write();
        match msg {
            Some(m) => g.node_messages.insert(node.to_owned(), m),
            None => g.node_messages.remove(node),
        };
    }

    /// Records a pod bound to `node` (empty when unscheduled) and says what to send.
    pub fn apply_pod(&mut self, obj: Obj, node: &str, hash: u64, refs: Vec<Ref>) -> PodChange {
        self.apply_pod_seen(obj, node, hash, refs, false)
    }

    /// [`ViewWriter::apply_pod`] for a pod from a (re-)list: versions between the one the view
    /// had and this one may have gone unseen (a metadata or spec change and its undoing), so a
    /// new version is taken as needed by edges even when its hash is the same.
    pub fn apply_listed_pod(&mut self, obj: Obj, node: &str, hash: u64, refs: Vec<Ref>) -> PodChange {
        self.apply_pod_seen(obj, node, hash, refs, true)
    }

    fn apply_pod_seen(&mut self, obj: Obj, node: &str, hash: u64, refs: Vec<Ref>, listed: bool) -> PodChange {
        let mut g = self.0.0.write();
        let on_edge = !node.is_empty() && g.edge_nodes.contains(node);
        let uid = obj.uid.clone();
        g.forget_pending(&uid);
        let previous = g.pods.remove(&uid);
        if let Some(p) = &previous {
            g.unlink(&uid, &p.node, &p.refs);
        }
        if !on_edge {
            if !node.is_empty() {
                let entry = PodEntry { obj, node: node.to_owned(), hash, refs };
                g.pending.entry(node.to_owned()).or_default().insert(uid, entry);
            }
            return match previous {
                Some(p) => PodChange::Left { from: p.node },
                None => PodChange::Ignored,
            };
        }
        let change = match &previous {
            None => PodChange::Added,
            Some(p) if p.node != node => PodChange::Added,
            Some(p) if p.hash != hash => PodChange::Updated,
            Some(_) => PodChange::Unchanged,
        };
        let mut obj = obj;
        if let Some(p) = previous.as_ref().filter(|_| change == PodChange::Unchanged) {
            if obj.rv == p.obj.rv || !listed {
                obj.since = p.obj.since.min(obj.rv);
            }
            if obj.rv != p.obj.rv && obj.since < obj.rv {
                g.status_only.insert(node.to_owned());
            }
        }
        g.link(&uid, node, &refs);
        g.pods.insert(uid, PodEntry { obj, node: node.to_owned(), hash, refs });
        change
    }

    /// Forgets a pod; returns the edge node it was on.
    pub fn remove_pod(&mut self, uid: &str) -> Option<String> {
        let mut g = self.0.0.write();
        g.forget_pending(uid);
        let p = g.pods.remove(uid)?;
        g.unlink(uid, &p.node, &p.refs);
        Some(p.node)
    }

    /// Records a configmap or secret; returns the nodes whose pods use it.
    pub fn apply_object(&mut self, obj: Obj) -> Vec<String> {
        let mut g = self.0.0.write();
        let key: Ref = (obj.ty, obj.namespace.clone(), obj.name.clone());
        let nodes = g.users.get(&key).map(|m| m.keys().cloned().collect()).unwrap_or_default();
        g.objects.insert(key, obj);
        nodes
    }

    /// Forgets a configmap or secret; returns the nodes whose pods use it.
    pub fn remove_object(&mut self, ty: &'static str, namespace: &str, name: &str) -> Vec<String> {
        let mut g = self.0.0.write();
        let key: Ref = (ty, namespace.to_owned(), name.to_owned());
        g.objects.remove(&key);
        g.users.get(&key).map(|m| m.keys().cloned().collect()).unwrap_or_default()
    }
}

impl Inner {
    fn forget_pending(&mut self, uid: &str) {
        self.pending.retain(|_, pods| {
            pods.remove(uid);
            !pods.is_empty()
        });
    }

    fn link(&mut self, uid: &str, node: &str, refs: &[Ref]) {
        self.pods_by_node.entry(node.to_owned()).or_default().insert(uid.to_owned());
        for r in refs {
            *self.users.entry(r.clone()).or_default().entry(node.to_owned()).or_insert(0) += 1;
        }
    }

    fn unlink(&mut self, uid: &str, node: &str, refs: &[Ref]) {
        if let Some(set) = self.pods_by_node.get_mut(node) {
            set.remove(uid);
            if set.is_empty() {
                self.pods_by_node.remove(node);
            }
        }
        for r in refs {
            if let Some(m) = self.users.get_mut(r) {
                if let Some(n) = m.get_mut(node) {
                    *n -= 1;
                    if *n == 0 {
                        m.remove(node);
                    }
                }
                if m.is_empty() {
                    self.users.remove(r);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, rv: u64) -> Obj {
        Obj {
            uid: uid.into(),
            rv,
            since: rv,
            namespace: "default".into(),
            name: format!("p-{uid}"),
            ty: resource_type::POD,
            content: Content::null(),
        }
    }

    #[test]
    fn pods_are_tracked_per_edge_node_with_their_references() {
        let mut v = ViewWriter::new(View::default());
        v.set_edge_node("e1", true);
        let r: Ref = (resource_type::CONFIGMAP, "default".into(), "cm".into());
        assert_eq!(v.apply_pod(pod("a", 1), "cloud-node", 1, vec![]), PodChange::Ignored);
        assert_eq!(v.apply_pod(pod("a", 2), "e1", 1, vec![r.clone()]), PodChange::Added);
        assert_eq!(v.apply_pod(pod("a", 3), "e1", 1, vec![r.clone()]), PodChange::Unchanged);
        assert_eq!(v.apply_pod(pod("a", 4), "e1", 2, vec![r.clone()]), PodChange::Updated);
        let cm = Obj { ty: resource_type::CONFIGMAP, name: "cm".into(), ..pod("cm-uid", 7) };
        assert_eq!(v.apply_object(cm), vec!["e1".to_owned()]);
        let desired: Vec<String> = v.view().desired("e1").into_iter().map(|o| o.uid).collect();
        assert_eq!(desired, ["a", "cm-uid"]);
        assert_eq!(v.remove_pod("a").as_deref(), Some("e1"));
        assert!(v.view().desired("e1").is_empty());
        assert!(v.remove_object(resource_type::CONFIGMAP, "default", "cm").is_empty());
        // A pod bound before its node is an edge node is sent when the node becomes one.
        assert_eq!(v.apply_pod(pod("early", 1), "e2", 1, vec![]), PodChange::Ignored);
        let sent: Vec<String> = v.set_edge_node("e2", true).into_iter().map(|o| o.uid).collect();
        assert_eq!(sent, ["early"]);
        assert!(v.set_edge_node("e2", true).is_empty(), "only on the change");
        assert_eq!(v.view().desired("e2").len(), 1);
        // A node that stops being an edge node takes its pods with it.
        assert_eq!(v.apply_pod(pod("b", 1), "e1", 1, vec![]), PodChange::Added);
        v.set_edge_node("e1", false);
        assert_eq!(v.apply_pod(pod("b", 2), "e1", 1, vec![]), PodChange::Left { from: "e1".into() });
    }

    #[test]
    fn a_status_only_version_keeps_the_version_edges_need() {
        let mut v = ViewWriter::new(View::default());
        v.set_edge_node("e1", true);
        assert_eq!(v.apply_pod(pod("a", 3), "e1", 1, vec![]), PodChange::Added);
        assert!(v.view().take_status_only().is_empty());
        // The edge's status patch: same metadata and spec.
        assert_eq!(v.apply_pod(pod("a", 5), "e1", 1, vec![]), PodChange::Unchanged);
        let a = &v.view().desired("e1")[0];
        assert_eq!((a.rv, a.since), (5, 3));
        assert_eq!(v.view().take_status_only(), ["e1"]);
        assert!(v.view().take_status_only().is_empty(), "drained");
        // The same version again (a re-list) is no change at all.
        v.apply_pod(pod("a", 5), "e1", 1, vec![]);
        assert!(v.view().take_status_only().is_empty());
        // A spec change is needed from its own version on.
        assert_eq!(v.apply_pod(pod("a", 8), "e1", 2, vec![]), PodChange::Updated);
        assert_eq!(v.apply_pod(pod("a", 9), "e1", 2, vec![]), PodChange::Unchanged);
        let a = &v.view().desired("e1")[0];
        assert_eq!((a.rv, a.since), (9, 8));
        assert_eq!(v.view().take_status_only(), ["e1"]);
        // A re-list may have skipped versions (a spec change and its undoing): a new version
        // with the same hash is needed as it is; the same version keeps what was known.
        assert_eq!(v.apply_listed_pod(pod("a", 9), "e1", 2, vec![]), PodChange::Unchanged);
        assert_eq!(v.view().desired("e1")[0].since, 8);
        assert_eq!(v.apply_listed_pod(pod("a", 12), "e1", 2, vec![]), PodChange::Unchanged);
        assert_eq!(v.view().desired("e1")[0].since, 12);
        assert!(v.view().take_status_only().is_empty());
    }
}
