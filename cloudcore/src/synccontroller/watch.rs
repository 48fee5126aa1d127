//! SyncController's watch of the ObjectSyncs (all namespaces): what the other cloudcore replicas
//! record is merged into this replica's record of what each node acknowledged.
//!
//! With several replicas behind a load balancer each edge is served by one of them, and each
//! writes the ObjectSyncs of its own edges' ACKs. Without this watch a replica knew only what it
//! loaded at its start and what its own edges ACKed since: an edge that moved to it (its replica
//! died, or the balancer sent its reconnection elsewhere) met a stale record, and was sent again
//! everything it had acknowledged elsewhere (duplicates), and not sent the deletes of what it
//! received elsewhere and was deleted since.
//!
//! The watch task ([`start`]) decodes the events (typed `ObjectSync`s), keeps only the records
//! SyncController tracks, and hands them to the module task through a bounded channel
//! ([`WATCH_CAP`], backpressure: the watch waits; the API server buffers). kube-rs' watcher
//! re-watches from the last resourceVersion after an error, lists again after a `410 Gone`, and
//! backs off between failures. The module task applies them through its record's only writer
//! ([`Merge::apply`] → [`SyncsWriter`]'s `merge_*` methods), between two other events of its
//! loop: no lock is held across an await, and the record never has two writers.
//!
//! Rules of the merge, and the races with this replica's own writes (its ACKs are set in the
//! record at once; the ObjectSync writes follow from the writer tasks, and their echoes arrive
//! through this watch later still):
//!
//! - **A record only moves forward.** An ObjectSync added, changed or listed at version `v` sets
//!   the record if it is missing or older than `v`. So the late echo of this replica's own write
//!   of `v` after it recorded a newer ACK `w > v` changes nothing, and neither does another
//!   replica's late write of an older version (the node moved away from it while its writer was
//!   behind). A version of 0 (created, status not written yet) teaches nothing.
//! - **A removal here is not undone by a stale echo.** When this replica removes a record (the
//!   node ACKed the object's delete, a failed write was forgotten, the node was deleted), the
//!   echo of an earlier write may still be on its way: the writer remembers the version it
//!   removed until the API shows the ObjectSync deleted, and ignores writes not newer than that
//!   (else the record would come back until the delete's echo, and a reconcile in between would
//!   send the node a second delete).
//! - **A deleted ObjectSync removes the record only if the record is not newer** than what was
//!   deleted: a newer one is an ACK this replica has not written yet (its write then finds no
//!   ObjectSync to patch, fails, and the node is reconciled: at worst one resend, never a loss).
//! - **A relist** (at start, and after the watch lost its place) removes the records the list
//!   lacks (deleted while nobody watched), except the ones set here whose writes the API has
//!   not shown yet.
//! - Local changes the API never shows back (a write that failed, a delete of a record that was
//!   never written) are forgotten after [`LOCAL_CHANGE_TTL`](crate::delivery::syncs::LOCAL_CHANGE_TTL).
//!
//! What stays possible: an edge that moves to this replica within milliseconds of an ACK on its
//! old replica, before that ACK's ObjectSync reaches this watch, may be sent that object once
//! more; so may one whose old replica died with ACKs not yet written (in its writers' queues).
//! Both are re-sends of the latest version, which the edge stores again and ACKs; nothing is
//! lost. The other replicas' ObjectSync writes are not retried here: each replica writes its own
//! edges' records.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kubeedge_apis::reliablesyncs::parse_object_sync_name;
use kubeedge_apis::reliablesyncs::v1alpha1::ObjectSync;
use kubeedge_beehive::Spawner;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::tracked;
use crate::delivery::syncs::{Synced, SyncsWriter};

/// Changes queued from the watch task to the module task; full ⇒ the watch task waits
/// (backpressure onto the API server's watch stream; nothing is dropped).
pub const WATCH_CAP: usize = 1024;

