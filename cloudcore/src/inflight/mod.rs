//! Edge messages in flight in the cloud (issue #18): how much one edge may have CloudHub hand
//! the controllers before they are done with it, and how much memory all edges' messages may
//! hold at once. With [`fair::FairQueue`] in the controllers, a flooding edge slows only
//! itself: it waits on its own socket (TCP backpressure) while other nodes' messages pass.
//!
//! ```text
//! CloudHub session ─admit (waits: node full, memory used up)─▶ bus ─▶ controller inbox
//!     ─ticket─▶ fair queue (per node, round robin) ─▶ worker handles ─▶ ticket dropped: released
//! ```
//!
//! - **Per node**: at most `nodeInFlight` messages admitted and not yet finished. The session
//!   waits for room before it reads the node's next frame.
//! - **Memory**: a message weighs its content plus a fixed overhead ([`weight`]). Each node
//!   has [`NODE_ALLOWANCE`] of its own; bytes beyond it hold permits of one shared budget
//!   (`inFlightMemoryMiB`, a FIFO semaphore counted in KiB). An honest node's small messages
//!   never touch the budget, so edges sending large messages cannot make it wait; the
//!   large-message senders wait for each other, in order.
//!
//! - **Memory back**: glibc keeps what a burst of large messages freed (130–150 MB after three
//!   7 MiB node statuses); once a message of [`TRIM_AFTER`] or more is done,
//!   [`Admission::trim_after_bursts`] has glibc release its free pages (`malloc_trim`, at most
//!   once every [`TRIM_EVERY`], on a blocking thread).
//!
//! Hand-off: the session's [`Admitted`] guard is given up when the bus took the message
//! ([`Admitted::handed_over`]); the controller then takes a [`Ticket`] for it from its
//! [`Completion`] (the same node and weight, computed from the message) and drops it when the
//! message is handled. Only groups that registered a completion are handed over this way;
//! messages for other groups are released as soon as the bus took them. Nothing but CloudHub
//! sends to these groups, so every ticket matches one admission; a release never goes below
//! zero regardless.

pub mod fair;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kubeedge_model::{CloudResource, Message};
use parking_lot::Mutex;
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Bytes of messages in flight each node has of its own, outside the shared budget.
pub const NODE_ALLOWANCE: usize = 256 * 1024;
/// What a message weighs beyond its content and resource: the envelope, ids, routing strings.
const OVERHEAD: usize = 512;
/// The budget semaphore counts KiB.
const KIB: usize = 1024;
/// A finished message this large (bytes) has freed memory worth handing back to the OS.
pub const TRIM_AFTER: usize = 1 << 20;
/// Memory is handed back at most this often.
pub const TRIM_EVERY: Duration = Duration::from_secs(1);

/// The bytes `msg` is counted for while in flight (same on both sides of the hand-off).
pub fn weight(msg: &Message) -> usize {
    OVERHEAD + msg.content.len() + msg.router.resource.len()
}

/// Why a session waited before handing a message over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The node's `messageQPS`/`messageBurst` (the session's own bucket).
    Rate,
    /// The node had `nodeInFlight` messages queued or being handled.
    NodeInFlight,
    /// The shared memory budget was used up.
    MemoryBudget,
}

impl Wait {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Wait::Rate => "rate",
            Wait::NodeInFlight => "node_in_flight",
            Wait::MemoryBudget => "memory_budget",
        }
    }
}

/// The limits, from `modules.cloudHub.edgeMessages`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Messages per node admitted and not yet finished.
    pub node_in_flight: usize,
    /// Bytes of all nodes' messages beyond their allowances.
    pub memory: usize,
}

/// Gauges and counters of what is in flight.
#[derive(Clone)]
struct Metrics {
    messages: IntGauge,
    bytes: IntGauge,
    waits: IntCounterVec,
}

