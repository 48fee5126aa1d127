//! The cloud the keadm tests join: apiserver-lite in-process and a cloudcore process, both on
//! loopback with free ports.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use kubeedge_testkit::link::{self, Cloud as Link};
use kubeedge_testkit::{Process, free_port, workspace_bin};

/// apiserver-lite and cloudcore.
pub struct Cloud {
    /// The runtime apiserver-lite runs on.
    pub rt: tokio::runtime::Runtime,
    /// apiserver-lite.
    pub api: apiserver_lite::ApiServer,
    /// cloudcore.
    pub proc: Process,
    /// The kubeconfig of apiserver-lite.
    pub kubeconfig: PathBuf,
    /// CloudHub's WebSocket port.
    pub ws_port: u16,
    /// The join API's port.
    pub https_port: u16,
}

impl Cloud {
    /// Starts both (config and state in `dir`) and waits until CloudHub listens.
    pub fn start(dir: &Path) -> Self {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let api = rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            apiserver_lite::ApiServer::start(l, Default::default()).await.unwrap()
        });
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
        let (ws_port, https_port) = (free_port(), free_port());
        let bin = workspace_bin("cloudcore");
        let cfg = link::cloudcore(&bin, dir, &Link { kubeconfig: &kubeconfig, ip: "127.0.0.1", ws_port, https_port });
        let mut proc = Process::spawn(&bin, &["--config", cfg.to_str().unwrap()]).unwrap();
        proc.wait_for_line("CloudHub WebSocket server listening");
        proc.wait_for_line("CloudHub HTTPS server listening");
        Self { rt, api, proc, kubeconfig, ws_port, https_port }
    }

    /// A client of apiserver-lite.
    pub fn client(&self) -> kube::Client {
        self.rt.block_on(async {
            let kc = kube::config::Kubeconfig::from_yaml(&self.api.kubeconfig()).unwrap();
            kube::Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap())
                .unwrap()
        })
    }

    /// The join token, as `keadm gettoken` reads it.
    pub fn token(&self) -> String {
        let client = self.client();
        self.rt.block_on(async {
            let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> = kube::Api::namespaced(client, "kubeedge");
            let s = secrets.get("tokensecret").await.unwrap();
            String::from_utf8(s.data.unwrap()["tokendata"].0.clone()).unwrap()
        })
    }

    /// Whether node `name` is Ready in the API.
    pub fn node_ready(&self, name: &str) -> bool {
        let client = self.client();
        self.rt.block_on(async {
            let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
            let Ok(Some(node)) = nodes.get_opt(name).await else { return false };
            node.status
                .and_then(|s| s.conditions)
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
    }

    /// Stops cloudcore (SIGTERM) and apiserver-lite.
    pub fn stop(mut self) {
        self.proc.signal("TERM");
        let _ = self.proc.wait_exit(kubeedge_testkit::patience());
        self.rt.block_on(self.api.shutdown());
    }
}
