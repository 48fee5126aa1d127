//! The tunnel sessions by node: one task owns the table. A node has at most one session; a
//! new one replaces (and stops) the old, and a session that ends removes itself unless it was
//! already replaced. Lookups go by node name, or by the node's internal IP (what the API
//! server's requests for metrics carry in their `Host`).

use std::collections::HashMap;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::session::SessionHandle;

enum Cmd {
    Add { node: String, ip: String, generation: u64, handle: SessionHandle },
    Remove { node: String, generation: u64 },
    Get { key: Key, reply: oneshot::Sender<Option<SessionHandle>> },
    Count { reply: oneshot::Sender<usize> },
}

/// How a session is looked up.
#[derive(Debug, Clone)]
pub enum Key {
    /// By node name.
    Node(String),
    /// By the node's internal IP.
    Ip(String),
}

/// The registry's handle.
#[derive(Clone)]
pub struct Registry(mpsc::Sender<Cmd>);

impl Registry {
    /// Starts the registry's task; it ends when every handle is dropped or at `stop`.
    pub fn start(stop: CancellationToken) -> (Self, impl Future<Output = ()> + Send) {
        let (tx, mut rx) = mpsc::channel::<Cmd>(256);
        let task = async move {
            let mut sessions: HashMap<String, (u64, String, SessionHandle)> = HashMap::new();
            loop {
                let cmd = tokio::select! {
                    _ = stop.cancelled() => break,
                    c = rx.recv() => match c { Some(c) => c, None => break },
                };
                match cmd {
                    Cmd::Add { node, ip, generation, handle } => {
                        // A session that already ended (its Remove may have come first).
                        if handle.stop.is_cancelled() {
                            continue;
                        }
                        if let Some((_, _, old)) = sessions.insert(node.clone(), (generation, ip.clone(), handle)) {
                            info!(node, "A new tunnel session replaces the node's previous one.");
                            old.stop.cancel();
                        }
                    }
                    Cmd::Remove { node, generation } => {
                        if sessions.get(&node).is_some_and(|(g, ..)| *g == generation) {
                            sessions.remove(&node);
                        }
                    }
                    Cmd::Get { key, reply } => {
                        let found = match &key {
                            Key::Node(n) => sessions.get(n).map(|(_, _, h)| h.clone()),
                            // Only an IP exactly one node claims: an empty or shared IP says nothing.
                            Key::Ip(ip) if !ip.is_empty() => {
                                let mut claims = sessions.values().filter(|(_, i, _)| i == ip);
                                match (claims.next(), claims.next()) {
                                    (Some((_, _, h)), None) => Some(h.clone()),
                                    _ => None,
                                }
                            }
                            Key::Ip(_) => None,
                        };
                        let _ = reply.send(found);
                    }
                    Cmd::Count { reply } => {
                        let _ = reply.send(sessions.len());
                    }
                }
            }
            for (_, _, h) in sessions.into_values() {
                h.stop.cancel();
            }
        };
        (Self(tx), task)
    }

    /// Registers `node`'s session (replacing any older one).
    pub async fn add(&self, node: String, ip: String, generation: u64, handle: SessionHandle) {
        let _ = self.0.send(Cmd::Add { node, ip, generation, handle }).await;
    }

    /// Forgets `node`'s session if it is still `generation`.
    pub async fn remove(&self, node: String, generation: u64) {
        let _ = self.0.send(Cmd::Remove { node, generation }).await;
    }

    /// The session for `key`.
    pub async fn get(&self, key: Key) -> Option<SessionHandle> {
        let (reply, answer) = oneshot::channel();
        self.0.send(Cmd::Get { key, reply }).await.ok()?;
        answer.await.ok().flatten()
    }

    /// How many nodes have a session.
    pub async fn count(&self) -> usize {
        let (reply, answer) = oneshot::channel();
        if self.0.send(Cmd::Count { reply }).await.is_err() {
            return 0;
        }
        answer.await.unwrap_or(0)
    }
}
