//! One tunnel session: a reader task (frames in, decoded and handed to the dispatcher), a
//! writer task (the only one writing: messages out, a ping every 5 s as upstream, pongs), and
//! the dispatcher (this function), which owns the table of open connections and starts one
//! task per `*_CONNECT`.
//!
//! Each connection has a bounded inbox; the reader waits when one is full, so memory per
//! stream stays bounded and a slow stream slows the tunnel rather than growing. The session
//! ends when the cloud closes, a read or write fails, nothing arrives within the read
//! deadline (the cloud answers our pings, so a live tunnel is never silent that long), or at
//! shutdown; every connection task is then stopped and awaited.

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

use super::conn;
use super::dial::Tunnel;

/// Upstream's ping period and payload.
const PING_EVERY: Duration = Duration::from_secs(5);
const PING_PAYLOAD: &[u8] = b"ping you";
/// Messages waiting for the writer.
const OUTBOX: usize = 256;
/// Messages waiting for one connection.
const CONN_INBOX: usize = 16;
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
    /// Nothing arrived within the read deadline.
    Silent(Duration),
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Shutdown => f.write_str("shutting down"),
            Self::Closed(code, reason) => write!(f, "the cloud closed the tunnel ({code:?} {reason:?})"),
            Self::Read(e) => write!(f, "reading: {e}"),
            Self::Write(e) => write!(f, "writing: {e}"),
            Self::Silent(d) => write!(f, "nothing from the cloud for {d:?}"),
        }
    }
}

/// What the reader hands the dispatcher.
enum Inbound {
    Message(Message),
    End(Ended),
}

/// Serves the tunnel until it ends; replays requests to Edged's server at `kubelet`.
pub async fn serve(
    tunnel: Tunnel,
    kubelet: SocketAddr,
    read_deadline: Duration,
    shutdown: &CancellationToken,
    spawner: &Spawner,
) -> Ended {
    let Tunnel { mut reader, mut writer } = tunnel;
    let stop = shutdown.child_token();
    // The module's spawner runs them (a panic fails the module); the tracker awaits them.
    let tasks = TaskTracker::new();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(OUTBOX);
    let (pong_tx, mut pong_rx) = mpsc::channel::<Bytes>(4);
    let (in_tx, mut in_rx) = mpsc::channel::<Inbound>(64);
    let (done_tx, mut done_rx) = mpsc::channel::<u64>(64);

    // The writer: the only task writing to the tunnel.
    let write_stop = stop.clone();
    let write_end = in_tx.clone();
    spawner.spawn(tasks.track_future(async move {
        let mut ping = tokio::time::interval(PING_EVERY);
        let result = loop {
            let r = tokio::select! {
                _ = write_stop.cancelled() => break Ok(()),
                m = out_rx.recv() => match m {
                    Some(m) => writer.text(&m.encode()).await,
                    None => break Ok(()),
                },
                Some(p) = pong_rx.recv() => writer.pong(&p).await,
                _ = ping.tick() => writer.ping(PING_PAYLOAD).await,
            };
            if let Err(e) = r {
                break Err(e);
            }
        };
        if let Err(e) = result {
            let _ = write_end.send(Inbound::End(Ended::Write(e.to_string()))).await;
        } else {
            let _ = writer.close(1000, "").await;
        }
    }));

    // The reader: frames in, until the tunnel ends (not cancelled mid-frame: it owns the reader).
    let read_stop = stop.clone();
    spawner.spawn(tasks.track_future(async move {
        let end = loop {
            let next = tokio::select! {
                _ = read_stop.cancelled() => return,
                r = tokio::time::timeout(read_deadline, reader.next()) => r,
            };
            match next {
                Err(_) => break Ended::Silent(read_deadline),
                Ok(Err(e)) => break Ended::Read(e.to_string()),
                Ok(Ok(None)) => break Ended::Closed(None, "the connection ended".into()),
                Ok(Ok(Some(Frame::Close(code, reason)))) => break Ended::Closed(code, reason),
                Ok(Ok(Some(Frame::Ping(p)))) => {
                    let _ = pong_tx.try_send(p);
                }
                Ok(Ok(Some(Frame::Pong(_)))) => {}
                Ok(Ok(Some(Frame::Message(bytes)))) => match Message::decode(bytes) {
                    Ok(m) => {
                        if in_tx.send(Inbound::Message(m)).await.is_err() {
                            return;
                        }
                    }
                    // One bad frame is dropped; the tunnel goes on.
                    Err(e) => warn!(error = %e, "Dropping a malformed tunnel message."),
                },
            }
        };
        let _ = in_tx.send(Inbound::End(end)).await;
    }));

    // The dispatcher: owns the connection table.
    let mut conns: HashMap<u64, mpsc::Sender<Message>> = HashMap::new();
    let ended = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ended::Shutdown,
            Some(id) = done_rx.recv() => {
                conns.remove(&id);
            }
            inbound = in_rx.recv() => match inbound {
                None => break Ended::Read("the reader stopped".into()),
                Some(Inbound::End(end)) => break end,
                Some(Inbound::Message(m)) => {
                    let streams = Streams { conns: &mut conns, tasks: &tasks, spawner, out: &out_tx, done: &done_tx };
                    dispatch(m, streams, kubelet, &stop).await;
                }
            },
        }
    };
    stop.cancel();
    drop(conns);
    tasks.close();
    tasks.wait().await;
    ended
}

/// What the dispatcher needs to open and feed streams.
struct Streams<'a> {
    conns: &'a mut HashMap<u64, mpsc::Sender<Message>>,
    tasks: &'a TaskTracker,
    spawner: &'a Spawner,
    out: &'a mpsc::Sender<Message>,
    done: &'a mpsc::Sender<u64>,
}

async fn dispatch(m: Message, s: Streams<'_>, kubelet: SocketAddr, stop: &CancellationToken) {
    let Streams { conns, tasks, spawner, out, done } = s;
    let id = m.connect_id;
    match m.kind {
        kind if kind.is_connect() => {
            let req: ConnectRequest = match serde_json::from_slice(&m.data) {
                Ok(r) => r,
                Err(e) => {
                    warn!(id, kind = kind.as_str(), error = %e, "Refusing a connect whose payload is not JSON.");
                    let _ = out.send(Message::new(id, MessageType::RemoveConnect, Bytes::new())).await;
                    return;
                }
            };
            if conns.contains_key(&id) || conns.len() >= MAX_CONNECTIONS {
                warn!(id, open = conns.len(), "Refusing a connect: the id is in use or too many are open.");
                let _ = out.send(Message::new(id, MessageType::RemoveConnect, Bytes::new())).await;
                return;
            }
            info!(id, kind = kind.as_str(), path = %req.url.path, "Stream opened.");
            let (tx, rx) = mpsc::channel(CONN_INBOX);
            conns.insert(id, tx);
            let (out, done, stop) = (out.clone(), done.clone(), stop.child_token());
            spawner.spawn(tasks.track_future(async move {
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
                // Waits while the stream's inbox is full: bounded memory, backpressure.
                let _ = tx.send(m).await;
                if remove {
                    conns.remove(&id);
                }
            }
            None => debug!(id, kind = m.kind.as_str(), "A message for no open stream; dropped."),
        },
        MessageType::CloseConnect => warn!(id, "The cloud refused the session (CLOSE_CONNECT)."),
        other => debug!(id, kind = other.as_str(), "Ignoring an unexpected message."),
    }
}
