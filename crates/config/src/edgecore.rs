//! `edgecore.yaml` (`edgecore.config.kubeedge.io/v1alpha2`, kind `EdgeCore`).
//!
//! Keys and defaults follow upstream `apis/componentconfig/edgecore/v1alpha2` (KubeEdge v1.23,
//! Linux defaults). Our extension is the top-level `commonConfig` key.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value as JsonValue, json};

use crate::duration::GoDuration;
use crate::load::{is_false, to_pruned_yaml, to_yaml};
use crate::validate::{Checker, is_dns1123_subdomain};
use crate::{HostInfo, Logging, ValidationErrors, default_shutdown_grace_period};

/// The `apiVersion` of edgecore.yaml.
pub const API_VERSION: &str = "edgecore.config.kubeedge.io/v1alpha2";
/// The `kind` of edgecore.yaml.
pub const KIND: &str = "EdgeCore";

const CA_FILE: &str = "/etc/kubeedge/ca/rootCA.crt";
const CERT_FILE: &str = "/etc/kubeedge/certs/server.crt";
const KEY_FILE: &str = "/etc/kubeedge/certs/server.key";
const CONTAINERD_SOCK: &str = "unix:///run/containerd/containerd.sock";

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

/// `commonConfig.monitorServer` (extension).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct MonitorServer {
    /// Loopback `IP:port` to serve metrics on (default `127.0.0.1:9092`).
    pub bind_address: String,
    /// Serve profiling endpoints.
    pub enable_profiling: bool,
}

impl Default for MonitorServer {
    fn default() -> Self {
        Self { bind_address: "127.0.0.1:9092".to_owned(), enable_profiling: false }
    }
}

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

/// `modules.edged`: the embedded kubelet, its tailored configuration and flattened kubelet flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Edged {
    /// Run the module.
    pub enable: bool,
    /// Report pod events to the cloud.
    pub report_event: bool,
    /// A subset of the kubelet's `KubeletConfiguration`.
    pub tailored_kubelet_config: TailoredKubeletConfig,
    /// Node name (default: the host name, lower-cased).
    pub hostname_override: String,
    /// Node IP; empty means the IP used to reach the cloud.
    #[serde(rename = "nodeIP", skip_serializing_if = "String::is_empty")]
    pub node_ip: String,
    /// Cgroup for the container runtime.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub runtime_cgroups: String,
    /// Pause image (default `kubeedge/pause:3.6`).
    pub pod_sandbox_image: String,
    /// Kubelet root directory (default `/var/lib/kubelet`).
    pub root_directory: String,
    /// Windows only: run as a service.
    #[serde(skip_serializing_if = "is_false")]
    pub windows_service: bool,
    /// Windows only: process priority class.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub windows_priority_class: String,
    /// Mounter binary path.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub experimental_mounter_path: String,
    /// Ignore hard eviction thresholds in node allocatable.
    #[serde(skip_serializing_if = "is_false")]
    pub experimental_node_allocatable_ignore_eviction_threshold: bool,
    /// Labels for the node object.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub node_labels: BTreeMap<String, String>,
    /// Minimum age of a finished container before GC (Go duration, default `0s`).
    #[serde(rename = "minimumGCAge")]
    pub minimum_gc_age: GoDuration,
    /// Dead containers kept per pod container (default 1).
    pub max_per_pod_container_count: i32,
    /// Dead containers kept in total; -1 means no limit (default -1).
    pub max_container_count: i32,
    /// Register the node as schedulable (default true).
    pub register_schedulable: bool,
    /// Flag form of the RuntimeDefault seccomp profile switch.
    #[serde(skip_serializing_if = "is_false")]
    pub seccomp_default: bool,
    /// Interface whose IP is the node IP, when `nodeIP` is empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub custom_interface_name: String,
    /// Namespace of the node's lease and events (default `default`).
    pub register_node_namespace: String,
}

impl Edged {
    fn default_for(host: &HostInfo) -> Self {
        Self {
            enable: true,
            report_event: false,
            tailored_kubelet_config: TailoredKubeletConfig::default(),
            hostname_override: host.hostname.trim().to_lowercase(),
            node_ip: String::new(),
            runtime_cgroups: String::new(),
            pod_sandbox_image: "kubeedge/pause:3.6".to_owned(),
            root_directory: "/var/lib/kubelet".to_owned(),
            windows_service: false,
            windows_priority_class: String::new(),
            experimental_mounter_path: String::new(),
            experimental_node_allocatable_ignore_eviction_threshold: false,
            node_labels: BTreeMap::new(),
            minimum_gc_age: GoDuration::from("0s"),
            max_per_pod_container_count: 1,
            max_container_count: -1,
            register_schedulable: true,
            seccomp_default: false,
            custom_interface_name: String::new(),
            register_node_namespace: "default".to_owned(),
        }
    }
}

