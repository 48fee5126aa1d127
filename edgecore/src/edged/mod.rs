//! Edged, the edge's kubelet: the node's side of the contract with the cloud (registration,
//! lease and status, here in [`NodeAgent`]), pods through CRI (`pods`, `volumes`, `probes`,
//! `resources`), static pods (`static_pods`), the bus module that ties them together
//! (`module`) and the kubelet-style logs/exec server (`server`).

pub mod module;
pub mod node;
pub mod pods;
pub mod probes;
pub mod resources;
pub mod server;
pub mod static_pods;
pub mod volumes;
mod worker;

use std::time::Duration;

use kubeedge_beehive::Bus;
use kubeedge_model::constants::{group, module as modules, operation, resource_type};
use kubeedge_model::{Content, Message};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use node::{HostInfo, LEASE_NAMESPACE, NodeSpec};

/// How long one request through MetaManager may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The first wait before registering again (it doubles up to [`Timings::retry`]).
const FIRST_RETRY: Duration = Duration::from_millis(100);

/// Timings of the node agent (upstream kubelet's).
#[derive(Debug, Clone)]
pub struct Timings {
    /// `nodeLeaseDurationSeconds`; the lease is renewed every quarter of it.
    pub lease_duration: Duration,
    /// `nodeStatusReportFrequency`: a status heartbeat is sent at least this often.
    pub status_report: Duration,
    /// Longest wait between registration attempts while the cloud is not reachable (the
    /// first is 100 ms, doubling up to this).
    pub retry: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(40),
            status_report: Duration::from_secs(300),
            retry: Duration::from_secs(2),
        }
    }
}

/// Registers the node and keeps its lease and status fresh.
pub struct NodeAgent {
    /// The bus (requests go to MetaManager).
    pub bus: Bus,
    /// What the Node says.
    pub spec: NodeSpec,
    /// `registerNodeNamespace` (upstream's default `default`).
    pub namespace: String,
    /// How often.
    pub timings: Timings,
}

/// The object of an `{"Object","Err"}` reply, or the error's reason and code.
/// Why the node agent's request failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// MetaManager (or the cloud behind it) did not answer.
    #[error("no answer: {0}")]
    Unanswered(String),
    /// The request could not be encoded.
    #[error("encoding the request: {0}")]
    Encode(String),
    /// The API refused it.
    #[error("{what} refused: {reason} ({code})")]
    Refused {
        /// What was asked (`node registration`, `lease update`…).
        what: String,
        /// The Status reason (`NotFound`, `Conflict`…).
        reason: String,
        /// The HTTP code (0 when there was none).
        code: i64,
    },
}

impl AgentError {
    fn refused(what: impl Into<String>, (reason, code): (String, i64)) -> Self {
        AgentError::Refused { what: what.into(), reason, code }
    }

    /// The object is not there (HTTP 404).
    pub fn is_not_found(&self) -> bool {
        matches!(self, AgentError::Refused { reason, code, .. } if reason == "NotFound" || *code == 404)
    }

    /// A stale resourceVersion (HTTP 409 Conflict).
    pub fn is_conflict(&self) -> bool {
        matches!(self, AgentError::Refused { reason, .. } if reason == "Conflict")
    }
}

fn object_resp(reply: &Message) -> Result<Value, (String, i64)> {
    if reply.router.operation == operation::ERROR {
        return Err((reply.content.as_str().map(|s| s.into_owned()).unwrap_or_default(), 0));
    }
    let v: Value = reply.content.decode().unwrap_or(Value::Null);
    let err = v.get("Err").filter(|e| !e.is_null()).or_else(|| v.get("ErrStatus").map(|_| &v));
    if let Some(e) = err {
        let status = e.get("ErrStatus").unwrap_or(e);
        let code = status.get("code").and_then(Value::as_i64).unwrap_or(0);
        let reason = status.get("reason").and_then(Value::as_str).unwrap_or("Unknown").to_owned();
        return Err((reason, code));
    }
    Ok(v.get("Object").cloned().unwrap_or(v))
}

/// `lease` without its resourceVersion: an update of it applies whatever the stored version.
fn unconditional(mut lease: Value) -> Value {
    if let Some(m) = lease.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    lease
}

impl NodeAgent {
    fn message(&self, resource: String, op: &str, content: Content) -> Message {
        Message::build(modules::EDGED, group::META, resource, op, content)
    }

    async fn request(&self, msg: Message) -> Result<Message, AgentError> {
        let reply = self.bus.send_sync(modules::METAMANAGER, msg, REQUEST_TIMEOUT).await;
        reply.map_err(|e| AgentError::Unanswered(e.to_string()))
    }

    /// Registers the node: `insert` of the Node (an existing node is fine), then a status
    /// patch with the current status. Returns the Node's uid.
    pub async fn register(&self, host: &HostInfo) -> Result<String, AgentError> {
        let (now, _) = node::now_strings();
        let object = node::node_object(&self.spec, host, &now);
        let name = &self.spec.name;
        let res = format!("{}/{}/{name}", self.namespace, resource_type::NODE);
        let reply = self
            .request(self.message(
                res,
                operation::INSERT,
                Content::json(&object).map_err(|e| AgentError::Encode(e.to_string()))?,
            ))
            .await?;
        let uid = match object_resp(&reply) {
            Ok(n) => n.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_owned(),
            Err((reason, code)) if code == 409 || reason == "AlreadyExists" => String::new(),
            Err(e) => return Err(AgentError::refused("node registration", e)),
        };
        // The node may have existed: bring its status up to date.
        let status = serde_json::json!({"status": object["status"]});
        let patched = self.patch_status(&status).await?;
        let uid = if uid.is_empty() {
            patched.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_owned()
        } else {
            uid
        };
        info!(node = %name, uid, "Node registered.");
        Ok(uid)
    }

