//! The EdgeHub module (`websocket`/`hub`): joins with the token when the node has no
//! certificate, keeps one WebSocket session to CloudHub, and moves messages both ways.
//!
//! - Keepalive: a `keepalive` message (content `ping`) at once and every `heartbeat`, plus a
//!   WebSocket ping; the cloud's pongs count as activity, so a silent partition is noticed after
//!   two heartbeats without any frame (upstream noticed only at its next failed write).
//! - Features of ours (`X-KubeEdge-Rs-Features`): the handshake announces `lease-renew`, and
//!   `inventory` when MetaManager runs; what CloudHub agreed to is published to the other
//!   modules ([`EdgeHubModule::link_features`]). With `lease-renew` agreed (CloudHub is ours and
//!   counts every message as a sign of life) the `keepalive` message is sent only after a
//!   heartbeat without any other message, and the WebSocket ping only after a heartbeat
//!   without any frame from the cloud (the pong then has a heartbeat to come back before the
//!   session counts as silent). An upstream cloud answers no features: the keepalive and the
//!   ping are then upstream's, every heartbeat.
//! - Reconnect: jittered exponential backoff, 2 s doubling to 30 s, reset once a session has
//!   lasted a minute. While CloudHub is unreachable (partition, cloudcore restarting) a TCP probe
//!   every second cuts the wait short the moment it answers again.
//! - Certificate rotation (`rotateCertificates`): at 70–90 % of the certificate's validity a new
//!   one is requested with the current one as credentials; the session then reconnects with it.
//! - Upstream messages from modules are paced by `messageQPS`/`messageBurst`.
//! - Cloud messages: a reply to a waiting request goes to it; the rest go by group as upstream
//!   routes them (`resource`, `func` → meta; `twin` → twin; `user` → `servicebus` from the
//!   Router's ServiceBus side, else `eventbus`, and a late reply in `user` nowhere).
//! - Connection changes are announced to the twin, meta, bus and taskmanager groups
//!   (resource `node/connection`, content `connected` / `disconnected`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kubeedge_beehive::{BoxFuture, Bus, Module, ModuleContext, ModuleError};
use kubeedge_config::edgecore::EdgeHub;
use kubeedge_model::constants::{group, module, source};
use kubeedge_model::protocol::{edge, lease};
use kubeedge_model::{Message, Operation};
use kubeedge_viaduct::ClientOptions;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::certs::{self, CertPaths};
use super::{LinkFeatures, LinkFeaturesWriter};

/// Groups told about connection changes.
const NOTIFY_GROUPS: [&str; 4] = [group::TWIN, group::META, group::BUS, group::TASKMANAGER];
const BACKOFF_START: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// How often an unreachable CloudHub is probed while waiting to reconnect.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How often a failing certificate rotation is retried after its first five attempts.
const ROTATION_POLL: Duration = Duration::from_secs(32);
/// Where `keadm join` leaves the token for edgecore's first start (upstream's path).
pub const BOOTSTRAP_TOKEN_FILE: &str = "/etc/kubeedge/bootstrap-edgecore.conf";

/// The join token: `modules.edgeHub.token`, else the trimmed content of the bootstrap file.
pub async fn resolve_token(configured: &str, bootstrap_file: &std::path::Path) -> Option<String> {
    if !configured.trim().is_empty() {
        return Some(configured.trim().to_owned());
    }
    let text = tokio::fs::read_to_string(bootstrap_file).await.ok()?;
    Some(text.trim().to_owned()).filter(|t| !t.is_empty())
}

/// EdgeHub as a bus module.
pub struct EdgeHubModule {
    cfg: EdgeHub,
    node: String,
    connected: Option<prometheus::IntGauge>,
    /// What the current session agreed on, for the other modules.
    link: LinkFeaturesWriter,
}

/// The gauge saying whether the edge has a session with CloudHub (1) or not (0): what
/// `keadm join` waits for, and what an operator alerts on.
pub const CONNECTED_METRIC: &str = "kubeedge_edgehub_connected";

