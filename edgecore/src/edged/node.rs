//! The edge node as the cloud sees it: the facts edged reads from the host (capacity and
//! allocatable, nodeInfo) and the Node it registers from them, in the shape the model's
//! protocol module gives every edge (`kubeedge_model::protocol::objects`, checked against
//! `tests/fixtures/upstream/edge-node-insert.json`).

use std::collections::BTreeMap;

use kubeedge_kube_serve::time;
pub use kubeedge_model::protocol::objects::HostInfo;
use kubeedge_model::protocol::objects::{self, NodeFacts};
use serde_json::Value;

/// Memory kept back from allocatable by default (upstream's eviction threshold, 100Mi).
const RESERVED_MEMORY_KI: u64 = 100 * 1024;

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_owned()).unwrap_or_default()
}

/// Reads the host, once. Missing files give empty strings, never an error.
pub fn detect_host() -> HostInfo {
    let cpus = std::thread::available_parallelism().map(|n| n.get() as u64).unwrap_or(1);
    let memory_ki = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0);
    let machine_id = read_trim("/etc/machine-id");
    let system_uuid = Some(read_trim("/sys/class/dmi/id/product_uuid"))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| machine_id.clone());
    let os_image = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_owned())))
        .unwrap_or_else(|| "Linux".to_owned());
    let architecture = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
    .to_owned();
    HostInfo {
        cpus,
        memory_ki,
        machine_id,
        system_uuid,
        boot_id: read_trim("/proc/sys/kernel/random/boot_id"),
        kernel_version: read_trim("/proc/sys/kernel/osrelease"),
        os_image,
        architecture,
    }
}

/// What goes into the Node besides the host facts.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// The node name.
    pub name: String,
    /// `modules.edged.nodeIP` (or the detected address).
    pub node_ip: String,
    /// `modules.edged.nodeLabels`, added to the standard ones.
    pub labels: BTreeMap<String, String>,
    /// `maxPods`.
    pub max_pods: i32,
    /// `containerRuntimeVersion`, e.g. `containerd://1.6.20`.
    pub runtime_version: String,
    /// Whether the node accepts pods (`registerSchedulable`).
    pub schedulable: bool,
}

/// The node's labels: upstream's standard set, the edge roles, then the configured ones.
pub fn labels(spec: &NodeSpec, host: &HostInfo) -> BTreeMap<String, String> {
    let mut l = objects::node_labels(&spec.name, &host.architecture);
    l.extend(spec.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    l
}

/// The node's status at `now` (RFC 3339, seconds).
pub fn status(spec: &NodeSpec, host: &HostInfo, now: &str) -> Value {
    let facts = NodeFacts {
        name: spec.name.clone(),
        address: spec.node_ip.clone(),
        host: host.clone(),
        allocatable_memory_ki: host.memory_ki.saturating_sub(RESERVED_MEMORY_KI),
        max_pods: spec.max_pods,
        runtime_version: spec.runtime_version.clone(),
    };
    objects::node_status(&facts, now)
}

/// The Node edged registers (no TypeMeta, as upstream's edge sends it).
pub fn node_object(spec: &NodeSpec, host: &HostInfo, now: &str) -> Value {
    objects::node_object(&spec.name, &labels(spec, host), spec.schedulable, status(spec, host, now))
}

/// Now, as Kubernetes writes times: seconds (`…Z`) and microseconds (`MicroTime`).
pub fn now_strings() -> (String, String) {
    let now = time::OffsetDateTime::now_utc();
    (time::format(now), time::format_micro(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> NodeSpec {
        NodeSpec {
            name: "edge-capture".into(),
            node_ip: "192.0.2.2".into(),
            labels: BTreeMap::from([("site".to_owned(), "a".to_owned())]),
            max_pods: 110,
            runtime_version: "containerd://1.6.20".into(),
            schedulable: true,
        }
    }

    #[test]
    fn the_node_has_the_shape_and_keys_of_upstreams_registration() {
        let host = detect_host();
        assert!(host.cpus >= 1);
        let ours = node_object(&spec(), &host, "2026-11-25T19:54:28Z");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/upstream");
        let fixture: Value =
            serde_json::from_slice(&std::fs::read(dir.join("edge-node-insert.json")).unwrap()).unwrap();
        let theirs = &fixture["content"];
        let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
        assert_eq!(keys(&ours), keys(theirs));
        assert_eq!(keys(&ours["metadata"]), keys(&theirs["metadata"]));
        assert_eq!(keys(&ours["status"]), keys(&theirs["status"]));
        assert_eq!(keys(&ours["status"]["nodeInfo"]), keys(&theirs["status"]["nodeInfo"]));
        assert_eq!(keys(&ours["status"]["capacity"]), keys(&theirs["status"]["capacity"]));
        assert_eq!(ours["status"]["conditions"][3], theirs["status"]["conditions"][3]);
        assert_eq!(ours["status"]["daemonEndpoints"], theirs["status"]["daemonEndpoints"]);
        assert_eq!(ours["status"]["addresses"], theirs["status"]["addresses"]);
        assert_eq!(ours["metadata"]["annotations"], theirs["metadata"]["annotations"]);
        let mut their_labels = theirs["metadata"]["labels"].as_object().unwrap().clone();
        their_labels.insert("site".into(), "a".into());
        assert_eq!(ours["metadata"]["labels"], Value::Object(their_labels));
    }

    #[test]
    fn times_are_formatted_as_kubernetes_does() {
        let day = |n: i64| time::format_unix(n * 86_400);
        assert_eq!(day(0), "1970-01-01T00:00:00Z");
        assert_eq!(day(20_417), "2025-11-25T00:00:00Z");
        let (s, us) = now_strings();
        assert_eq!(s.len(), 20, "{s}");
        assert_eq!(us.len(), 27, "{us}");
        assert!(s.ends_with('Z') && us.ends_with('Z'));
    }
}
