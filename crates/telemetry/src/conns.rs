//! Which of a server's connections are idle, so that idle ones cannot starve the rest (issue
//! #18: 300 idle connections delayed a kubelet-style `/healthz` by 57 s).
//!
//! A server registers every connection it accepts ([`Connections::register`]) and keeps the
//! [`Conn`] it gets for as long as the connection is open. A connection is
//!
//! - *fresh* from accept until its first request head is complete (a TLS or WebSocket
//!   handshake under way is fresh too);
//! - *busy* while a request is in flight: each request holds a [`Busy`] guard, which the server
//!   attaches to the response body, so a log follow or a watch is busy for as long as it
//!   streams, and an upgraded connection (exec, attach, port-forward) stays busy until it
//!   leaves the server ([`Busy::hand_over`]);
//! - *idle* between requests.
//!
//! The registry never touches a socket: it asks a connection's owner to close it by resolving
//! [`Conn::shed`]. It asks fresh and idle connections only, the one idle longest first:
//!
//! - at the cap, so that a new client is admitted at once rather than left in the backlog
//!   ([`Connections::admit`]);
//! - when `accept` fails for want of file descriptors ([`Connections::on_accept_error`]);
//! - on [`Connections::sweep`], a fresh connection older than the header timeout and an idle
//!   one past the idle timeout; from three quarters of the cap on, both get the shorter
//!   pressured idle timeout.
//!
//! Busy connections are never shed. The owner of a shed connection closes it at once when it
//! is still not busy ([`Conn::is_busy`]), or lets a request that started meanwhile finish.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tracing::{debug, warn};

use crate::LogLimiter;
use crate::accept::is_out_of_fds;

/// How long a new connection may take to complete its first request head (or handshake).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may sit idle between requests.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Both timeouts from three quarters of the cap on.
pub const PRESSURED_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a server should call [`Connections::sweep`].
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// While waiting for a slot with nothing idle to shed, how often to look again.
const ADMIT_RECHECK: Duration = Duration::from_millis(100);
/// Warnings about shedding, at most one per this.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// A server's connection cap and idle timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once (the server's semaphore has as many slots).
    pub cap: usize,
    /// See [`HEADER_TIMEOUT`].
    pub header_timeout: Duration,
    /// See [`IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
    /// See [`PRESSURED_IDLE_TIMEOUT`].
    pub pressured_idle_timeout: Duration,
}

impl Limits {
    /// The default timeouts with `cap`.
    pub const fn with_cap(cap: usize) -> Self {
        Self {
            cap,
            header_timeout: HEADER_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            pressured_idle_timeout: PRESSURED_IDLE_TIMEOUT,
        }
    }

    /// Whether `open` connections put the server under pressure (three quarters of the cap).
    fn pressured(&self, open: usize) -> bool {
        open.saturating_mul(4) >= self.cap.saturating_mul(3)
    }
}

/// Why a connection was shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShedReason {
    /// The server was at its cap and a new connection came.
    Cap,
    /// `accept` failed for want of file descriptors.
    OutOfFds,
    /// No complete request head (or handshake) within the header timeout.
    HeaderTimeout,
    /// Idle between requests past the idle timeout.
    IdleTimeout,
}

impl ShedReason {
    /// The reason as a log field value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cap => "cap",
            Self::OutOfFds => "out_of_fds",
            Self::HeaderTimeout => "header_timeout",
            Self::IdleTimeout => "idle_timeout",
        }
    }
}

/// Counts of a registry, for tests and diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Registered connections.
    pub open: usize,
    /// Of them, busy ones.
    pub busy: usize,
    /// Connections shed so far: at the cap, out of file descriptors, past the header timeout,
    /// past the idle timeout.
    pub shed: [u64; 4],
}

