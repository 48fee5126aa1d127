//! The store thread: it owns the SQLite connection and serves requests in rounds.
//!
//! Each round takes the first queued request (blocking), then whatever else is already queued, up
//! to `batch_max` requests. All writes of the round go into one `BEGIN IMMEDIATE` transaction, each
//! call inside its own savepoint: a call whose op fails is rolled back to its savepoint and answered
//! with its error while the other calls stay in the transaction. After the single `COMMIT` (one WAL
//! append and, with `synchronous=FULL`, one fsync for the whole round) every writer is answered;
//! then the round's reads run, so they see the round's writes.
//!
//! If the shared transaction fails after it began (`COMMIT` fails, or an error such as
//! `SQLITE_FULL` makes SQLite roll the transaction back itself), nothing of the round is committed
//! and each call is retried alone in its own transaction, so one call can never fail another. If
//! it cannot even begin (the lock stayed busy for the whole busy timeout), every call of the round
//! gets that error at once rather than waiting out the timeout once per call.

use std::time::Instant;

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::{Error, MetaRow, MetaV2Row, Op, Result, SqlValue};

/// A request to the store thread.
pub(crate) enum Request {
    /// Apply `ops` atomically; reply with the rows each op changed, after the commit.
    Apply { ops: Vec<Op>, reply: oneshot::Sender<Result<Vec<usize>>> },
    /// A read.
    Read(Read),
}

/// The reads, each with its reply channel.
pub(crate) enum Read {
    Get { key: String, reply: oneshot::Sender<Result<Option<MetaRow>>> },
    ListByType { ty: String, reply: oneshot::Sender<Result<Vec<MetaRow>>> },
    GetV2 { key: String, reply: oneshot::Sender<Result<Option<MetaV2Row>>> },
    ListV2 { gvr: String, namespace: Option<String>, reply: oneshot::Sender<Result<Vec<MetaV2Row>>> },
    MaxResourceVersion { reply: oneshot::Sender<Result<u64>> },
    Query { sql: &'static str, params: Vec<SqlValue>, reply: oneshot::Sender<Result<Vec<Vec<SqlValue>>>> },
}

struct Apply {
    ops: Vec<Op>,
    reply: oneshot::Sender<Result<Vec<usize>>>,
}

/// Runs until every handle is gone and the queue is drained, then closes the connection.
pub(crate) fn run(mut conn: Connection, mut rx: mpsc::Receiver<Request>, batch_max: usize) -> Result<()> {
    let batch_max = batch_max.max(1);
    let mut writes: Vec<Apply> = Vec::with_capacity(batch_max);
    let mut reads: Vec<Read> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(req) = next.take() {
            match req {
                Request::Apply { ops, reply } => writes.push(Apply { ops, reply }),
                Request::Read(read) => reads.push(read),
            }
            taken += 1;
            if taken < batch_max {
                next = rx.try_recv().ok();
            }
        }
        if !writes.is_empty() {
            commit_round(&mut conn, &mut writes);
        }
        for read in reads.drain(..) {
            serve_read(&conn, read);
        }
    }
    debug!("Meta store queue closed; closing the database.");
    conn.close().map_err(|(_, e)| Error::Sqlite(e))
}

// === writes ===

fn commit_round(conn: &mut Connection, calls: &mut Vec<Apply>) {
    let started = Instant::now();
    let n = calls.len();
    match apply_together(conn, calls) {
        Ok(results) => {
            for (call, result) in calls.drain(..).zip(results) {
                // A caller that gave up waiting is no reason to fail the others.
                let _ = call.reply.send(result);
            }
        }
        Err(RoundError::Begin(e)) => {
            // Nothing was tried: typically the lock stayed busy for the whole busy timeout. Retrying
            // call by call would wait that long again for each, so fail them all now.
            warn!(error = %e, calls = n, "Could not start a write transaction.");
            fail_all(calls.drain(..), &e);
        }
        Err(RoundError::Abort(e)) => {
            warn!(error = %crate::error::chain(&e), calls = n, "Batched transaction failed; applying each call alone.");
            let mut calls = calls.drain(..);
            while let Some(call) = calls.next() {
                let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
                    Ok(tx) => tx,
                    Err(e) => {
                        warn!(error = %e, "Could not start a write transaction.");
                        let _ = call.reply.send(Err(Error::Sqlite(duplicate(&e))));
                        fail_all(calls, &e);
                        break;
                    }
                };
                let result = run_ops(&tx, &call.ops).and_then(|counts| Ok(tx.commit().map(|()| counts)?));
                let _ = call.reply.send(result);
            }
        }
    }
    debug!(calls = n, elapsed_us = started.elapsed().as_micros() as u64, "Committed write round.");
}

