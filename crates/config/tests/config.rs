//! Upstream compatibility, round-trips and error reporting of kubeedge-config.

use kubeedge_config::cloudcore::CloudCoreConfig;
use kubeedge_config::edgecore::EdgeCoreConfig;
use kubeedge_config::{Error, HostInfo, load, load_file};
use yaml_serde::Value;

const UPSTREAM_CLOUDCORE: &str = include_str!("fixtures/upstream-cloudcore.yaml");
const UPSTREAM_EDGECORE: &str = include_str!("fixtures/upstream-edgecore.yaml");
const LEGACY_EDGECORE: &str = include_str!("fixtures/legacy-v1.15-edgecore.yaml");

fn cloud_host() -> HostInfo {
    HostInfo::new("cloud-node", "192.168.1.10")
}

fn edge_host() -> HostInfo {
    HostInfo::new("edge-node-1", "192.168.1.20")
}

fn tree(yaml: &str) -> Value {
    yaml_serde::from_str(yaml).expect("test YAML parses")
}

fn remove(v: &mut Value, path: &[&str]) {
    let Value::Mapping(m) = v else { return };
    match path {
        [] => {}
        [last] => {
            m.remove(*last);
        }
        [first, rest @ ..] => {
            if let Some(child) = m.get_mut(*first) {
                remove(child, rest);
            }
        }
    }
}

/// Our YAML as a tree without the extension keys upstream does not have.
fn cloud_tree_without_extensions(c: &CloudCoreConfig) -> Value {
    let mut v = tree(&c.to_yaml());
    remove(&mut v, &["commonConfig", "logging"]);
    remove(&mut v, &["commonConfig", "shutdownGracePeriod"]);
    remove(&mut v, &["modules", "cloudHub", "nodeIdentityCheck"]);
    remove(&mut v, &["modules", "cloudHub", "edgeMessages"]);
    v
}

fn edge_tree_without_extensions(c: &EdgeCoreConfig) -> Value {
    let mut v = tree(&c.to_yaml());
    remove(&mut v, &["commonConfig"]);
    v
}

#[test]
fn upstream_cloudcore_loads_validates_and_round_trips() {
    let loaded = load::<CloudCoreConfig>(UPSTREAM_CLOUDCORE).expect("fixture loads");
    assert!(loaded.unknown_keys.is_empty(), "unknown keys: {:?}", loaded.unknown_keys);
    loaded.config.validate().expect("fixture validates");
    assert_eq!(cloud_tree_without_extensions(&loaded.config), tree(UPSTREAM_CLOUDCORE));
}

#[test]
fn cloudcore_defaults_match_upstream_defaultconfig() {
    let mut ours = CloudCoreConfig::default_for(&cloud_host());
    // The one documented difference (docs/configuration.md): the stream tunnel is on.
    assert!(ours.modules.cloud_stream.enable);
    ours.modules.cloud_stream.enable = false;
    assert_eq!(cloud_tree_without_extensions(&ours), tree(UPSTREAM_CLOUDCORE));
    let loaded = load::<CloudCoreConfig>(UPSTREAM_CLOUDCORE).expect("fixture loads");
    assert_eq!(loaded.config, ours);
}

#[test]
fn upstream_edgecore_loads_validates_and_round_trips() {
    let loaded = load::<EdgeCoreConfig>(UPSTREAM_EDGECORE).expect("fixture loads");
    assert!(loaded.unknown_keys.is_empty(), "unknown keys: {:?}", loaded.unknown_keys);
    loaded.config.validate().expect("fixture validates");
    assert!(loaded.config.modules.edged.tailored_kubelet_config.other.is_empty());
    assert_eq!(edge_tree_without_extensions(&loaded.config), tree(UPSTREAM_EDGECORE));
}