    /// A strategic-merge patch of the node's status (content: the patch as a JSON string, as
    /// upstream's edge sends it). Returns the patched Node.
    pub async fn patch_status(&self, patch: &Value) -> Result<Value, AgentError> {
        let res = format!("{}/{}/{}", self.namespace, resource_type::NODE_PATCH, self.spec.name);
        let reply = self.request(self.message(res, operation::PATCH, Content::string(&patch.to_string()))).await?;
        object_resp(&reply).map_err(|e| AgentError::refused("node status patch", e))
    }

    /// Creates or renews the lease; returns the stored Lease (with its resourceVersion).
    pub async fn renew_lease(&self, current: Option<Value>, node_uid: &str) -> Result<Value, AgentError> {
        let (_, micro) = node::now_strings();
        let secs = i32::try_from(self.timings.lease_duration.as_secs()).unwrap_or(40);
        let res = format!("{LEASE_NAMESPACE}/{}/{}", resource_type::LEASE, self.spec.name);
        let (op, body) = match current {
            Some(mut lease) => {
                lease["spec"]["renewTime"] = Value::String(micro);
                (operation::UPDATE, lease)
            }
            None => (operation::INSERT, node::lease_object(&self.spec.name, node_uid, secs, &micro)),
        };
        let content = Content::json(&body).map_err(|e| AgentError::Encode(e.to_string()))?;
        let reply = self.request(self.message(res, op, content)).await?;
        match object_resp(&reply) {
            Ok(l) => Ok(l),
            Err((reason, _)) if op == operation::INSERT && reason == "AlreadyExists" => {
                // Left from an earlier run: read it, then renew it.
                let res = format!("{LEASE_NAMESPACE}/{}/{}", resource_type::LEASE, self.spec.name);
                let reply = self.request(self.message(res, operation::QUERY, Content::null())).await?;
                let existing = object_resp(&reply).map_err(|e| AgentError::refused("reading the lease", e))?;
                let existing = match existing {
                    Value::Array(mut v) if !v.is_empty() => {
                        let first = v.swap_remove(0);
                        first.as_str().and_then(|s| serde_json::from_str(s).ok()).unwrap_or(first)
                    }
                    other => other,
                };
                // The copy read may be MetaManager's and older than the cloud's: renew it
                // unconditionally (the node owns its lease).
                Box::pin(self.renew_lease(Some(unconditional(existing)), node_uid)).await
            }
            Err(e) => Err(AgentError::refused(format!("lease {op}"), e)),
        }
    }

    /// Registers (retrying while the cloud is away), then renews the lease every quarter of its
    /// duration and sends a status heartbeat every `status_report`, until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let host = HostInfo::detect();
        // At start the link is usually seconds away at most: retry soon, then less often
        // (100 ms doubling to `retry`), so the node is Ready as soon as the link is up.
        let mut wait = FIRST_RETRY.min(self.timings.retry);
        let uid = loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                r = self.register(&host) => match r {
                    Ok(uid) => break uid,
                    Err(e) => {
                        debug!(error = %e, "Node registration failed; retrying.");
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(wait) => {}
                        }
                        wait = (wait * 2).min(self.timings.retry);
                    }
                },
            }
        };
        let mut lease: Option<Value> = None;
        let mut renew = tokio::time::interval(self.timings.lease_duration / 4);
        let mut report = tokio::time::interval(self.timings.status_report);
        report.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = renew.tick() => match self.renew_lease(lease.clone(), &uid).await {
                    Ok(l) => lease = Some(l),
                    Err(e) => {
                        warn!(error = %e, "Renewing the node lease failed.");
                        if e.is_not_found() {
                            lease = None;
                        } else if e.is_conflict() {
                            // Our copy is stale (e.g. a reply was lost): the next renewal is
                            // unconditional rather than stuck on a version that never matches.
                            lease = lease.take().map(unconditional);
                        }
                    }
                },
                _ = report.tick() => {
                    let (now, _) = node::now_strings();
                    if let Err(e) = self.patch_status(&node::heartbeat_patch(&now)).await {
                        warn!(error = %e, "Node status heartbeat failed.");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_errors_say_what_the_lease_loop_needs() {
        let reply = |status: Value| {
            let m = Message::build("metamanager", "meta", "x", operation::RESPONSE, Content::json(&status).unwrap());
            object_resp(&m).map_err(|e| AgentError::refused("lease update", e))
        };
        let gone =
            reply(serde_json::json!({"Object": null, "Err": {"ErrStatus": {"reason": "NotFound", "code": 404}}}));
        let gone = gone.unwrap_err();
        assert!(gone.is_not_found() && !gone.is_conflict());
        assert_eq!(gone.to_string(), "lease update refused: NotFound (404)");
        let stale = reply(serde_json::json!({"ErrStatus": {"reason": "Conflict", "code": 409}})).unwrap_err();
        assert!(stale.is_conflict() && !stale.is_not_found());
        assert!(reply(serde_json::json!({"Object": {"kind": "Lease"}, "Err": null})).is_ok());
        assert!(!AgentError::Unanswered("timeout".into()).is_not_found());
    }
}
