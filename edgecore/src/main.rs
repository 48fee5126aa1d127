//! edgecore: the edge side of KubeEdge. It runs on each edge host, keeps what the node needs in
//! SQLite, runs pods through CRI and device twins over MQTT, and talks to cloudcore over
//! EdgeHub.
//!
//! This binary is thin: flags, config and process lifecycle come from `kubeedge-daemon`; the
//! modules live in this crate's library. Modules not built yet are refused at start (and shown
//! disabled by `--defaultconfig`).

use std::process::ExitCode;

use edgecore::edgehub::module::EdgeHubModule;
use edgecore::metamanager::module::MetaManagerModule;
use kubeedge_beehive::RestartPolicy;
use kubeedge_config::edgecore::EdgeCoreConfig;
use kubeedge_daemon::Daemon;

/// Config keys (under `modules`) of the modules this build implements.
const AVAILABLE_MODULES: &[&str] = &["edgeHub", "metaManager"];

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
        let meta = &cfg.modules.meta_manager;
        if meta.enable {
            let path = std::path::Path::new(&cfg.database.data_source);
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("database.dataSource: creating {}: {e}", dir.display()))?;
            }
            let store = kubeedge_metastore::Store::open(path, Default::default())
                .map_err(|e| format!("database.dataSource: opening {}: {e}", path.display()))?;
            let server = meta.meta_server.enable.then(|| meta.meta_server.clone());
            let node = cfg.modules.edged.hostname_override.clone();
            let module = MetaManagerModule::new(store, node, meta.remote_query_timeout(), server);
            registry.register(Box::new(module)).map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}
