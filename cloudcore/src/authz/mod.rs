//! The node authorizer: what one edge may do in the cluster, decided in one place for every path
//! an edge's message can take (EdgeController's upstream messages, DynamicController's
//! Applications). Modelled on Kubernetes' Node authorizer and NodeRestriction admission:
//!
//! - a node reads a secret, configmap, persistent volume claim, service account (and mints its
//!   token) only while a pod bound to it references that object; a persistent volume only
//!   through such a claim; a volume attachment only when it names the node;
//! - it writes only its own Node (and status), its Lease (`kube-node-lease/{node}`), events, and
//!   the status of pods bound to it; it deletes only pods bound to it;
//! - it creates only mirror pods of its own (see [`mirror`]);
//! - it reads and writes the DeviceStatus of devices bound to it (`spec.nodeName`), nothing
//!   else of devices;
//! - it reads its own Node and pods bound to it, and what kube-proxy-like agents need (services,
//!   endpoints, endpoint slices) and discovery;
//! - the KubeEdge PKI secrets (`kubeedge/casecret`, `cloudcoresecret`, `tokensecret`) are never
//!   readable by an edge, whatever references them.
//!
//! A refusal is Kubernetes' 403 `Forbidden` Status (Go's `StatusError` JSON) with upstream's
//! wording, and is counted in `kubeedge_cloudcore_authorization_refusals_total`.

pub mod mirror;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, ApiResource, DynamicObject};
use prometheus::{IntCounterVec, Opts, Registry};
use serde_json::{Value, json};
use tracing::warn;

use crate::delivery::devices::DeviceView;
use crate::delivery::view::{Ref, View};
use kubeedge_apis::devices::GROUP as DEVICES_GROUP;
use kubeedge_apis::devices::v1beta1::Device;
use kubeedge_model::constants::resource_type;
use kubeedge_model::protocol::LEASE_NAMESPACE;
use kubeedge_model::protocol::StatusError;

/// The namespace of KubeEdge's own secrets.
pub const KUBEEDGE_NAMESPACE: &str = "kubeedge";
/// Secrets in [`KUBEEDGE_NAMESPACE`] that hold keys: never readable by an edge.
pub const PROTECTED_SECRETS: [&str; 3] = ["casecret", "cloudcoresecret", "tokensecret"];

/// NodeRestriction's rule for leases: a node may use only its own Lease, in `kube-node-lease`.
/// The one place it is decided (EdgeController's renewer asks it before building a request's
/// attributes).
pub fn own_lease(node: &str, namespace: &str, name: &str) -> bool {
    namespace == LEASE_NAMESPACE && name == node
}

/// Whether `(namespace, secret)` holds KubeEdge's keys.
pub fn is_protected_secret(namespace: &str, name: &str) -> bool {
    namespace == KUBEEDGE_NAMESPACE && PROTECTED_SECRETS.contains(&name)
}

/// Whether a reference a pod makes may ever be followed for an edge (not a protected secret).
pub fn may_follow(r: &Ref) -> bool {
    !(r.0 == resource_type::SECRET && is_protected_secret(&r.1, &r.2))
}

/// One request of one node, in Kubernetes' terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    /// The node asking (from its authenticated connection).
    pub node: String,
    /// get, list, watch, create, update, patch, delete.
    pub verb: String,
    /// API group (`""` for core).
    pub group: String,
    /// Plural resource (`pods`, `secrets`, `leases`…).
    pub resource: String,
    /// Subresource (`status`, `token`…), or empty.
    pub subresource: String,
    /// Namespace, empty for cluster-scoped objects.
    pub namespace: String,
    /// Object name; empty for a list or a create without one.
    pub name: String,
}

