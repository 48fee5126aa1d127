//! What each edge node acknowledged: the latest resourceVersion per object, filled from the
//! ACKs CloudHub reports and the ObjectSyncs in the API. SyncController's module task is the
//! only writer ([`SyncsWriter`]); EdgeController reads ([`Syncs`]) so it does not send what a
//! node has.

use std::collections::HashMap;
use std::sync::Arc;

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
pub struct SyncsWriter(Syncs);

impl SyncsWriter {
    /// The writer of `syncs`. Crate-private: SyncController makes one per run, after the
    /// previous run's tasks ended.
    pub(crate) fn new(syncs: Syncs) -> Self {
        Self(syncs)
    }

    /// The read side.
    pub fn syncs(&self) -> &Syncs {
        &self.0
    }

    /// Replaces every record at once (a load from the ObjectSyncs): readers see the old set or
    /// the new one, never a half-loaded one.
    pub fn replace_all(&mut self, records: impl IntoIterator<Item = (String, String, Synced)>) {
        let mut all = Records::new();
        for (node, uid, s) in records {
            all.entry(node).or_default().insert(uid, s);
        }
        *self.0.0.write() = all;
    }

    /// Sets the record.
    pub fn set(&mut self, node: &str, uid: &str, s: Synced) {
        self.0.0.write().entry(node.to_owned()).or_default().insert(uid.to_owned(), s);
    }

    /// Removes the record.
    pub fn remove(&mut self, node: &str, uid: &str) -> Option<Synced> {
        let mut g = self.0.0.write();
        let n = g.get_mut(node)?;
        let out = n.remove(uid);
        if n.is_empty() {
            g.remove(node);
        }
        out
    }

    /// Removes the record if it still says `rv` (a newer ACK may have replaced it).
    pub fn remove_if_at(&mut self, node: &str, uid: &str, rv: u64) {
        if self.0.get(node, uid).is_some_and(|s| s.rv == rv) {
            self.remove(node, uid);
        }
    }
}
