//! Points each node's "kubelet" at this cloudcore: when a node's tunnel session starts, its
//! `status.daemonEndpoints.kubeletEndpoint.Port` becomes the negotiated tunnel port, as
//! upstream's `updateNodeKubeletEndpoint` does. The API server then dials
//! `nodeIP:tunnelPort`, which the iptables manager sends to this stream server.
//!
//! A node whose object does not exist yet (its tunnel came up before it registered) is tried
//! again every 2 s for 2 minutes (upstream: 20 s apart).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

const RETRY_EVERY: Duration = Duration::from_secs(2);
const GIVE_UP_AFTER: Duration = Duration::from_secs(120);
/// Patches in flight at once (a whole fleet reconnecting must not flood the API server).
const CONCURRENCY: usize = 16;

/// Asks for a node's kubelet endpoint to be set.
#[derive(Clone)]
pub struct Endpoints(mpsc::Sender<String>);

impl Endpoints {
    /// The task owning the updates, setting `port` until `stop`.
    pub fn start(client: kube::Client, port: u16, stop: CancellationToken) -> (Self, impl Future<Output = ()> + Send) {
        let (tx, rx) = mpsc::channel(1024);
        (Self(tx), run(client, port, rx, stop))
    }

    /// Sets `node`'s endpoint (in the background).
    pub async fn point(&self, node: String) {
        let _ = self.0.send(node).await;
    }
}

async fn run(client: kube::Client, port: u16, mut rx: mpsc::Receiver<String>, stop: CancellationToken) {
    let nodes: Api<Node> = Api::all(client);
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    let mut busy = HashSet::<String>::new();
    let mut work = JoinSet::<String>::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            Some(done) = work.join_next(), if !work.is_empty() => {
                if let Ok(node) = done {
                    busy.remove(&node);
                }
            }
            next = rx.recv() => {
                let Some(node) = next else { return };
                // A node already being updated is covered by that update.
                if !busy.insert(node.clone()) {
                    continue;
                }
                let (nodes, slots) = (nodes.clone(), slots.clone());
                work.spawn(async move {
                    point(&nodes, &node, port, &slots).await;
                    node
                });
            }
        }
    }
}

async fn point(nodes: &Api<Node>, node: &str, port: u16, slots: &Semaphore) {
    let patch = json!({"status": {"daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}});
    let started = Instant::now();
    loop {
        let result = {
            let Ok(_slot) = slots.acquire().await else { return };
            nodes.patch_status(node, &PatchParams::default(), &Patch::Merge(&patch)).await
        };
        match result {
            Ok(_) => {
                debug!(node, port, "Node's kubelet endpoint points at this cloudcore's tunnel port.");
                return;
            }
            Err(e) if started.elapsed() >= GIVE_UP_AFTER => {
                warn!(node, port, error = %e, "Could not set the node's kubelet endpoint port: logs and exec will not reach it.");
                return;
            }
            Err(e) => debug!(node, error = %e, "Setting the node's kubelet endpoint port; retrying."),
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }
}
