//! `modules`: which edge modules run, and the settings of those too small for a file of their
//! own (`serviceBus`, `deviceTwin`, `dbTest`, `edgeStream`, `taskManager`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{EdgeHub, Edged, EventBus, MetaManager};
use crate::common::{CA_FILE, CERT_FILE, KEY_FILE, secs};
use crate::validate::Checker;

/// `modules`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Modules {
    /// `edged`: the lightweight kubelet.
    pub edged: Edged,
    /// `edgeHub`: the connection to cloudhub.
    pub edge_hub: EdgeHub,
    /// `eventBus`: the MQTT bridge.
    pub event_bus: EventBus,
    /// `metaManager`: the local metadata store and MetaServer.
    pub meta_manager: MetaManager,
    /// `serviceBus`: HTTP calls to edge applications.
    pub service_bus: ServiceBus,
    /// `deviceTwin`: device state and DMI.
    pub device_twin: DeviceTwin,
    /// `dbTest`: test module.
    pub db_test: DbTest,
    /// `edgeStream`: the kubectl logs/exec tunnel client.
    pub edge_stream: EdgeStream,
    /// `taskManager`: node upgrade / image pre-pull jobs.
    pub task_manager: TaskManager,
}

impl Modules {
    /// Checks every enabled module, in upstream key order.
    pub(super) fn validate(&self, c: &mut Checker) {
        self.edged.validate(c);
        self.edge_hub.validate(c);
        self.event_bus.validate(c);
        self.meta_manager.validate(c);

        let sb = &self.service_bus;
        if sb.enable {
            c.ip("modules.serviceBus.server", &sb.server);
            c.port("modules.serviceBus.port", sb.port.into());
            c.positive("modules.serviceBus.timeout", sb.timeout.into());
            // TLS needs both files; one alone is a typo, not a request for plain HTTP.
            let (cert, key) = (sb.tls_cert_file.trim().is_empty(), sb.tls_private_key_file.trim().is_empty());
            if cert != key {
                let (missing, given) =
                    if cert { ("tlsCertFile", "tlsPrivateKeyFile") } else { ("tlsPrivateKeyFile", "tlsCertFile") };
                c.error(
                    format!("modules.serviceBus.{missing}"),
                    format!("must be set when {given} is (TLS needs both)"),
                );
            }
        }

        let dt = &self.device_twin;
        if dt.enable {
            c.non_empty("modules.deviceTwin.dmiSockPath", &dt.dmi_sock_path);
        }

        let es = &self.edge_stream;
        if es.enable {
            let at = "modules.edgeStream";
            c.host_port(&format!("{at}.server"), &es.server);
            c.positive(&format!("{at}.handshakeTimeout"), es.handshake_timeout.into());
            c.positive(&format!("{at}.readDeadline"), es.read_deadline.into());
            c.positive(&format!("{at}.writeDeadline"), es.write_deadline.into());
        }

        let tm = &self.task_manager;
        if tm.enable {
            c.non_empty("modules.taskManager.keadmPath", &tm.keadm_path);
        }
    }
}

/// `modules.serviceBus`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ServiceBus {
    /// Run the module (default false).
    pub enable: bool,
    /// Listen IP (default `127.0.0.1`).
    pub server: String,
    /// Listen port (default 9060).
    pub port: i32,
    /// Request timeout in seconds (default 60).
    pub timeout: i32,
    /// Serving certificate (PEM) for HTTPS; empty (the default) serves plain HTTP.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub tls_cert_file: String,
    /// Its private key (PEM); set together with `tlsCertFile`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub tls_private_key_file: String,
}

impl Default for ServiceBus {
    fn default() -> Self {
        Self {
            enable: false,
            server: "127.0.0.1".to_owned(),
            port: 9060,
            timeout: 60,
            tls_cert_file: String::new(),
            tls_private_key_file: String::new(),
        }
    }
}

impl ServiceBus {
    /// `timeout` (seconds) as a [`Duration`].
    pub fn timeout(&self) -> Duration {
        secs(self.timeout.into())
    }
}

