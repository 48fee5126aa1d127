//! Opening an OPC UA session for one device: the security policy and mode, the mapper's own
//! certificate, the server's certificate pinned in a private PKI directory, and the user.
//!
//! The endpoint is chosen by security policy and mode among those the server offers (as
//! upstream's Go client does), whatever path the server advertises, and reached at the
//! device's own `url`. The session's event loop never reconnects by itself: when the
//! connection breaks the loop ends, the next call fails with a connection error, and the
//! framework reconnects with its backoff and marks the device `offline` meanwhile.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kubeedge_mapper_framework::ProtocolError;
use opcua::client::{ClientBuilder, IdentityToken, Password, Session};
use opcua::crypto::{CertificateStore, SecurityPolicy};
use opcua::types::{EndpointDescription, MessageSecurityMode, StatusCode, UAString};
use tokio::task::JoinHandle;

use crate::DeviceConfig;

/// Where per-server PKI directories go when the device does not name one.
const DEFAULT_PKI_DIR: &str = "/var/lib/kubeedge/mappers/opcua/pki";

/// PKI directories are prepared one at a time: devices pinning the same certificate for the
/// same server share one.
static PKI: Mutex<()> = Mutex::new(());

/// The session's event loop; aborted when dropped (a cancelled connect or a dropped client
/// never leaves a session running).
pub struct EventLoop(pub JoinHandle<StatusCode>);

impl Drop for EventLoop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An open session and the task running its event loop.
pub struct Opened {
    pub session: Arc<Session>,
    pub event_loop: EventLoop,
}

