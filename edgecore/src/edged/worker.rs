//! One task per pod, as kubelet's pod workers: each owns its pod's start, crash-loop backoff,
//! probes and reported status. The module loop only routes to them, so an image pull that
//! hangs, a long grace period or a slow status request holds up that pod alone.
//!
//! A worker is fed through two single-slot channels: the desired state (latest wins, as
//! kubelet's pending update) and a sync tick with the pod's runtime fingerprint. A start in
//! progress gives way at once to a delete or a termination.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kubeedge_beehive::Bus;
use kubeedge_model::Message;
use kubeedge_model::constants::module;
use kubeedge_model::protocol::{ReplyError, edge, reply};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use super::module::MetaSource;
use super::pods::{Backoffs, PodRuntime};
use super::probes::{ProbeMetrics, Prober};

/// How long a status patch or delete through MetaManager may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one delete request may wait for the cloud's answer.
const DELETE_TIMEOUT: Duration = Duration::from_secs(30);

/// What every worker needs from the module.
#[derive(Clone)]
pub(super) struct Shared {
    pub runtime: PodRuntime,
    pub bus: Bus,
    pub host_ip: String,
    pub restart_backoff: Duration,
    /// Where the pods' probe counts are published (for the kubelet server).
    pub probe_metrics: ProbeMetrics,
    pub stop: CancellationToken,
    pub tracker: TaskTracker,
}

/// What the module wants done with a pod.
#[derive(Clone)]
pub(super) enum Desired {
    /// Run it (started if it has no sandbox; adopted if it has).
    Run(Arc<Pod>),
    /// Stop it within its grace period, report its final status, delete it in the cloud.
    Terminate(Arc<Pod>),
    /// Remove what is left of it within `grace`, reporting nothing (deleted in the cloud
    /// already, or a static pod whose manifest went).
    Kill(Duration),
}

/// The module's end of a worker.
pub(super) struct Handle {
    desired: watch::Sender<Desired>,
    tick: mpsc::Sender<Option<String>>,
    mirror: watch::Sender<Option<String>>,
}

impl Handle {
    /// Replaces the desired state (never waits).
    pub fn update(&self, d: Desired) {
        self.desired.send_replace(d);
    }

    /// Asks for a sync with the pod's runtime fingerprint (`None`: unknown). A worker busy
    /// with the previous one skips this one.
    pub fn tick(&self, fingerprint: Option<String>) {
        let _ = self.tick.try_send(fingerprint);
    }

    /// A static pod's mirror pod in the API (where its status goes), or none.
    pub fn mirror(&self, uid: Option<String>) {
        self.mirror.send_replace(uid);
    }

    /// Whether the worker has ended.
    pub fn is_closed(&self) -> bool {
        self.desired.is_closed()
    }

    /// The latest desired state.
    pub fn desired(&self) -> Desired {
        self.desired.borrow().clone()
    }
}

/// Starts the worker of the pod `uid`, tracked by the module.
/// `mirror` is a static pod's mirror pod UID, when known.
pub(super) fn spawn(shared: &Shared, uid: String, first: Desired, is_static: bool, mirror: Option<String>) -> Handle {
    let (desired, desired_rx) = watch::channel(first);
    let (tick, tick_rx) = mpsc::channel(1);
    let (mirror, mirror_rx) = watch::channel(mirror.clone());
    let pod = match &*desired.borrow() {
        Desired::Run(p) | Desired::Terminate(p) => p.clone(),
        Desired::Kill(_) => Arc::new(Pod::default()),
    };
    let span = info_span!("pod", uid = %uid, name = pod.metadata.name.as_deref().unwrap_or_default());
    let w = Worker {
        shared: shared.clone(),
        uid,
        pod,
        is_static,
        mirror_uid: mirror_rx.borrow().clone(),
        started: false,
        failed_at: None,
        last_status: None,
        readiness: HashMap::new(),
        prober: Prober::new(shared.probe_metrics.clone()),
        backoffs: Backoffs::new(),
        steady: None,
    };
    shared.tracker.spawn(w.run(desired_rx, tick_rx, mirror_rx).instrument(span));
    Handle { desired, tick, mirror }
}

/// How a start ended.
enum Start {
    Started,
    Failed,
    /// Given up for a delete, a termination or shutdown.
    Interrupted,
}

