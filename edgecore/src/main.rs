//! edgecore: the edge side of KubeEdge. It runs on each edge host, keeps what the node needs in
//! SQLite, runs pods through CRI and device twins over MQTT, and talks to cloudcore over
//! EdgeHub.
//!
//! This binary is thin: flags, config and process lifecycle come from `kubeedge-daemon`; the
//! modules live in this crate's library. Modules not built yet are refused at start (and shown
//! disabled by `--defaultconfig`).

use std::process::ExitCode;

use edgecore::edgehub::module::EdgeHubModule;
use kubeedge_beehive::RestartPolicy;
use kubeedge_config::edgecore::EdgeCoreConfig;
use kubeedge_daemon::Daemon;

/// Config keys (under `modules`) of the modules this build implements.
const AVAILABLE_MODULES: &[&str] = &["edgeHub"];

fn main() -> ExitCode {
    let daemon = Daemon {
        name: "edgecore",
        default_config_path: "/etc/kubeedge/config/edgecore.yaml",
        available_modules: AVAILABLE_MODULES,
        restart_policy: RestartPolicy::default,
    };
    daemon.main::<EdgeCoreConfig>(|cfg, registry, _metrics| {
        let hub = &cfg.modules.edge_hub;
        if hub.enable {
            let node = cfg.modules.edged.hostname_override.clone();
            registry.register(Box::new(EdgeHubModule::new(hub.clone(), node))).map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}
