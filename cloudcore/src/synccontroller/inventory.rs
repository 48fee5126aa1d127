//! Anti-entropy: what an edge of ours says it holds (`kubeedge_model::protocol::inventory`)
//! compared with what it should hold, and the messages that bring it there.
//!
//! The ObjectSyncs say what an edge *acknowledged*; they can be wrong — an ACK whose record was
//! never written (cloudcore killed in between), then a delete made while cloudcore was down,
//! leaves an object on the edge that no record and no view mentions. The inventory is the
//! edge's own word, so it repairs what the records cannot:
//!
//! - an object the edge holds that it should not (deleted, replaced under the same name, moved
//!   away) → `delete` carrying the uid the edge holds (our edge deletes only that uid); one that
//!   neither the view nor the records know only when two answers in a row show it (the view
//!   may be behind what the edge fetched itself);
//! - an object it holds at an older resourceVersion → `update` (a configmap no pod of the node
//!   uses any more too: it stays while it exists, as upstream keeps it, but current);
//! - an object it should hold and does not → `insert` (a device with its membership);
//! - an object it holds at the current version with no record → the record is written, so the
//!   ObjectSyncs say what the edge has without sending anything.
//!
//! Records are otherwise left to the ACKs of these messages (an ACK newer than the snapshot
//! must not be undone). Everything sent is idempotent and CloudHub's queue keeps only the
//! newest version per object, so a snapshot that raced with deliveries costs a duplicate at
//! most, and the next question repairs anything it missed.

use std::collections::{HashMap, HashSet};

use kubeedge_model::Message;
use kubeedge_model::Operation;
use kubeedge_model::constants::resource_type;
use kubeedge_model::protocol::inventory::Inventory;

use crate::delivery::devices::{DeviceView, MemberDevice, membership_message};
use crate::delivery::messages::{delete_message, object_message};
use crate::delivery::syncs::{Synced, Syncs};
use crate::delivery::view::{Obj, View, api_version_of, kind_of};

/// What a comparison found and what to do.
#[derive(Default)]
pub struct Plan {
    /// Messages for the node, in order.
    pub sends: Vec<Message>,
    /// Records to write: (uid, what the edge holds).
    pub records: Vec<(String, Synced)>,
    /// Objects sent as `insert`.
    pub inserts: usize,
    /// Objects sent as `update`.
    pub updates: usize,
    /// Objects the edge is told to delete.
    pub deletes: usize,
    /// Objects the edge holds that neither the view nor the records know, not deleted yet:
    /// the view may not have caught up with the API (an object the edge fetched itself, e.g. a
    /// configmap it queried or the mirror pod it created). They are deleted when the next
    /// answer still shows them.
    pub suspects: HashSet<String>,
    /// The plan was cut at its largest size: ask again soon.
    pub cut: bool,
}

impl Plan {
    /// Whether nothing differs.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.sends.is_empty() && self.records.is_empty() && self.suspects.is_empty()
    }
}

/// Objects one answer repairs at most (the rest with the next answer): a hostile edge's fake
/// inventory cannot make the cloud queue more than this at once.
pub const MAX_REPAIRS: usize = 5_000;

type Key<'a> = (&'a str, &'a str, &'a str);

/// What the comparison reads.
pub struct Known<'a> {
    /// What the node should hold (of the types compared).
    pub desired: &'a [Obj],
    /// What it acknowledged.
    pub syncs: &'a Syncs,
    /// Whether an unused configmap still exists.
    pub view: &'a View,
    /// A device's membership entry.
    pub devices: Option<&'a DeviceView>,
    /// What the previous answer of this session held unknown ([`Plan::suspects`]).
    pub suspects: &'a HashSet<String>,
}

