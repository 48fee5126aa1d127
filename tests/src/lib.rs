//! The harness of the tests that span both daemons (`tests/e2e/`): apiserver-lite in-process
//! and a cloudcore process on loopback, and what they poll.

use std::path::Path;

pub mod httpapp;
pub mod measure;
pub mod netstreams;
pub mod registry;

use kubeedge_testkit::link::{self, Cloud};
use kubeedge_testkit::{Process, free_port, http_get, workspace_bin};

/// CloudHub's `connected_nodes` gauge from the monitor server at `addr`.
pub fn connected_nodes(addr: std::net::SocketAddr) -> Option<i64> {
    let (_, body) = http_get(addr, "/metrics").ok()?;
    body.lines().find_map(|l| l.strip_prefix("KubeEdge_CloudHub_connected_nodes ")).and_then(|v| v.trim().parse().ok())
}

pub use kubeedge_testkit::{eventually as wait_until, until};

/// apiserver-lite in-process and a cloudcore process on loopback.
pub struct CloudSide {
    /// The runtime apiserver-lite runs on.
    pub rt: tokio::runtime::Runtime,
    /// apiserver-lite.
    pub api: apiserver_lite::ApiServer,
    /// The cloudcore process.
    pub proc: Process,
    /// cloudcore's monitor server (`/metrics`, `/readyz`).
    pub monitor: std::net::SocketAddr,
    /// The kubeconfig file of apiserver-lite.
    pub kubeconfig: std::path::PathBuf,
    /// CloudHub's WebSocket port.
    pub ws_port: u16,
    /// CloudHub's HTTPS (join API) port.
    pub https_port: u16,
}

impl CloudSide {
    /// Starts both, cloudcore's config and state in `dir`, and waits until CloudHub listens.
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[])
    }

    /// [`CloudSide::start`] with cloudcore.yaml settings (`path` → YAML value) applied.
    pub fn start_with(dir: &Path, settings: &[(&[&str], String)]) -> Self {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let api = rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            apiserver_lite::ApiServer::start(l, Default::default()).await.unwrap()
        });
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
        let (ws_port, https_port) = (free_port(), free_port());
        let bin = workspace_bin("cloudcore");
        let cfg = link::cloudcore(&bin, dir, &Cloud { kubeconfig: &kubeconfig, ip: "127.0.0.1", ws_port, https_port });
        let mut yaml = std::fs::read_to_string(&cfg).unwrap();
        for (path, value) in settings {
            yaml = kubeedge_testkit::set_yaml_path(&yaml, path, value);
        }
        std::fs::write(&cfg, yaml).unwrap();
        // Debugging aid: `KE_CLOUD_LOG=info,cloudcore=debug cargo test …` sets cloudcore's log level.
        if let Ok(level) = std::env::var("KE_CLOUD_LOG") {
            let yaml = std::fs::read_to_string(&cfg).unwrap();
            let yaml =
                kubeedge_testkit::set_yaml_path(&yaml, &["commonConfig", "logging", "level"], &format!("\"{level}\""));
            std::fs::write(&cfg, yaml).unwrap();
        }
        let mut proc = Process::spawn(&bin, &["--config", cfg.to_str().unwrap()]).unwrap();
        let monitor = proc.monitor_addr();
        proc.wait_for_line("CloudHub WebSocket server listening");
        Self { rt, api, proc, monitor, kubeconfig, ws_port, https_port }
    }

    /// What an edge config needs to reach this cloud.
    pub fn link(&self) -> Cloud<'_> {
        Cloud { kubeconfig: &self.kubeconfig, ip: "127.0.0.1", ws_port: self.ws_port, https_port: self.https_port }
    }

    /// A kube client of the API server.
    pub fn client(&self) -> kube::Client {
        self.rt.block_on(async {
            let kc = kube::config::Kubeconfig::from_yaml(&self.api.kubeconfig()).unwrap();
            kube::Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap())
                .unwrap()
        })
    }

    /// The token, as `keadm gettoken` reads it.
    pub fn token(&self) -> String {
        self.rt.block_on(async {
            use k8s_openapi::api::core::v1::Secret;
            let kc = kube::config::Kubeconfig::from_yaml(&self.api.kubeconfig()).unwrap();
            let client =
                kube::Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap())
                    .unwrap();
            let secrets: kube::Api<Secret> = kube::Api::namespaced(client, "kubeedge");
            let s = secrets.get("tokensecret").await.unwrap();
            String::from_utf8(s.data.unwrap()["tokendata"].0.clone()).unwrap()
        })
    }

    /// Stops cloudcore (SIGTERM; it must exit 0) and apiserver-lite.
    pub fn stop(mut self) {
        self.proc.signal("TERM");
        let status = self.proc.wait_exit(kubeedge_testkit::patience());
        assert!(status.is_some_and(|s| s.success()), "{}", self.proc.log());
        self.rt.block_on(self.api.shutdown());
    }
}

/// The `devices.kubeedge.io/v1beta1` resource of `kind` (e.g. `Device`, `devices`).
pub fn device_resource(kind: &str, plural: &str) -> kube::api::ApiResource {
    kube::api::ApiResource {
        group: "devices.kubeedge.io".into(),
        version: "v1beta1".into(),
        api_version: "devices.kubeedge.io/v1beta1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// The `default` namespace's DeviceModels and Devices, as dynamic objects.
pub fn device_apis(
    client: &kube::Client,
) -> (kube::Api<kube::api::DynamicObject>, kube::Api<kube::api::DynamicObject>) {
    let models = kube::Api::namespaced_with(client.clone(), "default", &device_resource("DeviceModel", "devicemodels"));
    let devices = kube::Api::namespaced_with(client.clone(), "default", &device_resource("Device", "devices"));
    (models, devices)
}

pub use kubeedge_testkit::Mosquitto;
