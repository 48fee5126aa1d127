//! `modules`: which cloud modules run, and the settings of those without a file of their own
//! (`deviceController`, `taskManager`, `syncController`, `dynamicController`, `cloudStream`,
//! `router`, `iptablesManager`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{CloudHub, EdgeController};
use crate::common::{CA_FILE, CERT_FILE, KEY_FILE};
use crate::load::is_zero_i32;
use crate::validate::Checker;

/// `modules`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Modules {
    /// `cloudHub`: the edge-facing websocket/QUIC/HTTPS server.
    pub cloud_hub: CloudHub,
    /// `edgeController`: pods, nodes, configmaps… between the API server and edges.
    pub edge_controller: EdgeController,
    /// `deviceController`: device CRDs ↔ edge device twins.
    pub device_controller: DeviceController,
    /// `taskManager`: node upgrade / image pre-pull jobs.
    pub task_manager: TaskManager,
    /// `syncController`: reconciles objects edges may have missed.
    pub sync_controller: SyncController,
    /// `dynamicController`: list/watch proxy for edge MetaServer clients.
    pub dynamic_controller: DynamicController,
    /// `cloudStream`: kubectl logs/exec/attach tunnel.
    pub cloud_stream: CloudStream,
    /// `router`: rule-based message routing.
    pub router: Router,
    /// `iptablesManager`: DNAT rules for the stream tunnel.
    pub iptables_manager: IptablesManager,
}

impl Modules {
    /// Checks every enabled module, in upstream key order.
    pub(super) fn validate(&self, c: &mut Checker) {
        self.cloud_hub.validate(c);
        self.edge_controller.validate(c);

        let dc = &self.device_controller;
        if dc.enable {
            let at = "modules.deviceController";
            let b = &dc.buffer;
            for (key, v) in [
                ("updateDeviceTwins", b.update_device_twins),
                ("updateDeviceStatus", b.update_device_states),
                ("deviceEvent", b.device_event),
                ("deviceModelEvent", b.device_model_event),
                ("deviceStatusEvent", b.device_status_event),
            ] {
                c.non_negative(&format!("{at}.buffer.{key}"), v.into());
            }
            c.positive(&format!("{at}.load.updateDeviceStatusWorkers"), dc.load.update_device_status_workers.into());
        }

        let tm = &self.task_manager;
        if tm.enable {
            c.non_negative("modules.taskManager.buffer.taskStatus", tm.buffer.task_status.into());
            c.non_negative("modules.taskManager.buffer.taskEvent", tm.buffer.task_event.into());
            c.positive("modules.taskManager.load.taskWorkers", tm.load.task_workers.into());
        }

        let cs = &self.cloud_stream;
        if cs.enable {
            let at = "modules.cloudStream";
            c.port(&format!("{at}.tunnelPort"), cs.tunnel_port.into());
            c.port(&format!("{at}.streamPort"), cs.stream_port.into());
            for (key, v) in [
                ("tlsTunnelCAFile", &cs.tls_tunnel_ca_file),
                ("tlsTunnelCertFile", &cs.tls_tunnel_cert_file),
                ("tlsTunnelPrivateKeyFile", &cs.tls_tunnel_private_key_file),
                ("tlsStreamCAFile", &cs.tls_stream_ca_file),
                ("tlsStreamCertFile", &cs.tls_stream_cert_file),
                ("tlsStreamPrivateKeyFile", &cs.tls_stream_private_key_file),
            ] {
                c.non_empty(&format!("{at}.{key}"), v);
            }
        }

        let r = &self.router;
        if r.enable {
            c.ip("modules.router.address", &r.address);
            c.port("modules.router.port", r.port.into());
            c.positive("modules.router.restTimeout", r.rest_timeout.into());
            let tls = !r.tls_cert_file.is_empty() || !r.tls_private_key_file.is_empty();
            if tls {
                c.non_empty("modules.router.tlsCertFile", &r.tls_cert_file);
                c.non_empty("modules.router.tlsPrivateKeyFile", &r.tls_private_key_file);
            }
            if !r.tls_ca_file.is_empty() && !tls {
                c.error("modules.router.tlsCAFile", "client certificates need tlsCertFile and tlsPrivateKeyFile");
            }
            if r.token_file.is_empty() && r.tls_ca_file.is_empty() && !r.allow_unauthenticated {
                c.error(
                    "modules.router.tokenFile",
                    "the REST listener needs credentials: set tokenFile (a bearer token) or tlsCAFile (client \
                     certificates), or allowUnauthenticated: true to serve anyone as upstream does",
                );
            }
        }

        let im = &self.iptables_manager;
        if im.enable {
            c.one_of("modules.iptablesManager.mode", &im.mode, &["internal", "external"]);
        }
    }
}

/// `modules.deviceController`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DeviceController {
    /// Run the module.
    pub enable: bool,
    /// Channel capacities.
    pub buffer: DeviceControllerBuffer,
    /// Worker counts.
    pub load: DeviceControllerLoad,
}

impl Default for DeviceController {
    fn default() -> Self {
        Self { enable: true, buffer: DeviceControllerBuffer::default(), load: DeviceControllerLoad::default() }
    }
}

/// `modules.deviceController.buffer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DeviceControllerBuffer {
    /// `updateDeviceTwins` (default 1024).
    pub update_device_twins: i32,
    /// `updateDeviceStatus` (Go field `UpdateDeviceStates`; default 1024).
    #[serde(rename = "updateDeviceStatus")]
    pub update_device_states: i32,
    /// `deviceEvent` (default 1).
    pub device_event: i32,
    /// `deviceModelEvent` (default 1).
    pub device_model_event: i32,
    /// `deviceStatusEvent` (v1.23; upstream leaves it 0, i.e. omitted from the default file).
    #[serde(skip_serializing_if = "is_zero_i32")]
    pub device_status_event: i32,
}