impl EdgeHubModule {
    /// A module for `node` with this config.
    pub fn new(cfg: EdgeHub, node: String) -> Self {
        Self { cfg, node, connected: None, link: LinkFeaturesWriter::default() }
    }

    /// What each session with CloudHub agrees on beyond upstream's protocol, as sessions come
    /// and go (Edged renews its lease compactly while it holds `lease-renew`).
    pub fn link_features(&self) -> LinkFeatures {
        self.link.reader()
    }

    /// Registers [`CONNECTED_METRIC`] in `registry` and keeps it current.
    pub fn with_metrics(mut self, registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let gauge = prometheus::IntGauge::new(CONNECTED_METRIC, "1 while EdgeHub has a session with CloudHub.")?;
        registry.register(Box::new(gauge.clone()))?;
        self.connected = Some(gauge);
        Ok(self)
    }

    fn paths(&self) -> CertPaths {
        CertPaths {
            ca: PathBuf::from(&self.cfg.tls_ca_file),
            cert: PathBuf::from(&self.cfg.tls_cert_file),
            key: PathBuf::from(&self.cfg.tls_private_key_file),
        }
    }
}

/// A token bucket: `burst` messages at once, `qps` per second after.
struct Pace {
    tokens: f64,
    burst: f64,
    qps: f64,
    at: Instant,
}

impl Pace {
    fn new(qps: i32, burst: i32) -> Self {
        let burst = f64::from(burst.max(1));
        Self { tokens: burst, burst, qps: f64::from(qps.max(1)), at: Instant::now() }
    }

    /// Waits for a token.
    async fn take(&mut self) {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.qps).min(self.burst);
        self.at = now;
        if self.tokens < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - self.tokens) / self.qps);
            tokio::time::sleep(wait).await;
            self.tokens = 1.0;
            self.at = Instant::now();
        }
        self.tokens -= 1.0;
    }
}

fn jitter(d: Duration) -> Duration {
    // ±20 %, from the clock's low bits: no RNG needed for spreading reconnects.
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|t| t.subsec_nanos()).unwrap_or(0);
    let factor = 0.8 + f64::from(nanos % 1000) / 2500.0;
    d.mul_f64(factor)
}

/// When the session last heard from the cloud or pinged it, whichever is later: the next
/// ping (between ours) is due a heartbeat after.
fn quiet_since(last_activity: std::time::Instant, last_ping: Instant) -> Instant {
    Instant::from_std(last_activity).max(last_ping)
}

/// Waits before the next attempt. A reachable server that ended or refused the session gets
/// the full backoff `wait`. An unreachable one (partition, cloudcore restarting) is probed with a
/// TCP connect every second instead, and the next attempt starts as soon as it answers: a node
/// is connected again within seconds of the link healing, not at the end of a 30 s backoff or
/// of a TCP connect stuck in SYN retransmits. Probes are one SYN each and log nothing.
async fn pause_before_retry(server: &str, wait: Duration) {
    let until = Instant::now() + wait;
    if reachable(server).await {
        tokio::time::sleep_until(until).await;
        return;
    }
    debug!(server, "CloudHub is unreachable; probing every second.");
    loop {
        tokio::time::sleep(jitter(PROBE_EVERY)).await;
        if reachable(server).await {
            debug!(server, "CloudHub is reachable again.");
            return;
        }
    }
}

const ROTATED: &str = "certificate rotated";

/// Sleeps until the node certificate is due for renewal (70–90 % of its validity), then renews
/// it, retrying after 2 s doubling for five steps and then every 32 s, as upstream. Completes
/// once the new certificate is written; never completes if the certificate cannot be read.
async fn rotate_when_due(http_server: &str, node: &str, paths: &CertPaths) {
    let Some(due) = certs::rotation_deadline(&paths.cert).await else {
        return std::future::pending().await;
    };
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    if due > now {
        debug!(in_secs = due - now, "Certificate rotation scheduled.");
        tokio::time::sleep(Duration::from_secs_f64((due - now).min(1e9))).await;
    }
    let mut retry = BACKOFF_START;
    for attempt in 1.. {
        match certs::rotate(http_server, node, paths).await {
            Ok(()) => return,
            Err(e) => {
                warn!(error = %e, retry_in = ?retry, "Certificate rotation failed.");
                tokio::time::sleep(retry).await;
                retry = if attempt < 5 { retry * 2 } else { ROTATION_POLL };
            }
        }
    }
}

