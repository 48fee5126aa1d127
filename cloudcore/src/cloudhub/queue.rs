//! One node's downstream queues (upstream `NodeMessagePool` and `syncAckMessage`), as a pure
//! state machine: the session task feeds it messages, ACKs and the clock, and writes what it
//! says to write. No I/O here, so every rule is unit-tested.
//!
//! - [`no_ack_required`] splits fire-and-forget messages from reliable ones, as upstream.
//! - Reliable messages are keyed by the object's UID: only the newest version of an object
//!   waits in the queue (an older or equal resourceVersion is skipped, nothing follows a
//!   delete), deletes and responses always go.
//! - Up to a window of reliable messages is in flight per node (upstream: one), ACKs matched by
//!   message id; one object's messages still go one at a time, so per-object order holds. Each
//!   is re-sent every 5 s, 5 sends in all, then put back at the end of the queue after a
//!   growing delay (5 ms doubling to 1000 s).
//! - What the node acknowledged in this session is remembered (the newest [`ACKED_MEMORY`]
//!   objects): the same version sent again — a reconcile that ran before SyncController
//!   recorded the ACK — is skipped, not re-sent.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use kubeedge_model::constants::{group, module, resource_type};
use kubeedge_model::protocol::reply;
use kubeedge_model::{Message, Operation, trim_node_prefix};

/// Time between sends of an unacknowledged message.
pub const RESEND_EVERY: Duration = Duration::from_secs(5);
/// Sends of one message before it is put back in the queue.
pub const MAX_SENDS: u32 = 5;
/// First requeue delay.
const REQUEUE_BASE: Duration = Duration::from_millis(5);
/// Longest requeue delay.
const REQUEUE_MAX: Duration = Duration::from_secs(1000);

/// Whether a downstream message needs no ACK (upstream `noAckRequired`).
pub fn no_ack_required(msg: &Message) -> bool {
    let r = &msg.router;
    let res = r.resource.as_str();
    if ["podlist", "membership", "twin/cloud_updated", "serviceaccounttoken", "k8s/ca.crt"]
        .iter()
        .any(|s| res.contains(s))
    {
        return true;
    }
    if ["createvolume", "deletevolume", "controllerpublishvolume", "controllerunpublishvolume", "applicationResponse"]
        .contains(&r.operation.as_str())
    {
        return true;
    }
    // Ours: the anti-entropy question is answered, not ACKed.
    if kubeedge_model::protocol::inventory::is_request(msg) {
        return true;
    }
    if r.group == group::USER || r.source == module::TASKMANAGER || r.source == module::NODEUPGRADEJOBCONTROLLER {
        return true;
    }
    let op = msg.operation();
    if op == Operation::Response && (reply::is_ok(&msg.content) || reply::is_go_error(&msg.content)) {
        return true;
    }
    if r.source == module::EDGECONTROLLER {
        let ty = trim_node_prefix(res).split('/').nth(1).unwrap_or_default();
        return (ty == resource_type::NODE && op != Operation::Update)
            || [
                resource_type::LEASE,
                resource_type::NODE_PATCH,
                resource_type::POD_PATCH,
                resource_type::POD_STATUS,
                resource_type::CSR,
            ]
            .contains(&ty)
            || (ty == resource_type::POD && op == Operation::Response);
    }
    false
}

/// What became of an enqueued message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// Queued to be sent once.
    NoAck,
    /// Queued for reliable delivery.
    Ack,
    /// Replaced an older queued version of the same object.
    Replaced,
    /// Not queued, and why.
    Skipped(&'static str),
}

/// Objects whose acknowledged version a session remembers, at most (the oldest forgotten
/// first).
pub const ACKED_MEMORY: usize = 1024;
/// The acknowledged "version" of a deleted object.
const DELETED: u64 = u64::MAX;

struct InFlight {
    key: String,
    msg: Message,
    sends: u32,
    next_send: Instant,
}

