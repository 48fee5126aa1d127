//! Edges → Kubernetes (upstream `upstream.go`): node registration and status, pod status, pod
//! deletion, leases, events, and the queries edged makes through MetaManager (configmaps,
//! secrets, volumes, service-account tokens). The resource's `node/{node}/` prefix was put
//! there by CloudHub from the authenticated connection.
//!
//! Replies go back through CloudHub with `parent_msg_id` = the request's id, source
//! `edgecontroller`, group `resource`, operation `response`:
//! - node insert, nodepatch, podpatch and leases: `{"Object": <object or null>, "Err": <Go
//!   StatusError or null>}`;
//! - node update, nodestatus, podstatus, pod delete and the compact lease renewal of an edge of
//!   ours (`renew`, `kubeedge_model::protocol::lease`): `"OK"` (or the error);
//! - queries: the object itself with its resourceversion (ACKed by the edge), or on error the
//!   Go error value `{"ErrStatus": {…}}`.
//!
//! The shapes are the model's (`kubeedge_model::protocol::reply`), which the edge parses.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event as KubeEvent, Node, Pod, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams, Preconditions};
use kubeedge_model::constants::resource_type;
use kubeedge_model::protocol::{StatusError, reply};
use kubeedge_model::{CloudResource, Content, Message, Operation};
use serde::Serialize;
use serde_json::{Value, json};
use tracing::{debug, warn};

use super::downstream::{Sender, delete_message};
use crate::authz::{Attributes, Grant, NodeAuthorizer};

/// Handles upstream messages for one node at a time (the caller keeps per-node order).
#[derive(Clone)]
pub struct Upstream {
    /// The cluster.
    pub client: kube::Client,
    /// Where replies go.
    pub tx: Sender,
    /// What each node may do.
    pub authz: NodeAuthorizer,
}

/// A Kubernetes error as Go's `StatusError` marshals: `{"ErrStatus": <Status>}`, with the
/// API server's `details` (name, group, kind) when it gave them.
pub(super) fn status_error(e: &kube::Error) -> Value {
    let (code, reason, message, details) = match e {
        kube::Error::Api(s) => (i32::from(s.code), s.reason.clone(), s.message.clone(), s.details.clone()),
        other => (500, "InternalError".to_owned(), other.to_string(), None),
    };
    let status = StatusError::new(code, reason, message);
    match details.and_then(|d| serde_json::to_value(d).ok()).filter(|d| d.as_object().is_some_and(|o| !o.is_empty())) {
        Some(d) => status.with_details(d).to_value(),
        None => status.to_value(),
    }
}

