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
//!   edgecore). The report goes to the pending action it answers. Without one within the
//!   `--connect-timeout` handed to keadm and two minutes (kept in the record, so restarts do
//!   not extend it) the action fails.
//! - One keadm per node: an action that would run keadm (BackUp, Upgrade, Update, RollBack)
//!   while another task's keadm action runs or is pending fails at once.
//! - After a restart, Check, WaitingConfirmation and Pull run again; an interrupted BackUp
//!   fails (its backup may be what `keadm rollback edge` just restored), and launches wait for
//!   their report as above.
//! - `requireConfirmation`: the upgrade stops after WaitingConfirmation until MetaServer's
//!   `POST /api/v1/taskupgrade/confirm-upgrade` ([`confirm`]) continues it from BackUp. A newer
//!   upgrade task of the node supersedes those waiting; a confirmation continues the newest.
//!
//! Who owns what: the module's task owns the records (loaded at each start of `run`) and is
//! the only one to write them and to report; each action runs in its own task and hands its
//! result back on a bounded channel ([`EVENTS_CAP`], backpressure), so a slow pull or backup
//! holds up neither other tasks nor duplicate answers. Action tasks stop when `run` ends
//! (their children, a backup, are killed; a detached keadm runs on).

mod actions;
pub mod keadm;
pub mod precheck;
pub mod record;
pub mod report;
pub mod secret;
mod state;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kubeedge_apis::operations::task::UPGRADE_REPORT_PATH;
use kubeedge_beehive::{BoxFuture, Bus, Module, ModuleContext, ModuleError};
use kubeedge_metastore::Store;
use kubeedge_model::constants::{group, module, source};
use kubeedge_model::{Content, Message};
use tokio::sync::mpsc;

use self::actions::Env;
use self::record::Records;
use self::state::State;

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
            // The action tasks stop when this run ends, however it ends.
            let stop = ctx.shutdown().child_token();
            let _stop_on_exit = stop.clone().drop_guard();
            let mut state = State {
                env: self.env.clone(),
                records: self.records.clone(),
                tasks: BTreeMap::new(),
                bus: ctx.bus.clone(),
                spawner: ctx.spawner(),
                events: tx,
                stop,
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
                    _ = poll.tick(), if state.has_pending() => state.poll_pending().await,
                }
            }
            Ok(())
        })
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
