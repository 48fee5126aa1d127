//! The embedded MQTT 3.1.1 broker of `mqttMode` 0 and 1 (upstream runs gomqtt's broker on
//! `mqttServerInternal`, default `tcp://127.0.0.1:1884`). Our own code: rumqttd, the embeddable
//! Rust broker, refuses every `$`-prefixed filter, and upstream's topics are `$hw/events/...`.
//!
//! What it does:
//! - CONNECT: protocol `MQTT` level 4 (3.1.1) and `MQIsdp` level 3 (3.1); another level gets
//!   CONNACK 1. With `mqttUsername` set, the user name and password must match (CONNACK 5
//!   without credentials, 4 with wrong ones). An empty client id gets a generated one (with
//!   clean session; without, CONNACK 2). A second connection with the same client id closes
//!   the first (takeover). The first packet must be a CONNECT within [`CONNECT_TIMEOUT`].
//! - Sessions are always clean: `cleanSession=false` is accepted (CONNACK session-present 0)
//!   but nothing is kept after the connection ends, and unacknowledged QoS 1 messages are not
//!   sent again.
//! - SUBSCRIBE with `+` and `#`, and `$`-prefixed filters (`#` and `+` as the first level do not
//!   match `$` topics, §4.7.2). Granted QoS is at most 1; an invalid filter gets 0x80.
//!   UNSUBSCRIBE.
//! - PUBLISH in: QoS 0, 1 (PUBACK) and 2 (PUBREC, then PUBCOMP on PUBREL; a re-sent QoS 2
//!   PUBLISH with a packet id still waiting for its PUBREL is not delivered twice). Out: at
//!   min(published, granted) QoS, once per client even when several of its filters match,
//!   with at most [`Options::max_inflight`] QoS 1 messages awaiting PUBACK.
//! - Retained messages: the last per topic (at most [`MAX_RETAINED`] topics), an empty payload
//!   clears it; delivered with RETAIN set on a matching subscribe.
//! - Last will: published when a connection ends without DISCONNECT (lost, malformed packet,
//!   keepalive expired, taken over), not when the broker stops.
//! - PINGREQ/PINGRESP; a connection silent for 1.5 × its keepalive is closed.
//!
//! Limits and overflow policy:
//! - A packet above [`Options::max_packet`] closes the connection; so does any malformed
//!   packet (logged, never a panic).
//! - At most [`Options::max_connections`] connections; one more is closed at once and counted
//!   (`kubeedge_eventbus_broker_refused_total{reason="limit"}`).
//! - Each connection has a bounded outbound queue ([`Options::queue`], `mqttSessionQueueSize`).
//!   A publisher never waits for subscribers: when a subscriber's queue is full the message is
//!   dropped for that subscriber only (QoS 0 and 1 alike, as mosquitto's
//!   `max_queued_messages`) and counted (`kubeedge_eventbus_dropped_total{queue="subscriber"}`).
//!   A subscriber that takes more than [`WRITE_TIMEOUT`] to accept bytes is disconnected.
//!
//! Tasks: [`Broker::run`] accepts, and runs one task per connection in its own tracker; it
//! returns only after every connection task has ended (all of them watch the stop token).

pub mod codec;
pub mod topic;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use codec::Packet;

/// Connections at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// QoS 1 messages sent to one client and not yet acknowledged; beyond it the client's queue
/// is not read (and fills).
pub const MAX_INFLIGHT: usize = 100;
/// Topics with a retained message; a new one beyond it is not kept (counted as dropped).
pub const MAX_RETAINED: usize = 10_000;
/// Filters one connection may hold; beyond it SUBSCRIBE answers 0x80.
pub const MAX_SUBSCRIPTIONS: usize = 1024;
/// Time for a new connection to send its CONNECT.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to accept the bytes of one write before it is disconnected.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long stopping waits for connection tasks.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Outbound bytes gathered before one write.
const WRITE_BATCH: usize = 64 * 1024;