/// Compares `inv` with what `node` should hold, for the types both asked (`types`) and
/// answered. A configmap no pod of the node uses any more stays while it exists (upstream keeps
/// it) and is kept current (MetaServer serves it); a secret stays as it is (the node may not
/// read it any more).
pub fn plan(node: &str, inv: &Inventory, types: &[&str], k: &Known<'_>) -> Plan {
    let mut p = Plan::default();
    let types: Vec<&str> = types.iter().copied().filter(|t| inv.types.iter().any(|a| a == t)).collect();
    let types = types.as_slice();
    let wanted: HashMap<Key<'_>, &Obj> = k
        .desired
        .iter()
        .filter(|o| types.contains(&o.ty))
        .map(|o| ((o.ty, o.namespace.as_str(), o.name.as_str()), o))
        .collect();
    let mut held: HashSet<&str> = HashSet::new();
    let mut repairs = 0usize;
    for (ty, ns, name, uid, rv) in inv.iter() {
        if !types.contains(&ty) || uid.is_empty() {
            continue;
        }
        held.insert(uid);
        if repairs >= MAX_REPAIRS {
            p.cut = true;
            continue;
        }
        match wanted.get(&(ty, ns, name)) {
            Some(obj) if obj.uid == uid => {
                if rv < obj.since {
                    p.sends.push(object_message(node, obj, Operation::Update));
                    p.updates += 1;
                    repairs += 1;
                } else if k.syncs.get(node, uid).is_none_or(|s| s.rv < rv) {
                    let s = Synced { rv, ty: ty.to_owned(), namespace: ns.to_owned(), name: name.to_owned() };
                    p.records.push((uid.to_owned(), s));
                    repairs += 1;
                }
            }
            // The name now belongs to another object (its insert follows), or nothing of the
            // node's: the held one goes, unless it is a configmap or secret that still exists.
            wanted_other => {
                let existing = (wanted_other.is_none()
                    && (ty == resource_type::CONFIGMAP || ty == resource_type::SECRET))
                    .then(|| k.view.object(&(config_kind(ty), ns.to_owned(), name.to_owned())))
                    .flatten()
                    .filter(|o| o.uid == uid);
                if let Some(obj) = existing {
                    if ty == resource_type::CONFIGMAP && rv < obj.rv {
                        p.sends.push(object_message(node, &obj, Operation::Update));
                        p.updates += 1;
                        repairs += 1;
                    }
                    continue;
                }
                // Unknown to the view and never acknowledged: only when it is seen twice.
                let known = wanted_other.is_some() || k.syncs.get(node, uid).is_some();
                if !known && !k.suspects.contains(uid) {
                    p.suspects.insert(uid.to_owned());
                    continue;
                }
                if ty == resource_type::DEVICE {
                    let gone = MemberDevice { id: format!("{ns}/{name}"), name: name.to_owned(), ..Default::default() };
                    p.sends.push(membership_message(node, vec![], vec![gone]));
                }
                p.sends.push(delete_message(node, ty, api_version_of(ty), kind_of(ty), ns, name, uid));
                p.deletes += 1;
                repairs += 1;
            }
        }
    }
    if inv.truncated {
        // What a cut answer lacks may be held all the same: nothing is inserted.
        return p;
    }
    // What pods and devices use goes first, so it is there when they start.
    let mut missing: Vec<&Obj> = wanted.values().copied().filter(|o| !held.contains(o.uid.as_str())).collect();
    missing.sort_by_key(|o| (matches!(o.ty, resource_type::POD | resource_type::DEVICE), o.ty, &o.namespace, &o.name));
    for obj in missing {
        if repairs >= MAX_REPAIRS {
            p.cut = true;
            break;
        }
        if obj.ty == resource_type::DEVICE
            && let Some(d) = k.devices.and_then(|d| d.device(&obj.namespace, &obj.name))
        {
            p.sends.push(membership_message(node, vec![d.member()], vec![]));
        }
        p.sends.push(object_message(node, obj, Operation::Insert));
        p.inserts += 1;
        repairs += 1;
    }
    p
}

fn config_kind(ty: &str) -> &'static str {
    if ty == resource_type::SECRET { resource_type::SECRET } else { resource_type::CONFIGMAP }
}

#[cfg(test)]
mod tests {
    use kubeedge_model::{CloudResource, Content};

    use super::*;
    use crate::delivery::syncs::SyncsWriter;
    use crate::delivery::view::ViewWriter;

    const TYPES: [&str; 3] = [resource_type::POD, resource_type::CONFIGMAP, resource_type::SECRET];

    fn obj(ty: &'static str, name: &str, uid: &str, rv: u64) -> Obj {
        Obj {
            uid: uid.into(),
            rv,
            since: rv,
            namespace: "default".into(),
            name: name.into(),
            ty,
            content: Content::null(),
        }
    }

    fn what(p: &Plan) -> Vec<String> {
        let mut v: Vec<String> = p
            .sends
            .iter()
            .map(|m| {
                let r = CloudResource::parse(&m.router.resource).unwrap();
                format!("{} {}", m.router.operation, r.path)
            })
            .collect();
        v.sort();
        v
    }

    fn inv(items: &[(&str, &str, &str, u64)]) -> Inventory {
        let mut i = Inventory { types: TYPES.iter().map(|t| (*t).to_owned()).collect(), ..Default::default() };
        for (ty, name, uid, rv) in items {
            i.push(ty, "default", ((*name).into(), (*uid).into(), *rv));
        }
        i
    }

    fn known<'a>(desired: &'a [Obj], syncs: &'a Syncs, view: &'a View, suspects: &'a HashSet<String>) -> Known<'a> {
        Known { desired, syncs, view, devices: None, suspects }
    }

