//! `cloudcore.yaml` (`cloudcore.config.kubeedge.io/v1alpha1`, kind `CloudCore`).
//!
//! Keys and defaults follow upstream `apis/componentconfig/cloudcore/v1alpha1` (KubeEdge v1.23).
//! Our extension keys are `commonConfig.logging` and `commonConfig.shutdownGracePeriod`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::load::{is_false, is_zero_i32, to_pruned_yaml, to_yaml};
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

const CA_FILE: &str = "/etc/kubeedge/ca/rootCA.crt";
const CA_KEY_FILE: &str = "/etc/kubeedge/ca/rootCA.key";
const CERT_FILE: &str = "/etc/kubeedge/certs/server.crt";
const KEY_FILE: &str = "/etc/kubeedge/certs/server.key";

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

/// `commonConfig.monitorServer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct MonitorServer {
    /// `IP:port` to serve metrics on (default `127.0.0.1:9091`).
    pub bind_address: String,
    /// Serve pprof-style profiling endpoints (omitted from the output when false, as upstream).
    #[serde(skip_serializing_if = "is_false")]
    pub enable_profiling: bool,
}

impl Default for MonitorServer {
    fn default() -> Self {
        Self { bind_address: "127.0.0.1:9091".to_owned(), enable_profiling: false }
    }
}

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

/// `modules.cloudHub`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CloudHub {
    /// Run the module.
    pub enable: bool,
    /// Seconds between keepalive checks (default 30).
    pub keepalive_interval: i32,
    /// Maximum number of connected edge nodes (default 500).
    pub node_limit: i32,
    /// CA certificate.
    #[serde(rename = "tlsCAFile")]
    pub tls_ca_file: String,
    /// CA private key (used to sign edge certificates).
    #[serde(rename = "tlsCAKeyFile")]
    pub tls_ca_key_file: String,
    /// Server certificate.
    pub tls_cert_file: String,
    /// Server private key.
    pub tls_private_key_file: String,
    /// Seconds (upstream: unused).
    pub write_timeout: i32,
    /// QUIC server.
    pub quic: CloudHubQuic,
    /// Unix socket server (CSI helper).
    #[serde(rename = "unixsocket")]
    pub unix_socket: CloudHubUnixSocket,
    /// Websocket server.
    pub websocket: CloudHubWebSocket,
    /// HTTPS server (certificate signing, CA download).
    pub https: CloudHubHttps,
    /// Addresses put in the server certificate and advertised to edges. Upstream defaults to
    /// the host IP; here `Default` leaves it empty (see [`CloudCoreConfig::default_for`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub advertise_address: Vec<String>,
    /// Extra DNS names for the server certificate (upstream default `[""]`).
    pub dns_names: Vec<String>,
    /// Validity of signed edge certificates, in days (default 365).
    pub edge_cert_signing_duration: i64,
    /// Join-token refresh period, in hours (default 12).
    pub token_refresh_duration: i64,
    /// Authorization of edge requests.
    pub authorization: CloudHubAuthorization,
    /// Extension (ours): require an edge's certificate to be its own (`CN=system:node:{node}`)
    /// on the WebSocket and for `/edge.crt`. Default true; false restores upstream's permissive
    /// behaviour, which v1.15 edges (certificate CN `kubeedge.io`) need.
    pub node_identity_check: bool,
}

impl Default for CloudHub {
    fn default() -> Self {
        Self {
            enable: true,
            keepalive_interval: 30,
            node_limit: DEFAULT_NODE_LIMIT,
            tls_ca_file: CA_FILE.to_owned(),
            tls_ca_key_file: CA_KEY_FILE.to_owned(),
            tls_cert_file: CERT_FILE.to_owned(),
            tls_private_key_file: KEY_FILE.to_owned(),
            write_timeout: 30,
            quic: CloudHubQuic::default(),
            unix_socket: CloudHubUnixSocket::default(),
            websocket: CloudHubWebSocket::default(),
            https: CloudHubHttps::default(),
            advertise_address: Vec::new(),
            dns_names: vec![String::new()],
            edge_cert_signing_duration: 365,
            token_refresh_duration: 12,
            authorization: CloudHubAuthorization::default(),
            node_identity_check: true,
        }
    }
}

impl CloudHub {
    /// `keepaliveInterval` (seconds) as a [`Duration`]; negative values count as zero.
    pub fn keepalive_interval(&self) -> Duration {
        secs(self.keepalive_interval.into())
    }

