//! `keadm rollback edge [--historical-version vA]`: stops edgecore.service, restores the
//! database, config and binary from `/etc/kubeedge/backup/vA/` (the newest backup when no
//! version is given), and starts it. The database replaces the live one atomically, with its
//! `-wal`/`-shm` files removed (they belong to the database being replaced).

use std::path::{Path, PathBuf};

use kubeedge_apis::operations::task::{UpgradeReport, check_version, report_event};

use super::{Base, Error, Node, backup, files, service};

/// `keadm rollback edge` flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub base: Base,
    /// The backup to restore, vX.Y.Z (default: the newest in /etc/kubeedge/backup).
    #[arg(long = "historical-version")]
    historical_version: Option<String>,
}

/// `keadm rollback edge`.
pub fn run(node: &Node, args: &Args) -> UpgradeReport {
    let from = backup::current(node).unwrap_or_else(|_| "unknown".into());
    let mut report = UpgradeReport { event: report_event::ROLLBACK.into(), from_version: from, ..Default::default() };
    let result = version(node, args.historical_version.as_deref()).and_then(|v| {
        report.to_version.clone_from(&v);
        restore(node, &v)
    });
    match result {
        Ok(()) => {
            println!("[rollback] edgecore {} is restored and started.", report.to_version);
            report.success = true;
        }
        Err(e) => report.error_message = e.to_string(),
    }
    report
}

/// The backup to restore: the one given (checked), else the newest directory by mtime.
fn version(node: &Node, given: Option<&str>) -> Result<String, Error> {
    let dir = node.layout.backups();
    if let Some(v) = given {
        check_version(v).map_err(|e| Error::Usage(format!("--historical-version: {e}")))?;
        if !dir.join(v).is_dir() {
            return Err(Error::Failed(format!(
                "the historical version {v} does not exist in backup dir {}",
                dir.display()
            )));
        }
        return Ok(v.to_owned());
    }
    newest(&dir)?
        .ok_or_else(|| Error::Failed(format!("no historical version is found in backup dir {}", dir.display())))
}

/// The newest backup directory whose name is a version.
fn newest(dir: &Path) -> Result<Option<String>, Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("reading", dir, e)),
    };
    let newest = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let meta = e.metadata().ok()?;
            (meta.is_dir() && check_version(&name).is_ok()).then_some((meta.modified().ok()?, name))
        })
        .max();
    Ok(newest.map(|(_, name)| name))
}

fn restore(node: &Node, version: &str) -> Result<(), Error> {
    let saved = backup::dir(node, version);
    let file = |name: &str| -> Result<PathBuf, Error> {
        let p = saved.join(name);
        if p.is_file() { Ok(p) } else { Err(Error::Failed(format!("the backup {} lacks {name}", saved.display()))) }
    };
    let (db, config, binary) = (file(backup::DB)?, file(backup::CONFIG)?, file(backup::BINARY)?);
    let live_db = node.edge()?.database();
    let config_mode = mode_of(&node.config_path).unwrap_or(0o644);
    service::require_systemd()?;
    service::stop()?;
    files::copy_atomic(&binary, &node.layout.binary(), 0o755)?;
    files::copy_atomic(&config, &node.config_path, config_mode)?;
    files::copy_atomic(&db, &live_db, mode_of(&live_db).unwrap_or(0o600))?;
    for suffix in ["-wal", "-shm"] {
        let mut p = live_db.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
    service::start()
}

fn mode_of(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).ok().map(|m| m.permissions().mode() & 0o7777)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_version_directory_is_chosen() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(newest(&dir.path().join("none")).unwrap(), None);
        for v in ["v1.0.0", "not-a-version", "v1.1.0"] {
            std::fs::create_dir(dir.path().join(v)).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::fs::write(dir.path().join("v9.9.9"), "a file").unwrap();
        assert_eq!(newest(dir.path()).unwrap().as_deref(), Some("v1.1.0"));
    }
}
