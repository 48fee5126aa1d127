//! The SQLite store behind edgecore's MetaManager and MetaServer (upstream's
//! `edge/pkg/metamanager/dao`), on upstream's exact schema, so an upstream `/var/lib/kubeedge/edgecore.db` opens in place
//! and an upstream edgecore can open ours (see [`schema`] for where each statement comes from).
//!
//! - `meta` (key, type, value): the legacy key-value store MetaManager writes, keys in the edge
//!   resource form `default/pod/nginx`, `null/node/edge-1`, `default/podpatch/nginx`.
//! - `meta_v2` (key, group_version_resource, namespace, name, resource_version, value): the
//!   MetaServer store, keys from [`v2_key`] and GVRs from [`gvr_string`].
//! - The DeviceTwin, EventBus and ServiceBus tables, created only when asked for ([`Tables`]).
//!
//! ```no_run
//! use kubeedge_metastore::{MetaRow, Op, Options, Store};
//!
//! # async fn demo() -> Result<(), kubeedge_metastore::Error> {
//! let store = Store::open("/var/lib/kubeedge/edgecore.db", Options::default())?;
//! let pod = MetaRow { key: "default/pod/nginx".into(), ty: "pod".into(), value: r#"{"metadata":{}}"#.into() };
//! store.apply(vec![Op::UpsertMeta(pod)]).await?; // committed: now ACK the cloud
//! let pods = store.list_by_type("pod").await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Threading
//!
//! One OS thread (`metastore`) owns the `rusqlite::Connection`; nothing blocks the async runtime.
//! [`Store`] is a cheap `Clone` handle on a bounded queue of [`STORE_QUEUE_CAP`] requests (full ⇒
//! callers wait: backpressure, never drop) and each request is answered on a oneshot channel.
//! The thread serves requests in rounds: it drains what is queued (up to [`Options::batch_max`]),
//! commits all writes of the round in one transaction with a savepoint per [`Store::apply`] call (a
//! failing call rolls back alone and never poisons the others), answers the writers, then runs the
//! round's reads. When the last handle is dropped (or [`Store::close`]d) the thread finishes the
//! queue, closes the database and is joined.
//!
//! # Durability
//!
//! [`Store::apply`] returns `Ok` only after `COMMIT` returned, so MetaManager can ACK the cloud
//! after it (commit-then-ACK). The database runs in WAL mode; `synchronous` decides when the WAL
//! reaches the disk, and the default is `FULL`:
//!
//! - `NORMAL` syncs the WAL only at checkpoints. A commit is in the OS page cache when `COMMIT`
//!   returns, so it survives `kill -9` of edgecore (the durability test checks this for both
//!   levels), but a power cut or kernel crash can drop every commit since the last checkpoint.
//!   The database stays consistent, yet objects the cloud saw ACKed are gone from the node and
//!   are not resent until they change again. Edge devices do lose power.
//! - `FULL` fsyncs the WAL at every commit, so an ACKed write survives a power cut, as it does
//!   upstream: go-sqlite3's default there is a rollback journal with `synchronous=NORMAL`, where
//!   every commit fsyncs the journal and then the database file. Batching pays our one fsync per
//!   round of calls rather than per call.
//!
//! Measured with `cargo bench -p kubeedge-metastore --bench store` (upserts of 2.5 KB pod JSON
//! over 1,000 keys) on the shared 2-core build VM, where an fdatasync took 0.2–1 ms and the
//! neighbours made runs differ by up to 2× (ranges over 3–5 runs, upserts/s):
//!
//! | callers                    | `FULL`      | `NORMAL`    |
//! |----------------------------|-------------|-------------|
//! | 64 concurrent, batched     | 7.8k–17.2k  | 14.3k–23.5k |
//! | 256 concurrent, batched    | 10.8k–19.4k |             |
//! | one at a time              | 0.4k–4.4k   | 12.8k–13.2k |
//!
//! With a checkpoint every 4,000 WAL pages instead of SQLite's 1,000 and a 16 MiB page cache
//! (quiet machine): 64 batched callers 24.9k/s (`FULL`) and 34.4k/s (`NORMAL`), 256 batched
//! 26.2k/s (`FULL`), one at a time 5.0k/s (`FULL`) and 14.2k/s (`NORMAL`).
//!
//! Batched, `FULL` costs from a few percent to half of the throughput, depending on the fsync
//! latency of the moment; alone, a caller pays a whole fsync per call. `FULL` is the default
//! because losing ACKed objects silently is worse than a lower peak: even its worst batched
//! figure applies a resync of thousands of objects in under a second.
//! [`Synchronous::Normal`] is there for whoever prefers the throughput, and for tests.
//!
//! # Compatibility notes
//!
//! - Opening switches the file to WAL (`edgecore.db-wal`, `-shm` beside it); upstream's SQLite reads
//!   WAL databases unchanged. The busy timeout defaults to 5 s, as go-sqlite3's.
//! - Upserts leave the same rows as upstream's `INSERT OR REPLACE` (`meta`) and `ON CONFLICT (key)
//!   DO UPDATE` (`meta_v2`), both written as the latter: updating in place dirties one page where
//!   REPLACE's delete-and-append dirties about three, for about twice the upserts per second.
//! - [`Op::DeleteMetaIfValueContains`] is upstream's pod delete (`key = ? AND value LIKE %uid%`)
//!   with the needle's `%`, `_` and `\` escaped, so it matches literally (ASCII
//!   case-insensitively, like `LIKE`).

