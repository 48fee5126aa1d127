//! Errors of the CRI client: the gRPC status code and message the runtime answered with are
//! kept, so callers decide by code (NotFound, Unavailable…) rather than by text.

use std::path::PathBuf;
use std::time::Duration;

use tonic::Code;

/// What a CRI call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket could not be reached when connecting.
    #[error("connecting to the container runtime at {}", path.display())]
    Connect {
        /// The runtime's socket.
        path: PathBuf,
        /// The transport error.
        #[source]
        source: tonic::transport::Error,
    },
    /// The runtime answered with a gRPC error (or the channel failed mid-call: `Unavailable`).
    #[error("CRI {call} failed: {code:?}: {message}")]
    Rpc {
        /// The CRI method (`RunPodSandbox`…).
        call: &'static str,
        /// The gRPC status code.
        code: Code,
        /// The runtime's message.
        message: String,
    },
    /// No answer within the call's deadline (the request is cancelled).
    #[error("CRI {call} timed out after {after:?}")]
    Timeout {
        /// The CRI method.
        call: &'static str,
        /// The deadline that passed.
        after: Duration,
    },
    /// A successful answer lacked a field the API promises.
    #[error("CRI {call} answered without {field}")]
    MissingField {
        /// The CRI method.
        call: &'static str,
        /// The missing field.
        field: &'static str,
    },
}

/// A CRI result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn rpc(call: &'static str, status: tonic::Status) -> Self {
        Self::Rpc { call, code: status.code(), message: status.message().to_owned() }
    }

    /// The gRPC status code, for [`Error::Rpc`] (a timeout is `DeadlineExceeded`).
    pub fn code(&self) -> Option<Code> {
        match self {
            Self::Rpc { code, .. } => Some(*code),
            Self::Timeout { .. } => Some(Code::DeadlineExceeded),
            Self::Connect { .. } | Self::MissingField { .. } => None,
        }
    }

    /// Whether the runtime said the object (container, sandbox, image) does not exist.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(Code::NotFound)
    }
}
