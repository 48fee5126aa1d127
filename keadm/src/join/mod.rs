//! `keadm join`: makes this host an edge node. Flags are upstream's; what differs (see
//! docs/compatibility.md): preflight checks first (`preflight`), nothing is downloaded (the
//! edgecore binary comes from `--tarballpath` or from beside keadm), `--pre-run`/`--post-run`
//! are an argv run without a shell, keadm itself gets the node certificate (so no token is
//! left on disk), and a failed run leaves nothing behind.
//!
//! After the checks: edgecore.yaml, the CA, certificate and key, `/usr/local/bin/edgecore`,
//! `edgecore.service`, `systemctl enable --now`, then a wait until EdgeHub is connected
//! (edgecore's `/readyz` and its `kubeedge_edgehub_connected` gauge).

pub mod config;
pub mod preflight;
mod source;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::install::Tx;
use crate::paths::{self, Root};
use crate::{hooks, systemd};

/// upstream's default runtime endpoint.
pub const DEFAULT_ENDPOINT: &str = "unix:///run/containerd/containerd.sock";
/// How long to wait for edgecore to connect.
const CONNECT_WAIT: Duration = Duration::from_secs(120);

/// `keadm join` flags (upstream's names).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// CloudHub's WebSocket address, IP:port (e.g. 192.168.1.10:10000).
    #[arg(short = 'e', long = "cloudcore-ipport", required = true)]
    cloudcore_ipport: String,
    /// The join token (`keadm gettoken` on the cloud).
    #[arg(short = 't', long = "token")]
    token: Option<String>,
    /// The node name (default: this host's name, lower-cased).
    #[arg(short = 'i', long = "edgenode-name")]
    edgenode_name: Option<String>,
    /// The CRI socket of the container runtime.
    #[arg(short = 'p', long = "remote-runtime-endpoint", default_value = DEFAULT_ENDPOINT)]
    remote_runtime_endpoint: String,
    /// cgroupfs or systemd (default: the runtime's, else cgroupfs).
    #[arg(long = "cgroupdriver", value_parser = ["cgroupfs", "systemd"])]
    cgroupdriver: Option<String>,
    /// Where the node certificate and key go.
    #[arg(long = "certPath", default_value = paths::CERT_DIR)]
    cert_path: String,
    /// The join API's port on the cloud host.
    #[arg(short = 's', long = "certport", default_value_t = 10002)]
    certport: u16,
    /// Node labels, key=value (comma-separated, repeatable).
    #[arg(short = 'l', long = "labels", value_delimiter = ',')]
    labels: Vec<String>,
    /// An edgecore.yaml value by dotted key path, key=value (comma-separated, repeatable).
    #[arg(long = "set")]
    set: Vec<String>,
    /// A directory holding the edgecore binary (default: the one next to keadm).
    #[arg(long = "tarballpath")]
    tarballpath: Option<PathBuf>,
    /// A program (and arguments, split on spaces; no shell) run before joining.
    #[arg(long = "pre-run")]
    pre_run: Option<String>,
    /// A program (and arguments, split on spaces; no shell) run after joining.
    #[arg(long = "post-run")]
    post_run: Option<String>,
    /// The KubeEdge version the edgecore binary must be.
    #[arg(long = "kubeedge-version")]
    kubeedge_version: Option<String>,
    /// Accepted for upstream compatibility; keadm pulls no image.
    #[arg(long = "image-repository")]
    image_repository: Option<String>,
    /// websocket (quic is not supported).
    #[arg(long = "hub-protocol", default_value = "websocket")]
    hub_protocol: String,
    /// Install into this directory as the root file system (image builders, tests): paths are
    /// taken inside it and nothing is started.
    #[arg(long = "root")]
    root: Option<PathBuf>,
}

/// A flag that cannot work (exit 64).
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// `-e` is not host:port.
    #[error("-e/--cloudcore-ipport {0:?}: expected IP:port (e.g. 192.168.1.10:10000)")]
    CloudAddr(String),
    /// Not websocket.
    #[error(
        "--hub-protocol {0:?}: only websocket is supported (upstream's QUIC is not ported; see docs/compatibility.md)"
    )]
    Protocol(String),
    /// A label without a key or with an invalid one.
    #[error(
        "-l/--labels {0:?}: expected key=value with a valid label key and value (value: up to 63 of A-Z a-z 0-9 - _ ., \
         starting and ending alphanumeric)"
    )]
    Label(String),
    /// `--certPath` is relative.
    #[error("--certPath {0:?}: must be an absolute path")]
    CertPath(String),
    /// A `--set` is malformed.
    #[error(transparent)]
    Set(#[from] config::Error),
}

