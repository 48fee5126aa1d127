//! `keadm backup edge`: edgecore's database, config and binary into
//! `/etc/kubeedge/backup/vA/` (vA = what the installed `edgecore --version` says). The database
//! is copied with SQLite's `VACUUM INTO`, a consistent snapshot taken while edgecore runs (a
//! plain file copy could catch a half-written page or miss the WAL). edgecore is not stopped.
//!
//! edgecore.db holds the node's secrets (its certificates' keys, the pods' secrets), so the
//! backups are root's alone: the directories 0700, the database and config copies 0600.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kubeedge_apis::operations::task::{UpgradeReport, report_event};

use super::{Error, Node, files, service};

/// The three files of a backup, by their names in the backup directory.
pub const DB: &str = "edgecore.db";
/// The config's name in a backup.
pub const CONFIG: &str = "edgecore.yaml";
/// The binary's name in a backup.
pub const BINARY: &str = "edgecore";

/// `keadm backup edge`.
pub fn run(node: &Node) -> UpgradeReport {
    let mut report = UpgradeReport { event: report_event::BACKUP.into(), ..Default::default() };
    let result = current(node).and_then(|v| {
        let dir = save(node, &v, true)?;
        println!("[backup] Backed up edgecore {v} into {}.", dir.display());
        Ok(v)
    });
    match result {
        Ok(v) => {
            report.success = true;
            report.to_version = v;
        }
        Err(e) => report.error_message = e.to_string(),
    }
    report
}

/// The installed edgecore's version (`/usr/local/bin/edgecore --version`).
pub fn current(node: &Node) -> Result<String, Error> {
    service::binary_version(&node.layout.binary())
}

/// The backup directory of `version`.
pub fn dir(node: &Node, version: &str) -> PathBuf {
    node.layout.backups().join(version)
}

/// Backs up into `backup/{version}/`: every file when `all`, else only those missing there.
pub fn save(node: &Node, version: &str, all: bool) -> Result<PathBuf, Error> {
    let edge = node.edge()?;
    let dir = dir(node, version);
    private_dir(&node.layout.backups())?;
    private_dir(&dir)?;
    let missing = |name: &str| all || !dir.join(name).is_file();
    if missing(DB) {
        copy_db(&edge.database(), &dir.join(DB))?;
    }
    if missing(CONFIG) {
        files::copy_atomic(&node.config_path, &dir.join(CONFIG), 0o600)?;
    }
    if missing(BINARY) {
        files::copy_atomic(&node.layout.binary(), &dir.join(BINARY), 0o755)?;
    }
    Ok(dir)
}

/// Creates `dir` (its parents as usual) and makes it 0700, also when it exists: an older
/// keadm made backup directories 0755.
fn private_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io("creating", parent, e))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(Error::io("creating", dir, e)),
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| Error::io("chmod", dir, e))
}

/// A consistent copy of the SQLite database `from` at `to` (replaced atomically), mode 0600.
pub fn copy_db(from: &Path, to: &Path) -> Result<(), Error> {
    use rusqlite::OpenFlags;
    let fail = |e: rusqlite::Error| {
        Error::Failed(format!("backing up the database {} (database.dataSource): {e}", from.display()))
    };
    // Read-write without CREATE: a missing database is an error, not a new empty file; WAL
    // needs write access to the -shm file.
    let conn = rusqlite::Connection::open_with_flags(
        from,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(fail)?;
    conn.busy_timeout(Duration::from_secs(10)).map_err(fail)?;
    let tmp = to.with_file_name(format!(".{DB}.keadm-tmp"));
    let _ = std::fs::remove_file(&tmp);
    let tmp_str = tmp.to_str().ok_or_else(|| Error::Failed(format!("{} is not UTF-8", tmp.display())))?;
    // SQLite would create the target 0644: it is made empty and 0600 first (VACUUM INTO
    // accepts an empty file), so the copy is never readable by others, not even briefly.
    let made = private_file(&tmp).and_then(|()| conn.execute("VACUUM INTO ?1", [tmp_str]).map(drop).map_err(fail));
    drop(conn);
    let result = made.and_then(|()| {
        let f = std::fs::File::open(&tmp).map_err(|e| Error::io("opening", &tmp, e))?;
        f.sync_all().map_err(|e| Error::io("syncing", &tmp, e))?;
        std::fs::rename(&tmp, to).map_err(|e| Error::io("renaming to", to, e))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Creates the empty file `path` with mode 0600 (whatever the umask).
pub fn private_file(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io("creating", path, e))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(|e| Error::io("chmod", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_copy_is_a_consistent_sqlite_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("edgecore.db");
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1),(2);").unwrap();
        // The writer stays open (edgecore runs): the WAL's rows are in the copy.
        let out = dir.path().join("backup/edgecore.db");
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        copy_db(&db, &out).unwrap();
        let copy = rusqlite::Connection::open(&out).unwrap();
        let n: i64 = copy.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 2);
        drop(conn);
        let e = copy_db(&dir.path().join("missing.db"), &out).unwrap_err();
        assert!(e.to_string().contains("missing.db (database.dataSource)"), "{e}");
    }

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    /// Regression (#21 review): SQLite made the copy 0644 in 0755 directories, and edgecore.db
    /// holds the node's secrets.
    #[test]
    fn a_backup_is_readable_by_root_alone() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let node = Node::for_test(dir.path());
        let live = node.edge().unwrap().database();
        std::fs::create_dir_all(live.parent().unwrap()).unwrap();
        let conn = rusqlite::Connection::open(&live).unwrap();
        conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1);").unwrap();
        std::fs::create_dir_all(node.layout.binary().parent().unwrap()).unwrap();
        std::fs::write(node.layout.binary(), "#!/bin/sh\n").unwrap();
        // Left by an older keadm: open to all.
        let old = node.layout.backups().join("v1.0.0");
        std::fs::create_dir_all(&old).unwrap();
        for d in [node.layout.backups(), old] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let saved = save(&node, "v1.1.0", true).unwrap();
        assert_eq!(mode(&node.layout.backups()), 0o700);
        assert_eq!(mode(&saved), 0o700);
        assert_eq!(mode(&saved.join(DB)), 0o600);
        assert_eq!(mode(&saved.join(CONFIG)), 0o600);
        assert_eq!(mode(&saved.join(BINARY)), 0o755);
        let names: Vec<_> = std::fs::read_dir(&saved).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        // A backup of a version that has one keeps it, and makes it private too.
        std::fs::set_permissions(&saved, std::fs::Permissions::from_mode(0o755)).unwrap();
        save(&node, "v1.1.0", false).unwrap();
        assert_eq!(mode(&saved), 0o700);
        drop(conn);
    }
}
