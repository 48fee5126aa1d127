//! One edge's tunnel session on the cloud side: a reader task (frames in, pings answered), a
//! writer task (the only one writing), and the dispatcher (this module's `run`), which owns
//! the table of open streams, numbers new ones (`MessID`, the message's connect id) and
//! routes the edge's DATA and REMOVE_CONNECT to them.
//!
//! A stream is opened with [`SessionHandle::open`]; dropping the [`Stream`] sends
//! REMOVE_CONNECT to the edge (the API server's caller went away). Each stream's inbox is
//! bounded; one that takes nothing for 5 s is closed alone.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use kubeedge_beehive::Spawner;
use kubeedge_stream::ws::{Frame, FrameReader, FrameWriter};
use kubeedge_stream::{ConnectRequest, Message, MessageType};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use super::metrics::{Counted, StreamMetrics};

/// Messages waiting for the writer.
const OUTBOX: usize = 256;
/// Messages waiting for one stream.
const STREAM_INBOX: usize = 16;
/// How long a stream may leave its inbox full before it is closed.
const STREAM_STALL: Duration = Duration::from_secs(5);
/// Open streams per session.
pub const MAX_STREAMS: usize = 1024;
/// How long a write to the tunnel may take.
const WRITE_DEADLINE: Duration = Duration::from_secs(15);
/// How long the tunnel may be silent: the edge pings every 5 s (ours and upstream's), so this
/// is three missed pings and a margin; a partitioned edge's streams end within it.
const SILENCE: Duration = Duration::from_secs(20);
/// How often we ping the edge (announced by [`kubeedge_stream::CLOUD_PINGS_HEADER`]).
pub const PING_EVERY: Duration = Duration::from_secs(5);

/// A request to open a stream.
struct Open {
    kind: MessageType,
    req: ConnectRequest,
    reply: oneshot::Sender<Result<Stream, String>>,
}

/// A live session, as the registry and the stream server hold it.
#[derive(Clone)]
pub struct SessionHandle {
    opens: mpsc::Sender<Open>,
    /// Cancelled when the session ends (and to end it, e.g. when a newer one replaces it).
    pub stop: CancellationToken,
}

/// One open stream.
pub struct Stream {
    /// The connect id.
    pub id: u64,
    /// DATA and REMOVE_CONNECT from the edge; ends when the session does.
    from_edge: mpsc::Receiver<Message>,
    /// To the edge (DATA).
    pub to_edge: mpsc::Sender<Message>,
    /// Tells the session this stream is gone (it then sends REMOVE_CONNECT, waiting for room
    /// in the outbox, so none is lost when many callers leave at once). Unbounded, but at most
    /// one message per stream, and streams are capped at [`MAX_STREAMS`].
    gone: mpsc::UnboundedSender<u64>,
    /// The edge ended the stream (its REMOVE_CONNECT, or the session is gone): nothing is sent
    /// back. Upstream's edge may panic on a REMOVE_CONNECT for a connection it is deleting.
    edge_done: bool,
    /// The stream ended because the session did (the tunnel was lost), not by the edge's
    /// REMOVE_CONNECT: the answer is incomplete.
    lost: bool,
    /// The session's stop token: cancelled when the session ends.
    pub session: CancellationToken,
    /// Counted in `kubeedge_cloudstream_streams` while it lives.
    _counted: Counted,
}

impl Stream {
    /// The edge's next DATA; `None` once the edge ended the stream.
    pub async fn next_data(&mut self) -> Option<Bytes> {
        if self.edge_done {
            return None;
        }
        match self.from_edge.recv().await {
            Some(m) if m.kind == MessageType::Data => Some(m.data),
            end => {
                self.edge_done = true;
                self.lost = end.is_none();
                None
            }
        }
    }

    /// Whether the stream ended with its tunnel session (after [`Stream::next_data`] returned
    /// `None`): what the caller got is cut short.
    pub fn lost(&self) -> bool {
        self.lost
    }
}

impl Stream {
    /// Ends the stream from this side: REMOVE_CONNECT is sent (waiting up to 1 s for room in
    /// the outbox, where `Drop` can only try once) unless the edge ended it first.
    pub async fn close(self) {
        drop(self);
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // The API server's caller went away while the edge was still sending: tell the edge.
        if !self.edge_done {
            let _ = self.gone.send(self.id);
        }
    }
}