impl Default for Edged {
    fn default() -> Self {
        Self::default_for(&HostInfo::placeholder())
    }
}

/// `modules.edged.tailoredKubeletConfig`: the kubelet settings upstream gives defaults, typed;
/// every other `KubeletConfiguration` key is kept verbatim in [`Self::other`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
#[allow(missing_docs)] // field names are the kubelet's; see KubeletConfiguration docs
pub struct TailoredKubeletConfig {
    pub static_pod_path: String,
    pub pod_logs_dir: String,
    pub sync_frequency: GoDuration,
    pub file_check_frequency: GoDuration,
    /// Kubelet server bind IP (default `127.0.0.1`).
    pub address: String,
    /// Read-only kubelet port; 0 disables it (default 10350).
    pub read_only_port: i32,
    #[serde(rename = "registryPullQPS")]
    pub registry_pull_qps: i32,
    pub registry_burst: i32,
    #[serde(rename = "eventRecordQPS")]
    pub event_record_qps: i32,
    pub event_burst: i32,
    pub enable_debugging_handlers: bool,
    pub oom_score_adj: i32,
    pub cluster_domain: String,
    /// DNS servers given to pods; unset upstream.
    #[serde(rename = "clusterDNS", skip_serializing_if = "Vec::is_empty")]
    pub cluster_dns: Vec<String>,
    pub streaming_connection_idle_timeout: GoDuration,
    pub node_status_update_frequency: GoDuration,
    pub node_status_report_frequency: GoDuration,
    pub node_lease_duration_seconds: i32,
    #[serde(rename = "imageMinimumGCAge")]
    pub image_minimum_gc_age: GoDuration,
    #[serde(rename = "imageMaximumGCAge")]
    pub image_maximum_gc_age: GoDuration,
    #[serde(rename = "imageGCHighThresholdPercent")]
    pub image_gc_high_threshold_percent: i32,
    #[serde(rename = "imageGCLowThresholdPercent")]
    pub image_gc_low_threshold_percent: i32,
    pub volume_stats_agg_period: GoDuration,
    #[serde(rename = "cgroupsPerQOS")]
    pub cgroups_per_qos: bool,
    /// `cgroupfs` (default) or `systemd`.
    pub cgroup_driver: String,
    pub cpu_manager_policy: String,
    pub cpu_manager_reconcile_period: GoDuration,
    pub memory_manager_policy: String,
    pub topology_manager_policy: String,
    pub topology_manager_scope: String,
    pub runtime_request_timeout: GoDuration,
    pub hairpin_mode: String,
    pub max_pods: i32,
    pub pod_pids_limit: i64,
    #[serde(rename = "resolvConf")]
    pub resolv_conf: String,
    #[serde(rename = "cpuCFSQuota")]
    pub cpu_cfs_quota: bool,
    #[serde(rename = "cpuCFSQuotaPeriod")]
    pub cpu_cfs_quota_period: GoDuration,
    pub node_status_max_images: i32,
    pub max_open_files: i64,
    pub content_type: String,
    pub serialize_image_pulls: bool,
    pub eviction_hard: BTreeMap<String, String>,
    pub eviction_pressure_transition_period: GoDuration,
    pub enable_controller_attach_detach: bool,
    #[serde(rename = "makeIPTablesUtilChains")]
    pub make_iptables_util_chains: bool,
    pub iptables_masquerade_bit: i32,
    pub iptables_drop_bit: i32,
    pub fail_swap_on: bool,
    /// `memorySwap` (upstream prints `{}`), kept verbatim.
    pub memory_swap: JsonValue,
    pub container_log_max_size: String,
    pub container_log_max_files: i32,
    pub container_log_max_workers: i32,
    pub container_log_monitor_interval: GoDuration,
    pub config_map_and_secret_change_detection_strategy: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub system_reserved: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub kube_reserved: BTreeMap<String, String>,
    pub enforce_node_allocatable: Vec<String>,
    pub volume_plugin_dir: String,
    /// The kubelet's own `logging` block (not our `commonConfig.logging`), kept verbatim.
    pub logging: JsonValue,
    pub enable_system_log_handler: bool,
    pub enable_profiling_handler: bool,
    pub enable_debug_flags_handler: bool,
    /// Kubelet graceful node shutdown (not our `commonConfig.shutdownGracePeriod`).
    pub shutdown_grace_period: GoDuration,
    pub shutdown_grace_period_critical_pods: GoDuration,
    /// `crashLoopBackOff` (upstream prints `{}`), kept verbatim.
    pub crash_loop_back_off: JsonValue,
    pub seccomp_default: bool,
    pub memory_throttling_factor: f64,
    pub register_node: bool,
    pub local_storage_capacity_isolation: bool,
    pub container_runtime_endpoint: String,
    pub image_service_endpoint: String,
    #[serde(rename = "failCgroupV1")]
    pub fail_cgroup_v1: bool,
    /// Every other kubelet key, kept losslessly and never reported as unknown.
    #[serde(flatten)]
    pub other: BTreeMap<String, JsonValue>,
}