/// Broker settings.
#[derive(Clone)]
pub struct Options {
    /// Required user name (`mqttUsername`); empty: anonymous clients are accepted.
    pub username: String,
    /// Required password (`mqttPassword`), with a user name.
    pub password: String,
    /// See [`MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// Largest packet (remaining length) accepted.
    pub max_packet: usize,
    /// Messages queued for one connection (`mqttSessionQueueSize`).
    pub queue: usize,
    /// See [`MAX_INFLIGHT`].
    pub max_inflight: usize,
    /// See [`CONNECT_TIMEOUT`].
    pub connect_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            username: String::new(),
            password: String::new(),
            max_connections: MAX_CONNECTIONS,
            max_packet: crate::eventbus::mqtt::MAX_PACKET,
            queue: 100,
            max_inflight: MAX_INFLIGHT,
            connect_timeout: CONNECT_TIMEOUT,
        }
    }
}

/// The broker's counters.
#[derive(Clone)]
pub struct Metrics {
    /// Open (connected) MQTT connections.
    pub connections: prometheus::IntGauge,
    /// Messages dropped because a subscriber's queue was full or the retained store was.
    pub dropped: prometheus::IntCounter,
    /// Connections refused, by reason (`limit`, `auth`, `protocol`).
    pub refused: prometheus::IntCounterVec,
}

impl Metrics {
    /// Counters not registered anywhere (tests; a broker without metrics).
    pub fn unregistered() -> Self {
        Self {
            connections: prometheus::IntGauge::new("c", "c").expect("valid"),
            dropped: prometheus::IntCounter::new("d", "d").expect("valid"),
            refused: prometheus::IntCounterVec::new(prometheus::Opts::new("r", "r"), &["reason"]).expect("valid"),
        }
    }
}

/// One message on its way to one client.
#[derive(Debug, Clone)]
struct Delivery {
    topic: Arc<str>,
    payload: Bytes,
    qos: u8,
    retain: bool,
}

/// A connected client, as the router sees it.
struct Session {
    conn: u64,
    tx: mpsc::Sender<Delivery>,
    kill: CancellationToken,
    filters: Vec<(String, u8)>,
    /// Whether a drop for this client was already logged.
    warned: bool,
}

struct Retained {
    payload: Bytes,
    qos: u8,
}

#[derive(Default)]
struct State {
    /// By client id.
    sessions: HashMap<String, Session>,
    retained: HashMap<String, Retained>,
}

/// The embedded broker. Cheap to clone; [`Broker::run`] serves it on a listener.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    opts: Options,
    metrics: Metrics,
    state: Mutex<State>,
    next_conn: AtomicU64,
}

/// Why a connection ended.
enum End {
    /// DISCONNECT: no will.
    Disconnected,
    /// The broker stops: no will.
    Shutdown,
    /// Anything else: the will is published.
    Lost(String),
}

impl Broker {
    /// A broker with `opts`, counting in `metrics`.
    pub fn new(opts: Options, metrics: Metrics) -> Self {
        let inner = Inner { opts, metrics, state: Mutex::default(), next_conn: AtomicU64::new(1) };
        Self { inner: Arc::new(inner) }
    }