impl SessionHandle {
    /// Opens a stream of `kind` for `req` (its `MessID` is set here).
    pub async fn open(&self, kind: MessageType, req: ConnectRequest) -> Result<Stream, String> {
        let (reply, answer) = oneshot::channel();
        self.opens.send(Open { kind, req, reply }).await.map_err(|_| "the node's tunnel session ended".to_owned())?;
        answer.await.map_err(|_| "the node's tunnel session ended".to_owned())?
    }
}

async fn bounded(
    stop: &CancellationToken,
    write: impl Future<Output = Result<(), kubeedge_stream::ws::Error>>,
) -> Result<(), Option<String>> {
    tokio::select! {
        _ = stop.cancelled() => Err(None),
        r = tokio::time::timeout(WRITE_DEADLINE, write) => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Some(e.to_string())),
            Err(_) => Err(Some(format!("no write completed within {WRITE_DEADLINE:?}"))),
        },
    }
}

/// Starts a session on an upgraded tunnel; its tasks run on `spawner` and end when the tunnel
/// does or `handle.stop` is cancelled. `ended` is called with the reason at the end.
pub fn start<R, W>(
    mut reader: FrameReader<R>,
    mut writer: FrameWriter<W>,
    stop: CancellationToken,
    spawner: &Spawner,
    metrics: &StreamMetrics,
    ended: impl FnOnce(String) + Send + 'static,
) -> SessionHandle
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (opens_tx, mut opens) = mpsc::channel::<Open>(64);
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(OUTBOX);
    let (pong_tx, mut pong_rx) = mpsc::channel::<Bytes>(4);
    let (in_tx, mut in_rx) = mpsc::channel::<Message>(64);
    let (end_tx, mut end_rx) = mpsc::channel::<String>(2);
    let tasks = TaskTracker::new();

    let (write_stop, write_end) = (stop.clone(), end_tx.clone());
    spawner.spawn(tasks.track_future(async move {
        // Our own pings: the edge hears from us every PING_EVERY even while the reader waits
        // for a slow stream (pongs answer only what the reader has read).
        let mut ping = tokio::time::interval(PING_EVERY);
        let failed = loop {
            let r = tokio::select! {
                _ = write_stop.cancelled() => break None,
                m = out_rx.recv() => match m {
                    Some(m) => bounded(&write_stop, writer.text(&m.encode())).await,
                    None => break None,
                },
                Some(p) = pong_rx.recv() => bounded(&write_stop, writer.pong(&p)).await,
                _ = ping.tick() => bounded(&write_stop, writer.ping(b"ping you")).await,
            };
            match r {
                Ok(()) => {}
                Err(None) => break None,
                Err(Some(e)) => break Some(e),
            }
        };
        match failed {
            Some(e) => {
                let _ = write_end.try_send(format!("writing: {e}"));
                write_stop.cancel();
            }
            None => {
                let _ = tokio::time::timeout(Duration::from_secs(1), writer.close(1000, "")).await;
            }
        }
    }));

    let (read_stop, read_end) = (stop.clone(), end_tx);
    spawner.spawn(tasks.track_future(async move {
        let mut malformed = kubeedge_telemetry::LogLimiter::new(Duration::from_secs(10));
        let why = loop {
            let next = tokio::select! {
                _ = read_stop.cancelled() => return,
                r = tokio::time::timeout(SILENCE, reader.next()) => r,
            };
            match next {
                Err(_) => break format!("nothing from the edge for {SILENCE:?}"),
                Ok(Err(e)) => break format!("reading: {e}"),
                Ok(Ok(None)) => break "the edge closed the connection".to_owned(),
                Ok(Ok(Some(Frame::Close(code, reason)))) => {
                    break format!("the edge closed the tunnel ({code:?} {reason:?})");
                }
                Ok(Ok(Some(Frame::Ping(p)))) => {
                    let _ = pong_tx.try_send(p);
                }
                Ok(Ok(Some(Frame::Pong(_)))) => {}
                Ok(Ok(Some(Frame::Message(bytes)))) => match Message::decode(bytes) {
                    Ok(m) => tokio::select! {
                        _ = read_stop.cancelled() => return,
                        r = in_tx.send(m) => if r.is_err() { return },
                    },
                    Err(e) => {
                        if let Some(held_back) = malformed.admit() {
                            warn!(error = %e, held_back, "Dropping a malformed tunnel message (warning at most every 10 s).");
                        }
                    }
                },
            }
        };
        let _ = read_end.try_send(why);
        read_stop.cancel();
    }));

    let session_stop = stop.clone();
    let (session_count, stream_gauge) = (Counted::new(&metrics.sessions), metrics.streams.clone());
    let (gone_tx, mut gone_rx) = mpsc::unbounded_channel::<u64>();
    spawner.spawn(async move {
        let mut streams: HashMap<u64, mpsc::Sender<Message>> = HashMap::new();
        let mut next_id: u64 = 1;
        let why = loop {
            tokio::select! {
                biased;
                _ = session_stop.cancelled() => break end_rx.try_recv().unwrap_or_else(|_| "the session was stopped".into()),
                Some(open) = opens.recv() => {
                    // Streams whose caller is gone (their REMOVE_CONNECT may have been lost,
                    // or the edge never answered) are forgotten here.
                    streams.retain(|_, tx| !tx.is_closed());
                    if streams.len() >= MAX_STREAMS {
                        let _ = open.reply.send(Err(format!("{MAX_STREAMS} streams are open on this node's tunnel")));
                        continue;
                    }
                    let id = next_id;
                    next_id += 1;
                    let mut req = open.req;
                    req.mess_id = id;
                    let payload = match serde_json::to_vec(&req) {
                        Ok(p) => p,
                        Err(e) => {
                            let _ = open.reply.send(Err(e.to_string()));
                            continue;
                        }
                    };
                    let (tx, rx) = mpsc::channel(STREAM_INBOX);
                    let sent = tokio::select! {
                        _ = session_stop.cancelled() => continue,
                        r = out_tx.send(Message::new(id, open.kind, payload)) => r,
                    };
                    if sent.is_err() {
                        let _ = open.reply.send(Err("the node's tunnel session ended".into()));
                        continue;
                    }
                    streams.insert(id, tx);
                    debug!(id, kind = open.kind.as_str(), path = %req.url.path, "Stream opened.");
                    let stream = Stream {
                        id,
                        from_edge: rx,
                        to_edge: out_tx.clone(),
                        gone: gone_tx.clone(),
                        edge_done: false,
                        lost: false,
                        session: session_stop.clone(),
                        _counted: Counted::new(&stream_gauge),
                    };
                    let _ = open.reply.send(Ok(stream));
                }
                Some(id) = gone_rx.recv() => {
                    // The caller left before the edge ended the stream.
                    streams.remove(&id);
                    let remove = Message::new(id, MessageType::RemoveConnect, Bytes::new());
                    tokio::select! {
                        _ = session_stop.cancelled() => {}
                        _ = out_tx.send(remove) => {}
                    }
                }
                Some(m) = in_rx.recv() => {
                    let id = m.connect_id;
                    match m.kind {
                        MessageType::Data | MessageType::RemoveConnect => {
                            let remove = m.kind == MessageType::RemoveConnect;
                            if let Some(tx) = streams.get(&id) {
                                let sent = tokio::select! {
                                    _ = session_stop.cancelled() => continue,
                                    r = tokio::time::timeout(STREAM_STALL, tx.send(m)) => r,
                                };
                                match sent {
                                    Ok(Ok(())) if !remove => {}
                                    Ok(_) => { streams.remove(&id); }
                                    Err(_) => {
                                        warn!(id, "A stream took nothing from the tunnel for {STREAM_STALL:?}; closing it.");
                                        streams.remove(&id);
                                        let _ = out_tx.try_send(Message::new(id, MessageType::RemoveConnect, Bytes::new()));
                                    }
                                }
                            } else {
                                debug!(id, kind = m.kind.as_str(), "A message for no open stream; dropped.");
                            }
                        }
                        other => debug!(id, kind = other.as_str(), "Ignoring an unexpected message from the edge."),
                    }
                }
            }
        };
        session_stop.cancel();
        drop((streams, in_rx, opens, end_rx));
        tasks.close();
        tasks.wait().await;
        drop(session_count);
        ended(why);
    });
    SessionHandle { opens: opens_tx, stop }
}
