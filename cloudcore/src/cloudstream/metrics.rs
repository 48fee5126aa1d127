//! CloudStream's gauges: tunnel sessions and open streams, so an operator (and the tests) can
//! see that nothing stays open after callers and edges went away.

use prometheus::{IntGauge, Registry};

/// The gauges.
#[derive(Clone)]
pub struct StreamMetrics {
    /// `kubeedge_cloudstream_sessions`: edges with a tunnel session.
    pub sessions: IntGauge,
    /// `kubeedge_cloudstream_streams`: streams open (logs, exec, attach, port-forward, metrics).
    pub streams: IntGauge,
}

impl StreamMetrics {
    /// The gauges, registered in `registry` (a fresh `Registry` for tests).
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            sessions: IntGauge::new("kubeedge_cloudstream_sessions", "Edge nodes with a stream tunnel session.")?,
            streams: IntGauge::new(
                "kubeedge_cloudstream_streams",
                "Streams open through the tunnels (logs, exec, attach, port-forward, metrics).",
            )?,
        };
        registry.register(Box::new(m.sessions.clone()))?;
        registry.register(Box::new(m.streams.clone()))?;
        Ok(m)
    }
}

/// Counts one open stream for as long as it lives.
pub struct Counted(IntGauge);

impl Counted {
    /// Counts one in `gauge`.
    pub fn new(gauge: &IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}
