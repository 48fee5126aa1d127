//! DynamicController, the cloud end of MetaServer's writes and reads (upstream
//! `cloud/pkg/dynamiccontroller/application`): an edge's MetaServer sends an **Application**
//! (source `metaserver`, content = the Application JSON with Go field names and `[]byte`
//! fields in base64); this module performs its verb with a dynamic client and answers with
//! the Application (operation `applicationResponse`, resource
//! `node/{node}/ignore/Application/ignore`, parent = the request): `Approved` with `RespBody`,
//! or `Rejected` with `Error` = Go's `StatusError` (`{"ErrStatus": …}`) or a `Reason`.
//!
//! Verbs: get, list, create, update, updatestatus, patch (upstream's `PatchInfo` in `Option`),
//! delete; a `Key` that is not an object key (`/version`, `/apis/…`) is a pass-through GET.
//! `watch` applications are approved but no cloud-side watch is kept yet: edges serve watches
//! from their own database, fed by EdgeController.
//!
//! Every Application passes the node authorizer ([`crate::authz`]) first, as the node that
//! sent it; a refusal is `Rejected` with the 403 `StatusError`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kubeedge_beehive::{BoxFuture, Module, ModuleContext, ModuleError};
use kubeedge_config::cloudcore::KubeApiConfig;
use kubeedge_model::constants::{group, module};
use kubeedge_model::protocol::StatusError;
use kubeedge_model::{CloudResource, Content, Message};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use crate::authz::{Attributes, AuthzMetrics, NodeAuthorizer};
use crate::delivery::view::View;
use crate::inflight::fair::FairQueue;
use crate::inflight::{Completion, Ticket};
use crate::kubeclient::kube_client;

/// Operation of the reply.
pub const APPLICATION_RESPONSE: &str = "applicationResponse";

/// Upstream's `Application` as it crosses the wire (Go field names; `[]byte` as base64).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Application {
    /// sha256 of the request's parts.
    #[serde(rename = "ID", default)]
    pub id: String,
    /// The `meta_v2` key form: `/{group|core}/{version}/{plural}/{ns|null}/{name|null}`.
    #[serde(default)]
    pub key: String,
    /// get, list, watch, create, delete, update, updatestatus, patch.
    #[serde(default)]
    pub verb: String,
    /// The node asking.
    #[serde(default)]
    pub nodename: String,
    /// Options JSON, base64.
    #[serde(default, with = "b64")]
    pub option: Vec<u8>,
    /// Request body JSON, base64.
    #[serde(default, with = "b64")]
    pub req_body: Vec<u8>,
    /// Subresource (`status`…).
    #[serde(default)]
    pub subresource: String,
    /// Response body JSON, base64.
    #[serde(default, with = "b64")]
    pub resp_body: Vec<u8>,
    /// PreApplying, InApplying, InProcessing, Approved, Rejected, Failed, Completed.
    #[serde(default)]
    pub status: String,
    /// Why, for errors that are not API errors.
    #[serde(default)]
    pub reason: String,
    /// Go's `StatusError`: `{"ErrStatus": <Status>}`.
    #[serde(default)]
    pub error: Value,
    /// Go's `time.Time`.
    #[serde(default = "zero_time")]
    pub timestamp: Value,
}

fn zero_time() -> Value {
    Value::String("0001-01-01T00:00:00Z".into())
}

mod b64 {
    use super::{B64, Engine};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        if v.is_empty() { s.serialize_none() } else { s.serialize_str(&B64.encode(v)) }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        match s {
            None => Ok(Vec::new()),
            Some(s) => B64.decode(s.as_bytes()).map_err(serde::de::Error::custom),
        }
    }
}

/// The paths an edge may read raw, as upstream's pass-through list: discovery, version and
/// health. Anything else must be an object key.
pub fn pass_through(path: &str) -> bool {
    let path = path.split('?').next().unwrap_or_default();
    matches!(path, "/api" | "/apis" | "/version" | "/healthz" | "/livez" | "/readyz" | "/openapi/v2" | "/openapi/v3")
        || path.strip_prefix("/api/").is_some_and(|v| !v.is_empty() && !v.contains('/'))
        || path.strip_prefix("/apis/").is_some_and(|gv| !gv.is_empty() && gv.split('/').count() <= 2)
}

