//! The task manager's state for one `run` of the module: the records, the only writer of them
//! and the only sender of reports. Actions run in tasks of their own and hand their results
//! back as [`Event`]s.
//!
//! keadm is one per node (one lock, one report file), so at most one task has keadm working
//! for it ([`Record::holds_keadm`]); an action that would run keadm while another task's does
//! fails at once.

use std::collections::BTreeMap;
use std::sync::Arc;

use kubeedge_apis::operations::task::{
    TASK_MANAGER, TaskResource, TaskType, UPDATE_NODE_ACTION_STATUS, UpstreamMessage, action,
};
use kubeedge_beehive::{Bus, Spawner};
use kubeedge_model::constants::group;
use kubeedge_model::protocol::edge;
use kubeedge_model::{Content, Message};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::actions::{self, ActionResult, Env, Then};
use super::record::{self, Phase, Record, Records, Wait};
use super::report;
use super::{CONFIRM_OPERATION, CONFIRM_RESOURCE, NOTHING_TO_CONFIRM};

/// Why an interrupted backup is not run again: a `keadm rollback edge` may have just restored
/// the database holding this very record from that backup.
const BACKUP_INTERRUPTED: &str = "keadm backup edge was interrupted by an edgecore restart; it is not run again";

/// An action's result, for the module's task.
pub(super) struct Event {
    key: String,
    action: &'static str,
    result: ActionResult,
}

/// The module's state for one `run`.
pub(super) struct State {
    pub(super) env: Arc<Env>,
    pub(super) records: Records,
    /// Every known task of this node, by record key.
    pub(super) tasks: BTreeMap<String, Record>,
    pub(super) bus: Bus,
    pub(super) spawner: Spawner,
    pub(super) events: mpsc::Sender<Event>,
    /// Cancelled when this `run` ends (shutdown, or a failure the supervisor restarts): the
    /// action tasks stop with it.
    pub(super) stop: CancellationToken,
}

impl State {
    fn node(&self) -> &str {
        &self.env.settings.node
    }

    /// Loads the records and picks up what an earlier edgecore left. Actions without side
    /// effects (Check, WaitingConfirmation, Pull) run again; an interrupted BackUp fails
    /// rather than lead into an upgrade; launches it may or may not have made wait for
    /// keadm's report, until their deadline.
    pub(super) async fn start(&mut self) -> Result<(), kubeedge_metastore::Error> {
        let loaded = self.records.load().await?;
        let (mut resume, mut interrupted) = (Vec::new(), Vec::new());
        for mut r in loaded {
            if r.node != self.node() {
                continue;
            }
            if r.phase == Phase::Running {
                match r.action.as_str() {
                    action::UPGRADE | action::UPDATE | action::ROLL_BACK => r.phase = Phase::Pending,
                    action::BACK_UP => interrupted.push(r.key()),
                    _ => resume.push(r.key()),
                }
            }
            if r.phase == Phase::Pending && r.wait.is_none() {
                let seconds =
                    r.task_type().map_or(actions::report_wait(None), |t| actions::report_wait_for(t, &r.spec));
                r.wait = Some(Wait::from_now(seconds));
                self.save(&r).await;
            }
            self.tasks.insert(r.key(), r);
        }
        if !self.tasks.is_empty() {
            info!(tasks = self.tasks.len(), resumed = resume.len(), "Loaded the node tasks.");
        }
        for key in interrupted {
            warn!(task.key = %key, "A backup was interrupted by a restart; the task fails.");
            self.apply(&key, action::BACK_UP, actions::not_run(action::BACK_UP, BACKUP_INTERRUPTED.to_owned())).await;
        }
        for key in resume {
            if let Some(r) = self.tasks.get(&key).cloned() {
                info!(task.job = %r.job, task.action = %r.action, "Resuming an action an earlier edgecore ran.");
                self.start_action(&r).await;
            }
        }
        self.poll_pending().await;
        Ok(())
    }

    pub(super) fn has_pending(&self) -> bool {
        self.tasks.values().any(|r| r.phase == Phase::Pending)
    }

