//! cloudcore: the cloud side of KubeEdge. It runs next to the Kubernetes API server and serves
//! edge nodes (CloudHub), syncing pods, configmaps, secrets and devices to them.
//!
//! This binary is thin: flags, config and process lifecycle come from `kubeedge-daemon`; the
//! modules live in this crate's library. Modules not built yet are refused at start (and shown
//! disabled by `--defaultconfig`).

use std::process::ExitCode;

use cloudcore::authz::AuthzMetrics;
use cloudcore::cloudhub::module::CloudHubModule;
use cloudcore::delivery::syncs::Syncs;
use cloudcore::delivery::view::View;
use cloudcore::devicecontroller::module::DeviceControllerModule;
use cloudcore::dynamiccontroller::DynamicControllerModule;
use cloudcore::edgecontroller::module::EdgeControllerModule;
use cloudcore::synccontroller::SyncControllerModule;
use kubeedge_beehive::RestartPolicy;
use kubeedge_config::cloudcore::CloudCoreConfig;
use kubeedge_daemon::Daemon;
use kubeedge_model::constants::module;

/// Config keys (under `modules`) of the modules this build implements.
const AVAILABLE_MODULES: &[&str] = &[
    "cloudHub",
    "edgeController",
    "deviceController",
    "syncController",
    "dynamicController",
    "cloudStream",
    "iptablesManager",
    "router",
    "taskManager",
];

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: kubeedge_malloc::MiMalloc = kubeedge_malloc::MiMalloc;

fn main() -> ExitCode {
    let daemon = Daemon {
        name: "cloudcore",
        default_config_path: "/etc/kubeedge/config/cloudcore.yaml",
        available_modules: AVAILABLE_MODULES,
        // Upstream's cloud modules have no restart policy; ours restart with backoff on failure.
        restart_policy: RestartPolicy::default,
    };
    daemon.main::<CloudCoreConfig>(|cfg, registry, metrics| {
        let hub = &cfg.modules.cloud_hub;
        // What edges may have in flight: CloudHub admits, the controllers report each done.
        let mut admission = None;
        // What nodes acknowledged: CloudHub's sessions report it to SyncController.
        let (ack_feed, ack_inbox) = cloudcore::delivery::acks::channel();
        let (ec, sc) = (&cfg.modules.edge_controller, &cfg.modules.sync_controller);
        let rt = &cfg.modules.router;
        if rt.enable && !hub.enable {
            return Err("modules.router needs modules.cloudHub: it reaches edges through CloudHub's sessions".into());
        }
        let tm = &cfg.modules.task_manager;
        if tm.enable && !hub.enable {
            return Err(
                "modules.taskManager needs modules.cloudHub: it reaches edges through CloudHub's sessions".into()
            );
        }
        if hub.enable {
            let mut module = CloudHubModule::new(hub.clone(), cfg.kube_api_config.clone(), Some(metrics.registry()))
                .map_err(|e| e.to_string())?;
            if ec.enable && sc.enable {
                module = module.with_acks(ack_feed);
            }
            admission = Some(module.admission());
            if rt.enable {
                let links = cloudcore::router::Links::new(module.links());
                let router = cloudcore::router::RouterModule::new(
                    rt.clone(),
                    cfg.kube_api_config.clone(),
                    links,
                    Some(metrics.registry()),
                )
                .map_err(|e| e.to_string())?;
                registry.register(Box::new(router)).map_err(|e| e.to_string())?;
            }
            if tm.enable {
                let links = cloudcore::router::Links::new(module.links());
                let tasks = cloudcore::taskmanager::TaskManagerModule::new(
                    cfg.kube_api_config.clone(),
                    links,
                    Some(metrics.registry()),
                )
                .map_err(|e| e.to_string())?;
                registry.register(Box::new(tasks)).map_err(|e| e.to_string())?;
            }
            registry.register(Box::new(module)).map_err(|e| e.to_string())?;
        }
        let completion = |group: &'static str| admission.as_ref().map(|a| a.completion(group));
        // One refusal counter for every module that authorizes edge requests.
        if cfg.modules.cloud_stream.enable {
            let module = cloudcore::cloudstream::CloudStreamModule::new(
                cfg.modules.cloud_stream.clone(),
                hub.clone(),
                cfg.kube_api_config.clone(),
                cloudcore::cloudstream::metrics::StreamMetrics::register(metrics.registry())
                    .map_err(|e| e.to_string())?,
            )
            // Each replica's own address (the chart passes status.podIP): its tunnel port record.
            .with_own_ip(std::env::var("POD_IP").ok());
            registry.register(Box::new(module)).map_err(|e| e.to_string())?;
        }
        // Mode `external`: the rules are another process's job (upstream's DaemonSet).
        let im = &cfg.modules.iptables_manager;
        if im.enable && im.mode == "internal" {
            let module = cloudcore::iptables::IptablesManagerModule::new(
                cfg.kube_api_config.clone(),
                cfg.modules.cloud_stream.stream_port,
            );
            registry.register(Box::new(module)).map_err(|e| e.to_string())?;
        }
        let authz_metrics = Some(AuthzMetrics::register(metrics.registry()).map_err(|e| e.to_string())?);
        // DynamicController authorizes against EdgeController's view of which pods use what;
        // without EdgeController the view stays empty and edges read no secrets or configmaps.
        let mut view = View::default();
        if sc.enable && !ec.enable {
            return Err("modules.syncController needs modules.edgeController: it reconciles edges against \
                        EdgeController's view"
                .into());
        }
        let syncs = (ec.enable && sc.enable).then(Syncs::default);
        // DeviceController keeps the device view; SyncController reconciles edges against it
        // too, so devices reach a node that was offline as pods do.
        let mut devices = None;
        let dc = &cfg.modules.device_controller;
        if dc.enable {
            let module = DeviceControllerModule::new(cfg.kube_api_config.clone(), dc.clone(), syncs.clone())
                .with_authz_metrics(authz_metrics.clone())
                .with_completion(completion(module::DEVICECONTROLLER));
            devices = Some(module.devices());
            registry.register(Box::new(module)).map_err(|e| e.to_string())?;
        }
        if ec.enable {
            let module = EdgeControllerModule::new(cfg.kube_api_config.clone(), syncs.clone())
                .with_authz_metrics(authz_metrics.clone())
                .with_completion(completion(module::EDGECONTROLLER));
            view = module.view();
            registry.register(Box::new(module)).map_err(|e| e.to_string())?;
            if let Some(syncs) = syncs {
                let inventory = cloudcore::synccontroller::InventoryMetrics::register(metrics.registry())
                    .map_err(|e| e.to_string())?;
                let mut module = SyncControllerModule::new(cfg.kube_api_config.clone(), view.clone(), syncs)
                    .with_metrics(inventory)
                    .with_acks(ack_inbox);
                if let Some(d) = devices {
                    module = module.with_devices(d);
                }
                registry.register(Box::new(module)).map_err(|e| e.to_string())?;
            }
        }
        if cfg.modules.dynamic_controller.enable {
            let module = DynamicControllerModule::new(cfg.kube_api_config.clone(), view, authz_metrics)
                .with_completion(completion(module::DYNAMICCONTROLLER));
            registry.register(Box::new(module)).map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}
