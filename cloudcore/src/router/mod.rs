//! The Router (`modules.router`): messages between cloud applications and edge applications,
//! driven by `rules.kubeedge.io/v1` Rules and RuleEndpoints (upstream's `cloud/pkg/router`).
//!
//! Four routes, each a Rule from one RuleEndpoint type to another:
//! - **rest → eventbus**: a request to the REST listener ([`rest`]) is published on an MQTT
//!   topic on the edge node named in its path;
//! - **rest → servicebus**: a request becomes an HTTP call of an edge application through the
//!   node's ServiceBus, and its answer is the caller's;
//! - **eventbus → rest**: a message published on `{namespace}/{topic}` on an edge node is
//!   POSTed to a cloud URL ([`outbound`]);
//! - **servicebus → rest**: an edge application's call to its ServiceBus (for a URL the rule
//!   allowed) is made to the cloud URL and the answer returned to it.
//!
//! The table of rules has one owner ([`watch`]); results are counted into each Rule's status
//! by one task ([`status`]). Messages go to nodes through CloudHub's sessions directly
//! ([`Links`]): a node not connected to this cloudcore fails the call at once (the caller is
//! told, the Rule's `failMessages` counts it); nothing is queued for later and nothing waits
//! on the pod path. With several cloudcore replicas, a REST call must reach the replica the
//! node is connected to (docs/operations.md).

pub mod outbound;
pub mod rest;
pub mod rules;
pub mod status;
pub mod watch;

use std::sync::Arc;
use std::time::Duration;

use kubeedge_beehive::{BoxFuture, Bus, Module, ModuleContext, ModuleError};
use kubeedge_config::cloudcore::{KubeApiConfig, Router};
use kubeedge_model::constants::{group, module};
use kubeedge_model::protocol::servicebus;
use kubeedge_model::{CloudResource, Content, Message, Operation};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, info};

use crate::cloudhub::session::Hub;
use crate::kubeclient::kube_client;
use outbound::Caller;
use rules::{Route, Table, Target};
use status::{Outcome, Reporter};

/// Edge messages handled at once; the inbox waits beyond that.
const CONCURRENT_UPLOADS: usize = 256;

/// CloudHub's sessions, as the Router reaches them.
#[derive(Clone)]
pub struct Links(tokio::sync::watch::Receiver<Option<Arc<Hub>>>);

impl Links {
    /// Links to the hub CloudHub publishes.
    pub fn new(rx: tokio::sync::watch::Receiver<Option<Arc<Hub>>>) -> Self {
        Self(rx)
    }

    /// Hands `msg` (resource `node/{node}/…`) to its node's session: false when the node is
    /// not connected here (or its session is full).
    pub fn dispatch(&self, msg: Message) -> bool {
        let hub = self.0.borrow().clone();
        hub.is_some_and(|h| h.dispatch(msg))
    }

    /// Whether `node` has a session on this cloudcore now.
    pub fn is_connected(&self, node: &str) -> bool {
        self.0.borrow().as_ref().is_some_and(|h| h.is_connected(node))
    }
}

/// Who may call the REST listener.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// The bearer token (`tokenFile`).
    pub token: Option<Vec<u8>>,
    /// Client certificates verified by `tlsCAFile` are accepted.
    pub client_certs: bool,
    /// `allowUnauthenticated`.
    pub open: bool,
}

/// The Router's counters.
#[derive(Clone)]
pub struct RouterMetrics {
    /// `kubeedge_router_messages_total{route, result}`.
    pub requests: prometheus::IntCounterVec,
}

impl RouterMetrics {
    /// Registers the counters in `registry` (unregistered without one).
    pub fn register(registry: Option<&prometheus::Registry>) -> Result<Self, prometheus::Error> {
        let requests = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "kubeedge_router_messages_total",
                "Messages the Router handled, by route (rest_eventbus, rest_servicebus, eventbus_rest, \
                 servicebus_rest, rest) and result (ok, failed, no_rule, unauthorized).",
            ),
            &["route", "result"],
        )?;
        if let Some(r) = registry {
            r.register(Box::new(requests.clone()))?;
        }
        Ok(Self { requests })
    }
}

