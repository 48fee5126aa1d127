//! CloudStream (`modules.cloudStream`): the cloud end of upstream's stream tunnel
//! (../shared/reference/kubeedge-protocols.md §8), which carries `kubectl logs` and node
//! metrics from the API server to edge nodes through the tunnel their EdgeStream dials.
//!
//! - `tunnel`: the tunnel server on `tunnelPort` (10004), TLS with CloudHub's CA and serving
//!   certificate (the same Secrets or files CloudHub uses), one session per node
//!   (`registry`, `session`);
//! - `server`: the stream server on `streamPort` (10003) for the API server, requiring a client
//!   certificate from `tlsStreamCAFile`, or, when that file does not exist, from the
//!   `kube-root-ca.crt` ConfigMap every namespace carries (read from `kubeedge`); its serving
//!   certificate is `tlsStreamCertFile`/`tlsStreamPrivateKeyFile`, or, when they do not exist,
//!   one issued by the hub CA at start (upstream needs a manual certgen step).
//!
//! - `tunnelport`: the port this cloudcore takes in ConfigMap `kubeedge/tunnelport`, and
//!   `endpoint`: each node with a session gets it as its kubelet endpoint port, so the API
//!   server dials `nodeIP:tunnelPort`, which the iptables manager (`crate::iptables`) DNATs to
//!   the stream server.

pub mod endpoint;
pub mod metrics;
pub mod registry;
mod relay;
pub mod server;
pub mod session;
pub mod tunnel;
pub mod tunnelport;

use std::net::IpAddr;
use std::path::Path;

use k8s_openapi::api::core::v1::ConfigMap;
use kubeedge_beehive::{BoxFuture, Module, ModuleContext, ModuleError, Spawner};
use kubeedge_config::cloudcore::{CloudHub, CloudStream, KubeApiConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cloudhub::certs;
use crate::kubeclient::kube_client;

/// The CloudStream module.
pub struct CloudStreamModule {
    cfg: CloudStream,
    hub: CloudHub,
    kube: KubeApiConfig,
    metrics: metrics::StreamMetrics,
    listeners: (Option<TcpListener>, Option<TcpListener>),
    /// This replica's own address, when it has one apart from the shared `advertiseAddress`.
    own_ip: Option<String>,
}

impl CloudStreamModule {
    /// The module; `hub` says where CloudHub's PKI is (the tunnel uses it too).
    pub fn new(cfg: CloudStream, hub: CloudHub, kube: KubeApiConfig, metrics: metrics::StreamMetrics) -> Self {
        Self { cfg, hub, kube, metrics, listeners: (None, None), own_ip: None }
    }

    /// The address this cloudcore's tunnel port is recorded (and DNATed) for, instead of the
    /// first `advertiseAddress`: with several replicas behind a load balancer they all
    /// advertise the balancer's address, but each must record its own, or they would share
    /// one tunnel port and one DNAT target (upstream uses the host's default-route address).
    /// The binary takes it from `POD_IP` (the chart sets it from `status.podIP`). An address
    /// that is not IPv4 is ignored.
    pub fn with_own_ip(mut self, ip: Option<String>) -> Self {
        self.own_ip = ip.filter(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok());
        self
    }
}

async fn bind(port: u32, field: &str) -> Result<TcpListener, ModuleError> {
    let addr = format!("0.0.0.0:{port}");
    TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} (modules.cloudStream.{field}): {e}").into())
}

/// Accepts connections until `stop`, at most `max` at once, handing each to `handle` on the
/// module's spawner; accept errors (e.g. out of file descriptors) back off instead of spinning.
pub(crate) async fn accept_loop<F, Fut>(
    listener: TcpListener,
    stop: CancellationToken,
    spawner: Spawner,
    what: &'static str,
    max: usize,
    handle: F,
) where
    F: Fn(tokio::net::TcpStream, std::net::SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(max));
    let mut backoff = kubeedge_telemetry::AcceptBackoff::new(what);
    loop {
        // A slot first, then the connection; both waits are cancel-safe.
        let next = async { (slots.clone().acquire_owned().await, listener.accept().await) };
        let (permit, accepted) = tokio::select! {
            _ = stop.cancelled() => return,
            n = next => n,
        };
        let Ok(permit) = permit else { return };
        match accepted {
            Ok((tcp, peer)) => {
                backoff.succeeded();
                let _ = tcp.set_nodelay(true);
                let work = handle(tcp, peer);
                spawner.spawn(async move {
                    work.await;
                    drop(permit);
                });
            }
            Err(e) => backoff.failed(&e).await,
        }
    }
}

/// The address this cloudcore is known by (the first `advertiseAddress`), the key of its
/// tunnel port and of its DNAT rule.
pub fn advertise_ip(hub: &CloudHub) -> String {
    match hub.advertise_address.iter().find(|a| a.parse::<std::net::Ipv4Addr>().is_ok()) {
        Some(ip) => ip.clone(),
        None => {
            warn!(
                advertise = ?hub.advertise_address,
                "modules.cloudHub.advertiseAddress has no IPv4 address: the tunnel port is recorded for 127.0.0.1, \
                 which only an API server on this host can use"
            );
            "127.0.0.1".to_owned()
        }
    }
}

/// A PEM file's DER, if the file exists.
async fn pem_file(path: &str) -> Result<Option<Vec<u8>>, ModuleError> {
    if path.is_empty() || !Path::new(path).is_file() {
        return Ok(None);
    }
    let text = tokio::fs::read_to_string(path).await.map_err(|e| format!("reading {path}: {e}"))?;
    let der = if text.contains("PRIVATE KEY") {
        kubeedge_pki::key_from_pem(&text).map_err(|e| format!("{path}: {e}"))?
    } else {
        kubeedge_pki::parse_pem(&text).map_err(|e| format!("{path}: {e}"))?.1
    };
    Ok(Some(der))
}