/// Whether a TCP connection to `server` opens within [`PROBE_EVERY`].
async fn reachable(server: &str) -> bool {
    matches!(tokio::time::timeout(PROBE_EVERY, tokio::net::TcpStream::connect(server)).await, Ok(Ok(_)))
}

async fn notify(bus: &Bus, connected: bool, gauge: Option<&prometheus::IntGauge>) {
    if let Some(g) = gauge {
        g.set(i64::from(connected));
    }
    for g in NOTIFY_GROUPS {
        if bus.group_members(g).is_empty() {
            continue;
        }
        let _ = bus.send_to_group(g, edge::connection_notice(g, connected)).await;
    }
}

/// The features EdgeHub announces: the compact lease renewal (with keepalives left out while
/// other messages flow) always, and the inventory answer when MetaManager runs.
fn announced(metamanager: bool) -> Vec<String> {
    let mut features = vec![lease::FEATURE.to_owned()];
    if metamanager {
        features.push(kubeedge_model::protocol::inventory::FEATURE.to_owned());
    }
    features
}

/// Where a cloud message goes on the edge.
#[derive(Debug, PartialEq, Eq)]
enum Destination<'a> {
    /// Every module of the group.
    Group(&'a str),
    /// One module.
    Module(&'static str),
    /// Nowhere: a reply nobody waits for any more.
    Drop,
}

/// Upstream EdgeHub's dispatch, for a message that is not a reply a request is waiting for:
/// `resource`, `func` → meta; `twin` → twin; `user` (handler_bus.go) → ServiceBus for the
/// Router's ServiceBus messages, EventBus for the rest, and a late reply (upstream's
/// `SendResp` with no waiter) nowhere; other groups to the group of that name.
fn destination(msg: &Message) -> Destination<'_> {
    match msg.router.group.as_str() {
        group::RESOURCE | group::FUNC => Destination::Group(group::META),
        group::TWIN => Destination::Group(group::TWIN),
        group::USER if msg.parent_id().is_some() => Destination::Drop,
        group::USER if msg.router.source == source::ROUTER_SERVICEBUS => Destination::Module(module::SERVICEBUS),
        group::USER => Destination::Module(module::EVENTBUS),
        other => Destination::Group(other),
    }
}

/// Hands a cloud message to the module(s) it is for; none registered ⇒ logged and dropped.
fn route(bus: &Bus, msg: Message) {
    let members = match destination(&msg) {
        Destination::Group(g) => bus.group_members(g),
        Destination::Module(m) if bus.has_module(m) => vec![m],
        Destination::Module(_) => Vec::new(),
        Destination::Drop => {
            debug!(msg.parent_id = %msg.header.parent_id, resource = %msg.router.resource,
                "A reply from the cloud that nobody waits for; dropped.");
            return;
        }
    };
    if members.is_empty() {
        debug!(group = %msg.router.group, source = %msg.router.source, resource = %msg.router.resource,
            "No module for a cloud message; dropped.");
        return;
    }
    for m in members {
        let _ = bus.try_send(m, msg.clone());
    }
}

