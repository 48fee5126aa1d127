//! CloudHub's edge sessions on real mTLS sockets: upstream messages reach the controllers with
//! the node from the connection, unACKed messages are re-sent, a new session replaces the old,
//! the node limit refuses politely, and one bad edge does not disturb the others.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cloudcore::cloudhub::session::Hub;
use common::{PATIENCE, Setup, pod_insert, setup};
use kubeedge_model::{Content, Message};
use kubeedge_pki::{ExtKeyUsage, edge_csr};
use kubeedge_viaduct::{ClientOptions, RawFrame, client_tls, connect};

type Conn = kubeedge_viaduct::Connection<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

fn cert(s: &Setup, node: &str) -> (Vec<u8>, Vec<u8>) {
    let (csr, key) = edge_csr(node).unwrap();
    (s.ca.sign_csr(&csr, 365, &[ExtKeyUsage::ClientAuth]).unwrap(), key)
}

async fn edge(s: &Setup, node: &str) -> Conn {
    let (cert, key) = cert(s, node);
    edge_with(s, node, &cert, &key).await
}

async fn edge_with(s: &Setup, node: &str, cert: &[u8], key: &[u8]) -> Conn {
    let tls = Arc::new(client_tls(s.ca.cert_der(), cert, key).unwrap());
    let opts = ClientOptions {
        server: s.addr.clone(),
        node_id: node.to_owned(),
        project_id: "p".to_owned(),
        max_message: kubeedge_model::MAX_MESSAGE_SIZE,
        handshake_timeout: PATIENCE,
        features: Vec::new(),
    };
    connect(&opts, tls).await.unwrap()
}

