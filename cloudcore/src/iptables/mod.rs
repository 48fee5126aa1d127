//! The iptables manager (`modules.iptablesManager`, mode `internal`): keeps the nat chain
//! `TUNNEL-PORT`, jumped to from OUTPUT and PREROUTING, holding one DNAT per cloudcore in
//! ConfigMap `kubeedge/tunnelport`: `--dport tunnelPort` to `cloudcoreIP:streamPort`. The API
//! server dials an edge node's `nodeIP:tunnelPort` (its kubelet endpoint, set by CloudStream)
//! and lands on the stream server of the cloudcore that node's tunnel is connected to.
//!
//! As upstream, the ConfigMap is read every few seconds (upstream: an informer and a 10 s
//! resync). Unlike upstream, the chain is compared with `iptables -S` and brought to exactly
//! the record (stale and duplicate rules removed, whoever added them), and a clean stop
//! removes the jumps and the chain. Mode `external` leaves the rules to a separate manager
//! (upstream's `iptablesmanager` DaemonSet), so cloudcore does nothing here.
//!
//! iptables runs as argv, `-w 5` (waiting for the xtables lock), off the async runtime.

pub mod rules;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kubeedge_beehive::{BoxFuture, Module, ModuleContext, ModuleError};
use kubeedge_config::cloudcore::KubeApiConfig;
use tracing::{debug, info, warn};

use crate::cloudhub::certs::NAMESPACE;
use crate::cloudstream::tunnelport::{self, Record};
use crate::kubeclient::kube_client;

/// How often the ConfigMap is read (one GET; a new cloudcore's port is routed within it).
const POLL: Duration = Duration::from_secs(2);
/// How often the chain is checked against the record even when the record did not change.
const RESYNC: Duration = Duration::from_secs(60);
/// The longest an iptables command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The iptables manager module.
pub struct IptablesManagerModule {
    kube: KubeApiConfig,
    stream_port: u32,
    program: String,
}

impl IptablesManagerModule {
    /// DNATs to `stream_port` (`modules.cloudStream.streamPort`).
    pub fn new(kube: KubeApiConfig, stream_port: u32) -> Self {
        Self { kube, stream_port, program: "iptables".to_owned() }
    }
}

/// An iptables command that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// It could not run (no `iptables` binary, or no answer in time).
    #[error("{line}: {why}")]
    Run {
        /// The command line.
        line: String,
        /// Why.
        why: String,
    },
    /// It ran and exited unsuccessfully (`code` 1: the rule or chain does not exist).
    #[error("{line}: exit {code:?}: {stderr}")]
    Exit {
        /// The command line.
        line: String,
        /// The exit code.
        code: Option<i32>,
        /// What it said.
        stderr: String,
    },
    /// The record names an address iptables (IPv4) cannot DNAT to.
    #[error("ConfigMap kubeedge/tunnelport: {0:?} is not an IPv4 address")]
    NotIpv4(String),
    /// The ConfigMap could not be read or parsed.
    #[error("{0}")]
    Record(String),
}

impl Error {
    /// `iptables -C`'s answer for a rule that is not there.
    fn is_absent(&self) -> bool {
        matches!(self, Self::Exit { code: Some(1), .. })
    }
}

