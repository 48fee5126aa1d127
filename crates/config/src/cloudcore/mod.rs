//! `cloudcore.yaml` (`cloudcore.config.kubeedge.io/v1alpha1`, kind `CloudCore`).
//!
//! Keys and defaults follow upstream `apis/componentconfig/cloudcore/v1alpha1` (KubeEdge v1.23).
//! Our extension keys are `commonConfig.logging` and `commonConfig.shutdownGracePeriod`.
//!
//! One file per large module: [`cloudHub`](CloudHub), [`edgeController`](EdgeController); the
//! others and the [`Modules`] table are in `modules.rs`.

mod cloudhub;
mod edgecontroller;
mod modules;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use self::cloudhub::{
    AuthorizationMode, CloudHub, CloudHubAuthorization, CloudHubEdgeMessages, CloudHubHttps, CloudHubQuic,
    CloudHubUnixSocket, CloudHubWebSocket, NodeAuthorization,
};
pub use self::edgecontroller::{EdgeController, EdgeControllerBuffer, EdgeControllerLoad};
pub use self::modules::{
    CloudStream, DeviceController, DeviceControllerBuffer, DeviceControllerLoad, DynamicController, IptablesManager,
    Modules, Router, SyncController, TaskManager, TaskManagerBuffer, TaskManagerLoad,
};
use crate::common::{self, Cloud, module_table};
use crate::load::{to_pruned_yaml, to_yaml};
use crate::validate::Checker;
use crate::{HostInfo, Logging, ValidationErrors, default_shutdown_grace_period};

/// The `apiVersion` of cloudcore.yaml.
pub const API_VERSION: &str = "cloudcore.config.kubeedge.io/v1alpha1";
/// The `kind` of cloudcore.yaml.
pub const KIND: &str = "CloudCore";

/// Upstream `constants.DefaultNodeLimit`.
pub const DEFAULT_NODE_LIMIT: i32 = 500;
/// Upstream `constants.ServerPort` (cloudcore `commonConfig.tunnelPort`).
pub const DEFAULT_TUNNEL_PORT: i32 = 10350;

/// The whole cloudcore.yaml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CloudCoreConfig {
    /// Must be [`API_VERSION`].
    pub api_version: String,
    /// Must be [`KIND`].
    pub kind: String,
    /// Process-wide settings.
    pub common_config: CommonConfig,
    /// How cloudcore talks to the Kubernetes API server.
    #[serde(rename = "kubeAPIConfig")]
    pub kube_api_config: KubeApiConfig,
    /// Per-module settings.
    pub modules: Modules,
    /// Feature gates by name (all alpha and default false upstream).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub feature_gates: BTreeMap<String, bool>,
}

impl Default for CloudCoreConfig {
    /// Upstream defaults with an empty `advertiseAddress`; see [`CloudCoreConfig::default_for`].
    fn default() -> Self {
        Self {
            api_version: API_VERSION.to_owned(),
            kind: KIND.to_owned(),
            common_config: CommonConfig::default(),
            kube_api_config: KubeApiConfig::default(),
            modules: Modules::default(),
            feature_gates: BTreeMap::new(),
        }
    }
}

/// `commonConfig`: upstream's keys plus our `logging` and `shutdownGracePeriod`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CommonConfig {
    /// Port of the stream tunnel advertised to edges (10350; negotiated at runtime upstream).
    pub tunnel_port: i32,
    /// Metrics / profiling HTTP server.
    pub monitor_server: MonitorServer,
    /// Extension: log level and format.
    pub logging: Logging,
    /// Extension: seconds to wait for modules to stop on shutdown (default 10).
    #[serde(default = "default_shutdown_grace_period")]
    pub shutdown_grace_period: u64,
}