/// Applications processed at once (workers); more wait in their node's queue.
const MAX_IN_FLIGHT: usize = 16;
/// Applications of one node processed at once: nodes take turns, so one busy edge leaves the
/// other workers to the rest.
const PER_NODE: usize = 4;

/// An object key parsed: (group, version, plural, namespace, name); `None` for other paths.
pub fn parse_key(key: &str) -> Option<(String, String, String, String, String)> {
    let parts: Vec<&str> = key.strip_prefix('/')?.split('/').collect();
    if parts.len() != 5 || parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    let un = |s: &str| if s == "null" { String::new() } else { s.to_owned() };
    let group = if parts[0] == "core" { String::new() } else { parts[0].to_owned() };
    Some((group, parts[1].to_owned(), parts[2].to_owned(), un(parts[3]), un(parts[4])))
}

/// The DynamicController module.
pub struct DynamicControllerModule {
    kube: KubeApiConfig,
    view: View,
    authz_metrics: Option<AuthzMetrics>,
    completion: Option<Completion>,
    /// Applications per node, kept across runs as the inbox is.
    queue: FairQueue<(Message, Option<Ticket>)>,
}

impl DynamicControllerModule {
    /// A module for this cluster, authorizing against `view` (EdgeController's record of which
    /// pods use what) and counting refusals in `authz_metrics`.
    pub fn new(kube: KubeApiConfig, view: View, authz_metrics: Option<AuthzMetrics>) -> Self {
        Self { kube, view, authz_metrics, completion: None, queue: FairQueue::new(PER_NODE) }
    }

    /// Reports each Application answered to CloudHub's admission (see [`crate::inflight`]).
    pub fn with_completion(mut self, completion: Option<Completion>) -> Self {
        self.completion = completion;
        self
    }
}

/// The value of `key=value` in a field selector.
fn field(selector: &str, key: &str) -> Option<String> {
    selector
        .split(',')
        .find_map(|t| t.trim().strip_prefix(key)?.strip_prefix('=').map(|v| v.trim_start_matches('=').to_owned()))
}

/// An Application in the node authorizer's terms, with the body it writes; `Ok(None)` for the
/// discovery pass-through (any node may read it); `Err` for an Application whose body names
/// another object than its key (what is authorized is what is written).
pub fn attributes(node: &str, app: &Application) -> Result<Option<(Attributes, Option<Value>)>, String> {
    let Some((group, _version, plural, ns, name)) = parse_key(&app.key) else { return Ok(None) };
    let option: Value = serde_json::from_slice(&app.option).unwrap_or(Value::Null);
    let body = serde_json::from_slice::<Value>(&app.req_body).ok();
    let mut a = Attributes::new(node, &app.verb, &group, &plural, &ns, &name);
    let mut body = match app.verb.as_str() {
        "create" | "update" | "updatestatus" => body,
        _ => None,
    };
    if let Some(b) = &body {
        let meta =
            |k: &str| b.pointer(&format!("/metadata/{k}")).and_then(Value::as_str).unwrap_or_default().to_owned();
        let (body_name, body_ns) = (meta("name"), meta("namespace"));
        if !body_name.is_empty() && !name.is_empty() && body_name != name {
            return Err(format!("the body names {body_name:?}, the key {:?}", app.key));
        }
        if !body_ns.is_empty() && body_ns != ns {
            return Err(format!("the body's namespace {body_ns:?} is not the key's {:?}", app.key));
        }
        if app.verb == "create" {
            // A create names its object: never generateName, which would write another.
            if body_name.is_empty() {
                return Err("a create by an edge must set metadata.name".into());
            }
            a.name = body_name;
        }
    }
    let pinned_kind = group.is_empty() && matches!(plural.as_str(), "nodes" | "pods");
    if app.verb == "patch" && pinned_kind {
        let ptype = option.get("PatchType").and_then(Value::as_str).unwrap_or_default();
        if matches!(ptype, "application/json-patch+json" | "application/apply-patch+yaml") {
            return Err(format!("{plural} may be patched by an edge with merge or strategic-merge patches only"));
        }
    }
    match app.verb.as_str() {
        "updatestatus" => {
            a.verb = "update".into();
            a.subresource = "status".into();
        }
        "update" if app.subresource == "status" => a.subresource = "status".into(),
        "patch" => {
            if let Some(n) = option.get("Name").and_then(Value::as_str) {
                a.name = n.to_owned();
            }
            let status = option
                .get("Subresources")
                .and_then(Value::as_array)
                .is_some_and(|s| s.iter().any(|v| v.as_str() == Some("status")));
            if status {
                a.subresource = "status".into();
            }
            body = option
                .get("Data")
                .and_then(Value::as_str)
                .and_then(|d| B64.decode(d).ok())
                .and_then(|d| serde_json::from_slice::<Value>(&d).ok());
        }
        "list" | "watch" => {
            // Kubernetes' Node authorizer: a list or watch of one object by name is a get of
            // it; a node lists and watches only its own pods (spec.nodeName=itself).
            let selector = option.get("fieldSelector").and_then(Value::as_str).unwrap_or_default();
            if plural == "pods" && group.is_empty() {
                a.name = field(selector, "spec.nodeName").unwrap_or_default();
            } else if let Some(n) = field(selector, "metadata.name") {
                a.name = n;
                if !matches!(plural.as_str(), "nodes" | "services" | "endpoints" | "endpointslices") {
                    a.verb = "get".into();
                }
            }
        }
        _ => {}
    }
    Ok(Some((a, body)))
}

