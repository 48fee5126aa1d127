//! A pod's volumes and environment, as kubelet prepares them before a container starts:
//!
//! - volumes under `{rootDirectory}/pods/{uid}/volumes/{plugin}/{name}` (kubelet's layout):
//!   `emptyDir`, `hostPath` (created for `DirectoryOrCreate`), `configMap` and `secret` (every
//!   key, or the listed `items`, as files), `downwardAPI` and `projected` (configMap, secret,
//!   downwardAPI and the service-account token, which the cloud issues);
//! - each container's `volumeMounts` (with `subPath` and `readOnly`) become CRI mounts;
//! - `env` values, `valueFrom` (configMapKeyRef, secretKeyRef, fieldRef) and `envFrom`.
//!
//! Configmaps, secrets and tokens come from an [`ObjectSource`]: in edgecore, MetaManager (the
//! local database first, then the cloud).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Container, DownwardAPIVolumeFile, KeyToPath, Pod};
use kubeedge_cri::v1;
use serde_json::{Value, json};

use super::pods::{Error, PodKey};

/// Where configmaps, secrets and service-account tokens come from.
pub trait ObjectSource: Send + Sync {
    /// A configmap or secret (`ty` = `configmap` / `secret`) as JSON, if it exists.
    fn object<'a>(&'a self, ty: &'a str, namespace: &'a str, name: &'a str) -> BoxFuture<'a, Option<Value>>;
    /// A token for service account `sa` (a TokenRequest `request`), if one can be had.
    fn token<'a>(&'a self, namespace: &'a str, sa: &'a str, request: Value) -> BoxFuture<'a, Option<String>>;
}

fn invalid(what: String) -> Error {
    Error::Invalid(what)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_owned(), source }
}

/// The files of a configmap (`data` as text, `binaryData` decoded) or secret (`data` decoded,
/// `stringData` as text).
fn files_of(obj: &Value, secret: bool) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let decode = |v: &Value| v.as_str().and_then(|s| B64.decode(s).ok());
    if let Some(m) = obj.get("data").and_then(Value::as_object) {
        for (k, v) in m {
            let bytes = if secret { decode(v) } else { v.as_str().map(|s| s.as_bytes().to_vec()) };
            if let Some(b) = bytes {
                out.insert(k.clone(), b);
            }
        }
    }
    let extra = if secret { "stringData" } else { "binaryData" };
    if let Some(m) = obj.get(extra).and_then(Value::as_object) {
        for (k, v) in m {
            let bytes = if secret { v.as_str().map(|s| s.as_bytes().to_vec()) } else { decode(v) };
            if let Some(b) = bytes {
                out.insert(k.clone(), b);
            }
        }
    }
    out
}

fn write_file(dir: &Path, rel: &str, data: &[u8]) -> Result<(), Error> {
    if rel.split('/').any(|p| p == ".." || p.is_empty()) {
        return Err(invalid(format!("volume file path {rel:?} is not allowed")));
    }
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    std::fs::write(&path, data).map_err(io(&path))
}

fn write_items(dir: &Path, files: &BTreeMap<String, Vec<u8>>, items: Option<&Vec<KeyToPath>>) -> Result<(), Error> {
    match items {
        Some(items) => {
            for it in items {
                if let Some(data) = files.get(&it.key) {
                    write_file(dir, &it.path, data)?;
                }
            }
        }
        None => {
            for (k, data) in files {
                write_file(dir, k, data)?;
            }
        }
    }
    Ok(())
}

/// A downward-API field of the pod (`metadata.name`, `metadata.namespace`, `metadata.uid`,
/// `metadata.labels`, `metadata.annotations`, `spec.nodeName`, `spec.serviceAccountName`).
fn field(pod: &Pod, path: &str, host_ip: &str) -> Option<String> {
    let m = &pod.metadata;
    let map = |m: &Option<BTreeMap<String, String>>| {
        m.iter().flatten().map(|(k, v)| format!("{k}=\"{v}\"")).collect::<Vec<_>>().join("\n")
    };
    Some(match path {
        "metadata.name" => m.name.clone()?,
        "metadata.namespace" => m.namespace.clone()?,
        "metadata.uid" => m.uid.clone()?,
        "metadata.labels" => map(&m.labels),
        "metadata.annotations" => map(&m.annotations),
        "spec.nodeName" => pod.spec.as_ref()?.node_name.clone()?,
        "spec.serviceAccountName" => pod.spec.as_ref()?.service_account_name.clone().unwrap_or("default".into()),
        "status.hostIP" => host_ip.to_owned(),
        other => {
            let key = other.strip_prefix("metadata.labels['")?.strip_suffix("']")?;
            m.labels.as_ref()?.get(key)?.clone()
        }
    })
}

