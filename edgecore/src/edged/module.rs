//! The Edged module (`edged`): runs the pods MetaManager forwards through CRI and reports
//! their status, as upstream's edged does over the bus:
//!
//! - `insert`/`update` of a pod: started if it has no sandbox yet; an `update` carrying a
//!   deletionTimestamp stops it within its grace period, reports it terminated and asks the
//!   cloud to delete it (`delete` with grace 0 and a UID precondition, as upstream's edge);
//! - `delete` of a pod: whatever is left of it is removed from the runtime;
//! - every `sync` interval (1 s), one cheap look at the runtime (ListPodSandbox and
//!   ListContainers) picks the pods whose state changed; those are advanced (init containers in
//!   order, exited containers restarted as `restartPolicy` says with kubelet's crash-loop
//!   backoff), their probes run, and their status is read from CRI and sent as a `podpatch`
//!   (a strategic-merge patch, as a JSON string) when it changed;
//! - the node agent registers the node and keeps its lease fresh;
//! - at start, the pods in the local database are taken up: running ones are adopted, not
//!   recreated (also with the cloud away), and sandboxes of pods the node no longer has go;
//! - static pods from the manifests folder run, shown in the API as mirror pods;
//! - dead containers are collected every minute; the kubelet-style server serves logs and
//!   exec.
//!
//! Volumes and env come from configmaps, secrets and tokens through MetaManager (its database
//! first, then the cloud).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kubeedge_beehive::{BoxFuture, Bus, Module, ModuleContext, ModuleError};
use kubeedge_model::constants::{group, module, operation, resource_type};
use kubeedge_model::{Content, Message, ResourcePath};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::NodeAgent;
use super::pods::{Backoffs, GcPolicy, PodRuntime};
use super::static_pods;
use super::volumes::ObjectSource;

/// Configmaps, secrets and tokens through MetaManager: its database first, then the cloud.
pub struct MetaSource {
    /// The bus.
    pub bus: Bus,
}

