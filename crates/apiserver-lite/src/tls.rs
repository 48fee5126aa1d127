//! A throw-away PKI for the stand-in cluster: a CA, the serving certificate, and client
//! certificates (CN = user, O = groups), as a real cluster's kubeconfig carries them.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;

/// Errors building certificates or TLS configs.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Certificate generation failed.
    #[error("generating a certificate")]
    Generate(#[from] rcgen::Error),
    /// rustls rejected the configuration.
    #[error("building the TLS configuration")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("building the client certificate verifier")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// A PEM certificate and its PEM private key.
#[derive(Clone, Debug)]
pub struct CertPair {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM (PKCS#8).
    pub key_pem: String,
}

/// The cluster CA and what it signs.
pub struct Pki {
    ca_params: CertificateParams,
    ca_key: KeyPair,
    ca_der: CertificateDer<'static>,
    ca_pem: String,
}

impl Pki {
    /// A new ECDSA P-256 CA named `apiserver-lite-ca`.
    pub fn generate() -> Result<Self, TlsError> {
        let ca_key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = dn("apiserver-lite-ca", &[]);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&ca_key)?;
        Ok(Self { ca_der: cert.der().clone(), ca_pem: cert.pem(), ca_params: params, ca_key })
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    fn issue(
        &self,
        cn: &str,
        orgs: &[&str],
        sans: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<CertPair, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn(cn, orgs);
        params.subject_alt_names = sans
            .iter()
            .map(|s| match s.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => s.to_string().try_into().map(SanType::DnsName),
            })
            .collect::<Result<_, _>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![usage];
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(CertPair { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// A serving certificate for `sans` (IPs and DNS names).
    pub fn issue_server(&self, sans: &[&str]) -> Result<(CertPair, rustls::ServerConfig), TlsError> {
        let pair = self.issue("apiserver-lite", &[], sans, ExtendedKeyUsagePurpose::ServerAuth)?;
        let config = self.server_config(&pair)?;
        Ok((pair, config))
    }

    /// A client certificate: CN is the user name, O the groups.
    pub fn issue_client(&self, user: &str, groups: &[&str]) -> Result<CertPair, TlsError> {
        self.issue(user, groups, &[], ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// TLS 1.2+ with h2 and http/1.1, asking for (not requiring) a client certificate signed by
    /// the CA: bearer-token clients connect without one.
    fn server_config(&self, pair: &CertPair) -> Result<rustls::ServerConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone())?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .allow_unauthenticated()
            .build()?;
        let chain = vec![CertificateDer::from(pem_der(&pair.cert_pem)?)];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pem_der(&pair.key_pem)?));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

fn dn(cn: &str, orgs: &[&str]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for o in orgs {
        dn.push(DnType::OrganizationName, *o);
    }
    dn.push(DnType::CommonName, cn);
    dn
}

/// The DER of a PEM block we generated ourselves.
pub(crate) fn pem_der(pem: &str) -> Result<Vec<u8>, TlsError> {
    kubeedge_pki::parse_pem(pem)
        .map(|(_, der)| der)
        .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))
}

/// The user and groups named by a client certificate (CN and O), as kube-apiserver reads them.
pub fn identity_from_cert(der: &[u8]) -> Option<(String, Vec<String>)> {
    kubeedge_pki::subject(der).ok().filter(|(cn, _)| !cn.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_certs_carry_user_and_groups() {
        let pki = Pki::generate().unwrap();
        let pair = pki.issue_client("system:node:edge-1", &["system:nodes"]).unwrap();
        let der = pem_der(&pair.cert_pem).unwrap();
        assert_eq!(identity_from_cert(&der), Some(("system:node:edge-1".to_owned(), vec!["system:nodes".to_owned()])));
        assert!(pki.issue_server(&["127.0.0.1", "localhost"]).is_ok());
        assert!(identity_from_cert(b"junk").is_none());
    }
}
