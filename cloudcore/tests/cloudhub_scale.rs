//! 1,000 edges (the in-process fleet, each with its own certificate, over real mTLS) connected
//! to one CloudHub, each receiving and ACKing a pod.

mod common;

use std::collections::HashSet;

use common::{PATIENCE, pod_insert, setup, until_connected};
use kubeedge_hollow::ack_fleet::{FleetEvent, connect_fleet};

const EDGES: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_edges_connect_and_ack() {
    let s = setup(EDGES, kubeedge_model::MAX_MESSAGE_SIZE).await;
    let nodes: Vec<String> = (0..EDGES).map(|i| format!("edge-{i:04}")).collect();
    let mut events = connect_fleet(&s.ca, &s.addr, &nodes, 32, s.stop.clone()).await;
    until_connected(&s.hub, EDGES).await;
    for (i, n) in nodes.iter().enumerate() {
        assert!(s.hub.dispatch(pod_insert(n, &format!("uid-{i}"), "1")), "{n}");
    }
    let mut got = HashSet::new();
    while got.len() < EDGES {
        match tokio::time::timeout(PATIENCE, events.recv()).await.expect("every edge gets its pod") {
            Some(FleetEvent::Received(node, msg)) => {
                assert_eq!(msg.router.resource, "default/pod/web");
                got.insert(node);
            }
            Some(FleetEvent::Connected(_)) => {}
            Some(FleetEvent::Disconnected(n)) => panic!("{n} lost its session"),
            None => panic!("the fleet stopped"),
        }
    }
    assert_eq!(s.hub.connected().len(), EDGES);
    s.stop.cancel();
}
