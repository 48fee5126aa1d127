//! What each edge node acknowledged: the latest resourceVersion per object, filled from the
//! ACKs CloudHub reports and the ObjectSyncs in the API. SyncController's module task is the
//! only writer ([`SyncsWriter`]); EdgeController reads ([`Syncs`]) so it does not send what a
//! node has.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;

/// What a node acknowledged of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synced {
    /// The acknowledged resourceVersion.
    pub rv: u64,
    /// The edge resource type (`pod`, `configmap`, `secret`).
    pub ty: String,
    /// The object's namespace.
    pub namespace: String,
    /// The object's name.
    pub name: String,
}

type Records = HashMap<String, HashMap<String, Synced>>;

/// Acknowledged versions per node and uid, read side. Cheap to clone. Indexed by node first:
/// the reconcile loop reads one node's records at a time, and a scan of every record per node
/// would cost nodes × objects per loop (10^9 at 10,000 nodes × 10 pods).
#[derive(Clone, Default)]
pub struct Syncs(Arc<RwLock<Records>>);

impl Syncs {
    /// Whether `node` acknowledged `uid` at `rv` or newer.
    pub fn is_current(&self, node: &str, uid: &str, rv: u64) -> bool {
        self.0.read().get(node).and_then(|n| n.get(uid)).is_some_and(|s| s.rv >= rv)
    }

    /// The acknowledged version of (node, uid), without copying the record.
    fn rv(&self, node: &str, uid: &str) -> Option<u64> {
        self.0.read().get(node).and_then(|n| n.get(uid)).map(|s| s.rv)
    }

    /// The record for (node, uid).
    pub fn get(&self, node: &str, uid: &str) -> Option<Synced> {
        self.0.read().get(node).and_then(|n| n.get(uid)).cloned()
    }

    /// Every record of `node`: (uid, record).
    pub fn for_node(&self, node: &str) -> Vec<(String, Synced)> {
        self.0.read().get(node).map(|n| n.iter().map(|(u, s)| (u.clone(), s.clone())).collect()).unwrap_or_default()
    }

    /// Every (node, uid, namespace) recorded.
    pub fn all(&self) -> Vec<(String, String, String)> {
        let g = self.0.read();
        g.iter().flat_map(|(n, m)| m.iter().map(|(u, s)| (n.clone(), u.clone(), s.namespace.clone()))).collect()
    }
}

/// The records' only writer, owned by SyncController's module task. Not `Clone`.
///
/// With several cloudcore replicas, the ObjectSyncs other replicas write are merged in through
/// [`SyncsWriter::merge_remote`] and its siblings (SyncController's ObjectSync watch). To tell
/// a stale echo of its own writes from news, the writer then remembers its own recent changes
/// that the API has not shown back yet ([`SyncsWriter::track_local_changes`]).
pub struct SyncsWriter {
    syncs: Syncs,
    /// This replica's recent changes, while a watch merges the API's; `None` without one.
    local: Option<LocalChanges>,
}

/// A record's key: (node, uid).
type Key = (String, String);

/// How long a local change waits for the API to show it back (the ObjectSync write, then the
/// watch event) before it is forgotten: far above the usual lag (milliseconds; seconds while
/// the writers are behind), and a bound on the memory kept when an echo never comes (a write
/// that failed, a delete of a record that was never written).
pub const LOCAL_CHANGE_TTL: Duration = Duration::from_secs(120);

/// This replica's own changes to the records that the API has not shown back yet.
#[derive(Default)]
struct LocalChanges {
    /// Records set here (an ACK, an edge's inventory) whose ObjectSync write the watch has not
    /// shown yet: the version set and when. A relist keeps them (their write may be queued).
    unconfirmed: HashMap<Key, (u64, Instant)>,
    /// Records removed here (a delete ACKed, a failed write forgotten, a deleted node): the
    /// version removed (`u64::MAX` when there was none: the node deleted the object, nothing of
    /// it can be newer) and when. An echo not newer than that is stale and does not bring the
    /// record back.
    removed: HashMap<Key, (u64, Instant)>,
    /// Both, oldest first, for expiry; an entry whose key changed since is skipped.
    order: VecDeque<(Instant, Key)>,
}

impl LocalChanges {
    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.saturating_duration_since(*at) < LOCAL_CHANGE_TTL {
                break;
            }
            let Some((at, key)) = self.order.pop_front() else { break };
            if self.unconfirmed.get(&key).is_some_and(|(_, t)| *t == at) {
                self.unconfirmed.remove(&key);
            }
            if self.removed.get(&key).is_some_and(|(_, t)| *t == at) {
                self.removed.remove(&key);
            }
        }
    }

    fn set(&mut self, key: Key, rv: u64, now: Instant) {
        self.expire(now);
        self.removed.remove(&key);
        self.unconfirmed.insert(key.clone(), (rv, now));
        self.order.push_back((now, key));
    }

    fn removed(&mut self, key: Key, rv: u64, now: Instant) {
        self.expire(now);
        self.unconfirmed.remove(&key);
        self.removed.insert(key.clone(), (rv, now));
        self.order.push_back((now, key));
    }
}

