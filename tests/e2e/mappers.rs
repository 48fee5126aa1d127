//! Mappers end to end with the real daemons (issue #16): apiserver-lite, cloudcore
//! (DeviceController), edgecore (DeviceTwin serving DMI), the real `modbus-mapper` binary, and a
//! real Modbus TCP server (the simulated thermometer of `kubeedge-modbus-sim`).
//! - The register's value reaches DeviceStatus in the API; a change of it follows;
//! - the Device's desired value lands in the holding registers; `kubectl patch` of it too;
//! - `status.state` goes online, offline while the Modbus server is down, online again;
//! - the mapper restarts: it registers again and keeps reporting.
//!
//! And the real `opcua-mapper` against a real OPC UA server (`hack/opcua-sim.py`, Python
//! asyncua): a variable's value reaches DeviceStatus, the desired value is written to the node,
//! the server restarting takes the device offline and back online.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kubeedge_e2e::{CloudSide, device_resource, wait_until};
use kubeedge_modbus_sim::{Device as Sim, Thermometer, get_f32, put_f32};
use kubeedge_testkit::{Process, free_port, link};
use serde_json::{Value, json};

const NODE: &str = "edge-modbus";

fn status(cloud: &CloudSide, name: &str) -> Option<Value> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(cloud.client(), "default", &device_resource("DeviceStatus", "devicestatuses"));
    cloud.rt.block_on(api.get_opt(name)).ok()?.map(|o| o.data)
}

fn reported(cloud: &CloudSide, name: &str, property: &str) -> Option<f64> {
    let st = status(cloud, name)?;
    st.pointer("/status/twins")?
        .as_array()?
        .iter()
        .find(|t| t["propertyName"] == property)?
        .pointer("/reported/value")?
        .as_str()?
        .parse()
        .ok()
}

fn state(cloud: &CloudSide, name: &str) -> Option<String> {
    status(cloud, name)?.pointer("/status/state")?.as_str().map(str::to_owned)
}

/// The Modbus server, on a fixed address so it can be stopped and started again.
struct Server {
    stop: tokio::sync::oneshot::Sender<()>,
}

fn serve(cloud: &CloudSide, addr: std::net::SocketAddr, sim: Sim) -> Server {
    let listener = cloud.rt.block_on(tokio::net::TcpListener::bind(addr)).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    cloud.rt.spawn(async move {
        tokio::select! {
            _ = kubeedge_modbus_sim::serve(listener, sim) => {}
            _ = stopped => {}
        }
    });
    Server { stop }
}

/// edgecore joined as `node`, DeviceTwin serving DMI (no EventBus); its DMI socket.
fn start_edge(cloud: &CloudSide, dir: &Path, node: &str) -> (Process, PathBuf) {
    let token = cloud.token();
    let edge_bin = kubeedge_testkit::workspace_bin("edgecore");
    let edge_cfg = link::edgecore(
        &edge_bin,
        dir,
        node,
        &token,
        &cloud.link(),
        &[(&["modules", "eventBus", "enable"], "false".into()), (&["modules", "deviceTwin", "enable"], "true".into())],
    );
    let mut edge = Process::spawn(&edge_bin, &["--config", edge_cfg.to_str().unwrap()]).unwrap();
    edge.wait_for_line("Connected to CloudHub.");
    (edge, dir.join("edge/dmi.sock"))
}

/// The mapper process, killed on drop.
struct Mapper(Child);

impl Mapper {
    fn spawn(dir: &Path, edge_sock: &Path) -> Self {
        let port = free_port();
        let config = format!(
            "grpc_server:\n  socket_path: {}\ncommon:\n  name: modbus-mapper\n  version: v1.0.0\n  api_version: v1beta1\n  protocol: modbus\n  address: 127.0.0.1\n  edgecore_sock: {}\n  http_port: \"{port}\"\n",
            dir.join("modbus.sock").display(),
            edge_sock.display()
        );
        let file = dir.join("modbus-mapper.yaml");
        Self::start(&file, &config, "modbus-mapper")
    }

