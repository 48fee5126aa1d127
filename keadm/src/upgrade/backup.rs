//! `keadm backup edge`: edgecore's database, config and binary into
//! `/etc/kubeedge/backup/vA/` (vA = what the installed `edgecore --version` says). The database
//! is copied with SQLite's `VACUUM INTO`, a consistent snapshot taken while edgecore runs (a
//! plain file copy could catch a half-written page or miss the WAL). edgecore is not stopped.

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
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
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

/// A consistent copy of the SQLite database `from` at `to` (replaced atomically).
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
    conn.execute("VACUUM INTO ?1", [tmp_str]).map_err(fail)?;
    drop(conn);
    std::fs::rename(&tmp, to).map_err(|e| Error::io("renaming to", to, e))
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
}