/// Why a round's shared transaction failed; either way nothing of it is committed.
enum RoundError {
    /// `BEGIN IMMEDIATE` failed.
    Begin(rusqlite::Error),
    /// The transaction failed after it began.
    Abort(Error),
}

/// One transaction, one savepoint per call; per-call failures are in the `Ok` vector.
fn apply_together(conn: &mut Connection, calls: &[Apply]) -> Result<Vec<Result<Vec<usize>>>, RoundError> {
    let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(RoundError::Begin)?;
    let abort = |e: rusqlite::Error| RoundError::Abort(Error::Sqlite(e));
    let mut results = Vec::with_capacity(calls.len());
    for call in calls {
        let sp = tx.savepoint().map_err(abort)?;
        match run_ops(&sp, &call.ops) {
            Ok(counts) => {
                sp.commit().map_err(abort)?;
                results.push(Ok(counts));
            }
            Err(e) => {
                // Default drop behaviour: ROLLBACK TO, then RELEASE. If SQLite already rolled the
                // whole transaction back (e.g. SQLITE_FULL), this fails and the round falls back
                // to one call at a time.
                sp.finish().map_err(abort)?;
                results.push(Err(e));
            }
        }
    }
    tx.commit().map_err(abort)?;
    Ok(results)
}

fn fail_all(calls: impl Iterator<Item = Apply>, e: &rusqlite::Error) {
    for call in calls {
        let _ = call.reply.send(Err(Error::Sqlite(duplicate(e))));
    }
}

/// A copy of a SQLite error for each caller it concerns (`rusqlite::Error` is not `Clone`).
fn duplicate(e: &rusqlite::Error) -> rusqlite::Error {
    match e {
        rusqlite::Error::SqliteFailure(code, message) => rusqlite::Error::SqliteFailure(*code, message.clone()),
        other => rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(other.to_string()),
        ),
    }
}

fn run_ops(conn: &Connection, ops: &[Op]) -> Result<Vec<usize>> {
    ops.iter().map(|op| run_op(conn, op)).collect()
}

// Upserts update a conflicting row in place rather than `INSERT OR REPLACE` it. On these tables
// (one key, no other constraint, no triggers) the rows that result are the same, but REPLACE
// deletes the old row and appends a new one under a new rowid, dirtying about three pages (old
// leaf, new leaf, key index) where an in-place update dirties one: measured, about twice the
// upserts per second. For `meta_v2` this is also upstream's own statement (GORM `OnConflict{UpdateAll}`).
const UPSERT_META: &str = "INSERT INTO meta (key, type, value) VALUES (?1, ?2, ?3) \
     ON CONFLICT (key) DO UPDATE SET type = excluded.type, value = excluded.value";
const UPSERT_V2: &str = "INSERT INTO meta_v2 (key, group_version_resource, namespace, name, resource_version, value) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (key) DO UPDATE SET \
     group_version_resource = excluded.group_version_resource, namespace = excluded.namespace, \
     name = excluded.name, resource_version = excluded.resource_version, value = excluded.value";

fn run_op(conn: &Connection, op: &Op) -> Result<usize> {
    let changed = match op {
        Op::UpsertMeta(row) => conn.prepare_cached(UPSERT_META)?.execute(params![row.key, row.ty, row.value])?,
        Op::DeleteMeta { key } => conn.prepare_cached("DELETE FROM meta WHERE key = ?1")?.execute([key])?,
        Op::DeleteMetaIfValueContains { key, needle } => conn
            .prepare_cached("DELETE FROM meta WHERE key = ?1 AND value LIKE ?2 ESCAPE '\\'")?
            .execute([key, &like_contains(needle)])?,
        Op::UpsertV2(row) => {
            let rv = i64::try_from(row.resource_version)
                .map_err(|_| Error::ResourceVersionOutOfRange(row.resource_version))?;
            conn.prepare_cached(UPSERT_V2)?.execute(params![
                row.key,
                row.gvr,
                row.namespace,
                row.name,
                rv,
                row.value
            ])?
        }
        Op::DeleteV2 { key } => conn.prepare_cached("DELETE FROM meta_v2 WHERE key = ?1")?.execute([key])?,
        Op::Exec { sql, params } => conn.prepare_cached(sql)?.execute(rusqlite::params_from_iter(params.iter()))?,
    };
    Ok(changed)
}

