//! Registry, supervisor, restart backoff and shutdown.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::FutureExt;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, info_span, warn};

use crate::bus::{Bus, CHANNEL_CAPACITY, Endpoint, Inner, ModuleStats};
use crate::module::{Module, ModuleContext};

/// When the supervisor restarts a module.
#[derive(Debug, Clone, PartialEq)]
pub struct RestartPolicy {
    /// Restart after an error or a panic (upstream `OnFailure`).
    pub on_failure: bool,
    /// Restart after a clean return that was not asked for (upstream `Always`).
    pub on_exit: bool,
    /// The first wait before a restart (upstream `IntervalSecond`, default 1 s).
    pub initial_backoff: Duration,
    /// The growth of the wait per consecutive failure (upstream `IntervalTimeGrowthRate`).
    pub factor: f64,
    /// The longest wait (upstream `RestartIntervalLimit`, default 30 s).
    pub max_backoff: Duration,
    /// A module that ran this long since its last start counts as healthy again: its backoff
    /// starts over.
    pub stable_after: Duration,
    /// Give up after this many consecutive restarts (`None`: never give up).
    pub max_restarts: Option<u32>,
}

impl Default for RestartPolicy {
    /// Restart on failure: 1 s, ×2, at most 30 s, reset after 60 s of health.
    fn default() -> Self {
        Self {
            on_failure: true,
            on_exit: false,
            initial_backoff: Duration::from_secs(1),
            factor: 2.0,
            max_backoff: Duration::from_secs(30),
            stable_after: Duration::from_secs(60),
            max_restarts: None,
        }
    }
}

impl RestartPolicy {
    /// Never restart (upstream's cloud modules).
    pub fn never() -> Self {
        Self { on_failure: false, on_exit: false, ..Self::default() }
    }

    /// The wait before restart number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.factor.max(1.0).powi(attempt.saturating_sub(1).min(64) as i32);
        let secs = (self.initial_backoff.as_secs_f64() * exp).min(self.max_backoff.as_secs_f64());
        Duration::from_secs_f64(secs.max(0.0))
    }
}

/// Where a module is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleState {
    /// `run` is executing.
    Running,
    /// Waiting to be restarted after a failure.
    BackingOff,
    /// Returned and will not run again.
    Stopped,
    /// Failed and will not run again (restarts exhausted or not allowed).
    Failed,
}

/// The modules of a daemon before they start.
#[derive(Default)]
pub struct Registry {
    modules: Vec<Box<dyn Module>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an enabled module. Disabled modules are simply not registered.
    ///
    /// # Errors
    /// Refuses a second module with the same name.
    pub fn register(&mut self, module: Box<dyn Module>) -> Result<(), crate::BusError> {
        if self.modules.iter().any(|m| m.name() == module.name()) {
            return Err(crate::BusError::DuplicateModule(module.name().to_owned()));
        }
        self.modules.push(module);
        Ok(())
    }

    /// Prepares every module ([`Module::prepare`]), in registration order.
    ///
    /// # Errors
    /// The first module that cannot be prepared, and why.
    pub async fn prepare(&mut self) -> Result<(), (&'static str, crate::ModuleError)> {
        for m in &mut self.modules {
            let name = m.name();
            m.prepare().await.map_err(|e| (name, e))?;
        }
        Ok(())
    }

    /// Names of the registered modules, in registration order.
    pub fn names(&self) -> Vec<&'static str> {
        self.modules.iter().map(|m| m.name()).collect()
    }

    /// Builds the bus and starts every module under a supervisor.
    pub fn start(self, policy: RestartPolicy) -> Supervisor {
        let mut endpoints = HashMap::new();
        let mut prepared = Vec::new();
        for module in self.modules {
            let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
            let stats = Arc::new(ModuleStats::default());
            endpoints.insert(module.name(), Endpoint { group: module.group(), tx, stats: stats.clone() });
            prepared.push((module, rx, stats));
        }
        let bus = Bus { inner: Arc::new(Inner::new(endpoints)), from: None };
        let token = CancellationToken::new();
        let tracker = TaskTracker::new();
        let states: Arc<Mutex<HashMap<&'static str, ModuleState>>> = Arc::default();
        for (module, inbox, stats) in prepared {
            let name = module.name();
            let ctx = ModuleContext::new(
                name,
                module.group(),
                bus.for_module(stats.clone()),
                inbox,
                token.child_token(),
                stats.clone(),
            );
            states.lock().insert(name, ModuleState::Running);
            let task = supervise(module, ctx, policy.clone(), stats, states.clone());
            tracker.spawn(task.instrument(info_span!("module", module = name)));
        }
        tracker.close();
        Supervisor { bus, token, tracker, states }
    }
}