    #[test]
    fn the_edge_is_brought_to_the_view() {
        let view = View::default();
        let mut w = ViewWriter::new(view.clone());
        // Configmaps no pod of the node uses any more, still in the API: they stay, current.
        w.apply_object(obj(resource_type::CONFIGMAP, "unused", "cm-unused", 3));
        w.apply_object(obj(resource_type::CONFIGMAP, "unused-old", "cm-unused-old", 9));
        // A secret no pod uses: left as it is (the node may not read it any more).
        w.apply_object(obj(resource_type::SECRET, "old-secret", "s1", 9));
        let syncs = Syncs::default();
        let desired = vec![
            obj(resource_type::POD, "same", "p1", 10),
            obj(resource_type::POD, "older", "p2", 20),
            obj(resource_type::POD, "missing", "p3", 30),
            obj(resource_type::POD, "replaced", "p4-new", 40),
            obj(resource_type::CONFIGMAP, "cfg", "cm1", 5),
        ];
        let held = inv(&[
            ("pod", "same", "p1", 10),
            ("pod", "older", "p2", 19),
            ("pod", "replaced", "p4-old", 35),
            ("pod", "gone", "p5", 50),
            ("configmap", "deleted-while-down", "cm2", 8),
            ("configmap", "unused", "cm-unused", 3),
            ("configmap", "unused-old", "cm-unused-old", 4),
            ("secret", "old-secret", "s1", 2),
        ]);
        let none = HashSet::new();
        let p = plan("e1", &held, &TYPES, &known(&desired, &syncs, &view, &none));
        assert_eq!(
            what(&p),
            [
                "delete default/pod/replaced",
                "insert default/configmap/cfg",
                "insert default/pod/missing",
                "insert default/pod/replaced",
                "update default/configmap/unused-old",
                "update default/pod/older",
            ]
        );
        assert_eq!((p.inserts, p.updates, p.deletes), (3, 2, 1));
        // The delete of a replaced object names the uid the edge holds.
        let del = p.sends.iter().find(|m| m.router.operation == "delete").unwrap();
        assert!(del.content.raw().contains("p4-old"));
        // What neither the view nor the records know waits for a second answer.
        assert_eq!(p.suspects, HashSet::from(["p5".to_owned(), "cm2".to_owned()]));
        // Held at the current version without a record: recorded, not sent.
        assert_eq!(p.records.len(), 1);
        assert_eq!((p.records[0].0.as_str(), p.records[0].1.rv), ("p1", 10));
        // What pods use is inserted before the pods.
        let inserts: Vec<&Message> = p.sends.iter().filter(|m| m.router.operation == "insert").collect();
        assert!(inserts[0].router.resource.ends_with("configmap/cfg"));

        // The next answer still shows them: deleted.
        let p = plan("e1", &held, &TYPES, &known(&desired, &syncs, &view, &p.suspects));
        let deletes: Vec<String> = what(&p).into_iter().filter(|s| s.starts_with("delete")).collect();
        assert_eq!(
            deletes,
            ["delete default/configmap/deleted-while-down", "delete default/pod/gone", "delete default/pod/replaced"]
        );
        assert!(p.suspects.is_empty());
    }

    #[test]
    fn an_edge_that_holds_what_it_should_costs_nothing() {
        let view = View::default();
        let syncs = Syncs::default();
        let none = HashSet::new();
        let mut sw = SyncsWriter::new(syncs.clone());
        let s = Synced { rv: 10, ty: "pod".into(), namespace: "default".into(), name: "a".into() };
        sw.set("e1", "p1", s);
        let desired = vec![obj(resource_type::POD, "a", "p1", 10)];
        let p = plan("e1", &inv(&[("pod", "a", "p1", 10)]), &TYPES, &known(&desired, &syncs, &view, &none));
        assert!(p.is_empty());
        // A record newer than the snapshot (an ACK after it) is not undone.
        let s = Synced { rv: 12, ty: "pod".into(), namespace: "default".into(), name: "a".into() };
        sw.set("e1", "p1", s);
        let desired = vec![obj(resource_type::POD, "a", "p1", 12)];
        let p = plan("e1", &inv(&[("pod", "a", "p1", 10)]), &TYPES, &known(&desired, &syncs, &view, &none));
        assert_eq!(what(&p), ["update default/pod/a"]);
        assert!(p.records.is_empty());
        // Version 12 changed only the pod's status (the edge's own report): 10 is enough.
        let desired = vec![Obj { since: 10, ..obj(resource_type::POD, "a", "p1", 12) }];
        let p = plan("e1", &inv(&[("pod", "a", "p1", 10)]), &TYPES, &known(&desired, &syncs, &view, &none));
        assert!(p.is_empty());
        // Recorded but gone from the view: deleted at once (the records know it).
        let p = plan("e1", &inv(&[("pod", "a", "p1", 12)]), &TYPES, &known(&[], &syncs, &view, &none));
        assert_eq!(what(&p), ["delete default/pod/a"]);
    }

    #[test]
    fn types_not_asked_or_not_answered_and_cut_answers_are_left_alone() {
        let view = View::default();
        let syncs = Syncs::default();
        let none = HashSet::new();
        let held = inv(&[("device", "d", "d1", 1)]);
        let desired = vec![obj(resource_type::DEVICE, "other", "d2", 1)];
        assert!(plan("e1", &held, &TYPES, &known(&desired, &syncs, &view, &none)).is_empty());
        // Asked but not answered (an older edge, or a bad question): nothing is inserted.
        let mut held = inv(&[]);
        held.types = vec!["configmap".into()];
        let desired = vec![obj(resource_type::POD, "p", "p1", 1)];
        assert!(plan("e1", &held, &TYPES, &known(&desired, &syncs, &view, &none)).is_empty());
        // A cut answer inserts nothing.
        let mut held = inv(&[]);
        held.truncated = true;
        assert!(plan("e1", &held, &TYPES, &known(&desired, &syncs, &view, &none)).is_empty());
    }
}