#[test]
fn edgecore_defaults_match_upstream_defaultconfig() {
    let mut ours = EdgeCoreConfig::default_for(&edge_host());
    // The one documented difference (docs/configuration.md): the stream tunnel is on.
    assert!(ours.modules.edge_stream.enable);
    ours.modules.edge_stream.enable = false;
    assert_eq!(edge_tree_without_extensions(&ours), tree(UPSTREAM_EDGECORE));
    let loaded = load::<EdgeCoreConfig>(UPSTREAM_EDGECORE).expect("fixture loads");
    assert_eq!(loaded.config, ours);
}

#[test]
fn legacy_edgecore_loads_with_unknown_keys() {
    let loaded = load::<EdgeCoreConfig>(LEGACY_EDGECORE).expect("legacy file loads");
    let unknown = &loaded.unknown_keys;
    for key in [
        "modules.edgeMesh",
        "modules.edged.cgroupDriver",
        "modules.edged.dockerAddress",
        "modules.edged.runtimeType",
        "modules.edged.edgedMemoryCapacity",
        "modules.metaManager.podStatusSyncInterval",
    ] {
        assert!(unknown.iter().any(|k| k == key), "{key} not in {unknown:?}");
    }
    // Unknown kubelet keys are kept, not reported.
    assert!(!unknown.iter().any(|k| k.contains("tailoredKubeletConfig")), "{unknown:?}");
    let c = &loaded.config;
    let kubelet = &c.modules.edged.tailored_kubelet_config;
    assert_eq!(kubelet.other.get("kubeAPIQPS"), Some(&serde_json::json!(50)));
    // Known keys still load, omitted ones take defaults.
    assert_eq!(c.modules.edge_hub.token, "abcdef.0123456789abcdef");
    assert_eq!(c.modules.edged.node_ip, "192.168.1.20");
    assert_eq!(kubelet.node_status_update_frequency.as_str(), "10s");
    assert_eq!(c.common_config, Default::default());
    c.validate().expect("legacy file validates");
    // The kept kubelet key is written back out.
    assert!(c.to_yaml().contains("kubeAPIQPS: 50"));
}

#[test]
fn default_round_trips_through_yaml() {
    let cloud = CloudCoreConfig::default_for(&cloud_host());
    let back = load::<CloudCoreConfig>(&cloud.to_yaml()).expect("cloud yaml loads");
    assert!(back.unknown_keys.is_empty(), "{:?}", back.unknown_keys);
    assert_eq!(back.config, cloud);

    let plain = CloudCoreConfig::default();
    assert_eq!(load::<CloudCoreConfig>(&plain.to_yaml()).expect("loads").config, plain);

    let edge = EdgeCoreConfig::default();
    let back = load::<EdgeCoreConfig>(&edge.to_yaml()).expect("edge yaml loads");
    assert!(back.unknown_keys.is_empty(), "{:?}", back.unknown_keys);
    assert_eq!(back.config, edge);
    edge.validate().expect("edge default validates");
}

#[test]
fn default_cloudcore_requires_advertise_address() {
    let errs = CloudCoreConfig::default().validate().expect_err("no advertiseAddress");
    assert!(errs.has_path("modules.cloudHub.advertiseAddress"), "{errs}");
    assert_eq!(errs.errors().len(), 1, "{errs}");
    let mut c = CloudCoreConfig::default();
    c.modules.cloud_hub.enable = false;
    c.validate().expect("not required when cloudHub is disabled");
    CloudCoreConfig::default_for(&cloud_host()).validate().expect("valid with a host IP");
}

#[test]
fn minimal_configs_load_and_validate() {
    let cloud_min = CloudCoreConfig::minimal();
    let loaded = load::<CloudCoreConfig>(&cloud_min).expect("cloud minimal loads");
    assert!(loaded.unknown_keys.is_empty());
    loaded.config.validate().expect("cloud minimal validates");
    assert_eq!(loaded.config.modules.cloud_hub.node_limit, 1000);
    assert!(cloud_min.len() < CloudCoreConfig::default_for(&cloud_host()).to_yaml().len() / 2);
    assert!(!cloud_min.contains("edgeController"));

    let edge_min = EdgeCoreConfig::minimal_for(&edge_host());
    let loaded = load::<EdgeCoreConfig>(&edge_min).expect("edge minimal loads");
    assert!(loaded.unknown_keys.is_empty());
    loaded.config.validate().expect("edge minimal validates");
    // Keys absent from the minimal file take host-independent `Default`s: only the (disabled)
    // QUIC server address differs from the host-specific defaults.
    let mut expected = EdgeCoreConfig::default_for(&edge_host());
    expected.modules.edge_hub.quic.server = "127.0.0.1:10001".to_owned();
    assert_eq!(loaded.config, expected);
    assert!(!edge_min.contains("metaManager"));
    assert!(!edge_min.contains("quic"));
}

