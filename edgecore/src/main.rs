//! edgecore: the edge side of KubeEdge. It runs on each edge host, keeps what the node needs in
//! SQLite, runs pods through CRI and device twins over MQTT, and talks to cloudcore over
//! EdgeHub.
//!
//! This binary is thin: flags, config and process lifecycle come from `kubeedge-daemon`; the
//! modules live in this crate's library. Modules not built yet are refused at start (and shown
//! disabled by `--defaultconfig`).

use std::process::ExitCode;

use std::time::Duration;

use edgecore::devicetwin::DeviceTwinModule;
use edgecore::edged::Timings;
use edgecore::edged::module::EdgedModule;
use edgecore::edged::node::NodeSpec;
use edgecore::edged::pods::GcPolicy;
use edgecore::edgehub::module::EdgeHubModule;
use edgecore::eventbus::EventBusModule;
use edgecore::metamanager::module::MetaManagerModule;
use edgecore::servicebus::ServiceBusModule;
use edgecore::taskmanager::TaskManagerModule;
use kubeedge_beehive::RestartPolicy;
use kubeedge_config::edgecore::EdgeCoreConfig;
use kubeedge_daemon::Daemon;

/// Config keys (under `modules`) of the modules this build implements.
const AVAILABLE_MODULES: &[&str] =
    &["edgeHub", "metaManager", "edged", "eventBus", "serviceBus", "deviceTwin", "edgeStream", "taskManager"];

fn main() -> ExitCode {
    let daemon = Daemon {
        name: "edgecore",
        default_config_path: DEFAULT_CONFIG_PATH,
        available_modules: AVAILABLE_MODULES,
        restart_policy: RestartPolicy::default,
    };
    daemon.main::<EdgeCoreConfig>(|cfg, registry, metrics| {
        let hub = &cfg.modules.edge_hub;
        // What EdgeHub's sessions agree on with CloudHub (none without EdgeHub).
        let mut link = edgecore::edgehub::LinkFeatures::default();
        if hub.enable {
            let node = cfg.modules.edged.hostname_override.clone();
            let module =
                EdgeHubModule::new(hub.clone(), node).with_metrics(metrics.registry()).map_err(|e| e.to_string())?;
            link = module.link_features();
            registry.register(Box::new(module))?;
        }
        let meta = &cfg.modules.meta_manager;
        let (bus_cfg, twin_cfg) = (&cfg.modules.event_bus, &cfg.modules.device_twin);
        if (bus_cfg.enable || twin_cfg.enable) && !meta.enable {
            return Err(SetupError::DevicesWithoutMetaManager.into());
        }
        let service_bus = &cfg.modules.service_bus;
        if service_bus.enable && !meta.enable {
            return Err(SetupError::ServiceBusWithoutMetaManager.into());
        }
        let task_manager = &cfg.modules.task_manager;
        if task_manager.enable && !meta.enable {
            return Err(SetupError::TaskManagerWithoutMetaManager.into());
        }
        if meta.enable {
            let path = std::path::Path::new(&cfg.database.data_source);
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|source| SetupError::CreateDatabaseDir { dir: dir.to_owned(), source })?;
            }
            // As upstream, each module's tables are created only when it is enabled.
            let tables = kubeedge_metastore::Tables {
                device_twin: twin_cfg.enable,
                event_bus: bus_cfg.enable,
                service_bus: service_bus.enable,
            };
            let opts = kubeedge_metastore::Options { tables, ..Default::default() };
            let store = kubeedge_metastore::Store::open(path, opts)
                .map_err(|source| SetupError::OpenDatabase { path: path.to_owned(), source })?;
            let node = &cfg.modules.edged.hostname_override;
            if bus_cfg.enable {
                let module = EventBusModule::new(bus_cfg.clone(), node.clone(), store.clone())
                    .with_metrics(metrics.registry())
                    .map_err(|e| e.to_string())?;
                registry.register(Box::new(module))?;
            }
            if service_bus.enable {
                let module = ServiceBusModule::new(service_bus.clone(), store.clone())
                    .with_metrics(metrics.registry())
                    .map_err(|e| e.to_string())?;
                registry.register(Box::new(module))?;
            }
            if twin_cfg.enable {
                let socket = edgecore::devicetwin::dmi::socket_path(&twin_cfg.dmi_sock_path);
                registry.register(Box::new(DeviceTwinModule::new(store.clone(), node.clone()).with_dmi(socket)))?;
            }
            if task_manager.enable {
                registry.register(Box::new(TaskManagerModule::new(task_settings(cfg), store.clone())))?;
            }
            let server = meta.meta_server.enable.then(|| meta.meta_server.clone());
            let node = cfg.modules.edged.hostname_override.clone();
            let module = MetaManagerModule::new(store, node, meta.remote_query_timeout(), server);
            registry.register(Box::new(module))?;
        }
        if cfg.modules.edge_stream.enable {
            registry.register(Box::new(edge_stream_module(cfg)?.with_metrics(metrics.registry())?))?;
        }
        let edged = &cfg.modules.edged;
        if edged.enable {
            if !meta.enable {
                return Err(SetupError::EdgedWithoutMetaManager.into());
            }
            registry.register(Box::new(edged_module(cfg)?.with_link(link)))?;
        }
        Ok(())
    })
}

