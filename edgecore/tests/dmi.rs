//! Issue #16 (edgecore's side of DMI): the real edgecore binary serves `DeviceManagerService`
//! on `{dmiSockPath}/dmi.sock`; a test mapper (a real tonic `DeviceMapperService` on its own
//! unix socket) registers, gets its devices, reports twins and states, and is called when the
//! cloud changes devices — also while it is down, and across an edgecore `kill -9`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kubeedge_dmi::v1beta1 as pb;
use kubeedge_dmi::v1beta1::device_manager_service_client::DeviceManagerServiceClient;
use kubeedge_dmi::v1beta1::device_mapper_service_server::{DeviceMapperService, DeviceMapperServiceServer};
use kubeedge_model::Message;
use kubeedge_testkit::Process;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

mod support;
use support::*;

/// What the test mapper was asked: "RegisterDevice default/thermo-1 offset=2"…
type Calls = Arc<Mutex<Vec<String>>>;

struct TestMapper {
    calls: Calls,
}

fn describe(d: &pb::Device) -> String {
    let spec = d.spec.clone().unwrap_or_default();
    let offset = spec
        .properties
        .first()
        .and_then(|p| p.visitors.as_ref()?.config_data.as_ref()?.data.get("offset").cloned())
        .and_then(|a| kubeedge_dmi::any::from_any(&a).ok())
        .map(|v| v.to_string())
        .unwrap_or_default();
    let desired = spec.properties.first().and_then(|p| p.desired.as_ref()).map(|d| d.value.clone()).unwrap_or_default();
    format!("{} offset={offset} desired={desired}", d.id())
}

#[tonic::async_trait]
impl DeviceMapperService for TestMapper {
    async fn register_device(
        &self,
        r: Request<pb::RegisterDeviceRequest>,
    ) -> Result<Response<pb::RegisterDeviceResponse>, Status> {
        let d = r.into_inner().device.unwrap_or_default();
        if d.name == "broken" {
            self.calls.lock().push(format!("Refused {}", d.id()));
            return Err(Status::invalid_argument("bad visitor config"));
        }
        self.calls.lock().push(format!("RegisterDevice {}", describe(&d)));
        Ok(Response::new(pb::RegisterDeviceResponse { device_name: d.name, device_namespace: d.namespace }))
    }
    async fn remove_device(
        &self,
        r: Request<pb::RemoveDeviceRequest>,
    ) -> Result<Response<pb::RemoveDeviceResponse>, Status> {
        let r = r.into_inner();
        self.calls.lock().push(format!("RemoveDevice {}/{}", r.device_namespace, r.device_name));
        Ok(Response::new(pb::RemoveDeviceResponse {}))
    }
    async fn update_device(
        &self,
        r: Request<pb::UpdateDeviceRequest>,
    ) -> Result<Response<pb::UpdateDeviceResponse>, Status> {
        let d = r.into_inner().device.unwrap_or_default();
        self.calls.lock().push(format!("UpdateDevice {}", describe(&d)));
        Ok(Response::new(pb::UpdateDeviceResponse {}))
    }
    async fn create_device_model(
        &self,
        r: Request<pb::CreateDeviceModelRequest>,
    ) -> Result<Response<pb::CreateDeviceModelResponse>, Status> {
        let m = r.into_inner().model.unwrap_or_default();
        self.calls.lock().push(format!("CreateDeviceModel {}", m.id()));
        Ok(Response::new(pb::CreateDeviceModelResponse {
            device_model_name: m.name,
            device_model_namespace: m.namespace,
        }))
    }
    async fn remove_device_model(
        &self,
        r: Request<pb::RemoveDeviceModelRequest>,
    ) -> Result<Response<pb::RemoveDeviceModelResponse>, Status> {
        let r = r.into_inner();
        self.calls.lock().push(format!("RemoveDeviceModel {}/{}", r.model_namespace, r.model_name));
        Ok(Response::new(pb::RemoveDeviceModelResponse {}))
    }
    async fn update_device_model(
        &self,
        r: Request<pb::UpdateDeviceModelRequest>,
    ) -> Result<Response<pb::UpdateDeviceModelResponse>, Status> {
        let m = r.into_inner().model.unwrap_or_default();
        self.calls.lock().push(format!("UpdateDeviceModel {}", m.id()));
        Ok(Response::new(pb::UpdateDeviceModelResponse {}))
    }
    async fn get_device(&self, _: Request<pb::GetDeviceRequest>) -> Result<Response<pb::GetDeviceResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

/// Serves the test mapper on `socket` until the token is cancelled.
async fn serve_mapper(socket: &Path, calls: Calls) -> CancellationToken {
    let listener = kubeedge_dmi::bind_unix(socket).await.unwrap();
    let router = tonic::transport::Server::builder().add_service(DeviceMapperServiceServer::new(TestMapper { calls }));
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move { kubeedge_dmi::serve_unix(router, listener, s.cancelled_owned()).await });
    stop
}

