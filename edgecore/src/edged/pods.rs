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

/// The config of one container of `pod`.
pub fn container_config(pod: &Pod, c: &Container) -> Result<v1::ContainerConfig, Error> {
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
            metadata: Some(v1::ContainerMetadata { name: c.name.clone(), attempt: 0 }),
            image: Some(v1::ImageSpec { image, ..Default::default() }),
            command: c.command.clone().unwrap_or_default(),
            args: c.args.clone().unwrap_or_default(),
            working_dir: c.working_dir.clone().unwrap_or_default(),
            envs,
            log_path: format!("{}/0.log", c.name),
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
    /// Starts `pod`: the sandbox, then each container (its image pulled if absent).
    pub async fn start(&self, pod: &Pod) -> Result<Started, Error> {
        let key = PodKey::of(pod)?;
        let dir = log_dir(&self.log_root, &key);
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io { path: dir.clone(), source })?;
        let sandbox_cfg = sandbox_config(&self.log_root, pod)?;
        let sandbox = self.cri.run_pod_sandbox(&sandbox_cfg, "").await.map_err(cri("RunPodSandbox"))?;
        let mut containers = Vec::new();
        for c in pod.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default() {
            let cfg = container_config(pod, c)?;
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
        Ok(())
    }

    /// The pod's status in the Kubernetes shape, from what CRI reports now.
    pub async fn status(&self, pod: &Pod, host_ip: &str) -> Result<Value, Error> {
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
        let filter = v1::ContainerFilter { pod_sandbox_id: sb.id.clone(), ..Default::default() };
        let mut statuses = Vec::new();
        let (mut running, mut exited_ok, mut failed) = (0, 0, 0);
        let specs = pod.spec.as_ref().map(|s| s.containers.clone()).unwrap_or_default();
        for c in self.cri.list_containers(Some(filter)).await.map_err(cri("ListContainers"))? {
            let st = self.cri.container_status(&c.id).await.map_err(cri("ContainerStatus"))?;
            let name = st.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
            let image = specs.iter().find(|s| s.name == name).and_then(|s| s.image.clone()).unwrap_or_default();
            let state = match ContainerState::try_from(st.state).unwrap_or(ContainerState::ContainerUnknown) {
                ContainerState::ContainerRunning => {
                    running += 1;
                    json!({"running": {"startedAt": rfc3339(st.started_at)}})
                }
                ContainerState::ContainerExited => {
                    if st.exit_code == 0 {
                        exited_ok += 1
                    } else {
                        failed += 1
                    }
                    json!({"terminated": {"exitCode": st.exit_code, "reason": st.reason,
                        "startedAt": rfc3339(st.started_at), "finishedAt": rfc3339(st.finished_at),
                        "containerID": format!("containerd://{}", st.id)}})
                }
                _ => json!({"waiting": {"reason": "ContainerCreating"}}),
            };
            let ready = state.get("running").is_some();
            statuses.push(json!({"name": name, "state": state, "lastState": {}, "ready": ready,
                "restartCount": 0, "image": image, "imageID": st.image_ref,
                "containerID": format!("containerd://{}", st.id), "started": ready}));
        }
        let total = specs.len();
        let phase = if total > 0 && running == total {
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
        let all_ready = total > 0 && running == total;
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
        let c = container_config(&p, &p.spec.as_ref().unwrap().containers[0]).unwrap();
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
