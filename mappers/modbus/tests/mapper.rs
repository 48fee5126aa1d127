//! The `modbus-mapper` binary end to end: a real Modbus server (tokio-modbus, TCP and RTU
//! over TCP) started by the test, a fake edgecore on a temp unix socket, and the mapper as a
//! child process configured by a `config.yaml`; it is stopped with SIGTERM.

#[path = "../../framework/tests/common/fake_edgecore.rs"]
mod fake_edgecore;

use std::future;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fake_edgecore::*;
use kubeedge_dmi::v1beta1::*;
use serde_json::{Value, json};
use tokio_modbus::prelude::*;
use tokio_modbus::server::Service;

/// The protocol name the test devices carry.
const PROTOCOL: &str = "modbus";
const T: Duration = Duration::from_secs(15);

/// The simulated device's memory: 100 of each.
#[derive(Default)]
struct Memory {
    coils: Vec<bool>,
    discrete: Vec<bool>,
    holding: Vec<u16>,
    input: Vec<u16>,
}

#[derive(Clone)]
struct Device(Arc<Mutex<Memory>>);

fn slice<T: Clone>(v: &[T], addr: u16, n: u16) -> Result<Vec<T>, ExceptionCode> {
    let (a, n) = (usize::from(addr), usize::from(n));
    v.get(a..a + n).map(<[T]>::to_vec).ok_or(ExceptionCode::IllegalDataAddress)
}

impl Service for Device {
    type Request = Request<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = future::Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: Request<'static>) -> Self::Future {
        let mut m = self.0.lock().unwrap();
        let answer = match req {
            Request::ReadCoils(a, n) => slice(&m.coils, a, n).map(Response::ReadCoils),
            Request::ReadDiscreteInputs(a, n) => slice(&m.discrete, a, n).map(Response::ReadDiscreteInputs),
            Request::ReadHoldingRegisters(a, n) => slice(&m.holding, a, n).map(Response::ReadHoldingRegisters),
            Request::ReadInputRegisters(a, n) => slice(&m.input, a, n).map(Response::ReadInputRegisters),
            Request::WriteSingleCoil(a, v) => match m.coils.get_mut(usize::from(a)) {
                Some(c) => {
                    *c = v;
                    Ok(Response::WriteSingleCoil(a, v))
                }
                None => Err(ExceptionCode::IllegalDataAddress),
            },
            Request::WriteSingleRegister(a, v) => match m.holding.get_mut(usize::from(a)) {
                Some(r) => {
                    *r = v;
                    Ok(Response::WriteSingleRegister(a, v))
                }
                None => Err(ExceptionCode::IllegalDataAddress),
            },
            Request::WriteMultipleRegisters(a, words) => {
                let start = usize::from(a);
                match m.holding.get_mut(start..start + words.len()) {
                    Some(dst) => {
                        dst.copy_from_slice(&words);
                        Ok(Response::WriteMultipleRegisters(a, u16::try_from(words.len()).unwrap()))
                    }
                    None => Err(ExceptionCode::IllegalDataAddress),
                }
            }
            _ => Err(ExceptionCode::IllegalFunction),
        };
        future::ready(answer)
    }
}

/// A device preloaded with the values the test expects to read.
fn device_memory() -> Device {
    let mut m =
        Memory { coils: vec![false; 100], discrete: vec![false; 100], holding: vec![0; 100], input: vec![0; 100] };
    m.holding[0] = 300; // int ×0.1 → 30
    m.holding[1] = 0x2c01; // int, isSwap → 300
    // 70000 = 0x0001_1170, registers reversed (isRegisterSwap) → [0x1170, 0x0001].
    m.holding[2] = 0x1170;
    m.holding[3] = 0x0001;
    let pi = std::f32::consts::PI.to_bits();
    m.holding[4] = (pi >> 16) as u16;
    m.holding[5] = pi as u16;
    let e = std::f64::consts::E.to_bits().to_be_bytes();
    for i in 0..4 {
        m.holding[6 + i] = u16::from_be_bytes([e[2 * i], e[2 * i + 1]]);
    }
    m.holding[10] = u16::from_be_bytes(*b"ok");
    m.coils[0] = true;
    m.discrete[3] = true;
    m.input[7] = 1234;
    Device(Arc::new(Mutex::new(m)))
}