/// What the node acknowledged in this session: object key → version ([`DELETED`] once deleted).
#[derive(Default)]
struct Acked {
    rv: HashMap<String, u64>,
    order: VecDeque<String>,
}

impl Acked {
    fn record(&mut self, key: &str, rv: u64) {
        match self.rv.get_mut(key) {
            Some(old) => *old = (*old).max(rv),
            None => {
                self.rv.insert(key.to_owned(), rv);
                self.order.push_back(key.to_owned());
                if self.order.len() > ACKED_MEMORY
                    && let Some(old) = self.order.pop_front()
                {
                    self.rv.remove(&old);
                }
            }
        }
    }

    fn get(&self, key: &str) -> Option<u64> {
        self.rv.get(key).copied()
    }
}

/// One node's queues.
pub struct NodeQueue {
    window: usize,
    no_ack: VecDeque<Message>,
    /// Keys waiting to be sent, each once ([`NodeQueue::queued`]).
    order: VecDeque<String>,
    queued: HashSet<String>,
    /// The newest message of each key not yet acknowledged (sent or not).
    store: HashMap<String, Message>,
    delayed: Vec<(Instant, String)>,
    failures: HashMap<String, u32>,
    /// In flight, by message id.
    in_flight: HashMap<String, InFlight>,
    /// Keys in flight → the message id.
    busy: HashMap<String, String>,
    /// Keys taken from `order` while busy: queued again when their message is acknowledged.
    blocked: HashSet<String>,
    acked: Acked,
}

impl Default for NodeQueue {
    fn default() -> Self {
        Self::with_window(1)
    }
}

#[derive(serde::Deserialize)]
struct Uid {
    #[serde(default)]
    uid: Option<String>,
}

#[derive(serde::Deserialize)]
struct Meta {
    #[serde(default)]
    metadata: Option<Uid>,
}

/// The parts of a content that name its object: the object itself, or a query reply's.
#[derive(serde::Deserialize)]
struct Keyed {
    #[serde(default)]
    metadata: Option<Uid>,
    #[serde(default, rename = "Object")]
    object: Option<Meta>,
}

/// The object UID a reliable message is keyed by (the content's, or a query reply's object's);
/// the message id when there is none. Decoded into a struct that names only the UID: the rest of
/// the object is skipped, not built.
pub fn key_of(msg: &Message) -> String {
    let keyed: Option<Keyed> = msg.content.decode().ok();
    let uid = keyed
        .and_then(|k| k.metadata.and_then(|m| m.uid).or_else(|| k.object.and_then(|o| o.metadata).and_then(|m| m.uid)));
    uid.unwrap_or_else(|| msg.header.id.clone())
}

fn rv(msg: &Message) -> Option<u64> {
    msg.header.resource_version.parse().ok()
}

impl NodeQueue {
    /// A queue keeping up to `window` reliable messages in flight (at least one).
    pub fn with_window(window: usize) -> Self {
        Self {
            window: window.max(1),
            no_ack: VecDeque::new(),
            order: VecDeque::new(),
            queued: HashSet::new(),
            store: HashMap::new(),
            delayed: Vec::new(),
            failures: HashMap::new(),
            in_flight: HashMap::new(),
            busy: HashMap::new(),
            blocked: HashSet::new(),
            acked: Acked::default(),
        }
    }

