//! ServiceBus (`servicebus`/`bus`): HTTP between the cloud's Router and the applications on
//! this node, as upstream's `edge/pkg/servicebus`. The wire shapes are in
//! [`kubeedge_model::protocol::servicebus`].
//!
//! - rest → servicebus ([`call`]): a cloud message from `router_servicebus` whose operation is
//!   an HTTP method and whose resource is `{port}:{path}` becomes a call of
//!   `http://127.0.0.1:{port}{path}`; the answer (or an error with an HTTP status) goes back to
//!   the cloud as `call_reply`, with the request's id as parent.
//! - servicebus → rest ([`server`]): an edge app POSTs `{"method","targetURL","payload"}` to
//!   `{server}:{port}` (default `127.0.0.1:9060`, HTTPS with `tlsCertFile`/`tlsPrivateKeyFile`);
//!   a `targetURL` on the allow-list goes up as `upload` and the cloud's answer comes back as
//!   `{"code","msg","body"}`.
//! - `start` / `stop` from the cloud add and remove a target URL on the allow-list (table
//!   `target_urls`, read once at start).
//!
//! Who owns what: the module task owns the allow-list and writes it to SQLite; the HTTP
//! handlers read a snapshot of it (and of whether EdgeHub has a session) from a
//! `tokio::sync::watch` ([`View`]). Each cloud call runs in its own task, at most
//! [`MAX_CALLS`] at once (more are answered 503 at once), so a slow app holds up nobody.
//!
//! Unlike upstream, the HTTP server is bound at start, before any module runs, so a taken port
//! stops edgecore with an error naming `modules.serviceBus.port` (upstream starts it once the
//! allow-list is non-empty and only logs a failure to listen); it keeps listening when the
//! allow-list empties, and a request for a URL not on it is refused (403).
//!
//! Counter: `kubeedge_servicebus_requests_total{direction="cloud"|"edge",code}`: cloud calls
//! by the status sent back, edge app requests by the code answered.

pub mod call;
pub mod server;
mod tls;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kubeedge_beehive::{BoxFuture, Module, ModuleContext, ModuleError};
use kubeedge_config::edgecore::ServiceBus;
use kubeedge_metastore::{Op, SqlValue, Store};
use kubeedge_model::Message;
use kubeedge_model::constants::{group, module, operation, source};
use kubeedge_model::protocol::edge;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tracing::{Instrument, debug, debug_span, info, warn};

pub use call::{CallTarget, MAX_CALLS};

/// Counters of ServiceBus.
#[derive(Clone)]
pub struct Metrics {
    requests: prometheus::IntCounterVec,
}

impl Metrics {
    /// Registers the counters in `registry`.
    pub fn register(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let m = Self::new("kubeedge_servicebus_requests_total")?;
        registry.register(Box::new(m.requests.clone()))?;
        Ok(m)
    }

    fn new(name: &str) -> Result<Self, prometheus::Error> {
        let requests = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                name,
                "Calls from the cloud to edge apps (direction=cloud) and requests of edge apps to the cloud \
                 (direction=edge), by the status code answered.",
            ),
            &["direction", "code"],
        )?;
        Ok(Self { requests })
    }

    fn unregistered() -> Self {
        Self::new("unregistered").expect("a valid counter")
    }

    fn count(&self, direction: &str, code: i32) {
        self.requests.with_label_values(&[direction, &code.to_string()]).inc();
    }
}

/// Why ServiceBus could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `server` is not an IP address (validation checks it; a config built in code may not).
    #[error("modules.serviceBus.server: {0:?} is not an IP address")]
    Server(String),
    /// The port is taken, or not ours to take.
    #[error("cannot listen on {addr} (modules.serviceBus.server, modules.serviceBus.port): {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A TLS file is missing or unusable.
    #[error("{field} ({path}) {reason}")]
    Tls {
        /// The config field.
        field: &'static str,
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The allow-list could not be read.
    #[error("reading the allow-list (table target_urls): {0}")]
    Store(#[source] kubeedge_metastore::Error),
}

/// What the HTTP handlers see of the module's state: a snapshot, replaced as a whole.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// The target URLs edge apps may call.
    pub allowed: Arc<BTreeSet<String>>,
    /// Whether EdgeHub has a session with the cloud (from its connection notices).
    pub cloud_connected: bool,
}