impl Attributes {
    /// Attributes of `verb` on `group/resource` `namespace/name` by `node`.
    pub fn new(node: &str, verb: &str, group: &str, resource: &str, namespace: &str, name: &str) -> Self {
        Self {
            node: node.to_owned(),
            verb: verb.to_owned(),
            group: group.to_owned(),
            resource: resource.to_owned(),
            subresource: String::new(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// The same with a subresource.
    pub fn with_subresource(mut self, subresource: &str) -> Self {
        self.subresource = subresource.to_owned();
        self
    }

    fn is_read(&self) -> bool {
        matches!(self.verb.as_str(), "get" | "list" | "watch")
    }
}

/// A refusal: the request and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// The request refused.
    pub attrs: Box<Attributes>,
    /// Why (appended to Kubernetes' message).
    pub reason: String,
    /// The decision could not be made (the cluster did not answer): a 503 the edge retries,
    /// not a 403.
    pub unavailable: bool,
}

impl Denied {
    fn new(attrs: &Attributes, reason: impl Into<String>) -> Self {
        Self { attrs: Box::new(attrs.clone()), reason: reason.into(), unavailable: false }
    }

    fn unavailable(attrs: &Attributes, reason: impl Into<String>) -> Self {
        Self { unavailable: true, ..Self::new(attrs, reason) }
    }

    /// Kubernetes' message: `secrets "x" is forbidden: User "system:node:n" cannot get resource
    /// "secrets" in API group "" in the namespace "ns": <reason>`.
    pub fn message(&self) -> String {
        let a = &self.attrs;
        let qualified = if a.group.is_empty() { a.resource.clone() } else { format!("{}.{}", a.resource, a.group) };
        let resource =
            if a.subresource.is_empty() { a.resource.clone() } else { format!("{}/{}", a.resource, a.subresource) };
        let scope = if a.namespace.is_empty() {
            "at the cluster scope".to_owned()
        } else {
            format!("in the namespace {:?}", a.namespace)
        };
        let subject = if a.name.is_empty() { qualified } else { format!("{qualified} {:?}", a.name) };
        format!(
            "{subject} is forbidden: User \"system:node:{}\" cannot {} resource {resource:?} in API group {:?} {scope}: {}",
            a.node, a.verb, a.group, self.reason
        )
    }

    /// The refusal as Go's `StatusError` marshals it: `{"ErrStatus": <403 Status>}`.
    pub fn status_error(&self) -> Value {
        let a = &self.attrs;
        let mut details = json!({"kind": a.resource});
        if !a.name.is_empty() {
            details["name"] = json!(a.name);
        }
        if !a.group.is_empty() {
            details["group"] = json!(a.group);
        }
        let status = if self.unavailable {
            let message = format!("the node authorizer could not decide: {}", self.reason);
            StatusError::new(503, "ServiceUnavailable", message)
        } else {
            StatusError::new(403, "Forbidden", self.message())
        };
        status.with_details(details).to_value()
    }
}

/// The refusal counter.
#[derive(Clone)]
pub struct AuthzMetrics {
    refusals: IntCounterVec,
}

impl AuthzMetrics {
    /// Registers `kubeedge_cloudcore_authorization_refusals_total{module, resource, verb}`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let refusals = IntCounterVec::new(
            Opts::new(
                "kubeedge_cloudcore_authorization_refusals_total",
                "Edge requests refused by the node authorizer.",
            ),
            &["module", "resource", "verb"],
        )?;
        registry.register(Box::new(refusals.clone()))?;
        Ok(Self { refusals })
    }
}

/// The reason of a graph refusal, in Kubernetes' wording.
pub fn no_relationship(node: &str) -> String {
    format!("no relationship found between node '{node}' and this object")
}

/// The authorizer. Cheap to clone.
#[derive(Clone)]
pub struct NodeAuthorizer {
    client: kube::Client,
    view: View,
    devices: Option<DeviceView>,
    metrics: Option<AuthzMetrics>,
    module: &'static str,
}

impl NodeAuthorizer {
    /// An authorizer that reads pods' references from `view` (EdgeController's) and looks up
    /// bindings it cannot know from the view in the cluster. `module` labels its refusals.
    pub fn new(client: kube::Client, view: View, metrics: Option<AuthzMetrics>, module: &'static str) -> Self {
        Self { client, view, devices: None, metrics, module }
    }

    /// Also decides DeviceStatus writes from DeviceController's view of which devices are bound
    /// to which node (without it they are looked up in the API).
    pub fn with_devices(mut self, devices: DeviceView) -> Self {
        self.devices = Some(devices);
        self
    }