    /// Accepts on `listener` until `stop`, then waits (at most a few seconds) for the
    /// connection tasks, which all end on `stop`.
    pub async fn run(self, listener: TcpListener, stop: CancellationToken) {
        let tasks = TaskTracker::new();
        let slots = Arc::new(Semaphore::new(self.inner.opts.max_connections));
        if let Ok(addr) = listener.local_addr() {
            info!(address = %addr, "Embedded MQTT broker listening.");
        }
        let mut over_limit = 0u64;
        let mut backoff = kubeedge_telemetry::AcceptBackoff::new("mqtt-broker");
        loop {
            let (stream, peer) = tokio::select! {
                _ = stop.cancelled() => break,
                a = listener.accept() => match a {
                    Ok(a) => {
                        backoff.succeeded();
                        a
                    }
                    Err(e) => {
                        backoff.failed(&e).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                over_limit += 1;
                self.inner.metrics.refused.with_label_values(&["limit"]).inc();
                if over_limit.is_power_of_two() {
                    warn!(%peer, limit = self.inner.opts.max_connections, refused = over_limit, "MQTT connection limit reached; closed a new connection.");
                }
                drop(stream);
                continue;
            };
            tasks.spawn(self.inner.clone().connection(stream, peer, stop.clone(), permit));
        }
        drop(listener);
        tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, tasks.wait()).await.is_err() {
            warn!(open = tasks.len(), "MQTT connections still open after the shutdown grace.");
        }
        info!("Embedded MQTT broker stopped.");
    }

    /// Connected clients.
    pub fn clients(&self) -> usize {
        self.inner.state.lock().sessions.len()
    }
}

/// Reads until one packet is complete (`None`: the peer closed). Cancel-safe: partial bytes
/// stay in `buf`.
async fn read_packet(stream: &mut TcpStream, buf: &mut BytesMut, max: usize) -> Result<Option<Packet>, ReadError> {
    loop {
        if let Some(p) = codec::decode(buf, max)? {
            return Ok(Some(p));
        }
        grow(buf);
        if stream.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

/// Makes room for the next read: what the packet under way still needs, but at most as much
/// again as is buffered (so memory follows the bytes that arrived, not what a header claims).
fn grow(buf: &mut BytesMut) {
    let need = codec::frame_len(buf).map_or(4096, |total| total.saturating_sub(buf.len()));
    let step = need.clamp(4096, buf.len().max(4096));
    if buf.capacity() - buf.len() < step {
        buf.reserve(step);
    }
}

/// Reads the first packet, which must be a CONNECT: anything else is refused from its first
/// byte (an HTTP request, say), without waiting for the body it seems to announce.
async fn read_connect(stream: &mut TcpStream, buf: &mut BytesMut, max: usize) -> Result<Option<Packet>, ReadError> {
    loop {
        if buf.first().is_some_and(|b| *b != 0x10) {
            return Err(codec::Error::Malformed("the first packet is not CONNECT").into());
        }
        if let Some(p) = codec::decode(buf, max)? {
            return Ok(Some(p));
        }
        grow(buf);
        if stream.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error(transparent)]
    Codec(#[from] codec::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Compares without an early exit on the first difference.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One connection's own state.
struct Conn {
    id: u64,
    client_id: String,
    peer: SocketAddr,
    tx: mpsc::Sender<Delivery>,
    /// QoS 1 packet ids sent and not acknowledged.
    inflight: HashSet<u16>,
    next_pkid: u16,
    /// QoS 2 packet ids received and not yet released.
    awaiting_rel: HashSet<u16>,
}

impl Conn {
    fn pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.wrapping_add(1).max(1);
            if !self.inflight.contains(&self.next_pkid) {
                return self.next_pkid;
            }
        }
    }

    fn deliver(&mut self, d: Delivery, out: &mut BytesMut) {
        let pkid = if d.qos > 0 {
            let id = self.pkid();
            self.inflight.insert(id);
            id
        } else {
            0
        };
        codec::publish(out, &d.topic, &d.payload, d.qos, d.retain, pkid);
    }
}

impl Inner {
    /// Hands a published message to every matching subscriber (and the retained store).
    fn route(&self, topic: &str, payload: Bytes, qos: u8, retain: bool) {
        let name: Arc<str> = Arc::from(topic);
        let mut st = self.state.lock();
        if retain {
            if payload.is_empty() {
                st.retained.remove(topic);
            } else if st.retained.len() < MAX_RETAINED || st.retained.contains_key(topic) {
                st.retained.insert(topic.to_owned(), Retained { payload: payload.clone(), qos });
            } else {
                self.metrics.dropped.inc();
                debug!(%topic, "The retained store is full; a retained message was not kept.");
            }
        }
        for (client, s) in st.sessions.iter_mut() {
            let Some(granted) = s.filters.iter().filter(|(f, _)| topic::matches(f, topic)).map(|(_, q)| *q).max()
            else {
                continue;
            };
            let d = Delivery { topic: name.clone(), payload: payload.clone(), qos: qos.min(granted), retain: false };
            if let Err(mpsc::error::TrySendError::Full(_)) = s.tx.try_send(d) {
                self.metrics.dropped.inc();
                if !std::mem::replace(&mut s.warned, true) {
                    warn!(client_id = %client, %topic, "An MQTT subscriber is not keeping up; dropping its messages while its queue is full.");
                }
            }
        }
    }

    async fn connection(
        self: Arc<Self>,
        mut stream: TcpStream,
        peer: SocketAddr,
        stop: CancellationToken,
        _permit: OwnedSemaphorePermit,
    ) {
        let _ = stream.set_nodelay(true);
        let max = self.opts.max_packet;
        let mut rbuf = BytesMut::with_capacity(4096);
        let first = tokio::select! {
            _ = stop.cancelled() => return,
            r = tokio::time::timeout(self.opts.connect_timeout, read_connect(&mut stream, &mut rbuf, max)) => r,
        };
        let connect = match first {
            Ok(Ok(Some(Packet::Connect(c)))) => c,
            Ok(Ok(Some(_))) => return,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                warn!(%peer, error = %e, "Closed an MQTT connection: bad CONNECT.");
                return;
            }
            Err(_) => {
                debug!(%peer, "Closed an MQTT connection: no CONNECT in time.");
                return;
            }
        };
        let mut out = BytesMut::new();
        let code = self.check_connect(&connect);
        if code != 0 {
            let reason = if matches!(code, 4 | 5) { "auth" } else { "protocol" };
            self.metrics.refused.with_label_values(&[reason]).inc();
            if code != u8::MAX {
                codec::connack(&mut out, false, code);
                let _ = tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&out)).await;
            }
            warn!(%peer, client_id = %connect.client_id, code, "Refused an MQTT connection.");
            return;
        }
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let client_id =
            if connect.client_id.is_empty() { format!("kubeedge-auto-{id}") } else { connect.client_id.clone() };
        let (tx, mut rx) = mpsc::channel(self.opts.queue.max(1));
        let kill = CancellationToken::new();
        let session = Session { conn: id, tx: tx.clone(), kill: kill.clone(), filters: Vec::new(), warned: false };
        if let Some(old) = self.state.lock().sessions.insert(client_id.clone(), session) {
            info!(%client_id, "A new MQTT connection took over the client id; closing the old one.");
            old.kill.cancel();
        }
        self.metrics.connections.inc();
        debug!(%peer, %client_id, keep_alive = connect.keep_alive, "MQTT client connected.");
        codec::connack(&mut out, false, 0);
        let mut conn =
            Conn { id, client_id, peer, tx, inflight: HashSet::new(), next_pkid: 0, awaiting_rel: HashSet::new() };
        let end = self.serve(&mut stream, &mut conn, &mut rx, rbuf, out, connect.keep_alive, &kill, &stop).await;
        self.metrics.connections.dec();
        {
            let mut st = self.state.lock();
            if st.sessions.get(&conn.client_id).is_some_and(|s| s.conn == conn.id) {
                st.sessions.remove(&conn.client_id);
            }
        }
        match end {
            End::Disconnected => debug!(%peer, client_id = %conn.client_id, "MQTT client disconnected."),
            End::Shutdown => {}
            End::Lost(why) => {
                debug!(%peer, client_id = %conn.client_id, reason = %why, "MQTT connection closed.");
                if let Some(w) = &connect.will {
                    self.route(&w.topic, w.payload.clone(), w.qos, w.retain);
                }
            }
        }
    }

