//! Issue #15 (edge half): the real edgecore binary with EventBus and DeviceTwin, a real MQTT
//! broker (a private mosquitto in external mode, edgecore's embedded broker in internal mode,
//! both in mode 1), an MQTT
//! client (rumqttc) as the mapper, and a scripted cloud on a real WebSocket link (viaduct, mTLS)
//! that sends membership and Device objects and confirms reports.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kubeedge_model::Message;
use kubeedge_testkit::Process;
use parking_lot::Mutex;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};

mod support;
use support::*;

/// What the mapper received: (topic, payload).
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// The mapper: an MQTT client that re-subscribes after reconnects and collects what it gets.
struct Mapper {
    client: AsyncClient,
    got: Received,
}

impl Mapper {
    fn start(port: u16) -> Mapper {
        let mut o = MqttOptions::new(format!("test-mapper-{port}"), "127.0.0.1", port);
        o.set_max_packet_size(32 << 20, 32 << 20);
        o.set_keep_alive(Duration::from_secs(5));
        let (client, mut el) = AsyncClient::new(o, 64);
        let got = Arc::new(Mutex::new(Vec::new()));
        let (c, g) = (client.clone(), got.clone());
        tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        for t in ["$hw/events/device/#", "$hw/events/node/#", "cloud/#"] {
                            let _ = c.try_subscribe(t, QoS::AtLeastOnce);
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => g.lock().push((p.topic.clone(), p.payload.to_vec())),
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        Mapper { client, got }
    }

    async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client.publish(topic, QoS::AtLeastOnce, false, payload.into()).await.unwrap();
    }

