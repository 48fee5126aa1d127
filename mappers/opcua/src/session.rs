//! Opening an OPC UA session for one device: the security policy and mode, the mapper's own
//! certificate, the server's certificate pinned in a private PKI directory, and the user.
//!
//! The session's event loop runs with no retries of its own: when the connection breaks the
//! loop ends, the next call fails with a connection error, and the framework reconnects with its
//! backoff and marks the device `offline` meanwhile.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use kubeedge_mapper_framework::ProtocolError;
use opcua::client::{ClientBuilder, IdentityToken, Password, Session};
use opcua::crypto::{CertificateStore, SecurityPolicy};
use opcua::types::{EndpointDescription, MessageSecurityMode, StatusCode};
use tokio::task::JoinHandle;

use crate::DeviceConfig;

/// Where per-server PKI directories go when the device does not name one.
const DEFAULT_PKI_DIR: &str = "/var/lib/kubeedge/mappers/opcua/pki";

/// An open session and the task running its event loop.
pub struct Opened {
    pub session: Arc<Session>,
    pub event_loop: JoinHandle<StatusCode>,
}

/// The policy and mode a device asks for, checked for consistency.
fn security(c: &DeviceConfig) -> Result<(SecurityPolicy, MessageSecurityMode), ProtocolError> {
    let name = c.security_policy.as_deref().unwrap_or("None");
    let policy = SecurityPolicy::from_str(name).ok().filter(|p| *p != SecurityPolicy::Unknown).ok_or_else(|| {
        ProtocolError::config(format!(
            "securityPolicy {name:?} is not known (None, Basic256Sha256, Aes128Sha256RsaOaep, Aes256Sha256RsaPss)"
        ))
    })?;
    let default_mode = if policy == SecurityPolicy::None { "None" } else { "SignAndEncrypt" };
    let mode = match c.security_mode.as_deref().unwrap_or(default_mode) {
        "None" => MessageSecurityMode::None,
        "Sign" => MessageSecurityMode::Sign,
        "SignAndEncrypt" => MessageSecurityMode::SignAndEncrypt,
        other => {
            return Err(ProtocolError::config(format!(
                "securityMode {other:?} is not known (None, Sign, SignAndEncrypt)"
            )));
        }
    };
    if (policy == SecurityPolicy::None) != (mode == MessageSecurityMode::None) {
        return Err(ProtocolError::config(format!(
            "securityPolicy {name} and securityMode {mode:?} do not go together (None goes with None)"
        )));
    }
    Ok((policy, mode))
}

/// A file the device names, which must exist.
fn required<'a>(field: &str, path: Option<&'a PathBuf>, policy: SecurityPolicy) -> Result<&'a Path, ProtocolError> {
    let path = path.ok_or_else(|| ProtocolError::config(format!("{field} must be set for securityPolicy {policy}")))?;
    if !path.is_file() {
        return Err(ProtocolError::config(format!("{field} {} is not a readable file", path.display())));
    }
    Ok(path)
}

/// Reads upstream's password file (one trailing newline dropped).
fn password(c: &DeviceConfig) -> Result<Option<IdentityToken>, ProtocolError> {
    let Some(user) = c.user_name.as_deref().filter(|u| !u.is_empty()) else { return Ok(None) };
    let Some(file) = &c.password else {
        return Err(ProtocolError::config("password (a file holding the password) must be set with userName"));
    };
    let text = std::fs::read_to_string(file)
        .map_err(|e| ProtocolError::config(format!("password file {}: {e}", file.display())))?;
    let pw = text.strip_suffix('\n').map_or(text.as_str(), |t| t.strip_suffix('\r').unwrap_or(t));
    Ok(Some(IdentityToken::UserName(user.to_owned(), Password::new(pw))))
}