struct Worker {
    shared: Shared,
    uid: String,
    pod: Arc<Pod>,
    is_static: bool,
    mirror_uid: Option<String>,
    started: bool,
    /// When the last start failed: retried after the restart backoff.
    failed_at: Option<Instant>,
    /// A hash of the last status the cloud accepted (the status itself is not kept: a few KB
    /// a pod).
    last_status: Option<u64>,
    readiness: HashMap<String, bool>,
    prober: Prober,
    backoffs: Backoffs,
    /// The runtime fingerprint at the last sync that found nothing to do and reported a
    /// current status: unchanged, the pod needs no sync.
    steady: Option<String>,
}

impl Worker {
    async fn run(
        mut self,
        mut desired: watch::Receiver<Desired>,
        mut ticks: mpsc::Receiver<Option<String>>,
        mut mirror: watch::Receiver<Option<String>>,
    ) {
        // Boxed: the start, sync and termination futures are large and live only while they
        // run, not for the whole life of every pod's task.
        if !Box::pin(self.on_desired(&mut desired)).await {
            return;
        }
        let stop = self.shared.stop.clone();
        // The module drops its handle when it hands over a termination: the mirror channel
        // closing then means nothing.
        let mut mirror_open = true;
        loop {
            // In this order: a termination wins over a sync tick already queued.
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                changed = desired.changed() => {
                    if changed.is_err() || !Box::pin(self.on_desired(&mut desired)).await {
                        return;
                    }
                }
                changed = mirror.changed(), if mirror_open => {
                    if changed.is_err() {
                        mirror_open = false;
                        continue;
                    }
                    self.mirror_uid = mirror.borrow_and_update().clone();
                    self.last_status = None;
                    self.steady = None;
                }
                Some(fingerprint) = ticks.recv() => {
                    if !Box::pin(self.sync(fingerprint, &desired)).await {
                        // Interrupted by a new desired state: the next turn takes it.
                        continue;
                    }
                }
            }
        }
    }

    /// Acts on the latest desired state; false when the worker is done.
    async fn on_desired(&mut self, desired: &mut watch::Receiver<Desired>) -> bool {
        loop {
            let d = desired.borrow_and_update().clone();
            match d {
                Desired::Terminate(pod) => {
                    terminate(&self.shared, &pod).await;
                    return false;
                }
                Desired::Kill(grace) => {
                    if let Err(e) = self.shared.runtime.kill(&self.uid, grace).await {
                        warn!(error = %e, "Removing a deleted pod failed.");
                    }
                    return false;
                }
                Desired::Run(pod) => {
                    self.pod = pod;
                    self.last_status = None;
                    self.steady = None;
                    if self.started {
                        let _ = self.report().await;
                        return true;
                    }
                    match self.start(desired).await {
                        Start::Started | Start::Failed => return true,
                        Start::Interrupted if self.shared.stop.is_cancelled() => return false,
                        Start::Interrupted => {}
                    }
                }
            }
        }
    }

    /// Starts the pod unless it already has a sandbox; gives way to a delete or termination.
    async fn start(&mut self, desired: &watch::Receiver<Desired>) -> Start {
        let rt = self.shared.runtime.clone();
        let running = rt.sandboxes_of(&self.uid).await.map(|s| !s.is_empty()).unwrap_or(false);
        if !running {
            let src = MetaSource { bus: self.shared.bus.clone() };
            let pod = self.pod.clone();
            let outcome = tokio::select! {
                r = rt.start(&pod, &src, &self.shared.host_ip) => Some(r),
                () = until_not_run(desired.clone()) => None,
                () = self.shared.stop.cancelled() => None,
            };
            match outcome {
                None => {
                    info!("A pod start was given up for a delete or shutdown.");
                    return Start::Interrupted;
                }
                Some(Ok(s)) => info!(sandbox = %s.sandbox, "Pod started."),
                Some(Err(e)) => {
                    warn!(error = %e, "Starting a pod failed; retrying.");
                    // Whatever was made goes, so the retry starts clean.
                    let _ = rt.kill(&self.uid, Duration::ZERO).await;
                    self.failed_at = Some(Instant::now());
                    let reason = json!({"phase": "Pending", "reason": "RuntimeError", "message": e.to_string()});
                    let _ = request(&self.shared.bus, podpatch(&self.pod, reason)).await;
                    return Start::Failed;
                }
            }
        }
        self.started = true;
        self.failed_at = None;
        let _ = self.report().await;
        Start::Started
    }

    /// One sync: a failed start retried after its backoff; otherwise, unless the runtime shows
    /// nothing changed, containers advanced, probes run and the status reported. False when a
    /// start gave way to a new desired state (the caller acts on it).
    async fn sync(&mut self, fingerprint: Option<String>, desired: &watch::Receiver<Desired>) -> bool {
        // Nothing of the pod in the runtime any more (removed behind our back, or a sandbox
        // that was being killed when this worker adopted it): start it again.
        if self.started
            && fingerprint.as_deref() == Some("")
            && self.shared.runtime.sandboxes_of(&self.uid).await.is_ok_and(|s| s.is_empty())
        {
            info!("The pod's sandbox is gone; starting it again.");
            self.started = false;
            self.failed_at = None;
            return !matches!(self.start(desired).await, Start::Interrupted);
        }
        if !self.started {
            if self.failed_at.is_some_and(|t| t.elapsed() >= self.shared.restart_backoff) {
                return !matches!(self.start(desired).await, Start::Interrupted);
            }
            return true;
        }
        let steady = fingerprint.is_some() && self.steady == fingerprint;
        let mut settled = false;
        if !steady {
            let src = MetaSource { bus: self.shared.bus.clone() };
            let base = self.shared.restart_backoff;
            let rt = self.shared.runtime.clone();
            let pod = self.pod.clone();
            // A restart may pull an image: it gives way to a delete or termination too.
            let outcome = tokio::select! {
                r = rt.sync_containers(&pod, &mut self.backoffs, base, &src, &self.shared.host_ip) => Some(r),
                () = until_not_run(desired.clone()) => None,
                () = self.shared.stop.cancelled() => None,
            };
            match outcome {
                None => return false,
                Some(Ok(s)) => settled = s.started.is_empty() && !s.waiting,
                Some(Err(e)) => warn!(error = %e, "Restarting a container failed."),
            }
        }
        let verdicts_changed = self.probe().await;
        if !steady || verdicts_changed {
            let current = self.report().await;
            self.steady = if settled && current { fingerprint } else { None };
        }
        true
    }

    /// Runs the pod's due probes: a failed liveness probe stops its container (the restart
    /// policy brings it back); readiness is kept for the status. True when a verdict changed.
    async fn probe(&mut self) -> bool {
        let pod = &self.pod;
        let has_probes = pod.spec.as_ref().is_some_and(|s| {
            s.containers
                .iter()
                .any(|c| c.liveness_probe.is_some() || c.readiness_probe.is_some() || c.startup_probe.is_some())
        });
        if !has_probes {
            return false;
        }
        let rt = &self.shared.runtime;
        let ip = rt.pod_ip(pod, &self.shared.host_ip).await.unwrap_or_default();
        let running = rt.running_containers(&self.uid).await.unwrap_or_default();
        let mut ready = HashMap::new();
        for (name, id) in running {
            let v = self.prober.check(&rt.cri, pod, &name, &id, &ip).await;
            ready.insert(name.clone(), v.ready);
            if v.kill {
                info!(container = %name, "Liveness probe failed; restarting the container.");
                let grace = grace_of(pod);
                // Tracked, in the background: the grace period must not hold up this pod's
                // delete.
                let cri = rt.cri.clone();
                self.shared.tracker.spawn(async move {
                    let _ = cri.stop_container(&id, grace).await;
                });
            }
        }
        let changed = self.readiness != ready;
        self.readiness = ready;
        changed
    }

    /// Sends the pod's status if it changed; true when what the cloud has is current.
    async fn report(&mut self) -> bool {
        let rt = &self.shared.runtime;
        let status = match rt.status_with(&self.pod, &self.shared.host_ip, &self.readiness).await {
            Ok(s) => s,
            Err(e) => {
                debug!(error = %e, "Reading a pod's status failed.");
                return false;
            }
        };
        let hash = status_hash(&status);
        if self.last_status == Some(hash) {
            return true;
        }
        // A static pod's status goes to its mirror pod, once there is one.
        let patch = if self.is_static {
            let Some(m) = &self.mirror_uid else { return false };
            let mut target = (*self.pod).clone();
            target.metadata.uid = Some(m.clone());
            podpatch(&target, status)
        } else {
            podpatch(&self.pod, status)
        };
        match request(&self.shared.bus, patch).await {
            Ok(_) => {
                self.last_status = Some(hash);
                true
            }
            Err(e) => {
                debug!(error = %e, "Pod status patch not sent; retrying at the next sync.");
                false
            }
        }
    }
}

