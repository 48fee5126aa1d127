//! The protobuf schema checked against an independent implementation: k8s-pb's prost types,
//! generated from Kubernetes' own `.proto` files. Bodies prost encodes decode to the JSON a Go
//! apiserver would store, and what we encode decodes in prost to the same values.

use k8s_pb::api::authentication::v1 as authn;
use k8s_pb::api::coordination::v1 as coordination;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use kubeedge_kube_serve::protobuf;
use prost::Message;
use serde_json::{Value, json};

fn body(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let u = Unknown {
        type_meta: Some(TypeMeta { api_version: Some(api_version.into()), kind: Some(kind.into()) }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = b"k8s\0".to_vec();
    out.extend(u.encode_to_vec());
    out
}

fn unwrap_body(bytes: &[u8]) -> (String, Vec<u8>) {
    let u = Unknown::decode(bytes.strip_prefix(b"k8s\0").expect("magic")).expect("Unknown");
    (u.type_meta.and_then(|t| t.kind).unwrap_or_default(), u.raw.unwrap_or_default())
}

fn s(v: &str) -> Option<String> {
    Some(v.into())
}

fn time(secs: i64) -> Option<meta::Time> {
    Some(meta::Time { seconds: Some(secs), nanos: Some(0) })
}

fn go_meta(name: &str, namespace: &str) -> Option<meta::ObjectMeta> {
    // As Go writes ObjectMeta: every plain string, the zero creationTimestamp, generation 0.
    Some(meta::ObjectMeta {
        name: s(name),
        generate_name: s(""),
        namespace: s(namespace),
        self_link: s(""),
        uid: s(""),
        resource_version: s(""),
        generation: Some(0),
        creation_timestamp: Some(meta::Time { seconds: Some(0), nanos: Some(0) }),
        ..Default::default()
    })
}

#[test]
fn a_node_as_upstream_cloudcore_registers_it() {
    let node = core::Node {
        metadata: go_meta("edge-1", ""),
        spec: Some(core::NodeSpec {
            unschedulable: Some(false),
            pod_cid_rs: vec!["10.0.0.0/24".into()],
            ..Default::default()
        }),
        status: Some(core::NodeStatus {
            capacity: [("cpu".to_string(), Quantity { string: s("2") })].into(),
            conditions: vec![core::NodeCondition {
                r#type: s("Ready"),
                status: s("True"),
                last_heartbeat_time: time(1_796_205_600),
                last_transition_time: time(1_796_205_600),
                reason: s("EdgeReady"),
                message: s(""),
            }],
            addresses: vec![core::NodeAddress { r#type: s("InternalIP"), address: s("10.1.2.3") }],
            daemon_endpoints: Some(core::NodeDaemonEndpoints {
                kubelet_endpoint: Some(core::DaemonEndpoint { port: Some(10350) }),
            }),
            node_info: Some(core::NodeSystemInfo {
                machine_id: s("m"),
                kube_proxy_version: s(""),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let v = protobuf::decode(&body("v1", "Node", node.encode_to_vec())).unwrap();
    assert_eq!(
        v,
        json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "edge-1", "generation": 0, "creationTimestamp": null},
            "spec": {"unschedulable": false, "podCIDRs": ["10.0.0.0/24"]},
            "status": {"capacity": {"cpu": "2"},
                "conditions": [{"type": "Ready", "status": "True", "reason": "EdgeReady",
                    "lastHeartbeatTime": "2026-12-02T10:00:00Z", "lastTransitionTime": "2026-12-02T10:00:00Z"}],
                "addresses": [{"type": "InternalIP", "address": "10.1.2.3"}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10350}},
                "nodeInfo": {"machineID": "m", "kubeProxyVersion": ""}}})
    );
    // And back: our encoding is the same message to prost.
    let (kind, raw) = unwrap_body(&protobuf::encode(&v, protobuf::Mode::Strict).unwrap());
    assert_eq!(kind, "Node");
    let back = core::Node::decode(raw.as_slice()).unwrap();
    assert_eq!(back.spec, node.spec);
    // An empty plain string is absent in JSON, and so in the re-encoding: the same to Go.
    let mut want = node.status.as_ref().unwrap().conditions.clone();
    want[0].message = None;
    assert_eq!(back.status.as_ref().unwrap().conditions, want);
    assert_eq!(back.status.as_ref().unwrap().daemon_endpoints, node.status.as_ref().unwrap().daemon_endpoints);
}

#[test]
fn a_lease_with_micro_times() {
    let lease = coordination::Lease {
        metadata: go_meta("edge-1", "kube-node-lease"),
        spec: Some(coordination::LeaseSpec {
            holder_identity: s("edge-1"),
            lease_duration_seconds: Some(40),
            renew_time: Some(meta::MicroTime { seconds: Some(1_796_205_605), nanos: Some(123_456_000) }),
            ..Default::default()
        }),
    };
    let v = protobuf::decode(&body("coordination.k8s.io/v1", "Lease", lease.encode_to_vec())).unwrap();
    assert_eq!(
        v["spec"],
        json!({"holderIdentity": "edge-1", "leaseDurationSeconds": 40, "renewTime": "2026-12-02T10:00:05.123456Z"})
    );
    let (_, raw) = unwrap_body(&protobuf::encode(&v, protobuf::Mode::Strict).unwrap());
    assert_eq!(coordination::Lease::decode(raw.as_slice()).unwrap().spec, lease.spec);
}

#[test]
fn a_pod_with_probes_volumes_and_status() {
    let container = core::Container {
        name: s("c"),
        image: s("nginx"),
        stdin: Some(false),
        liveness_probe: Some(core::Probe {
            handler: Some(core::ProbeHandler {
                http_get: Some(core::HttpGetAction {
                    path: s("/"),
                    port: Some(IntOrString { r#type: Some(0), int_val: Some(8080), str_val: s("") }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            period_seconds: Some(5),
            ..Default::default()
        }),
        ..Default::default()
    };
    let pod = core::Pod {
        metadata: go_meta("web", "default"),
        spec: Some(core::PodSpec {
            volumes: vec![core::Volume {
                name: s("cfg"),
                volume_source: Some(core::VolumeSource {
                    config_map: Some(core::ConfigMapVolumeSource {
                        local_object_reference: Some(core::LocalObjectReference { name: s("settings") }),
                        default_mode: Some(420),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            }],
            containers: vec![container],
            termination_grace_period_seconds: Some(0),
            node_name: s("edge-1"),
            ..Default::default()
        }),
        status: Some(core::PodStatus {
            phase: s("Running"),
            container_statuses: vec![core::ContainerStatus {
                name: s("c"),
                ready: Some(false),
                restart_count: Some(0),
                image: s("nginx"),
                image_id: s(""),
                state: Some(core::ContainerState {
                    terminated: Some(core::ContainerStateTerminated {
                        exit_code: Some(-1),
                        // The zero time, as Go writes it: an empty message.
                        started_at: Some(meta::Time::default()),
                        finished_at: time(1_796_205_600),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
    };
    let v = protobuf::decode(&body("v1", "Pod", pod.encode_to_vec())).unwrap();
    assert_eq!(v["spec"]["volumes"], json!([{"name": "cfg", "configMap": {"name": "settings", "defaultMode": 420}}]));
    assert_eq!(v["spec"]["terminationGracePeriodSeconds"], 0, "a pointer's zero is kept");
    let c = &v["spec"]["containers"][0];
    assert_eq!(c["livenessProbe"], json!({"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 5}));
    let st = &v["status"]["containerStatuses"][0];
    assert_eq!(st["imageID"], "", "a required string is kept");
    assert_eq!(
        st["state"]["terminated"],
        json!({"exitCode": -1, "startedAt": null, "finishedAt": "2026-12-02T10:00:00Z"})
    );
    let (_, raw) = unwrap_body(&protobuf::encode(&v, protobuf::Mode::Strict).unwrap());
    let back = core::Pod::decode(raw.as_slice()).unwrap();
    assert_eq!(back.spec.as_ref().unwrap().volumes, pod.spec.as_ref().unwrap().volumes);
    assert_eq!(
        back.spec.as_ref().unwrap().containers[0].liveness_probe,
        pod.spec.as_ref().unwrap().containers[0].liveness_probe
    );
    assert_eq!(back.status, pod.status);
}

#[test]
fn an_event_and_a_token_request() {
    let event = core::Event {
        metadata: go_meta("web.1", "default"),
        involved_object: Some(core::ObjectReference {
            kind: s("Pod"),
            name: s("web"),
            namespace: s("default"),
            ..Default::default()
        }),
        reason: s("Started"),
        source: Some(core::EventSource { component: s("kubelet"), host: s("edge-1") }),
        count: Some(1),
        r#type: s("Normal"),
        event_time: Some(meta::MicroTime { seconds: Some(0), nanos: Some(0) }),
        ..Default::default()
    };
    let v = protobuf::decode(&body("v1", "Event", event.encode_to_vec())).unwrap();
    assert_eq!(v["involvedObject"], json!({"kind": "Pod", "name": "web", "namespace": "default"}));
    assert_eq!(
        (v["count"].clone(), v["eventTime"].clone(), v["type"].clone()),
        (json!(1), Value::Null, json!("Normal"))
    );
    let tr = authn::TokenRequest {
        metadata: go_meta("default", "default"),
        spec: Some(authn::TokenRequestSpec {
            audiences: vec!["https://kubernetes.default.svc".into()],
            expiration_seconds: Some(3600),
            bound_object_ref: Some(authn::BoundObjectReference {
                kind: s("Pod"),
                api_version: s("v1"),
                name: s("web"),
                u_id: s("u-1"),
            }),
        }),
        status: Some(authn::TokenRequestStatus { token: s(""), expiration_timestamp: time(0) }),
    };
    let v = protobuf::decode(&body("authentication.k8s.io/v1", "TokenRequest", tr.encode_to_vec())).unwrap();
    assert_eq!(v["spec"]["boundObjectRef"], json!({"kind": "Pod", "apiVersion": "v1", "name": "web", "uid": "u-1"}));
    assert_eq!(v["status"], json!({"token": "", "expirationTimestamp": null}));
}

#[test]
fn lists_decode_in_prost() {
    let items = [json!({"metadata": {"name": "a", "namespace": "n"}, "data": {"k": "v"}})];
    let bytes = protobuf::encode_list(
        "v1",
        "ConfigMapList",
        &json!({"resourceVersion": "12"}),
        items.iter(),
        protobuf::Mode::Strict,
    )
    .unwrap();
    let (kind, raw) = unwrap_body(&bytes);
    assert_eq!(kind, "ConfigMapList");
    let list = core::ConfigMapList::decode(raw.as_slice()).unwrap();
    assert_eq!(list.metadata.unwrap().resource_version.as_deref(), Some("12"));
    assert_eq!(list.items[0].data.get("k").map(String::as_str), Some("v"));
}