impl Metrics {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            messages: IntGauge::new(
                "kubeedge_cloudhub_in_flight_messages",
                "Edge messages handed to the controllers and not yet handled.",
            )?,
            bytes: IntGauge::new(
                "kubeedge_cloudhub_in_flight_bytes",
                "Bytes of edge messages handed to the controllers and not yet handled.",
            )?,
            waits: IntCounterVec::new(
                Opts::new(
                    "kubeedge_cloudhub_throttled_messages_total",
                    "Edge messages CloudHub held back (and stopped reading that edge) before handing them over, by reason.",
                ),
                &["reason"],
            )?,
        };
        registry.register(Box::new(m.messages.clone()))?;
        registry.register(Box::new(m.bytes.clone()))?;
        registry.register(Box::new(m.waits.clone()))?;
        Ok(m)
    }
}

/// What [`Admission::admit`] decided under the lock.
enum Step {
    Admitted,
    NodeFull(std::pin::Pin<Box<tokio::sync::futures::OwnedNotified>>),
    Budget(usize),
}

/// One node's messages in flight.
#[derive(Default)]
struct Slot {
    messages: usize,
    bytes: usize,
    /// Permits (KiB) of the shared budget this node holds: its bytes beyond the allowance.
    held_kib: usize,
    /// Woken when a message of the node finishes.
    room: Arc<Notify>,
}

struct Inner {
    limits: Limits,
    nodes: Mutex<HashMap<String, Slot>>,
    budget: Arc<Semaphore>,
    /// Groups whose (only) module takes a [`Ticket`] for every message.
    completing: Mutex<Vec<&'static str>>,
    metrics: Option<Metrics>,
    /// The budget's warning, for all sessions: at most one every 10 s.
    budget_warning: Mutex<kubeedge_telemetry::LogLimiter>,
    /// A message of [`TRIM_AFTER`] or more finished since the last trim.
    large_done: AtomicBool,
}

/// Permits of the budget needed to hold `bytes` of a node's messages.
fn budget_kib(bytes: usize) -> usize {
    bytes.saturating_sub(NODE_ALLOWANCE).div_ceil(KIB)
}

impl Inner {
    /// Counts a finished message of `node`; returns its share of the budget.
    fn release(&self, node: &str, weight: usize) {
        let mut nodes = self.nodes.lock();
        let Some(slot) = nodes.get_mut(node) else { return };
        slot.messages = slot.messages.saturating_sub(1);
        slot.bytes = slot.bytes.saturating_sub(weight);
        let keep = budget_kib(slot.bytes);
        if slot.held_kib > keep {
            self.budget.add_permits(slot.held_kib - keep);
            slot.held_kib = keep;
        }
        slot.room.notify_waiters();
        if weight >= TRIM_AFTER {
            self.large_done.store(true, Ordering::Relaxed);
        }
        if slot.messages == 0 && slot.held_kib == 0 {
            nodes.remove(node);
        }
        drop(nodes);
        if let Some(m) = &self.metrics {
            m.messages.dec();
            m.bytes.sub(i64::try_from(weight).unwrap_or(i64::MAX));
        }
    }
}

/// What CloudHub lets edges have in flight; shared by CloudHub's sessions and the controllers.
#[derive(Clone)]
pub struct Admission(Arc<Inner>);

impl Admission {
    /// An admission with these limits; `registry` gets its metrics.
    pub fn new(limits: Limits, registry: Option<&Registry>) -> Result<Self, prometheus::Error> {
        let metrics = registry.map(Metrics::register).transpose()?;
        let kib = limits.memory.div_ceil(KIB).clamp(1, Semaphore::MAX_PERMITS);
        Ok(Self(Arc::new(Inner {
            limits: Limits { node_in_flight: limits.node_in_flight.max(1), memory: kib * KIB },
            nodes: Mutex::default(),
            budget: Arc::new(Semaphore::new(kib)),
            completing: Mutex::default(),
            metrics,
            budget_warning: Mutex::new(kubeedge_telemetry::LogLimiter::new(Duration::from_secs(10))),
            large_done: AtomicBool::new(false),
        })))
    }

