//! `keadm upgrade edge`: the new edgecore from `--binary PATH` (ours) or from the image
//! `--image REPO` tagged `--toVersion` ([`super::image`]), checked to say that version, the
//! current files backed up if `backup/vA/` lacks them, then under systemd: stop, swap the
//! binary atomically, start, and wait for EdgeHub to connect. Not connected in time (or the
//! new binary exits) → vA's binary is restored and started, and the report says Rollback.
//! Anything that fails before edgecore is stopped leaves it as it was (running); once it was
//! stopped it is always started again, whatever failed, and the error says whether it runs.

use std::io::{BufRead as _, Read as _, Write as _};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kubeedge_apis::operations::task::{UpgradeReport, check_version, report_event};

use super::{Base, DEFAULT_CONNECT_TIMEOUT, Error, Node, backup, files, image, oci, service};

/// `keadm upgrade edge` flags (upstream's names; `--binary` and `--connect-timeout` are ours).
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub base: Base,
    /// The version to upgrade to, vX.Y.Z (default: keadm's own version).
    #[arg(long = "toVersion")]
    to_version: Option<String>,
    /// The image holding /usr/local/bin/edgecore, tagged with --toVersion, in containerd (pulled
    /// through CRI if missing) [default: kubeedge/installation-package].
    #[arg(long = "image", conflicts_with = "binary")]
    image: Option<String>,
    /// A local edgecore binary to install instead of the image's.
    #[arg(long = "binary")]
    binary: Option<PathBuf>,
    /// Do not ask for confirmation.
    #[arg(long = "force")]
    force: bool,
    /// Seconds to wait for the new edgecore to connect to CloudHub before rolling back.
    #[arg(long = "connect-timeout", default_value_t = DEFAULT_CONNECT_TIMEOUT)]
    connect_timeout: u64,
}

/// How an upgrade failed.
enum Failure {
    /// Before the binary was swapped: the binary is as it was (the error says whether
    /// edgecore was stopped and started again).
    Unchanged(Error),
    /// After: the reason, for the rollback.
    Swapped(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Unchanged(e)
    }
}

/// `keadm upgrade edge`.
pub fn run(node: &Node, args: &Args) -> UpgradeReport {
    let to = args.to_version.clone().unwrap_or_else(|| format!("v{}", kubeedge_model::version::version()));
    let mut report =
        UpgradeReport { event: report_event::UPGRADE.into(), to_version: to.clone(), ..Default::default() };
    let from = match backup::current(node) {
        Ok(v) => v,
        Err(e) => {
            report.error_message = e.to_string();
            return report;
        }
    };
    report.from_version.clone_from(&from);
    let timeout = Duration::from_secs(args.connect_timeout);
    let started = Instant::now();
    match upgrade(node, args, &from, &to, timeout) {
        Ok(()) => {
            println!("[upgrade] edgecore {from} → {to}: connected after {:.1} s.", started.elapsed().as_secs_f64());
            report.success = true;
        }
        Err(Failure::Unchanged(e)) => report.error_message = e.to_string(),
        Err(Failure::Swapped(why)) => return roll_back(node, &from, &to, &why, timeout),
    }
    report
}

