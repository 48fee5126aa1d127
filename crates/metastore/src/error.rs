//! The store's error type.

use std::path::PathBuf;

/// Errors of the meta store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The directory that should hold the database file does not exist. The store never creates
    /// directories: that is the installer's job (upstream's `/var/lib/kubeedge`).
    #[error("database directory {} does not exist", .0.display())]
    MissingDirectory(PathBuf),
    /// SQLite could not open the database file.
    #[error("opening SQLite database {}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// Setting a pragma, creating the tables or adapting a legacy table failed.
    #[error("preparing the database schema")]
    Schema(#[source] rusqlite::Error),
    /// The store thread could not be started.
    #[error("starting the store thread")]
    Spawn(#[source] std::io::Error),
    /// A statement, a transaction or a commit failed.
    #[error("SQLite statement failed")]
    Sqlite(#[from] rusqlite::Error),
    /// A `meta_v2` resource version above `i64::MAX`: SQLite integers are signed 64-bit, and
    /// upstream's driver refuses such values too.
    #[error("resource version {0} does not fit in SQLite's signed 64-bit integer")]
    ResourceVersionOutOfRange(u64),
    /// A stored `meta_v2` row holds a negative resource version.
    #[error("row {key} holds a negative resource version {value}")]
    NegativeResourceVersion {
        /// The row's key.
        key: String,
        /// The stored value.
        value: i64,
    },
    /// The store thread has stopped: every handle's request fails with this instead of panicking.
    #[error("the meta store is closed")]
    Closed,
    /// The store thread panicked (a bug); found when the last handle joins it.
    #[error("the meta store thread panicked")]
    ThreadPanicked,
}

/// The store's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `error: cause: cause…`, for log lines.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
