//! The node-task commands an edge runs for a NodeUpgradeJob or ConfigUpdateJob (contract:
//! tasks-contract.md; upstream `keadm/cmd/keadm/app/cmd/edge/{upgrade,backup,rollback,configupdate}.go`):
//!
//! - `keadm backup edge`: edgecore.db (a consistent copy, `VACUUM INTO`), edgecore.yaml and
//!   `/usr/local/bin/edgecore` into `/etc/kubeedge/backup/vA/` ([`backup`]);
//! - `keadm upgrade edge --toVersion vB [--image REPO | --binary PATH]`: the new binary from a
//!   local file or from the image `REPO:vB` in containerd ([`image`], [`oci`]), checked to say
//!   vB, swapped in under systemd, and rolled back when it does not connect ([`edge`]);
//! - `keadm rollback edge [--historical-version vA]` ([`rollback`]);
//! - `keadm config-update --set k=v,…` ([`config_update`]).
//!
//! Each takes upstream's lock ([`lock`]) and ends by writing `/etc/kubeedge/upgrade_report.json`
//! ([`report`]), which edgecore's task manager reads after the restart. No shell is involved
//! anywhere: `systemctl`, `ctr`, the new `edgecore --version` and the hooks are argv, and the
//! version and image are checked with upstream's rules before they are used.

mod backup;
mod config_update;
mod database;
mod edge;
mod files;
mod image;
mod lock;
mod oci;
mod report;
mod rollback;
mod service;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use kubeedge_apis::operations::task::{self, UpgradeReport};

use crate::ctl::edge::Edge;
use crate::hooks;
use crate::paths::{self, Root};

/// The default of `--connect-timeout`, seconds.
pub const DEFAULT_CONNECT_TIMEOUT: u64 = 120;

/// Why a node-task command failed; the message names what failed (path, field or command).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag is wrong.
    #[error("{0}")]
    Usage(String),
    /// A file operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Anything else, said in full.
    #[error("{0}")]
    Failed(String),
}

impl Error {
    fn io(what: &'static str, path: &Path, source: std::io::Error) -> Self {
        Error::Io { what, path: path.to_owned(), source }
    }

    fn in_layer(self, n: usize) -> Self {
        Error::Failed(format!("layer {n} of the image: {self}"))
    }
}

impl From<crate::systemd::Error> for Error {
    fn from(e: crate::systemd::Error) -> Self {
        Error::Failed(e.to_string())
    }
}

/// The flags every node-task command has (upstream's `AddBaseFlags`).
#[derive(clap::Args, Debug)]
pub struct Base {
    /// edgecore's config file.
    #[arg(long = "config", default_value = paths::EDGECORE_YAML)]
    pub config: PathBuf,
    /// A program (and arguments, split on spaces; no shell) run before the command.
    #[arg(long = "pre-run")]
    pub pre_run: Option<String>,
    /// A program (and arguments, split on spaces; no shell) run after the command succeeded.
    #[arg(long = "post-run")]
    pub post_run: Option<String>,
}

/// `keadm upgrade`.
#[derive(clap::Args, Debug)]
pub struct UpgradeArgs {
    #[command(subcommand)]
    command: UpgradeCommand,
}

#[derive(clap::Subcommand, Debug)]
enum UpgradeCommand {
    /// Upgrades edgecore on this edge node (with rollback when the new one does not connect).
    Edge(Box<edge::Args>),
    /// Upgrades cloudcore (not built: upgrade the chart with `keadm init`'s manifests).
    Cloud(crate::ctl::Unbuilt),
}

/// `keadm backup` / `keadm rollback`: the `edge` subcommand.
#[derive(clap::Args, Debug)]
pub struct BackupArgs {
    #[command(subcommand)]
    command: BackupCommand,
}

#[derive(clap::Subcommand, Debug)]
enum BackupCommand {
    /// Backs up edgecore's database, config and binary into /etc/kubeedge/backup/vA/.
    Edge(Base),
}

/// `keadm rollback`.
#[derive(clap::Args, Debug)]
pub struct RollbackArgs {
    #[command(subcommand)]
    command: RollbackCommand,
}

#[derive(clap::Subcommand, Debug)]
enum RollbackCommand {
    /// Restores edgecore's database, config and binary from a backup and restarts it.
    Edge(rollback::Args),
}

pub use config_update::Args as ConfigUpdateArgs;

/// Where the commands keep things (upstream's paths, inside a root for tests).
pub struct Layout {
    root: Root,
}

