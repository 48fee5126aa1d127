//! The cloudcore binary with DeviceController (on by default) against apiserver-lite, and
//! scripted edges speaking the wire protocol over mTLS (as MetaManager and DeviceTwin would):
//!
//! - a Device bound to a node: the edge gets a membership update, the DeviceModel, then the
//!   Device (with resourceversion), ACKs them, and ObjectSyncs record them; its DeviceStatus is
//!   created, owned by the Device;
//! - twin and state reports become the DeviceStatus's reported values, state and last online
//!   time, each answered "OK" with the report's id as parent;
//! - a device created while its edge is away arrives when the edge reconnects (with its
//!   membership); a nodeName change moves it; a delete removes it (membership, model, device);
//! - 1,000 quick reports for a few devices leave the last value of every property, and an
//!   older report sent last does not overwrite a newer one; every report is answered;
//! - a node reporting a device bound to another node is refused; malformed content is dropped
//!   and the session lives on.

mod scripted;

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kubeedge_apis::devices::v1beta1::{Device, DeviceModel, DeviceStatus};
use kubeedge_apis::reliablesyncs::v1alpha1::ObjectSync;
use kubeedge_model::{Content, Message};
use scripted::{Cluster, Edge, PATIENCE, until};
use serde_json::{Value, json};

async fn start() -> (Cluster, kube::Client) {
    let mut c = Cluster::start(&[]).await;
    c.cloud.wait_for_line("DeviceController started.");
    c.cloud.wait_for_line("Loaded what edge nodes have acknowledged.");
    let nodes: Api<Node> = Api::all(c.client.clone());
    for n in ["edge-1", "edge-2"] {
        let node: Node =
            serde_json::from_value(json!({"metadata": {"name": n, "labels": {"node-role.kubernetes.io/edge": ""}}}))
                .unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
    }
    let client = c.client.clone();
    (c, client)
}

async fn create_model(client: &kube::Client, name: &str, props: &[&str]) {
    let props: Vec<Value> =
        props.iter().map(|p| json!({"name": p, "type": "FLOAT", "accessMode": "ReadWrite"})).collect();
    let m: DeviceModel = serde_json::from_value(json!({
        "apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"protocol": "virtual", "properties": props}
    }))
    .unwrap();
    Api::<DeviceModel>::namespaced(client.clone(), "default").create(&PostParams::default(), &m).await.unwrap();
}

async fn create_device(client: &kube::Client, name: &str, model: &str, node: &str, props: &[&str]) -> Device {
    let props: Vec<Value> = props
        .iter()
        .map(|p| json!({"name": p, "desired": {"value": "20"}, "visitors": {"protocolName": "virtual"}, "reportToCloud": true}))
        .collect();
    let d: Device = serde_json::from_value(json!({
        "apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
        "metadata": {"name": name, "namespace": "default", "labels": {"description": "a thermometer"}},
        "spec": {"deviceModelRef": {"name": model}, "nodeName": node, "protocol": {"protocolName": "virtual"},
                 "properties": props}
    }))
    .unwrap();
    Api::<Device>::namespaced(client.clone(), "default").create(&PostParams::default(), &d).await.unwrap()
}

/// A report as DeviceTwin sends it (source `twin`, group `resource`, operation `update`).
fn report(device: &str, kind: &str, content: Value) -> Message {
    Message::build(
        "twin",
        "resource",
        format!("device/default/{device}/{kind}"),
        "update",
        Content::json(&content).unwrap(),
    )
}

fn twin_report(device: &str, values: &[(&str, &str, i64)]) -> Message {
    let twins: serde_json::Map<String, Value> = values
        .iter()
        .map(|(p, v, at)| {
            (
                (*p).to_owned(),
                json!({"actual": {"value": v, "metadata": {"timestamp": at}},
                                     "expected": {"value": "20", "metadata": {"timestamp": 1}},
                                     "metadata": {"type": "float"}}),
            )
        })
        .collect();
    let at = values.iter().map(|v| v.2).max().unwrap_or(0);
    report(device, "twin/edge_updated", json!({"event_id": uuid(), "timestamp": at, "twin": twins}))
}

