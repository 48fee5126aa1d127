//! `modules.edged`: the embedded kubelet's settings, including the tailored
//! `KubeletConfiguration` upstream passes through.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value as JsonValue, json};

use crate::HostInfo;
use crate::common::secs;
use crate::duration::GoDuration;
use crate::load::is_false;
use crate::validate::{Checker, is_dns1123_subdomain};

const CONTAINERD_SOCK: &str = "unix:///run/containerd/containerd.sock";

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
    pub(super) fn default_for(host: &HostInfo) -> Self {
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
    /// Checks `modules.edged` (when enabled) and its tailored kubelet configuration.
    pub(super) fn validate(&self, c: &mut Checker) {
        if !self.enable {
            return;
        }
        let at = "modules.edged";
        if !is_dns1123_subdomain(&self.hostname_override) {
            c.error(
                format!("{at}.hostnameOverride"),
                format!("must be a valid node name (lower-case DNS-1123 subdomain), got {:?}", self.hostname_override),
            );
        }
        if !self.node_ip.is_empty() {
            c.ip(&format!("{at}.nodeIP"), &self.node_ip);
        }
        c.non_empty(&format!("{at}.podSandboxImage"), &self.pod_sandbox_image);
        c.non_empty(&format!("{at}.rootDirectory"), &self.root_directory);
        c.non_empty(&format!("{at}.registerNodeNamespace"), &self.register_node_namespace);
        c.duration(&format!("{at}.minimumGCAge"), &self.minimum_gc_age);
        self.tailored_kubelet_config.validate(c);
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

    fn validate(&self, c: &mut Checker) {
        let at = "modules.edged.tailoredKubeletConfig";
        c.one_of(&format!("{at}.cgroupDriver"), &self.cgroup_driver, &["cgroupfs", "systemd"]);
        for (key, d) in self.durations() {
            c.duration(&format!("{at}.{key}"), d);
        }
        if let Ok(d) = self.node_status_update_frequency.to_std() {
            c.check(!d.is_zero(), &format!("{at}.nodeStatusUpdateFrequency"), "must be > 0");
        }
        c.ip(&format!("{at}.address"), &self.address);
        if !(0..=65535).contains(&self.read_only_port) {
            c.error(format!("{at}.readOnlyPort"), "must be 0 (disabled) or a port in 1..=65535");
        }
        c.positive(&format!("{at}.maxPods"), self.max_pods.into());
        c.positive(&format!("{at}.nodeLeaseDurationSeconds"), self.node_lease_duration_seconds.into());
        c.non_empty(&format!("{at}.containerRuntimeEndpoint"), &self.container_runtime_endpoint);
        let (high, low) = (self.image_gc_high_threshold_percent, self.image_gc_low_threshold_percent);
        for (key, v) in [("imageGCHighThresholdPercent", high), ("imageGCLowThresholdPercent", low)] {
            if !(0..=100).contains(&v) {
                c.error(format!("{at}.{key}"), format!("must be in 0..=100, got {v}"));
            }
        }
        if low > high {
            c.error(format!("{at}.imageGCLowThresholdPercent"), "must not exceed imageGCHighThresholdPercent");
        }
        for (i, ip) in self.cluster_dns.iter().enumerate() {
            c.ip(&format!("{at}.clusterDNS.{i}"), ip);
        }
    }

    /// `nodeLeaseDurationSeconds` as a [`Duration`].
    pub fn node_lease_duration(&self) -> Duration {
        secs(self.node_lease_duration_seconds.into())
    }
}
