//! Shared by keadm's chart tests: the chart's path, the real helm (when installed), YAML
//! streams as parsed documents, and an apiserver-lite to install into.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

pub fn keadm() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_keadm"))
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn chart_dir() -> PathBuf {
    repo().join("manifests/charts/cloudcore")
}

/// The real helm binary, or `None` with a loud SKIPPED line (hack/install-deps.sh installs it;
/// CI always has it).
pub fn helm(test: &str) -> Option<PathBuf> {
    let candidates = [std::env::var_os("HELM").map(PathBuf::from), Some("/usr/local/bin/helm".into())];
    let found = candidates.into_iter().flatten().find(|p| p.is_file()).or_else(|| {
        let out = Command::new("sh").args(["-c", "command -v helm"]).output().ok()?;
        out.status.success().then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    });
    if found.is_none() {
        kubeedge_testkit::skip(test, "helm is not installed (run hack/install-deps.sh)");
    }
    found
}

/// Runs a command; returns (success, stdout, stderr).
pub fn run(bin: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin).args(args).env_remove("RUST_LOG").output().expect("run binary");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The documents of a YAML stream, parsed (comment-only documents dropped).
pub fn docs(stream: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for doc in stream.split("\n---").flat_map(|d| d.split("---\n")) {
        let v: Value = yaml_serde::from_str(doc).unwrap_or_else(|e| panic!("bad YAML document {doc:?}: {e}"));
        if !v.is_null() {
            out.push(v);
        }
    }
    out
}

/// Whether every field of `want` is in `have` with the same value (what the server stored may
/// add defaults and metadata).
pub fn contains(have: &Value, want: &Value, at: &str) -> Result<(), String> {
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => {
            for (k, wv) in w {
                let hv = h.get(k).ok_or_else(|| format!("{at}.{k} is missing"))?;
                contains(hv, wv, &format!("{at}.{k}"))?;
            }
            Ok(())
        }
        (Value::Array(h), Value::Array(w)) if h.len() == w.len() => {
            h.iter().zip(w).enumerate().try_for_each(|(i, (h, w))| contains(h, w, &format!("{at}[{i}]")))
        }
        (Value::Number(h), Value::Number(w)) if h.as_f64() == w.as_f64() => Ok(()),
        (h, w) if h == w => Ok(()),
        (h, w) => Err(format!("{at}: stored {h}, rendered {w}")),
    }
}

/// An apiserver-lite on a free port, its kubeconfig in a temp dir, and a runtime to talk to it.
pub struct Cluster {
    pub rt: tokio::runtime::Runtime,
    pub api: Option<apiserver_lite::ApiServer>,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
}

impl Cluster {
    pub fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let api = rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            apiserver_lite::ApiServer::start(l, Default::default()).await.unwrap()
        });
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
        Cluster { rt, api: Some(api), dir, kubeconfig }
    }

    pub fn kc(&self) -> &str {
        self.kubeconfig.to_str().unwrap()
    }

    pub fn client(&self) -> kube::Client {
        self.rt.block_on(async {
            let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
            kube::Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap())
                .unwrap()
        })
    }

    /// GETs an API path; `None` on 404.
    pub fn get(&self, path: &str) -> Option<Value> {
        let client = self.client();
        self.rt.block_on(async {
            let req = http::Request::get(path).body(Vec::new()).unwrap();
            match client.request::<Value>(req).await {
                Ok(v) => Some(v),
                Err(kube::Error::Api(s)) if s.code == 404 => None,
                Err(e) => panic!("GET {path}: {e}"),
            }
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(api) = self.api.take() {
            self.rt.block_on(api.shutdown());
        }
    }
}

/// The API path of a rendered object (`kubeedge` for namespaced objects without one).
pub fn path_of(obj: &Value) -> String {
    let api_version = obj["apiVersion"].as_str().unwrap();
    let kind = obj["kind"].as_str().unwrap();
    let name = obj["metadata"]["name"].as_str().unwrap();
    let plural = match kind {
        "CustomResourceDefinition" => "customresourcedefinitions",
        "ClusterRole" => "clusterroles",
        "ClusterRoleBinding" => "clusterrolebindings",
        "Role" => "roles",
        "RoleBinding" => "rolebindings",
        "ServiceAccount" => "serviceaccounts",
        "ConfigMap" => "configmaps",
        "Service" => "services",
        "Deployment" => "deployments",
        "Namespace" => "namespaces",
        other => panic!("no plural for {other}"),
    };
    let prefix = if api_version.contains('/') { format!("/apis/{api_version}") } else { format!("/api/{api_version}") };
    match obj["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{prefix}/namespaces/{ns}/{plural}/{name}"),
        None => format!("{prefix}/{plural}/{name}"),
    }
}