    /// Decides one request; `body` is the object a create or update writes, or a patch's data.
    /// A refusal is logged and counted. A grant on a pod names the pod that was checked: the
    /// caller pins its write to that UID, so a pod recreated meanwhile elsewhere is not touched.
    pub async fn authorize(&self, a: &Attributes, body: Option<&Value>) -> Result<Grant, Denied> {
        match self.decide(a, body).await {
            Ok(g) => Ok(g),
            Err(d) if d.unavailable => {
                warn!(module = self.module, node = %a.node, reason = %d.reason, "Could not authorize an edge request.");
                Err(d)
            }
            Err(d) => Err(self.refuse(&d.attrs, d.reason)),
        }
    }

    /// Records a refusal decided by the caller (logged and counted) and returns it.
    pub fn refuse(&self, a: &Attributes, reason: impl Into<String>) -> Denied {
        let d = Denied::new(a, reason);
        warn!(
            module = self.module,
            node = %a.node,
            verb = %a.verb,
            resource = %a.resource,
            namespace = %a.namespace,
            name = %a.name,
            reason = %d.reason,
            "Refused an edge request."
        );
        if let Some(m) = &self.metrics {
            m.refusals.with_label_values(&[self.module, &a.resource, &a.verb]).inc();
        }
        d
    }