async fn supervise(
    mut module: Box<dyn Module>,
    mut ctx: ModuleContext,
    policy: RestartPolicy,
    stats: Arc<ModuleStats>,
    states: Arc<Mutex<HashMap<&'static str, ModuleState>>>,
) {
    let name = module.name();
    let set = |s| {
        states.lock().insert(name, s);
    };
    let mut attempt = 0u32;
    info!("Module started.");
    loop {
        let started = Instant::now();
        set(ModuleState::Running);
        // A panic in one of the module's tasks fails the module as a panic in `run` would.
        let task_panicked = CancellationToken::new();
        *ctx.spawner.panicked.lock() = task_panicked.clone();
        ctx.spawner.tracker().reopen();
        let outcome = tokio::select! {
            o = AssertUnwindSafe(module.run(&mut ctx)).catch_unwind() => o,
            () = task_panicked.cancelled() => Ok(Err("one of the module's tasks panicked".into())),
        };
        let shutting_down = ctx.shutdown().is_cancelled();
        // The module's tasks end with it (they watch its tokens); shutdown waits for them (a
        // module whose tasks do not end is named as not stopped), a restart a little while.
        ctx.spawner.tracker().close();
        if shutting_down {
            ctx.spawner.tracker().wait().await;
        } else if tokio::time::timeout(TASKS_AFTER_RUN, ctx.spawner.tracker().wait()).await.is_err() {
            warn!(tasks = ctx.spawner.len(), "Tasks of the module are still running after it returned.");
        }
        let failed = match outcome {
            Ok(Ok(())) if shutting_down => {
                info!("Module stopped.");
                break set(ModuleState::Stopped);
            }
            Ok(Ok(())) => {
                if !policy.on_exit {
                    info!("Module finished.");
                    break set(ModuleState::Stopped);
                }
                warn!("Module returned unexpectedly.");
                false
            }
            Ok(Err(e)) => {
                error!(error = %e, "Module failed.");
                true
            }
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_owned());
                error!(panic = %what, "Module panicked.");
                true
            }
        };
        if shutting_down {
            break set(if failed { ModuleState::Failed } else { ModuleState::Stopped });
        }
        if (failed && !policy.on_failure) || policy.max_restarts.is_some_and(|max| attempt >= max) {
            error!("Module will not be restarted.");
            break set(ModuleState::Failed);
        }
        if started.elapsed() >= policy.stable_after {
            attempt = 0;
        }
        attempt += 1;
        let wait = policy.backoff(attempt);
        warn!(retry_in = ?wait, attempt, "Restarting module.");
        set(ModuleState::BackingOff);
        tokio::select! {
            _ = ctx.shutdown().cancelled() => break set(ModuleState::Stopped),
            _ = tokio::time::sleep(wait) => {}
        }
        stats.restarts.fetch_add(1, Ordering::Relaxed);
    }
}

/// How long a module's tasks get to end after its `run` returned, before a restart.
const TASKS_AFTER_RUN: Duration = Duration::from_secs(10);

/// What happened at shutdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Modules that had not stopped by the deadline (empty on a clean shutdown).
    pub not_stopped: Vec<&'static str>,
}

impl ShutdownReport {
    /// Whether every module stopped in time.
    pub fn is_clean(&self) -> bool {
        self.not_stopped.is_empty()
    }
}

/// The modules' states, readable from anywhere (e.g. `/readyz`).
#[derive(Clone)]
pub struct Health {
    token: CancellationToken,
    states: Arc<Mutex<HashMap<&'static str, ModuleState>>>,
}

impl Health {
    /// The state of every module, sorted by name.
    pub fn states(&self) -> Vec<(&'static str, ModuleState)> {
        let mut v: Vec<_> = self.states.lock().iter().map(|(n, s)| (*n, *s)).collect();
        v.sort_unstable_by_key(|(n, _)| *n);
        v
    }

    /// Ready while not shutting down and every module is running.
    pub fn is_ready(&self) -> bool {
        !self.token.is_cancelled() && self.states.lock().values().all(|s| *s == ModuleState::Running)
    }
}

/// The running modules of a daemon.
pub struct Supervisor {
    bus: Bus,
    token: CancellationToken,
    tracker: TaskTracker,
    states: Arc<Mutex<HashMap<&'static str, ModuleState>>>,
}

impl Supervisor {
    /// A bus handle for code outside the modules (it counts no module's sends).
    pub fn bus(&self) -> Bus {
        self.bus.clone()
    }

    /// The state of every module, sorted by name.
    pub fn states(&self) -> Vec<(&'static str, ModuleState)> {
        self.health().states()
    }

    /// Ready while not shutting down and every module is running.
    pub fn is_ready(&self) -> bool {
        self.health().is_ready()
    }

    /// A cheap handle on the modules' states, for health endpoints; outlives the supervisor.
    pub fn health(&self) -> Health {
        Health { token: self.token.clone(), states: self.states.clone() }
    }

    /// A token cancelled when shutdown starts.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Stops every module: cancels the shutdown token, fails pending requests, and waits up to
    /// `grace` for the modules to return. Modules still running at the deadline are named in an
    /// error log line and in the report (their tasks are left to the runtime's teardown).
    pub async fn shutdown(self, grace: Duration) -> ShutdownReport {
        info!(grace = ?grace, "Stopping modules.");
        self.token.cancel();
        self.bus.inner.close_waiters();
        if tokio::time::timeout(grace, self.tracker.wait()).await.is_ok() {
            info!("All modules stopped.");
            return ShutdownReport { not_stopped: Vec::new() };
        }
        let mut not_stopped: Vec<_> = self
            .states
            .lock()
            .iter()
            .filter(|(_, s)| matches!(s, ModuleState::Running | ModuleState::BackingOff))
            .map(|(n, _)| *n)
            .collect();
        not_stopped.sort_unstable();
        error!(modules = ?not_stopped, "Shutdown deadline exceeded; these modules did not stop.");
        ShutdownReport { not_stopped }
    }
}