    /// `writeTimeout` (seconds) as a [`Duration`].
    pub fn write_timeout(&self) -> Duration {
        secs(self.write_timeout.into())
    }

    /// `edgeCertSigningDuration` (days) as a [`Duration`].
    pub fn edge_cert_signing_duration(&self) -> Duration {
        secs(self.edge_cert_signing_duration.saturating_mul(24 * 3600))
    }

    /// `tokenRefreshDuration` (hours) as a [`Duration`].
    pub fn token_refresh_duration(&self) -> Duration {
        secs(self.token_refresh_duration.saturating_mul(3600))
    }
}

/// `modules.cloudHub.quic`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CloudHubQuic {
    /// Serve QUIC.
    pub enable: bool,
    /// Listen IP (default `0.0.0.0`).
    pub address: String,
    /// Listen port (default 10001).
    pub port: u32,
    /// Maximum concurrent incoming streams (default 10000).
    pub max_incoming_streams: i32,
}

impl Default for CloudHubQuic {
    fn default() -> Self {
        Self { enable: false, address: "0.0.0.0".to_owned(), port: 10001, max_incoming_streams: 10000 }
    }
}

/// `modules.cloudHub.unixsocket`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CloudHubUnixSocket {
    /// Serve the unix socket.
    pub enable: bool,
    /// `unix://` path (default `unix:///var/lib/kubeedge/kubeedge.sock`).
    pub address: String,
}

impl Default for CloudHubUnixSocket {
    fn default() -> Self {
        Self { enable: true, address: "unix:///var/lib/kubeedge/kubeedge.sock".to_owned() }
    }
}

/// `modules.cloudHub.websocket`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CloudHubWebSocket {
    /// Serve websocket.
    pub enable: bool,
    /// Listen IP (default `0.0.0.0`).
    pub address: String,
    /// Listen port (default 10000).
    pub port: u32,
}

impl Default for CloudHubWebSocket {
    fn default() -> Self {
        Self { enable: true, address: "0.0.0.0".to_owned(), port: 10000 }
    }
}

/// `modules.cloudHub.https`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CloudHubHttps {
    /// Serve HTTPS.
    pub enable: bool,
    /// Listen IP (default `0.0.0.0`).
    pub address: String,
    /// Listen port (default 10002).
    pub port: u32,
}

impl Default for CloudHubHttps {
    fn default() -> Self {
        Self { enable: true, address: "0.0.0.0".to_owned(), port: 10002 }
    }
}

/// `modules.cloudHub.authorization`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CloudHubAuthorization {
    /// Enforce authorization (default false).
    pub enable: bool,
    /// Only log denials (default true).
    pub debug: bool,
    /// Authorizers, in order (default: node authorization enabled).
    pub modes: Vec<AuthorizationMode>,
}

impl Default for CloudHubAuthorization {
    fn default() -> Self {
        Self {
            enable: false,
            debug: true,
            modes: vec![AuthorizationMode { node: Some(NodeAuthorization { enable: true }) }],
        }
    }
}

/// One entry of `modules.cloudHub.authorization.modes`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct AuthorizationMode {
    /// Node authorizer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeAuthorization>,
}

/// `modes[].node`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct NodeAuthorization {
    /// Use the node authorizer.
    pub enable: bool,
}

/// `modules.edgeController`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EdgeController {
    /// Run the module.
    pub enable: bool,
    /// Seconds between node status updates (default 10).
    pub node_update_frequency: i32,
    /// Channel capacities.
    pub buffer: EdgeControllerBuffer,
    /// Worker counts.
    pub load: EdgeControllerLoad,
}

impl Default for EdgeController {
    fn default() -> Self {
        Self {
            enable: true,
            node_update_frequency: 10,
            buffer: EdgeControllerBuffer::for_node_limit(DEFAULT_NODE_LIMIT),
            load: EdgeControllerLoad::for_node_limit(DEFAULT_NODE_LIMIT),
        }
    }
}

impl EdgeController {
    /// `nodeUpdateFrequency` (seconds) as a [`Duration`].
    pub fn node_update_frequency(&self) -> Duration {
        secs(self.node_update_frequency.into())
    }
}