/// The policy and mode a device asks for, checked for consistency.
fn security(c: &DeviceConfig) -> Result<(SecurityPolicy, MessageSecurityMode), ProtocolError> {
    let name = c.security_policy.as_deref().filter(|p| !p.is_empty()).unwrap_or("None");
    let policy = SecurityPolicy::from_str(name).ok().filter(|p| *p != SecurityPolicy::Unknown).ok_or_else(|| {
        ProtocolError::config(format!(
            "securityPolicy {name:?} is not known (None, Basic256Sha256, Aes128Sha256RsaOaep, Aes256Sha256RsaPss)"
        ))
    })?;
    let default_mode = if policy == SecurityPolicy::None { "None" } else { "SignAndEncrypt" };
    let mode = match c.security_mode.as_deref().filter(|m| !m.is_empty()).unwrap_or(default_mode) {
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
/// Absolute, because the library reads its own certificate and key relative to its PKI
/// directory.
fn required(field: &str, path: Option<&PathBuf>, policy: SecurityPolicy) -> Result<PathBuf, ProtocolError> {
    let path = path.ok_or_else(|| ProtocolError::config(format!("{field} must be set for securityPolicy {policy}")))?;
    if !path.is_file() {
        return Err(ProtocolError::config(format!("{field} {} is not a readable file", path.display())));
    }
    std::path::absolute(path).map_err(|e| ProtocolError::config(format!("{field} {}: {e}", path.display())))
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

/// The PKI directory for one server and one pinned certificate,
/// `<pkiDir>/<url as a file name>-<certificate thumbprint>`, whose `trusted/` holds that
/// certificate. A copy of it in `rejected/` (left by an earlier pin of another certificate)
/// is removed, or it would stay refused. Failures here are retried (a connection error): a
/// directory may become writable.
fn pin(pki: &Path, url: &str, remote: &Path) -> Result<PathBuf, ProtocolError> {
    let bad = |e: &dyn std::fmt::Display| ProtocolError::config(format!("remoteCertificate {}: {e}", remote.display()));
    let cert = CertificateStore::read_cert(remote).map_err(|e| bad(&e))?;
    let der = cert.to_der().map_err(|e| bad(&e))?;
    let dir = pki.join(format!("{}-{}", dir_name(url), cert.thumbprint().as_hex_string()));
    let io = |e: std::io::Error| ProtocolError::connection(format!("PKI directory {}: {e}", dir.display()));
    let _one_at_a_time = PKI.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let (trusted, rejected) = (dir.join("trusted"), dir.join("rejected"));
    std::fs::create_dir_all(&trusted).map_err(io)?;
    std::fs::create_dir_all(&rejected).map_err(io)?;
    let name = CertificateStore::cert_file_name(&cert);
    match std::fs::remove_file(rejected.join(&name)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
        _ => {}
    }
    let file = trusted.join(&name);
    if std::fs::read(&file).ok().as_deref() != Some(der.as_slice()) {
        let part = trusted.join(format!(".{name}.part"));
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
fn build(
    c: &DeviceConfig,
) -> Result<(opcua::client::Client, SecurityPolicy, MessageSecurityMode, IdentityToken), ProtocolError> {
    let (policy, mode) = security(c)?;
    let identity = password(c)?.unwrap_or(IdentityToken::Anonymous);
    let pki = c.pki_dir.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_PKI_DIR));
    let mut builder = ClientBuilder::new()
        .application_name("KubeEdge OPC UA mapper")
        .application_uri(c.application_uri.as_deref().unwrap_or("urn:kubeedge:opcua-mapper"))
        .product_uri("urn:kubeedge:opcua-mapper")
        .create_sample_keypair(false)
        .trust_server_certs(false)
        // Trust is the pin: the server's certificate must be the pinned one, byte for byte.
        // The extra checks (host name and application URI in the certificate, validity dates)
        // would refuse a pinned certificate reached by an address it does not name.
        .verify_server_certs(false)
        .session_retry_limit(0)
        .request_timeout(c.timeout())
        .keep_alive_interval(Duration::from_secs(5))
        .max_failed_keep_alive_count(2);
    if policy == SecurityPolicy::None {
        // No certificate is used, but the client still wants a PKI directory (it creates
        // `trusted/` and `rejected/` there and looks for its own certificate).
        builder = builder.pki_dir(pki.join("none"));
    } else {
        let cert = required("certificate", c.certificate.as_ref(), policy)?;
        let key = required("privateKey", c.private_key.as_ref(), policy)?;
        let remote = required("remoteCertificate", c.remote_certificate.as_ref(), policy)?;
        // The library only logs when it cannot load these: check them here, clearly.
        CertificateStore::read_cert(&cert)
            .map_err(|e| ProtocolError::config(format!("certificate {} (DER or PEM): {e}", cert.display())))?;
        CertificateStore::read_pkey(&key)
            .map_err(|e| ProtocolError::config(format!("privateKey {} (PEM): {e}", key.display())))?;
        let dir = pin(&pki, &c.url, &remote)?;
        builder = builder.pki_dir(dir).certificate_path(cert).private_key_path(key);
    }
    let client = builder.client().map_err(|errors| ProtocolError::config(errors.join("; ")))?;
    Ok((client, policy, mode, identity))
}

/// Whether a status means the connection, channel or session is gone (the framework
/// reconnects) rather than a refusal of one request.
pub fn is_connection_status(status: StatusCode) -> bool {
    let name = status.to_string();
    [
        "BadCommunicationError",
        "BadConnection",
        "BadDisconnect",
        "BadNotConnected",
        "BadSecureChannel",
        "BadSession",
        "BadTimeout",
        "BadRequestTimeout",
        "BadServerNotConnected",
        "BadServerHalted",
        "BadShutdown",
        "BadTcp",
        "BadNoCommunication",
        "BadEncodingLimitsExceeded",
        "BadResponseTooLarge",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

/// A failed connect: "cannot reach it", retried by the framework with backoff; refusals of the
/// certificate or the identity say where to look.
fn failure(what: &str, status: StatusCode, detail: impl std::fmt::Display) -> ProtocolError {
    let message = format!("{what}: {status} ({detail})");
    let name = status.to_string();
    let hint = if name.starts_with("BadCertificate") || name == "BadSecurityChecksFailed" {
        "; check remoteCertificate (the server's certificate), and that the server trusts the mapper's certificate"
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

/// The server's endpoint for this policy and mode, whatever its advertised path.
fn choose(
    offered: &[EndpointDescription],
    url: &str,
    policy: SecurityPolicy,
    mode: MessageSecurityMode,
) -> Result<EndpointDescription, ProtocolError> {
    // The binary TCP transport only (a server may also offer https or wss endpoints).
    let binary = |e: &EndpointDescription| {
        e.endpoint_url.as_ref().starts_with("opc.tcp://")
            && (e.transport_profile_uri.is_empty() || e.transport_profile_uri.as_ref().ends_with("uatcp-uasc-uabinary"))
    };
    let found = offered
        .iter()
        .find(|e| binary(e) && e.security_policy_uri.as_ref() == policy.to_uri() && e.security_mode == mode);
    let Some(endpoint) = found else {
        let list: Vec<String> = offered
            .iter()
            .map(|e| {
                let p = SecurityPolicy::from_uri(e.security_policy_uri.as_ref());
                format!("{p}/{:?}", e.security_mode)
            })
            .collect();
        return Err(ProtocolError::connection(format!(
            "{url} offers no endpoint with securityPolicy {policy} and securityMode {mode:?} (it offers {})",
            list.join(", ")
        )));
    };
    let mut endpoint = endpoint.clone();
    // Reached where the device says: servers often advertise a host name the edge cannot resolve.
    endpoint.endpoint_url = UAString::from(url);
    Ok(endpoint)
}

/// Connects and activates a session, all within the device's timeout.
pub async fn open(c: &DeviceConfig) -> Result<Opened, ProtocolError> {
    let timeout = c.timeout();
    let url = c.url.clone();
    tokio::time::timeout(timeout, open_inner(c)).await.unwrap_or_else(|_| {
        Err(ProtocolError::connection(format!("opening a session with {url}: no session within {timeout:?}")))
    })
}

async fn open_inner(c: &DeviceConfig) -> Result<Opened, ProtocolError> {
    let config = c.clone();
    let (mut client, policy, mode, identity) = tokio::task::spawn_blocking(move || build(&config))
        .await
        .map_err(|e| ProtocolError::connection(format!("building the client: {e}")))??;
    let url = c.url.as_str();
    let offered = client.get_server_endpoints_from_url(url).await.map_err(|e| failure(url, e.status(), &e))?;
    let endpoint = choose(&offered, url, policy, mode)?;
    let (session, event_loop) =
        client.connect_to_endpoint_directly(endpoint, identity).map_err(|e| failure(url, e.status(), &e))?;
    // One session per connect: when it breaks, the loop ends and the framework decides (set
    // before the loop runs, so no drop can slip between connecting and this).
    session.disable_reconnects();
    let mut event_loop = EventLoop(event_loop.spawn());
    let connected = tokio::select! {
        ok = session.wait_for_connection() => if ok { Ok(()) } else { Err(StatusCode::BadNotConnected) },
        status = &mut event_loop.0 => Err(status.unwrap_or(StatusCode::BadUnexpectedError)),
    };
    match connected {
        Ok(()) => Ok(Opened { session, event_loop }),
        Err(status) => {
            Err(failure(&format!("opening a session with {url}"), status, "the session could not be activated"))
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
        assert_eq!(security(&config(Some(""), Some(""))).unwrap().1, MessageSecurityMode::None);
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
    fn the_endpoint_is_chosen_by_policy_and_mode_and_reached_at_the_devices_url() {
        let offered: Vec<EndpointDescription> = vec![
            ("opc.tcp://server-host:4840/freeopcua/server/", SecurityPolicy::None.to_uri(), MessageSecurityMode::None)
                .into(),
            (
                "opc.tcp://server-host:4840/freeopcua/server/",
                SecurityPolicy::Basic256Sha256.to_uri(),
                MessageSecurityMode::SignAndEncrypt,
            )
                .into(),
        ];
        let url = "opc.tcp://10.0.0.5:4840";
        let e = choose(&offered, url, SecurityPolicy::Basic256Sha256, MessageSecurityMode::SignAndEncrypt).unwrap();
        assert_eq!((e.endpoint_url.as_ref(), e.security_mode), (url, MessageSecurityMode::SignAndEncrypt));
        let err = choose(&offered, url, SecurityPolicy::Basic256Sha256, MessageSecurityMode::Sign).unwrap_err();
        assert!(err.message.contains("it offers None/None, Basic256Sha256/SignAndEncrypt"), "{err}");
    }

    #[test]
    fn connection_statuses_are_told_from_refusals() {
        assert!(is_connection_status(StatusCode::BadConnectionClosed));
        assert!(is_connection_status(StatusCode::BadSessionIdInvalid));
        assert!(is_connection_status(StatusCode::BadTimeout));
        assert!(!is_connection_status(StatusCode::BadNodeIdUnknown));
        assert!(!is_connection_status(StatusCode::BadTooManyOperations));
        assert!(!is_connection_status(StatusCode::BadUserAccessDenied));
    }

    #[test]
    fn each_server_gets_its_own_pki_directory() {
        assert_eq!(dir_name("opc.tcp://10.0.0.5:4840/freeopcua/server/"), "opc.tcp___10.0.0.5_4840_freeopcua_server_");
    }
}
