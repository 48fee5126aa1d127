//! `keadm ctl`: operate the pods of this edge node through its local servers only, so it works
//! with the cloud down. Upstream's subcommands and kubectl's flags:
//!
//! - `get pod [NAME] [-n NS | -A] [-l SELECTOR] [-o wide|json|yaml|name]` and `describe pod
//!   NAME` read MetaServer (`modules.metaManager.metaServer.server`; `http://` on loopback, else
//!   `https://` with the node's client certificate, as our MetaServer serves);
//! - `logs` and `exec` go to Edged's kubelet server (`tailoredKubeletConfig.address:readOnlyPort`,
//!   `/containerLogs/…` and `/exec/…` over WebSocket `v4.channel.k8s.io`); upstream sends them
//!   to MetaServer's `pods/log` and `pods/exec`, which end in the same CRI calls;
//! - `restart pod NAME…` stops the pod's running containers through CRI
//!   (`containerRuntimeEndpoint`), as upstream's MetaServer `pods/restart` does; Edged then starts
//!   them again as their restart policy says.
//!
//! - `confirm` lets a node upgrade waiting for confirmation go on (MetaServer's
//!   `POST /api/v1/taskupgrade/confirm-upgrade`).
//!
//! Devices (`get|describe|edit device`) and `unhold-upgrade` are refused by name: those
//! modules are not built yet. Every address comes from edgecore.yaml (`--config`,
//! or inside `--root` as `keadm join --root` wrote it).

pub mod client;
mod confirm;
pub mod describe;
pub mod edge;
mod exec;
mod get;
mod logs;
pub mod print;
mod restart;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// `keadm ctl` flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// edgecore's config file (default: /etc/kubeedge/config/edgecore.yaml inside --root).
    #[arg(long = "config", global = true)]
    config: Option<PathBuf>,
    /// The root file system edgecore was installed into (`keadm join --root`); default /.
    #[arg(long = "root", global = true)]
    root: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Lists pods of this node (from MetaServer).
    Get(get::Args),
    /// Shows one pod in detail (from MetaServer).
    Describe(describe::Args),
    /// Prints a container's log (from Edged).
    Logs(logs::Args),
    /// Runs a command in a container (through Edged).
    Exec(exec::Args),
    /// Restarts pods: their containers are stopped and Edged starts them again.
    Restart(restart::Args),
    /// Edits a device (not built yet).
    Edit(Unbuilt),
    /// Releases a held node upgrade (not built yet).
    UnholdUpgrade(Unbuilt),
    /// Confirms a node upgrade that waits for confirmation (through MetaServer).
    Confirm(confirm::Args),
}

/// Arguments of a subcommand not built yet.
#[derive(clap::Args, Debug)]
pub struct Unbuilt {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    args: Vec<String>,
}