#[test]
fn unknown_keys_are_dotted_paths() {
    let yaml = "apiVersion: edgecore.config.kubeedge.io/v1alpha2\nkind: EdgeCore\n\
                modules:\n  edgeHub:\n    fooBar: 1\n    heartbeat: 20\nextraTop: true\n";
    let loaded = load::<EdgeCoreConfig>(yaml).expect("loads");
    assert_eq!(loaded.unknown_keys, vec!["modules.edgeHub.fooBar", "extraTop"]);
    assert_eq!(loaded.config.modules.edge_hub.heartbeat, 20);
    assert_eq!(loaded.config.modules.edge_hub.message_qps, 30);
}

#[test]
fn many_errors_are_all_listed() {
    let yaml = r#"
apiVersion: edgecore.config.kubeedge.io/v1alpha1
kind: EdgeCoreX
commonConfig:
  monitorServer:
    bindAddress: 0.0.0.0:9092
  logging:
    format: xml
  shutdownGracePeriod: 0
database:
  dataSource: ""
modules:
  edgeHub:
    heartbeat: 0
    messageQPS: -1
    projectID: ""
    httpServer: http://10.0.0.1:10002
    websocket:
      server: "10.0.0.1"
  eventBus:
    mqttMode: 3
    mqttQOS: 7
  edged:
    hostnameOverride: Bad_Name
    tailoredKubeletConfig:
      cgroupDriver: foo
      nodeStatusUpdateFrequency: ten seconds
"#;
    let loaded = load::<EdgeCoreConfig>(yaml).expect("loads: all problems are semantic");
    let errs = loaded.config.validate().expect_err("invalid");
    for path in [
        "apiVersion",
        "kind",
        "commonConfig.monitorServer.bindAddress",
        "commonConfig.logging.format",
        "commonConfig.shutdownGracePeriod",
        "database.dataSource",
        "modules.edgeHub.heartbeat",
        "modules.edgeHub.messageQPS",
        "modules.edgeHub.projectID",
        "modules.edgeHub.httpServer",
        "modules.edgeHub.websocket.server",
        "modules.eventBus.mqttMode",
        "modules.eventBus.mqttQOS",
        "modules.edged.hostnameOverride",
        "modules.edged.tailoredKubeletConfig.cgroupDriver",
        "modules.edged.tailoredKubeletConfig.nodeStatusUpdateFrequency",
    ] {
        assert!(errs.has_path(path), "{path} missing from:\n{errs}");
    }
    let text = errs.to_string();
    assert_eq!(text.lines().count(), errs.errors().len());
    assert!(text.contains("modules.edgeHub.heartbeat: must be > 0"), "{text}");
}

