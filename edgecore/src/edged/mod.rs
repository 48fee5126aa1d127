//! Edged, the edge's kubelet: the node's side of the contract with the cloud (registration,
//! lease and status, here in [`NodeAgent`]), pods through CRI (`pods`, `volumes`, `probes`,
//! `resources`), static pods (`static_pods`), the bus module that ties them together
//! (`module`) and the kubelet-style server (`server`: logs, exec, attach, port-forward, stats).

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
use kubeedge_model::Message;
use kubeedge_model::constants::module as modules;
use kubeedge_model::protocol::{ReplyError, edge, lease, objects, reply};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::edgehub::LinkFeatures;
use node::{HostInfo, NodeSpec};

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
    /// What the session with CloudHub agreed on: with `lease-renew` (a cloud of ours) the
    /// lease is renewed with the compact `renew`, else with upstream's full `update`.
    pub link: LinkFeatures,
}

/// Why the node agent's request failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// MetaManager (or the cloud behind it) did not answer.
    #[error("no answer: {0}")]
    Unanswered(String),
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
    fn refused(what: impl Into<String>, e: &ReplyError) -> Self {
        AgentError::Refused { what: what.into(), reason: e.reason().to_owned(), code: e.code() }
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

/// An object's `metadata.uid` (empty when it has none).
fn uid_of(object: &Value) -> String {
    object.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_owned()
}

/// `lease` without its resourceVersion: an update of it applies whatever the stored version.
fn unconditional(mut lease: Value) -> Value {
    if let Some(m) = lease.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    lease
}

impl NodeAgent {
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
        let reply = self.request(edge::node_insert(&self.namespace, name, &object)).await?;
        let uid = match reply::object_of(&reply) {
            Ok(n) => uid_of(&n),
            Err(e) if e.code() == 409 || e.is_already_exists() => String::new(),
            Err(e) => return Err(AgentError::refused("node registration", &e)),
        };
        // The node may have existed: bring its status up to date.
        let patched = self.patch_status(&objects::status_patch(&object["status"])).await?;
        let uid = if uid.is_empty() { uid_of(&patched) } else { uid };
        info!(node = %name, uid, "Node registered.");
        Ok(uid)
    }

    /// A strategic-merge patch of the node's status (content: the patch as a JSON string, as
    /// upstream's edge sends it). Returns the patched Node.
    pub async fn patch_status(&self, patch: &Value) -> Result<Value, AgentError> {
        let reply = self.request(edge::node_patch(&self.namespace, &self.spec.name, patch)).await?;
        reply::object_of(&reply).map_err(|e| AgentError::refused("node status patch", &e))
    }

    /// Creates or renews the lease; returns the stored Lease (with its resourceVersion), or
    /// after a compact renewal the copy it had, made unconditional (the cloud's has moved on).
    pub async fn renew_lease(&self, current: Option<Value>, node_uid: &str) -> Result<Value, AgentError> {
        if self.link.has(lease::FEATURE) {
            // A cloud of ours: renewed by the cloud's clock, without sending the Lease. An
            // existing Lease after a restart is renewed at once; a missing one is created.
            let reply = self.request(lease::renew(&self.spec.name)).await?;
            match lease::renew_result(&reply) {
                Ok(()) => {
                    debug!(node = %self.spec.name, "Renewed the node lease (compact).");
                    return Ok(current.map(unconditional).unwrap_or(Value::Null));
                }
                Err(e) if e.is_not_found() => return self.write_lease(None, node_uid).await,
                Err(e) => return Err(AgentError::refused("lease renew", &e)),
            }
        }
        self.write_lease(current, node_uid).await
    }

    /// Upstream's renewal: `update` of the whole Lease, or `insert` when there is none.
    async fn write_lease(&self, current: Option<Value>, node_uid: &str) -> Result<Value, AgentError> {
        let current = current.filter(Value::is_object);
        let (_, micro) = node::now_strings();
        let secs = i32::try_from(self.timings.lease_duration.as_secs()).unwrap_or(40);
        let name = &self.spec.name;
        let insert = current.is_none();
        let msg = match current {
            Some(lease) => edge::lease_update(name, lease, &micro),
            None => edge::lease_insert(name, node_uid, secs, &micro),
        };
        let op = msg.operation();
        let reply = self.request(msg).await?;
        match reply::object_of(&reply) {
            Ok(l) => Ok(l),
            Err(e) if insert && e.is_already_exists() => {
                // Left from an earlier run: read it, then renew it.
                let reply = self.request(edge::lease_query(name)).await?;
                let existing = reply::object_of(&reply).map_err(|e| AgentError::refused("reading the lease", &e))?;
                // The copy read may be MetaManager's and older than the cloud's: renew it
                // unconditionally (the node owns its lease).
                Box::pin(self.write_lease(Some(unconditional(reply::first_stored(existing))), node_uid)).await
            }
            Err(e) => Err(AgentError::refused(format!("lease {op}"), &e)),
        }
    }

    /// Registers (retrying while the cloud is away), then renews the lease every quarter of its
    /// duration and sends a status heartbeat every `status_report`, until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let host = node::detect_host();
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
                _ = renew.tick() => match tokio::select! {
                    _ = stop.cancelled() => return,
                    r = self.renew_lease(lease.clone(), &uid) => r,
                } {
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
                    let patch = objects::heartbeat_patch(&now);
                    let sent = tokio::select! {
                        _ = stop.cancelled() => return,
                        r = self.patch_status(&patch) => r,
                    };
                    if let Err(e) = sent {
                        warn!(error = %e, "Node status heartbeat failed.");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use kubeedge_beehive::{BoxFuture, Module, ModuleContext, ModuleError, Registry, RestartPolicy};
    use kubeedge_model::{Content, Operation};
    use parking_lot::Mutex;

    use super::*;
    use crate::edgehub::LinkFeaturesWriter;

    /// Stands in for MetaManager and the cloud behind it: records each request's operation and
    /// answers as a cloud of ours would, the lease existing once inserted.
    struct FakeMeta {
        seen: Arc<Mutex<Vec<String>>>,
        lease: bool,
    }

    impl Module for FakeMeta {
        fn name(&self) -> &'static str {
            modules::METAMANAGER
        }
        fn group(&self) -> &'static str {
            "meta"
        }
        fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, Result<(), ModuleError>> {
            Box::pin(async move {
                while let Some(m) = ctx.recv().await {
                    self.seen.lock().push(m.router.operation.clone());
                    let lease = serde_json::json!({"metadata": {"name": "e", "resourceVersion": "7"}});
                    let content = match m.operation() {
                        Operation::Renew if self.lease => reply::ok(),
                        Operation::Renew => Content::from_value(
                            &kubeedge_model::protocol::StatusError::not_found("lease", "coordination.k8s.io", "e")
                                .to_value(),
                        ),
                        _ => {
                            self.lease = true;
                            reply::object_resp(Some(lease), None)
                        }
                    };
                    ctx.bus.send_resp(Message::response_to(&m, content));
                }
                Ok(())
            })
        }
    }

    #[tokio::test]
    async fn the_lease_is_renewed_compactly_while_the_cloud_agreed_to_it() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut reg = Registry::new();
        reg.register(Box::new(FakeMeta { seen: seen.clone(), lease: false })).unwrap();
        let sup = reg.start(RestartPolicy::default());
        let writer = LinkFeaturesWriter::default();
        let agent = NodeAgent {
            bus: sup.bus(),
            spec: NodeSpec {
                name: "e".into(),
                node_ip: "192.0.2.1".into(),
                labels: Default::default(),
                max_pods: 110,
                runtime_version: String::new(),
                schedulable: true,
            },
            namespace: "default".into(),
            timings: Timings::default(),
            link: writer.reader(),
        };
        writer.set(&[lease::FEATURE.to_owned()]);
        // No lease yet: the renewal's 404 sends the full insert.
        let first = agent.renew_lease(None, "uid-1").await.unwrap();
        assert_eq!(first["metadata"]["resourceVersion"], "7");
        // Then renewals only, keeping an unconditional copy for an upstream cloud.
        let kept = agent.renew_lease(Some(first), "uid-1").await.unwrap();
        assert!(kept["metadata"].get("resourceVersion").is_none(), "{kept}");
        assert_eq!(*seen.lock(), ["renew", "insert", "renew"]);
        // The session now agreed on nothing (an upstream cloud): the whole Lease again.
        writer.set(&[]);
        agent.renew_lease(Some(kept), "uid-1").await.unwrap();
        assert_eq!(seen.lock().last().map(String::as_str), Some("update"));
        sup.shutdown(Duration::from_secs(5)).await;
    }

    #[test]
    fn agent_errors_say_what_the_lease_loop_needs() {
        let reply = |status: Value| {
            let m = Message::response_to(&edge::lease_query("e"), kubeedge_model::Content::from_value(&status));
            reply::object_of(&m).map_err(|e| AgentError::refused("lease update", &e))
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
