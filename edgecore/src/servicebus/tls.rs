//! HTTPS for ServiceBus's server (`tlsCertFile`, `tlsPrivateKeyFile`), as upstream's
//! `buildServiceBusTLSOptions`: a serving certificate (serverAuth), TLS 1.2 or later, no client
//! certificates.
//!
//! Upstream reads the files at every handshake, so a renewed certificate is served at once.
//! Here the server checks the files' modification times before a handshake, at most once a
//! second, and loads them again when they changed; a pair that does not load (a renewal half
//! written) is logged and the previous one kept. Files that do not load at start stop
//! edgecore, naming the field. The certificate file may hold a chain (the leaf first); the key
//! may be EC (SEC1 or PKCS#8) or RSA (PKCS#1 or PKCS#8).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kubeedge_pki::rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::time::Instant;
use tracing::{info, warn};

use super::Error;

const CERT_FIELD: &str = "modules.serviceBus.tlsCertFile";
const KEY_FIELD: &str = "modules.serviceBus.tlsPrivateKeyFile";
/// How often the files' modification times are looked at, at most.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The serving config and what it was loaded from. Owned by the accept loop.
#[derive(Clone)]
pub(super) struct ServerTls {
    cert: String,
    key: String,
    config: Arc<rustls::ServerConfig>,
    /// The files' modification times when `config` was loaded.
    stamp: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
}

impl ServerTls {
    /// Loads the pair, or says which field is wrong.
    pub(super) async fn load(cert: &str, key: &str) -> Result<Self, Error> {
        let stamp = stamps(cert, key).await;
        let config = Arc::new(build(cert, key).await?);
        Ok(Self { cert: cert.to_owned(), key: key.to_owned(), config, stamp, checked: Instant::now() })
    }

    /// An acceptor for the next connection, with the files loaded again if they changed.
    pub(super) async fn acceptor(&mut self) -> tokio_rustls::TlsAcceptor {
        if self.checked.elapsed() >= CHECK_EVERY {
            self.checked = Instant::now();
            let now = stamps(&self.cert, &self.key).await;
            if now != self.stamp {
                match build(&self.cert, &self.key).await {
                    Ok(config) => {
                        self.config = Arc::new(config);
                        self.stamp = now;
                        info!(cert = %self.cert, "Loaded ServiceBus's renewed serving certificate.");
                    }
                    Err(e) => warn!(error = %e, "ServiceBus's serving certificate changed but does not load; \
                        serving the previous one."),
                }
            }
        }
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }
}

async fn stamps(cert: &str, key: &str) -> (Option<SystemTime>, Option<SystemTime>) {
    let modified = |p: String| async move { tokio::fs::metadata(p).await.and_then(|m| m.modified()).ok() };
    (modified(cert.to_owned()).await, modified(key.to_owned()).await)
}

async fn build(cert_path: &str, key_path: &str) -> Result<rustls::ServerConfig, Error> {
    let err = |field: &'static str, path: &str, reason: String| Error::Tls { field, path: path.to_owned(), reason };
    let read = |field: &'static str, path: &str| {
        let path = path.to_owned();
        async move { tokio::fs::read_to_string(&path).await.map_err(|e| err(field, &path, format!("cannot be read: {e}"))) }
    };
    let chain: Vec<CertificateDer<'static>> = kubeedge_pki::parse_pem_certificates(&read(CERT_FIELD, cert_path).await?)
        .map_err(|e| err(CERT_FIELD, cert_path, e.to_string()))?
        .into_iter()
        .map(Into::into)
        .collect();
    let leaf = kubeedge_pki::cert_info(&chain[0]).map_err(|e| err(CERT_FIELD, cert_path, e.to_string()))?;
    if !leaf.server_auth {
        return Err(err(CERT_FIELD, cert_path, "is not a serving certificate (no serverAuth usage)".into()));
    }
    let key = private_key(&read(KEY_FIELD, key_path).await?).map_err(|e| err(KEY_FIELD, key_path, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|e| err(KEY_FIELD, key_path, format!("does not go with {CERT_FIELD}: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The key: EC through the house reader (which also takes upstream's SEC1 labelled `PRIVATE
/// KEY`), RSA as PKCS#1 or PKCS#8.
fn private_key(text: &str) -> Result<PrivateKeyDer<'static>, String> {
    if let Ok(sec1) = kubeedge_pki::key_from_pem(text) {
        return Ok(kubeedge_pki::rustls_key(&sec1));
    }
    let (label, der) = kubeedge_pki::parse_pem(text).map_err(|e| e.to_string())?;
    match label.as_str() {
        "RSA PRIVATE KEY" => Ok(PrivateKeyDer::Pkcs1(der.into())),
        "PRIVATE KEY" => Ok(PrivateKeyDer::Pkcs8(der.into())),
        other => Err(format!("holds an unsupported key ({other})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_serving_pair_loads_and_a_client_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = kubeedge_pki::Ca::generate().unwrap();
        let server = ca.issue_server(&["127.0.0.1".parse().unwrap()], &[]).unwrap();
        let (cert, key) = (dir.path().join("sb.crt"), dir.path().join("sb.key"));
        let chain =
            kubeedge_pki::pem("CERTIFICATE", &server.cert_der) + &kubeedge_pki::pem("CERTIFICATE", ca.cert_der());
        std::fs::write(&cert, chain).unwrap();
        std::fs::write(&key, kubeedge_pki::pem("EC PRIVATE KEY", &server.key_sec1)).unwrap();
        let (c, k) = (cert.to_str().unwrap(), key.to_str().unwrap());
        ServerTls::load(c, k).await.expect("a serving pair");

        let (csr, node_key) = kubeedge_pki::edge_csr("edge-1").unwrap();
        let client = ca.issue_node_client(&csr, "edge-1", Duration::from_secs(3600)).unwrap();
        std::fs::write(&cert, kubeedge_pki::pem("CERTIFICATE", &client)).unwrap();
        std::fs::write(&key, kubeedge_pki::pem("EC PRIVATE KEY", &node_key)).unwrap();
        let e = ServerTls::load(c, k).await.err().expect("a client certificate");
        assert!(e.to_string().starts_with(CERT_FIELD), "{e}");

        std::fs::write(&cert, kubeedge_pki::pem("CERTIFICATE", &server.cert_der)).unwrap();
        let e = ServerTls::load(c, "/nonexistent/sb.key").await.err().expect("no key");
        assert!(e.to_string().starts_with(KEY_FIELD), "{e}");
        let e = ServerTls::load(c, k).await.err().expect("the node's key with the server's certificate");
        assert!(e.to_string().contains("does not go with"), "{e}");
        std::fs::write(&cert, "not pem").unwrap();
        let e = ServerTls::load(c, k).await.err().expect("no certificate");
        assert!(e.to_string().contains("no CERTIFICATE"), "{e}");
    }
}
