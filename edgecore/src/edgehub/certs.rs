//! Certificate bootstrap from the join token, as upstream's `edgehub/certificate` does it:
//!
//! 1. split the token into the CA hash and the JWT;
//! 2. `GET {httpServer}/ca.crt` without verifying the server (there is no CA yet) and check the
//!    CA's SHA-256 against the token's hash — this is what makes the unverified fetch safe;
//! 3. `GET {httpServer}/edge.crt` with a fresh CSR (`CN=system:node:{node}`, `O=system:nodes`),
//!    `NodeName` and `Authorization: Bearer {jwt}`, now verifying the server against that CA;
//! 4. write the CA (PEM), the certificate (PEM) and the key (`EC PRIVATE KEY`, mode 0600).
//!
//! `keadm join` uses the same steps without writing ([`request`], [`fetch_ca`] with the
//! server's `Date` for its clock check) and installs the files itself.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tracing::info;

/// The largest response accepted from the join API.
const MAX_RESPONSE: usize = 64 * 1024;

/// Errors of the bootstrap.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The token is malformed.
    #[error("the join token is invalid")]
    Token(#[source] kubeedge_pki::Error),
    /// The CA served does not match the token: the server is not the cloud the token is for.
    #[error("the CA at {server} does not match the token's hash (got {got}, want {want})")]
    CaMismatch {
        /// The join server.
        server: String,
        /// The served CA's hash.
        got: String,
        /// The token's hash.
        want: String,
    },
    /// `httpServer` is not an `https://host:port` URL.
    #[error("httpServer {0:?} must be https://host:port")]
    Url(String),
    /// The join API refused the request.
    #[error("{path} answered {status}: {body}")]
    Refused {
        /// The path requested.
        path: &'static str,
        /// The HTTP status.
        status: u16,
        /// What it said.
        body: String,
    },
    /// Networking or TLS failed.
    #[error("talking to {server}")]
    Io {
        /// The join server.
        server: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// HTTP failed.
    #[error("HTTP to {server}: {message}")]
    Http {
        /// The join server.
        server: String,
        /// Why.
        message: String,
    },
    /// A certificate or key could not be made or read.
    #[error("certificate")]
    Pki(#[from] kubeedge_pki::Error),
    /// A credentials file could not be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("writing {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Where the edge keeps its credentials (`tlsCaFile`, `tlsCertFile`, `tlsPrivateKeyFile`).
#[derive(Debug, Clone)]
pub struct CertPaths {
    /// The CA, PEM.
    pub ca: PathBuf,
    /// The node certificate, PEM.
    pub cert: PathBuf,
    /// The node key, `EC PRIVATE KEY` PEM.
    pub key: PathBuf,
}

/// Whether the edge must (re)join: a file is missing or unreadable, or the certificate is not
/// this node's (upstream re-applies when the CN is not `system:node:{node}`).
pub async fn needs_bootstrap(paths: &CertPaths, node: &str) -> bool {
    let Ok(cert_pem) = tokio::fs::read_to_string(&paths.cert).await else { return true };
    if tokio::fs::metadata(&paths.ca).await.is_err() || tokio::fs::metadata(&paths.key).await.is_err() {
        return true;
    }
    let Ok((_, der)) = kubeedge_pki::parse_pem(&cert_pem) else { return true };
    !kubeedge_pki::subject(&der).is_ok_and(|(cn, _)| cn == format!("system:node:{node}"))
}

/// What a join obtains: the CA, the node certificate and its key (DER / SEC1).
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The CA certificate, DER.
    pub ca_der: Vec<u8>,
    /// The node certificate, DER.
    pub cert_der: Vec<u8>,
    /// The node key, SEC1 DER.
    pub key_sec1: Vec<u8>,
}

impl Credentials {
    /// Writes the CA (PEM), the certificate (PEM) and the key (`EC PRIVATE KEY`, mode 0600),
    /// each beside its place first and then renamed.
    pub async fn write(&self, paths: &CertPaths) -> Result<(), Error> {
        write(&paths.ca, kubeedge_pki::pem("CERTIFICATE", &self.ca_der).as_bytes(), 0o644).await?;
        write(&paths.cert, kubeedge_pki::pem("CERTIFICATE", &self.cert_der).as_bytes(), 0o644).await?;
        write(&paths.key, kubeedge_pki::pem("EC PRIVATE KEY", &self.key_sec1).as_bytes(), 0o600).await
    }
}

/// The CA as `GET {httpServer}/ca.crt` serves it (unverified: check it against the token's
/// hash before trusting it), with the server's `Date` header (for clock checks).
pub async fn fetch_ca(http_server: &str) -> Result<(Vec<u8>, Option<String>), Error> {
    let target = Target::parse(http_server)?;
    let insecure = kubeedge_pki::insecure_client_config()
        .map_err(|e| Error::Http { server: target.addr.clone(), message: e.to_string() })?;
    let reply = target.send(Arc::new(insecure), "/ca.crt", &[], Vec::new()).await?;
    let date = reply.date.clone();
    Ok((reply.ok("/ca.crt")?, date))
}

/// Joins with the token without writing anything: fetches and checks the CA, then asks for
/// a certificate for `node` with a fresh key.
pub async fn request(http_server: &str, token: &str, node: &str) -> Result<Credentials, Error> {
    let (want, jwt) = kubeedge_pki::split_token(token).map_err(Error::Token)?;
    let target = Target::parse(http_server)?;
    let (ca_der, _) = fetch_ca(http_server).await?;
    let got = kubeedge_pki::ca_hash(&ca_der);
    if got != want {
        return Err(Error::CaMismatch { server: target.addr.clone(), got, want: want.to_owned() });
    }
    let (csr, key_sec1) = kubeedge_pki::edge_csr(node)?;
    let bearer = format!("Bearer {jwt}");
    let tls = verified(&target, &ca_der)?;
    let reply = target.send(tls, "/edge.crt", &[("NodeName", node), ("Authorization", &bearer)], csr).await?;
    let cert_der = reply.ok("/edge.crt")?;
    Ok(Credentials { ca_der, cert_der, key_sec1 })
}

/// Joins with the token: fetches and checks the CA, gets a certificate, writes the files.
pub async fn bootstrap(http_server: &str, token: &str, node: &str, paths: &CertPaths) -> Result<(), Error> {
    let creds = request(http_server, token, node).await?;
    creds.write(paths).await?;
    info!(node, server = %http_server, "Joined: certificate written.");
    Ok(())
}

/// A TLS client config trusting only `ca_der`.
fn verified(target: &Target, ca_der: &[u8]) -> Result<Arc<rustls::ClientConfig>, Error> {
    let http = |e: &dyn std::fmt::Display| Error::Http { server: target.addr.clone(), message: e.to_string() };
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca_der.to_vec())).map_err(|e| http(&e))?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| http(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Renews the node certificate before it expires (upstream's rotation): a fresh key and CSR,
/// authenticated with the current client certificate and no token, then the new certificate
/// and key replace the files. The CA is kept.
pub async fn rotate(http_server: &str, node: &str, paths: &CertPaths) -> Result<(), Error> {
    let target = Target::parse(http_server)?;
    let http = |e: &dyn std::fmt::Display| Error::Http { server: target.addr.clone(), message: e.to_string() };
    let ca_der = read_pem(&paths.ca).await?;
    let cert_der = read_pem(&paths.cert).await?;
    let key_pem = tokio::fs::read_to_string(&paths.key)
        .await
        .map_err(|source| Error::Read { path: paths.key.clone(), source })?;
    let key = kubeedge_pki::key_from_pem(&key_pem)?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca_der)).map_err(|e| http(&e))?;
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| http(&e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![CertificateDer::from(cert_der)], kubeedge_pki::rustls_key(&key))
        .map_err(|e| http(&e))?;
    let (csr, key_sec1) = kubeedge_pki::edge_csr(node)?;
    let new_cert = target.send(Arc::new(tls), "/edge.crt", &[("NodeName", node)], csr).await?.ok("/edge.crt")?;
    // The key first: a crash between the two leaves a new key with the old certificate, which
    // `needs_bootstrap` cannot see; the certificate first would be worse (a key that does not
    // match). Either way the next start re-joins or the old pair is still valid.
    write(&paths.key, kubeedge_pki::pem("EC PRIVATE KEY", &key_sec1).as_bytes(), 0o600).await?;
    write(&paths.cert, kubeedge_pki::pem("CERTIFICATE", &new_cert).as_bytes(), 0o644).await?;
    let (_, not_after) = kubeedge_pki::validity(&new_cert)?;
    info!(node, not_after, "Certificate rotated.");
    Ok(())
}

/// When the certificate at `path` should be renewed: NotBefore + U[0.7, 0.9) × validity, as
/// upstream (Unix seconds); `None` if it cannot be read.
pub async fn rotation_deadline(path: &Path) -> Option<f64> {
    let der = read_pem(path).await.ok()?;
    let (nb, na) = kubeedge_pki::validity(&der).ok()?;
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|t| t.subsec_nanos()).unwrap_or(0);
    let fraction = 0.7 + 0.2 * f64::from(nanos % 10_000) / 10_000.0;
    #[allow(clippy::cast_precision_loss)]
    Some(nb as f64 + (na - nb) as f64 * fraction)
}