/// One server's registry of open connections; clones share it.
#[derive(Debug, Clone)]
pub struct Connections {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    server: &'static str,
    limits: Limits,
    /// Short critical sections only, never held across an await.
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    next_id: u64,
    conns: HashMap<u64, Entry>,
    shed: [u64; 4],
    /// Warnings about shedding at the cap or out of file descriptors.
    warn: LogLimiter,
}

#[derive(Debug)]
struct Entry {
    /// Requests in flight (their [`Busy`] guards).
    requests: u32,
    /// Upgraded: busy until unregistered.
    handed_over: bool,
    /// No request yet.
    fresh: bool,
    /// Accepted (fresh) or last request ended (idle).
    since: Instant,
    /// Resolved to ask the owner to close the connection.
    shed: CancellationToken,
}

impl Entry {
    fn busy(&self) -> bool {
        self.requests > 0 || self.handed_over
    }

    /// Fresh or idle, and not asked to close yet.
    fn sheddable(&self) -> bool {
        !self.busy() && !self.shed.is_cancelled()
    }
}

impl State {
    /// Asks the entry that has been idle (or fresh) longest to close; returns whether there
    /// was one. Ties go to the earlier connection.
    fn shed_oldest(&mut self, reason: ShedReason) -> bool {
        let oldest = self.conns.iter().filter(|(_, e)| e.sheddable()).min_by_key(|(id, e)| (e.since, **id));
        match oldest {
            Some((_, e)) => {
                e.shed.cancel();
                self.shed[reason as usize] += 1;
                true
            }
            None => false,
        }
    }

    /// Shed connections that have not closed yet and are still not busy: a slot is on its way.
    fn closing(&self) -> usize {
        self.conns.values().filter(|e| e.shed.is_cancelled() && !e.busy()).count()
    }
}

impl Connections {
    /// An empty registry for `server` (named in the logs).
    pub fn new(server: &'static str, limits: Limits) -> Self {
        let state = State { next_id: 0, conns: HashMap::new(), shed: [0; 4], warn: LogLimiter::new(WARN_EVERY) };
        Self { inner: Arc::new(Inner { server, limits, state: Mutex::new(state) }) }
    }

    /// The limits it applies.
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// Registers a connection just accepted (fresh); it stays registered until the [`Conn`]
    /// is dropped.
    pub fn register(&self) -> Conn {
        let shed = CancellationToken::new();
        let mut st = self.inner.state.lock();
        let id = st.next_id;
        st.next_id += 1;
        let entry = Entry { requests: 0, handed_over: false, fresh: true, since: Instant::now(), shed: shed.clone() };
        st.conns.insert(id, entry);
        Conn { id, inner: self.inner.clone(), shed }
    }

    /// Asks the connection idle (or fresh) longest to close, for `reason`; returns whether
    /// there was one. Busy connections are never chosen.
    pub fn shed_oldest_idle(&self, reason: ShedReason) -> bool {
        let (shed, open, held_back) = {
            let mut st = self.inner.state.lock();
            let shed = st.shed_oldest(reason);
            let held_back = if shed { st.warn.admit() } else { None };
            (shed, st.conns.len(), held_back)
        };
        if let Some(held_back) = held_back {
            warn!(
                server = self.inner.server,
                reason = reason.as_str(),
                open,
                held_back,
                "Closed the oldest idle connection to make room; warning at most every 10 s."
            );
        }
        shed
    }

    /// When `accept` failed with `error`: out of file descriptors (EMFILE, ENFILE), sheds the
    /// oldest idle connection so that a later accept can succeed. Returns whether it did.
    pub fn on_accept_error(&self, error: &std::io::Error) -> bool {
        is_out_of_fds(error) && self.shed_oldest_idle(ShedReason::OutOfFds)
    }

