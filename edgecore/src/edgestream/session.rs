//! One tunnel session: a reader task (frames in, decoded and handed to the dispatcher), a
//! writer task (the only one writing: messages out, a ping every 5 s as upstream, pongs), and
//! the dispatcher (this function), which owns the table of open connections and starts one
//! task per `*_CONNECT`.
//!
//! Each connection has a bounded inbox; the dispatcher waits when one is full, so memory per
//! stream stays bounded, and a stream that takes nothing for 5 s is closed alone. The session
//! ends when the cloud closes or refuses it (CLOSE_CONNECT), a read or write fails or a write
//! takes longer than `writeDeadline`, nothing arrives for [`SILENCE`], or at shutdown; every
//! connection task is then stopped and awaited.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use kubeedge_beehive::Spawner;
use kubeedge_stream::ws::Frame;
use kubeedge_stream::{ConnectRequest, Message, MessageType};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use prometheus::IntGauge;

use super::conn;
use super::dial::Tunnel;

/// Upstream's ping period and payload.
const PING_EVERY: Duration = Duration::from_secs(5);
const PING_PAYLOAD: &[u8] = b"ping you";
/// Messages waiting for the writer.
const OUTBOX: usize = 256;
/// Messages waiting for one connection.
const CONN_INBOX: usize = 16;
/// How long a stream may leave its inbox full before it is closed.
const STREAM_STALL: Duration = Duration::from_secs(5);
/// Open connections per session; more are refused with REMOVE_CONNECT.
pub const MAX_CONNECTIONS: usize = 1024;

/// Why a session ended, for the log.
#[derive(Debug)]
pub enum Ended {
    /// Shutdown.
    Shutdown,
    /// The cloud closed the tunnel (code, reason).
    Closed(Option<u16>, String),
    /// Reading failed.
    Read(String),
    /// Writing failed.
    Write(String),
    /// Nothing arrived within [`SILENCE`].
    Silent(Duration),
    /// The cloud refused the session (CLOSE_CONNECT), with its reason.
    Refused(String),
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Shutdown => f.write_str("shutting down"),
            Self::Closed(code, reason) => write!(f, "the cloud closed the tunnel ({code:?} {reason:?})"),
            Self::Read(e) => write!(f, "reading: {e}"),
            Self::Write(e) => write!(f, "writing: {e}"),
            Self::Silent(d) => write!(f, "nothing from the cloud for {d:?}"),
            Self::Refused(why) => write!(f, "the cloud refused the session (CLOSE_CONNECT: {why:?})"),
        }
    }
}

/// A write bounded by the write deadline and cut short by `stop` (a cut frame does not matter
/// on a session that is ending); the error text, or `None` when stopped.
async fn bounded(
    stop: &CancellationToken,
    deadline: Duration,
    write: impl Future<Output = Result<(), kubeedge_stream::ws::Error>>,
) -> Result<(), Option<String>> {
    tokio::select! {
        _ = stop.cancelled() => Err(None),
        r = tokio::time::timeout(deadline, write) => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Some(e.to_string())),
            Err(_) => Err(Some(format!("no write completed within {deadline:?}"))),
        },
    }
}

/// Records why the session ends (the first reason wins) and stops it.
fn finish(end: &mpsc::Sender<Ended>, stop: &CancellationToken, why: Ended) {
    let _ = end.try_send(why);
    stop.cancel();
}

/// How long the tunnel may be silent. Upstream's edge has no read deadline, and upstream's
/// cloud answers pings only while it is not blocked writing to a slow `kubectl logs` client,
/// so this is long: it only catches a link that died without a reset.
pub const SILENCE: Duration = Duration::from_secs(120);
/// The silence allowed from a cloud that pings us itself (ours), in its ping periods.
pub const MISSED_CLOUD_PINGS: u32 = 4;