    /// 0 to accept, a CONNACK code to refuse, or `u8::MAX` to close without a CONNACK.
    fn check_connect(&self, c: &codec::Connect) -> u8 {
        match (c.protocol_name.as_str(), c.level) {
            ("MQTT", 4) | ("MQIsdp", 3) => {}
            ("MQTT" | "MQIsdp", _) => return 1,
            _ => return u8::MAX,
        }
        if c.client_id.is_empty() && !c.clean_session {
            return 2;
        }
        if let Some(w) = &c.will
            && !topic::valid_topic(&w.topic)
        {
            return u8::MAX;
        }
        if !self.opts.username.is_empty() {
            let Some(user) = &c.username else { return 5 };
            let pass = c.password.as_deref().unwrap_or_default();
            if !(same_secret(user.as_bytes(), self.opts.username.as_bytes())
                && same_secret(pass, self.opts.password.as_bytes()))
            {
                return 4;
            }
        }
        0
    }

    #[allow(clippy::too_many_arguments)]
    async fn serve(
        &self,
        stream: &mut TcpStream,
        conn: &mut Conn,
        rx: &mut mpsc::Receiver<Delivery>,
        mut rbuf: BytesMut,
        mut out: BytesMut,
        keep_alive: u16,
        kill: &CancellationToken,
        stop: &CancellationToken,
    ) -> End {
        let max = self.opts.max_packet;
        let keep = (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500));
        let expiry = tokio::time::sleep(keep.unwrap_or(Duration::from_secs(3600)));
        tokio::pin!(expiry);
        loop {
            if !out.is_empty() {
                let wrote = tokio::select! {
                    _ = stop.cancelled() => return End::Shutdown,
                    _ = kill.cancelled() => return End::Lost("taken over by a new connection".into()),
                    w = tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&out)) => w,
                };
                match wrote {
                    Ok(Ok(())) => out.clear(),
                    Ok(Err(e)) => return End::Lost(format!("write failed: {e}")),
                    Err(_) => {
                        warn!(peer = %conn.peer, client_id = %conn.client_id, "Closed an MQTT connection: the client did not read for {WRITE_TIMEOUT:?}.");
                        return End::Lost("write timed out".into());
                    }
                }
                if out.capacity() > 4 * WRITE_BATCH {
                    out = BytesMut::new();
                }
            }
            let room = conn.inflight.len() < self.opts.max_inflight;
            let end = tokio::select! {
                _ = stop.cancelled() => Some(End::Shutdown),
                _ = kill.cancelled() => Some(End::Lost("taken over by a new connection".into())),
                _ = &mut expiry, if keep.is_some() => {
                    info!(peer = %conn.peer, client_id = %conn.client_id, "Closed an MQTT connection: keepalive expired.");
                    Some(End::Lost("keepalive expired".into()))
                }
                r = read_packet(stream, &mut rbuf, max) => {
                    if let Some(k) = keep {
                        expiry.as_mut().reset(tokio::time::Instant::now() + k);
                    }
                    let mut next = r;
                    loop {
                        match next {
                            Ok(Some(p)) => {
                                if let Some(end) = self.handle(p, conn, &mut out) {
                                    break Some(end);
                                }
                            }
                            Ok(None) => break Some(End::Lost("closed by the client".into())),
                            Err(ReadError::Io(e)) => break Some(End::Lost(format!("read failed: {e}"))),
                            Err(ReadError::Codec(e)) => {
                                warn!(peer = %conn.peer, client_id = %conn.client_id, error = %e, "Closed an MQTT connection: malformed packet.");
                                break Some(End::Lost(e.to_string()));
                            }
                        }
                        // Packets already buffered are handled before the next write.
                        match codec::decode(&mut rbuf, max) {
                            Ok(None) => break None,
                            other => next = other.map_err(ReadError::from),
                        }
                        if out.len() >= WRITE_BATCH {
                            break None;
                        }
                    }
                }
                d = rx.recv(), if room => {
                    if let Some(d) = d {
                        conn.deliver(d, &mut out);
                        while out.len() < WRITE_BATCH && conn.inflight.len() < self.opts.max_inflight {
                            let Ok(d) = rx.try_recv() else { break };
                            conn.deliver(d, &mut out);
                        }
                    }
                    None
                }
            };
            if let Some(end) = end {
                if !out.is_empty() && !matches!(end, End::Shutdown) {
                    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&out)).await;
                }
                return end;
            }
        }
    }

    /// One packet from a connected client; `Some` ends the connection.
    fn handle(&self, p: Packet, conn: &mut Conn, out: &mut BytesMut) -> Option<End> {
        match p {
            Packet::Publish(p) => {
                if !topic::valid_topic(&p.topic) {
                    warn!(peer = %conn.peer, client_id = %conn.client_id, topic = %p.topic, "Closed an MQTT connection: PUBLISH to an invalid topic.");
                    return Some(End::Lost("invalid topic".into()));
                }
                match p.qos {
                    0 => self.route(&p.topic, p.payload, 0, p.retain),
                    1 => {
                        self.route(&p.topic, p.payload, 1, p.retain);
                        codec::ack(out, codec::PUBACK, p.pkid);
                    }
                    _ => {
                        if conn.awaiting_rel.insert(p.pkid) {
                            self.route(&p.topic, p.payload, 2, p.retain);
                        }
                        codec::ack(out, codec::PUBREC, p.pkid);
                    }
                }
            }
            Packet::PubAck(id) => {
                conn.inflight.remove(&id);
            }
            Packet::PubRel(id) => {
                conn.awaiting_rel.remove(&id);
                codec::ack(out, codec::PUBCOMP, id);
            }
            Packet::PubRec(_) | Packet::PubComp(_) => {
                debug!(client_id = %conn.client_id, "Ignored a QoS 2 acknowledgement (the broker sends QoS 1 at most).");
            }
            Packet::Subscribe(pkid, filters) => {
                let mut codes = Vec::with_capacity(filters.len());
                let mut retained = Vec::new();
                {
                    let mut st = self.state.lock();
                    let State { sessions, retained: store } = &mut *st;
                    let Some(s) = sessions.get_mut(&conn.client_id).filter(|s| s.conn == conn.id) else {
                        return Some(End::Lost("taken over by a new connection".into()));
                    };
                    for (f, q) in filters {
                        let existing = s.filters.iter().position(|(g, _)| *g == f);
                        if !topic::valid_filter(&f) || (existing.is_none() && s.filters.len() >= MAX_SUBSCRIPTIONS) {
                            debug!(client_id = %conn.client_id, filter = %f, "Refused a subscription.");
                            codes.push(0x80);
                            continue;
                        }
                        let granted = q.min(1);
                        codes.push(granted);
                        for (t, r) in store.iter().filter(|(t, _)| topic::matches(&f, t)) {
                            let topic: Arc<str> = Arc::from(t.as_str());
                            retained.push(Delivery {
                                topic,
                                payload: r.payload.clone(),
                                qos: r.qos.min(granted),
                                retain: true,
                            });
                        }
                        match existing {
                            Some(i) => s.filters[i].1 = granted,
                            None => s.filters.push((f, granted)),
                        }
                    }
                }
                codec::suback(out, pkid, &codes);
                for d in retained {
                    if conn.tx.try_send(d).is_err() {
                        self.metrics.dropped.inc();
                    }
                }
            }
            Packet::Unsubscribe(pkid, filters) => {
                if let Some(s) = self.state.lock().sessions.get_mut(&conn.client_id).filter(|s| s.conn == conn.id) {
                    s.filters.retain(|(f, _)| !filters.contains(f));
                }
                codec::ack(out, codec::UNSUBACK, pkid);
            }
            Packet::PingReq => codec::pingresp(out),
            Packet::Disconnect => return Some(End::Disconnected),
            Packet::Connect(_) => {
                warn!(peer = %conn.peer, client_id = %conn.client_id, "Closed an MQTT connection: a second CONNECT.");
                return Some(End::Lost("second CONNECT".into()));
            }
        }
        None
    }
}