    pub(super) async fn on_message(&mut self, msg: Message) {
        if let Some(up) = edge::connection_state(&msg) {
            if up {
                self.poll_pending().await;
            }
            return;
        }
        if msg.router.resource == CONFIRM_RESOURCE && msg.router.operation == CONFIRM_OPERATION {
            let reply = match self.confirm().await {
                Ok(()) => Message::response_to(&msg, Content::string("ok")),
                Err(e) => Message::error_response_to(&msg, &e),
            };
            self.bus.send_resp(reply);
            return;
        }
        let resource = match TaskResource::parse(&msg.router.resource) {
            Ok(r) => r,
            Err(e) => {
                warn!(resource = %msg.router.resource, error = %e, "Dropped a message that is not a node task.");
                return;
            }
        };
        let span = info_span!("task", task.job = %resource.job, task.kind = %resource.task_type);
        self.on_task(resource, msg).instrument(span).await;
    }

    async fn on_task(&mut self, resource: TaskResource, msg: Message) {
        if resource.node != self.node() {
            warn!(task.node = %resource.node, "Dropped a task for another node.");
            return;
        }
        let key = record::key(resource.task_type.resource(), &resource.job, &resource.node);
        let spec: serde_json::Value = serde_json::from_slice(&msg.content.data()).unwrap_or(serde_json::Value::Null);
        // A finished task sent with another spec is a new job of the same name (the old one
        // was deleted and created again): it runs. The same spec is the cloud resending.
        if self.tasks.get(&key).is_some_and(|known| known.phase == Phase::Done && known.spec != spec) {
            info!("A finished task's job came again with another spec; running it as a new task.");
            self.tasks.remove(&key);
        }
        if let Some(known) = self.tasks.get(&key) {
            // Idempotent: nothing runs again; the cloud hears where the task stands.
            match &known.report {
                Some(last) => {
                    info!(task.action = %last.action, "A task already known; sent its latest report again.");
                    self.send(&resource, last);
                }
                None => debug!(task.action = %known.action, "A task already running; nothing to report yet."),
            }
            return;
        }
        let Some(step) = resource.task_type.step(&msg.router.operation) else {
            warn!(operation = %msg.router.operation, "Dropped a task starting at an unknown action.");
            return;
        };
        let record = Record::new(&resource, spec, step.action);
        if let Err(e) = self.records.save(&record).await {
            // Without a record the task could run twice; the cloud sends it again.
            warn!(error = %e, "Could not store a new task; dropped it.");
            return;
        }
        info!(task.action = step.action, "Started a node task.");
        self.tasks.insert(key.clone(), record.clone());
        if resource.task_type == TaskType::NodeUpgrade {
            self.supersede_waiting(&key, &resource.job).await;
        }
        self.start_action(&record).await;
    }

    /// Ends every upgrade but `newest` that waits for confirmation: an upgrade job of this
    /// node newer than they are replaced them (theirs are deleted, or would upgrade again).
    async fn supersede_waiting(&mut self, newest: &str, job: &str) {
        let older: Vec<String> = self
            .tasks
            .values()
            .filter(|r| r.phase == Phase::WaitingConfirmation && r.task_type() == Some(TaskType::NodeUpgrade))
            .map(Record::key)
            .filter(|k| k != newest)
            .collect();
        for key in older {
            info!(task.key = %key, by = job, "An upgrade waiting for confirmation was superseded.");
            let why = format!("superseded by job {job}");
            self.apply(&key, action::WAITING_CONFIRMATION, actions::not_run(action::WAITING_CONFIRMATION, why)).await;
        }
    }

    /// The task other than `key` that has keadm working for it, if any.
    fn keadm_holder(&self, key: &str) -> Option<&Record> {
        self.tasks.values().find(|r| r.key() != key && r.holds_keadm())
    }

    /// Starts the record's action in its own task, or, when it would run keadm while another
    /// task's keadm action runs or waits for its report, fails it at once (final).
    async fn start_action(&mut self, r: &Record) {
        let Some(step) = r.task_type().and_then(|t| t.step(&r.action)) else {
            warn!(task.job = %r.job, task.action = %r.action, "A task record names no known action; skipped.");
            return;
        };
        if record::runs_keadm(step.action)
            && let Some(other) = self.keadm_holder(&r.key())
        {
            let why = format!("another node task is running keadm: {}/{}", other.task_type, other.job);
            warn!(task.job = %r.job, task.action = step.action, reason = %why, "Refused to run keadm.");
            // Boxed: `apply` starts the next action, which may be refused in turn.
            Box::pin(self.apply(&r.key(), step.action, actions::not_run(step.action, why))).await;
            return;
        }
        self.spawn(r, step.action);
    }

