//! `keadm debug`: look into this edge node without the cloud, as upstream's
//! `keadm debug {get|check|diagnose|collect}`:
//!
//! - `get TYPE [NAME]` reads edgecore.db directly (read-only; works with edgecore stopped);
//! - `check all|arch|cpu|mem|disk|dns|network|runtime|pid` checks this host;
//! - `diagnose node|pod NAME|install` checks edgecore's pieces and explains a pod's state;
//! - `collect` writes `edge_<timestamp>.tar.gz` with what a bug report needs, secrets redacted
//!   ([`redact`]).
//!
//! Each check prints its name, its result and, when it fails, a fix; the command exits 1 when
//! any check failed.

mod check;
mod collect;
mod diagnose;
mod get;
pub mod redact;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::ctl::{self, edge::Edge};
use crate::paths::{self, Root};

/// `keadm debug` flags.
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
    /// Lists resources stored in edgecore.db (read-only).
    Get(get::Args),
    /// Checks this host: arch, cpu, memory, disk, dns, network, runtime, pid.
    Check(check::Args),
    /// Diagnoses the node, a pod, or the installation.
    Diagnose(diagnose::Args),
    /// Collects a redacted diagnostics tarball.
    Collect(collect::Args),
}

/// What `keadm debug` can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag or argument is wrong (exit 64).
    #[error("{0}")]
    Usage(String),
    /// edgecore.yaml, MetaServer, the runtime.
    #[error(transparent)]
    Ctl(#[from] ctl::Error),
    /// The database could not be read.
    #[error("reading {}", path.display())]
    Db {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: kubeedge_metastore::Error,
    },
    /// A file could not be written.
    #[error("writing {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Some checks failed (each printed already).
    #[error("{0} check(s) failed")]
    Failed(usize),
}

/// Runs `keadm debug`.
pub fn main(args: &Args) -> ExitCode {
    let ctx = Ctx { config: args.config.clone(), root: Root::new(args.root.as_deref()) };
    let result = match &args.command {
        Command::Get(a) => get::run(a, &ctx),
        Command::Check(a) => check::run(a, &ctx),
        Command::Diagnose(a) => diagnose::run(a, &ctx),
        Command::Collect(a) => collect::run(a, &ctx),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Failed(n)) => {
            eprintln!("{n} check(s) failed");
            ExitCode::FAILURE
        }
        Err(Error::Usage(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(64)
        }
        Err(e) => {
            eprintln!("error: {}", ctl::chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The global flags.
pub struct Ctx {
    config: Option<PathBuf>,
    root: Root,
}

impl Ctx {
    /// edgecore.yaml, loaded.
    fn edge(&self) -> Result<Edge, ctl::Error> {
        Edge::load(self.config.as_deref(), Some(self.root.dir()))
    }

    /// The config file's path.
    fn config_path(&self) -> PathBuf {
        self.config.clone().unwrap_or_else(|| self.root.at(paths::EDGECORE_YAML))
    }

    /// A path as seen inside `--root`.
    fn at(&self, p: impl AsRef<Path>) -> PathBuf {
        self.root.at(p)
    }
}

/// A current-thread runtime for the async parts (HTTP, CRI); the rest stays synchronous.
fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Write { path: PathBuf::from("<runtime>"), source })
}

// === checks ===

/// How one check ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Passed, with what was found.
    Pass(String),
    /// Failed: why, and what to do.
    Fail {
        /// Why.
        reason: String,
        /// The fix.
        fix: String,
    },
    /// Not run: why.
    Skip(String),
}

/// A failed outcome.
pub fn fail(reason: impl Into<String>, fix: impl Into<String>) -> Outcome {
    Outcome::Fail { reason: reason.into(), fix: fix.into() }
}

/// Named outcomes, printed as they come.
#[derive(Default)]
pub struct Report {
    failed: usize,
}

impl Report {
    /// Records and prints one check.
    pub fn add(&mut self, name: &str, outcome: Outcome) {
        let text = match &outcome {
            Outcome::Pass(what) => format!("ok    {name:<18} {what}"),
            Outcome::Fail { reason, fix } => {
                self.failed += 1;
                format!("FAIL  {name:<18} {reason}\n      {:<18} fix: {fix}", "")
            }
            Outcome::Skip(why) => format!("skip  {name:<18} {why}"),
        };
        println!("{text}");
    }

    /// `Failed` when any check failed.
    pub fn finish(self) -> Result<(), Error> {
        if self.failed == 0 { Ok(()) } else { Err(Error::Failed(self.failed)) }
    }
}

/// Reads at most `cap` bytes of a file (the end of it when `tail`), as text.
pub fn read_capped(path: &Path, cap: u64, tail: bool) -> std::io::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    if tail && len > cap {
        f.seek(SeekFrom::Start(len - cap))?;
    }
    let mut buf = Vec::new();
    f.take(cap).read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}
