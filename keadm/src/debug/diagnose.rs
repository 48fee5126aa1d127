//! `keadm debug diagnose node|pod NAME|install`: which part of this edge node is broken, and
//! what to do about it.
//!
//! - `node`: edgecore.yaml loads; edgecore.db is sound (`PRAGMA integrity_check`); edgecore
//!   answers (`/readyz` on its monitor server); MetaServer and Edged's kubelet server answer
//!   `/healthz`; EdgeHub is connected to the cloud (`kubeedge_edgehub_connected`); the runtime
//!   answers CRI; the node object edgecore keeps says Ready.
//! - `pod NAME`: the pod from MetaServer (or, with edgecore down, from edgecore.db), its phase,
//!   conditions and each container's state explained.
//! - `install` (upstream: `installation`): the binary, config, CA, certificate, key, unit and
//!   state directory are where edgecore.yaml says, and the runtime answers.

use kubeedge_metastore::ReadOnly;
use serde_json::Value;

use super::get::{Filter, objects};
use super::{Ctx, Error, Outcome, Report, fail};
use crate::ctl::{self, edge::Edge};

/// `keadm debug diagnose` flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// node, pod or install (installation).
    pub object: String,
    /// The pod (for `pod`).
    pub name: Option<String>,
    /// The pod's namespace.
    #[arg(short = 'n', long = "namespace", default_value = "default")]
    pub namespace: String,
}

pub fn run(args: &Args, ctx: &Ctx) -> Result<(), Error> {
    let rt = super::runtime()?;
    let mut report = Report::default();
    match (args.object.as_str(), &args.name) {
        ("node", _) => rt.block_on(node(ctx, &mut report)),
        ("pod" | "pods" | "po", Some(name)) => rt.block_on(pod(ctx, &args.namespace, name, &mut report)),
        ("pod" | "pods" | "po", None) => return Err(Error::Usage("keadm debug diagnose pod needs a pod name".into())),
        ("install" | "installation", _) => rt.block_on(install(ctx, &mut report)),
        (other, _) => {
            return Err(Error::Usage(format!("keadm debug diagnose: unknown object {other:?} (node, pod or install)")));
        }
    }
    report.finish()
}

/// edgecore.yaml, as a check; `None` when it does not load.
fn config(ctx: &Ctx, report: &mut Report) -> Option<Edge> {
    match ctx.edge() {
        Ok(e) => {
            report.add("config", Outcome::Pass(e.path.display().to_string()));
            Some(e)
        }
        Err(e) => {
            report.add("config", fail(ctl::chain(&e), "pass --config (or --root) pointing at edgecore.yaml"));
            None
        }
    }
}

