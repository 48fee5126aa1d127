//! `modules.metaManager`: the local metadata store, and MetaServer, its list/watch API for
//! edge pods.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::common::{CA_FILE, CERT_FILE, KEY_FILE, secs};
use crate::validate::{Checker, split_host_port};

/// `modules.metaManager`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct MetaManager {
    /// Run the module.
    pub enable: bool,
    /// Beehive group for remote queries (default `hub`).
    pub context_send_group: String,
    /// Beehive module for remote queries (default `websocket`).
    pub context_send_module: String,
    /// Seconds to wait for a cloud answer (default 60).
    pub remote_query_timeout: i32,
    /// Local list/watch API server for edge pods.
    pub meta_server: MetaServer,
}

impl Default for MetaManager {
    fn default() -> Self {
        Self {
            enable: true,
            context_send_group: "hub".to_owned(),
            context_send_module: "websocket".to_owned(),
            remote_query_timeout: 60,
            meta_server: MetaServer::default(),
        }
    }
}

impl MetaManager {
    /// `remoteQueryTimeout` (seconds) as a [`Duration`].
    pub fn remote_query_timeout(&self) -> Duration {
        secs(self.remote_query_timeout.into())
    }
    /// Checks `modules.metaManager` and its MetaServer when enabled.
    pub(super) fn validate(&self, c: &mut Checker) {
        if !self.enable {
            return;
        }
        let at = "modules.metaManager";
        c.non_empty(&format!("{at}.contextSendGroup"), &self.context_send_group);
        c.non_empty(&format!("{at}.contextSendModule"), &self.context_send_module);
        c.positive(&format!("{at}.remoteQueryTimeout"), self.remote_query_timeout.into());
        let ms = &self.meta_server;
        if ms.enable {
            if c.host_port(&format!("{at}.metaServer.server"), &ms.server) {
                meta_server_tls(c, &format!("{at}.metaServer"), ms);
            }
            if !ms.dummy_server.is_empty() {
                c.host_port(&format!("{at}.metaServer.dummyServer"), &ms.dummy_server);
            }
        }
    }
}

/// `modules.metaManager.metaServer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct MetaServer {
    /// Serve (default false).
    pub enable: bool,
    /// `host:port` (default `127.0.0.1:10550`).
    pub server: String,
    /// CA certificate.
    #[serde(rename = "tlsCaFile")]
    pub tls_ca_file: String,
    /// Server certificate.
    pub tls_cert_file: String,
    /// Server key.
    pub tls_private_key_file: String,
    /// Accepted service account token issuers.
    pub service_account_issuers: Vec<String>,
    /// Accepted audiences; upstream default is unset (`null`).
    pub api_audiences: Option<Vec<String>>,
    /// Service account public keys; upstream default is unset (`null`).
    pub service_account_key_files: Option<Vec<String>>,
    /// Address of the dummy interface for in-cluster config (default `169.254.30.10:10550`).
    pub dummy_server: String,
}

impl Default for MetaServer {
    fn default() -> Self {
        Self {
            enable: false,
            server: "127.0.0.1:10550".to_owned(),
            tls_ca_file: CA_FILE.to_owned(),
            tls_cert_file: CERT_FILE.to_owned(),
            tls_private_key_file: KEY_FILE.to_owned(),
            service_account_issuers: vec!["https://kubernetes.default.svc.cluster.local".to_owned()],
            api_audiences: None,
            service_account_key_files: None,
            dummy_server: "169.254.30.10:10550".to_owned(),
        }
    }
}

/// Off loopback MetaServer needs TLS with client certificates: the three files must be set and
/// exist (their contents are checked when MetaServer starts).
fn meta_server_tls(c: &mut Checker, at: &str, ms: &MetaServer) {
    let host = split_host_port(&ms.server).map(|(h, _)| h).unwrap_or_default();
    let loopback =
        host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback {
        return;
    }
    for (field, path) in [
        ("tlsCertFile", &ms.tls_cert_file),
        ("tlsPrivateKeyFile", &ms.tls_private_key_file),
        ("tlsCaFile", &ms.tls_ca_file),
    ] {
        if path.is_empty() || !std::path::Path::new(path).is_file() {
            c.error(
                format!("{at}.{field}"),
                format!(
                    "MetaServer on non-loopback address {:?} is served only over TLS with client certificates; \
                     {field} {path:?} does not exist",
                    ms.server
                ),
            );
        }
    }
}
