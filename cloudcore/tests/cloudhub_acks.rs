//! Issue #19: the ACK path never drops. Edges of the in-process fleet (real mTLS WebSockets)
//! ACK thousands of messages while SyncController's side of the feed is not read at all — it
//! is saturated. Every session waits and coalesces instead of dropping: once the feed is read,
//! every object's latest acknowledged version is there, exactly once per batch; no message was
//! re-sent for lack of an ACK, and no ACKed version was delivered twice.

mod common;

use std::collections::{HashMap, HashSet};

use cloudcore::delivery::acks;
use common::{PATIENCE, pod_message, setup_with, until_connected};
use kubeedge_hollow::ack_fleet::{FleetEvent, connect_fleet};

const EDGES: usize = 40;
const PODS: usize = 40;
/// Versions of each pod sent one after the other.
const VERSIONS: u64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_synccontroller_loses_no_ack_and_nothing_acked_is_resent() {
    let (feed, inbox) = acks::channel();
    let s = setup_with(EDGES, kubeedge_model::MAX_MESSAGE_SIZE, Some(feed)).await;
    let nodes: Vec<String> = (0..EDGES).map(|i| format!("edge-{i:03}")).collect();
    let mut events = connect_fleet(&s.ca, &s.addr, &nodes, 16, s.stop.clone()).await;
    until_connected(&s.hub, EDGES).await;

    // Every version of every pod, in order per pod: insert v1, then updates, each round
    // delivered before the next is dispatched. The edges receive each version at most once:
    // nothing ACKed comes again.
    let mut sent = 0;
    let mut received: HashSet<(String, String, String)> = HashSet::new();
    let mut latest: HashMap<(String, String), u64> = HashMap::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    for v in 1..=VERSIONS {
        for (n, node) in nodes.iter().enumerate() {
            for p in 0..PODS {
                let op = if v == 1 { "insert" } else { "update" };
                let uid = format!("uid-{n}-{p}");
                assert!(s.hub.dispatch(pod_message(node, &format!("p{p}"), &uid, &(v * 10).to_string(), op)));
                sent += 1;
            }
        }
        while latest.values().filter(|got| **got == v * 10).count() < EDGES * PODS {
            let ev = tokio::time::timeout_at(deadline, events.recv()).await.expect("every version arrives");
            match ev {
                Some(FleetEvent::Received(node, msg)) => {
                    let uid = cloudcore::cloudhub::queue::key_of(&msg);
                    let rv = msg.header.resource_version.clone();
                    assert!(received.insert((node.clone(), uid.clone(), rv.clone())), "{node} got {uid} v{rv} twice");
                    let got = latest.entry((node, uid)).or_default();
                    *got = (*got).max(rv.parse().unwrap());
                }
                Some(FleetEvent::Connected(_)) => {}
                Some(FleetEvent::Disconnected(n)) => panic!("{n} lost its session"),
                None => panic!("the fleet stopped"),
            }
        }
    }
    assert!(received.len() <= sent);

    // Now SyncController reads: one note per object and batch, the newest version last.
    let mut rx = inbox.lock().await;
    let mut noted: HashMap<(String, String), u64> = HashMap::new();
    let (mut batches, mut notes) = (0, 0);
    while noted.values().filter(|v| **v == VERSIONS * 10).count() < EDGES * PODS {
        let batch = tokio::time::timeout(PATIENCE, rx.recv()).await.expect("every ACK is noted").expect("feed open");
        batches += 1;
        let mut in_batch = HashSet::new();
        for n in batch.acks {
            assert!(in_batch.insert(n.uid.clone()), "one note per object in a batch");
            assert_eq!((n.ty.as_str(), n.namespace.as_str()), ("pod", "default"));
            let rv = n.rv.expect("no deletes were sent");
            let v = noted.entry((batch.node.clone(), n.uid)).or_default();
            assert!(rv > *v, "notes of one object arrive in order");
            *v = rv;
            notes += 1;
        }
        assert!(!batch.resync, "no message was dropped before its session");
    }
    assert_eq!(noted.len(), EDGES * PODS);
    // Saturated: sessions waited and coalesced (fewer notes than ACKs, batches of many).
    assert!(notes < received.len(), "notes {notes}, ACKs {}", received.len());
    assert!(batches < received.len(), "batches {batches}");
    println!("{} messages dispatched, {} received and ACKed, {notes} notes in {batches} batches", sent, received.len());
    s.stop.cancel();
}
