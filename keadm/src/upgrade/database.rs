//! The database half of `keadm rollback edge`: the backup's edgecore.db put in place of the
//! live one, **with the live node-task records carried over**.
//!
//! edgecore's task manager keeps each node task's record in `meta_v2` under keys
//! `/operations.kubeedge.io/…` (edgecore `taskmanager::record`). A backup is taken at the
//! start of an upgrade (its Backup action), so the backup's record says the task is running
//! its backup; restored as it is, edgecore would resume that task after the restart and
//! upgrade again. The records describe what happened since, so the live ones win: in the
//! restored database every task row is replaced by the live database's (same keys replaced,
//! rows the live database lacks deleted, the rest added). Everything else is the backup's.
//!
//! The restored file is built beside the live one ([`stage`]: a 0600 copy, then the rows in
//! one transaction), and renamed over it only when complete ([`Staged::install`]), so a failure
//! before that leaves the live database as it was. Both run while edgecore is stopped: the
//! live rows are read after the last writer is gone.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kubeedge_apis::operations::GROUP;
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, OptionalExtension as _};

use super::{Error, backup};

/// The start of every node-task record's key in `meta_v2` (all API versions).
pub fn task_key_prefix() -> String {
    format!("/{GROUP}/")
}

/// The `meta_v2` columns carried, in order.
const COLUMNS: &str = "key, group_version_resource, namespace, name, resource_version, value";

/// The SQLite files beside a database that belong to it (and not to another one renamed over it).
const SIDECARS: [&str; 3] = ["-wal", "-shm", "-journal"];

/// A restored database built beside the live one; removed on drop unless installed.
#[derive(Debug)]
pub struct Staged {
    tmp: PathBuf,
    live: PathBuf,
}

/// Builds the restored database from `backup` and the task rows of `live` (which may be
/// missing or unreadable: then there are none). Nothing at `live` is changed.
pub fn stage(backup: &Path, live: &Path) -> Result<Staged, Error> {
    // A live database that cannot be read is a reason to roll back, not to refuse: the backup
    // is restored without any node-task record then, so nothing resumes.
    let rows = task_rows(live).unwrap_or_else(|e| {
        eprintln!(
            "keadm: the live database's node-task records cannot be read ({e}); restoring the backup without any"
        );
        Vec::new()
    });
    let name = live.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let staged = Staged { tmp: live.with_file_name(format!(".{name}.keadm-restore")), live: live.to_owned() };
    staged.remove_tmp();
    // 0600 from the first byte: the database holds the node's secrets.
    backup::private_file(&staged.tmp)?;
    let mut out =
        std::fs::OpenOptions::new().write(true).open(&staged.tmp).map_err(|e| Error::io("opening", &staged.tmp, e))?;
    let mut from = std::fs::File::open(backup).map_err(|e| Error::io("opening", backup, e))?;
    std::io::copy(&mut from, &mut out).map_err(|e| Error::io("writing", &staged.tmp, e))?;
    out.flush().map_err(|e| Error::io("writing", &staged.tmp, e))?;
    drop(out);
    carry(&staged.tmp, &rows).map_err(|e| {
        Error::Failed(format!("carrying the live task records into the restored database {}: {e}", backup.display()))
    })?;
    for suffix in SIDECARS {
        // Closing the last connection checkpoints and removes the WAL; one left would hold rows
        // the renamed file lacks.
        if std::fs::metadata(sidecar(&staged.tmp, suffix)).is_ok_and(|m| m.len() > 0) {
            return Err(Error::Failed(format!(
                "the restored database {} kept a {suffix} file after closing",
                staged.tmp.display()
            )));
        }
    }
    let f = std::fs::File::open(&staged.tmp).map_err(|e| Error::io("opening", &staged.tmp, e))?;
    f.sync_all().map_err(|e| Error::io("syncing", &staged.tmp, e))?;
    Ok(staged)
}

