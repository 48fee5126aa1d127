//! A read-only look at an edgecore.db for tools (`keadm debug get`, `keadm debug collect`):
//! opened with `SQLITE_OPEN_READ_ONLY`, so it never creates tables, switches the journal mode or
//! writes a row, and it works with edgecore stopped (or running: WAL readers do not block the
//! writer). Unlike [`Store`](crate::Store) it is synchronous and has no thread of its own: a
//! command-line tool reads a few hundred rows once and exits.
//!
//! ```no_run
//! let db = kubeedge_metastore::ReadOnly::open("/var/lib/kubeedge/edgecore.db")?;
//! let pods = db.list_by_type("pod")?;
//! let problems = db.integrity_check()?; // ["ok"] when healthy
//! # Ok::<(), kubeedge_metastore::Error>(())
//! ```

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::{Error, MetaRow, MetaV2Row, Result};

/// A read-only connection to an edgecore.db.
#[derive(Debug)]
pub struct ReadOnly {
    conn: Connection,
    path: PathBuf,
}

impl ReadOnly {
    /// Opens `path` read-only. A missing file is an error (SQLite would otherwise not create it
    /// either, but says less).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        let conn =
            Connection::open_with_flags(&path, flags).map_err(|source| Error::Open { path: path.clone(), source })?;
        // A locked database (edgecore mid-commit) is waited for briefly rather than failed.
        conn.busy_timeout(crate::DEFAULT_BUSY_TIMEOUT).map_err(Error::Sqlite)?;
        Ok(Self { conn, path })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `meta` rows of one type (`pod`, `configmap`, `node`, …), ordered by key.
    pub fn list_by_type(&self, ty: &str) -> Result<Vec<MetaRow>> {
        let mut stmt = self.conn.prepare("SELECT key, type, value FROM meta WHERE type = ?1 ORDER BY key")?;
        let rows = stmt.query_map([ty], |r| Ok(MetaRow { key: r.get(0)?, ty: r.get(1)?, value: r.get(2)? }))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every `meta` row, ordered by type and key, at most `limit` of them.
    pub fn all_meta(&self, limit: usize) -> Result<Vec<MetaRow>> {
        let mut stmt = self.conn.prepare("SELECT key, type, value FROM meta ORDER BY type, key LIMIT ?1")?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map([limit], |r| Ok(MetaRow { key: r.get(0)?, ty: r.get(1)?, value: r.get(2)? }))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The `meta` row with this key.
    pub fn get(&self, key: &str) -> Result<Option<MetaRow>> {
        let mut stmt = self.conn.prepare("SELECT key, type, value FROM meta WHERE key = ?1")?;
        Ok(stmt.query_row([key], |r| Ok(MetaRow { key: r.get(0)?, ty: r.get(1)?, value: r.get(2)? })).optional()?)
    }

    /// The `meta_v2` rows of one GVR (as [`gvr_string`](crate::gvr_string)), ordered by key.
    pub fn list_v2(&self, gvr: &str) -> Result<Vec<MetaV2Row>> {
        let mut stmt = self.conn.prepare(
            "SELECT key, group_version_resource, namespace, name, resource_version, value FROM meta_v2 \
             WHERE group_version_resource = ?1 ORDER BY key",
        )?;
        let rows = stmt.query_map([gvr], |r| {
            let rv: i64 = r.get(4)?;
            Ok(MetaV2Row {
                key: r.get(0)?,
                gvr: r.get(1)?,
                namespace: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                name: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                resource_version: u64::try_from(rv).unwrap_or_default(),
                value: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// `PRAGMA integrity_check`: `["ok"]` for a sound database, else SQLite's findings.
    pub fn integrity_check(&self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare("PRAGMA integrity_check")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every table with its row count, by name.
    pub fn row_counts(&self) -> Result<Vec<(String, u64)>> {
        let mut stmt = self.conn.prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )?;
        let names: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            // The name comes from sqlite_master, quoted as an identifier (a `"` doubled).
            let sql = format!("SELECT COUNT(*) FROM \"{}\"", name.replace('"', "\"\""));
            let n: i64 = self.conn.query_row(&sql, [], |r| r.get(0))?;
            out.push((name, u64::try_from(n).unwrap_or_default()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_upstream_fixture_without_changing_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("edgecore.db");
        let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/upstream-edgecore.db");
        std::fs::copy(fixture, &db).unwrap();
        let before = std::fs::read(&db).unwrap();
        let ro = ReadOnly::open(&db).unwrap();
        let pods = ro.list_by_type("pod").unwrap();
        assert_eq!(pods.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(), ["default/pod/nginx"]);
        assert!(ro.get("default/podpatch/nginx").unwrap().is_some());
        let all = ro.all_meta(100).unwrap();
        assert!(all.len() >= 4 && all.iter().any(|r| r.ty == "node"), "{all:?}");
        assert_eq!(ro.all_meta(1).unwrap().len(), 1);
        assert_eq!(ro.integrity_check().unwrap(), ["ok"]);
        let counts = ro.row_counts().unwrap();
        assert!(counts.iter().any(|(t, n)| t == "meta" && *n > 0), "{counts:?}");
        drop(ro);
        assert_eq!(std::fs::read(&db).unwrap(), before, "a read-only open changed the file");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(ReadOnly::open(dir.path().join("absent.db")).is_err());
    }
}