/// Runs `iptables -w 5 -t nat ARGS` and returns its stdout. A command that does not finish in
/// time is killed.
async fn iptables(program: &str, args: &[String]) -> Result<String, Error> {
    let line = format!("{program} -t nat {}", args.join(" "));
    let run = |why: String| Error::Run { line: line.clone(), why };
    let mut cmd = std::process::Command::new(program);
    cmd.args(["-w", "5", "-t", "nat"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().map_err(|e| run(e.to_string()))?;
    let pid = child.id();
    let wait = tokio::task::spawn_blocking(move || child.wait_with_output());
    let out = match tokio::time::timeout(COMMAND_TIMEOUT, wait).await {
        Ok(Ok(Ok(out))) => out,
        Ok(Ok(Err(e))) => return Err(run(e.to_string())),
        Ok(Err(e)) => return Err(run(e.to_string())),
        Err(_) => {
            // Killed by pid with `kill` (argv), as no unsafe code may signal it here.
            let _ = std::process::Command::new("kill").arg("-9").arg(pid.to_string()).status();
            return Err(run(format!("no answer within {COMMAND_TIMEOUT:?}")));
        }
    };
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Exit {
            line,
            code: out.status.code(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

fn argv(parts: &[&str], rest: &[String]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_owned()).chain(rest.iter().cloned()).collect()
}

/// Makes the chain and its jumps exist, then holds exactly `record`'s DNATs. One rule that
/// cannot be added or deleted does not hold up the others: the first such error is returned
/// after all were tried.
async fn sync(program: &str, record: &Record, stream_port: u32) -> Result<usize, Error> {
    match iptables(program, &argv(&["-S", rules::CHAIN], &[])).await {
        Ok(_) => {}
        Err(e) if e.is_absent() => {
            iptables(program, &argv(&["-N", rules::CHAIN], &[])).await?;
        }
        Err(e) => return Err(e),
    }
    for from in rules::JUMP_FROM {
        match iptables(program, &argv(&["-C", from], &rules::jump_args())).await {
            Ok(_) => {}
            // Only a jump that is really absent is added (a lock timeout would duplicate it).
            Err(e) if e.is_absent() => {
                iptables(program, &argv(&["-A", from], &rules::jump_args())).await?;
            }
            Err(e) => return Err(e),
        }
    }
    let listing = iptables(program, &argv(&["-S", rules::CHAIN], &[])).await?;
    let (wanted, refused) = rules::wanted(record, stream_port);
    let mut first_error = refused.into_iter().next().map(Error::NotIpv4);
    let (delete, add) = rules::diff(&wanted, &listing);
    let mut changes = 0;
    for args in &delete {
        match iptables(program, &argv(&["-D", rules::CHAIN], args)).await {
            Ok(_) => changes += 1,
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    for d in &add {
        match iptables(program, &argv(&["-A", rules::CHAIN], &d.args())).await {
            Ok(_) => {
                changes += 1;
                info!(port = d.port, to = %d.to, "DNAT for a tunnel port added.");
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(changes),
    }
}

/// Removes the jumps and the chain (a clean stop).
async fn remove(program: &str) {
    for from in rules::JUMP_FROM {
        // Every copy of the jump, however many were added.
        while iptables(program, &argv(&["-D", from], &rules::jump_args())).await.is_ok() {}
    }
    let flushed = iptables(program, &argv(&["-F", rules::CHAIN], &[])).await;
    match flushed.and(iptables(program, &argv(&["-X", rules::CHAIN], &[])).await) {
        Ok(_) => info!("Removed the TUNNEL-PORT chain."),
        Err(e) => debug!(error = %e, "Removing the TUNNEL-PORT chain."),
    }
}

impl Module for IptablesManagerModule {
    fn name(&self) -> &'static str {
        "iptablesManager"
    }

    fn group(&self) -> &'static str {
        "iptablesManager"
    }

    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(async move {
            let client = kube_client(&self.kube).await?;
            let maps: kube::Api<ConfigMap> = kube::Api::namespaced(client, NAMESPACE);
            let stop = ctx.shutdown().clone();
            let mut applied: Option<(Record, Instant)> = None;
            let mut last_error: Option<String> = None;
            loop {
                let record = match maps.get_opt(tunnelport::CONFIGMAP).await {
                    Ok(Some(cm)) => Record::of(&cm).map_err(|e| Error::Record(e.to_string())),
                    Ok(None) => Ok(Record::default()),
                    Err(e) => Err(Error::Record(format!("reading {NAMESPACE}/{}: {e}", tunnelport::CONFIGMAP))),
                };
                let outcome = match record {
                    Ok(record) => {
                        let fresh = applied.as_ref().is_some_and(|(r, at)| *r == record && at.elapsed() < RESYNC);
                        if fresh {
                            Ok(())
                        } else {
                            let r = sync(&self.program, &record, self.stream_port).await;
                            r.map(|changes| {
                                if changes > 0 || applied.is_none() {
                                    info!(rules = record.ip_tunnel_port.len(), changes, "TUNNEL-PORT chain in sync.");
                                }
                                applied = Some((record, Instant::now()));
                            })
                        }
                    }
                    Err(e) => Err(e),
                };
                match outcome {
                    Ok(()) => last_error = None,
                    Err(e) => {
                        let e = e.to_string();
                        // Logged once, then again only when it changes; retried every poll.
                        if last_error.as_deref() != Some(e.as_str()) {
                            warn!(error = %e, "Cannot keep the TUNNEL-PORT chain; retrying.");
                            last_error = Some(e);
                        }
                        applied = None;
                    }
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(POLL) => {}
                }
            }
            remove(&self.program).await;
            Ok(())
        })
    }
}