impl Staged {
    /// Puts the restored database in place of the live one.
    pub fn install(self) -> Result<(), Error> {
        // The live database's WAL, shared memory or journal would be applied to the restored
        // file: they go first. The live rows that mattered were read (through the WAL) and
        // the connection that read them checkpointed it, so nothing needed is lost.
        for suffix in SIDECARS {
            let p = sidecar(&self.live, suffix);
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("removing", &p, e)),
            }
        }
        std::fs::rename(&self.tmp, &self.live).map_err(|e| Error::io("renaming to", &self.live, e))?;
        if let Some(dir) = self.live.parent().and_then(|d| std::fs::File::open(d).ok()) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    fn remove_tmp(&self) {
        let _ = std::fs::remove_file(&self.tmp);
        for suffix in SIDECARS {
            let _ = std::fs::remove_file(sidecar(&self.tmp, suffix));
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        // After `install` the file is the live database under another name: nothing is here.
        self.remove_tmp();
    }
}

fn sidecar(db: &Path, suffix: &str) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

type Row = [Value; 6];

/// The live database's task rows (none when it or its `meta_v2` does not exist).
fn task_rows(live: &Path) -> Result<Vec<Row>, Error> {
    if !live.exists() {
        return Ok(Vec::new());
    }
    let fail = |e: rusqlite::Error| {
        Error::Failed(format!("reading the node-task records of the live database {}: {e}", live.display()))
    };
    // Read-write without CREATE: a WAL database is read through its WAL (which needs the
    // -shm file), and closing the connection checkpoints it.
    let conn = Connection::open_with_flags(live, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(fail)?;
    conn.busy_timeout(Duration::from_secs(10)).map_err(fail)?;
    if !has_meta_v2(&conn).map_err(fail)? {
        return Ok(Vec::new());
    }
    let mut stmt = conn
        .prepare(&format!("SELECT {COLUMNS} FROM meta_v2 WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key"))
        .map_err(fail)?;
    let rows = stmt
        .query_map([task_key_prefix()], |r| Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?]))
        .map_err(fail)?
        .collect::<Result<Vec<Row>, _>>()
        .map_err(fail)?;
    drop(stmt);
    conn.close().map_err(|(_, e)| fail(e))?;
    Ok(rows)
}

fn has_meta_v2(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta_v2'", [], |_| Ok(()))
        .optional()
        .map(|found| found.is_some())
}