    /// Runs `action` of `r` in a task of the module's, which stops with this `run`.
    fn spawn(&self, r: &Record, action: &'static str) {
        let Some(ty) = r.task_type() else { return };
        let (env, events, key, job, spec, stop) =
            (self.env.clone(), self.events.clone(), r.key(), r.job.clone(), r.spec.clone(), self.stop.clone());
        let span = info_span!("task", task.job = %job, task.kind = %ty);
        self.spawner.spawn(
            async move {
                tokio::select! {
                    result = actions::run(&env, ty, &job, &spec, action) => {
                        let _ = events.send(Event { key, action, result }).await;
                    }
                    // Dropping the action kills its children (a backup); a detached launch
                    // runs on. The record still names the action: the next start decides.
                    () = stop.cancelled() => info!(task.action = action, "The task manager stopped; the action was abandoned."),
                }
            }
            .instrument(span),
        );
    }

    pub(super) async fn on_event(&mut self, ev: Event) {
        self.apply(&ev.key, ev.action, ev.result).await;
    }

    /// `action` of the task `key` ended with `result`: record where the task goes, then
    /// report, then go on.
    async fn apply(&mut self, key: &str, action: &str, result: ActionResult) {
        let Some(mut r) = self.tasks.get(key).cloned() else { return };
        let Some(resource) = r.resource() else { return };
        if let Some(last) = result.reports.last() {
            r.report = Some(last.clone());
        }
        r.wait = None;
        (r.action, r.phase) = match &result.then {
            Then::Next(next) => ((*next).to_owned(), Phase::Running),
            Then::WaitConfirmation => (action.to_owned(), Phase::WaitingConfirmation),
            Then::Pending { action, seconds } => {
                r.wait = Some(Wait::from_now(*seconds));
                ((*action).to_owned(), Phase::Pending)
            }
            Then::Done => (r.report.as_ref().map_or(action.to_owned(), |m| m.action.clone()), Phase::Done),
        };
        r.updated = kubeedge_kube_serve::time::now();
        self.commit(r.clone()).await;
        for m in &result.reports {
            self.send(&resource, m);
        }
        match result.then {
            Then::Next(_) => self.start_action(&r).await,
            Then::WaitConfirmation => info!(task.job = %r.job, "The upgrade waits for keadm ctl confirm."),
            Then::Pending { action, seconds } => {
                info!(task.job = %r.job, task.action = action, seconds, "keadm runs the action; waiting for its report.")
            }
            Then::Done => {
                info!(task.job = %r.job, succ = r.report.as_ref().is_some_and(|m| m.succ), "The node task ended.");
                self.prune().await;
            }
        }
    }

    /// Stores `r`; a failed write is logged: the task goes on from memory, and after a restart
    /// from the previous record.
    async fn save(&self, r: &Record) {
        if let Err(e) = self.records.save(r).await {
            warn!(task.job = %r.job, error = %e, "Could not store the node task's progress.");
        }
    }

    /// Stores and keeps `r`.
    async fn commit(&mut self, r: Record) {
        self.save(&r).await;
        self.tasks.insert(r.key(), r);
    }

    async fn prune(&mut self) {
        let gone = record::prunable(self.tasks.values());
        if gone.is_empty() {
            return;
        }
        match self.records.delete(gone.clone()).await {
            Ok(()) => {
                for k in gone {
                    self.tasks.remove(&k);
                }
            }
            Err(e) => warn!(error = %e, "Could not delete old finished node tasks."),
        }
    }