impl View {
    /// Whether an edge app may call `url`: an exact match, as upstream (no prefix, no
    /// normalisation: `…/echo/` is not `…/echo`).
    pub fn allows(&self, url: &str) -> bool {
        self.allowed.contains(url)
    }

    /// `start` (`allow`) or `stop` of `url`. Readers holding the previous snapshot keep it.
    fn set(&mut self, url: &str, allow: bool) {
        let allowed = Arc::make_mut(&mut self.allowed);
        if allow {
            allowed.insert(url.to_owned());
        } else {
            allowed.remove(url);
        }
    }
}

const SELECT_URLS: &str = "SELECT `url` FROM `target_urls`";
const INSERT_URL: &str = "INSERT INTO `target_urls` (`url`) VALUES (?1) ON CONFLICT (`url`) DO NOTHING";
const DELETE_URL: &str = "DELETE FROM `target_urls` WHERE `url` = ?1";

/// ServiceBus as a bus module.
pub struct ServiceBusModule {
    cfg: ServiceBus,
    store: Store,
    metrics: Metrics,
    /// The edge apps' server socket, bound in `prepare`.
    listener: Option<TcpListener>,
    /// The serving certificate, loaded in `prepare` when TLS is configured.
    tls: Option<tls::ServerTls>,
    /// Whether EdgeHub has a session, kept across restarts of `run` (the notices are not
    /// repeated).
    cloud_connected: bool,
}

impl ServiceBusModule {
    /// A module keeping its allow-list in `store` (opened with the `target_urls` table).
    pub fn new(cfg: ServiceBus, store: Store) -> Self {
        Self { cfg, store, metrics: Metrics::unregistered(), listener: None, tls: None, cloud_connected: false }
    }

    /// Registers the counters in `registry`.
    pub fn with_metrics(mut self, registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        self.metrics = Metrics::register(registry)?;
        Ok(self)
    }

    /// The address the edge apps' server listens on once prepared (port 0 in the config asks
    /// the OS for one; tests read it here).
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    async fn bind(&self) -> Result<TcpListener, Error> {
        let ip: std::net::IpAddr = self.cfg.server.parse().map_err(|_| Error::Server(self.cfg.server.clone()))?;
        let port = u16::try_from(self.cfg.port).unwrap_or(0);
        let addr = std::net::SocketAddr::new(ip, port);
        TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source })
    }

    async fn load_allowed(&self) -> Result<BTreeSet<String>, Error> {
        let rows = self.store.query(SELECT_URLS, Vec::new()).await.map_err(Error::Store)?;
        Ok(rows.iter().filter_map(|r| r.first()).map(SqlValue::text).collect())
    }

    /// `start` / `stop`: the allow-list in memory at once, then in SQLite. A failed write is
    /// logged; the URL is (or is not) allowed until edgecore restarts.
    async fn change_allowed(&self, view: &watch::Sender<View>, url: &str, allow: bool) {
        if url.is_empty() {
            warn!("A start or stop without a target URL; ignored.");
            return;
        }
        view.send_modify(|v| v.set(url, allow));
        let sql = if allow { INSERT_URL } else { DELETE_URL };
        if let Err(e) = self.store.apply(vec![Op::Exec { sql, params: vec![url.to_owned().into()] }]).await {
            warn!(url, error = %e, "Storing the allow-list failed; the change holds until edgecore restarts.");
        }
        info!(url, allowed = allow, "Changed the allow-list for the cloud.");
    }
}