/// The PKI directory for one server and one pinned certificate:
/// `<pkiDir>/<url as a file name>-<certificate hash>`, whose `trusted/` holds exactly that
/// certificate. Devices pinning different certificates for one server never share a
/// directory; `rejected/` is emptied, or a certificate rejected once would stay refused.
fn pin(pki: &Path, url: &str, remote: &Path) -> Result<PathBuf, ProtocolError> {
    let bad = |e: &dyn std::fmt::Display| ProtocolError::config(format!("remoteCertificate {}: {e}", remote.display()));
    let cert = CertificateStore::read_cert(remote).map_err(|e| bad(&e))?;
    let der = cert.to_der().map_err(|e| bad(&e))?;
    let mut hash = std::hash::DefaultHasher::new();
    der.hash(&mut hash);
    let dir = pki.join(format!("{}-{:016x}", dir_name(url), hash.finish()));
    let io = |e: std::io::Error| ProtocolError::config(format!("PKI directory {}: {e}", dir.display()));
    let (trusted, rejected) = (dir.join("trusted"), dir.join("rejected"));
    std::fs::create_dir_all(&trusted).map_err(io)?;
    if rejected.exists() {
        std::fs::remove_dir_all(&rejected).map_err(io)?;
    }
    std::fs::create_dir_all(&rejected).map_err(io)?;
    let file = trusted.join(CertificateStore::cert_file_name(&cert));
    if std::fs::read(&file).ok().as_deref() != Some(der.as_slice()) {
        // Written aside and renamed: a device connecting at the same time never reads half a file.
        let part = trusted.join(format!(".{}.part", std::process::id()));
        std::fs::write(&part, &der).map_err(io)?;
        std::fs::rename(&part, &file).map_err(io)?;
    }
    Ok(dir)
}

/// A directory name for one server URL (readable, and distinct per URL).
fn dir_name(url: &str) -> String {
    url.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect()
}

/// Builds the client (file reads: run off the async runtime).
fn build(c: &DeviceConfig) -> Result<(opcua::client::Client, EndpointDescription, IdentityToken), ProtocolError> {
    let (policy, mode) = security(c)?;
    let identity = password(c)?.unwrap_or(IdentityToken::Anonymous);
    let timeout = Duration::from_secs(c.timeout.max(1));
    let pki = c.pki_dir.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_PKI_DIR));
    let mut builder = ClientBuilder::new()
        .application_name("KubeEdge OPC UA mapper")
        .application_uri(c.application_uri.as_deref().unwrap_or("urn:kubeedge:opcua-mapper"))
        .product_uri("urn:kubeedge:opcua-mapper")
        .create_sample_keypair(false)
        .trust_server_certs(false)
        .verify_server_certs(true)
        .session_retry_limit(0)
        .request_timeout(timeout)
        .keep_alive_interval(Duration::from_secs(5))
        .max_failed_keep_alive_count(2);
    if policy != SecurityPolicy::None {
        let cert = required("certificate", c.certificate.as_ref(), policy)?;
        let key = required("privateKey", c.private_key.as_ref(), policy)?;
        let remote = required("remoteCertificate", c.remote_certificate.as_ref(), policy)?;
        let dir = pin(&pki, &c.url, remote)?;
        builder = builder.pki_dir(dir).certificate_path(cert).private_key_path(key);
    } else {
        // No certificate is used, but the client still wants a PKI directory (it creates
        // `trusted/` and `rejected/` and looks for its own certificate there): a throwaway one.
        builder = builder.pki_dir(std::env::temp_dir().join("opcua-mapper-no-security"));
    }
    let client = builder.client().map_err(|errors| ProtocolError::config(errors.join("; ")))?;
    let endpoint = EndpointDescription::from((c.url.as_str(), policy.to_uri(), mode));
    Ok((client, endpoint, identity))
}

