//! The task manager (`taskmanager`/`taskmanager`): this node's part of NodeUpgradeJob,
//! ImagePrePullJob and ConfigUpdateJob, as upstream's `edge/pkg/taskmanager` (v1alpha2). The
//! wire shapes and the flows are in [`kubeedge_apis::operations::task`].
//!
//! - A cloud message (resource `operations.kubeedge.io/v1alpha2/{type}/{job}/node/{node}`,
//!   operation the first action, content the job's spec) starts the flow at that action; a
//!   task for another node is dropped. Every action's result goes to the cloud as an
//!   `UpdateNodeActionStatus` report through EdgeHub.
//! - Idempotent: each task has a [`record::Record`] in `meta_v2` (upstream's key form). A task
//!   the node already knows is never run again: its latest report is sent again. (A finished
//!   task that comes with a different spec is a job deleted and created again under the same
//!   name: it runs as a new task.)
//! - Check runs the pre-checks ([`precheck`]) and validates what will be executed; for an
//!   upgrade with an image it fetches `image:version` through CRI. Pull pulls through CRI with
//!   the job's pull secret ([`secret`]). BackUp runs `keadm backup edge` and waits for it.
//!   Upgrade, Update and RollBack start keadm detached through `systemd-run` ([`keadm`]) and
//!   wait for its report file ([`report`]), read at start, on each EdgeHub "connected" notice,
//!   and every [`REPORT_POLL`] while such an action is pending (keadm may fail before it stops
//!   edgecore).
//! - `requireConfirmation`: the upgrade stops after WaitingConfirmation until MetaServer's
//!   `POST /api/v1/taskupgrade/confirm-upgrade` ([`confirm`]) continues it from BackUp.
//!
//! Who owns what: the module's task owns the records (loaded at each start of `run`) and is
//! the only one to write them and to report; each action runs in its own task and hands its
//! result back on a bounded channel ([`EVENTS_CAP`], backpressure), so a slow pull or backup
//! holds up neither other tasks nor duplicate answers.

mod actions;
pub mod keadm;
pub mod precheck;
pub mod record;
pub mod report;
pub mod secret;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kubeedge_apis::operations::task::{
    TASK_MANAGER, TaskResource, TaskType, UPDATE_NODE_ACTION_STATUS, UPGRADE_REPORT_PATH, UpstreamMessage, action,
};
use kubeedge_beehive::{BoxFuture, Bus, Module, ModuleContext, ModuleError};
use kubeedge_metastore::Store;
use kubeedge_model::constants::{group, module, source};
use kubeedge_model::protocol::edge;
use kubeedge_model::{Content, Message};
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info, info_span, warn};

use self::actions::{ActionResult, Env, Then};
use self::record::{Phase, Record, Records};

/// How often the report file is looked for while keadm runs an action detached.
pub const REPORT_POLL: Duration = Duration::from_secs(2);
/// Action results waiting for the module's task.
pub const EVENTS_CAP: usize = 64;
/// The resource of MetaServer's confirmation request on the bus.
pub const CONFIRM_RESOURCE: &str = "taskupgrade/confirm-upgrade";
/// Its operation.
pub const CONFIRM_OPERATION: &str = "confirm-upgrade";
/// The answer when no upgrade waits for confirmation (upstream's text).
pub const NOTHING_TO_CONFIRM: &str = "there are no valid upgrade tasks to execute";
/// How long `keadm backup edge` may take by default.
pub const BACKUP_TIMEOUT: Duration = Duration::from_secs(600);

/// Where things are on the node. [`Settings::new`] gives upstream's paths; tests move them.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This node.
    pub node: String,
    /// `modules.taskManager.keadmPath`.
    pub keadm: PathBuf,
    /// The edgecore config file this edgecore runs with (keadm's `--config`).
    pub config_path: PathBuf,
    /// The CRI socket (`containerRuntimeEndpoint` without `unix://`).
    pub cri_socket: Option<PathBuf>,
    /// keadm's report file ([`UPGRADE_REPORT_PATH`]).
    pub report_file: PathBuf,
    /// Present when systemd runs the host (`/run/systemd/system`).
    pub systemd_dir: PathBuf,
    /// `systemd-run` (found on `PATH`).
    pub systemd_run: PathBuf,
    /// How long `keadm backup edge` may take.
    pub backup_timeout: Duration,
    /// How often the report file is looked for while an action is pending.
    pub report_poll: Duration,
}

impl Settings {
    /// Upstream's paths for `node`.
    pub fn new(
        node: impl Into<String>,
        keadm: impl Into<PathBuf>,
        config_path: impl Into<PathBuf>,
        cri_socket: Option<PathBuf>,
    ) -> Self {
        Self {
            node: node.into(),
            keadm: keadm.into(),
            config_path: config_path.into(),
            cri_socket,
            report_file: UPGRADE_REPORT_PATH.into(),
            systemd_dir: "/run/systemd/system".into(),
            systemd_run: "systemd-run".into(),
            backup_timeout: BACKUP_TIMEOUT,
            report_poll: REPORT_POLL,
        }
    }
}