/// What the flags ask for, checked.
pub struct Plan {
    root: Root,
    node: String,
    cloud_host: String,
    cloud_ws: String,
    cloud_https: String,
    endpoint: String,
    cgroup_driver: Option<String>,
    cert_dir: String,
    labels: BTreeMap<String, String>,
    sets: Vec<(String, String)>,
    token: Option<String>,
    tarball_dir: Option<PathBuf>,
    version: Option<String>,
}

fn valid_label_key(k: &str) -> bool {
    let (prefix, name) = k.rsplit_once('/').map_or(("", k), |(p, n)| (p, n));
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    name_ok && (prefix.is_empty() || kubeedge_model::valid_node_name(prefix))
}

/// A label value as the API server validates it: empty, or up to 63 of `[A-Za-z0-9-_.]`,
/// starting and ending alphanumeric.
fn valid_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

impl Plan {
    fn new(a: &Args) -> Result<Self, UsageError> {
        if a.hub_protocol != "websocket" {
            return Err(UsageError::Protocol(a.hub_protocol.clone()));
        }
        let (host, port) = a
            .cloudcore_ipport
            .rsplit_once(':')
            .filter(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0))
            .ok_or_else(|| UsageError::CloudAddr(a.cloudcore_ipport.clone()))?;
        let _ = port;
        let bare = host.trim_matches(['[', ']']).to_owned();
        let mut labels = BTreeMap::new();
        for l in &a.labels {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            if !valid_label_key(k) || !valid_label_value(v) {
                return Err(UsageError::Label(l.clone()));
            }
            labels.insert(k.to_owned(), v.to_owned());
        }
        if !a.cert_path.starts_with('/') {
            return Err(UsageError::CertPath(a.cert_path.clone()));
        }
        let node = a.edgenode_name.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_lowercase()
        });
        Ok(Self {
            root: Root::new(a.root.as_deref()),
            node,
            cloud_ws: a.cloudcore_ipport.clone(),
            cloud_https: format!("{host}:{}", a.certport),
            cloud_host: bare,
            endpoint: a.remote_runtime_endpoint.clone(),
            cgroup_driver: a.cgroupdriver.clone(),
            cert_dir: a.cert_path.clone(),
            labels,
            sets: config::parse_sets(&a.set)?,
            token: a.token.as_deref().map(str::trim).map(str::to_owned),
            tarball_dir: a.tarballpath.clone(),
            version: a.kubeedge_version.clone(),
        })
    }
}

