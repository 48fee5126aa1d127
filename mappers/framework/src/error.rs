//! Errors of the framework: configuration (exit 64), startup, and what a protocol reports.

use std::path::PathBuf;

/// What starting or running the mapper can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file cannot be read.
    #[error("reading {}", path.display())]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid YAML of the expected shape.
    #[error("parsing {}: {message}", path.display())]
    ParseConfig {
        /// The file.
        path: PathBuf,
        /// The parser's message (it names the line and the key).
        message: String,
    },
    /// Values are out of range; every problem is listed with its key.
    #[error("invalid {}:\n  {}", path.display(), errors.join("\n  "))]
    InvalidConfig {
        /// The file.
        path: PathBuf,
        /// `key: message` lines.
        errors: Vec<String>,
    },
    /// The DMI socket could not be served.
    #[error("serving DMI")]
    Dmi(#[from] kubeedge_dmi::Error),
    /// The REST API could not listen.
    #[error("listening for the REST API on {addr}")]
    Http {
        /// The address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A framework result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure a protocol reports: it decides the device's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The device cannot be reached (refused, timed out, connection dropped): the device is
    /// `offline` and the framework reconnects.
    Connection,
    /// The device answered with an error (e.g. an illegal address): the property fails, the
    /// connection stays.
    Device,
    /// The configuration cannot work (a malformed visitor, an unknown type, an offset out of
    /// range): the device is `unhealthy` until it is updated.
    Config,
}

/// An error from a protocol, with its kind and a message for the log and the device state.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ProtocolError {
    /// What it means for the device.
    pub kind: ErrorKind,
    /// What happened.
    pub message: String,
}

impl ProtocolError {
    /// The device cannot be reached.
    pub fn connection(message: impl std::fmt::Display) -> Self {
        Self { kind: ErrorKind::Connection, message: message.to_string() }
    }
    /// The device refused the request.
    pub fn device(message: impl std::fmt::Display) -> Self {
        Self { kind: ErrorKind::Device, message: message.to_string() }
    }
    /// The configuration cannot work.
    pub fn config(message: impl std::fmt::Display) -> Self {
        Self { kind: ErrorKind::Config, message: message.to_string() }
    }
}
