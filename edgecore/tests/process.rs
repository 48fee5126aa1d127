//! The real edgecore binary: flags, config errors, monitor endpoints, signals.

use std::path::Path;

use kubeedge_testkit::daemon::{refuses_config, serves_and_stops_on, test_config};
use kubeedge_testkit::run;

const BIN: &str = env!("CARGO_BIN_EXE_edgecore");

fn bin() -> &'static Path {
    Path::new(BIN)
}

#[test]
fn serves_monitor_endpoints_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(bin(), dir.path(), "edgecore");
    serves_and_stops_on(bin(), &cfg, "edgecore", "TERM");
}

#[test]
fn stops_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(bin(), dir.path(), "edgecore");
    serves_and_stops_on(bin(), &cfg, "edgecore", "INT");
}

#[test]
fn bad_config_exits_64_listing_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "apiVersion: edgecore.config.kubeedge.io/v1alpha2\nkind: EdgeKore\ncommonConfig:\n  monitorServer:\n    bindAddress: not-an-address\n  logging:\n    format: xml\nmodules:\n  edged:\n    enable: false\n  edgeHub:\n    enable: false\n  eventBus:\n    enable: false\n  metaManager:\n    enable: false\n  deviceTwin:\n    enable: false\n";
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
    refuses_config(bin(), dir.path(), "modules:\n  edgeHub:\n    heartbeat: lots\n", &["heartbeat"]);
    refuses_config(bin(), dir.path(), "modules: [\n", &["invalid config"]);
    refuses_config(bin(), dir.path(), "", &["empty"]);
}

#[test]
fn modules_not_built_yet_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    // Upstream's own default config enables edged, metaManager, eventBus and more.
    let upstream = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/config/tests/fixtures/upstream-edgecore.yaml"),
    )
    .unwrap();
    refuses_config(bin(), dir.path(), &upstream, &["metaManager", "not available in this build yet"]);
}

#[test]
fn version_defaultconfig_and_minconfig() {
    let (status, out, _) = run(bin(), &["--version"]);
    assert!(status.success());
    assert!(out.starts_with(&format!("edgecore {}", env!("CARGO_PKG_VERSION"))), "{out}");

    let (status, out, _) = run(bin(), &["--defaultconfig"]);
    assert!(status.success());
    assert!(out.contains("apiVersion: edgecore.config.kubeedge.io/v1alpha2"), "{out}");
    assert!(out.contains("bindAddress: 127.0.0.1:9092"), "{out}");

    // The minimal config loads and starts (modules not built yet are switched off).
    let dir = tempfile::tempdir().unwrap();
    let (status, min, _) = run(bin(), &["--minconfig"]);
    assert!(status.success());
    let min = kubeedge_testkit::set_yaml_line(&min, "bindAddress", "127.0.0.1:0");
    // Alone here, the link module would have no peer: the minimal config is checked without it.
    let min = kubeedge_testkit::set_yaml_path(&min, &["modules", "edgeHub", "enable"], "false");
    let path = dir.path().join("min.yaml");
    std::fs::write(&path, min).unwrap();
    serves_and_stops_on(bin(), &path, "edgecore", "TERM");
}
