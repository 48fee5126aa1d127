//! The owner of every job's progress: one task that takes the jobs' watch events, the nodes'
//! reports and CloudHub's connect notices, and decides what to write and what to send.
//!
//! Each decision is made on the newest object and written as a PUT of `status` with its
//! resourceVersion (upstream writes the same way): a replica that lost a race re-reads and
//! decides again, so two cloudcores never both start a node. A node is sent its task only
//! after the write that marks it InProgress succeeded.
//!
//! Tasks go to edges without ACK (as upstream); what makes them reliable is that the task of
//! a node in progress is sent again when the node connects and whenever nothing was heard
//! from it for [`RESEND_AFTER`], and that edges answer a task they already know by repeating
//! their latest report. A node that stays silent longer than the job's `timeoutSeconds` is
//! Unknown ("The node task has timed out").

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DynamicObject, PostParams};
use kubeedge_apis::operations::task::{self, TaskResource, TaskType, UpstreamMessage};
use kubeedge_apis::operations::v1alpha2::{job_phase, node_phase};
use kubeedge_model::{CloudResource, Content, Message};
use tracing::{debug, info, warn};

use super::TaskMetrics;
use super::job::{self, Params};
use super::nodes;
use super::status::{self, Applied, NodeTask, Status};
use crate::router::Links;

/// How long a node in progress may stay silent before its task is sent again.
pub const RESEND_AFTER: Duration = Duration::from_secs(30);
/// Attempts of one write against newer versions of the job.
const WRITE_ATTEMPTS: usize = 5;

/// A job: its kind and name.
pub type JobKey = (TaskType, String);
type NodeKey = (TaskType, String, String);

/// What the owner hears.
#[derive(Debug)]
pub enum Event {
    /// A job was created or changed.
    Applied(TaskType, Box<DynamicObject>),
    /// A job was deleted.
    Deleted(TaskType, String),
}

/// The owner's state.
pub struct Runner {
    client: kube::Client,
    links: Links,
    metrics: TaskMetrics,
    jobs: BTreeMap<JobKey, DynamicObject>,
    /// When each running node was started or last heard from (timeouts).
    heard: HashMap<NodeKey, Instant>,
    /// When each running node was last sent its task.
    sent: HashMap<NodeKey, Instant>,
    /// Since when each pending node has been waiting for a connection to this cloudcore.
    waiting: HashMap<NodeKey, Instant>,
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn status_of(obj: &DynamicObject) -> Status {
    obj.data.get("status").cloned().and_then(|s| serde_json::from_value(s).ok()).unwrap_or_default()
}

fn name_of(obj: &DynamicObject) -> String {
    obj.metadata.name.clone().unwrap_or_default()
}

impl Runner {
    /// An owner writing through `client` and reaching edges through `links`.
    pub fn new(client: kube::Client, links: Links, metrics: TaskMetrics) -> Self {
        Self {
            client,
            links,
            metrics,
            jobs: BTreeMap::new(),
            heard: HashMap::new(),
            sent: HashMap::new(),
            waiting: HashMap::new(),
        }
    }

