//! Edge sessions on CloudHub's WebSocket server (:10000): one task per connected node, holding
//! the node's [`NodeQueue`]. A new session for a node replaces the old one at once when it
//! presents the same certificate or a newer one (rotation, re-join), and is refused otherwise; a node
//! silent for longer than the keepalive interval is dropped; sessions beyond `nodeLimit` are
//! refused with a close frame saying so.
//!
//! Upstream (edge → cloud) messages get the `node/{node}/` prefix from the authenticated
//! connection — never from the message — and go to the bus group upstream's dispatcher picks:
//! `twin` → devicecontroller, `metaserver` → dynamiccontroller, node task reports
//! (`UpdateNodeActionStatus`) → taskmanager, everything else → edgecontroller.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kubeedge_beehive::Bus;
use kubeedge_model::constants::{group, module, resource_type, source};
use kubeedge_model::{CloudResource, Content, Message, Operation, ResourcePath};
use kubeedge_viaduct::{Connection, Identity, ServerOptions};
use parking_lot::Mutex;
use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::queue::NodeQueue;
use crate::delivery::acks::{AckFeed, AckNote, Pending};
use crate::inflight::{Admission, Wait};

/// How long shutdown waits for the edges' sessions to send their close frames.
const SHUTDOWN_CLOSE: Duration = Duration::from_secs(2);

/// Downstream messages buffered per node session before new ones are dropped (and counted):
/// the session then asks SyncController to reconcile the node, which re-sends what it missed.
const SESSION_INBOX: usize = 1024;

/// Reliable messages in flight per node when no limits are configured
/// (`modules.cloudHub.edgeMessages.deliveryWindow`'s default).
pub const DEFAULT_WINDOW: usize = 16;

/// CloudHub's metrics, with upstream's gauge kept as named.
#[derive(Clone)]
pub struct HubMetrics {
    connected: IntGauge,
    queue_depth: IntGaugeVec,
    resends: IntCounterVec,
    dropped: IntCounterVec,
    rejected: IntCounterVec,
}

impl HubMetrics {
    /// Registers `KubeEdge_CloudHub_connected_nodes` and the per-node series.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            connected: IntGauge::new("KubeEdge_CloudHub_connected_nodes", "Number of connected edge nodes.")?,
            queue_depth: IntGaugeVec::new(
                Opts::new("kubeedge_cloudhub_queue_depth", "Messages waiting for a node."),
                &["node"],
            )?,
            resends: IntCounterVec::new(
                Opts::new("kubeedge_cloudhub_resends_total", "Messages re-sent for lack of an ACK."),
                &["node"],
            )?,
            dropped: IntCounterVec::new(
                Opts::new("kubeedge_cloudhub_dropped_total", "Messages for a node that were dropped."),
                &["node"],
            )?,
            rejected: IntCounterVec::new(
                Opts::new(
                    "kubeedge_cloudhub_rejected_messages_total",
                    "Messages from edges dropped unread, by reason (their warnings are rate-limited).",
                ),
                &["reason"],
            )?,
        };
        registry.register(Box::new(m.connected.clone()))?;
        registry.register(Box::new(m.queue_depth.clone()))?;
        registry.register(Box::new(m.resends.clone()))?;
        registry.register(Box::new(m.dropped.clone()))?;
        registry.register(Box::new(m.rejected.clone()))?;
        Ok(m)
    }
}

struct Entry {
    id: u64,
    tx: mpsc::Sender<Message>,
    cancel: CancellationToken,
    peer: SocketAddr,
    cert_not_before: i64,
    cert_sha256: String,
    /// The edge answers inventory questions (it is ours).
    inventory: bool,
    /// A message for the node was dropped (its inbox was full): the session asks for a
    /// reconcile.
    missed: Arc<std::sync::atomic::AtomicBool>,
}

/// Whether a new session may replace `old` for the same node: only with the same certificate
/// (the edge reconnecting before its old connection was noticed gone) or a newer one (a
/// rotation, or the operator's re-join). Anyone else holding an older or parallel certificate
/// for that node is refused, so a leaked certificate cannot steal a live node's session.
fn may_replace(old: &Entry, id: &Identity) -> bool {
    old.cert_sha256 == id.cert_sha256 || id.cert_not_before > old.cert_not_before
}