impl Module for EdgeHubModule {
    fn name(&self) -> &'static str {
        module::EDGEHUB
    }

    fn group(&self) -> &'static str {
        group::HUB
    }

    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(async move {
            let heartbeat = self.cfg.heartbeat().max(Duration::from_secs(1));
            let paths = self.paths();
            let mut backoff = BACKOFF_START;
            let mut pace = Pace::new(self.cfg.message_qps, self.cfg.message_burst);
            let shutdown = ctx.shutdown().clone();
            loop {
                if shutdown.is_cancelled() {
                    return Ok(());
                }
                let attempt = async {
                    if certs::needs_bootstrap(&paths, &self.node).await {
                        if self.cfg.token.is_empty() {
                            return Err::<_, ModuleError>(
                                "no certificate and no token: set modules.edgeHub.token".into(),
                            );
                        }
                        certs::bootstrap(&self.cfg.http_server, &self.cfg.token, &self.node, &paths).await?;
                    }
                    let ca = kubeedge_pki::parse_pem(&tokio::fs::read_to_string(&paths.ca).await?)?.1;
                    let cert = kubeedge_pki::parse_pem(&tokio::fs::read_to_string(&paths.cert).await?)?.1;
                    let key = kubeedge_pki::key_from_pem(&tokio::fs::read_to_string(&paths.key).await?)?;
                    let tls = Arc::new(kubeedge_viaduct::client_tls(&ca, &cert, &key)?);
                    let opts = ClientOptions {
                        server: self.cfg.websocket.server.clone(),
                        node_id: self.node.clone(),
                        project_id: self.cfg.project_id.clone(),
                        max_message: kubeedge_model::MAX_MESSAGE_SIZE,
                        handshake_timeout: Duration::from_secs(
                            u64::try_from(self.cfg.websocket.handshake_timeout).unwrap_or(30).max(1),
                        ),
                        features: announced(ctx.bus.has_module(module::METAMANAGER)),
                    };
                    Ok(kubeedge_viaduct::connect(&opts, tls).await?)
                };
                let mut conn = tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    r = attempt => match r {
                        Ok(c) => c,
                        Err(e) => {
                            let wait = jitter(backoff);
                            warn!(error = %e, retry_in = ?wait, "Connecting to CloudHub failed.");
                            backoff = (backoff * 2).min(BACKOFF_MAX);
                            tokio::select! {
                                _ = shutdown.cancelled() => return Ok(()),
                                _ = pause_before_retry(&self.cfg.websocket.server, wait) => continue,
                            }
                        }
                    },
                };
                info!(
                    server = %self.cfg.websocket.server,
                    node = %self.node,
                    features = %conn.features().join(","),
                    "Connected to CloudHub."
                );
                let connected_at = Instant::now();
                self.link.set(conn.features());
                notify(&ctx.bus, true, self.connected.as_ref()).await;
                // Between ours the keepalive message waits for a heartbeat without any other
                // message (CloudHub of ours hears from the edge at least every heartbeat
                // either way); upstream's goes with every ping.
                let compact_keepalive = conn.has_feature(lease::FEATURE);
                let mut last_sent = Instant::now();
                // Between ours the WebSocket ping goes only after a heartbeat without any frame
                // from the cloud (the replies to the lease renewals usually come more often):
                // an idle fleet's pings and pongs were 40 % of CloudHub's frames.
                let mut last_ping = Instant::now();
                let mut tick = tokio::time::interval(heartbeat);
                let rotation = rotate_when_due(&self.cfg.http_server, &self.node, &paths);
                tokio::pin!(rotation);
                let rotate = self.cfg.rotate_certificates;
                let reason = loop {
                    // A silent partition: nothing (not even a pong) for two heartbeats.
                    let silent_after = Instant::from_std(conn.last_activity()) + heartbeat * 2;
                    tokio::select! {
                        _ = shutdown.cancelled() => {
                            let _ = conn.close().await;
                            self.link.set(&[]);
                            notify(&ctx.bus, false, self.connected.as_ref()).await;
                            return Ok(());
                        }
                        _ = tokio::time::sleep_until(silent_after) => {
                            if conn.last_activity().elapsed() >= heartbeat * 2 {
                                break "no frame from the cloud for two heartbeats";
                            }
                        }
                        () = &mut rotation, if rotate => break ROTATED,
                        _ = tick.tick(), if !compact_keepalive => {
                            if conn.send(&edge::keepalive()).await.is_err() || conn.ping().await.is_err() {
                                break "write failed";
                            }
                        }
                        _ = tokio::time::sleep_until(quiet_since(conn.last_activity(), last_ping) + heartbeat), if compact_keepalive => {
                            if conn.ping().await.is_err() {
                                break "write failed";
                            }
                            last_ping = Instant::now();
                        }
                        _ = tokio::time::sleep_until(last_sent + heartbeat), if compact_keepalive => {
                            if conn.send(&edge::keepalive()).await.is_err() {
                                break "write failed";
                            }
                            last_sent = Instant::now();
                        }
                        out = ctx.recv() => {
                            let Some(msg) = out else {
                                // Shutdown: say goodbye properly.
                                let _ = conn.close().await;
                                self.link.set(&[]);
                                notify(&ctx.bus, false, self.connected.as_ref()).await;
                                return Ok(());
                            };
                            pace.take().await;
                            if conn.send(&msg).await.is_err() {
                                break "write failed";
                            }
                            last_sent = Instant::now();
                        }
                        incoming = conn.recv() => match incoming {
                            Ok(Some(msg)) => {
                                if msg.parent_id().is_some() && msg.operation() != Operation::Keepalive {
                                    match ctx.bus.try_send_resp(msg) {
                                        Ok(()) => {}
                                        Err(m) => route(&ctx.bus, m),
                                    }
                                } else {
                                    route(&ctx.bus, msg);
                                }
                            }
                            Ok(None) => break "the cloud closed the connection",
                            Err(e) if e.is_recoverable() => warn!(error = %e, "Dropped a malformed message from the cloud."),
                            Err(_) => break "read failed",
                        },
                    }
                };
                self.link.set(&[]);
                notify(&ctx.bus, false, self.connected.as_ref()).await;
                if reason == ROTATED {
                    // Reconnect at once with the new certificate.
                    let _ = conn.close().await;
                    info!("Reconnecting with the rotated certificate.");
                    continue;
                }
                if connected_at.elapsed() >= STABLE_AFTER {
                    backoff = BACKOFF_START;
                }
                let wait = jitter(backoff);
                warn!(reason, retry_in = ?wait, "Disconnected from CloudHub.");
                backoff = (backoff * 2).min(BACKOFF_MAX);
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = pause_before_retry(&self.cfg.websocket.server, wait) => {}
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_token_comes_from_the_config_else_the_bootstrap_file() {
        let dir = std::env::temp_dir().join(format!("edgehub-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bootstrap-edgecore.conf");
        assert_eq!(resolve_token("", &file).await, None);
        std::fs::write(&file, "  abc.def.ghi.jkl\n").unwrap();
        assert_eq!(resolve_token("", &file).await.as_deref(), Some("abc.def.ghi.jkl"));
        assert_eq!(resolve_token(" cfg ", &file).await.as_deref(), Some("cfg"));
        std::fs::write(&file, "\n").unwrap();
        assert_eq!(resolve_token("", &file).await, None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_handshake_announces_the_renewal_and_inventory_with_metamanager() {
        assert_eq!(announced(true), ["lease-renew", "inventory"]);
        assert_eq!(announced(false), ["lease-renew"]);
    }

    #[test]
    fn user_messages_go_to_one_bus_module_as_upstream() {
        let user = |source: &str| Message::build(source, group::USER, "9000:/url", "GET", Default::default());
        assert_eq!(destination(&user("router_servicebus")), Destination::Module("servicebus"));
        assert_eq!(destination(&user("router_eventbus")), Destination::Module("eventbus"));
        assert_eq!(destination(&user("anything")), Destination::Module("eventbus"));
        let mut late = user("router_servicebus");
        late.header.parent_id = "gone".into();
        assert_eq!(destination(&late), Destination::Drop);
        let pod = Message::build("edgecontroller", group::RESOURCE, "default/pod/p", "insert", Default::default());
        assert_eq!(destination(&pod), Destination::Group("meta"));
        let twin = Message::build("devicecontroller", group::TWIN, "device/d", "updated", Default::default());
        assert_eq!(destination(&twin), Destination::Group("twin"));
    }

    #[test]
    fn backoff_jitter_stays_within_twenty_percent() {
        for _ in 0..100 {
            let j = jitter(Duration::from_secs(10));
            assert!(j >= Duration::from_secs(8) && j <= Duration::from_secs(12), "{j:?}");
        }
    }
}