impl Default for TailoredKubeletConfig {
    fn default() -> Self {
        let d = GoDuration::from;
        let map = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Self {
            static_pod_path: "/etc/kubeedge/manifests".to_owned(),
            pod_logs_dir: "/var/log/pods".to_owned(),
            sync_frequency: d("1m0s"),
            file_check_frequency: d("20s"),
            address: "127.0.0.1".to_owned(),
            read_only_port: 10350,
            registry_pull_qps: 5,
            registry_burst: 10,
            event_record_qps: 50,
            event_burst: 100,
            enable_debugging_handlers: true,
            oom_score_adj: -999,
            cluster_domain: "cluster.local".to_owned(),
            cluster_dns: Vec::new(),
            streaming_connection_idle_timeout: d("4h0m0s"),
            node_status_update_frequency: d("10s"),
            node_status_report_frequency: d("5m0s"),
            node_lease_duration_seconds: 40,
            image_minimum_gc_age: d("2m0s"),
            image_maximum_gc_age: d("0s"),
            image_gc_high_threshold_percent: 85,
            image_gc_low_threshold_percent: 80,
            volume_stats_agg_period: d("1m0s"),
            cgroups_per_qos: true,
            cgroup_driver: "cgroupfs".to_owned(),
            cpu_manager_policy: "none".to_owned(),
            cpu_manager_reconcile_period: d("10s"),
            memory_manager_policy: "None".to_owned(),
            topology_manager_policy: "none".to_owned(),
            topology_manager_scope: "container".to_owned(),
            runtime_request_timeout: d("2m0s"),
            hairpin_mode: "promiscuous-bridge".to_owned(),
            max_pods: 110,
            pod_pids_limit: -1,
            resolv_conf: "/etc/resolv.conf".to_owned(),
            cpu_cfs_quota: true,
            cpu_cfs_quota_period: d("100ms"),
            node_status_max_images: 0,
            max_open_files: 1_000_000,
            content_type: "application/json".to_owned(),
            serialize_image_pulls: true,
            eviction_hard: map(&[
                ("imagefs.available", "15%"),
                ("imagefs.inodesFree", "5%"),
                ("memory.available", "100Mi"),
                ("nodefs.available", "10%"),
                ("nodefs.inodesFree", "5%"),
            ]),
            eviction_pressure_transition_period: d("5m0s"),
            enable_controller_attach_detach: true,
            make_iptables_util_chains: true,
            iptables_masquerade_bit: 14,
            iptables_drop_bit: 15,
            fail_swap_on: false,
            memory_swap: json!({}),
            container_log_max_size: "10Mi".to_owned(),
            container_log_max_files: 5,
            container_log_max_workers: 1,
            container_log_monitor_interval: d("10s"),
            config_map_and_secret_change_detection_strategy: "Get".to_owned(),
            system_reserved: BTreeMap::new(),
            kube_reserved: BTreeMap::new(),
            enforce_node_allocatable: vec!["pods".to_owned()],
            volume_plugin_dir: "/usr/libexec/kubernetes/kubelet-plugins/volume/exec/".to_owned(),
            logging: json!({
                "flushFrequency": "5s",
                "format": "text",
                "options": {
                    "json": { "infoBufferSize": "0" },
                    "text": { "infoBufferSize": "0" }
                },
                "verbosity": 0
            }),
            enable_system_log_handler: true,
            enable_profiling_handler: true,
            enable_debug_flags_handler: true,
            shutdown_grace_period: d("0s"),
            shutdown_grace_period_critical_pods: d("0s"),
            crash_loop_back_off: json!({}),
            seccomp_default: false,
            memory_throttling_factor: 0.9,
            register_node: true,
            local_storage_capacity_isolation: true,
            container_runtime_endpoint: CONTAINERD_SOCK.to_owned(),
            image_service_endpoint: CONTAINERD_SOCK.to_owned(),
            fail_cgroup_v1: false,
            other: BTreeMap::new(),
        }
    }
}