/// The sessions of all connected nodes.
pub struct Hub {
    sessions: Mutex<HashMap<String, Entry>>,
    /// Per node, the newest certificate (its notBefore) a session of this cloudcore used: an
    /// older one is superseded and admitted no more, even while the node is away. Taken only
    /// under `sessions`' lock.
    newest_cert: Mutex<HashMap<String, i64>>,
    next_id: AtomicU64,
    node_limit: usize,
    keepalive: Duration,
    bus: Bus,
    metrics: Option<HubMetrics>,
    /// What one edge may send (`modules.cloudHub.edgeMessages`); `None`: no limits (tests).
    limits: Option<EdgeLimits>,
    /// Where sessions report what their nodes acknowledged (when SyncController runs).
    acks: Option<AckFeed>,
}

/// What CloudHub enforces on the messages edges send it (`modules.cloudHub.edgeMessages`).
#[derive(Clone)]
pub struct EdgeLimits {
    /// Requests per second one node may hand the controllers (`messageQPS`).
    pub qps: f64,
    /// Requests above that rate one node may send at once (`messageBurst`).
    pub burst: f64,
    /// Messages per node in flight and the memory budget, shared with the controllers.
    pub admission: Admission,
    /// Reliable messages sent to one node and not yet acknowledged (`deliveryWindow`).
    pub window: usize,
}

impl Hub {
    /// A hub that admits at most `node_limit` nodes and drops a node silent for `keepalive`;
    /// it puts no limits on what edges send ([`Hub::with_limits`] does).
    pub fn new(bus: Bus, node_limit: usize, keepalive: Duration, metrics: Option<HubMetrics>) -> Arc<Self> {
        Self::build(bus, node_limit, keepalive, metrics, None, None)
    }

    /// [`Hub::new`] enforcing `limits` on every edge's messages.
    pub fn with_limits(
        bus: Bus,
        node_limit: usize,
        keepalive: Duration,
        metrics: Option<HubMetrics>,
        limits: EdgeLimits,
        acks: Option<AckFeed>,
    ) -> Arc<Self> {
        Self::build(bus, node_limit, keepalive, metrics, Some(limits), acks)
    }

    fn build(
        bus: Bus,
        node_limit: usize,
        keepalive: Duration,
        metrics: Option<HubMetrics>,
        limits: Option<EdgeLimits>,
        acks: Option<AckFeed>,
    ) -> Arc<Self> {
        Arc::new(Self {
            sessions: Mutex::default(),
            newest_cert: Mutex::default(),
            next_id: AtomicU64::new(1),
            node_limit,
            keepalive,
            bus,
            metrics,
            limits,
            acks,
        })
    }

    /// [`Hub::new`] reporting what nodes acknowledged to `acks` (SyncController's inbox).
    pub fn with_acks(bus: Bus, node_limit: usize, keepalive: Duration, acks: AckFeed) -> Arc<Self> {
        Self::build(bus, node_limit, keepalive, None, None, Some(acks))
    }

    /// Whether `node` has a session now.
    pub fn is_connected(&self, node: &str) -> bool {
        self.sessions.lock().contains_key(node)
    }

    /// The SHA-256 (hex) of the certificate `node`'s session presented, while it is connected.
    pub fn session_cert(&self, node: &str) -> Option<String> {
        self.sessions.lock().get(node).map(|e| e.cert_sha256.clone())
    }

    /// Nodes connected now.
    pub fn connected(&self) -> Vec<String> {
        let mut v: Vec<String> = self.sessions.lock().keys().cloned().collect();
        v.sort();
        v
    }

    /// Tells SyncController about every session now, as if each had just connected: what a
    /// (re)started SyncController asks for, since it keeps no state across runs.
    pub async fn announce_sessions(&self) {
        let live: Vec<(String, u64, bool)> =
            self.sessions.lock().iter().map(|(n, e)| (n.clone(), e.id, e.inventory)).collect();
        for (node, id, inventory) in live {
            self.notify_sync(&node, Operation::Connected, id, inventory).await;
        }
    }