/// How often a watch that keeps failing is reported (kube-rs' backoff spaces the retries).
const WARN_EVERY: Duration = Duration::from_secs(30);

/// One ObjectSync change, decoded: what the module task applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A (re)list begins: the records listed until [`Change::Listed`] are the whole set.
    Relisting,
    /// An ObjectSync exists (added, changed, or listed) with this record.
    Upsert {
        /// The node.
        node: String,
        /// The object's uid.
        uid: String,
        /// What it records.
        synced: Synced,
    },
    /// An ObjectSync was deleted; it recorded version `rv`.
    Delete {
        /// The node.
        node: String,
        /// The object's uid.
        uid: String,
        /// The version it recorded (0 if none).
        rv: u64,
    },
    /// The (re)list is complete.
    Listed,
}

/// The record an ObjectSync holds: (node, uid, record), if it is one SyncController tracks.
fn record_of(os: &ObjectSync) -> Option<(String, String, Synced)> {
    let name = os.metadata.name.as_deref()?;
    let namespace = os.metadata.namespace.clone()?;
    let (node, uid) = parse_object_sync_name(name)?;
    let ty = os.spec.object_kind.to_lowercase();
    if !tracked(&ty) {
        return None;
    }
    let rv = os.status.as_ref().and_then(|s| s.object_resource_version.parse().ok()).unwrap_or(0);
    Some((node.to_owned(), uid.to_owned(), Synced { rv, ty, namespace, name: os.spec.object_name.clone() }))
}

/// The change a watch event makes, if any.
fn change_of(ev: Event<ObjectSync>) -> Option<Change> {
    Some(match ev {
        Event::Init => Change::Relisting,
        Event::InitDone => Change::Listed,
        Event::InitApply(os) | Event::Apply(os) => {
            let (node, uid, synced) = record_of(&os)?;
            Change::Upsert { node, uid, synced }
        }
        Event::Delete(os) => {
            let (node, uid, synced) = record_of(&os)?;
            Change::Delete { node, uid, rv: synced.rv }
        }
    })
}

/// Starts the watch task (one of the module's tasks): it ends at `stop`, or when the returned
/// receiver is dropped (the module's run ended).
pub fn start(client: kube::Client, spawner: &Spawner, stop: CancellationToken) -> mpsc::Receiver<Change> {
    let (tx, rx) = mpsc::channel(WATCH_CAP);
    let api: Api<ObjectSync> = Api::all(client);
    spawner.spawn(run(api, tx, stop).instrument(info_span!("watch", resource = "objectsyncs")));
    rx
}

async fn run(api: Api<ObjectSync>, tx: mpsc::Sender<Change>, stop: CancellationToken) {
    let mut events = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
    let mut warned: Option<tokio::time::Instant> = None;
    loop {
        let ev = tokio::select! {
            _ = stop.cancelled() => return,
            () = tx.closed() => return,
            ev = events.next() => ev,
        };
        // The watcher never ends on its own: errors are retried after its backoff.
        let Some(ev) = ev else { return };
        let change = match ev {
            Ok(ev) => change_of(ev),
            Err(e) => {
                if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    warn!(error = %e, "Watching ObjectSyncs failed; retrying with backoff.");
                    warned = Some(tokio::time::Instant::now());
                }
                continue;
            }
        };
        let Some(change) = change else { continue };
        if tx.send(change).await.is_err() {
            return;
        }
    }
}

/// The module task's side: applies the changes to the record.
#[derive(Default)]
pub struct Merge {
    /// The records listed since the (re)list began; `None` outside a list.
    listing: Option<HashSet<(String, String)>>,
    /// Whether the first list is in (logged once at info).
    listed_once: bool,
}