    /// Until `stop`: after large messages were handled, hands the memory they freed back to
    /// the OS (see the module docs), at most once every [`TRIM_EVERY`].
    pub async fn trim_after_bursts(self, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(TRIM_EVERY) => {}
            }
            if !self.0.large_done.swap(false, Ordering::Relaxed) {
                continue;
            }
            // It holds the arenas' locks for a few milliseconds: not on a runtime thread.
            let released = tokio::task::spawn_blocking(kubeedge_malloc::trim).await.unwrap_or(false);
            debug!(released, "Handed memory freed by large edge messages back to the OS.");
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.0.limits
    }

    /// Registers `group` as one whose only module takes a [`Ticket`] for each message CloudHub
    /// hands it, and drops it when done: CloudHub then counts the message until that moment.
    pub fn completion(&self, group: &'static str) -> Completion {
        let mut g = self.0.completing.lock();
        if !g.contains(&group) {
            g.push(group);
        }
        Completion(self.0.clone())
    }

    /// Whether `group` reports when its messages are done.
    pub fn completes(&self, group: &str) -> bool {
        self.0.completing.lock().contains(&group)
    }

    /// Counts a message CloudHub held back for `why` (the rate wait is the session's own).
    pub fn count_wait(&self, why: Wait) {
        if let Some(m) = &self.0.metrics {
            m.waits.with_label_values(&[why.as_str()]).inc();
        }
    }

    /// Messages and bytes in flight for `node` now.
    pub fn node_in_flight(&self, node: &str) -> (usize, usize) {
        self.0.nodes.lock().get(node).map(|s| (s.messages, s.bytes)).unwrap_or_default()
    }

    /// KiB of the shared budget free now.
    pub fn budget_free_kib(&self) -> usize {
        self.0.budget.available_permits()
    }

    /// [`Admission::admit`] when it needs no wait: `None` when `node` has its most in flight
    /// or the memory budget has no room now (nothing is counted then).
    pub fn try_admit(&self, node: &str, weight: usize) -> Option<Admitted> {
        let inner = &self.0;
        {
            let mut nodes = inner.nodes.lock();
            let (messages, bytes, held) = nodes.get(node).map_or((0, 0, 0), |s| (s.messages, s.bytes, s.held_kib));
            if messages >= inner.limits.node_in_flight {
                return None;
            }
            let need = budget_kib(bytes + weight).saturating_sub(held);
            if need > 0 {
                inner.budget.try_acquire_many(u32::try_from(need).ok()?).ok()?.forget();
            }
            let slot = match nodes.get_mut(node) {
                Some(slot) => slot,
                None => nodes.entry(node.to_owned()).or_default(),
            };
            slot.held_kib += need;
            slot.messages += 1;
            slot.bytes += weight;
        }
        if let Some(m) = &inner.metrics {
            m.messages.inc();
            m.bytes.add(i64::try_from(weight).unwrap_or(i64::MAX));
        }
        Some(Admitted { inner: Some(inner.clone()), node: node.to_owned(), weight, waited: Vec::new() })
    }

    /// Waits until `node` may have one more message of `weight` bytes in flight, and counts it.
    /// The waits it made are in [`Admitted::waited`].
    pub async fn admit(&self, node: &str, weight: usize) -> Admitted {
        let inner = &self.0;
        let mut waited = Vec::new();
        loop {
            // Decided under the lock; waited for after it (no guard across an await).
            let step = {
                let mut nodes = inner.nodes.lock();
                let slot = nodes.entry(node.to_owned()).or_default();
                if slot.messages >= inner.limits.node_in_flight {
                    // Budget taken by an earlier round of this loop goes back while it waits.
                    let keep = budget_kib(slot.bytes);
                    if slot.held_kib > keep {
                        inner.budget.add_permits(slot.held_kib - keep);
                        slot.held_kib = keep;
                    }
                    // Registered before the lock is let go: a release cannot slip between.
                    let mut room = Box::pin(slot.room.clone().notified_owned());
                    room.as_mut().enable();
                    Step::NodeFull(room)
                } else {
                    let need = budget_kib(slot.bytes + weight).saturating_sub(slot.held_kib);
                    let got = need == 0
                        || match inner.budget.try_acquire_many(u32::try_from(need).unwrap_or(u32::MAX)) {
                            Ok(p) => {
                                p.forget();
                                slot.held_kib += need;
                                true
                            }
                            Err(_) => false,
                        };
                    if got {
                        slot.messages += 1;
                        slot.bytes += weight;
                        Step::Admitted
                    } else {
                        Step::Budget(need)
                    }
                }
            };
            match step {
                Step::Admitted => break,
                Step::NodeFull(room) => {
                    if !waited.contains(&Wait::NodeInFlight) {
                        waited.push(Wait::NodeInFlight);
                    }
                    room.await;
                }
                Step::Budget(need) => {
                    // The budget is used up: wait in line for it (FIFO), then decide again.
                    if !waited.contains(&Wait::MemoryBudget) {
                        waited.push(Wait::MemoryBudget);
                        let held_back = inner.budget_warning.lock().admit();
                        if let Some(held_back) = held_back {
                            warn!(
                                node,
                                message_bytes = weight,
                                budget_mib = inner.limits.memory >> 20,
                                held_back,
                                "Memory for edge messages in flight is used up \
                                 (modules.cloudHub.edgeMessages.inFlightMemoryMiB): reading from edges with large \
                                 messages waits (warning at most every 10 s)."
                            );
                        }
                    }
                    let n = u32::try_from(need).unwrap_or(u32::MAX);
                    let Ok(p) = inner.budget.clone().acquire_many_owned(n).await else {
                        // Never closed; admit without the budget rather than hang.
                        break;
                    };
                    p.forget();
                    inner.nodes.lock().entry(node.to_owned()).or_default().held_kib += need;
                }
            }
        }
        // Bytes released while this waited may have left the node holding more than it needs.
        {
            let mut nodes = inner.nodes.lock();
            if let Some(slot) = nodes.get_mut(node) {
                let keep = budget_kib(slot.bytes);
                if slot.held_kib > keep {
                    inner.budget.add_permits(slot.held_kib - keep);
                    slot.held_kib = keep;
                }
            }
        }
        if let Some(m) = &inner.metrics {
            m.messages.inc();
            m.bytes.add(i64::try_from(weight).unwrap_or(i64::MAX));
            for w in &waited {
                m.waits.with_label_values(&[w.as_str()]).inc();
            }
        }
        Admitted { inner: Some(inner.clone()), node: node.to_owned(), weight, waited }
    }
}

