//! The real cloudcore binary: flags, config errors, monitor endpoints, signals (the scenarios are
//! shared with the other daemon, in kubeedge-testkit).

use std::path::Path;

use kubeedge_testkit::daemon::Spec;

fn spec() -> Spec {
    Spec {
        bin: env!("CARGO_BIN_EXE_cloudcore"),
        name: "cloudcore",
        api_version: "cloudcore.config.kubeedge.io/v1alpha1",
        monitor_default: "127.0.0.1:9091",
        link_module: "cloudHub",
        numeric_key: "nodeLimit",
        // Every module of upstream's cloudcore config is built.
        unbuilt_module: "",
        upstream_config: Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../crates/config/tests/fixtures/upstream-cloudcore.yaml"),
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

#[test]
fn version_defaultconfig_and_minconfig() {
    spec().version_defaultconfig_and_minconfig();
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_cloudcore"));
    let cfg = kubeedge_testkit::daemon::test_config(bin, dir.path(), "cloudcore");
    let yaml = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, kubeedge_testkit::set_yaml_line(&yaml, "format", "json")).unwrap();
    let mut p = kubeedge_testkit::Process::spawn(bin, &["--config", cfg.to_str().unwrap()]).unwrap();
    let line = p.wait_for_line("Monitor server listening");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["level"], "INFO");
    assert!(v["address"].as_str().unwrap().starts_with("127.0.0.1:"), "{v}");
    p.signal("TERM");
    assert!(p.wait_exit(kubeedge_testkit::patience()).unwrap().success());
    for line in p.log().lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
}

/// Issue #22 item 3: a port in use is a start-up error naming it (exit 1), not CloudHub
/// failing after start.
#[test]
fn a_taken_cloudhub_port_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_cloudcore"));
    let cfg = kubeedge_testkit::daemon::test_config(bin, dir.path(), "cloudcore");
    let base = std::fs::read_to_string(&cfg).unwrap();
    let yaml = |port: u16| {
        let port = port.to_string();
        let mut yaml = base.clone();
        for (path, value) in [
            (&["modules", "cloudHub", "enable"][..], "true"),
            (&["modules", "cloudHub", "https", "enable"][..], "false"),
            (&["modules", "cloudHub", "websocket", "address"][..], "127.0.0.1"),
            (&["modules", "cloudHub", "websocket", "port"][..], port.as_str()),
        ] {
            yaml = kubeedge_testkit::set_yaml_path(&yaml, path, value);
        }
        yaml
    };
    kubeedge_testkit::daemon::refuses_a_taken_port(bin, dir.path(), yaml, "modules.cloudHub.websocket.port");
}

/// The Router's REST port in use: a start-up error naming it.
#[test]
fn a_taken_router_port_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_cloudcore"));
    let cfg = kubeedge_testkit::daemon::test_config(bin, dir.path(), "cloudcore");
    let base = std::fs::read_to_string(&cfg).unwrap();
    let (ws, https) = (kubeedge_testkit::free_port().to_string(), kubeedge_testkit::free_port().to_string());
    let yaml = |port: u16| {
        let port = port.to_string();
        let mut yaml = base.clone();
        for (path, value) in [
            (&["modules", "cloudHub", "enable"][..], "true"),
            (&["modules", "cloudHub", "websocket", "address"][..], "127.0.0.1"),
            (&["modules", "cloudHub", "websocket", "port"][..], ws.as_str()),
            (&["modules", "cloudHub", "https", "address"][..], "127.0.0.1"),
            (&["modules", "cloudHub", "https", "port"][..], https.as_str()),
            (&["modules", "router", "enable"][..], "true"),
            (&["modules", "router", "address"][..], "127.0.0.1"),
            (&["modules", "router", "port"][..], port.as_str()),
            (&["modules", "router", "allowUnauthenticated"][..], "true"),
        ] {
            yaml = kubeedge_testkit::set_yaml_path(&yaml, path, value);
        }
        yaml
    };
    kubeedge_testkit::daemon::refuses_a_taken_port(bin, dir.path(), yaml, "modules.router.port");
}
