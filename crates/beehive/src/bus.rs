//! The bus: module inboxes, groups, and request/response correlation.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kubeedge_model::Message;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

/// Capacity of every module inbox, as upstream (a buffered Go channel of 1024).
pub const CHANNEL_CAPACITY: usize = 1024;

/// The `send_sync` timeout used when the caller passes zero, as upstream.
pub const DEFAULT_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the bus could not deliver a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// No module of that name is registered (it may be disabled).
    #[error("no module named {0:?} is registered")]
    UnknownModule(String),
    /// No module of that group is registered.
    #[error("no module in group {0:?} is registered")]
    UnknownGroup(String),
    /// The destination's inbox is full (only from `try_send`).
    #[error("the inbox of module {0:?} is full")]
    Full(String),
    /// The destination has stopped, or the bus is shutting down.
    #[error("module {0:?} is not running")]
    Closed(String),
    /// No reply arrived in time.
    #[error("no reply to message {msg_id} within {timeout:?} ({received} of {expected} replies)")]
    Timeout {
        /// The request's id.
        msg_id: String,
        /// The timeout in force.
        timeout: Duration,
        /// Replies that did arrive.
        received: usize,
        /// Replies expected.
        expected: usize,
    },
    /// A module with this name is already registered.
    #[error("a module named {0:?} is already registered")]
    DuplicateModule(String),
    /// A request with the same `msg_id` is already waiting for its reply.
    #[error("a request with msg_id {0} is already waiting for a reply")]
    DuplicateRequest(String),
}

/// Counters of one module's traffic on the bus.
#[derive(Debug, Default)]
pub struct ModuleStats {
    /// Messages this module sent (through its context's bus handle).
    pub sent: AtomicU64,
    /// Messages this module took from its inbox.
    pub received: AtomicU64,
    /// Messages for this module that were dropped (inbox full on `try_send`, or closed).
    pub dropped: AtomicU64,
    /// Times the supervisor restarted this module.
    pub restarts: AtomicU64,
}

/// A snapshot of one module's counters, for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Module name.
    pub module: &'static str,
    /// Module group.
    pub group: &'static str,
    /// Messages sent by the module.
    pub sent: u64,
    /// Messages received by the module.
    pub received: u64,
    /// Messages for the module that were dropped.
    pub dropped: u64,
    /// Restarts of the module.
    pub restarts: u64,
    /// Messages waiting in its inbox now.
    pub queue_depth: usize,
}

pub(crate) struct Endpoint {
    pub(crate) group: &'static str,
    pub(crate) tx: mpsc::Sender<Message>,
    pub(crate) stats: Arc<ModuleStats>,
}

enum Waiter {
    One(oneshot::Sender<Message>),
    Many(mpsc::Sender<Message>),
}

pub(crate) struct Inner {
    pub(crate) modules: HashMap<&'static str, Endpoint>,
    groups: HashMap<&'static str, Vec<&'static str>>,
    /// Requests waiting for their reply, by request `msg_id`. Held only for map operations,
    /// never across an await.
    waiters: Mutex<HashMap<String, Waiter>>,
    unanswered_replies: AtomicU64,
}

impl Inner {
    pub(crate) fn new(modules: HashMap<&'static str, Endpoint>) -> Self {
        let mut groups: HashMap<&'static str, Vec<&'static str>> = HashMap::new();
        for (name, ep) in &modules {
            groups.entry(ep.group).or_default().push(name);
        }
        for members in groups.values_mut() {
            members.sort_unstable();
        }
        Self { modules, groups, waiters: Mutex::new(HashMap::new()), unanswered_replies: AtomicU64::new(0) }
    }

    /// Fails every pending request (their callers get `Closed`): used at shutdown.
    pub(crate) fn close_waiters(&self) {
        self.waiters.lock().clear();
    }
}

/// Removes a waiter when the request finishes in any way, including being cancelled.
struct WaiterGuard<'a> {
    inner: &'a Inner,
    id: String,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.inner.waiters.lock().remove(&self.id);
    }
}

/// A reply expected through [`Bus::send_resp`] (see [`Bus::expect_reply`]).
pub struct PendingReply {
    inner: Arc<Inner>,
    id: String,
    rx: oneshot::Receiver<Message>,
}

impl PendingReply {
    /// Waits up to `timeout` for the reply.
    pub async fn wait(mut self, timeout: Duration) -> Result<Message, BusError> {
        match tokio::time::timeout(timeout, &mut self.rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(BusError::Closed("bus".to_owned())),
            Err(_) => Err(BusError::Timeout { msg_id: self.id.clone(), timeout, received: 0, expected: 1 }),
        }
    }
}

impl Drop for PendingReply {
    fn drop(&mut self) {
        self.inner.waiters.lock().remove(&self.id);
    }
}

/// A handle on the bus. Cheap to clone. A handle given to a module counts that module's sends.
#[derive(Clone)]
pub struct Bus {
    pub(crate) inner: Arc<Inner>,
    pub(crate) from: Option<Arc<ModuleStats>>,
}