/// An action's result, for the module's task.
struct Event {
    key: String,
    action: &'static str,
    result: ActionResult,
}

/// The task manager as a bus module.
pub struct TaskManagerModule {
    env: Arc<Env>,
    records: Records,
}

impl TaskManagerModule {
    /// A module keeping its records in `store` (MetaManager's database).
    pub fn new(settings: Settings, store: Store) -> Self {
        let records = Records::new(store.clone());
        Self { env: Arc::new(Env { settings, store }), records }
    }
}

impl Module for TaskManagerModule {
    fn name(&self) -> &'static str {
        module::TASKMANAGER
    }

    fn group(&self) -> &'static str {
        group::TASKMANAGER
    }

    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(async move {
            let (tx, mut rx) = mpsc::channel(EVENTS_CAP);
            let mut state = State {
                env: self.env.clone(),
                records: self.records.clone(),
                tasks: BTreeMap::new(),
                bus: ctx.bus.clone(),
                spawner: ctx.spawner(),
                events: tx,
            };
            state.start().await?;
            let mut poll = tokio::time::interval(self.env.settings.report_poll);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    msg = ctx.recv() => match msg {
                        Some(m) => state.on_message(m).await,
                        None => break,
                    },
                    Some(ev) = rx.recv() => state.on_event(ev).await,
                    _ = poll.tick(), if state.has_pending() => state.check_report_file().await,
                }
            }
            Ok(())
        })
    }
}

/// The module's state for one `run`.
struct State {
    env: Arc<Env>,
    records: Records,
    /// Every known task, by record key.
    tasks: BTreeMap<String, Record>,
    bus: Bus,
    spawner: kubeedge_beehive::Spawner,
    events: mpsc::Sender<Event>,
}

impl State {
    fn node(&self) -> &str {
        &self.env.settings.node
    }

    /// Loads the records and picks up what an earlier edgecore left: actions it was running
    /// run again, launches it may or may not have finished wait for the report file.
    async fn start(&mut self) -> Result<(), kubeedge_metastore::Error> {
        let loaded = self.records.load().await?;
        let mut resume = Vec::new();
        for mut r in loaded {
            if r.node != self.node() {
                continue;
            }
            if r.phase == Phase::Running {
                if matches!(r.action.as_str(), action::UPGRADE | action::UPDATE | action::ROLL_BACK) {
                    r.phase = Phase::Pending;
                } else {
                    resume.push(r.key());
                }
            }
            self.tasks.insert(r.key(), r);
        }
        if !self.tasks.is_empty() {
            info!(tasks = self.tasks.len(), resumed = resume.len(), "Loaded the node tasks.");
        }
        for key in resume {
            if let Some(r) = self.tasks.get(&key) {
                info!(task.job = %r.job, task.action = %r.action, "Resuming an action an earlier edgecore ran.");
                self.spawn(r);
            }
        }
        self.check_report_file().await;
        Ok(())
    }

    fn has_pending(&self) -> bool {
        self.tasks.values().any(|r| r.phase == Phase::Pending)
    }

