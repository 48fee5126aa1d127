//! The Edged module (`edged`): runs the pods MetaManager forwards through CRI and reports
//! their status, as upstream's edged does over the bus:
//!
//! - `insert`/`update` of a pod: started if it has no sandbox yet; an `update` carrying a
//!   deletionTimestamp stops it within its grace period, reports it terminated and asks the
//!   cloud to delete it (`delete` with grace 0 and a UID precondition, as upstream's edge);
//! - `delete` of a pod: whatever is left of it is removed from the runtime;
//! - each pod has its own worker task (`worker.rs`, as kubelet's pod workers) owning its
//!   start, backoff, probes and reported status; this module's loop only routes to them, so a
//!   hung image pull or a long grace period holds up that pod alone;
//! - every `sync` interval (1 s), one cheap look at the runtime (ListPodSandbox and
//!   ListContainers) gives each worker its pod's fingerprint; a pod whose state changed is
//!   advanced (init containers in order, exited containers restarted as `restartPolicy` says
//!   with kubelet's crash-loop backoff), its probes run, and its status is read from CRI and
//!   sent as a `podpatch` (a strategic-merge patch, as a JSON string) when it changed;
//! - the node agent registers the node and keeps its lease fresh;
//! - at start, the pods in the local database are taken up: running ones are adopted, not
//!   recreated (also with the cloud away), and sandboxes of pods the node no longer has go;
//! - static pods from the manifests folder run, shown in the API as mirror pods;
//! - dead containers are collected every minute; the kubelet-style server serves logs, exec,
//!   attach, port-forward, stats and the probe workers' counts.
//!
//! Volumes and env come from configmaps, secrets and tokens through MetaManager (its database
//! first, then the cloud).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kubeedge_beehive::{BoxFuture, Bus, Module, ModuleContext, ModuleError};
use kubeedge_model::constants::{group, module, resource_type};
use kubeedge_model::protocol::edge;
use kubeedge_model::{Content, Message, Operation, ResourcePath};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::NodeAgent;
use super::pods::{GcPolicy, PodRuntime};
use super::static_pods;
use super::volumes::ObjectSource;
use super::worker::{self, Desired, Shared};

/// Configmaps, secrets and tokens through MetaManager: its database first, then the cloud.
pub struct MetaSource {
    /// The bus.
    pub bus: Bus,
}

impl MetaSource {
    async fn query(&self, resource: String, content: Content) -> Option<Value> {
        let reply =
            self.bus.send_sync(module::METAMANAGER, edge::query(resource, content), REQUEST_TIMEOUT).await.ok()?;
        if reply.operation() == Operation::Error {
            return None;
        }
        let v: Value = reply.content.decode().ok()?;
        match v {
            // Local answers are a list of stored JSON strings.
            Value::Array(items) => items.first().and_then(|i| i.as_str()).and_then(|t| serde_json::from_str(t).ok()),
            Value::Object(ref m) if m.contains_key("ErrStatus") => None,
            other => Some(other),
        }
    }
}

impl ObjectSource for MetaSource {
    fn object<'a>(
        &'a self,
        ty: &'a str,
        namespace: &'a str,
        name: &'a str,
    ) -> futures::future::BoxFuture<'a, Option<Value>> {
        Box::pin(self.query(format!("{namespace}/{ty}/{name}"), Content::null()))
    }

    fn token<'a>(
        &'a self,
        namespace: &'a str,
        sa: &'a str,
        request: Value,
    ) -> futures::future::BoxFuture<'a, Option<String>> {
        Box::pin(async move {
            let content = Content::json(&request).ok()?;
            let v = self.query(format!("{namespace}/{}/{sa}", resource_type::SERVICE_ACCOUNT_TOKEN), content).await?;
            v.pointer("/status/token").and_then(Value::as_str).map(str::to_owned)
        })
    }
}

/// How long a status patch or delete through MetaManager may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the module's runtime comes from.
enum RuntimeSource {
    /// Connected already.
    Ready(Box<PodRuntime>),
    /// Connected at start, waiting for the runtime's socket to answer.
    Connect {
        /// The runtime's unix socket.
        socket: PathBuf,
        /// kubelet's `/var/log/pods`.
        log_root: PathBuf,
        /// `{rootDirectory}/pods`.
        pods_root: PathBuf,
    },
}

