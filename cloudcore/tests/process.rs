//! The real cloudcore binary: flags, config errors, monitor endpoints, signals.

use std::path::Path;

use kubeedge_testkit::daemon::{refuses_config, serves_and_stops_on, test_config};
use kubeedge_testkit::run;

const BIN: &str = env!("CARGO_BIN_EXE_cloudcore");

fn bin() -> &'static Path {
    Path::new(BIN)
}

#[test]
fn serves_monitor_endpoints_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(bin(), dir.path(), "cloudcore");
    serves_and_stops_on(bin(), &cfg, "cloudcore", "TERM");
}

#[test]
fn stops_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(bin(), dir.path(), "cloudcore");
    serves_and_stops_on(bin(), &cfg, "cloudcore", "INT");
}

#[test]
fn bad_config_exits_64_listing_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "apiVersion: cloudcore.config.kubeedge.io/v1alpha1\nkind: CloudKore\ncommonConfig:\n  monitorServer:\n    bindAddress: not-an-address\n  logging:\n    format: xml\nmodules:\n  cloudHub:\n    enable: false\n  edgeController:\n    enable: false\n  deviceController:\n    enable: false\n  syncController:\n    enable: false\n  iptablesManager:\n    enable: false\n";
    refuses_config(
        bin(),
        dir.path(),
        yaml,
        &["kind", "commonConfig.monitorServer.bindAddress", "commonConfig.logging.format"],
    );
}

#[test]
fn wrong_types_and_broken_yaml_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    refuses_config(bin(), dir.path(), "modules:\n  cloudHub:\n    nodeLimit: lots\n", &["nodeLimit"]);
    refuses_config(bin(), dir.path(), "modules: [\n", &["invalid config"]);
    refuses_config(bin(), dir.path(), "", &["empty"]);
}

#[test]
fn modules_not_built_yet_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    // Upstream's own default config enables edgeController, deviceController and more.
    let upstream = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/config/tests/fixtures/upstream-cloudcore.yaml"),
    )
    .unwrap();
    refuses_config(bin(), dir.path(), &upstream, &["edgeController", "not available in this build yet"]);
}

#[test]
fn version_defaultconfig_and_minconfig() {
    let (status, out, _) = run(bin(), &["--version"]);
    assert!(status.success());
    assert!(out.starts_with(&format!("cloudcore {}", env!("CARGO_PKG_VERSION"))), "{out}");

    let (status, out, _) = run(bin(), &["--defaultconfig"]);
    assert!(status.success());
    assert!(out.contains("apiVersion: cloudcore.config.kubeedge.io/v1alpha1"), "{out}");
    assert!(out.contains("bindAddress: 127.0.0.1:9091"), "{out}");

    // The minimal config loads and starts (modules not built yet are switched off).
    let dir = tempfile::tempdir().unwrap();
    let (status, min, _) = run(bin(), &["--minconfig"]);
    assert!(status.success());
    let min = kubeedge_testkit::set_yaml_line(&min, "bindAddress", "127.0.0.1:0");
    // Alone here, the link module would have no peer: the minimal config is checked without it.
    let min = kubeedge_testkit::set_yaml_path(&min, &["modules", "cloudHub", "enable"], "false");
    let path = dir.path().join("min.yaml");
    std::fs::write(&path, min).unwrap();
    serves_and_stops_on(bin(), &path, "cloudcore", "TERM");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(bin(), dir.path(), "cloudcore");
    let yaml = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, kubeedge_testkit::set_yaml_line(&yaml, "format", "json")).unwrap();
    let mut p = kubeedge_testkit::Process::spawn(bin(), &["--config", cfg.to_str().unwrap()]).unwrap();
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