fn uuid() -> String {
    Message::new().header.id
}

fn is(m: &Message, resource: &str, op: &str) -> bool {
    m.router.resource == resource && m.router.operation == op
}

fn members(m: &Message, list: &str) -> Vec<String> {
    let v: Value = m.content.decode().unwrap();
    v[list].as_array().into_iter().flatten().map(|d| d["id"].as_str().unwrap_or_default().to_owned()).collect()
}

async fn status_of(client: &kube::Client, name: &str) -> Option<DeviceStatus> {
    Api::<DeviceStatus>::namespaced(client.clone(), "default").get_opt(name).await.ok().flatten()
}

fn reported(s: &DeviceStatus, prop: &str) -> Option<String> {
    s.status.as_ref()?.twins.iter().find(|t| t.property_name == prop).map(|t| t.reported.value.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_reach_their_node_through_objectsync_and_reports_reach_devicestatus() {
    let (c, client) = start().await;
    let (ca, addr) = (&c.ca, c.ws.clone());
    let mut cloud = c.cloud;

    let mut edge = Edge::connect(ca, &addr, "edge-1").await;
    create_model(&client, "thermo-model", &["temperature"]).await;
    let dev = create_device(&client, "thermo-1", "thermo-model", "edge-1", &["temperature"]).await;

    // Membership, the model, then the device (each acknowledged by `expect`).
    let m = edge
        .expect("the membership update", |m| is(m, "membership", "update"))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cloud.log()));
    assert_eq!((m.router.source.as_str(), m.router.group.as_str()), ("devicecontroller", "twin"));
    assert_eq!(members(&m, "added_devices"), ["default/thermo-1"]);
    let v: Value = m.content.decode().unwrap();
    assert_eq!(
        v["added_devices"][0],
        json!({"id": "default/thermo-1", "name": "thermo-1", "description": "a thermometer"})
    );
    let model = edge.expect("the model", |m| is(m, "default/devicemodel/thermo-model", "insert")).await.unwrap();
    assert!(!model.header.resource_version.is_empty());
    assert!(
        !edge.backlog.iter().any(|m| m.router.resource.contains("device/thermo-1")),
        "the device came before its model"
    );
    let device = edge.expect("the device", |m| is(m, "default/device/thermo-1", "insert")).await.unwrap();
    assert_eq!(device.router.source, "devicecontroller");
    assert_eq!(device.router.group, "resource");
    assert_eq!(device.header.resource_version, dev.metadata.resource_version.clone().unwrap());
    let body: Value = device.content.decode().unwrap();
    assert_eq!(
        (body["apiVersion"].as_str(), body["kind"].as_str()),
        (Some("devices.kubeedge.io/v1beta1"), Some("Device"))
    );

    // The ACKs are recorded, and the DeviceStatus exists, owned by the Device.
    let uid = dev.metadata.uid.clone().unwrap();
    let syncs: Api<ObjectSync> = Api::namespaced(client.clone(), "default");
    until("the device's ObjectSync", async || {
        syncs
            .get_opt(&format!("edge-1.{uid}"))
            .await
            .ok()
            .flatten()
            .and_then(|s| s.status)
            .is_some_and(|s| s.object_resource_version != "0")
    })
    .await;
    let ds = {
        let client = client.clone();
        until("the DeviceStatus", async || status_of(&client, "thermo-1").await.is_some()).await;
        status_of(&client, "thermo-1").await.unwrap()
    };
    let owner = &ds.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.controller), ("Device", uid.as_str(), Some(true)));

    // A twin report and a state report: the API has them, each is answered "OK".
    let twin = twin_report("thermo-1", &[("temperature", "21.5", 1_700_000_000_100)]);
    let ok = edge.ask(&twin).await.unwrap_or_else(|e| panic!("{e}\n{}", cloud.log()));
    assert_eq!(ok.content.as_str().as_deref(), Some("OK"));
    assert_eq!(
        (ok.router.group.as_str(), ok.router.resource.as_str(), ok.router.operation.as_str()),
        ("twin", "twin", "response")
    );
    let ds = status_of(&client, "thermo-1").await.unwrap();
    let t = &ds.status.as_ref().unwrap().twins[0];
    assert_eq!(t.property_name, "temperature");
    assert_eq!(t.reported.value, "21.5");
    assert_eq!(t.reported.metadata["timestamp"], "1700000000100");
    assert_eq!(t.reported.metadata["type"], "float");
    assert_eq!(t.observed_desired.value, "20");
    let state = report(
        "thermo-1",
        "state/update",
        json!({"event_id": uuid(), "timestamp": 1_700_000_000_200_i64,
               "device": {"name": "thermo-1", "state": "online", "lastOnlineTime": "2026-01-02T03:04:05Z"}}),
    );
    let ok = edge.ask(&state).await.unwrap();
    assert_eq!(ok.content.as_str().as_deref(), Some("OK"));
    let s = status_of(&client, "thermo-1").await.unwrap().status.unwrap();
    assert_eq!((s.state.as_str(), s.last_online_time.as_str()), ("online", "2026-01-02T03:04:05Z"));
    assert_eq!(s.twins[0].reported.value, "21.5", "the state patch kept the twins");

    // Malformed content is dropped, unanswered; the session lives on.
    let mark = cloud.mark();
    let bad = Message::build(
        "twin",
        "resource",
        "device/default/thermo-1/twin/edge_updated",
        "update",
        Content::string("{not json"),
    );
    edge.send(&bad).await;
    cloud.wait_for_line_since(mark, "Dropped a malformed device report.");
    let again = twin_report("thermo-1", &[("temperature", "22", 1_700_000_000_300)]);
    assert_eq!(edge.ask(&again).await.unwrap().content.as_str().as_deref(), Some("OK"));

    // Away: a second device for edge-1 arrives when it reconnects (the model it has already).
    drop(edge);
    create_device(&client, "thermo-2", "thermo-model", "edge-1", &["temperature"]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut edge = Edge::connect(ca, &addr, "edge-1").await;
    let m = edge
        .expect("the membership of the device created while away", |m| {
            is(m, "membership", "update") && members(m, "added_devices") == ["default/thermo-2"]
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cloud.log()));
    assert_eq!(m.router.group, "twin");
    edge.expect("the device created while away", |m| is(m, "default/device/thermo-2", "insert")).await.unwrap();

    // A nodeName change moves it: removed from edge-1 (the model stays: thermo-1 uses it),
    // added to edge-2 with the model.
    let mut edge2 = Edge::connect(ca, &addr, "edge-2").await;
    let devices: Api<Device> = Api::namespaced(client.clone(), "default");
    devices
        .patch("thermo-2", &PatchParams::default(), &Patch::Merge(json!({"spec": {"nodeName": "edge-2"}})))
        .await
        .unwrap();
    let m = edge
        .expect("the removal", |m| {
            is(m, "membership", "update") && members(m, "removed_devices") == ["default/thermo-2"]
        })
        .await
        .unwrap();
    assert!(members(&m, "added_devices").is_empty());
    edge.expect("the moved device's delete", |m| is(m, "default/device/thermo-2", "delete")).await.unwrap();
    edge2
        .expect("the addition", |m| {
            is(m, "membership", "update") && members(m, "added_devices") == ["default/thermo-2"]
        })
        .await
        .unwrap();
    edge2.expect("the model on the new node", |m| is(m, "default/devicemodel/thermo-model", "insert")).await.unwrap();
    edge2.expect("the device on the new node", |m| is(m, "default/device/thermo-2", "insert")).await.unwrap();
    assert!(!edge.backlog.iter().any(|m| is(m, "default/devicemodel/thermo-model", "delete")));

    // A node reporting a device bound to another node is refused (no answer, no change).
    let mark = cloud.mark();
    let foreign = twin_report("thermo-1", &[("temperature", "99", 1_800_000_000_000)]);
    edge2.send(&foreign).await;
    cloud.wait_for_line_since(mark, "Refused an edge request.");
    let none =
        edge2.expect_within("no answer", Duration::from_secs(2), |m| m.header.parent_id == foreign.header.id).await;
    assert!(none.is_err(), "a refused report was answered");
    assert_eq!(reported(&status_of(&client, "thermo-1").await.unwrap(), "temperature").as_deref(), Some("22"));

    // A delete: membership removed, the model (no device of edge-1 uses it now), the device.
    devices.delete("thermo-1", &DeleteParams::default()).await.unwrap();
    edge.expect("the removal", |m| {
        is(m, "membership", "update") && members(m, "removed_devices") == ["default/thermo-1"]
    })
    .await
    .unwrap();
    edge.expect("the model's delete", |m| is(m, "default/devicemodel/thermo-model", "delete")).await.unwrap();
    edge.expect("the device's delete", |m| is(m, "default/device/thermo-1", "delete")).await.unwrap();
    until("the deleted device's ObjectSync is removed", async || {
        syncs.get_opt(&format!("edge-1.{uid}")).await.ok().flatten().is_none()
    })
    .await;

    drop((edge, edge2));
    cloud.signal("TERM");
    assert!(cloud.wait_exit(PATIENCE).is_some_and(|s| s.success()), "{}", cloud.log());
    c.api.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_quick_reports_leave_the_newest_value_of_every_property() {
    let (c, client) = start().await;
    let (ca, addr) = (&c.ca, c.ws.clone());
    let mut cloud = c.cloud;
    let props = ["temperature", "humidity", "pressure"];
    create_model(&client, "multi", &props).await;
    let names = ["dev-a", "dev-b", "dev-c", "dev-d"];
    for n in names {
        create_device(&client, n, "multi", "edge-1", &props).await;
    }
    let mut edge = Edge::connect(ca, &addr, "edge-1").await;
    for n in names {
        edge.expect("the device", |m| m.router.resource == format!("default/device/{n}"))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", cloud.log()));
    }

    // 1,000 reports, round robin over devices and properties, each value newer than the last;
    // then, for one property, a stale report (older timestamp) sent last.
    let base = 1_700_000_000_000_i64;
    let mut ids = std::collections::HashSet::new();
    let mut last: HashMap<(String, String), String> = HashMap::new();
    for i in 0..1000_i64 {
        let dev = names[(i as usize) % names.len()];
        let prop = props[(i as usize / names.len()) % props.len()];
        let value = i.to_string();
        let m = twin_report(dev, &[(prop, &value, base + i)]);
        ids.insert(m.header.id.clone());
        last.insert((dev.to_owned(), prop.to_owned()), value);
        edge.send(&m).await;
    }
    let stale = twin_report("dev-a", &[("temperature", "stale", base - 5)]);
    ids.insert(stale.header.id.clone());
    edge.send(&stale).await;

    // Every report is answered once its patch landed.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !ids.is_empty() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let m = tokio::time::timeout(left, edge.conn.recv())
            .await
            .unwrap_or_else(|_| panic!("{} reports unanswered\n{}", ids.len(), cloud.log()))
            .unwrap()
            .unwrap();
        if m.router.operation == "response" {
            assert_eq!(m.content.as_str().as_deref(), Some("OK"));
            ids.remove(&m.header.parent_id);
        }
    }
    for ((dev, prop), value) in &last {
        let s = status_of(&client, dev).await.unwrap();
        assert_eq!(reported(&s, prop).as_deref(), Some(value.as_str()), "{dev}.{prop}: {:?}", s.status);
    }
    cloud.signal("TERM");
    assert!(cloud.wait_exit(PATIENCE).is_some_and(|s| s.success()), "{}", cloud.log());
    c.api.shutdown().await;
}