    fn start(file: &Path, config: &str, bin: &str) -> Self {
        std::fs::write(file, config).unwrap();
        let child = Command::new(kubeedge_testkit::workspace_bin(bin))
            .arg("--config-file")
            .arg(file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self(child)
    }

    fn stop(mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        for _ in 0..100 {
            if self.0.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the mapper did not stop within 10 s of SIGTERM");
    }
}

impl Drop for Mapper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_modbus_register_reaches_devicestatus_and_a_desired_value_the_register() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = CloudSide::start(dir.path());
    let sim = Thermometer::device();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut server = serve(&cloud, addr, sim.clone());

    let (mut edge, edge_sock) = start_edge(&cloud, dir.path(), NODE);

    let client = cloud.client();
    let (models, devices) = kubeedge_e2e::device_apis(&client);
    let model: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
        "metadata": {"name": "thermometer", "namespace": "default"},
        "spec": {"protocol": "modbus", "properties": [
            {"name": "temperature", "type": "FLOAT", "accessMode": "ReadOnly", "unit": "Celsius"},
            {"name": "setpoint", "type": "FLOAT", "accessMode": "ReadWrite", "unit": "Celsius"}]}
    }))
    .unwrap();
    let visitor = |register: &str| json!({"protocolName": "modbus", "configData": {"register": register, "offset": 0, "limit": 2}});
    let device: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
        "metadata": {"name": "thermo-1", "namespace": "default"},
        "spec": {"deviceModelRef": {"name": "thermometer"}, "nodeName": NODE,
                 "protocol": {"protocolName": "modbus",
                              "configData": {"ip": addr.ip().to_string(), "port": addr.port(), "slaveID": 1}},
                 "properties": [
                    {"name": "temperature", "collectCycle": 200, "reportCycle": 200, "reportToCloud": true,
                     "visitors": visitor("InputRegister")},
                    {"name": "setpoint", "collectCycle": 200, "reportCycle": 200, "reportToCloud": true,
                     "desired": {"value": "25.5", "metadata": {"type": "float"}},
                     "visitors": visitor("HoldingRegister")}],
                 "stateReport": {"reportToCloud": true, "reportCycle": 500}}
    }))
    .unwrap();
    cloud.rt.block_on(models.create(&PostParams::default(), &model)).unwrap();
    cloud.rt.block_on(devices.create(&PostParams::default(), &device)).unwrap();

    // The mapper registers, gets the device, reads the registers, reports.
    let mapper = Mapper::spawn(dir.path(), &edge_sock);
    wait_until("the temperature register in DeviceStatus", || {
        reported(&cloud, "thermo-1", "temperature").is_some_and(|t| (t - 21.5).abs() < 1e-3)
    });
    wait_until("status.state online", || state(&cloud, "thermo-1").as_deref() == Some("online"));
    // The desired value is written to the holding registers.
    wait_until("the setpoint written", || sim.with(|m| (get_f32(&m.holding, 0) - 25.5).abs() < 1e-3));
    // The register changes: DeviceStatus follows.
    sim.with(|m| put_f32(&mut m.input, 0, 23.25));
    wait_until("the new temperature in DeviceStatus", || {
        reported(&cloud, "thermo-1", "temperature").is_some_and(|t| (t - 23.25).abs() < 1e-3)
    });
    // kubectl patch of the desired value: written to the device.
    let patch = json!({"spec": {"properties": [
        {"name": "temperature", "collectCycle": 200, "reportCycle": 200, "reportToCloud": true, "visitors": visitor("InputRegister")},
        {"name": "setpoint", "collectCycle": 200, "reportCycle": 200, "reportToCloud": true,
         "desired": {"value": "19", "metadata": {"type": "float"}}, "visitors": visitor("HoldingRegister")}]}});
    cloud.rt.block_on(devices.patch("thermo-1", &PatchParams::default(), &Patch::Merge(&patch))).unwrap();
    wait_until("the patched setpoint written", || sim.with(|m| (get_f32(&m.holding, 0) - 19.0).abs() < 1e-3));

    // The Modbus server goes away: offline; back: online, values again.
    let _ = server.stop.send(());
    wait_until("status.state offline", || state(&cloud, "thermo-1").as_deref() == Some("offline"));
    server = serve(&cloud, addr, sim.clone());
    sim.with(|m| put_f32(&mut m.input, 0, 24.5));
    wait_until("status.state online again", || state(&cloud, "thermo-1").as_deref() == Some("online"));
    wait_until("values after the server came back", || {
        reported(&cloud, "thermo-1", "temperature").is_some_and(|t| (t - 24.5).abs() < 1e-3)
    });

    // The mapper restarts: it registers again and keeps reporting.
    mapper.stop();
    let _mapper = Mapper::spawn(dir.path(), &edge_sock);
    sim.with(|m| put_f32(&mut m.input, 0, 20.75));
    wait_until("values after the mapper restarted", || {
        reported(&cloud, "thermo-1", "temperature").is_some_and(|t| (t - 20.75).abs() < 1e-3)
    });
    // The demo's files (examples/devices/modbus/, the visitors in the model) on this cluster.
    let example = |file: &str| -> DynamicObject {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/devices/modbus").join(file);
        let mut v: Value = yaml_serde::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        if v["kind"] == "Device" {
            v["spec"]["nodeName"] = json!(NODE);
            v["spec"]["protocol"]["configData"]["port"] = json!(addr.port());
            for p in v["spec"]["properties"].as_array_mut().unwrap() {
                p["collectCycle"] = json!(200);
                p["reportCycle"] = json!(200);
            }
        }
        serde_json::from_value(v).unwrap()
    };
    cloud.rt.block_on(models.create(&PostParams::default(), &example("thermostat-model.yaml"))).unwrap();
    cloud.rt.block_on(devices.create(&PostParams::default(), &example("thermostat.yaml"))).unwrap();
    wait_until("the example's temperature in DeviceStatus", || {
        reported(&cloud, "thermostat-1", "temperature").is_some_and(|t| (t - 20.75).abs() < 1e-3)
    });
    wait_until("the example's setpoint written", || sim.with(|m| (get_f32(&m.holding, 0) - 21.5).abs() < 1e-3));
    // The mappers' samples (mappers/*/samples/) are valid objects of this API (renamed apart).
    for m in ["modbus", "opcua", "virtual"] {
        for file in ["device-model.yaml", "device.yaml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mappers").join(m).join("samples").join(file);
            let mut v: Value = yaml_serde::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let name = v["metadata"]["name"].as_str().unwrap().to_owned();
            v["metadata"]["name"] = json!(format!("sample-{m}-{name}"));
            if v["kind"] == "Device" {
                let model = v["spec"]["deviceModelRef"]["name"].as_str().unwrap().to_owned();
                v["spec"]["deviceModelRef"]["name"] = json!(format!("sample-{m}-{model}"));
                v["spec"]["nodeName"] = json!("elsewhere");
            }
            let obj: DynamicObject = serde_json::from_value(v).unwrap();
            let api = if file == "device.yaml" { &devices } else { &models };
            cloud
                .rt
                .block_on(api.create(&PostParams::default(), &obj))
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }
    assert!(edge.wait_exit(Duration::ZERO).is_none(), "edgecore is still running");
    let _ = server.stop.send(());
    edge.signal("TERM");
    edge.wait_exit(Duration::from_secs(20));
    cloud.proc.signal("TERM");
}

