//! Static pods, as kubelet's file source reads them: every `*.yaml`, `*.yml` or `*.json` file
//! (one Pod each; hidden files skipped) in `staticPodPath` is a pod of this node. Like kubelet:
//!
//! - its name becomes `{name}-{node}`, its namespace defaults to `default`, `spec.nodeName` is
//!   the node, and defaults the API server would set are filled in (`restartPolicy: Always`,
//!   `terminationGracePeriodSeconds: 30`, `dnsPolicy: ClusterFirst`, `securityContext: {}`);
//! - its UID is a hash of the file's content, the node and the path, and is also the
//!   `kubernetes.io/config.hash` annotation (`kubernetes.io/config.source: file`);
//! - it runs without the cloud; the API shows it through a *mirror pod*: the same pod with
//!   `kubernetes.io/config.mirror: {hash}` and no UID, created through the cloud. Mirror pods
//!   the cloud sends back are never run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

/// `kubernetes.io/config.hash`: the static pod's hash (its UID).
pub const CONFIG_HASH: &str = "kubernetes.io/config.hash";
/// `kubernetes.io/config.mirror`: on a mirror pod, the hash of the static pod it mirrors.
pub const CONFIG_MIRROR: &str = "kubernetes.io/config.mirror";
/// `kubernetes.io/config.source`: where a pod came from (`file` for static pods).
pub const CONFIG_SOURCE: &str = "kubernetes.io/config.source";
/// `kubernetes.io/config.seen`.
pub const CONFIG_SEEN: &str = "kubernetes.io/config.seen";

/// Largest manifest read (kubelet has no limit; a pod spec is small).
const MAX_MANIFEST: u64 = 1024 * 1024;

/// Whether `pod` is a mirror pod (the API's view of a static pod; never run).
pub fn is_mirror(pod: &Pod) -> bool {
    pod.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(CONFIG_MIRROR))
}

/// The hash a mirror pod mirrors.
pub fn mirrored_hash(pod: &Pod) -> Option<&str> {
    pod.metadata.annotations.as_ref().and_then(|a| a.get(CONFIG_MIRROR)).map(String::as_str)
}

/// Why a manifest file is not a static pod (the file is skipped, with one warning).
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("{0}")]
    Read(std::io::Error),
    /// The file is over 1 MiB.
    #[error("larger than {MAX_MANIFEST} bytes")]
    TooLarge,
    /// Neither YAML nor JSON.
    #[error("not YAML or JSON: {0}")]
    Syntax(yaml_serde::Error),
    /// Another kind of object (the kind as written, JSON-quoted).
    #[error("kind is {0}, not Pod")]
    NotAPod(Value),
    /// A required key is missing, or is not an object (the message names it).
    #[error("{0}")]
    Missing(&'static str),
    /// The object is not a valid Pod.
    #[error("not a valid Pod: {0}")]
    Invalid(serde_json::Error),
}

/// The static pod of manifest `raw` (YAML or JSON) found at `path`, on node `node`.
pub fn static_pod(raw: &[u8], path: &Path, node: &str) -> Result<Pod, ManifestError> {
    let mut v: Value = yaml_serde::from_slice(raw).map_err(ManifestError::Syntax)?;
    if v.get("kind").and_then(Value::as_str).is_some_and(|k| k != "Pod") {
        return Err(ManifestError::NotAPod(v["kind"].clone()));
    }
    let name = v.pointer("/metadata/name").and_then(Value::as_str).filter(|n| !n.is_empty());
    let Some(name) = name.map(str::to_owned) else { return Err(ManifestError::Missing("metadata.name is missing")) };
    if v.pointer("/spec/containers").and_then(Value::as_array).is_none_or(Vec::is_empty) {
        return Err(ManifestError::Missing("spec.containers is missing"));
    }
    let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
    hasher.update(raw);
    hasher.update(format!("host:{node}").as_bytes());
    hasher.update(format!("file:{}", path.display()).as_bytes());
    let hash: String = hasher.finish().as_ref().iter().take(16).map(|b| format!("{b:02x}")).collect();

    let meta = v["metadata"].as_object_mut().ok_or(ManifestError::Missing("metadata is not an object"))?;
    meta.insert("name".into(), json!(format!("{name}-{node}")));
    if meta.get("namespace").and_then(Value::as_str).is_none_or(str::is_empty) {
        meta.insert("namespace".into(), json!("default"));
    }
    meta.insert("uid".into(), json!(hash));
    let ann = meta.entry("annotations").or_insert_with(|| json!({}));
    if !ann.is_object() {
        *ann = json!({});
    }
    ann[CONFIG_HASH] = json!(hash);
    ann[CONFIG_SOURCE] = json!("file");
    ann[CONFIG_SEEN] = json!(super::node::now_strings().1);
    let spec = v["spec"].as_object_mut().ok_or(ManifestError::Missing("spec is not an object"))?;
    spec.insert("nodeName".into(), json!(node));
    for (key, default) in [
        ("restartPolicy", json!("Always")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("dnsPolicy", json!("ClusterFirst")),
        ("securityContext", json!({})),
        ("schedulerName", json!("default-scheduler")),
    ] {
        spec.entry(key).or_insert(default);
    }
    // Static pods tolerate every NoExecute taint, as kubelet's file source sets.
    spec.entry("tolerations").or_insert(json!([{"operator": "Exists", "effect": "NoExecute"}]));
    serde_json::from_value(v).map_err(ManifestError::Invalid)
}

/// The mirror pod of a static pod, to create through the cloud: no UID, annotated with the
/// hash it mirrors.
pub fn mirror_of(pod: &Pod) -> Value {
    let mut v = serde_json::to_value(pod).unwrap_or(Value::Null);
    let hash = pod.metadata.uid.clone().unwrap_or_default();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("uid");
        meta.remove("resourceVersion");
        let ann = meta.entry("annotations").or_insert_with(|| json!({}));
        ann[CONFIG_MIRROR] = json!(hash);
    }
    if let Some(o) = v.as_object_mut() {
        o.insert("apiVersion".into(), json!("v1"));
        o.insert("kind".into(), json!("Pod"));
        o.remove("status");
    }
    v
}

