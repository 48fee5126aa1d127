//! keadm, KubeEdge's installer CLI, with upstream's commands and flags. Built so far:
//! `keadm gettoken` (upstream's shared join token, or a token bound to one node with an expiry),
//! `keadm init` and `keadm manifest` (cloudcore from the chart keadm carries, no helm needed),
//! `keadm join` and `keadm reset` (edge, cloud, or cloudcore on the host), `keadm deprecated
//! init|reset` (cloudcore on the host), `keadm version`, and on an edge node `keadm ctl`
//! (this node's pods through edgecore's local servers: get, describe, logs, exec, restart; works
//! with the cloud down) and `keadm debug` (get from edgecore.db, check the host, diagnose the
//! node or a pod, collect a redacted tarball, `ctl confirm` a waiting upgrade), and the node-task
//! commands an edge runs for NodeUpgradeJob and ConfigUpdateJob (`upgrade`): `keadm backup
//! edge`, `keadm upgrade edge` (from `--image` in containerd or `--binary`, with rollback when
//! the new edgecore does not connect), `keadm rollback edge` and `keadm config-update`. Devices
//! and `keadm upgrade cloud` are not built, so `keadm ctl` refuses `edit`/`unhold-upgrade` and
//! device kinds, and `keadm upgrade cloud` says so (exit 64).

mod chart;
mod ctl;
mod debug;
mod deprecated;
mod duration;
mod gettoken;
mod hooks;
mod http;
mod init;
mod install;
mod join;
mod paths;
mod reset;
mod reset_cloud;
mod reset_edge;
mod systemd;
mod upgrade;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// keadm: install KubeEdge's cloud and edge parts.
#[derive(Parser)]
#[command(name = "keadm", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Prints a join token: upstream's shared one, or with --node one that admits only that node.
    Gettoken(gettoken::Args),
    /// Installs cloudcore into the cluster (the chart manifests/charts/cloudcore, no helm needed).
    Init(init::Args),
    /// Prints what `keadm init` installs, as a YAML stream (= helm template of the chart).
    Manifest(init::manifest::Args),
    /// Joins this host as an edge node (edgecore as a systemd service).
    Join(Box<join::Args>),
    /// Removes KubeEdge: the edge or cloudcore on this host, or (`reset cloud`) from a cluster.
    Reset(reset::Args),
    /// Operates this edge node's pods through edgecore's local servers (works offline).
    Ctl(ctl::Args),
    /// Diagnoses this edge node: get from edgecore.db, check, diagnose, collect.
    Debug(debug::Args),
    /// Cloudcore on this host as a systemd service (init, reset).
    Deprecated(deprecated::Args),
    /// Upgrades edgecore on this edge node (`upgrade edge`), with rollback on failure.
    Upgrade(upgrade::UpgradeArgs),
    /// Backs up edgecore's database, config and binary (`backup edge`).
    Backup(upgrade::BackupArgs),
    /// Restores edgecore from a backup (`rollback edge`).
    Rollback(upgrade::RollbackArgs),
    /// Sets edgecore.yaml values and restarts edgecore (restoring the old file if it fails).
    #[command(name = "config-update")]
    ConfigUpdate(upgrade::ConfigUpdateArgs),
    /// Prints keadm's version.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Gettoken(args) => gettoken::main(&args),
        Command::Init(args) => init::main(&args),
        Command::Manifest(args) => init::manifest::main(&args),
        Command::Join(args) => join::main(&args),
        Command::Reset(args) => reset::main(&args),
        Command::Ctl(args) => ctl::main(&args),
        Command::Debug(args) => debug::main(&args),
        Command::Deprecated(args) => deprecated::main(&args),
        Command::Upgrade(args) => upgrade::upgrade_main(&args),
        Command::Backup(args) => upgrade::backup_main(&args),
        Command::Rollback(args) => upgrade::rollback_main(&args),
        Command::ConfigUpdate(args) => upgrade::config_update_main(&args),
        Command::Version => {
            println!("keadm {} (kubeedge-rs, wire-compatible with KubeEdge v1.23)", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
}
