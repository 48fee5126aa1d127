//! The EdgeController module (`edgecontroller`): runs the watches and handles upstream
//! messages with a pool of workers taking nodes in turn ([`FairQueue`], one message of a node
//! at a time, so each node's messages stay in order and a flooding node holds one worker at
//! most). The compact lease renewals of edges of ours are the exception: they go to the
//! renewer ([`renewer`], idempotent, so outside that order) while it has room. Each message's
//! [`Ticket`] is dropped once it is handled: CloudHub then lets its node have another in
//! flight.

use kubeedge_beehive::{BoxFuture, Module, ModuleContext, ModuleError};
use kubeedge_config::cloudcore::KubeApiConfig;
use kubeedge_model::constants::module;
use kubeedge_model::{CloudResource, Message, Operation};
use tracing::info;

use super::downstream::{self, Sender};
use super::renewer::{self, Renewal};
use super::upstream::Upstream;
use crate::authz::{AuthzMetrics, NodeAuthorizer};
use crate::delivery::syncs::Syncs;
use crate::delivery::view::{View, ViewWriter};
use crate::inflight::fair::FairQueue;
use crate::inflight::{Completion, Ticket};
use crate::kubeclient::kube_config;
use crate::kubeclient::lean::LeanClient;

/// Upstream workers, shared by all nodes in turn. Each waits on one API call at a time: at
/// 10,000 nodes (1,000 lease renewals a second, plus pod status) 8 were a queue seconds long.
const WORKERS: usize = 32;

/// EdgeController as a bus module.
pub struct EdgeControllerModule {
    kube: KubeApiConfig,
    view: View,
    syncs: Option<Syncs>,
    authz_metrics: Option<AuthzMetrics>,
    completion: Option<Completion>,
    /// Upstream messages per node, kept across runs as the inbox is: a restart loses none,
    /// and a node whose message an old run's worker still handles keeps its turn.
    queue: FairQueue<(Message, Option<Ticket>)>,
}

impl EdgeControllerModule {
    /// A module for this cluster; `syncs` is SyncController's record when it runs.
    pub fn new(kube: KubeApiConfig, syncs: Option<Syncs>) -> Self {
        Self { kube, view: View::default(), syncs, authz_metrics: None, completion: None, queue: FairQueue::new(1) }
    }

    /// Reports each upstream message handled to CloudHub's admission (see [`crate::inflight`]).
    pub fn with_completion(mut self, completion: Option<Completion>) -> Self {
        self.completion = completion;
        self
    }

    /// Counts the node authorizer's refusals in `metrics`.
    pub fn with_authz_metrics(mut self, metrics: Option<AuthzMetrics>) -> Self {
        self.authz_metrics = metrics;
        self
    }

    /// The view of what each edge node should have (SyncController reads it).
    pub fn view(&self) -> View {
        self.view.clone()
    }
}

impl Module for EdgeControllerModule {
    fn name(&self) -> &'static str {
        module::EDGECONTROLLER
    }

    fn group(&self) -> &'static str {
        module::EDGECONTROLLER
    }

    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(async move {
            let config = kube_config(&self.kube).await?;
            let client = kube::Client::try_from(config.clone())?;
            let stop = ctx.shutdown().child_token();
            let _guard = stop.clone().drop_guard();
            let tx = Sender { bus: ctx.bus.clone(), syncs: self.syncs.clone() };
            // The store task: the view's only writer (a new one per run; the last run's task
            // has ended before the supervisor runs the module again).
            ctx.spawn(downstream::run(client.clone(), ViewWriter::new(self.view.clone()), tx.clone(), stop.clone()));
            let authz = NodeAuthorizer::new(
                client.clone(),
                self.view.clone(),
                self.authz_metrics.clone(),
                module::EDGECONTROLLER,
            );
            let up = Upstream { client, tx, authz };
            // Compact lease renewals on their own HTTP/2 connection, when it applies.
            let renewals = match LeanClient::from_config(&config) {
                Ok(lean) => {
                    info!(
                        "Lease renewals of edges of ours go over their own HTTP/2 connection to the API server \
                         (through the Kubernetes client while it cannot be made)."
                    );
                    let (tx, rx) = tokio::sync::mpsc::channel(renewer::QUEUE);
                    ctx.spawn(renewer::run(rx, lean, up.clone(), stop.clone()));
                    Some(tx)
                }
                Err(why) => {
                    info!(%why, "Lease renewals go through the Kubernetes client: the HTTP/2 path does not apply.");
                    None
                }
            };
            // Per node, in arrival order.
            let queue = self.queue.clone();
            for _ in 0..WORKERS {
                let up = up.clone();
                ctx.spawn(queue.clone().work(stop.clone(), move |(msg, ticket)| {
                    let up = up.clone();
                    async move {
                        up.handle(msg).await;
                        drop(ticket);
                    }
                }));
            }
            info!(workers = WORKERS, "EdgeController started.");
            while let Some(msg) = ctx.recv().await {
                let ticket = self.completion.as_ref().map(|c| c.ticket(&msg));
                // A renewal goes to the renewer; when it is not one, or the renewer has no room,
                // it is the workers'.
                let (msg, ticket) = match &renewals {
                    Some(tx) if msg.operation() == Operation::Renew => match Renewal::of(&msg) {
                        Some(target) => match tx.try_send(Renewal::new(msg, ticket, target)) {
                            Ok(()) => continue,
                            Err(e) => e.into_inner().into_parts(),
                        },
                        None => (msg, ticket),
                    },
                    _ => (msg, ticket),
                };
                let node = CloudResource::node_of(&msg.router.resource).unwrap_or_default().to_owned();
                queue.push(&node, (msg, ticket)).await;
            }
            Ok(())
        })
    }
}
