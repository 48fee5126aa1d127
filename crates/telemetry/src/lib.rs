//! Telemetry shared by the daemons: the tracing subscriber, the Prometheus registry with
//! process and bus metrics, and the monitor server (`/healthz`, `/readyz`, `/metrics`); and
//! what every accept loop shares: backing off on accept errors ([`AcceptBackoff`]) and knowing
//! which connections are idle, to shed them before they starve the rest ([`Connections`]).
//!
//! Libraries never install a subscriber; the binaries call [`init_logging`] once.

pub mod accept;
pub mod conns;
mod logging;
mod metrics;
mod process;
pub mod ratelimit;
mod server;

pub use accept::{AcceptBackoff, is_out_of_fds};
pub use conns::{Acceptor, Conn, Connections};
pub use logging::{LogFormat, init_logging, parse_filter};
pub use metrics::Metrics;
pub use ratelimit::LogLimiter;
pub use server::serve;

/// Errors of telemetry setup.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The log level directive does not parse.
    #[error("invalid log level {directive:?}")]
    LogLevel {
        /// What was given.
        directive: String,
        /// The parser's complaint.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// The log format is neither `text` nor `json`.
    #[error("invalid log format {0:?}: expected \"text\" or \"json\"")]
    LogFormat(String),
    /// A global subscriber is already installed.
    #[error("a tracing subscriber is already installed")]
    AlreadyInstalled,
    /// A metric could not be registered.
    #[error("registering metrics")]
    Metrics(#[from] prometheus::Error),
}
