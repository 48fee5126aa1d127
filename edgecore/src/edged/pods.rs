//! Pods through CRI, as kubelet drives them: a Kubernetes Pod becomes a sandbox
//! (`RunPodSandbox`: host network with an empty hostname, or the pod network; each pod's logs
//! under `{logRoot}/{ns}_{name}_{uid}/`) and its containers (image pulled when absent,
//! command/args/workingDir/env, PID namespace per container as kubelet sets it); its status is
//! read back from CRI in the Kubernetes shape (phase, conditions, podIP, containerStatuses and
//! initContainerStatuses). Init containers, restart policy with backoff, resources, preStop
//! hooks and dead-container GC are here too; volumes and env in `volumes.rs`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use kubeedge_cri::v1::{self, ContainerState, NamespaceMode};
use kubeedge_cri::{Cri, Error as CriError};
use kubeedge_kube_serve::time;
use serde_json::{Value, json};

use super::volumes::ObjectSource;

/// Labels kubelet puts on sandboxes and containers; how pods are found again in CRI.
pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
/// The pod's namespace label.
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// The pod's UID label.
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
/// The container's name label.
pub const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";

/// Errors of the pod runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pod lacks something required.
    #[error("pod {0}")]
    Invalid(String),
    /// A container's resources do not parse.
    #[error("pod {0}")]
    Resources(super::resources::ResourceError),
    /// A CRI call failed.
    #[error("{step}")]
    Cri {
        /// What was being done.
        step: String,
        /// The runtime's error.
        #[source]
        source: CriError,
    },
    /// A directory could not be made.
    #[error("creating {path}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

fn cri(step: impl Into<String>) -> impl FnOnce(CriError) -> Error {
    let step = step.into();
    move |source| Error::Cri { step, source }
}

/// What identifies a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
}

impl PodKey {
    /// The key of `pod`.
    pub fn of(pod: &Pod) -> Result<Self, Error> {
        let m = &pod.metadata;
        match (m.namespace.clone(), m.name.clone(), m.uid.clone()) {
            (Some(namespace), Some(name), Some(uid)) => Ok(Self { namespace, name, uid }),
            _ => Err(Error::Invalid("needs a namespace, a name and a uid".into())),
        }
    }
}

fn host_network(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false)
}

/// The namespaces kubelet gives a pod (no shareProcessNamespace, hostPID or hostIPC): in the
/// sandbox config and again in each container's.
fn namespaces(host_network: bool) -> v1::NamespaceOption {
    v1::NamespaceOption {
        network: if host_network { NamespaceMode::Node } else { NamespaceMode::Pod } as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

fn pod_labels(key: &PodKey) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_POD_NAME.to_owned(), key.name.clone()),
        (LABEL_POD_NAMESPACE.to_owned(), key.namespace.clone()),
        (LABEL_POD_UID.to_owned(), key.uid.clone()),
    ])
}

/// Drives pods through one runtime.
#[derive(Clone)]
pub struct PodRuntime {
    /// The runtime.
    pub cri: Cri,
    /// Where pod log directories go (kubelet's `/var/log/pods`).
    pub log_root: PathBuf,
    /// Where pod directories (volumes) go: `{rootDirectory}/pods`.
    pub pods_root: PathBuf,
}

/// A started pod: the sandbox and its containers by name.
#[derive(Debug, Clone)]
pub struct Started {
    /// The sandbox id.
    pub sandbox: String,
    /// (container name, container id).
    pub containers: Vec<(String, String)>,
}

/// What one [`PodRuntime::sync_containers`] did.
#[derive(Debug, Clone, Default)]
pub struct Synced {
    /// The containers it started: (name, id).
    pub started: Vec<(String, String)>,
    /// Whether an exited container waits for its crash-loop backoff.
    pub waiting: bool,
}

