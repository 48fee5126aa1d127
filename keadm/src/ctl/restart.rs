//! `keadm ctl restart pod NAME…`: stops the running containers of each pod through CRI, as
//! upstream's MetaServer `pods/restart` does; Edged sees them exit and starts them again as
//! the pod's restart policy says (a pod with `restartPolicy: Never` stays stopped).

use std::collections::HashMap;
use std::time::Duration;

use edgecore::edged::pods::{LABEL_CONTAINER_NAME, LABEL_POD_NAME, LABEL_POD_NAMESPACE};
use kubeedge_cri::{Cri, v1};
use serde_json::Value;

use super::client::encode;
use super::edge::Edge;
use super::{Error, pod_kind};

/// Grace period when the pod's own (`terminationGracePeriodSeconds`) cannot be read.
const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// `keadm ctl restart` flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The resource type: pod.
    pub resource: String,
    /// The pods.
    #[arg(required = true)]
    pub names: Vec<String>,
    /// The namespace.
    #[arg(short = 'n', long = "namespace", default_value = "default")]
    pub namespace: String,
}

pub async fn run(args: &Args, edge: &Edge) -> Result<(), Error> {
    pod_kind(&args.resource, "keadm ctl restart")?;
    let socket = edge.runtime_socket()?;
    let runtime = |source| Error::Runtime { socket: socket.clone(), source };
    let opts = kubeedge_cri::Options {
        connect_timeout: super::client::CONNECT_TIMEOUT,
        request_timeout: Duration::from_secs(60),
        ..Default::default()
    };
    let cri = Cri::connect_with(&socket, opts).await.map_err(runtime)?;
    let mut failed = 0usize;
    for name in &args.names {
        let grace = grace_period(edge, &args.namespace, name).await;
        match restart(&cri, &args.namespace, name, grace).await {
            Ok(stopped) => println!("pod/{name} restarted (stopped: {})", stopped.join(", ")),
            Err(Problem::NotFound) => {
                failed += 1;
                eprintln!("error: pod {:?} has no sandbox in the container runtime on this node", name);
            }
            Err(Problem::NothingRunning) => {
                failed += 1;
                eprintln!("error: pod {name:?} has no running container to restart");
            }
            Err(Problem::Runtime(e)) => {
                failed += 1;
                eprintln!("error: pod {name:?}: {}", super::chain(&runtime(e)));
            }
        }
    }
    if failed > 0 { Err(Error::Failed(failed)) } else { Ok(()) }
}

enum Problem {
    NotFound,
    NothingRunning,
    Runtime(kubeedge_cri::Error),
}

/// The pod's `terminationGracePeriodSeconds` from MetaServer, or [`DEFAULT_GRACE`].
async fn grace_period(edge: &Edge, ns: &str, name: &str) -> Duration {
    let path = format!("/api/v1/namespaces/{}/pods/{}", encode(ns), encode(name));
    let pod = match edge.metaserver() {
        Ok(ms) => ms.get_json(&path).await.ok(),
        Err(_) => None,
    };
    pod.and_then(|p| p.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_u64))
        .map_or(DEFAULT_GRACE, Duration::from_secs)
}

/// Stops the running containers of the pod's newest sandbox; returns their names.
async fn restart(cri: &Cri, ns: &str, name: &str, grace: Duration) -> Result<Vec<String>, Problem> {
    let filter = v1::PodSandboxFilter {
        label_selector: HashMap::from([
            (LABEL_POD_NAMESPACE.to_owned(), ns.to_owned()),
            (LABEL_POD_NAME.to_owned(), name.to_owned()),
        ]),
        ..Default::default()
    };
    let sandboxes = cri.list_pod_sandbox(Some(filter)).await.map_err(Problem::Runtime)?;
    let sandbox = sandboxes.into_iter().max_by_key(|s| s.created_at).ok_or(Problem::NotFound)?;
    let filter = v1::ContainerFilter {
        pod_sandbox_id: sandbox.id,
        state: Some(v1::ContainerStateValue { state: v1::ContainerState::ContainerRunning.into() }),
        ..Default::default()
    };
    let running = cri.list_containers(Some(filter)).await.map_err(Problem::Runtime)?;
    if running.is_empty() {
        return Err(Problem::NothingRunning);
    }
    let mut names = Vec::with_capacity(running.len());
    for c in running {
        cri.stop_container(&c.id, grace).await.map_err(Problem::Runtime)?;
        names.push(c.labels.get(LABEL_CONTAINER_NAME).cloned().unwrap_or(c.id));
    }
    names.sort();
    Ok(names)
}