async fn node(ctx: &Ctx, report: &mut Report) {
    let Some(edge) = config(ctx, report) else { return };
    let db = edge.database();
    let store = match ReadOnly::open(&db).and_then(|ro| ro.integrity_check().map(|r| (ro, r))) {
        Ok((ro, result)) if result == ["ok"] => {
            report.add("database", Outcome::Pass(format!("{} integrity ok", db.display())));
            Some(ro)
        }
        Ok((ro, result)) => {
            report.add(
                "database",
                fail(
                    format!("{}: {}", db.display(), result.join("; ")),
                    "stop edgecore, back up the file, and let edgecore rebuild it (the cloud resends what the node needs)",
                ),
            );
            Some(ro)
        }
        Err(e) => {
            report.add(
                "database",
                fail(format!("{}: {}", db.display(), ctl::chain(&e)), "start edgecore once to create it"),
            );
            None
        }
    };
    let monitor = edge.monitor();
    if monitor.ends_with(":0") {
        report.add("edgecore", Outcome::Skip(format!("the monitor server is on an ephemeral port ({monitor})")));
    }
    let fix_running = "start edgecore (systemctl start edgecore; journalctl -u edgecore says why it stopped)";
    let ready = crate::http::get(&monitor, "/readyz").await;
    let monitored = !monitor.ends_with(":0");
    if monitored {
        report.add(
            "edgecore",
            match &ready {
                Ok((200, _)) => Outcome::Pass(format!("ready ({monitor}/readyz)")),
                Ok((code, body)) => fail(format!("{monitor}/readyz answered {code}: {}", body.trim()), fix_running),
                Err(e) => fail(format!("no answer on {monitor}: {e}"), fix_running),
            },
        );
    }
    for (name, endpoint) in [("metaserver", edge.metaserver()), ("edged-server", edge.kubelet())] {
        let outcome = match endpoint {
            Err(e) => Outcome::Skip(ctl::chain(&e)),
            Ok(ep) => match ep.call(http::Method::GET, "/healthz", None).await {
                Ok((s, _)) if s.is_success() => Outcome::Pass(format!("{}/healthz ok", ep.base())),
                Ok((s, body)) => fail(
                    format!("{}/healthz answered {s}: {}", ep.base(), String::from_utf8_lossy(&body).trim()),
                    fix_running,
                ),
                Err(e) => fail(ctl::chain(&e), fix_running),
            },
        };
        report.add(name, outcome);
    }
    let metrics = crate::http::get(&monitor, "/metrics").await;
    let connected = metrics.as_ref().ok().and_then(|(_, body)| {
        body.lines()
            .find_map(|l| l.strip_prefix(edgecore::edgehub::module::CONNECTED_METRIC)?.trim().parse::<i64>().ok())
    });
    let server = &edge.config.modules.edge_hub.websocket.server;
    report.add(
        "cloud-connection",
        match connected {
            Some(1) => Outcome::Pass(format!("EdgeHub connected to {server}")),
            Some(_) => fail(
                format!("EdgeHub is not connected to {server}"),
                "keadm debug check network; check the token/certificates and cloudcore's log",
            ),
            None => Outcome::Skip("edgecore's /metrics does not answer".into()),
        },
    );
    let runtime = edge.runtime_socket();
    report.add(
        "runtime",
        match runtime {
            Ok(socket) if edge.config.modules.edged.enable => super::check::runtime_version(&socket).await,
            Ok(_) => Outcome::Skip("Edged is disabled".into()),
            Err(e) => fail(ctl::chain(&e), "set containerRuntimeEndpoint to unix:///path"),
        },
    );
    let Some(store) = store else { return };
    let node = edge.node().to_owned();
    let filter = Filter {
        namespace: None,
        name: Some(node.clone()),
        selector: kubeedge_kube_serve::LabelSelector::everything(),
    };
    let found = objects(&store, "node", &filter).ok().and_then(|mut v| v.pop());
    report.add(
        "node-status",
        match found {
            None => Outcome::Skip(format!("node {node:?} is not in edgecore.db yet")),
            Some(n) => match condition(&n, "Ready") {
                Some(("True", _)) => Outcome::Pass(format!("node {node:?} Ready")),
                Some((status, why)) => fail(
                    format!("node {node:?} Ready={status}: {why}"),
                    "see the node's conditions (keadm debug get node -o yaml)",
                ),
                None => Outcome::Skip(format!("node {node:?} has no Ready condition recorded")),
            },
        },
    );
}

/// A condition's status and `reason: message`.
fn condition<'a>(obj: &'a Value, ty: &str) -> Option<(&'a str, String)> {
    let c = obj.pointer("/status/conditions")?.as_array()?.iter().find(|c| c["type"] == ty)?;
    let why = format!("{}: {}", c["reason"].as_str().unwrap_or(""), c["message"].as_str().unwrap_or(""));
    Some((c["status"].as_str().unwrap_or("Unknown"), why))
}