/// A hash of a pod status (its JSON, keys sorted), to tell whether it changed.
fn status_hash(status: &Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(status).unwrap_or_default().hash(&mut h);
    h.finish()
}

/// Resolves when the desired state is no longer `Run` (a delete or termination), or never
/// when the module is gone. Watches a clone, so the worker's own receiver still sees every
/// update (a new spec that came meanwhile is taken up after).
async fn until_not_run(mut desired: watch::Receiver<Desired>) {
    if desired.wait_for(|d| !matches!(d, Desired::Run(_))).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn request(bus: &Bus, msg: Message) -> Result<Message, kubeedge_beehive::BusError> {
    bus.send_sync(module::METAMANAGER, msg, REQUEST_TIMEOUT).await
}

fn namespace_and_name(pod: &Pod) -> (&str, &str) {
    (pod.metadata.namespace.as_deref().unwrap_or_default(), pod.metadata.name.as_deref().unwrap_or_default())
}

/// A pod status patch as edged sends it: a strategic-merge patch with the UID, as a JSON
/// string, to `{ns}/podpatch/{name}`.
pub(super) fn podpatch(pod: &Pod, status: Value) -> Message {
    let (ns, name) = namespace_and_name(pod);
    edge::pod_patch(ns, name, pod.metadata.uid.as_deref(), status)
}

/// The delete edged sends for `pod`: grace 0 with a UID precondition, as upstream's edge.
pub(super) fn delete_message(pod: &Pod) -> Message {
    let (ns, name) = namespace_and_name(pod);
    edge::pod_delete(ns, name, pod.metadata.uid.as_deref().unwrap_or_default())
}

/// The pod's termination grace period (30 s when unset).
pub(super) fn grace_of(pod: &Pod) -> Duration {
    let grace = pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30);
    Duration::from_secs(u64::try_from(grace.max(0)).unwrap_or(0))
}