#[test]
fn many_cloud_errors_are_all_listed() {
    let yaml = r#"
apiVersion: cloudcore.config.kubeedge.io/v1alpha1
kind: CloudCore
commonConfig:
  monitorServer:
    bindAddress: localhost
  tunnelPort: 0
kubeAPIConfig:
  kubeConfig: relative/kubeconfig
modules:
  cloudHub:
    advertiseAddress: [not-an-ip]
    nodeLimit: 0
    tokenRefreshDuration: 0
    edgeCertSigningDuration: -1
    websocket:
      port: 70000
    unixsocket:
      address: /var/lib/kubeedge/kubeedge.sock
  edgeController:
    nodeUpdateFrequency: 0
  iptablesManager:
    mode: sideways
"#;
    let errs = load::<CloudCoreConfig>(yaml).expect("loads").config.validate().expect_err("invalid");
    for path in [
        "commonConfig.monitorServer.bindAddress",
        "commonConfig.tunnelPort",
        "kubeAPIConfig.kubeConfig",
        "modules.cloudHub.advertiseAddress.0",
        "modules.cloudHub.nodeLimit",
        "modules.cloudHub.tokenRefreshDuration",
        "modules.cloudHub.edgeCertSigningDuration",
        "modules.cloudHub.websocket.port",
        "modules.cloudHub.unixsocket.address",
        "modules.edgeController.nodeUpdateFrequency",
        "modules.iptablesManager.mode",
    ] {
        assert!(errs.has_path(path), "{path} missing from:\n{errs}");
    }
}

#[test]
fn wrong_type_names_field_and_line() {
    let yaml = "apiVersion: edgecore.config.kubeedge.io/v1alpha2\nkind: EdgeCore\nmodules:\n  edgeHub:\n    heartbeat: \"abc\"\n";
    let err = load::<EdgeCoreConfig>(yaml).expect_err("wrong type");
    let text = err.to_string();
    assert!(text.contains("modules.edgeHub.heartbeat"), "{text}");
    assert_eq!(err.line(), Some(5), "{text}");
    assert!(matches!(err, Error::Parse { .. }));
}

#[test]
fn malformed_yaml_is_an_error() {
    for bad in ["modules: [unclosed", "a: b: c", "kind: CloudCore\n  bad indent: 1\n", "\t- x"] {
        let err = load::<CloudCoreConfig>(bad).expect_err(bad);
        assert!(matches!(err, Error::Parse { .. } | Error::NotAMapping), "{bad:?}: {err:?}");
    }
}

#[test]
fn empty_and_non_mapping_files_are_errors() {
    for empty in ["", "   \n", "# only a comment\n", "~\n"] {
        assert!(matches!(load::<EdgeCoreConfig>(empty), Err(Error::Empty)), "{empty:?}");
    }
    assert!(matches!(load::<EdgeCoreConfig>("- a\n- b\n"), Err(Error::NotAMapping)));
    assert!(matches!(load::<EdgeCoreConfig>("just a string"), Err(Error::NotAMapping)));
}

#[test]
fn api_version_mismatch_is_validation_not_load_error() {
    let loaded = load::<CloudCoreConfig>(UPSTREAM_EDGECORE).expect("loads as cloudcore");
    let errs = loaded.config.validate().expect_err("wrong kind");
    assert!(errs.has_path("apiVersion") && errs.has_path("kind"), "{errs}");
    assert!(!loaded.unknown_keys.is_empty());
}

#[test]
fn partial_nested_structs_keep_other_defaults() {
    let yaml = "modules:\n  cloudHub:\n    advertiseAddress: [10.0.0.1]\n    quic:\n      enable: true\n";
    let c = load::<CloudCoreConfig>(yaml).expect("loads").config;
    assert!(c.modules.cloud_hub.quic.enable);
    assert_eq!(c.modules.cloud_hub.quic.port, 10001);
    assert_eq!(c.modules.cloud_hub.websocket.port, 10000);
    assert_eq!(c.common_config.monitor_server.bind_address, "127.0.0.1:9091");
    c.validate().expect("valid");
}

#[test]
fn extension_keys_load() {
    let yaml = "commonConfig:\n  logging:\n    level: debug\n    format: json\n  shutdownGracePeriod: 30\n  monitorServer:\n    enableProfiling: true\n";
    let e = load::<EdgeCoreConfig>(yaml).expect("loads");
    assert!(e.unknown_keys.is_empty());
    let cc = &e.config.common_config;
    assert_eq!((cc.logging.level.as_str(), cc.logging.format.as_str()), ("debug", "json"));
    assert_eq!(cc.shutdown_grace_period, 30);
    assert_eq!(cc.monitor_server.bind_address, "127.0.0.1:9092");
    assert!(cc.monitor_server.enable_profiling);

    let c = load::<CloudCoreConfig>(yaml).expect("loads").config;
    assert_eq!(c.common_config.tunnel_port, 10350);
    assert_eq!(c.common_config.shutdown_grace_period, 30);
}