impl SyncsWriter {
    /// The writer of `syncs`. Crate-private: SyncController makes one per run, after the
    /// previous run's tasks ended.
    pub(crate) fn new(syncs: Syncs) -> Self {
        Self { syncs, local: None }
    }

    /// The read side.
    pub fn syncs(&self) -> &Syncs {
        &self.syncs
    }

    /// Remembers this writer's own changes until the API shows them back, so the `merge_*`
    /// methods can tell a stale echo from another replica's news. Turned on by whoever merges
    /// the API's records in (otherwise nothing would ever confirm them).
    pub fn track_local_changes(&mut self) {
        self.local.get_or_insert_with(LocalChanges::default);
    }

    /// Replaces every record at once (a load from the ObjectSyncs): readers see the old set or
    /// the new one, never a half-loaded one. Local changes are forgotten: the load is the API's.
    pub fn replace_all(&mut self, records: impl IntoIterator<Item = (String, String, Synced)>) {
        let mut all = Records::new();
        for (node, uid, s) in records {
            all.entry(node).or_default().insert(uid, s);
        }
        *self.syncs.0.write() = all;
        if let Some(l) = &mut self.local {
            *l = LocalChanges::default();
        }
    }

    /// Sets the record.
    pub fn set(&mut self, node: &str, uid: &str, s: Synced) {
        if let Some(l) = &mut self.local {
            l.set((node.to_owned(), uid.to_owned()), s.rv, Instant::now());
        }
        self.put(node, uid, s);
    }

    fn put(&mut self, node: &str, uid: &str, s: Synced) {
        self.syncs.0.write().entry(node.to_owned()).or_default().insert(uid.to_owned(), s);
    }

    /// Removes the record.
    pub fn remove(&mut self, node: &str, uid: &str) -> Option<Synced> {
        let out = self.take(node, uid);
        if let Some(l) = &mut self.local {
            let rv = out.as_ref().map_or(u64::MAX, |s| s.rv);
            l.removed((node.to_owned(), uid.to_owned()), rv, Instant::now());
        }
        out
    }

    fn take(&mut self, node: &str, uid: &str) -> Option<Synced> {
        let mut g = self.syncs.0.write();
        let n = g.get_mut(node)?;
        let out = n.remove(uid);
        if n.is_empty() {
            g.remove(node);
        }
        out
    }

    /// Removes the record if it still says `rv` (a newer ACK may have replaced it).
    pub fn remove_if_at(&mut self, node: &str, uid: &str, rv: u64) {
        if self.syncs.get(node, uid).is_some_and(|s| s.rv == rv) {
            self.remove(node, uid);
        }
    }

    // === merging what the API holds (other replicas' writes, and the echo of ours) ===

    /// The API holds the ObjectSync of (`node`, `uid`) at `s.rv` (added, changed, or listed).
    /// A record only moves forward: it is set when it is missing or older, unless this
    /// replica removed it at that version or a newer one since (a stale echo of a record the
    /// node has deleted). A version of 0 (created, no ACK recorded yet) sets nothing. Returns
    /// whether the record changed.
    pub fn merge_remote(&mut self, node: &str, uid: &str, s: Synced) -> bool {
        if let Some(l) = &mut self.local {
            let key = (node.to_owned(), uid.to_owned());
            if l.unconfirmed.get(&key).is_some_and(|(rv, _)| *rv <= s.rv) {
                l.unconfirmed.remove(&key);
            }
            match l.removed.get(&key) {
                Some((rv, _)) if *rv >= s.rv => return false,
                Some(_) => {
                    l.removed.remove(&key);
                }
                None => {}
            }
        }
        if s.rv == 0 || self.syncs.rv(node, uid).is_some_and(|cur| cur >= s.rv) {
            return false;
        }
        self.put(node, uid, s);
        true
    }

    /// The ObjectSync of (`node`, `uid`) was deleted; it said `rv`. The record goes unless it is
    /// newer (an ACK this replica has not written yet). Returns whether it went.
    pub fn merge_remote_delete(&mut self, node: &str, uid: &str, rv: u64) -> bool {
        if let Some(l) = &mut self.local {
            let key = (node.to_owned(), uid.to_owned());
            // This replica's removal, if any, is done in the API now.
            l.removed.remove(&key);
            if l.unconfirmed.get(&key).is_some_and(|(r, _)| *r <= rv) {
                l.unconfirmed.remove(&key);
            }
        }
        if self.syncs.rv(node, uid).is_some_and(|cur| cur <= rv) {
            self.take(node, uid);
            return true;
        }
        false
    }

