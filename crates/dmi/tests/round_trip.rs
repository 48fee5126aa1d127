//! Both DMI services end to end over real unix sockets: a server built from the generated
//! trait, served with `serve_unix`, called through `connect_unix` and the generated client.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::time::Duration;

use kubeedge_dmi::v1beta1::device_manager_service_client::DeviceManagerServiceClient;
use kubeedge_dmi::v1beta1::device_manager_service_server::{DeviceManagerService, DeviceManagerServiceServer};
use kubeedge_dmi::v1beta1::device_mapper_service_client::DeviceMapperServiceClient;
use kubeedge_dmi::v1beta1::device_mapper_service_server::{DeviceMapperService, DeviceMapperServiceServer};
use kubeedge_dmi::v1beta1::*;
use kubeedge_dmi::{Error, any, bind_unix, connect_unix, serve_unix};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

const T: Duration = Duration::from_secs(10);

/// A fake edgecore: answers MapperRegister with one model and one device, and forwards reports.
struct Manager {
    reports: mpsc::Sender<String>,
}

#[tonic::async_trait]
impl DeviceManagerService for Manager {
    async fn mapper_register(
        &self,
        req: Request<MapperRegisterRequest>,
    ) -> Result<Response<MapperRegisterResponse>, Status> {
        let req = req.into_inner();
        let mapper = req.mapper.ok_or_else(|| Status::invalid_argument("no mapper"))?;
        self.reports
            .send(format!("register {} {} {}", mapper.name, String::from_utf8_lossy(&mapper.address), req.with_data))
            .await
            .ok();
        Ok(Response::new(MapperRegisterResponse { model_list: vec![model()], device_list: vec![device()] }))
    }

    async fn report_device_status(
        &self,
        req: Request<ReportDeviceStatusRequest>,
    ) -> Result<Response<ReportDeviceStatusResponse>, Status> {
        let req = req.into_inner();
        let twin = &req.reported_device.unwrap_or_default().twins[0];
        let reported = twin.reported.clone().unwrap_or_default();
        self.reports
            .send(format!(
                "status {}/{} {}={}",
                req.device_namespace, req.device_name, twin.property_name, reported.value
            ))
            .await
            .ok();
        Ok(Response::new(ReportDeviceStatusResponse {}))
    }

    async fn report_device_states(
        &self,
        req: Request<ReportDeviceStatesRequest>,
    ) -> Result<Response<ReportDeviceStatesResponse>, Status> {
        let req = req.into_inner();
        self.reports.send(format!("state {}/{} {}", req.device_namespace, req.device_name, req.state)).await.ok();
        Ok(Response::new(ReportDeviceStatesResponse {}))
    }
}

/// A fake mapper: GetDevice returns what RegisterDevice stored; everything else is not found.
#[derive(Default)]
struct Mapper {
    devices: parking_lot::Mutex<Vec<Device>>,
}

#[tonic::async_trait]
impl DeviceMapperService for Mapper {
    async fn register_device(
        &self,
        req: Request<RegisterDeviceRequest>,
    ) -> Result<Response<RegisterDeviceResponse>, Status> {
        let device = req.into_inner().device.unwrap_or_default();
        let answer =
            RegisterDeviceResponse { device_name: device.name.clone(), device_namespace: device.namespace.clone() };
        self.devices.lock().push(device);
        Ok(Response::new(answer))
    }
    async fn remove_device(&self, _: Request<RemoveDeviceRequest>) -> Result<Response<RemoveDeviceResponse>, Status> {
        Err(Status::not_found("no such device"))
    }
    async fn update_device(&self, _: Request<UpdateDeviceRequest>) -> Result<Response<UpdateDeviceResponse>, Status> {
        Err(Status::not_found("no such device"))
    }
    async fn create_device_model(
        &self,
        _: Request<CreateDeviceModelRequest>,
    ) -> Result<Response<CreateDeviceModelResponse>, Status> {
        Err(Status::unimplemented("models"))
    }
    async fn remove_device_model(
        &self,
        _: Request<RemoveDeviceModelRequest>,
    ) -> Result<Response<RemoveDeviceModelResponse>, Status> {
        Err(Status::unimplemented("models"))
    }
    async fn update_device_model(
        &self,
        _: Request<UpdateDeviceModelRequest>,
    ) -> Result<Response<UpdateDeviceModelResponse>, Status> {
        Err(Status::unimplemented("models"))
    }
    async fn get_device(&self, req: Request<GetDeviceRequest>) -> Result<Response<GetDeviceResponse>, Status> {
        let req = req.into_inner();
        let found = self
            .devices
            .lock()
            .iter()
            .find(|d| d.name == req.device_name && d.namespace == req.device_namespace)
            .cloned();
        found
            .map(|d| Response::new(GetDeviceResponse { device: Some(d) }))
            .ok_or_else(|| Status::not_found("no such device"))
    }
}

