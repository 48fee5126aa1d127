//! Protobuf bodies, as upstream cloudcore (client-go with `ContentType: protobuf`) sends them,
//! round-trip through apiserver-lite for every built-in type a cloudcore, kubelet or controller
//! writes (issue #13). The client side is k8s-pb: prost types generated from Kubernetes' own
//! `.proto` files, independent of the server's schema.

mod common;

use common::Cluster;
use http_body_util::BodyExt;
use k8s_pb::api::authentication::v1 as authn;
use k8s_pb::api::coordination::v1 as coordination;
use k8s_pb::api::core::v1 as core;
use k8s_pb::api::events::v1 as events;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use prost::Message;
use serde_json::{Value, json};

const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";
/// What client-go sends when its content type is protobuf.
const CLIENT_GO_ACCEPT: &str = "application/vnd.kubernetes.protobuf, */*";

fn s(v: &str) -> Option<String> {
    Some(v.into())
}

fn wrap(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let u = Unknown {
        type_meta: Some(TypeMeta { api_version: s(api_version), kind: s(kind) }),
        raw: Some(raw),
        content_encoding: s(""),
        content_type: s(""),
    };
    let mut out = b"k8s\0".to_vec();
    out.extend(u.encode_to_vec());
    out
}

/// (kind, raw object) of a protobuf body.
fn unwrap(bytes: &[u8]) -> (String, Vec<u8>) {
    let u = Unknown::decode(bytes.strip_prefix(b"k8s\0").expect("k8s magic")).expect("runtime.Unknown");
    (u.type_meta.and_then(|t| t.kind).unwrap_or_default(), u.raw.unwrap_or_default())
}

fn go_meta(name: &str, namespace: &str) -> Option<meta::ObjectMeta> {
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

fn now() -> Option<meta::Time> {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    Some(meta::Time { seconds: Some(secs), nanos: Some(0) })
}

struct Http<'a> {
    c: &'a Cluster,
    client: kube::Client,
}

impl Http<'_> {
    /// Sends a protobuf (or other) body; returns status, content type and body.
    fn send(&self, method: &str, path: &str, accept: &str, body: Option<Vec<u8>>) -> (u16, String, Vec<u8>) {
        let mut req = http::Request::builder().method(method).uri(path).header("Accept", accept);
        if body.is_some() {
            req = req.header("Content-Type", PROTOBUF);
        }
        let req = req.body(body.unwrap_or_default()).unwrap();
        self.c.rt.block_on(async {
            let resp = self.client.send(req.map(kube::client::Body::from)).await.unwrap();
            let code = resp.status().as_u16();
            let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
            let body = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
            (code, ct, body)
        })
    }

    /// A protobuf write answered in protobuf: the object's raw message.
    fn write(&self, method: &str, path: &str, body: Vec<u8>, want_kind: &str) -> Vec<u8> {
        let (code, ct, out) = self.send(method, path, CLIENT_GO_ACCEPT, Some(body));
        assert!((200..300).contains(&code), "{method} {path}: {code} {}", String::from_utf8_lossy(&out));
        assert_eq!(ct, PROTOBUF, "{method} {path} answered in {ct}: {}", String::from_utf8_lossy(&out));
        let (kind, raw) = unwrap(&out);
        assert_eq!(kind, want_kind);
        raw
    }

    fn json(&self, path: &str) -> Value {
        let (code, _, out) = self.send("GET", path, "application/json", None);
        assert_eq!(code, 200, "{path}: {}", String::from_utf8_lossy(&out));
        serde_json::from_slice(&out).unwrap()
    }
}

