//! Upstream-shaped messages (tests/fixtures/upstream: real frames of an upstream v1.15.4
//! edgecore and the scripted cloud it talked to) decode, re-encode with the same keys and values,
//! and — for frames Go encoded — re-encode to the very same bytes.

use std::path::PathBuf;

use kubeedge_model::{DecodeError, MAX_MESSAGE_SIZE, Message, Operation, ResourcePath};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/upstream")
}

fn load(name: &str) -> (Message, Value) {
    let bytes = std::fs::read(fixtures().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let msg = Message::decode(&bytes, MAX_MESSAGE_SIZE).unwrap_or_else(|e| panic!("{name}: {e}"));
    (msg, serde_json::from_slice(&bytes).unwrap())
}

fn reencoded(msg: &Message) -> Value {
    serde_json::from_slice(&msg.encode()).unwrap()
}

#[test]
fn every_message_fixture_round_trips_by_value() {
    let mut n = 0;
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let is_message = (name.starts_with("edge-") || name.starts_with("cloud-"))
            && name.ends_with(".json")
            && name != "edge-crt-request.json"
            && name != "edge-resend-unanswered.json";
        if !is_message {
            continue;
        }
        let (msg, original) = load(&name);
        assert_eq!(reencoded(&msg), original, "{name}");
        n += 1;
    }
    assert!(n >= 35, "only {n} message fixtures found");
}

#[test]
fn go_encoded_frames_round_trip_byte_for_byte() {
    let transcript = std::fs::read_to_string(fixtures().join("transcript.jsonl")).unwrap();
    let (mut edge, mut cloud, mut bad) = (0, 0, 0);
    for line in transcript.lines() {
        let record: Value = serde_json::from_str(line).unwrap();
        let Some(raw) = record["raw"].as_str() else { continue };
        let decoded = Message::decode(raw.as_bytes(), MAX_MESSAGE_SIZE);
        match record["dir"].as_str() {
            Some("edge->cloud") => {
                // Go's encoder: compact, upstream key order, trailing newline.
                let msg = decoded.unwrap();
                assert_eq!(String::from_utf8(msg.encode()).unwrap(), raw.trim_end(), "seq {}", record["seq"]);
                edge += 1;
            }
            Some("cloud->edge") if record.get("malformed").is_some() => {
                assert!(matches!(decoded, Err(DecodeError::Syntax { .. })));
                bad += 1;
            }
            Some("cloud->edge") => {
                // Python wrote these with its own key order: compare values.
                assert_eq!(reencoded(&decoded.unwrap()), serde_json::from_str::<Value>(raw).unwrap());
                cloud += 1;
            }
            _ => {}
        }
    }
    assert_eq!((edge, cloud, bad), (155, 70, 1));
}

#[test]
fn keepalive() {
    let (m, _) = load("edge-keepalive.json");
    assert_eq!(m.operation(), Operation::Keepalive);
    assert_eq!(m.router.source, "websocket");
    assert_eq!(m.router.group, "resource");
    assert_eq!(m.router.resource, "node");
    assert_eq!(m.content.as_str().as_deref(), Some("ping"));
    assert_eq!(m.header.timestamp, 1_795_636_468_664);
}

#[test]
fn pod_insert_keeps_resourceversion_and_object() {
    let (m, _) = load("cloud-pod-insert.json");
    assert_eq!(m.operation(), Operation::Insert);
    assert!(!m.header.resource_version.is_empty());
    let path = ResourcePath::parse(&m.router.resource).unwrap();
    assert_eq!(path.resource_type, "pod");
    let pod: Value = m.content.decode().unwrap();
    assert_eq!(pod["kind"], "Pod");
    assert_eq!(pod["metadata"]["resourceVersion"].as_str(), Some(m.header.resource_version.as_str()));
}

#[test]
fn ack_answers_the_insert() {
    let (insert, _) = load("cloud-pod-insert.json");
    let (ack, _) = load("edge-ack.json");
    assert_eq!(ack.operation(), Operation::Response);
    assert_eq!(ack.parent_id(), Some(insert.id()));
    assert_eq!(ack.content.as_str().as_deref(), Some("OK"));
}

#[test]
fn podpatch_content_is_json_in_a_string() {
    let (m, original) = load("edge-podpatch.json");
    assert!(original["content"].is_string());
    assert!(m.content.is_string());
    let patch: Value = m.content.decode().unwrap();
    assert_eq!(patch["metadata"]["uid"], "05967183-07a8-46f0-a45a-00508de29b59");
    assert_eq!(patch["status"]["containerStatuses"][0]["name"], "hello");
}

#[test]
fn query_replies_carry_object_and_err() {
    let (found, _) = load("cloud-reply-node-insert.json");
    let v: Value = found.content.decode().unwrap();
    assert_eq!(v["Err"], Value::Null);
    assert_eq!(v["Object"]["kind"], "Node");
    let (missing, _) = load("cloud-reply-lease-query-notfound.json");
    let v: Value = missing.content.decode().unwrap();
    assert_eq!(v["Object"], Value::Null);
    assert_eq!(v["Err"]["ErrStatus"]["reason"], "NotFound");
}

#[test]
fn shutdown_frame_is_recognised() {
    let (m, _) = load("edge-shutdown-empty-message.json");
    assert!(m.is_empty_frame());
}

#[test]
fn malformed_cloud_messages_decode_or_fail_cleanly() {
    let bytes = std::fs::read(fixtures().join("malformed-cloud-messages.json")).unwrap();
    let cases: Value = serde_json::from_slice(&bytes).unwrap();
    let mut seen = 0;
    for case in cases["cases"].as_array().unwrap() {
        if let Some(sent) = case.get("sent") {
            // Envelopes with odd content or resources decode; the content stays verbatim for
            // the consumer to reject.
            let raw = serde_json::to_vec(sent).unwrap();
            let m = Message::decode(&raw, MAX_MESSAGE_SIZE).unwrap();
            assert_eq!(reencoded(&m)["content"], sent["content"]);
            assert!(m.content.decode::<k8s_like::Pod>().is_err() || ResourcePath::parse(&m.router.resource).is_err());
        } else {
            let raw = case["sent_raw_frame"].as_str().unwrap();
            assert!(matches!(Message::decode(raw.as_bytes(), MAX_MESSAGE_SIZE), Err(DecodeError::Syntax { .. })));
        }
        seen += 1;
    }
    assert_eq!(seen, 4);
}

mod k8s_like {
    /// Just enough of a Pod to see a wrongly typed `spec`.
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    pub struct Pod {
        pub metadata: serde_json::Map<String, serde_json::Value>,
        pub spec: serde_json::Map<String, serde_json::Value>,
    }
}
