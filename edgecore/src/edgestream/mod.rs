//! EdgeStream (`modules.edgeStream`): the edge end of upstream's stream tunnel, which carries
//! `kubectl logs`, `exec`, `attach` and node metrics from CloudStream to Edged's kubelet-style
//! server on this host (../shared/reference/kubeedge-protocols.md §8).
//!
//! It dials `wss://{server}/v1/kubeedge/connect` with the node's certificate (verifying the
//! tunnel server against the hub CA, where upstream skips verification) and upstream's headers
//! `SessionHostNameOverride` and `SessionInternalIP`, serves the session ([`session`]), and
//! dials again 2 s after it ends, as upstream. The certificate files are read at every dial:
//! until EdgeHub has fetched them the dial fails quietly, and a rotated certificate is used
//! from the next connection on.
//!
//! Layout: `dial` (TLS and the WebSocket handshake), `session` (frames in and out, the table
//! of open streams), `conn` (one request replayed to Edged's server).

mod conn;
pub mod dial;
pub mod session;

use std::net::SocketAddr;
use std::time::Duration;

use kubeedge_beehive::{BoxFuture, Module, ModuleContext, ModuleError};
use prometheus::IntGauge;
use tracing::{debug, info, warn};

pub use dial::DialSettings;

/// Upstream's redial period.
pub const REDIAL_EVERY: Duration = Duration::from_secs(2);

/// The EdgeStream module.
pub struct EdgeStreamModule {
    dial: DialSettings,
    kubelet: SocketAddr,
    write_deadline: Duration,
    streams: Option<IntGauge>,
    connected: Option<IntGauge>,
}

impl EdgeStreamModule {
    /// The module: dial with `dial`, replay requests to Edged's server at `kubelet`; a write to
    /// the tunnel taking longer than `write_deadline` (`writeDeadline`) ends the session.
    pub fn new(dial: DialSettings, kubelet: SocketAddr, write_deadline: Duration) -> Self {
        Self {
            dial,
            kubelet,
            write_deadline: write_deadline.max(Duration::from_secs(1)),
            streams: None,
            connected: None,
        }
    }

    /// Registers `kubeedge_edgestream_connected` (1 while the tunnel is up) and
    /// `kubeedge_edgestream_streams` (requests being replayed to Edged).
    pub fn with_metrics(mut self, registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let connected = IntGauge::new("kubeedge_edgestream_connected", "1 while the tunnel to CloudStream is up.")?;
        let streams =
            IntGauge::new("kubeedge_edgestream_streams", "Tunnelled requests being replayed to Edged's server.")?;
        registry.register(Box::new(connected.clone()))?;
        registry.register(Box::new(streams.clone()))?;
        (self.connected, self.streams) = (Some(connected), Some(streams));
        Ok(self)
    }
}

impl Module for EdgeStreamModule {
    fn name(&self) -> &'static str {
        "edgestream"
    }

    fn group(&self) -> &'static str {
        "stream"
    }

    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(async move {
            let shutdown = ctx.shutdown().clone();
            let spawner = ctx.spawner();
            // The same failure every 2 s is logged once, then again only when it changes.
            let mut last_error: Option<String> = None;
            while !shutdown.is_cancelled() {
                let dialled = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    r = dial::dial(&self.dial) => r,
                };
                match dialled {
                    Ok(tunnel) => {
                        info!(server = %self.dial.server, "Tunnel to CloudStream connected.");
                        last_error = None;
                        self.connected.iter().for_each(|g| g.set(1));
                        let ended = session::serve(
                            tunnel,
                            self.kubelet,
                            self.write_deadline,
                            self.streams.as_ref(),
                            &shutdown,
                            &spawner,
                        )
                        .await;
                        self.connected.iter().for_each(|g| g.set(0));
                        info!(server = %self.dial.server, reason = %ended, "Tunnel to CloudStream ended.");
                    }
                    Err(e) => {
                        let chain = kubeedge_model::error_chain(&e);
                        if last_error.as_deref() == Some(chain.as_str()) {
                            debug!(server = %self.dial.server, error = %chain, "Cannot reach CloudStream; retrying.");
                        } else {
                            warn!(server = %self.dial.server, error = %chain, "Cannot reach CloudStream; retrying every 2 s.");
                            last_error = Some(chain);
                        }
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(REDIAL_EVERY) => {}
                }
            }
            Ok(())
        })
    }
}