/// Stops a terminating pod within its grace period, reports its final status, then asks the
/// cloud to delete it (grace 0 with a UID precondition, as upstream's edge does).
async fn terminate(shared: &Shared, pod: &Pod) {
    info!(grace = ?grace_of(pod), "Stopping a pod being deleted.");
    let status = match shared.runtime.stop_pod(pod, &shared.host_ip, grace_of(pod)).await {
        Ok(status) => status,
        Err(e) => {
            warn!(error = %e, "Stopping a pod failed.");
            return;
        }
    };
    // The containers' final states, taken after they stopped and before they were removed.
    if let Some(status) = status {
        let _ = request(&shared.bus, podpatch(pod, status)).await;
    }
    delete_until_done(&shared.bus, pod, &shared.stop).await;
}

/// Asks the cloud to delete `pod` until it says done (deleted, already gone, or replaced by
/// another pod of that name): offline or on a server error the request is repeated, 2 s
/// doubling to 30 s apart, until `stop`.
async fn delete_until_done(bus: &Bus, pod: &Pod, stop: &CancellationToken) {
    let mut wait = Duration::from_secs(2);
    let mut first = true;
    loop {
        let mut failed = |why: &str| {
            if std::mem::take(&mut first) {
                info!(why, "Deleting the pod in the cloud failed; it will be retried.");
            } else {
                debug!(why, "Deleting the pod in the cloud failed again; retrying.");
            }
        };
        match bus.send_sync(module::METAMANAGER, delete_message(pod), DELETE_TIMEOUT).await {
            Ok(answer) => match reply::object_of(&answer) {
                // Deleted (`"OK"`), or a Status without a code.
                Ok(_) | Err(ReplyError::Status { code: 0, .. }) => return,
                // Gone already, or the UID precondition failed: another pod now.
                Err(ReplyError::Status { code: 404 | 409, .. }) => return,
                Err(ReplyError::Status { code, reason }) if (400..500).contains(&code) && code != 429 => {
                    warn!(code, reason, "The cloud refused to delete the pod.");
                    return;
                }
                Err(ReplyError::Status { code, .. }) => failed(&format!("code {code}")),
                // MetaManager could not ask the cloud (offline).
                Err(ReplyError::Failed(why)) => failed(&why),
            },
            Err(e) => failed(&e.to_string()),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}
