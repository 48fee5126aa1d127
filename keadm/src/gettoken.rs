//! `keadm gettoken`: upstream's shared join token from Secret `kubeedge/tokensecret`
//! (`tokendata`), or with `--node NAME` a token that admits only that node, valid for `--ttl`,
//! signed here with the CA key from `kubeedge/casecret` (so only someone who may read that
//! Secret can mint one). Cloudcore accepts a node-bound token even for a node that is
//! registered or connected: it is the operator's explicit re-join.

use std::process::ExitCode;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

/// The namespace of KubeEdge's Secrets.
const NAMESPACE: &str = "kubeedge";

/// `keadm gettoken` flags.
#[derive(clap::Args)]
pub struct Args {
    /// The kubeconfig to use (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long = "kube-config")]
    kube_config: Option<String>,
    /// Mint a token that admits only this node (an explicit re-join of a registered node).
    #[arg(long)]
    node: Option<String>,
    /// How long a node-bound token is valid (Go duration: 24h, 90m, 1h30m).
    #[arg(long, default_value = "24h", requires = "node")]
    ttl: String,
}

/// Why a token could not be had.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("reading the kubeconfig: {0}")]
    Config(String),
    #[error("reading secret {NAMESPACE}/{0}: {1}")]
    Secret(&'static str, kube::Error),
    #[error("secret {NAMESPACE}/{0} has no {1}; is cloudcore running?")]
    MissingKey(&'static str, &'static str),
    #[error("the CA in {NAMESPACE}/casecret is unusable: {0}")]
    Ca(kubeedge_pki::Error),
}

pub fn main(args: &Args) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keadm: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e @ Error::Usage(_)) => {
            eprintln!("keadm gettoken: {e}");
            ExitCode::from(64)
        }
        Err(e) => {
            eprintln!("keadm gettoken: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn client(path: Option<&str>) -> Result<kube::Client, Error> {
    let config = match path {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p).map_err(|e| Error::Config(format!("{p}: {e}")))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| Error::Config(e.to_string()))?
        }
        None => kube::Config::infer().await.map_err(|e| Error::Config(e.to_string()))?,
    };
    kube::Client::try_from(config).map_err(|e| Error::Config(e.to_string()))
}

fn data<'a>(s: &'a Secret, name: &'static str, key: &'static str) -> Result<&'a [u8], Error> {
    s.data.as_ref().and_then(|d| d.get(key)).map(|b| b.0.as_slice()).ok_or(Error::MissingKey(name, key))
}

async fn run(args: &Args) -> Result<String, Error> {
    let ttl = match &args.node {
        Some(node) if !kubeedge_model::valid_node_name(node) => {
            return Err(Error::Usage(format!("--node {node:?} is not a valid node name")));
        }
        Some(_) => Some(crate::duration::parse(&args.ttl).map_err(|e| Error::Usage(format!("--ttl: {e}")))?),
        None => None,
    };
    let secrets: Api<Secret> = Api::namespaced(client(args.kube_config.as_deref()).await?, NAMESPACE);
    match (&args.node, ttl) {
        (Some(node), Some(ttl)) => {
            let s = secrets.get("casecret").await.map_err(|e| Error::Secret("casecret", e))?;
            let ca = kubeedge_pki::Ca::from_der(data(&s, "casecret", "cadata")?, data(&s, "casecret", "cakeydata")?)
                .map_err(Error::Ca)?;
            Ok(ca.node_token(node, ttl))
        }
        _ => {
            let s = secrets.get("tokensecret").await.map_err(|e| Error::Secret("tokensecret", e))?;
            Ok(String::from_utf8_lossy(data(&s, "tokensecret", "tokendata")?).trim().to_owned())
        }
    }
}
