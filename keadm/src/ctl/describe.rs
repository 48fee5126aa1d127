//! `keadm ctl describe pod NAME`: one pod from MetaServer in kubectl's `describe` layout
//! (without Events: MetaServer keeps no events of the node).

use std::fmt::Write as _;

use serde_json::{Map, Value};

use super::client::encode;
use super::edge::Edge;
use super::{Error, pod_kind};

/// `keadm ctl describe` flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The resource type: pod (pods, po); device is not built yet.
    pub resource: String,
    /// The pod.
    pub name: String,
    /// The namespace.
    #[arg(short = 'n', long = "namespace", default_value = "default")]
    pub namespace: String,
}

pub async fn run(args: &Args, edge: &Edge) -> Result<(), Error> {
    pod_kind(&args.resource, "keadm ctl describe")?;
    let path = format!("/api/v1/namespaces/{}/pods/{}", encode(&args.namespace), encode(&args.name));
    let pod = edge.metaserver()?.get_json(&path).await?;
    super::write_out(&pod_text(&pod))
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn or_none(v: &str) -> &str {
    if v.is_empty() { "<none>" } else { v }
}

fn items<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

/// `key=value` lines of a map, indented under the first; `<none>` when empty.
fn map_lines(out: &mut String, title: &str, map: Option<&Map<String, Value>>, sep: &str) {
    let entries: Vec<String> = map
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}{sep}{}", v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
        .collect();
    let head = format!("{title}:");
    if entries.is_empty() {
        let _ = writeln!(out, "{head:<18}<none>");
    }
    for (i, e) in entries.iter().enumerate() {
        let _ = writeln!(out, "{:<18}{e}", if i == 0 { head.as_str() } else { "" });
    }
}

/// One container state as kubectl words it (`Running`, `Waiting`, `Terminated`), with details.
fn state(out: &mut String, title: &str, st: &Value, indent: &str) {
    let Some((kind, detail)) = st.as_object().and_then(|m| m.iter().next()) else {
        return;
    };
    let word = match kind.as_str() {
        "running" => "Running",
        "waiting" => "Waiting",
        "terminated" => "Terminated",
        other => other,
    };
    let _ = writeln!(out, "{indent}{title:<16}{word}");
    for (key, label) in [
        ("reason", "Reason"),
        ("message", "Message"),
        ("exitCode", "Exit Code"),
        ("signal", "Signal"),
        ("startedAt", "Started"),
        ("finishedAt", "Finished"),
    ] {
        if let Some(v) = detail.get(key) {
            let text = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            let _ = writeln!(out, "{indent}  {:<14}{text}", format!("{label}:"));
        }
    }
}

