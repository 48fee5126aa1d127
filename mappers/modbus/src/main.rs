//! `modbus-mapper`: a KubeEdge mapper for Modbus devices over TCP, speaking Modbus TCP or RTU
//! framing over TCP (a serial gateway), on the mapper framework.
//!
//! The device's `spec.protocol.configData`: `ip`, `port` (502), `slaveID` (1), and ours:
//! `transport` (`tcp`, or `rtuovertcp` for a serial gateway) and `timeout` (ms per request,
//! 5000, upstream's). Each property's `visitors.configData` has upstream's fields: `register`
//! (CoilRegister, DiscreteInputRegister, HoldingRegister, InputRegister), `offset`, `limit`,
//! `scale`, `isSwap`, `isRegisterSwap`; conversions are in [`convert`].

mod convert;

use std::time::Duration;

use kubeedge_mapper_framework::{DataType, DataValue, Property, Protocol, ProtocolError};
use serde::Deserialize;
use tokio_modbus::client::{Client as _, Context, Reader, Writer};
use tokio_modbus::{ExceptionCode, Slave};

/// `spec.protocol.configData`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeviceConfig {
    ip: String,
    #[serde(default = "default_port")]
    port: u16,
    #[serde(rename = "slaveID", default = "default_slave")]
    slave_id: u8,
    #[serde(default)]
    transport: Transport,
    #[serde(default = "default_timeout")]
    timeout: u64,
    /// Upstream's serial settings: refused with a clear error (no serial line support).
    #[serde(default)]
    serial_port: Option<String>,
}

fn default_port() -> u16 {
    502
}
fn default_slave() -> u8 {
    1
}
fn default_timeout() -> u64 {
    5000
}

#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Transport {
    #[default]
    Tcp,
    #[serde(alias = "rtu-over-tcp")]
    RtuOverTcp,
}

/// `visitors.configData` (upstream's `ModbusVisitorConfig`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Visitor {
    register: Register,
    offset: u16,
    #[serde(default = "default_limit")]
    limit: u16,
    /// 0 or absent means 1 (upstream multiplies by 0 then, which is never meant).
    #[serde(default)]
    scale: f64,
    #[serde(default)]
    is_swap: bool,
    #[serde(default)]
    is_register_swap: bool,
}

fn default_limit() -> u16 {
    1
}

impl Visitor {
    fn scale(&self) -> f64 {
        if self.scale == 0.0 { 1.0 } else { self.scale }
    }
}

/// Upstream's register names, spelled as in Device YAML.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)]
enum Register {
    CoilRegister,
    DiscreteInputRegister,
    HoldingRegister,
    InputRegister,
}

impl Register {
    fn is_bits(self) -> bool {
        matches!(self, Self::CoilRegister | Self::DiscreteInputRegister)
    }
}

/// An open connection and the per-request deadline.
struct Client {
    ctx: Context,
    timeout: Duration,
}

struct Modbus;

/// Maps a tokio-modbus answer: transport failures lose the connection, exceptions fail the call.
fn answer<T>(r: Result<Result<T, ExceptionCode>, tokio_modbus::Error>, v: &Visitor) -> Result<T, ProtocolError> {
    match r {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(ExceptionCode::IllegalDataAddress)) => Err(ProtocolError::device(format!(
            "illegal data address: {:?} offset {} limit {} is out of the device's range",
            v.register, v.offset, v.limit
        ))),
        Ok(Err(code)) => Err(ProtocolError::device(format!("modbus exception {code:?}"))),
        Err(e) => Err(ProtocolError::connection(e)),
    }
}

async fn timed<T>(timeout: Duration, call: impl Future<Output = Result<T, ProtocolError>>) -> Result<T, ProtocolError> {
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| Err(ProtocolError::connection("modbus request timed out")))
}

impl Protocol for Modbus {
    type DeviceConfig = DeviceConfig;
    type Visitor = Visitor;
    type Client = Client;