mod error;
mod keys;
mod readonly;
pub mod schema;
mod worker;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

pub use error::{Error, Result};
pub use keys::{GROUP_CORE, NULL, gvr_string, v2_key};
pub use readonly::ReadOnly;
pub use schema::Tables;

use worker::{Read, Request};

/// Capacity of the request queue in front of the store thread. Full ⇒ callers wait (backpressure).
pub const STORE_QUEUE_CAP: usize = 1024;

/// Default for [`Options::batch_max`]: requests served per round, so per commit at most.
pub const DEFAULT_BATCH_MAX: usize = 256;

/// WAL pages between automatic checkpoints (SQLite's default is 1000).
const WAL_AUTOCHECKPOINT_PAGES: i64 = 4000;

/// Prepared statements kept per connection: the store uses about 15, DeviceTwin and EventBus about 20 more.
const STATEMENT_CACHE_CAP: usize = 64;

/// Default for [`Options::busy_timeout`].
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

// === rows and ops ===

/// A row of `meta`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaRow {
    /// Edge resource string, e.g. `default/pod/nginx`.
    pub key: String,
    /// Resource type, e.g. `pod` (column `type`).
    pub ty: String,
    /// The object, usually JSON.
    pub value: String,
}

/// A row of `meta_v2`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaV2Row {
    /// Key from [`v2_key`], e.g. `/core/v1/pods/default/nginx` (or a request path for cached
    /// pass-through answers, e.g. `/version`).
    pub key: String,
    /// Column `group_version_resource`, from [`gvr_string`], e.g. `/v1, Resource=pods`.
    pub gvr: String,
    /// Namespace, empty for cluster-scoped objects.
    pub namespace: String,
    /// Object name.
    pub name: String,
    /// The object's resourceVersion (at most `i64::MAX`, SQLite's integer range).
    pub resource_version: u64,
    /// The object JSON.
    pub value: String,
}

/// One write. The ops of one [`Store::apply`] call commit together or not at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Inserts the row or replaces the one with the same key (upstream's `INSERT OR REPLACE`).
    UpsertMeta(MetaRow),
    /// `DELETE FROM meta WHERE key = ?`.
    DeleteMeta {
        /// The row's key.
        key: String,
    },
    /// Upstream's pod delete: removes the row only if its value contains `needle` (the pod UID),
    /// so a delete of an old incarnation leaves a recreated pod alone.
    DeleteMetaIfValueContains {
        /// The row's key.
        key: String,
        /// Literal text the value must contain.
        needle: String,
    },
    /// Inserts the row or replaces the one with the same key (upstream's `ON CONFLICT (key) DO
    /// UPDATE`).
    UpsertV2(MetaV2Row),
    /// `DELETE FROM meta_v2 WHERE key = ?`.
    DeleteV2 {
        /// The row's key.
        key: String,
    },
    /// One statement of a module's own (DeviceTwin's `device*` tables, EventBus's
    /// `sub_topics`), with `?N` parameters, committed with the other ops of its call.
    Exec {
        /// The statement (a literal: statements are cached per connection).
        sql: &'static str,
        /// Its parameters, in order.
        params: Vec<SqlValue>,
    },
}