/// The pod in kubectl's `describe` layout.
pub fn pod_text(pod: &Value) -> String {
    let mut out = String::new();
    let line = |out: &mut String, k: &str, v: &str| {
        let _ = writeln!(out, "{:<18}{}", format!("{k}:"), v);
    };
    line(&mut out, "Name", s(pod, "/metadata/name"));
    line(&mut out, "Namespace", s(pod, "/metadata/namespace"));
    let priority = pod.pointer("/spec/priority").and_then(Value::as_i64).unwrap_or(0);
    line(&mut out, "Priority", &priority.to_string());
    let node = format!("{}/{}", or_none(s(pod, "/spec/nodeName")), s(pod, "/status/hostIP"));
    line(&mut out, "Node", node.trim_end_matches('/'));
    line(&mut out, "Start Time", or_none(s(pod, "/status/startTime")));
    map_lines(&mut out, "Labels", pod.pointer("/metadata/labels").and_then(Value::as_object), "=");
    map_lines(&mut out, "Annotations", pod.pointer("/metadata/annotations").and_then(Value::as_object), ": ");
    let mut status = s(pod, "/status/phase").to_owned();
    if !s(pod, "/metadata/deletionTimestamp").is_empty() {
        status = "Terminating".into();
    }
    line(&mut out, "Status", or_none(&status));
    if !s(pod, "/status/reason").is_empty() {
        line(&mut out, "Reason", s(pod, "/status/reason"));
        line(&mut out, "Message", s(pod, "/status/message"));
    }
    line(&mut out, "IP", s(pod, "/status/podIP"));
    let ips: Vec<&str> =
        items(pod, "/status/podIPs").iter().filter_map(|i| i.get("ip").and_then(Value::as_str)).collect();
    if ips.is_empty() {
        line(&mut out, "IPs", "<none>");
    } else {
        out.push_str("IPs:\n");
        for ip in ips {
            let _ = writeln!(out, "  IP:  {ip}");
        }
    }
    for (section, spec_ptr, status_ptr) in [
        ("Init Containers", "/spec/initContainers", "/status/initContainerStatuses"),
        ("Containers", "/spec/containers", "/status/containerStatuses"),
    ] {
        let specs = items(pod, spec_ptr);
        if specs.is_empty() {
            continue;
        }
        let _ = writeln!(out, "{section}:");
        for c in specs {
            let name = s(c, "/name");
            let st = items(pod, status_ptr).iter().find(|x| s(x, "/name") == name);
            container(&mut out, c, st);
        }
    }
    let conditions = items(pod, "/status/conditions");
    if !conditions.is_empty() {
        out.push_str("Conditions:\n  Type              Status\n");
        for c in conditions {
            let _ = writeln!(out, "  {:<18}{}", s(c, "/type"), s(c, "/status"));
        }
    }
    let volumes = items(pod, "/spec/volumes");
    if volumes.is_empty() {
        out.push_str("Volumes:          <none>\n");
    } else {
        out.push_str("Volumes:\n");
        for v in volumes {
            let _ = writeln!(out, "  {}:", s(v, "/name"));
            if let Some((kind, detail)) = v.as_object().and_then(|m| m.iter().find(|(k, _)| *k != "name")) {
                let _ = writeln!(out, "    Type:  {kind}");
                for key in ["name", "secretName", "path", "medium", "claimName"] {
                    if let Some(x) = detail.get(key).and_then(Value::as_str) {
                        let _ = writeln!(out, "    {key}:  {x}");
                    }
                }
            }
        }
    }
    line(&mut out, "QoS Class", or_none(s(pod, "/status/qosClass")));
    map_lines(&mut out, "Node-Selectors", pod.pointer("/spec/nodeSelector").and_then(Value::as_object), "=");
    let tolerations: Vec<String> = items(pod, "/spec/tolerations")
        .iter()
        .map(|t| {
            let mut x = s(t, "/key").to_owned();
            if !s(t, "/value").is_empty() {
                x = format!("{x}={}", s(t, "/value"));
            }
            if !s(t, "/effect").is_empty() {
                x = format!("{x}:{}", s(t, "/effect"));
            }
            if let Some(secs) = t.get("tolerationSeconds").and_then(Value::as_i64) {
                x = format!("{x} for {secs}s");
            }
            x
        })
        .collect();
    line(&mut out, "Tolerations", or_none(&tolerations.join(", ")));
    out
}

