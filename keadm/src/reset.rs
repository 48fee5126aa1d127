//! `keadm reset`: undoes `keadm join` (edge) or `keadm deprecated init` (cloudcore on the
//! host), as upstream's:
//! - `keadm reset edge`: stops and disables `edgecore.service`, ends any edgecore still running
//!   from the installed binary, stops and removes the node's pods through CRI (as upstream's
//!   `crictl stopp/rmp`; `-p/--remote-runtime-endpoint`, else edgecore.yaml's, else containerd's
//!   socket), removes the unit, the binary, `/etc/kubeedge` (config, CA, certificates, static
//!   pods; only the edge's files when a host cloudcore shares it), `/var/lib/kubeedge`
//!   (database, sockets), `/var/log/kubeedge`, the pods' directories
//!   (`{edged.rootDirectory}/pods`: volumes, secrets written for pods), and the certificate,
//!   key and database files wherever edgecore.yaml put them;
//! - `keadm reset cloud`: what `keadm init` installed in the cluster ([`crate::reset_cloud`]);
//!   `keadm reset --kube-config FILE` does the same when nothing is installed on this host;
//! - `keadm reset` alone: the edge reset when edgecore is installed on this host, else the reset
//!   of a host cloudcore (`keadm deprecated reset`) when that is installed, else it says that
//!   nothing is installed here and points at `keadm reset cloud`. With `--kube-config` and an
//!   edgecore on this host it refuses to guess: say `edge` or `cloud`.
//!
//! `--force` skips the confirmation; `--pre-run`/`--post-run` are argv hooks (see
//! [`crate::hooks`]).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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
    /// The kubeconfig of the cluster (`reset cloud`: the cluster cloudcore was installed in by
    /// keadm init; default /root/.kube/config).
    #[arg(long = "kube-config", global = true)]
    pub kube_config: Option<PathBuf>,
    /// The CRI socket the edge's pods run on (edge reset; default: edgecore.yaml's, else
    /// unix:///run/containerd/containerd.sock).
    #[arg(short = 'p', long = "remote-runtime-endpoint", global = true)]
    pub remote_runtime_endpoint: Option<String>,
}

/// upstream's default kubeconfig.
const DEFAULT_KUBE_CONFIG: &str = "/root/.kube/config";

/// `keadm reset` flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    target: Option<Target>,
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Subcommand, Debug)]
enum Target {
    /// Removes edgecore from this host.
    Edge,
    /// Removes cloudcore installed in a cluster by keadm init.
    Cloud,
}

/// `keadm reset cloud`: removes what `keadm init` installed in the cluster, between the hooks.
fn cloud(common: &Common) -> ExitCode {
    if let Err(e) = hooks::run("--pre-run", common.pre_run.as_deref()) {
        eprintln!("keadm reset: {e}");
        return ExitCode::FAILURE;
    }
    let kube_config = common.kube_config.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_KUBE_CONFIG));
    let code = crate::reset_cloud::main(&crate::reset_cloud::Args { kube_config, force: common.force });
    if code != ExitCode::SUCCESS {
        return code;
    }
    if let Err(e) = hooks::run("--post-run", common.post_run.as_deref()) {
        eprintln!("keadm reset: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Runs `keadm reset`.
pub fn main(args: &Args) -> ExitCode {
    let root = Root::new(args.common.root.as_deref());
    let kube_config = args.common.kube_config.is_some();
    match &args.target {
        Some(Target::Edge) => crate::reset_edge::edge(&args.common, &root),
        Some(Target::Cloud) => cloud(&args.common),
        None if kube_config && edge_installed(&root) => {
            eprintln!(
                "keadm reset: --kube-config names a cluster, and edgecore is installed on this host: say which to \
                 reset, `keadm reset edge` or `keadm reset cloud --kube-config FILE`"
            );
            ExitCode::from(64)
        }
        None if edge_installed(&root) => crate::reset_edge::edge(&args.common, &root),
        None if deprecated::cloud_installed(&root) => deprecated::reset(&args.common, &root),
        // Upstream's `keadm reset --kube-config FILE` on a host with nothing installed.
        None if kube_config => cloud(&args.common),
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