#[test]
fn load_file_reads_and_reports_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edgecore.yaml");
    std::fs::write(&path, UPSTREAM_EDGECORE).expect("write");
    let loaded = load_file::<EdgeCoreConfig>(&path).expect("loads");
    assert_eq!(loaded.config.modules.edged.hostname_override, "edge-node-1");

    let missing = load_file::<EdgeCoreConfig>(dir.path().join("nope.yaml")).expect_err("missing");
    assert!(matches!(missing, Error::Read { .. }));
    assert!(missing.to_string().contains("nope.yaml"));
}

#[test]
fn edge_hub_transport_exclusivity() {
    let mut c = EdgeCoreConfig::default();
    c.modules.edge_hub.quic.enable = true;
    let errs = c.validate().expect_err("both transports");
    assert!(errs.has_path("modules.edgeHub.websocket.enable"), "{errs}");
    c.modules.edge_hub.websocket.enable = false;
    c.validate().expect("quic only");
}

#[test]
fn cloud_hub_edge_message_limits_default_and_validate() {
    let c = load::<CloudCoreConfig>(UPSTREAM_CLOUDCORE).expect("fixture loads").config;
    let limits = &c.modules.cloud_hub.edge_messages;
    // An upstream file gets EdgeHub's own pace and our bounds.
    assert_eq!((limits.message_qps, limits.message_burst, limits.node_in_flight), (30, 60, 64));
    assert_eq!((limits.max_message_bytes(), limits.in_flight_memory_bytes()), (8 << 20, 256 << 20));
    let yaml = UPSTREAM_CLOUDCORE.replace(
        "  cloudHub:\n",
        "  cloudHub:\n    edgeMessages:\n      messageQPS: 0\n      messageBurst: -1\n      nodeInFlight: 0\n      maxMessageMiB: 33\n      inFlightMemoryMiB: 4\n      deliveryWindow: 0\n",
    );
    let loaded = load::<CloudCoreConfig>(&yaml).expect("loads");
    assert!(loaded.unknown_keys.is_empty(), "{:?}", loaded.unknown_keys);
    let errs = loaded.config.validate().expect_err("invalid");
    for key in ["messageQPS", "messageBurst", "nodeInFlight", "maxMessageMiB", "inFlightMemoryMiB", "deliveryWindow"] {
        let path = format!("modules.cloudHub.edgeMessages.{key}");
        assert!(errs.has_path(&path), "{path} missing from:\n{errs}");
    }
}

#[test]
fn service_bus_tls_needs_both_files() {
    let mut c = EdgeCoreConfig::default();
    c.modules.service_bus.enable = true;
    c.validate().expect("plain HTTP");
    c.modules.service_bus.tls_cert_file = "/etc/kubeedge/certs/sb.crt".into();
    let errs = c.validate().expect_err("cert without key");
    assert!(errs.has_path("modules.serviceBus.tlsPrivateKeyFile"), "{errs}");
    c.modules.service_bus.tls_cert_file.clear();
    c.modules.service_bus.tls_private_key_file = "/etc/kubeedge/certs/sb.key".into();
    let errs = c.validate().expect_err("key without cert");
    assert!(errs.has_path("modules.serviceBus.tlsCertFile"), "{errs}");
    c.modules.service_bus.tls_cert_file = "/etc/kubeedge/certs/sb.crt".into();
    c.validate().expect("both");
    let yaml = yaml_serde::to_string(&c.modules.service_bus).unwrap();
    assert!(yaml.contains("tlsCertFile: /etc/kubeedge/certs/sb.crt"), "{yaml}");
    // Empty, they are left out, as upstream's `omitempty`.
    let default = yaml_serde::to_string(&kubeedge_config::edgecore::ServiceBus::default()).unwrap();
    assert!(!default.contains("tls"), "{default}");
}
