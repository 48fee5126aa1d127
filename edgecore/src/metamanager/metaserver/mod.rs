//! MetaServer: edgecore's local Kubernetes API (upstream `edge/pkg/metamanager/metaserver`,
//! kubeedge/kubeedge), plain HTTP on `127.0.0.1:10550`.
//!
//! Pods on the node (and kubectl run on it) talk to this server instead of the cloud's
//! kube-apiserver, so they keep working while the link is down:
//!
//! - **Reads** (`get`, `list`, `watch`) are served from MetaManager's SQLite store (`meta_v2`
//!   rows, [`kubeedge_metastore::Store`]); watches follow MetaManager's committed changes
//!   ([`super::Changes`]) through a small replay history, so a client that resumes from a
//!   resourceVersion misses nothing, and one that asks for a version the history no longer holds
//!   gets `410 Gone` and re-lists, as with kube-apiserver.
//! - **Writes** (`create`, `update`, `updatestatus`, `patch`, `delete`) are proxied to the cloud's
//!   DynamicController with upstream's *Application* protocol ([`application`]) and nothing is
//!   written locally: the change comes back down through the cloud's normal sync. While the edge
//!   is offline a write fails at once with `503`.
//! - Discovery (`/api`, `/apis`, aggregated discovery, `/version`, `/openapi/v3`) describes the
//!   resources MetaManager stores ([`super::GVRS`]); `/healthz`, `/livez`, `/readyz` answer `ok`.
//!
//! The Kubernetes REST machinery (paths, selectors, Status errors, tables, discovery documents)
//! comes from `kubeedge-kube-serve`, shared with apiserver-lite.
//!
//! Deliberate differences from upstream: reads never ask the cloud first (upstream tries a
//! cloud `get`/`list` before its local store; serving locally is what makes the API usable
//! offline and fast, and MetaManager's store is kept current by the cloud's sync); no
//! pass-through of discovery to the cloud; no watch applications registered with the cloud; no
//! authentication (upstream's default, without the `requireAuthorization` feature gate), hence
//! loopback only unless configured otherwise. Not served: `pods/log`, `pods/exec` and the
//! special `POST` paths restart and unhold-upgrade. `POST /api/v1/taskupgrade/confirm-upgrade`
//! (`keadm ctl confirm`) is handed to the task manager over the bus
//! ([`crate::taskmanager::confirm`]).
//!
//! ```no_run
//! # async fn demo(
//! #     store: kubeedge_metastore::Store,
//! #     changes: edgecore::metamanager::Changes,
//! #     bus: kubeedge_beehive::Bus,
//! #     cfg: kubeedge_config::edgecore::MetaServer,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! use edgecore::metamanager::metaserver::{self, Options, Remote};
//!
//! // `connected` is the flag MetaManager flips on EdgeHub's connection notices.
//! let remote = Remote::new(bus, Default::default(), "edge-1");
//! let listener = tokio::net::TcpListener::bind(metaserver::bind_address(&cfg)?).await?;
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! metaserver::serve_with(listener, store, changes, remote, shutdown, Options::for_config(&cfg)?).await?;
//! # Ok(())
//! # }
//! ```

pub mod application;
mod catalog;
mod objects;
mod read;
mod server;
mod watch;
mod write;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use kubeedge_beehive::Bus;
use kubeedge_metastore::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Changes;

/// The largest request body accepted (kube-apiserver's limit for objects is about 3 MiB);
/// larger bodies are answered `413`.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// How long a write waits for the cloud's answer (upstream's `SendSync` timeout).
pub const APPLICATION_TIMEOUT: Duration = Duration::from_secs(10);

/// Default for [`Options::history`]: committed changes kept for watches that resume from a
/// resourceVersion.
pub const DEFAULT_HISTORY: usize = 1024;

/// Default for [`Options::history_bytes`]: the most object JSON the replay history holds.
pub const DEFAULT_HISTORY_BYTES: usize = 4 * 1024 * 1024;