#[test]
fn node_lease_and_status_as_upstream_cloudcore_writes_them() {
    let c = Cluster::start();
    let h = Http { client: c.client(), c: &c };
    let node = core::Node {
        metadata: Some(meta::ObjectMeta {
            labels: [("node-role.kubernetes.io/edge".to_string(), String::new())].into(),
            ..go_meta("edge-1", "").unwrap()
        }),
        spec: Some(core::NodeSpec { unschedulable: Some(false), ..Default::default() }),
        status: Some(core::NodeStatus {
            capacity: [
                ("cpu".to_string(), Quantity { string: s("2") }),
                ("pods".to_string(), Quantity { string: s("110") }),
            ]
            .into(),
            daemon_endpoints: Some(core::NodeDaemonEndpoints {
                kubelet_endpoint: Some(core::DaemonEndpoint { port: Some(10350) }),
            }),
            node_info: Some(core::NodeSystemInfo {
                kubelet_version: s("v1.31.0-kubeedge-v1.15.4"),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let raw = h.write("POST", "/api/v1/nodes", wrap("v1", "Node", node.encode_to_vec()), "Node");
    let mut created = core::Node::decode(raw.as_slice()).unwrap();
    let m = created.metadata.as_ref().unwrap();
    assert!(!m.uid.as_deref().unwrap_or_default().is_empty(), "uid assigned");
    assert!(m.creation_timestamp.as_ref().and_then(|t| t.seconds).unwrap_or_default() > 0, "created now");
    assert_eq!(created.spec, node.spec);
    // The status update a cloudcore makes for its edge (PUT …/status, protobuf).
    let st = created.status.get_or_insert_with(Default::default);
    st.conditions = vec![core::NodeCondition {
        r#type: s("Ready"),
        status: s("True"),
        reason: s("EdgeReady"),
        message: s("edge is posting ready status"),
        last_heartbeat_time: now(),
        last_transition_time: now(),
    }];
    st.addresses = vec![core::NodeAddress { r#type: s("InternalIP"), address: s("10.1.2.3") }];
    h.write("PUT", "/api/v1/nodes/edge-1/status", wrap("v1", "Node", created.encode_to_vec()), "Node");
    let stored = h.json("/api/v1/nodes/edge-1");
    assert_eq!(stored["status"]["conditions"][0]["reason"], "EdgeReady");
    assert_eq!(stored["status"]["daemonEndpoints"], json!({"kubeletEndpoint": {"Port": 10350}}));
    assert_eq!(stored["status"]["capacity"]["pods"], "110");
    assert_eq!(stored["metadata"]["labels"], json!({"node-role.kubernetes.io/edge": ""}));
    assert_eq!(stored["metadata"].get("selfLink"), None, "Go's empty strings are not stored");

    // The node's Lease, created and renewed.
    let mut lease = coordination::Lease {
        metadata: go_meta("edge-1", "kube-node-lease"),
        spec: Some(coordination::LeaseSpec {
            holder_identity: s("edge-1"),
            lease_duration_seconds: Some(40),
            renew_time: Some(meta::MicroTime { seconds: now().unwrap().seconds, nanos: Some(250_000_000) }),
            ..Default::default()
        }),
    };
    let ns = core::Namespace { metadata: go_meta("edge-apps", ""), ..Default::default() };
    let raw = h.write("POST", "/api/v1/namespaces", wrap("v1", "Namespace", ns.encode_to_vec()), "Namespace");
    let ns = core::Namespace::decode(raw.as_slice()).unwrap();
    assert_eq!(ns.status.and_then(|s| s.phase).as_deref(), Some("Active"));
    let raw = h.write(
        "POST",
        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
        wrap("coordination.k8s.io/v1", "Lease", lease.encode_to_vec()),
        "Lease",
    );
    let created = coordination::Lease::decode(raw.as_slice()).unwrap();
    lease.metadata = created.metadata;
    lease.spec.as_mut().unwrap().renew_time.as_mut().unwrap().nanos = Some(500_000_000);
    h.write(
        "PUT",
        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/edge-1",
        wrap("coordination.k8s.io/v1", "Lease", lease.encode_to_vec()),
        "Lease",
    );
    let stored = h.json("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/edge-1");
    assert!(stored["spec"]["renewTime"].as_str().unwrap().ends_with(".500000Z"), "{}", stored["spec"]);
    assert_eq!(stored["spec"]["leaseDurationSeconds"], 40);
}

#[test]
fn pods_status_events_and_tokens() {
    let c = Cluster::start();
    let h = Http { client: c.client(), c: &c };
    let cm = core::ConfigMap {
        metadata: go_meta("settings", "default"),
        data: [("mode".to_string(), "fast".to_string())].into(),
        ..Default::default()
    };
    h.write("POST", "/api/v1/namespaces/default/configmaps", wrap("v1", "ConfigMap", cm.encode_to_vec()), "ConfigMap");
    let secret = core::Secret {
        metadata: go_meta("creds", "default"),
        data: [("pw".to_string(), vec![0u8, 159, 146, 150])].into(),
        r#type: s("Opaque"),
        ..Default::default()
    };
    h.write("POST", "/api/v1/namespaces/default/secrets", wrap("v1", "Secret", secret.encode_to_vec()), "Secret");
    assert_eq!(h.json("/api/v1/namespaces/default/secrets/creds")["data"]["pw"], "AJ+Slg==");
    let sa = core::ServiceAccount { metadata: go_meta("robot", "default"), ..Default::default() };
    h.write(
        "POST",
        "/api/v1/namespaces/default/serviceaccounts",
        wrap("v1", "ServiceAccount", sa.encode_to_vec()),
        "ServiceAccount",
    );
    // A mirror pod, as an edge's kubelet creates one through cloudcore.
    let pod = core::Pod {
        metadata: Some(meta::ObjectMeta {
            annotations: [("kubernetes.io/config.mirror".to_string(), "abc".to_string())].into(),
            ..go_meta("web", "default").unwrap()
        }),
        spec: Some(core::PodSpec {
            node_name: s("edge-1"),
            service_account_name: s("robot"),
            volumes: vec![core::Volume {
                name: s("cfg"),
                volume_source: Some(core::VolumeSource {
                    config_map: Some(core::ConfigMapVolumeSource {
                        local_object_reference: Some(core::LocalObjectReference { name: s("settings") }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            }],
            containers: vec![core::Container {
                name: s("c"),
                image: s("nginx:1"),
                volume_mounts: vec![core::VolumeMount {
                    name: s("cfg"),
                    mount_path: s("/etc/cfg"),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: Some(core::PodStatus::default()),
    };
    let raw = h.write("POST", "/api/v1/namespaces/default/pods", wrap("v1", "Pod", pod.encode_to_vec()), "Pod");
    let mut created = core::Pod::decode(raw.as_slice()).unwrap();
    let vol = &created.spec.as_ref().unwrap().volumes[0];
    assert_eq!(vol.volume_source.as_ref().unwrap().config_map.as_ref().unwrap().default_mode, Some(420), "defaulted");
    let uid = created.metadata.as_ref().unwrap().uid.clone().unwrap();
    // Status, as the edge reports it.
    created.status = Some(core::PodStatus {
        phase: s("Running"),
        pod_ip: s("10.0.0.5"),
        conditions: vec![core::PodCondition {
            r#type: s("Ready"),
            status: s("True"),
            last_probe_time: Some(meta::Time { seconds: Some(0), nanos: Some(0) }),
            last_transition_time: now(),
            ..Default::default()
        }],
        container_statuses: vec![core::ContainerStatus {
            name: s("c"),
            ready: Some(true),
            restart_count: Some(0),
            image: s("nginx:1"),
            image_id: s(""),
            state: Some(core::ContainerState {
                running: Some(core::ContainerStateRunning { started_at: now() }),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    });
    h.write("PUT", "/api/v1/namespaces/default/pods/web/status", wrap("v1", "Pod", created.encode_to_vec()), "Pod");
    let stored = h.json("/api/v1/namespaces/default/pods/web");
    assert_eq!(stored["status"]["phase"], "Running");
    // Read in protobuf and written back as Go writes it (every plain field, zeros included):
    // the same spec, so no 422 and no new generation.
    let (_, _, body) = h.send("GET", "/api/v1/namespaces/default/pods/web", CLIENT_GO_ACCEPT, None);
    let mut again = core::Pod::decode(unwrap(&body).1.as_slice()).unwrap();
    let spec = again.spec.as_mut().unwrap();
    (spec.host_network, spec.host_pid, spec.hostname) = (Some(false), Some(false), s(""));
    spec.containers[0].stdin = Some(false);
    spec.containers[0].working_dir = s("");
    h.write("PUT", "/api/v1/namespaces/default/pods/web", wrap("v1", "Pod", again.encode_to_vec()), "Pod");
    let after = h.json("/api/v1/namespaces/default/pods/web");
    assert_eq!(after["metadata"]["generation"], stored["metadata"]["generation"]);
    assert_eq!(stored["status"]["conditions"][0]["lastProbeTime"], Value::Null);
    assert_eq!(stored["status"]["containerStatuses"][0]["restartCount"], 0);
    assert_eq!(stored["status"]["containerStatuses"][0]["imageID"], "");

    // Events, both APIs.
    let ev = core::Event {
        metadata: go_meta("web.1", "default"),
        involved_object: Some(core::ObjectReference {
            kind: s("Pod"),
            namespace: s("default"),
            name: s("web"),
            uid: Some(uid.clone()),
            ..Default::default()
        }),
        reason: s("Started"),
        message: s("Started container c"),
        source: Some(core::EventSource { component: s("kubelet"), host: s("edge-1") }),
        first_timestamp: now(),
        last_timestamp: now(),
        count: Some(1),
        r#type: s("Normal"),
        ..Default::default()
    };
    h.write("POST", "/api/v1/namespaces/default/events", wrap("v1", "Event", ev.encode_to_vec()), "Event");
    assert_eq!(h.json("/api/v1/namespaces/default/events/web.1")["source"]["host"], "edge-1");
    let ev2 = events::Event {
        metadata: go_meta("web.2", "default"),
        event_time: Some(meta::MicroTime { seconds: now().unwrap().seconds, nanos: Some(1_000) }),
        reporting_controller: s("kubelet"),
        reporting_instance: s("edge-1"),
        action: s("Pulling"),
        reason: s("Pulling"),
        regarding: Some(core::ObjectReference { kind: s("Pod"), name: s("web"), ..Default::default() }),
        r#type: s("Normal"),
        ..Default::default()
    };
    h.write(
        "POST",
        "/apis/events.k8s.io/v1/namespaces/default/events",
        wrap("events.k8s.io/v1", "Event", ev2.encode_to_vec()),
        "Event",
    );

    // A bound service-account token.
    let tr = authn::TokenRequest {
        metadata: go_meta("robot", "default"),
        spec: Some(authn::TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            bound_object_ref: Some(authn::BoundObjectReference {
                kind: s("Pod"),
                api_version: s("v1"),
                name: s("web"),
                u_id: Some(uid),
            }),
        }),
        status: Some(authn::TokenRequestStatus::default()),
    };
    let raw = h.write(
        "POST",
        "/api/v1/namespaces/default/serviceaccounts/robot/token",
        wrap("authentication.k8s.io/v1", "TokenRequest", tr.encode_to_vec()),
        "TokenRequest",
    );
    let tr = authn::TokenRequest::decode(raw.as_slice()).unwrap();
    let status = tr.status.unwrap();
    assert_eq!(status.token.unwrap_or_default().split('.').count(), 3, "a JWT");
    assert!(status.expiration_timestamp.and_then(|t| t.seconds).unwrap_or_default() > 0);

    // Lists in protobuf.
    let (code, ct, body) = h.send("GET", "/api/v1/namespaces/default/pods", CLIENT_GO_ACCEPT, None);
    assert_eq!((code, ct.as_str()), (200, PROTOBUF));
    let (kind, raw) = unwrap(&body);
    assert_eq!(kind, "PodList");
    let list = core::PodList::decode(raw.as_slice()).unwrap();
    assert_eq!(list.items.len(), 1);
    assert!(list.metadata.unwrap().resource_version.is_some());
}

#[test]
fn watches_stream_protobuf_frames_and_json_is_the_fallback() {
    let c = Cluster::start();
    let h = Http { client: c.client(), c: &c };
    let cm = core::ConfigMap { metadata: go_meta("a", "default"), ..Default::default() };
    h.write("POST", "/api/v1/namespaces/default/configmaps", wrap("v1", "ConfigMap", cm.encode_to_vec()), "ConfigMap");
    let (code, ct, body) = h.send(
        "GET",
        "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=0&timeoutSeconds=1",
        CLIENT_GO_ACCEPT,
        None,
    );
    assert_eq!((code, ct.as_str()), (200, "application/vnd.kubernetes.protobuf;stream=watch"));
    // Each frame: a length, then a bare WatchEvent (client-go's raw stream serializer).
    let n = u32::from_be_bytes(body[..4].try_into().unwrap()) as usize;
    let ev = meta::WatchEvent::decode(&body[4..4 + n]).unwrap();
    assert_eq!(ev.r#type.as_deref(), Some("ADDED"));
    let (kind, raw) = unwrap(&ev.object.unwrap().raw.unwrap());
    assert_eq!(kind, "ConfigMap");
    assert_eq!(core::ConfigMap::decode(raw.as_slice()).unwrap().metadata.unwrap().name.as_deref(), Some("a"));

    // A custom resource has no protobuf form: JSON when acceptable, else 406, as kube-apiserver.
    c.ok_stdin(
        &["apply", "-f", "-"],
        r#"{"apiVersion":"apiextensions.k8s.io/v1","kind":"CustomResourceDefinition","metadata":{"name":"widgets.example.com"},
        "spec":{"group":"example.com","scope":"Namespaced","names":{"plural":"widgets","kind":"Widget"},
        "versions":[{"name":"v1","served":true,"storage":true,"schema":{"openAPIV3Schema":{"type":"object","x-kubernetes-preserve-unknown-fields":true}}}]}}"#,
    );
    let path = "/apis/example.com/v1/namespaces/default/widgets";
    kubeedge_testkit::eventually("the CRD to be served", || h.send("GET", path, "application/json", None).0 == 200);
    let (code, ct, _) = h.send("GET", path, CLIENT_GO_ACCEPT, None);
    assert_eq!((code, ct.as_str()), (200, "application/json"));
    assert_eq!(h.send("GET", path, PROTOBUF, None).0, 406);
    // A protobuf body of a kind with no protobuf form is refused with what to send instead.
    let (code, _, body) = h.send("POST", path, CLIENT_GO_ACCEPT, Some(wrap("example.com/v1", "Widget", Vec::new())));
    assert_eq!(code, 415, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("application/json"));
}