    async fn connect(&self, c: &DeviceConfig) -> Result<Client, ProtocolError> {
        if let Some(port) = &c.serial_port {
            return Err(ProtocolError::config(format!(
                "serialPort {port:?}: serial lines are not supported; use transport rtuovertcp through a gateway"
            )));
        }
        let timeout = Duration::from_millis(c.timeout.max(1));
        let addr = tokio::net::lookup_host((c.ip.as_str(), c.port))
            .await
            .map_err(|e| ProtocolError::connection(format!("resolving {}: {e}", c.ip)))?
            .next()
            .ok_or_else(|| ProtocolError::connection(format!("{} has no address", c.ip)))?;
        let stream = timed(timeout, async {
            tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| ProtocolError::connection(format!("connecting to {addr}: {e}")))
        })
        .await?;
        let _ = stream.set_nodelay(true);
        let slave = Slave(c.slave_id);
        let ctx = match c.transport {
            Transport::Tcp => tokio_modbus::client::tcp::attach_slave(stream, slave),
            Transport::RtuOverTcp => tokio_modbus::client::rtu::attach_slave(stream, slave),
        };
        Ok(Client { ctx, timeout })
    }

    fn check(&self, v: &Visitor, ty: DataType) -> Result<(), ProtocolError> {
        let max_limit = if v.register.is_bits() { 2000 } else { 125 };
        if v.limit == 0 || v.limit > max_limit {
            return Err(ProtocolError::config(format!(
                "limit {} is out of range 1..={max_limit} for {:?}",
                v.limit, v.register
            )));
        }
        if u32::from(v.offset) + u32::from(v.limit) > 65_536 {
            return Err(ProtocolError::config(format!(
                "offset {} with limit {} is out of range (the last address is 65535)",
                v.offset, v.limit
            )));
        }
        if !v.scale.is_finite() {
            return Err(ProtocolError::config("scale must be a finite number"));
        }
        convert::check_len(ty, convert::byte_len(v.register.is_bits(), v.limit))
    }

    async fn read(&self, c: &mut Client, p: Property<'_, Visitor>) -> Result<DataValue, ProtocolError> {
        let v = p.visitor;
        let ctx = &mut c.ctx;
        let bytes = timed(c.timeout, async {
            Ok(match v.register {
                Register::CoilRegister => convert::bits_to_bytes(&answer(ctx.read_coils(v.offset, v.limit).await, v)?),
                Register::DiscreteInputRegister => {
                    convert::bits_to_bytes(&answer(ctx.read_discrete_inputs(v.offset, v.limit).await, v)?)
                }
                Register::HoldingRegister => {
                    convert::words_to_bytes(&answer(ctx.read_holding_registers(v.offset, v.limit).await, v)?)
                }
                Register::InputRegister => {
                    convert::words_to_bytes(&answer(ctx.read_input_registers(v.offset, v.limit).await, v)?)
                }
            })
        })
        .await?;
        convert::decode(bytes, p.ty, v.scale(), v.is_register_swap, v.is_swap)
    }

    async fn write(&self, c: &mut Client, p: Property<'_, Visitor>, value: &DataValue) -> Result<(), ProtocolError> {
        let v = p.visitor;
        let ctx = &mut c.ctx;
        match v.register {
            Register::CoilRegister => {
                let on = match value.as_i64() {
                    Some(0) => false,
                    Some(1) => true,
                    _ => {
                        return Err(ProtocolError::config(format!("a coil takes 0 or 1 (or false/true), not {value}")));
                    }
                };
                timed(c.timeout, async { answer(ctx.write_single_coil(v.offset, on).await, v) }).await
            }
            Register::HoldingRegister => {
                let words = convert::encode(value, p.ty, v.limit, v.scale(), v.is_register_swap, v.is_swap)?;
                timed(c.timeout, async {
                    if let [word] = words.as_slice() {
                        answer(ctx.write_single_register(v.offset, *word).await, v)
                    } else {
                        answer(ctx.write_multiple_registers(v.offset, &words).await, v)
                    }
                })
                .await
            }
            Register::DiscreteInputRegister | Register::InputRegister => {
                Err(ProtocolError::config(format!("{:?} is read-only", v.register)))
            }
        }
    }

    async fn stop(&self, mut c: Client) {
        let _ = tokio::time::timeout(Duration::from_secs(1), c.ctx.disconnect()).await;
    }
}

fn main() -> std::process::ExitCode {
    kubeedge_mapper_framework::main(Modbus)
}