/// Edged as a bus module.
pub struct EdgedModule {
    runtime: RuntimeSource,
    agent: Option<NodeAgent>,
    host_ip: String,
    sync_every: Duration,
    restart_backoff: Duration,
    gc: GcPolicy,
    gc_every: Duration,
    server: Option<std::net::SocketAddr>,
    /// The kubelet-style server's listener, bound by `prepare`; a restart binds again.
    server_listener: Option<tokio::net::TcpListener>,
    static_pods: Option<(PathBuf, Duration, String)>,
    node: Option<(super::node::NodeSpec, String, super::Timings)>,
    /// What EdgeHub's session agreed on (the node agent's lease renewal reads it).
    link: crate::edgehub::LinkFeatures,
}

impl EdgedModule {
    /// A module driving `runtime`; `agent` registers the node (its bus is replaced by the
    /// module's own at start).
    pub fn new(runtime: PodRuntime, agent: Option<NodeAgent>, host_ip: String, sync_every: Duration) -> Self {
        Self::with_source(RuntimeSource::Ready(Box::new(runtime)), agent, host_ip, sync_every)
    }

    /// A module that connects to the runtime at `socket` when it starts (retrying until the
    /// runtime answers, as kubelet waits for it), with pod logs under `log_root` and pod
    /// directories under `pods_root`.
    pub fn connecting(
        socket: PathBuf,
        log_root: PathBuf,
        pods_root: PathBuf,
        agent: Option<NodeAgent>,
        host_ip: String,
        sync_every: Duration,
    ) -> Self {
        Self::with_source(RuntimeSource::Connect { socket, log_root, pods_root }, agent, host_ip, sync_every)
    }

    fn with_source(runtime: RuntimeSource, agent: Option<NodeAgent>, host_ip: String, sync_every: Duration) -> Self {
        Self {
            runtime,
            agent,
            host_ip,
            sync_every,
            restart_backoff: RESTART_BACKOFF,
            gc: GcPolicy::default(),
            gc_every: GC_EVERY,
            server: None,
            server_listener: None,
            static_pods: None,
            node: None,
            link: crate::edgehub::LinkFeatures::default(),
        }
    }

    /// Reads what EdgeHub's session agreed on (`EdgeHubModule::link_features`): the node's
    /// lease is then renewed compactly while a cloud of ours agreed to it.
    pub fn with_link(mut self, link: crate::edgehub::LinkFeatures) -> Self {
        self.link = link;
        self
    }

    /// The first crash-loop backoff (kubelet's 10 s; tests use less).
    pub fn with_restart_backoff(mut self, base: Duration) -> Self {
        self.restart_backoff = base;
        self
    }

    /// Dead-container garbage collection by `policy`, every `every` (kubelet: every minute).
    pub fn with_gc(mut self, policy: GcPolicy, every: Duration) -> Self {
        self.gc = policy;
        self.gc_every = every;
        self
    }

    /// Registers node `spec` (its lease in `namespace`) and keeps it fresh at `timings`.
    pub fn with_node(mut self, spec: super::node::NodeSpec, namespace: String, timings: super::Timings) -> Self {
        self.node = Some((spec, namespace, timings));
        self
    }

    /// Serves container logs, exec, attach, port-forward and metrics (the kubelet-style server)
    /// on `addr`.
    pub fn with_server(mut self, addr: std::net::SocketAddr) -> Self {
        self.server = Some(addr);
        self
    }

    /// Runs the static pods of the manifests in `dir` (kubelet's `staticPodPath`), read every
    /// `every` (`fileCheckFrequency`), on node `node`.
    pub fn with_static_pods(mut self, dir: PathBuf, every: Duration, node: String) -> Self {
        self.static_pods = Some((dir, every, node));
        self
    }
}

/// How often dead containers are collected (kubelet's `ContainerGCPeriod`).
pub const GC_EVERY: Duration = Duration::from_secs(60);