async fn read_pem(path: &Path) -> Result<Vec<u8>, Error> {
    let text = tokio::fs::read_to_string(path).await.map_err(|source| Error::Read { path: path.to_owned(), source })?;
    Ok(kubeedge_pki::parse_pem(&text)?.1)
}

async fn write(path: &Path, data: &[u8], mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let err = |source| Error::Write { path: path.to_owned(), source };
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(err)?;
    }
    // Written beside, then renamed: a crash never leaves half a key. Created with its final
    // mode (a key is never readable by others, not even while being written); a leftover of
    // a crash is removed first, since an existing file would keep its own mode.
    let tmp = path.with_extension("tmp");
    match tokio::fs::remove_file(&tmp).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
        _ => {}
    }
    let mut f = tokio::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).await.map_err(err)?;
    tokio::io::AsyncWriteExt::write_all(&mut f, data).await.map_err(err)?;
    f.sync_all().await.map_err(err)?;
    drop(f);
    // The umask may have narrowed `mode`; set it exactly.
    tokio::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).await.map_err(err)?;
    tokio::fs::rename(&tmp, path).await.map_err(err)
}

/// How long one request to the join API may take, from connect to the last byte.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

struct Target {
    addr: String,
    host: String,
}

impl Target {
    fn parse(url: &str) -> Result<Self, Error> {
        let rest = url.strip_prefix("https://").ok_or_else(|| Error::Url(url.to_owned()))?;
        let addr = rest.trim_end_matches('/').to_owned();
        let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(&addr).trim_matches(['[', ']']).to_owned();
        if host.is_empty() || addr.contains('/') {
            return Err(Error::Url(url.to_owned()));
        }
        let addr = if addr.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
            addr
        } else {
            format!("{addr}:443")
        };
        Ok(Self { addr, host })
    }

    /// A GET (with a body when given, as `/edge.crt` takes one) returning the status, the
    /// `Date` header and a capped body.
    async fn send(
        &self,
        tls: Arc<rustls::ClientConfig>,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Reply, Error> {
        // Connect to answer: a port that accepts and never answers must not hang a join.
        match tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(tls, path, headers, body)).await {
            Ok(reply) => reply,
            Err(_) => {
                Err(Error::Http { server: self.addr.clone(), message: format!("no answer within {REQUEST_TIMEOUT:?}") })
            }
        }
    }

    async fn exchange(
        &self,
        tls: Arc<rustls::ClientConfig>,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Reply, Error> {
        let io = |source| Error::Io { server: self.addr.clone(), source };
        let http = |e: &dyn std::fmt::Display| Error::Http { server: self.addr.clone(), message: e.to_string() };
        let tcp = tokio::net::TcpStream::connect(&self.addr).await.map_err(io)?;
        let name = ServerName::try_from(self.host.clone()).map_err(|e| http(&e))?;
        let stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.map_err(io)?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| http(&e))?;
        tokio::spawn(conn);
        let mut req = http::Request::get(path).header("host", &self.addr);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(body))).map_err(|e| http(&e))?;
        let resp = send.send_request(req).await.map_err(|e| http(&e))?;
        let status = resp.status().as_u16();
        let date = resp.headers().get(http::header::DATE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body =
            Limited::new(resp.into_body(), MAX_RESPONSE).collect().await.map_err(|e| http(&*e))?.to_bytes().to_vec();
        Ok(Reply { status, date, body })
    }
}

/// An answer of the join API.
struct Reply {
    status: u16,
    date: Option<String>,
    body: Vec<u8>,
}

impl Reply {
    /// The body of a 200, else [`Error::Refused`] with what the server said.
    fn ok(self, path: &'static str) -> Result<Vec<u8>, Error> {
        if self.status != 200 {
            return Err(Error::Refused {
                path,
                status: self.status,
                body: String::from_utf8_lossy(&self.body).chars().take(200).collect(),
            });
        }
        Ok(self.body)
    }
}