impl TailoredKubeletConfig {
    /// The typed Go-duration fields with their keys, for validation.
    fn durations(&self) -> [(&'static str, &GoDuration); 15] {
        [
            ("syncFrequency", &self.sync_frequency),
            ("fileCheckFrequency", &self.file_check_frequency),
            ("streamingConnectionIdleTimeout", &self.streaming_connection_idle_timeout),
            ("nodeStatusUpdateFrequency", &self.node_status_update_frequency),
            ("nodeStatusReportFrequency", &self.node_status_report_frequency),
            ("imageMinimumGCAge", &self.image_minimum_gc_age),
            ("imageMaximumGCAge", &self.image_maximum_gc_age),
            ("volumeStatsAggPeriod", &self.volume_stats_agg_period),
            ("cpuManagerReconcilePeriod", &self.cpu_manager_reconcile_period),
            ("runtimeRequestTimeout", &self.runtime_request_timeout),
            ("cpuCFSQuotaPeriod", &self.cpu_cfs_quota_period),
            ("evictionPressureTransitionPeriod", &self.eviction_pressure_transition_period),
            ("containerLogMonitorInterval", &self.container_log_monitor_interval),
            ("shutdownGracePeriod", &self.shutdown_grace_period),
            ("shutdownGracePeriodCriticalPods", &self.shutdown_grace_period_critical_pods),
        ]
    }

    /// `nodeStatusUpdateFrequency` parsed; `None` if it does not parse (see `validate()`).
    pub fn node_status_update_frequency(&self) -> Option<Duration> {
        self.node_status_update_frequency.to_std().ok()
    }

    /// `nodeStatusReportFrequency` parsed; `None` if it does not parse.
    pub fn node_status_report_frequency(&self) -> Option<Duration> {
        self.node_status_report_frequency.to_std().ok()
    }

    /// `nodeLeaseDurationSeconds` as a [`Duration`].
    pub fn node_lease_duration(&self) -> Duration {
        secs(self.node_lease_duration_seconds.into())
    }
}

/// `modules.edgeHub`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EdgeHub {
    /// Run the module.
    pub enable: bool,
    /// Seconds between keepalive pings (default 15).
    pub heartbeat: i32,
    /// Upstream message rate limit (default 30).
    #[serde(rename = "messageQPS")]
    pub message_qps: i32,
    /// Upstream message burst (default 60).
    pub message_burst: i32,
    /// Project ID sent in the connection headers.
    #[serde(rename = "projectID")]
    pub project_id: String,
    /// CA certificate (note the upstream spelling `tlsCaFile`).
    #[serde(rename = "tlsCaFile")]
    pub tls_ca_file: String,
    /// Client certificate.
    pub tls_cert_file: String,
    /// Client private key.
    pub tls_private_key_file: String,
    /// QUIC transport.
    pub quic: EdgeHubQuic,
    /// Websocket transport.
    pub websocket: EdgeHubWebSocket,
    /// Join token for the first certificate request.
    pub token: String,
    /// cloudhub HTTPS URL for certificates (default `https://<ip>:10002`).
    pub http_server: String,
    /// Renew the client certificate before it expires (default true).
    pub rotate_certificates: bool,
}

impl EdgeHub {
    fn default_for(host: &HostInfo) -> Self {
        Self {
            enable: true,
            heartbeat: 15,
            message_qps: 30,
            message_burst: 60,
            project_id: "e632aba927ea4ac2b575ec1603d56f10".to_owned(),
            tls_ca_file: CA_FILE.to_owned(),
            tls_cert_file: CERT_FILE.to_owned(),
            tls_private_key_file: KEY_FILE.to_owned(),
            quic: EdgeHubQuic::default_for(host),
            websocket: EdgeHubWebSocket::default_for(host),
            token: String::new(),
            http_server: format!("https://{}", join_host_port(&host.ip, 10002)),
            rotate_certificates: true,
        }
    }

    /// `heartbeat` (seconds) as a [`Duration`].
    pub fn heartbeat(&self) -> Duration {
        secs(self.heartbeat.into())
    }
}

impl Default for EdgeHub {
    fn default() -> Self {
        Self::default_for(&HostInfo::placeholder())
    }
}

