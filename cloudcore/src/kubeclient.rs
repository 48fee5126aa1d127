//! The Kubernetes client every cloud module uses, built from `kubeAPIConfig`.

use kubeedge_beehive::ModuleError;
use kubeedge_config::cloudcore::KubeApiConfig;

/// A Kubernetes client from `kubeAPIConfig`: the kubeconfig file when set (with `master`
/// overriding its server), else the in-cluster or default configuration.
pub async fn kube_client(cfg: &KubeApiConfig) -> Result<kube::Client, ModuleError> {
    let mut config = if cfg.kube_config.is_empty() {
        kube::Config::infer().await?
    } else {
        let kc = kube::config::Kubeconfig::read_from(&cfg.kube_config)?;
        kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
    };
    if !cfg.master.is_empty() {
        config.cluster_url = cfg.master.parse()?;
    }
    Ok(kube::Client::try_from(config)?)
}