/// `modules.edgeController.buffer`: channel capacities.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
#[allow(missing_docs)] // one capacity per upstream key; names say it all
pub struct EdgeControllerBuffer {
    pub process_event: i32,
    pub update_pod_status: i32,
    pub update_node_status: i32,
    pub query_config_map: i32,
    pub query_secret: i32,
    pub pod_event: i32,
    pub config_map_event: i32,
    pub secret_event: i32,
    pub rules_event: i32,
    pub rule_endpoints_event: i32,
    pub query_persistent_volume: i32,
    pub query_persistent_volume_claim: i32,
    pub query_volume_attachment: i32,
    pub create_node: i32,
    pub patch_node: i32,
    pub query_node: i32,
    pub update_node: i32,
    pub patch_pod: i32,
    pub delete_pod: i32,
    pub create_lease: i32,
    pub query_lease: i32,
    pub service_account_token: i32,
    pub create_pod: i32,
    pub certificate_signing_request: i32,
}

impl EdgeControllerBuffer {
    /// Upstream defaults for a given `nodeLimit`.
    pub fn for_node_limit(node_limit: i32) -> Self {
        Self {
            process_event: 1024,
            update_pod_status: 1024,
            update_node_status: 1024,
            query_config_map: 1024,
            query_secret: 1024,
            pod_event: 1,
            config_map_event: 1,
            secret_event: 1,
            rules_event: 1,
            rule_endpoints_event: 1,
            query_persistent_volume: 1024,
            query_persistent_volume_claim: 1024,
            query_volume_attachment: 1024,
            create_node: 1024,
            patch_node: 1024 + node_limit / 2,
            query_node: 1024 + node_limit,
            update_node: 1024,
            patch_pod: 1024,
            delete_pod: 1024,
            create_lease: 1024 + node_limit,
            query_lease: 1024,
            service_account_token: 1024,
            create_pod: 1024,
            certificate_signing_request: 1024,
        }
    }

    fn fields(&self) -> [(&'static str, i32); 24] {
        [
            ("processEvent", self.process_event),
            ("updatePodStatus", self.update_pod_status),
            ("updateNodeStatus", self.update_node_status),
            ("queryConfigMap", self.query_config_map),
            ("querySecret", self.query_secret),
            ("podEvent", self.pod_event),
            ("configMapEvent", self.config_map_event),
            ("secretEvent", self.secret_event),
            ("rulesEvent", self.rules_event),
            ("ruleEndpointsEvent", self.rule_endpoints_event),
            ("queryPersistentVolume", self.query_persistent_volume),
            ("queryPersistentVolumeClaim", self.query_persistent_volume_claim),
            ("queryVolumeAttachment", self.query_volume_attachment),
            ("createNode", self.create_node),
            ("patchNode", self.patch_node),
            ("queryNode", self.query_node),
            ("updateNode", self.update_node),
            ("patchPod", self.patch_pod),
            ("deletePod", self.delete_pod),
            ("createLease", self.create_lease),
            ("queryLease", self.query_lease),
            ("serviceAccountToken", self.service_account_token),
            ("createPod", self.create_pod),
            ("certificateSigningRequest", self.certificate_signing_request),
        ]
    }
}

impl Default for EdgeControllerBuffer {
    fn default() -> Self {
        Self::for_node_limit(DEFAULT_NODE_LIMIT)
    }
}

/// `modules.edgeController.load`: worker counts. Three keys are capitalised upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
#[allow(missing_docs)] // one worker count per upstream key; names say it all
pub struct EdgeControllerLoad {
    pub process_event_workers: i32,
    pub update_pod_status_workers: i32,
    pub update_node_status_workers: i32,
    pub query_config_map_workers: i32,
    pub query_secret_workers: i32,
    pub query_persistent_volume_workers: i32,
    pub query_persistent_volume_claim_workers: i32,
    pub query_volume_attachment_workers: i32,
    pub create_node_workers: i32,
    pub patch_node_workers: i32,
    pub query_node_workers: i32,
    pub update_node_workers: i32,
    pub patch_pod_workers: i32,
    pub delete_pod_workers: i32,
    pub create_lease_workers: i32,
    pub query_lease_workers: i32,
    #[serde(rename = "UpdateRuleStatusWorkers")]
    pub update_rule_status_workers: i32,
    #[serde(rename = "ServiceAccountTokenWorkers")]
    pub service_account_token_workers: i32,
    #[serde(rename = "CreatePodWorks")]
    pub create_pod_works: i32,
    pub certificate_signing_request_workers: i32,
}

impl EdgeControllerLoad {
    /// Upstream defaults for a given `nodeLimit`.
    pub fn for_node_limit(node_limit: i32) -> Self {
        Self {
            process_event_workers: 4,
            update_pod_status_workers: 1,
            update_node_status_workers: 1,
            query_config_map_workers: 100,
            query_secret_workers: 100,
            query_persistent_volume_workers: 4,
            query_persistent_volume_claim_workers: 4,
            query_volume_attachment_workers: 4,
            create_node_workers: 100,
            patch_node_workers: 100 + node_limit / 50,
            query_node_workers: node_limit,
            update_node_workers: 4,
            patch_pod_workers: 100,
            delete_pod_workers: 100,
            create_lease_workers: node_limit,
            query_lease_workers: 100,
            update_rule_status_workers: 4,
            service_account_token_workers: 100,
            create_pod_works: 4,
            certificate_signing_request_workers: 4,
        }
    }

