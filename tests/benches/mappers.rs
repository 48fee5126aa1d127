//! Modbus mapper figures with the release binaries: apiserver-lite, cloudcore, edgecore
//! (DeviceTwin serving DMI), the `modbus-mapper` binary, and 100 simulated Modbus TCP devices
//! (`kubeedge-modbus-sim`, one server each, in this process).
//!
//! - the mapper's resident memory with no device, and with 100 devices × 10 properties;
//! - properties read per second (Modbus requests the devices answered) and the mapper's and
//!   edgecore's CPU at upstream's 1 s collect and report cycles;
//! - end-to-end latency: a register changes → the value in DeviceStatus (seen by polling the
//!   API every 20 ms), p50/p99 over 40 changes;
//! - the mapper binary's size.
//!
//! Run as root: `cargo build --release -p cloudcore -p edgecore -p apiserver-lite -p
//! kubeedge-mapper-modbus && cargo bench -p kubeedge-e2e --bench mappers`. `MAPPER=path` and
//! `EDGECORE=path` choose other builds (e.g. target/release-edge/...). Prints the figures;
//! asserts nothing about speed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kube::Api;
use kube::api::{DynamicObject, PostParams};
use kubeedge_e2e::measure::{KillOnDrop, cpu_ticks, pct_ms, rss_kb};
use kubeedge_e2e::{CloudSide, device_resource, until};
use kubeedge_modbus_sim::{Device as Sim, put_f32};
use kubeedge_testkit::{Process, free_port, link};
use serde_json::{Value, json};

const NODE: &str = "edge-mapper-bench";
const DEVICES: usize = 100;
const PROPERTIES: usize = 10;

fn release_bin(var: &str, name: &str) -> PathBuf {
    std::env::var(var)
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release").join(name))
}

fn reported(cloud: &CloudSide, api: &Api<DynamicObject>, name: &str, property: &str) -> Option<String> {
    let st = cloud.rt.block_on(api.get_opt(name)).ok()??;
    st.data
        .pointer("/status/twins")?
        .as_array()?
        .iter()
        .find(|t| t["propertyName"] == property)?
        .pointer("/reported/value")?
        .as_str()
        .map(str::to_owned)
}

