//! The cloud half of `keadm reset`: removes what `keadm init` installed. Upstream deletes the
//! `kubeedge` namespace (and with it cloudcore, its config, Secrets — CA, certificate, join
//! token — and RBAC of the namespace); this also deletes the cluster-scoped ClusterRole and
//! ClusterRoleBinding it left behind. The CRDs stay, as upstream's do: deleting them would
//! delete every ObjectSync with them; the output says how to remove them.
//!
//! The `reset` dispatcher (cloud or edge, by what is installed) calls [`is_installed`] and
//! [`reset`]; [`main`] is a `keadm reset` that handles the cloud only.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::DeleteParams;

use crate::init::apply::{self, Object, Resolver};
use crate::init::options::NAMESPACE;

/// How long to wait for the namespace to be gone.
const NAMESPACE_TIMEOUT: Duration = Duration::from_secs(60);

/// The cluster-scoped objects of the chart (the namespace's go with it).
const CLUSTER_OBJECTS: &[(&str, &str, &str)] = &[
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "cloudcore"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", "cloudcore"),
];

/// `keadm reset` flags for the cloud.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The kubeconfig of the cluster cloudcore is installed in.
    #[arg(long = "kube-config", default_value = "/root/.kube/config")]
    pub kube_config: PathBuf,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub force: bool,
}

/// Why the reset failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cluster refused or could not be reached.
    #[error(transparent)]
    Api(#[from] apply::Error),
    /// The operator did not confirm.
    #[error("aborted: nothing was changed")]
    Aborted,
    /// The namespace stayed.
    #[error("namespace {NAMESPACE} is still terminating after {0:?}; check `kubectl get ns {NAMESPACE} -o yaml`")]
    Stuck(Duration),
}

/// Whether cloudcore is installed in the cluster behind `kube_config`, and what shows it.
pub async fn is_installed(kube_config: &Path) -> Result<Option<String>, Error> {
    let client = apply::client(kube_config).await?;
    Ok(crate::init::installed(&client).await?)
}

/// Removes the cloud components; prints each step.
pub async fn reset(kube_config: &Path) -> Result<(), Error> {
    let client = apply::client(kube_config).await?;
    let mut resolver = Resolver::new(client.clone());
    let namespaces: Api<Namespace> = Api::all(client);
    match namespaces.delete(NAMESPACE, &DeleteParams::background()).await {
        Ok(_) => println!("[reset] deleting namespace {NAMESPACE}"),
        Err(kube::Error::Api(s)) if s.code == 404 => println!("[reset] namespace {NAMESPACE} is already gone"),
        Err(source) => {
            return Err(apply::Error::Api { action: "deleting", what: format!("namespace {NAMESPACE}"), source }.into());
        }
    }
    for (api_version, kind, name) in CLUSTER_OBJECTS {
        let doc = crate::chart::Doc {
            source: "keadm reset".into(),
            text: format!("apiVersion: {api_version}\nkind: {kind}\nmetadata:\n  name: {name}\n"),
        };
        let o = Object::parse(&doc)?;
        if resolver.delete(&o, NAMESPACE).await? {
            println!("[reset] deleted {}", o.describe());
        }
    }
    let deadline = tokio::time::Instant::now() + NAMESPACE_TIMEOUT;
    loop {
        match namespaces.get_opt(NAMESPACE).await {
            Ok(None) => break,
            Ok(Some(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(Some(_)) => return Err(Error::Stuck(NAMESPACE_TIMEOUT)),
            Err(source) => {
                return Err(
                    apply::Error::Api { action: "reading", what: format!("namespace {NAMESPACE}"), source }.into()
                );
            }
        }
    }
    println!(
        "[reset] cloudcore is removed. The CustomResourceDefinitions stay; remove them with:\n  \
         kubectl delete crd objectsyncs.reliablesyncs.kubeedge.io clusterobjectsyncs.reliablesyncs.kubeedge.io \
         devices.devices.kubeedge.io devicemodels.devices.kubeedge.io devicestatuses.devices.kubeedge.io \
         rules.rules.kubeedge.io ruleendpoints.rules.kubeedge.io nodeupgradejobs.operations.kubeedge.io \
         imageprepulljobs.operations.kubeedge.io configupdatejobs.operations.kubeedge.io"
    );
    Ok(())
}

/// `keadm reset` for the cloud: asks for confirmation unless `--force`, then [`reset`].
pub fn main(args: &Args) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return crate::init::exit("reset", &e, false),
    };
    let result = rt.block_on(async {
        match is_installed(&args.kube_config).await? {
            Some(found) => println!("[reset] found cloudcore: {found}"),
            None => {
                println!("[reset] no cloudcore installation found in namespace {NAMESPACE}; nothing to do");
                return Ok(());
            }
        }
        if !args.force && !confirm()? {
            return Err(Error::Aborted);
        }
        reset(&args.kube_config).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => crate::init::exit("reset", &e, false),
    }
}

/// Upstream's prompt: only `y` proceeds.
fn confirm() -> Result<bool, Error> {
    println!("[reset] WARNING: what 'keadm init' installed in the cluster will be removed.");
    print!("[reset] Are you sure you want to proceed? [y/N]: ");
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    Ok(line.trim().eq_ignore_ascii_case("y"))
}
