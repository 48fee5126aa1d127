//! The module trait and the context a module runs with.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::FutureExt;
use kubeedge_model::Message;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::bus::{Bus, ModuleStats};

/// A boxed, sendable future (what [`Module::run`] returns).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The error a module's run ends with; the supervisor logs it and applies its restart policy.
pub type ModuleError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A module of a daemon.
///
/// `run` is called by the supervisor and should return only on shutdown (`Ok`) or failure
/// (`Err`). After a failure, or a panic, the supervisor may call `run` again on the same value
/// with the same context, so messages already queued in the inbox are not lost.
pub trait Module: Send + 'static {
    /// The module name, as upstream (`websocket`, `metamanager`, `cloudhub`…).
    fn name(&self) -> &'static str;
    /// The group, as upstream (`hub`, `meta`, `cloudhub`…).
    fn group(&self) -> &'static str;
    /// Runs until shutdown is requested through the context, or until failure.
    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, Result<(), ModuleError>>;

    /// Called once before any module runs, to take what must not fail later: listening
    /// sockets above all. An error here stops the daemon at start (exit 1) with the message,
    /// which names the port, instead of a module failing and restarting over and over.
    fn prepare(&mut self) -> BoxFuture<'_, Result<(), ModuleError>> {
        Box::pin(async { Ok(()) })
    }
}

/// What a module runs with: its inbox, a bus handle, the shutdown token, and a place to
/// spawn its tasks.
pub struct ModuleContext {
    name: &'static str,
    group: &'static str,
    /// A bus handle that counts this module's sends.
    pub bus: Bus,
    inbox: mpsc::Receiver<Message>,
    shutdown: CancellationToken,
    stats: Arc<ModuleStats>,
    pub(crate) spawner: Spawner,
}

/// Spawns a module's tasks: tracked (the supervisor waits for them at shutdown), in the
/// module's tracing span, and a panic in one fails the module (the supervisor restarts it).
/// Cheap to clone, for the module's helpers.
#[derive(Clone)]
pub struct Spawner {
    tracker: TaskTracker,
    /// Cancelled when one of the tasks panicked.
    pub(crate) panicked: Arc<parking_lot::Mutex<CancellationToken>>,
}

impl Spawner {
    pub(crate) fn new() -> Self {
        Self { tracker: TaskTracker::new(), panicked: Arc::new(parking_lot::Mutex::new(CancellationToken::new())) }
    }

    /// Spawns `fut` as one of the module's tasks, in the caller's span.
    pub fn spawn<F>(&self, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let panicked = self.panicked.lock().clone();
        let fut = async move {
            match std::panic::AssertUnwindSafe(fut).catch_unwind().await {
                Ok(v) => v,
                Err(p) => {
                    panicked.cancel();
                    std::panic::resume_unwind(p)
                }
            }
        };
        self.tracker.spawn(fut.instrument(tracing::Span::current()))
    }

    /// How many of the module's tasks are running.
    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }

    pub(crate) fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }
}

impl ModuleContext {
    pub(crate) fn new(
        name: &'static str,
        group: &'static str,
        bus: Bus,
        inbox: mpsc::Receiver<Message>,
        shutdown: CancellationToken,
        stats: Arc<ModuleStats>,
    ) -> Self {
        Self { name, group, bus, inbox, shutdown, stats, spawner: Spawner::new() }
    }

    /// Spawns one of the module's tasks (see [`Spawner`]).
    pub fn spawn<F>(&self, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spawner.spawn(fut)
    }

    /// A handle for spawning the module's tasks from its helpers.
    pub fn spawner(&self) -> Spawner {
        self.spawner.clone()
    }

    /// The module's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The module's group.
    pub fn group(&self) -> &'static str {
        self.group
    }

    /// The next message for this module, or `None` once shutdown is requested (or the bus is
    /// gone). Cancel-safe: a message is never lost by dropping this future.
    pub async fn recv(&mut self) -> Option<Message> {
        let msg = tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => None,
            msg = self.inbox.recv() => msg,
        }?;
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        Some(msg)
    }

    /// A message already queued, without waiting (for draining the inbox on shutdown).
    pub fn try_recv(&mut self) -> Option<Message> {
        let msg = self.inbox.try_recv().ok()?;
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        Some(msg)
    }

    /// The shutdown token: cancelled when the daemon is stopping.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }
}
