//! The messages a hollow node sends, in the shapes edgecore's edged, MetaManager and EdgeHub
//! send them (`edgecore/src/edged/{node,mod,module}.rs`, `edgecore/src/metamanager/module.rs`,
//! `edgecore/src/edgehub/module.rs`; the upstream captures in
//! `tests/fixtures/upstream/`). Copied rather than shared: edgecore is a daemon
//! crate, and a load generator must not pull its runtime in.

use kubeedge_model::constants::{group, module, operation, resource_type};
use kubeedge_model::{Content, Message};
use serde_json::{Value, json};

/// The namespace of node leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// Upstream's `registerNodeNamespace` default: node resources go to `default/node/{name}`.
pub const NODE_NAMESPACE: &str = "default";

fn edged(resource: String, op: &str, content: Content) -> Message {
    Message::build(module::EDGED, group::META, resource, op, content)
}

/// EdgeHub's keepalive: `keepalive` on resource `node`, content `"ping"`.
pub fn keepalive() -> Message {
    Message::build(module::EDGEHUB, group::RESOURCE, "node", operation::KEEPALIVE, Content::string("ping"))
}

/// MetaManager's ACK of a cloud message: a `response` with content `"OK"`.
pub fn ack(msg: &Message) -> Message {
    Message::response_to(msg, Content::string("OK"))
}

/// Whether MetaManager ACKs this cloud message: everything but replies, and replies that came
/// through the cloud's ACK path (they carry a resourceVersion). Keepalives need nothing.
pub fn needs_ack(msg: &Message) -> bool {
    if msg.router.operation == operation::KEEPALIVE {
        return false;
    }
    msg.router.operation != operation::RESPONSE || !msg.header.resource_version.is_empty()
}

fn condition(kind: &str, status: &str, reason: &str, message: &str, now: &str) -> Value {
    json!({"type": kind, "status": status, "lastHeartbeatTime": now, "lastTransitionTime": now,
        "reason": reason, "message": message})
}

/// The node's status: a fake host of 4 CPUs and 8 GiB, Ready.
pub fn node_status(name: &str, ip: &str, now: &str) -> Value {
    let res = json!({"cpu": "4", "hugepages-1Gi": "0", "hugepages-2Mi": "0", "memory": "8039920Ki", "pods": "110"});
    json!({
        "capacity": res,
        "allocatable": res,
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available", now),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure", now),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available", now),
            condition("Ready", "True", "EdgeReady", "edge is posting ready status", now),
        ],
        "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10350}},
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "hollow",
            "osImage": "hollow", "containerRuntimeVersion": "fake://0.1.0",
            "kubeletVersion": format!("v1.30.0-kubeedge-v{}", env!("CARGO_PKG_VERSION")),
            "kubeProxyVersion": format!("v{}", env!("CARGO_PKG_VERSION")),
            "operatingSystem": "linux", "architecture": "amd64",
        },
    })
}