fn write_downward(dir: &Path, pod: &Pod, items: &[DownwardAPIVolumeFile], host_ip: &str) -> Result<(), Error> {
    for it in items {
        if let Some(v) = it.field_ref.as_ref().and_then(|f| field(pod, &f.field_path, host_ip)) {
            write_file(dir, &it.path, v.as_bytes())?;
        }
    }
    Ok(())
}

/// One file-system step of [`prepare`], run off the async runtime.
type Step = Box<dyn FnOnce() -> Result<(), Error> + Send>;

fn mkdir(p: PathBuf) -> Step {
    Box::new(move || std::fs::create_dir_all(&p).map_err(io(&p)))
}

fn items_step(d: PathBuf, files: BTreeMap<String, Vec<u8>>, items: Option<Vec<KeyToPath>>) -> Step {
    Box::new(move || write_items(&d, &files, items.as_ref()))
}

fn downward_step(d: PathBuf, pod: Pod, items: Vec<DownwardAPIVolumeFile>, host_ip: String) -> Step {
    Box::new(move || write_downward(&d, &pod, &items, &host_ip))
}

/// Prepares every volume of `pod`; returns volume name → host path. Configmaps, secrets and
/// tokens are fetched first; the directories and files are then written on a blocking thread.
pub async fn prepare(
    pods_root: &Path,
    pod: &Pod,
    src: &dyn ObjectSource,
    host_ip: &str,
) -> Result<BTreeMap<String, PathBuf>, Error> {
    let key = PodKey::of(pod)?;
    let ns = key.namespace.as_str();
    let base = pods_root.join(&key.uid).join("volumes");
    let mut out = BTreeMap::new();
    let mut steps: Vec<Step> = Vec::new();
    for v in pod.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap_or_default() {
        let dir = |plugin: &str| base.join(plugin).join(&v.name);
        let path = if v.empty_dir.is_some() {
            dir("kubernetes.io~empty-dir")
        } else if let Some(h) = &v.host_path {
            let p = PathBuf::from(&h.path);
            if h.type_.as_deref() == Some("DirectoryOrCreate") {
                steps.push(mkdir(p.clone()));
            }
            out.insert(v.name.clone(), p);
            continue;
        } else if let Some(cm) = &v.config_map {
            let d = dir("kubernetes.io~configmap");
            match src.object("configmap", ns, &cm.name).await {
                Some(obj) => {
                    steps.push(mkdir(d.clone()));
                    steps.push(items_step(d.clone(), files_of(&obj, false), cm.items.clone()));
                }
                None if cm.optional == Some(true) => {}
                None => return Err(invalid(format!("configmap {ns}/{} (volume {}) not found", cm.name, v.name))),
            }
            d
        } else if let Some(sec) = &v.secret {
            let d = dir("kubernetes.io~secret");
            let name = sec.secret_name.clone().unwrap_or_default();
            match src.object("secret", ns, &name).await {
                Some(obj) => {
                    steps.push(mkdir(d.clone()));
                    steps.push(items_step(d.clone(), files_of(&obj, true), sec.items.clone()));
                }
                None if sec.optional == Some(true) => {}
                None => return Err(invalid(format!("secret {ns}/{name} (volume {}) not found", v.name))),
            }
            d
        } else if let Some(da) = &v.downward_api {
            let d = dir("kubernetes.io~downward-api");
            steps.push(mkdir(d.clone()));
            steps.push(downward_step(d.clone(), pod.clone(), da.items.clone().unwrap_or_default(), host_ip.to_owned()));
            d
        } else if let Some(pr) = &v.projected {
            let d = dir("kubernetes.io~projected");
            steps.push(mkdir(d.clone()));
            for s in pr.sources.iter().flatten() {
                if let Some(cm) = &s.config_map
                    && let Some(obj) = src.object("configmap", ns, &cm.name).await
                {
                    steps.push(items_step(d.clone(), files_of(&obj, false), cm.items.clone()));
                }
                if let Some(sec) = &s.secret
                    && let Some(obj) = src.object("secret", ns, &sec.name).await
                {
                    steps.push(items_step(d.clone(), files_of(&obj, true), sec.items.clone()));
                }
                if let Some(da) = &s.downward_api {
                    let items = da.items.clone().unwrap_or_default();
                    steps.push(downward_step(d.clone(), pod.clone(), items, host_ip.to_owned()));
                }
                if let Some(t) = &s.service_account_token {
                    let sa = field(pod, "spec.serviceAccountName", host_ip).unwrap_or_else(|| "default".into());
                    let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                        // No audience is `null`, as kubelet sends it (and upstream keys it).
                        "spec": {"audiences": t.audience.as_deref().filter(|a| !a.is_empty()).map(|a| vec![a]),
                            "expirationSeconds": t.expiration_seconds.unwrap_or(3607),
                            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": key.name, "uid": key.uid}}});
                    // Without the cloud there is no token: the file is left out, as a kubelet
                    // that cannot reach its API server would.
                    if let Some(token) = src.token(ns, &sa, request).await {
                        let (d, rel) = (d.clone(), t.path.clone());
                        steps.push(Box::new(move || write_file(&d, &rel, token.as_bytes())));
                    }
                }
            }
            d
        } else {
            return Err(invalid(format!("volume {} has a type this edged does not support yet", v.name)));
        };
        steps.push(mkdir(path.clone()));
        out.insert(v.name.clone(), path);
    }
    tokio::task::spawn_blocking(move || steps.into_iter().try_for_each(|step| step()))
        .await
        .map_err(|e| invalid(format!("writing the volumes: {e}")))??;
    Ok(out)
}

/// A container's mounts from its `volumeMounts`.
pub fn mounts(c: &Container, volumes: &BTreeMap<String, PathBuf>) -> Result<Vec<v1::Mount>, Error> {
    let mut out = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let host = volumes
            .get(&m.name)
            .ok_or_else(|| invalid(format!("container {} mounts unknown volume {}", c.name, m.name)))?;
        let host = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) if sub.split('/').any(|p| p == "..") => {
                return Err(invalid(format!("subPath {sub:?} is not allowed")));
            }
            Some(sub) => host.join(sub),
            None => host.clone(),
        };
        out.push(v1::Mount {
            container_path: m.mount_path.clone(),
            host_path: host.to_string_lossy().into_owned(),
            readonly: m.read_only.unwrap_or(false),
            ..Default::default()
        });
    }
    Ok(out)
}

