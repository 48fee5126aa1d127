//! SIGTERM and SIGINT, the two signals that stop a daemon.

use tokio::signal::unix::{SignalKind, signal};

/// Waits for SIGTERM or SIGINT and names the one received. If the handlers cannot be installed
/// (not expected on Linux), waits on Ctrl-C alone.
pub(crate) async fn wait_for_shutdown() -> &'static str {
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