/// Registration, as edged sends it: `insert` of the Node (no TypeMeta, the edge labels) to
/// `default/node/{name}`.
pub fn node_insert(name: &str, ip: &str, now: &str) -> Message {
    let node = json!({
        "metadata": {"name": name, "creationTimestamp": null, "labels": {
            "beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
            "node-role.kubernetes.io/agent": "", "node-role.kubernetes.io/edge": ""},
            "annotations": {"volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
        "spec": {},
        "status": node_status(name, ip, now),
    });
    edged(
        format!("{NODE_NAMESPACE}/{}/{name}", resource_type::NODE),
        operation::INSERT,
        Content::json(&node).unwrap_or_else(|_| Content::null()),
    )
}

/// A node status patch (strategic merge, as a JSON string) to `default/nodepatch/{name}`.
pub fn node_patch(name: &str, patch: &Value) -> Message {
    edged(
        format!("{NODE_NAMESPACE}/{}/{name}", resource_type::NODE_PATCH),
        operation::PATCH,
        Content::string(&patch.to_string()),
    )
}

/// The periodic status heartbeat: only the conditions' heartbeat times.
pub fn heartbeat_patch(now: &str) -> Value {
    let types = ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"];
    json!({"status": {
        "$setElementOrder/conditions": types.iter().map(|t| json!({"type": t})).collect::<Vec<_>>(),
        "conditions": types.iter().map(|t| json!({"lastHeartbeatTime": now, "type": t})).collect::<Vec<_>>(),
    }})
}

/// The lease edged creates (insert) at `renew` (MicroTime), owned by the Node.
pub fn lease_insert(node: &str, node_uid: &str, duration_secs: u64, renew: &str) -> Message {
    let lease = json!({
        "metadata": {"name": node, "namespace": LEASE_NAMESPACE, "creationTimestamp": null,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": node_uid}]},
        "spec": {"holderIdentity": node, "leaseDurationSeconds": duration_secs, "renewTime": renew},
    });
    edged(
        format!("{LEASE_NAMESPACE}/{}/{node}", resource_type::LEASE),
        operation::INSERT,
        Content::json(&lease).unwrap_or_else(|_| Content::null()),
    )
}

/// A lease renewal: `update` of the stored Lease (with its resourceVersion) with a new
/// `renewTime`.
pub fn lease_update(node: &str, mut stored: Value, renew: &str) -> Message {
    stored["spec"]["renewTime"] = Value::String(renew.to_owned());
    edged(
        format!("{LEASE_NAMESPACE}/{}/{node}", resource_type::LEASE),
        operation::UPDATE,
        Content::json(&stored).unwrap_or_else(|_| Content::null()),
    )
}

/// A pod status patch as edged sends it: a strategic-merge patch with the UID, as a JSON
/// string, to `{ns}/podpatch/{name}`.
pub fn pod_patch(ns: &str, name: &str, uid: &str, status: &Value) -> Message {
    let patch = json!({"metadata": {"uid": uid}, "status": status});
    edged(format!("{ns}/{}/{name}", resource_type::POD_PATCH), operation::PATCH, Content::string(&patch.to_string()))
}

/// The status of a pod whose containers all run (what edged reads from CRI once started).
pub fn running_status(host_ip: &str, pod_ip: &str, started: &str, containers: &[(String, String)], uid: &str) -> Value {
    let statuses: Vec<Value> = containers
        .iter()
        .enumerate()
        .map(|(i, (name, image))| {
            json!({"name": name, "state": {"running": {"startedAt": started}}, "lastState": {}, "ready": true,
                "restartCount": 0, "image": image, "imageID": format!("sha256:{:064x}", i),
                "containerID": format!("fake://{uid}-{i}"), "started": true})
        })
        .collect();
    let cond = |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": started});
    json!({
        "phase": "Running",
        "conditions": [cond("Initialized"), cond("Ready"), cond("ContainersReady"), cond("PodScheduled")],
        "hostIP": host_ip,
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": started,
        "containerStatuses": statuses,
    })
}

/// The status of a pod whose containers were stopped for its deletion.
pub fn terminated_status(host_ip: &str, pod_ip: &str, now: &str, containers: &[(String, String)], uid: &str) -> Value {
    let statuses: Vec<Value> = containers
        .iter()
        .enumerate()
        .map(|(i, (name, image))| {
            json!({"name": name, "state": {"terminated": {"exitCode": 0, "reason": "Completed", "finishedAt": now,
                "containerID": format!("fake://{uid}-{i}")}}, "lastState": {}, "ready": false,
                "restartCount": 0, "image": image, "started": false})
        })
        .collect();
    let cond = |t: &str, s: &str| json!({"type": t, "status": s, "lastTransitionTime": now});
    json!({
        "conditions": [cond("Initialized", "True"), cond("Ready", "False"), cond("ContainersReady", "False"),
            cond("PodScheduled", "True")],
        "hostIP": host_ip,
        "podIP": pod_ip,
        "containerStatuses": statuses,
    })
}

/// After stopping a terminating pod, edged asks the cloud to delete it: `delete` with grace 0
/// and a UID precondition.
pub fn pod_delete(ns: &str, name: &str, uid: &str) -> Message {
    edged(
        format!("{ns}/{}/{name}", resource_type::POD),
        operation::DELETE,
        Content::json(&json!({"gracePeriodSeconds": 0, "preconditions": {"uid": uid}})).unwrap_or(Content::null()),
    )
}

/// The object of an `{"Object","Err"}` reply, or the error's reason and code.
pub fn object_resp(reply: &Message) -> Result<Value, (String, i64)> {
    if reply.router.operation == operation::ERROR {
        return Err((reply.content.as_str().map(|s| s.into_owned()).unwrap_or_default(), 0));
    }
    let v: Value = reply.content.decode().unwrap_or(Value::Null);
    let err = v.get("Err").filter(|e| !e.is_null()).or_else(|| v.get("ErrStatus").map(|_| &v));
    if let Some(e) = err {
        let status = e.get("ErrStatus").unwrap_or(e);
        let code = status.get("code").and_then(Value::as_i64).unwrap_or(0);
        let reason = status.get("reason").and_then(Value::as_str).unwrap_or("Unknown").to_owned();
        return Err((reason, code));
    }
    Ok(v.get("Object").cloned().unwrap_or(v))
}

/// Now, as Kubernetes writes times: seconds (`…Z`) and microseconds (`MicroTime`).
pub fn now_strings() -> (String, String) {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = kubeedge_kube_serve::object::format_rfc3339(i64::try_from(since.as_secs()).unwrap_or(i64::MAX));
    let micro = format!("{}.{:06}Z", secs.trim_end_matches('Z'), since.subsec_micros());
    (secs, micro)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let path = format!("{}/../../tests/fixtures/upstream/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("fixture JSON")
    }

    #[test]
    fn keepalive_ack_and_patches_have_edgecores_shapes() {
        let k = keepalive();
        assert_eq!((k.router.resource.as_str(), k.router.operation.as_str()), ("node", "keepalive"));
        assert_eq!(k.content.as_str().as_deref(), Some("ping"));
        let mut pod = Message::build("edgecontroller", "resource", "default/pod/p", "insert", Content::null());
        pod.header.resource_version = "7".into();
        let a = ack(&pod);
        assert_eq!(a.header.parent_id, pod.header.id);
        assert_eq!(a.router.operation, "response");
        assert_eq!(a.content.as_str().as_deref(), Some("OK"));
        assert!(needs_ack(&pod));
        assert!(!needs_ack(&Message::response_to(&pod, Content::null())));
        let p = pod_patch("default", "p", "u1", &json!({"phase": "Running"}));
        assert_eq!((p.router.resource.as_str(), p.router.operation.as_str()), ("default/podpatch/p", "patch"));
        assert_eq!((p.router.source.as_str(), p.router.group.as_str()), ("edged", "meta"));
        let body: Value = p.content.decode().unwrap();
        assert_eq!(body["metadata"]["uid"], "u1");
        assert_eq!(body["status"]["phase"], "Running");
        let d = pod_delete("default", "p", "u1");
        let body: Value = d.content.decode().unwrap();
        assert_eq!(body, json!({"gracePeriodSeconds": 0, "preconditions": {"uid": "u1"}}));
    }

    #[test]
    fn heartbeat_patch_matches_the_upstream_capture() {
        let theirs = fixture("edge-nodepatch.json");
        let text = theirs["content"].as_str().expect("a string content");
        let theirs: Value = serde_json::from_str(text).unwrap();
        let now = theirs.pointer("/status/conditions/0/lastHeartbeatTime").and_then(Value::as_str).unwrap_or("");
        assert_eq!(heartbeat_patch(now), theirs);
    }

    #[test]
    fn keepalive_matches_the_upstream_capture() {
        let theirs = fixture("edge-keepalive.json");
        let ours: Value = serde_json::from_slice(&keepalive().encode()).unwrap();
        assert_eq!(ours["route"], theirs["route"]);
        assert_eq!(ours["content"], theirs["content"]);
    }

    #[test]
    fn times_are_formatted_as_kubernetes_does() {
        let (secs, micro) = now_strings();
        assert_eq!(secs.len(), "2026-11-25T20:01:52Z".len());
        assert_eq!(micro.len(), "2026-11-25T19:54:28.876201Z".len());
        assert_eq!(kubeedge_kube_serve::object::format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(kubeedge_kube_serve::object::format_rfc3339(20_417 * 86_400), "2025-11-25T00:00:00Z");
    }
}