/// What the manifests folder holds: path → the pod, or why it was skipped.
pub type Manifests = BTreeMap<PathBuf, Result<Pod, ManifestError>>;

/// Reads the manifests in `dir` (blocking: call it off the async runtime). A missing folder
/// holds no pods.
pub fn read_dir(dir: &Path, node: &str) -> Manifests {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let ext_ok = [".yaml", ".yml", ".json"].iter().any(|x| name.ends_with(x));
        if name.starts_with('.') || !ext_ok || !path.is_file() {
            continue;
        }
        let pod = match e.metadata() {
            Ok(m) if m.len() > MAX_MANIFEST => Err(ManifestError::TooLarge),
            Ok(_) => std::fs::read(&path).map_err(ManifestError::Read).and_then(|raw| static_pod(&raw, &path, node)),
            Err(e) => Err(ManifestError::Read(e)),
        };
        out.insert(path, pod);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_become_static_pods_like_kubelets_file_source() {
        let raw = b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: c\n    image: busybox\n";
        let p = static_pod(raw, Path::new("/etc/kubeedge/manifests/web.yaml"), "edge-1").unwrap();
        assert_eq!(p.metadata.name.as_deref(), Some("web-edge-1"));
        assert_eq!(p.metadata.namespace.as_deref(), Some("default"));
        let uid = p.metadata.uid.clone().unwrap();
        assert_eq!(uid.len(), 32);
        let ann = p.metadata.annotations.clone().unwrap();
        assert_eq!(ann[CONFIG_HASH], uid);
        assert_eq!(ann[CONFIG_SOURCE], "file");
        let spec = p.spec.clone().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("edge-1"));
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        assert!(!is_mirror(&p));
        // The same file on another node, or changed, is another pod.
        let other = static_pod(raw, Path::new("/etc/kubeedge/manifests/web.yaml"), "edge-2").unwrap();
        assert_ne!(other.metadata.uid, p.metadata.uid);
        let again = static_pod(raw, Path::new("/etc/kubeedge/manifests/web.yaml"), "edge-1").unwrap();
        assert_eq!(again.metadata.uid, p.metadata.uid, "stable across reads");

        let m: Pod = serde_json::from_value(mirror_of(&p)).unwrap();
        assert!(is_mirror(&m));
        assert_eq!(mirrored_hash(&m), Some(uid.as_str()));
        assert_eq!(m.metadata.uid, None);

        for (bad, why) in [
            (&b"kind: Service\nmetadata: {name: x}\n"[..], "not Pod"),
            (b"metadata: {}\nspec: {containers: [{name: c, image: i}]}\n", "metadata.name"),
            (b"metadata: {name: x}\nspec: {}\n", "spec.containers"),
            (b": : :\n", "not YAML"),
        ] {
            let e = static_pod(bad, Path::new("/x.yaml"), "n").unwrap_err();
            assert!(e.to_string().contains(why), "{e}");
        }
    }
}
