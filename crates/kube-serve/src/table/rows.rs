//! Row functions: the cells of one object's row, per resource kind, in the order of its
//! column definitions (see `printers.rs`).

use serde_json::{Map, Value, json};

use super::age::{age_since, human_duration};
use crate::time::parse_unix;

pub(super) fn text(v: &Value, ptr: &str) -> String {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("").to_string()
}

pub(super) fn or_none(s: String) -> String {
    if s.is_empty() { "<none>".into() } else { s }
}

pub(super) fn items<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

pub(super) fn map_len(v: &Value, ptr: &str) -> usize {
    v.pointer(ptr).and_then(Value::as_object).map(Map::len).unwrap_or(0)
}

pub(super) fn age(o: &Value, now: i64) -> Value {
    json!(age_since(o.pointer("/metadata/creationTimestamp").and_then(Value::as_str), now))
}

pub(super) fn int(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

pub(super) fn pod_row(pod: &Value, now: i64) -> (Vec<Value>, Option<Value>) {
    let containers = items(pod, "/spec/containers");
    let init_specs = items(pod, "/spec/initContainers");
    let restartable = |name: &str| {
        init_specs.iter().any(|c| {
            c.get("name").and_then(Value::as_str) == Some(name)
                && c.get("restartPolicy").and_then(Value::as_str) == Some("Always")
        })
    };
    let total = containers.len() + init_specs.iter().filter(|c| c["restartPolicy"] == "Always").count();
    let mut ready = 0usize;
    let mut restarts = 0i64;
    let mut last_restart = 0i64;
    let mut sidecar_restarts = 0i64;
    let mut sidecar_last_restart = 0i64;
    let phase = text(pod, "/status/phase");
    let mut reason = phase.clone();
    let status_reason = text(pod, "/status/reason");
    if !status_reason.is_empty() {
        reason = status_reason.clone();
    }
    let conditions = items(pod, "/status/conditions");
    if conditions.iter().any(|c| c["type"] == "PodScheduled" && c["reason"] == "SchedulingGated") {
        reason = "SchedulingGated".into();
    }
    let finished = |c: &Value| {
        c.pointer("/lastState/terminated/finishedAt").and_then(Value::as_str).and_then(parse_unix).unwrap_or(0)
    };
    let mut initializing = false;
    for (i, cs) in items(pod, "/status/initContainerStatuses").iter().enumerate() {
        let name = text(cs, "/name");
        let count = int(cs, "/restartCount");
        restarts += count;
        last_restart = last_restart.max(finished(cs));
        if restartable(&name) {
            sidecar_restarts += count;
            sidecar_last_restart = sidecar_last_restart.max(finished(cs));
        }
        let terminated = cs.pointer("/state/terminated");
        let waiting_reason = text(cs, "/state/waiting/reason");
        if terminated.is_some_and(|t| t["exitCode"].as_i64() == Some(0)) {
            continue;
        }
        if restartable(&name) && cs["started"] == true {
            if cs["ready"] == true {
                ready += 1;
            }
            continue;
        }
        if let Some(t) = terminated {
            let r = text(t, "/reason");
            reason = if !r.is_empty() {
                format!("Init:{r}")
            } else if int(t, "/signal") != 0 {
                format!("Init:Signal:{}", int(t, "/signal"))
            } else {
                format!("Init:ExitCode:{}", int(t, "/exitCode"))
            };
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            reason = format!("Init:{waiting_reason}");
        } else {
            reason = format!("Init:{i}/{}", init_specs.len());
        }
        initializing = true;
        break;
    }
    let initialized = conditions.iter().any(|c| c["type"] == "Initialized" && c["status"] == "True");
    if !initializing || initialized {
        restarts = sidecar_restarts;
        last_restart = sidecar_last_restart;
        let mut has_running = false;
        for cs in items(pod, "/status/containerStatuses").iter().rev() {
            restarts += int(cs, "/restartCount");
            last_restart = last_restart.max(finished(cs));
            let waiting = text(cs, "/state/waiting/reason");
            let terminated = cs.pointer("/state/terminated");
            if !waiting.is_empty() {
                reason = waiting;
            } else if let Some(t) = terminated {
                let r = text(t, "/reason");
                reason = if !r.is_empty() {
                    r
                } else if int(t, "/signal") != 0 {
                    format!("Signal:{}", int(t, "/signal"))
                } else {
                    format!("ExitCode:{}", int(t, "/exitCode"))
                };
            } else if cs["ready"] == true && cs.pointer("/state/running").is_some() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready = conditions.iter().any(|c| c["type"] == "Ready" && c["status"] == "True");
            reason = if pod_ready { "Running".into() } else { "NotReady".into() };
        }
    }
    let deleting = pod.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null());
    if deleting && status_reason == "NodeLost" {
        reason = "Unknown".into();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".into();
    }
    let restarts_cell = if restarts != 0 && last_restart != 0 {
        format!("{restarts} ({} ago)", human_duration(now - last_restart))
    } else {
        restarts.to_string()
    };
    let gates = items(pod, "/spec/readinessGates");
    let gates_cell = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let met = gates
            .iter()
            .filter(|g| conditions.iter().any(|c| c["type"] == g["conditionType"] && c["status"] == "True"))
            .count();
        format!("{met}/{}", gates.len())
    };
    let cells = vec![
        json!(text(pod, "/metadata/name")),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_cell),
        age(pod, now),
        json!(or_none(text(pod, "/status/podIP"))),
        json!(or_none(text(pod, "/spec/nodeName"))),
        json!(or_none(text(pod, "/status/nominatedNodeName"))),
        json!(gates_cell),
    ];
    let conditions = match phase.as_str() {
        "Succeeded" => Some(json!([{"type": "Completed", "status": "True", "reason": "Succeeded",
                                     "message": "The pod has completed successfully."}])),
        "Failed" => Some(json!([{"type": "Completed", "status": "True", "reason": "Failed",
                                  "message": "The pod failed."}])),
        _ => None,
    };
    (cells, conditions)
}

