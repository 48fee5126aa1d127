use serde_json::json;

use super::*;

fn len(num: u64, data: &[u8], out: &mut Vec<u8>) {
    let mut w = Writer::default();
    w.bytes(num, data);
    out.extend(w.0);
}

fn varint(num: u64, v: u64, out: &mut Vec<u8>) {
    let mut w = Writer::default();
    w.varint(num, v);
    out.extend(w.0);
}

#[test]
fn decodes_a_hand_encoded_configmap() {
    let mut meta = Vec::new();
    len(1, b"settings", &mut meta);
    len(2, b"", &mut meta); // Go writes every plain string, empty or not
    let mut entry = Vec::new();
    len(1, b"app", &mut entry);
    len(2, b"web", &mut entry);
    len(11, &entry, &mut meta);
    len(8, b"", &mut meta); // the zero creationTimestamp
    let mut cm = Vec::new();
    len(1, &meta, &mut cm);
    let mut kv = Vec::new();
    len(1, b"mode", &mut kv);
    len(2, b"fast", &mut kv);
    len(2, &kv, &mut cm);
    varint(4, 1, &mut cm);
    let v = decode(&envelope("v1", "ConfigMap", &cm)).unwrap();
    assert_eq!(
        v,
        json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"settings","labels":{"app":"web"},"creationTimestamp":null},"data":{"mode":"fast"},"immutable":true})
    );
}

#[test]
fn unknown_kinds_and_fields_are_refused_clearly() {
    let e = decode(&envelope("apps/v1", "Deployment", b"")).unwrap_err();
    assert_eq!(e.code, 415);
    assert!(e.message.contains("send application/json"), "{}", e.message);
    let mut cm = Vec::new();
    len(9, b"x", &mut cm);
    let e = decode(&envelope("v1", "ConfigMap", &cm)).unwrap_err();
    assert!(e.message.contains("field 9 of core.v1.ConfigMap"), "{}", e.message);
    assert_eq!(decode(b"nope").unwrap_err().code, 400);
    let mut bad = envelope("v1", "ConfigMap", b"");
    bad.extend([0x0a, 0x7f]);
    assert_eq!(decode(&bad).unwrap_err().code, 400);
}

fn node() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "edge-1", "labels": {"node-role.kubernetes.io/edge": ""},
            "annotations": {"a": "b"}, "creationTimestamp": "2026-12-02T10:00:00Z", "resourceVersion": "7",
            "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "x", "uid": "u", "controller": true}]},
        "spec": {"podCIDRs": ["10.0.0.0/24"], "taints": [{"key": "k", "effect": "NoSchedule"}], "unschedulable": false},
        "status": {
            "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"},
            "allocatable": {"cpu": "1500m"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "EdgeReady",
                "lastHeartbeatTime": "2026-12-02T10:00:05Z", "lastTransitionTime": "2026-12-02T10:00:01Z"}],
            "addresses": [{"type": "InternalIP", "address": "10.1.2.3"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10350}},
            "nodeInfo": {"machineID": "m", "systemUUID": "s", "bootID": "b", "kernelVersion": "6.1",
                "osImage": "Debian", "containerRuntimeVersion": "containerd://2.0", "kubeletVersion": "v1.31.0-kubeedge",
                "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"},
            "images": [{"names": ["pause:3.10"], "sizeBytes": 320000}]
        }
    })
}

#[test]
fn objects_round_trip() {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "uid": "u-1", "deletionGracePeriodSeconds": 0},
        "spec": {
            "nodeName": "edge-1", "terminationGracePeriodSeconds": 0, "automountServiceAccountToken": false,
            "securityContext": {"runAsUser": 1000, "supplementalGroups": [1, 2]},
            "volumes": [{"name": "cfg", "configMap": {"name": "settings", "defaultMode": 420}},
                        {"name": "tok", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}]}}],
            "containers": [{"name": "c", "image": "nginx", "env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "resources": {"limits": {"cpu": "1"}, "requests": {"memory": "64Mi"}},
                "livenessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 5},
                "readinessProbe": {"tcpSocket": {"port": "http"}},
                "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg", "readOnly": true}]}],
            "tolerations": [{"key": "k", "operator": "Exists", "tolerationSeconds": 300}]
        },
        "status": {"phase": "Running", "podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}],
            "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": null, "lastTransitionTime": "2026-12-02T10:00:01Z"}],
            "containerStatuses": [{"name": "c", "ready": true, "restartCount": 0, "image": "nginx", "imageID": "",
                "state": {"terminated": {"exitCode": -1, "reason": "Error", "startedAt": "2026-12-02T10:00:01Z", "finishedAt": "2026-12-02T10:00:02Z"}}}]}
    });
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "edge-1", "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": "edge-1", "leaseDurationSeconds": 40, "renewTime": "2026-12-02T10:00:05.123456Z"}});
    let event = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"}, "reason": "Started",
        "source": {"component": "kubelet", "host": "edge-1"}, "count": 1, "type": "Normal",
        "firstTimestamp": "2026-12-02T10:00:00Z", "eventTime": "2026-12-02T10:00:00.000001Z"});
    let csr = json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest", "metadata": {"name": "c"},
        "spec": {"request": "AAEC", "signerName": "kubernetes.io/kube-apiserver-client", "usages": ["client auth"],
            "extra": {"scopes": ["a", "b"]}}});
    for obj in [node(), pod, lease, event, csr] {
        let bytes = encode(&obj, Mode::Strict).unwrap();
        assert_eq!(decode(&bytes).unwrap(), obj, "{}", obj["kind"]);
    }
}

#[test]
fn what_protobuf_cannot_describe_is_not_encoded() {
    let mut n = node();
    n["status"]["futureField"] = json!(1);
    let e = encode(&n, Mode::Strict).unwrap_err();
    assert!(e.0.contains("futureField"), "{e:?}");
    n = node();
    n["spec"]["unschedulable"] = json!("yes");
    assert!(encode(&n, Mode::Strict).is_err());
    assert!(encode(&json!({"apiVersion": "apps/v1", "kind": "Deployment"}), Mode::Strict).is_err());
    // Lenient (watches): the rest of the object still goes out.
    n["status"]["futureField"] = json!(1);
    let v = decode(&encode(&n, Mode::Lenient).unwrap()).unwrap();
    assert_eq!(v["spec"].get("unschedulable"), None);
    assert_eq!(v["status"].get("futureField"), None);
    assert_eq!(v["status"]["daemonEndpoints"], node()["status"]["daemonEndpoints"]);
}

#[test]
fn lists_and_watch_frames() {
    let items = [node(), node()];
    let list = encode_list("v1", "NodeList", &json!({"resourceVersion": "9"}), items.iter(), Mode::Strict).unwrap();
    let v = decode(&list).unwrap();
    assert_eq!(v["metadata"]["resourceVersion"], "9");
    let mut want = node();
    want.as_object_mut().unwrap().retain(|k, _| k != "apiVersion" && k != "kind");
    assert_eq!(v["items"][1], want);
    let frame = encode_watch_event("ADDED", &node()).unwrap();
    let n = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
    assert_eq!(n, frame.len() - 4);
    // A bare WatchEvent: field 1 (type), then field 2 holding the object's full body.
    let mut r = Reader(&frame[4..]);
    assert!(matches!(r.next(), Some(Ok((1, Wire::Len(b"ADDED"))))));
    let Some(Ok((2, Wire::Len(raw)))) = r.next() else { panic!("no object") };
    let Some(Ok((1, Wire::Len(obj)))) = Reader(raw).next() else { panic!("no raw") };
    assert_eq!(decode(obj).unwrap(), node());
}