/// What the listener and the upload handlers share.
pub struct Shared {
    /// The current rules.
    pub tables: tokio::sync::watch::Receiver<Arc<Table>>,
    /// CloudHub's sessions.
    pub links: Links,
    /// The bus (replies to calls arrive through it).
    pub bus: Bus,
    /// Rule status counting.
    pub reporter: Reporter,
    /// Calls of rest targets.
    pub caller: Caller,
    /// The API (node lookups).
    pub client: kube::Client,
    /// `restTimeout`.
    pub timeout: Duration,
    /// Who may call.
    pub auth: Auth,
    /// Counters.
    pub metrics: RouterMetrics,
}

/// Why the Router cannot start.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // The variants say what their fields are.
pub enum RouterError {
    /// A file named in the config cannot be used.
    #[error("modules.router.{field}: {path}: {reason}")]
    File { field: &'static str, path: String, reason: String },
    /// The listener's TLS settings are unusable.
    #[error("modules.router: TLS: {0}")]
    Tls(String),
    /// The port is taken.
    #[error("cannot listen on {addr} (port {port}, modules.router.port): {source}")]
    Bind { addr: String, port: u32, source: std::io::Error },
}

/// The Router as a bus module (`router`/`router`).
pub struct RouterModule {
    cfg: Router,
    kube: KubeApiConfig,
    links: Links,
    metrics: RouterMetrics,
    listener: Option<TcpListener>,
}

impl RouterModule {
    /// A Router reaching edges through `links` (CloudHub's [`links`](crate::cloudhub::module::CloudHubModule::links)).
    pub fn new(
        cfg: Router,
        kube: KubeApiConfig,
        links: Links,
        registry: Option<&prometheus::Registry>,
    ) -> Result<Self, prometheus::Error> {
        Ok(Self { cfg, kube, links, metrics: RouterMetrics::register(registry)?, listener: None })
    }