/// `modules.edgeHub.quic`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EdgeHubQuic {
    /// Use QUIC (default false; exactly one of quic and websocket must be enabled).
    pub enable: bool,
    /// Seconds (default 30).
    pub handshake_timeout: i32,
    /// Seconds (default 15).
    pub read_deadline: i32,
    /// cloudhub `host:port` (default `<ip>:10001`).
    pub server: String,
    /// Seconds (default 15).
    pub write_deadline: i32,
}

impl EdgeHubQuic {
    fn default_for(host: &HostInfo) -> Self {
        Self {
            enable: false,
            handshake_timeout: 30,
            read_deadline: 15,
            server: join_host_port(&host.ip, 10001),
            write_deadline: 15,
        }
    }

    /// `handshakeTimeout`, `readDeadline`, `writeDeadline` as [`Duration`]s.
    pub fn timeouts(&self) -> (Duration, Duration, Duration) {
        (secs(self.handshake_timeout.into()), secs(self.read_deadline.into()), secs(self.write_deadline.into()))
    }
}

impl Default for EdgeHubQuic {
    fn default() -> Self {
        Self::default_for(&HostInfo::placeholder())
    }
}

/// `modules.edgeHub.websocket`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EdgeHubWebSocket {
    /// Use websocket (default true).
    pub enable: bool,
    /// Seconds (default 30).
    pub handshake_timeout: i32,
    /// Seconds (default 15).
    pub read_deadline: i32,
    /// cloudhub `host:port` (default `<ip>:10000`).
    pub server: String,
    /// Seconds (default 15).
    pub write_deadline: i32,
}

impl EdgeHubWebSocket {
    fn default_for(host: &HostInfo) -> Self {
        Self {
            enable: true,
            handshake_timeout: 30,
            read_deadline: 15,
            server: join_host_port(&host.ip, 10000),
            write_deadline: 15,
        }
    }

    /// `handshakeTimeout`, `readDeadline`, `writeDeadline` as [`Duration`]s.
    pub fn timeouts(&self) -> (Duration, Duration, Duration) {
        (secs(self.handshake_timeout.into()), secs(self.read_deadline.into()), secs(self.write_deadline.into()))
    }
}

impl Default for EdgeHubWebSocket {
    fn default() -> Self {
        Self::default_for(&HostInfo::placeholder())
    }
}

/// `modules.eventBus`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EventBus {
    /// Run the module.
    pub enable: bool,
    /// MQTT QoS 0..=2 (default 0).
    #[serde(rename = "mqttQOS")]
    pub mqtt_qos: u8,
    /// Retain published messages.
    pub mqtt_retain: bool,
    /// Internal broker session queue size (default 100).
    pub mqtt_session_queue_size: i32,
    /// Internal broker URL (default `tcp://127.0.0.1:1884`).
    pub mqtt_server_internal: String,
    /// External broker URL (default `tcp://127.0.0.1:1883`).
    pub mqtt_server_external: String,
    /// Subscriber client ID (empty: generated).
    #[serde(rename = "mqttSubClientID")]
    pub mqtt_sub_client_id: String,
    /// Publisher client ID (empty: generated).
    #[serde(rename = "mqttPubClientID")]
    pub mqtt_pub_client_id: String,
    /// Broker user name.
    pub mqtt_username: String,
    /// Broker password.
    pub mqtt_password: String,
    /// 0 internal, 1 both, 2 external (default 2).
    pub mqtt_mode: i32,
    /// TLS to the external broker.
    #[serde(rename = "eventBusTLS")]
    pub tls: EventBusTls,
}

impl Default for EventBus {
    fn default() -> Self {
        Self {
            enable: true,
            mqtt_qos: 0,
            mqtt_retain: false,
            mqtt_session_queue_size: 100,
            mqtt_server_internal: "tcp://127.0.0.1:1884".to_owned(),
            mqtt_server_external: "tcp://127.0.0.1:1883".to_owned(),
            mqtt_sub_client_id: String::new(),
            mqtt_pub_client_id: String::new(),
            mqtt_username: String::new(),
            mqtt_password: String::new(),
            mqtt_mode: 2,
            tls: EventBusTls::default(),
        }
    }
}

/// `modules.eventBus.eventBusTLS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EventBusTls {
    /// Use TLS (default false).
    pub enable: bool,
    /// CA certificate.
    #[serde(rename = "tlsMqttCAFile")]
    pub tls_mqtt_ca_file: String,
    /// Client certificate.
    pub tls_mqtt_cert_file: String,
    /// Client key.
    pub tls_mqtt_private_key_file: String,
}