    /// A slot of `slots` (the server's cap) for a connection just accepted: at once when one
    /// is free; else the oldest idle connection is shed and the slot it frees taken. With none
    /// idle (all busy), waits for a slot, looking for idle ones again now and then. Cancel-safe.
    pub async fn admit(&self, slots: &Arc<Semaphore>) -> Result<OwnedSemaphorePermit, AcquireError> {
        loop {
            match slots.clone().try_acquire_owned() {
                Ok(permit) => return Ok(permit),
                Err(TryAcquireError::NoPermits) => {}
                // Let `acquire_owned` report the closed semaphore.
                Err(TryAcquireError::Closed) => return slots.clone().acquire_owned().await,
            }
            // One shed at a time: a connection already shed and not busy frees its slot in a
            // moment.
            let closing = self.inner.state.lock().closing();
            if closing == 0 {
                self.shed_oldest_idle(ShedReason::Cap);
            }
            tokio::select! {
                permit = slots.clone().acquire_owned() => return permit,
                () = tokio::time::sleep(ADMIT_RECHECK) => {}
            }
        }
    }

    /// Sheds fresh connections past the header timeout and idle ones past the idle timeout
    /// (both the pressured one from three quarters of the cap on). Returns how many.
    pub fn sweep(&self) -> usize {
        let limits = self.inner.limits;
        let now = Instant::now();
        let mut st = self.inner.state.lock();
        let pressured = limits.pressured(st.conns.len());
        let idle_timeout = if pressured { limits.pressured_idle_timeout } else { limits.idle_timeout };
        let header_timeout = limits.header_timeout.min(idle_timeout);
        let mut counts = [0u64; 4];
        for e in st.conns.values().filter(|e| e.sheddable()) {
            let (limit, reason) = if e.fresh {
                (header_timeout, ShedReason::HeaderTimeout)
            } else {
                (idle_timeout, ShedReason::IdleTimeout)
            };
            if now.saturating_duration_since(e.since) >= limit {
                e.shed.cancel();
                counts[reason as usize] += 1;
            }
        }
        let total: u64 = counts.iter().sum();
        for (sum, n) in st.shed.iter_mut().zip(counts) {
            *sum += n;
        }
        let open = st.conns.len();
        drop(st);
        if total > 0 {
            debug!(
                server = self.inner.server,
                open,
                pressured,
                header_timeout = counts[ShedReason::HeaderTimeout as usize],
                idle_timeout = counts[ShedReason::IdleTimeout as usize],
                "Closing connections past their header or idle timeout."
            );
        }
        usize::try_from(total).unwrap_or(usize::MAX)
    }

    /// Its counts now.
    pub fn stats(&self) -> Stats {
        let st = self.inner.state.lock();
        Stats { open: st.conns.len(), busy: st.conns.values().filter(|e| e.busy()).count(), shed: st.shed }
    }
}

// === impl Conn ===

/// A registered connection; dropping it unregisters the connection.
#[derive(Debug)]
pub struct Conn {
    id: u64,
    inner: Arc<Inner>,
    shed: CancellationToken,
}

impl Conn {
    /// A request head is complete: the connection is busy until the guard (and every other
    /// request's) is dropped.
    pub fn request(&self) -> Busy {
        if let Some(e) = self.inner.state.lock().conns.get_mut(&self.id) {
            e.requests += 1;
            e.fresh = false;
        }
        Busy { id: self.id, inner: self.inner.clone() }
    }

    /// Resolves once the registry asks for the connection to be closed.
    pub fn shed(&self) -> WaitForCancellationFuture<'_> {
        self.shed.cancelled()
    }

    /// Whether a request is in flight (or the connection was handed over).
    pub fn is_busy(&self) -> bool {
        self.inner.state.lock().conns.get(&self.id).is_some_and(Entry::busy)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.inner.state.lock().conns.remove(&self.id);
    }
}

/// A request in flight on a [`Conn`]; dropping it ends the request.
#[derive(Debug)]
pub struct Busy {
    id: u64,
    inner: Arc<Inner>,
}