    /// Queues a downstream message for this node.
    pub fn enqueue(&mut self, msg: Message) -> Enqueued {
        if no_ack_required(&msg) {
            self.no_ack.push_back(msg);
            return Enqueued::NoAck;
        }
        let op = msg.operation();
        let is_delete = op == Operation::Delete;
        let always = is_delete || op == Operation::Response;
        if msg.header.resource_version.is_empty() && !always {
            return Enqueued::Skipped("no resourceversion");
        }
        let key = key_of(&msg);
        if op != Operation::Response
            && let Some(done) = self.acked.get(&key)
        {
            if done == DELETED {
                return Enqueued::Skipped("the node acknowledged the object's delete");
            }
            if !is_delete && rv(&msg).is_some_and(|v| v <= done) {
                return Enqueued::Skipped("the node acknowledged this version");
            }
        }
        if let Some(old) = self.store.get(&key) {
            let old_delete = old.operation() == Operation::Delete;
            if old_delete && (is_delete || !always) {
                return Enqueued::Skipped("the object is being deleted");
            }
            if !always
                && let (Some(old_rv), Some(new_rv)) = (rv(old), rv(&msg))
                && old_rv >= new_rv
            {
                return Enqueued::Skipped("an equal or newer version is queued");
            }
        }
        let replaced = self.store.insert(key.clone(), msg).is_some();
        if !self.blocked.contains(&key) && self.queued.insert(key.clone()) {
            self.order.push_back(key);
        }
        if replaced { Enqueued::Replaced } else { Enqueued::Ack }
    }

    /// The next message to write now, if any: queued no-ack messages first, then a reliable
    /// message in flight whose resend time has come, else the next reliable one while the
    /// window has room. The copy returned has its resource trimmed to the edge form.
    pub fn next_to_send(&mut self, now: Instant) -> Option<Message> {
        if let Some(m) = self.no_ack.pop_front() {
            return Some(to_edge(m));
        }
        self.promote_delayed(now);
        while let Some(id) = self.due(now) {
            let f = self.in_flight.get_mut(&id)?;
            if f.sends < MAX_SENDS {
                f.sends += 1;
                f.next_send = now + RESEND_EVERY;
                return Some(to_edge(f.msg.clone()));
            }
            // Give up for now: back of the queue after a growing delay.
            let f = self.in_flight.remove(&id)?;
            self.busy.remove(&f.key);
            let n = self.failures.entry(f.key.clone()).or_insert(0);
            *n += 1;
            let delay = REQUEUE_BASE.saturating_mul(1 << (*n - 1).min(20)).min(REQUEUE_MAX);
            self.blocked.remove(&f.key);
            self.delayed.push((now + delay, f.key));
        }
        while self.in_flight.len() < self.window {
            let key = self.order.pop_front()?;
            self.queued.remove(&key);
            if self.busy.contains_key(&key) {
                // One message per object at a time: this one goes after the ACK.
                self.blocked.insert(key);
                continue;
            }
            let Some(msg) = self.store.get(&key).cloned() else { continue };
            self.busy.insert(key.clone(), msg.header.id.clone());
            let out = to_edge(msg.clone());
            self.in_flight
                .insert(msg.header.id.clone(), InFlight { key, msg, sends: 1, next_send: now + RESEND_EVERY });
            return Some(out);
        }
        None
    }

    /// The in-flight message whose resend time came first, if it has come.
    fn due(&self, now: Instant) -> Option<String> {
        self.in_flight
            .iter()
            .filter(|(_, f)| f.next_send <= now)
            .min_by_key(|(_, f)| f.next_send)
            .map(|(id, _)| id.clone())
    }

    fn promote_delayed(&mut self, now: Instant) {
        if self.delayed.iter().all(|(at, _)| *at > now) {
            return;
        }
        let (ready, waiting): (Vec<_>, Vec<_>) = self.delayed.drain(..).partition(|(at, _)| *at <= now);
        self.delayed = waiting;
        for (_, key) in ready {
            if self.store.contains_key(&key) && !self.busy.contains_key(&key) && self.queued.insert(key.clone()) {
                self.order.push_back(key);
            }
        }
    }

