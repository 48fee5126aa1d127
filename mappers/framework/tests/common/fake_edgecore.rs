//! Test support shared by the mapper crates' tests (each includes this file with `#[path]`):
//! a fake edgecore (DeviceManagerService on a temp unix socket, every call forwarded to the
//! test), builders of DMI objects, a tiny HTTP client, and the mapper as a child process. The
//! including crate defines `PROTOCOL`, the protocol name its devices carry.

#![allow(dead_code, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use kubeedge_dmi::any;
use kubeedge_dmi::v1beta1::device_manager_service_server::{DeviceManagerService, DeviceManagerServiceServer};
use kubeedge_dmi::v1beta1::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// What the fake edgecore saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Register(MapperInfo),
    /// `ns/name`, property, reported value, observed desired value.
    Status(String, String, String, String),
    /// `ns/name`, state.
    State(String, String),
}

struct Fake {
    events: mpsc::Sender<Event>,
    answer: MapperRegisterResponse,
}

#[tonic::async_trait]
impl DeviceManagerService for Fake {
    async fn mapper_register(
        &self,
        req: Request<MapperRegisterRequest>,
    ) -> Result<Response<MapperRegisterResponse>, Status> {
        let req = req.into_inner();
        assert!(req.with_data, "mappers register withData");
        self.events.send(Event::Register(req.mapper.unwrap_or_default())).await.ok();
        Ok(Response::new(self.answer.clone()))
    }

    async fn report_device_status(
        &self,
        req: Request<ReportDeviceStatusRequest>,
    ) -> Result<Response<ReportDeviceStatusResponse>, Status> {
        let req = req.into_inner();
        for t in req.reported_device.unwrap_or_default().twins {
            let reported = t.reported.unwrap_or_default();
            assert_eq!(
                reported.metadata.get("timestamp").map(|t| t.parse::<i64>().is_ok()),
                Some(true),
                "timestamp metadata"
            );
            let desired = t.observed_desired.unwrap_or_default().value;
            let id = format!("{}/{}", req.device_namespace, req.device_name);
            self.events.send(Event::Status(id, t.property_name, reported.value, desired)).await.ok();
        }
        Ok(Response::new(ReportDeviceStatusResponse {}))
    }

    async fn report_device_states(
        &self,
        req: Request<ReportDeviceStatesRequest>,
    ) -> Result<Response<ReportDeviceStatesResponse>, Status> {
        let req = req.into_inner();
        self.events.send(Event::State(format!("{}/{}", req.device_namespace, req.device_name), req.state)).await.ok();
        Ok(Response::new(ReportDeviceStatesResponse {}))
    }
}

/// A fake edgecore serving on `path` until the token is cancelled (which removes the socket).
pub struct FakeEdgecore {
    pub events: mpsc::Receiver<Event>,
    pub stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl FakeEdgecore {
    pub async fn serve(path: &Path, models: Vec<DeviceModel>, devices: Vec<Device>) -> Self {
        let (tx, events) = mpsc::channel(1024);
        let fake = Fake { events: tx, answer: MapperRegisterResponse { model_list: models, device_list: devices } };
        let listener = kubeedge_dmi::bind_unix(path).await.unwrap();
        let stop = CancellationToken::new();
        let router = tonic::transport::Server::builder().add_service(DeviceManagerServiceServer::new(fake));
        let s = stop.clone();
        let task =
            tokio::spawn(async move { kubeedge_dmi::serve_unix(router, listener, s.cancelled_owned()).await.unwrap() });
        Self { events, stop, task }
    }

    /// Stops serving and waits until the socket is gone.
    pub async fn shut(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }

    /// The next event matching `want`, skipping others; panics after `within`.
    pub async fn expect(&mut self, within: Duration, what: &str, mut want: impl FnMut(&Event) -> bool) -> Event {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e)) if want(&e) => return e,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => panic!("no {what} within {within:?}"),
            }
        }
    }

    /// Drops what has arrived so far.
    pub fn drain(&mut self) {
        while self.events.try_recv().is_ok() {}
    }
}

pub fn status(id: &str, prop: &str, value: &str) -> impl FnMut(&Event) -> bool {
    let (id, prop, value) = (id.to_owned(), prop.to_owned(), value.to_owned());
    move |e| matches!(e, Event::Status(i, p, v, _) if *i == id && *p == prop && *v == value)
}

