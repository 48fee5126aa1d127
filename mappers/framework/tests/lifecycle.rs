//! The framework end to end against a fake edgecore on a temp unix socket: registration,
//! twin and state reports, desired writes, device changes over DMI, the REST API, bad
//! configurations, and edgecore restarting under the mapper.

#[path = "common/fake_edgecore.rs"]
mod fake_edgecore;
#[path = "common/support.rs"]
mod support;

/// The protocol name the test devices carry.
const PROTOCOL: &str = "memory";

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use fake_edgecore::*;
use kubeedge_dmi::v1beta1::device_mapper_service_client::DeviceMapperServiceClient;
use kubeedge_dmi::v1beta1::*;
use kubeedge_mapper_framework::{Config, start};
use serde_json::{Value, json};
use support::*;
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(10);

fn mapper_config(edgecore: &Path, mapper: &Path) -> Config {
    let yaml = format!(
        "grpc_server:\n  socket_path: {}\ncommon:\n  name: memory-mapper\n  version: v1.20.0\n  api_version: v1.0.0\n  protocol: memory\n  address: 127.0.0.1\n  edgecore_sock: {}\n  http_port: 0\n",
        mapper.display(),
        edgecore.display()
    );
    Config::parse(&yaml, Path::new("test.yaml")).unwrap()
}

fn thermometer() -> DeviceModel {
    model("thermometer", &[("temperature", "INT", "ReadOnly"), ("target", "FLOAT", "ReadWrite")])
}