    /// Hands a downstream message (resource `node/{node}/…`) to that node's session. Returns
    /// false when the node is not connected or its session inbox is full (the message is
    /// dropped and counted; the session asks SyncController to reconcile the node).
    pub fn dispatch(&self, msg: Message) -> bool {
        let Some(node) = CloudResource::node_of(&msg.router.resource) else {
            debug!(resource = %msg.router.resource, "Dropped a downstream message without a node.");
            return false;
        };
        let session = self.sessions.lock().get(node).map(|e| (e.tx.clone(), e.missed.clone()));
        let delivered = session.is_some_and(|(tx, missed)| match tx.try_send(msg.clone()) {
            Ok(()) => true,
            Err(_) => {
                missed.store(true, Ordering::Relaxed);
                false
            }
        });
        if !delivered {
            if let Some(m) = &self.metrics {
                m.dropped.with_label_values(&[node]).inc();
            }
            debug!(node, msg.id = %msg.header.id, "Dropped a downstream message: node not connected or busy.");
        }
        delivered
    }

    /// Accepts edges until `shutdown`.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        tls: rustls::ServerConfig,
        opts: ServerOptions,
        shutdown: CancellationToken,
    ) {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        if let Ok(addr) = listener.local_addr() {
            info!(address = %addr, "CloudHub WebSocket server listening.");
        }
        // Handshakes and sessions, waited for at shutdown so each edge gets its close frame.
        let sessions = tokio_util::task::TaskTracker::new();
        let mut backoff = kubeedge_telemetry::AcceptBackoff::new("cloudhub-websocket");
        // Handshakes under way (TLS, then the WebSocket upgrade): out of file descriptors, the
        // oldest is dropped so that accepting can go on. No cap and no sweep: viaduct's
        // handshake timeout bounds each one.
        let handshakes = kubeedge_telemetry::Connections::new(
            "cloudhub-websocket",
            kubeedge_telemetry::conns::Limits::with_cap(usize::MAX),
        );
        loop {
            let (tcp, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                a = listener.accept() => match a {
                    Ok(a) => {
                        backoff.succeeded();
                        a
                    }
                    Err(e) => {
                        handshakes.on_accept_error(&e);
                        backoff.failed(&e).await;
                        continue;
                    }
                },
            };
            let (hub, acceptor, opts, shutdown) = (self.clone(), acceptor.clone(), opts.clone(), shutdown.clone());
            let handshake = handshakes.register();
            sessions.spawn(async move {
                // A handshake under way when cloudcore stops is abandoned, not waited for.
                let accepted = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    () = handshake.shed() => {
                        debug!(%peer, "Dropped a pending edge handshake to free a file descriptor.");
                        return;
                    }
                    a = kubeedge_viaduct::accept(tcp, acceptor, &opts) => a,
                };
                // A session is not a handshake: never shed.
                drop(handshake);
                match accepted {
                    Ok((id, conn)) => hub.run_session(id, peer, conn, shutdown).await,
                    Err(e) => debug!(%peer, error = %e, "Edge handshake failed."),
                }
            });
        }
        // Stop every session: each tells its edge with a close frame (1001, going away).
        for (_, e) in self.sessions.lock().drain() {
            e.cancel.cancel();
        }
        sessions.close();
        if tokio::time::timeout(SHUTDOWN_CLOSE, sessions.wait()).await.is_err() {
            warn!(open = sessions.len(), "Edge sessions still closing after the shutdown grace; leaving them.");
        }
    }

    async fn run_session<S: AsyncRead + AsyncWrite + Unpin>(
        self: Arc<Self>,
        id: Identity,
        peer: SocketAddr,
        mut conn: Connection<S>,
        shutdown: CancellationToken,
    ) {
        let node = id.node_id.clone();
        let (tx, mut rx) = mpsc::channel(SESSION_INBOX);
        let cancel = shutdown.child_token();
        let session_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let missed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Decided under the lock, acted on after it: no guard lives across an await.
        let admitted = {
            let mut sessions = self.sessions.lock();
            let mut newest = self.newest_cert.lock();
            let superseded = newest.get(&node).is_some_and(|n| id.cert_not_before < *n);
            match sessions.get(&node) {
                Some(old) if !may_replace(old, &id) => Err(Some(Some(old.peer))),
                _ if superseded => Err(Some(None)),
                None if sessions.len() >= self.node_limit => Err(None),
                _ => {
                    let seen = newest.entry(node.clone()).or_insert(id.cert_not_before);
                    *seen = (*seen).max(id.cert_not_before);
                    // A new session replaces the old one atomically.
                    let entry = Entry {
                        id: session_id,
                        tx,
                        cancel: cancel.clone(),
                        peer,
                        cert_not_before: id.cert_not_before,
                        cert_sha256: id.cert_sha256.clone(),
                        inventory: id.has_feature(kubeedge_model::protocol::inventory::FEATURE),
                        missed: missed.clone(),
                    };
                    if let Some(old) = sessions.insert(node.clone(), entry) {
                        info!(node, old_peer = %old.peer, new_peer = %peer, "Replacing the node's previous session.");
                        old.cancel.cancel();
                    }
                    if let Some(m) = &self.metrics {
                        m.connected.set(sessions.len() as i64);
                    }
                    Ok(())
                }
            }
        };
        match admitted {
            Ok(()) => {}
            Err(None) => {
                warn!(node, limit = self.node_limit, "Refused an edge: node limit reached.");
                let _ = conn.close_with(1013, "node limit reached").await;
                return;
            }
            Err(Some(None)) => {
                warn!(
                    node,
                    refused_peer = %peer,
                    "Refused a session with a superseded certificate: the node has used a newer one."
                );
                let _ = conn.close_with(1008, "this certificate was superseded by a newer one of the node").await;
                return;
            }
            Err(Some(Some(current))) => {
                warn!(
                    node,
                    current_peer = %current,
                    refused_peer = %peer,
                    "Refused a second session for a connected node: it did not present the node's current or a newer certificate."
                );
                let _ =
                    conn.close_with(1008, "the node is connected; a second session needs its newer certificate").await;
                return;
            }
        }
        info!(node, cert = %id.cert_cn, "Edge connected.");
        let inventory = id.has_feature(kubeedge_model::protocol::inventory::FEATURE);
        self.notify_sync(&node, Operation::Connected, session_id, inventory).await;
        let window = self.limits.as_ref().map_or(DEFAULT_WINDOW, |l| l.window);
        let mut queue = NodeQueue::with_window(window);
        // What the node acknowledged, for SyncController: coalesced while a batch is on its way.
        let mut acked = Pending::default();
        let mut noting: Option<Noting> = None;
        let mut last_seen = tokio::time::Instant::now();
        // This node's series, looked up once: not a labelled lookup per message.
        let gauges = self
            .metrics
            .as_ref()
            .map(|m| (m.queue_depth.with_label_values(&[&node]), m.resends.with_label_values(&[&node])));
        let malformed_count = self.metrics.as_ref().map(|m| m.rejected.with_label_values(&["malformed"]));
        let too_large_count = self.metrics.as_ref().map(|m| m.rejected.with_label_values(&["too_large"]));
        // A peer sending garbage gets one warning, then one every 10 s with the count.
        let mut malformed = kubeedge_telemetry::LogLimiter::new(Duration::from_secs(10));
        // The node's pace of requests to the controllers, and the note when it is held back.
        let mut bucket = self.limits.as_ref().map(|l| Bucket::new(l.qps, l.burst, Instant::now()));
        let mut held_back_note = kubeedge_telemetry::LogLimiter::new(Duration::from_secs(10));
        // A request read and not yet taken by the bus (waiting for its rate, room in flight or
        // memory), and the requests read behind it (a few): ACKs, replies and keepalives read
        // meanwhile are handled at once. With those few waiting the connection is not read: the
        // edge waits on its own socket, and downstream messages still flow.
        let mut handing: Option<Handing> = None;
        let mut held: std::collections::VecDeque<Message> = std::collections::VecDeque::new();
        let mut held_bytes = 0usize;
        // The close frame a refused session gets.
        let mut close_frame: Option<(u16, String)> = None;
        let reason = loop {
            let now = Instant::now();
            let mut write_failed = false;
            let mut node_deleted = false;
            loop {
                // What is due goes out together, with one flush (at most WRITE_BATCH at a time).
                let batch: Vec<Message> = std::iter::from_fn(|| queue.next_to_send(now)).take(WRITE_BATCH).collect();
                if batch.is_empty() {
                    break;
                }
                // An edge that reads nothing for a keepalive interval is gone: a write never
                // waits longer (both ends could otherwise wait on each other's full buffers).
                let sent = tokio::time::timeout(self.keepalive, conn.send_all(&batch)).await;
                if let Err(e) = sent.map_err(|_| "timed out".to_owned()).and_then(|r| r.map_err(|e| e.to_string())) {
                    debug!(node, error = %e, "Write failed.");
                    write_failed = true;
                    break;
                }
                // Upstream's IsNodeStopped: the node's own delete ends its session.
                node_deleted |= batch.iter().any(|out| deletes_node(out, &node));
                if node_deleted {
                    break;
                }
            }
            if write_failed {
                break "write failed";
            }
            if node_deleted {
                break "the node was deleted";
            }
            if let Some((depth, _)) = &gauges {
                depth.set(queue.depth() as i64);
            }
            if missed.swap(false, Ordering::Relaxed) {
                acked.resync();
            }
            if noting.is_none()
                && let Some(feed) = &self.acks
                && let Some(batch) = acked.take(&node)
            {
                let feed = feed.clone();
                noting = Some(Box::pin(async move { feed.send(batch).await }));
            }
            let wake = queue.next_deadline().map(tokio::time::Instant::from_std);
            let silent_until = last_seen + self.keepalive;
            let reading = held.len() < HELD_MAX && held_bytes < HELD_BYTES;
            tokio::select! {
                _ = cancel.cancelled() => break "replaced or shutting down",
                // Silence counts only while the connection is read.
                _ = tokio::time::sleep_until(silent_until), if reading => break "keepalive timeout",
                _ = async { match noting.as_mut() { Some(n) => n.await, None => std::future::pending().await } }, if noting.is_some() => {
                    noting = None;
                }
                waited = async { match handing.as_mut() { Some(h) => h.await, None => std::future::pending().await } }, if handing.is_some() => {
                    handing = None;
                    last_seen = tokio::time::Instant::now();
                    while handing.is_none() && let Some(next) = held.pop_front() {
                        held_bytes = held_bytes.saturating_sub(next.content.raw().len());
                        handing = self.upstream(&node, next, &mut queue, &mut acked, bucket.as_mut());
                    }
                    if !waited.is_empty() && let Some(held_back) = held_back_note.admit() {
                        let waited: Vec<&str> = waited.iter().map(|w| w.as_str()).collect();
                        info!(
                            node,
                            ?waited,
                            held_back,
                            "Held back the edge's messages: it sends faster than the cloud takes them \
                             (modules.cloudHub.edgeMessages; note at most every 10 s)."
                        );
                    }
                }
                _ = async { match wake { Some(w) => tokio::time::sleep_until(w).await, None => std::future::pending().await } } => {
                    if let Some((_, resends)) = &gauges {
                        resends.inc();
                    }
                }
                down = rx.recv() => match down {
                    Some(msg) => { queue.enqueue(msg); }
                    None => break "session closed",
                },
                up = conn.recv(), if reading => match up {
                    Ok(Some(msg)) => {
                        last_seen = tokio::time::Instant::now();
                        if handing.is_some() && !is_control(&msg) {
                            held_bytes += msg.content.raw().len();
                            held.push_back(msg);
                        } else {
                            let h = self.upstream(&node, msg, &mut queue, &mut acked, bucket.as_mut());
                            if handing.is_none() {
                                handing = h;
                            }
                        }
                    }
                    Ok(None) => break "edge closed the connection",
                    Err(e) if e.is_recoverable() => {
                        let count = if e.too_large().is_some() { &too_large_count } else { &malformed_count };
                        count.iter().for_each(|c| c.inc());
                        if let Some(held_back) = malformed.admit() {
                            warn!(node, error = %e, held_back, "Dropped a malformed message from the edge (warning at most every 10 s).");
                        }
                    }
                    Err(e) if let Some((size, limit)) = e.too_large() => {
                        // Refused from its frame header: the payload was never read, so the
                        // connection cannot go on.
                        too_large_count.iter().for_each(|c| c.inc());
                        warn!(
                            node,
                            size,
                            limit,
                            "Refused a message from the edge over the edge→cloud limit \
                             (modules.cloudHub.edgeMessages.maxMessageMiB); closing its session."
                        );
                        close_frame = Some((1009, format!("message of {size} bytes is over the {limit}-byte limit")));
                        break "message too large";
                    }
                    Err(e) => {
                        debug!(node, error = %e, "Read failed.");
                        break "read failed";
                    }
                },
            }
        };
        if reason == "the node was deleted" {
            let _ = conn.close().await;
        } else if let Some((code, why)) = close_frame {
            let _ = tokio::time::timeout(SHUTDOWN_CLOSE, conn.close_with(code, &why)).await;
        } else if shutdown.is_cancelled() && matches!(reason, "replaced or shutting down" | "session closed") {
            // Upstream edges log 1006 (abnormal closure) for a dropped TCP connection; a
            // close frame lets them reconnect at once.
            let _ = tokio::time::timeout(SHUTDOWN_CLOSE, conn.close_with(1001, "cloudcore is shutting down")).await;
            // SyncController stops too: what it was not told is sent again after the restart.
            info!(node, reason = "cloudcore is shutting down", "Edge disconnected.");
            if let Some((depth, _)) = &gauges {
                depth.set(0);
            }
            return;
        }
        self.flush_acks(&node, noting, &mut acked).await;
        let still_current = {
            let mut sessions = self.sessions.lock();
            let current = sessions.get(&node).is_some_and(|e| e.id == session_id);
            if current {
                sessions.remove(&node);
            }
            if let Some(m) = &self.metrics {
                m.connected.set(sessions.len() as i64);
            }
            current
        };
        if let Some((depth, _)) = &gauges {
            depth.set(0);
        }
        if still_current {
            self.notify_sync(&node, Operation::Disconnected, session_id, false).await;
        }
        info!(node, reason, "Edge disconnected.");
    }

    /// Hands SyncController what the node acknowledged and it was not told yet, as the session
    /// ends (bounded by [`SHUTDOWN_CLOSE`]: a SyncController that is gone is not waited for).
    async fn flush_acks(&self, node: &str, noting: Option<Noting>, acked: &mut Pending) {
        let (Some(feed), batch) = (&self.acks, acked.take(node)) else { return };
        let flush = async {
            if let Some(n) = noting {
                n.await;
            }
            if let Some(b) = batch {
                feed.send(b).await;
            }
        };
        if tokio::time::timeout(SHUTDOWN_CLOSE, flush).await.is_err() {
            debug!(node, "SyncController did not take the session's last ACK notes in time.");
        }
    }

    /// Tells SyncController a node connected (it then resumes the node from its ObjectSyncs at
    /// once) or went away.
    /// The content is the session's id, so a late notice of an old session can be told from
    /// the current one, followed by ` inventory` when the edge answers inventory questions.
    async fn notify_sync(&self, node: &str, op: Operation, session: u64, inventory: bool) {
        // The Router tells a node that connects which topics and URLs its rules need; the
        // TaskManager resends the node's tasks in progress.
        for m in [module::ROUTER, module::TASKMANAGER] {
            if op == Operation::Connected && self.bus.has_module(m) {
                let notice =
                    Message::build(module::CLOUDHUB, m, CloudResource::node_notice(node), &op, Content::null());
                let _ = self.bus.try_send(m, notice);
            }
        }
        if self.bus.group_members(module::SYNCCONTROLLER).is_empty() {
            return;
        }
        let msg = Message::build(
            module::CLOUDHUB,
            module::SYNCCONTROLLER,
            CloudResource::node_notice(node),
            op,
            Content::string(&if inventory { format!("{session} inventory") } else { session.to_string() }),
        );
        let _ = self.bus.send(module::SYNCCONTROLLER, msg).await;
    }

    /// Handles one message from the edge: keepalives, ACKs and replies at once (never paced or
    /// counted: an edge's ACKs must not wait behind its requests); a request for the controllers
    /// is returned as the [`Handing`] that waits for the node's pace and room, then gives it to
    /// the bus.
    fn upstream(
        self: &Arc<Self>,
        node: &str,
        mut msg: Message,
        queue: &mut NodeQueue,
        acked: &mut Pending,
        bucket: Option<&mut Bucket>,
    ) -> Option<Handing> {
        if msg.is_empty_frame() {
            // A v1.15 edge writes a zero-value message as it shuts down.
            return None;
        }
        match msg.operation() {
            Operation::Keepalive => return None,
            Operation::Response if msg.parent_id().is_some() => {
                let parent = msg.header.parent_id.clone();
                if let Some((key, done)) = queue.ack(&parent) {
                    debug!(node, msg.parent_id = %parent, "ACK.");
                    let source = done.router.source.as_str();
                    if self.acks.is_some()
                        && (source == module::EDGECONTROLLER || source == module::DEVICECONTROLLER)
                        && let Some(note) = AckNote::of(&key, &done, crate::synccontroller::tracked)
                    {
                        // SyncController records it: coalesced here, handed over with
                        // backpressure, never dropped.
                        acked.push(note);
                    }
                    return None;
                }
                // Not an ACK of ours: a reply to a cloud request, for a waiting module.
                if let Err(m) = self.bus.try_send_resp(msg) {
                    debug!(node, msg.parent_id = %m.header.parent_id, "A response answers nothing waiting.");
                }
                return None;
            }
            // ServiceBus answers the Router's calls with `upload` (errors, upstream: with no
            // operation, or `error`): a reply all the same.
            _ if is_user_reply(&msg) => {
                if let Err(m) = self.bus.try_send_resp(msg) {
                    debug!(node, msg.parent_id = %m.header.parent_id, "A reply answers nothing waiting.");
                }
                return None;
            }
            Operation::Error => {
                warn!(node, resource = %msg.router.resource, content = ?msg.content, "The edge reported an error.");
                return None;
            }
            _ => {}
        }
        // The node comes from the authenticated connection, never from the message.
        msg.router.resource = CloudResource::prefixed(node, &msg.router.resource);
        let group = match msg.router.source.as_str() {
            module::TWIN => module::DEVICECONTROLLER,
            source::METASERVER => module::DYNAMICCONTROLLER,
            _ => module::EDGECONTROLLER,
        };
        if msg.operation() == Operation::Upload && msg.router.group == group::USER {
            let _ = self.bus.try_send(module::ROUTER, msg);
            return None;
        }
        // A node task's report (upstream's dispatcher: `UpdateNodeActionStatus` → taskmanager).
        // A full inbox drops it: the TaskManager asks again, and the edge reports again.
        if msg.router.operation == kubeedge_apis::operations::task::UPDATE_NODE_ACTION_STATUS {
            if self.bus.try_send(module::TASKMANAGER, msg).is_err() {
                debug!(node, "No room (or no TaskManager) for a node task report; dropped.");
            }
            return None;
        }
        if self.bus.group_len(group) == 0 {
            debug!(node, group, "No module for an upstream message; dropped.");
            return None;
        }
        let not_before = bucket.and_then(|b| b.take(Instant::now()));
        if not_before.is_none() {
            msg = match self.try_hand_over(node, group, msg) {
                Ok(()) => return None,
                Err(m) => m,
            };
        }
        Some(Box::pin(self.clone().hand_over(node.to_owned(), group, msg, not_before)))
    }

    /// [`Hub::hand_over`] at once, when nothing has to wait (the usual case: an idle fleet's
    /// lease renewals): the node has room in flight, the budget has room, and the group's one
    /// module has room in its inbox. Otherwise the message comes back untouched for the
    /// waiting path.
    #[allow(clippy::result_large_err)] // Handing the message back is the point; no copy is made.
    fn try_hand_over(&self, node: &str, group: &'static str, msg: Message) -> Result<(), Message> {
        let Some(limits) = &self.limits else { return self.bus.try_send_to_sole(group, msg) };
        if self.bus.group_len(group) != 1 {
            return Err(msg);
        }
        let Some(admitted) = limits.admission.try_admit(node, crate::inflight::weight(&msg)) else {
            return Err(msg);
        };
        // Not taken: `admitted` is released as it drops.
        self.bus.try_send_to_sole(group, msg)?;
        if limits.admission.completes(group) {
            admitted.handed_over();
        }
        Ok(())
    }

    /// Waits for the node's pace (`not_before`) and its room in flight, then gives `msg` to
    /// `group`. A group whose module takes a ticket for it keeps it counted until handled;
    /// otherwise it is counted until the bus took it. Returns what it waited for.
    async fn hand_over(
        self: Arc<Self>,
        node: String,
        group: &'static str,
        msg: Message,
        not_before: Option<Instant>,
    ) -> Vec<Wait> {
        let mut waited = Vec::new();
        let Some(limits) = &self.limits else {
            let _ = self.bus.send_to_group(group, msg).await;
            return waited;
        };
        if let Some(at) = not_before {
            limits.admission.count_wait(Wait::Rate);
            waited.push(Wait::Rate);
            tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
        }
        let admitted = limits.admission.admit(&node, crate::inflight::weight(&msg)).await;
        waited.extend_from_slice(&admitted.waited);
        // A ticket per member would release the message twice: hand over to a sole member only.
        let completes = limits.admission.completes(group) && self.bus.group_len(group) == 1;
        // Delivered to no one (an inbox closing at shutdown): no ticket will come back.
        if matches!(self.bus.send_to_group(group, msg).await, Ok(n) if n > 0) && completes {
            admitted.handed_over();
        }
        waited
    }
}

