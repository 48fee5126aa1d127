//! The metrics registry of a daemon: process metrics, per-module bus counters, and whatever
//! modules register themselves.

use std::sync::Arc;

use kubeedge_beehive::{Bus, Health, ModuleState};
use parking_lot::Mutex;
use prometheus::{Encoder, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::Error;
use crate::process::ProcessMetrics;

struct BusMetrics {
    bus: Bus,
    health: Health,
    sent: IntCounterVec,
    received: IntCounterVec,
    dropped: IntCounterVec,
    restarts: IntCounterVec,
    depth: IntGaugeVec,
    up: IntGaugeVec,
    pending: IntGauge,
}

/// The daemon's Prometheus registry. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    process: Arc<ProcessMetrics>,
    bus: Arc<Mutex<Option<BusMetrics>>>,
}

impl Metrics {
    /// A registry with process metrics and `kubeedge_build_info{daemon, version}`.
    pub fn new(daemon: &str, version: &str) -> Result<Self, Error> {
        let registry = Registry::new();
        let process = Arc::new(ProcessMetrics::register(&registry)?);
        let info =
            IntGaugeVec::new(Opts::new("kubeedge_build_info", "Build information; always 1."), &["daemon", "version"])?;
        info.with_label_values(&[daemon, version]).set(1);
        registry.register(Box::new(info))?;
        Ok(Self { registry, process, bus: Arc::default() })
    }

    /// The registry, for modules to register their own metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Adds per-module bus counters (sent, received, dropped, queue depth, restarts, up).
    pub fn watch_bus(&self, bus: Bus, health: Health) -> Result<(), Error> {
        let counter = |name: &str, help: &str| IntCounterVec::new(Opts::new(name, help), &["module"]);
        let gauge = |name: &str, help: &str| IntGaugeVec::new(Opts::new(name, help), &["module"]);
        let m = BusMetrics {
            bus,
            health,
            sent: counter("kubeedge_bus_messages_sent_total", "Messages a module sent on the bus.")?,
            received: counter("kubeedge_bus_messages_received_total", "Messages a module took from its inbox.")?,
            dropped: counter("kubeedge_bus_messages_dropped_total", "Messages for a module that were dropped.")?,
            restarts: counter("kubeedge_module_restarts_total", "Times the supervisor restarted a module.")?,
            depth: gauge("kubeedge_bus_queue_depth", "Messages waiting in a module's inbox.")?,
            up: gauge("kubeedge_module_up", "1 while the module is running.")?,
            pending: IntGauge::new("kubeedge_bus_pending_requests", "Requests waiting for a reply.")?,
        };
        self.registry.register(Box::new(m.sent.clone()))?;
        self.registry.register(Box::new(m.received.clone()))?;
        self.registry.register(Box::new(m.dropped.clone()))?;
        self.registry.register(Box::new(m.restarts.clone()))?;
        self.registry.register(Box::new(m.depth.clone()))?;
        self.registry.register(Box::new(m.up.clone()))?;
        self.registry.register(Box::new(m.pending.clone()))?;
        *self.bus.lock() = Some(m);
        Ok(())
    }

    /// Refreshes the sampled metrics and renders the Prometheus text format. Reads `/proc`:
    /// call off the async runtime.
    pub fn render(&self) -> String {
        self.process.refresh();
        if let Some(m) = &*self.bus.lock() {
            for s in m.bus.stats() {
                let l = &[s.module];
                advance(&m.sent, l, s.sent);
                advance(&m.received, l, s.received);
                advance(&m.dropped, l, s.dropped);
                advance(&m.restarts, l, s.restarts);
                m.depth.with_label_values(l).set(s.queue_depth as i64);
            }
            for (module, state) in m.health.states() {
                m.up.with_label_values(&[module]).set(i64::from(state == ModuleState::Running));
            }
            m.pending.set(m.bus.pending_requests() as i64);
        }
        let mut out = Vec::new();
        // Encoding to a Vec only fails on invalid metric families, which registration prevents.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Moves a counter up to a sampled monotonic total.
fn advance(counter: &IntCounterVec, labels: &[&str], total: u64) {
    let c = counter.with_label_values(labels);
    let now = c.get();
    if total > now {
        c.inc_by(total - now);
    }
}
