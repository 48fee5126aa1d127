//! A simulated Modbus TCP device: 1,000 coils, discrete inputs, holding and input registers,
//! served with tokio-modbus. As a thermometer (see [`Thermometer`]) input registers 0–1 hold the
//! temperature as a float, drifting every second; what is written to holding registers and
//! coils is held, so a setpoint written by a mapper can be read back.
//!
//! The memory sits behind one short mutex: the server calls the device from each connection's
//! task, and the drift task writes one register a second.

use std::future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_modbus::server::Service;
use tokio_modbus::{ExceptionCode, Request, Response};

/// Registers and coils of each kind.
pub const SIZE: usize = 1000;

/// The device's memory.
#[derive(Debug)]
pub struct Memory {
    /// Coils (read/write bits).
    pub coils: Vec<bool>,
    /// Discrete inputs (read-only bits).
    pub discrete: Vec<bool>,
    /// Holding registers (read/write words).
    pub holding: Vec<u16>,
    /// Input registers (read-only words).
    pub input: Vec<u16>,
    /// Requests answered (reads and writes), for benchmarks.
    pub requests: u64,
}

impl Default for Memory {
    fn default() -> Self {
        Self {
            coils: vec![false; SIZE],
            discrete: vec![false; SIZE],
            holding: vec![0; SIZE],
            input: vec![0; SIZE],
            requests: 0,
        }
    }
}

/// A device: its memory, shared by the server's connections.
#[derive(Clone, Debug, Default)]
pub struct Device(pub Arc<Mutex<Memory>>);

fn slice<T: Clone>(v: &[T], addr: u16, n: u16) -> Result<Vec<T>, ExceptionCode> {
    let (a, n) = (usize::from(addr), usize::from(n));
    v.get(a..a + n).map(<[T]>::to_vec).ok_or(ExceptionCode::IllegalDataAddress)
}

impl Device {
    /// Reads or changes the memory.
    pub fn with<R>(&self, f: impl FnOnce(&mut Memory) -> R) -> R {
        let mut m = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut m)
    }

    fn answer(&self, req: Request<'static>) -> Result<Response, ExceptionCode> {
        self.with(|m| {
            m.requests += 1;
            Self::apply(m, req)
        })
    }

    fn apply(m: &mut Memory, req: Request<'static>) -> Result<Response, ExceptionCode> {
        match req {
            Request::ReadCoils(a, n) => slice(&m.coils, a, n).map(Response::ReadCoils),
            Request::ReadDiscreteInputs(a, n) => slice(&m.discrete, a, n).map(Response::ReadDiscreteInputs),
            Request::ReadHoldingRegisters(a, n) => slice(&m.holding, a, n).map(Response::ReadHoldingRegisters),
            Request::ReadInputRegisters(a, n) => slice(&m.input, a, n).map(Response::ReadInputRegisters),
            Request::WriteSingleCoil(a, v) => {
                let c = m.coils.get_mut(usize::from(a)).ok_or(ExceptionCode::IllegalDataAddress)?;
                *c = v;
                Ok(Response::WriteSingleCoil(a, v))
            }
            Request::WriteMultipleCoils(a, bits) => {
                let start = usize::from(a);
                let dst = m.coils.get_mut(start..start + bits.len()).ok_or(ExceptionCode::IllegalDataAddress)?;
                dst.copy_from_slice(&bits);
                Ok(Response::WriteMultipleCoils(a, u16::try_from(bits.len()).unwrap_or(u16::MAX)))
            }
            Request::WriteSingleRegister(a, v) => {
                let r = m.holding.get_mut(usize::from(a)).ok_or(ExceptionCode::IllegalDataAddress)?;
                *r = v;
                Ok(Response::WriteSingleRegister(a, v))
            }
            Request::WriteMultipleRegisters(a, words) => {
                let start = usize::from(a);
                let dst = m.holding.get_mut(start..start + words.len()).ok_or(ExceptionCode::IllegalDataAddress)?;
                dst.copy_from_slice(&words);
                Ok(Response::WriteMultipleRegisters(a, u16::try_from(words.len()).unwrap_or(u16::MAX)))
            }
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }
}

impl Service for Device {
    type Request = Request<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = future::Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: Request<'static>) -> Self::Future {
        future::ready(self.answer(req))
    }
}

/// Serves `device` on `listener` (Modbus TCP, any unit id) until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, device: Device) -> std::io::Result<()> {
    let server = tokio_modbus::server::tcp::Server::new(listener);
    let on_connected = |stream, peer: SocketAddr| {
        let device = device.clone();
        async move { tokio_modbus::server::tcp::accept_tcp_connection(stream, peer, move |_| Ok(Some(device.clone()))) }
    };
    server.serve(&on_connected, |_| {}).await
}

/// The thermometer: input registers 0–1 hold the temperature in °C as an IEEE 754 `f32`
/// (big-endian, high word first: a mapper's `FLOAT` with `limit: 2`), starting at 21.5 and
/// drifting by up to ±0.3 a second within 18–28; holding registers 0–1 hold a setpoint the
/// same way (starting at 22.0) that only writes change.
pub struct Thermometer;

/// Writes `v` as an `f32` over two registers starting at `at`.
pub fn put_f32(regs: &mut [u16], at: usize, v: f32) {
    let bits = v.to_bits();
    regs[at] = (bits >> 16) as u16;
    regs[at + 1] = (bits & 0xffff) as u16;
}

/// Reads the `f32` over two registers starting at `at`.
pub fn get_f32(regs: &[u16], at: usize) -> f32 {
    f32::from_bits((u32::from(regs[at]) << 16) | u32::from(regs[at + 1]))
}

impl Thermometer {
    /// First input register of the temperature.
    pub const TEMPERATURE: usize = 0;
    /// First holding register of the setpoint.
    pub const SETPOINT: usize = 0;

    /// A device set up as the thermometer.
    pub fn device() -> Device {
        let d = Device::default();
        d.with(|m| {
            put_f32(&mut m.input, Self::TEMPERATURE, 21.5);
            put_f32(&mut m.holding, Self::SETPOINT, 22.0);
        });
        d
    }

    /// Drifts the temperature every `every` (a small linear congruential walk, no dependency).
    pub async fn drift(device: Device, every: Duration) {
        let mut seed: u32 = 0x2545_f491;
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let step = f32::from(u16::try_from((seed >> 16) % 7).unwrap_or(3)) - 3.0;
            device.with(|m| {
                let t = get_f32(&m.input, Self::TEMPERATURE) + step / 10.0;
                let t = (t.clamp(18.0, 28.0) * 10.0).round() / 10.0;
                put_f32(&mut m.input, Self::TEMPERATURE, t);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_writes_and_refuses_out_of_range() {
        let d = Thermometer::device();
        let Response::ReadInputRegisters(t) = d.answer(Request::ReadInputRegisters(0, 2)).unwrap() else { panic!() };
        assert!((get_f32(&t, 0) - 21.5).abs() < 1e-6);
        d.answer(Request::WriteSingleRegister(5, 250)).unwrap();
        assert_eq!(d.answer(Request::ReadHoldingRegisters(5, 1)).unwrap(), Response::ReadHoldingRegisters(vec![250]));
        assert_eq!(d.answer(Request::ReadHoldingRegisters(999, 2)).unwrap_err(), ExceptionCode::IllegalDataAddress);
        d.answer(Request::WriteSingleCoil(3, true)).unwrap();
        assert_eq!(d.answer(Request::ReadCoils(3, 1)).unwrap(), Response::ReadCoils(vec![true]));
    }
}
