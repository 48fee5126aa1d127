//! Pods through CRI, as kubelet drives them: a Kubernetes Pod becomes a sandbox
//! (`RunPodSandbox`: host network with an empty hostname, or the pod network; each pod's logs
//! under `{logRoot}/{ns}_{name}_{uid}/`) and its containers (image pulled when absent,
//! command/args/workingDir/env, PID namespace per container as kubelet sets it); its status is
//! read back from CRI in the Kubernetes shape (phase, conditions, podIP, containerStatuses).
//!
//! Built so far: start, status and kill of pods with plain containers. Not yet: init
//! containers, restart policy and backoff, env from configmaps/secrets, volumes, probes,
//! resources (the Edged issue lists them).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use kubeedge_cri::v1::{self, ContainerState, NamespaceMode};
use kubeedge_cri::{Cri, Error as CriError};
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
        Ok(cfg)
    }

    /// Starts `pod`: its volumes, the sandbox, then each container (its image pulled if
    /// absent). Configmaps, secrets and tokens come from `src`.
    pub async fn start(&self, pod: &Pod, src: &dyn ObjectSource, host_ip: &str) -> Result<Started, Error> {
        let key = PodKey::of(pod)?;
        let dir = log_dir(&self.log_root, &key);
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io { path: dir.clone(), source })?;
        let volumes = super::volumes::prepare(&self.pods_root, pod, src, host_ip).await?;
        let sandbox_cfg = sandbox_config(&self.log_root, pod)?;
        let sandbox = self.cri.run_pod_sandbox(&sandbox_cfg, "").await.map_err(cri("RunPodSandbox"))?;
        let mut containers = Vec::new();
        for c in pod.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default() {
            let cfg = self.full_config(pod, c, 0, &volumes, src, host_ip).await?;
            let image = cfg.image.as_ref().map(|i| i.image.clone()).unwrap_or_default();
            if self.cri.image_status(&image).await.map_err(cri(format!("ImageStatus {image}")))?.is_none() {
                self.cri
                    .pull_image(&image, None, Some(&sandbox_cfg))
                    .await
                    .map_err(cri(format!("PullImage {image}")))?;
            }
            let id = self
                .cri
                .create_container(&sandbox, cfg, &sandbox_cfg)
                .await
                .map_err(cri(format!("CreateContainer {}", c.name)))?;
            self.cri.start_container(&id).await.map_err(cri(format!("StartContainer {}", c.name)))?;
            containers.push((c.name.clone(), id));
        }
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

    /// Restarts the pod's exited containers its `restartPolicy` says to restart (Always; or
    /// OnFailure after a non-zero exit), each after its crash-loop backoff: `base` doubling per
    /// restart up to five minutes, as kubelet. Keeps one dead run for `lastState` and logs.
    /// Returns how many were restarted.
    pub async fn restart_exited(
        &self,
        pod: &Pod,
        backoff: &mut Backoffs,
        base: Duration,
        src: &dyn ObjectSource,
        host_ip: &str,
    ) -> Result<usize, Error> {
        let key = PodKey::of(pod)?;
        let Some(sb) = self.sandboxes_of(&key.uid).await?.into_iter().max_by_key(|s| s.created_at) else {
            return Ok(0);
        };
        let sandbox_cfg = sandbox_config(&self.log_root, pod)?;
        let by_name = self.containers_by_name(&sb.id).await?;
        let mut restarted = 0;
        for spec in pod.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default() {
            let Some(runs) = by_name.get(spec.name.as_str()) else { continue };
            let Some(current) = runs.last() else { continue };
            let st = self.cri.container_status(&current.id).await.map_err(cri("ContainerStatus"))?;
            if ContainerState::try_from(st.state) != Ok(ContainerState::ContainerExited) || !restarts(pod, st.exit_code)
            {
                continue;
            }
            let attempt = current.metadata.as_ref().map(|m| m.attempt).unwrap_or(0) + 1;
            let delay = base.saturating_mul(1 << (attempt - 1).min(16)).min(MAX_BACKOFF);
            let finished =
                std::time::UNIX_EPOCH + Duration::from_nanos(u64::try_from(st.finished_at.max(0)).unwrap_or(0));
            let entry = backoff.entry(format!("{}/{}", key.uid, spec.name)).or_insert(finished);
            if std::time::SystemTime::now() < *entry + delay {
                continue;
            }
            for old in runs.iter().take(runs.len().saturating_sub(1)) {
                let _ = ok_if_gone(self.cri.remove_container(&old.id).await);
            }
            let volumes = super::volumes::prepare(&self.pods_root, pod, src, host_ip).await?;
            let cfg = self.full_config(pod, spec, attempt, &volumes, src, host_ip).await?;
            let id =
                self.cri.create_container(&sb.id, cfg, &sandbox_cfg).await.map_err(cri("CreateContainer (restart)"))?;
            self.cri.start_container(&id).await.map_err(cri("StartContainer (restart)"))?;
            backoff.insert(format!("{}/{}", key.uid, spec.name), std::time::SystemTime::now());
            restarted += 1;
        }
        Ok(restarted)
    }

    /// The sandboxes of pod `uid` (usually one).
    pub async fn sandboxes_of(&self, uid: &str) -> Result<Vec<v1::PodSandbox>, Error> {
        let filter = v1::PodSandboxFilter {
            label_selector: HashMap::from([(LABEL_POD_UID.to_owned(), uid.to_owned())]),
            ..Default::default()
        };
        self.cri.list_pod_sandbox(Some(filter)).await.map_err(cri("ListPodSandbox"))
    }

    /// Kills pod `uid`: its containers get `grace` to stop, then everything is removed.
    pub async fn kill(&self, uid: &str, grace: Duration) -> Result<(), Error> {
        for sb in self.sandboxes_of(uid).await? {
            let filter = v1::ContainerFilter { pod_sandbox_id: sb.id.clone(), ..Default::default() };
            for c in self.cri.list_containers(Some(filter)).await.map_err(cri("ListContainers"))? {
                ok_if_gone(self.cri.stop_container(&c.id, grace).await).map_err(cri("StopContainer"))?;
                ok_if_gone(self.cri.remove_container(&c.id).await).map_err(cri("RemoveContainer"))?;
            }
            ok_if_gone(self.cri.stop_pod_sandbox(&sb.id).await).map_err(cri("StopPodSandbox"))?;
            ok_if_gone(self.cri.remove_pod_sandbox(&sb.id).await).map_err(cri("RemovePodSandbox"))?;
        }
        super::volumes::cleanup(&self.pods_root, uid);
        Ok(())
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
        let key = PodKey::of(pod)?;
        let sandboxes = self.sandboxes_of(&key.uid).await?;
        let Some(sb) = sandboxes.iter().max_by_key(|s| s.created_at) else {
            return Ok(json!({"phase": "Pending"}));
        };
        let sb_status = self.cri.pod_sandbox_status(&sb.id).await.map_err(cri("PodSandboxStatus"))?;
        let pod_ip = if host_network(pod) {
            host_ip.to_owned()
        } else {
            sb_status.network.as_ref().map(|n| n.ip.clone()).unwrap_or_default()
        };
        let mut statuses = Vec::new();
        let (mut running, mut restarting, mut exited_ok, mut failed, mut ready_count) = (0, 0, 0, 0, 0);
        let specs = pod.spec.as_ref().map(|s| s.containers.clone()).unwrap_or_default();
        let by_name = self.containers_by_name(&sb.id).await?;
        for spec in &specs {
            let name = &spec.name;
            let runs = by_name.get(name.as_str()).cloned().unwrap_or_default();
            let Some(current) = runs.last() else {
                statuses.push(json!({"name": name, "state": {"waiting": {"reason": "ContainerCreating"}},
                    "lastState": {}, "ready": false, "restartCount": 0, "image": spec.image, "imageID": "", "started": false}));
                continue;
            };
            let st = self.cri.container_status(&current.id).await.map_err(cri("ContainerStatus"))?;
            let attempt = current.metadata.as_ref().map(|m| m.attempt).unwrap_or(0);
            let terminated = |st: &v1::ContainerStatus| {
                json!({"terminated": {"exitCode": st.exit_code, "reason": st.reason,
                    "startedAt": rfc3339(st.started_at), "finishedAt": rfc3339(st.finished_at),
                    "containerID": format!("containerd://{}", st.id)}})
            };
            let state = match ContainerState::try_from(st.state).unwrap_or(ContainerState::ContainerUnknown) {
                ContainerState::ContainerRunning => {
                    running += 1;
                    json!({"running": {"startedAt": rfc3339(st.started_at)}})
                }
                ContainerState::ContainerExited if restarts(pod, st.exit_code) => {
                    // Restarting: the pod stays Running, as kubelet reports it.
                    restarting += 1;
                    json!({"waiting": {"reason": "CrashLoopBackOff"}})
                }
                ContainerState::ContainerExited => {
                    if st.exit_code == 0 {
                        exited_ok += 1
                    } else {
                        failed += 1
                    }
                    terminated(&st)
                }
                _ => json!({"waiting": {"reason": "ContainerCreating"}}),
            };
            let last_state = match runs.len().checked_sub(2).and_then(|i| runs.get(i)) {
                Some(prev) => match self.cri.container_status(&prev.id).await {
                    Ok(p) => terminated(&p),
                    Err(_) => json!({}),
                },
                None if state.get("waiting").is_some() && st.finished_at > 0 => terminated(&st),
                None => json!({}),
            };
            let ready = state.get("running").is_some() && readiness.get(name.as_str()).copied().unwrap_or(true);
            if ready {
                ready_count += 1;
            }
            statuses.push(json!({"name": name, "state": state, "lastState": last_state, "ready": ready,
                "restartCount": attempt, "image": spec.image, "imageID": st.image_ref,
                "containerID": format!("containerd://{}", st.id), "started": state.get("running").is_some()}));
        }
        let total = specs.len();
        let phase = if total > 0 && running + restarting == total && running + restarting > 0 {
            "Running"
        } else if total > 0 && exited_ok == total {
            "Succeeded"
        } else if failed > 0 && running == 0 {
            "Failed"
        } else if running > 0 {
            "Running"
        } else {
            "Pending"
        };
        let all_ready = total > 0 && ready_count == total;
        let cond = |t: &str, ok: bool| json!({"type": t, "status": if ok { "True" } else { "False" }});
        Ok(json!({
            "phase": phase,
            "conditions": [cond("Initialized", true), cond("Ready", all_ready), cond("ContainersReady", all_ready), cond("PodScheduled", true)],
            "hostIP": host_ip,
            "podIP": pod_ip,
            "podIPs": if pod_ip.is_empty() { json!([]) } else { json!([{"ip": pod_ip}]) },
            "startTime": rfc3339(sb.created_at),
            "containerStatuses": statuses,
        }))
    }
}

/// The longest crash-loop backoff (kubelet's).
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// When each container last exited or was restarted, for its crash-loop backoff
/// (`{uid}/{container}` → time).
pub type Backoffs = HashMap<String, std::time::SystemTime>;

/// Whether the pod's restartPolicy restarts a container that exited with `code`.
pub fn restarts(pod: &Pod, code: i32) -> bool {
    match pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()).unwrap_or("Always") {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => true,
    }
}

fn ok_if_gone(r: Result<(), CriError>) -> Result<(), CriError> {
    match r {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

/// Nanoseconds since the epoch as Kubernetes writes times (seconds, `Z`).
fn rfc3339(nanos: i64) -> String {
    if nanos <= 0 {
        return String::new();
    }
    let secs = nanos / 1_000_000_000;
    let t = std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    super::node::rfc3339_at(t)
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
        assert!(PodKey::of(&Pod::default()).is_err());
    }
}
