//! The real edgecore binary: flags, config errors, monitor endpoints, signals (the scenarios are
//! shared with the other daemon, in kubeedge-testkit).

use std::path::Path;

use kubeedge_testkit::daemon::Spec;

fn spec() -> Spec {
    Spec {
        bin: env!("CARGO_BIN_EXE_edgecore"),
        name: "edgecore",
        api_version: "edgecore.config.kubeedge.io/v1alpha2",
        monitor_default: "127.0.0.1:9092",
        link_module: "edgeHub",
        numeric_key: "heartbeat",
        // Upstream enables every module edgecore has (eventBus and deviceTwin too); taskManager
        // is off there; dbTest is not built here.
        unbuilt_module: "dbTest",
        upstream_config: Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../crates/config/tests/fixtures/upstream-edgecore.yaml"),
    }
}

#[test]
fn serves_monitor_endpoints_and_stops_on_sigterm() {
    spec().serves_and_stops("TERM");
}

#[test]
fn stops_on_sigint() {
    spec().serves_and_stops("INT");
}

#[test]
fn bad_config_exits_64_listing_every_error() {
    spec().lists_every_config_error();
}

#[test]
fn wrong_types_and_broken_yaml_exit_64() {
    spec().refuses_wrong_types_and_broken_yaml();
}

/// Upstream's default edgecore.yaml (eventBus and deviceTwin enabled) is refused for no
/// module; a module not built yet (dbTest) is refused by name.
#[test]
fn upstream_defaults_refuse_no_module_and_unbuilt_modules_are_refused_by_name() {
    let s = spec();
    let dir = tempfile::tempdir().unwrap();
    let upstream = std::fs::read_to_string(&s.upstream_config).unwrap();
    // Upstream's file as it is, with only what needs this host changed: the database and the
    // DMI socket in the test's directory, a free monitor port, and the modules that need a peer
    // switched off.
    let mut y = kubeedge_testkit::set_yaml_path(
        &upstream,
        &["database", "dataSource"],
        &format!("\"{}\"", dir.path().join("edgecore.db").display()),
    );
    y = kubeedge_testkit::set_yaml_path(&y, &["commonConfig", "monitorServer", "bindAddress"], "127.0.0.1:0");
    let dmi = format!("\"{}\"", dir.path().display());
    y = kubeedge_testkit::set_yaml_path(&y, &["modules", "deviceTwin", "dmiSockPath"], &dmi);
    y = kubeedge_testkit::set_yaml_path(&y, &["commonConfig", "shutdownGracePeriod"], "5");
    for module in ["edgeHub", "edged"] {
        y = kubeedge_testkit::set_yaml_path(&y, &["modules", module, "enable"], "false");
    }
    assert!(y.contains("eventBus") && y.contains("deviceTwin"));
    let path = dir.path().join("upstream.yaml");
    std::fs::write(&path, &y).unwrap();
    kubeedge_testkit::daemon::serves_and_stops_on(Path::new(s.bin), &path, "edgecore", "TERM");
    s.refuses_unbuilt_modules_by_name();
}

#[test]
fn version_defaultconfig_and_minconfig() {
    spec().version_defaultconfig_and_minconfig();
}

/// Issue #12 item 4: plain-HTTP MetaServer off loopback is a config error naming the fields.
#[test]
fn metaserver_off_loopback_without_tls_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_edgecore"));
    let cfg = kubeedge_testkit::daemon::test_config(bin, dir.path(), "edgecore");
    let mut yaml = std::fs::read_to_string(&cfg).unwrap();
    for (path, value) in [
        (&["modules", "metaManager", "metaServer", "enable"][..], "true".to_owned()),
        (&["modules", "metaManager", "metaServer", "server"][..], "\"0.0.0.0:10550\"".to_owned()),
        (&["modules", "metaManager", "metaServer", "tlsCaFile"][..], format!("\"{}/none.crt\"", dir.path().display())),
    ] {
        yaml = kubeedge_testkit::set_yaml_path(&yaml, path, &value);
    }
    kubeedge_testkit::daemon::refuses_config(
        bin,
        dir.path(),
        &yaml,
        &["modules.metaManager.metaServer.tlsCaFile", "only over TLS with client certificates"],
    );
}

/// Issue #22 item 3: a port in use is a start-up error naming it (exit 1), not a module that
/// restarts over and over.
#[test]
fn a_taken_metaserver_port_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_edgecore"));
    let cfg = kubeedge_testkit::daemon::test_config(bin, dir.path(), "edgecore");
    let base = std::fs::read_to_string(&cfg).unwrap();
    let yaml = |port: u16| {
        let y = kubeedge_testkit::set_yaml_path(&base, &["modules", "metaManager", "metaServer", "enable"], "true");
        let server = format!("\"127.0.0.1:{port}\"");
        kubeedge_testkit::set_yaml_path(&y, &["modules", "metaManager", "metaServer", "server"], &server)
    };
    kubeedge_testkit::daemon::refuses_a_taken_port(bin, dir.path(), yaml, "modules.metaManager.metaServer.server");
}

/// ServiceBus binds its server at start: a taken port stops edgecore naming the key; a free
/// one serves, and edgecore stops cleanly.
#[test]
fn service_bus_binds_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_edgecore"));
    let cfg = kubeedge_testkit::daemon::test_config(bin, dir.path(), "edgecore");
    let base = std::fs::read_to_string(&cfg).unwrap();
    let yaml = |port: u16| {
        let y = kubeedge_testkit::set_yaml_path(&base, &["modules", "serviceBus", "enable"], "true");
        kubeedge_testkit::set_yaml_path(&y, &["modules", "serviceBus", "port"], &port.to_string())
    };
    kubeedge_testkit::daemon::refuses_a_taken_port(bin, dir.path(), yaml, "modules.serviceBus.port");
    let path = dir.path().join("servicebus.yaml");
    std::fs::write(&path, yaml(kubeedge_testkit::free_port())).unwrap();
    kubeedge_testkit::daemon::serves_and_stops_on(bin, &path, "edgecore", "TERM");
}

/// The task manager runs with MetaManager (its records and pull secrets are in its database)
/// and is refused at start without it, naming the key.
#[test]
fn task_manager_starts_with_metamanager_and_is_refused_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_edgecore"));
    let cfg = kubeedge_testkit::daemon::test_config(bin, dir.path(), "edgecore");
    let base = std::fs::read_to_string(&cfg).unwrap();
    let with_tm = kubeedge_testkit::set_yaml_path(&base, &["modules", "taskManager", "enable"], "true");
    std::fs::write(&cfg, &with_tm).unwrap();
    kubeedge_testkit::daemon::serves_and_stops_on(bin, &cfg, "edgecore", "TERM");

    let mut alone = kubeedge_testkit::set_yaml_path(&with_tm, &["modules", "metaManager", "enable"], "false");
    for module in ["eventBus", "deviceTwin", "serviceBus", "edged"] {
        alone = kubeedge_testkit::set_yaml_path(&alone, &["modules", module, "enable"], "false");
    }
    std::fs::write(&cfg, &alone).unwrap();
    let (status, out, err) = kubeedge_testkit::run(bin, &["--config", cfg.to_str().unwrap()]);
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(format!("{out}{err}").contains("modules.taskManager.enable"), "{out}{err}");
}