/// `hack/opcua-sim.py` on `port` (its lines on stderr, where [`Process`] reads); `None` when
/// Python's asyncua is missing (skipped, or failed under KUBEEDGE_REQUIRE_TOOLS).
fn opcua_sim(port: u16) -> Option<Process> {
    let ok = Command::new("python3").args(["-c", "import asyncua"]).stderr(Stdio::null()).status();
    if !ok.is_ok_and(|s| s.success()) {
        kubeedge_testkit::skip("opcua e2e", "python3 with asyncua is not installed (hack/install-deps.sh)");
        return None;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/opcua-sim.py");
    let cmd = format!("exec python3 {} --port {port} 1>&2", script.display());
    let mut sim = Process::spawn(Path::new("/bin/sh"), &["-c", &cmd]).unwrap();
    sim.wait_for_line("ready opc.tcp://");
    Some(sim)
}

#[test]
fn an_opcua_variable_reaches_devicestatus_and_a_desired_value_the_node() {
    let port = free_port();
    let Some(mut sim) = opcua_sim(port) else { return };
    let dir = tempfile::tempdir().unwrap();
    let cloud = CloudSide::start(dir.path());
    let node = "edge-opcua";
    let (mut edge, edge_sock) = start_edge(&cloud, dir.path(), node);

    let client = cloud.client();
    let (models, devices) = kubeedge_e2e::device_apis(&client);
    let model: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
        "metadata": {"name": "opcua-thermostat", "namespace": "default"},
        "spec": {"protocol": "opcua", "properties": [
            {"name": "counter", "type": "INT", "accessMode": "ReadOnly"},
            {"name": "setpoint", "type": "DOUBLE", "accessMode": "ReadWrite", "unit": "Celsius"}]}
    }))
    .unwrap();
    let visitor = |id: &str| json!({"protocolName": "opcua", "configData": {"nodeID": format!("ns=2;s={id}"), "subscribe": id == "Counter"}});
    let device: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
        "metadata": {"name": "opcua-1", "namespace": "default"},
        "spec": {"deviceModelRef": {"name": "opcua-thermostat"}, "nodeName": node,
                 "protocol": {"protocolName": "opcua",
                              "configData": {"url": format!("opc.tcp://127.0.0.1:{port}/kubeedge/sim/"),
                                             "timeout": 2, "subscriptionInterval": 100}},
                 "properties": [
                    {"name": "counter", "collectCycle": 200, "reportCycle": 200, "reportToCloud": true,
                     "visitors": visitor("Counter")},
                    {"name": "setpoint", "collectCycle": 200, "reportCycle": 200, "reportToCloud": true,
                     "desired": {"value": "24.5", "metadata": {"type": "double"}},
                     "visitors": visitor("Setpoint")}],
                 "stateReport": {"reportToCloud": true, "reportCycle": 500}}
    }))
    .unwrap();
    cloud.rt.block_on(models.create(&PostParams::default(), &model)).unwrap();
    cloud.rt.block_on(devices.create(&PostParams::default(), &device)).unwrap();

    let http = free_port();
    let config = format!(
        "grpc_server:\n  socket_path: {}\ncommon:\n  name: opcua-mapper\n  version: v1.0.0\n  api_version: v1beta1\n  protocol: opcua\n  address: 127.0.0.1\n  edgecore_sock: {}\n  http_port: \"{http}\"\n",
        dir.path().join("opcua.sock").display(),
        edge_sock.display()
    );
    let mapper = Mapper::start(&dir.path().join("opcua-mapper.yaml"), &config, "opcua-mapper");
    // The counter node (subscribed) keeps moving in DeviceStatus.
    wait_until("the counter in DeviceStatus", || reported(&cloud, "opcua-1", "counter").is_some());
    let first = reported(&cloud, "opcua-1", "counter").unwrap();
    wait_until("the counter moving in DeviceStatus", || {
        reported(&cloud, "opcua-1", "counter").is_some_and(|c| c > first)
    });
    wait_until("status.state online", || state(&cloud, "opcua-1").as_deref() == Some("online"));
    // The desired value lands in the node (the server says so), and is reported back.
    let line = sim.wait_for_line("written Setpoint");
    assert!(line.ends_with("written Setpoint 24.5"), "{line}");
    wait_until("the setpoint in DeviceStatus", || reported(&cloud, "opcua-1", "setpoint") == Some(24.5));

    // The server goes away: offline; back on the same port: online, counting again.
    drop(sim);
    wait_until("status.state offline", || state(&cloud, "opcua-1").as_deref() == Some("offline"));
    let Some(mut sim) = opcua_sim(port) else { unreachable!() };
    wait_until("status.state online again", || state(&cloud, "opcua-1").as_deref() == Some("online"));
    // The new server is given the desired value too (the mapper writes it on every connect).
    sim.wait_for_line("written Setpoint 24.5");

    mapper.stop();
    assert!(edge.wait_exit(Duration::ZERO).is_none(), "edgecore is still running");
    edge.signal("TERM");
    edge.wait_exit(Duration::from_secs(20));
    cloud.proc.signal("TERM");
}