/// Default for [`Options::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// The way to the cloud for writes: the bus (EdgeHub) and whether the link is up.
#[derive(Clone)]
pub struct Remote {
    /// The bus; requests go to EdgeHub (`websocket`).
    pub bus: Bus,
    /// Whether EdgeHub is connected now (MetaManager follows the connection notices).
    pub connected: Arc<AtomicBool>,
    /// This node's name.
    pub node: String,
}

impl Remote {
    /// A handle on the bus for `node`, with the shared connection flag.
    pub fn new(bus: Bus, connected: Arc<AtomicBool>, node: impl Into<String>) -> Self {
        Self { bus, connected, node: node.into() }
    }
}

/// Tuning of a MetaServer; [`Options::default`] is what upstream does.
#[derive(Debug, Clone)]
pub struct Options {
    /// TLS with client certificates, required to serve on a non-loopback address (plain HTTP
    /// is loopback only). [`Options::for_config`] builds it from `tlsCertFile`,
    /// `tlsPrivateKeyFile` and `tlsCaFile` when the configured address is not loopback.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Request body cap; default [`MAX_BODY`].
    pub max_body: usize,
    /// How long a write waits for the cloud; default [`APPLICATION_TIMEOUT`].
    pub application_timeout: Duration,
    /// Committed changes kept for resuming watches; default [`DEFAULT_HISTORY`].
    pub history: usize,
    /// Byte budget of the kept changes; default [`DEFAULT_HISTORY_BYTES`].
    pub history_bytes: usize,
    /// How often an idle watch that allows bookmarks gets one; default 30 s.
    pub bookmark_interval: Duration,
    /// Connections served at once; at the cap a new one replaces the connection idle longest,
    /// and waits only while every connection is busy. Default [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            tls: None,
            max_body: MAX_BODY,
            application_timeout: APPLICATION_TIMEOUT,
            history: DEFAULT_HISTORY,
            history_bytes: DEFAULT_HISTORY_BYTES,
            bookmark_interval: Duration::from_secs(30),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl Options {
    /// Options for the configured `modules.metaManager.metaServer`: on a non-loopback `server`
    /// address, mutual TLS from the configured files (see [`tls_config`]).
    pub fn for_config(cfg: &kubeedge_config::edgecore::MetaServer) -> Result<Self, Error> {
        let addr = bind_address(cfg)?;
        if addr.ip().is_loopback() {
            return Ok(Self::default());
        }
        Ok(Self { tls: Some(Arc::new(tls_config(cfg)?)), ..Self::default() })
    }
}

/// MetaServer's TLS off loopback, as upstream's `requireAuthorization` path: the serving
/// certificate and key from `tlsCertFile` and `tlsPrivateKeyFile` (it must be a server's,
/// with serverAuth: an edge's node certificate is a client certificate only), and a client
/// certificate required, verified against `tlsCaFile`. Read once at start.
pub fn tls_config(cfg: &kubeedge_config::edgecore::MetaServer) -> Result<rustls::ServerConfig, Error> {
    const AT: &str = "modules.metaManager.metaServer";
    let tls = |field: &str, path: &str, reason: String| Error::Tls {
        field: format!("{AT}.{field}"),
        path: path.to_owned(),
        reason,
    };
    let read = |field: &str, path: &str| {
        std::fs::read_to_string(path).map_err(|e| tls(field, path, format!("cannot be read: {e}")))
    };
    let (_, ca) = kubeedge_pki::parse_pem(&read("tlsCaFile", &cfg.tls_ca_file)?)
        .map_err(|e| tls("tlsCaFile", &cfg.tls_ca_file, e.to_string()))?;
    let (_, cert) = kubeedge_pki::parse_pem(&read("tlsCertFile", &cfg.tls_cert_file)?)
        .map_err(|e| tls("tlsCertFile", &cfg.tls_cert_file, e.to_string()))?;
    let serving = kubeedge_pki::cert_info(&cert).map_err(|e| tls("tlsCertFile", &cfg.tls_cert_file, e.to_string()))?;
    if !serving.server_auth {
        return Err(tls(
            "tlsCertFile",
            &cfg.tls_cert_file,
            "is not a serving certificate (no serverAuth usage; a node's certificate from CloudHub is a client certificate only)".into(),
        ));
    }
    let key = kubeedge_pki::key_from_pem(&read("tlsPrivateKeyFile", &cfg.tls_private_key_file)?)
        .map_err(|e| tls("tlsPrivateKeyFile", &cfg.tls_private_key_file, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.into()).map_err(|e| tls("tlsCaFile", &cfg.tls_ca_file, e.to_string()))?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| tls("tlsCaFile", &cfg.tls_ca_file, e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| {
            b.with_client_cert_verifier(verifier).with_single_cert(vec![cert.into()], kubeedge_pki::rustls_key(&key))
        })
        .map_err(|e| tls("tlsCertFile", &cfg.tls_cert_file, e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The address to bind from `modules.metaManager.metaServer.server` (`host:port`, the host an
/// IP address or `localhost`).
pub fn bind_address(cfg: &kubeedge_config::edgecore::MetaServer) -> Result<SocketAddr, Error> {
    let bad = || Error::BadAddress(cfg.server.clone());
    if let Ok(addr) = cfg.server.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (host, port) = cfg.server.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    Err(bad())
}

/// Why MetaServer could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listener is on a non-loopback address and [`Options::tls`] is unset.
    #[error(
        "refusing to serve MetaServer over plain HTTP on non-loopback address {0}: off loopback it needs TLS with \
         client certificates (modules.metaManager.metaServer.tlsCertFile, tlsPrivateKeyFile, tlsCaFile)"
    )]
    NotLoopback(SocketAddr),
    /// A TLS file for a non-loopback MetaServer is missing or unusable.
    #[error("{field} ({path}) {reason}")]
    Tls {
        /// The config field.
        field: String,
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The configured address is not `ip:port` or `localhost:port`.
    #[error("modules.metaManager.metaServer.server {0:?} is not an ip:port address")]
    BadAddress(String),
    /// The listener's address could not be read.
    #[error("reading the listener's address")]
    LocalAddr(#[source] std::io::Error),
    /// The meta store did not answer.
    #[error("reading the meta store")]
    Store(#[source] kubeedge_metastore::Error),
}

/// Serves MetaServer on `listener` until `shutdown` is cancelled, with default [`Options`]
/// (so only on a loopback address).
pub async fn serve(
    listener: TcpListener,
    store: Store,
    changes: Changes,
    remote: Remote,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    serve_with(listener, store, changes, remote, shutdown, Options::default()).await
}

/// Serves MetaServer on `listener` until `shutdown` is cancelled.
///
/// Returns after shutdown once open connections have finished (watches end at once), or after
/// a short grace period.
pub async fn serve_with(
    listener: TcpListener,
    store: Store,
    changes: Changes,
    remote: Remote,
    shutdown: CancellationToken,
    opts: Options,
) -> Result<(), Error> {
    let address = listener.local_addr().map_err(Error::LocalAddr)?;
    if !address.ip().is_loopback() && opts.tls.is_none() {
        return Err(Error::NotLoopback(address));
    }
    // Subscribe before reading the store's version: every change committed after the read is
    // then certain to reach the replay history.
    let rx = changes.subscribe();
    drop(changes);
    let floor = store.max_resource_version().await.map_err(Error::Store)?;
    let hub = watch::Hub::new(floor, opts.history, opts.history_bytes, super::CHANGES_CAP);
    info!(%address, resource_version = floor, "MetaServer is serving.");
    let shared = Arc::new(server::Shared {
        store: store.clone(),
        remote,
        hub: hub.clone(),
        catalog: catalog::Catalog::new(),
        address,
        shutdown: shutdown.clone(),
        opts,
    });
    let hub_task = tokio::spawn(hub.run(rx, store, shutdown.clone()));
    server::run(listener, shared, shutdown).await;
    if let Err(e) = hub_task.await {
        warn!(error = %e, "MetaServer's change feed task failed.");
    }
    info!(%address, "MetaServer stopped.");
    Ok(())
}