    async fn decide(&self, a: &Attributes, body: Option<&Value>) -> Result<Grant, Denied> {
        let deny = |why: String| Err(Denied::new(a, why));
        let ok = || Ok(Grant::default());
        let own = a.name == a.node;
        match (a.group.as_str(), a.resource.as_str()) {
            ("", "secrets")
                if is_protected_secret(&a.namespace, &a.name)
                    || a.namespace == KUBEEDGE_NAMESPACE && a.name.is_empty() =>
            {
                deny("KubeEdge's key material is never readable by an edge".into())
            }
            ("", "nodes") if own => self.node_restrictions(a, body).await.map(|()| Grant::default()),
            ("", "nodes") => deny(format!("node '{}' may only access its own Node object", a.node)),
            ("coordination.k8s.io", "leases") => {
                if own_lease(&a.node, &a.namespace, &a.name) {
                    ok()
                } else {
                    deny(format!("node '{}' may only use its own lease kube-node-lease/{}", a.node, a.node))
                }
            }
            ("" | "events.k8s.io", "events") => match a.verb.as_str() {
                "create" | "update" | "patch" => ok(),
                _ => deny(format!("node '{}' may only write events", a.node)),
            },
            ("", "pods") => self.pods(a, body).await,
            (DEVICES_GROUP, "devicestatuses") => self.device_status(a).await.map(|()| Grant::default()),
            ("", "serviceaccounts") if a.subresource == "token" && a.verb == "create" && !a.name.is_empty() => {
                self.token_request(a, body).await.map(|()| Grant::default())
            }
            ("", "configmaps" | "secrets" | "persistentvolumeclaims" | "serviceaccounts") => {
                let ty = match a.resource.as_str() {
                    "configmaps" => resource_type::CONFIGMAP,
                    "secrets" => resource_type::SECRET,
                    "persistentvolumeclaims" => resource_type::PERSISTENT_VOLUME_CLAIM,
                    _ => crate::delivery::refs::SERVICE_ACCOUNT,
                };
                if a.verb != "get" || !a.subresource.is_empty() || a.name.is_empty() {
                    return deny(format!("node '{}' may only get single objects its pods use", a.node));
                }
                let r: Ref = (ty, a.namespace.clone(), a.name.clone());
                if self.view.node_uses(&a.node, &r) { ok() } else { deny(no_relationship(&a.node)) }
            }
            ("", "persistentvolumes") if a.verb == "get" && !a.name.is_empty() => {
                for (_, ns, claim) in self.view.node_refs(&a.node, resource_type::PERSISTENT_VOLUME_CLAIM) {
                    let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
                    if let Ok(Some(pvc)) = api.get_opt(&claim).await
                        && pvc.spec.and_then(|s| s.volume_name).as_deref() == Some(a.name.as_str())
                    {
                        return ok();
                    }
                }
                deny(no_relationship(&a.node))
            }
            ("storage.k8s.io", "volumeattachments") if a.verb == "get" && !a.name.is_empty() => {
                let ar = ApiResource {
                    group: "storage.k8s.io".into(),
                    version: "v1".into(),
                    api_version: "storage.k8s.io/v1".into(),
                    kind: "VolumeAttachment".into(),
                    plural: "volumeattachments".into(),
                };
                let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &ar);
                match api.get_opt(&a.name).await {
                    Ok(Some(va))
                        if va.data.pointer("/spec/nodeName").and_then(Value::as_str) == Some(a.node.as_str()) =>
                    {
                        ok()
                    }
                    _ => deny(no_relationship(&a.node)),
                }
            }
            ("", "services" | "endpoints") | ("discovery.k8s.io", "endpointslices") if a.is_read() => ok(),
            ("storage.k8s.io", "csidrivers" | "csinodes" | "storageclasses") | ("node.k8s.io", "runtimeclasses")
                if a.is_read() =>
            {
                ok()
            }
            _ => deny(format!("the node authorizer grants edges no {} access to {}", a.verb, a.resource)),
        }
    }

    /// A node may read and write the DeviceStatus of a device bound to it (`spec.nodeName`),
    /// and nothing else of devices: the DeviceStatus is named as its Device.
    async fn device_status(&self, a: &Attributes) -> Result<(), Denied> {
        let deny = |why: String| Err(Denied::new(a, why));
        if !matches!(a.verb.as_str(), "get" | "patch" | "update") || a.name.is_empty() {
            return deny(format!("node '{}' may only read and write single device statuses", a.node));
        }
        let node = match self.devices.as_ref().and_then(|d| d.device(&a.namespace, &a.name)) {
            Some(d) => d.node,
            // Not in the view (not yet seen, or gone): the API decides.
            None => {
                let api: Api<Device> = Api::namespaced(self.client.clone(), &a.namespace);
                match api.get_opt(&a.name).await {
                    Ok(Some(d)) => d.spec.node_name,
                    Ok(None) => return deny(no_relationship(&a.node)),
                    Err(e) => return Err(Denied::unavailable(a, format!("the device could not be read: {e}"))),
                }
            }
        };
        if node == a.node { Ok(()) } else { deny(no_relationship(&a.node)) }
    }

    async fn pods(&self, a: &Attributes, body: Option<&Value>) -> Result<Grant, Denied> {
        let deny = |why: String| Err(Denied::new(a, why));
        match (a.verb.as_str(), a.subresource.as_str()) {
            ("create", "") => match body {
                Some(pod) => mirror::check(&a.node, pod).map(|()| Grant::default()).map_err(|why| Denied::new(a, why)),
                None => deny(format!("node '{}' can only create mirror pods", a.node)),
            },
            // A list or watch must be of this node's pods (fieldSelector spec.nodeName=node):
            // callers put the selected node in `name`.
            ("list" | "watch", "") if a.name == a.node => Ok(Grant::default()),
            ("get" | "delete", "") | ("update" | "patch", "status") | ("create", "eviction") if !a.name.is_empty() => {
                // The view (EdgeController's pod watch) knows the pods bound to this node: no
                // API read for an honest edge's status patch or delete. The write is pinned to
                // that UID, so a pod since deleted and recreated under the name is not touched.
                if let Some(uid) = self.view.pod_on_node(&a.node, &a.namespace, &a.name) {
                    return Ok(Grant { pod_uid: Some(uid), pod_checked: true });
                }
                // Not in the view (gone, not yet seen, or another node's): the API decides.
                match self.pod_binding(&a.namespace, &a.name).await {
                    Err(e) => Err(Denied::unavailable(a, format!("the pod's binding could not be read: {e}"))),
                    // Gone: the API answers 404 (the caller pins the write to no UID, so a pod
                    // created meanwhile under that name is not touched).
                    Ok(None) => Ok(Grant { pod_uid: None, pod_checked: true }),
                    Ok(Some((node, uid))) if node == a.node => Ok(Grant { pod_uid: Some(uid), pod_checked: true }),
                    Ok(Some(_)) => deny(no_relationship(&a.node)),
                }
            }
            _ => deny(format!("node '{}' may not {} pods{}", a.node, a.verb, sub_suffix(&a.subresource))),
        }
    }

    /// NodeRestriction's TokenRequest rule: bound to a pod (by name and UID) that is bound to
    /// this node and runs as that service account.
    async fn token_request(&self, a: &Attributes, body: Option<&Value>) -> Result<(), Denied> {
        let deny = |why: String| Err(Denied::new(a, why));
        let bound = body.and_then(|b| b.pointer("/spec/boundObjectRef"));
        let field = |k: &str| bound.and_then(|r| r.get(k)).and_then(Value::as_str).unwrap_or_default();
        if field("kind") != "Pod" || field("name").is_empty() || field("uid").is_empty() {
            return deny(format!(
                "node '{}' may only request tokens bound to a pod (spec.boundObjectRef kind Pod with name and uid)",
                a.node
            ));
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &a.namespace);
        let pod = match api.get_opt(field("name")).await {
            Ok(Some(p)) => p,
            Ok(None) => return deny(format!("the pod {:?} the token is bound to does not exist", field("name"))),
            Err(e) => {
                return Err(Denied::unavailable(a, format!("the pod the token is bound to could not be read: {e}")));
            }
        };
        let spec = pod.spec.unwrap_or_default();
        let sa = spec.service_account_name.as_deref().or(spec.service_account.as_deref()).unwrap_or("default");
        if pod.metadata.uid.as_deref() != Some(field("uid"))
            || spec.node_name.as_deref() != Some(a.node.as_str())
            || sa != a.name
        {
            return deny(no_relationship(&a.node));
        }
        Ok(())
    }

    /// NodeRestriction for a node's own Node: it never sets, changes or removes labels under
    /// `node-restriction.kubernetes.io/` nor KubeEdge's own annotations
    /// ([`mirror::PROTECTED_ANNOTATIONS`]), and does not change its taints after creation. An
    /// update replaces the whole object, so what it leaves out is removed; a patch may not
    /// replace `spec`, the labels or the annotations wholesale.
    async fn node_restrictions(&self, a: &Attributes, body: Option<&Value>) -> Result<(), Denied> {
        let Some(body) = body else { return Ok(()) };
        let refuse = |why: String| Err(Denied::new(a, why));
        if a.verb == "create" {
            if let Some((k, _)) = mirror::restricted_labels(body).first() {
                return refuse(format!(
                    "is not allowed to set labels: {k} (the {} prefix is the administrators')",
                    mirror::RESTRICTED_LABEL_PREFIX
                ));
            }
            if let Some((k, _)) = mirror::protected_annotations(body).first() {
                return refuse(format!("is not allowed to set the annotation {k} (KubeEdge's own)"));
            }
            return Ok(());
        }
        if a.subresource == "status" {
            // The status subresource changes nothing else (the API ignores the rest).
            return Ok(());
        }
        if a.verb == "patch" && mirror::replaces_wholesale(body) {
            return refuse("may not replace its spec, labels or annotations wholesale in a patch".into());
        }
        let full = a.verb == "update";
        let api: Api<k8s_openapi::api::core::v1::Node> = Api::all(self.client.clone());
        let current = match api.get_opt(&a.node).await {
            Ok(n) => n.unwrap_or_default(),
            Err(e) => return Err(Denied::unavailable(a, format!("the Node could not be read: {e}"))),
        };
        let labels = current.metadata.labels.clone().unwrap_or_default();
        let annotations = current.metadata.annotations.clone().unwrap_or_default();
        // What the write would leave: for an update the body's values, for a patch the body's
        // values where it names a key.
        let check = |current: &std::collections::BTreeMap<String, String>,
                     wanted: Vec<(String, Value)>,
                     guarded: &dyn Fn(&str) -> bool,
                     what: &str|
         -> Result<(), mirror::Restricted> {
            let wanted: std::collections::BTreeMap<String, Value> = wanted.into_iter().collect();
            for (k, v) in &wanted {
                if current.get(k).map(|c| Value::String(c.clone())).as_ref() != Some(v) {
                    return Err(mirror::Restricted(format!("is not allowed to modify {what}: {k}")));
                }
            }
            if full && let Some(k) = current.keys().filter(|k| guarded(k)).find(|k| !wanted.contains_key(*k)) {
                return Err(mirror::Restricted(format!("is not allowed to remove {what}: {k}")));
            }
            Ok(())
        };
        check(&labels, mirror::restricted_labels(body), &|k| k.starts_with(mirror::RESTRICTED_LABEL_PREFIX), "labels")
            .or_else(|r| refuse(r.into()))?;
        check(
            &annotations,
            mirror::protected_annotations(body),
            &|k| mirror::PROTECTED_ANNOTATIONS.contains(&k),
            "annotations",
        )
        .or_else(|r| refuse(r.into()))?;
        let taints = body.pointer("/spec/taints");
        if full || taints.is_some() {
            use k8s_openapi::api::core::v1::Taint;
            let wanted: Vec<Taint> = match taints {
                None | Some(Value::Null) => Vec::new(),
                Some(t) => match serde_json::from_value(t.clone()) {
                    Ok(t) => t,
                    Err(e) => return refuse(format!("spec.taints: {e}")),
                },
            };
            if wanted != current.spec.and_then(|s| s.taints).unwrap_or_default() {
                return refuse("is not allowed to modify taints".into());
            }
        }
        Ok(())
    }

    /// The node a pod is bound to and its UID (`None`: no such pod). A pod not yet scheduled
    /// is bound to `""`, which is no node's.
    async fn pod_binding(&self, namespace: &str, name: &str) -> Result<Option<(String, String)>, kube::Error> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        Ok(api
            .get_opt(name)
            .await?
            .map(|p| (p.spec.and_then(|s| s.node_name).unwrap_or_default(), p.metadata.uid.unwrap_or_default())))
    }
}