    /// A watch event.
    pub async fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Applied(ty, obj) => {
                let key = (ty, name_of(&obj));
                // Done, perhaps by another cloudcore: nothing of it is followed any more.
                let done = status::is_final(&status_of(&obj).phase);
                self.jobs.insert(key.clone(), *obj);
                if done {
                    self.forget(&key);
                } else {
                    self.reconcile(&key).await;
                }
            }
            Event::Deleted(ty, name) => {
                info!(kind = ty.kind(), job = %name, "Job deleted; its tasks are no longer followed.");
                let key = (ty, name);
                self.jobs.remove(&key);
                self.forget(&key);
            }
        }
    }

    /// Drops what is kept per node of a job that is over or gone.
    fn forget(&mut self, key: &JobKey) {
        let gone = |k: &NodeKey| k.0 == key.0 && k.1 == key.1;
        self.heard.retain(|k, _| !gone(k));
        self.sent.retain(|k, _| !gone(k));
        self.waiting.retain(|k, _| !gone(k));
    }

    /// Every job still running is looked at again (timeouts, resends, nodes now connected).
    pub async fn tick(&mut self) {
        let active: Vec<JobKey> =
            self.jobs.iter().filter(|(_, o)| !status::is_final(&status_of(o).phase)).map(|(k, _)| k.clone()).collect();
        for key in active {
            self.reconcile(&key).await;
        }
    }

    /// `node` connected: its running tasks are sent again now.
    pub async fn on_connected(&mut self, node: &str) {
        self.sent.retain(|k, _| k.2 != node);
        self.tick().await;
    }

    /// A node's report (from its session or the HTTPS endpoint), resource
    /// `node/{sender}/{task resource}`.
    pub async fn on_report(&mut self, msg: &Message) {
        let Some(sender) = CloudResource::node_of(&msg.router.resource) else { return };
        let res = match TaskResource::parse(kubeedge_model::trim_node_prefix(&msg.router.resource)) {
            Ok(r) => r,
            Err(e) => {
                self.metrics.report("invalid");
                warn!(node = sender, error = %e, "A node task report with a bad resource; dropped.");
                return;
            }
        };
        if res.node != sender {
            self.metrics.report("refused");
            warn!(node = sender, task_node = %res.node, job = %res.job,
                "A node reported on another node's task; refused.");
            return;
        }
        let report = match UpstreamMessage::parse(&msg.content.data()) {
            Ok(r) => r,
            Err(e) => {
                self.metrics.report("invalid");
                warn!(node = sender, job = %res.job, error = %e, "An unreadable node task report; dropped.");
                return;
            }
        };
        let key = (res.task_type, res.job.clone());
        if !self.jobs.contains_key(&key) {
            self.metrics.report("unknown");
            debug!(node = sender, job = %res.job, "A report for a job that does not exist (any more).");
            return;
        }
        let now = now_rfc3339();
        let heard_key = (res.task_type, res.job.clone(), res.node.clone());
        let outcome = self
            .update(&key, |this, params, st| match status::apply_report(res.task_type, st, &res.node, &report, &now) {
                Ok(Applied::Recorded { done }) => {
                    // Only news counts against the timeout: a repeated report is not progress.
                    this.heard.insert(heard_key.clone(), Instant::now());
                    if !status::is_final(&st.phase)
                        && let Ok(p) = params
                    {
                        let sends = this.plan(&key, p, st, &BTreeSet::new());
                        return (Ok(Some(done)), sends);
                    }
                    (Ok(Some(done)), Vec::new())
                }
                Ok(Applied::Ignored) => (Ok(None), Vec::new()),
                Err(e) => (Err(e), Vec::new()),
            })
            .await;
        match outcome {
            Some(Ok(Some(done))) => {
                self.metrics.report("applied");
                info!(node = %res.node, job = %res.job, action = %report.action, succ = report.succ, done,
                    reason = %report.reason, "Node task report.");
            }
            Some(Ok(None)) => self.metrics.report("repeated"),
            Some(Err(e)) => {
                self.metrics.report("refused");
                warn!(node = %res.node, job = %res.job, error = %e, "A node task report was refused.");
            }
            None => self.metrics.report("unwritten"),
        }
    }

    async fn reconcile(&mut self, key: &JobKey) {
        let Some(obj) = self.jobs.get(key).cloned() else { return };
        let st = status_of(&obj);
        if st.phase.is_empty() {
            self.init(key).await;
            return;
        }
        if status::is_final(&st.phase) {
            return;
        }
        // Decide on the cached object first: most ticks change nothing and write nothing.
        let params = job::params(key.0, &obj);
        let offline = match &params {
            Ok(p) => self.offline_nodes(key, p, &st).await,
            Err(_) => BTreeSet::new(),
        };
        let mut next = st.clone();
        let sends = match &params {
            Ok(p) => self.plan(key, p, &mut next, &offline),
            Err(_) => Vec::new(),
        };
        if next == st && params.is_ok() {
            self.send(key, &sends, obj.data.get("spec").cloned().unwrap_or_default());
            return;
        }
        let _ = self
            .update(key, |this, params, st| match params {
                Ok(p) => (Ok(()), this.plan(key, p, st, &offline)),
                Err(e) => {
                    st.phase = job_phase::FAILURE.into();
                    st.reason = e.clone();
                    (Ok::<(), String>(()), Vec::new())
                }
            })
            .await;
    }

    /// Chooses the job's nodes and writes them, Pending or Failure with why (or the job's
    /// failure).
    async fn init(&mut self, key: &JobKey) {
        let Some(obj) = self.jobs.get(key).cloned() else { return };
        let st = match job::params(key.0, &obj) {
            Err(e) => Status { phase: job_phase::FAILURE.into(), reason: e, ..Default::default() },
            Ok(p) => match nodes::choose(&self.client, &p).await {
                Ok(list) => Status { phase: job_phase::INIT.into(), node_status: list, ..Default::default() },
                Err(e) => Status { phase: job_phase::FAILURE.into(), reason: e, ..Default::default() },
            },
        };
        info!(kind = key.0.kind(), job = %key.1, phase = %st.phase, reason = %st.reason,
            nodes = st.node_status.len(), "Job initialised.");
        let _ = self
            .update(key, |_, _, cur| {
                if cur.phase.is_empty() {
                    *cur = st.clone();
                }
                (Ok::<(), String>(()), Vec::new())
            })
            .await;
    }

    /// The job's pending nodes that waited longer than its timeout for a connection here and
    /// are not Ready either (so no other cloudcore serves them); a Ready one waits again.
    async fn offline_nodes(&mut self, key: &JobKey, p: &Params, st: &Status) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let Some(t) = p.timeout_secs.map(|t| Duration::from_secs(t.into())) else { return out };
        let now = Instant::now();
        let api: Api<Node> = Api::all(self.client.clone());
        for n in st.node_status.iter().filter(|n| n.phase == node_phase::PENDING) {
            let k = (key.0, key.1.clone(), n.node_name.clone());
            let waited = self.waiting.get(&k).is_some_and(|since| now.duration_since(*since) > t);
            if !waited || self.links.is_connected(&n.node_name) {
                continue;
            }
            match api.get_opt(&n.node_name).await {
                Ok(Some(node)) if nodes::verify(&n.node_name, &node).phase == node_phase::PENDING => {
                    self.waiting.insert(k, now);
                }
                Ok(_) => {
                    out.insert(n.node_name.clone());
                }
                Err(e) => debug!(node = %n.node_name, error = %e, "Reading a pending node failed; it waits."),
            }
        }
        out
    }

    /// Times out, starts and resends; sets the job's phase. Returns the nodes to send the task.
    /// `offline`: pending nodes to give up on ([`Runner::offline_nodes`]).
    fn plan(&mut self, key: &JobKey, p: &Params, st: &mut Status, offline: &BTreeSet<String>) -> Vec<String> {
        let now = Instant::now();
        let nk = |n: &NodeTask| (key.0, key.1.clone(), n.node_name.clone());
        if st.phase == job_phase::INIT {
            st.phase = job_phase::IN_PROGRESS.into();
        }
        if let Some(t) = p.timeout_secs.map(|t| Duration::from_secs(t.into())) {
            let wall = k8s_openapi::jiff::Timestamp::now();
            for n in &mut st.node_status {
                if n.phase == node_phase::IN_PROGRESS {
                    let local = now.duration_since(*self.heard.entry(nk(n)).or_insert(now));
                    // Another cloudcore may have heard from the node: its last recorded action
                    // counts too (upstream times out from it alone).
                    let recorded = n
                        .action_flow
                        .last()
                        .and_then(|a| a.time.parse::<k8s_openapi::jiff::Timestamp>().ok())
                        // A time ahead of ours (the edge's clock, or a made-up one) says nothing.
                        .and_then(|at| Duration::try_from(wall.duration_since(at)).ok());
                    if recorded.map_or(local, |r| r.min(local)) > t {
                        n.phase = node_phase::UNKNOWN.into();
                        n.reason = "The node task has timed out".into();
                    }
                } else if n.phase == node_phase::PENDING && offline.contains(&n.node_name) {
                    n.phase = node_phase::UNKNOWN.into();
                    n.reason = format!("the node was not connected to any cloudcore for {}s", t.as_secs());
                }
            }
        }
        if let Some(why) = status::exceeds_tolerance(st, p.tolerance) {
            st.phase = job_phase::FAILURE.into();
            st.reason = why;
            for n in st.node_status.iter_mut().filter(|n| n.phase == node_phase::PENDING) {
                n.reason = "not started: the job failed".into();
            }
            return Vec::new();
        }
        let mut sends = Vec::new();
        let mut running = st.node_status.iter().filter(|n| n.phase == node_phase::IN_PROGRESS).count();
        for n in st.node_status.iter_mut().filter(|n| n.phase == node_phase::PENDING) {
            if !self.links.is_connected(&n.node_name) {
                self.waiting.entry(nk(n)).or_insert(now);
                continue;
            }
            // Connected here: it waits for a slot, not for a connection.
            self.waiting.remove(&nk(n));
            if running < p.concurrency {
                n.phase = node_phase::IN_PROGRESS.into();
                n.reason.clear();
                self.heard.insert(nk(n), now);
                self.sent.remove(&nk(n));
                running += 1;
            }
        }
        for n in st.node_status.iter().filter(|n| n.phase == node_phase::IN_PROGRESS) {
            let quiet =
                |m: &HashMap<NodeKey, Instant>| m.get(&nk(n)).is_none_or(|t| now.duration_since(*t) > RESEND_AFTER);
            let never_sent = !self.sent.contains_key(&nk(n));
            if self.links.is_connected(&n.node_name) && (never_sent || (quiet(&self.sent) && quiet(&self.heard))) {
                sends.push(n.node_name.clone());
            }
        }
        let (phase, reason) = status::job_phase(st, p.tolerance);
        st.phase = phase.into();
        st.reason = reason;
        sends
    }

    /// Applies `change` to the newest version of the job and writes it; after the write, the
    /// nodes `change` returned are sent their task. `None`: the job is gone or could not be
    /// written.
    async fn update<T>(
        &mut self,
        key: &JobKey,
        mut change: impl FnMut(&mut Self, &Result<Params, String>, &mut Status) -> (T, Vec<String>),
    ) -> Option<T> {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &job::api_resource(key.0));
        for attempt in 0..WRITE_ATTEMPTS {
            let mut obj = match (attempt, self.jobs.get(key)) {
                (0, Some(o)) => o.clone(),
                _ => match api.get_opt(&key.1).await {
                    Ok(Some(o)) => o,
                    Ok(None) => return None,
                    Err(e) => {
                        warn!(job = %key.1, error = %e, "Reading a job failed.");
                        return None;
                    }
                },
            };
            let before = status_of(&obj);
            let mut st = before.clone();
            let params = job::params(key.0, &obj);
            let (out, sends) = change(self, &params, &mut st);
            if st == before {
                self.jobs.insert(key.clone(), obj.clone());
                self.send(key, &sends, obj.data.get("spec").cloned().unwrap_or_default());
                return Some(out);
            }
            obj.data["status"] = serde_json::to_value(&st).unwrap_or_default();
            match api.replace_status(&key.1, &PostParams::default(), &obj).await {
                Ok(written) => {
                    self.jobs.insert(key.clone(), written);
                    self.send(key, &sends, obj.data.get("spec").cloned().unwrap_or_default());
                    if status::is_final(&st.phase) {
                        info!(kind = key.0.kind(), job = %key.1, phase = %st.phase, reason = %st.reason, "Job done.");
                        self.forget(key);
                    }
                    return Some(out);
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    // The next attempt reads the newer version: nothing to wait for.
                    debug!(job = %key.1, "The job changed meanwhile; deciding again on the newer version.");
                }
                Err(kube::Error::Api(e)) if e.code == 404 => return None,
                Err(e) => {
                    warn!(job = %key.1, error = %e, "Writing a job's status failed; trying again later.");
                    return None;
                }
            }
        }
        None
    }

    /// Sends the job's task to `nodes` through CloudHub.
    fn send(&mut self, key: &JobKey, nodes: &[String], spec: serde_json::Value) {
        for node in nodes {
            let res = TaskResource { task_type: key.0, job: key.1.clone(), node: node.clone() };
            let msg = Message::build(
                task::TASK_MANAGER,
                task::TASK_MANAGER,
                CloudResource::prefixed(node, &res.to_string()),
                key.0.first_action(),
                Content::from_value(&spec),
            );
            if self.links.dispatch(msg) {
                self.sent.insert((key.0, key.1.clone(), node.clone()), Instant::now());
                self.metrics.sent(key.0);
                debug!(node, job = %key.1, "Sent a node task.");
            } else {
                debug!(node, job = %key.1, "A node task could not be handed to the node's session; later.");
            }
        }
    }
}
