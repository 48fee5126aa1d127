//! apiserver-lite: an in-memory Kubernetes API server that the real `kubectl` and kube-rs accept.
//!
//! No kube-apiserver can be installed on our machines, yet cloudcore must be tested against the
//! Kubernetes API. This is the stand-in: HTTPS with a generated CA, bearer-token and
//! client-certificate authentication, discovery, CRUD with resourceVersions and optimistic
//! concurrency, list/watch with selectors, bookmarks and 410 Gone, the patch types, server-side
//! apply, Tables for `kubectl get`, CRDs registered at run time, graceful pod deletion, and
//! `pods/log`, `exec`, `attach`, `portforward` and `nodes/proxy` proxied to the node's kubelet
//! with a kubelet-client certificate. The REST machinery itself lives in
//! `kubeedge-kube-serve`, shared with edgecore's MetaServer.
//!
//! ```no_run
//! # async fn demo() -> Result<(), apiserver_lite::Error> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let server = apiserver_lite::ApiServer::start(listener, apiserver_lite::Options::default()).await?;
//! std::fs::write("kubeconfig", server.kubeconfig())?;
//! # Ok(()) }
//! ```

mod api;
pub mod auth;
mod defaults;
mod object;
mod proxy;
pub mod registry;
pub mod satoken;
mod server;
pub mod store;
pub mod tls;
mod watch;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::{Authenticator, User};
use crate::server::Shared;
use crate::store::Store;
use crate::tls::{CertPair, Pki};

pub use server::MAX_BODY;

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Certificates could not be made.
    #[error("setting up TLS")]
    Tls(#[from] tls::TlsError),
    /// A socket or file operation failed.
    #[error("I/O")]
    Io(#[from] std::io::Error),
}

/// Start-up options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Watch events kept per resource type for resuming watches (older versions get 410 Gone).
    pub history: usize,
    /// About how many bytes of objects the watch histories of all types keep together; the
    /// oldest events go first.
    pub history_bytes: usize,
    /// Extra subject alternative names for the serving certificate (IPs or DNS names).
    pub extra_sans: Vec<String>,
    /// Offer HTTP/1.1 only in TLS (ALPN), as a kube-apiserver behind an HTTP/1.1 proxy or with
    /// HTTP/2 turned off: clients that need HTTP/2 cannot agree on it.
    pub http1_only: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            history: store::DEFAULT_HISTORY,
            history_bytes: store::DEFAULT_HISTORY_BYTES,
            extra_sans: Vec::new(),
            http1_only: false,
        }
    }
}

/// A running server.
pub struct ApiServer {
    addr: SocketAddr,
    pki: Pki,
    admin: CertPair,
    kubelet_client: CertPair,
    admin_token: String,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl ApiServer {
    /// Serves on an already-bound listener.
    pub async fn start(listener: TcpListener, opts: Options) -> Result<Self, Error> {
        let addr = listener.local_addr()?;
        let pki = Pki::generate()?;
        let mut sans: Vec<String> = vec![
            "127.0.0.1".into(),
            "::1".into(),
            "localhost".into(),
            "kubernetes".into(),
            "kubernetes.default.svc".into(),
        ];
        sans.push(addr.ip().to_string());
        sans.extend(opts.extra_sans.iter().cloned());
        sans.dedup();
        let san_refs: Vec<&str> = sans.iter().map(String::as_str).collect();
        let (_, mut tls_config) = pki.issue_server(&san_refs)?;
        if opts.http1_only {
            tls_config.alpn_protocols = vec![b"http/1.1".to_vec()];
        }
        let admin = pki.issue_client("kubernetes-admin", &["system:masters"])?;
        // What kube-apiserver presents to kubelets (`--kubelet-client-certificate`).
        let kubelet_client = pki.issue_client(proxy::KUBELET_CLIENT_CN, &[proxy::KUBELET_CLIENT_GROUP])?;
        let kubelet = proxy::KubeletClient::new(&kubelet_client)?;
        let auth = Arc::new(Authenticator::default());
        let admin_token = auth::random_token();
        auth.add_token(&admin_token, User { name: "kubernetes-admin".into(), groups: vec!["system:masters".into()] });
        let store = Arc::new(Store::new(opts.history, opts.history_bytes, pki.ca_pem()));
        let shared = Arc::new(Shared {
            store,
            auth,
            ca_pem: pki.ca_pem().to_owned(),
            shutdown: CancellationToken::new(),
            watch_reset: parking_lot::Mutex::new(CancellationToken::new()),
            address: addr,
            kubelet,
        });
        let task = tokio::spawn(server::serve(listener, tls_config, shared.clone()));
        Ok(Self { addr, pki, admin, kubelet_client, admin_token, shared, task })
    }

    /// The address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://{addr}`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The cluster CA, PEM.
    pub fn ca_pem(&self) -> &str {
        self.pki.ca_pem()
    }

    /// The admin bearer token.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The admin client certificate (CN `kubernetes-admin`, O `system:masters`).
    pub fn admin_cert(&self) -> &CertPair {
        &self.admin
    }

    /// The certificate presented to kubelets on pods/log, exec, attach, portforward and
    /// nodes/proxy: CN `kube-apiserver-kubelet-client`, O `kubeadm:cluster-admins`, signed by
    /// the cluster CA (the one in every namespace's `kube-root-ca.crt`).
    pub fn kubelet_client_cert(&self) -> &CertPair {
        &self.kubelet_client
    }

    /// A client certificate for any user, signed by the cluster CA.
    pub fn issue_client_cert(&self, user: &str, groups: &[&str]) -> Result<CertPair, Error> {
        Ok(self.pki.issue_client(user, groups)?)
    }

    /// Registers a bearer token.
    pub fn add_token(&self, token: &str, user: &str, groups: &[&str]) {
        self.shared
            .auth
            .add_token(token, User { name: user.into(), groups: groups.iter().map(|g| (*g).to_owned()).collect() });
    }

    /// The object store (for tests and benchmarks that inspect or seed it directly).
    pub fn store(&self) -> Arc<Store> {
        self.shared.store.clone()
    }

    /// A kubeconfig with two contexts: `apiserver-lite` (the admin client certificate, current)
    /// and `apiserver-lite-token` (the admin bearer token).
    pub fn kubeconfig(&self) -> String {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: apiserver-lite
  cluster:
    server: {url}
    certificate-authority-data: {ca}
users:
- name: admin
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
- name: admin-token
  user:
    token: {token}
contexts:
- name: apiserver-lite
  context:
    cluster: apiserver-lite
    user: admin
- name: apiserver-lite-token
  context:
    cluster: apiserver-lite
    user: admin-token
current-context: apiserver-lite
preferences: {{}}
",
            url = self.url(),
            ca = b64(self.pki.ca_pem()),
            cert = b64(&self.admin.cert_pem),
            key = b64(&self.admin.key_pem),
            token = self.admin_token,
        )
    }

    /// Ends every open watch stream (clients see the connection drop and must re-watch).
    pub fn interrupt_watches(&self) {
        let mut token = self.shared.watch_reset.lock();
        token.cancel();
        *token = CancellationToken::new();
    }

    /// Stops serving: ends watches and streams, closes the listener.
    pub async fn shutdown(self) {
        self.shared.shutdown.cancel();
        let _ = self.task.await;
    }
}