/// Serves the tunnel until it ends; replays requests to Edged's server at `kubelet`. Writes
/// taking longer than `write_deadline` end the session.
pub async fn serve(
    tunnel: Tunnel,
    kubelet: SocketAddr,
    write_deadline: Duration,
    streams: Option<&IntGauge>,
    shutdown: &CancellationToken,
    spawner: &Spawner,
) -> Ended {
    let Tunnel { mut reader, mut writer, cloud_pings } = tunnel;
    let silence = cloud_pings.map_or(SILENCE, |every| every * MISSED_CLOUD_PINGS);
    let stop = shutdown.child_token();
    // The module's spawner runs them (a panic fails the module); the tracker awaits them.
    let tasks = TaskTracker::new();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(OUTBOX);
    let (pong_tx, mut pong_rx) = mpsc::channel::<Bytes>(4);
    let (in_tx, mut in_rx) = mpsc::channel::<Message>(64);
    let (done_tx, mut done_rx) = mpsc::channel::<u64>(64);
    let (end_tx, mut end_rx) = mpsc::channel::<Ended>(2);

    // The writer: the only task writing to the tunnel.
    let (write_stop, write_end) = (stop.clone(), end_tx.clone());
    spawner.spawn(tasks.track_future(async move {
        let mut ping = tokio::time::interval(PING_EVERY);
        let failed = loop {
            let r = tokio::select! {
                _ = write_stop.cancelled() => break None,
                m = out_rx.recv() => match m {
                    Some(m) => bounded(&write_stop, write_deadline, writer.text(&m.encode())).await,
                    None => break None,
                },
                Some(p) = pong_rx.recv() => bounded(&write_stop, write_deadline, writer.pong(&p)).await,
                _ = ping.tick() => bounded(&write_stop, write_deadline, writer.ping(PING_PAYLOAD)).await,
            };
            match r {
                Ok(()) => {}
                Err(None) => break None,
                Err(Some(e)) => break Some(e),
            }
        };
        // out_rx is dropped with this task: streams waiting to send see the session gone.
        match failed {
            Some(e) => finish(&write_end, &write_stop, Ended::Write(e)),
            None => {
                let _ = tokio::time::timeout(Duration::from_secs(1), writer.close(1000, "")).await;
            }
        }
    }));

    // The reader: frames in, until the tunnel ends (never cut mid-frame except when stopping,
    // after which the reader is dropped).
    let (read_stop, read_end) = (stop.clone(), end_tx);
    spawner.spawn(tasks.track_future(async move {
        let mut malformed = kubeedge_telemetry::LogLimiter::new(Duration::from_secs(10));
        let end = loop {
            let next = tokio::select! {
                _ = read_stop.cancelled() => return,
                r = tokio::time::timeout(silence, reader.next()) => r,
            };
            match next {
                Err(_) => break Ended::Silent(silence),
                Ok(Err(e)) => break Ended::Read(e.to_string()),
                Ok(Ok(None)) => break Ended::Closed(None, "the connection ended".into()),
                Ok(Ok(Some(Frame::Close(code, reason)))) => break Ended::Closed(code, reason),
                Ok(Ok(Some(Frame::Ping(p)))) => {
                    let _ = pong_tx.try_send(p);
                }
                Ok(Ok(Some(Frame::Pong(_)))) => {}
                Ok(Ok(Some(Frame::Message(bytes)))) => match Message::decode(bytes) {
                    Ok(m) => {
                        tokio::select! {
                            _ = read_stop.cancelled() => return,
                            r = in_tx.send(m) => if r.is_err() { return },
                        }
                    }
                    // One bad frame is dropped; the tunnel goes on.
                    Err(e) => {
                        if let Some(held_back) = malformed.admit() {
                            warn!(error = %e, held_back, "Dropping a malformed tunnel message (warning at most every 10 s).");
                        }
                    }
                },
            }
        };
        finish(&read_end, &read_stop, end);
    }));

    // The dispatcher: owns the connection table.
    let mut conns: HashMap<u64, mpsc::Sender<Message>> = HashMap::new();
    let ended = loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break Ended::Shutdown,
            _ = stop.cancelled() => break end_rx.try_recv().unwrap_or(Ended::Read("the session stopped".into())),
            Some(id) = done_rx.recv() => {
                conns.remove(&id);
            }
            Some(m) = in_rx.recv() => {
                let streams = Streams { conns: &mut conns, tasks: &tasks, spawner, out: &out_tx, done: &done_tx, gauge: streams };
                if let Some(end) = dispatch(m, streams, kubelet, &stop).await {
                    break end;
                }
            }
        }
    };
    stop.cancel();
    // Nothing reads these any more: senders must not wait on them.
    drop((conns, in_rx, done_rx, end_rx));
    tasks.close();
    tasks.wait().await;
    ended
}