impl Busy {
    /// The connection was handed over (an HTTP upgrade): busy until it is unregistered.
    pub fn hand_over(self) {
        if let Some(e) = self.inner.state.lock().conns.get_mut(&self.id) {
            e.handed_over = true;
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Some(e) = self.inner.state.lock().conns.get_mut(&self.id) {
            e.requests = e.requests.saturating_sub(1);
            if e.requests == 0 {
                e.since = Instant::now();
            }
        }
    }
}

/// A listener's accept loop with its registry, as every server of ours runs it: accept
/// (backing off on errors; out of file descriptors, the connection idle longest is shed),
/// sweep the registry now and then, and give each connection a slot of the cap before it is
/// served.
pub struct Acceptor {
    listener: tokio::net::TcpListener,
    slots: Arc<Semaphore>,
    registry: Connections,
    backoff: crate::AcceptBackoff,
    sweep: tokio::time::Interval,
}

impl Acceptor {
    /// An accept loop for `server` (its name in logs and counters) on `listener`.
    pub fn new(listener: tokio::net::TcpListener, server: &'static str, limits: Limits) -> Self {
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            listener,
            slots: Arc::new(Semaphore::new(limits.cap.max(1))),
            registry: Connections::new(server, limits),
            backoff: crate::AcceptBackoff::new(server),
            sweep,
        }
    }

    /// The registry each served connection registers with ([`Connections::register`]).
    pub fn registry(&self) -> &Connections {
        &self.registry
    }

    /// The next connection and its slot (held for as long as it is served); `None` once
    /// `stop` is cancelled. The connection is accepted first, then its slot taken: at the cap
    /// the connection idle longest makes room at once; with all busy, this waits for one to
    /// end. Not cancel-safe once a connection is accepted (dropped, it closes that
    /// connection): call it in a loop, not in a race.
    pub async fn next(
        &mut self,
        stop: &CancellationToken,
    ) -> Option<(tokio::net::TcpStream, std::net::SocketAddr, OwnedSemaphorePermit)> {
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => return None,
                _ = self.sweep.tick() => {
                    self.registry.sweep();
                    continue;
                }
                a = self.listener.accept() => a,
            };
            let (stream, peer) = match accepted {
                Ok(a) => {
                    self.backoff.succeeded();
                    a
                }
                Err(e) => {
                    self.registry.on_accept_error(&e);
                    self.backoff.failed(&e).await;
                    continue;
                }
            };
            let permit = tokio::select! {
                () = stop.cancelled() => return None,
                p = self.registry.admit(&self.slots) => p.ok()?,
            };
            return Some((stream, peer, permit));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(cap: usize) -> Connections {
        Connections::new("test", Limits::with_cap(cap))
    }

    fn is_shed(c: &Conn) -> bool {
        c.shed.is_cancelled()
    }