/// Where the task manager finds keadm, this edgecore's config and the container runtime.
fn task_settings(cfg: &EdgeCoreConfig) -> edgecore::taskmanager::Settings {
    let endpoint = &cfg.modules.edged.tailored_kubelet_config.container_runtime_endpoint;
    let socket = endpoint.strip_prefix("unix://").filter(|p| p.starts_with('/')).map(std::path::PathBuf::from);
    edgecore::taskmanager::Settings::new(
        cfg.modules.edged.hostname_override.clone(),
        cfg.modules.task_manager.keadm_path.clone(),
        config_path(),
        socket,
    )
}

/// The config file this edgecore runs with, absolute (keadm runs it from elsewhere): `--config`
/// as the daemon reads it, else the default.
fn config_path() -> std::path::PathBuf {
    let mut args = std::env::args_os().skip(1);
    let mut path = None;
    while let Some(a) = args.next() {
        let a = a.to_string_lossy().into_owned();
        if a == "--config" {
            path = args.next().map(std::path::PathBuf::from);
        } else if let Some(p) = a.strip_prefix("--config=") {
            path = Some(p.into());
        }
    }
    let path = path.unwrap_or_else(|| DEFAULT_CONFIG_PATH.into());
    std::path::absolute(&path).unwrap_or(path)
}

/// Where the config is read from without `--config` (upstream's path).
const DEFAULT_CONFIG_PATH: &str = "/etc/kubeedge/config/edgecore.yaml";

/// The node's internal IP: `modules.edged.nodeIP`, or the address this host reaches the cloud
/// from.
fn node_ip(cfg: &EdgeCoreConfig) -> String {
    let e = &cfg.modules.edged;
    if e.node_ip.is_empty() { detect_node_ip(&cfg.modules.edge_hub.websocket.server) } else { e.node_ip.clone() }
}

/// Edged's kubelet-style server, `tailoredKubeletConfig.address:readOnlyPort`.
fn kubelet_addr(cfg: &EdgeCoreConfig) -> Result<Option<std::net::SocketAddr>, SetupError> {
    let k = &cfg.modules.edged.tailored_kubelet_config;
    if k.read_only_port <= 0 {
        return Ok(None);
    }
    let ip: std::net::IpAddr =
        k.address.parse().map_err(|source| SetupError::Address { address: k.address.clone(), source })?;
    let port = u16::try_from(k.read_only_port).map_err(|_| SetupError::ReadOnlyPort)?;
    Ok(Some(std::net::SocketAddr::new(ip, port)))
}

/// The EdgeStream module: it needs Edged's server to replay requests to.
fn edge_stream_module(cfg: &EdgeCoreConfig) -> Result<edgecore::edgestream::EdgeStreamModule, SetupError> {
    let s = &cfg.modules.edge_stream;
    let kubelet = kubelet_addr(cfg)?.ok_or(SetupError::EdgeStreamWithoutServer)?;
    // readDeadline is not used: upstream's edge has no read deadline either (session::SILENCE).
    let (handshake_timeout, _, write_deadline) = s.timeouts();
    let dial = edgecore::edgestream::DialSettings {
        server: s.server.clone(),
        ca: s.tls_tunnel_ca_file.clone().into(),
        cert: s.tls_tunnel_cert_file.clone().into(),
        key: s.tls_tunnel_private_key_file.clone().into(),
        node: cfg.modules.edged.hostname_override.clone(),
        node_ip: node_ip(cfg),
        handshake_timeout,
    };
    Ok(edgecore::edgestream::EdgeStreamModule::new(dial, kubelet, write_deadline))
}

