//! Tests of table rendering, `Accept` negotiation and ages.

use super::rows::{int, text};
use super::*;
use crate::time::format_unix;

const NOW: i64 = 1_700_000_000;

fn ago(secs: i64) -> String {
    format_unix(NOW - secs)
}

fn cells(t: &Value, row: usize) -> Vec<Value> {
    t["rows"][row]["cells"].as_array().cloned().unwrap_or_default()
}

fn col_names(t: &Value) -> Vec<String> {
    t["columnDefinitions"].as_array().into_iter().flatten().map(|c| text(c, "/name")).collect()
}

#[test]
fn durations() {
    let cases = [
        (-5, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (5, "5s"),
        (119, "119s"),
        (120, "2m"),
        (200, "3m20s"),
        (600, "10m"),
        (179 * 60, "179m"),
        (3 * 3600, "3h"),
        (4 * 3600 + 5 * 60, "4h5m"),
        (9 * 3600, "9h"),
        (47 * 3600, "47h"),
        (48 * 3600, "2d"),
        (51 * 3600, "2d3h"),
        (10 * 86400, "10d"),
        (3 * 365 * 86400, "3y"),
        (3 * 365 * 86400 + 86400 * 5, "3y5d"),
        (9 * 365 * 86400, "9y"),
    ];
    for (secs, want) in cases {
        assert_eq!(human_duration(secs), want, "{secs}s");
    }
    assert_eq!(age_since(None, NOW), "<unknown>");
}

#[test]
fn accept_headers() {
    assert_eq!(
        parse_accept(
            "application/json;as=Table;v=v1;g=meta.k8s.io,\
             application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
        ),
        AcceptKind::Table { version: "v1" }
    );
    assert_eq!(
        parse_accept("application/json;as=Table;v=v1beta1;g=meta.k8s.io, application/json"),
        AcceptKind::Table { version: "v1beta1" }
    );
    assert_eq!(
        parse_accept(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,\
             application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json;q=0.9"
        ),
        AcceptKind::AggregatedDiscovery { v2: true }
    );
    assert_eq!(
        parse_accept("application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"),
        AcceptKind::AggregatedDiscovery { v2: false }
    );
    assert_eq!(
        parse_accept("application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,application/json"),
        AcceptKind::PartialObjectMetadataList { version: "v1" }
    );
    assert_eq!(
        parse_accept("application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io"),
        AcceptKind::PartialObjectMetadata { version: "v1" }
    );
    assert_eq!(parse_accept("application/yaml"), AcceptKind::Yaml);
    assert_eq!(parse_accept("*/*"), AcceptKind::Json);
    assert_eq!(parse_accept(""), AcceptKind::Json);
    assert_eq!(parse_accept("application/vnd.kubernetes.protobuf, */*"), AcceptKind::Protobuf { json_too: true });
    assert_eq!(parse_accept("application/vnd.kubernetes.protobuf"), AcceptKind::Protobuf { json_too: false });
    assert_eq!(parse_accept("application/json, application/vnd.kubernetes.protobuf"), AcceptKind::Json);
    assert_eq!(parse_accept_no_protobuf("application/vnd.kubernetes.protobuf, application/json"), AcceptKind::Json);
    assert_eq!(parse_accept_no_protobuf("application/vnd.kubernetes.protobuf, application/yaml"), AcceptKind::Yaml);
    assert_eq!(parse_accept_no_protobuf("application/vnd.kubernetes.protobuf"), AcceptKind::Unsupported);
    assert_eq!(parse_accept("application/json;q=0.5, application/yaml"), AcceptKind::Yaml);
    assert_eq!(parse_accept("text/html"), AcceptKind::Unsupported);
    assert_eq!(parse_accept("application/json;as=Table;v=v9;g=meta.k8s.io"), AcceptKind::Unsupported);
    assert_eq!(AcceptKind::Table { version: "v1beta1" }.api_version(), Some("meta.k8s.io/v1beta1"));
    assert_eq!(
        AcceptKind::AggregatedDiscovery { v2: true }.content_type(),
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    );
    assert_eq!(AcceptKind::Table { version: "v1" }.content_type(), "application/json;as=Table;v=v1;g=meta.k8s.io");
    assert_eq!(AcceptKind::Json.content_type(), "application/json");
}

#[test]
fn include_object_param() {
    assert_eq!(parse_include_object("").expect("default"), IncludeObject::Metadata);
    assert_eq!(parse_include_object("includeObject=Object").expect("o"), IncludeObject::Object);
    assert_eq!(parse_include_object("a=b&includeObject=None").expect("n"), IncludeObject::None);
    assert_eq!(parse_include_object("includeObject=All").map_err(|e| e.code), Err(400));
}

#[test]
fn pod_table_with_wide_columns() {
    let pods = vec![
        json!({"metadata": {"name": "web", "namespace": "default", "creationTimestamp": ago(300), "uid": "u"},
               "spec": {"nodeName": "edge-1", "containers": [{"name": "a"}, {"name": "b"}],
                        "readinessGates": [{"conditionType": "x/ok"}]},
               "status": {"phase": "Running", "podIP": "10.0.0.5",
                          "conditions": [{"type": "Ready", "status": "False"}, {"type": "x/ok", "status": "True"}],
                          "containerStatuses": [
                              {"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}},
                               "lastState": {"terminated": {"finishedAt": ago(60)}}},
                              {"name": "b", "ready": false, "restartCount": 1,
                               "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}}),
        json!({"metadata": {"name": "pending", "creationTimestamp": ago(5)},
               "spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Pending"}}),
        json!({"metadata": {"name": "bye", "creationTimestamp": ago(3 * 86400), "deletionTimestamp": ago(1)},
               "spec": {"containers": [{"name": "a"}]},
               "status": {"phase": "Running",
                          "containerStatuses": [{"name": "a", "ready": true, "state": {"running": {}}}]}}),
        json!({"metadata": {"name": "done"}, "spec": {"containers": [{"name": "a"}]},
               "status": {"phase": "Succeeded", "containerStatuses": [
                   {"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}}),
        json!({"metadata": {"name": "init"}, "spec": {"initContainers": [{"name": "i1"}, {"name": "i2"}],
               "containers": [{"name": "a"}]},
               "status": {"phase": "Pending", "initContainerStatuses": [
                   {"name": "i1", "state": {"terminated": {"exitCode": 0}}},
                   {"name": "i2", "state": {"running": {}}}]}}),
    ];
    let t = to_table("pods", "", &pods, IncludeObject::Metadata, NOW);
    assert_eq!(t["kind"], "Table");
    assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(
        col_names(&t),
        vec!["Name", "Ready", "Status", "Restarts", "Age", "IP", "Node", "Nominated Node", "Readiness Gates"]
    );
    let prio: Vec<i64> = t["columnDefinitions"].as_array().into_iter().flatten().map(|c| int(c, "/priority")).collect();
    assert_eq!(prio, vec![0, 0, 0, 0, 0, 1, 1, 1, 1]);
    assert_eq!(t["columnDefinitions"][0]["format"], "name");
    assert_eq!(
        cells(&t, 0),
        vec![
            json!("web"),
            json!("1/2"),
            json!("CrashLoopBackOff"),
            json!("3 (60s ago)"),
            json!("5m"),
            json!("10.0.0.5"),
            json!("edge-1"),
            json!("<none>"),
            json!("1/1")
        ]
    );
    assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(t["rows"][0]["object"]["metadata"]["uid"], "u");
    assert_eq!(cells(&t, 1)[1..5], [json!("0/1"), json!("Pending"), json!("0"), json!("5s")]);
    assert_eq!(cells(&t, 1)[5..], [json!("<none>"), json!("<none>"), json!("<none>"), json!("<none>")]);
    assert_eq!(cells(&t, 2)[1..5], [json!("1/1"), json!("Terminating"), json!("0"), json!("3d")]);
    assert_eq!(cells(&t, 3)[2], json!("Completed"));
    assert_eq!(cells(&t, 3)[4], json!("<unknown>"));
    assert_eq!(t["rows"][3]["conditions"][0]["type"], "Completed");
    assert_eq!(cells(&t, 4)[2], json!("Init:1/2"));
}

#[test]
fn include_object_variants() {
    let pods = vec![json!({"metadata": {"name": "p"}, "spec": {}})];
    let none = to_table("pods", "", &pods, IncludeObject::None, NOW);
    assert!(none["rows"][0].get("object").is_none());
    let full = to_table("pods", "", &pods, IncludeObject::Object, NOW);
    assert_eq!(full["rows"][0]["object"], pods[0]);
}

#[test]
fn node_table() {
    let nodes = vec![
        json!({
            "metadata": {"name": "edge-1", "creationTimestamp": ago(2 * 86400 + 3 * 3600),
                         "labels": {"node-role.kubernetes.io/edge": "", "node-role.kubernetes.io/agent": "",
                                    "kubernetes.io/role": "worker"}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "InternalIP", "address": "192.168.1.2"}],
                       "nodeInfo": {"kubeletVersion": "v1.32.0-kubeedge", "osImage": "Ubuntu",
                                    "kernelVersion": "6.1",
                                    "containerRuntimeVersion": "containerd://1.7"}}
        }),
        json!({"metadata": {"name": "n2"}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}),
        json!({"metadata": {"name": "n3"}}),
    ];
    let t = to_table("nodes", "", &nodes, IncludeObject::None, NOW);
    assert_eq!(
        col_names(&t),
        vec![
            "Name",
            "Status",
            "Roles",
            "Age",
            "Version",
            "Internal-IP",
            "External-IP",
            "OS-Image",
            "Kernel-Version",
            "Container-Runtime"
        ]
    );
    assert_eq!(
        cells(&t, 0),
        vec![
            json!("edge-1"),
            json!("Ready,SchedulingDisabled"),
            json!("agent,edge,worker"),
            json!("2d3h"),
            json!("v1.32.0-kubeedge"),
            json!("192.168.1.2"),
            json!("<none>"),
            json!("Ubuntu"),
            json!("6.1"),
            json!("containerd://1.7")
        ]
    );
    assert_eq!(cells(&t, 1)[1..3], [json!("NotReady"), json!("<none>")]);
    assert_eq!(cells(&t, 2)[1], json!("Unknown"));
    assert_eq!(cells(&t, 2)[7], json!("<unknown>"));
}

#[test]
fn simple_tables() {
    let cm = json!({"metadata": {"name": "c", "creationTimestamp": ago(30)}, "data": {"a": "1", "b": "2"},
                    "binaryData": {"c": ""}});
    let t = to_table("configmaps", "", &[cm], IncludeObject::None, NOW);
    assert_eq!(col_names(&t), vec!["Name", "Data", "Age"]);
    assert_eq!(cells(&t, 0), vec![json!("c"), json!(3), json!("30s")]);

    let s = json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {"k": "dg=="}});
    let t = to_table("secrets", "", &[s], IncludeObject::None, NOW);
    assert_eq!(col_names(&t), vec!["Name", "Type", "Data", "Age"]);
    assert_eq!(cells(&t, 0)[..3], [json!("s"), json!("Opaque"), json!(1)]);

    let ns = json!({"metadata": {"name": "default", "creationTimestamp": ago(7200)}, "status": {"phase": "Active"}});
    let t = to_table("namespaces", "", &[ns], IncludeObject::None, NOW);
    assert_eq!(cells(&t, 0), vec![json!("default"), json!("Active"), json!("120m")]);

    let lease = json!({"metadata": {"name": "edge-1"}, "spec": {"holderIdentity": "edge-1"}});
    let t = to_table("leases", "coordination.k8s.io", &[lease], IncludeObject::None, NOW);
    assert_eq!(col_names(&t), vec!["Name", "Holder", "Age"]);
    assert_eq!(cells(&t, 0)[1], json!("edge-1"));

    let crd = json!({"metadata": {"name": "devices.devices.kubeedge.io", "creationTimestamp": "2024-01-01T00:00:00Z"}});
    let t = to_table("customresourcedefinitions", "apiextensions.k8s.io", &[crd], IncludeObject::None, NOW);
    assert_eq!(col_names(&t), vec!["Name", "Created At"]);
    assert_eq!(t["columnDefinitions"][1]["type"], "date");
    assert_eq!(cells(&t, 0)[1], json!("2024-01-01T00:00:00Z"));

    let dev = json!({"metadata": {"name": "d1", "creationTimestamp": ago(90)}});
    let t = to_table("devices", "devices.kubeedge.io", &[dev], IncludeObject::None, NOW);
    assert_eq!(col_names(&t), vec!["Name", "Age"]);
    assert_eq!(cells(&t, 0), vec![json!("d1"), json!("90s")]);
}

#[test]
fn service_table() {
    let svcs = vec![
        json!({"metadata": {"name": "kubernetes"}, "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1",
               "ports": [{"port": 443, "protocol": "TCP"}], "selector": {"b": "2", "a": "1"}}}),
        json!({"metadata": {"name": "np"}, "spec": {"type": "NodePort", "clusterIP": "10.96.0.2",
               "ports": [{"port": 80, "nodePort": 30080}, {"port": 53, "protocol": "UDP"}]}}),
        json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer"}}),
        json!({"metadata": {"name": "ext"}, "spec": {"type": "ExternalName", "externalName": "example.com"}}),
    ];
    let t = to_table("services", "", &svcs, IncludeObject::None, NOW);
    assert_eq!(col_names(&t), vec!["Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age", "Selector"]);
    assert_eq!(cells(&t, 0)[1..5], [json!("ClusterIP"), json!("10.96.0.1"), json!("<none>"), json!("443/TCP")]);
    assert_eq!(cells(&t, 0)[6], json!("a=1,b=2"));
    assert_eq!(cells(&t, 1)[4], json!("80:30080/TCP,53/UDP"));
    assert_eq!(cells(&t, 2)[2..5], [json!("<none>"), json!("<pending>"), json!("<none>")]);
    assert_eq!(cells(&t, 3)[3], json!("example.com"));
}

#[test]
fn event_table_and_list_metadata() {
    let ev = json!({"metadata": {"name": "p.123"}, "type": "Warning", "reason": "BackOff",
                    "involvedObject": {"kind": "Pod", "name": "p", "fieldPath": "spec.containers{a}"},
                    "source": {"component": "kubelet", "host": "edge-1"}, "message": " Back-off \n",
                    "firstTimestamp": ago(600), "lastTimestamp": ago(10), "count": 4});
    let list = json!({"kind": "EventList", "metadata": {"resourceVersion": "77", "continue": "c"}, "items": [ev]});
    let t = table_from_list("events", "", &list, IncludeObject::None, NOW);
    assert_eq!(t["metadata"], json!({"resourceVersion": "77", "continue": "c"}));
    assert_eq!(
        col_names(&t),
        vec!["Last Seen", "Type", "Reason", "Object", "Subobject", "Source", "Message", "First Seen", "Count", "Name"]
    );
    assert_eq!(
        cells(&t, 0),
        vec![
            json!("10s"),
            json!("Warning"),
            json!("BackOff"),
            json!("pod/p"),
            json!("spec.containers{a}"),
            json!("kubelet, edge-1"),
            json!("Back-off"),
            json!("10m"),
            json!(4),
            json!("p.123")
        ]
    );
    let single = table_from_list("configmaps", "", &json!({"metadata": {"name": "one"}}), IncludeObject::None, NOW);
    assert_eq!(single["rows"].as_array().map(Vec::len), Some(1));
}

#[test]
fn deployment_table() {
    let d = json!({"metadata": {"name": "web"}, "spec": {"replicas": 3,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1"}]}}},
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
    let t = to_table("deployments", "apps", &[d], IncludeObject::None, NOW);
    assert_eq!(
        cells(&t, 0),
        vec![
            json!("web"),
            json!("2/3"),
            json!(3),
            json!(2),
            json!("<unknown>"),
            json!("nginx"),
            json!("nginx:1"),
            json!("app=web")
        ]
    );
}
