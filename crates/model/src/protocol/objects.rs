//! The objects an edge sends in its requests, shaped as upstream's edged makes them: the Node
//! it registers (no TypeMeta, the standard labels, four conditions, addresses, the kubelet
//! endpoint, nodeInfo), its Lease, and the status heartbeat patch.
//!
//! They are `serde_json::Value`s, so keys are written in sorted order; upstream (Go structs)
//! writes the Node and Lease in field order. Consumers decode them, so only the values matter,
//! and the tests compare them with the captures by value.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{KUBELET_PORT, LEASE_NAMESPACE};

/// The condition types edged reports, in the order upstream lists them.
const CONDITION_TYPES: [&str; 4] = ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"];

/// Facts about the host a node runs on (read by edged, made up by a hollow node).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostInfo {
    /// Logical CPUs.
    pub cpus: u64,
    /// `MemTotal`, KiB.
    pub memory_ki: u64,
    /// `/etc/machine-id`.
    pub machine_id: String,
    /// `/sys/class/dmi/id/product_uuid` when readable, else the machine id.
    pub system_uuid: String,
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot_id: String,
    /// `/proc/sys/kernel/osrelease`.
    pub kernel_version: String,
    /// `PRETTY_NAME` of `/etc/os-release`.
    pub os_image: String,
    /// Go's `runtime.GOARCH` spelling of the architecture (`amd64`, `arm64`).
    pub architecture: String,
}

/// What a node says about itself in its status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// The node name (the `Hostname` address).
    pub name: String,
    /// The `InternalIP` address.
    pub address: String,
    /// The host: capacity (CPUs, memory) and nodeInfo.
    pub host: HostInfo,
    /// Allocatable memory, KiB (capacity less what is kept back).
    pub allocatable_memory_ki: u64,
    /// `maxPods`.
    pub max_pods: i32,
    /// `nodeInfo.containerRuntimeVersion`, e.g. `containerd://1.6.20`.
    pub runtime_version: String,
}

/// The version an edge reports as `kubeletVersion`, upstream's form
/// `v{kubernetes}-kubeedge-v{ours}`.
pub fn kubelet_version() -> String {
    format!("v1.30.0-kubeedge-v{}", crate::version::version())
}

fn condition(kind: &str, status: &str, reason: &str, message: &str, now: &str) -> Value {
    json!({"type": kind, "status": status, "lastHeartbeatTime": now, "lastTransitionTime": now,
        "reason": reason, "message": message})
}

/// The node's labels: upstream's standard set and the edge roles.
pub fn node_labels(name: &str, architecture: &str) -> BTreeMap<String, String> {
    [
        ("beta.kubernetes.io/arch", architecture),
        ("beta.kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", architecture),
        ("kubernetes.io/hostname", name),
        ("kubernetes.io/os", "linux"),
        ("node-role.kubernetes.io/agent", ""),
        ("node-role.kubernetes.io/edge", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The node's status at `now` (RFC 3339, seconds): capacity, allocatable, the four conditions
/// (Ready), addresses, the kubelet endpoint and nodeInfo.
pub fn node_status(facts: &NodeFacts, now: &str) -> Value {
    let host = &facts.host;
    let resources = |memory_ki: u64| {
        json!({"cpu": host.cpus.to_string(), "hugepages-1Gi": "0", "hugepages-2Mi": "0",
            "memory": format!("{memory_ki}Ki"), "pods": facts.max_pods.to_string()})
    };
    json!({
        "capacity": resources(host.memory_ki),
        "allocatable": resources(facts.allocatable_memory_ki),
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available", now),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure", now),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available", now),
            condition("Ready", "True", "EdgeReady", "edge is posting ready status", now),
        ],
        "addresses": [{"type": "InternalIP", "address": facts.address}, {"type": "Hostname", "address": facts.name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": KUBELET_PORT}},
        "nodeInfo": {
            "machineID": host.machine_id, "systemUUID": host.system_uuid, "bootID": host.boot_id,
            "kernelVersion": host.kernel_version, "osImage": host.os_image,
            "containerRuntimeVersion": facts.runtime_version, "kubeletVersion": kubelet_version(),
            "kubeProxyVersion": format!("v{}", crate::version::version()),
            "operatingSystem": "linux", "architecture": host.architecture,
        },
    })
}

/// The Node an edge registers (no TypeMeta, as upstream's edge sends it); an unschedulable
/// node says so in its spec.
pub fn node_object(name: &str, labels: &BTreeMap<String, String>, schedulable: bool, status: Value) -> Value {
    let spec = if schedulable { json!({}) } else { json!({"unschedulable": true}) };
    json!({
        "metadata": {"name": name, "creationTimestamp": null, "labels": labels,
            "annotations": {"volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
        "spec": spec,
        "status": status,
    })
}

/// The patch that brings a node's whole status up to date: `{"status": …}`.
pub fn status_patch(status: &Value) -> Value {
    json!({ "status": status })
}

/// A strategic-merge patch of the node's status that refreshes the condition heartbeats (what
/// upstream's periodic nodepatch carries when nothing else changed).
pub fn heartbeat_patch(now: &str) -> Value {
    json!({"status": {
        "$setElementOrder/conditions": CONDITION_TYPES.iter().map(|t| json!({"type": t})).collect::<Vec<_>>(),
        "conditions": CONDITION_TYPES.iter().map(|t| json!({"lastHeartbeatTime": now, "type": t})).collect::<Vec<_>>(),
    }})
}

/// The node's Lease at `renew_time` (RFC 3339 with microseconds), owned by the Node.
pub fn lease_object(node: &str, node_uid: &str, duration_secs: i32, renew_time: &str) -> Value {
    json!({
        "metadata": {"name": node, "namespace": LEASE_NAMESPACE, "creationTimestamp": null,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": node_uid}]},
        "spec": {"holderIdentity": node, "leaseDurationSeconds": duration_secs, "renewTime": renew_time},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unschedulable_node_says_so() {
        let labels = node_labels("e", "arm64");
        assert_eq!(labels["kubernetes.io/arch"], "arm64");
        assert_eq!(labels["kubernetes.io/hostname"], "e");
        let n = node_object("e", &labels, false, json!({}));
        assert_eq!(n["spec"], json!({"unschedulable": true}));
        assert_eq!(node_object("e", &labels, true, json!({}))["spec"], json!({}));
    }

    #[test]
    fn status_reports_the_facts() {
        let facts = NodeFacts {
            name: "e".into(),
            address: "192.0.2.1".into(),
            host: HostInfo { cpus: 4, memory_ki: 1000, ..HostInfo::default() },
            allocatable_memory_ki: 900,
            max_pods: 110,
            ..NodeFacts::default()
        };
        let s = node_status(&facts, "2026-11-25T19:54:28Z");
        assert_eq!(s["capacity"]["memory"], "1000Ki");
        assert_eq!(s["allocatable"]["memory"], "900Ki");
        assert_eq!(s["allocatable"]["pods"], "110");
        assert_eq!(s["conditions"][3]["type"], "Ready");
        assert_eq!(s["addresses"][0]["address"], "192.0.2.1");
        assert_eq!(s["daemonEndpoints"]["kubeletEndpoint"]["Port"], 10350);
        assert!(s["nodeInfo"]["kubeletVersion"].as_str().unwrap().contains("-kubeedge-v"));
        assert_eq!(status_patch(&s)["status"], s);
    }
}