/// The sandbox config of `pod`, its logs under `log_root`.
pub fn sandbox_config(log_root: &std::path::Path, pod: &Pod) -> Result<v1::PodSandboxConfig, Error> {
    {
        let key = PodKey::of(pod)?;
        let host = host_network(pod);
        Ok(v1::PodSandboxConfig {
            metadata: Some(v1::PodSandboxMetadata {
                name: key.name.clone(),
                uid: key.uid.clone(),
                namespace: key.namespace.clone(),
                attempt: 0,
            }),
            // A host-network sandbox has no UTS namespace of its own.
            hostname: if host { String::new() } else { key.name.clone() },
            log_directory: log_dir(log_root, &key).to_string_lossy().into_owned(),
            labels: pod_labels(&key),
            linux: Some(v1::LinuxPodSandboxConfig {
                security_context: Some(v1::LinuxSandboxSecurityContext {
                    namespace_options: Some(namespaces(host)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
    }
}

/// A pod's log directory: `{log_root}/{ns}_{name}_{uid}` (kubelet's layout).
pub fn log_dir(log_root: &std::path::Path, key: &PodKey) -> PathBuf {
    log_root.join(format!("{}_{}_{}", key.namespace, key.name, key.uid))
}

/// The config of one container of `pod`, for its `attempt`-th run (0 first; each restart adds
/// one, and its log is `{name}/{attempt}.log` as kubelet names it).
pub fn container_config(pod: &Pod, c: &Container, attempt: u32) -> Result<v1::ContainerConfig, Error> {
    {
        let key = PodKey::of(pod)?;
        let image = c
            .image
            .clone()
            .filter(|i| !i.is_empty())
            .ok_or_else(|| Error::Invalid(format!("container {} has no image", c.name)))?;
        let mut labels = pod_labels(&key);
        labels.insert(LABEL_CONTAINER_NAME.to_owned(), c.name.clone());
        let envs = c
            .env
            .iter()
            .flatten()
            .filter_map(|e| {
                e.value.as_ref().map(|v| v1::KeyValue { key: e.name.clone(), value: v.clone().into_bytes() })
            })
            .collect();
        Ok(v1::ContainerConfig {
            metadata: Some(v1::ContainerMetadata { name: c.name.clone(), attempt }),
            image: Some(v1::ImageSpec { image, ..Default::default() }),
            command: c.command.clone().unwrap_or_default(),
            args: c.args.clone().unwrap_or_default(),
            working_dir: c.working_dir.clone().unwrap_or_default(),
            envs,
            log_path: format!("{}/{attempt}.log", c.name),
            labels,
            // As kubelet: what `kubectl attach` can use (the runtime keeps the container's stdin
            // open only when asked here, and attach's TTY must match this one).
            stdin: c.stdin.unwrap_or(false),
            stdin_once: c.stdin_once.unwrap_or(false),
            tty: c.tty.unwrap_or(false),
            linux: Some(v1::LinuxContainerConfig {
                security_context: Some(v1::LinuxContainerSecurityContext {
                    namespace_options: Some(namespaces(host_network(pod))),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
    }
}

impl PodRuntime {
    /// A container's full config: its spec, environment and mounts.
    async fn full_config(
        &self,
        pod: &Pod,
        c: &Container,
        attempt: u32,
        volumes: &std::collections::BTreeMap<String, PathBuf>,
        src: &dyn ObjectSource,
        host_ip: &str,
    ) -> Result<v1::ContainerConfig, Error> {
        let mut cfg = container_config(pod, c, attempt)?;
        cfg.envs = super::volumes::env(pod, c, src, host_ip).await?;
        cfg.mounts = super::volumes::mounts(c, volumes)?;
        let resources =
            super::resources::linux_resources(pod, c, super::resources::memory_capacity()).map_err(Error::Resources)?;
        if let Some(linux) = cfg.linux.as_mut() {
            linux.resources = Some(resources);
        }
        Ok(cfg)
    }

    /// Creates and starts one run (`attempt`) of container `spec` in `sandbox`, its image
    /// pulled first when absent.
    #[allow(clippy::too_many_arguments)]
    async fn run_container(
        &self,
        sandbox: &str,
        sandbox_cfg: &v1::PodSandboxConfig,
        pod: &Pod,
        spec: &Container,
        attempt: u32,
        volumes: &std::collections::BTreeMap<String, PathBuf>,
        src: &dyn ObjectSource,
        host_ip: &str,
    ) -> Result<String, Error> {
        let cfg = self.full_config(pod, spec, attempt, volumes, src, host_ip).await?;
        let image = cfg.image.as_ref().map(|i| i.image.clone()).unwrap_or_default();
        // imagePullPolicy as the API defaults it: Always for `:latest` or no tag, else
        // IfNotPresent.
        let policy = spec.image_pull_policy.clone().unwrap_or_else(|| {
            let tag = image.rsplit('/').next().and_then(|last| last.split_once(':')).map(|(_, t)| t);
            if image.contains('@') || tag.is_some_and(|t| t != "latest") { "IfNotPresent" } else { "Always" }.to_owned()
        });
        let present = self.cri.image_status(&image).await.map_err(cri(format!("ImageStatus {image}")))?.is_some();
        match policy.as_str() {
            "Never" if !present => {
                return Err(Error::Invalid(format!(
                    "container {}: image {image} is not present and imagePullPolicy is Never (ErrImageNeverPull)",
                    spec.name
                )));
            }
            "Never" => {}
            "IfNotPresent" if present => {}
            _ => {
                self.cri
                    .pull_image(&image, None, Some(sandbox_cfg))
                    .await
                    .map_err(cri(format!("PullImage {image} (ErrImagePull)")))?;
            }
        }
        let id = self
            .cri
            .create_container(sandbox, cfg, sandbox_cfg)
            .await
            .map_err(cri(format!("CreateContainer {}", spec.name)))?;
        self.cri.start_container(&id).await.map_err(cri(format!("StartContainer {}", spec.name)))?;
        Ok(id)
    }

    /// Starts `pod`: its volumes, the sandbox, then its first init container, or — without
    /// init containers — every container (images pulled if absent). Configmaps, secrets and
    /// tokens come from `src`. The rest of an init sequence is driven by
    /// [`PodRuntime::sync_containers`].
    pub async fn start(&self, pod: &Pod, src: &dyn ObjectSource, host_ip: &str) -> Result<Started, Error> {
        let key = PodKey::of(pod)?;
        let dir = log_dir(&self.log_root, &key);
        tokio::fs::create_dir_all(&dir).await.map_err(|source| Error::Io { path: dir.clone(), source })?;
        let volumes = super::volumes::prepare(&self.pods_root, pod, src, host_ip).await?;
        let sandbox_cfg = sandbox_config(&self.log_root, pod)?;
        let sandbox = self.cri.run_pod_sandbox(&sandbox_cfg, "").await.map_err(cri("RunPodSandbox"))?;
        let containers = self
            .advance(
                pod,
                &sandbox,
                &sandbox_cfg,
                &HashMap::new(),
                &mut Backoffs::new(),
                Duration::ZERO,
                Some(volumes),
                src,
                host_ip,
            )
            .await?
            .started;
        Ok(Started { sandbox, containers })
    }

    /// The containers of a sandbox by name, each name's runs ordered by attempt.
    async fn containers_by_name(&self, sandbox: &str) -> Result<HashMap<String, Vec<v1::Container>>, Error> {
        let filter = v1::ContainerFilter { pod_sandbox_id: sandbox.to_owned(), ..Default::default() };
        let mut by_name: HashMap<String, Vec<v1::Container>> = HashMap::new();
        for c in self.cri.list_containers(Some(filter)).await.map_err(cri("ListContainers"))? {
            let name = c.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
            by_name.entry(name).or_default().push(c);
        }
        for runs in by_name.values_mut() {
            runs.sort_by_key(|c| c.metadata.as_ref().map(|m| m.attempt).unwrap_or(0));
        }
        Ok(by_name)
    }

    /// Drives the pod's containers one step, as kubelet's sync does:
    ///
    /// - init containers run one at a time, in order; the next starts when the previous
    ///   exited 0; a failed one is run again (after its backoff) unless `restartPolicy` is
    ///   Never, which fails the pod;
    /// - once every init container succeeded, app containers not created yet are started;
    /// - exited app containers the `restartPolicy` restarts (Always; OnFailure after a
    ///   non-zero exit) are run again, each after its crash-loop backoff: `base` doubling per
    ///   restart up to five minutes. One dead run is kept for `lastState` and logs.
    ///
    /// Returns the containers it started and whether one waits for its backoff.
    pub async fn sync_containers(
        &self,
        pod: &Pod,
        backoff: &mut Backoffs,
        base: Duration,
        src: &dyn ObjectSource,
        host_ip: &str,
    ) -> Result<Synced, Error> {
        let key = PodKey::of(pod)?;
        let Some(sb) = self.sandboxes_of(&key.uid).await?.into_iter().max_by_key(|s| s.created_at) else {
            return Ok(Synced::default());
        };
        let sandbox_cfg = sandbox_config(&self.log_root, pod)?;
        let by_name = self.containers_by_name(&sb.id).await?;
        self.advance(pod, &sb.id, &sandbox_cfg, &by_name, backoff, base, None, src, host_ip).await
    }

    /// One step of [`PodRuntime::sync_containers`] on a known sandbox and its containers.
    #[allow(clippy::too_many_arguments)]
    async fn advance(
        &self,
        pod: &Pod,
        sandbox: &str,
        sandbox_cfg: &v1::PodSandboxConfig,
        by_name: &HashMap<String, Vec<v1::Container>>,
        backoff: &mut Backoffs,
        base: Duration,
        mut volumes: Option<std::collections::BTreeMap<String, PathBuf>>,
        src: &dyn ObjectSource,
        host_ip: &str,
    ) -> Result<Synced, Error> {
        let key = PodKey::of(pod)?;
        let mut waiting = false;
        let spec = pod.spec.clone().unwrap_or_default();
        let never = spec.restart_policy.as_deref() == Some("Never");
        // What to run: (container, attempt, old runs to remove first).
        let mut todo: Vec<(&Container, u32, Vec<String>)> = Vec::new();
        let mut initialized = true;
        for c in spec.init_containers.iter().flatten() {
            let runs = by_name.get(c.name.as_str()).map(Vec::as_slice).unwrap_or_default();
            let Some(current) = runs.last() else {
                todo.push((c, 0, Vec::new()));
                initialized = false;
                break;
            };
            let st = self.cri.container_status(&current.id).await.map_err(cri("ContainerStatus"))?;
            let exited = ContainerState::try_from(st.state) == Ok(ContainerState::ContainerExited);
            if exited && st.exit_code == 0 {
                continue;
            }
            initialized = false;
            if exited && !never {
                if due(backoff, &key.uid, c, current, &st, base) {
                    todo.push((c, attempt_of(current) + 1, older_runs(runs)));
                } else {
                    waiting = true;
                }
            }
            break;
        }
        if initialized {
            for c in &spec.containers {
                let runs = by_name.get(c.name.as_str()).map(Vec::as_slice).unwrap_or_default();
                let Some(current) = runs.last() else {
                    todo.push((c, 0, Vec::new()));
                    continue;
                };
                let st = self.cri.container_status(&current.id).await.map_err(cri("ContainerStatus"))?;
                let exited = ContainerState::try_from(st.state) == Ok(ContainerState::ContainerExited);
                if exited && restarts(pod, st.exit_code) {
                    if due(backoff, &key.uid, c, current, &st, base) {
                        todo.push((c, attempt_of(current) + 1, older_runs(runs)));
                    } else {
                        waiting = true;
                    }
                }
            }
        }
        let mut started = Vec::new();
        for (c, attempt, old) in todo {
            for id in old {
                let _ = ok_if_gone(self.cri.remove_container(&id).await);
            }
            let vols = match volumes.take() {
                Some(v) => v,
                None => super::volumes::prepare(&self.pods_root, pod, src, host_ip).await?,
            };
            let run = self.run_container(sandbox, sandbox_cfg, pod, c, attempt, &vols, src, host_ip).await;
            volumes = Some(vols);
            let id = run?;
            if attempt > 0 {
                backoff.insert(format!("{}/{}", key.uid, c.name), std::time::SystemTime::now());
            }
            started.push((c.name.clone(), id));
        }
        Ok(Synced { started, waiting })
    }

    /// What every pod looks like in the runtime now, cheaply (one ListPodSandbox, one
    /// ListContainers): pod UID → its sandboxes' and containers' ids and states. A pod whose
    /// entry did not change since its last full sync needs none.
    pub async fn snapshot(&self) -> Result<HashMap<String, String>, Error> {
        let sandboxes = self.cri.list_pod_sandbox(None).await.map_err(cri("ListPodSandbox"))?;
        let containers = self.cri.list_containers(None).await.map_err(cri("ListContainers"))?;
        let mut parts: HashMap<String, Vec<String>> = HashMap::new();
        let mut uid_of = HashMap::new();
        for sb in &sandboxes {
            let uid = sb.labels.get(LABEL_POD_UID).cloned().unwrap_or_default();
            uid_of.insert(sb.id.clone(), uid.clone());
            parts.entry(uid).or_default().push(format!("s{}:{}", sb.id, sb.state));
        }
        for c in &containers {
            let uid = uid_of.get(&c.pod_sandbox_id).cloned().unwrap_or_default();
            parts.entry(uid).or_default().push(format!("c{}:{}", c.id, c.state));
        }
        Ok(parts
            .into_iter()
            .map(|(uid, mut p)| {
                p.sort();
                (uid, p.join(","))
            })
            .collect())
    }

    /// The sandboxes of pod `uid` (usually one).
    pub async fn sandboxes_of(&self, uid: &str) -> Result<Vec<v1::PodSandbox>, Error> {
        let filter = v1::PodSandboxFilter {
            label_selector: HashMap::from([(LABEL_POD_UID.to_owned(), uid.to_owned())]),
            ..Default::default()
        };
        self.cri.list_pod_sandbox(Some(filter)).await.map_err(cri("ListPodSandbox"))
    }

    /// Stops `pod` as kubelet does on deletion: each running container's `preStop` hook (exec
    /// or httpGet) runs first, all at once, within the grace period; what is left of `grace`
    /// then goes to the containers to stop before everything is removed.
    pub async fn stop_pod(&self, pod: &Pod, host_ip: &str, grace: Duration) -> Result<Option<Value>, Error> {
        let key = PodKey::of(pod)?;
        let started = std::time::Instant::now();
        let running = self.running_containers(&key.uid).await.unwrap_or_default();
        let ip = self.pod_ip(pod, host_ip).await.unwrap_or_default();
        let specs = pod.spec.as_ref().map(|s| s.containers.clone()).unwrap_or_default();
        let hooks = running.iter().filter_map(|(name, id)| {
            let spec = specs.iter().find(|c| &c.name == name)?;
            let hook = spec.lifecycle.as_ref()?.pre_stop.clone()?;
            let (cri, id, ip, spec) = (self.cri.clone(), id.clone(), ip.clone(), spec.clone());
            Some(async move {
                if let Some(e) = &hook.exec {
                    let cmd = e.command.clone().unwrap_or_default();
                    if let Err(err) = cri.exec_sync(&id, cmd, grace.max(Duration::from_secs(1))).await {
                        tracing::debug!(container = %spec.name, error = %err, "preStop hook failed.");
                    }
                } else if let Some(h) = &hook.http_get {
                    super::probes::http_get(h, &spec, &ip, grace.max(Duration::from_secs(1))).await;
                } else if let Some(s) = &hook.sleep {
                    let secs = u64::try_from(s.seconds.max(0)).unwrap_or(0);
                    tokio::time::sleep(Duration::from_secs(secs)).await;
                }
            })
        });
        let hooks: Vec<_> = hooks.collect();
        if !hooks.is_empty() {
            let _ = tokio::time::timeout(grace, futures::future::join_all(hooks)).await;
        }
        // Stop the containers first, so their final states can be reported (as kubelet does:
        // terminated with their exit codes), then remove everything.
        let left = grace.saturating_sub(started.elapsed()).max(Duration::from_secs(2).min(grace));
        // All at once, as kubelet does: the pod's grace is shared, not spent per container.
        let stops = running.iter().map(|(_, id)| self.stop_running(id, left));
        for r in futures::future::join_all(stops).await {
            r?;
        }
        let status = self.status_inner(pod, host_ip, &HashMap::new(), true).await.ok().filter(|s| s != &json!({}));
        self.kill(&key.uid, Duration::from_secs(2).min(grace)).await?;
        Ok(status)
    }

    /// Kills pod `uid`: its containers get `grace` to stop, then everything is removed.
    pub async fn kill(&self, uid: &str, grace: Duration) -> Result<(), Error> {
        for sb in self.sandboxes_of(uid).await? {
            let filter = v1::ContainerFilter { pod_sandbox_id: sb.id.clone(), ..Default::default() };
            for c in self.cri.list_containers(Some(filter)).await.map_err(cri("ListContainers"))? {
                // Only a running container needs stopping (kubelet's rule): asking containerd to
                // stop one that exited can fail with its shim already gone ("ttrpc: closed").
                if ContainerState::try_from(c.state) == Ok(ContainerState::ContainerRunning) {
                    self.stop_running(&c.id, grace).await?;
                }
                ok_if_gone(self.cri.remove_container(&c.id).await).map_err(cri("RemoveContainer"))?;
            }
            ok_if_gone(self.cri.stop_pod_sandbox(&sb.id).await).map_err(cri("StopPodSandbox"))?;
            ok_if_gone(self.cri.remove_pod_sandbox(&sb.id).await).map_err(cri("RemovePodSandbox"))?;
        }
        super::volumes::cleanup(&self.pods_root, uid).await;
        Ok(())
    }

    /// Stops a running container within `grace`. A container that exits while being stopped
    /// may make containerd answer with an error (its shim is gone): that is a stop, not a
    /// failure.
    async fn stop_running(&self, id: &str, grace: Duration) -> Result<(), Error> {
        let mut attempt = 0;
        loop {
            let e = match ok_if_gone(self.cri.stop_container(id, grace).await) {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            attempt += 1;
            // containerd may still call it running for a moment after its shim went away.
            tokio::time::sleep(Duration::from_millis(100) * attempt).await;
            match self.cri.container_status(id).await {
                Ok(st) if ContainerState::try_from(st.state) != Ok(ContainerState::ContainerRunning) => return Ok(()),
                Err(gone) if gone.is_not_found() => return Ok(()),
                _ if attempt >= STOP_ATTEMPTS => return Err(cri("StopContainer")(e)),
                _ => {}
            }
        }
    }

    /// The pod's status in the Kubernetes shape, from what CRI reports now.
    pub async fn status(&self, pod: &Pod, host_ip: &str) -> Result<Value, Error> {
        self.status_with(pod, host_ip, &HashMap::new()).await
    }

    /// The running containers of the pod's current sandbox: (name, id).
    pub async fn running_containers(&self, uid: &str) -> Result<Vec<(String, String)>, Error> {
        let Some(sb) = self.sandboxes_of(uid).await?.into_iter().max_by_key(|s| s.created_at) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for (name, runs) in self.containers_by_name(&sb.id).await? {
            if let Some(c) = runs.last()
                && ContainerState::try_from(c.state) == Ok(ContainerState::ContainerRunning)
            {
                out.push((name, c.id.clone()));
            }
        }
        Ok(out)
    }

    /// The address probes reach the pod at: the host's for a host-network pod, else the
    /// sandbox's IP.
    pub async fn pod_ip(&self, pod: &Pod, host_ip: &str) -> Result<String, Error> {
        if host_network(pod) {
            return Ok(host_ip.to_owned());
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let Some(sb) = self.sandboxes_of(&uid).await?.into_iter().max_by_key(|s| s.created_at) else {
            return Ok(String::new());
        };
        let st = self.cri.pod_sandbox_status(&sb.id).await.map_err(cri("PodSandboxStatus"))?;
        Ok(st.network.map(|n| n.ip).unwrap_or_default())
    }

    /// [`PodRuntime::status`] with the readiness probes' verdicts (container name → ready;
    /// absent means no readiness probe).
    pub async fn status_with(
        &self,
        pod: &Pod,
        host_ip: &str,
        readiness: &HashMap<String, bool>,
    ) -> Result<Value, Error> {
        self.status_inner(pod, host_ip, readiness, false).await
    }

    /// The status; for a pod being deleted (`terminating`) its stopped containers are
    /// terminated rather than restarting, and the phase is left as it was (upstream's edge
    /// sends none then, never a step back to Pending).
    async fn status_inner(
        &self,
        pod: &Pod,
        host_ip: &str,
        readiness: &HashMap<String, bool>,
        terminating: bool,
    ) -> Result<Value, Error> {
        let key = PodKey::of(pod)?;
        let sandboxes = self.sandboxes_of(&key.uid).await?;
        let Some(sb) = sandboxes.iter().max_by_key(|s| s.created_at) else {
            // Nothing runs: a pod being deleted has nothing more to report (never a step back).
            return Ok(if terminating { json!({}) } else { json!({"phase": "Pending"}) });
        };
        let sb_status = self.cri.pod_sandbox_status(&sb.id).await.map_err(cri("PodSandboxStatus"))?;
        let pod_ip = if host_network(pod) {
            host_ip.to_owned()
        } else {
            sb_status.network.as_ref().map(|n| n.ip.clone()).unwrap_or_default()
        };
        let spec = pod.spec.clone().unwrap_or_default();
        let never = spec.restart_policy.as_deref() == Some("Never");
        let by_name = self.containers_by_name(&sb.id).await?;

        // Init containers: done when each exited 0, in order.
        let mut init_statuses = Vec::new();
        let (mut init_done, mut init_failed) = (true, false);
        for c in spec.init_containers.iter().flatten() {
            let runs = by_name.get(c.name.as_str()).map(Vec::as_slice).unwrap_or_default();
            let mut s = self.one_status(c, runs, |code| !never && code != 0, false, "PodInitializing").await?;
            let succeeded = s.0 == Run::Succeeded;
            // A completed init container counts as ready, as kubelet reports it.
            s.1["ready"] = json!(succeeded);
            init_failed |= s.0 == Run::Failed;
            init_done &= succeeded;
            init_statuses.push(s.1);
        }

        let mut statuses = Vec::new();
        let (mut running, mut restarting, mut exited_ok, mut failed, mut ready_count) = (0, 0, 0, 0, 0);
        let waiting = if init_done { "ContainerCreating" } else { "PodInitializing" };
        for c in &spec.containers {
            let runs = by_name.get(c.name.as_str()).map(Vec::as_slice).unwrap_or_default();
            let ready_probe = readiness.get(c.name.as_str()).copied().unwrap_or(true);
            let (run, status) =
                self.one_status(c, runs, |code| !terminating && restarts(pod, code), ready_probe, waiting).await?;
            match run {
                Run::Running => running += 1,
                Run::Restarting => restarting += 1,
                Run::Succeeded => exited_ok += 1,
                Run::Failed => failed += 1,
                Run::Waiting => {}
            }
            if status["ready"] == true {
                ready_count += 1;
            }
            statuses.push(status);
        }
        let total = spec.containers.len();
        let phase = if init_failed && never {
            "Failed"
        } else if !init_done {
            "Pending"
        } else if total > 0 && running + restarting == total {
            "Running"
        } else if total > 0 && exited_ok == total {
            "Succeeded"
        } else if failed > 0 && running == 0 && restarting == 0 {
            "Failed"
        } else if running > 0 {
            "Running"
        } else {
            "Pending"
        };
        let all_ready = init_done && total > 0 && ready_count == total;
        let cond = |t: &str, ok: bool, reason: &str| {
            let mut c = json!({"type": t, "status": if ok { "True" } else { "False" }});
            if !ok && !reason.is_empty() {
                c["reason"] = json!(reason);
            }
            c
        };
        let not_ready = if init_done { "ContainersNotReady" } else { "ContainersNotInitialized" };
        let mut out = json!({
            "phase": phase,
            "conditions": [
                cond("Initialized", init_done, "ContainersNotInitialized"),
                cond("Ready", all_ready, not_ready),
                cond("ContainersReady", all_ready, not_ready),
                cond("PodScheduled", true, ""),
            ],
            "hostIP": host_ip,
            "podIP": pod_ip,
            "podIPs": if pod_ip.is_empty() { json!([]) } else { json!([{"ip": pod_ip}]) },
            "startTime": cri_time(sb.created_at),
            "qosClass": super::resources::qos(pod).as_str(),
            "containerStatuses": statuses,
        });
        if !init_statuses.is_empty() {
            out["initContainerStatuses"] = json!(init_statuses);
        }
        if terminating && let Some(o) = out.as_object_mut() {
            o.remove("phase");
        }
        Ok(out)
    }

    /// One container's status from its runs (oldest first): what it is doing and its
    /// `containerStatuses` entry. `restarts(exit code)` says whether an exited run will be run
    /// again; `waiting` is the reason shown before its first run.
    async fn one_status(
        &self,
        spec: &Container,
        runs: &[v1::Container],
        restarts: impl Fn(i32) -> bool,
        ready_probe: bool,
        waiting: &str,
    ) -> Result<(Run, Value), Error> {
        let name = &spec.name;
        let Some(current) = runs.last() else {
            let s = json!({"name": name, "state": {"waiting": {"reason": waiting}}, "lastState": {}, "ready": false,
                "restartCount": 0, "image": spec.image, "imageID": "", "started": false});
            return Ok((Run::Waiting, s));
        };
        let st = self.cri.container_status(&current.id).await.map_err(cri("ContainerStatus"))?;
        let terminated = |st: &v1::ContainerStatus| {
            let mut t = json!({"exitCode": st.exit_code, "reason": st.reason,
                "startedAt": cri_time(st.started_at), "finishedAt": cri_time(st.finished_at),
                "containerID": format!("containerd://{}", st.id)});
            if !st.message.is_empty() {
                t["message"] = json!(st.message);
            }
            json!({ "terminated": t })
        };
        let (run, state) = match ContainerState::try_from(st.state).unwrap_or(ContainerState::ContainerUnknown) {
            ContainerState::ContainerRunning => {
                (Run::Running, json!({"running": {"startedAt": cri_time(st.started_at)}}))
            }
            // Restarting: a pod in crash loop stays Running, as kubelet reports it.
            ContainerState::ContainerExited if restarts(st.exit_code) => {
                (Run::Restarting, json!({"waiting": {"reason": "CrashLoopBackOff"}}))
            }
            ContainerState::ContainerExited if st.exit_code == 0 => (Run::Succeeded, terminated(&st)),
            ContainerState::ContainerExited => (Run::Failed, terminated(&st)),
            _ => (Run::Waiting, json!({"waiting": {"reason": "ContainerCreating"}})),
        };
        let last_state = match runs.len().checked_sub(2).and_then(|i| runs.get(i)) {
            Some(prev) => match self.cri.container_status(&prev.id).await {
                Ok(p) => terminated(&p),
                Err(_) => json!({}),
            },
            None if state.get("waiting").is_some() && st.finished_at > 0 => terminated(&st),
            None => json!({}),
        };
        let ready = run == Run::Running && ready_probe;
        let status = json!({"name": name, "state": state, "lastState": last_state, "ready": ready,
            "restartCount": attempt_of(current), "image": spec.image, "imageID": st.image_ref,
            "containerID": format!("containerd://{}", st.id), "started": run == Run::Running});
        Ok((run, status))
    }
}

/// What a container is doing, for the pod's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    /// Not run yet, or being created.
    Waiting,
    /// Running.
    Running,
    /// Exited and will be run again.
    Restarting,
    /// Exited 0 for good.
    Succeeded,
    /// Exited non-zero for good.
    Failed,
}

/// Which dead containers garbage collection keeps (kubelet's `minimumGCAge`,
/// `maxPerPodContainerCount`, `maxContainerCount`).
#[derive(Debug, Clone)]
pub struct GcPolicy {
    /// A dead container younger than this is kept.
    pub min_age: Duration,
    /// Dead runs kept per container of a pod (besides the current run); negative: no limit.
    pub max_per_container: i32,
    /// Dead containers kept on the node in total; negative: no limit.
    pub max_total: i32,
}

impl Default for GcPolicy {
    fn default() -> Self {
        Self { min_age: Duration::ZERO, max_per_container: 1, max_total: -1 }
    }
}

impl PodRuntime {
    /// Removes dead containers as kubelet's container GC does: per container of a pod, the
    /// current run always stays and at most `max_per_container` earlier dead runs older than
    /// `min_age` are kept; then, past `max_total` dead containers on the node, the oldest go.
    /// Dead sandboxes that are not their pod's newest go too. Returns how many were removed.
    pub async fn collect_garbage(&self, policy: &GcPolicy) -> Result<usize, Error> {
        let now = i64::try_from(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos(),
        )
        .unwrap_or(i64::MAX);
        let min_age = i64::try_from(policy.min_age.as_nanos()).unwrap_or(i64::MAX);
        let all = self.cri.list_containers(None).await.map_err(cri("ListContainers"))?;
        let mut groups: HashMap<(String, String), Vec<v1::Container>> = HashMap::new();
        for c in all {
            let name = c.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
            groups.entry((c.pod_sandbox_id.clone(), name)).or_default().push(c);
        }
        let mut evictable: Vec<v1::Container> = Vec::new();
        let mut remove: Vec<String> = Vec::new();
        for runs in groups.values_mut() {
            runs.sort_by_key(attempt_of);
            runs.pop(); // the current run stays
            let mut dead: Vec<v1::Container> = runs
                .drain(..)
                .filter(|c| ContainerState::try_from(c.state) == Ok(ContainerState::ContainerExited))
                .filter(|c| now.saturating_sub(c.created_at) >= min_age)
                .collect();
            if let Ok(keep) = usize::try_from(policy.max_per_container) {
                let extra = dead.len().saturating_sub(keep);
                remove.extend(dead.drain(..extra).map(|c| c.id));
            }
            evictable.extend(dead);
        }
        if let Ok(max) = usize::try_from(policy.max_total) {
            evictable.sort_by_key(|c| c.created_at);
            let extra = evictable.len().saturating_sub(max);
            remove.extend(evictable.drain(..extra).map(|c| c.id));
        }
        let mut removed = 0;
        for id in remove {
            ok_if_gone(self.cri.remove_container(&id).await).map_err(cri("RemoveContainer (GC)"))?;
            removed += 1;
        }
        // Sandboxes: a dead one that is not its pod's newest.
        let sandboxes = self.cri.list_pod_sandbox(None).await.map_err(cri("ListPodSandbox"))?;
        let mut newest: HashMap<String, i64> = HashMap::new();
        for sb in &sandboxes {
            let uid = sb.labels.get(LABEL_POD_UID).cloned().unwrap_or_default();
            let e = newest.entry(uid).or_insert(sb.created_at);
            *e = (*e).max(sb.created_at);
        }
        for sb in sandboxes {
            let uid = sb.labels.get(LABEL_POD_UID).cloned().unwrap_or_default();
            let ready = v1::PodSandboxState::try_from(sb.state) == Ok(v1::PodSandboxState::SandboxReady);
            if !ready && newest.get(&uid).is_some_and(|n| *n > sb.created_at) {
                let filter = v1::ContainerFilter { pod_sandbox_id: sb.id.clone(), ..Default::default() };
                for c in self.cri.list_containers(Some(filter)).await.map_err(cri("ListContainers"))? {
                    ok_if_gone(self.cri.remove_container(&c.id).await).map_err(cri("RemoveContainer (GC)"))?;
                }
                ok_if_gone(self.cri.remove_pod_sandbox(&sb.id).await).map_err(cri("RemovePodSandbox (GC)"))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// The longest crash-loop backoff (kubelet's).
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// When each container last exited or was restarted, for its crash-loop backoff
/// (`{uid}/{container}` → time).
pub type Backoffs = HashMap<String, std::time::SystemTime>;

/// The attempt number of a container run.
fn attempt_of(c: &v1::Container) -> u32 {
    c.metadata.as_ref().map(|m| m.attempt).unwrap_or(0)
}

/// The ids of every run but the newest.
fn older_runs(runs: &[v1::Container]) -> Vec<String> {
    runs.iter().take(runs.len().saturating_sub(1)).map(|c| c.id.clone()).collect()
}

/// Whether the exited run `current` of `c` may be run again now: its crash-loop backoff
/// (`base` doubling per attempt, at most [`MAX_BACKOFF`]) has passed since it finished or was
/// last restarted.
fn due(
    backoff: &mut Backoffs,
    uid: &str,
    c: &Container,
    current: &v1::Container,
    st: &v1::ContainerStatus,
    base: Duration,
) -> bool {
    let attempt = attempt_of(current) + 1;
    let delay = base.saturating_mul(1 << (attempt - 1).min(16)).min(MAX_BACKOFF);
    let finished = std::time::UNIX_EPOCH + Duration::from_nanos(u64::try_from(st.finished_at.max(0)).unwrap_or(0));
    let entry = backoff.entry(format!("{uid}/{}", c.name)).or_insert(finished);
    std::time::SystemTime::now() >= *entry + delay
}

/// Whether the pod's restartPolicy restarts a container that exited with `code`.
pub fn restarts(pod: &Pod, code: i32) -> bool {
    match pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()).unwrap_or("Always") {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => true,
    }
}

/// How many times a running container is asked to stop before the error counts.
const STOP_ATTEMPTS: u32 = 3;

fn ok_if_gone(r: Result<(), CriError>) -> Result<(), CriError> {
    match r {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

/// A CRI time (nanoseconds since the epoch; zero or less is unset, written as `""`) as
/// Kubernetes writes times (seconds, `Z`).
fn cri_time(nanos: i64) -> String {
    if nanos <= 0 {
        return String::new();
    }
    time::format_unix(nanos / 1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(host: bool) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "default", "uid": "u-1"},
            "spec": {"hostNetwork": host, "containers": [{"name": "c", "image": "busybox", "command": ["sh"],
                "args": ["-c", "sleep 1"], "workingDir": "/tmp", "env": [{"name": "A", "value": "1"},
                {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]}}))
        .unwrap()
    }

    #[test]
    fn pods_translate_into_cri_configs_as_kubelet_does() {
        let root = std::path::Path::new("/var/log/pods");
        let host = sandbox_config(root, &pod(true)).unwrap();
        assert_eq!(host.hostname, "", "no UTS namespace of its own");
        assert_eq!(host.log_directory, "/var/log/pods/default_web_u-1");
        let ns = host.linux.unwrap().security_context.unwrap().namespace_options.unwrap();
        assert_eq!(ns.network, NamespaceMode::Node as i32);
        assert_eq!(ns.pid, NamespaceMode::Container as i32);
        let net = sandbox_config(root, &pod(false)).unwrap();
        assert_eq!(net.hostname, "web");
        let p = pod(false);
        let c = container_config(&p, &p.spec.as_ref().unwrap().containers[0], 0).unwrap();
        assert_eq!(
            (c.command.clone(), c.args.clone(), c.working_dir.clone()),
            (vec!["sh".into()], vec!["-c".into(), "sleep 1".into()], "/tmp".into())
        );
        assert_eq!(c.envs, vec![v1::KeyValue { key: "A".into(), value: b"1".to_vec() }]);
        assert_eq!(c.log_path, "c/0.log");
        assert_eq!(c.labels[LABEL_POD_UID], "u-1");
        assert!(!c.stdin && !c.stdin_once && !c.tty);
        let mut spec = p.spec.as_ref().unwrap().containers[0].clone();
        (spec.stdin, spec.stdin_once, spec.tty) = (Some(true), Some(true), Some(true));
        let c = container_config(&p, &spec, 0).unwrap();
        assert!(c.stdin && c.stdin_once && c.tty, "what attach needs");
        assert!(PodKey::of(&Pod::default()).is_err());
    }
}