/// Messages written with one flush, at most.
const WRITE_BATCH: usize = 64;

/// Requests read behind one being handed over, at most (count and content bytes): beyond
/// them the connection is not read.
const HELD_MAX: usize = 16;
const HELD_BYTES: usize = 1 << 20;

/// What a session handles at once even while a request waits: keepalives, ACKs and replies
/// (`response` with a parent id, and ServiceBus's answers), error reports and the empty
/// shutdown frame.
fn is_control(msg: &Message) -> bool {
    msg.is_empty_frame()
        || matches!(msg.operation(), Operation::Keepalive | Operation::Error)
        || (msg.operation() == Operation::Response && msg.parent_id().is_some())
        || is_user_reply(msg)
}

/// A reply to the Router (group `user` with a parent id): ServiceBus answers a call.
fn is_user_reply(msg: &Message) -> bool {
    msg.router.group == group::USER && msg.parent_id().is_some()
}

/// A request on its way from a session to the controllers ([`Hub::hand_over`]).
type Handing = Pin<Box<dyn Future<Output = Vec<Wait>> + Send>>;

/// A batch of ACK notes on its way to SyncController.
type Noting = Pin<Box<dyn Future<Output = bool> + Send>>;

/// One node's pace of requests to the controllers: EdgeHub's token bucket (`messageQPS`,
/// `messageBurst`), enforced by the cloud on what it reads.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    burst: f64,
    qps: f64,
    at: Instant,
}