fn upgrade(node: &Node, args: &Args, from: &str, to: &str, timeout: Duration) -> Result<(), Failure> {
    check_version(to).map_err(|e| Error::Usage(format!("--toVersion: {e}")))?;
    service::require_systemd()?;
    if !args.force && !confirm(&format!("edgecore {from} will be replaced by {to} and restarted."))? {
        return Err(Error::Failed("aborted: not confirmed (use --force)".into()).into());
    }
    let work = node.layout.work(to);
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| Error::io("creating", &work, e))?;
    let result = swap(node, args, from, to, &work, timeout);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn swap(
    node: &Node,
    args: &Args,
    from: &str,
    to: &str,
    work: &std::path::Path,
    timeout: Duration,
) -> Result<(), Failure> {
    let new = match &args.binary {
        Some(path) => {
            let meta = std::fs::metadata(path).map_err(|e| Error::io("--binary", path, e))?;
            if !meta.is_file() || meta.len() > oci::MAX_BINARY {
                return Err(Error::Usage(format!(
                    "--binary {}: not a regular file of at most {} bytes",
                    path.display(),
                    oci::MAX_BINARY
                ))
                .into());
            }
            // The copy is what is checked and installed, whatever happens to `path` meanwhile.
            let copy = work.join("edgecore");
            files::copy_atomic(path, &copy, 0o755)?;
            copy
        }
        None => image::fetch(node, args.image.as_deref().unwrap_or(image::DEFAULT_IMAGE), to, work)?,
    };
    let says = service::binary_version(&new)?;
    if says != to {
        return Err(Error::Failed(format!("the new edgecore says it is {says}, not {to} (--toVersion)")).into());
    }
    let dir = backup::save(node, from, false)?;
    println!("[upgrade] edgecore {from} is backed up in {}.", dir.display());
    let monitor = node.edge()?.monitor();
    if let Err(e) = service::stop() {
        // Perhaps stopped, perhaps not: started, to be sure it runs.
        let why = format!("stopping {} failed: {e}; the binary was not replaced", service::UNIT);
        return Err(service::start_after(why).into());
    }
    let installed = node.layout.binary();
    if let Err(e) = files::copy_atomic(&new, &installed, 0o755) {
        // Nothing was replaced: the old edgecore is started again.
        return Err(
            service::start_after(format!("installing edgecore {to} failed: {e}; the binary was not replaced")).into()
        );
    }
    println!("[upgrade] Installed edgecore {to} as {}.", installed.display());
    service::start().map_err(|e| Failure::Swapped(e.to_string()))?;
    println!("[upgrade] Waiting up to {} s for edgecore to connect ({monitor}).", timeout.as_secs());
    service::wait_connected(&monitor, timeout).map_err(Failure::Swapped)
}

/// Restores vA's binary from its backup and starts it.
fn roll_back(node: &Node, from: &str, to: &str, why: &str, timeout: Duration) -> UpgradeReport {
    println!("[upgrade] edgecore {to} failed: {why}; rolling back to {from}.");
    let started = Instant::now();
    let saved = backup::dir(node, from).join(backup::BINARY);
    let restored = match service::stop() {
        Err(e) => Err(service::start_after(format!(
            "stopping {} failed: {e}; {from}'s binary was not restored",
            service::UNIT
        ))),
        Ok(()) => match files::copy_atomic(&saved, &node.layout.binary(), 0o755) {
            Err(e) => {
                Err(service::start_after(format!("restoring {from}'s binary failed: {e}; {to} is still installed")))
            }
            Ok(()) => service::start(),
        },
    };
    let error_message = match &restored {
        Ok(()) => format!("upgrade to {to} failed: {why}; rolled back to {from}"),
        Err(e) => format!("upgrade to {to} failed: {why}; rolling back to {from} failed: {e}"),
    };
    if restored.is_ok() {
        // Only said: the report is about the restore, and the edge reads it once connected.
        let monitor = node.edge().map(|e| e.monitor()).unwrap_or_default();
        match service::wait_connected(&monitor, timeout) {
            Ok(()) => {
                println!("[upgrade] edgecore {from} connected again after {:.1} s.", started.elapsed().as_secs_f64())
            }
            Err(e) => eprintln!("[upgrade] edgecore {from} runs again but is not connected: {e}"),
        }
    }
    UpgradeReport {
        event: report_event::ROLLBACK.into(),
        success: restored.is_ok(),
        from_version: to.to_owned(),
        to_version: from.to_owned(),
        error_message,
    }
}

/// upstream's prompt: "Are you sure you want to proceed? [y/N]: ".
fn confirm(what: &str) -> Result<bool, Error> {
    print!("{what}\nAre you sure you want to proceed? [y/N]: ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .take(1024)
        .read_line(&mut line)
        .map_err(|e| Error::Failed(format!("reading the answer from stdin: {e}")))?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes" | "Yes"))
}