/// What `keadm ctl` can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag or argument is wrong (exit 64).
    #[error("{0}")]
    Usage(String),
    /// A feature that needs a module not built yet (exit 64).
    #[error("{0} is not available in this build yet: {1} (see docs/operations.md)")]
    Unbuilt(String, &'static str),
    /// edgecore.yaml could not be read.
    #[error("reading edgecore's config {} (--config)", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: kubeedge_config::Error,
    },
    /// MetaServer is switched off.
    #[error(
        "MetaServer is not enabled in {} (modules.metaManager.metaServer.enable: false); keadm ctl reads pods from \
         it: set it to true and restart edgecore",
        path.display()
    )]
    MetaServerOff {
        /// edgecore.yaml.
        path: PathBuf,
    },
    /// Edged or its kubelet server is switched off.
    #[error(
        "Edged's kubelet server is off in {} (modules.edged.enable, modules.edged.tailoredKubeletConfig.readOnlyPort)",
        path.display()
    )]
    KubeletOff {
        /// edgecore.yaml.
        path: PathBuf,
    },
    /// An address in edgecore.yaml does not parse.
    #[error("{field} {value:?} in edgecore.yaml is not a usable address")]
    BadAddress {
        /// The key.
        field: &'static str,
        /// Its value.
        value: String,
    },
    /// A TLS file is missing or unusable.
    #[error("{field} ({}): {reason}", path.display())]
    Tls {
        /// The key naming the file.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The server does not answer.
    #[error("connecting to {what} at {addr} (is edgecore running?)")]
    Connect {
        /// Which server.
        what: &'static str,
        /// Where.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The exchange failed midway.
    #[error("talking to {what} at {addr}: {reason}")]
    Protocol {
        /// Which server.
        what: &'static str,
        /// Where.
        addr: SocketAddr,
        /// What happened.
        reason: String,
    },
    /// The server answered with an error.
    #[error("{url} answered {code}: {message}")]
    Status {
        /// The request.
        url: String,
        /// The HTTP status.
        code: u16,
        /// The server's message.
        message: String,
    },
    /// The answer is not the JSON expected.
    #[error("decoding the answer of {url}")]
    Decode {
        /// The request.
        url: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The container runtime failed.
    #[error("container runtime at {} (modules.edged.tailoredKubeletConfig.containerRuntimeEndpoint)", socket.display())]
    Runtime {
        /// Its socket.
        socket: PathBuf,
        /// Why.
        #[source]
        source: kubeedge_cri::Error,
    },
    /// Writing to stdout failed.
    #[error("writing the output")]
    Output(#[source] std::io::Error),
    /// The command ran in the container and failed.
    #[error("command terminated with exit code {0}")]
    ExitCode(u8),
    /// Some of several objects failed (each reported already).
    #[error("{0} failed")]
    Failed(usize),
}

impl Error {
    /// The process exit code: 64 for usage, the command's own code for `exec`, else 1.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Usage(_) | Error::Unbuilt(..) => ExitCode::from(64),
            Error::ExitCode(c) => ExitCode::from(*c),
            _ => ExitCode::FAILURE,
        }
    }
}

/// `error: cause: cause…`.
pub use kubeedge_model::error_chain as chain;

/// Runs `keadm ctl`.
pub fn main(args: &Args) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let load = || edge::Edge::load(args.config.as_deref(), args.root.as_deref());
        match &args.command {
            // Devices are refused (and bad kinds named) before edgecore.yaml is read.
            Command::Get(a) => {
                pod_kind(&a.resource, "keadm ctl get")?;
                get::run(a, &load()?).await
            }
            Command::Describe(a) => {
                pod_kind(&a.resource, "keadm ctl describe")?;
                describe::run(a, &load()?).await
            }
            Command::Logs(a) => logs::run(a, &load()?).await,
            Command::Exec(a) => exec::run(a, &load()?).await,
            Command::Restart(a) => {
                pod_kind(&a.resource, "keadm ctl restart")?;
                restart::run(a, &load()?).await
            }
            Command::Edit(_) => Err(Error::Unbuilt("keadm ctl edit device".into(), "devices are a later issue")),
            Command::UnholdUpgrade(_) => {
                Err(Error::Unbuilt("keadm ctl unhold-upgrade".into(), "node upgrade tasks are a later issue"))
            }
            Command::Confirm(_) => confirm::run(&load()?).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::ExitCode(c)) => ExitCode::from(c),
        Err(Error::Failed(_)) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            e.exit_code()
        }
    }
}

/// Which kind a `get`/`describe`/`restart` names: pods, or devices (refused).
fn pod_kind(resource: &str, command: &'static str) -> Result<(), Error> {
    match resource {
        "pod" | "pods" | "po" => Ok(()),
        "device" | "devices" => Err(Error::Unbuilt(format!("{command} device"), "devices are a later issue")),
        other => Err(Error::Usage(format!("{command}: unknown resource type {other:?} (pod or device)"))),
    }
}

/// Writes the command's output to stdout.
fn write_out(text: &str) -> Result<(), Error> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(Error::Output)
}

/// The container `logs` and `exec` address: `-c`, else (asking MetaServer for the pod) the one
/// its `kubectl.kubernetes.io/default-container` annotation names, else its first, as kubectl
/// chooses; with several, which one was taken is said on stderr.
async fn container_of(edge: &edge::Edge, ns: &str, pod: &str, given: Option<&str>) -> Result<String, Error> {
    if let Some(c) = given {
        return Ok(c.to_owned());
    }
    let path = format!("/api/v1/namespaces/{}/pods/{}", client::encode(ns), client::encode(pod));
    let obj = edge.metaserver()?.get_json(&path).await?;
    let names: Vec<&str> = obj
        .pointer("/spec/containers")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(serde_json::Value::as_str))
        .collect();
    let annotated = obj
        .pointer("/metadata/annotations/kubectl.kubernetes.io~1default-container")
        .and_then(serde_json::Value::as_str)
        .filter(|a| names.contains(a));
    let chosen =
        annotated.or(names.first().copied()).ok_or_else(|| Error::Usage(format!("pod {pod:?} has no containers")))?;
    if names.len() > 1 && annotated.is_none() {
        eprintln!("Defaulted container {chosen:?} out of: {}", names.join(", "));
    }
    Ok(chosen.to_owned())
}
