//! TaskManager (`modules.taskManager`): runs `operations.kubeedge.io/v1alpha2` jobs —
//! NodeUpgradeJob, ImagePrePullJob, ConfigUpdateJob — on edge nodes.
//!
//! Upstream splits this between the controller-manager (choosing nodes, the job's phase,
//! timeouts) and cloudcore (sending tasks, recording reports); here one module does both:
//!
//! 1. a new job's nodes are chosen ([`nodes`]: by name or label, edge and Ready, else Failure
//!    with upstream's reason) and its spec checked ([`job`]: a version, image, secret or config
//!    field that could do harm fails the job before any node sees it);
//! 2. nodes connected to this cloudcore are started `concurrency` at a time: marked
//!    InProgress, then sent the task through CloudHub (resource
//!    `operations.kubeedge.io/v1alpha2/{type}/{job}/node/{node}`, operation `Check`, the spec
//!    as content);
//! 3. the nodes' reports (`UpdateNodeActionStatus`, through their sessions or
//!    `POST /task/{type}/name/{job}/node/{node}/status` on :10002, always as the node the
//!    connection or certificate proves) are recorded in `status.nodeStatus[].actionFlow`;
//!    a report on another node's task is refused;
//! 4. the job is Completed when every node is done within `failureTolerate`, Failure as soon
//!    as the failures exceed it (no further node is started).
//!
//! [`runner`] owns all of it in one task; [`status`] holds the pure rules.

pub mod job;
pub mod nodes;
pub mod runner;
pub mod status;

use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use kube::api::{Api, DynamicObject};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event as WatchEvent};
use kubeedge_apis::operations::task::{TaskType, UPDATE_NODE_ACTION_STATUS};
use kubeedge_beehive::{Module, ModuleContext, ModuleError};
use kubeedge_config::cloudcore::KubeApiConfig;
use kubeedge_model::constants::module;
use kubeedge_model::{CloudResource, Operation};
use prometheus::{IntCounterVec, Opts};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::kubeclient::kube_client;
use crate::router::Links;
use runner::{Event, Runner};

/// How often running jobs are looked at again (timeouts, resends, newly connected nodes).
const TICK: Duration = Duration::from_secs(2);

/// The TaskManager's counters.
#[derive(Clone)]
pub struct TaskMetrics {
    sent: IntCounterVec,
    reports: IntCounterVec,
}

impl TaskMetrics {
    /// Registers `kubeedge_taskmanager_tasks_sent_total{type}` and
    /// `kubeedge_taskmanager_reports_total{result}` (when a registry is given).
    pub fn register(registry: Option<&prometheus::Registry>) -> Result<Self, prometheus::Error> {
        let sent = IntCounterVec::new(
            Opts::new("kubeedge_taskmanager_tasks_sent_total", "Node tasks sent to edges, resends included."),
            &["type"],
        )?;
        let reports = IntCounterVec::new(
            Opts::new(
                "kubeedge_taskmanager_reports_total",
                "Node task reports by result: applied, repeated, refused (another node's task, an unknown \
                 action or node), invalid, unknown (no such job), unwritten.",
            ),
            &["result"],
        )?;
        if let Some(r) = registry {
            r.register(Box::new(sent.clone()))?;
            r.register(Box::new(reports.clone()))?;
        }
        Ok(Self { sent, reports })
    }

    fn sent(&self, ty: TaskType) {
        self.sent.with_label_values(&[ty.resource()]).inc();
    }

    fn report(&self, result: &str) {
        self.reports.with_label_values(&[result]).inc();
    }
}

/// The TaskManager as a bus module (`taskmanager`/`taskmanager`).
pub struct TaskManagerModule {
    kube: KubeApiConfig,
    links: Links,
    metrics: TaskMetrics,
}

impl TaskManagerModule {
    /// A TaskManager reaching edges through CloudHub's `links`.
    pub fn new(
        kube: KubeApiConfig,
        links: Links,
        registry: Option<&prometheus::Registry>,
    ) -> Result<Self, prometheus::Error> {
        Ok(Self { kube, links, metrics: TaskMetrics::register(registry)? })
    }
}

/// Watches one kind and hands its events to the owner.
async fn watch(client: kube::Client, ty: TaskType, tx: mpsc::Sender<Event>, stop: CancellationToken) {
    let api: Api<DynamicObject> = Api::all_with(client, &job::api_resource(ty));
    // Errors back off inside the stream (as the Router's watches), never in this loop.
    let mut stream = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
    loop {
        let ev = tokio::select! {
            () = stop.cancelled() => return,
            ev = stream.next() => ev,
        };
        let out = match ev {
            None => return,
            Some(Ok(WatchEvent::Apply(o) | WatchEvent::InitApply(o))) => Event::Applied(ty, Box::new(o)),
            Some(Ok(WatchEvent::Delete(o))) => Event::Deleted(ty, o.metadata.name.unwrap_or_default()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                debug!(kind = ty.kind(), error = %e, "Job watch error; the watcher retries.");
                continue;
            }
        };
        if tx.send(out).await.is_err() {
            return;
        }
    }
}

impl Module for TaskManagerModule {
    fn name(&self) -> &'static str {
        module::TASKMANAGER
    }

    fn group(&self) -> &'static str {
        module::TASKMANAGER
    }

    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(async move {
            let client = kube_client(&self.kube).await?;
            crate::kubeclient::install_crds(&client, kubeedge_apis::operations::GROUP).await?;
            let stop = ctx.shutdown().child_token();
            let _guard = stop.clone().drop_guard();
            let (tx, mut events) = mpsc::channel(1024);
            for ty in TaskType::ALL {
                ctx.spawn(watch(client.clone(), ty, tx.clone(), stop.clone()));
            }
            drop(tx);
            let mut runner = Runner::new(client, self.links.clone(), self.metrics.clone());
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            info!("TaskManager started.");
            loop {
                tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    _ = tick.tick() => runner.tick().await,
                    ev = events.recv() => match ev {
                        Some(ev) => runner.on_event(ev).await,
                        None => return Ok(()),
                    },
                    msg = ctx.recv() => {
                        let Some(msg) = msg else { return Ok(()) };
                        if msg.router.source == module::CLOUDHUB && msg.operation() == Operation::Connected {
                            if let Some(node) = CloudResource::node_of(&msg.router.resource) {
                                runner.on_connected(node).await;
                            }
                        } else if msg.router.operation == UPDATE_NODE_ACTION_STATUS {
                            runner.on_report(&msg).await;
                        } else {
                            warn!(source = %msg.router.source, op = %msg.router.operation,
                                "TaskManager: not a node task report; dropped.");
                        }
                    }
                }
            }
        })
    }
}