    fn read(field: &'static str, path: &str) -> Result<String, RouterError> {
        std::fs::read_to_string(path).map_err(|e| RouterError::File {
            field,
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    fn auth(&self) -> Result<Auth, RouterError> {
        let c = &self.cfg;
        let token = if c.token_file.is_empty() {
            None
        } else {
            let t = Self::read("tokenFile", &c.token_file)?.trim().to_owned();
            if t.is_empty() {
                return Err(RouterError::File {
                    field: "tokenFile",
                    path: c.token_file.clone(),
                    reason: "empty".into(),
                });
            }
            Some(t.into_bytes())
        };
        Ok(Auth { token, client_certs: !c.tls_ca_file.is_empty(), open: c.allow_unauthenticated })
    }

    fn tls(&self) -> Result<Option<Arc<rustls::ServerConfig>>, RouterError> {
        let c = &self.cfg;
        if c.tls_cert_file.is_empty() {
            return Ok(None);
        }
        let tls = |e: &dyn std::fmt::Display| RouterError::Tls(e.to_string());
        let certs = pem_chain(&Self::read("tlsCertFile", &c.tls_cert_file)?).map_err(|e| tls(&e))?;
        let key = kubeedge_pki::key_from_pem(&Self::read("tlsPrivateKeyFile", &c.tls_private_key_file)?)
            .map_err(|e| tls(&e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls(&e))?;
        let mut config = if c.tls_ca_file.is_empty() {
            builder
                .with_no_client_auth()
                .with_single_cert(certs, kubeedge_pki::rustls_key(&key))
                .map_err(|e| tls(&e))?
        } else {
            // Every CA of the file (a bundle) is trusted.
            let mut roots = rustls::RootCertStore::empty();
            for ca in pem_chain(&Self::read("tlsCAFile", &c.tls_ca_file)?).map_err(|e| tls(&e))? {
                roots.add(ca).map_err(|e| tls(&e))?;
            }
            // A caller without a certificate may still present the token.
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| tls(&e))?;
            builder
                .with_client_cert_verifier(verifier)
                .with_single_cert(certs, kubeedge_pki::rustls_key(&key))
                .map_err(|e| tls(&e))?
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(Arc::new(config)))
    }
}

impl Module for RouterModule {
    fn name(&self) -> &'static str {
        module::ROUTER
    }

    fn group(&self) -> &'static str {
        module::ROUTER
    }

    fn prepare(&mut self) -> BoxFuture<'_, Result<(), ModuleError>> {
        Box::pin(async move {
            // Credentials and certificates are checked before anything listens.
            self.auth()?;
            self.tls()?;
            let addr = format!("{}:{}", self.cfg.address, self.cfg.port);
            let listener = TcpListener::bind(&addr).await.map_err(|source| RouterError::Bind {
                addr: addr.clone(),
                port: self.cfg.port,
                source,
            })?;
            self.listener = Some(listener);
            Ok(())
        })
    }

    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(async move {
            let listener = match self.listener.take() {
                Some(l) => l,
                None => {
                    let addr = format!("{}:{}", self.cfg.address, self.cfg.port);
                    TcpListener::bind(&addr).await.map_err(|source| RouterError::Bind {
                        addr,
                        port: self.cfg.port,
                        source,
                    })?
                }
            };
            let (auth, tls) = (self.auth()?, self.tls()?);
            let client = kube_client(&self.kube).await?;
            crate::kubeclient::install_crds(&client, kubeedge_apis::rules::GROUP).await?;
            let stop = ctx.shutdown().child_token();
            let _guard = stop.clone().drop_guard();
            let (reporter, results) = status::channel();
            ctx.spawn(status::run(client.clone(), results, stop.clone()));
            let (tables_tx, tables) = tokio::sync::watch::channel(Arc::new(Table::default()));
            let (connected_tx, connected) = tokio::sync::mpsc::channel(1024);
            ctx.spawn(watch::run(
                client.clone(),
                tables_tx,
                self.links.clone(),
                connected,
                reporter.clone(),
                stop.clone(),
            ));
            let timeout = self.cfg.rest_timeout();
            let shared = Arc::new(Shared {
                tables,
                links: self.links.clone(),
                bus: ctx.bus.clone(),
                reporter,
                caller: Caller::new(timeout),
                client,
                timeout,
                auth,
                metrics: self.metrics.clone(),
            });
            ctx.spawn(rest::serve(listener, tls, shared.clone(), stop.clone()));
            info!(timeout_secs = timeout.as_secs(), "Router started.");
            let slots = Arc::new(Semaphore::new(CONCURRENT_UPLOADS));
            while let Some(msg) = ctx.recv().await {
                if msg.router.source == module::CLOUDHUB && msg.operation() == Operation::Connected {
                    if let Some(node) = CloudResource::node_of(&msg.router.resource) {
                        let _ = connected_tx.try_send(node.to_owned());
                    }
                    continue;
                }
                if msg.operation() != Operation::Upload || msg.router.group != group::USER {
                    debug!(source = %msg.router.source, op = %msg.router.operation, "Router: not an edge upload; dropped.");
                    continue;
                }
                // Never waits: a full Router fails the upload at once (the connect notices
                // behind it in the inbox must not wait on slow rest targets).
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    busy(&shared, &msg).await;
                    continue;
                };
                let shared = shared.clone();
                ctx.spawn(async move {
                    upload(&shared, msg).await;
                    drop(permit);
                });
            }
            Ok(())
        })
    }
}

/// Every certificate of a PEM file, for rustls.
fn pem_chain(text: &str) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, kubeedge_pki::Error> {
    Ok(kubeedge_pki::parse_pem_certificates(text)?.into_iter().map(Into::into).collect())
}

