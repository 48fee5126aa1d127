//! The KubeEdge Device Management Interface (DMI) v1beta1: how edgecore and device mappers talk.
//!
//! Two gRPC services, both plaintext over unix sockets:
//! - [`DeviceManagerService`](v1beta1::device_manager_service_server::DeviceManagerService) is
//!   served by edgecore (DeviceTwin) on `/etc/kubeedge/dmi.sock`; mappers call it to register
//!   and to report device twins and states;
//! - [`DeviceMapperService`](v1beta1::device_mapper_service_server::DeviceMapperService) is
//!   served by each mapper on its own socket; edgecore calls it when devices or models change.
//!
//! The messages and services are generated at build time from `proto/api.proto` (upstream's
//! names and field numbers) with protox and tonic-prost-build; both clients and both servers
//! are in [`v1beta1`]. Around them this crate offers what both sides need:
//! - [`bind_unix`] and [`serve_unix`]: a tonic server on a unix socket (stale socket removed,
//!   mode 0600, a socket still served by someone else refused);
//! - [`connect_unix`] / [`connect_unix_lazy`]: a channel to a unix socket, with a connect
//!   timeout (dialed now, or on first use and again after each failure);
//! - [`any`]: the `google.protobuf.Any` wrappers that carry `configData` values, to and from
//!   JSON values, with upstream's rules.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kubeedge_dmi::Error> {
//! use kubeedge_dmi::v1beta1::{device_manager_service_client::DeviceManagerServiceClient, *};
//! let channel = kubeedge_dmi::connect_unix("/etc/kubeedge/dmi.sock", std::time::Duration::from_secs(1)).await?;
//! let mut edgecore = DeviceManagerServiceClient::new(channel);
//! let mapper = MapperInfo { name: "modbus".into(), protocol: "modbus".into(), ..Default::default() };
//! let answer = edgecore.mapper_register(MapperRegisterRequest { with_data: true, mapper: Some(mapper) }).await;
//! # Ok(()) }
//! ```

pub mod any;
mod error;
mod unix;

pub use error::{Error, Result};
pub use unix::{DEFAULT_CONNECT_TIMEOUT, bind_unix, connect_unix, connect_unix_lazy, serve_unix};

/// The generated DMI v1beta1 messages, clients and servers (`package v1beta1`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1beta1 {
    tonic::include_proto!("v1beta1");
}

/// The encoded `FileDescriptorSet` of `proto/api.proto` (for reflection and schema checks).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/dmi_descriptor.bin"));

/// edgecore's DMI socket when `deviceTwin.dmiSockPath` is not set.
pub const DEFAULT_EDGECORE_SOCKET: &str = "/etc/kubeedge/dmi.sock";

/// The DMI API version mappers announce in `MapperInfo.api_version`.
pub const API_VERSION: &str = "v1beta1";

/// Device states a mapper reports with ReportDeviceStates (edgecore accepts these five).
pub mod state {
    /// The device answers.
    pub const ONLINE: &str = "online";
    /// The device does not answer.
    pub const OFFLINE: &str = "offline";
    /// The device answers and is healthy.
    pub const OK: &str = "ok";
    /// The mapper cannot tell.
    pub const UNKNOWN: &str = "unknown";
    /// The device answers but reports a fault.
    pub const UNHEALTHY: &str = "unhealthy";
}

// === impl helpers on generated types ===

impl v1beta1::Device {
    /// `{namespace}/{name}`, the device id used in MQTT topics and by the twin.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

impl v1beta1::DeviceModel {
    /// `{namespace}/{name}`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}