async fn pod(ctx: &Ctx, ns: &str, name: &str, report: &mut Report) {
    let Some(edge) = config(ctx, report) else { return };
    let path = format!("/api/v1/namespaces/{}/pods/{}", ctl::client::encode(ns), ctl::client::encode(name));
    let from_server = match edge.metaserver() {
        Ok(ms) => ms.get_json(&path).await.map_err(|e| ctl::chain(&e)),
        Err(e) => Err(ctl::chain(&e)),
    };
    let found = match from_server {
        Ok(p) => Some(("MetaServer", p)),
        Err(why) => {
            report.add("metaserver", Outcome::Skip(format!("{why}; reading edgecore.db instead")));
            let filter = Filter {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                selector: kubeedge_kube_serve::LabelSelector::everything(),
            };
            ReadOnly::open(edge.database())
                .ok()
                .and_then(|db| objects(&db, "pod", &filter).ok())
                .and_then(|mut v| v.pop())
                .map(|p| ("edgecore.db", p))
        }
    };
    let Some((source, pod)) = found else {
        report.add(
            "pod",
            fail(
                format!("pod {ns}/{name} is not on this node"),
                "check the name and namespace (keadm ctl get pods -A), and that the pod is bound to this node",
            ),
        );
        return;
    };
    report.add("pod", Outcome::Pass(format!("{ns}/{name} found in {source}")));
    for outcome in explain(&pod) {
        report.add(&outcome.0, outcome.1);
    }
}

/// The pod's phase, conditions and containers as named outcomes.
pub fn explain(pod: &Value) -> Vec<(String, Outcome)> {
    let mut out = Vec::new();
    let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
    let reason = pod.pointer("/status/reason").and_then(Value::as_str).unwrap_or("");
    out.push((
        "phase".to_owned(),
        match phase {
            "Running" | "Succeeded" => Outcome::Pass(phase.to_owned()),
            "" => fail("no status recorded yet", "Edged has not reported the pod: keadm debug diagnose node"),
            _ => fail(format!("{phase} {reason}").trim().to_owned(), "see the conditions and containers below"),
        },
    ));
    for c in pod.pointer("/status/conditions").and_then(Value::as_array).into_iter().flatten() {
        let ty = c["type"].as_str().unwrap_or("?");
        let status = c["status"].as_str().unwrap_or("Unknown");
        let name = format!("condition/{ty}");
        out.push((
            name,
            if status == "True" {
                Outcome::Pass("True".into())
            } else {
                let why = format!("{} {}", c["reason"].as_str().unwrap_or(""), c["message"].as_str().unwrap_or(""));
                fail(format!("{status} {}", why.trim()).trim().to_owned(), "see the containers' states below")
            },
        ));
    }
    for key in ["initContainerStatuses", "containerStatuses"] {
        for cs in pod.pointer(&format!("/status/{key}")).and_then(Value::as_array).into_iter().flatten() {
            let name = format!("container/{}", cs["name"].as_str().unwrap_or("?"));
            out.push((name, container(cs, key == "initContainerStatuses")));
        }
    }
    out
}

fn container(cs: &Value, init: bool) -> Outcome {
    let restarts = cs["restartCount"].as_i64().unwrap_or(0);
    let state = cs.get("state").and_then(Value::as_object).and_then(|m| m.iter().next());
    match state {
        Some((kind, _)) if kind == "running" => Outcome::Pass(format!("running, {restarts} restart(s)")),
        Some((kind, t)) if kind == "terminated" => {
            let code = t["exitCode"].as_i64().unwrap_or(-1);
            let reason = t["reason"].as_str().unwrap_or("");
            if code == 0 && init {
                Outcome::Pass("completed".into())
            } else if code == 0 {
                Outcome::Pass(format!("terminated: {reason} (exit 0)"))
            } else {
                fail(
                    format!("terminated: {reason} (exit {code}), {restarts} restart(s)"),
                    "keadm ctl logs POD -c CONTAINER --previous shows why",
                )
            }
        }
        Some((_, w)) => {
            let reason = w["reason"].as_str().unwrap_or("");
            let message = w["message"].as_str().unwrap_or("");
            let fix = match reason {
                "ErrImagePull" | "ImagePullBackOff" | "ErrImageNeverPull" => {
                    "the image cannot be pulled: check its name, the registry and pull secrets, or import it (ctr -n k8s.io images import)"
                }
                "CrashLoopBackOff" => "the container keeps exiting: keadm ctl logs POD -c CONTAINER --previous",
                "CreateContainerConfigError" => {
                    "a configmap or secret it uses is missing on this node: keadm debug get configmap,secret -n NS"
                }
                "CreateContainerError" | "RunContainerError" => {
                    "the runtime could not start it: check the command and the runtime's log"
                }
                _ => "wait, or see edgecore's log (journalctl -u edgecore)",
            };
            fail(format!("waiting: {reason} {message}").trim().to_owned(), fix)
        }
        None => fail("no state reported", "wait, or see edgecore's log"),
    }
}