impl Bus {
    pub(crate) fn for_module(&self, stats: Arc<ModuleStats>) -> Self {
        Self { inner: self.inner.clone(), from: Some(stats) }
    }

    fn endpoint(&self, module: &str) -> Result<&Endpoint, BusError> {
        self.inner.modules.get(module).ok_or_else(|| {
            warn!(module, "Dropped message for an unknown module.");
            BusError::UnknownModule(module.to_owned())
        })
    }

    fn count_sent(&self) {
        if let Some(stats) = &self.from {
            stats.sent.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends to a module, waiting while its inbox is full (backpressure, as upstream's blocking
    /// channel send). Fails if the module is unknown or has stopped.
    pub async fn send(&self, module: &str, msg: Message) -> Result<(), BusError> {
        let ep = self.endpoint(module)?;
        match ep.tx.send(msg).await {
            Ok(()) => {
                self.count_sent();
                Ok(())
            }
            Err(_) => {
                ep.stats.dropped.fetch_add(1, Ordering::Relaxed);
                Err(BusError::Closed(module.to_owned()))
            }
        }
    }

    /// Sends to a module without waiting: a full inbox drops the message and counts it.
    pub fn try_send(&self, module: &str, msg: Message) -> Result<(), BusError> {
        let ep = self.endpoint(module)?;
        match ep.tx.try_send(msg) {
            Ok(()) => {
                self.count_sent();
                Ok(())
            }
            Err(e) => {
                ep.stats.dropped.fetch_add(1, Ordering::Relaxed);
                match e {
                    mpsc::error::TrySendError::Full(m) => {
                        warn!(module, msg.id = %m.header.id, "Dropped message: inbox full.");
                        Err(BusError::Full(module.to_owned()))
                    }
                    mpsc::error::TrySendError::Closed(_) => Err(BusError::Closed(module.to_owned())),
                }
            }
        }
    }

    /// Sends a request and waits for its reply (a message whose `parent_msg_id` is the
    /// request's `msg_id`, delivered through [`Bus::send_resp`]). The timeout covers the send
    /// too; zero means [`DEFAULT_SYNC_TIMEOUT`].
    pub async fn send_sync(&self, module: &str, mut msg: Message, timeout: Duration) -> Result<Message, BusError> {
        let timeout = if timeout.is_zero() { DEFAULT_SYNC_TIMEOUT } else { timeout };
        msg.header.sync = true;
        let id = msg.header.id.clone();
        let (tx, rx) = oneshot::channel();
        let _guard = self.register(&id, Waiter::One(tx))?;
        let exchange = async {
            self.send(module, msg).await?;
            rx.await.map_err(|_| BusError::Closed(module.to_owned()))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(BusError::Timeout { msg_id: id, timeout, received: 0, expected: 1 }),
        }
    }

    /// Registers a waiter for the reply to `id` without sending anything: for a request that
    /// leaves the bus another way (the Router hands its calls to CloudHub's sessions itself, to
    /// learn at once whether the node is connected). The waiter goes when the [`PendingReply`]
    /// does.
    pub fn expect_reply(&self, id: &str) -> Result<PendingReply, BusError> {
        let (tx, rx) = oneshot::channel();
        let mut waiters = self.inner.waiters.lock();
        if waiters.contains_key(id) {
            return Err(BusError::DuplicateRequest(id.to_owned()));
        }
        waiters.insert(id.to_owned(), Waiter::One(tx));
        Ok(PendingReply { inner: self.inner.clone(), id: id.to_owned(), rx })
    }

    /// Delivers a copy to every module of `group`. Members with room get it at once; the others
    /// are waited for concurrently, so one slow member does not hold up the rest. Returns how
    /// many members got it.
    pub async fn send_to_group(&self, group: &str, msg: Message) -> Result<usize, BusError> {
        let members = self.members(group)?;
        let mut waiting = Vec::new();
        let mut delivered = 0;
        // The last member gets the message itself: a group of one costs no copy.
        let mut msg = Some(msg);
        for (i, &member) in members.iter().enumerate() {
            let ep = &self.inner.modules[member];
            let Some(copy) = (if i + 1 == members.len() { msg.take() } else { msg.clone() }) else { break };
            match ep.tx.try_send(copy) {
                Ok(()) => {
                    self.count_sent();
                    delivered += 1;
                }
                Err(mpsc::error::TrySendError::Full(m)) => waiting.push(self.send(member, m)),
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    ep.stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        delivered += futures::future::join_all(waiting).await.into_iter().filter(Result::is_ok).count();
        Ok(delivered)
    }

    /// Sends a request to every member of `group` and waits for one reply from each.
    pub async fn send_to_group_sync(
        &self,
        group: &str,
        mut msg: Message,
        timeout: Duration,
    ) -> Result<Vec<Message>, BusError> {
        let timeout = if timeout.is_zero() { DEFAULT_SYNC_TIMEOUT } else { timeout };
        let expected = self.members(group)?.len();
        msg.header.sync = true;
        let id = msg.header.id.clone();
        let (tx, mut rx) = mpsc::channel(expected);
        let _guard = self.register(&id, Waiter::Many(tx))?;
        let mut replies = Vec::with_capacity(expected);
        let exchange = async {
            self.send_to_group(group, msg).await?;
            while replies.len() < expected {
                match rx.recv().await {
                    Some(reply) => replies.push(reply),
                    None => return Err(BusError::Closed(group.to_owned())),
                }
            }
            Ok(())
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(())) => Ok(replies),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(BusError::Timeout { msg_id: id, timeout, received: replies.len(), expected }),
        }
    }

    /// Hands a reply to the request waiting for it. A reply nobody waits for is logged and
    /// dropped; returns whether it was delivered.
    pub fn send_resp(&self, resp: Message) -> bool {
        match self.try_send_resp(resp) {
            Ok(()) => true,
            Err(resp) => {
                self.inner.unanswered_replies.fetch_add(1, Ordering::Relaxed);
                debug!(msg.id = %resp.header.id, msg.parent_id = %resp.header.parent_id,
                    "Dropped reply: no request is waiting for it.");
                false
            }
        }
    }

    /// Like [`Bus::send_resp`], but gives the reply back when nobody waits for it, so the
    /// caller can route it elsewhere (EdgeHub does this with cloud messages).
    #[allow(clippy::result_large_err)] // Handing the message back is the point; no copy is made.
    pub fn try_send_resp(&self, resp: Message) -> Result<(), Message> {
        let mut waiters = self.inner.waiters.lock();
        let Some(waiter) = waiters.get(&resp.header.parent_id) else {
            return Err(resp);
        };
        match waiter {
            Waiter::One(_) => {
                let Some(Waiter::One(tx)) = waiters.remove(&resp.header.parent_id) else {
                    return Err(resp);
                };
                drop(waiters);
                tx.send(resp)
            }
            Waiter::Many(tx) => {
                let tx = tx.clone();
                drop(waiters);
                tx.try_send(resp).map_err(|e| match e {
                    mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m) => m,
                })
            }
        }
    }

    fn register(&self, id: &str, waiter: Waiter) -> Result<WaiterGuard<'_>, BusError> {
        let mut waiters = self.inner.waiters.lock();
        if waiters.contains_key(id) {
            return Err(BusError::DuplicateRequest(id.to_owned()));
        }
        waiters.insert(id.to_owned(), waiter);
        Ok(WaiterGuard { inner: &self.inner, id: id.to_owned() })
    }

    fn members(&self, group: &str) -> Result<&[&'static str], BusError> {
        match self.inner.groups.get(group) {
            Some(m) if !m.is_empty() => Ok(m),
            _ => {
                warn!(group, "Dropped message for an unknown group.");
                Err(BusError::UnknownGroup(group.to_owned()))
            }
        }
    }

    /// Whether a module of that name is registered.
    pub fn has_module(&self, module: &str) -> bool {
        self.inner.modules.contains_key(module)
    }

    /// The members of a group (empty when unknown).
    pub fn group_members(&self, group: &str) -> Vec<&'static str> {
        self.inner.groups.get(group).cloned().unwrap_or_default()
    }

    /// How many modules `group` has (without a copy of their names: for per-message checks).
    pub fn group_len(&self, group: &str) -> usize {
        self.inner.groups.get(group).map_or(0, Vec::len)
    }

    /// Gives `msg` to the only member of `group` if its inbox has room now. Otherwise (a group
    /// of several or none, a full or closed inbox) hands it back, nothing counted or logged:
    /// the caller then takes the waiting path ([`Bus::send_to_group`]).
    #[allow(clippy::result_large_err)] // Handing the message back is the point; no copy is made.
    pub fn try_send_to_sole(&self, group: &str, msg: Message) -> Result<(), Message> {
        let Some(&[member]) = self.inner.groups.get(group).map(Vec::as_slice) else { return Err(msg) };
        let Some(ep) = self.inner.modules.get(member) else { return Err(msg) };
        match ep.tx.try_send(msg) {
            Ok(()) => {
                self.count_sent();
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m)) => Err(m),
        }
    }

    /// Requests currently waiting for a reply.
    pub fn pending_requests(&self) -> usize {
        self.inner.waiters.lock().len()
    }

    /// Replies that arrived for no waiting request.
    pub fn unanswered_replies(&self) -> u64 {
        self.inner.unanswered_replies.load(Ordering::Relaxed)
    }

    /// Counters of every module, sorted by name.
    pub fn stats(&self) -> Vec<StatsSnapshot> {
        let mut out: Vec<_> = self
            .inner
            .modules
            .iter()
            .map(|(name, ep)| StatsSnapshot {
                module: name,
                group: ep.group,
                sent: ep.stats.sent.load(Ordering::Relaxed),
                received: ep.stats.received.load(Ordering::Relaxed),
                dropped: ep.stats.dropped.load(Ordering::Relaxed),
                restarts: ep.stats.restarts.load(Ordering::Relaxed),
                queue_depth: ep.tx.max_capacity() - ep.tx.capacity(),
            })
            .collect();
        out.sort_by_key(|s| s.module);
        out
    }
}