impl MetaSource {
    async fn query(&self, resource: String, content: Content) -> Option<Value> {
        let q = Message::build(module::EDGED, group::META, resource, operation::QUERY, content);
        let reply = self.bus.send_sync(module::METAMANAGER, q, REQUEST_TIMEOUT).await.ok()?;
        if reply.router.operation == operation::ERROR {
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
    static_pods: Option<(PathBuf, Duration, String)>,
    node: Option<(super::node::NodeSpec, String, super::Timings)>,
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
            static_pods: None,
            node: None,
        }
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

    /// Serves container logs and exec (the kubelet-style server) on `addr`.
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

struct Tracked {
    pod: Pod,
    last_status: Value,
}

struct State {
    prober: super::probes::Prober,
    readiness: HashMap<String, HashMap<String, bool>>,
    runtime: PodRuntime,
    bus: Bus,
    host_ip: String,
    pods: HashMap<String, Tracked>,
    backoffs: Backoffs,
    restart_backoff: Duration,
    /// Pods whose start failed, and when: retried after the restart backoff.
    failed: HashMap<String, std::time::Instant>,
    /// Static pods by UID (hash).
    statics: HashMap<String, StaticEntry>,
    /// The module's shutdown.
    stop: CancellationToken,
    /// Pods in a steady state: their runtime snapshot at the last sync that found nothing to
    /// do and reported a current status. Unchanged, they need no sync.
    steady: HashMap<String, String>,
    /// Manifests already warned about (path → the error), so each is logged once.
    bad_manifests: HashMap<PathBuf, String>,
}

/// A static pod's bookkeeping.
struct StaticEntry {
    /// Its manifest.
    path: PathBuf,
    /// The UID of its mirror pod in the API, once the cloud sent it.
    mirror_uid: Option<String>,
    /// When its mirror pod was last asked for.
    mirror_asked: Option<std::time::Instant>,
}

/// How long to wait for a mirror pod before asking for it again.
const MIRROR_RETRY: Duration = Duration::from_secs(30);

fn content_pod(msg: &Message) -> Option<Pod> {
    let v: Value = match msg.content.as_str() {
        Some(s) if msg.content.is_string() => serde_json::from_str(&s).ok()?,
        _ => msg.content.decode().ok()?,
    };
    serde_json::from_value(v).ok()
}

impl State {
    async fn request(&self, msg: Message) -> Result<Message, String> {
        self.bus.send_sync(module::METAMANAGER, msg, REQUEST_TIMEOUT).await.map_err(|e| e.to_string())
    }

    /// Sends the pod's status if it changed; true when what the cloud has is current.
    async fn report(&mut self, uid: &str) -> bool {
        let Some(t) = self.pods.get(uid) else { return false };
        let readiness = self.readiness.get(uid).cloned().unwrap_or_default();
        let status = match self.runtime.status_with(&t.pod, &self.host_ip, &readiness).await {
            Ok(s) => s,
            Err(e) => {
                debug!(uid, error = %e, "Reading a pod's status failed.");
                return false;
            }
        };
        if status == t.last_status {
            return true;
        }
        // A static pod's status goes to its mirror pod, once there is one.
        let target = match self.statics.get(uid) {
            Some(e) => match &e.mirror_uid {
                Some(m) => {
                    let mut p = t.pod.clone();
                    p.metadata.uid = Some(m.clone());
                    p
                }
                None => return false,
            },
            None => t.pod.clone(),
        };
        let msg = podpatch(&target, status.clone());
        match self.request(msg).await {
            Ok(_) => {
                if let Some(t) = self.pods.get_mut(uid) {
                    t.last_status = status;
                }
                true
            }
            Err(e) => {
                debug!(uid, error = %e, "Pod status patch not sent; retrying at the next sync.");
                false
            }
        }
    }

    async fn apply(&mut self, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else { return };
        if static_pods::is_mirror(&pod) {
            self.mirror_seen(pod, false).await;
            return;
        }
        let terminating = pod.metadata.deletion_timestamp.is_some();
        if terminating {
            // In the background: a grace period must not hold up the other pods (nor
            // MetaManager, which forwards to this module).
            self.forget(&uid);
            let (runtime, bus, host_ip) = (self.runtime.clone(), self.bus.clone(), self.host_ip.clone());
            tokio::spawn(terminate(runtime, bus, host_ip, pod, self.stop.clone()));
            return;
        }
        let running = self.runtime.sandboxes_of(&uid).await.map(|s| !s.is_empty()).unwrap_or(false);
        self.pods.insert(uid.clone(), Tracked { pod: pod.clone(), last_status: Value::Null });
        self.steady.remove(&uid);
        if !running {
            let src = MetaSource { bus: self.bus.clone() };
            match self.runtime.start(&pod, &src, &self.host_ip).await {
                Ok(s) => info!(uid, sandbox = %s.sandbox, "Pod started."),
                Err(e) => {
                    warn!(uid, error = %e, "Starting a pod failed; retrying.");
                    // Whatever was made goes, so the retry starts clean.
                    let _ = self.runtime.kill(&uid, Duration::ZERO).await;
                    self.failed.insert(uid.clone(), std::time::Instant::now());
                    let reason = json!({"phase": "Pending", "reason": "RuntimeError", "message": e.to_string()});
                    self.patch_raw(&pod, reason).await;
                    return;
                }
            }
        }
        let _ = self.report(&uid).await;
    }

    async fn patch_raw(&self, pod: &Pod, status: Value) {
        let msg = podpatch(pod, status);
        let _ = self.request(msg).await;
    }

    /// Takes up the pods stored locally: running ones are adopted as they are, missing ones
    /// are started. Sandboxes of pods that are no longer stored are removed.
    async fn adopt(&mut self) {
        let q = Message::build(
            module::EDGED,
            group::META,
            format!("default/{}", resource_type::POD),
            operation::QUERY,
            Content::null(),
        );
        // Only a real list may decide what is an orphan: an error or an answer that does not
        // decode adopts nothing and removes nothing.
        let stored: Vec<Pod> = match self.request(q).await {
            Ok(r) if r.router.operation != operation::ERROR => match r.content.decode::<Vec<String>>() {
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
            self.apply(pod).await;
        }
        if let Ok(all) = self.runtime.cri.list_pod_sandbox(None).await {
            for sb in all {
                let uid = sb.labels.get(super::pods::LABEL_POD_UID).cloned().unwrap_or_default();
                if !uid.is_empty() && !known.contains(&uid) {
                    info!(uid, "Removing the sandbox of a pod this node no longer has.");
                    let _ = self.runtime.kill(&uid, Duration::from_secs(0)).await;
                }
            }
        }
        info!(pods = count, "Pods taken up from the local database.");
    }

    /// Runs the pod's due probes: a failed liveness probe stops its container (the restart
    /// policy brings it back); readiness is kept for the status.
    /// Returns whether a verdict changed.
    async fn probe(&mut self, pod: &Pod) -> bool {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let has_probes = pod.spec.as_ref().is_some_and(|s| {
            s.containers
                .iter()
                .any(|c| c.liveness_probe.is_some() || c.readiness_probe.is_some() || c.startup_probe.is_some())
        });
        if !has_probes {
            return false;
        }
        let ip = self.runtime.pod_ip(pod, &self.host_ip).await.unwrap_or_default();
        let running = self.runtime.running_containers(&uid).await.unwrap_or_default();
        let mut ready = HashMap::new();
        for (name, id) in running {
            let v = self.prober.check(&self.runtime.cri, pod, &name, &id, &ip).await;
            ready.insert(name.clone(), v.ready);
            if v.kill {
                info!(uid, container = %name, "Liveness probe failed; restarting the container.");
                let grace = grace_of(pod);
                // In the background: a grace period must not hold up every other pod.
                let cri = self.runtime.cri.clone();
                tokio::spawn(async move {
                    let _ = cri.stop_container(&id, grace).await;
                });
            }
        }
        let changed = self.readiness.get(&uid) != Some(&ready);
        self.readiness.insert(uid, ready);
        changed
    }

    /// A mirror pod from the cloud: remembered for its static pod's status; one being
    /// deleted (or `deleted`) is let go and asked for again; one whose static pod is gone is
    /// deleted.
    async fn mirror_seen(&mut self, mirror: Pod, deleted: bool) {
        let Some(uid) = mirror.metadata.uid.clone() else { return };
        let hash = static_pods::mirrored_hash(&mirror).unwrap_or_default().to_owned();
        let terminating = mirror.metadata.deletion_timestamp.is_some();
        match self.statics.get_mut(&hash) {
            Some(e) if deleted || terminating => {
                if e.mirror_uid.as_deref() == Some(uid.as_str()) {
                    e.mirror_uid = None;
                    e.mirror_asked = None;
                }
                if terminating {
                    self.delete_in_cloud(&mirror).await;
                }
                if let Some(t) = self.pods.get_mut(&hash) {
                    t.last_status = Value::Null;
                }
            }
            Some(e) if e.mirror_uid.as_deref() != Some(uid.as_str()) => {
                debug!(pod = ?mirror.metadata.name, "Mirror pod seen.");
                e.mirror_uid = Some(uid);
                if let Some(t) = self.pods.get_mut(&hash) {
                    t.last_status = Value::Null;
                }
            }
            Some(_) => {}
            None if !deleted => {
                info!(pod = ?mirror.metadata.name, "Deleting a mirror pod whose static pod is gone.");
                self.delete_in_cloud(&mirror).await;
            }
            None => {}
        }
    }

    /// Asks the cloud to delete `pod` (grace 0, UID precondition), without waiting.
    async fn delete_in_cloud(&self, pod: &Pod) {
        let _ = self.bus.send(module::METAMANAGER, delete_message(pod)).await;
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
                        slot.insert(StaticEntry { path, mirror_uid: None, mirror_asked: None });
                        new_pods.push(pod);
                    }
                }
                Err(e) => {
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
            if let Some(t) = self.pods.remove(&uid) {
                if let Some(m) = entry.mirror_uid {
                    let mut mirror = t.pod.clone();
                    mirror.metadata.uid = Some(m);
                    self.delete_in_cloud(&mirror).await;
                }
                let grace = grace_of(&t.pod);
                let runtime = self.runtime.clone();
                tokio::spawn(async move {
                    let _ = runtime.kill(&uid, grace).await;
                });
            }
        }
        for pod in new_pods {
            self.apply(pod).await;
        }
        for (uid, e) in &mut self.statics {
            if e.mirror_uid.is_none() && e.mirror_asked.is_none_or(|t| t.elapsed() >= MIRROR_RETRY) {
                let Some(t) = self.pods.get(uid) else { continue };
                let mirror = static_pods::mirror_of(&t.pod);
                let (ns, name) = (
                    t.pod.metadata.namespace.clone().unwrap_or_default(),
                    t.pod.metadata.name.clone().unwrap_or_default(),
                );
                let msg = Message::build(
                    module::EDGED,
                    group::META,
                    format!("{ns}/{}/{name}", resource_type::POD),
                    operation::INSERT,
                    Content::json(&mirror).unwrap_or(Content::null()),
                );
                let _ = self.bus.send(module::METAMANAGER, msg).await;
                e.mirror_asked = Some(std::time::Instant::now());
            }
        }
    }

    /// Drops everything kept about pod `uid`.
    fn forget(&mut self, uid: &str) {
        self.failed.remove(uid);
        self.prober.forget(uid);
        self.readiness.remove(uid);
        self.pods.remove(uid);
        self.steady.remove(uid);
        let prefix = format!("{uid}/");
        self.backoffs.retain(|k, _| !k.starts_with(&prefix));
    }

    async fn remove(&mut self, uid: &str) {
        self.forget(uid);
        if let Err(e) = self.runtime.kill(uid, Duration::from_secs(0)).await {
            warn!(uid, error = %e, "Removing a deleted pod failed.");
        }
    }
}

/// A pod status patch as edged sends it: a strategic-merge patch with the UID, as a JSON
/// string, to `{ns}/podpatch/{name}`.
fn podpatch(pod: &Pod, status: Value) -> Message {
    let (ns, name) =
        (pod.metadata.namespace.as_deref().unwrap_or_default(), pod.metadata.name.as_deref().unwrap_or_default());
    let patch = json!({"metadata": {"uid": pod.metadata.uid}, "status": status});
    Message::build(
        module::EDGED,
        group::META,
        format!("{ns}/{}/{name}", resource_type::POD_PATCH),
        operation::PATCH,
        Content::string(&patch.to_string()),
    )
}

/// The delete edged sends for `pod`: grace 0 with a UID precondition, as upstream's edge.
fn delete_message(pod: &Pod) -> Message {
    let (ns, name) =
        (pod.metadata.namespace.as_deref().unwrap_or_default(), pod.metadata.name.as_deref().unwrap_or_default());
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    Message::build(
        module::EDGED,
        group::META,
        format!("{ns}/{}/{name}", resource_type::POD),
        operation::DELETE,
        Content::json(&json!({"gracePeriodSeconds": 0, "preconditions": {"uid": uid}})).unwrap_or(Content::null()),
    )
}

/// The pod's termination grace period (30 s when unset).
fn grace_of(pod: &Pod) -> Duration {
    let grace = pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30);
    Duration::from_secs(u64::try_from(grace.max(0)).unwrap_or(0))
}