impl Module for ServiceBusModule {
    fn name(&self) -> &'static str {
        module::SERVICEBUS
    }

    fn group(&self) -> &'static str {
        group::BUS
    }

    /// Loads the TLS pair and binds the server; once (a second call keeps what the first took).
    fn prepare(&mut self) -> BoxFuture<'_, Result<(), ModuleError>> {
        Box::pin(async move {
            let tls_configured =
                !self.cfg.tls_cert_file.trim().is_empty() || !self.cfg.tls_private_key_file.trim().is_empty();
            if tls_configured && self.tls.is_none() {
                self.tls = Some(tls::ServerTls::load(&self.cfg.tls_cert_file, &self.cfg.tls_private_key_file).await?);
            }
            if self.listener.is_none() {
                self.listener = Some(self.bind().await?);
            }
            Ok(())
        })
    }

    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(async move {
            let allowed = self.load_allowed().await?;
            if !allowed.is_empty() {
                info!(count = allowed.len(), "Restored the allow-list of target URLs.");
            }
            let (view, view_rx) =
                watch::channel(View { allowed: Arc::new(allowed), cloud_connected: self.cloud_connected });
            // Everything spawned below ends with this run (shutdown, or a failure the
            // supervisor restarts from).
            let stop = ctx.shutdown().child_token();
            let _guard = stop.clone().drop_guard();
            let listener = match self.listener.take() {
                Some(l) => l,
                None => self.bind().await?,
            };
            let addr = listener.local_addr()?;
            let handler = server::Handler {
                bus: ctx.bus.clone(),
                view: view_rx,
                timeout: self.cfg.timeout(),
                metrics: self.metrics.clone(),
            };
            let tls = self.tls.clone();
            ctx.spawn(server::run(listener, tls, Arc::new(handler), ctx.spawner(), stop.clone()));
            let caller = call::Caller::new(ctx.bus.clone(), self.cfg.timeout(), self.metrics.clone());
            let slots = Arc::new(Semaphore::new(MAX_CALLS));
            info!(address = %addr, tls = self.tls.is_some(), "ServiceBus started.");
            while let Some(msg) = ctx.recv().await {
                if let Some(up) = edge::connection_state(&msg) {
                    self.cloud_connected = up;
                    view.send_modify(|v| v.cloud_connected = up);
                    continue;
                }
                if msg.router.source != source::ROUTER_SERVICEBUS {
                    debug!(source = %msg.router.source, operation = %msg.router.operation,
                        "ServiceBus ignored a message not from the Router.");
                    continue;
                }
                match msg.router.operation.as_str() {
                    operation::START => self.change_allowed(&view, &msg.router.resource, true).await,
                    operation::STOP => self.change_allowed(&view, &msg.router.resource, false).await,
                    _ => {
                        let Ok(slot) = slots.clone().try_acquire_owned() else {
                            caller.busy(&msg);
                            continue;
                        };
                        let span = debug_span!("call", msg.id = %msg.header.id, resource = %msg.router.resource);
                        let caller = caller.clone();
                        ctx.spawn(
                            async move {
                                caller.handle(msg).await;
                                drop(slot);
                            }
                            .instrument(span),
                        );
                    }
                }
            }
            Ok(())
        })
    }
}

/// The wait for a reply from the cloud when `timeout` is unusable (zero).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

fn or_default(timeout: Duration) -> Duration {
    if timeout.is_zero() { DEFAULT_TIMEOUT } else { timeout }
}

/// Hands a message to EdgeHub without waiting (the cloud link's queue is EdgeHub's inbox).
/// Returns whether it took it.
fn to_cloud(bus: &kubeedge_beehive::Bus, msg: Message) -> bool {
    let mut sent = false;
    for m in bus.group_members(group::HUB) {
        sent |= bus.try_send(m, msg.clone()).is_ok();
    }
    sent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allow_list_matches_exactly_and_snapshots_stay_as_read() {
        let (tx, rx) = watch::channel(View::default());
        let echo = "http://127.0.0.1:9000/echo";
        tx.send_modify(|v| v.set(echo, true));
        let before = rx.borrow().clone();
        assert!(before.allows(echo));
        for other in ["http://127.0.0.1:9000/echo/", "http://127.0.0.1:9000/ech", "HTTP://127.0.0.1:9000/echo", ""] {
            assert!(!before.allows(other), "{other:?}");
        }
        tx.send_modify(|v| v.set(echo, false));
        tx.send_modify(|v| v.set("http://a/b", false));
        assert!(!rx.borrow().allows(echo));
        assert!(rx.borrow().allowed.is_empty());
        assert!(before.allows(echo), "a snapshot taken before a stop is not changed under its reader");
    }
}