    async fn on_message(&mut self, msg: Message) {
        if let Some(up) = edge::connection_state(&msg) {
            if up {
                self.check_report_file().await;
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
        self.spawn(&record);
        self.tasks.insert(key, record);
    }

    /// Runs the record's action in its own task.
    fn spawn(&self, r: &Record) {
        let (Some(ty), Some(step)) = (r.task_type(), r.task_type().and_then(|t| t.step(&r.action))) else {
            warn!(task.job = %r.job, task.action = %r.action, "A task record names no known action; skipped.");
            return;
        };
        let (env, events, key, job, spec) =
            (self.env.clone(), self.events.clone(), r.key(), r.job.clone(), r.spec.clone());
        let span = info_span!("task", task.job = %job, task.kind = %ty);
        self.spawner.spawn(
            async move {
                let result = actions::run(&env, ty, &job, &spec, step.action).await;
                let _ = events.send(Event { key, action: step.action, result }).await;
            }
            .instrument(span),
        );
    }

    /// An action ended: record where the task goes, then report, then go on.
    async fn on_event(&mut self, ev: Event) {
        let Some(mut r) = self.tasks.get(&ev.key).cloned() else { return };
        let Some(resource) = r.resource() else { return };
        if let Some(last) = ev.result.reports.last() {
            r.report = Some(last.clone());
        }
        (r.action, r.phase) = match &ev.result.then {
            Then::Next(next) => ((*next).to_owned(), Phase::Running),
            Then::WaitConfirmation => (ev.action.to_owned(), Phase::WaitingConfirmation),
            Then::Pending(a) => ((*a).to_owned(), Phase::Pending),
            Then::Done => (r.report.as_ref().map_or(ev.action.to_owned(), |m| m.action.clone()), Phase::Done),
        };
        r.updated = kubeedge_kube_serve::time::now();
        self.commit(r.clone()).await;
        for m in &ev.result.reports {
            self.send(&resource, m);
        }
        match ev.result.then {
            Then::Next(_) => self.spawn(&r),
            Then::WaitConfirmation => info!(task.job = %r.job, "The upgrade waits for keadm ctl confirm."),
            Then::Pending(a) => {
                info!(task.job = %r.job, task.action = a, "keadm runs the action; waiting for its report.")
            }
            Then::Done => {
                info!(task.job = %r.job, succ = r.report.as_ref().is_some_and(|m| m.succ), "The node task ended.");
                self.prune().await;
            }
        }
    }

    /// Stores and keeps `r`. A failed write is logged: the task goes on from memory, and after
    /// a restart from the previous record.
    async fn commit(&mut self, r: Record) {
        if let Err(e) = self.records.save(&r).await {
            warn!(task.job = %r.job, error = %e, "Could not store the node task's progress.");
        }
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

    /// `keadm ctl confirm`: every upgrade waiting for it goes on from BackUp.
    async fn confirm(&mut self) -> Result<(), String> {
        let waiting: Vec<Record> = self
            .tasks
            .values()
            .filter(|r| r.phase == Phase::WaitingConfirmation && r.task_type() == Some(TaskType::NodeUpgrade))
            .cloned()
            .collect();
        if waiting.is_empty() {
            return Err(NOTHING_TO_CONFIRM.to_owned());
        }
        for mut r in waiting {
            info!(task.job = %r.job, "Upgrade confirmed; going on with the backup.");
            r.action = action::BACK_UP.to_owned();
            r.phase = Phase::Running;
            r.updated = kubeedge_kube_serve::time::now();
            self.commit(r.clone()).await;
            self.spawn(&r);
        }
        Ok(())
    }

    /// keadm's report file, if an action waits for it: the reports it means, then the task
    /// ends. Without a pending action the file is left alone (keadm run by hand).
    async fn check_report_file(&mut self) {
        let Some(mut r) = self.tasks.values().find(|r| r.phase == Phase::Pending).cloned() else { return };
        let Some(resource) = r.resource() else { return };
        let reports = match actions::read_report(&self.env.settings).await {
            Ok(None) => return,
            Ok(Some(file)) => match report::outcome(&r.action, &file) {
                report::Outcome::Ignore => {
                    info!(event = %file.event, "Ignored a leftover keadm report.");
                    return;
                }
                report::Outcome::Finish(reports) => reports,
            },
            Err(e) => report::unreadable(&r.action, &e),
        };
        info!(task.job = %r.job, task.action = %r.action, "keadm reported; the node task ended.");
        r.report = reports.last().cloned();
        r.action = r.report.as_ref().map_or(r.action.clone(), |m| m.action.clone());
        r.phase = Phase::Done;
        r.updated = kubeedge_kube_serve::time::now();
        self.commit(r).await;
        for m in &reports {
            self.send(&resource, m);
        }
        self.prune().await;
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

/// How MetaServer's confirmation went.
#[derive(Debug, thiserror::Error)]
pub enum ConfirmError {
    /// No upgrade waits (or there is no task manager): the client's request is wrong.
    #[error("{0}")]
    Nothing(String),
    /// The task manager did not answer.
    #[error("the task manager did not answer: {0}")]
    Unanswered(#[source] kubeedge_beehive::BusError),
}

/// `keadm ctl confirm`, from MetaServer: asks the task manager over the bus and returns its
/// answer (at most `timeout` later).
pub async fn confirm(bus: &Bus, timeout: Duration) -> Result<(), ConfirmError> {
    if !bus.has_module(module::TASKMANAGER) {
        return Err(ConfirmError::Nothing(NOTHING_TO_CONFIRM.to_owned()));
    }
    let req =
        Message::build(source::METASERVER, group::TASKMANAGER, CONFIRM_RESOURCE, CONFIRM_OPERATION, Content::null());
    let reply = bus.send_sync(module::TASKMANAGER, req, timeout).await.map_err(ConfirmError::Unanswered)?;
    if reply.router.operation == kubeedge_model::constants::operation::ERROR {
        let why = reply.content.as_str().map(|s| s.into_owned()).unwrap_or_else(|| NOTHING_TO_CONFIRM.to_owned());
        return Err(ConfirmError::Nothing(why));
    }
    Ok(())
}