enum Outcome {
    Ok(Option<Value>),
    Err(kube::Error),
    Denied(Value),
    Bad(String),
}

/// Performs an authorized Application; `pin` is the UID of the pod the authorizer checked,
/// which a pod write is pinned to (a precondition).
async fn process(client: &kube::Client, app: &Application, pin: Option<&str>) -> Outcome {
    let Some((group, version, plural, ns, name)) = parse_key(&app.key) else {
        if app.verb != "get" || !pass_through(&app.key) {
            return Outcome::Bad(format!("{} of {} is not supported", app.verb, app.key));
        }
        // Pass-through: discovery and friends.
        let req = match http::Request::get(app.key.as_str()).body(Vec::new()) {
            Ok(r) => r,
            Err(e) => return Outcome::Bad(e.to_string()),
        };
        return match client.request_text(req).await {
            Ok(text) => Outcome::Ok(serde_json::from_str(&text).ok()),
            Err(e) => Outcome::Err(e),
        };
    };
    let api_version = if group.is_empty() { version.clone() } else { format!("{group}/{version}") };
    let ar = ApiResource { group, version, api_version, kind: String::new(), plural };
    let api: Api<DynamicObject> =
        if ns.is_empty() { Api::all_with(client.clone(), &ar) } else { Api::namespaced_with(client.clone(), &ns, &ar) };
    let option: Value = serde_json::from_slice(&app.option).unwrap_or(Value::Null);
    let body = || serde_json::from_slice::<DynamicObject>(&app.req_body).map_err(|e| format!("request body: {e}"));
    let to_value = |o: DynamicObject| Outcome::Ok(serde_json::to_value(o).ok());
    match app.verb.as_str() {
        "get" => match api.get(&name).await {
            Ok(o) => to_value(o),
            Err(e) => Outcome::Err(e),
        },
        "list" => {
            let mut lp = ListParams::default();
            if let Some(l) = option.get("labelSelector").and_then(Value::as_str) {
                lp = lp.labels(l);
            }
            if let Some(f) = option.get("fieldSelector").and_then(Value::as_str) {
                lp = lp.fields(f);
            }
            match api.list(&lp).await {
                Ok(l) => Outcome::Ok(serde_json::to_value(l).ok()),
                Err(e) => Outcome::Err(e),
            }
        }
        "watch" => Outcome::Ok(None),
        "create" => match body() {
            Ok(o) => match api.create(&PostParams::default(), &o).await {
                Ok(o) => to_value(o),
                Err(e) => Outcome::Err(e),
            },
            Err(e) => Outcome::Bad(e),
        },
        "update" | "updatestatus" => match body() {
            Ok(mut o) => {
                // The key's name, which was authorized (the body may only repeat it).
                o.metadata.name = Some(name.clone());
                if let Some(uid) = pin {
                    o.metadata.uid = Some(uid.to_owned());
                }
                let r = if app.verb == "updatestatus" || app.subresource == "status" {
                    api.replace_status(&name, &PostParams::default(), &o).await
                } else {
                    api.replace(&name, &PostParams::default(), &o).await
                };
                match r {
                    Ok(o) => to_value(o),
                    Err(e) => Outcome::Err(e),
                }
            }
            Err(e) => Outcome::Bad(e),
        },
        "patch" => {
            let pname = option.get("Name").and_then(Value::as_str).unwrap_or(&name).to_owned();
            let ptype = option.get("PatchType").and_then(Value::as_str).unwrap_or_default();
            let data = option
                .get("Data")
                .and_then(Value::as_str)
                .and_then(|d| B64.decode(d).ok())
                .and_then(|d| serde_json::from_slice::<Value>(&d).ok())
                .unwrap_or(Value::Null);
            let mut data = data;
            if let (Some(uid), Some(obj)) = (pin, data.as_object_mut()) {
                let meta = obj.entry("metadata").or_insert_with(|| json!({}));
                if let Some(meta) = meta.as_object_mut() {
                    meta.insert("uid".into(), json!(uid));
                }
            }
            let patch = match ptype {
                "application/json-patch+json" => match serde_json::from_value(data) {
                    Ok(p) => Patch::Json(p),
                    Err(e) => return Outcome::Bad(format!("JSON patch: {e}")),
                },
                "application/merge-patch+json" => Patch::Merge(data),
                "application/apply-patch+yaml" => Patch::Apply(data),
                _ => Patch::Strategic(data),
            };
            let status = option
                .get("Subresources")
                .and_then(Value::as_array)
                .is_some_and(|s| s.iter().any(|v| v.as_str() == Some("status")));
            let pp = PatchParams::default();
            let r =
                if status { api.patch_status(&pname, &pp, &patch).await } else { api.patch(&pname, &pp, &patch).await };
            match r {
                Ok(o) => to_value(o),
                Err(e) => Outcome::Err(e),
            }
        }
        "delete" => {
            let mut dp = DeleteParams::default();
            if let Some(g) = option.get("gracePeriodSeconds").and_then(Value::as_u64) {
                dp.grace_period_seconds = u32::try_from(g).ok();
            }
            // The edge's own UID precondition, else the pod the authorizer checked.
            let own = option.pointer("/preconditions/uid").and_then(Value::as_str).filter(|u| !u.is_empty());
            if let Some(uid) = own.or(pin) {
                dp.preconditions = Some(kube::api::Preconditions { uid: Some(uid.to_owned()), resource_version: None });
            }
            match api.delete(&name, &dp).await {
                Ok(_) => Outcome::Ok(None),
                Err(e) => Outcome::Err(e),
            }
        }
        other => Outcome::Bad(format!("unsupported Application verb {other:?}")),
    }
}

