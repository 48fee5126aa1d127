//! keadm, KubeEdge's installer CLI, with upstream's commands and flags. Built so far:
//! `keadm gettoken` (upstream's shared join token, or a token bound to one node with an expiry).
//! The other commands (`init`, `manifest`, `join`, `reset`, `ctl`, `debug`, `deprecated`) are
//! refused with a clear error (exit 64) until they are built.

mod duration;
mod gettoken;

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
    /// Installs cloudcore (not built yet).
    Init(Unbuilt),
    /// Renders cloudcore's manifests (not built yet).
    Manifest(Unbuilt),
    /// Joins this host as an edge node (not built yet).
    Join(Unbuilt),
    /// Removes KubeEdge from this host (not built yet).
    Reset(Unbuilt),
    /// Edge node commands (not built yet).
    Ctl(Unbuilt),
    /// Diagnostics (not built yet).
    Debug(Unbuilt),
    /// Deprecated host-level commands (not built yet).
    Deprecated(Unbuilt),
}

/// Any arguments of a command not built yet.
#[derive(clap::Args)]
struct Unbuilt {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    args: Vec<String>,
}

fn unbuilt(name: &str) -> ExitCode {
    eprintln!("keadm {name} is not available in this build yet (see docs/operations.md)");
    ExitCode::from(64)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Gettoken(args) => gettoken::main(&args),
        Command::Init(_) => unbuilt("init"),
        Command::Manifest(_) => unbuilt("manifest"),
        Command::Join(_) => unbuilt("join"),
        Command::Reset(_) => unbuilt("reset"),
        Command::Ctl(_) => unbuilt("ctl"),
        Command::Debug(_) => unbuilt("debug"),
        Command::Deprecated(_) => unbuilt("deprecated"),
    }
}