/// A message admitted by [`Admission::admit`]: released when dropped, unless handed over.
pub struct Admitted {
    inner: Option<Arc<Inner>>,
    node: String,
    weight: usize,
    /// What the session waited for, in order.
    pub waited: Vec<Wait>,
}

impl Admitted {
    /// The bus took the message for a completing group: its [`Ticket`] releases it now.
    pub fn handed_over(mut self) {
        self.inner = None;
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            inner.release(&self.node, self.weight);
        }
    }
}

/// A controller's side of [`Admission`]: tickets for the messages CloudHub handed it.
#[derive(Clone)]
pub struct Completion(Arc<Inner>);

impl Completion {
    /// Takes over the count of `msg` (as CloudHub handed it: resource `node/{node}/…`);
    /// dropping the ticket says the controller is done with it.
    pub fn ticket(&self, msg: &Message) -> Ticket {
        Ticket {
            inner: self.0.clone(),
            node: CloudResource::node_of(&msg.router.resource).unwrap_or_default().to_owned(),
            weight: weight(msg),
        }
    }
}

/// One message in a controller's hands; dropping it releases the message's count.
pub struct Ticket {
    inner: Arc<Inner>,
    node: String,
    weight: usize,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.inner.release(&self.node, self.weight);
    }
}

#[cfg(test)]
mod tests {
    use kubeedge_model::{Content, Operation};

    use super::*;

    const PATIENCE: Duration = Duration::from_secs(5);

    fn msg(node: &str, bytes: usize) -> Message {
        Message::build(
            "edged",
            "meta",
            CloudResource::prefixed(node, "default/podstatus"),
            Operation::Update,
            Content::string(&"x".repeat(bytes)),
        )
    }

    fn admission(node_in_flight: usize, memory: usize) -> Admission {
        Admission::new(Limits { node_in_flight, memory }, None).unwrap()
    }

    /// Whether `fut` is still waiting after a moment.
    async fn waits<F: std::future::Future>(fut: F) -> bool {
        tokio::time::timeout(Duration::from_millis(50), fut).await.is_err()
    }