fn status_error(e: &kube::Error) -> Value {
    match e {
        kube::Error::Api(s) => StatusError::new(i32::from(s.code), s.reason.clone(), s.message.clone()),
        other => StatusError::new(500, "InternalError", other.to_string()),
    }
    .to_value()
}

/// Performs one Application as its node and sends the answer to CloudHub.
async fn answer(client: &kube::Client, bus: &kubeedge_beehive::Bus, authz: &NodeAuthorizer, msg: Message) {
    let Some(node) = CloudResource::node_of(&msg.router.resource).map(str::to_owned) else { return };
    let Ok(mut app) = msg.content.decode::<Application>() else {
        warn!(node, "Dropped an Application that does not decode.");
        return;
    };
    if !app.nodename.is_empty() && app.nodename != node {
        warn!(node, claimed = %app.nodename, "Dropped an Application made for another node.");
        return;
    }
    let outcome = match attributes(&node, &app) {
        Err(why) => Outcome::Bad(why),
        Ok(None) => process(client, &app, None).await,
        Ok(Some((attrs, body))) => match authz.authorize(&attrs, body.as_ref()).await {
            Ok(grant) => process(client, &app, grant.pin_uid()).await,
            Err(denied) => Outcome::Denied(denied.status_error()),
        },
    };
    match outcome {
        Outcome::Ok(resp) => {
            app.status = "Approved".into();
            app.resp_body = resp.map(|v| serde_json::to_vec(&v).unwrap_or_default()).unwrap_or_default();
        }
        Outcome::Err(e) => {
            debug!(node, key = %app.key, verb = %app.verb, error = %e, "Application rejected.");
            app.status = "Rejected".into();
            app.error = status_error(&e);
        }
        Outcome::Denied(error) => {
            app.status = "Rejected".into();
            app.error = error;
        }
        Outcome::Bad(reason) => {
            app.status = "Rejected".into();
            app.reason = reason;
        }
    }
    let Ok(content) = Content::json(&app) else { return };
    let mut reply = Message::response_to(&msg, content);
    reply.router.source = "dynamiccontroller".into();
    reply.router.group = group::RESOURCE.into();
    reply.router.resource = CloudResource::prefixed(&node, "ignore/Application/ignore");
    reply.router.operation = APPLICATION_RESPONSE.into();
    let _ = bus.send(module::CLOUDHUB, reply).await;
}