/// The Edged module as edgecore.yaml describes it.
fn edged_module(cfg: &EdgeCoreConfig) -> Result<EdgedModule, SetupError> {
    let e = &cfg.modules.edged;
    let k = &e.tailored_kubelet_config;
    let at = "modules.edged.tailoredKubeletConfig";
    let socket = k
        .container_runtime_endpoint
        .strip_prefix("unix://")
        .filter(|p| p.starts_with('/'))
        .ok_or_else(|| SetupError::RuntimeEndpoint(k.container_runtime_endpoint.clone()))?;
    let dur = |key: &'static str, d: &kubeedge_config::GoDuration| {
        d.to_std().map_err(|source| SetupError::Duration { path: format!("{at}.{key}"), source })
    };
    let node_ip = node_ip(cfg);
    let spec = NodeSpec {
        name: e.hostname_override.clone(),
        node_ip: node_ip.clone(),
        labels: e.node_labels.clone(),
        max_pods: k.max_pods,
        runtime_version: "remote://unknown".into(),
        schedulable: e.register_schedulable,
    };
    let timings = Timings {
        lease_duration: Duration::from_secs(u64::try_from(k.node_lease_duration_seconds.max(1)).unwrap_or(40)),
        status_report: dur("nodeStatusReportFrequency", &k.node_status_report_frequency)?,
        ..Timings::default()
    };
    let gc = GcPolicy {
        min_age: e
            .minimum_gc_age
            .to_std()
            .map_err(|source| SetupError::Duration { path: "modules.edged.minimumGCAge".into(), source })?,
        max_per_container: e.max_per_pod_container_count,
        max_total: e.max_container_count,
    };
    let root = std::path::Path::new(&e.root_directory);
    let mut module = EdgedModule::connecting(
        socket.into(),
        k.pod_logs_dir.clone().into(),
        root.join("pods"),
        None,
        node_ip,
        SYNC_EVERY,
    )
    .with_node(spec, e.register_node_namespace.clone(), timings)
    .with_gc(gc, edgecore::edged::module::GC_EVERY);
    if !k.static_pod_path.is_empty() {
        let every = dur("fileCheckFrequency", &k.file_check_frequency)?.max(Duration::from_secs(1));
        module = module.with_static_pods(k.static_pod_path.clone().into(), every, e.hostname_override.clone());
    }
    if let Some(addr) = kubelet_addr(cfg)? {
        module = module.with_server(addr);
    }
    Ok(module)
}

/// Why edgecore cannot build its modules from a config that validated. The messages name the
/// config key, as validation errors do.
#[derive(Debug, thiserror::Error)]
enum SetupError {
    #[error("database.dataSource: creating {}: {source}", dir.display())]
    CreateDatabaseDir { dir: std::path::PathBuf, source: std::io::Error },
    #[error("database.dataSource: opening {}: {source}", path.display())]
    OpenDatabase { path: std::path::PathBuf, source: kubeedge_metastore::Error },
    #[error("modules.edged.enable: Edged needs modules.metaManager (it reaches the cloud through it)")]
    EdgedWithoutMetaManager,
    #[error(
        "modules.eventBus.enable, modules.deviceTwin.enable: they need modules.metaManager (its database holds their tables)"
    )]
    DevicesWithoutMetaManager,
    #[error("modules.serviceBus.enable: ServiceBus needs modules.metaManager (its database holds target_urls)")]
    ServiceBusWithoutMetaManager,
    #[error(
        "modules.taskManager.enable: the task manager needs modules.metaManager (its database holds the task records and pull secrets)"
    )]
    TaskManagerWithoutMetaManager,

    #[error("modules.edged.tailoredKubeletConfig.containerRuntimeEndpoint: must be unix:///path/to.sock, got {0:?}")]
    RuntimeEndpoint(String),
    #[error("{path}: {source}")]
    Duration { path: String, source: kubeedge_config::DurationError },
    #[error("modules.edged.tailoredKubeletConfig.address: {address:?} is not an IP: {source}")]
    Address { address: String, source: std::net::AddrParseError },
    #[error("modules.edged.tailoredKubeletConfig.readOnlyPort: out of range")]
    ReadOnlyPort,
    #[error(
        "modules.edgeStream: needs Edged's server (modules.edged.tailoredKubeletConfig.readOnlyPort > 0) to replay requests to"
    )]
    EdgeStreamWithoutServer,
}

/// How often Edged relists the runtime (kubelet's PLEG period).
const SYNC_EVERY: Duration = Duration::from_secs(1);

/// The address this host uses to reach CloudHub (`host:port`): the node IP when `nodeIP` is
/// not set. Nothing is sent; a UDP socket is only connected. Loopback when it cannot be found.
fn detect_node_ip(server: &str) -> String {
    let probe = || -> std::io::Result<std::net::IpAddr> {
        let target = std::net::ToSocketAddrs::to_socket_addrs(server)?
            .next()
            .ok_or_else(|| std::io::Error::other("no address"))?;
        let bind = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        let sock = std::net::UdpSocket::bind(bind)?;
        sock.connect(target)?;
        Ok(sock.local_addr()?.ip())
    };
    probe().map(|ip| ip.to_string()).unwrap_or_else(|_| "127.0.0.1".to_owned())
}