impl Default for EventBusTls {
    fn default() -> Self {
        Self {
            enable: false,
            tls_mqtt_ca_file: CA_FILE.to_owned(),
            tls_mqtt_cert_file: CERT_FILE.to_owned(),
            tls_mqtt_private_key_file: KEY_FILE.to_owned(),
        }
    }
}

/// `modules.metaManager`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct MetaManager {
    /// Run the module.
    pub enable: bool,
    /// Beehive group for remote queries (default `hub`).
    pub context_send_group: String,
    /// Beehive module for remote queries (default `websocket`).
    pub context_send_module: String,
    /// Seconds to wait for a cloud answer (default 60).
    pub remote_query_timeout: i32,
    /// Local list/watch API server for edge pods.
    pub meta_server: MetaServer,
}

impl Default for MetaManager {
    fn default() -> Self {
        Self {
            enable: true,
            context_send_group: "hub".to_owned(),
            context_send_module: "websocket".to_owned(),
            remote_query_timeout: 60,
            meta_server: MetaServer::default(),
        }
    }
}

impl MetaManager {
    /// `remoteQueryTimeout` (seconds) as a [`Duration`].
    pub fn remote_query_timeout(&self) -> Duration {
        secs(self.remote_query_timeout.into())
    }
}

/// `modules.metaManager.metaServer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct MetaServer {
    /// Serve (default false).
    pub enable: bool,
    /// `host:port` (default `127.0.0.1:10550`).
    pub server: String,
    /// CA certificate.
    #[serde(rename = "tlsCaFile")]
    pub tls_ca_file: String,
    /// Server certificate.
    pub tls_cert_file: String,
    /// Server key.
    pub tls_private_key_file: String,
    /// Accepted service account token issuers.
    pub service_account_issuers: Vec<String>,
    /// Accepted audiences; upstream default is unset (`null`).
    pub api_audiences: Option<Vec<String>>,
    /// Service account public keys; upstream default is unset (`null`).
    pub service_account_key_files: Option<Vec<String>>,
    /// Address of the dummy interface for in-cluster config (default `169.254.30.10:10550`).
    pub dummy_server: String,
}