#[allow(clippy::too_many_lines)]
fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cloud = CloudSide::start(dir.path());
    // The devices: one simulated server each, properties p0..p9 as floats in input registers.
    let sims: Vec<(Sim, u16)> = (0..DEVICES)
        .map(|_| {
            let sim = Sim::default();
            let listener = cloud.rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
            let port = listener.local_addr().unwrap().port();
            cloud.rt.spawn(kubeedge_modbus_sim::serve(listener, sim.clone()));
            (sim, port)
        })
        .collect();

    let token = cloud.token();
    let edge_bin = release_bin("EDGECORE", "edgecore");
    let edge_cfg = link::edgecore(
        &edge_bin,
        dir.path(),
        NODE,
        &token,
        &cloud.link(),
        &[(&["modules", "eventBus", "enable"], "false".into()), (&["modules", "deviceTwin", "enable"], "true".into())],
    );
    let mut edge = Process::spawn(&edge_bin, &["--config", edge_cfg.to_str().unwrap()]).unwrap();
    edge.wait_for_line("Connected to CloudHub.");

    // The mapper, alone first.
    let mapper_bin = release_bin("MAPPER", "modbus-mapper");
    let config = format!(
        "grpc_server:\n  socket_path: {}\ncommon:\n  name: modbus-mapper\n  version: v1.0.0\n  api_version: v1beta1\n  protocol: modbus\n  address: 127.0.0.1\n  edgecore_sock: {}\n  http_port: \"{}\"\n",
        dir.path().join("modbus.sock").display(),
        dir.path().join("edge/dmi.sock").display(),
        free_port()
    );
    std::fs::write(dir.path().join("mapper.yaml"), config).unwrap();
    let mapper = std::process::Command::new(&mapper_bin)
        .arg("--config-file")
        .arg(dir.path().join("mapper.yaml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("modbus-mapper (cargo build --release -p kubeedge-mapper-modbus)");
    let mapper = KillOnDrop(mapper);
    let mpid = mapper.0.id();
    until("the mapper to register", || dir.path().join("modbus.sock").exists().then_some(()));
    std::thread::sleep(Duration::from_secs(2));
    let idle_rss = rss_kb(mpid);

    // 100 devices × 10 properties at upstream's 1 s cycles.
    let client = cloud.client();
    let (models, devices) = kubeedge_e2e::device_apis(&client);
    let statuses: Api<DynamicObject> =
        Api::namespaced_with(client, "default", &device_resource("DeviceStatus", "devicestatuses"));
    let props: Vec<Value> =
        (0..PROPERTIES).map(|i| json!({"name": format!("p{i}"), "type": "FLOAT", "accessMode": "ReadOnly"})).collect();
    let model: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
        "metadata": {"name": "meter", "namespace": "default"},
        "spec": {"protocol": "modbus", "properties": props}
    }))
    .unwrap();
    cloud.rt.block_on(models.create(&PostParams::default(), &model)).unwrap();
    for (d, (_, port)) in sims.iter().enumerate() {
        let props: Vec<Value> = (0..PROPERTIES)
            .map(|i| {
                json!({"name": format!("p{i}"), "collectCycle": 1000, "reportCycle": 1000, "reportToCloud": true,
                       "visitors": {"protocolName": "modbus",
                                    "configData": {"register": "InputRegister", "offset": 2 * i, "limit": 2}}})
            })
            .collect();
        let device: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
            "metadata": {"name": format!("meter-{d}"), "namespace": "default"},
            "spec": {"deviceModelRef": {"name": "meter"}, "nodeName": NODE,
                     "protocol": {"protocolName": "modbus", "configData": {"ip": "127.0.0.1", "port": port, "slaveID": 1}},
                     "properties": props}
        }))
        .unwrap();
        cloud.rt.block_on(devices.create(&PostParams::default(), &device)).unwrap();
    }
    // Warm-up: every device's last property in DeviceStatus.
    for (sim, _) in &sims {
        sim.with(|m| put_f32(&mut m.input, 2 * (PROPERTIES - 1), 1.0));
    }
    for d in 0..DEVICES {
        until(&format!("meter-{d} in DeviceStatus"), || {
            reported(&cloud, &statuses, &format!("meter-{d}"), &format!("p{}", PROPERTIES - 1))
                .filter(|v| v.starts_with("1.0"))
        });
    }

    // Steady state: reads per second, CPU, memory.
    let requests = || sims.iter().map(|(s, _)| s.with(|m| m.requests)).sum::<u64>();
    let epid = edge.pid();
    let (r0, m0, e0, t0) = (requests(), cpu_ticks(mpid), cpu_ticks(epid), Instant::now());
    std::thread::sleep(Duration::from_secs(10));
    let secs = t0.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let (reads, mcpu, ecpu) =
        ((requests() - r0) as f64 / secs, (cpu_ticks(mpid) - m0) as f64 / secs, (cpu_ticks(epid) - e0) as f64 / secs);
    let busy_rss = rss_kb(mpid);

    // Latency: a register changes → DeviceStatus, one device at a time.
    let mut lat = Vec::new();
    for k in 0..40usize {
        let (sim, _) = &sims[k % DEVICES];
        #[allow(clippy::cast_precision_loss)]
        let value = 100.0 + k as f32;
        let start = Instant::now();
        sim.with(|m| put_f32(&mut m.input, 0, value));
        let want = format!("{value:.1}");
        let name = format!("meter-{}", k % DEVICES);
        loop {
            if reported(&cloud, &statuses, &name, "p0").is_some_and(|v| v.starts_with(&want)) {
                lat.push(start.elapsed());
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "{name}.p0 never reached {want}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    lat.sort();
    let size = std::fs::metadata(&mapper_bin).map(|m| m.len()).unwrap_or(0);
    println!("modbus-mapper {} ({:.1} MB), edgecore {}:", mapper_bin.display(), size as f64 / 1e6, edge_bin.display());
    println!(
        "  mapper RSS: {idle_rss} KB with no device, {busy_rss} KB with {DEVICES} devices × {PROPERTIES} properties"
    );
    println!(
        "  {DEVICES} × {PROPERTIES} properties at 1 s cycles: {reads:.0} Modbus reads/s; CPU mapper {mcpu:.1} %, edgecore {ecpu:.1} % of one core"
    );
    println!(
        "  register change → DeviceStatus (40 changes): p50 {:.0} ms, p99 {:.0} ms",
        pct_ms(&lat, 0.5),
        pct_ms(&lat, 0.99)
    );
    drop(mapper);
    edge.signal("TERM");
    edge.wait_exit(Duration::from_secs(20));
}