/// A value bound to, or read from, the statements of [`Op::Exec`] and [`Store::query`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SqlValue {
    /// `NULL`.
    Null,
    /// An integer (booleans are stored as 0 or 1, as upstream's driver does).
    Integer(i64),
    /// Text.
    Text(String),
}

impl SqlValue {
    /// The text, `""` for NULL (GORM scans NULL into a string as empty), the number's digits
    /// for an integer.
    pub fn text(&self) -> String {
        match self {
            SqlValue::Null => String::new(),
            SqlValue::Integer(i) => i.to_string(),
            SqlValue::Text(s) => s.clone(),
        }
    }

    /// The integer, 0 for NULL or text that is not one.
    pub fn integer(&self) -> i64 {
        match self {
            SqlValue::Null => 0,
            SqlValue::Integer(i) => *i,
            SqlValue::Text(s) => s.trim().parse().unwrap_or(0),
        }
    }

    /// Whether the column is NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, SqlValue::Null)
    }
}

impl From<&str> for SqlValue {
    fn from(s: &str) -> Self {
        SqlValue::Text(s.to_owned())
    }
}

impl From<String> for SqlValue {
    fn from(s: String) -> Self {
        SqlValue::Text(s)
    }
}

impl From<i64> for SqlValue {
    fn from(i: i64) -> Self {
        SqlValue::Integer(i)
    }
}

impl From<bool> for SqlValue {
    fn from(b: bool) -> Self {
        SqlValue::Integer(i64::from(b))
    }
}

impl<T: Into<SqlValue>> From<Option<T>> for SqlValue {
    fn from(v: Option<T>) -> Self {
        v.map_or(SqlValue::Null, Into::into)
    }
}

// === options ===

/// SQLite's `PRAGMA synchronous` level (in WAL mode).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// No fsync at all: a power cut can corrupt the database. Tests only.
    Off,
    /// fsync at checkpoints only: commits survive a process crash, not a power cut.
    Normal,
    /// fsync the WAL at every commit: commits survive a power cut. The default (see the crate docs).
    #[default]
    Full,
    /// As `Full`, plus an fsync of the directory when the journal is unlinked.
    Extra,
}

impl Synchronous {
    /// The pragma value.
    pub fn as_str(self) -> &'static str {
        match self {
            Synchronous::Off => "OFF",
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
            Synchronous::Extra => "EXTRA",
        }
    }
}

/// How to open the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Durability of a commit. Default [`Synchronous::Full`].
    pub synchronous: Synchronous,
    /// How long SQLite waits for a lock held by another connection (e.g. an operator's `sqlite3`)
    /// before failing. Default [`DEFAULT_BUSY_TIMEOUT`].
    pub busy_timeout: Duration,
    /// Most requests served per round, so most `apply` calls per commit. Default
    /// [`DEFAULT_BATCH_MAX`]; 1 disables batching.
    pub batch_max: usize,
    /// Optional tables to create. Default none (only `meta` and `meta_v2`).
    pub tables: Tables,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            synchronous: Synchronous::default(),
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            batch_max: DEFAULT_BATCH_MAX,
            tables: Tables::default(),
        }
    }
}

// === impl Store ===