    /// Waits for a message on `topic` whose JSON satisfies `pred`.
    async fn wait(&self, topic: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let hit = self
                .got
                .lock()
                .iter()
                .filter(|(t, _)| t == topic)
                .filter_map(|(_, p)| serde_json::from_slice::<Value>(p).ok())
                .find(|v| pred(v));
            if let Some(v) = hit {
                return v;
            }
            let seen: Vec<String> = self.got.lock().iter().map(|(t, _)| t.clone()).collect();
            assert!(tokio::time::Instant::now() < deadline, "nothing on {topic}; got {seen:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Publishes until the edge answers (the edge may still be connecting to the broker).
    async fn publish_until(
        &self,
        topic: &str,
        payload: &str,
        result: &str,
        pred: impl Fn(&Value) -> bool + Copy,
    ) -> Value {
        for _ in 0..60 {
            self.publish(topic, payload).await;
            let found = tokio::time::timeout(Duration::from_secs(1), async {
                loop {
                    let hit = self
                        .got
                        .lock()
                        .iter()
                        .filter(|(t, _)| t == result)
                        .filter_map(|(_, p)| serde_json::from_slice::<Value>(p).ok())
                        .find(|v| pred(v));
                    if let Some(v) = hit {
                        return v;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
            .await;
            if let Ok(v) = found {
                return v;
            }
        }
        panic!("no answer on {result}");
    }
}

/// Device attributes from the cloud, a property leaving the Device, and a burst of updates
/// (taken into one transaction by the twin) answered one by one, in order.
async fn attributes_removed_properties_and_bursts(cloud: &Cloud, mapper: &Mapper, db: &Path) {
    // Attributes (upstream's DeviceUpdated): published with what changed on `…/updated`.
    let attrs = json!({"event_id":"a1","timestamp":1,"attributes":{
        "model":{"value":"T-1000","metadata":{"type":"string"}},"serial":{"value":"42","optional":true}}});
    cloud.send("devicecontroller", "twin", "device/default/thermo-1", "updated", attrs);
    let topic = "$hw/events/device/default/thermo-1/updated";
    let u = mapper.wait(topic, |v| v["event_id"] == "a1").await;
    assert_eq!(u["attributes"]["model"], json!({"value":"T-1000","metadata":{"type":"string"}}), "{u}");
    let changed = json!({"event_id":"a2","timestamp":2,"attributes":{"model":{"value":"T-2000"},"serial":null}});
    cloud.send("devicecontroller", "twin", "device/default/thermo-1", "updated", changed);
    let u = mapper.wait(topic, |v| v["event_id"] == "a2").await;
    assert_eq!(u["attributes"], json!({"model":{"value":"T-2000"},"serial":null}), "{u}");
    let get = format!("$hw/events/node/{NODE}/membership/get");
    mapper.publish(&get, r#"{"event_id":"mg1","timestamp":1}"#).await;
    let list = mapper.wait(&format!("{get}/result"), |v| v["event_id"] == "mg1").await;
    let dev = list["devices"].as_array().unwrap().iter().find(|d| d["id"] == "default/thermo-1").unwrap().clone();
    assert_eq!(dev["attributes"], json!({"model":{"value":"T-2000","optional":true,"metadata":{"type":"string"}}}));

    // The property `target` leaves the Device: its twin is deleted (document: last → null).
    let device = json!({"apiVersion":"devices.kubeedge.io/v1beta1","kind":"Device",
        "metadata":{"name":"thermo-1","namespace":"default","resourceVersion":"8"},
        "spec":{"deviceModelRef":{"name":"thermometer"},"nodeName":NODE,"properties":[{"name":"temperature"}]}});
    cloud.send("devicecontroller", "resource", "default/device/thermo-1", "update", device);
    let doc = mapper
        .wait("$hw/events/device/default/thermo-1/twin/update/document", |v| {
            v["twin"]["target"]["current"].is_null() && v["twin"]["target"]["last"]["expected"]["value"] == "25"
        })
        .await;
    assert!(doc["twin"].get("temperature").is_none(), "the mapper's own twin stays: {doc}");
    let get = "$hw/events/device/default/thermo-1/twin/get";
    mapper.publish(get, r#"{"event_id":"tg1","timestamp":1}"#).await;
    let twins = mapper.wait(&format!("{get}/result"), |v| v["event_id"] == "tg1").await;
    assert!(twins["twin"].get("target").is_none() && twins["twin"].get("temperature").is_some(), "{twins}");

    // A burst: every update answered, in order, the last value stored.
    let t = "$hw/events/device/default/thermo-1/twin/update";
    let r = "$hw/events/device/default/thermo-1/twin/update/result";
    let before = twin_row(db, "default/thermo-1", "temperature").await.unwrap();
    let edge_version = |v: &str| serde_json::from_str::<Value>(v).unwrap()["edge"].as_i64().unwrap();
    for i in 0..300 {
        let u =
            format!(r#"{{"event_id":"b{i}","timestamp":1,"twin":{{"temperature":{{"actual":{{"value":"{i}"}}}}}}}}"#);
        mapper.publish(t, u).await;
    }
    mapper.wait(r, |v| v["event_id"] == "b299").await;
    let order: Vec<String> = mapper
        .got
        .lock()
        .iter()
        .filter(|(topic, _)| topic == r)
        .filter_map(|(_, p)| serde_json::from_slice::<Value>(p).ok())
        .filter_map(|v| v["event_id"].as_str().filter(|e| e.starts_with('b')).map(str::to_owned))
        .collect();
    assert_eq!(order, (0..300).map(|i| format!("b{i}")).collect::<Vec<_>>());
    let after = twin_row(db, "default/thermo-1", "temperature").await.unwrap();
    assert_eq!(after.0, "299");
    assert_eq!(edge_version(&after.1), edge_version(&before.1) + 300, "every update counted: {after:?}");
}

async fn twin_row(db: &Path, device: &str, name: &str) -> Option<(String, String)> {
    let store = kubeedge_metastore::Store::open(db, Default::default()).unwrap();
    let rows = store
        .query(
            "SELECT `actual`,`actual_version` FROM `device_twin` WHERE `deviceid` = ?1 AND `name` = ?2",
            vec![device.into(), name.into()],
        )
        .await
        .unwrap();
    rows.first().map(|r| (r[0].text(), r[1].text()))
}

async fn scenario(mode: u8) {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::start(dir.path()).await;
    let (internal_port, external_port) = (free_port(), free_port());
    let mut broker = (mode >= 1).then(|| start_mosquitto(dir.path(), external_port));
    let config = edgecore_config(dir.path(), cloud.port, Some(mode), internal_port, external_port);
    let mut edge = spawn_edgecore(&config);
    cloud.wait_for("a keepalive", |m| m.router.operation == "keepalive").await;
    // The mapper uses the embedded broker when there is one (modes 0 and 1).
    let mqtt_port = if mode <= 1 { internal_port } else { external_port };
    let mapper = Mapper::start(mqtt_port);

    // Membership from the cloud: two devices, republished on membership/updated.
    let added = json!({"event_id":"m1","timestamp":1,"added_devices":[
        {"id":"default/thermo-1","name":"thermo-1","description":"a thermometer"},
        {"id":"default/thermo-2","name":"thermo-2"}],"removed_devices":[]});
    cloud.send("devicecontroller", "twin", "membership", "update", added);
    let updated = format!("$hw/events/node/{NODE}/membership/updated");
    mapper.wait(&updated, |v| v["added_devices"][0]["id"] == "default/thermo-2").await;

    // A twin update → result, the row, the report to the cloud (confirmed).
    let t1 = "$hw/events/device/default/thermo-1/twin/update";
    let r1 = "$hw/events/device/default/thermo-1/twin/update/result";
    let update =
        r#"{"event_id":"e1","timestamp":1,"twin":{"temperature":{"actual":{"value":"21"},"metadata":{"type":"int"}}}}"#;
    let result = mapper.publish_until(t1, update, r1, |v| v["event_id"] == "e1").await;
    assert_eq!(result["twin"]["temperature"]["actual"]["value"], "21", "{result}");
    assert!(result["twin"]["temperature"].get("actual_version").is_none(), "versions are stripped: {result}");
    let up =
        cloud.wait_for("twin/edge_updated", |m| m.router.resource == "device/default/thermo-1/twin/edge_updated").await;
    assert_eq!(
        (up.router.source.as_str(), up.router.group.as_str(), up.router.operation.as_str()),
        ("twin", "resource", "update")
    );
    let c: Value = up.content.decode().unwrap();
    assert_eq!(c["twin"]["temperature"]["actual"]["value"], "21", "{c}");
    assert_eq!(c["twin"]["temperature"]["actual_version"], json!({"cloud":0,"edge":1}), "{c}");
    let db = dir.path().join("edgecore.db");
    assert_eq!(
        twin_row(&db, "default/thermo-1", "temperature").await,
        Some(("21".into(), r#"{"cloud":0,"edge":1}"#.into()))
    );

    // A desired value in the Device → twin/update/delta.
    let device = json!({"apiVersion":"devices.kubeedge.io/v1beta1","kind":"Device",
        "metadata":{"name":"thermo-1","namespace":"default","resourceVersion":"7"},
        "spec":{"deviceModelRef":{"name":"thermometer"},"nodeName":NODE,
                "properties":[{"name":"target","desired":{"value":"25","metadata":{"type":"int"}}}]}});
    cloud.send("devicecontroller", "resource", "default/device/thermo-1", "update", device);
    let delta =
        mapper.wait("$hw/events/device/default/thermo-1/twin/update/delta", |v| v["delta"]["target"] == "25").await;
    assert_eq!(delta["twin"]["target"]["expected"]["value"], "25", "{delta}");
    cloud
        .wait_for("the Device ACK", |m| {
            m.router.operation == "response" && m.router.resource == "default/device/thermo-1"
        })
        .await;

    attributes_removed_properties_and_bursts(&cloud, &mapper, &dir.path().join("edgecore.db")).await;

    // State update → result and the report.
    mapper
        .publish(
            "$hw/events/device/default/thermo-1/state/update",
            r#"{"event_id":"s1","timestamp":1,"state":"online"}"#,
        )
        .await;
    mapper.wait("$hw/events/device/default/thermo-1/state/update/result", |v| v["device"]["state"] == "online").await;
    let st = cloud.wait_for("state/update", |m| m.router.resource == "device/default/thermo-1/state/update").await;
    let s: Value = st.content.decode().unwrap();
    assert_eq!(s["device"]["state"], "online", "{s}");
    assert!(st.content.is_string(), "upstream sends the state as a JSON string");

    // Bad input: errors on the result topic, nothing crashes, other devices keep updating.
    mapper.publish(t1, "{not json").await;
    mapper.wait(r1, |v| v["code"] == 400 && v["reason"].as_str().is_some_and(|r| r.starts_with("Unmarshal"))).await;
    let ghost = r#"{"event_id":"g1","timestamp":1,"twin":{"x":{"actual":{"value":"1"}}}}"#;
    mapper.publish("$hw/events/device/default/ghost/twin/update", ghost).await;
    mapper
        .wait("$hw/events/device/default/ghost/twin/update/result", |v| v["code"] == 404 && v["event_id"] == "g1")
        .await;
    let long_key =
        format!(r#"{{"event_id":"k1","timestamp":1,"twin":{{"{}":{{"actual":{{"value":"1"}}}}}}}}"#, "k".repeat(129));
    mapper.publish(t1, long_key).await;
    mapper.wait(r1, |v| v["code"] == 400 && v["reason"].as_str().is_some_and(|r| r.contains("key"))).await;
    let long_value =
        format!(r#"{{"event_id":"v1","timestamp":1,"twin":{{"k":{{"actual":{{"value":"{}"}}}}}}}}"#, "v".repeat(513));
    mapper.publish(t1, long_value).await;
    mapper.wait(r1, |v| v["code"] == 400 && v["reason"].as_str().is_some_and(|r| r.contains("value"))).await;
    let huge = format!(
        r#"{{"event_id":"h1","timestamp":1,"twin":{{"k":{{"actual":{{"value":"{}"}}}}}}}}"#,
        "x".repeat(10 << 20)
    );
    mapper.publish(t1, huge).await;
    let n400 = || {
        mapper.got.lock().iter().filter(|(t, p)| t == r1 && String::from_utf8_lossy(p).contains("\"code\":400")).count()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while n400() < 4 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(n400(), 4, "the 10 MB payload is answered 400");
    let t2 = "$hw/events/device/default/thermo-2/twin/update";
    let r2 = "$hw/events/device/default/thermo-2/twin/update/result";
    mapper.publish(t2, r#"{"event_id":"e2","timestamp":1,"twin":{"humidity":{"actual":{"value":"40"}}}}"#).await;
    mapper.wait(r2, |v| v["event_id"] == "e2" && v["twin"]["humidity"]["actual"]["value"] == "40").await;
    assert!(edge.wait_exit(Duration::ZERO).is_none(), "edgecore is still running");

    // Subscribe and publish from the cloud.
    cloud.send("router_eventbus", "user", "custom/a/b", "subscribe", json!(null));
    tokio::time::sleep(Duration::from_millis(500)).await;
    mapper.publish("custom/a/b", "from-app").await;
    let upload =
        cloud.wait_for("the upload", |m| m.router.operation == "upload" && m.router.resource == "custom/a/b").await;
    assert_eq!(upload.content.as_str().as_deref(), Some("from-app"));
    assert_eq!((upload.router.source.as_str(), upload.router.group.as_str()), ("bus", "user"));
    cloud.send("router_eventbus", "user", "cloud/x", "publish", json!("{\"hello\":1}"));
    mapper.wait("cloud/x", |v| v["hello"] == 1).await;

    // Unconfirmed reports survive an edgecore restart.
    cloud.confirm.store(false, std::sync::atomic::Ordering::Relaxed);
    let seen = cloud.received.lock().len();
    mapper.publish(t2, r#"{"event_id":"e3","timestamp":1,"twin":{"humidity":{"actual":{"value":"55"}}}}"#).await;
    mapper.wait(r2, |v| v["event_id"] == "e3").await;
    let is_55 = |m: &Message| {
        m.router.resource == "device/default/thermo-2/twin/edge_updated"
            && m.content.decode::<Value>().is_ok_and(|c| c["twin"]["humidity"]["actual"]["value"] == "55")
    };
    cloud.wait_for("the unconfirmed report", is_55).await;
    edge.signal("KILL");
    edge.wait_exit(Duration::from_secs(10));
    cloud.received.lock().drain(..seen);
    cloud.received.lock().clear();
    cloud.confirm.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut edge = spawn_edgecore(&config);
    cloud.wait_for("the report again after the restart", is_55).await;
    // The subscription was restored from sub_topics.
    let relay = |m: &Message| m.router.operation == "upload" && m.router.resource == "custom/a/b";
    for _ in 0..60 {
        mapper.publish("custom/a/b", "again").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        if cloud.received.lock().iter().any(relay) {
            break;
        }
    }
    cloud.wait_for("an upload after the restart", relay).await;

    // Mode 1: a mapper on the external broker is served too, and gets what the twin publishes.
    if mode == 1 {
        let outside = Mapper::start(external_port);
        let e5 = r#"{"event_id":"e5","timestamp":1,"twin":{"humidity":{"actual":{"value":"60"}}}}"#;
        outside.publish_until(t2, e5, r2, |v| v["event_id"] == "e5").await;
        mapper.wait(r2, |v| v["event_id"] == "e5").await;
    }

    // The external broker restarts: EventBus reconnects and keeps working.
    if broker.is_some() {
        drop(broker.take());
        broker = Some(start_mosquitto(dir.path(), external_port));
        let again = r#"{"event_id":"e4","timestamp":1,"twin":{"temperature":{"actual":{"value":"23"}}}}"#;
        mapper.publish_until(t1, again, r1, |v| v["event_id"] == "e4").await;
    }
    edge.signal("TERM");
    assert!(edge.wait_exit(Duration::from_secs(20)).is_some_and(|s| s.success()), "{}", edge.log());
    drop(broker);
}

fn start_mosquitto(dir: &Path, port: u16) -> kubeedge_testkit::Mosquitto {
    kubeedge_testkit::Mosquitto::start(dir, port).expect("mosquitto (hack/install-deps.sh installs it)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twins_over_mosquitto_external_mode() {
    scenario(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twins_over_the_embedded_broker_internal_mode() {
    scenario(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twins_over_both_brokers_mode_1() {
    scenario(1).await;
}

/// The embedded broker's port is taken: edgecore stops at start (exit 1), naming the port and
/// the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_embedded_broker_port_stops_edgecore_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = edgecore_config(dir.path(), free_port(), Some(0), port, free_port());
    let bin = Path::new(env!("CARGO_BIN_EXE_edgecore"));
    let mut p = Process::spawn(bin, &["--config", config.to_str().unwrap()]).unwrap();
    let status = p.wait_exit(Duration::from_secs(30));
    let log = p.log();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{log}");
    assert!(log.contains("modules.eventBus.mqttServerInternal") && log.contains(&port.to_string()), "{log}");
}