/// `modules.deviceTwin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DeviceTwin {
    /// Run the module (default true).
    pub enable: bool,
    /// Directory of the DMI socket (default `/etc/kubeedge/`).
    #[serde(rename = "dmiSockPath")]
    pub dmi_sock_path: String,
}

impl Default for DeviceTwin {
    fn default() -> Self {
        Self { enable: true, dmi_sock_path: "/etc/kubeedge/".to_owned() }
    }
}

/// `modules.dbTest`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DbTest {
    /// Run the module (default false).
    pub enable: bool,
}

/// `modules.edgeStream`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EdgeStream {
    /// Run the module (default true here; upstream's default is false).
    pub enable: bool,
    /// CA of the cloudstream tunnel.
    #[serde(rename = "tlsTunnelCAFile")]
    pub tls_tunnel_ca_file: String,
    /// Client certificate.
    pub tls_tunnel_cert_file: String,
    /// Client key.
    pub tls_tunnel_private_key_file: String,
    /// Seconds (default 30).
    pub handshake_timeout: i32,
    /// Seconds (default 15).
    pub read_deadline: i32,
    /// cloudstream tunnel `host:port` (default `127.0.0.1:10004`).
    pub server: String,
    /// Seconds (default 15).
    pub write_deadline: i32,
}

impl Default for EdgeStream {
    fn default() -> Self {
        Self {
            enable: true,
            tls_tunnel_ca_file: CA_FILE.to_owned(),
            tls_tunnel_cert_file: CERT_FILE.to_owned(),
            tls_tunnel_private_key_file: KEY_FILE.to_owned(),
            handshake_timeout: 30,
            read_deadline: 15,
            server: "127.0.0.1:10004".to_owned(),
            write_deadline: 15,
        }
    }
}

impl EdgeStream {
    /// `handshakeTimeout`, `readDeadline`, `writeDeadline` as [`Duration`]s.
    pub fn timeouts(&self) -> (Duration, Duration, Duration) {
        (secs(self.handshake_timeout.into()), secs(self.read_deadline.into()), secs(self.write_deadline.into()))
    }
}

/// `modules.taskManager`: node upgrade, image pre-pull and config update jobs on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TaskManager {
    /// Run the module (default false).
    pub enable: bool,
    /// Ours: the keadm the module runs for backups, upgrades, rollbacks and config updates
    /// (default `keadm`, found on `PATH`). Written only when it differs from the default, so
    /// upstream's file round-trips unchanged.
    #[serde(skip_serializing_if = "TaskManager::is_default_keadm")]
    pub keadm_path: String,
}

/// Default of `modules.taskManager.keadmPath`.
pub const DEFAULT_KEADM_PATH: &str = "keadm";

impl Default for TaskManager {
    fn default() -> Self {
        Self { enable: false, keadm_path: DEFAULT_KEADM_PATH.to_owned() }
    }
}

impl TaskManager {
    fn is_default_keadm(path: &str) -> bool {
        path == DEFAULT_KEADM_PATH
    }
}

#[cfg(test)]
mod tests {
    use crate::edgecore::EdgeCoreConfig;

    #[test]
    fn task_manager_keadm_path_defaults_round_trips_and_must_not_be_empty() {
        let c = EdgeCoreConfig::default();
        assert_eq!(c.modules.task_manager.keadm_path, "keadm");
        assert!(!c.to_yaml().contains("keadmPath"), "the default is not written");
        let yaml = "modules:\n  taskManager:\n    enable: true\n    keadmPath: /opt/kubeedge/keadm\n";
        let loaded = crate::load::<EdgeCoreConfig>(yaml).expect("loads");
        assert!(loaded.unknown_keys.is_empty());
        assert_eq!(loaded.config.modules.task_manager.keadm_path, "/opt/kubeedge/keadm");
        assert!(loaded.config.to_yaml().contains("keadmPath: /opt/kubeedge/keadm"));
        let empty = "modules:\n  taskManager:\n    enable: true\n    keadmPath: \" \"\n";
        let err = crate::load::<EdgeCoreConfig>(empty).unwrap().config.validate().unwrap_err();
        assert!(err.to_string().contains("modules.taskManager.keadmPath"), "{err}");
    }
}
