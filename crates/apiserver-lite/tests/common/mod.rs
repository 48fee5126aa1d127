//! A server in its own runtime, a kubeconfig on disk, and a kubectl runner.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

use apiserver_lite::{ApiServer, Options};

pub struct Cluster {
    pub rt: tokio::runtime::Runtime,
    pub server: Option<ApiServer>,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
}

impl Cluster {
    pub fn start() -> Self {
        Self::start_with(Options::default())
    }

    pub fn start_with(opts: Options) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let server = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            ApiServer::start(listener, opts).await.unwrap()
        });
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, server.kubeconfig()).unwrap();
        Self { rt, server: Some(server), dir, kubeconfig }
    }

    pub fn server(&self) -> &ApiServer {
        self.server.as_ref().unwrap()
    }

    /// Runs kubectl against the server; panics with a clear message if kubectl is missing.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_stdin(args, None)
    }

    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut cmd = Command::new("kubectl");
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.dir.path())
            .args(args)
            .stdin(if stdin.is_some() { std::process::Stdio::piped() } else { std::process::Stdio::null() })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "kubectl is required for these tests and could not be started ({e}); install kubectl (v1.32) on PATH"
            )
        });
        if let Some(input) = stdin {
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// Runs kubectl and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.expect_ok(args, None)
    }

    /// Runs kubectl with a manifest on stdin and expects success.
    pub fn ok_stdin(&self, args: &[&str], stdin: &str) -> String {
        self.expect_ok(args, Some(stdin))
    }

    fn expect_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_stdin(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {} failed:\nstdout: {}\nstderr: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    pub fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::from_yaml(&self.server().kubeconfig()).unwrap();
        self.rt.block_on(async {
            let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
            kube::Client::try_from(cfg).unwrap()
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            self.rt.block_on(s.shutdown());
        }
    }
}