impl Default for DeviceControllerBuffer {
    fn default() -> Self {
        Self {
            update_device_twins: 1024,
            update_device_states: 1024,
            device_event: 1,
            device_model_event: 1,
            device_status_event: 0,
        }
    }
}

/// `modules.deviceController.load`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DeviceControllerLoad {
    /// `updateDeviceStatusWorkers` (default 1).
    pub update_device_status_workers: i32,
}

impl Default for DeviceControllerLoad {
    fn default() -> Self {
        Self { update_device_status_workers: 1 }
    }
}

/// `modules.taskManager`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TaskManager {
    /// Run the module (default false).
    pub enable: bool,
    /// Channel capacities.
    pub buffer: TaskManagerBuffer,
    /// Worker counts.
    pub load: TaskManagerLoad,
}

/// `modules.taskManager.buffer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TaskManagerBuffer {
    /// `taskStatus` (default 1024).
    pub task_status: i32,
    /// `taskEvent` (default 1).
    pub task_event: i32,
}

impl Default for TaskManagerBuffer {
    fn default() -> Self {
        Self { task_status: 1024, task_event: 1 }
    }
}

/// `modules.taskManager.load`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TaskManagerLoad {
    /// `taskWorkers` (default 1).
    pub task_workers: i32,
}

impl Default for TaskManagerLoad {
    fn default() -> Self {
        Self { task_workers: 1 }
    }
}

/// `modules.syncController`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SyncController {
    /// Run the module (default true).
    pub enable: bool,
}

impl Default for SyncController {
    fn default() -> Self {
        Self { enable: true }
    }
}

/// `modules.dynamicController`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DynamicController {
    /// Run the module (default false).
    pub enable: bool,
}

/// `modules.cloudStream`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CloudStream {
    /// Run the module (default true here; upstream's default is false).
    pub enable: bool,
    /// CA of the edge-facing tunnel server.
    #[serde(rename = "tlsTunnelCAFile")]
    pub tls_tunnel_ca_file: String,
    /// Certificate of the tunnel server.
    pub tls_tunnel_cert_file: String,
    /// Key of the tunnel server.
    pub tls_tunnel_private_key_file: String,
    /// Tunnel server port (default 10004).
    pub tunnel_port: u32,
    /// CA of the API-server-facing stream server.
    #[serde(rename = "tlsStreamCAFile")]
    pub tls_stream_ca_file: String,
    /// Certificate of the stream server.
    pub tls_stream_cert_file: String,
    /// Key of the stream server.
    pub tls_stream_private_key_file: String,
    /// Stream server port (default 10003).
    pub stream_port: u32,
}

impl Default for CloudStream {
    fn default() -> Self {
        Self {
            enable: true,
            tls_tunnel_ca_file: CA_FILE.to_owned(),
            tls_tunnel_cert_file: CERT_FILE.to_owned(),
            tls_tunnel_private_key_file: KEY_FILE.to_owned(),
            tunnel_port: 10004,
            tls_stream_ca_file: "/etc/kubeedge/ca/streamCA.crt".to_owned(),
            tls_stream_cert_file: "/etc/kubeedge/certs/stream.crt".to_owned(),
            tls_stream_private_key_file: "/etc/kubeedge/certs/stream.key".to_owned(),
            stream_port: 10003,
        }
    }
}

/// `modules.router`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Router {
    /// Run the module (default false).
    pub enable: bool,
    /// Listen IP (default `0.0.0.0`).
    pub address: String,
    /// Listen port (default 9443).
    pub port: u32,
    /// REST timeout in seconds (default 60).
    pub rest_timeout: u32,
    /// Ours: the listener's certificate (PEM); with `tlsPrivateKeyFile`, the listener speaks
    /// HTTPS. Upstream's listener is plain HTTP only.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub tls_cert_file: String,
    /// Ours: the key of `tlsCertFile` (PEM).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub tls_private_key_file: String,
    /// Ours: a CA (PEM) whose client certificates are accepted as credentials (needs TLS).
    #[serde(rename = "tlsCAFile", skip_serializing_if = "String::is_empty")]
    pub tls_ca_file: String,
    /// Ours: a file holding the bearer token callers must present (`Authorization: Bearer …`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub token_file: String,
    /// Ours: serve callers without credentials, as upstream does. Off unless set.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allow_unauthenticated: bool,
}

impl Default for Router {
    fn default() -> Self {
        Self {
            enable: false,
            address: "0.0.0.0".to_owned(),
            port: 9443,
            rest_timeout: 60,
            tls_cert_file: String::new(),
            tls_private_key_file: String::new(),
            tls_ca_file: String::new(),
            token_file: String::new(),
            allow_unauthenticated: false,
        }
    }
}

impl Router {
    /// `restTimeout` (seconds) as a [`Duration`].
    pub fn rest_timeout(&self) -> Duration {
        Duration::from_secs(self.rest_timeout.into())
    }
}

/// `modules.iptablesManager`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct IptablesManager {
    /// Run the module (default true).
    pub enable: bool,
    /// `internal` (default: cloudcore manages the rules) or `external` (a separate deployment).
    pub mode: String,
}

impl Default for IptablesManager {
    fn default() -> Self {
        Self { enable: true, mode: "internal".to_owned() }
    }
}