impl Default for MetaServer {
    fn default() -> Self {
        Self {
            enable: false,
            server: "127.0.0.1:10550".to_owned(),
            tls_ca_file: CA_FILE.to_owned(),
            tls_cert_file: CERT_FILE.to_owned(),
            tls_private_key_file: KEY_FILE.to_owned(),
            service_account_issuers: vec!["https://kubernetes.default.svc.cluster.local".to_owned()],
            api_audiences: None,
            service_account_key_files: None,
            dummy_server: "169.254.30.10:10550".to_owned(),
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
}

impl Default for ServiceBus {
    fn default() -> Self {
        Self { enable: false, server: "127.0.0.1".to_owned(), port: 9060, timeout: 60 }
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
    /// Run the module (default false).
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
            enable: false,
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

/// `modules.taskManager`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TaskManager {
    /// Run the module (default false).
    pub enable: bool,
}

fn secs(v: i64) -> Duration {
    Duration::from_secs(u64::try_from(v).unwrap_or(0))
}

/// `host:port`, bracketing IPv6 literals like Go's `net.JoinHostPort`.
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
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

    /// Modules by upstream config key, with their `enable` flag, in upstream order.
    pub fn modules(&self) -> Vec<(&'static str, bool)> {
        let m = &self.modules;
        vec![
            ("edged", m.edged.enable),
            ("edgeHub", m.edge_hub.enable),
            ("eventBus", m.event_bus.enable),
            ("metaManager", m.meta_manager.enable),
            ("serviceBus", m.service_bus.enable),
            ("deviceTwin", m.device_twin.enable),
            ("dbTest", m.db_test.enable),
            ("edgeStream", m.edge_stream.enable),
            ("taskManager", m.task_manager.enable),
        ]
    }

    /// Sets the `enable` flag of the module with this upstream key; false if there is none.
    pub fn set_module_enabled(&mut self, key: &str, on: bool) -> bool {
        let m = &mut self.modules;
        let flag = match key {
            "edged" => &mut m.edged.enable,
            "edgeHub" => &mut m.edge_hub.enable,
            "eventBus" => &mut m.event_bus.enable,
            "metaManager" => &mut m.meta_manager.enable,
            "serviceBus" => &mut m.service_bus.enable,
            "deviceTwin" => &mut m.device_twin.enable,
            "dbTest" => &mut m.db_test.enable,
            "edgeStream" => &mut m.edge_stream.enable,
            "taskManager" => &mut m.task_manager.enable,
            _ => return false,
        };
        *flag = on;
        true
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
        let bind = "commonConfig.monitorServer.bindAddress";
        if let Some(addr) = c.listen_addr(bind, &cc.monitor_server.bind_address) {
            c.check(addr.ip().is_loopback(), bind, "must be a loopback address");
        }
        cc.logging.validate("commonConfig.logging", &mut c);
        c.positive("commonConfig.shutdownGracePeriod", i64::try_from(cc.shutdown_grace_period).unwrap_or(i64::MAX));

        c.non_empty("database.driverName", &self.database.driver_name);
        c.non_empty("database.dataSource", &self.database.data_source);

        self.validate_edged(&mut c);
        self.validate_edge_hub(&mut c);

        let eb = &self.modules.event_bus;
        if eb.enable {
            let at = "modules.eventBus";
            if !(0..=2).contains(&eb.mqtt_mode) {
                c.error(
                    format!("{at}.mqttMode"),
                    format!("must be 0 (internal), 1 (both) or 2 (external), got {}", eb.mqtt_mode),
                );
            }
            if eb.mqtt_qos > 2 {
                c.error(format!("{at}.mqttQOS"), format!("must be 0, 1 or 2, got {}", eb.mqtt_qos));
            }
            c.positive(&format!("{at}.mqttSessionQueueSize"), eb.mqtt_session_queue_size.into());
            let schemes = ["tcp", "ssl", "tls", "mqtt", "mqtts", "ws", "wss"];
            if eb.mqtt_mode <= 1 {
                c.url(&format!("{at}.mqttServerInternal"), &eb.mqtt_server_internal, &schemes, true);
            }
            if eb.mqtt_mode >= 1 {
                c.url(&format!("{at}.mqttServerExternal"), &eb.mqtt_server_external, &schemes, true);
            }
        }

        let mm = &self.modules.meta_manager;
        if mm.enable {
            let at = "modules.metaManager";
            c.non_empty(&format!("{at}.contextSendGroup"), &mm.context_send_group);
            c.non_empty(&format!("{at}.contextSendModule"), &mm.context_send_module);
            c.positive(&format!("{at}.remoteQueryTimeout"), mm.remote_query_timeout.into());
            if mm.meta_server.enable {
                if c.host_port(&format!("{at}.metaServer.server"), &mm.meta_server.server) {
                    meta_server_tls(&mut c, &format!("{at}.metaServer"), &mm.meta_server);
                }
                if !mm.meta_server.dummy_server.is_empty() {
                    c.host_port(&format!("{at}.metaServer.dummyServer"), &mm.meta_server.dummy_server);
                }
            }
        }

        let sb = &self.modules.service_bus;
        if sb.enable {
            c.ip("modules.serviceBus.server", &sb.server);
            c.port("modules.serviceBus.port", sb.port.into());
            c.positive("modules.serviceBus.timeout", sb.timeout.into());
        }

        let dt = &self.modules.device_twin;
        if dt.enable {
            c.non_empty("modules.deviceTwin.dmiSockPath", &dt.dmi_sock_path);
        }

        let es = &self.modules.edge_stream;
        if es.enable {
            let at = "modules.edgeStream";
            c.host_port(&format!("{at}.server"), &es.server);
            c.positive(&format!("{at}.handshakeTimeout"), es.handshake_timeout.into());
            c.positive(&format!("{at}.readDeadline"), es.read_deadline.into());
            c.positive(&format!("{at}.writeDeadline"), es.write_deadline.into());
        }
        c.finish()
    }

    fn validate_edged(&self, c: &mut Checker) {
        let e = &self.modules.edged;
        if !e.enable {
            return;
        }
        let at = "modules.edged";
        if !is_dns1123_subdomain(&e.hostname_override) {
            c.error(
                format!("{at}.hostnameOverride"),
                format!("must be a valid node name (lower-case DNS-1123 subdomain), got {:?}", e.hostname_override),
            );
        }
        if !e.node_ip.is_empty() {
            c.ip(&format!("{at}.nodeIP"), &e.node_ip);
        }
        c.non_empty(&format!("{at}.podSandboxImage"), &e.pod_sandbox_image);
        c.non_empty(&format!("{at}.rootDirectory"), &e.root_directory);
        c.non_empty(&format!("{at}.registerNodeNamespace"), &e.register_node_namespace);
        c.duration(&format!("{at}.minimumGCAge"), &e.minimum_gc_age);

        let k = &e.tailored_kubelet_config;
        let at = "modules.edged.tailoredKubeletConfig";
        c.one_of(&format!("{at}.cgroupDriver"), &k.cgroup_driver, &["cgroupfs", "systemd"]);
        for (key, d) in k.durations() {
            c.duration(&format!("{at}.{key}"), d);
        }
        if let Ok(d) = k.node_status_update_frequency.to_std() {
            c.check(!d.is_zero(), &format!("{at}.nodeStatusUpdateFrequency"), "must be > 0");
        }
        c.ip(&format!("{at}.address"), &k.address);
        if !(0..=65535).contains(&k.read_only_port) {
            c.error(format!("{at}.readOnlyPort"), "must be 0 (disabled) or a port in 1..=65535");
        }
        c.positive(&format!("{at}.maxPods"), k.max_pods.into());
        c.positive(&format!("{at}.nodeLeaseDurationSeconds"), k.node_lease_duration_seconds.into());
        c.non_empty(&format!("{at}.containerRuntimeEndpoint"), &k.container_runtime_endpoint);
        let (high, low) = (k.image_gc_high_threshold_percent, k.image_gc_low_threshold_percent);
        for (key, v) in [("imageGCHighThresholdPercent", high), ("imageGCLowThresholdPercent", low)] {
            if !(0..=100).contains(&v) {
                c.error(format!("{at}.{key}"), format!("must be in 0..=100, got {v}"));
            }
        }
        if low > high {
            c.error(format!("{at}.imageGCLowThresholdPercent"), "must not exceed imageGCHighThresholdPercent");
        }
        for (i, ip) in k.cluster_dns.iter().enumerate() {
            c.ip(&format!("{at}.clusterDNS.{i}"), ip);
        }
    }

    fn validate_edge_hub(&self, c: &mut Checker) {
        let h = &self.modules.edge_hub;
        if !h.enable {
            return;
        }
        let at = "modules.edgeHub";
        if h.websocket.enable == h.quic.enable {
            c.error(format!("{at}.websocket.enable"), "exactly one of websocket.enable and quic.enable must be true");
        }
        c.positive(&format!("{at}.heartbeat"), h.heartbeat.into());
        c.positive(&format!("{at}.messageQPS"), h.message_qps.into());
        c.positive(&format!("{at}.messageBurst"), h.message_burst.into());
        c.non_empty(&format!("{at}.projectID"), &h.project_id);
        c.url(&format!("{at}.httpServer"), &h.http_server, &["https"], true);
        for (key, v) in [
            ("tlsCaFile", &h.tls_ca_file),
            ("tlsCertFile", &h.tls_cert_file),
            ("tlsPrivateKeyFile", &h.tls_private_key_file),
        ] {
            c.non_empty(&format!("{at}.{key}"), v);
        }
        let transports = [
            (
                "websocket",
                h.websocket.enable,
                &h.websocket.server,
                (h.websocket.handshake_timeout, h.websocket.read_deadline, h.websocket.write_deadline),
            ),
            (
                "quic",
                h.quic.enable,
                &h.quic.server,
                (h.quic.handshake_timeout, h.quic.read_deadline, h.quic.write_deadline),
            ),
        ];
        for (name, enabled, server, (hs, rd, wd)) in transports {
            if !enabled {
                continue;
            }
            c.host_port(&format!("{at}.{name}.server"), server);
            c.positive(&format!("{at}.{name}.handshakeTimeout"), hs.into());
            c.positive(&format!("{at}.{name}.readDeadline"), rd.into());
            c.positive(&format!("{at}.{name}.writeDeadline"), wd.into());
        }
    }
}

/// Off loopback MetaServer needs TLS with client certificates: the three files must be set and
/// exist (their contents are checked when MetaServer starts).
fn meta_server_tls(c: &mut crate::validate::Checker, at: &str, ms: &MetaServer) {
    let host = crate::validate::split_host_port(&ms.server).map(|(h, _)| h).unwrap_or_default();
    let loopback =
        host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback {
        return;
    }
    for (field, path) in [
        ("tlsCertFile", &ms.tls_cert_file),
        ("tlsPrivateKeyFile", &ms.tls_private_key_file),
        ("tlsCaFile", &ms.tls_ca_file),
    ] {
        if path.is_empty() || !std::path::Path::new(path).is_file() {
            c.error(
                format!("{at}.{field}"),
                format!(
                    "MetaServer on non-loopback address {:?} is served only over TLS with client certificates; \
                     {field} {path:?} does not exist",
                    ms.server
                ),
            );
        }
    }
}

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
