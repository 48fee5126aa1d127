//! `edgecore.yaml` (`edgecore.config.kubeedge.io/v1alpha2`, kind `EdgeCore`).
//!
//! Keys and defaults follow upstream `apis/componentconfig/edgecore/v1alpha2` (KubeEdge v1.23,
//! Linux defaults). Our extension is the top-level `commonConfig` key.
//!
//! One file per module: [`edged`](Edged), [`edgeHub`](EdgeHub), [`eventBus`](EventBus),
//! [`metaManager`](MetaManager); the small ones and the [`Modules`] table are in `modules.rs`.

mod edged;
mod edgehub;
mod eventbus;
mod metamanager;
mod modules;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use self::edged::{Edged, TailoredKubeletConfig};
pub use self::edgehub::{EdgeHub, EdgeHubQuic, EdgeHubWebSocket};
pub use self::eventbus::{EventBus, EventBusTls};
pub use self::metamanager::{MetaManager, MetaServer};
pub use self::modules::{DbTest, DeviceTwin, EdgeStream, Modules, ServiceBus, TaskManager};
use crate::common::{self, Edge, module_table};
use crate::load::{to_pruned_yaml, to_yaml};
use crate::validate::Checker;
use crate::{HostInfo, Logging, ValidationErrors, default_shutdown_grace_period};

/// The `apiVersion` of edgecore.yaml.
pub const API_VERSION: &str = "edgecore.config.kubeedge.io/v1alpha2";
/// The `kind` of edgecore.yaml.
pub const KIND: &str = "EdgeCore";

/// The whole edgecore.yaml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EdgeCoreConfig {
    /// Must be [`API_VERSION`].
    pub api_version: String,
    /// Must be [`KIND`].
    pub kind: String,
    /// Extension (not upstream): monitor server, logging and shutdown grace period.
    pub common_config: CommonConfig,
    /// The local SQLite store.
    pub database: Database,
    /// Per-module settings.
    pub modules: Modules,
    /// Feature gates by name (all alpha and default false upstream).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub feature_gates: BTreeMap<String, bool>,
    /// Version of the edgecore binary that wrote the file (upstream prints `""`).
    #[serde(rename = "edgecoreVersion")]
    pub edgecore_version: String,
}

impl Default for EdgeCoreConfig {
    /// Upstream defaults for [`HostInfo::placeholder`] (`default-edge-node`, `127.0.0.1`).
    fn default() -> Self {
        Self::default_for(&HostInfo::placeholder())
    }
}

/// Extension key `commonConfig` (edgecore has none upstream).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CommonConfig {
    /// Metrics / profiling HTTP server; must bind a loopback address.
    pub monitor_server: MonitorServer,
    /// Log level and format.
    pub logging: Logging,
    /// Seconds to wait for modules to stop on shutdown (default 10).
    #[serde(default = "default_shutdown_grace_period")]
    pub shutdown_grace_period: u64,
}

impl Default for CommonConfig {
    fn default() -> Self {
        Self {
            monitor_server: MonitorServer::default(),
            logging: Logging::default(),
            shutdown_grace_period: default_shutdown_grace_period(),
        }
    }
}

impl CommonConfig {
    /// `shutdownGracePeriod` as a [`Duration`].
    pub fn shutdown_grace_period(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_period)
    }
}

/// `commonConfig.monitorServer` (extension): loopback only, default `127.0.0.1:9092`.
pub type MonitorServer = common::MonitorServer<Edge>;

/// `database`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Database {
    /// `sqlite3`.
    pub driver_name: String,
    /// `default`.
    pub alias_name: String,
    /// Database file (default `/var/lib/kubeedge/edgecore.db`).
    pub data_source: String,
}

impl Default for Database {
    fn default() -> Self {
        Self {
            driver_name: "sqlite3".to_owned(),
            alias_name: "default".to_owned(),
            data_source: "/var/lib/kubeedge/edgecore.db".to_owned(),
        }
    }
}

/// Keys kept by [`EdgeCoreConfig::minimal`]: the key set of upstream's `edgecore --minconfig`.
const MINIMAL_KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "database.dataSource",
    "modules.deviceTwin.enable",
    "modules.deviceTwin.dmiSockPath",
    "modules.edged.enable",
    "modules.edged.tailoredKubeletConfig",
    "modules.edged.hostnameOverride",
    "modules.edged.podSandboxImage",
    "modules.edged.rootDirectory",
    "modules.edged.maxContainerCount",
    "modules.edged.maxPerPodContainerCount",
    "modules.edged.minimumGCAge",
    "modules.edged.registerSchedulable",
    "modules.edged.registerNodeNamespace",
    "modules.edgeHub.enable",
    "modules.edgeHub.heartbeat",
    "modules.edgeHub.tlsCaFile",
    "modules.edgeHub.tlsCertFile",
    "modules.edgeHub.tlsPrivateKeyFile",
    "modules.edgeHub.websocket",
    "modules.edgeHub.httpServer",
    "modules.edgeHub.token",
    "modules.eventBus.enable",
    "modules.eventBus.mqttQOS",
    "modules.eventBus.mqttRetain",
    "modules.eventBus.mqttServerExternal",
    "modules.eventBus.mqttServerInternal",
    "modules.eventBus.mqttSubClientID",
    "modules.eventBus.mqttPubClientID",
    "modules.eventBus.mqttUsername",
    "modules.eventBus.mqttPassword",
    "modules.eventBus.mqttMode",
    "edgecoreVersion",
];