/// A handle on the meta store. Cloning is cheap; every clone talks to the same store thread.
#[derive(Clone)]
pub struct Store {
    // Field order matters: the sender must go before the joiner, so that when the last handle is
    // dropped the queue closes first and the joiner then waits for a thread that is finishing.
    tx: mpsc::Sender<Request>,
    thread: Arc<Joiner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("closed", &self.tx.is_closed()).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the database at `path`, sets the pragmas, creates the missing tables
    /// and starts the store thread. The parent directory must exist.
    ///
    /// This does file I/O on the calling thread: call it before the runtime starts or inside
    /// `spawn_blocking`.
    pub fn open(path: impl AsRef<Path>, opts: Options) -> Result<Store> {
        let path = path.as_ref();
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            return Err(Error::MissingDirectory(dir.to_path_buf()));
        }
        let mut conn = Connection::open(path).map_err(|source| Error::Open { path: path.to_path_buf(), source })?;
        let journal_mode = configure(&conn, &opts).map_err(Error::Schema)?;
        schema::prepare(&mut conn, opts.tables).map_err(Error::Schema)?;
        info!(
            db.path = %path.display(),
            db.journal_mode = %journal_mode,
            db.synchronous = opts.synchronous.as_str(),
            "Opened meta store."
        );

        let (tx, rx) = mpsc::channel(STORE_QUEUE_CAP);
        let batch_max = opts.batch_max;
        let handle = std::thread::Builder::new()
            .name("metastore".into())
            .spawn(move || worker::run(conn, rx, batch_max))
            .map_err(Error::Spawn)?;
        Ok(Store { tx, thread: Arc::new(Joiner { handle: Some(handle), path: path.to_path_buf() }) })
    }

    /// Applies `ops` in one transaction: `Ok` only once it is committed, `Err` and nothing
    /// written if any op fails. Calls made concurrently are committed together, each atomic on
    /// its own.
    ///
    /// Once the call is queued, dropping the future does not cancel it.
    pub async fn apply(&self, ops: Vec<Op>) -> Result<()> {
        self.apply_counted(ops).await.map(drop)
    }

    /// As [`apply`](Self::apply), and returns how many rows each op changed, in order (upstream's
    /// pod delete only deletes the pod's `podpatch` row when the guarded delete removed a row).
    pub async fn apply_counted(&self, ops: Vec<Op>) -> Result<Vec<usize>> {
        if ops.is_empty() {
            return if self.tx.is_closed() { Err(Error::Closed) } else { Ok(Vec::new()) };
        }
        self.call(|reply| Request::Apply { ops, reply }).await
    }

    /// The `meta` row with this key.
    pub async fn get(&self, key: &str) -> Result<Option<MetaRow>> {
        let key = key.to_owned();
        self.call(|reply| Request::Read(Read::Get { key, reply })).await
    }

    /// The `meta` rows of one type, ordered by key.
    pub async fn list_by_type(&self, ty: &str) -> Result<Vec<MetaRow>> {
        let ty = ty.to_owned();
        self.call(|reply| Request::Read(Read::ListByType { ty, reply })).await
    }

    /// The `meta_v2` row with this key.
    pub async fn get_v2(&self, key: &str) -> Result<Option<MetaV2Row>> {
        let key = key.to_owned();
        self.call(|reply| Request::Read(Read::GetV2 { key, reply })).await
    }

    /// The `meta_v2` rows of one GVR (as [`gvr_string`]), in one namespace or all, ordered by key.
    /// As upstream, namespace `""` or `"null"` means all namespaces.
    pub async fn list_v2(&self, gvr: &str, namespace: Option<&str>) -> Result<Vec<MetaV2Row>> {
        let gvr = gvr.to_owned();
        let namespace = namespace.filter(|ns| !ns.is_empty() && *ns != NULL).map(str::to_owned);
        self.call(|reply| Request::Read(Read::ListV2 { gvr, namespace, reply })).await
    }

    /// The rows of a read-only statement of a module's own (see [`Op::Exec`]), every column
    /// as a [`SqlValue`]. Runs after the writes queued before it are committed.
    pub async fn query(&self, sql: &'static str, params: Vec<SqlValue>) -> Result<Vec<Vec<SqlValue>>> {
        self.call(|reply| Request::Read(Read::Query { sql, params, reply })).await
    }

    /// The highest `resource_version` in `meta_v2`, 0 if it is empty.
    pub async fn max_resource_version(&self) -> Result<u64> {
        self.call(|reply| Request::Read(Read::MaxResourceVersion { reply })).await
    }

    /// Drops this handle. If it is the last one, waits until the store thread has served what is
    /// queued and closed the database, and reports how that went; otherwise returns `Ok` at once.
    /// Dropping the last handle does the same wait and logs the outcome.
    pub fn close(self) -> Result<()> {
        let Store { tx, thread } = self;
        drop(tx);
        match Arc::try_unwrap(thread) {
            Ok(mut joiner) => joiner.join(),
            Err(_) => Ok(()),
        }
    }

    async fn call<T>(&self, request: impl FnOnce(oneshot::Sender<Result<T>>) -> Request) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(request(reply)).await.map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }
}