/// Why the install failed (after preflight passed).
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Install(#[from] crate::install::Error),
    #[error("edgecore did not connect to CloudHub within {0:?} (see journalctl -u edgecore): {1}")]
    NotConnected(Duration, String),
    #[error("preflight left nothing to install")]
    Incomplete,
    #[error("interrupted by {0} while waiting for edgecore to connect")]
    Interrupted(&'static str),
    #[error("setting up signal handling: {0}")]
    Signals(std::io::Error),
}

/// Runs `keadm join`.
pub fn main(args: &Args) -> ExitCode {
    let plan = match Plan::new(args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("keadm join: {e}");
            return ExitCode::from(64);
        }
    };
    if args.image_repository.is_some() {
        println!("[join] --image-repository is ignored: keadm join pulls no image.");
    }
    if let Err(e) = hooks::run("--pre-run", args.pre_run.as_deref()) {
        eprintln!("keadm join: {e}");
        return ExitCode::FAILURE;
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keadm join: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    let ready = rt.block_on(preflight::run(&plan));
    ready.print();
    if !ready.passed() {
        eprintln!("keadm join: preflight checks failed; nothing was written. Fix the above and run keadm join again.");
        return ExitCode::FAILURE;
    }
    if let Err(e) = rt.block_on(install(&plan, ready)) {
        eprintln!("keadm join: {}", preflight::chain(&e));
        return ExitCode::FAILURE;
    }
    println!("[join] Node {} joined in {:.1} s.", plan.node, started.elapsed().as_secs_f64());
    if let Err(e) = hooks::run("--post-run", args.post_run.as_deref()) {
        eprintln!("keadm join: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

async fn install(plan: &Plan, ready: preflight::Ready) -> Result<(), Error> {
    let (Some(built), Some(creds), Some(binary)) = (ready.config, ready.credentials, ready.binary) else {
        return Err(Error::Incomplete);
    };
    let root = &plan.root;
    // From here on SIGINT and SIGTERM are caught (they end the wait below), so an interrupted
    // join rolls back instead of leaving a half-installed node.
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigint = signal(SignalKind::interrupt()).map_err(Error::Signals)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(Error::Signals)?;
    let mut tx = Tx::new(root);
    let hub = &built.config.modules.edge_hub;
    println!("[join] 1/6 Writing {}.", paths::EDGECORE_YAML);
    tx.write(paths::EDGECORE_YAML, built.yaml.as_bytes(), 0o644)?;
    println!("[join] 2/6 Writing the CA ({}), node certificate and key ({}).", hub.tls_ca_file, plan.cert_dir);
    tx.write(&hub.tls_ca_file, kubeedge_pki::pem("CERTIFICATE", &creds.ca_der).as_bytes(), 0o644)?;
    tx.write(&hub.tls_cert_file, kubeedge_pki::pem("CERTIFICATE", &creds.cert_der).as_bytes(), 0o644)?;
    tx.write(&hub.tls_private_key_file, kubeedge_pki::pem("EC PRIVATE KEY", &creds.key_sec1).as_bytes(), 0o600)?;
    println!("[join] 3/6 Installing {} from {}.", root.bin("edgecore").display(), binary.display());
    tx.copy(&binary, format!("{}/edgecore", paths::BIN_DIR), 0o755)?;
    println!("[join] 4/6 Installing {}.", root.unit("edgecore.service").display());
    tx.write(format!("{}/edgecore.service", paths::UNIT_DIR), systemd::EDGECORE_UNIT.as_bytes(), 0o644)?;
    // What edgecore creates once it runs: removed again if this join does not complete.
    let db = &built.config.database.data_source;
    for path in [paths::STATE_DIR.to_owned(), db.clone(), format!("{db}-wal"), format!("{db}-shm")] {
        tx.claim(path);
    }
    tx.claim(format!("{}/pods", built.config.modules.edged.root_directory.trim_end_matches('/')));
    let systemctl = systemd::Systemctl::new(root);
    println!("[join] 5/6 Enabling{} edgecore.service.", if systemctl.available() { " and starting" } else { "" });
    tx.enable("edgecore.service")?;
    if systemctl.available() {
        let monitor = built.config.common_config.monitor_server.bind_address.clone();
        println!("[join] 6/6 Waiting for edgecore to connect to CloudHub ({monitor}).");
        let t = Instant::now();
        tokio::select! {
            r = wait_connected(&monitor) => r.map_err(|why| Error::NotConnected(CONNECT_WAIT, why))?,
            _ = sigint.recv() => return Err(Error::Interrupted("SIGINT")),
            _ = sigterm.recv() => return Err(Error::Interrupted("SIGTERM")),
        }
        println!("[join] Connected after {:.1} s.", t.elapsed().as_secs_f64());
    } else {
        println!("[join] 6/6 Not started: {}.", if root.is_host() { "systemd is not running" } else { "--root given" });
    }
    tx.commit();
    Ok(())
}

/// Waits until edgecore's monitor says it is ready and EdgeHub is connected.
async fn wait_connected(monitor: &str) -> Result<(), String> {
    let deadline = Instant::now() + CONNECT_WAIT;
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        match (crate::http::get(monitor, "/readyz").await, crate::http::get(monitor, "/metrics").await) {
            (Ok((200, _)), Ok((200, metrics))) => {
                let connected = metrics.lines().any(|l| l.trim() == "kubeedge_edgehub_connected 1");
                if connected {
                    return Ok(());
                }
                last = "edgecore runs but EdgeHub is not connected yet".into();
            }
            (Ok((code, body)), Ok(_)) => last = format!("/readyz answered {code}: {}", body.trim()),
            (Err(e), _) | (_, Err(e)) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_checked_as_the_api_server_checks_them() {
        for ok in ["", "a", "zone-1", "A.b_c", &"x".repeat(63)] {
            assert!(valid_label_value(ok), "{ok:?}");
        }
        for bad in ["a b", "@", "-a", "a-", &"x".repeat(64), "é"] {
            assert!(!valid_label_value(bad), "{bad:?}");
        }
    }
}
