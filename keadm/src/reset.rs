//! `keadm reset`: undoes `keadm join` (edge) or `keadm deprecated init` (cloudcore on the
//! host), as upstream's:
//! - `keadm reset edge`: stops and disables `edgecore.service`, ends any edgecore still running
//!   from the installed binary, removes the unit, the binary, `/etc/kubeedge` (config, CA,
//!   certificates, static pods), `/var/lib/kubeedge` (database, sockets), `/var/log/kubeedge`,
//!   and the certificate, key and database wherever edgecore.yaml put them;
//! - `keadm reset cloud`: what `keadm init` installed in the cluster ([`crate::reset_cloud`]);
//!   `keadm reset --kube-config FILE` does the same when nothing is installed on this host;
//! - `keadm reset` alone: the edge reset when edgecore is installed on this host, else the reset
//!   of a host cloudcore (`keadm deprecated reset`) when that is installed, else it says that
//!   nothing is installed here and points at `keadm reset cloud`.
//!
//! `--force` skips the confirmation; `--pre-run`/`--post-run` are argv hooks (see
//! [`crate::hooks`]).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use kubeedge_config::edgecore::EdgeCoreConfig;

use crate::paths::{self, Root};
use crate::systemd::Systemctl;
use crate::{deprecated, hooks};

/// Flags every reset takes.
#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// Reset without asking for confirmation.
    #[arg(long, global = true)]
    pub force: bool,
    /// A program (and arguments, split on spaces; no shell) run before resetting.
    #[arg(long = "pre-run", global = true)]
    pub pre_run: Option<String>,
    /// A program (and arguments, split on spaces; no shell) run after resetting.
    #[arg(long = "post-run", global = true)]
    pub post_run: Option<String>,
    /// Reset the installation in this directory as the root file system (see keadm join --root).
    #[arg(long = "root", global = true)]
    pub root: Option<PathBuf>,
}

/// `keadm reset` flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    target: Option<Target>,
    #[command(flatten)]
    common: Common,
    /// The kubeconfig of a cluster cloudcore was installed in by `keadm init` (as `keadm reset
    /// cloud`, when nothing is installed on this host).
    #[arg(long = "kube-config")]
    kube_config: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
enum Target {
    /// Removes edgecore from this host.
    Edge,
    /// Removes cloudcore installed in a cluster by keadm init.
    Cloud(CloudArgs),
}

/// `keadm reset cloud` flags.
#[derive(clap::Args, Debug)]
pub struct CloudArgs {
    /// The kubeconfig of the cluster cloudcore is installed in.
    #[arg(long = "kube-config", default_value = "/root/.kube/config")]
    kube_config: PathBuf,
}

/// `keadm reset cloud`: removes what `keadm init` installed in the cluster.
fn cloud(kube_config: &Path, common: &Common) -> ExitCode {
    crate::reset_cloud::main(&crate::reset_cloud::Args { kube_config: kube_config.to_owned(), force: common.force })
}

/// Runs `keadm reset`.
pub fn main(args: &Args) -> ExitCode {
    let root = Root::new(args.common.root.as_deref());
    match &args.target {
        Some(Target::Edge) => edge(&args.common, &root),
        Some(Target::Cloud(c)) => cloud(&c.kube_config, &args.common),
        None if edge_installed(&root) => edge(&args.common, &root),
        None if deprecated::cloud_installed(&root) => deprecated::reset(&args.common, &root),
        // Upstream's `keadm reset --kube-config FILE` on a host with nothing installed.
        None if args.kube_config.is_some() => cloud(args.kube_config.as_deref().unwrap_or(Path::new("")), &args.common),
        None => {
            println!(
                "Nothing of KubeEdge is installed on this host (no edgecore, no cloudcore.service). \
                 For cloudcore installed in a cluster by keadm init, run: keadm reset cloud --kube-config FILE"
            );
            ExitCode::SUCCESS
        }
    }
}

/// Whether `keadm join` left anything on this root.
pub fn edge_installed(root: &Root) -> bool {
    [root.at(paths::EDGECORE_YAML), root.unit("edgecore.service"), root.bin("edgecore")].iter().any(|p| p.exists())
}