async fn serve_tcp(device: Device) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio_modbus::server::tcp::Server::new(listener);
    tokio::spawn(async move {
        let on_connected = |stream, peer| {
            let device = device.clone();
            async move { tokio_modbus::server::tcp::accept_tcp_connection(stream, peer, move |_| Ok(Some(device.clone()))) }
        };
        let _ = server.serve(&on_connected, |_| {}).await;
    });
    addr
}

async fn serve_rtu_over_tcp(device: Device) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio_modbus::server::rtu_over_tcp::Server::new(listener);
    tokio::spawn(async move {
        let on_connected = |stream, peer| {
            let device = device.clone();
            async move {
                tokio_modbus::server::rtu_over_tcp::accept_tcp_connection(stream, peer, move |_| {
                    Ok(Some(device.clone()))
                })
            }
        };
        let _ = server.serve(&on_connected, |_| {}).await;
    });
    addr
}

fn model_all() -> DeviceModel {
    model(
        "sensor",
        &[
            ("scaled", "INT", "ReadOnly"),
            ("swapped", "INT", "ReadOnly"),
            ("wide", "INT", "ReadOnly"),
            ("pi", "FLOAT", "ReadOnly"),
            ("e", "DOUBLE", "ReadOnly"),
            ("text", "STRING", "ReadOnly"),
            ("switch", "BOOLEAN", "ReadWrite"),
            ("alarm", "BOOLEAN", "ReadOnly"),
            ("input", "INT", "ReadOnly"),
            ("setpoint", "INT", "ReadWrite"),
            ("level", "FLOAT", "ReadWrite"),
            ("beyond", "STRING", "ReadOnly"),
        ],
    )
}

fn v(register: &str, offset: u16, limit: u16, extra: Value) -> Value {
    let mut m = json!({"register": register, "offset": offset, "limit": limit});
    m.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    m
}