/// A failed call or session: "cannot reach it", retried by the framework with backoff; a
/// certificate refusal says where to look.
pub fn failure(what: &str, status: StatusCode, detail: impl std::fmt::Display) -> ProtocolError {
    let message = format!("{what}: {status} ({detail})");
    let name = status.to_string();
    let hint = if name.starts_with("BadCertificate") || name == "BadSecurityChecksFailed" {
        "; check remoteCertificate and the server's trust list"
    } else if name.starts_with("BadIdentityToken")
        || name == "BadUserAccessDenied"
        || name == "BadSecurityPolicyRejected"
    {
        "; check userName and password: the server refused the session's identity, or offers no such user token policy"
    } else {
        ""
    };
    ProtocolError::connection(format!("{message}{hint}"))
}

/// Connects and activates a session within the device's timeout.
pub async fn open(c: &DeviceConfig) -> Result<Opened, ProtocolError> {
    let timeout = Duration::from_secs(c.timeout.max(1));
    let config = c.clone();
    let (mut client, endpoint, identity) = tokio::task::spawn_blocking(move || build(&config))
        .await
        .map_err(|e| ProtocolError::connection(format!("building the client: {e}")))??;
    let url = c.url.clone();
    let connect = client.connect_to_matching_endpoint(endpoint, identity);
    let (session, event_loop) = match tokio::time::timeout(timeout, connect).await {
        Err(_) => return Err(ProtocolError::connection(format!("{url}: no answer within {timeout:?}"))),
        Ok(Err(e)) if e.status() == StatusCode::BadTcpEndpointUrlInvalid => {
            return Err(ProtocolError::connection(format!(
                "{url} offers no endpoint with securityPolicy {} and securityMode {} ({e})",
                c.security_policy.as_deref().unwrap_or("None"),
                c.security_mode.as_deref().unwrap_or("the default")
            )));
        }
        Ok(Err(e)) => return Err(failure(&url, e.status(), e)),
        Ok(Ok(pair)) => pair,
    };
    let mut event_loop = event_loop.spawn();
    let connected = tokio::time::timeout(timeout, async {
        tokio::select! {
            ok = session.wait_for_connection() => if ok { Ok(()) } else { Err(StatusCode::BadNotConnected) },
            status = &mut event_loop => Err(status.unwrap_or(StatusCode::BadUnexpectedError)),
        }
    })
    .await;
    match connected {
        Ok(Ok(())) => Ok(Opened { session, event_loop }),
        Ok(Err(status)) => {
            event_loop.abort();
            Err(failure(&format!("opening a session with {url}"), status, "the session could not be activated"))
        }
        Err(_) => {
            event_loop.abort();
            Err(ProtocolError::connection(format!("opening a session with {url}: no session within {timeout:?}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(policy: Option<&str>, mode: Option<&str>) -> DeviceConfig {
        let mut c: DeviceConfig = serde_json::from_value(serde_json::json!({"url": "opc.tcp://h:4840"})).unwrap();
        c.security_policy = policy.map(str::to_owned);
        c.security_mode = mode.map(str::to_owned);
        c
    }

    #[test]
    fn security_settings_are_checked_together() {
        assert_eq!(security(&config(None, None)).unwrap().1, MessageSecurityMode::None);
        let (p, m) = security(&config(Some("Basic256Sha256"), None)).unwrap();
        assert_eq!((p, m), (SecurityPolicy::Basic256Sha256, MessageSecurityMode::SignAndEncrypt));
        let err = security(&config(Some("Basic256Sha256"), Some("None"))).unwrap_err();
        assert!(err.message.contains("do not go together"), "{err}");
        let err = security(&config(Some("Rot13"), None)).unwrap_err();
        assert!(err.message.contains("securityPolicy \"Rot13\" is not known"), "{err}");
        let err = build(&config(Some("Basic256Sha256"), Some("Sign"))).err().unwrap();
        assert!(err.message.contains("certificate must be set for securityPolicy"), "{err}");
    }

    #[test]
    fn each_server_gets_its_own_pki_directory() {
        assert_eq!(dir_name("opc.tcp://10.0.0.5:4840/freeopcua/server/"), "opc.tcp___10.0.0.5_4840_freeopcua_server_");
    }
}