impl Default for CommonConfig {
    fn default() -> Self {
        Self {
            tunnel_port: DEFAULT_TUNNEL_PORT,
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

/// `commonConfig.monitorServer`: default `127.0.0.1:9091`; `enableProfiling` is printed only
/// when true, as upstream.
pub type MonitorServer = common::MonitorServer<Cloud>;

/// `kubeAPIConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct KubeApiConfig {
    /// API server URL; empty means in-cluster or from `kubeConfig`.
    pub master: String,
    /// Content type of requests (default `application/vnd.kubernetes.protobuf`).
    pub content_type: String,
    /// Client QPS (upstream forces it to 5 × nodeLimit, see [`CloudCoreConfig::adjust_for_node_limit`]).
    pub qps: i32,
    /// Client burst (forced to 10 × nodeLimit).
    pub burst: i32,
    /// Path of a kubeconfig file; empty means in-cluster.
    pub kube_config: String,
}

impl Default for KubeApiConfig {
    fn default() -> Self {
        Self {
            master: String::new(),
            content_type: "application/vnd.kubernetes.protobuf".to_owned(),
            qps: 5 * DEFAULT_NODE_LIMIT,
            burst: 10 * DEFAULT_NODE_LIMIT,
            kube_config: String::new(),
        }
    }
}

/// Keys kept by [`CloudCoreConfig::minimal`]: the key set of upstream's `cloudcore --minconfig`.
const MINIMAL_KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "modules.cloudHub.enable",
    "modules.cloudHub.nodeLimit",
    "modules.cloudHub.tlsCAFile",
    "modules.cloudHub.tlsCAKeyFile",
    "modules.cloudHub.tlsCertFile",
    "modules.cloudHub.tlsPrivateKeyFile",
    "modules.cloudHub.advertiseAddress",
    "modules.cloudHub.unixsocket",
    "modules.cloudHub.websocket",
    "modules.cloudHub.https",
    "modules.router",
    "modules.iptablesManager",
];

impl CloudCoreConfig {
    /// Upstream defaults with `advertiseAddress: [host.ip]`.
    pub fn default_for(host: &HostInfo) -> Self {
        let mut c = Self::default();
        c.modules.cloud_hub.advertise_address = vec![host.ip.clone()];
        c
    }

    /// The whole config as YAML (`cloudcore --defaultconfig`).
    pub fn to_yaml(&self) -> String {
        to_yaml(self)
    }

    /// The short config printed by `cloudcore --minconfig`, using [`HostInfo::placeholder`].
    pub fn minimal() -> String {
        Self::minimal_for(&HostInfo::placeholder())
    }

    /// The short config of upstream's `--minconfig`: the same keys (`nodeLimit: 1000`, TLS files,
    /// `advertiseAddress`, the cloud hub servers, `router`, `iptablesManager`). Unlike upstream,
    /// `cloudHub.enable` is printed as `true` so the output runs as is. Omitted keys take their
    /// defaults on load; the result validates.
    pub fn minimal_for(host: &HostInfo) -> String {
        let mut c = Self::default_for(host);
        c.modules.cloud_hub.node_limit = 1000;
        to_pruned_yaml(&c, MINIMAL_KEYS)
    }

    /// Upstream `AdjustCloudCoreConfig`: forces `kubeAPIConfig.qps/burst` to 5×/10× `nodeLimit`
    /// and raises node-count-dependent workers and buffers. Returns whether anything changed.
    pub fn adjust_for_node_limit(&mut self) -> bool {
        let n = self.modules.cloud_hub.node_limit;
        let mut changed = false;
        let mut set = |v: &mut i32, want: i32, only_raise: bool| {
            if (only_raise && *v < want) || (!only_raise && *v != want) {
                *v = want;
                changed = true;
            }
        };
        set(&mut self.kube_api_config.qps, n.saturating_mul(5), false);
        set(&mut self.kube_api_config.burst, n.saturating_mul(10), false);
        let load = &mut self.modules.edge_controller.load;
        set(&mut load.query_node_workers, n, true);
        set(&mut load.patch_node_workers, 100 + n / 50, true);
        set(&mut load.create_lease_workers, n, true);
        let buffer = &mut self.modules.edge_controller.buffer;
        set(&mut buffer.patch_node, 1024 + n / 2, true);
        set(&mut buffer.query_node, 1024_i32.saturating_add(n), true);
        set(&mut buffer.create_lease, 1024_i32.saturating_add(n), true);
        changed
    }

    /// Checks the whole config and reports every problem with its field path.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut c = Checker::new();
        common::validate_type_meta(&mut c, (&self.api_version, &self.kind), (API_VERSION, KIND));

