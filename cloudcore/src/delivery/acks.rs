//! ACK notices, from CloudHub's sessions to SyncController, with backpressure and never
//! dropped. Each session coalesces what its node acknowledged ([`Pending`]: the latest ACK per
//! object wins) and hands it over as one batch at a time ([`AckFeed`]); while SyncController
//! is behind, the batch waits and the next one grows, bounded by the objects the node holds.
//!
//! A batch can also ask SyncController to reconcile the node ([`Notes::resync`]): a message
//! for it was dropped before it reached its session (the session's inbox was full).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use kubeedge_model::constants::resource_type;
use kubeedge_model::{CloudResource, Message, Operation};
use tokio::sync::mpsc;

/// Batches waiting for SyncController, at most (one per session at a time).
const FEED_CAPACITY: usize = 1024;

/// One acknowledged object message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckNote {
    /// The object's UID.
    pub uid: String,
    /// The edge resource type (`pod`, `configmap`, …).
    pub ty: String,
    /// The object's namespace.
    pub namespace: String,
    /// The object's name.
    pub name: String,
    /// The acknowledged resourceVersion; `None` for a delete.
    pub rv: Option<u64>,
}

impl AckNote {
    /// The note of `msg` (cloud form, `node/{node}/…`) keyed `uid`, when it carries an object
    /// whose delivery is recorded (`tracked` says which types are).
    pub fn of(uid: &str, msg: &Message, tracked: impl Fn(&str) -> bool) -> Option<Self> {
        let res = CloudResource::parse(&msg.router.resource).ok()?;
        let ty = res.path.resource_type.as_str();
        if !tracked(ty) || uid.is_empty() || uid == msg.header.id {
            return None;
        }
        let rv = match msg.operation() {
            Operation::Delete => None,
            _ => Some(msg.header.resource_version.parse().ok()?),
        };
        Some(Self {
            uid: uid.to_owned(),
            ty: ty.to_owned(),
            namespace: res.path.namespace()?.to_owned(),
            name: res.path.name.clone().unwrap_or_default(),
            rv,
        })
    }

    /// Whether the note is of a device or a device model.
    pub fn is_device(&self) -> bool {
        self.ty == resource_type::DEVICE || self.ty == resource_type::DEVICE_MODEL
    }
}

/// A session's batch.
#[derive(Debug, Default)]
pub struct Notes {
    /// The node.
    pub node: String,
    /// What it acknowledged, one note per object, in the order first acknowledged.
    pub acks: Vec<AckNote>,
    /// Reconcile the node: a message for it was dropped.
    pub resync: bool,
}

/// The sending side, held by CloudHub. Cheap to clone.
#[derive(Clone)]
pub struct AckFeed(mpsc::Sender<Notes>);

impl AckFeed {
    /// Hands a batch over, waiting while SyncController is behind; false once it is gone.
    pub async fn send(&self, notes: Notes) -> bool {
        self.0.send(notes).await.is_ok()
    }
}

/// The receiving side, held by SyncController; it survives the module's restarts.
#[derive(Clone)]
pub struct AckInbox(Arc<tokio::sync::Mutex<mpsc::Receiver<Notes>>>);

impl AckInbox {
    /// The receiver, for one run of the module.
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, mpsc::Receiver<Notes>> {
        self.0.lock().await
    }
}

/// A feed and its inbox.
pub fn channel() -> (AckFeed, AckInbox) {
    let (tx, rx) = mpsc::channel(FEED_CAPACITY);
    (AckFeed(tx), AckInbox(Arc::new(tokio::sync::Mutex::new(rx))))
}

/// One session's notes not yet handed over, coalesced per object.
#[derive(Default)]
pub struct Pending {
    order: VecDeque<String>,
    notes: HashMap<String, AckNote>,
    resync: bool,
}

impl Pending {
    /// Adds a note; a later note of the same object replaces the earlier one.
    pub fn push(&mut self, note: AckNote) {
        if let Some(old) = self.notes.get_mut(&note.uid) {
            *old = note;
        } else {
            self.order.push_back(note.uid.clone());
            self.notes.insert(note.uid.clone(), note);
        }
    }

    /// Asks for the node to be reconciled with the next batch.
    pub fn resync(&mut self) {
        self.resync = true;
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty() && !self.resync
    }

    /// Notes waiting.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Everything waiting, as `node`'s batch.
    pub fn take(&mut self, node: &str) -> Option<Notes> {
        if self.is_empty() {
            return None;
        }
        let acks = self.order.drain(..).filter_map(|uid| self.notes.remove(&uid)).collect();
        Some(Notes { node: node.to_owned(), acks, resync: std::mem::take(&mut self.resync) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubeedge_model::Content;

    fn msg(op: &str, res: &str, rv: &str) -> Message {
        let mut m = Message::build("edgecontroller", "resource", res, op, Content::null());
        m.header.resource_version = rv.to_owned();
        m
    }

    #[test]
    fn notes_name_the_object_and_skip_what_is_not_recorded() {
        let all = |_: &str| true;
        let n = AckNote::of("u1", &msg("update", "node/e/default/pod/web", "7"), all).unwrap();
        assert_eq!((n.ty.as_str(), n.namespace.as_str(), n.name.as_str(), n.rv), ("pod", "default", "web", Some(7)));
        assert_eq!(AckNote::of("u1", &msg("delete", "node/e/default/pod/web", ""), all).unwrap().rv, None);
        assert!(AckNote::of("u1", &msg("update", "node/e/default/pod/web", ""), all).is_none(), "no version");
        assert!(AckNote::of("u1", &msg("update", "node/e/default/pod/web", "7"), |t| t != "pod").is_none());
        let keyed_by_id = msg("update", "node/e/default/pod/web", "7");
        assert!(AckNote::of(&keyed_by_id.header.id, &keyed_by_id, all).is_none(), "no UID");
    }

    #[test]
    fn pending_keeps_the_latest_note_per_object_in_first_order() {
        let mut p = Pending::default();
        let note = |uid: &str, rv| AckNote {
            uid: uid.into(),
            ty: "pod".into(),
            namespace: "default".into(),
            name: uid.into(),
            rv,
        };
        assert!(p.take("e").is_none());
        p.push(note("a", Some(1)));
        p.push(note("b", Some(1)));
        p.push(note("a", Some(2)));
        p.push(note("a", None));
        assert_eq!(p.len(), 2);
        let batch = p.take("e").unwrap();
        assert_eq!(batch.node, "e");
        assert_eq!(batch.acks, vec![note("a", None), note("b", Some(1))]);
        assert!(!batch.resync && p.is_empty());
        p.resync();
        let batch = p.take("e").unwrap();
        assert!(batch.resync && batch.acks.is_empty());
        assert!(p.take("e").is_none());
    }
}