    #[tokio::test(start_paused = true)]
    async fn the_oldest_idle_is_shed_first_and_busy_never() {
        let r = registry(100);
        let a = r.register();
        tokio::time::advance(Duration::from_secs(1)).await;
        let b = r.register();
        tokio::time::advance(Duration::from_secs(1)).await;
        let c = r.register();
        // `a` is in a request (a watch, say); `b` had one that ended after `c` came.
        let watch = a.request();
        tokio::time::advance(Duration::from_secs(1)).await;
        drop(b.request());
        assert!(r.shed_oldest_idle(ShedReason::Cap));
        assert!(is_shed(&c) && !is_shed(&a) && !is_shed(&b), "fresh c has been waiting longest");
        assert!(r.shed_oldest_idle(ShedReason::Cap));
        assert!(is_shed(&b) && !is_shed(&a));
        assert!(!r.shed_oldest_idle(ShedReason::Cap), "only the busy one is left");
        assert!(!is_shed(&a) && a.is_busy());
        drop(watch);
        assert!(!a.is_busy());
        assert!(r.shed_oldest_idle(ShedReason::OutOfFds));
        assert!(is_shed(&a));
        assert_eq!(r.stats().shed, [2, 1, 0, 0]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_handed_over_connection_is_never_shed() {
        let r = registry(100);
        let exec = r.register();
        exec.request().hand_over();
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(!r.shed_oldest_idle(ShedReason::Cap));
        assert_eq!(r.sweep(), 0);
        assert_eq!(r.stats(), Stats { open: 1, busy: 1, shed: [0; 4] });
        drop(exec);
        assert_eq!(r.stats().open, 0, "dropping the Conn unregisters it");
    }

    #[tokio::test(start_paused = true)]
    async fn sweeps_close_slow_heads_and_long_idles() {
        let r = registry(100);
        let (fresh, idle, busy) = (r.register(), r.register(), r.register());
        drop(idle.request());
        let stream = busy.request();
        tokio::time::advance(HEADER_TIMEOUT - Duration::from_millis(1)).await;
        assert_eq!(r.sweep(), 0);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(r.sweep(), 1);
        assert!(is_shed(&fresh) && !is_shed(&idle));
        tokio::time::advance(IDLE_TIMEOUT - HEADER_TIMEOUT).await;
        assert_eq!(r.sweep(), 1);
        assert!(is_shed(&idle) && !is_shed(&busy));
        tokio::time::advance(IDLE_TIMEOUT * 10).await;
        assert_eq!(r.sweep(), 0, "a request in flight is never timed out");
        assert_eq!(r.stats().shed, [0, 0, 1, 1]);
        drop(stream);
    }

    #[tokio::test(start_paused = true)]
    async fn under_pressure_idle_connections_go_sooner() {
        let r = registry(4);
        let conns: Vec<Conn> = (0..3).map(|_| r.register()).collect();
        for c in &conns {
            drop(c.request());
        }
        tokio::time::advance(PRESSURED_IDLE_TIMEOUT).await;
        assert_eq!(r.sweep(), 3, "three of four slots taken is pressure");
        let r = registry(5);
        let conns: Vec<Conn> = (0..3).map(|_| r.register()).collect();
        tokio::time::advance(PRESSURED_IDLE_TIMEOUT).await;
        assert_eq!(r.sweep(), 0, "three of five is not");
        drop(conns);
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_cap_admission_sheds_the_oldest_idle_and_takes_its_slot() {
        let r = registry(2);
        let slots = Arc::new(Semaphore::new(2));
        let p1 = r.admit(&slots).await.unwrap();
        let busy = r.register();
        let _req = busy.request();
        let p2 = r.admit(&slots).await.unwrap();
        let idle = r.register();
        // The owner of `idle` closes it when asked, freeing its slot.
        let owner = tokio::spawn(async move {
            idle.shed().await;
            drop((idle, p2));
        });
        let p3 = tokio::time::timeout(Duration::from_millis(1), r.admit(&slots)).await;
        assert!(p3.is_ok(), "admitted without waiting for a timeout");
        owner.await.unwrap();
        assert_eq!(r.stats().shed, [1, 0, 0, 0]);
        assert!(!is_shed(&busy));
        // All busy: admission waits, and takes a slot as soon as one frees.
        let waiting = tokio::spawn({
            let (r, slots) = (r.clone(), slots.clone());
            async move { r.admit(&slots).await.map(drop) }
        });
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!waiting.is_finished());
        assert!(!is_shed(&busy));
        drop(p1);
        tokio::time::timeout(Duration::from_secs(1), waiting).await.unwrap().unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn out_of_fds_sheds_but_other_accept_errors_do_not() {
        let r = registry(10);
        let c = r.register();
        assert!(!r.on_accept_error(&std::io::Error::from(std::io::ErrorKind::ConnectionAborted)));
        assert!(!is_shed(&c));
        assert!(r.on_accept_error(&std::io::Error::from_raw_os_error(24)));
        assert!(is_shed(&c));
    }
}