impl Merge {
    /// Applies one change through the record's writer.
    pub fn apply(&mut self, syncs: &mut SyncsWriter, change: Change) {
        match change {
            Change::Relisting => self.listing = Some(HashSet::new()),
            Change::Upsert { node, uid, synced } => {
                let rv = synced.rv;
                if syncs.merge_remote(&node, &uid, synced) {
                    debug!(node, uid, rv, "Merged an ObjectSync another replica wrote.");
                }
                if let Some(seen) = &mut self.listing {
                    seen.insert((node, uid));
                }
            }
            Change::Delete { node, uid, rv } => {
                if syncs.merge_remote_delete(&node, &uid, rv) {
                    debug!(node, uid, rv, "Removed the record of a deleted ObjectSync.");
                }
            }
            Change::Listed => {
                let Some(seen) = self.listing.take() else { return };
                let removed = syncs.retain_listed(&seen);
                if !self.listed_once || removed > 0 {
                    info!(objectsyncs = seen.len(), removed, "Merged the ObjectSyncs in the API into the record.");
                }
                self.listed_once = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use kube::api::ObjectMeta;
    use kubeedge_apis::reliablesyncs::v1alpha1::{ObjectSyncSpec, ObjectSyncStatus};

    use super::*;
    use crate::delivery::syncs::Syncs;

    fn os(name: &str, kind: &str, rv: Option<&str>) -> ObjectSync {
        ObjectSync {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some("default".to_owned()),
                ..Default::default()
            },
            spec: ObjectSyncSpec { object_api_version: "v1".into(), object_kind: kind.into(), object_name: "p".into() },
            status: rv.map(|rv| ObjectSyncStatus { object_resource_version: rv.into() }),
        }
    }

    #[test]
    fn events_decode_to_the_records_synccontroller_tracks() {
        let up = change_of(Event::Apply(os("edge.a.u-1", "Pod", Some("7"))));
        let want = Synced { rv: 7, ty: "pod".into(), namespace: "default".into(), name: "p".into() };
        assert_eq!(up, Some(Change::Upsert { node: "edge.a".into(), uid: "u-1".into(), synced: want }));
        let del = change_of(Event::Delete(os("e.u-2", "ConfigMap", None)));
        assert_eq!(del, Some(Change::Delete { node: "e".into(), uid: "u-2".into(), rv: 0 }));
        assert_eq!(change_of(Event::Apply(os("e.u-3", "Service", Some("1")))), None, "not tracked");
        assert_eq!(change_of(Event::Apply(os("nodot", "Pod", Some("1")))), None, "not a record name");
        assert_eq!(change_of(Event::Init), Some(Change::Relisting));
        assert_eq!(change_of(Event::InitDone), Some(Change::Listed));
    }

    #[test]
    fn a_relist_replaces_what_vanished_while_unwatched() {
        let syncs = Syncs::default();
        let mut w = SyncsWriter::new(syncs.clone());
        w.track_local_changes();
        let mut m = Merge::default();
        let up = |node: &str, uid: &str, rv| Change::Upsert {
            node: node.into(),
            uid: uid.into(),
            synced: Synced { rv, ty: "pod".into(), namespace: "default".into(), name: uid.into() },
        };
        m.apply(&mut w, up("a", "1", 3));
        m.apply(&mut w, up("a", "2", 3));
        m.apply(&mut w, Change::Relisting);
        m.apply(&mut w, up("a", "1", 4));
        // An ACK recorded here while the list runs, its write still queued.
        w.set("b", "9", Synced { rv: 5, ty: "pod".into(), namespace: "default".into(), name: "9".into() });
        m.apply(&mut w, Change::Listed);
        assert_eq!(syncs.get("a", "1").map(|s| s.rv), Some(4));
        assert!(syncs.get("a", "2").is_none(), "deleted while unwatched");
        assert!(syncs.get("b", "9").is_some(), "not written yet: kept");
        m.apply(&mut w, Change::Delete { node: "a".into(), uid: "1".into(), rv: 4 });
        assert!(syncs.get("a", "1").is_none());
    }
}