/// Asks before a reset unless `--force`; true to go on.
pub fn confirm(common: &Common, what: &str) -> bool {
    if common.force {
        return true;
    }
    println!("[reset] WARNING: {what} will be removed from this host.");
    print!("[reset] Are you sure you want to proceed? [y/N]: ");
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    line.trim().eq_ignore_ascii_case("y")
}

/// The PIDs of processes running `exe` (as `/proc/PID/exe` says); all edgecores when `None`.
pub fn pids_of(exe: Option<&Path>, comm: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let me = std::process::id();
    let mut pids: Vec<u32> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|&pid| pid != me)
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm))
        .filter(|pid| exe.is_none_or(|exe| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| p == exe)))
        .collect();
    pids.sort_unstable();
    pids
}

/// Running edgecore processes (the preflight's "already running" check).
pub fn edgecore_pids() -> Vec<u32> {
    pids_of(None, "edgecore")
}

/// Ends what still runs from `exe` (SIGKILL, by PID) after its service stopped.
pub fn kill_leftovers(exe: &Path, comm: &str) {
    for pid in pids_of(Some(exe), comm) {
        println!("[reset] Killing {comm} (pid {pid}).");
        let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    }
}

/// Removes a file or a directory tree if it exists, saying so.
pub fn remove(path: &Path) {
    let result = match std::fs::symlink_metadata(path) {
        Err(_) => return,
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
    };
    match result {
        Ok(()) => println!("[reset] Removed {}.", path.display()),
        Err(e) => eprintln!("[reset] Could not remove {}: {e}", path.display()),
    }
}

/// Stops, disables and removes a unit, then ends leftovers of its binary.
pub fn remove_service(root: &Root, unit: &str, binary: &str) {
    let systemctl = Systemctl::new(root);
    let unit_file = root.unit(unit);
    if unit_file.exists() {
        println!("[reset] Stopping and disabling {unit}.");
        if let Err(e) = systemctl.disable_now(unit) {
            eprintln!("[reset] {e}");
        }
    }
    if root.is_host() {
        kill_leftovers(&root.bin(binary), binary);
    }
    remove(&unit_file);
    if let Err(e) = systemctl.daemon_reload() {
        eprintln!("[reset] {e}");
    }
    if systemctl.available() {
        let _ = systemctl.run(&["reset-failed", unit]);
    }
    remove(&root.bin(binary));
}

fn edge(common: &Common, root: &Root) -> ExitCode {
    if !confirm(common, "edgecore (its service, config, certificates and database)") {
        eprintln!("keadm reset: aborted.");
        return ExitCode::FAILURE;
    }
    if let Err(e) = hooks::run("--pre-run", common.pre_run.as_deref()) {
        eprintln!("keadm reset: {e}");
        return ExitCode::FAILURE;
    }
    // Where edgecore.yaml put things outside the standard directories.
    let extra: Vec<PathBuf> = match kubeedge_config::load_file::<EdgeCoreConfig>(root.at(paths::EDGECORE_YAML)) {
        Ok(loaded) => {
            let c = loaded.config;
            let db = c.database.data_source.clone();
            let hub = &c.modules.edge_hub;
            [
                hub.tls_ca_file.clone(),
                hub.tls_cert_file.clone(),
                hub.tls_private_key_file.clone(),
                db.clone(),
                format!("{db}-wal"),
                format!("{db}-shm"),
            ]
            .into_iter()
            .filter(|p| p.starts_with('/'))
            .map(|p| root.at(p))
            .collect()
        }
        Err(_) => Vec::new(),
    };
    remove_service(root, "edgecore.service", "edgecore");
    for p in extra {
        remove(&p);
    }
    for dir in [paths::KUBEEDGE_DIR, paths::STATE_DIR, "/var/log/kubeedge"] {
        remove(&root.at(dir));
    }
    if let Err(e) = hooks::run("--post-run", common.post_run.as_deref()) {
        eprintln!("keadm reset: {e}");
        return ExitCode::FAILURE;
    }
    println!("[reset] edgecore is removed from this host.");
    ExitCode::SUCCESS
}