async fn until_connected(hub: &Hub, nodes: &[&str]) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while hub.connected() != nodes {
        assert!(tokio::time::Instant::now() < deadline, "connected: {:?}", hub.connected());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn upstream_goes_to_the_controllers_with_the_connections_node() {
    let mut s = setup(10, kubeedge_model::MAX_MESSAGE_SIZE).await;
    let mut e = edge(&s, "edge-1").await;
    until_connected(&s.hub, &["edge-1"]).await;
    // The message claims another node in its resource: the connection's node wins.
    let patch = Message::build("edged", "meta", "default/podpatch/web", "patch", Content::string("{}"));
    e.send(&patch).await.unwrap();
    let got = tokio::time::timeout(PATIENCE, s.upstream.recv()).await.unwrap().unwrap();
    assert_eq!(got.router.resource, "node/edge-1/default/podpatch/web");
    assert_eq!(got.header.id, patch.header.id);
    // Keepalives and the v1.15 shutdown frame are not forwarded.
    e.send(&Message::build("websocket", "resource", "node", "keepalive", Content::string("ping"))).await.unwrap();
    e.send_raw(RawFrame::text(r#"{"header":{"msg_id":"","timestamp":0},"route":{},"content":null}"#)).await.unwrap();
    let next = Message::build("edged", "meta", "default/podpatch/web2", "patch", Content::string("{}"));
    e.send(&next).await.unwrap();
    let got = tokio::time::timeout(PATIENCE, s.upstream.recv()).await.unwrap().unwrap();
    assert_eq!(got.header.id, next.header.id, "nothing else came first");
    s.stop.cancel();
}

#[tokio::test]
async fn an_edge_that_withholds_acks_sees_resends() {
    let s = setup(10, kubeedge_model::MAX_MESSAGE_SIZE).await;
    let mut e = edge(&s, "edge-1").await;
    until_connected(&s.hub, &["edge-1"]).await;
    assert!(s.hub.dispatch(pod_insert("edge-1", "u1", "7")));
    let first = tokio::time::timeout(PATIENCE, e.recv()).await.unwrap().unwrap().unwrap();
    assert_eq!(first.router.resource, "default/pod/web", "the edge sees the edge form");
    // No ACK: the same message comes again (after 5 s).
    let again = tokio::time::timeout(PATIENCE, e.recv()).await.unwrap().unwrap().unwrap();
    assert_eq!(again.header.id, first.header.id);
    // ACK it as MetaManager would; the next object follows, the first is not re-sent.
    e.send(&Message::response_to(&again, Content::string("OK"))).await.unwrap();
    assert!(s.hub.dispatch(pod_insert("edge-1", "u2", "8")));
    let second = tokio::time::timeout(PATIENCE, e.recv()).await.unwrap().unwrap().unwrap();
    assert_eq!(second.header.resource_version, "8");
    assert!(!s.hub.dispatch(pod_insert("edge-9", "u3", "9")), "not connected: dropped");
    s.stop.cancel();
}

/// The ACK a real upstream edgecore v1.15.4 sent (`real-pair/transcript.jsonl`), for the
/// message `parent`: the recorded frame with its ids replaced.
fn recorded_upstream_ack(parent: &Message) -> RawFrame {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/upstream/real-pair/transcript.jsonl"
    ))
    .unwrap();
    let frame = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["dir"] == "edge->cloud")
        .filter_map(|r| r["raw"].as_str().map(str::to_owned))
        .find(|raw| raw.contains(r#""operation":"response""#) && raw.contains(r#""content":"OK""#))
        .expect("the transcript has an upstream ACK");
    let recorded: Message = serde_json::from_str(&frame).unwrap();
    let frame = frame
        .replace(&recorded.header.parent_id, &parent.header.id)
        .replace(&recorded.header.id, &Message::new().header.id)
        .replace(&recorded.router.resource, &parent.router.resource);
    RawFrame::text(frame)
}

#[tokio::test]
async fn a_window_in_flight_acked_out_of_order_by_an_upstream_edge() {
    let s = setup(10, kubeedge_model::MAX_MESSAGE_SIZE).await;
    let mut e = edge(&s, "edge-1").await;
    until_connected(&s.hub, &["edge-1"]).await;
    let window = cloudcore::cloudhub::session::DEFAULT_WINDOW;
    let same = |rv: &str| common::pod_message("edge-1", "same", "u-same", rv, "update");
    assert!(s.hub.dispatch(same("6")));
    for i in 0..window + 3 {
        assert!(s.hub.dispatch(common::pod_message("edge-1", &format!("p{i}"), &format!("u{i}"), "5", "insert")));
    }
    let mut first = Vec::new();
    for _ in 0..window {
        first.push(tokio::time::timeout(PATIENCE, e.recv()).await.unwrap().unwrap().unwrap());
    }
    // Newer versions of an object in flight wait for its ACK, the middle one superseded.
    assert!(s.hub.dispatch(same("7")));
    assert!(s.hub.dispatch(same("8")));
    // The window is full: nothing more until an ACK (a resend would take 5 s).
    assert!(tokio::time::timeout(Duration::from_millis(500), e.recv()).await.is_err(), "at most the window");
    // ACKed in reverse order, with the frames an upstream edge writes.
    for m in first.iter().rev() {
        e.send_raw(recorded_upstream_ack(m)).await.unwrap();
    }
    let mut rest = Vec::new();
    while rest.len() < 5 {
        let m = tokio::time::timeout(PATIENCE, e.recv()).await.unwrap().unwrap().unwrap();
        assert!(first.iter().all(|f| f.header.id != m.header.id), "an ACKed message came again");
        if m.router.resource.ends_with("/same") {
            e.send_raw(recorded_upstream_ack(&m)).await.unwrap();
        }
        rest.push(m);
    }
    let same: Vec<&str> = first
        .iter()
        .chain(&rest)
        .filter(|m| m.router.resource.ends_with("/same"))
        .map(|m| m.header.resource_version.as_str())
        .collect();
    assert_eq!(same, ["6", "8"], "one object's versions in order, the superseded one skipped");
    s.stop.cancel();
}

#[tokio::test]
async fn a_new_session_replaces_the_old_and_the_limit_refuses() {
    let s = setup(1, kubeedge_model::MAX_MESSAGE_SIZE).await;
    let older = cert(&s, "edge-1");
    tokio::time::sleep(Duration::from_millis(1100)).await; // a strictly later notBefore
    let current = cert(&s, "edge-1");
    let mut old = edge_with(&s, "edge-1", &current.0, &current.1).await;
    until_connected(&s.hub, &["edge-1"]).await;
    // An older certificate of the node may not take the session: closed, the old one stays.
    let mut stale = edge_with(&s, "edge-1", &older.0, &older.1).await;
    let refused = tokio::time::timeout(PATIENCE, stale.recv()).await.unwrap();
    assert!(matches!(refused, Ok(None) | Err(_)), "{refused:?}");
    assert!(s.hub.dispatch(pod_insert("edge-1", "u0", "1")));
    assert!(tokio::time::timeout(PATIENCE, old.recv()).await.unwrap().unwrap().is_some(), "the session lives on");
    // The same certificate (the edge reconnecting before its old connection was noticed
    // gone) replaces the session.
    let mut new = edge_with(&s, "edge-1", &current.0, &current.1).await;
    // The old session ends.
    let ended = tokio::time::timeout(PATIENCE, old.recv()).await.unwrap();
    assert!(matches!(ended, Ok(None) | Err(_)), "{ended:?}");
    until_connected(&s.hub, &["edge-1"]).await;
    assert!(s.hub.dispatch(pod_insert("edge-1", "u1", "1")));
    assert!(tokio::time::timeout(PATIENCE, new.recv()).await.unwrap().unwrap().is_some());
    // The limit is 1: another node is refused with a close frame.
    let mut other = edge(&s, "edge-2").await;
    let refused = tokio::time::timeout(PATIENCE, other.recv()).await.unwrap();
    assert!(matches!(refused, Ok(None)), "{refused:?}");
    assert_eq!(s.hub.connected(), ["edge-1"]);
    s.stop.cancel();
}

#[tokio::test]
async fn a_bad_edge_only_hurts_itself() {
    let mut s = setup(10, 64 * 1024).await;
    let mut good = edge(&s, "good").await;
    let mut bad = edge(&s, "bad").await;
    until_connected(&s.hub, &["bad", "good"]).await;
    // Garbage is dropped (one warning, then one every 10 s with a count); the session lives on.
    for _ in 0..1_000 {
        bad.send_raw(RawFrame::text("this is not json\n")).await.unwrap();
    }
    let ok = Message::build("edged", "meta", "default/podpatch/x", "patch", Content::string("{}"));
    bad.send(&ok).await.unwrap();
    let got = tokio::time::timeout(PATIENCE, s.upstream.recv()).await.unwrap().unwrap();
    assert_eq!(got.header.id, ok.header.id);
    // An oversized frame ends that session only.
    let _ = bad.send_raw(RawFrame::text("x".repeat(100 * 1024))).await;
    until_connected(&s.hub, &["good"]).await;
    let fine = Message::build("edged", "meta", "default/podpatch/y", "patch", Content::string("{}"));
    good.send(&fine).await.unwrap();
    let got = tokio::time::timeout(PATIENCE, s.upstream.recv()).await.unwrap().unwrap();
    assert_eq!(got.router.resource, "node/good/default/podpatch/y");
    s.stop.cancel();
}