/// Node roles from `node-role.kubernetes.io/<role>` and `kubernetes.io/role` labels, sorted.
fn node_roles(node: &Value) -> Vec<String> {
    let mut roles = std::collections::BTreeSet::new();
    for (k, v) in node.pointer("/metadata/labels").and_then(Value::as_object).into_iter().flatten() {
        let role = match k.strip_prefix("node-role.kubernetes.io/") {
            Some(role) => role,
            None if k == "kubernetes.io/role" => v.as_str().unwrap_or(""),
            None => "",
        };
        if !role.is_empty() {
            roles.insert(role.to_string());
        }
    }
    roles.into_iter().collect()
}

pub(super) fn node_row(node: &Value, now: i64) -> (Vec<Value>, Option<Value>) {
    let mut status = Vec::new();
    if let Some(c) = items(node, "/status/conditions").iter().rev().find(|c| c["type"] == "Ready") {
        status.push(if c["status"] == "True" { "Ready" } else { "NotReady" });
    }
    if status.is_empty() {
        status.push("Unknown");
    }
    if node.pointer("/spec/unschedulable") == Some(&Value::Bool(true)) {
        status.push("SchedulingDisabled");
    }
    let roles = node_roles(node).join(",");
    let address = |ty: &str| {
        let addr = items(node, "/status/addresses").iter().find(|a| a["type"] == ty);
        or_none(addr.map(|a| text(a, "/address")).unwrap_or_default())
    };
    let unknown = |s: String| if s.is_empty() { "<unknown>".to_string() } else { s };
    let cells = vec![
        json!(text(node, "/metadata/name")),
        json!(status.join(",")),
        json!(or_none(roles)),
        age(node, now),
        json!(text(node, "/status/nodeInfo/kubeletVersion")),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(unknown(text(node, "/status/nodeInfo/osImage"))),
        json!(unknown(text(node, "/status/nodeInfo/kernelVersion"))),
        json!(unknown(text(node, "/status/nodeInfo/containerRuntimeVersion"))),
    ];
    (cells, None)
}