    fn fields(&self) -> [(&'static str, i32); 20] {
        [
            ("processEventWorkers", self.process_event_workers),
            ("updatePodStatusWorkers", self.update_pod_status_workers),
            ("updateNodeStatusWorkers", self.update_node_status_workers),
            ("queryConfigMapWorkers", self.query_config_map_workers),
            ("querySecretWorkers", self.query_secret_workers),
            ("queryPersistentVolumeWorkers", self.query_persistent_volume_workers),
            ("queryPersistentVolumeClaimWorkers", self.query_persistent_volume_claim_workers),
            ("queryVolumeAttachmentWorkers", self.query_volume_attachment_workers),
            ("createNodeWorkers", self.create_node_workers),
            ("patchNodeWorkers", self.patch_node_workers),
            ("queryNodeWorkers", self.query_node_workers),
            ("updateNodeWorkers", self.update_node_workers),
            ("patchPodWorkers", self.patch_pod_workers),
            ("deletePodWorkers", self.delete_pod_workers),
            ("createLeaseWorkers", self.create_lease_workers),
            ("queryLeaseWorkers", self.query_lease_workers),
            ("UpdateRuleStatusWorkers", self.update_rule_status_workers),
            ("ServiceAccountTokenWorkers", self.service_account_token_workers),
            ("CreatePodWorks", self.create_pod_works),
            ("certificateSigningRequestWorkers", self.certificate_signing_request_workers),
        ]
    }
}

impl Default for EdgeControllerLoad {
    fn default() -> Self {
        Self::for_node_limit(DEFAULT_NODE_LIMIT)
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
    /// Run the module (default false).
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
            enable: false,
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
}

impl Default for Router {
    fn default() -> Self {
        Self { enable: false, address: "0.0.0.0".to_owned(), port: 9443, rest_timeout: 60 }
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

fn secs(v: i64) -> Duration {
    Duration::from_secs(u64::try_from(v).unwrap_or(0))
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

    /// Modules by upstream config key, with their `enable` flag, in upstream order.
    pub fn modules(&self) -> Vec<(&'static str, bool)> {
        let m = &self.modules;
        vec![
            ("cloudHub", m.cloud_hub.enable),
            ("edgeController", m.edge_controller.enable),
            ("deviceController", m.device_controller.enable),
            ("taskManager", m.task_manager.enable),
            ("syncController", m.sync_controller.enable),
            ("dynamicController", m.dynamic_controller.enable),
            ("cloudStream", m.cloud_stream.enable),
            ("router", m.router.enable),
            ("iptablesManager", m.iptables_manager.enable),
        ]
    }

    /// Sets the `enable` flag of the module with this upstream key; false if there is none.
    pub fn set_module_enabled(&mut self, key: &str, on: bool) -> bool {
        let m = &mut self.modules;
        let flag = match key {
            "cloudHub" => &mut m.cloud_hub.enable,
            "edgeController" => &mut m.edge_controller.enable,
            "deviceController" => &mut m.device_controller.enable,
            "taskManager" => &mut m.task_manager.enable,
            "syncController" => &mut m.sync_controller.enable,
            "dynamicController" => &mut m.dynamic_controller.enable,
            "cloudStream" => &mut m.cloud_stream.enable,
            "router" => &mut m.router.enable,
            "iptablesManager" => &mut m.iptables_manager.enable,
            _ => return false,
        };
        *flag = on;
        true
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
        if self.api_version != API_VERSION {
            c.error("apiVersion", format!("must be {API_VERSION:?}, got {:?}", self.api_version));
        }
        if self.kind != KIND {
            c.error("kind", format!("must be {KIND:?}, got {:?}", self.kind));
        }

        let cc = &self.common_config;
        c.port("commonConfig.tunnelPort", cc.tunnel_port.into());
        c.listen_addr("commonConfig.monitorServer.bindAddress", &cc.monitor_server.bind_address);
        cc.logging.validate("commonConfig.logging", &mut c);
        c.positive("commonConfig.shutdownGracePeriod", i64::try_from(cc.shutdown_grace_period).unwrap_or(i64::MAX));

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

        self.validate_cloud_hub(&mut c);

        let ec = &self.modules.edge_controller;
        if ec.enable {
            let at = "modules.edgeController";
            c.positive(&format!("{at}.nodeUpdateFrequency"), ec.node_update_frequency.into());
            for (key, v) in ec.buffer.fields() {
                c.non_negative(&format!("{at}.buffer.{key}"), v.into());
            }
            for (key, v) in ec.load.fields() {
                c.positive(&format!("{at}.load.{key}"), v.into());
            }
        }

        let dc = &self.modules.device_controller;
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

        let tm = &self.modules.task_manager;
        if tm.enable {
            c.non_negative("modules.taskManager.buffer.taskStatus", tm.buffer.task_status.into());
            c.non_negative("modules.taskManager.buffer.taskEvent", tm.buffer.task_event.into());
            c.positive("modules.taskManager.load.taskWorkers", tm.load.task_workers.into());
        }

        let cs = &self.modules.cloud_stream;
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

        let r = &self.modules.router;
        if r.enable {
            c.ip("modules.router.address", &r.address);
            c.port("modules.router.port", r.port.into());
            c.positive("modules.router.restTimeout", r.rest_timeout.into());
        }

        let im = &self.modules.iptables_manager;
        if im.enable {
            c.one_of("modules.iptablesManager.mode", &im.mode, &["internal", "external"]);
        }
        c.finish()
    }

    fn validate_cloud_hub(&self, c: &mut Checker) {
        let h = &self.modules.cloud_hub;
        if !h.enable {
            return;
        }
        let at = "modules.cloudHub";
        c.positive(&format!("{at}.keepaliveInterval"), h.keepalive_interval.into());
        c.positive(&format!("{at}.nodeLimit"), h.node_limit.into());
        c.positive(&format!("{at}.edgeCertSigningDuration"), h.edge_cert_signing_duration);
        c.positive(&format!("{at}.tokenRefreshDuration"), h.token_refresh_duration);
        for (key, v) in [
            ("tlsCAFile", &h.tls_ca_file),
            ("tlsCAKeyFile", &h.tls_ca_key_file),
            ("tlsCertFile", &h.tls_cert_file),
            ("tlsPrivateKeyFile", &h.tls_private_key_file),
        ] {
            c.non_empty(&format!("{at}.{key}"), v);
        }
        if h.advertise_address.is_empty() {
            c.error(format!("{at}.advertiseAddress"), "must list at least one IP address");
        }
        for (i, a) in h.advertise_address.iter().enumerate() {
            c.ip(&format!("{at}.advertiseAddress.{i}"), a);
        }
        // Upstream checks these ports and addresses whenever cloudHub is enabled.
        c.ip(&format!("{at}.websocket.address"), &h.websocket.address);
        c.port(&format!("{at}.websocket.port"), h.websocket.port.into());
        c.ip(&format!("{at}.quic.address"), &h.quic.address);
        c.port(&format!("{at}.quic.port"), h.quic.port.into());
        c.ip(&format!("{at}.https.address"), &h.https.address);
        c.port(&format!("{at}.https.port"), h.https.port.into());
        if h.quic.enable {
            c.positive(&format!("{at}.quic.maxIncomingStreams"), h.quic.max_incoming_streams.into());
        }
        if h.unix_socket.enable {
            let addr = &h.unix_socket.address;
            let ok = addr.get(..7).is_some_and(|p| p.eq_ignore_ascii_case("unix://")) && addr.len() > 7;
            c.check(ok, &format!("{at}.unixsocket.address"), "must start with unix:// and name a path");
        }
        if !h.websocket.enable && !h.quic.enable {
            c.error(format!("{at}.websocket.enable"), "at least one of websocket and quic must be enabled");
        }
    }
}

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
    fn duration_accessors() {
        let h = CloudHub::default();
        assert_eq!(h.keepalive_interval(), Duration::from_secs(30));
        assert_eq!(h.token_refresh_duration(), Duration::from_secs(12 * 3600));
        assert_eq!(h.edge_cert_signing_duration(), Duration::from_secs(365 * 86400));
    }
}
