//! `virtual-mapper`: a KubeEdge mapper whose devices are simulated, for demos and tests.
//!
//! Each property's visitor picks a behaviour:
//! - `{"kind": "counter", "min": 0, "max": 100, "step": 1}`: counts up by `step`, from `min`
//!   back to `min` after `max`;
//! - `{"kind": "random", "min": 0, "max": 100, "step": 1}`: a random walk of at most `step` per
//!   read, kept within `[min, max]`;
//! - `{"kind": "value", "initial": 21}`: holds its value.
//!
//! Every property can be written (a desired value, a REST device method): the value is held and
//! a counter or walk goes on from it. The device's `protocol.configData` may set `seed` (random
//! walks repeat for a seed) and `offline: true` (the device never answers, to see the state).

use std::collections::HashMap;

use kubeedge_mapper_framework::{DataType, DataValue, Property, Protocol, ProtocolError};
use serde::Deserialize;

/// `spec.protocol.configData`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeviceConfig {
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    offline: bool,
}

/// `visitors.configData`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Visitor {
    kind: Kind,
    #[serde(default)]
    min: f64,
    #[serde(default = "default_max")]
    max: f64,
    #[serde(default = "default_step")]
    step: f64,
    #[serde(default)]
    initial: Option<serde_json::Value>,
}

fn default_max() -> f64 {
    100.0
}
fn default_step() -> f64 {
    1.0
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Counter,
    Random,
    Value,
}

/// One simulated device: the current value of each property and a PRNG.
struct Sim {
    values: HashMap<String, DataValue>,
    rng: u64,
}

impl Sim {
    /// xorshift64*: enough randomness for a demo, no dependency.
    fn next_unit(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        #[allow(clippy::cast_precision_loss)]
        let x = (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64;
        x
    }
}

fn typed(ty: DataType, x: f64) -> DataValue {
    match ty {
        #[allow(clippy::cast_possible_truncation)]
        DataType::Int => DataValue::Int(x.round() as i64),
        DataType::Boolean => DataValue::Bool(x != 0.0),
        DataType::String | DataType::Bytes => DataValue::String(format!("{x}")),
        DataType::Float | DataType::Double => DataValue::Float((x * 1000.0).round() / 1000.0),
    }
}

struct Virtual;

impl Protocol for Virtual {
    type DeviceConfig = DeviceConfig;
    type Visitor = Visitor;
    type Client = Sim;

    async fn connect(&self, config: &DeviceConfig) -> Result<Sim, ProtocolError> {
        if config.offline {
            return Err(ProtocolError::connection("the simulated device is offline"));
        }
        Ok(Sim { values: HashMap::new(), rng: config.seed.max(1) })
    }

    fn check(&self, v: &Visitor, _ty: DataType) -> Result<(), ProtocolError> {
        if v.kind != Kind::Value && v.min > v.max {
            return Err(ProtocolError::config(format!("min {} is above max {}", v.min, v.max)));
        }
        Ok(())
    }

    async fn read(&self, sim: &mut Sim, p: Property<'_, Visitor>) -> Result<DataValue, ProtocolError> {
        let v = p.visitor;
        let current = match sim.values.get(p.name) {
            Some(value) => value.clone(),
            None => match &v.initial {
                Some(serde_json::Value::String(s)) => p.ty.value_of(s)?,
                Some(j) => typed(p.ty, j.as_f64().unwrap_or(v.min)),
                None => typed(p.ty, v.min),
            },
        };
        let next = match (v.kind, current.as_f64()) {
            (Kind::Value, _) | (_, None) => current,
            (Kind::Counter, Some(x)) => typed(p.ty, if x + v.step > v.max { v.min } else { x + v.step }),
            (Kind::Random, Some(x)) => {
                let delta = (sim.next_unit() * 2.0 - 1.0) * v.step;
                typed(p.ty, (x + delta).clamp(v.min, v.max))
            }
        };
        sim.values.insert(p.name.to_owned(), next.clone());
        Ok(next)
    }

    async fn write(&self, sim: &mut Sim, p: Property<'_, Visitor>, value: &DataValue) -> Result<(), ProtocolError> {
        // A counter or a walk reads one step on from the written value.
        let held = match (p.visitor.kind, value.as_f64()) {
            (Kind::Counter, Some(x)) => typed(p.ty, x - p.visitor.step),
            _ => value.clone(),
        };
        sim.values.insert(p.name.to_owned(), held);
        Ok(())
    }
}

fn main() -> std::process::ExitCode {
    kubeedge_mapper_framework::main(Virtual)
}
