//! The protocol module's builders against the upstream v1.15.4 captures
//! (tests/fixtures/upstream): with the captured id and timestamp, every edge frame they can make
//! is the very same bytes as upstream's (`transcript.jsonl`, `raw`); the Node and Lease, which
//! Go writes in struct-field order, are the same values. The parsers read every cloud reply.

use std::collections::HashMap;
use std::path::PathBuf;

use kubeedge_model::protocol::objects::{self, HostInfo, NodeFacts};
use kubeedge_model::protocol::{ReplyError, StatusError, edge, reply};
use kubeedge_model::{Content, MAX_MESSAGE_SIZE, Message, Operation};
use serde_json::{Value, json};

const NODE: &str = "edge-capture";

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/upstream")
}

fn load(name: &str) -> Message {
    let bytes = std::fs::read(fixtures().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    Message::decode(&bytes, MAX_MESSAGE_SIZE).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The session's frames: `(dir, raw text, message)`.
struct Transcript {
    frames: Vec<(String, String, Message)>,
    by_id: HashMap<String, Message>,
}

impl Transcript {
    fn read() -> Self {
        let text = std::fs::read_to_string(fixtures().join("transcript.jsonl")).unwrap();
        let mut frames = Vec::new();
        let mut by_id = HashMap::new();
        for line in text.lines() {
            let record: Value = serde_json::from_str(line).unwrap();
            let (Some(dir), Some(raw)) = (record["dir"].as_str(), record["raw"].as_str()) else { continue };
            let Ok(msg) = Message::decode(raw.as_bytes(), MAX_MESSAGE_SIZE) else { continue };
            by_id.insert(msg.header.id.clone(), msg.clone());
            frames.push((dir.to_owned(), raw.trim_end().to_owned(), msg));
        }
        Self { frames, by_id }
    }

    /// The edge's frames with operation `op` on a resource of type `ty`.
    fn edge(&self, op: Operation, ty: &str) -> Vec<(&str, &Message)> {
        self.frames
            .iter()
            .filter(|(dir, _, m)| dir == "edge->cloud" && m.operation() == op)
            .filter(|(_, _, m)| m.router.resource.split('/').nth(1) == Some(ty) || m.router.resource == ty)
            .map(|(_, raw, m)| (raw.as_str(), m))
            .collect()
    }
}

/// `ours` with the captured frame's id and timestamp, encoded.
fn stamped(mut ours: Message, theirs: &Message) -> String {
    ours.header.id = theirs.header.id.clone();
    ours.header.timestamp = theirs.header.timestamp;
    String::from_utf8(ours.encode()).unwrap()
}

fn content_value(m: &Message) -> Value {
    m.content.decode().unwrap()
}

#[test]
fn keepalive_and_queries_are_upstreams_bytes() {
    let t = Transcript::read();
    let keepalives = t.edge(Operation::Keepalive, "node");
    assert!(keepalives.len() >= 10);
    for (raw, theirs) in keepalives {
        assert_eq!(stamped(edge::keepalive(), theirs), raw);
    }
    let (raw, theirs) = t.edge(Operation::Query, "lease")[0];
    assert_eq!(stamped(edge::lease_query(NODE), theirs), raw);
    for ty in ["node", "configmap"] {
        let (raw, theirs) = t.edge(Operation::Query, ty)[0];
        assert_eq!(stamped(edge::query(theirs.router.resource.clone(), Content::null()), theirs), raw);
    }
}

#[test]
fn every_ack_is_upstreams_bytes() {
    let t = Transcript::read();
    let mut n = 0;
    for (dir, raw, theirs) in &t.frames {
        if dir != "edge->cloud" || theirs.operation() != Operation::Response {
            continue;
        }
        let acked = &t.by_id[&theirs.header.parent_id];
        assert_eq!(&stamped(edge::ack(acked), theirs), raw);
        n += 1;
    }
    assert!(n >= 20, "only {n} ACKs");
    // Pushed objects and replies with a resourceversion are ACKed; the pod delete's "OK" is not.
    // (Upstream also ACKs its error replies; MetaManager and the hollow nodes do not.)
    assert!(edge::needs_ack(&load("cloud-pod-insert.json")));
    assert!(edge::needs_ack(&load("cloud-reply-node-query.json")));
    assert!(!edge::needs_ack(&load("cloud-reply-pod-delete.json")));
}

#[test]
fn node_patches_are_upstreams_bytes() {
    let t = Transcript::read();
    let patches = t.edge(Operation::Patch, "nodepatch");
    let (raw, first) = patches[0];
    assert_eq!(stamped(edge::node_patch("default", NODE, &json!({})), first), raw);
    let (raw, heartbeat) = patches.iter().find(|(_, m)| m.content.as_str().as_deref() != Some("{}")).unwrap();
    let patch = content_value(heartbeat);
    let now = patch.pointer("/status/conditions/0/lastHeartbeatTime").and_then(Value::as_str).unwrap();
    assert_eq!(&stamped(edge::node_patch("default", NODE, &objects::heartbeat_patch(now)), heartbeat), raw);
}

#[test]
fn pod_patches_and_deletes_are_upstreams_bytes() {
    let t = Transcript::read();
    let patches = t.edge(Operation::Patch, "podpatch");
    assert_eq!(patches.len(), 3, "ContainerCreating, Running, terminated");
    for (raw, theirs) in patches {
        let patch = content_value(theirs);
        let uid = patch.pointer("/metadata/uid").and_then(Value::as_str);
        assert_eq!(stamped(edge::pod_patch("default", "capture-pod", uid, patch["status"].clone()), theirs), raw);
    }
    let deletes = t.edge(Operation::Delete, "pod");
    assert_eq!(deletes.len(), 2, "sent twice, 23 ms apart");
    for (raw, theirs) in deletes {
        let uid = content_value(theirs).pointer("/preconditions/uid").and_then(Value::as_str).unwrap().to_owned();
        assert_eq!(stamped(edge::pod_delete("default", "capture-pod", &uid), theirs), raw);
    }
}

#[test]
fn lease_insert_and_update_are_upstreams_values() {
    let theirs = load("edge-lease-insert.json");
    let renew = content_value(&theirs)["spec"]["renewTime"].as_str().unwrap().to_owned();
    let ours = edge::lease_insert(NODE, "", 40, &renew);
    assert_eq!((&ours.router, content_value(&ours)), (&theirs.router, content_value(&theirs)));

    // The update renews the Lease the cloud returned, TypeMeta and resourceVersion included.
    let theirs = load("edge-lease-update.json");
    let mut stored = content_value(&theirs);
    let renew = stored["spec"]["renewTime"].as_str().unwrap().to_owned();
    stored["spec"]["renewTime"] = json!("2026-11-25T19:54:28.876201Z");
    let ours = edge::lease_update(NODE, stored, &renew);
    assert_eq!((&ours.router, content_value(&ours)), (&theirs.router, content_value(&theirs)));
}

#[test]
fn node_insert_is_upstreams_value() {
    let theirs = load("edge-node-insert.json");
    let node = content_value(&theirs);
    let status = &node["status"];
    let info = &status["nodeInfo"];
    let text = |v: &Value| v.as_str().unwrap().to_owned();
    let ki = |v: &Value| text(v).trim_end_matches("Ki").parse::<u64>().unwrap();
    let host = HostInfo {
        cpus: text(&status["capacity"]["cpu"]).parse().unwrap(),
        memory_ki: ki(&status["capacity"]["memory"]),
        machine_id: text(&info["machineID"]),
        system_uuid: text(&info["systemUUID"]),
        boot_id: text(&info["bootID"]),
        kernel_version: text(&info["kernelVersion"]),
        os_image: text(&info["osImage"]),
        architecture: text(&info["architecture"]),
    };
    let facts = NodeFacts {
        name: NODE.into(),
        address: text(&status["addresses"][0]["address"]),
        host,
        allocatable_memory_ki: ki(&status["allocatable"]["memory"]),
        max_pods: text(&status["capacity"]["pods"]).parse().unwrap(),
        runtime_version: text(&info["containerRuntimeVersion"]),
    };
    let now = text(&status["conditions"][0]["lastHeartbeatTime"]);
    let labels = objects::node_labels(NODE, "amd64");
    let mut ours = objects::node_object(NODE, &labels, true, objects::node_status(&facts, &now));
    // Only the versions are ours.
    ours["status"]["nodeInfo"]["kubeletVersion"] = info["kubeletVersion"].clone();
    ours["status"]["nodeInfo"]["kubeProxyVersion"] = info["kubeProxyVersion"].clone();
    assert_eq!(ours, node);
    let msg = edge::node_insert("default", NODE, &ours);
    assert_eq!((&msg.router, content_value(&msg)), (&theirs.router, node));
}

#[test]
fn every_cloud_reply_parses() {
    let object = |name: &str| reply::object_of(&load(name));
    for name in ["cloud-reply-lease-insert.json", "cloud-reply-lease-update.json", "cloud-reply-nodepatch.json"] {
        let o = object(name).unwrap();
        assert!(o.pointer("/metadata/uid").is_some(), "{name}");
    }
    assert_eq!(object("cloud-reply-node-query.json").unwrap()["metadata"]["name"], NODE);
    assert_eq!(object("cloud-reply-pod-delete.json"), Ok(Value::Null));
    for name in [
        "cloud-reply-lease-query-notfound.json",
        "cloud-reply-node-query-notfound.json",
        "cloud-reply-configmap-query-notfound.json",
    ] {
        let e = object(name).unwrap_err();
        assert_eq!(e, ReplyError::Status { reason: "NotFound".into(), code: 404 }, "{name}");
        assert!(e.is_not_found());
    }
    assert!(reply::is_ok(&load("cloud-reply-pod-delete.json").content));
    // The fixture files are pretty-printed: the wire's compact form.
    let bare = Content::from_value(&content_value(&load("cloud-reply-node-query-notfound.json")));
    assert!(reply::is_go_error(&bare));
}

#[test]
fn replies_are_built_in_the_captured_shapes() {
    // The envelope: EdgeController's route, the request's id as parent, its resource.
    for (request, answer) in [
        ("edge-lease-insert.json", "cloud-reply-lease-insert.json"),
        ("edge-node-insert.json", "cloud-reply-node-insert.json"),
        ("edge-pod-delete.json", "cloud-reply-pod-delete.json"),
        ("edge-query-node.json", "cloud-reply-node-query-notfound.json"),
    ] {
        let (req, theirs) = (load(request), load(answer));
        let ours = reply::response(&req, theirs.content.clone());
        assert_eq!((&ours.router, ours.parent_id()), (&theirs.router, theirs.parent_id()), "{answer}");
    }
    // A StatusError as Go marshals one, in an ObjectResp or bare.
    let theirs = content_value(&load("cloud-reply-lease-query-notfound.json"));
    let status = &theirs["Err"]["ErrStatus"];
    let err = StatusError::new(404, "NotFound", status["message"].as_str().unwrap())
        .with_details(status["details"].clone())
        .to_value();
    let ours: Value = serde_json::from_str(reply::object_resp(None, Some(err.clone())).raw()).unwrap();
    assert_eq!(ours, theirs);
    let bare = content_value(&load("cloud-reply-node-query-notfound.json"));
    assert_eq!(bare.as_object().map(|o| o.keys().map(String::as_str).collect::<Vec<_>>()), Some(vec!["ErrStatus"]));
    let keys = |v: &Value| v["ErrStatus"].as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
    assert_eq!(keys(&bare), keys(&StatusError::not_found("node", "", NODE).to_value()));
    // The ObjectResp of a write: the object without TypeMeta, no error.
    let lease = object_resp_value(Some(json!({"kind": "Lease", "apiVersion": "coordination.k8s.io/v1", "spec": {}})));
    assert_eq!(lease, json!({"Object": {"spec": {}}, "Err": null}));
}

fn object_resp_value(object: Option<Value>) -> Value {
    serde_json::from_str(reply::object_resp(object, None).raw()).unwrap()
}
