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
        unbuilt_module: "deviceTwin",
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

#[test]
fn modules_not_built_yet_are_refused_by_name() {
    spec().refuses_unbuilt_modules_by_name();
}

#[test]
fn version_defaultconfig_and_minconfig() {
    spec().version_defaultconfig_and_minconfig();
}