impl Module for DynamicControllerModule {
    fn name(&self) -> &'static str {
        "dynamiccontroller"
    }

    fn group(&self) -> &'static str {
        "dynamiccontroller"
    }

    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(async move {
            let client = kube_client(&self.kube).await?;
            let authz =
                NodeAuthorizer::new(client.clone(), self.view.clone(), self.authz_metrics.clone(), "dynamiccontroller");
            let stop = ctx.shutdown().child_token();
            let _guard = stop.clone().drop_guard();
            // Per node, in turn; each Application's ticket is dropped once it is answered.
            let queue = self.queue.clone();
            for _ in 0..MAX_IN_FLIGHT {
                let (client, bus, authz) = (client.clone(), ctx.bus.clone(), authz.clone());
                ctx.spawn(queue.clone().work(stop.clone(), move |(msg, ticket)| {
                    let (client, bus, authz) = (client.clone(), bus.clone(), authz.clone());
                    async move {
                        answer(&client, &bus, &authz, msg).await;
                        drop(ticket);
                    }
                }));
            }
            info!("DynamicController started.");
            while let Some(msg) = ctx.recv().await {
                let Some(node) = CloudResource::node_of(&msg.router.resource).map(str::to_owned) else { continue };
                let ticket = self.completion.as_ref().map(|c| c.ticket(&msg));
                queue.push(&node, (msg, ticket)).await;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_as_upstream_writes_them() {
        assert_eq!(
            parse_key("/core/v1/pods/default/web"),
            Some(("".into(), "v1".into(), "pods".into(), "default".into(), "web".into()))
        );
        assert_eq!(
            parse_key("/apps/v1/deployments/null/null"),
            Some(("apps".into(), "v1".into(), "deployments".into(), "".into(), "".into()))
        );
        assert_eq!(parse_key("/version"), None);
    }

    #[test]
    fn only_discovery_passes_through() {
        for ok in ["/version", "/api", "/api/v1", "/apis", "/apis/apps", "/apis/apps/v1", "/healthz"] {
            assert!(pass_through(ok), "{ok}");
        }
        for no in ["/api/v1/secrets", "/apis/apps/v1/deployments", "/api/v1/namespaces/x/secrets/y", "/metrics"] {
            assert!(!pass_through(no), "{no}");
        }
    }

    #[test]
    fn applications_round_trip_with_go_field_names_and_base64_bytes() {
        let wire = r#"{"ID":"abc","Key":"/core/v1/configmaps/default/c","Verb":"create","Nodename":"edge-1","Option":"e30=","ReqBody":"eyJhIjoxfQ==","Subresource":"","RespBody":null,"Status":"InApplying","Reason":"","Error":{"ErrStatus":{"metadata":{}}},"Timestamp":"0001-01-01T00:00:00Z"}"#;
        let app: Application = serde_json::from_str(wire).unwrap();
        assert_eq!(app.option, b"{}");
        assert_eq!(app.req_body, br#"{"a":1}"#);
        assert!(app.resp_body.is_empty());
        let back: Value = serde_json::to_value(&app).unwrap();
        assert_eq!(back, serde_json::from_str::<Value>(wire).unwrap());
    }
}
