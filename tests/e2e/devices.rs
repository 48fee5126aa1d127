//! Devices end to end with the real daemons: apiserver-lite, cloudcore (DeviceController) and an
//! edgecore (EventBus on a private mosquitto, DeviceTwin), and an MQTT client playing the mapper.
//! - A DeviceModel and a Device bound to the edge: the Device's desired value arrives on the
//!   broker as `…/twin/update/delta`;
//! - the mapper publishes `…/twin/update`: DeviceStatus in the API gets the reported value;
//!   `…/state/update`: `status.state` and `lastOnlineTime`;
//! - `kubectl patch device` of the desired value: a new delta on the broker;
//! - with the cloud down, twin updates are kept on the edge and the last one reaches the API
//!   when cloudcore is back.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kubeedge_e2e::{CloudSide, Mosquitto, device_resource, wait_until};
use kubeedge_testkit::link;
use kubeedge_testkit::{Process, free_port, until};
use serde_json::{Value, json};

const NODE: &str = "edge-dev";

/// The mapper: an MQTT client subscribed to the device's topics, collecting what it gets.
struct Mapper {
    client: rumqttc::AsyncClient,
    got: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Mapper {
    fn start(rt: &tokio::runtime::Runtime, port: u16) -> Self {
        let mut opts = rumqttc::MqttOptions::new(format!("mapper-{}", std::process::id()), "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5));
        let (client, mut events) = rumqttc::AsyncClient::new(opts, 64);
        let got: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
        let sink = got.clone();
        let sub = client.clone();
        rt.spawn(async move {
            loop {
                match events.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                        let _ = sub.subscribe("$hw/events/device/#", rumqttc::QoS::AtLeastOnce).await;
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        let v = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                        sink.lock().unwrap().push((p.topic.clone(), v));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        Self { client, got }
    }

    fn publish(&self, rt: &tokio::runtime::Runtime, topic: &str, payload: Value) {
        rt.block_on(self.client.publish(topic, rumqttc::QoS::AtLeastOnce, false, payload.to_string())).unwrap();
    }

    /// Waits for a message on `topic` that `pred` accepts.
    fn wait(&self, topic: &str, pred: impl Fn(&Value) -> bool) -> Value {
        until(&format!("a message on {topic}"), || {
            self.got.lock().unwrap().iter().find(|(t, v)| t == topic && pred(v)).map(|(_, v)| v.clone())
        })
    }
}

/// The reported value of `property` in DeviceStatus `default/name`.
fn reported(cloud: &CloudSide, name: &str, property: &str) -> Option<String> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(cloud.client(), "default", &device_resource("DeviceStatus", "devicestatuses"));
    let st = cloud.rt.block_on(api.get_opt(name)).ok()??;
    let twins = st.data.pointer("/status/twins")?.as_array()?.clone();
    twins
        .iter()
        .find(|t| t["propertyName"] == property)
        .and_then(|t| t.pointer("/reported/value"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn status_field(cloud: &CloudSide, name: &str, field: &str) -> Option<Value> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(cloud.client(), "default", &device_resource("DeviceStatus", "devicestatuses"));
    let st = cloud.rt.block_on(api.get_opt(name)).ok()??;
    st.data.pointer(&format!("/status/{field}")).cloned()
}

fn twin_update(id: &str, value: &str) -> Value {
    json!({"event_id": id, "timestamp": 1, "twin": {"temperature": {"actual": {"value": value}, "metadata": {"type": "float"}}}})
}

#[test]
fn a_device_twin_travels_between_mqtt_and_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt_port = free_port();
    let Some(_broker) = Mosquitto::start(dir.path(), mqtt_port) else {
        kubeedge_testkit::skip("a_device_twin_travels_between_mqtt_and_the_api", "mosquitto is not installed");
        return;
    };
    let mut cloud = CloudSide::start(dir.path());
    let token = cloud.token();
    let edge_bin = kubeedge_testkit::workspace_bin("edgecore");
    let url = format!("tcp://127.0.0.1:{mqtt_port}");
    let edge_cfg = link::edgecore(
        &edge_bin,
        dir.path(),
        NODE,
        &token,
        &cloud.link(),
        &[
            (&["modules", "edgeHub", "heartbeat"], "2".into()),
            (&["modules", "eventBus", "enable"], "true".into()),
            (&["modules", "eventBus", "mqttMode"], "2".into()),
            (&["modules", "eventBus", "mqttServerExternal"], url.clone()),
            (&["modules", "eventBus", "mqttServerInternal"], url),
            (&["modules", "deviceTwin", "enable"], "true".into()),
        ],
    );
    let mut edge = Process::spawn(&edge_bin, &["--config", edge_cfg.to_str().unwrap()]).unwrap();
    edge.wait_for_line("Connected to CloudHub.");
    let mapper = Mapper::start(&cloud.rt, mqtt_port);

    // The model and the device, bound to the edge, with a desired value.
    let client = cloud.client();
    let (models, devices) = kubeedge_e2e::device_apis(&client);
    let model: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
        "metadata": {"name": "thermometer", "namespace": "default"},
        "spec": {"protocol": "modbus", "properties": [
            {"name": "temperature", "type": "FLOAT", "accessMode": "ReadWrite", "unit": "Celsius"}]}
    }))
    .unwrap();
    let device: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
        "metadata": {"name": "thermo-1", "namespace": "default"},
        "spec": {"deviceModelRef": {"name": "thermometer"}, "nodeName": NODE,
                 "protocol": {"protocolName": "modbus"},
                 "properties": [{"name": "temperature", "desired": {"value": "20", "metadata": {"type": "float"}}}]}
    }))
    .unwrap();
    cloud.rt.block_on(models.create(&PostParams::default(), &model)).unwrap();
    cloud.rt.block_on(devices.create(&PostParams::default(), &device)).unwrap();

    // Desired → delta on the broker.
    let delta = "$hw/events/device/default/thermo-1/twin/update/delta";
    let d = mapper.wait(delta, |v| v["delta"]["temperature"] == "20");
    assert_eq!(d["twin"]["temperature"]["expected"]["value"], "20", "{d}");

    // The mapper reports: DeviceStatus gets the value, and the state.
    let update = "$hw/events/device/default/thermo-1/twin/update";
    mapper.publish(&cloud.rt, update, twin_update("e1", "21.5"));
    wait_until("the reported value in DeviceStatus", || {
        reported(&cloud, "thermo-1", "temperature").as_deref() == Some("21.5")
    });
    mapper.publish(
        &cloud.rt,
        "$hw/events/device/default/thermo-1/state/update",
        json!({"event_id": "s1", "timestamp": 1, "state": "online"}),
    );
    wait_until("status.state online", || status_field(&cloud, "thermo-1", "state") == Some(json!("online")));
    assert!(
        status_field(&cloud, "thermo-1", "lastOnlineTime").is_some_and(|t| t.as_str().is_some_and(|s| !s.is_empty()))
    );

    // kubectl patch of the desired value → a new delta.
    let patch = json!({"spec": {"properties": [
        {"name": "temperature", "desired": {"value": "25", "metadata": {"type": "float"}}}]}});
    cloud.rt.block_on(devices.patch("thermo-1", &PatchParams::default(), &Patch::Merge(&patch))).unwrap();
    mapper.wait(delta, |v| v["delta"]["temperature"] == "25");

    // The cloud goes away; the mapper keeps reporting; the last value lands once it is back.
    let kubeconfig = cloud.kubeconfig.clone();
    cloud.proc.signal("KILL");
    let _ = cloud.proc.wait_exit(kubeedge_testkit::patience());
    for i in 0..50 {
        mapper.publish(&cloud.rt, update, twin_update(&format!("off{i}"), &format!("{}.0", 30 + i)));
    }
    let result = "$hw/events/device/default/thermo-1/twin/update/result";
    mapper.wait(result, |v| v["event_id"] == "off49");
    let cfg = dir.path().join("cloudcore.yaml");
    assert!(cfg.is_file() && kubeconfig.is_file());
    cloud.proc =
        Process::spawn(&kubeedge_testkit::workspace_bin("cloudcore"), &["--config", cfg.to_str().unwrap()]).unwrap();
    cloud.monitor = cloud.proc.monitor_addr();
    wait_until("the last offline value in DeviceStatus", || {
        reported(&cloud, "thermo-1", "temperature").as_deref() == Some("79.0")
    });

    edge.signal("TERM");
    assert!(edge.wait_exit(kubeedge_testkit::patience()).is_some_and(|s| s.success()), "{}", edge.log());
    cloud.stop();
}