impl Bucket {
    fn new(qps: f64, burst: f64, now: Instant) -> Self {
        let burst = burst.max(1.0);
        Self { tokens: burst, burst, qps: qps.max(f64::MIN_POSITIVE), at: now }
    }

    /// Takes a token: `None` if one was there, else the moment it will have been (taken in
    /// advance; the session reads nothing more until then, so the debt is one token at most).
    fn take(&mut self, now: Instant) -> Option<Instant> {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * self.qps;
        self.tokens = (self.tokens + refill).min(self.burst) - 1.0;
        self.at = now;
        (self.tokens < 0.0).then(|| now + Duration::from_secs_f64(-self.tokens / self.qps))
    }
}

/// Upstream's `IsNodeStopped`: `msg` (edge form) deletes the node `node` itself.
fn deletes_node(msg: &Message, node: &str) -> bool {
    msg.operation() == Operation::Delete
        && ResourcePath::parse(&msg.router.resource)
            .is_ok_and(|p| p.resource_type == resource_type::NODE && p.name.as_deref() == Some(node))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(30.0, 60.0, t0);
        // EdgeHub's own burst passes at once …
        for _ in 0..60 {
            assert_eq!(b.take(t0), None);
        }
        // … the next waits one token's time (1/30 s), taken in advance.
        let at = b.take(t0).expect("paced");
        assert!((at - t0).as_secs_f64() - 1.0 / 30.0 < 1e-6, "{:?}", at - t0);
        // Read again at that moment: the next is one more token's time away.
        let next = b.take(at).expect("paced");
        assert!(((next - at).as_secs_f64() - 1.0 / 30.0).abs() < 1e-6);
        // A quiet second refills 30, never beyond the burst.
        let later = next + Duration::from_secs(1);
        for _ in 0..30 {
            assert_eq!(b.take(later), None);
        }
        assert!(b.take(later).is_some());
        let much_later = later + Duration::from_secs(3600);
        for _ in 0..60 {
            assert_eq!(b.take(much_later), None);
        }
        assert!(b.take(much_later).is_some(), "the burst caps what a quiet hour saves");
    }
}