/// A container's environment: `envFrom` first, then `env` (later entries win, as kubelet).
pub async fn env(pod: &Pod, c: &Container, src: &dyn ObjectSource, host_ip: &str) -> Result<Vec<v1::KeyValue>, Error> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut vars: Vec<(String, String)> = Vec::new();
    for f in c.env_from.iter().flatten() {
        let prefix = f.prefix.clone().unwrap_or_default();
        let (ty, name, optional) = match (&f.config_map_ref, &f.secret_ref) {
            (Some(r), _) => ("configmap", r.name.clone(), r.optional == Some(true)),
            (_, Some(r)) => ("secret", r.name.clone(), r.optional == Some(true)),
            _ => continue,
        };
        match src.object(ty, &ns, &name).await {
            Some(obj) => {
                for (k, v) in files_of(&obj, ty == "secret") {
                    vars.push((format!("{prefix}{k}"), String::from_utf8_lossy(&v).into_owned()));
                }
            }
            None if optional => {}
            None => return Err(invalid(format!("{ty} {ns}/{name} (envFrom of {}) not found", c.name))),
        }
    }
    for e in c.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) => {
                if let Some(r) = &from.config_map_key_ref {
                    match src.object("configmap", &ns, &r.name).await.and_then(|o| files_of(&o, false).remove(&r.key)) {
                        Some(v) => String::from_utf8_lossy(&v).into_owned(),
                        None if r.optional == Some(true) => continue,
                        None => return Err(invalid(format!("configmap key {ns}/{}:{} not found", r.name, r.key))),
                    }
                } else if let Some(r) = &from.secret_key_ref {
                    match src.object("secret", &ns, &r.name).await.and_then(|o| files_of(&o, true).remove(&r.key)) {
                        Some(v) => String::from_utf8_lossy(&v).into_owned(),
                        None if r.optional == Some(true) => continue,
                        None => return Err(invalid(format!("secret key {ns}/{}:{} not found", r.name, r.key))),
                    }
                } else if let Some(f) = &from.field_ref {
                    field(pod, &f.field_path, host_ip).unwrap_or_default()
                } else {
                    continue;
                }
            }
            (None, None) => String::new(),
        };
        vars.push((e.name.clone(), value));
    }
    // Later definitions win.
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<v1::KeyValue> = Vec::new();
    for (k, v) in vars.into_iter().rev() {
        if seen.insert(k.clone()) {
            out.push(v1::KeyValue { key: k, value: v.into_bytes() });
        }
    }
    out.reverse();
    Ok(out)
}

/// Removes a pod's volume directories (emptyDirs and the written configmaps, secrets, tokens),
/// on a blocking thread.
pub async fn cleanup(pods_root: &Path, uid: &str) {
    if !uid.is_empty() && !uid.contains('/') && uid != "." && uid != ".." {
        let dir = pods_root.join(uid);
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
    }
}
