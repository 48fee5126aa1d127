//! What each edge node should have: the pods bound to it and the configmaps and secrets those
//! pods reference, kept from EdgeController's watches. SyncController reads it to resend what a
//! node has not acknowledged and to delete what vanished.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use k8s_openapi::api::core::v1::PodSpec;
use kube::api::DynamicObject;
use kubeedge_model::Content;
use kubeedge_model::constants::resource_type;
use parking_lot::Mutex;

/// One object as sent to edges: identity, version and the wire content (with apiVersion and
/// kind), encoded once.
#[derive(Debug, Clone)]
pub struct Obj {
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.resourceVersion`, parsed.
    pub rv: u64,
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
    /// The edge resource type (`pod`, `configmap`, `secret`).
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
        Some(Self { uid, rv, namespace, name, ty, content })
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
        _ => "Unknown",
    }
}

/// An object a pod refers to: (type, namespace, name). The type is an edge resource type
/// (`configmap`, `secret`, `persistentvolumeclaim`) or [`SERVICE_ACCOUNT`].
pub type Ref = (&'static str, String, String);

/// The type of a pod's service account in a [`Ref`] (its token is what a node may mint).
pub const SERVICE_ACCOUNT: &str = "serviceaccount";

/// The objects a pod uses, which the node it is bound to may read (the node authorizer's
/// graph): configmaps and secrets of volumes (also projected), env and envFrom of every
/// container (init and ephemeral too) and imagePullSecrets; its persistent volume claims
/// (ephemeral volumes' too, named `{pod}-{volume}`); its service account.
pub fn refs_of(namespace: &str, pod_name: &str, spec: &PodSpec) -> Vec<Ref> {
    let mut out: HashSet<Ref> = HashSet::new();
    let mut add = |ty: &'static str, name: &str| {
        if !name.is_empty() {
            out.insert((ty, namespace.to_owned(), name.to_owned()));
        }
    };
    let sa = spec.service_account_name.as_deref().or(spec.service_account.as_deref()).unwrap_or_default();
    add(SERVICE_ACCOUNT, sa);
    for v in spec.volumes.iter().flatten() {
        if let Some(pvc) = &v.persistent_volume_claim {
            add(resource_type::PERSISTENT_VOLUME_CLAIM, &pvc.claim_name);
        }
        if v.ephemeral.is_some() {
            add(resource_type::PERSISTENT_VOLUME_CLAIM, &format!("{pod_name}-{}", v.name));
        }
        if let Some(cm) = &v.config_map {
            add(resource_type::CONFIGMAP, &cm.name);
        }
        // Volume plugins that take their credentials from a secret.
        let plugin_secrets = [
            v.csi.as_ref().and_then(|c| c.node_publish_secret_ref.as_ref()).map(|r| r.name.as_str()),
            v.azure_file.as_ref().map(|a| a.secret_name.as_str()),
            v.cephfs.as_ref().and_then(|c| c.secret_ref.as_ref()).map(|r| r.name.as_str()),
            v.rbd.as_ref().and_then(|c| c.secret_ref.as_ref()).map(|r| r.name.as_str()),
            v.iscsi.as_ref().and_then(|c| c.secret_ref.as_ref()).map(|r| r.name.as_str()),
            v.flex_volume.as_ref().and_then(|c| c.secret_ref.as_ref()).map(|r| r.name.as_str()),
            v.cinder.as_ref().and_then(|c| c.secret_ref.as_ref()).map(|r| r.name.as_str()),
            v.scale_io.as_ref().map(|c| c.secret_ref.name.as_str()),
            v.storageos.as_ref().and_then(|c| c.secret_ref.as_ref()).map(|r| r.name.as_str()),
        ];
        for name in plugin_secrets.into_iter().flatten() {
            add(resource_type::SECRET, name);
        }
        if let Some(s) = &v.secret {
            add(resource_type::SECRET, s.secret_name.as_deref().unwrap_or_default());
        }
        for src in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(cm) = &src.config_map {
                add(resource_type::CONFIGMAP, &cm.name);
            }
            if let Some(s) = &src.secret {
                add(resource_type::SECRET, &s.name);
            }
        }
    }
    let envs = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .map(|c| (c.env.as_ref(), c.env_from.as_ref()))
        .chain(spec.ephemeral_containers.iter().flatten().map(|c| (c.env.as_ref(), c.env_from.as_ref())));
    for (env, env_from) in envs {
        for e in env.into_iter().flatten() {
            if let Some(from) = &e.value_from {
                if let Some(r) = &from.config_map_key_ref {
                    add(resource_type::CONFIGMAP, &r.name);
                }
                if let Some(r) = &from.secret_key_ref {
                    add(resource_type::SECRET, &r.name);
                }
            }
        }
        for f in env_from.into_iter().flatten() {
            if let Some(r) = &f.config_map_ref {
                add(resource_type::CONFIGMAP, &r.name);
            }
            if let Some(r) = &f.secret_ref {
                add(resource_type::SECRET, &r.name);
            }
        }
    }
    for s in spec.image_pull_secrets.iter().flatten() {
        add(resource_type::SECRET, &s.name);
    }
    let mut v: Vec<Ref> = out.into_iter().collect();
    v.sort();
    v
}

/// A hash of what upstream compares before sending a pod update: metadata without
/// resourceVersion, generation and managedFields, and the spec. Status changes (the edge's own
/// reports) are not echoed back.
pub fn spec_hash(o: &DynamicObject) -> u64 {
    let mut meta = o.metadata.clone();
    meta.resource_version = None;
    meta.generation = None;
    meta.managed_fields = None;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&meta).unwrap_or_default().hash(&mut h);
    serde_json::to_string(&o.data.get("spec")).unwrap_or_default().hash(&mut h);
    h.finish()
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

/// The shared view. Cheap to clone.
#[derive(Clone, Default)]
pub struct View(Arc<Mutex<Inner>>);

impl View {
    /// Notes that watch `what` (one of [`WATCHES`]) has listed everything once.
    pub fn mark_synced(&self, what: &'static str) {
        self.0.lock().synced.insert(what);
    }

    /// Whether every watch has listed once: before that, what is missing from the view may
    /// only not have been seen yet, so nothing may be deleted because of it.
    pub fn is_synced(&self) -> bool {
        let g = self.0.lock();
        WATCHES.iter().all(|w| g.synced.contains(w))
    }

    /// Whether `node` is an edge node (labelled `node-role.kubernetes.io/edge`).
    pub fn is_edge_node(&self, node: &str) -> bool {
        self.0.lock().edge_nodes.contains(node)
    }

    /// Marks `node` as an edge node or not. A node that becomes one gets the pods already
    /// bound to it (seen while it was not an edge node, or before its own watch event): they
    /// are returned, to be sent.
    pub fn set_edge_node(&self, node: &str, edge: bool) -> Vec<Obj> {
        let mut g = self.0.lock();
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
    pub fn set_node_message(&self, node: &str, msg: Option<kubeedge_model::Message>) {
        let mut g = self.0.lock();
        match msg {
            Some(m) => g.node_messages.insert(node.to_owned(), m),
            None => g.node_messages.remove(node),
        };
    }

    /// The latest `update` message of `node`'s Node, if any.
    pub fn node_message(&self, node: &str) -> Option<kubeedge_model::Message> {
        self.0.lock().node_messages.get(node).cloned()
    }

    /// The edge nodes known now.
    pub fn edge_nodes(&self) -> Vec<String> {
        self.0.lock().edge_nodes.iter().cloned().collect()
    }

    /// Records a pod bound to `node` (empty when unscheduled) and says what to send.
    pub fn apply_pod(&self, obj: Obj, node: &str, hash: u64, refs: Vec<Ref>) -> PodChange {
        let mut g = self.0.lock();
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
        g.link(&uid, node, &refs);
        g.pods.insert(uid, PodEntry { obj, node: node.to_owned(), hash, refs });
        change
    }

    /// Forgets a pod; returns the edge node it was on.
    pub fn remove_pod(&self, uid: &str) -> Option<String> {
        let mut g = self.0.lock();
        g.forget_pending(uid);
        let p = g.pods.remove(uid)?;
        g.unlink(uid, &p.node, &p.refs);
        Some(p.node)
    }

    /// The uids of every pod known, for a re-list to find what vanished.
    pub fn pod_uids(&self) -> Vec<String> {
        let g = self.0.lock();
        g.pods.keys().chain(g.pending.values().flat_map(|p| p.keys())).cloned().collect()
    }

    /// Records a configmap or secret; returns the nodes whose pods use it.
    pub fn apply_object(&self, obj: Obj) -> Vec<String> {
        let mut g = self.0.lock();
        let key: Ref = (obj.ty, obj.namespace.clone(), obj.name.clone());
        let nodes = g.users.get(&key).map(|m| m.keys().cloned().collect()).unwrap_or_default();
        g.objects.insert(key, obj);
        nodes
    }

    /// Forgets a configmap or secret; returns the nodes whose pods use it.
    pub fn remove_object(&self, ty: &'static str, namespace: &str, name: &str) -> Vec<String> {
        let mut g = self.0.lock();
        let key: Ref = (ty, namespace.to_owned(), name.to_owned());
        g.objects.remove(&key);
        g.users.get(&key).map(|m| m.keys().cloned().collect()).unwrap_or_default()
    }

    /// The keys of every configmap or secret known, for a re-list to find what vanished.
    pub fn object_keys(&self, ty: &'static str) -> Vec<Ref> {
        self.0.lock().objects.keys().filter(|k| k.0 == ty).cloned().collect()
    }

    /// A configmap or secret by key.
    pub fn object(&self, key: &Ref) -> Option<Obj> {
        self.0.lock().objects.get(key).cloned()
    }

    /// Everything `node` should have: its pods, then the configmaps and secrets they use.
    pub fn desired(&self, node: &str) -> Vec<Obj> {
        let g = self.0.lock();
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
        self.0.lock().users.get(r).is_some_and(|m| m.contains_key(node))
    }

    /// The objects of type `ty` that pods bound to `node` use.
    pub fn node_refs(&self, node: &str, ty: &str) -> Vec<Ref> {
        let g = self.0.lock();
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
        let g = self.0.lock();
        g.pods_by_node.get(node)?.iter().find_map(|uid| {
            let p = g.pods.get(uid)?;
            (p.obj.namespace == namespace && p.obj.name == name).then(|| uid.clone())
        })
    }

    /// The pods on `node` (uids), for a deleted node.
    pub fn pods_on(&self, node: &str) -> Vec<String> {
        self.0.lock().pods_by_node.get(node).map(|s| s.iter().cloned().collect()).unwrap_or_default()
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

/// The pod's spec, decoded (unknown fields ignored), or an empty one.
pub fn pod_spec(o: &DynamicObject) -> PodSpec {
    o.data.get("spec").and_then(|s| serde_json::from_value(s.clone()).ok()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, rv: u64) -> Obj {
        Obj {
            uid: uid.into(),
            rv,
            namespace: "default".into(),
            name: format!("p-{uid}"),
            ty: resource_type::POD,
            content: Content::null(),
        }
    }

    #[test]
    fn references_come_from_volumes_env_envfrom_and_pull_secrets() {
        let spec: PodSpec = serde_json::from_value(serde_json::json!({
            "containers": [{"name": "c", "env": [
                {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm-env", "key": "k"}}},
                {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s-env", "key": "k"}}},
                {"name": "C", "value": "plain"}],
              "envFrom": [{"configMapRef": {"name": "cm-from"}}, {"secretRef": {"name": "s-from"}}]}],
            "initContainers": [{"name": "i", "envFrom": [{"configMapRef": {"name": "cm-init"}}]}],
            "volumes": [
              {"name": "v1", "configMap": {"name": "cm-vol"}},
              {"name": "v2", "secret": {"secretName": "s-vol"}},
              {"name": "v3", "projected": {"sources": [{"configMap": {"name": "cm-proj"}}, {"secret": {"name": "s-proj"}}]}},
              {"name": "v4", "emptyDir": {}},
              {"name": "v5", "persistentVolumeClaim": {"claimName": "claim"}},
              {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}}],
            "serviceAccountName": "robot",
            "imagePullSecrets": [{"name": "s-pull"}]
        }))
        .unwrap();
        let names: Vec<String> = refs_of("ns", "p", &spec).into_iter().map(|(t, _, n)| format!("{t}/{n}")).collect();
        assert_eq!(
            names,
            [
                "configmap/cm-env",
                "configmap/cm-from",
                "configmap/cm-init",
                "configmap/cm-proj",
                "configmap/cm-vol",
                "persistentvolumeclaim/claim",
                "persistentvolumeclaim/p-scratch",
                "secret/s-env",
                "secret/s-from",
                "secret/s-proj",
                "secret/s-pull",
                "secret/s-vol",
                "serviceaccount/robot"
            ]
        );
    }

    #[test]
    fn pods_are_tracked_per_edge_node_with_their_references() {
        let v = View::default();
        v.set_edge_node("e1", true);
        let r: Ref = (resource_type::CONFIGMAP, "default".into(), "cm".into());
        assert_eq!(v.apply_pod(pod("a", 1), "cloud-node", 1, vec![]), PodChange::Ignored);
        assert_eq!(v.apply_pod(pod("a", 2), "e1", 1, vec![r.clone()]), PodChange::Added);
        assert_eq!(v.apply_pod(pod("a", 3), "e1", 1, vec![r.clone()]), PodChange::Unchanged);
        assert_eq!(v.apply_pod(pod("a", 4), "e1", 2, vec![r.clone()]), PodChange::Updated);
        let cm = Obj { ty: resource_type::CONFIGMAP, name: "cm".into(), ..pod("cm-uid", 7) };
        assert_eq!(v.apply_object(cm), vec!["e1".to_owned()]);
        let desired: Vec<String> = v.desired("e1").into_iter().map(|o| o.uid).collect();
        assert_eq!(desired, ["a", "cm-uid"]);
        assert_eq!(v.remove_pod("a").as_deref(), Some("e1"));
        assert!(v.desired("e1").is_empty());
        assert!(v.remove_object(resource_type::CONFIGMAP, "default", "cm").is_empty());
        // A pod bound before its node is an edge node is sent when the node becomes one.
        assert_eq!(v.apply_pod(pod("early", 1), "e2", 1, vec![]), PodChange::Ignored);
        let sent: Vec<String> = v.set_edge_node("e2", true).into_iter().map(|o| o.uid).collect();
        assert_eq!(sent, ["early"]);
        assert!(v.set_edge_node("e2", true).is_empty(), "only on the change");
        assert_eq!(v.desired("e2").len(), 1);
        // A node that stops being an edge node takes its pods with it.
        assert_eq!(v.apply_pod(pod("b", 1), "e1", 1, vec![]), PodChange::Added);
        v.set_edge_node("e1", false);
        assert_eq!(v.apply_pod(pod("b", 2), "e1", 1, vec![]), PodChange::Left { from: "e1".into() });
    }
}