fn container(out: &mut String, c: &Value, st: Option<&Value>) {
    let _ = writeln!(out, "  {}:", s(c, "/name"));
    let field = |out: &mut String, k: &str, v: &str| {
        let _ = writeln!(out, "    {:<16}{}", format!("{k}:"), v);
    };
    if let Some(st) = st {
        field(out, "Container ID", s(st, "/containerID"));
    }
    field(out, "Image", s(c, "/image"));
    if let Some(st) = st {
        field(out, "Image ID", s(st, "/imageID"));
    }
    let ports: Vec<String> = items(c, "/ports")
        .iter()
        .map(|p| {
            let port = p.get("containerPort").map(Value::to_string).unwrap_or_default();
            format!("{port}/{}", p.get("protocol").and_then(Value::as_str).unwrap_or("TCP"))
        })
        .collect();
    field(out, "Port", or_none(&ports.join(", ")));
    for (key, label) in [("command", "Command"), ("args", "Args")] {
        let parts = items(c, &format!("/{key}"));
        if !parts.is_empty() {
            let _ = writeln!(out, "    {label}:");
            for p in parts {
                let _ = writeln!(out, "      {}", p.as_str().unwrap_or(""));
            }
        }
    }
    if let Some(st) = st {
        state(out, "State:", st.get("state").unwrap_or(&Value::Null), "    ");
        state(out, "Last State:", st.get("lastState").unwrap_or(&Value::Null), "    ");
        field(out, "Ready", if st.get("ready") == Some(&Value::Bool(true)) { "True" } else { "False" });
        field(out, "Restart Count", &st.get("restartCount").and_then(Value::as_i64).unwrap_or(0).to_string());
    }
    for (key, label) in [("limits", "Limits"), ("requests", "Requests")] {
        if let Some(m) = c.pointer(&format!("/resources/{key}")).and_then(Value::as_object) {
            let _ = writeln!(out, "    {label}:");
            for (k, v) in m {
                let _ = writeln!(out, "      {k}:  {}", v.as_str().map_or_else(|| v.to_string(), str::to_owned));
            }
        }
    }
    let env = items(c, "/env");
    if env.is_empty() {
        field(out, "Environment", "<none>");
    } else {
        let _ = writeln!(out, "    Environment:");
        for e in env {
            // Values from secrets and configmaps are named, never resolved.
            let value = match (e.get("value").and_then(Value::as_str), e.get("valueFrom")) {
                (Some(v), _) => v.to_owned(),
                (None, Some(from)) => match from.as_object().and_then(|m| m.iter().next()) {
                    Some((kind, r)) => format!("<set to the key '{}' of {kind} '{}'>", s(r, "/key"), s(r, "/name")),
                    None => String::new(),
                },
                (None, None) => String::new(),
            };
            let _ = writeln!(out, "      {}:  {value}", s(e, "/name"));
        }
    }
    let mounts = items(c, "/volumeMounts");
    if mounts.is_empty() {
        field(out, "Mounts", "<none>");
    } else {
        let _ = writeln!(out, "    Mounts:");
        for m in mounts {
            let ro = if m.get("readOnly") == Some(&Value::Bool(true)) { "ro" } else { "rw" };
            let _ = writeln!(out, "      {} from {} ({ro})", s(m, "/mountPath"), s(m, "/name"));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn describes_a_pod_as_kubectl_lays_it_out() {
        let pod = json!({"metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"nodeName": "edge-1", "containers": [{"name": "main", "image": "busybox",
                "command": ["sh", "-c", "sleep 1"],
                "env": [{"name": "A", "value": "1"}, {"name": "P", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}}],
                "volumeMounts": [{"name": "cfg", "mountPath": "/cfg", "readOnly": true}]}],
                "volumes": [{"name": "cfg", "configMap": {"name": "cfg"}}]},
            "status": {"phase": "Running", "hostIP": "10.1.1.1", "podIP": "10.0.0.7", "qosClass": "BestEffort",
                "podIPs": [{"ip": "10.0.0.7"}],
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "main", "ready": true, "restartCount": 3, "containerID": "containerd://abc",
                    "state": {"running": {"startedAt": "2024-01-01T00:00:00Z"}},
                    "lastState": {"terminated": {"exitCode": 137, "reason": "Error"}}}]}});
        let text = pod_text(&pod);
        for needle in [
            "Name:             web",
            "Node:             edge-1/10.1.1.1",
            "Labels:           app=web",
            "Status:           Running",
            "  main:",
            "    Container ID:   containerd://abc",
            "    State:          Running",
            "    Last State:     Terminated",
            "      Exit Code:    137",
            "    Restart Count:  3",
            "      P:  <set to the key 'password' of secretKeyRef 'sec'>",
            "      /cfg from cfg (ro)",
            "  Ready             True",
            "    Type:  configMap",
            "QoS Class:        BestEffort",
        ] {
            assert!(text.contains(needle), "{needle:?} missing in\n{text}");
        }
    }
}