impl Layout {
    fn host() -> Self {
        Self { root: Root::new(None) }
    }
    fn report(&self) -> PathBuf {
        self.root.at(task::UPGRADE_REPORT_PATH)
    }
    fn lock(&self) -> PathBuf {
        self.root.at(lock::LOCK_PATH)
    }
    fn backups(&self) -> PathBuf {
        self.root.at(task::BACKUP_DIR)
    }
    fn binary(&self) -> PathBuf {
        self.root.bin("edgecore")
    }
    fn work(&self, version: &str) -> PathBuf {
        self.root.at(paths::KUBEEDGE_DIR).join("upgrade").join(version)
    }
}

/// `keadm upgrade`.
pub fn upgrade_main(args: &UpgradeArgs) -> ExitCode {
    match &args.command {
        UpgradeCommand::Edge(a) => run("upgrade edge", &a.base, |node| edge::run(node, a)),
        UpgradeCommand::Cloud(_) => {
            eprintln!(
                "keadm upgrade cloud is not available in this build: cloudcore is upgraded by applying the new \
                 release's manifests (keadm manifest | kubectl apply -f -)"
            );
            ExitCode::from(64)
        }
    }
}

/// `keadm backup`.
pub fn backup_main(args: &BackupArgs) -> ExitCode {
    let BackupCommand::Edge(base) = &args.command;
    run("backup edge", base, backup::run)
}

/// `keadm rollback`.
pub fn rollback_main(args: &RollbackArgs) -> ExitCode {
    let RollbackCommand::Edge(a) = &args.command;
    run("rollback edge", &a.base, |node| rollback::run(node, a))
}

/// `keadm config-update`.
pub fn config_update_main(args: &ConfigUpdateArgs) -> ExitCode {
    run("config-update", &args.base, |node| config_update::run(node, args))
}

/// This edge node, as the commands see it.
pub struct Node {
    /// The paths.
    layout: Layout,
    /// `--config`.
    config_path: PathBuf,
    /// edgecore.yaml, loaded (`None` when it does not load: backup and rollback can say so).
    edge: Result<Edge, String>,
}

impl Node {
    fn edge(&self) -> Result<&Edge, Error> {
        self.edge.as_ref().map_err(|e| Error::Failed(e.clone()))
    }
}

#[cfg(test)]
impl Node {
    /// A node inside the directory `root`: upstream's default edgecore.yaml, every path in it
    /// taken inside `root`.
    fn for_test(root: &Path) -> Self {
        use kubeedge_config::edgecore::EdgeCoreConfig;
        let inside = Root::new(Some(root));
        let config_path = inside.at(paths::EDGECORE_YAML);
        std::fs::create_dir_all(config_path.parent().unwrap()).unwrap();
        let yaml = EdgeCoreConfig::default_for(&kubeedge_config::HostInfo::placeholder()).to_yaml();
        std::fs::write(&config_path, yaml).unwrap();
        let edge = Edge::load(Some(&config_path), Some(root)).map_err(|e| crate::ctl::chain(&e));
        if let Err(e) = &edge {
            panic!("{e}");
        }
        Self { layout: Layout { root: inside }, config_path, edge }
    }
}

/// The shared frame: lock, pre-run hook, the command (which returns its report), post-run
/// hook on success, the report written; a failure is printed on one line and exits 1.
fn run(name: &str, base: &Base, body: impl FnOnce(&Node) -> UpgradeReport) -> ExitCode {
    let layout = Layout::host();
    let _lock = match lock::Lock::acquire(&layout.lock()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("keadm {name}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let edge = Edge::load(Some(&base.config), None).map_err(|e| crate::ctl::chain(&e));
    let node = Node { layout, config_path: base.config.clone(), edge };
    let mut report = match hooks::run("--pre-run", base.pre_run.as_deref()) {
        Ok(()) => body(&node),
        Err(e) => UpgradeReport { event: event_of(name).into(), error_message: e.to_string(), ..Default::default() },
    };
    if report.success
        && let Err(e) = hooks::run("--post-run", base.post_run.as_deref())
    {
        report.success = false;
        report.error_message = e.to_string();
    }
    if let Err(e) = report::write(&node.layout.report(), &report) {
        eprintln!("keadm {name}: writing the report: {e}");
        return ExitCode::FAILURE;
    }
    // A rolled-back upgrade is a failed upgrade, however well the rollback went.
    let rolled_back = name == "upgrade edge" && report.event == task::report_event::ROLLBACK;
    if report.success && !rolled_back {
        ExitCode::SUCCESS
    } else {
        eprintln!("keadm {name}: {}", report.error_message);
        ExitCode::FAILURE
    }
}

fn event_of(name: &str) -> &'static str {
    use task::report_event as ev;
    match name {
        "backup edge" => ev::BACKUP,
        "rollback edge" => ev::ROLLBACK,
        "config-update" => ev::CONFIG_UPDATE,
        _ => ev::UPGRADE,
    }
}