/// Sets the connection's pragmas; returns the journal mode in force.
fn configure(conn: &Connection, opts: &Options) -> rusqlite::Result<String> {
    conn.busy_timeout(opts.busy_timeout)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        // In-memory databases and some filesystems refuse WAL; the store still works.
        warn!(db.journal_mode = %mode, "SQLite refused WAL mode.");
    }
    conn.pragma_update(None, "synchronous", opts.synchronous.as_str())?;
    // Checkpoint every ~16 MiB of WAL instead of SQLite's 4 MiB: fewer, larger checkpoints on
    // the write thread. The WAL file is truncated back to that size after each checkpoint.
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
    conn.pragma_update(None, "journal_size_limit", WAL_AUTOCHECKPOINT_PAGES * 4096)?;
    conn.pragma_update(None, "cache_size", -16_384)?;
    // Every statement the store runs, with room to spare (rusqlite's default is 16).
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAP);
    Ok(mode)
}

/// Joins the store thread when the last handle goes.
struct Joiner {
    handle: Option<JoinHandle<Result<()>>>,
    path: PathBuf,
}

impl Joiner {
    fn join(&mut self) -> Result<()> {
        match self.handle.take().map(JoinHandle::join) {
            None => Ok(()),
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(Error::ThreadPanicked),
        }
    }
}

impl Drop for Joiner {
    fn drop(&mut self) {
        if let Err(e) = self.join() {
            error!(db.path = %self.path.display(), error = %error::chain(&e), "Meta store did not close cleanly.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store whose thread runs `worker` instead of the real one.
    fn fake_store(worker: impl FnOnce(mpsc::Receiver<Request>) -> Result<()> + Send + 'static) -> Store {
        let (tx, rx) = mpsc::channel(STORE_QUEUE_CAP);
        let handle = std::thread::spawn(move || worker(rx));
        Store { tx, thread: Arc::new(Joiner { handle: Some(handle), path: PathBuf::from("fake") }) }
    }

    fn op() -> Op {
        Op::DeleteMeta { key: "k".into() }
    }

    #[tokio::test]
    async fn a_gone_thread_answers_closed() {
        let store = fake_store(|rx| {
            drop(rx);
            Ok(())
        });
        assert!(matches!(store.get("k").await, Err(Error::Closed)));
        assert!(matches!(store.apply(vec![op()]).await, Err(Error::Closed)));
        assert!(matches!(store.list_v2("g", None).await, Err(Error::Closed)));
        assert!(matches!(store.max_resource_version().await, Err(Error::Closed)));
        assert!(store.tx.is_closed());
        assert!(matches!(store.apply(vec![]).await, Err(Error::Closed)));
        store.close().unwrap();
    }

    #[tokio::test]
    async fn a_dropped_request_answers_closed_and_a_panic_is_reported() {
        let store = fake_store(|mut rx| {
            drop(rx.blocking_recv());
            panic!("fake store thread dies");
        });
        assert!(matches!(store.apply(vec![op()]).await, Err(Error::Closed)));
        assert!(matches!(store.get_v2("k").await, Err(Error::Closed)));
        assert!(matches!(store.close(), Err(Error::ThreadPanicked)));
    }

    #[test]
    fn synchronous_pragma_values() {
        assert_eq!(Options::default().synchronous, Synchronous::Full);
        let all = [Synchronous::Off, Synchronous::Normal, Synchronous::Full, Synchronous::Extra];
        assert_eq!(all.map(Synchronous::as_str), ["OFF", "NORMAL", "FULL", "EXTRA"]);
    }
}
