//! The EdgeController module (`edgecontroller`): runs the watches and handles upstream
//! messages, one worker per slice of nodes so each node's messages stay in order.

use std::hash::{Hash, Hasher};

use kubeedge_beehive::{BoxFuture, Module, ModuleContext, ModuleError};
use kubeedge_config::cloudcore::KubeApiConfig;
use kubeedge_model::constants::module;
use kubeedge_model::{CloudResource, Message};
use tokio::sync::mpsc;
use tracing::info;

use super::downstream::{self, Sender};
use super::upstream::Upstream;
use crate::authz::{AuthzMetrics, NodeAuthorizer};
use crate::delivery::syncs::Syncs;
use crate::delivery::view::{View, ViewWriter};
use crate::kubeclient::kube_client;

/// Upstream workers; a node's messages always go to the same one.
const WORKERS: usize = 8;
/// Each worker's inbox (backpressure when full).
const WORKER_INBOX: usize = 256;

/// EdgeController as a bus module.
pub struct EdgeControllerModule {
    kube: KubeApiConfig,
    view: View,
    syncs: Option<Syncs>,
    authz_metrics: Option<AuthzMetrics>,
}

impl EdgeControllerModule {
    /// A module for this cluster; `syncs` is SyncController's record when it runs.
    pub fn new(kube: KubeApiConfig, syncs: Option<Syncs>) -> Self {
        Self { kube, view: View::default(), syncs, authz_metrics: None }
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

fn worker_of(msg: &Message) -> usize {
    let node = CloudResource::node_of(&msg.router.resource).unwrap_or_default();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    node.hash(&mut h);
    (h.finish() % WORKERS as u64) as usize
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
            let client = kube_client(&self.kube).await?;
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
            let mut workers = Vec::with_capacity(WORKERS);
            for _ in 0..WORKERS {
                let (wtx, mut wrx) = mpsc::channel::<Message>(WORKER_INBOX);
                let (up, stop) = (up.clone(), stop.clone());
                ctx.spawn(async move {
                    loop {
                        let msg = tokio::select! {
                            _ = stop.cancelled() => return,
                            m = wrx.recv() => match m { Some(m) => m, None => return },
                        };
                        up.handle(msg).await;
                    }
                });
                workers.push(wtx);
            }
            info!("EdgeController started.");
            while let Some(msg) = ctx.recv().await {
                let _ = workers[worker_of(&msg)].send(msg).await;
            }
            Ok(())
        })
    }
}