async fn wait_call(calls: &Calls, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while !calls.lock().iter().any(|c| c == what) {
        assert!(tokio::time::Instant::now() < deadline, "the mapper never got {what:?}; got {:?}", calls.lock());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (30 s) for a log line of `edge` holding every one of `needles`.
async fn wait_log(edge: &mut Process, needles: &[&str]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !edge.log().lines().any(|l| needles.iter().all(|n| l.contains(n))) {
        assert!(tokio::time::Instant::now() < deadline, "no log line with {needles:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn edgecore_client(dir: &Path) -> DeviceManagerServiceClient<tonic::transport::Channel> {
    let ch = kubeedge_dmi::connect_unix(dir.join("dmi.sock"), Duration::from_secs(2)).await.unwrap();
    DeviceManagerServiceClient::new(ch)
}

fn model() -> Value {
    json!({"apiVersion":"devices.kubeedge.io/v1beta1","kind":"DeviceModel",
        "metadata":{"name":"thermometer","namespace":"default","resourceVersion":"3"},
        "spec":{"protocol":"virtual","properties":[{"name":"temperature","type":"INT","accessMode":"ReadWrite",
            "visitors":{"protocolName":"virtual","configData":{"offset":0,"kind":"counter"}}}]}})
}

fn device(name: &str, rv: u32, desired: &str, offset: Option<i64>) -> Value {
    let visitors = match offset {
        Some(o) => json!({"protocolName":"virtual","configData":{"offset":o}}),
        None => json!({"protocolName":"virtual"}),
    };
    json!({"apiVersion":"devices.kubeedge.io/v1beta1","kind":"Device",
        "metadata":{"name":name,"namespace":"default","resourceVersion":rv.to_string()},
        "spec":{"deviceModelRef":{"name":"thermometer"},"nodeName":NODE,"protocol":{"protocolName":"virtual"},
            "properties":[{"name":"temperature","collectCycle":1000,"reportCycle":1000,
                "desired":{"value":desired,"metadata":{"type":"int"}},"visitors":visitors}]}})
}

fn mapper_info(socket: &Path) -> pb::MapperInfo {
    pb::MapperInfo {
        name: "virtual-mapper".into(),
        version: "v1.0.0".into(),
        api_version: "v1beta1".into(),
        protocol: "virtual".into(),
        address: socket.to_str().unwrap().as_bytes().to_vec(),
        state: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mappers_register_report_and_follow_devices() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::start(dir.path()).await;
    let config = edgecore_config(dir.path(), cloud.port, None, free_port(), free_port());
    // A stale socket left by an earlier run is replaced.
    drop(std::os::unix::net::UnixListener::bind(dir.path().join("dmi.sock")).unwrap());
    let mut edge = spawn_edgecore(&config);
    let mode = std::fs::metadata(dir.path().join("dmi.sock")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the DMI socket is the owner's only");
    cloud.wait_for("a keepalive", |m| m.router.operation == "keepalive").await;

    // The cloud sends the model and two devices before any mapper exists: they wait.
    cloud.send("devicecontroller", "resource", "default/devicemodel/thermometer", "insert", model());
    let mut hygrometer = model();
    hygrometer["metadata"]["name"] = json!("hygrometer");
    cloud.send("devicecontroller", "resource", "default/devicemodel/hygrometer", "insert", hygrometer);
    cloud.send(
        "devicecontroller",
        "resource",
        "default/device/thermo-1",
        "insert",
        device("thermo-1", 4, "20", Some(2)),
    );
    cloud.send("devicecontroller", "resource", "default/device/thermo-2", "insert", device("thermo-2", 5, "", None));
    let acked = |m: &Message| m.router.operation == "response" && m.router.resource == "default/device/thermo-2";
    cloud.wait_for("the devices stored", acked).await;

    // The mapper registers with data: its devices (the model's visitors under each, the
    // device's own keys winning) and their model, once.
    let calls: Calls = Arc::default();
    let socket = dir.path().join("virtual.sock");
    let mut stop = serve_mapper(&socket, calls.clone()).await;
    let mut client = edgecore_client(dir.path()).await;
    let answer = client
        .mapper_register(pb::MapperRegisterRequest { with_data: true, mapper: Some(mapper_info(&socket)) })
        .await
        .unwrap()
        .into_inner();
    let mut devices: Vec<String> = answer.device_list.iter().map(describe).collect();
    devices.sort();
    assert_eq!(devices, ["default/thermo-1 offset=2 desired=20", "default/thermo-2 offset=0 desired="]);
    // Every model of its protocol, also one no device uses yet.
    let models: Vec<String> = answer.model_list.iter().map(pb::DeviceModel::id).collect();
    assert_eq!(models, ["default/hygrometer", "default/thermometer"]);

    // A spec change goes to the mapper; a change of nothing but metadata does not.
    cloud.send(
        "devicecontroller",
        "resource",
        "default/device/thermo-1",
        "update",
        device("thermo-1", 6, "25", Some(2)),
    );
    wait_call(&calls, "UpdateDevice default/thermo-1 offset=2 desired=25").await;
    cloud.send(
        "devicecontroller",
        "resource",
        "default/device/thermo-1",
        "update",
        device("thermo-1", 7, "25", Some(2)),
    );

    // Reports reach the twin as MQTT twin updates would, and the cloud.
    let twin = pb::Twin {
        property_name: "temperature".into(),
        observed_desired: Some(pb::TwinProperty { value: "25".into(), metadata: Default::default() }),
        reported: Some(pb::TwinProperty { value: "21".into(), metadata: Default::default() }),
    };
    let status = pb::DeviceStatus { twins: vec![twin], report_to_cloud: true, report_cycle: 1000 };
    let req = pb::ReportDeviceStatusRequest {
        device_name: "thermo-1".into(),
        device_namespace: "default".into(),
        reported_device: Some(status),
    };
    client.report_device_status(req).await.unwrap();
    let up =
        cloud.wait_for("the twin report", |m| m.router.resource == "device/default/thermo-1/twin/edge_updated").await;
    let c: Value = up.content.decode().unwrap();
    assert_eq!(c["twin"]["temperature"]["actual"]["value"], "21", "{c}");
    assert_eq!(c["twin"]["temperature"]["expected"]["value"], "25", "{c}");
    let state = pb::ReportDeviceStatesRequest {
        device_name: "thermo-1".into(),
        device_namespace: "default".into(),
        state: "online".into(),
    };
    client.report_device_states(state).await.unwrap();
    let st = cloud.wait_for("the state", |m| m.router.resource == "device/default/thermo-1/state/update").await;
    assert_eq!(st.content.decode::<Value>().unwrap()["device"]["state"], "online");

    // Bad input gets a clear refusal; nothing crashes.
    let bad = pb::ReportDeviceStatesRequest {
        device_name: "thermo-1".into(),
        device_namespace: "default".into(),
        state: "melting".into(),
    };
    assert_eq!(client.report_device_states(bad).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    let empty = pb::ReportDeviceStatusRequest { device_name: "thermo-1".into(), ..Default::default() };
    assert_eq!(client.report_device_status(empty).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    let nameless = pb::MapperInfo { protocol: String::new(), ..mapper_info(&socket) };
    let e = client
        .mapper_register(pb::MapperRegisterRequest { with_data: true, mapper: Some(nameless) })
        .await
        .unwrap_err();
    assert!(e.message().contains("protocol is nil"), "{e:?}");
    // A device the mapper refuses is logged and not retried; the others go on.
    cloud.send("devicecontroller", "resource", "default/device/broken", "insert", device("broken", 8, "", Some(1)));
    edge.wait_for_line("The mapper refused the call");
    // A device of a protocol no mapper serves waits, named in the log; a mapper whose socket
    // accepts and never answers costs only its own protocol (the call times out and waits).
    let mut nosuch = device("nosuch-1", 14, "", None);
    nosuch["spec"]["protocol"]["protocolName"] = json!("nosuch");
    cloud.send("devicecontroller", "resource", "default/device/nosuch-1", "insert", nosuch);
    wait_log(&mut edge, &["No mapper has registered for this protocol yet", "nosuch"]).await;
    let hang_sock = dir.path().join("hang.sock");
    let _hang = std::os::unix::net::UnixListener::bind(&hang_sock).unwrap();
    let hang = pb::MapperInfo { name: "hang-mapper".into(), protocol: "hang".into(), ..mapper_info(&hang_sock) };
    client.mapper_register(pb::MapperRegisterRequest { with_data: true, mapper: Some(hang) }).await.unwrap();
    let mut stuck = device("stuck-1", 15, "", None);
    stuck["spec"]["protocol"]["protocolName"] = json!("hang");
    cloud.send("devicecontroller", "resource", "default/device/stuck-1", "insert", stuck);
    cloud.send(
        "devicecontroller",
        "resource",
        "default/device/thermo-1",
        "update",
        device("thermo-1", 16, "26", Some(2)),
    );
    wait_call(&calls, "UpdateDevice default/thermo-1 offset=2 desired=26").await;

    // The mapper goes down: what changes meanwhile waits and arrives once it is back, without
    // it registering again, merged per device: thermo-2 deleted and created again replaces the
    // mapper's copy (an update: a registration of a device it has would be ignored), thermo-3
    // created and deleted again is never sent at all.
    stop.cancel();
    // Down: its socket is gone once the server has stopped.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while socket.exists() {
        assert!(tokio::time::Instant::now() < deadline, "the test mapper's socket stayed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t1 = device("thermo-1", 9, "30", Some(2));
    cloud.send("devicecontroller", "resource", "default/device/thermo-1", "update", t1);
    edge.wait_for_line("The mapper is unreachable; the call waits.");
    for (name, op, rv, desired) in [
        ("thermo-2", "delete", 10, ""),
        ("thermo-2", "insert", 11, "5"),
        ("thermo-3", "insert", 12, ""),
        ("thermo-3", "delete", 13, ""),
    ] {
        cloud.send(
            "devicecontroller",
            "resource",
            &format!("default/device/{name}"),
            op,
            device(name, rv, desired, None),
        );
    }
    let acked = |m: &Message| m.router.operation == "response" && m.router.resource == "default/device/thermo-3";
    cloud.wait_for("the last change stored", acked).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop = serve_mapper(&socket, calls.clone()).await;
    wait_call(&calls, "UpdateDevice default/thermo-1 offset=2 desired=30").await;
    wait_call(&calls, "UpdateDevice default/thermo-2 offset=0 desired=5").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    {
        let seen = calls.lock();
        let updates = seen.iter().filter(|c| c.starts_with("UpdateDevice default/thermo-1")).count();
        assert_eq!(updates, 3, "the metadata-only update was not sent: {seen:?}");
        assert!(!seen.iter().any(|c| c.contains("thermo-3")), "thermo-3 came and went unseen: {seen:?}");
        assert!(!seen.iter().any(|c| c.starts_with("RemoveDevice default/thermo-2")), "{seen:?}");
        // What the registration answered was never sent again.
        let again = |c: &&String| c.starts_with("RegisterDevice default/thermo") || c.starts_with("CreateDeviceModel");
        assert!(!seen.iter().any(|c| again(&c)), "{seen:?}");
        // The refused device was not retried.
        assert_eq!(seen.iter().filter(|c| c.contains("broken")).count(), 1, "{seen:?}");
    }

    wait_log(&mut edge, &["The mapper is unreachable", "\"hang\""]).await;

    // edgecore is killed: it comes back with the mapper and the devices from its database.
    edge.signal("KILL");
    edge.wait_exit(Duration::from_secs(10));
    let mut edge = spawn_edgecore(&config);
    cloud.send(
        "devicecontroller",
        "resource",
        "default/device/thermo-1",
        "update",
        device("thermo-1", 11, "35", Some(3)),
    );
    wait_call(&calls, "UpdateDevice default/thermo-1 offset=3 desired=35").await;
    let mut client = edgecore_client(dir.path()).await;
    let answer = client
        .mapper_register(pb::MapperRegisterRequest { with_data: true, mapper: Some(mapper_info(&socket)) })
        .await
        .unwrap()
        .into_inner();
    let devices: Vec<String> = answer.device_list.iter().map(describe).collect();
    assert!(devices.contains(&"default/thermo-1 offset=3 desired=35".to_owned()), "{devices:?}");
    assert!(devices.contains(&"default/thermo-2 offset=0 desired=5".to_owned()), "{devices:?}");
    assert!(!devices.iter().any(|d| d.contains("thermo-3")), "{devices:?}");
    stop.cancel();
    edge.signal("TERM");
    assert!(edge.wait_exit(Duration::from_secs(20)).is_some_and(|s| s.success()), "{}", edge.log());
    assert!(!dir.path().join("dmi.sock").exists(), "the socket is removed on a clean stop");
}

/// Another edgecore serving the same socket: this one stops at start, naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dmi_socket_in_use_stops_edgecore_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let _live = kubeedge_dmi::bind_unix(dir.path().join("dmi.sock")).await.unwrap();
    let config = edgecore_config(dir.path(), free_port(), None, free_port(), free_port());
    let bin = Path::new(env!("CARGO_BIN_EXE_edgecore"));
    let mut p = Process::spawn(bin, &["--config", config.to_str().unwrap()]).unwrap();
    let status = p.wait_exit(Duration::from_secs(30));
    let log = p.log();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{log}");
    assert!(log.contains("modules.deviceTwin.dmiSockPath") && log.contains("dmi.sock"), "{log}");
}