    /// When the queue next needs attention (a resend or a delayed requeue), if it is waiting.
    pub fn next_deadline(&self) -> Option<Instant> {
        let resend = self.in_flight.values().map(|f| f.next_send).min();
        let delayed = self.delayed.iter().map(|(at, _)| *at).min();
        match (resend, delayed) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// An ACK arrived (a `response` whose `parent_msg_id` is `parent`). Returns the message it
    /// acknowledges and its key; the message leaves the queue. `None` when it answers nothing in
    /// flight (v1.15 edges also ACK the cloud's replies: harmless).
    pub fn ack(&mut self, parent: &str) -> Option<(String, Message)> {
        let f = self.in_flight.remove(parent)?;
        self.busy.remove(&f.key);
        self.failures.remove(&f.key);
        match f.msg.operation() {
            Operation::Delete => self.acked.record(&f.key, DELETED),
            Operation::Response => {}
            _ => {
                if let Some(v) = rv(&f.msg) {
                    self.acked.record(&f.key, v);
                }
            }
        }
        // A newer version queued meanwhile goes next; otherwise the key is done.
        if self.store.get(&f.key).is_some_and(|m| m.header.id == f.msg.header.id) {
            self.store.remove(&f.key);
        } else if self.blocked.remove(&f.key) && self.store.contains_key(&f.key) && self.queued.insert(f.key.clone()) {
            self.order.push_front(f.key.clone());
        }
        Some((f.key, f.msg))
    }

    /// Messages waiting (no-ack, reliable and in flight), for metrics.
    pub fn depth(&self) -> usize {
        self.no_ack.len() + self.store.len()
    }

    /// Reliable messages sent and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

fn to_edge(mut msg: Message) -> Message {
    msg.router.resource = trim_node_prefix(&msg.router.resource).to_owned();
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubeedge_model::Content;
    use serde_json::json;

    fn pod(op: &str, uid: &str, rv: &str) -> Message {
        let mut m = Message::build(
            "edgecontroller",
            "resource",
            "node/edge-1/default/pod/web",
            op,
            Content::json(&json!({"metadata": {"uid": uid, "resourceVersion": rv}})).unwrap(),
        );
        m.header.resource_version = rv.to_owned();
        m
    }

    #[test]
    fn no_ack_rules_match_upstream() {
        let m = |src: &str, group: &str, res: &str, op: &str, content: Content| {
            Message::build(src, group, res, op, content)
        };
        assert!(no_ack_required(&m(
            "edgecontroller",
            "resource",
            "node/e/default/podpatch/p",
            "response",
            Content::null()
        )));
        assert!(no_ack_required(&m("edgecontroller", "resource", "node/e/null/node/e", "response", Content::null())));
        assert!(!no_ack_required(&m("edgecontroller", "resource", "node/e/null/node/e", "update", Content::null())));
        assert!(no_ack_required(&m(
            "edgecontroller",
            "resource",
            "node/e/kube-node-lease/lease/e",
            "response",
            Content::null()
        )));
        assert!(no_ack_required(&m("devicecontroller", "twin", "node/e/membership", "update", Content::null())));
        assert!(no_ack_required(&m("x", "user", "node/e/a/b/c", "insert", Content::null())));
        assert!(no_ack_required(&m("x", "resource", "node/e/a/b/c", "response", Content::string("OK"))));
        assert!(!no_ack_required(&pod("insert", "u", "1")));
        assert!(!no_ack_required(&m(
            "edgecontroller",
            "resource",
            "node/e/default/configmap/c",
            "response",
            Content::null()
        )));
        // Go error values as query replies: a plain error, a StatusError.
        let err = |c: &str| {
            m("edgecontroller", "resource", "node/e/default/secret/s", "response", Content::from_raw_json(c).unwrap())
        };
        assert!(no_ack_required(&err("{}")));
        assert!(no_ack_required(&err(r#"{"ErrStatus":{"code":404,"reason":"NotFound"}}"#)));
        assert!(!no_ack_required(&err(r#"{"ErrStatus":{"code":404},"data":{}}"#)));
        assert!(!no_ack_required(&err(r#"{"kind":"Secret","metadata":{"name":"s"}}"#)));
    }

    #[test]
    fn one_in_flight_resent_every_5s_then_requeued() {
        let t0 = Instant::now();
        let mut q = NodeQueue::default();
        assert_eq!(q.enqueue(pod("insert", "a", "1")), Enqueued::Ack);
        assert_eq!(q.enqueue(pod("insert", "b", "1")), Enqueued::Ack);
        let first = q.next_to_send(t0).unwrap();
        assert_eq!(first.router.resource, "default/pod/web", "trimmed to the edge form");
        assert!(q.next_to_send(t0).is_none(), "one in flight");
        assert_eq!(q.next_deadline(), Some(t0 + RESEND_EVERY));
        for i in 1..MAX_SENDS {
            let again = q.next_to_send(t0 + RESEND_EVERY * i).unwrap();
            assert_eq!(again.header.id, first.header.id, "a resend keeps the msg_id");
        }
        // The fifth send went unanswered: the next one up is the other object.
        let next = q.next_to_send(t0 + RESEND_EVERY * MAX_SENDS).unwrap();
        assert_ne!(next.header.id, first.header.id);
        assert_eq!(q.ack(&next.header.id).map(|(_, m)| m.header.id), Some(next.header.id.clone()));
        // After its delay the first comes back.
        let later = t0 + RESEND_EVERY * MAX_SENDS + Duration::from_millis(5);
        assert_eq!(q.next_to_send(later).unwrap().header.id, first.header.id);
        assert!(q.ack(&first.header.id).is_some());
        assert_eq!(q.depth(), 0);
        assert!(q.next_to_send(later).is_none());
    }

    #[test]
    fn only_the_newest_version_waits_and_nothing_follows_a_delete() {
        let now = Instant::now();
        let mut q = NodeQueue::default();
        q.enqueue(pod("insert", "a", "5"));
        assert_eq!(q.enqueue(pod("update", "a", "4")), Enqueued::Skipped("an equal or newer version is queued"));
        assert_eq!(q.enqueue(pod("update", "a", "6")), Enqueued::Replaced);
        assert_eq!(q.depth(), 1);
        let sent = q.next_to_send(now).unwrap();
        assert_eq!(sent.header.resource_version, "6");
        q.ack(&sent.header.id);
        q.enqueue(pod("delete", "b", ""));
        assert_eq!(q.enqueue(pod("update", "b", "9")), Enqueued::Skipped("the object is being deleted"));
        assert_eq!(q.enqueue(pod("update", "c", "")), Enqueued::Skipped("no resourceversion"));
    }

    #[test]
    fn a_newer_version_queued_while_in_flight_is_sent_after_the_ack() {
        let now = Instant::now();
        let mut q = NodeQueue::default();
        q.enqueue(pod("insert", "a", "1"));
        let v1 = q.next_to_send(now).unwrap();
        q.enqueue(pod("update", "a", "2"));
        assert!(q.ack("unrelated").is_none(), "ACKs of nothing queued are harmless");
        q.ack(&v1.header.id).unwrap();
        let v2 = q.next_to_send(now).unwrap();
        assert_eq!(v2.header.resource_version, "2");
        q.ack(&v2.header.id).unwrap();
        assert_eq!(q.depth(), 0);
    }

    #[test]
    fn no_ack_messages_go_first_and_once() {
        let now = Instant::now();
        let mut q = NodeQueue::default();
        q.enqueue(pod("insert", "a", "1"));
        let lease =
            Message::build("edgecontroller", "resource", "node/e/kube-node-lease/lease/e", "response", Content::null());
        assert_eq!(q.enqueue(lease.clone()), Enqueued::NoAck);
        assert_eq!(q.next_to_send(now).unwrap().header.id, lease.header.id);
        assert_ne!(q.next_to_send(now).unwrap().header.id, lease.header.id);
    }

    #[test]
    fn a_window_of_objects_in_flight_one_message_per_object() {
        let now = Instant::now();
        let mut q = NodeQueue::with_window(3);
        for uid in ["a", "b", "c", "d"] {
            q.enqueue(pod("insert", uid, "1"));
        }
        let sent: Vec<Message> = std::iter::from_fn(|| q.next_to_send(now)).collect();
        assert_eq!(sent.len(), 3, "the window");
        assert_eq!(q.in_flight(), 3);
        // A newer version of an object in flight waits for its ACK, even with room.
        q.enqueue(pod("update", "a", "2"));
        let (_, acked) = q.ack(&sent[1].header.id).unwrap();
        assert_eq!(acked.header.id, sent[1].header.id, "ACKs matched by id, in any order");
        let next = q.next_to_send(now).unwrap();
        assert_eq!(key_of(&next), "d", "not a's v2: a's v1 is still in flight");
        assert!(q.next_to_send(now).is_none());
        q.ack(&sent[0].header.id).unwrap();
        let v2 = q.next_to_send(now).unwrap();
        assert_eq!((key_of(&v2).as_str(), v2.header.resource_version.as_str()), ("a", "2"));
        for m in [&sent[2], &next, &v2] {
            assert!(q.ack(&m.header.id).is_some());
        }
        assert_eq!((q.depth(), q.in_flight()), (0, 0));
        assert!(q.next_deadline().is_none());
    }

    #[test]
    fn what_the_node_acknowledged_is_not_sent_again() {
        let now = Instant::now();
        let mut q = NodeQueue::with_window(4);
        q.enqueue(pod("insert", "a", "5"));
        let v5 = q.next_to_send(now).unwrap();
        q.ack(&v5.header.id).unwrap();
        // A reconcile that ran before the ACK was recorded sends the same version again.
        assert_eq!(q.enqueue(pod("update", "a", "5")), Enqueued::Skipped("the node acknowledged this version"));
        assert_eq!(q.enqueue(pod("update", "a", "4")), Enqueued::Skipped("the node acknowledged this version"));
        assert_eq!(q.enqueue(pod("update", "a", "6")), Enqueued::Ack);
        let v6 = q.next_to_send(now).unwrap();
        q.ack(&v6.header.id).unwrap();
        q.enqueue(pod("delete", "a", ""));
        assert_eq!(q.enqueue(pod("delete", "a", "")), Enqueued::Skipped("the object is being deleted"));
        let del = q.next_to_send(now).unwrap();
        q.ack(&del.header.id).unwrap();
        assert_eq!(q.enqueue(pod("delete", "a", "")), Enqueued::Skipped("the node acknowledged the object's delete"));
        assert_eq!(q.enqueue(pod("update", "a", "7")), Enqueued::Skipped("the node acknowledged the object's delete"));
        assert!(q.next_to_send(now).is_none());
        // The memory is bounded: the oldest objects are forgotten first.
        for i in 0..=ACKED_MEMORY {
            q.enqueue(pod("insert", &format!("o{i}"), "1"));
            let m = q.next_to_send(now).unwrap();
            q.ack(&m.header.id).unwrap();
        }
        assert_eq!(q.acked.rv.len(), ACKED_MEMORY);
        assert_eq!(q.enqueue(pod("update", "a", "7")), Enqueued::Ack, "forgotten: sent");
    }

    #[test]
    fn each_message_in_the_window_is_resent_on_its_own_clock() {
        let t0 = Instant::now();
        let mut q = NodeQueue::with_window(2);
        q.enqueue(pod("insert", "a", "1"));
        let a = q.next_to_send(t0).unwrap();
        q.enqueue(pod("insert", "b", "1"));
        let t1 = t0 + Duration::from_secs(1);
        let b = q.next_to_send(t1).unwrap();
        assert_eq!(q.next_deadline(), Some(t0 + RESEND_EVERY));
        assert_eq!(q.next_to_send(t0 + RESEND_EVERY).unwrap().header.id, a.header.id);
        assert!(q.next_to_send(t0 + RESEND_EVERY).is_none());
        assert_eq!(q.next_to_send(t1 + RESEND_EVERY).unwrap().header.id, b.header.id);
    }
}
