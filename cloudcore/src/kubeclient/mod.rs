//! The Kubernetes client every cloud module uses, built from `kubeAPIConfig`, and the
//! installation of KubeEdge's CRDs when they are missing.

use kubeedge_beehive::ModuleError;
use kubeedge_config::cloudcore::KubeApiConfig;

pub mod lean;

/// A Kubernetes client from `kubeAPIConfig`: the kubeconfig file when set (with `master`
/// overriding its server), else the in-cluster or default configuration.
pub async fn kube_client(cfg: &KubeApiConfig) -> Result<kube::Client, ModuleError> {
    Ok(kube::Client::try_from(kube_config(cfg).await?)?)
}

/// The client configuration [`kube_client`] builds from `kubeAPIConfig`.
pub async fn kube_config(cfg: &KubeApiConfig) -> Result<kube::Config, ModuleError> {
    let mut config = if cfg.kube_config.is_empty() {
        kube::Config::infer().await?
    } else {
        let kc = kube::config::Kubeconfig::read_from(&cfg.kube_config)?;
        kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
    };
    if !cfg.master.is_empty() {
        config.cluster_url = cfg.master.parse()?;
    }
    Ok(config)
}

/// Creates the CRDs of API group `group` (of [`kubeedge_apis::crds`]) that are missing (keadm
/// and the Helm chart normally install them) and waits until they are served.
pub async fn install_crds(client: &kube::Client, group: &str) -> Result<(), ModuleError> {
    use std::time::Duration;

    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Api, PostParams};
    use kube::runtime::wait::{await_condition, conditions};
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in kubeedge_apis::crds().into_iter().filter(|c| c.spec.group == group) {
        let name = crd.metadata.name.clone().unwrap_or_default();
        match api.get_opt(&name).await {
            Ok(Some(_)) => continue,
            Ok(None) => {}
            Err(e) => return Err(format!("reading CRD {name}: {e}").into()),
        }
        match api.create(&PostParams::default(), &crd).await {
            Ok(_) => tracing::info!(crd = name, "Installed a missing CRD."),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => {
                return Err(
                    format!("CRD {name} is missing and could not be created (install manifests/crds): {e}").into()
                );
            }
        }
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .map_err(|_| format!("CRD {name} was not established within 30 s"))?
        .map_err(|e| format!("waiting for CRD {name}: {e}"))?;
    }
    Ok(())
}
