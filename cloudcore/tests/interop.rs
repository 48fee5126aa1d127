//! Issue #13, against the recording of a real upstream cloudcore ⇄ edgecore v1.15.4 pair
//! (`tests/fixtures/upstream/real-pair/`): every request the upstream edge made, replayed by a
//! scripted edge against our cloudcore binary, gets a reply of the recorded shape (field names,
//! null vs absent, error details, whether the header carries a resourceversion); and at
//! shutdown cloudcore closes each edge's session with a close frame (1001) instead of dropping
//! the connection.

mod scripted;

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Api;
use kube::api::PostParams;
use kubeedge_model::Message;
use scripted::{Cluster, Edge, PATIENCE};
use serde_json::{Value, json};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/upstream/real-pair/transcript.jsonl");
/// The recorded pod's UID, replaced by ours in the edge's requests.
const RECORDED_POD_UID: &str = "8da9248e-8622-4dd2-a322-c8065847a431";

/// The recorded (request, reply) pairs, in order.
fn recorded() -> Vec<(Message, Message)> {
    let text = std::fs::read_to_string(FIXTURE).unwrap();
    let mut requests: Vec<Message> = Vec::new();
    let mut pairs = Vec::new();
    for line in text.lines() {
        let rec: Value = serde_json::from_str(line).unwrap();
        let Some(raw) = rec["raw"].as_str() else { continue };
        match rec["dir"].as_str() {
            Some("edge->cloud") => requests.extend(serde_json::from_str::<Message>(raw).ok()),
            Some("cloud->edge") => {
                let reply: Message = serde_json::from_str(raw).unwrap();
                if let Some(req) = requests.iter().find(|r| r.header.id == reply.header.parent_id) {
                    pairs.push((req.clone(), reply));
                }
            }
            _ => {}
        }
    }
    pairs
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
    k.sort();
    k
}

/// An ErrStatus as the recording has it, with everything but the message's wording compared
/// exactly (the message must still name the same resource and object).
fn same_error(ours: &Value, theirs: &Value, what: &str) {
    let (o, t) = (&ours["ErrStatus"], &theirs["ErrStatus"]);
    assert_eq!(keys(o), keys(t), "{what}: ErrStatus fields\nours {ours}\nrecorded {theirs}");
    for k in ["status", "reason", "code", "details", "message"] {
        assert_eq!(o[k], t[k], "{what}: ErrStatus.{k}\nours {ours}\nrecorded {theirs}");
    }
}

/// The reply content has the recorded shape.
fn same_shape(ours: &Value, theirs: &Value, what: &str) {
    match theirs {
        Value::String(s) => assert_eq!(ours.as_str(), Some(s.as_str()), "{what}"),
        Value::Object(t) if t.contains_key("ErrStatus") => same_error(ours, theirs, what),
        Value::Object(t) if t.contains_key("Object") => {
            assert_eq!(keys(ours), keys(theirs), "{what}: ObjectResp fields\nours {ours}");
            assert_eq!(ours["Object"].is_null(), theirs["Object"].is_null(), "{what}: Object\nours {ours}");
            if !theirs["Object"].is_null() {
                assert_eq!(keys(&ours["Object"]), keys(&theirs["Object"]), "{what}: the Object's fields\nours {ours}");
            }
            assert_eq!(ours["Err"].is_null(), theirs["Err"].is_null(), "{what}: Err\nours {ours}");
            if !theirs["Err"].is_null() {
                same_error(&ours["Err"], &theirs["Err"], what);
            }
        }
        _ => assert_eq!(keys(ours), keys(theirs), "{what}: fields\nours {ours}\nrecorded {theirs}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_to_a_recorded_upstream_edge_have_the_recorded_shape() {
    let c = Cluster::start(&[]).await;
    let mut edge = Edge::connect(&c.ca, &c.ws, "up-edge").await;
    let mut pod_uid = None;
    let mut seen = HashSet::new();
    let mut checked = 0;
    for (req, reply) in recorded() {
        let theirs = serde_json::to_value(&reply.content).unwrap();
        let kind = format!("{} {} {:?}", req.router.operation, req.router.resource, keys(&theirs));
        if !seen.insert(kind.clone()) {
            continue;
        }
        // The pod phase of the recording: the pod it ran, with the configmap it mounts.
        if req.router.resource.contains("/pod") && pod_uid.is_none() {
            let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), "default");
            let cm = serde_json::from_value(json!({"metadata": {"name": "web-page"}, "data": {"index.html": "hi"}}));
            cms.create(&PostParams::default(), &cm.unwrap()).await.unwrap();
            let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
            let pod = serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {"nodeName": "up-edge",
                "containers": [{"name": "web", "image": "busybox", "volumeMounts": [{"name": "page", "mountPath": "/www"}]}],
                "volumes": [{"name": "page", "configMap": {"name": "web-page"}}]}}));
            let pod = pods.create(&PostParams::default(), &pod.unwrap()).await.unwrap();
            edge.expect("the pod", |m| m.router.resource == "default/pod/web").await.unwrap();
            pod_uid = pod.metadata.uid;
        }
        let mut text = serde_json::to_string(&req).unwrap();
        if let Some(uid) = &pod_uid {
            text = text.replace(RECORDED_POD_UID, uid);
        }
        let mut ask: Message = serde_json::from_str(&text).unwrap();
        if req.router.resource.contains("/lease/") && req.router.operation == "update" {
            // The edge sends its copy's version and UID; ours has its own.
            let mut lease: Value = ask.content.decode().unwrap();
            let meta = lease["metadata"].as_object_mut().unwrap();
            meta.remove("resourceVersion");
            meta.remove("uid");
            ask.content = kubeedge_model::Content::json(&lease).unwrap();
        }
        ask.header.id = format!("replay-{checked}");
        let ours = edge.ask(&ask).await.unwrap_or_else(|e| panic!("{kind}: {e}"));
        let ours_content = serde_json::to_value(&ours.content).unwrap();
        same_shape(&ours_content, &theirs, &kind);
        assert_eq!(
            ours.header.resource_version.is_empty(),
            reply.header.resource_version.is_empty(),
            "{kind}: a resourceversion in the reply header ({:?} recorded {:?})",
            ours.header.resource_version,
            reply.header.resource_version
        );
        assert_eq!((ours.router.source.as_str(), ours.router.group.as_str()), ("edgecontroller", "resource"), "{kind}");
        assert_eq!(ours.router.operation, "response", "{kind}");
        checked += 1;
    }
    assert!(checked >= 12, "replayed {checked} kinds of request");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_each_session_with_going_away() {
    let mut c = Cluster::start(&[]).await;
    let mut edges = Vec::new();
    for node in ["edge-1", "edge-2"] {
        edges.push(Edge::connect(&c.ca, &c.ws, node).await);
    }
    c.cloud.wait_for_line("Edge connected.");
    c.cloud.signal("TERM");
    for e in &mut edges {
        let end = tokio::time::timeout(PATIENCE, e.conn.recv()).await.expect("the session ends");
        assert!(matches!(end, Ok(None)), "{end:?}\n{}", c.cloud.log());
        let (code, reason) = e.conn.peer_close().cloned().expect("a close frame, not a dropped connection");
        assert_eq!(code, 1001, "{reason}");
    }
    assert!(c.cloud.wait_exit(PATIENCE).is_some_and(|s| s.success()), "{}", c.cloud.log());
    c.api.shutdown().await;
}