async fn install(ctx: &Ctx, report: &mut Report) {
    let bin = ctx.at(crate::paths::BIN_DIR).join("edgecore");
    report.add(
        "edgecore-binary",
        if bin.is_file() {
            Outcome::Pass(bin.display().to_string())
        } else {
            fail(format!("{} is missing", bin.display()), "keadm join installs it")
        },
    );
    let Some(edge) = config(ctx, report) else { return };
    let hub = &edge.config.modules.edge_hub;
    for (name, file) in
        [("ca", &hub.tls_ca_file), ("certificate", &hub.tls_cert_file), ("private-key", &hub.tls_private_key_file)]
    {
        let path = edge.at(file);
        report.add(
            name,
            if path.is_file() {
                Outcome::Pass(path.display().to_string())
            } else {
                fail(
                    format!("{} is missing", path.display()),
                    "edgecore fetches it with the join token at its first start; check edgeHub.token and httpServer",
                )
            },
        );
    }
    let unit = ctx.at(crate::paths::UNIT_DIR).join("edgecore.service");
    report.add(
        "service-unit",
        if unit.is_file() {
            Outcome::Pass(unit.display().to_string())
        } else {
            fail(format!("{} is missing", unit.display()), "keadm join installs it")
        },
    );
    let state = edge.database();
    let dir = state.parent().map(std::path::Path::to_owned).unwrap_or_default();
    report.add(
        "state-directory",
        if dir.is_dir() {
            Outcome::Pass(dir.display().to_string())
        } else {
            fail(format!("{} is missing", dir.display()), format!("mkdir -p {}", dir.display()))
        },
    );
    report.add(
        "runtime",
        match edge.runtime_socket() {
            Ok(socket) => super::check::runtime_version(&socket).await,
            Err(e) => fail(ctl::chain(&e), "set containerRuntimeEndpoint to unix:///path"),
        },
    );
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_pods_state_is_explained() {
        let pod = json!({"status": {"phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "False", "reason": "ContainersNotReady", "message": "containers with unready status: [web]"}],
            "initContainerStatuses": [{"name": "init", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}],
            "containerStatuses": [{"name": "web", "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"nope\""}}}]}});
        let out = explain(&pod);
        let get = |n: &str| out.iter().find(|(name, _)| name == n).map(|(_, o)| o.clone()).unwrap();
        assert!(matches!(get("phase"), Outcome::Fail { reason, .. } if reason == "Pending"));
        assert_eq!(get("condition/PodScheduled"), Outcome::Pass("True".into()));
        assert!(
            matches!(get("condition/Ready"), Outcome::Fail { reason, .. } if reason.contains("ContainersNotReady"))
        );
        assert_eq!(get("container/init"), Outcome::Pass("completed".into()));
        match get("container/web") {
            Outcome::Fail { reason, fix } => {
                assert!(reason.contains("ImagePullBackOff") && reason.contains("nope"), "{reason}");
                assert!(fix.contains("image"), "{fix}");
            }
            other => panic!("{other:?}"),
        }
        let running = json!({"status": {"phase": "Running", "containerStatuses": [{"name": "c", "restartCount": 2, "state": {"running": {}}}]}});
        assert!(explain(&running).iter().all(|(_, o)| matches!(o, Outcome::Pass(_))));
    }
}
