//! The CloudHub module: the PKI, the join API (:10002), the edge sessions (:10000), and the
//! bus inbox through which cloud modules send to edges (resource `node/{node}/…`).

use std::net::IpAddr;
use std::sync::Arc;

use kubeedge_beehive::{BoxFuture, Module, ModuleContext, ModuleError};
use kubeedge_config::cloudcore::{CloudHub, KubeApiConfig};
use kubeedge_model::constants::module;
use kubeedge_model::{Message, Operation};
use kubeedge_viaduct::{AuthMode, ServerOptions};
use tokio::net::TcpListener;
use tracing::{info, warn};

use super::session::{EdgeLimits, Hub, HubMetrics};
use super::{certs, https};
use crate::delivery::acks::AckFeed;
use crate::inflight::{Admission, Limits};
use crate::kubeclient::kube_client;

/// CloudHub as a bus module (`cloudhub`/`cloudhub`).
pub struct CloudHubModule {
    cfg: CloudHub,
    kube: KubeApiConfig,
    metrics: Option<HubMetrics>,
    /// What edges may have in flight, shared with the controllers (`edgeMessages`).
    admission: Admission,
    /// The join API's and the WebSocket server's listeners, bound by `prepare`; a restart
    /// after a failure binds again.
    listeners: (Option<TcpListener>, Option<TcpListener>),
    /// Where sessions report what nodes acknowledged (SyncController's inbox), when it runs.
    acks: Option<AckFeed>,
    /// The running hub, for modules that hand messages to sessions themselves (the Router).
    links: tokio::sync::watch::Sender<Option<Arc<Hub>>>,
}

impl CloudHubModule {
    /// A module for this config; `metrics` registers CloudHub's series.
    pub fn new(
        cfg: CloudHub,
        kube: KubeApiConfig,
        registry: Option<&prometheus::Registry>,
    ) -> Result<Self, prometheus::Error> {
        let metrics = registry.map(HubMetrics::register).transpose()?;
        let em = &cfg.edge_messages;
        let limits = Limits {
            node_in_flight: usize::try_from(em.node_in_flight).unwrap_or(1),
            memory: em.in_flight_memory_bytes(),
        };
        let admission = Admission::new(limits, registry)?;
        let links = tokio::sync::watch::Sender::new(None);
        Ok(Self { cfg, kube, metrics, admission, listeners: (None, None), acks: None, links })
    }

    /// The sessions of the running hub (none while CloudHub is not running): the Router hands
    /// its messages to them directly, to tell a caller at once when a node is not connected.
    pub fn links(&self) -> tokio::sync::watch::Receiver<Option<Arc<Hub>>> {
        self.links.subscribe()
    }

    /// Reports what nodes acknowledged to SyncController through `acks`.
    pub fn with_acks(mut self, acks: AckFeed) -> Self {
        self.acks = Some(acks);
        self
    }

    /// What edges may have in flight: the controllers EdgeController, DeviceController and
    /// DynamicController take their [`Completion`](crate::inflight::Completion) from it.
    pub fn admission(&self) -> Admission {
        self.admission.clone()
    }
}

async fn bind(address: &str, port: u32, field: &str) -> Result<TcpListener, ModuleError> {
    let addr = if address.contains(':') { format!("[{address}]:{port}") } else { format!("{address}:{port}") };
    TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} (modules.cloudHub.{field}): {e}").into())
}