/// The CA whose client certificates the stream server accepts.
async fn stream_ca(cfg: &CloudStream, client: &kube::Client) -> Result<Vec<u8>, ModuleError> {
    if let Some(der) = pem_file(&cfg.tls_stream_ca_file).await? {
        return Ok(der);
    }
    let maps: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), certs::NAMESPACE);
    let cm = maps.get_opt("kube-root-ca.crt").await.map_err(|e| format!("reading kubeedge/kube-root-ca.crt: {e}"))?;
    let pem = cm.and_then(|c| c.data).and_then(|d| d.get("ca.crt").cloned()).ok_or_else(|| {
        format!(
            "modules.cloudStream.tlsStreamCAFile {:?} does not exist and ConfigMap kubeedge/kube-root-ca.crt has no ca.crt: \
             the stream server cannot know the API server's client CA",
            cfg.tls_stream_ca_file
        )
    })?;
    Ok(kubeedge_pki::parse_pem(&pem).map_err(|e| format!("kubeedge/kube-root-ca.crt: {e}"))?.1)
}

impl Module for CloudStreamModule {
    fn name(&self) -> &'static str {
        "cloudStream"
    }

    fn group(&self) -> &'static str {
        "cloudStream"
    }

    fn prepare(&mut self) -> BoxFuture<'_, Result<(), ModuleError>> {
        Box::pin(async move {
            self.listeners.0 = Some(bind(self.cfg.tunnel_port, "tunnelPort").await?);
            self.listeners.1 = Some(bind(self.cfg.stream_port, "streamPort").await?);
            Ok(())
        })
    }

    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(async move {
            let client = kube_client(&self.kube).await?;
            let advertise: Vec<IpAddr> = self.hub.advertise_address.iter().filter_map(|a| a.parse().ok()).collect();
            let sources = certs::Sources {
                ca_files: Some((self.hub.tls_ca_file.clone(), self.hub.tls_ca_key_file.clone())),
                cert_files: Some((self.hub.tls_cert_file.clone(), self.hub.tls_private_key_file.clone())),
                advertise: advertise.clone(),
                dns_names: self.hub.dns_names.iter().filter(|d| !d.is_empty()).cloned().collect(),
            };
            let pki = certs::load_or_create(&client, &sources).await?;
            let tunnel_tls = tunnel::acceptor(pki.ca.cert_der(), &pki.server.cert_der, &pki.server.key_sec1)?;
            let client_ca = stream_ca(&self.cfg, &client).await?;
            let serving = match (
                pem_file(&self.cfg.tls_stream_cert_file).await?,
                pem_file(&self.cfg.tls_stream_private_key_file).await?,
            ) {
                (Some(cert), Some(key)) => kubeedge_pki::CertAndKey { cert_der: cert, key_sec1: key },
                _ => {
                    let mut ips = advertise;
                    ips.push(IpAddr::from([127, 0, 0, 1]));
                    // The API server reaches it at its own address (the DNAT target).
                    ips.extend(self.own_ip.as_deref().and_then(|ip| ip.parse::<IpAddr>().ok()));
                    info!(
                        "modules.cloudStream.tlsStreamCertFile does not exist: serving a certificate issued by the hub CA."
                    );
                    pki.ca
                        .issue_server(&ips, &[])
                        .map_err(|e| format!("issuing the stream server's certificate: {e}"))?
                }
            };
            let stream_tls = tunnel::acceptor(&client_ca, &serving.cert_der, &serving.key_sec1)?;

            let own_ip = self.own_ip.clone().unwrap_or_else(|| advertise_ip(&self.hub));
            let tunnel_port = tunnelport::negotiate(&client, &own_ip).await?;

            let stop = ctx.shutdown().clone();
            let spawner = ctx.spawner();
            let (registry, registry_task) = registry::Registry::start(stop.clone());
            spawner.spawn(registry_task);
            let (endpoints, endpoints_task) = endpoint::Endpoints::start(client.clone(), tunnel_port, stop.clone());
            spawner.spawn(endpoints_task);
            let (tunnel_listener, stream_listener) = match (self.listeners.0.take(), self.listeners.1.take()) {
                (Some(t), Some(s)) => (t, s),
                (t, s) => (
                    match t {
                        Some(t) => t,
                        None => bind(self.cfg.tunnel_port, "tunnelPort").await?,
                    },
                    match s {
                        Some(s) => s,
                        None => bind(self.cfg.stream_port, "streamPort").await?,
                    },
                ),
            };
            info!(
                tunnel = %tunnel_listener.local_addr()?,
                stream = %stream_listener.local_addr()?,
                tunnel_port,
                "CloudStream listening."
            );
            let t = tunnel::Tunnel {
                tls: tunnel_tls,
                registry: registry.clone(),
                identity_check: self.hub.node_identity_check,
                spawner: spawner.clone(),
                endpoints,
                metrics: self.metrics.clone(),
            };
            spawner.spawn(tunnel::serve(tunnel_listener, t, stop.clone()));
            let s = server::StreamServer { tls: stream_tls, registry, kube: client, spawner: spawner.clone() };
            spawner.spawn(server::serve(stream_listener, s, stop.clone()));
            stop.cancelled().await;
            Ok(())
        })
    }
}