fn model() -> DeviceModel {
    let temperature = ModelProperty {
        name: "temperature".into(),
        r#type: "INT".into(),
        access_mode: "ReadWrite".into(),
        ..Default::default()
    };
    DeviceModel {
        name: "thermometer".into(),
        namespace: "default".into(),
        spec: Some(DeviceModelSpec { properties: vec![temperature], commands: vec![] }),
    }
}

fn device() -> Device {
    let visitor =
        serde_json::json!({"register": "HoldingRegister", "offset": 2, "limit": 1, "scale": 0.1, "isSwap": true});
    let config = any::map_to_any(visitor.as_object().unwrap()).unwrap();
    let property = DeviceProperty {
        name: "temperature".into(),
        desired: Some(TwinProperty { value: "30".into(), metadata: [("type".into(), "int".into())].into() }),
        visitors: Some(VisitorConfig {
            protocol_name: "modbus".into(),
            config_data: Some(CustomizedValue { data: config }),
        }),
        report_cycle: 1000,
        collect_cycle: 500,
        report_to_cloud: true,
        push_method: Some(PushMethod {
            mqtt: Some(PushMethodMqtt {
                address: "tcp://127.0.0.1:1883".into(),
                topic: "t".into(),
                qos: 1,
                retained: false,
            }),
            ..Default::default()
        }),
    };
    let spec = DeviceSpec {
        device_model_reference: "thermometer".into(),
        protocol: Some(ProtocolConfig { protocol_name: "modbus".into(), config_data: None }),
        properties: vec![property],
        methods: vec![],
    };
    Device { name: "thermo-1".into(), namespace: "default".into(), spec: Some(spec), status: None }
}