impl EdgeCoreConfig {
    /// Upstream defaults for this host: `hostnameOverride` = lower-cased `host.hostname`, edge hub
    /// servers `<host.ip>:10000` / `:10001`, `httpServer` `https://<host.ip>:10002`.
    pub fn default_for(host: &HostInfo) -> Self {
        let modules =
            Modules { edged: Edged::default_for(host), edge_hub: EdgeHub::default_for(host), ..Modules::default() };
        Self {
            api_version: API_VERSION.to_owned(),
            kind: KIND.to_owned(),
            common_config: CommonConfig::default(),
            database: Database::default(),
            modules,
            feature_gates: BTreeMap::new(),
            edgecore_version: String::new(),
        }
    }

    /// The whole config as YAML (`edgecore --defaultconfig`).
    pub fn to_yaml(&self) -> String {
        to_yaml(self)
    }

    /// The short config printed by `edgecore --minconfig`, using [`HostInfo::placeholder`].
    pub fn minimal() -> String {
        Self::minimal_for(&HostInfo::placeholder())
    }

    /// The short config of upstream's `--minconfig` (same keys: database path, edged with the
    /// full tailored kubelet config, edge hub websocket and certificates, event bus MQTT
    /// settings). Unlike upstream, which prints `enable: false` for edgeHub/eventBus/deviceTwin,
    /// the `enable` flags carry their defaults so the output runs as is and validates.
    pub fn minimal_for(host: &HostInfo) -> String {
        to_pruned_yaml(&Self::default_for(host), MINIMAL_KEYS)
    }

    /// Checks the whole config and reports every problem with its field path.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut c = Checker::new();
        common::validate_type_meta(&mut c, (&self.api_version, &self.kind), (API_VERSION, KIND));

        let cc = &self.common_config;
        let bind = "commonConfig.monitorServer.bindAddress";
        if let Some(addr) = c.listen_addr(bind, &cc.monitor_server.bind_address) {
            c.check(addr.ip().is_loopback(), bind, "must be a loopback address");
        }
        common::validate_process_keys(&mut c, &cc.logging, cc.shutdown_grace_period);

        c.non_empty("database.driverName", &self.database.driver_name);
        c.non_empty("database.dataSource", &self.database.data_source);

        self.modules.validate(&mut c);
        c.finish()
    }
}

module_table!(EdgeCoreConfig {
    "edged" => edged,
    "edgeHub" => edge_hub,
    "eventBus" => event_bus,
    "metaManager" => meta_manager,
    "serviceBus" => service_bus,
    "deviceTwin" => device_twin,
    "dbTest" => db_test,
    "edgeStream" => edge_stream,
    "taskManager" => task_manager,
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_defaults_are_injected() {
        let c = EdgeCoreConfig::default_for(&HostInfo::new("Edge-1", "192.168.1.20"));
        assert_eq!(c.modules.edged.hostname_override, "edge-1");
        assert_eq!(c.modules.edge_hub.websocket.server, "192.168.1.20:10000");
        assert_eq!(c.modules.edge_hub.quic.server, "192.168.1.20:10001");
        assert_eq!(c.modules.edge_hub.http_server, "https://192.168.1.20:10002");
        let v6 = EdgeCoreConfig::default_for(&HostInfo::new("e", "fd00::1"));
        assert_eq!(v6.modules.edge_hub.websocket.server, "[fd00::1]:10000");
        assert!(v6.validate().is_ok(), "{:?}", v6.validate());
    }

    #[test]
    fn module_flags() {
        let mut c = EdgeCoreConfig::default();
        assert_eq!(c.modules()[0], ("edged", true));
        assert!(c.set_module_enabled("edgeStream", true));
        assert!(c.modules().contains(&("edgeStream", true)));
        assert!(!c.set_module_enabled("cloudHub", true));
    }

    #[test]
    fn duration_accessors() {
        let c = EdgeCoreConfig::default();
        assert_eq!(c.modules.edge_hub.heartbeat(), Duration::from_secs(15));
        let k = &c.modules.edged.tailored_kubelet_config;
        assert_eq!(k.node_status_update_frequency(), Some(Duration::from_secs(10)));
        assert_eq!(k.node_status_report_frequency(), Some(Duration::from_secs(300)));
        assert_eq!(c.common_config.shutdown_grace_period(), Duration::from_secs(10));
    }
}