fn thermo(name: &str, bank: &str) -> Device {
    device(
        name,
        "thermometer",
        json!({"bank": bank}),
        vec![
            property("temperature", json!({"key": "t"}), "", 100),
            property("target", json!({"key": "target"}), "30.5", 100),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mapper_lifecycle_against_a_fake_edgecore() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        let (edge_sock, mapper_sock) = temp_paths(dir.path());
        let bank_a = Memory::default();
        bank_a.set("t", "21");
        let bank_b = Memory::default();
        bank_b.set("t", "5");
        let protocol = MemoryProtocol { banks: HashMap::from([("a".to_owned(), bank_a.clone()), ("b".to_owned(), bank_b.clone())]) };

        // The mapper starts before edgecore answers: it keeps trying.
        let stop = CancellationToken::new();
        let mapper = start(mapper_config(&edge_sock, &mapper_sock), protocol, stop.clone()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
        let mut edge = FakeEdgecore::serve(&edge_sock, vec![thermometer()], vec![thermo("thermo-1", "a")]).await;

        // Registration with our identity and socket.
        let Event::Register(info) = edge.expect(T, "registration", |e| matches!(e, Event::Register(_))).await else { unreachable!() };
        assert_eq!((info.name.as_str(), info.protocol.as_str(), info.version.as_str(), info.api_version.as_str()), ("memory-mapper", "memory", "v1.20.0", "v1.0.0"));
        assert_eq!(info.address, mapper_sock.to_string_lossy().as_bytes());
        assert_eq!(info.state, "ok");

        // State and twins, with the desired value written to the device and echoed as observed.
        edge.expect(T, "online state", state("default/thermo-1", "online")).await;
        let e = edge.expect(T, "temperature report", status("default/thermo-1", "temperature", "21")).await;
        assert_eq!(e, Event::Status("default/thermo-1".into(), "temperature".into(), "21".into(), String::new()));
        assert_eq!(bank_a.get("target").as_deref(), Some("30.5"), "desired value written to the device");
        let e = edge.expect(T, "target report", status("default/thermo-1", "target", "30.5")).await;
        assert!(matches!(e, Event::Status(_, _, _, ref d) if d == "30.5"), "{e:?}");
        // A changed device value is reported.
        bank_a.set("t", "22");
        edge.expect(T, "new temperature", status("default/thermo-1", "temperature", "22")).await;

        // REST API.
        let addr = mapper.http_addr();
        let (code, body) = get(addr, "/api/v1/ping").await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!((code, v["apiVersion"].as_str(), v["statusCode"].as_i64()), (200, Some("v1"), Some(200)));
        assert_eq!(v["Message"], "This is v1 API, the server is running normally.");
        assert!(v["timeStamp"].as_str().unwrap().ends_with('Z'));
        let (code, body) = get(addr, "/api/v1/device/default/thermo-1/temperature").await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(code, 200, "{body}");
        assert_eq!((v["Data"]["DeviceName"].as_str(), v["Data"]["PropertyName"].as_str(), v["Data"]["Namespace"].as_str()), (Some("thermo-1"), Some("temperature"), Some("default")));
        assert_eq!((v["Data"]["Value"].as_str(), v["Data"]["Type"].as_str()), (Some("22"), Some("int")));
        assert!(v["Data"]["TimeStamp"].as_i64().unwrap() > 1_600_000_000_000);
        let (code, body) = get(addr, "/api/v1/devicemethod/default/thermo-1").await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(code, 200);
        assert_eq!(
            v["Data"]["Methods"],
            json!([{"Name": "setTarget", "Path": "/api/v1/devicemethod/default/thermo-1/setTarget/{propertyName}/{data}", "Parameters": [{"PropertyName": "target", "ValueType": "float"}]}])
        );
        let (code, body) = get(addr, "/api/v1/devicemethod/default/thermo-1/setTarget/target/18.25").await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["Message"], "Write data 18.25 to device default/thermo-1 successfully.");
        assert_eq!(bank_a.get("target").as_deref(), Some("18.25"));
        let (code, body) = get(addr, "/api/v1/devicemethod/default/thermo-1/setTarget/temperature/1").await;
        assert_eq!(code, 500);
        assert!(body.contains("not in the list defined by devicemethod"), "{body}");
        let (code, body) = get(addr, "/api/v1/devicemethod/default/thermo-1/setTarget/target/warm").await;
        assert_eq!(code, 500);
        assert!(body.contains("\"warm\" is not a valid float"), "{body}");
        let (code, body) = get(addr, "/api/v1/meta/model/default/thermo-1").await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(code, 200);
        assert_eq!((v["id"].as_str(), v["name"].as_str(), v["namespace"].as_str()), (Some("default/thermometer"), Some("thermometer"), Some("default")));
        assert_eq!(v["properties"][1], json!({"name": "target", "dataType": "FLOAT", "accessMode": "ReadWrite", "unit": "C"}));
        let (code, body) = get(addr, "/api/v1/device/default/nope/temperature").await;
        assert_eq!(code, 500);
        assert!(body.starts_with("Get device data error: not found device default/nope"), "{body}");

        // DMI: add a device, read it back, remove it.
        let channel = kubeedge_dmi::connect_unix(&mapper_sock, Duration::from_secs(1)).await.unwrap();
        let mut dmi = DeviceMapperServiceClient::new(channel);
        let answer = dmi.register_device(RegisterDeviceRequest { device: Some(thermo("thermo-2", "b")) }).await.unwrap().into_inner();
        assert_eq!((answer.device_name.as_str(), answer.device_namespace.as_str()), ("thermo-2", "default"));
        edge.expect(T, "thermo-2 report", status("default/thermo-2", "temperature", "5")).await;
        let got = dmi.get_device(GetDeviceRequest { device_name: "thermo-2".into(), device_namespace: "default".into() }).await.unwrap().into_inner();
        let twins = got.device.unwrap().status.unwrap().twins;
        let temp = twins.iter().find(|t| t.property_name == "temperature").unwrap();
        assert_eq!(temp.reported.as_ref().unwrap().value, "5");
        assert_eq!(temp.reported.as_ref().unwrap().metadata.get("type").map(String::as_str), Some("int"));

        // UpdateDevice with a new desired value: written to the device.
        let mut updated = thermo("thermo-2", "b");
        updated.spec.as_mut().unwrap().properties[1].desired.as_mut().unwrap().value = "40".into();
        dmi.update_device(UpdateDeviceRequest { device: Some(updated) }).await.unwrap();
        edge.expect(T, "updated target", status("default/thermo-2", "target", "40")).await;
        assert_eq!(bank_b.get("target").as_deref(), Some("40"));

        dmi.remove_device(RemoveDeviceRequest { device_name: "thermo-2".into(), device_namespace: "default".into() }).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        edge.drain();
        tokio::time::sleep(Duration::from_millis(600)).await;
        let mut seen = Vec::new();
        while let Ok(e) = edge.events.try_recv() {
            seen.push(e);
        }
        assert!(seen.iter().all(|e| !matches!(e, Event::Status(id, ..) | Event::State(id, _) if id == "default/thermo-2")), "{seen:?}");
        assert!(seen.iter().any(|e| matches!(e, Event::Status(id, ..) if id == "default/thermo-1")), "thermo-1 goes on: {seen:?}");
        let err = dmi.remove_device(RemoveDeviceRequest { device_name: "thermo-2".into(), device_namespace: "default".into() }).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        // A device whose model is unknown is refused (after upstream's 3 s wait).
        let err = dmi.register_device(RegisterDeviceRequest { device: Some(device("odd", "nomodel", json!({"bank": "a"}), vec![])) }).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        assert!(err.message().contains("deviceModel nomodel in default namespace not found"), "{}", err.message());

        // edgecore restarts (its socket goes away and comes back): the mapper registers again
        // and adopts the new answer (thermo-3 added, thermo-1 gone).
        edge.shut().await;
        let mut edge = FakeEdgecore::serve(&edge_sock, vec![thermometer()], vec![thermo("thermo-3", "b")]).await;
        edge.expect(T, "re-registration", |e| matches!(e, Event::Register(_))).await;
        edge.expect(T, "thermo-3 report", status("default/thermo-3", "temperature", "5")).await;
        assert_eq!(mapper.panel().device_ids(), vec!["default/thermo-3".to_owned()]);

        stop.cancel();
        assert!(mapper.wait().await, "every task stopped within the grace period");
        assert!(!mapper_sock.exists(), "our socket is removed on shutdown");
        edge.shut().await;
    })
    .await
    .expect("likely deadlocked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configurations_make_one_device_unhealthy_and_spare_the_others() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let dir = tempfile::tempdir().unwrap();
        let (edge_sock, mapper_sock) = temp_paths(dir.path());
        let bank = Memory::default();
        bank.set("t", "7");
        let protocol = MemoryProtocol { banks: HashMap::from([("a".to_owned(), bank)]) };
        let good = thermo("good", "a");
        // A visitor without its `key`, and a property whose type is unknown.
        let bad_visitor = device(
            "bad-visitor",
            "thermometer",
            json!({"bank": "a"}),
            vec![property("temperature", json!({"offset": 3}), "", 100)],
        );
        let mut odd = model("odd", &[("level", "DECIMAL", "ReadOnly")]);
        odd.namespace = "default".into();
        let bad_type =
            device("bad-type", "odd", json!({"bank": "a"}), vec![property("level", json!({"key": "t"}), "", 100)]);
        let unreachable = thermo("unreachable", "nowhere");
        let mut edge =
            FakeEdgecore::serve(&edge_sock, vec![thermometer(), odd], vec![good, bad_visitor, bad_type, unreachable])
                .await;
        let stop = CancellationToken::new();
        let mapper = start(mapper_config(&edge_sock, &mapper_sock), protocol, stop.clone()).await.unwrap();

        edge.expect(T, "bad-visitor unhealthy", state("default/bad-visitor", "unhealthy")).await;
        edge.expect(T, "bad-type unhealthy", state("default/bad-type", "unhealthy")).await;
        edge.expect(T, "unreachable offline", state("default/unreachable", "offline")).await;
        edge.expect(T, "good reports", status("default/good", "temperature", "7")).await;

        let view = mapper.panel().view("default", "bad-visitor").unwrap();
        let why = view.error.unwrap();
        assert!(
            why.contains("properties[temperature].visitors.configData") && why.contains("missing field `key`"),
            "{why}"
        );
        let why = mapper.panel().view("default", "bad-type").unwrap().error.unwrap();
        assert!(why.contains("unknown data type \"decimal\""), "{why}");
        let why = mapper.panel().view("default", "unreachable").unwrap().error.unwrap();
        assert!(why.contains("no bank nowhere"), "{why}");

        stop.cancel();
        assert!(mapper.wait().await);
        edge.shut().await;
    })
    .await
    .expect("likely deadlocked");
}