/// An edge upload: a message from the node's broker or an edge app's call.
async fn upload(shared: &Shared, msg: Message) {
    let Some(node) = CloudResource::node_of(&msg.router.resource).map(str::to_owned) else { return };
    let what = kubeedge_model::trim_node_prefix(&msg.router.resource).to_owned();
    let table = shared.tables.borrow().clone();
    if msg.router.source == servicebus::SERVICEBUS {
        let Some(route) = table.match_target_url(&node, &what) else {
            shared.metrics.requests.with_label_values(&["servicebus_rest", "no_rule"]).inc();
            reply_error(shared, &msg, &format!("no rule routes {what} from node {node}"));
            return;
        };
        let Target::Rest { url } = &route.target else { return };
        let Some(req) = servicebus::parse_upload(&msg.content) else {
            count(shared, &route, "servicebus_rest", Outcome::Failed("an edge call that does not parse".into())).await;
            reply_error(shared, &msg, "invalid params");
            return;
        };
        // Always POST, as upstream: the Rule allows the edge app to send, not to choose a method.
        match shared.caller.call("POST", url, req.payload_bytes().into()).await {
            Ok(answer) => {
                let body = String::from_utf8_lossy(&answer.body).into_owned();
                let _ = shared.links.dispatch(Message::response_to(&msg, Content::string(&body)));
                count(shared, &route, "servicebus_rest", Outcome::Delivered).await;
            }
            Err(e) => {
                reply_error(shared, &msg, &e.to_string());
                count(shared, &route, "servicebus_rest", Outcome::Failed(e.to_string())).await;
            }
        }
        return;
    }
    // Anything else comes from the node's broker: `what` is the topic.
    let Some(route) = table.match_topic(&node, &what) else {
        shared.metrics.requests.with_label_values(&["eventbus_rest", "no_rule"]).inc();
        debug!(%node, topic = %what, "No rule for an edge topic; dropped.");
        return;
    };
    let Target::Rest { url } = &route.target else { return };
    let outcome = match shared.caller.call("POST", url, bytes::Bytes::from(msg.content.data().into_owned())).await {
        Ok(_) => Outcome::Delivered,
        Err(e) => Outcome::Failed(e.to_string()),
    };
    count(shared, &route, "eventbus_rest", outcome).await;
}

/// An upload the Router has no room for: failed at once (the edge app is told).
async fn busy(shared: &Shared, msg: &Message) {
    let why = format!("the Router is handling {CONCURRENT_UPLOADS} edge messages; try again");
    debug!(source = %msg.router.source, resource = %msg.router.resource, "{why}");
    let Some(node) = CloudResource::node_of(&msg.router.resource) else { return };
    let what = kubeedge_model::trim_node_prefix(&msg.router.resource);
    let table = shared.tables.borrow().clone();
    let (route, label) = if msg.router.source == servicebus::SERVICEBUS {
        reply_error(shared, msg, &why);
        (table.match_target_url(node, what), "servicebus_rest")
    } else {
        (table.match_topic(node, what), "eventbus_rest")
    };
    if let Some(route) = route {
        count(shared, &route, label, Outcome::Failed(why)).await;
    }
}

async fn count(shared: &Shared, route: &Route, label: &str, outcome: Outcome) {
    let result = if outcome == Outcome::Delivered { "ok" } else { "failed" };
    shared.metrics.requests.with_label_values(&[label, result]).inc();
    shared.reporter.report((route.namespace.clone(), route.name.clone()), outcome).await;
}

/// An error answer to an edge app's call: ServiceBus tells the app.
fn reply_error(shared: &Shared, request: &Message, why: &str) {
    let mut reply = Message::error_response_to(request, why);
    reply.router.source = module::ROUTER.to_owned();
    reply.router.group = group::USER.to_owned();
    let _ = shared.links.dispatch(reply);
}
