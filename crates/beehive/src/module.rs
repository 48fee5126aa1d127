//! The module trait and the context a module runs with.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use kubeedge_model::Message;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

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

/// What a module runs with: its inbox, a bus handle, and the shutdown token.
pub struct ModuleContext {
    name: &'static str,
    group: &'static str,
    /// A bus handle that counts this module's sends.
    pub bus: Bus,
    inbox: mpsc::Receiver<Message>,
    shutdown: CancellationToken,
    stats: Arc<ModuleStats>,
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
        Self { name, group, bus, inbox, shutdown, stats }
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