    /// `keadm ctl confirm`: the newest upgrade waiting for it goes on from BackUp; older ones
    /// (left from jobs deleted since) end as superseded.
    async fn confirm(&mut self) -> Result<(), String> {
        let newest = self
            .tasks
            .values()
            .filter(|r| r.phase == Phase::WaitingConfirmation && r.task_type() == Some(TaskType::NodeUpgrade))
            .max_by(|a, b| a.updated.cmp(&b.updated))
            .cloned();
        let Some(mut r) = newest else { return Err(NOTHING_TO_CONFIRM.to_owned()) };
        self.supersede_waiting(&r.key(), &r.job).await;
        info!(task.job = %r.job, "Upgrade confirmed; going on with the backup.");
        let busy = self
            .keadm_holder(&r.key())
            .map(|o| format!("another node task is running keadm: {}/{}", o.task_type, o.job));
        r.action = action::BACK_UP.to_owned();
        r.phase = Phase::Running;
        r.updated = kubeedge_kube_serve::time::now();
        self.commit(r.clone()).await;
        self.start_action(&r).await;
        busy.map_or(Ok(()), Err)
    }

    /// keadm's report file and the pending actions' deadlines.
    pub(super) async fn poll_pending(&mut self) {
        self.check_report_file().await;
        self.fail_overdue().await;
    }

    /// keadm's report file, if an action waits for it: the reports it means for the pending
    /// action it answers, then that task ends. Without a pending action the file is left
    /// alone (keadm run by hand); one no pending action expects is dropped.
    async fn check_report_file(&mut self) {
        if !self.has_pending() {
            return;
        }
        let pending = |r: &&Record| r.phase == Phase::Pending;
        let (r, reports) = match actions::read_report(&self.env.settings).await {
            Ok(None) => return,
            Ok(Some(file)) => {
                let answered = |r: &&Record| r.task_type().is_some_and(|t| report::answers(&file.event, t, &r.action));
                let Some(r) = self.tasks.values().filter(pending).filter(answered).min_by(by_launch) else {
                    info!(event = %file.event, success = file.success, "Ignored a keadm report no pending action expects.");
                    return;
                };
                (r.clone(), report::outcome(&r.action, &file))
            }
            Err(e) => {
                // Not known whose: the one waiting longest.
                let Some(r) = self.tasks.values().filter(pending).min_by(by_launch) else { return };
                (r.clone(), report::unreadable(&r.action, &e))
            }
        };
        info!(task.job = %r.job, task.action = %r.action, "keadm reported; the node task ended.");
        let action = r.action.clone();
        self.apply(&r.key(), &action, ActionResult { reports, then: Then::Done }).await;
    }

    /// Pending actions whose report is overdue fail (keadm never started, was killed, or the
    /// node rebooted before it wrote anything).
    async fn fail_overdue(&mut self) {
        let now = kubeedge_kube_serve::time::now_unix();
        let overdue: Vec<Record> = self
            .tasks
            .values()
            .filter(|r| r.phase == Phase::Pending && r.wait.as_ref().is_some_and(|w| w.is_over(now)))
            .cloned()
            .collect();
        for r in overdue {
            let seconds = r.wait.as_ref().map_or(0, |w| w.seconds);
            warn!(task.job = %r.job, task.action = %r.action, seconds, "keadm did not report in time; the node task failed.");
            let reports = report::overdue(&r.action, &r.job, seconds);
            self.apply(&r.key(), &r.action, ActionResult { reports, then: Then::Done }).await;
        }
    }

    /// A report to the cloud, through EdgeHub's inbox without waiting: when it is full (the
    /// link is down for long) the report is dropped, and sent again when the cloud resends
    /// the task.
    fn send(&self, resource: &TaskResource, m: &UpstreamMessage) {
        let content = Content::json(m).unwrap_or_else(|_| Content::null());
        let msg = Message::build(TASK_MANAGER, group::HUB, resource.to_string(), UPDATE_NODE_ACTION_STATUS, content);
        let mut sent = false;
        for hub in self.bus.group_members(group::HUB) {
            sent |= self.bus.try_send(hub, msg.clone()).is_ok();
        }
        if sent {
            debug!(task.action = %m.action, succ = m.succ, "Reported to the cloud.");
        } else {
            warn!(task.action = %m.action, succ = m.succ, "EdgeHub did not take the report; it goes again when the cloud resends the task.");
        }
    }
}

/// Oldest launch first.
fn by_launch(a: &&Record, b: &&Record) -> std::cmp::Ordering {
    let launched = |r: &Record| r.wait.as_ref().map(|w| w.launched.clone()).unwrap_or_default();
    launched(a).cmp(&launched(b))
}