#[tokio::test]
async fn device_manager_service_round_trip() {
    tokio::time::timeout(T, async {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("sub/dmi.sock");
        let (tx, mut rx) = mpsc::channel(8);
        let listener = bind_unix(&sock).await.unwrap();
        let meta = std::fs::metadata(&sock).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let stop = CancellationToken::new();
        let router =
            tonic::transport::Server::builder().add_service(DeviceManagerServiceServer::new(Manager { reports: tx }));
        let server = tokio::spawn(serve_unix(router, listener, stop.clone().cancelled_owned()));

        let mut client = DeviceManagerServiceClient::new(connect_unix(&sock, Duration::from_secs(1)).await.unwrap());
        let mapper = MapperInfo {
            name: "modbus".into(),
            protocol: "modbus".into(),
            address: b"/tmp/modbus.sock".to_vec(),
            api_version: "v1beta1".into(),
            ..Default::default()
        };
        let answer = client
            .mapper_register(MapperRegisterRequest { with_data: true, mapper: Some(mapper) })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(rx.recv().await.unwrap(), "register modbus /tmp/modbus.sock true");
        assert_eq!(answer.model_list, vec![model()]);
        assert_eq!(answer.device_list, vec![device()]);
        assert_eq!(answer.device_list[0].id(), "default/thermo-1");
        // The visitor config survives the trip as typed JSON.
        let data = &answer.device_list[0].spec.as_ref().unwrap().properties[0]
            .visitors
            .as_ref()
            .unwrap()
            .config_data
            .as_ref()
            .unwrap()
            .data;
        let (visitor, errors) = any::map_from_any(data);
        assert!(errors.is_empty());
        assert_eq!(
            serde_json::Value::Object(visitor),
            serde_json::json!({"register": "HoldingRegister", "offset": 2, "limit": 1, "scale": 0.1, "isSwap": true})
        );

        let twin = Twin {
            property_name: "temperature".into(),
            reported: Some(TwinProperty { value: "21".into(), metadata: Default::default() }),
            observed_desired: None,
        };
        let status = DeviceStatus { twins: vec![twin], report_to_cloud: true, report_cycle: 1000 };
        client
            .report_device_status(ReportDeviceStatusRequest {
                device_name: "thermo-1".into(),
                device_namespace: "default".into(),
                reported_device: Some(status),
            })
            .await
            .unwrap();
        assert_eq!(rx.recv().await.unwrap(), "status default/thermo-1 temperature=21");
        client
            .report_device_states(ReportDeviceStatesRequest {
                device_name: "thermo-1".into(),
                device_namespace: "default".into(),
                state: "online".into(),
            })
            .await
            .unwrap();
        assert_eq!(rx.recv().await.unwrap(), "state default/thermo-1 online");

        stop.cancel();
        server.await.unwrap().unwrap();
        assert!(!sock.exists(), "the socket is removed on shutdown");
    })
    .await
    .expect("likely deadlocked");
}

#[tokio::test]
async fn device_mapper_service_round_trip_and_errors() {
    tokio::time::timeout(T, async {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("modbus.sock");
        let stop = CancellationToken::new();
        let router = tonic::transport::Server::builder().add_service(DeviceMapperServiceServer::new(Mapper::default()));
        let server = tokio::spawn(serve_unix(router, bind_unix(&sock).await.unwrap(), stop.clone().cancelled_owned()));
        let mut client = DeviceMapperServiceClient::new(connect_unix(&sock, Duration::from_secs(1)).await.unwrap());

        let answer =
            client.register_device(RegisterDeviceRequest { device: Some(device()) }).await.unwrap().into_inner();
        assert_eq!((answer.device_name.as_str(), answer.device_namespace.as_str()), ("thermo-1", "default"));
        let got = client
            .get_device(GetDeviceRequest { device_name: "thermo-1".into(), device_namespace: "default".into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.device, Some(device()));
        let missing = client
            .get_device(GetDeviceRequest { device_name: "nope".into(), device_namespace: "default".into() })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), tonic::Code::NotFound);
        let err = client.create_device_model(CreateDeviceModelRequest { model: Some(model()) }).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unimplemented);

        stop.cancel();
        server.await.unwrap().unwrap();
    })
    .await
    .expect("likely deadlocked");
}

#[tokio::test]
async fn bind_refuses_a_live_socket_and_replaces_a_stale_one() {
    tokio::time::timeout(T, async {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("dmi.sock");
        let live = bind_unix(&sock).await.unwrap();
        let err = bind_unix(&sock).await.unwrap_err();
        assert!(matches!(err, Error::SocketInUse { .. }), "{err:?}");
        assert!(err.to_string().contains("live socket served by another process"), "{err}");

        // Closed listener, file left behind: stale, so it is replaced.
        drop(live);
        assert!(sock.exists());
        let _fresh = bind_unix(&sock).await.unwrap();

        let file = dir.path().join("not-a-socket");
        std::fs::write(&file, b"keep me").unwrap();
        assert!(matches!(bind_unix(&file).await.unwrap_err(), Error::NotASocket { .. }));
        assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    })
    .await
    .expect("likely deadlocked");
}

#[tokio::test]
async fn connect_to_a_missing_socket_fails_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let err = connect_unix(dir.path().join("absent.sock"), Duration::from_millis(300)).await.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }));
    assert!(started.elapsed() < Duration::from_secs(5));
}
