//! The one seam a mapper implements: how to connect to a device and read or write one property.
//!
//! The framework parses the device's `spec.protocol.configData` into [`Protocol::DeviceConfig`]
//! and each property's `visitors.configData` into [`Protocol::Visitor`] (with serde, from the
//! JSON the DMI `Any` values unpack to), so a protocol only sees typed settings; a value that
//! does not parse is reported as a configuration error naming the property, and the device's
//! other properties go on. Each device has one task owning its client, so calls to one client
//! never overlap (a Modbus line or an OPC UA session wants exactly that).

use std::future::Future;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::data::{DataType, DataValue};
use crate::error::ProtocolError;

/// One property as a protocol call sees it.
#[derive(Debug, Clone, Copy)]
pub struct Property<'a, V> {
    /// The property's name (`spec.properties[].name`).
    pub name: &'a str,
    /// Its parsed visitor.
    pub visitor: &'a V,
    /// Its data type.
    pub ty: DataType,
}

/// A device protocol (Modbus, OPC UA, a simulator).
pub trait Protocol: Send + Sync + 'static {
    /// The device's connection settings (`spec.protocol.configData`).
    type DeviceConfig: DeserializeOwned + Send + Sync + 'static;
    /// One property's address on the device (`visitors.configData`).
    type Visitor: DeserializeOwned + Send + Sync + 'static;
    /// An open connection to one device.
    type Client: Send + 'static;

    /// Log targets of the protocol's libraries that are silenced below `-v 4` (and when
    /// `RUST_LOG` is not set): libraries that log every failure at error level themselves,
    /// while the framework already logs it once, with the device and property.
    const QUIET_TARGETS: &'static [&'static str] = &[];

    /// Opens a connection. A [`ErrorKind::Connection`](crate::ErrorKind::Connection) error makes
    /// the framework retry with backoff; a [`ErrorKind::Config`](crate::ErrorKind::Config) one
    /// marks the device unhealthy until it is updated.
    fn connect(&self, config: &Self::DeviceConfig) -> impl Future<Output = Result<Self::Client, ProtocolError>> + Send;

    /// The deadline of one connect, read or write of a device with this configuration (a call
    /// that takes longer counts as a lost connection). The default is 5 s.
    fn timeout(&self, _config: &Self::DeviceConfig) -> Duration {
        Duration::from_secs(5)
    }

    /// Checks a visitor once, before any I/O (e.g. an offset out of range). The default
    /// accepts every visitor that parsed.
    fn check(&self, _visitor: &Self::Visitor, _ty: DataType) -> Result<(), ProtocolError> {
        Ok(())
    }

    /// Reads one property.
    fn read(
        &self,
        client: &mut Self::Client,
        property: Property<'_, Self::Visitor>,
    ) -> impl Future<Output = Result<DataValue, ProtocolError>> + Send;

    /// Writes one property (a desired value, or a REST device-method call).
    fn write(
        &self,
        client: &mut Self::Client,
        property: Property<'_, Self::Visitor>,
        value: &DataValue,
    ) -> impl Future<Output = Result<(), ProtocolError>> + Send;

    /// Closes the connection (the device was removed or updated, or the mapper stops).
    fn stop(&self, client: Self::Client) -> impl Future<Output = ()> + Send {
        async move { drop(client) }
    }
}