        let cc = &self.common_config;
        c.port("commonConfig.tunnelPort", cc.tunnel_port.into());
        c.listen_addr("commonConfig.monitorServer.bindAddress", &cc.monitor_server.bind_address);
        common::validate_process_keys(&mut c, &cc.logging, cc.shutdown_grace_period);

        let k = &self.kube_api_config;
        c.positive("kubeAPIConfig.qps", k.qps.into());
        c.positive("kubeAPIConfig.burst", k.burst.into());
        c.non_empty("kubeAPIConfig.contentType", &k.content_type);
        if !k.kube_config.is_empty() && !k.kube_config.starts_with('/') {
            c.error("kubeAPIConfig.kubeConfig", "must be an absolute path");
        }
        if !k.master.is_empty() {
            c.url("kubeAPIConfig.master", &k.master, &["http", "https"], false);
        }

        self.modules.validate(&mut c);
        c.finish()
    }
}

module_table!(CloudCoreConfig {
    "cloudHub" => cloud_hub,
    "edgeController" => edge_controller,
    "deviceController" => device_controller,
    "taskManager" => task_manager,
    "syncController" => sync_controller,
    "dynamicController" => dynamic_controller,
    "cloudStream" => cloud_stream,
    "router" => router,
    "iptablesManager" => iptables_manager,
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_limit_dependent_defaults() {
        let c = CloudCoreConfig::default();
        assert_eq!(c.kube_api_config.qps, 2500);
        assert_eq!(c.kube_api_config.burst, 5000);
        assert_eq!(c.modules.edge_controller.buffer.patch_node, 1274);
        assert_eq!(c.modules.edge_controller.buffer.query_node, 1524);
        assert_eq!(c.modules.edge_controller.load.patch_node_workers, 110);
        assert_eq!(c.modules.edge_controller.load.create_lease_workers, 500);
    }

    #[test]
    fn adjust_raises_for_bigger_limit() {
        let mut c = CloudCoreConfig::default();
        assert!(!c.adjust_for_node_limit());
        c.modules.cloud_hub.node_limit = 1000;
        assert!(c.adjust_for_node_limit());
        assert_eq!(c.kube_api_config.qps, 5000);
        assert_eq!(c.modules.edge_controller.buffer.create_lease, 2024);
        assert_eq!(c.modules.edge_controller.load.patch_node_workers, 120);
    }

    #[test]
    fn module_flags() {
        let mut c = CloudCoreConfig::default();
        assert_eq!(c.modules()[0], ("cloudHub", true));
        assert!(c.set_module_enabled("router", true));
        assert!(c.modules().contains(&("router", true)));
        assert!(!c.set_module_enabled("nope", true));
    }

    #[test]
    fn an_enabled_router_needs_credentials_and_whole_tls() {
        let mut c = CloudCoreConfig::default();
        c.modules.cloud_hub.advertise_address = vec!["10.0.0.1".into()];
        c.validate().unwrap();
        c.modules.router.enable = true;
        let e = c.validate().unwrap_err();
        assert!(e.has_path("modules.router.tokenFile"), "{e}");
        c.modules.router.allow_unauthenticated = true;
        c.validate().unwrap();
        c.modules.router.allow_unauthenticated = false;
        c.modules.router.tls_ca_file = "/ca.crt".into();
        let e = c.validate().unwrap_err();
        assert!(e.has_path("modules.router.tlsCAFile") && !e.has_path("modules.router.tokenFile"), "{e}");
        c.modules.router.tls_cert_file = "/tls.crt".into();
        let e = c.validate().unwrap_err();
        assert!(e.has_path("modules.router.tlsPrivateKeyFile"), "{e}");
        c.modules.router.tls_private_key_file = "/tls.key".into();
        c.validate().unwrap();
        // Upstream's keys only, as upstream writes them: the new ones stay out of the YAML.
        let yaml = yaml_serde::to_string(&CloudCoreConfig::default()).unwrap();
        assert!(!yaml.contains("tokenFile") && !yaml.contains("allowUnauthenticated"), "{yaml}");
    }

    #[test]
    fn duration_accessors() {
        let h = CloudHub::default();
        assert_eq!(h.keepalive_interval(), Duration::from_secs(30));
        assert_eq!(h.token_refresh_duration(), Duration::from_secs(12 * 3600));
        assert_eq!(h.edge_cert_signing_duration(), Duration::from_secs(365 * 86400));
    }
}
