//! One node's downstream queues (upstream `NodeMessagePool` and `syncAckMessage`), as a pure
//! state machine: the session task feeds it messages, ACKs and the clock, and writes what it
//! says to write. No I/O here, so every rule is unit-tested.
//!
//! - [`no_ack_required`] splits fire-and-forget messages from reliable ones, as upstream.
//! - Reliable messages are keyed by the object's UID: only the newest version of an object
//!   waits in the queue (an older or equal resourceVersion is skipped, nothing follows a
//!   delete), deletes and responses always go.
//! - One reliable message is in flight per node; it is re-sent every 5 s, 5 sends in all, then
//!   put back at the end of the queue after a growing delay (5 ms doubling to 1000 s).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use kubeedge_model::constants::{group, module, resource_type};
use kubeedge_model::protocol::reply;
use kubeedge_model::{Message, Operation, trim_node_prefix};
use serde_json::Value;

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

struct InFlight {
    key: String,
    msg: Message,
    sends: u32,
    next_send: Instant,
}

/// One node's queues.
#[derive(Default)]
pub struct NodeQueue {
    no_ack: VecDeque<Message>,
    order: VecDeque<String>,
    queued: HashSet<String>,
    store: HashMap<String, Message>,
    delayed: Vec<(Instant, String)>,
    failures: HashMap<String, u32>,
    in_flight: Option<InFlight>,
}

/// The object UID a reliable message is keyed by (the content's, or a query reply's object's);
/// the message id when there is none.
fn key_of(msg: &Message) -> String {
    let content: Option<Value> = msg.content.decode().ok();
    let uid = content.as_ref().and_then(|c| {
        c.pointer("/metadata/uid")
            .or_else(|| c.pointer("/Object/metadata/uid"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    uid.unwrap_or_else(|| msg.header.id.clone())
}

fn rv(msg: &Message) -> Option<u64> {
    msg.header.resource_version.parse().ok()
}

impl NodeQueue {
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
        if !always && let Some(old) = self.store.get(&key) {
            if old.operation() == Operation::Delete {
                return Enqueued::Skipped("the object is being deleted");
            }
            if let (Some(old_rv), Some(new_rv)) = (rv(old), rv(&msg))
                && old_rv >= new_rv
            {
                return Enqueued::Skipped("an equal or newer version is queued");
            }
        }
        let replaced = self.store.insert(key.clone(), msg).is_some();
        if self.queued.insert(key.clone()) {
            self.order.push_back(key);
        }
        if replaced { Enqueued::Replaced } else { Enqueued::Ack }
    }

    /// The next message to write now, if any: queued no-ack messages first, then the reliable
    /// message in flight when its resend time has come, else the next reliable one. The copy
    /// returned has its resource trimmed to the edge form.
    pub fn next_to_send(&mut self, now: Instant) -> Option<Message> {
        if let Some(m) = self.no_ack.pop_front() {
            return Some(to_edge(m));
        }
        self.promote_delayed(now);
        if let Some(f) = &mut self.in_flight {
            if now < f.next_send {
                return None;
            }
            if f.sends >= MAX_SENDS {
                // Give up for now: back of the queue after a growing delay.
                let f = self.in_flight.take()?;
                let n = self.failures.entry(f.key.clone()).or_insert(0);
                *n += 1;
                let delay = REQUEUE_BASE.saturating_mul(1 << (*n - 1).min(20)).min(REQUEUE_MAX);
                self.delayed.push((now + delay, f.key));
                return self.next_to_send(now);
            }
            f.sends += 1;
            f.next_send = now + RESEND_EVERY;
            return Some(to_edge(f.msg.clone()));
        }
        while let Some(key) = self.order.pop_front() {
            self.queued.remove(&key);
            let Some(msg) = self.store.get(&key).cloned() else { continue };
            self.in_flight = Some(InFlight { key, msg: msg.clone(), sends: 1, next_send: now + RESEND_EVERY });
            return Some(to_edge(msg));
        }
        None
    }

    fn promote_delayed(&mut self, now: Instant) {
        let (ready, waiting): (Vec<_>, Vec<_>) = self.delayed.drain(..).partition(|(at, _)| *at <= now);
        self.delayed = waiting;
        for (_, key) in ready {
            if self.store.contains_key(&key) && self.queued.insert(key.clone()) {
                self.order.push_back(key);
            }
        }
    }

    /// When the queue next needs attention (a resend or a delayed requeue), if it is waiting.
    pub fn next_deadline(&self) -> Option<Instant> {
        let resend = self.in_flight.as_ref().map(|f| f.next_send);
        let delayed = self.delayed.iter().map(|(at, _)| *at).min();
        match (resend, delayed) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// An ACK arrived (a `response` whose `parent_msg_id` is `parent`). Returns the message it
    /// acknowledges, which leaves the queue; `None` when it answers nothing in flight (v1.15
    /// edges also ACK the cloud's replies: harmless).
    pub fn ack(&mut self, parent: &str) -> Option<Message> {
        if self.in_flight.as_ref().is_none_or(|f| f.msg.header.id != parent) {
            return None;
        }
        let f = self.in_flight.take()?;
        self.failures.remove(&f.key);
        // A newer version queued meanwhile stays queued; otherwise the key is done.
        if self.store.get(&f.key).is_some_and(|m| m.header.id == f.msg.header.id) {
            self.store.remove(&f.key);
        }
        Some(f.msg)
    }

    /// Messages waiting (no-ack, reliable and in flight), for metrics.
    pub fn depth(&self) -> usize {
        self.no_ack.len()
            + self.store.len()
            + usize::from(self.in_flight.as_ref().is_some_and(|f| !self.store.contains_key(&f.key)))
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
        assert_eq!(q.ack(&next.header.id).map(|m| m.header.id), Some(next.header.id.clone()));
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
}