pub(super) fn service_row(svc: &Value, now: i64) -> (Vec<Value>, Option<Value>) {
    let ty = text(svc, "/spec/type");
    let ty = if ty.is_empty() { "ClusterIP".to_string() } else { ty };
    let external_ips: Vec<String> =
        items(svc, "/spec/externalIPs").iter().filter_map(Value::as_str).map(str::to_string).collect();
    let lb_ips: Vec<String> = items(svc, "/status/loadBalancer/ingress")
        .iter()
        .filter_map(|i| i.get("ip").or_else(|| i.get("hostname")).and_then(Value::as_str))
        .map(str::to_string)
        .collect();
    let external = match ty.as_str() {
        "ClusterIP" | "NodePort" => or_none(external_ips.join(",")),
        "LoadBalancer" => {
            let all: Vec<String> = lb_ips.into_iter().chain(external_ips).collect();
            if all.is_empty() { "<pending>".into() } else { all.join(",") }
        }
        "ExternalName" => text(svc, "/spec/externalName"),
        _ => "<unknown>".into(),
    };
    let ports: Vec<String> = items(svc, "/spec/ports")
        .iter()
        .map(|p| {
            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            match int(p, "/nodePort") {
                0 => format!("{}/{proto}", int(p, "/port")),
                np => format!("{}:{np}/{proto}", int(p, "/port")),
            }
        })
        .collect();
    let mut selector: Vec<String> = svc
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    selector.sort();
    let cells = vec![
        json!(text(svc, "/metadata/name")),
        json!(ty),
        json!(or_none(text(svc, "/spec/clusterIP"))),
        json!(external),
        json!(or_none(ports.join(","))),
        age(svc, now),
        json!(or_none(selector.join(","))),
    ];
    (cells, None)
}

pub(super) fn event_row(ev: &Value, now: i64) -> (Vec<Value>, Option<Value>) {
    let ts = |ptr: &str| ev.pointer(ptr).and_then(Value::as_str).filter(|s| !s.is_empty());
    let first = match ts("/firstTimestamp") {
        Some(t) => age_since(Some(t), now),
        None => age_since(ts("/eventTime"), now),
    };
    let mut last = match ts("/lastTimestamp") {
        Some(t) => age_since(Some(t), now),
        None => first.clone(),
    };
    let mut count = int(ev, "/count");
    if ev.get("series").is_some_and(|s| !s.is_null()) {
        last = age_since(ts("/series/lastObservedTime"), now);
        count = int(ev, "/series/count");
    } else if count == 0 {
        count = 1;
    }
    let kind = text(ev, "/involvedObject/kind").to_lowercase();
    let obj_name = text(ev, "/involvedObject/name");
    let target = if obj_name.is_empty() { kind } else { format!("{kind}/{obj_name}") };
    let mut component = text(ev, "/source/component");
    if component.is_empty() {
        component = text(ev, "/reportingComponent");
    }
    let mut source = vec![component];
    let host = text(ev, "/source/host");
    let instance = text(ev, "/reportingInstance");
    if !host.is_empty() {
        source.push(host);
    } else if !instance.is_empty() {
        source.push(instance);
    }
    let cells = vec![
        json!(last),
        json!(text(ev, "/type")),
        json!(text(ev, "/reason")),
        json!(target),
        json!(text(ev, "/involvedObject/fieldPath")),
        json!(source.join(", ")),
        json!(text(ev, "/message").trim()),
        json!(first),
        json!(count),
        json!(text(ev, "/metadata/name")),
    ];
    (cells, None)
}

pub(super) fn deployment_row(d: &Value, now: i64) -> (Vec<Value>, Option<Value>) {
    let containers = items(d, "/spec/template/spec/containers");
    let names: Vec<String> = containers.iter().map(|c| text(c, "/name")).collect();
    let images: Vec<String> = containers.iter().map(|c| text(c, "/image")).collect();
    let selector = d
        .pointer("/spec/selector")
        .and_then(|s| crate::selector::LabelSelector::from_json(s).ok())
        .map(|s| s.to_string())
        .unwrap_or_default();
    let desired = d.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
    let cells = vec![
        json!(text(d, "/metadata/name")),
        json!(format!("{}/{desired}", int(d, "/status/readyReplicas"))),
        json!(int(d, "/status/updatedReplicas")),
        json!(int(d, "/status/availableReplicas")),
        age(d, now),
        json!(names.join(",")),
        json!(images.join(",")),
        json!(or_none(selector)),
    ];
    (cells, None)
}
