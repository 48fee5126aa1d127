//! JSON encode/decode of a pod-insert message (the upstream fixture, compact, ~2 KB).
//! Run: `cargo bench -p kubeedge-model --bench codec`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kubeedge_model::{MAX_MESSAGE_SIZE, Message};
use std::hint::black_box;

fn pod_insert() -> Vec<u8> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/upstream/cloud-pod-insert.json");
    let pretty = std::fs::read(path).expect("fixture");
    let mut value: serde_json::Value = serde_json::from_slice(&pretty).expect("json");
    // Pods applied with kubectl carry their last applied spec as an annotation; it brings the
    // compact message to about 2 KB, the size the targets are stated for.
    let applied = serde_json::to_string(&value["content"]["spec"]).expect("spec");
    value["content"]["metadata"]["annotations"] =
        serde_json::json!({ "kubectl.kubernetes.io/last-applied-configuration": applied });
    serde_json::to_vec(&value).expect("compact")
}

fn codec(c: &mut Criterion) {
    let bytes = pod_insert();
    let msg = Message::decode(&bytes, MAX_MESSAGE_SIZE).expect("decode");
    let mut g = c.benchmark_group("pod_insert");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("decode_envelope", |b| b.iter(|| Message::decode(black_box(&bytes), MAX_MESSAGE_SIZE)));
    g.bench_function("encode_envelope", |b| b.iter(|| black_box(&msg).encode()));
    g.bench_function("decode_envelope_and_content", |b| {
        b.iter(|| {
            let m = Message::decode(black_box(&bytes), MAX_MESSAGE_SIZE).expect("decode");
            m.content.decode::<serde_json::Value>().expect("content")
        })
    });
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