    /// Lets every spawned task run until it waits (the test runtime has one thread).
    async fn settle() {
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_full_node_waits_while_others_pass() {
        let adm = admission(2, 1 << 20);
        let done = adm.completion("edgecontroller");
        let (a, b) = (msg("flood", 10), msg("flood", 10));
        adm.admit("flood", weight(&a)).await.handed_over();
        adm.admit("flood", weight(&b)).await.handed_over();
        assert_eq!(adm.node_in_flight("flood").0, 2);
        // The flooding node's third waits; another node is not held up.
        let other = tokio::time::timeout(PATIENCE, adm.admit("honest", 100)).await.expect("another node passes");
        assert_eq!(other.waited, vec![]);
        let adm2 = adm.clone();
        let third = tokio::spawn(async move { adm2.admit("flood", 600).await.waited.clone() });
        settle().await;
        assert!(!third.is_finished(), "the full node waits");
        // The controller finishes one: the third is admitted.
        drop(done.ticket(&a));
        let waited = tokio::time::timeout(PATIENCE, third).await.expect("admitted once there is room").unwrap();
        assert_eq!(waited, vec![Wait::NodeInFlight]);
        drop(other);
        drop(done.ticket(&b));
        // The third (dropped unhanded) released itself: nothing is left.
        assert_eq!(adm.node_in_flight("flood"), (0, 0));
        assert_eq!(adm.node_in_flight("honest"), (0, 0));
        assert!(adm.0.nodes.lock().is_empty());
    }

    #[tokio::test]
    async fn large_messages_share_the_budget_and_small_ones_never_wait_for_it() {
        // 1 MiB shared; each node has 256 KiB of its own.
        let adm = admission(64, 1 << 20);
        let big = 600 * 1024;
        let first = adm.admit("big-1", big).await;
        assert_eq!(adm.budget_free_kib(), 1024 - (big - NODE_ALLOWANCE).div_ceil(KIB));
        let second = adm.admit("big-2", big).await;
        // Used up: a third large message waits …
        assert!(waits(adm.admit("big-3", big)).await);
        // … while an honest node's small ones pass at once, many of them.
        let mut small = Vec::new();
        for _ in 0..50 {
            let a = tokio::time::timeout(PATIENCE, adm.admit("honest", 2_000)).await.expect("small passes");
            assert!(a.waited.is_empty());
            small.push(a);
        }
        let adm2 = adm.clone();
        let third = tokio::spawn(async move { adm2.admit("big-3", big).await.waited.clone() });
        settle().await;
        assert!(!third.is_finished());
        drop(first);
        assert_eq!(tokio::time::timeout(PATIENCE, third).await.unwrap().unwrap(), vec![Wait::MemoryBudget]);
        drop((second, small));
        assert_eq!(adm.budget_free_kib(), 1024, "every permit is back");
        assert!(adm.0.nodes.lock().is_empty());
    }

    #[tokio::test]
    async fn a_node_over_its_allowance_holds_only_the_excess() {
        let adm = admission(64, 4 << 20);
        let a = adm.admit("n", 200 * 1024).await;
        assert_eq!(adm.budget_free_kib(), 4096, "within the allowance");
        let b = adm.admit("n", 200 * 1024).await;
        assert_eq!(adm.budget_free_kib(), 4096 - 144);
        drop(a);
        assert_eq!(adm.budget_free_kib(), 4096, "back under the allowance: all returned");
        drop(b);
        assert_eq!(adm.node_in_flight("n"), (0, 0));
    }

    #[test]
    fn tickets_weigh_what_the_session_admitted() {
        let m = msg("edge-1", 1234);
        assert_eq!(weight(&m), OVERHEAD + m.content.len() + "node/edge-1/default/podstatus".len());
        let adm = admission(4, 1 << 20);
        assert!(!adm.completes("edgecontroller"));
        let done = adm.completion("edgecontroller");
        assert!(adm.completes("edgecontroller") && !adm.completes("router"));
        let t = done.ticket(&m);
        assert_eq!((t.node.as_str(), t.weight), ("edge-1", weight(&m)));
        // A ticket without an admission (never happens) releases nothing below zero.
        drop(t);
        assert_eq!(adm.node_in_flight("edge-1"), (0, 0));
    }
}