    /// A complete list of the ObjectSyncs is in (`listed`: every key it held, after
    /// [`SyncsWriter::merge_remote`] of each): records it lacks were deleted while nobody
    /// watched and go, except those set here that the API has not shown yet (their write may
    /// still be queued). Returns how many went.
    pub fn retain_listed(&mut self, listed: &HashSet<Key>) -> usize {
        if let Some(l) = &mut self.local {
            l.removed.retain(|k, _| listed.contains(k));
        }
        let unconfirmed = self.local.as_ref().map(|l| &l.unconfirmed);
        let mut gone = 0;
        let mut g = self.syncs.0.write();
        g.retain(|node, records| {
            records.retain(|uid, _| {
                let key = (node.clone(), uid.clone());
                let keep = listed.contains(&key) || unconfirmed.is_some_and(|u| u.contains_key(&key));
                gone += usize::from(!keep);
                keep
            });
            !records.is_empty()
        });
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(rv: u64) -> Synced {
        Synced { rv, ty: "pod".into(), namespace: "default".into(), name: "p".into() }
    }

    fn key(node: &str, uid: &str) -> Key {
        (node.to_owned(), uid.to_owned())
    }

    fn tracked() -> (Syncs, SyncsWriter) {
        let syncs = Syncs::default();
        let mut w = SyncsWriter::new(syncs.clone());
        w.track_local_changes();
        (syncs, w)
    }

    #[test]
    fn another_replicas_record_only_moves_forward() {
        let (syncs, mut w) = tracked();
        assert!(w.merge_remote("n", "u", s(5)));
        assert!(!w.merge_remote("n", "u", s(4)), "an older write does not go back");
        assert!(!w.merge_remote("n", "u", s(5)));
        assert!(w.merge_remote("n", "u", s(9)));
        assert_eq!(syncs.get("n", "u").map(|r| r.rv), Some(9));
        assert!(!w.merge_remote("n", "v", s(0)), "created without an ACK recorded: nothing to learn");
        assert!(syncs.get("n", "v").is_none());
    }

    #[test]
    fn the_echo_of_a_removed_record_does_not_bring_it_back() {
        let (syncs, mut w) = tracked();
        // An ACK of rv 5, then the node's ACK of the delete, before the watch showed either.
        w.set("n", "u", s(5));
        w.remove("n", "u");
        assert!(!w.merge_remote("n", "u", s(5)), "the late echo of the write is stale");
        assert!(syncs.get("n", "u").is_none());
        assert!(!w.merge_remote_delete("n", "u", 5));
        // The removal is confirmed: the key is free again.
        assert!(w.merge_remote("n", "u", s(6)));
        // A delete ACKed for a record this replica never had: nothing of it is newer.
        w.remove("n", "x");
        assert!(!w.merge_remote("n", "x", s(100)));
    }

    #[test]
    fn a_deleted_objectsync_removes_only_what_is_not_newer() {
        let (syncs, mut w) = tracked();
        w.merge_remote("n", "u", s(5));
        assert!(w.merge_remote_delete("n", "u", 5));
        assert!(syncs.get("n", "u").is_none());
        // This replica recorded a newer ACK (its write is queued) when another one's delete of
        // the older record arrives: the newer one stays.
        w.merge_remote("n", "v", s(5));
        w.set("n", "v", s(8));
        assert!(!w.merge_remote_delete("n", "v", 5));
        assert_eq!(syncs.get("n", "v").map(|r| r.rv), Some(8));
    }

    #[test]
    fn a_relist_drops_what_vanished_but_keeps_unwritten_acks() {
        let (syncs, mut w) = tracked();
        w.merge_remote("n", "listed", s(3));
        w.merge_remote("n", "vanished", s(3));
        w.set("n", "queued", s(4));
        w.set("n", "written", s(4));
        assert!(!w.merge_remote("n", "written", s(4)), "the echo confirms it");
        w.remove("n", "gone");
        let listed: HashSet<Key> = [key("n", "listed")].into();
        assert_eq!(w.retain_listed(&listed), 2, "vanished and written go; queued stays");
        assert!(syncs.get("n", "listed").is_some() && syncs.get("n", "queued").is_some());
        assert!(syncs.get("n", "vanished").is_none() && syncs.get("n", "written").is_none());
        // The removal of "gone" is confirmed by its absence.
        assert!(w.merge_remote("n", "gone", s(1)));
    }

    #[test]
    fn local_changes_are_forgotten_after_their_ttl() {
        let mut l = LocalChanges::default();
        let t0 = Instant::now();
        l.set(key("n", "a"), 1, t0);
        l.removed(key("n", "b"), 1, t0);
        l.set(key("n", "a"), 2, t0 + Duration::from_secs(60));
        l.expire(t0 + LOCAL_CHANGE_TTL);
        assert!(l.removed.is_empty(), "b expired");
        assert_eq!(l.unconfirmed.get(&key("n", "a")).map(|e| e.0), Some(2), "a was set again since");
        l.expire(t0 + LOCAL_CHANGE_TTL + Duration::from_secs(60));
        assert!(l.unconfirmed.is_empty() && l.order.is_empty());
    }

    #[test]
    fn without_tracking_nothing_is_remembered() {
        let syncs = Syncs::default();
        let mut w = SyncsWriter::new(syncs.clone());
        w.set("n", "u", s(5));
        w.remove("n", "u");
        assert!(w.local.is_none());
        assert!(w.merge_remote("n", "u", s(5)), "no watch, no memory: the API's record is taken");
    }
}