/// Stops a terminating pod within its grace period, reports its final status, then asks the
/// cloud to delete it (grace 0 with a UID precondition, as upstream's edge does).
async fn terminate(runtime: PodRuntime, bus: Bus, host_ip: String, pod: Pod, stop: CancellationToken) {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    info!(uid, pod = ?pod.metadata.name, grace = ?grace_of(&pod), "Stopping a pod being deleted.");
    let status = match runtime.stop_pod(&pod, &host_ip, grace_of(&pod)).await {
        Ok(status) => status,
        Err(e) => {
            warn!(uid, error = %e, "Stopping a pod failed.");
            return;
        }
    };
    // The containers' final states, taken after they stopped and before they were removed.
    if let Some(status) = status {
        let msg = podpatch(&pod, status);
        let _ = bus.send_sync(module::METAMANAGER, msg, REQUEST_TIMEOUT).await;
    }
    delete_until_done(&bus, &pod, &stop).await;
}

/// Asks the cloud to delete `pod` until it says done (deleted, already gone, or replaced by
/// another pod of that name): offline or on a server error the request is repeated, 2 s
/// doubling to 30 s apart, until `stop`.
async fn delete_until_done(bus: &Bus, pod: &Pod, stop: &CancellationToken) {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let mut wait = Duration::from_secs(2);
    let mut first = true;
    loop {
        let mut failed = |why: &str| {
            if std::mem::take(&mut first) {
                info!(uid, why, "Deleting the pod in the cloud failed; it will be retried.");
            } else {
                debug!(uid, why, "Deleting the pod in the cloud failed again; retrying.");
            }
        };
        match bus.send_sync(module::METAMANAGER, delete_message(pod), DELETE_TIMEOUT).await {
            Ok(reply) if reply.router.operation != operation::ERROR => {
                let v: Value = reply.content.decode().unwrap_or(Value::Null);
                let code = v.pointer("/ErrStatus/code").and_then(Value::as_i64);
                match code {
                    None => return,
                    // Gone already, or the UID precondition failed: another pod now.
                    Some(404 | 409) => return,
                    Some(c) if (400..500).contains(&c) && c != 429 => {
                        warn!(uid, code = c, reply = %v, "The cloud refused to delete the pod.");
                        return;
                    }
                    Some(c) => failed(&format!("code {c}")),
                }
            }
            Ok(reply) => failed(&reply.content.as_str().unwrap_or_default()),
            Err(e) => failed(&e.to_string()),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}

/// How long one delete request may wait for the cloud's answer.
const DELETE_TIMEOUT: Duration = Duration::from_secs(30);

impl Module for EdgedModule {
    fn name(&self) -> &'static str {
        module::EDGED
    }

    fn group(&self) -> &'static str {
        group::EDGED
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
            if let Some(addr) = self.server {
                match super::server::serve(runtime.cri.clone(), addr, stop.clone()).await {
                    Ok((bound, _task)) => info!(address = %bound, "Serving container logs and exec."),
                    Err(e) => return Err(ModuleError::from(format!("kubelet server: {e}"))),
                }
            }
            if let Some((spec, namespace, timings)) = self.node.take() {
                self.agent = Some(NodeAgent { bus: ctx.bus.clone(), spec, namespace, timings });
            }
            if let Some(mut agent) = self.agent.take() {
                agent.bus = ctx.bus.clone();
                if let Ok(v) = runtime.cri.version().await {
                    agent.spec.runtime_version = format!("{}://{}", v.runtime_name, v.runtime_version);
                }
                tokio::spawn(agent.run(stop.clone()));
            }
            let mut st = State {
                prober: super::probes::Prober::default(),
                readiness: HashMap::new(),
                runtime,
                bus: ctx.bus.clone(),
                host_ip: self.host_ip.clone(),
                pods: HashMap::new(),
                backoffs: Backoffs::new(),
                restart_backoff: self.restart_backoff,
                failed: HashMap::new(),
                statics: HashMap::new(),
                bad_manifests: HashMap::new(),
                stop: stop.clone(),
                steady: HashMap::new(),
            };
            let static_dir = self.static_pods.clone();
            if let Some((dir, _, node)) = &static_dir {
                st.sync_static(dir, node).await;
            }
            // After a restart (also offline): the pods MetaManager has are adopted — their
            // sandboxes are still running in the runtime, so nothing is recreated.
            st.adopt().await;
            let mut tick = tokio::time::interval(self.sync_every);
            let mut gc_tick = tokio::time::interval(self.gc_every);
            gc_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let file_every = static_dir.as_ref().map_or(Duration::from_secs(3600), |(_, every, _)| *every);
            let mut file_tick = tokio::time::interval(file_every.max(Duration::from_millis(100)));
            file_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    _ = gc_tick.tick() => {
                        match st.runtime.collect_garbage(&self.gc).await {
                            Ok(0) => {}
                            Ok(n) => info!(removed = n, "Dead containers collected."),
                            Err(e) => warn!(error = %e, "Container garbage collection failed."),
                        }
                    }
                    _ = file_tick.tick(), if static_dir.is_some() => {
                        if let Some((dir, _, node)) = &static_dir {
                            st.sync_static(dir, node).await;
                        }
                    }
                    _ = tick.tick() => {
                        // Starts that failed are tried again.
                        let due: Vec<Pod> = st
                            .failed
                            .iter()
                            .filter(|(_, at)| at.elapsed() >= st.restart_backoff)
                            .filter_map(|(uid, _)| st.pods.get(uid).map(|t| t.pod.clone()))
                            .collect();
                        for pod in due {
                            if let Some(uid) = &pod.metadata.uid {
                                st.failed.remove(uid);
                            }
                            st.apply(pod).await;
                        }
                        let uids: Vec<String> = st.pods.keys().filter(|u| !st.failed.contains_key(*u)).cloned().collect();
                        // One cheap look at the runtime decides which pods need a full sync.
                        let snapshot = st.runtime.snapshot().await.ok();
                        for uid in uids {
                            let Some(pod) = st.pods.get(&uid).map(|t| t.pod.clone()) else { continue };
                            let now = snapshot.as_ref().map(|s| s.get(&uid).cloned().unwrap_or_default());
                            let steady = now.is_some() && st.steady.get(&uid) == now.as_ref();
                            let mut settled = false;
                            if !steady {
                                let base = st.restart_backoff;
                                let src = MetaSource { bus: st.bus.clone() };
                                let host_ip = st.host_ip.clone();
                                match st.runtime.sync_containers(&pod, &mut st.backoffs, base, &src, &host_ip).await {
                                    Ok(s) => settled = s.started.is_empty() && !s.waiting,
                                    Err(e) => warn!(uid, error = %e, "Restarting a container failed."),
                                }
                            }
                            let verdicts_changed = st.probe(&pod).await;
                            if !steady || verdicts_changed {
                                let current = st.report(&uid).await;
                                match now {
                                    Some(fp) if settled && current => { st.steady.insert(uid, fp); }
                                    _ => { st.steady.remove(&uid); }
                                }
                            }
                        }
                    }
                    msg = ctx.recv() => {
                        let Some(msg) = msg else { return Ok(()) };
                        let is_pod = ResourcePath::parse(&msg.router.resource).is_ok_and(|p| p.resource_type == resource_type::POD);
                        if !is_pod {
                            continue;
                        }
                        match (msg.router.operation.as_str(), content_pod(&msg)) {
                            (operation::INSERT | operation::UPDATE, Some(pod)) => st.apply(pod).await,
                            (operation::DELETE, Some(pod)) if static_pods::is_mirror(&pod) => st.mirror_seen(pod, true).await,
                            (operation::DELETE, Some(pod)) => {
                                if let Some(uid) = pod.metadata.uid {
                                    if st.statics.contains_key(&uid) {
                                        continue;
                                    }
                                    st.remove(&uid).await;
                                }
                            }
                            (op, None) => warn!(op, resource = %msg.router.resource, "Dropped a pod message whose content is not a Pod."),
                            _ => {}
                        }
                    }
                }
            }
        })
    }
}