/// Connects to the runtime at `socket`, retrying every two seconds until it answers or `stop`.
async fn connect_runtime(socket: &std::path::Path, stop: &CancellationToken) -> Option<kubeedge_cri::Cri> {
    let mut warned = false;
    loop {
        match kubeedge_cri::Cri::connect(socket).await {
            Ok(c) => match c.version().await {
                Ok(v) => {
                    info!(runtime = %v.runtime_name, version = %v.runtime_version, socket = %socket.display(), "Connected to the container runtime.");
                    return Some(c);
                }
                Err(e) if !warned => {
                    warn!(socket = %socket.display(), error = %e, "The container runtime does not answer yet; retrying.");
                    warned = true;
                }
                Err(_) => {}
            },
            Err(e) if !warned => {
                warn!(socket = %socket.display(), error = %e, "Cannot reach the container runtime yet; retrying.");
                warned = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            () = stop.cancelled() => return None,
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// kubelet's first crash-loop backoff.
pub const RESTART_BACKOFF: Duration = Duration::from_secs(10);

/// The module's routing state: a worker per pod, and the static pods' bookkeeping. It owns
/// no pod's runtime state; the workers do.
struct Router {
    shared: Shared,
    workers: HashMap<String, worker::Handle>,
    /// Static pods by UID (hash).
    statics: HashMap<String, StaticEntry>,
    /// Manifests already warned about (path → the error), so each is logged once.
    bad_manifests: HashMap<PathBuf, String>,
}

/// A static pod's bookkeeping.
struct StaticEntry {
    /// Its manifest.
    path: PathBuf,
    /// The pod.
    pod: Pod,
    /// The UID of its mirror pod in the API, once the cloud sent it.
    mirror_uid: Option<String>,
    /// When its mirror pod was last asked for.
    mirror_asked: Option<std::time::Instant>,
}

/// How long the sync tick waits for the runtime's snapshot.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait for a mirror pod before asking for it again.
const MIRROR_RETRY: Duration = Duration::from_secs(30);

fn content_pod(msg: &Message) -> Option<Pod> {
    let v: Value = match msg.content.as_str() {
        Some(s) if msg.content.is_string() => serde_json::from_str(&s).ok()?,
        _ => msg.content.decode().ok()?,
    };
    serde_json::from_value(v).ok()
}

impl Router {
    /// A pod from the cloud (or the local database): to its worker, started when it has none.
    fn apply(&mut self, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else { return };
        if static_pods::is_mirror(&pod) {
            self.mirror_seen(pod, false);
            return;
        }
        let desired = if pod.metadata.deletion_timestamp.is_some() {
            // The worker terminates it and ends; a later message about it starts afresh.
            Desired::Terminate(Arc::new(pod))
        } else {
            Desired::Run(Arc::new(pod))
        };
        let terminating = matches!(desired, Desired::Terminate(_));
        match self.workers.get(&uid).filter(|h| !h.is_closed()) {
            Some(h) => h.update(desired),
            None => {
                let mirror = self.statics.get(&uid).map(|e| e.mirror_uid.clone());
                let h = worker::spawn(&self.shared, uid.clone(), desired, mirror.is_some(), mirror.flatten());
                self.workers.insert(uid.clone(), h);
            }
        }
        if terminating {
            self.workers.remove(&uid);
        }
    }

    /// A pod deleted in the cloud: whatever is left of it goes, within `grace`.
    fn remove(&mut self, uid: &str, grace: Duration) {
        match self.workers.remove(uid).filter(|h| !h.is_closed()) {
            Some(h) => h.update(Desired::Kill(grace)),
            None => {
                worker::spawn(&self.shared, uid.to_owned(), Desired::Kill(grace), false, None);
            }
        }
    }

    /// Takes up the pods stored locally: running ones are adopted as they are, missing ones
    /// are started. Sandboxes of pods that are no longer stored are removed.
    async fn adopt(&mut self) {
        let q = edge::query(format!("default/{}", resource_type::POD), Content::null());
        // Only a real list may decide what is an orphan: an error or an answer that does not
        // decode adopts nothing and removes nothing.
        let stored: Vec<Pod> = match self.shared.bus.send_sync(module::METAMANAGER, q, REQUEST_TIMEOUT).await {
            Ok(r) if r.operation() != Operation::Error => match r.content.decode::<Vec<String>>() {
                Ok(values) => values.iter().filter_map(|v| serde_json::from_str(v).ok()).collect(),
                Err(e) => {
                    warn!(error = %e, "The stored pods did not decode; none adopted, nothing removed.");
                    return;
                }
            },
            Ok(r) => {
                warn!(reason = ?r.content.as_str(), "Reading the stored pods failed; none adopted, nothing removed.");
                return;
            }
            Err(e) => {
                warn!(error = %e, "Reading the stored pods failed; none adopted, nothing removed.");
                return;
            }
        };
        let mut known: std::collections::HashSet<String> =
            stored.iter().filter_map(|p| p.metadata.uid.clone()).collect();
        known.extend(self.statics.keys().cloned());
        let count = stored.len();
        for pod in stored {
            self.apply(pod);
        }
        if let Ok(all) = self.shared.runtime.cri.list_pod_sandbox(None).await {
            for sb in all {
                let uid = sb.labels.get(super::pods::LABEL_POD_UID).cloned().unwrap_or_default();
                if !uid.is_empty() && !known.contains(&uid) {
                    info!(uid, "Removing the sandbox of a pod this node no longer has.");
                    self.remove(&uid, Duration::ZERO);
                }
            }
        }
        info!(pods = count, "Pods taken up from the local database.");
    }

    /// One look at the runtime, then a sync tick to every worker with its pod's fingerprint.
    async fn tick(&mut self) {
        // A worker ends only when told to (its handle is gone then) or at shutdown: one that
        // ended otherwise panicked. Its pod gets a new worker.
        let dead: Vec<String> = self.workers.iter().filter(|(_, h)| h.is_closed()).map(|(u, _)| u.clone()).collect();
        for uid in dead {
            if let Some(h) = self.workers.remove(&uid)
                && let Desired::Run(pod) = h.desired()
            {
                warn!(uid, "A pod's worker ended unexpectedly; starting a new one.");
                self.apply((*pod).clone());
            }
        }
        // Bounded: a wedged runtime must not stop the routing of messages.
        let snapshot =
            tokio::time::timeout(SNAPSHOT_TIMEOUT, self.shared.runtime.snapshot()).await.ok().and_then(Result::ok);
        for (uid, h) in &self.workers {
            h.tick(snapshot.as_ref().map(|s| s.get(uid).cloned().unwrap_or_default()));
        }
    }

    /// A mirror pod from the cloud: remembered for its static pod's status; one being
    /// deleted (or `deleted`) is let go and asked for again; one whose static pod is gone is
    /// deleted.
    fn mirror_seen(&mut self, mirror: Pod, deleted: bool) {
        let Some(uid) = mirror.metadata.uid.clone() else { return };
        let hash = static_pods::mirrored_hash(&mirror).unwrap_or_default().to_owned();
        let terminating = mirror.metadata.deletion_timestamp.is_some();
        let changed = match self.statics.get_mut(&hash) {
            Some(e) if deleted || terminating => {
                if e.mirror_uid.as_deref() == Some(uid.as_str()) {
                    e.mirror_uid = None;
                    e.mirror_asked = None;
                }
                if terminating {
                    self.delete_in_cloud(&mirror);
                }
                true
            }
            Some(e) if e.mirror_uid.as_deref() != Some(uid.as_str()) => {
                debug!(pod = ?mirror.metadata.name, "Mirror pod seen.");
                e.mirror_uid = Some(uid);
                true
            }
            Some(_) => false,
            None if !deleted => {
                info!(pod = ?mirror.metadata.name, "Deleting a mirror pod whose static pod is gone.");
                self.delete_in_cloud(&mirror);
                false
            }
            None => false,
        };
        if changed && let (Some(e), Some(h)) = (self.statics.get(&hash), self.workers.get(&hash)) {
            h.mirror(e.mirror_uid.clone());
        }
    }

    /// Asks the cloud to delete `pod` (grace 0, UID precondition), without waiting.
    fn delete_in_cloud(&self, pod: &Pod) {
        let bus = self.shared.bus.clone();
        let msg = worker::delete_message(pod);
        self.shared.tracker.spawn(async move {
            let _ = bus.send(module::METAMANAGER, msg).await;
        });
    }

    /// Reads the manifests folder: new static pods start, removed or changed ones stop (and
    /// their mirror pods go), and mirror pods still missing are asked for.
    async fn sync_static(&mut self, dir: &std::path::Path, node: &str) {
        let (d, n) = (dir.to_path_buf(), node.to_owned());
        let Ok(manifests) = tokio::task::spawn_blocking(move || static_pods::read_dir(&d, &n)).await else { return };
        let mut current = std::collections::HashSet::new();
        let mut new_pods = Vec::new();
        for (path, pod) in manifests {
            match pod {
                Ok(pod) => {
                    self.bad_manifests.remove(&path);
                    let uid = pod.metadata.uid.clone().unwrap_or_default();
                    current.insert(uid.clone());
                    if let std::collections::hash_map::Entry::Vacant(slot) = self.statics.entry(uid) {
                        info!(pod = ?pod.metadata.name, manifest = %path.display(), "Static pod found.");
                        slot.insert(StaticEntry { path, pod: pod.clone(), mirror_uid: None, mirror_asked: None });
                        new_pods.push(pod);
                    }
                }
                Err(e) => {
                    let e = e.to_string();
                    if self.bad_manifests.get(&path) != Some(&e) {
                        warn!(manifest = %path.display(), error = %e, "Skipping a static pod manifest.");
                        self.bad_manifests.insert(path, e);
                    }
                }
            }
        }
        let gone: Vec<String> = self.statics.keys().filter(|u| !current.contains(*u)).cloned().collect();
        for uid in gone {
            let Some(entry) = self.statics.remove(&uid) else { continue };
            info!(manifest = %entry.path.display(), "Static pod removed; stopping it.");
            if let Some(m) = entry.mirror_uid {
                let mut mirror = entry.pod.clone();
                mirror.metadata.uid = Some(m);
                self.delete_in_cloud(&mirror);
            }
            self.remove(&uid, worker::grace_of(&entry.pod));
        }
        for pod in new_pods {
            self.apply(pod);
        }
        for e in self.statics.values_mut() {
            if e.mirror_uid.is_none() && e.mirror_asked.is_none_or(|t| t.elapsed() >= MIRROR_RETRY) {
                let mirror = static_pods::mirror_of(&e.pod);
                let (ns, name) = (
                    e.pod.metadata.namespace.clone().unwrap_or_default(),
                    e.pod.metadata.name.clone().unwrap_or_default(),
                );
                let msg = edge::pod_insert(&ns, &name, Content::json(&mirror).unwrap_or(Content::null()));
                let bus = self.shared.bus.clone();
                self.shared.tracker.spawn(async move {
                    let _ = bus.send(module::METAMANAGER, msg).await;
                });
                e.mirror_asked = Some(std::time::Instant::now());
            }
        }
    }

    /// A message for the module: pod inserts, updates and deletes go to their workers.
    fn route(&mut self, msg: &Message) {
        let is_pod = ResourcePath::parse(&msg.router.resource).is_ok_and(|p| p.resource_type == resource_type::POD);
        if !is_pod {
            return;
        }
        match (msg.operation(), content_pod(msg)) {
            (Operation::Insert | Operation::Update, Some(pod)) => self.apply(pod),
            (Operation::Delete, Some(pod)) if static_pods::is_mirror(&pod) => self.mirror_seen(pod, true),
            (Operation::Delete, Some(pod)) => {
                if let Some(uid) = pod.metadata.uid
                    && !self.statics.contains_key(&uid)
                {
                    self.remove(&uid, Duration::ZERO);
                }
            }
            (op, None) => {
                warn!(%op, resource = %msg.router.resource, "Dropped a pod message whose content is not a Pod.");
            }
            _ => {}
        }
    }
}

/// The kubelet-style server's listening socket; the error names the address and the field.
async fn bind_server(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, ModuleError> {
    Ok(tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        format!("cannot listen on {addr} (modules.edged.tailoredKubeletConfig.address/readOnlyPort): {e}")
    })?)
}

/// Collects dead containers every `every`, until `stop`.
async fn collect_garbage(runtime: PodRuntime, policy: GcPolicy, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => match runtime.collect_garbage(&policy).await {
                Ok(0) => {}
                Ok(n) => info!(removed = n, "Dead containers collected."),
                Err(e) => warn!(error = %e, "Container garbage collection failed."),
            },
        }
    }
}

impl Module for EdgedModule {
    fn name(&self) -> &'static str {
        module::EDGED
    }

    fn group(&self) -> &'static str {
        group::EDGED
    }

    fn prepare(&mut self) -> BoxFuture<'_, Result<(), ModuleError>> {
        Box::pin(async move {
            if let Some(addr) = self.server {
                self.server_listener = Some(bind_server(addr).await?);
            }
            Ok(())
        })
    }

    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(async move {
            let stop = ctx.shutdown().child_token();
            let _guard = stop.clone().drop_guard();
            let runtime = match &self.runtime {
                RuntimeSource::Ready(r) => (**r).clone(),
                RuntimeSource::Connect { socket, log_root, pods_root } => {
                    let Some(cri) = connect_runtime(socket, &stop).await else { return Ok(()) };
                    let r = PodRuntime { cri, log_root: log_root.clone(), pods_root: pods_root.clone() };
                    self.runtime = RuntimeSource::Ready(Box::new(r.clone()));
                    r
                }
            };
            // One registry per run: the server reads it, each pod's worker registers its counts.
            let probe_metrics = super::probes::ProbeMetrics::default();
            if let Some(addr) = self.server {
                let listener = match self.server_listener.take() {
                    Some(l) => l,
                    None => bind_server(addr).await?,
                };
                info!(address = %listener.local_addr()?, "Serving container logs, exec, attach and port-forward.");
                let node = (self.node.as_ref().map(|(spec, ..)| &spec.name))
                    .or(self.agent.as_ref().map(|a| &a.spec.name))
                    .cloned()
                    .unwrap_or_default();
                ctx.spawn(super::server::run(listener, runtime.cri.clone(), node, probe_metrics.clone(), stop.clone()));
            }
            if let Some((spec, namespace, timings)) = self.node.take() {
                let link = self.link.clone();
                self.agent = Some(NodeAgent { bus: ctx.bus.clone(), spec, namespace, timings, link });
            }
            if let Some(mut agent) = self.agent.take() {
                agent.bus = ctx.bus.clone();
                if let Ok(v) = runtime.cri.version().await {
                    agent.spec.runtime_version = format!("{}://{}", v.runtime_name, v.runtime_version);
                }
                ctx.spawn(agent.run(stop.clone()));
            }
            let tracker = TaskTracker::new();
            let shared = Shared {
                runtime: runtime.clone(),
                bus: ctx.bus.clone(),
                host_ip: self.host_ip.clone(),
                restart_backoff: self.restart_backoff,
                probe_metrics,
                stop: stop.clone(),
                tracker: tracker.clone(),
            };
            let mut router =
                Router { shared, workers: HashMap::new(), statics: HashMap::new(), bad_manifests: HashMap::new() };
            tracker.spawn(collect_garbage(runtime, self.gc.clone(), self.gc_every, stop.clone()));
            let static_dir = self.static_pods.clone();
            if let Some((dir, _, node)) = &static_dir {
                router.sync_static(dir, node).await;
            }
            // After a restart (also offline): the pods MetaManager has are adopted — their
            // sandboxes are still running in the runtime, so nothing is recreated.
            router.adopt().await;
            let mut tick = tokio::time::interval(self.sync_every);
            let file_every = static_dir.as_ref().map_or(Duration::from_secs(3600), |(_, every, _)| *every);
            let mut file_tick = tokio::time::interval(file_every.max(Duration::from_millis(100)));
            file_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let result = loop {
                tokio::select! {
                    () = stop.cancelled() => break Ok(()),
                    _ = file_tick.tick(), if static_dir.is_some() => {
                        if let Some((dir, _, node)) = &static_dir {
                            // Nor does a slow read of the manifests (the blocking pool may be
                            // busy).
                            tokio::select! {
                                () = stop.cancelled() => break Ok(()),
                                () = router.sync_static(dir, node) => {}
                            }
                        }
                    }
                    // A slow runtime (the snapshot may take its whole timeout) does not hold
                    // up a shutdown.
                    _ = tick.tick() => tokio::select! {
                        () = stop.cancelled() => break Ok(()),
                        () = router.tick() => {}
                    },
                    msg = ctx.recv() => match msg {
                        Some(msg) => router.route(&msg),
                        None => break Ok(()),
                    },
                }
            };
            // Workers and their helpers end with the module's token; what does not watch it (a
            // termination inside its grace period, a kill) is given 5 s, then left.
            stop.cancel();
            tracker.close();
            if tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await.is_err() {
                warn!(tasks = tracker.len(), "Pod tasks still running at shutdown were left.");
            }
            result
        })
    }
}
