//! What a hollow node makes up instead of reading a host and a runtime: its host facts (4 CPUs,
//! 8 GiB, a `fake://` runtime) and the statuses of its pods. The messages that carry them are the
//! model's (`kubeedge_model::protocol`), the same as edgecore's.

use kubeedge_kube_serve::time;
use kubeedge_model::protocol::objects::{HostInfo, NodeFacts};
use serde_json::{Value, json};

/// A hollow node's memory, KiB (capacity and allocatable alike).
const MEMORY_KI: u64 = 8_039_920;

/// The facts of a hollow node `name` at `ip`: a fake host of 4 CPUs and 8 GiB.
pub fn node_facts(name: &str, ip: &str) -> NodeFacts {
    let host = HostInfo {
        cpus: 4,
        memory_ki: MEMORY_KI,
        kernel_version: "hollow".to_owned(),
        os_image: "hollow".to_owned(),
        architecture: "amd64".to_owned(),
        ..HostInfo::default()
    };
    NodeFacts {
        name: name.to_owned(),
        address: ip.to_owned(),
        host,
        allocatable_memory_ki: MEMORY_KI,
        max_pods: 110,
        runtime_version: "fake://0.1.0".to_owned(),
    }
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

/// Now, as Kubernetes writes times: seconds (`…Z`) and microseconds (`MicroTime`).
pub fn now_strings() -> (String, String) {
    let now = time::OffsetDateTime::now_utc();
    (time::format(now), time::format_micro(now))
}

#[cfg(test)]
mod tests {
    use kubeedge_model::protocol::objects;

    use super::*;

    #[test]
    fn the_fake_host_has_the_shape_of_a_real_one() {
        let status = objects::node_status(&node_facts("h", "172.16.0.1"), "2026-11-25T19:54:28Z");
        assert_eq!(status["capacity"], status["allocatable"]);
        assert_eq!(status["capacity"]["memory"], "8039920Ki");
        assert_eq!(status["nodeInfo"]["containerRuntimeVersion"], "fake://0.1.0");
        assert_eq!(status["nodeInfo"]["osImage"], "hollow");
        assert_eq!(status["addresses"][1], json!({"type": "Hostname", "address": "h"}));
        let containers = [("c".to_owned(), "busybox".to_owned())];
        let running = running_status("h", "10.0.0.2", "t", &containers, "u");
        assert_eq!(running["containerStatuses"][0]["containerID"], "fake://u-0");
        assert_eq!(terminated_status("h", "10.0.0.2", "t", &containers, "u")["conditions"][1]["status"], "False");
    }

    #[test]
    fn times_are_formatted_as_kubernetes_does() {
        let (secs, micro) = now_strings();
        assert_eq!(secs.len(), "2026-11-25T20:01:52Z".len());
        assert_eq!(micro.len(), "2026-11-25T19:54:28.876201Z".len());
        assert_eq!(time::format_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(time::format_unix(20_417 * 86_400), "2025-11-25T00:00:00Z");
    }
}
