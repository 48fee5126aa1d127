//! The framework's own test support: the shared fake edgecore and an in-memory protocol whose
//! "registers" the test can see and change.

#![allow(dead_code, missing_docs)]

use std::collections::HashMap;
use std::sync::Arc;

use kubeedge_mapper_framework::{DataValue, Property, Protocol, ProtocolError};
use parking_lot::Mutex;
use serde::Deserialize;

// === An in-memory protocol: registers are map entries the test can see and change ===

#[derive(Clone, Default)]
pub struct Memory(pub Arc<Mutex<HashMap<String, String>>>);

impl Memory {
    pub fn get(&self, key: &str) -> Option<String> {
        self.0.lock().get(key).cloned()
    }
    pub fn set(&self, key: &str, value: &str) {
        self.0.lock().insert(key.into(), value.into());
    }
}

#[derive(Deserialize)]
pub struct MemDevice {
    /// Which memory bank (so the test can make one device unreachable).
    pub bank: String,
}

#[derive(Deserialize)]
pub struct MemVisitor {
    pub key: String,
}

pub struct MemoryProtocol {
    pub banks: HashMap<String, Memory>,
}

impl Protocol for MemoryProtocol {
    type DeviceConfig = MemDevice;
    type Visitor = MemVisitor;
    type Client = Memory;

    async fn connect(&self, config: &MemDevice) -> Result<Memory, ProtocolError> {
        self.banks
            .get(&config.bank)
            .cloned()
            .ok_or_else(|| ProtocolError::connection(format!("no bank {}", config.bank)))
    }

    async fn read(&self, m: &mut Memory, p: Property<'_, MemVisitor>) -> Result<DataValue, ProtocolError> {
        let text = m.get(&p.visitor.key).ok_or_else(|| ProtocolError::device(format!("no key {}", p.visitor.key)))?;
        p.ty.value_of(&text)
    }

    async fn write(&self, m: &mut Memory, p: Property<'_, MemVisitor>, value: &DataValue) -> Result<(), ProtocolError> {
        m.set(&p.visitor.key, &value.to_string());
        Ok(())
    }
}
