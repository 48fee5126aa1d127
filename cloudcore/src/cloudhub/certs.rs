//! The CA, CloudCore's serving certificate and the join token, shared through Secrets in
//! namespace `kubeedge` exactly as upstream names them: `casecret` (`cadata`, `cakeydata`),
//! `cloudcoresecret` (`cloudcoredata`, `cloudcorekeydata`), `tokensecret` (`tokendata`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kubeedge_pki::{Ca, CertAndKey};
use tracing::{info, warn};

/// The namespace of KubeEdge's Secrets.
pub const NAMESPACE: &str = "kubeedge";
/// Secret holding the CA.
pub const CA_SECRET: &str = "casecret";
/// Secret holding CloudCore's serving certificate.
pub const CERT_SECRET: &str = "cloudcoresecret";
/// Secret holding the join token.
pub const TOKEN_SECRET: &str = "tokensecret";

/// Errors loading or storing the PKI.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API failed.
    #[error("Kubernetes API")]
    Kube(#[from] kube::Error),
    /// A certificate or key is invalid.
    #[error("PKI")]
    Pki(#[from] kubeedge_pki::Error),
    /// A file could not be read.
    #[error("reading {path}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A Secret lacks a key.
    #[error("secret {NAMESPACE}/{secret} has no {key}")]
    MissingKey {
        /// The Secret.
        secret: &'static str,
        /// The missing data key.
        key: &'static str,
    },
}

/// Where CloudCore's certificates come from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// `tlsCAFile` and `tlsCAKeyFile` (PEM), used when both exist.
    pub ca_files: Option<(String, String)>,
    /// `tlsCertFile` and `tlsPrivateKeyFile` (PEM), used when both exist.
    pub cert_files: Option<(String, String)>,
    /// `advertiseAddress` (IPs) for a new serving certificate.
    pub advertise: Vec<IpAddr>,
    /// `dnsNames` for a new serving certificate.
    pub dns_names: Vec<String>,
}

/// CloudHub's PKI.
pub struct CloudPki {
    /// The CA.
    pub ca: Ca,
    /// The serving certificate for :10000 and :10002.
    pub server: CertAndKey,
}

fn both_exist(pair: &Option<(String, String)>) -> Option<(&str, &str)> {
    let (a, b) = pair.as_ref()?;
    (Path::new(a).is_file() && Path::new(b).is_file()).then_some((a.as_str(), b.as_str()))
}

async fn read(path: &str) -> Result<String, Error> {
    tokio::fs::read_to_string(path).await.map_err(|source| Error::Io { path: path.to_owned(), source })
}

fn secret(name: &str, data: &[(&str, &[u8])]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(NAMESPACE.to_owned()),
            ..Default::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(data.iter().map(|(k, v)| ((*k).to_owned(), ByteString(v.to_vec()))).collect::<BTreeMap<_, _>>()),
        ..Default::default()
    }
}

fn data<'a>(s: &'a Secret, secret: &'static str, key: &'static str) -> Result<&'a [u8], Error> {
    s.data.as_ref().and_then(|d| d.get(key)).map(|b| b.0.as_slice()).ok_or(Error::MissingKey { secret, key })
}

/// Creates `kubeedge` if it is missing (read first: where the namespace exists, as under the
/// chart, cloudcore needs no right to create namespaces).
async fn ensure_namespace(client: &kube::Client) -> Result<(), Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    if api.get_opt(NAMESPACE).await?.is_some() {
        return Ok(());
    }
    let ns = Namespace {
        metadata: ObjectMeta { name: Some(NAMESPACE.to_owned()), ..Default::default() },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Stores `candidate` unless the Secret exists; returns what is stored (the candidate, or the
/// winner's when another replica created it first).
async fn create_if_absent(api: &Api<Secret>, candidate: Secret) -> Result<Secret, Error> {
    let name = candidate.metadata.name.clone().unwrap_or_default();
    match api.create(&PostParams::default(), &candidate).await {
        Ok(s) => Ok(s),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            info!(secret = %name, "Secret exists; adopting it.");
            Ok(api.get(&name).await?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Loads the CA and serving certificate: files, else Secrets, else generated and stored.
pub async fn load_or_create(client: &kube::Client, src: &Sources) -> Result<CloudPki, Error> {
    ensure_namespace(client).await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);

    let ca = if let Some((cert, key)) = both_exist(&src.ca_files) {
        let (_, cert_der) = kubeedge_pki::parse_pem(&read(cert).await?)?;
        let key_sec1 = kubeedge_pki::key_from_pem(&read(key).await?)?;
        let ca = Ca::from_der(&cert_der, &key_sec1)?;
        // The files win; the Secret is written so other replicas share them.
        let s = secret(CA_SECRET, &[("cadata", ca.cert_der()), ("cakeydata", ca.key_sec1())]);
        secrets.patch(CA_SECRET, &PatchParams::apply("cloudcore").force(), &Patch::Apply(&s)).await?;
        info!(file = cert, "Loaded the CA from files.");
        ca
    } else {
        let stored = match secrets.get_opt(CA_SECRET).await? {
            Some(s) => s,
            None => {
                let fresh = Ca::generate()?;
                create_if_absent(
                    &secrets,
                    secret(CA_SECRET, &[("cadata", fresh.cert_der()), ("cakeydata", fresh.key_sec1())]),
                )
                .await?
            }
        };
        Ca::from_der(data(&stored, CA_SECRET, "cadata")?, data(&stored, CA_SECRET, "cakeydata")?)?
    };

    let server = if let Some((cert, key)) = both_exist(&src.cert_files) {
        let (_, cert_der) = kubeedge_pki::parse_pem(&read(cert).await?)?;
        CertAndKey { cert_der, key_sec1: kubeedge_pki::key_from_pem(&read(key).await?)? }
    } else {
        let stored = match secrets.get_opt(CERT_SECRET).await? {
            Some(s) if signed_by(&s, &ca) => s,
            existing => {
                if existing.is_some() {
                    warn!("The stored serving certificate is not signed by the CA; issuing a new one.");
                }
                let fresh = ca.issue_server(&src.advertise, &src.dns_names)?;
                let s =
                    secret(CERT_SECRET, &[("cloudcoredata", &fresh.cert_der), ("cloudcorekeydata", &fresh.key_sec1)]);
                if existing.is_some() {
                    secrets.patch(CERT_SECRET, &PatchParams::apply("cloudcore").force(), &Patch::Apply(&s)).await?
                } else {
                    create_if_absent(&secrets, s).await?
                }
            }
        };
        CertAndKey {
            cert_der: data(&stored, CERT_SECRET, "cloudcoredata")?.to_vec(),
            key_sec1: data(&stored, CERT_SECRET, "cloudcorekeydata")?.to_vec(),
        }
    };
    Ok(CloudPki { ca, server })
}

fn signed_by(s: &Secret, ca: &Ca) -> bool {
    let Some(der) = s.data.as_ref().and_then(|d| d.get("cloudcoredata")) else { return false };
    kubeedge_pki::verify_signed_by(&der.0, ca.cert_der())
}

/// Writes a fresh token (valid for twice the refresh period, as upstream) to `tokensecret`
/// and returns it.
pub async fn refresh_token(client: &kube::Client, ca: &Ca, refresh: Duration) -> Result<String, Error> {
    let token = ca.token(refresh * 2);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    let s = secret(TOKEN_SECRET, &[("tokendata", token.as_bytes())]);
    secrets.patch(TOKEN_SECRET, &PatchParams::apply("cloudcore").force(), &Patch::Apply(&s)).await?;
    Ok(token)
}