impl Module for CloudHubModule {
    fn name(&self) -> &'static str {
        kubeedge_model::constants::module::CLOUDHUB
    }

    fn group(&self) -> &'static str {
        kubeedge_model::constants::module::CLOUDHUB
    }

    fn prepare(&mut self) -> BoxFuture<'_, Result<(), ModuleError>> {
        Box::pin(async move {
            if self.cfg.https.enable {
                self.listeners.0 = Some(bind(&self.cfg.https.address, self.cfg.https.port, "https.port").await?);
            }
            if self.cfg.websocket.enable {
                self.listeners.1 =
                    Some(bind(&self.cfg.websocket.address, self.cfg.websocket.port, "websocket.port").await?);
            }
            Ok(())
        })
    }

    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(async move {
            let cfg = &self.cfg;
            if cfg.quic.enable {
                return Err("modules.cloudHub.quic is not supported: upstream's QUIC is pre-standard gQUIC (see docs/compatibility.md); use websocket".into());
            }
            if cfg.unix_socket.enable {
                warn!(
                    "modules.cloudHub.unixsocket (the CSI helper socket) is not available in this build yet; ignoring it."
                );
            }
            let client = kube_client(&self.kube).await?;
            let sources = certs::Sources {
                ca_files: Some((cfg.tls_ca_file.clone(), cfg.tls_ca_key_file.clone())),
                cert_files: Some((cfg.tls_cert_file.clone(), cfg.tls_private_key_file.clone())),
                advertise: cfg.advertise_address.iter().filter_map(|a| a.parse::<IpAddr>().ok()).collect(),
                dns_names: cfg.dns_names.iter().filter(|d| !d.is_empty()).cloned().collect(),
            };
            let pki = certs::load_or_create(&client, &sources).await?;
            info!(ca = %pki.ca.hash(), "CloudHub PKI ready.");
            let refresh = cfg.token_refresh_duration();
            certs::refresh_token(&client, &pki.ca, refresh).await?;
            let shutdown = ctx.shutdown().clone();
            // This run's own tasks end with it, so a restart does not leave them behind.
            let run_stop = shutdown.child_token();
            let _run_guard = run_stop.clone().drop_guard();
            let ca = Arc::new(pki.ca);
            let permissive = !cfg.node_identity_check;
            if permissive {
                warn!(
                    "modules.cloudHub.nodeIdentityCheck is false: any certificate signed by the CA may claim any node, \
                     so the node authorizer trusts the node a connection claims (needed only for pre-1.17 edges)."
                );
            }

            {
                let (client, ca, stop) = (client.clone(), ca.clone(), run_stop.clone());
                ctx.spawn(async move {
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(refresh) => {}
                        }
                        if let Err(e) = certs::refresh_token(&client, &ca, refresh).await {
                            warn!(error = %e, "Token refresh failed; retrying next period.");
                        }
                    }
                });
            }
            let em = &cfg.edge_messages;
            let limits = EdgeLimits {
                qps: f64::from(em.message_qps),
                burst: f64::from(em.message_burst),
                admission: self.admission.clone(),
                window: em.delivery_window(),
            };
            // Memory freed by large edge messages goes back to the OS after each burst.
            ctx.spawn(self.admission.clone().trim_after_bursts(run_stop.clone()));
            let hub = Hub::with_limits(
                ctx.bus.clone(),
                usize::try_from(cfg.node_limit).unwrap_or(0),
                cfg.keepalive_interval(),
                self.metrics.clone(),
                limits,
                self.acks.clone(),
            );
            if cfg.https.enable {
                let listener = match self.listeners.0.take() {
                    Some(l) => l,
                    None => bind(&cfg.https.address, cfg.https.port, "https.port").await?,
                };
                let tls = https::tls_config(&ca, &pki.server)?;
                let api = Arc::new(https::JoinApi {
                    ca: ca.clone(),
                    signing_days: u32::try_from(cfg.edge_cert_signing_duration).unwrap_or(365),
                    permissive,
                    client: client.clone(),
                    hub: hub.clone(),
                    bus: Some(ctx.bus.clone()),
                });
                ctx.spawn(https::serve(listener, tls, api, shutdown.clone()));
            }
            let mut sessions = None;
            if cfg.websocket.enable {
                let listener = match self.listeners.1.take() {
                    Some(l) => l,
                    None => bind(&cfg.websocket.address, cfg.websocket.port, "websocket.port").await?,
                };
                let tls = kubeedge_viaduct::server_tls(ca.cert_der(), &pki.server.cert_der, &pki.server.key_sec1)?;
                let opts = ServerOptions {
                    auth: if permissive { AuthMode::Permissive } else { AuthMode::Strict },
                    // Edges may send less than they are sent (32 MiB).
                    max_message: em.max_message_bytes(),
                    features: SUPPORTED_FEATURES.iter().map(|f| (*f).to_owned()).collect(),
                    ..ServerOptions::default()
                };
                sessions = Some(ctx.spawn(hub.clone().serve(listener, tls, opts, shutdown.clone())));
            }
            // Published once everything that can fail has: the Router never holds a dead hub.
            self.links.send_replace(Some(hub.clone()));
            while let Some(msg) = ctx.recv().await {
                if is_sessions_query(&msg) {
                    // Not awaited here: SyncController may be waiting on this inbox meanwhile.
                    let hub = hub.clone();
                    ctx.spawn(async move { hub.announce_sessions().await });
                    continue;
                }
                hub.dispatch(msg);
            }
            self.links.send_replace(None);
            // Shutting down: the sessions send their close frames before the module ends.
            if let Some(s) = sessions {
                let _ = s.await;
            }
            Ok(())
        })
    }
}

/// What CloudHub agrees to when an edge of ours announces it in its handshake
/// (`X-KubeEdge-Rs-Features`): SyncController's inventory question, and EdgeController's
/// compact lease renewal (with keepalives left out while other messages flow).
pub const SUPPORTED_FEATURES: [&str; 2] =
    [kubeedge_model::protocol::inventory::FEATURE, kubeedge_model::protocol::lease::FEATURE];

/// The resource of SyncController's question "which nodes are connected?" (operation `query`,
/// to CloudHub): answered with one `connected` notice per live session.
pub const SESSIONS_QUERY: &str = "sessions";

fn is_sessions_query(msg: &Message) -> bool {
    msg.router.source == module::SYNCCONTROLLER
        && msg.router.resource == SESSIONS_QUERY
        && msg.operation() == Operation::Query
}
