//! Config loading ([`kubeedge_config::load`], what `cloudcore --config` and
//! `edgecore --config` run on the file's text) into [`CloudCoreConfig`] and
//! [`EdgeCoreConfig`], then `validate()` and the accessors the daemons call.
//!
//! The readers have no size cap (a config file is read whole by `load_file`); libFuzzer's
//! `-max_len` bounds the input. Asserts, beyond "no panic" (and no blow-up: YAML aliases must
//! not expand without bound):
//! - a loaded config prints (`--defaultconfig`'s `to_yaml`) to YAML that loads again with no
//!   unknown keys, and printing is stable (print ∘ load ∘ print = print), so a file the daemon
//!   wrote is a file it reads back unchanged;
//! - `validate()` gives the same verdict on the reloaded config.

#![no_main]

use kubeedge_config::cloudcore::CloudCoreConfig;
use kubeedge_config::edgecore::EdgeCoreConfig;
use kubeedge_config::load;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(loaded) = load::<CloudCoreConfig>(text) {
        let cfg = loaded.config;
        let verdict = cfg.validate().map_err(|e| e.to_string());
        let _ = cfg.modules();
        let _ = cfg.common_config.shutdown_grace_period();
        let hub = &cfg.modules.cloud_hub;
        let _ = (hub.keepalive_interval(), hub.write_timeout());
        let _ = (hub.edge_cert_signing_duration(), hub.token_refresh_duration());
        let _ = cfg.modules.edge_controller.node_update_frequency();
        let _ = cfg.modules.router.rest_timeout();
        let mut adjusted = cfg.clone();
        adjusted.adjust_for_node_limit();

        let printed = cfg.to_yaml();
        let again = load::<CloudCoreConfig>(&printed)
            .unwrap_or_else(|e| panic!("printed cloudcore config does not load: {e}\n{printed}"));
        assert!(again.unknown_keys.is_empty(), "unknown keys {:?} in\n{printed}", again.unknown_keys);
        assert_eq!(again.config.to_yaml(), printed, "printing is not stable");
        assert_eq!(again.config.validate().map_err(|e| e.to_string()), verdict);
    }
    if let Ok(loaded) = load::<EdgeCoreConfig>(text) {
        let cfg = loaded.config;
        let verdict = cfg.validate().map_err(|e| e.to_string());
        let _ = cfg.modules();
        let _ = cfg.common_config.shutdown_grace_period();
        let m = &cfg.modules;
        let _ = (m.edge_hub.heartbeat(), m.edge_hub.websocket.timeouts(), m.edge_hub.quic.timeouts());
        let _ = (m.meta_manager.remote_query_timeout(), m.service_bus.timeout(), m.edge_stream.timeouts());
        let kubelet = &m.edged.tailored_kubelet_config;
        let _ = (kubelet.node_status_update_frequency(), kubelet.node_status_report_frequency());
        let _ = kubelet.node_lease_duration();

        let printed = cfg.to_yaml();
        let again = load::<EdgeCoreConfig>(&printed)
            .unwrap_or_else(|e| panic!("printed edgecore config does not load: {e}\n{printed}"));
        assert!(again.unknown_keys.is_empty(), "unknown keys {:?} in\n{printed}", again.unknown_keys);
        assert_eq!(again.config.to_yaml(), printed, "printing is not stable");
        assert_eq!(again.config.validate().map_err(|e| e.to_string()), verdict);
    }
});
