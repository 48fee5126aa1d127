//! Errors of the unix-socket helpers and of the `Any` conversions.

use std::path::PathBuf;

/// What serving or dialing DMI can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another process answers on the socket path: we must not steal it.
    #[error("{} is a live socket served by another process", path.display())]
    SocketInUse {
        /// The socket path.
        path: PathBuf,
    },
    /// Something other than a socket sits at the path; it is not ours to remove.
    #[error("{} exists and is not a unix socket", path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// Creating, removing or setting the mode of the socket failed.
    #[error("preparing the unix socket {}", path.display())]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("serving gRPC on {}", path.display())]
    Serve {
        /// The socket path.
        path: PathBuf,
        /// The transport error.
        #[source]
        source: tonic::transport::Error,
    },
    /// The socket could not be reached within the connect timeout.
    #[error("connecting to {}", path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The transport error.
        #[source]
        source: tonic::transport::Error,
    },
}

/// A DMI helper result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
