//! The DeviceController module (`devicecontroller`): installs the device CRDs when missing,
//! runs the store task and the DeviceStatus workers, and hands edge reports to them. Reports
//! are taken in turn per node ([`FairQueue`], a node's in order), so a node whose reports wait
//! (a device with [`upstream::MAX_WAITING`] unanswered) holds up only itself.

use kubeedge_beehive::{BoxFuture, Module, ModuleContext, ModuleError};
use kubeedge_config::cloudcore::{DeviceController, KubeApiConfig};
use kubeedge_model::constants::module;
use kubeedge_model::{CloudResource, Message};
use tracing::info;

use super::downstream;
use super::upstream::{self, Patcher, Statuses};
use crate::authz::{AuthzMetrics, NodeAuthorizer};
use crate::delivery::devices::{DeviceView, DeviceViewWriter};
use crate::delivery::messages::Sender;
use crate::delivery::syncs::Syncs;
use crate::delivery::view::View;
use crate::inflight::fair::FairQueue;
use crate::inflight::{Completion, Ticket};
use crate::kubeclient::{install_crds, kube_client};

/// Fewest DeviceStatus workers (concurrent patches): upstream's default of one
/// (`load.updateDeviceStatusWorkers`) would put every device behind one API call.
pub const MIN_WORKERS: usize = 4;
/// Tasks taking edge reports into the pending set, nodes in turn.
const REPORT_WORKERS: usize = 4;

/// DeviceController as a bus module.
pub struct DeviceControllerModule {
    kube: KubeApiConfig,
    cfg: DeviceController,
    devices: DeviceView,
    syncs: Option<Syncs>,
    authz_metrics: Option<AuthzMetrics>,
    completion: Option<Completion>,
    /// Reports per node, kept across runs as the inbox is.
    reports: FairQueue<(Message, Option<Ticket>)>,
}

impl DeviceControllerModule {
    /// A module for this cluster; `syncs` is SyncController's record when it runs.
    pub fn new(kube: KubeApiConfig, cfg: DeviceController, syncs: Option<Syncs>) -> Self {
        Self {
            kube,
            cfg,
            devices: DeviceView::default(),
            syncs,
            authz_metrics: None,
            completion: None,
            reports: FairQueue::new(1),
        }
    }

    /// Reports each edge message taken to CloudHub's admission (see [`crate::inflight`]).
    pub fn with_completion(mut self, completion: Option<Completion>) -> Self {
        self.completion = completion;
        self
    }

    /// Counts the node authorizer's refusals in `metrics`.
    pub fn with_authz_metrics(mut self, metrics: Option<AuthzMetrics>) -> Self {
        self.authz_metrics = metrics;
        self
    }

    /// The device view (SyncController reconciles against it).
    pub fn devices(&self) -> DeviceView {
        self.devices.clone()
    }

    /// Workers patching DeviceStatuses at once.
    pub fn workers(&self) -> usize {
        usize::try_from(self.cfg.load.update_device_status_workers).unwrap_or(0).max(MIN_WORKERS)
    }
}

impl Module for DeviceControllerModule {
    fn name(&self) -> &'static str {
        module::DEVICECONTROLLER
    }

    fn group(&self) -> &'static str {
        module::DEVICECONTROLLER
    }

    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(async move {
            let client = kube_client(&self.kube).await?;
            install_crds(&client, kubeedge_apis::devices::GROUP).await?;
            let stop = ctx.shutdown().child_token();
            let _guard = stop.clone().drop_guard();
            let statuses = Statuses::default();
            let tx = Sender { bus: ctx.bus.clone(), syncs: self.syncs.clone() };
            // The store task: the device view's only writer (a new one per run; the last
            // run's task has ended before the supervisor runs the module again).
            ctx.spawn(downstream::run(
                client.clone(),
                DeviceViewWriter::new(self.devices.clone()),
                tx,
                statuses.clone(),
                stop.clone(),
            ));
            let patcher = Patcher {
                client: client.clone(),
                bus: ctx.bus.clone(),
                devices: self.devices.clone(),
                statuses: statuses.clone(),
            };
            for _ in 0..self.workers() {
                ctx.spawn(patcher.clone().run(stop.clone()));
            }
            // Devices only: the pod graph (EdgeController's view) plays no part here.
            let authz =
                NodeAuthorizer::new(client, View::default(), self.authz_metrics.clone(), module::DEVICECONTROLLER)
                    .with_devices(self.devices.clone());
            // A report is done once merged into the pending set (its answer waits for the patch).
            let reports = self.reports.clone();
            for _ in 0..REPORT_WORKERS {
                let (authz, statuses, run_stop) = (authz.clone(), statuses.clone(), stop.clone());
                ctx.spawn(reports.clone().work(stop.clone(), move |(msg, ticket)| {
                    let (authz, statuses, stop) = (authz.clone(), statuses.clone(), run_stop.clone());
                    async move {
                        // A report waiting for room in a device's pending set waits on this
                        // run's patchers: it ends with them (unanswered, the edge sends it again).
                        tokio::select! {
                            biased;
                            _ = stop.cancelled() => {}
                            () = upstream::handle(msg, &authz, &statuses) => {}
                        }
                        drop(ticket);
                    }
                }));
            }
            info!(workers = self.workers(), "DeviceController started.");
            while let Some(msg) = ctx.recv().await {
                let ticket = self.completion.as_ref().map(|c| c.ticket(&msg));
                let node = CloudResource::node_of(&msg.router.resource).unwrap_or_default().to_owned();
                reports.push(&node, (msg, ticket)).await;
            }
            Ok(())
        })
    }
}