/// In the database at `db`: every task row replaced by `rows`, in one transaction.
fn carry(db: &Path, rows: &[Row]) -> rusqlite::Result<()> {
    let mut conn =
        Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    let tx = conn.transaction()?;
    // A backup without the table (not one of ours) gets edgecore's own.
    tx.execute_batch(kubeedge_metastore::schema::META_V2)?;
    tx.execute("DELETE FROM meta_v2 WHERE substr(key, 1, length(?1)) = ?1", [task_key_prefix()])?;
    {
        let mut insert = tx.prepare(&format!("INSERT INTO meta_v2 ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"))?;
        for row in rows {
            insert.execute(rusqlite::params_from_iter(row))?;
        }
    }
    tx.commit()?;
    conn.close().map_err(|(_, e)| e)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    const UPGRADE: &str = "/operations.kubeedge.io/v1alpha2/nodeupgradejobspecs/up1/nodes/edge-1";
    const PREPULL: &str = "/operations.kubeedge.io/v1alpha2/imageprepulljobspecs/p1/nodes/edge-1";
    const OLD: &str = "/operations.kubeedge.io/v1alpha2/configupdatejobspecs/c0/nodes/edge-1";
    const POD: &str = "/core/v1/pods/default/web";

    /// A database as edgecore's store makes it (WAL), with `rows` of (key, value).
    fn db(path: &Path, rows: &[(&str, &str)]) -> Connection {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch("PRAGMA journal_mode=WAL;").unwrap();
        conn.execute_batch(kubeedge_metastore::schema::META_V2).unwrap();
        conn.execute_batch(kubeedge_metastore::schema::META).unwrap();
        for (key, value) in rows {
            put(&conn, key, value);
        }
        conn
    }

    fn put(conn: &Connection, key: &str, value: &str) {
        conn.execute(
            &format!("INSERT OR REPLACE INTO meta_v2 ({COLUMNS}) VALUES (?1, 'gvr', '', 'n', 7, ?2)"),
            [key, value],
        )
        .unwrap();
    }

    fn rows(path: &Path) -> Vec<(String, String)> {
        let conn = Connection::open(path).unwrap();
        let mut stmt = conn.prepare("SELECT key, value FROM meta_v2 ORDER BY key").unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<Result<_, _>>().unwrap()
    }

    /// Regression (#21 review): the backup taken by an upgrade's Backup action says the task is
    /// running its backup; restored as is, edgecore would resume the task and upgrade again.
    #[test]
    fn the_restored_database_keeps_the_live_task_records_and_the_backups_other_rows() {
        let dir = tempfile::tempdir().unwrap();
        let backup = dir.path().join("backup.db");
        let live = dir.path().join("edgecore.db");
        {
            let b = db(
                &backup,
                &[(UPGRADE, "running BackUp"), (OLD, "a task the live db no longer has"), (POD, "old pod")],
            );
            b.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
        }
        // edgecore killed before a checkpoint: the live rows are in the WAL only, and its
        // connection never closes.
        let writer = db(&live, &[]);
        writer.execute_batch("PRAGMA wal_autocheckpoint=0;").unwrap();
        for (key, value) in [(UPGRADE, "pending RollBack"), (POD, "new pod"), (PREPULL, "done")] {
            put(&writer, key, value);
        }
        assert!(std::fs::metadata(sidecar(&live, "-wal")).unwrap().len() > 0);
        std::mem::forget(writer);
        let staged = stage(&backup, &live).unwrap();
        // Nothing live is changed until installed.
        assert_eq!(rows(&live).len(), 3);
        staged.install().unwrap();
        assert_eq!(
            rows(&live),
            [
                (POD.to_owned(), "old pod".to_owned()),
                (PREPULL.to_owned(), "done".to_owned()),
                (UPGRADE.to_owned(), "pending RollBack".to_owned()),
            ]
        );
        // Every column is carried as it was.
        let conn = Connection::open(&live).unwrap();
        let (gvr, rv): (String, i64) = conn
            .query_row("SELECT group_version_resource, resource_version FROM meta_v2 WHERE key = ?1", [UPGRADE], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((gvr.as_str(), rv), ("gvr", 7));
        drop(conn);
        assert_eq!(std::fs::metadata(&live).unwrap().permissions().mode() & 0o777, 0o600);
        // No staging file is left.
        let names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert!(names.iter().all(|n| !n.contains("keadm-restore")), "{names:?}");
    }

    #[test]
    fn without_a_live_database_the_backups_task_records_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let backup = dir.path().join("backup.db");
        drop(db(&backup, &[(UPGRADE, "running BackUp"), (POD, "pod")]));
        let live = dir.path().join("edgecore.db");
        stage(&backup, &live).unwrap().install().unwrap();
        assert_eq!(rows(&live), [(POD.to_owned(), "pod".to_owned())]);
    }

    #[test]
    fn an_unreadable_live_database_is_replaced_without_any_task_record() {
        let dir = tempfile::tempdir().unwrap();
        let backup = dir.path().join("backup.db");
        drop(db(&backup, &[(UPGRADE, "running BackUp"), (POD, "pod")]));
        let live = dir.path().join("edgecore.db");
        std::fs::write(&live, "corrupt, not sqlite").unwrap();
        stage(&backup, &live).unwrap().install().unwrap();
        assert_eq!(rows(&live), [(POD.to_owned(), "pod".to_owned())]);
    }

    #[test]
    fn a_backup_that_is_not_a_database_fails_and_leaves_the_live_one() {
        let dir = tempfile::tempdir().unwrap();
        let backup = dir.path().join("backup.db");
        std::fs::write(&backup, "not sqlite").unwrap();
        let live = dir.path().join("edgecore.db");
        drop(db(&live, &[(UPGRADE, "pending RollBack")]));
        let e = stage(&backup, &live).unwrap_err();
        assert!(e.to_string().contains("carrying the live task records"), "{e}");
        assert_eq!(rows(&live).len(), 1);
        let names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert!(names.iter().all(|n| !n.contains("keadm-restore")), "{names:?}");
    }
}