#[tokio::test]
async fn a_live_mapper_socket_is_not_stolen() {
    let dir = tempfile::tempdir().unwrap();
    let (edge_sock, mapper_sock) = temp_paths(dir.path());
    let _held = kubeedge_dmi::bind_unix(&mapper_sock).await.unwrap();
    let protocol = MemoryProtocol { banks: HashMap::new() };
    let err = start(mapper_config(&edge_sock, &mapper_sock), protocol, CancellationToken::new()).await.err().unwrap();
    assert!(format!("{:?}", err).contains("SocketInUse"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_push_posts_upstreams_form_body() {
    tokio::time::timeout(Duration::from_secs(30), async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let (edge_sock, mapper_sock) = temp_paths(dir.path());
        // The push target: answers 200 and hands the request to the test.
        let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = target.local_addr().unwrap().port();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(16);
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = target.accept().await else { return };
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut got = String::new();
                    while !got.contains("time=") {
                        let n = s.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        got.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
                    let _ = tx.send(got).await;
                });
            }
        });
        let bank = Memory::default();
        bank.set("t", "21");
        let protocol = MemoryProtocol { banks: HashMap::from([("a".to_owned(), bank)]) };
        let mut prop = property("temperature", json!({"key": "t"}), "", 100);
        prop.push_method = Some(PushMethod {
            http: Some(PushMethodHttp {
                hostname: "http://127.0.0.1".into(),
                port: port.into(),
                requestpath: "/ingest".into(),
                timeout: 1000,
            }),
            ..Default::default()
        });
        let dev = device("pushed", "thermometer", json!({"bank": "a"}), vec![prop]);
        let edge = FakeEdgecore::serve(&edge_sock, vec![thermometer()], vec![dev]).await;
        let stop = CancellationToken::new();
        let mapper = start(mapper_config(&edge_sock, &mapper_sock), protocol, stop.clone()).await.unwrap();

        let request = rx.recv().await.unwrap();
        assert!(request.starts_with("POST /ingest HTTP/1.1\r\n"), "{request}");
        assert!(request.to_ascii_lowercase().contains("content-type: application/x-www-form-urlencoded"), "{request}");
        let body = request.split("\r\n\r\n").nth(1).unwrap();
        let (value, time) = body.split_once("&time=").unwrap();
        assert_eq!(value, "temperature=21");
        // `2006-01-02 15:04:05`.
        assert_eq!((time.len(), &time[4..5], &time[10..11]), (19, "-", " "), "{time}");

        stop.cancel();
        assert!(mapper.wait().await);
        edge.shut().await;
    })
    .await
    .expect("likely deadlocked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_push_publishes_upstreams_payload_to_a_real_broker() {
    if std::process::Command::new("mosquitto").arg("-h").output().is_err() {
        assert!(
            std::env::var_os("KUBEEDGE_REQUIRE_TOOLS").is_none_or(|v| v.is_empty()),
            "mosquitto is needed (hack/install-deps.sh installs it)"
        );
        eprintln!("skipped: mosquitto is not installed (hack/install-deps.sh)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")).unwrap();
    let broker = std::process::Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _broker = Reap(broker);
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // A subscriber from mosquitto's own clients: the first message on the topic, 20 s at most.
    let sub = std::process::Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "heating/edge-1", "-C", "1", "-W", "20", "-v"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    tokio::time::timeout(Duration::from_secs(30), async {
        let (edge_sock, mapper_sock) = temp_paths(dir.path());
        let bank = Memory::default();
        bank.set("t", "21");
        let protocol = MemoryProtocol { banks: HashMap::from([("a".to_owned(), bank)]) };
        let mut prop = property("temperature", json!({"key": "t"}), "", 100);
        prop.push_method = Some(PushMethod {
            mqtt: Some(PushMethodMqtt {
                address: format!("tcp://127.0.0.1:{port}"),
                topic: "heating/edge-1".into(),
                qos: 1,
                retained: false,
            }),
            ..Default::default()
        });
        let dev = device("pushed", "thermometer", json!({"bank": "a"}), vec![prop]);
        let edge = FakeEdgecore::serve(&edge_sock, vec![thermometer()], vec![dev]).await;
        let stop = CancellationToken::new();
        let mapper = start(mapper_config(&edge_sock, &mapper_sock), protocol, stop.clone()).await.unwrap();

        let out = tokio::task::spawn_blocking(move || sub.wait_with_output().unwrap()).await.unwrap();
        assert!(out.status.success(), "mosquitto_sub got nothing within 20 s");
        let line = String::from_utf8(out.stdout).unwrap();
        // `-v`: the topic, a space, then upstream's payload `time is 2006-01-02 15:04:05  {topic}: {value}`.
        let payload = line.trim_end().strip_prefix("heating/edge-1 ").unwrap_or_else(|| panic!("{line:?}"));
        let rest = payload.strip_prefix("time is ").unwrap_or_else(|| panic!("{payload:?}"));
        assert_eq!(&rest[19..], "  heating/edge-1: 21", "{payload:?}");
        assert_eq!((&rest[4..5], &rest[10..11], &rest[13..14]), ("-", " ", ":"), "{payload:?}");

        stop.cancel();
        assert!(mapper.wait().await);
        edge.shut().await;
    })
    .await
    .expect("likely deadlocked");
}