/// Counts one stream in `kubeedge_edgestream_streams` while it lives.
struct Counted(Option<IntGauge>);

impl Counted {
    fn new(gauge: Option<&IntGauge>) -> Self {
        gauge.iter().for_each(|g| g.inc());
        Self(gauge.cloned())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.iter().for_each(IntGauge::dec);
    }
}

/// What the dispatcher needs to open and feed streams.
struct Streams<'a> {
    conns: &'a mut HashMap<u64, mpsc::Sender<Message>>,
    tasks: &'a TaskTracker,
    spawner: &'a Spawner,
    out: &'a mpsc::Sender<Message>,
    done: &'a mpsc::Sender<u64>,
    /// `kubeedge_edgestream_streams`.
    gauge: Option<&'a IntGauge>,
}

/// Handles one message from the cloud; `Some` when it ends the session.
async fn dispatch(m: Message, s: Streams<'_>, kubelet: SocketAddr, stop: &CancellationToken) -> Option<Ended> {
    let Streams { conns, tasks, spawner, out, done, gauge } = s;
    let id = m.connect_id;
    match m.kind {
        kind if kind.is_connect() => {
            let req: ConnectRequest = match serde_json::from_slice(&m.data) {
                Ok(r) => r,
                Err(e) => {
                    warn!(id, kind = kind.as_str(), error = %e, "Refusing a connect whose payload is not JSON.");
                    let _ = out.send(Message::new(id, MessageType::RemoveConnect, Bytes::new())).await;
                    return None;
                }
            };
            if conns.contains_key(&id) || conns.len() >= MAX_CONNECTIONS {
                warn!(id, open = conns.len(), "Refusing a connect: the id is in use or too many are open.");
                let _ = out.send(Message::new(id, MessageType::RemoveConnect, Bytes::new())).await;
                return None;
            }
            info!(id, kind = kind.as_str(), path = %req.url.path, "Stream opened.");
            let (tx, rx) = mpsc::channel(CONN_INBOX);
            conns.insert(id, tx);
            let (out, done, stop) = (out.clone(), done.clone(), stop.child_token());
            let counted = Counted::new(gauge);
            spawner.spawn(tasks.track_future(async move {
                let _counted = counted;
                conn::run(id, kind, req, kubelet, rx, &out, &stop).await;
                // Upstream sends REMOVE_CONNECT at the end, whoever ended it.
                let _ = out.send(Message::new(id, MessageType::RemoveConnect, Bytes::new())).await;
                let _ = done.send(id).await;
                debug!(id, "Stream closed.");
            }));
        }
        MessageType::Data | MessageType::RemoveConnect => match conns.get(&id) {
            Some(tx) => {
                let remove = m.kind == MessageType::RemoveConnect;
                // Waits while the stream's inbox is full (bounded memory, backpressure), but not
                // for ever: a stream that takes nothing for STREAM_STALL is closed, alone.
                let sent = tokio::select! {
                    _ = stop.cancelled() => return None,
                    r = tokio::time::timeout(STREAM_STALL, tx.send(m)) => r,
                };
                if sent.is_err() {
                    warn!(id, "A stream took nothing from the tunnel for {STREAM_STALL:?}; closing it.");
                }
                if remove || sent.is_err() {
                    conns.remove(&id);
                }
            }
            None => debug!(id, kind = m.kind.as_str(), "A message for no open stream; dropped."),
        },
        MessageType::CloseConnect => {
            let why = String::from_utf8_lossy(&m.data).into_owned();
            return Some(Ended::Refused(why));
        }
        other => debug!(id, kind = other.as_str(), "Ignoring an unexpected message."),
    }
    None
}