pub fn state(id: &str, want: &str) -> impl FnMut(&Event) -> bool {
    let (id, want) = (id.to_owned(), want.to_owned());
    move |e| matches!(e, Event::State(i, s) if *i == id && *s == want)
}

// === DMI objects ===

pub fn config(pairs: serde_json::Value) -> Option<CustomizedValue> {
    Some(CustomizedValue { data: any::map_to_any(pairs.as_object().unwrap()).unwrap() })
}

pub fn model(name: &str, props: &[(&str, &str, &str)]) -> DeviceModel {
    let properties = props
        .iter()
        .map(|(n, ty, access)| ModelProperty {
            name: (*n).into(),
            r#type: (*ty).into(),
            access_mode: (*access).into(),
            unit: "C".into(),
            ..Default::default()
        })
        .collect();
    DeviceModel {
        name: name.into(),
        namespace: "default".into(),
        spec: Some(DeviceModelSpec { properties, commands: vec![] }),
    }
}

/// A property: name, visitor configData, desired value.
pub fn property(name: &str, visitor: serde_json::Value, desired: &str, cycle_ms: i64) -> DeviceProperty {
    DeviceProperty {
        name: name.into(),
        desired: Some(TwinProperty { value: desired.into(), metadata: Default::default() }),
        visitors: Some(VisitorConfig { protocol_name: crate::PROTOCOL.into(), config_data: config(visitor) }),
        report_cycle: cycle_ms,
        collect_cycle: cycle_ms,
        report_to_cloud: true,
        push_method: None,
    }
}

pub fn device(name: &str, model: &str, protocol: serde_json::Value, properties: Vec<DeviceProperty>) -> Device {
    let spec = DeviceSpec {
        device_model_reference: model.into(),
        protocol: Some(ProtocolConfig { protocol_name: crate::PROTOCOL.into(), config_data: config(protocol) }),
        properties,
        methods: vec![DeviceMethod {
            name: "setTarget".into(),
            description: String::new(),
            property_names: vec!["target".into()],
        }],
    };
    Device {
        name: name.into(),
        namespace: "default".into(),
        spec: Some(spec),
        status: Some(DeviceStatus { twins: vec![], report_to_cloud: true, report_cycle: 200 }),
    }
}

// === HTTP ===

/// `GET path` on `addr`: status code, body.
pub async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nX-Correlation-ID: abc\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    if status == 200 {
        assert!(head.to_ascii_lowercase().contains("x-correlation-id: abc"), "{head}");
        assert!(head.contains("application/json"), "{head}");
    }
    (status, body.to_owned())
}

pub fn temp_paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("edgecore/dmi.sock"), dir.join("mapper.sock"))
}

// === The mapper process ===

/// A port for the mapper's config (outside the ephemeral range: `kubeedge_testkit`).
pub use kubeedge_testkit::free_port;

/// The mapper, killed if the test fails before stopping it.
pub struct Reap(pub Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes a `config.yaml` for `{PROTOCOL}-mapper` and starts `bin` (the crate's
/// `env!("CARGO_BIN_EXE_…")`) with `RUST_LOG=log`; the process and its REST port.
pub fn spawn_mapper(bin: &str, dir: &Path, edge_sock: &Path, mapper_sock: &Path, log: &str) -> (Reap, u16) {
    let port = free_port();
    let config = format!(
        "grpc_server:\n  socket_path: {}\ncommon:\n  name: {p}-mapper\n  version: v1.20.0\n  api_version: v1.0.0\n  protocol: {p}\n  address: 127.0.0.1\n  edgecore_sock: {}\n  http_port: \"{port}\"\n",
        mapper_sock.display(),
        edge_sock.display(),
        p = crate::PROTOCOL,
    );
    let file = dir.join("config.yaml");
    std::fs::write(&file, config).unwrap();
    let child = Command::new(bin)
        .arg("--config-file")
        .arg(&file)
        .env("RUST_LOG", log)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    (Reap(child), port)
}

/// Sends SIGTERM and waits (12 s at most) for the exit.
pub fn sigterm(child: &mut Child) -> ExitStatus {
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(12);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the mapper did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}
