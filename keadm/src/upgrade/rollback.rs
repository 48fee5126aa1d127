//! `keadm rollback edge [--historical-version vA]`: stops edgecore.service, restores the
//! database, config and binary from `/etc/kubeedge/backup/vA/` (the newest backup when no
//! version is given), and starts it. The database replaces the live one atomically, mode
//! 0600, keeping the live node-task records ([`super::database`]), with the live one's
//! `-wal`/`-shm` files removed (they belong to the database being replaced).
//!
//! Once edgecore was stopped it is always started again, whatever failed, and the error says
//! what was restored and whether edgecore runs.

use std::path::{Path, PathBuf};

use kubeedge_apis::operations::task::{UpgradeReport, check_version, report_event};

use super::{Base, Error, Node, backup, database, files, service};

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
    let from_backup = Files { db: file(backup::DB)?, config: file(backup::CONFIG)?, binary: file(backup::BINARY)? };
    let live_db = node.edge()?.database();
    service::require_systemd()?;
    if let Err(e) = service::stop() {
        return Err(service::start_after(format!("stopping {} failed: {e}; nothing was restored", service::UNIT)));
    }
    match put_back(node, &from_backup, &live_db) {
        Ok(()) => service::start()
            .map_err(|e| Error::Failed(format!("edgecore {version} is restored, but starting it failed: {e}"))),
        Err(e) => Err(service::start_after(e)),
    }
}

/// The three files of a backup.
struct Files {
    db: PathBuf,
    config: PathBuf,
    binary: PathBuf,
}

/// Restores the files while edgecore is stopped; an error says which were restored already.
/// The database comes first (its staging is the likeliest to fail, and changes nothing live),
/// the binary last: an old binary may not load a newer config, while a newer binary loads an
/// old one.
fn put_back(node: &Node, saved: &Files, live_db: &Path) -> Result<(), Error> {
    let config_mode = mode_of(&node.config_path).unwrap_or(0o644);
    let mut done: Vec<&str> = Vec::new();
    let failed = |e: Error, done: &[&str]| {
        Error::Failed(if done.is_empty() {
            format!("{e}; nothing was restored")
        } else {
            format!("{e}; restored before the failure: {}", done.join(", "))
        })
    };
    let staged = database::stage(&saved.db, live_db).map_err(|e| failed(e, &done))?;
    staged.install().map_err(|e| failed(e, &done))?;
    done.push("the database");
    files::copy_atomic(&saved.config, &node.config_path, config_mode).map_err(|e| failed(e, &done))?;
    done.push("the config");
    files::copy_atomic(&saved.binary, &node.layout.binary(), 0o755).map_err(|e| failed(e, &done))
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
        // Modification times one second apart, oldest first (set, not waited for).
        let base = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        for (i, v) in (0u64..).zip(["v1.0.0", "not-a-version", "v1.1.0"]) {
            std::fs::create_dir(dir.path().join(v)).unwrap();
            let at = base + std::time::Duration::from_secs(i);
            std::fs::File::open(dir.path().join(v)).unwrap().set_modified(at).unwrap();
        }
        std::fs::write(dir.path().join("v9.9.9"), "a file").unwrap();
        assert_eq!(newest(dir.path()).unwrap().as_deref(), Some("v1.1.0"));
    }

    const TASK: &str = "/operations.kubeedge.io/v1alpha2/nodeupgradejobspecs/up1/nodes/edge-1";

    fn task_value(db: &Path) -> String {
        let conn = rusqlite::Connection::open(db).unwrap();
        conn.query_row("SELECT value FROM meta_v2 WHERE key = ?1", [TASK], |r| r.get(0)).unwrap()
    }

    /// A node (in a temporary root) mid-upgrade, and its backup of v1.0.0 taken by the
    /// upgrade's Backup action.
    fn node_with_backup(dir: &Path) -> (Node, Files) {
        let node = Node::for_test(dir);
        let db = |path: &Path, task: &str, pod: &str| {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let conn = rusqlite::Connection::open(path).unwrap();
            conn.execute_batch(kubeedge_metastore::schema::META_V2).unwrap();
            let insert = "INSERT INTO meta_v2 (key, group_version_resource, namespace, name, resource_version, value) \
                          VALUES (?1, 'gvr', '', 'n', 1, ?2)";
            conn.execute(insert, [TASK, task]).unwrap();
            conn.execute(insert, ["/core/v1/pods/default/web", pod]).unwrap();
        };
        let live = node.edge().unwrap().database();
        db(&live, "pending RollBack", "pod of v1.1.0");
        std::fs::create_dir_all(node.layout.binary().parent().unwrap()).unwrap();
        std::fs::write(node.layout.binary(), "edgecore v1.1.0").unwrap();
        let saved = backup::dir(&node, "v1.0.0");
        let files = Files {
            db: saved.join(backup::DB),
            config: saved.join(backup::CONFIG),
            binary: saved.join(backup::BINARY),
        };
        db(&files.db, "running BackUp", "pod of v1.0.0");
        std::fs::write(&files.config, std::fs::read(&node.config_path).unwrap()).unwrap();
        std::fs::write(&node.config_path, "# v1.1.0's config\n").unwrap();
        std::fs::write(&files.binary, "edgecore v1.0.0").unwrap();
        (node, files)
    }

    /// Regression (#21 review): the backup's task record said "running BackUp", so the
    /// restored edgecore could resume the task and upgrade again.
    #[test]
    fn the_three_files_are_restored_with_the_live_task_records() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let (node, files) = node_with_backup(dir.path());
        let live = node.edge().unwrap().database();
        put_back(&node, &files, &live).unwrap();
        assert_eq!(std::fs::read_to_string(node.layout.binary()).unwrap(), "edgecore v1.0.0");
        assert_eq!(std::fs::read(&node.config_path).unwrap(), std::fs::read(&files.config).unwrap());
        assert_eq!(task_value(&live), "pending RollBack");
        let conn = rusqlite::Connection::open(&live).unwrap();
        let pod: String =
            conn.query_row("SELECT value FROM meta_v2 WHERE key LIKE '/core/%'", [], |r| r.get(0)).unwrap();
        assert_eq!(pod, "pod of v1.0.0");
        assert_eq!(std::fs::metadata(&live).unwrap().permissions().mode() & 0o777, 0o600);
        // The backup itself is as it was.
        assert_eq!(task_value(&files.db), "running BackUp");
    }

    #[test]
    fn a_failed_restore_says_what_was_restored_already() {
        let dir = tempfile::tempdir().unwrap();
        let (node, files) = node_with_backup(dir.path());
        let live = node.edge().unwrap().database();
        // The binary cannot be written: its directory is a file.
        let bin_dir = node.layout.binary().parent().unwrap().to_owned();
        std::fs::remove_dir_all(&bin_dir).unwrap();
        std::fs::write(&bin_dir, "not a directory").unwrap();
        let e = put_back(&node, &files, &live).unwrap_err().to_string();
        assert!(e.ends_with("; restored before the failure: the database, the config"), "{e}");
        // A backup database that does not open changes nothing live.
        std::fs::write(&files.db, "not sqlite").unwrap();
        let e = put_back(&node, &files, &live).unwrap_err().to_string();
        assert!(e.ends_with("; nothing was restored"), "{e}");
        assert_eq!(task_value(&live), "pending RollBack");
    }
}