/// Whether the error is the API's 404.
fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// An object's `metadata.resourceVersion`.
fn resource_version(obj: &Option<Value>) -> String {
    obj.as_ref()
        .and_then(|o| o.pointer("/metadata/resourceVersion"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn with_types(mut v: Value, api_version: &str, kind: &str) -> Value {
    if let Some(m) = v.as_object_mut() {
        m.insert("apiVersion".into(), api_version.into());
        m.insert("kind".into(), kind.into());
    }
    v
}

/// The content as a JSON value: nested JSON, or JSON inside a string (upstream sends both).
fn content_value(msg: &Message) -> Option<Value> {
    content_typed(msg)
}

/// The content decoded straight into `T` (nested JSON, or JSON inside a string), without a
/// generic [`Value`] in between: the lease an upstream edge sends every 10 s is read this way.
fn content_typed<T: serde::de::DeserializeOwned>(msg: &Message) -> Option<T> {
    if let Some(s) = msg.content.as_str() {
        return serde_json::from_str(&s).ok();
    }
    msg.content.decode().ok()
}

/// A 400 in Go's `StatusError` shape, for content the cloud cannot use.
fn bad_request(what: &str) -> Value {
    StatusError::bad_request(what).to_value()
}

/// Whether upstream answers this request with an ObjectResp (`{"Object", "Err"}`) rather than
/// the bare object or error: node insert, node and pod status patches, and every lease request
/// upstream knows (our compact renewal is answered `"OK"` or the bare error).
fn object_resp_reply(ty: &str, op: &Operation) -> bool {
    matches!(
        (ty, op),
        (resource_type::NODE, Operation::Insert)
            | (resource_type::NODE_PATCH | resource_type::POD_PATCH, Operation::Patch)
            | (resource_type::LEASE, Operation::Insert | Operation::Update | Operation::Query)
    )
}

/// A message in the node authorizer's terms; `None` for what needs no decision (unknown types
/// are dropped) or is decided per item (the deprecated `podstatus` list). `content_name` is the
/// name the object in the content gives itself.
fn attributes(
    node: &str,
    ty: &str,
    op: &Operation,
    ns: &str,
    name: &str,
    content_name: Option<&str>,
) -> Option<Attributes> {
    let a = |verb: &str, group: &str, resource: &str, ns: &str, name: &str| {
        Some(Attributes::new(node, verb, group, resource, ns, name))
    };
    // A write names its object twice (resource and content): both must agree.
    let named = |name: &str| match content_name.map(str::to_owned) {
        // The one that is not the node's own decides (then the request is refused).
        Some(c) if !name.is_empty() && c != name => {
            if c == node {
                name.to_owned()
            } else {
                c
            }
        }
        Some(c) => c,
        None => name.to_owned(),
    };
    match (ty, op) {
        (resource_type::NODE, Operation::Insert) => a("create", "", "nodes", "", &named(name)),
        // EdgeController merges the labels and annotations the edge sends (a patch).
        (resource_type::NODE, Operation::Update) => a("patch", "", "nodes", "", &named(name)),
        (resource_type::NODE, Operation::Query) => a("get", "", "nodes", "", name),
        (resource_type::NODE_PATCH, Operation::Patch) => {
            a("patch", "", "nodes", "", name).map(|x| x.with_subresource("status"))
        }
        (resource_type::NODE_STATUS, Operation::Update) => {
            a("update", "", "nodes", "", name).map(|x| x.with_subresource("status"))
        }
        (resource_type::POD_PATCH, Operation::Patch) => {
            a("patch", "", "pods", ns, name).map(|x| x.with_subresource("status"))
        }
        (resource_type::POD, Operation::Delete) => a("delete", "", "pods", ns, name),
        (resource_type::POD, Operation::Insert) => a("create", "", "pods", ns, ""),
        (resource_type::CONFIGMAP, Operation::Query) => a("get", "", "configmaps", ns, name),
        (resource_type::SECRET, Operation::Query) => a("get", "", "secrets", ns, name),
        (resource_type::PERSISTENT_VOLUME, Operation::Query) => a("get", "", "persistentvolumes", "", name),
        (resource_type::PERSISTENT_VOLUME_CLAIM, Operation::Query) => a("get", "", "persistentvolumeclaims", ns, name),
        (resource_type::VOLUME_ATTACHMENT, Operation::Query) => {
            a("get", "storage.k8s.io", "volumeattachments", "", name)
        }
        (resource_type::SERVICE_ACCOUNT_TOKEN, Operation::Query) => {
            a("create", "", "serviceaccounts", ns, name).map(|x| x.with_subresource("token"))
        }
        (resource_type::LEASE, Operation::Insert) => {
            a("create", "coordination.k8s.io", "leases", or_lease_ns(ns), &named(name))
        }
        (resource_type::LEASE, Operation::Update) => {
            a("update", "coordination.k8s.io", "leases", or_lease_ns(ns), &named(name))
        }
        (resource_type::LEASE, Operation::Query) => a("get", "coordination.k8s.io", "leases", or_lease_ns(ns), name),
        // The compact renewal names its lease in the resource only (its content is null).
        (resource_type::LEASE, Operation::Renew) => a("patch", "coordination.k8s.io", "leases", or_lease_ns(ns), name),
        (resource_type::EVENT, Operation::Insert | Operation::Update | Operation::Patch) => {
            a("create", "", "events", ns, "")
        }
        _ => None,
    }
}

/// What of a Node's labels and annotations an edge's update may carry: not the administrators'
/// labels (`node-restriction.kubernetes.io/`) nor KubeEdge's own annotations, which its copy
/// may hold at an older value; they are left as they are.
fn edge_node_metadata(node: &mut Value) {
    use crate::authz::mirror::{PROTECTED_ANNOTATIONS, RESTRICTED_LABEL_PREFIX};
    if let Some(l) = node.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
        l.retain(|k, _| !k.starts_with(RESTRICTED_LABEL_PREFIX));
    }
    if let Some(a) = node.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) {
        a.retain(|k, _| !PROTECTED_ANNOTATIONS.contains(&k.as_str()));
    }
}

pub(super) fn or_lease_ns(ns: &str) -> &str {
    if ns.is_empty() { "kube-node-lease" } else { ns }
}

impl Upstream {
    /// Handles one message; malformed ones are logged and dropped. Every request passes the
    /// node authorizer first; a refusal is answered with a 403 in the reply's shape.
    pub async fn handle(&self, msg: Message) {
        let Ok(res) = CloudResource::parse(&msg.router.resource) else {
            warn!(resource = %msg.router.resource, "Dropped an upstream message with a malformed resource.");
            return;
        };
        let node = res.node.clone();
        let ns = res.path.namespace().unwrap_or_default().to_owned();
        let name = res.path.name.clone().unwrap_or_default();
        let op = msg.operation();
        let ty = res.path.resource_type.as_str();
        let mut grant = Grant::default();
        // The content is read once. A lease is decoded straight into a Lease (the authorizer
        // does not read lease bodies); a renewal's content is not read at all; anything else
        // is what the request writes (the object, a patch, or a TokenRequest), as JSON.
        let lease_write = ty == resource_type::LEASE && matches!(op, Operation::Insert | Operation::Update);
        let lease: Option<Lease> = if lease_write { content_typed(&msg) } else { None };
        // (Content that is not a Lease is read as JSON for the name it gives, so a request
        // naming another node's lease is refused as such.)
        let mut body =
            if op == Operation::Renew || (lease_write && lease.is_some()) { None } else { content_value(&msg) };
        let in_content = match &lease {
            Some(l) => l.metadata.name.clone(),
            None => body.as_ref().and_then(|b| b.pointer("/metadata/name")?.as_str().map(str::to_owned)),
        };
        if let Some(attrs) = attributes(&node, ty, &op, &ns, &name, in_content.as_deref()) {
            if (ty, &op) == (resource_type::NODE, &Operation::Update)
                && let Some(b) = body.as_mut()
            {
                edge_node_metadata(b);
            }
            match self.authz.authorize(&attrs, body.as_ref()).await {
                Ok(g) => grant = g,
                Err(denied) => {
                    let err = denied.status_error();
                    let content = if object_resp_reply(ty, &op) {
                        reply::object_resp(None, Some(err))
                    } else {
                        Content::from_value(&err)
                    };
                    self.tx.raw(reply::response(&msg, content)).await;
                    return;
                }
            }
        }
        let reply = match (ty, &op) {
            (resource_type::NODE, Operation::Insert) => Some(self.node_insert(&msg, body, &node).await),
            (resource_type::NODE, Operation::Update) => Some(self.node_update(&msg, body, &name).await),
            (resource_type::NODE, Operation::Query) => {
                Some(self.get_object(&msg, "", "v1", "Node", "nodes", &name).await)
            }
            (resource_type::NODE_PATCH, Operation::Patch) => Some(self.status_patch(&msg, body, None, &name).await),
            (resource_type::NODE_STATUS, Operation::Update) => Some(self.node_status(&msg, &name).await),
            (resource_type::POD_PATCH, Operation::Patch) => {
                Some(self.status_patch(&msg, body, Some((&ns, grant.pin_uid())), &name).await)
            }
            (resource_type::POD_STATUS, Operation::Update) => Some(self.pod_status(&msg, &node, &ns).await),
            (resource_type::POD, Operation::Delete) => Some(self.pod_delete(&msg, &ns, &name, grant.pin_uid()).await),
            (resource_type::POD, Operation::Insert) => {
                self.pod_insert(&msg, &ns).await;
                None
            }
            (resource_type::CONFIGMAP, Operation::Query) => {
                Some(self.get_object(&msg, &ns, "v1", "ConfigMap", "configmaps", &name).await)
            }
            (resource_type::SECRET, Operation::Query) => {
                Some(self.get_object(&msg, &ns, "v1", "Secret", "secrets", &name).await)
            }
            (resource_type::PERSISTENT_VOLUME, Operation::Query) => {
                Some(self.get_object(&msg, "", "v1", "PersistentVolume", "persistentvolumes", &name).await)
            }
            (resource_type::PERSISTENT_VOLUME_CLAIM, Operation::Query) => {
                Some(self.get_object(&msg, &ns, "v1", "PersistentVolumeClaim", "persistentvolumeclaims", &name).await)
            }
            (resource_type::VOLUME_ATTACHMENT, Operation::Query) => Some(
                self.get_object(&msg, "", "storage.k8s.io/v1", "VolumeAttachment", "volumeattachments", &name).await,
            ),
            (resource_type::SERVICE_ACCOUNT_TOKEN, Operation::Query) => Some(self.token(&msg, &ns, &name).await),
            (resource_type::LEASE, Operation::Insert | Operation::Update) => {
                Some(self.lease_write(&msg, lease, &ns, &name).await)
            }
            (resource_type::LEASE, Operation::Query) => Some(self.lease_query(&msg, &ns, &name).await),
            (resource_type::LEASE, Operation::Renew) => Some(self.lease_renew(&msg, &ns, &name).await),
            (resource_type::EVENT, Operation::Insert | Operation::Update | Operation::Patch) => {
                self.event(&msg, &ns).await;
                None
            }
            _ => {
                debug!(node, resource = %msg.router.resource, %op, "No handler for an upstream message; dropped.");
                None
            }
        };
        if let Some(r) = reply {
            self.tx.raw(r).await;
        }
    }

    async fn node_insert(&self, msg: &Message, body: Option<Value>, node: &str) -> Message {
        let api: Api<Node> = Api::all(self.client.clone());
        let result = match body.map(serde_json::from_value::<Node>) {
            Some(Ok(mut n)) => {
                if n.metadata.name.as_deref().is_none_or(|x| x != node) {
                    // A node registers itself only.
                    n.metadata.name = Some(node.to_owned());
                }
                n.metadata.resource_version = None;
                n.metadata.uid = None;
                n.metadata.generate_name = None;
                // Registered by an edge holding a certificate: the shared join token may not
                // issue another for this node (see the join API).
                n.metadata
                    .annotations
                    .get_or_insert_default()
                    .insert(crate::cloudhub::https::REGISTERED_BY_EDGE.to_owned(), "true".to_owned());
                api.create(&PostParams::default(), &n).await
            }
            _ => {
                return reply::response(
                    msg,
                    reply::object_resp(None, Some(bad_request("node insert content is not a Node"))),
                );
            }
        };
        let result = result.map_err(|e| status_error(&e));
        match result {
            Ok(n) => reply::response(msg, reply::object_resp(serde_json::to_value(&n).ok(), None)),
            Err(e) => {
                debug!(node, error = %e, "Node registration failed.");
                reply::response(msg, reply::object_resp(None, Some(e)))
            }
        }
    }

    async fn node_update(&self, msg: &Message, body: Option<Value>, name: &str) -> Message {
        let api: Api<Node> = Api::all(self.client.clone());
        let Some(mut v) = body else {
            return reply::response(msg, Content::from_value(&bad_request("node update content is not JSON")));
        };
        edge_node_metadata(&mut v);
        // Labels and annotations from the edge are merged in; nothing else is taken.
        let patch = json!({"metadata": {
            "labels": v.pointer("/metadata/labels").cloned().unwrap_or(json!({})),
            "annotations": v.pointer("/metadata/annotations").cloned().unwrap_or(json!({})),
        }});
        match api.patch(name, &PatchParams::default(), &Patch::Strategic(patch)).await {
            Ok(_) => reply::response(msg, reply::ok()),
            Err(e) => reply::response(msg, Content::from_value(&status_error(&e))),
        }
    }

    /// A strategic-merge patch of `nodes/{name}/status` or `pods/{name}/status` (the content is
    /// the patch, usually as a JSON string); the reply carries the patched object.
    /// `pod` is the pod's namespace and the UID the authorizer checked: the patch is pinned to
    /// it (its `metadata.uid`, a precondition), unless the edge pinned it already.
    async fn status_patch(
        &self,
        msg: &Message,
        body: Option<Value>,
        pod: Option<(&str, Option<&str>)>,
        name: &str,
    ) -> Message {
        let Some(mut patch) = body else {
            return reply::response(msg, reply::object_resp(None, Some(bad_request("the patch is not JSON"))));
        };
        if let (Some((_, Some(uid))), Some(obj)) = (pod, patch.as_object_mut()) {
            let meta = obj.entry("metadata").or_insert_with(|| json!({}));
            if let Some(meta) = meta.as_object_mut()
                && meta.get("uid").and_then(Value::as_str).is_none_or(str::is_empty)
            {
                // The edge's own non-empty UID stays: the API holds the patch to it.
                meta.insert("uid".into(), json!(uid));
            }
        }
        let ns = pod.map(|(ns, _)| ns);
        if ns.is_none() {
            keep_kubelet_endpoint(&mut patch);
        }
        // The patched object is read once, as JSON, and goes into the reply as it came (each
        // node's status heartbeat is answered with its whole Node).
        let path = match ns {
            None => "/api/v1/nodes".to_owned(),
            Some(ns) => format!("/api/v1/namespaces/{ns}/pods"),
        };
        let request = kube::core::Request::new(path)
            .patch_subresource("status", name, &PatchParams::default(), &Patch::Strategic(patch))
            .map_err(kube::Error::BuildRequest);
        let result = match request {
            Ok(r) => self.client.request::<Value>(r).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(obj) => {
                let obj = Some(obj);
                // Upstream's patch replies carry the patched object's version in the header.
                let version = resource_version(&obj);
                let mut r = reply::response(msg, reply::object_resp(obj, None));
                r.header.resource_version = version;
                r
            }
            Err(e) => {
                debug!(name, error = %e, "Status patch failed.");
                reply::response(msg, reply::object_resp(None, Some(status_error(&e))))
            }
        }
    }

    async fn node_status(&self, msg: &Message, name: &str) -> Message {
        let api: Api<Node> = Api::all(self.client.clone());
        let status = content_value(msg).and_then(|v| v.get("Status").cloned());
        let Some(mut status) = status else {
            return reply::response(msg, Content::from_value(&bad_request("nodestatus content has no Status")));
        };
        keep_kubelet_endpoint(&mut status);
        match api.patch_status(name, &PatchParams::default(), &Patch::Merge(json!({"status": status}))).await {
            Ok(_) => reply::response(msg, reply::ok()),
            Err(e) => reply::response(msg, Content::from_value(&status_error(&e))),
        }
    }

    /// The deprecated list form of pod status. Each item is checked as the node authorizer
    /// would (the pod must be bound to this node); a refused item is skipped and the reply is
    /// the first refusal.
    async fn pod_status(&self, msg: &Message, node: &str, ns: &str) -> Message {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let list = content_value(msg).and_then(|v| v.as_array().cloned()).unwrap_or_default();
        let mut refused = None;
        for item in list {
            let (Some(uid), Some(name)) =
                (item.get("UID").and_then(Value::as_str), item.get("Name").and_then(Value::as_str))
            else {
                continue;
            };
            match api.get_opt(name).await {
                Ok(Some(p)) if p.metadata.uid.as_deref() == Some(uid) => {
                    if p.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(node) {
                        let attrs = Attributes::new(node, "update", "", "pods", ns, name).with_subresource("status");
                        refused.get_or_insert(self.authz.refuse(&attrs, crate::authz::no_relationship(node)));
                        continue;
                    }
                    let status = item.get("Status").cloned().unwrap_or(json!({}));
                    let patch = json!({"metadata": {"uid": uid}, "status": status});
                    if let Err(e) = api.patch_status(name, &PatchParams::default(), &Patch::Merge(patch)).await {
                        warn!(node, pod = name, error = %e, "Pod status update failed.");
                    }
                }
                Ok(_) => {
                    // Gone or replaced: the edge should delete its copy.
                    let m = delete_message(node, resource_type::POD, "v1", "Pod", ns, name, uid);
                    self.tx.raw(m).await;
                }
                Err(e) => warn!(node, pod = name, error = %e, "Reading a pod for its status failed."),
            }
        }
        match refused {
            Some(d) => reply::response(msg, Content::from_value(&d.status_error())),
            None => reply::response(msg, reply::ok()),
        }
    }

    /// `pinned` is the UID the authorizer checked: without the edge's own precondition, the
    /// delete is pinned to it.
    async fn pod_delete(&self, msg: &Message, ns: &str, name: &str, pinned: Option<&str>) -> Message {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let mut dp = DeleteParams::default();
        match content_value(msg) {
            // A UID string: grace 0 with a UID precondition.
            Some(Value::String(uid)) => {
                dp.grace_period_seconds = Some(0);
                dp.preconditions = Some(Preconditions { uid: Some(uid), resource_version: None });
            }
            Some(v @ Value::Object(_)) => {
                dp.grace_period_seconds = v.get("gracePeriodSeconds").and_then(Value::as_u64).map(|g| g as u32);
                if let Some(uid) = v.pointer("/preconditions/uid").and_then(Value::as_str) {
                    dp.preconditions = Some(Preconditions { uid: Some(uid.to_owned()), resource_version: None });
                }
            }
            _ => {
                if let Some(uid) = msg.content.as_str().filter(|s| !s.is_empty()) {
                    dp.grace_period_seconds = Some(0);
                    dp.preconditions = Some(Preconditions { uid: Some(uid.into_owned()), resource_version: None });
                }
            }
        }
        let edge_pinned = dp.preconditions.as_ref().and_then(|p| p.uid.as_deref()).is_some_and(|u| !u.is_empty());
        if !edge_pinned && let Some(uid) = pinned {
            dp.preconditions = Some(Preconditions { uid: Some(uid.to_owned()), resource_version: None });
        }
        match api.delete(name, &dp).await {
            Ok(_) => reply::response(msg, reply::ok()),
            Err(kube::Error::Api(s)) if s.code == 404 => reply::response(msg, reply::ok()),
            Err(e) => reply::response(msg, Content::from_value(&status_error(&e))),
        }
    }

    async fn pod_insert(&self, msg: &Message, ns: &str) {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        if let Some(Ok(mut p)) = content_value(msg).map(serde_json::from_value::<Pod>) {
            p.metadata.resource_version = None;
            if let Err(e) = api.create(&PostParams::default(), &p).await {
                debug!(error = %e, "Creating a pod from the edge failed.");
            }
        }
    }

    async fn get_object(
        &self,
        msg: &Message,
        ns: &str,
        api_version: &str,
        kind: &str,
        plural: &str,
        name: &str,
    ) -> Message {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let ar = ApiResource {
            group: group.to_owned(),
            version: version.to_owned(),
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            plural: plural.to_owned(),
        };
        let api: Api<DynamicObject> = if ns.is_empty() {
            Api::all_with(self.client.clone(), &ar)
        } else {
            Api::namespaced_with(self.client.clone(), ns, &ar)
        };
        match api.get(name).await {
            Ok(mut o) => {
                o.metadata.managed_fields = None;
                let rv = o.metadata.resource_version.clone().unwrap_or_default();
                let value = with_types(serde_json::to_value(&o).unwrap_or(Value::Null), api_version, kind);
                let mut r = reply::response(msg, Content::from_value(&value));
                r.header.resource_version = rv;
                r
            }
            Err(e) if is_not_found(&e) && kind == "Node" => {
                reply::response(msg, Content::from_value(&StatusError::not_found("node", "", name).to_value()))
            }
            Err(e) => reply::response(msg, Content::from_value(&status_error(&e))),
        }
    }

    async fn token(&self, msg: &Message, ns: &str, sa: &str) -> Message {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), ns);
        let body = content_value(msg).unwrap_or(json!({}));
        let body = with_types(body, "authentication.k8s.io/v1", "TokenRequest");
        let result: Result<Value, kube::Error> =
            api.create_subresource("token", sa, &PostParams::default(), &body).await;
        match result {
            Ok(v) => reply::response(msg, Content::from_value(&v)),
            Err(e) => reply::response(msg, Content::from_value(&status_error(&e))),
        }
    }

    /// `resource_name` names the lease when the content does not (the authorizer checked
    /// that they agree); nothing else may name it.
    async fn lease_write(&self, msg: &Message, lease: Option<Lease>, ns: &str, resource_name: &str) -> Message {
        let ns = or_lease_ns(ns);
        let api: Api<Lease> = Api::namespaced(self.client.clone(), ns);
        let Some(mut lease) = lease else {
            return reply::response(msg, reply::object_resp(None, Some(bad_request("lease content is not a Lease"))));
        };
        let name = lease.metadata.name.clone().unwrap_or_else(|| resource_name.to_owned());
        lease.metadata.name = Some(name.clone());
        lease.metadata.generate_name = None;
        let result = if msg.operation() == Operation::Insert {
            lease.metadata.resource_version = None;
            api.create(&PostParams::default(), &lease).await
        } else {
            api.replace(&name, &PostParams::default(), &lease).await
        };
        match result {
            Ok(l) => reply::response(msg, reply::object_resp(serde_json::to_value(&l).ok(), None)),
            Err(e) => reply::response(msg, reply::object_resp(None, Some(status_error(&e)))),
        }
    }

    /// Authorizes a compact renewal taken off the workers' path ([`super::renewer`]) as
    /// [`Upstream::handle`] does; a refusal comes back as its answer (a 403).
    pub(super) async fn authorize_renewal(
        &self,
        msg: &Message,
        node: &str,
        ns: &str,
        name: &str,
    ) -> Result<(), Message> {
        // The node's own Lease is asked without building the request's attributes (a thousand
        // a second); anything else goes to the authorizer, which refuses it and says so.
        if crate::authz::own_lease(node, ns, name) {
            return Ok(());
        }
        // As `attributes` puts a renewal.
        let attrs = Attributes::new(node, "patch", "coordination.k8s.io", "leases", or_lease_ns(ns), name);
        match self.authz.authorize(&attrs, None).await {
            Ok(_) => Ok(()),
            Err(denied) => Err(reply::response(msg, Content::from_value(&denied.status_error()))),
        }
    }

    /// The compact renewal of an edge of ours: `spec.renewTime` set to the cloud's time by a
    /// merge patch (no resourceVersion, so no conflict with anything), answered `"OK"` or with
    /// the error (a 404 tells the edge to create its lease).
    async fn lease_renew(&self, msg: &Message, ns: &str, name: &str) -> Message {
        match renew_lease(self.client.clone(), or_lease_ns(ns).to_owned(), name.to_owned()).await {
            Ok(()) => {
                debug!(lease = name, "Renewed a node lease.");
                reply::response(msg, reply::ok())
            }
            Err(e) => reply::response(msg, Content::from_value(&status_error(&e))),
        }
    }

    /// A lease query, answered as upstream does: an ObjectResp with the Lease or the error.
    async fn lease_query(&self, msg: &Message, ns: &str, name: &str) -> Message {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), or_lease_ns(ns));
        match api.get(name).await {
            Ok(mut l) => {
                l.metadata.managed_fields = None;
                let v = with_types(serde_json::to_value(&l).unwrap_or(Value::Null), "coordination.k8s.io/v1", "Lease");
                reply::response(msg, reply::object_resp(Some(v), None))
            }
            Err(e) if is_not_found(&e) => reply::response(
                msg,
                reply::object_resp(None, Some(StatusError::not_found("lease", "coordination.k8s.io", name).to_value())),
            ),
            Err(e) => reply::response(msg, reply::object_resp(None, Some(status_error(&e)))),
        }
    }

    async fn event(&self, msg: &Message, ns: &str) {
        let Some(v) = content_value(msg) else { return };
        let (ev, patch) = match msg.operation() {
            Operation::Patch => (v.get("event").cloned().unwrap_or(Value::Null), v.get("patchData").cloned()),
            _ => (v, None),
        };
        let Ok(ev) = serde_json::from_value::<KubeEvent>(ev) else { return };
        let ns = ev.metadata.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| ns.to_owned());
        let api: Api<KubeEvent> = Api::namespaced(self.client.clone(), &ns);
        let name = ev.metadata.name.clone().unwrap_or_default();
        let result = match patch.as_ref().and_then(Value::as_str).and_then(|p| serde_json::from_str::<Value>(p).ok()) {
            Some(p) => api.patch(&name, &PatchParams::default(), &Patch::Strategic(p)).await.map(|_| ()),
            None => match api.create(&PostParams::default(), &ev).await {
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    api.replace(&name, &PostParams::default(), &ev).await.map(|_| ())
                }
                other => other.map(|_| ()),
            },
        };
        if let Err(e) = result {
            debug!(error = %e, "Recording an event from the edge failed.");
        }
    }
}