fn sensor(name: &str, addr: SocketAddr, transport: &str) -> kubeedge_dmi::v1beta1::Device {
    let p = |n: &str, visitor: Value, desired: &str| property(n, visitor, desired, 100);
    let mut d = device(
        name,
        "sensor",
        json!({"ip": addr.ip().to_string(), "port": addr.port(), "slaveID": 1, "transport": transport}),
        vec![
            p("scaled", v("HoldingRegister", 0, 1, json!({"scale": 0.1})), ""),
            p("swapped", v("HoldingRegister", 1, 1, json!({"isSwap": true})), ""),
            p("wide", v("HoldingRegister", 2, 2, json!({"isRegisterSwap": true})), ""),
            p("pi", v("HoldingRegister", 4, 2, json!({})), ""),
            p("e", v("HoldingRegister", 6, 4, json!({})), ""),
            p("text", v("HoldingRegister", 10, 1, json!({})), ""),
            p("switch", v("CoilRegister", 1, 1, json!({})), "1"),
            p("alarm", v("DiscreteInputRegister", 3, 1, json!({})), ""),
            p("input", v("InputRegister", 7, 1, json!({"scale": 2})), ""),
            p("setpoint", v("HoldingRegister", 20, 2, json!({"isRegisterSwap": true, "isSwap": true})), "123456"),
            p("level", v("HoldingRegister", 30, 2, json!({"scale": 0.5})), ""),
            p("beyond", v("HoldingRegister", 95, 10, json!({})), ""),
        ],
    );
    d.spec.as_mut().unwrap().methods = vec![DeviceMethod {
        name: "set".into(),
        description: String::new(),
        property_names: vec!["level".into(), "switch".into()],
    }];
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modbus_tcp_and_rtu_over_tcp_end_to_end() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let dir = tempfile::tempdir().unwrap();
        let (edge_sock, mapper_sock) = temp_paths(dir.path());
        let tcp_dev = device_memory();
        let rtu_dev = device_memory();
        let tcp = serve_tcp(tcp_dev.clone()).await;
        let rtu = serve_rtu_over_tcp(rtu_dev.clone()).await;
        // A device whose visitor cannot work (offset + limit past 65535): unhealthy, alone.
        let broken = device(
            "broken",
            "sensor",
            json!({"ip": "127.0.0.1", "port": tcp.port()}),
            vec![property("scaled", v("HoldingRegister", 65535, 2, json!({})), "", 100)],
        );
        let mut edge = FakeEdgecore::serve(
            &edge_sock,
            vec![model_all()],
            vec![sensor("plc-tcp", tcp, "tcp"), sensor("plc-rtu", rtu, "rtuovertcp"), broken],
        )
        .await;
        let (mut child, port) =
            spawn_mapper(env!("CARGO_BIN_EXE_modbus-mapper"), dir.path(), &edge_sock, &mapper_sock, "warn");

        let Event::Register(info) = edge.expect(T, "registration", |e| matches!(e, Event::Register(_))).await else {
            unreachable!()
        };
        assert_eq!((info.name.as_str(), info.protocol.as_str()), ("modbus-mapper", "modbus"));
        edge.expect(T, "broken is unhealthy", state("default/broken", "unhealthy")).await;

        for id in ["default/plc-tcp", "default/plc-rtu"] {
            edge.expect(T, "online", state(id, "online")).await;
            for (prop, want) in [
                ("scaled", "30"),
                ("swapped", "300"),
                ("wide", "70000"),
                ("pi", "3.141593"),
                ("e", "2.718282"),
                ("text", "ok"),
                ("alarm", "true"),
                ("input", "2468"),
                // Desired values written at connect, then read back.
                ("switch", "true"),
                ("setpoint", "123456"),
            ] {
                edge.expect(T, &format!("{id} {prop}={want}"), status(id, prop, want)).await;
            }
        }
        for dev in [&tcp_dev, &rtu_dev] {
            let m = dev.0.lock().unwrap();
            assert!(m.coils[1], "desired coil written");
            // 123456 = 0x0001_E240; byte swap then register swap → [0x40E2, 0x0100].
            assert_eq!(&m.holding[20..22], &[0x40e2, 0x0100]);
        }

        // A REST device-method write, scaled (level = 21.5 with scale 0.5 → 43.0 raw float).
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let (code, body) = get(addr, "/api/v1/devicemethod/default/plc-tcp/set/level/21.5").await;
        assert_eq!(code, 200, "{body}");
        {
            let m = tcp_dev.0.lock().unwrap();
            let raw = f32::from_bits((u32::from(m.holding[30]) << 16) | u32::from(m.holding[31]));
            assert_eq!(raw, 43.0);
        }
        edge.expect(T, "level read back", status("default/plc-tcp", "level", "21.500000")).await;
        let (code, body) = get(addr, "/api/v1/device/default/plc-tcp/level").await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["Data"]["Value"], "21.500000");
        // Past the device's memory: the device's exception, named clearly.
        let (code, body) = get(addr, "/api/v1/device/default/plc-tcp/beyond").await;
        assert_eq!(code, 500);
        assert!(body.contains("illegal data address") && body.contains("offset 95 limit 10"), "{body}");
        let (code, body) = get(addr, "/api/v1/devicemethod/default/plc-tcp/set/switch/7").await;
        assert_eq!(code, 500);
        assert!(body.contains("\"7\" is not a valid boolean"), "{body}");

        let status = sigterm(&mut child.0);
        assert!(status.success(), "{status:?}");
        assert!(!mapper_sock.exists(), "the mapper removes its socket");
        edge.shut().await;
    })
    .await
    .expect("likely deadlocked");
}

#[test]
fn a_config_error_exits_64_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, "grpc_server:\n  socket_path: /tmp/x.sock\ncommon:\n  name: m\n  edgecore_sock: /tmp/e.sock\n  http_port: nope\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_modbus-mapper")).arg("--config-file").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("common.protocol: must be set") && err.contains("common.http_port"), "{err}");
}
