//! SIGTERM and SIGINT, the two signals that stop a daemon. The handlers are installed before
//! anything is started, so a signal that arrives while the daemon is still starting is not lost
//! (or fatal, as the default disposition would be).

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Installed SIGTERM and SIGINT handlers.
pub(crate) struct Signals {
    term: Option<Signal>,
    int: Option<Signal>,
}

impl Signals {
    /// Installs both handlers (a failure to install one leaves Ctrl-C handling to tokio).
    pub(crate) fn install() -> Self {
        Self { term: signal(SignalKind::terminate()).ok(), int: signal(SignalKind::interrupt()).ok() }
    }

    /// Waits for the next SIGTERM or SIGINT and names it.
    pub(crate) async fn recv(&mut self) -> &'static str {
        match (&mut self.term, &mut self.int) {
            (Some(term), Some(int)) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            },
            _ => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
}