/// Sets Lease `namespace/name`'s `renewTime` to now through kube-rs's client (a merge patch:
/// no resourceVersion, so no conflicts). The patched Lease the API answers with is skipped, not
/// decoded.
pub(super) async fn renew_lease(client: kube::Client, namespace: String, name: String) -> Result<(), kube::Error> {
    let path = format!("/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases");
    let request = kube::core::Request::new(path)
        .patch(&name, &PatchParams::default(), &Patch::Merge(&RenewPatch::now()))
        .map_err(kube::Error::BuildRequest)?;
    client.request::<serde::de::IgnoredAny>(request).await.map(|_| ())
}

/// The merge patch of a compact renewal, now: `{"spec":{"renewTime":"…"}}`.
pub(super) fn renew_patch() -> Vec<u8> {
    serde_json::to_vec(&RenewPatch::now()).unwrap_or_default()
}

/// The merge patch of a compact renewal: `{"spec":{"renewTime":"…"}}`.
#[derive(Debug, Serialize)]
struct RenewPatch {
    spec: RenewSpec,
}

impl RenewPatch {
    /// The patch setting `renewTime` to now.
    fn now() -> Self {
        Self { spec: RenewSpec { renew_time: MicroTime(k8s_openapi::jiff::Timestamp::now()) } }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RenewSpec {
    renew_time: MicroTime,
}

/// Drops the kubelet endpoint from a node status an edge sends (`{"status": {...}}` or the
/// status itself): it is CloudStream's, the negotiated tunnel port set when the node's tunnel
/// comes up, and the edge's own port (Edged's 10350, in its registration patch and every
/// status update) must not overwrite it. Upstream keeps a non-zero stored port the same way.
/// Creating the Node still sets the edge's.
fn keep_kubelet_endpoint(v: &mut Value) {
    for at in ["/daemonEndpoints", "/status/daemonEndpoints"] {
        if let Some(endpoints) = v.pointer_mut(at).and_then(Value::as_object_mut) {
            endpoints.remove("kubeletEndpoint");
        }
    }
}

#[cfg(test)]
mod tests {
    use kubeedge_model::protocol::lease;

    use super::*;
    use crate::delivery::view::View;

    /// An authorizer whose cluster is never asked (leases are decided without it).
    fn authorizer() -> NodeAuthorizer {
        let client = kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
        NodeAuthorizer::new(client, View::default(), None, "edgecontroller")
    }

    /// What `handle` asks the authorizer for a renewal that `node` sent.
    fn renewal_attributes(node: &str, msg: &Message) -> Attributes {
        let res = CloudResource::parse(&CloudResource::prefixed(node, &msg.router.resource)).unwrap();
        let (ns, name) = (res.path.namespace().unwrap_or_default(), res.path.name.clone().unwrap_or_default());
        attributes(node, &res.path.resource_type, &msg.operation(), ns, &name, None).unwrap()
    }

    #[tokio::test]
    async fn a_node_renews_only_its_own_lease() {
        let authz = authorizer();
        let own = renewal_attributes("edge-a", &lease::renew("edge-a"));
        assert_eq!(
            (own.verb.as_str(), own.group.as_str(), own.resource.as_str(), own.namespace.as_str(), own.name.as_str()),
            ("patch", "coordination.k8s.io", "leases", "kube-node-lease", "edge-a")
        );
        assert!(authz.authorize(&own, None).await.is_ok());

        let other = renewal_attributes("edge-a", &lease::renew("edge-b"));
        let denied = authz.authorize(&other, None).await.unwrap_err();
        let status = denied.status_error();
        assert_eq!(status["ErrStatus"]["code"], 403);
        assert_eq!(status["ErrStatus"]["details"]["name"], "edge-b");

        // Its own name in another namespace is not its lease either.
        let mut elsewhere = lease::renew("edge-a");
        elsewhere.router.resource = "default/lease/edge-a".into();
        let elsewhere = renewal_attributes("edge-a", &elsewhere);
        assert!(authz.authorize(&elsewhere, None).await.is_err());
    }

    #[test]
    fn a_renewal_is_answered_ok_or_with_the_bare_error() {
        assert!(!object_resp_reply(resource_type::LEASE, &Operation::Renew));
        for op in [Operation::Insert, Operation::Update, Operation::Query] {
            assert!(object_resp_reply(resource_type::LEASE, &op), "{op}");
        }
        let patch = RenewPatch { spec: RenewSpec { renew_time: MicroTime(k8s_openapi::jiff::Timestamp::UNIX_EPOCH) } };
        assert_eq!(serde_json::to_string(&patch).unwrap(), r#"{"spec":{"renewTime":"1970-01-01T00:00:00.000000Z"}}"#);
    }
}