/// What a granted request may rely on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    /// For a pod request: the UID of the pod (bound to the node) that was checked; `None` when
    /// no such pod exists.
    pub pod_uid: Option<String>,
    /// Whether the grant was decided on a pod lookup (so [`Grant::pin_uid`] applies).
    pub pod_checked: bool,
}

/// A UID no object has: a write pinned to it fails with 404 (absent) or 409 (recreated).
pub const NO_UID: &str = "00000000-0000-0000-0000-000000000000";

impl Grant {
    /// The UID a pod write must be pinned to, when the grant was decided on a pod lookup.
    pub fn pin_uid(&self) -> Option<&str> {
        self.pod_checked.then(|| self.pod_uid.as_deref().unwrap_or(NO_UID))
    }
}

fn sub_suffix(sub: &str) -> String {
    if sub.is_empty() { String::new() } else { format!("/{sub}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_have_kubernetes_wording_and_details() {
        let a = Attributes::new("edge-a", "get", "", "secrets", "kubeedge", "casecret");
        let d = Denied::new(&a, "KubeEdge's key material is never readable by an edge");
        assert_eq!(
            d.message(),
            "secrets \"casecret\" is forbidden: User \"system:node:edge-a\" cannot get resource \"secrets\" in API \
             group \"\" in the namespace \"kubeedge\": KubeEdge's key material is never readable by an edge"
        );
        let s = d.status_error();
        assert_eq!(s["ErrStatus"]["code"], 403);
        assert_eq!(s["ErrStatus"]["reason"], "Forbidden");
        assert_eq!(s["ErrStatus"]["details"], json!({"name": "casecret", "kind": "secrets"}));
        let lease = Attributes::new("edge-a", "update", "coordination.k8s.io", "leases", "kube-node-lease", "edge-b");
        let d = Denied::new(&lease, "x");
        assert!(d.message().starts_with("leases.coordination.k8s.io \"edge-b\" is forbidden"), "{}", d.message());
        assert_eq!(d.status_error()["ErrStatus"]["details"]["group"], "coordination.k8s.io");
        let node = Attributes::new("edge-a", "patch", "", "nodes", "", "edge-b").with_subresource("status");
        assert!(
            Denied::new(&node, "x")
                .message()
                .contains("resource \"nodes/status\" in API group \"\" at the cluster scope")
        );
    }

    #[test]
    fn protected_secrets_are_never_followed() {
        assert!(!may_follow(&(resource_type::SECRET, "kubeedge".into(), "casecret".into())));
        assert!(may_follow(&(resource_type::SECRET, "kubeedge".into(), "edgemesh-psk".into())));
        assert!(may_follow(&(resource_type::CONFIGMAP, "kubeedge".into(), "casecret".into())));
    }
}