/// `%needle%` with LIKE's wildcards and the escape character escaped, so the needle matches
/// literally (still ASCII case-insensitive, as upstream's plain `LIKE`).
pub(crate) fn like_contains(needle: &str) -> String {
    let mut pattern = String::with_capacity(needle.len() + 2);
    pattern.push('%');
    for c in needle.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

// === reads ===

fn serve_read(conn: &Connection, read: Read) {
    // Replies to callers that stopped waiting are dropped on purpose.
    match read {
        Read::Get { key, reply } => {
            let _ = reply.send(get(conn, &key));
        }
        Read::ListByType { ty, reply } => {
            let _ = reply.send(list_by_type(conn, &ty));
        }
        Read::GetV2 { key, reply } => {
            let _ = reply.send(get_v2(conn, &key));
        }
        Read::ListV2 { gvr, namespace, reply } => {
            let _ = reply.send(list_v2(conn, &gvr, namespace.as_deref()));
        }
        Read::MaxResourceVersion { reply } => {
            let _ = reply.send(max_resource_version(conn));
        }
        Read::Query { sql, params, reply } => {
            let _ = reply.send(query(conn, sql, &params));
        }
    }
}

impl rusqlite::ToSql for SqlValue {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            SqlValue::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            SqlValue::Integer(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            SqlValue::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

fn query(conn: &Connection, sql: &str, params: &[SqlValue]) -> Result<Vec<Vec<SqlValue>>> {
    use rusqlite::types::ValueRef;
    let mut stmt = conn.prepare_cached(sql)?;
    let n = stmt.column_count();
    let rows = stmt.query_map(rusqlite::params_from_iter(params.iter()), |row| {
        (0..n)
            .map(|i| {
                Ok(match row.get_ref(i)? {
                    ValueRef::Null => SqlValue::Null,
                    ValueRef::Integer(v) => SqlValue::Integer(v),
                    // GORM's numeric bool columns may come back as REAL from other writers.
                    ValueRef::Real(v) => SqlValue::Integer(v as i64),
                    ValueRef::Text(t) | ValueRef::Blob(t) => SqlValue::Text(String::from_utf8_lossy(t).into_owned()),
                })
            })
            .collect::<rusqlite::Result<Vec<_>>>()
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

// Upstream rows can hold NULLs (beego-era `value`, pass-through rows written by hand), so every
// column is read as optional and NULL becomes the empty string or zero, as GORM scans it.

fn meta_row(row: &Row<'_>) -> rusqlite::Result<MetaRow> {
    Ok(MetaRow {
        key: row.get::<_, Option<String>>(0)?.unwrap_or_default(),
        ty: row.get::<_, Option<String>>(1)?.unwrap_or_default(),
        value: row.get::<_, Option<String>>(2)?.unwrap_or_default(),
    })
}

/// A `meta_v2` row with its raw resource version, checked by [`v2_row`].
type RawV2 = (MetaV2Row, i64);

fn raw_v2_row(row: &Row<'_>) -> rusqlite::Result<RawV2> {
    let rv = row.get::<_, Option<i64>>(4)?.unwrap_or(0);
    Ok((
        MetaV2Row {
            key: row.get::<_, Option<String>>(0)?.unwrap_or_default(),
            gvr: row.get::<_, Option<String>>(1)?.unwrap_or_default(),
            namespace: row.get::<_, Option<String>>(2)?.unwrap_or_default(),
            name: row.get::<_, Option<String>>(3)?.unwrap_or_default(),
            resource_version: 0,
            value: row.get::<_, Option<String>>(5)?.unwrap_or_default(),
        },
        rv,
    ))
}

fn v2_row((mut row, rv): RawV2) -> Result<MetaV2Row> {
    row.resource_version =
        u64::try_from(rv).map_err(|_| Error::NegativeResourceVersion { key: row.key.clone(), value: rv })?;
    Ok(row)
}

const META_COLUMNS: &str = "SELECT key, type, value FROM meta";
const V2_COLUMNS: &str = "SELECT key, group_version_resource, namespace, name, resource_version, value FROM meta_v2";

fn get(conn: &Connection, key: &str) -> Result<Option<MetaRow>> {
    let mut stmt = conn.prepare_cached(&format!("{META_COLUMNS} WHERE key = ?1"))?;
    Ok(stmt.query_row([key], meta_row).optional()?)
}

fn list_by_type(conn: &Connection, ty: &str) -> Result<Vec<MetaRow>> {
    let mut stmt = conn.prepare_cached(&format!("{META_COLUMNS} WHERE type = ?1 ORDER BY key"))?;
    let rows = stmt.query_map([ty], meta_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn get_v2(conn: &Connection, key: &str) -> Result<Option<MetaV2Row>> {
    let mut stmt = conn.prepare_cached(&format!("{V2_COLUMNS} WHERE key = ?1"))?;
    stmt.query_row([key], raw_v2_row).optional()?.map(v2_row).transpose()
}

fn list_v2(conn: &Connection, gvr: &str, namespace: Option<&str>) -> Result<Vec<MetaV2Row>> {
    let rows: Vec<RawV2> = match namespace {
        Some(ns) => {
            let mut stmt = conn.prepare_cached(&format!(
                "{V2_COLUMNS} WHERE group_version_resource = ?1 AND namespace = ?2 ORDER BY key"
            ))?;
            stmt.query_map([gvr, ns], raw_v2_row)?.collect::<rusqlite::Result<_>>()?
        }
        None => {
            let mut stmt =
                conn.prepare_cached(&format!("{V2_COLUMNS} WHERE group_version_resource = ?1 ORDER BY key"))?;
            stmt.query_map([gvr], raw_v2_row)?.collect::<rusqlite::Result<_>>()?
        }
    };
    rows.into_iter().map(v2_row).collect()
}

fn max_resource_version(conn: &Connection) -> Result<u64> {
    let max: Option<i64> =
        conn.prepare_cached("SELECT MAX(resource_version) FROM meta_v2")?.query_row([], |row| row.get(0))?;
    let max = max.unwrap_or(0);
    u64::try_from(max).map_err(|_| Error::NegativeResourceVersion { key: String::new(), value: max })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tables;

    #[test]
    fn a_full_database_fails_only_the_call_that_overflows_it() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::schema::prepare(&mut conn, Tables::default()).unwrap();
        let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
        let _: i64 = conn.query_row(&format!("PRAGMA max_page_count = {}", pages + 4), [], |r| r.get(0)).unwrap();

        let row = |key: &str, len: usize| MetaRow { key: key.into(), ty: "t".into(), value: "x".repeat(len) };
        let (small_tx, mut small_rx) = oneshot::channel();
        let (huge_tx, mut huge_rx) = oneshot::channel();
        let (after_tx, mut after_rx) = oneshot::channel();
        let mut calls = vec![
            Apply { ops: vec![Op::UpsertMeta(row("small", 10))], reply: small_tx },
            Apply { ops: vec![Op::UpsertMeta(row("huge", 1 << 20))], reply: huge_tx },
            Apply { ops: vec![Op::UpsertMeta(row("after", 10))], reply: after_tx },
        ];
        commit_round(&mut conn, &mut calls);

        assert_eq!(small_rx.try_recv().unwrap().unwrap(), [1]);
        let err = huge_rx.try_recv().unwrap().unwrap_err();
        assert_eq!(
            match &err {
                Error::Sqlite(e) => e.sqlite_error_code(),
                _ => None,
            },
            Some(rusqlite::ErrorCode::DiskFull),
            "{err:?}"
        );
        assert_eq!(after_rx.try_recv().unwrap().unwrap(), [1]);
        assert!(get(&conn, "small").unwrap().is_some());
        assert!(get(&conn, "huge").unwrap().is_none());
        assert!(get(&conn, "after").unwrap().is_some());
        assert!(conn.is_autocommit());
    }

    #[test]
    fn like_pattern_escapes_wildcards() {
        assert_eq!(like_contains("abc"), "%abc%");
        assert_eq!(like_contains("a%b_c\\d"), "%a\\%b\\_c\\\\d%");
        assert_eq!(like_contains(""), "%%");
    }
}
