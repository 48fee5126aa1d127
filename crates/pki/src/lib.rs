//! KubeEdge's PKI, wire-compatible with upstream (`pkg/security/certs`, `pkg/security/token`,
//! `edge/pkg/edgehub/certificate` in kubeedge/kubeedge):
//!
//! - [`Ca`]: ECDSA P-256, self-signed, CN `KubeEdge`, serial 1024, valid 100×364 days; it issues
//!   CloudCore's serving certificate (SANs from `advertiseAddress` and `dnsNames`) and builds
//!   each edge's client certificate from the CSR's public key alone ([`Ca::issue_node_client`]):
//!   `CN=system:node:{node}`, `O=system:nodes`, ExtKeyUsage clientAuth only, no SANs.
//! - Keys are **SEC1** DER (`EC PRIVATE KEY`), as upstream stores them in Secrets and files;
//!   [`key_from_pem`] also accepts upstream's SEC1 bytes under a `PRIVATE KEY` label, and PKCS#8.
//! - [`edge_csr`]: the CSR an edge sends, O=`system:nodes`, CN=`system:node:{node}`.
//! - The join token: `hex(sha256(CA DER)) + "." + JWT(HS256, key = CA key SEC1 DER, {"exp"})`
//!   ([`Ca::token`], [`Ca::verify_jwt`], [`split_token`]); a token bound to one node adds
//!   `{"sub": "system:node:{node}"}` ([`Ca::node_token`]; upstream's cloudcore ignores the claim).

mod der;
mod insecure;

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use time::OffsetDateTime;

pub use der::{DerError, pkcs8_to_sec1, sec1_to_pkcs8};
pub use insecure::insecure_client_config;

/// Upstream's CA and server certificate validity: 100 × 364 days.
pub const LONG_VALIDITY: Duration = Duration::from_secs(100 * 364 * 86_400);

/// Errors of the PKI.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Certificate or CSR generation or signing failed.
    #[error("certificate operation failed")]
    Rcgen(#[from] rcgen::Error),
    /// A certificate could not be parsed.
    #[error("invalid certificate: {0}")]
    Certificate(String),
    /// A key could not be parsed.
    #[error("invalid private key: {0}")]
    Key(String),
    /// A private key's DER could not be converted between SEC1 and PKCS#8.
    #[error("invalid private key: {0}")]
    Der(DerError),
    /// A PEM block is missing or malformed.
    #[error("invalid PEM: {0}")]
    Pem(String),
    /// The token is malformed, forged or expired.
    #[error("invalid token: {0}")]
    Token(String),
}

/// A result with this crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A certificate and its key, both DER (the key as SEC1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertAndKey {
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// The private key, SEC1 DER.
    pub key_sec1: Vec<u8>,
}

/// The cluster CA.
pub struct Ca {
    cert_der: Vec<u8>,
    key_sec1: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn kubeedge_dn() -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "KubeEdge");
    dn
}

fn key_pair_from_sec1(sec1: &[u8]) -> Result<KeyPair> {
    let pkcs8 = sec1_to_pkcs8(sec1).map_err(Error::Der)?;
    KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8.as_slice().into(), &PKCS_ECDSA_P256_SHA256)
        .map_err(|e| Error::Key(e.to_string()))
}

fn new_key() -> Result<(KeyPair, Vec<u8>)> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let sec1 = pkcs8_to_sec1(&key.serialize_der()).map_err(Error::Der)?;
    Ok((key, sec1))
}

fn random_serial() -> SerialNumber {
    // Below 2^63, as upstream's `rand.Int(rand.Reader, new(big.Int).SetInt64(math.MaxInt64))`.
    let mut bytes = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

impl Ca {
    /// A new CA as upstream makes it.
    pub fn generate() -> Result<Self> {
        let (key, key_sec1) = new_key()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = kubeedge_dn();
        params.serial_number = Some(SerialNumber::from(1024u64));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = now();
        params.not_after = now() + LONG_VALIDITY;
        let cert = params.self_signed(&key)?;
        Ok(Self { cert_der: cert.der().to_vec(), key_sec1, issuer: Issuer::new(params, key) })
    }

    /// Loads a CA from its certificate and SEC1 key (as stored in `casecret` or the files).
    pub fn from_der(cert_der: &[u8], key_sec1: &[u8]) -> Result<Self> {
        let key = key_pair_from_sec1(key_sec1)?;
        let (_, parsed) =
            x509_parser::parse_x509_certificate(cert_der).map_err(|e| Error::Certificate(e.to_string()))?;
        if parsed.public_key().subject_public_key.data.as_ref() != rcgen::PublicKeyData::der_bytes(&key) {
            return Err(Error::Key("the key does not belong to the CA certificate".into()));
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der.into(), key).map_err(|e| Error::Certificate(e.to_string()))?;
        Ok(Self { cert_der: cert_der.to_vec(), key_sec1: key_sec1.to_vec(), issuer })
    }

    /// The CA certificate, DER (what `GET /ca.crt` serves).
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        pem("CERTIFICATE", &self.cert_der)
    }

    /// The CA key, SEC1 DER (what `casecret.cakeydata` holds; also the token's HMAC key).
    pub fn key_sec1(&self) -> &[u8] {
        &self.key_sec1
    }

    /// Lowercase hex SHA-256 of the CA certificate DER (the token's first part).
    pub fn hash(&self) -> String {
        ca_hash(&self.cert_der)
    }

    /// CloudCore's serving certificate: CN and O `KubeEdge`, EKU ServerAuth, SANs from the
    /// advertise addresses and DNS names, valid 100×364 days.
    pub fn issue_server(&self, ips: &[IpAddr], dns_names: &[String]) -> Result<CertAndKey> {
        let (key, key_sec1) = new_key()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "KubeEdge");
        dn.push(DnType::CommonName, "KubeEdge");
        params.distinguished_name = dn;
        params.serial_number = Some(random_serial());
        params.subject_alt_names = ips.iter().map(|ip| SanType::IpAddress(*ip)).collect();
        for name in dns_names {
            params.subject_alt_names.push(SanType::DnsName(name.clone().try_into()?));
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = now();
        params.not_after = now() + LONG_VALIDITY;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertAndKey { cert_der: cert.der().to_vec(), key_sec1 })
    }

    /// Signs a CSR (DER) as upstream does: subject and SANs copied, a random serial, validity
    /// `days`, KeyUsage DigitalSignature + KeyEncipherment, the given extended key usages. The
    /// CSR's signature is verified. For tests and tools that need a certificate of a chosen
    /// shape; the join API issues with [`Ca::issue_node_client`], which copies nothing.
    pub fn sign_csr(&self, csr_der: &[u8], days: u32, usages: &[ExtendedKeyUsagePurpose]) -> Result<Vec<u8>> {
        self.sign_csr_for(csr_der, Duration::from_secs(u64::from(days) * 86_400), usages)
    }

    /// [`Ca::sign_csr`] with a validity of any length (tests use seconds).
    pub fn sign_csr_for(
        &self,
        csr_der: &[u8],
        valid_for: Duration,
        usages: &[ExtendedKeyUsagePurpose],
    ) -> Result<Vec<u8>> {
        let mut csr = CertificateSigningRequestParams::from_der(&csr_der.into())?;
        csr.params.serial_number = Some(random_serial());
        csr.params.not_before = now();
        csr.params.not_after = now() + valid_for;
        csr.params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        csr.params.extended_key_usages = usages.to_vec();
        csr.params.is_ca = IsCa::NoCa;
        Ok(csr.signed_by(&self.issuer)?.der().to_vec())
    }

    /// A node's client certificate for the public key of `csr_der` (whose signature must
    /// verify): `CN=system:node:{node}`, `O=system:nodes`, KeyUsage digitalSignature (and
    /// keyEncipherment for an RSA key), ExtKeyUsage clientAuth only, no SANs, not a CA, a random
    /// serial, valid `valid_for` from now. The CSR's subject, SANs and extensions are ignored,
    /// so a certificate issued here can never be a server's or claim another identity.
    pub fn issue_node_client(&self, csr_der: &[u8], node: &str, valid_for: Duration) -> Result<Vec<u8>> {
        let rsa = csr_key_is_rsa(csr_der)?;
        let csr = CertificateSigningRequestParams::from_der(&csr_der.into())?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "system:nodes");
        dn.push(DnType::CommonName, format!("system:node:{node}"));
        params.distinguished_name = dn;
        params.serial_number = Some(random_serial());
        params.not_before = now();
        params.not_after = now() + valid_for;
        params.key_usages = if rsa {
            vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment]
        } else {
            vec![KeyUsagePurpose::DigitalSignature]
        };
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.is_ca = IsCa::ExplicitNoCa;
        let built = CertificateSigningRequestParams { params, public_key: csr.public_key };
        Ok(built.signed_by(&self.issuer)?.der().to_vec())
    }

    /// A join token valid for `valid_for` from now: `{hash}.{jwt}` (upstream's shared token).
    pub fn token(&self, valid_for: Duration) -> String {
        format!("{}.{}", self.hash(), jwt_hs256(&self.key_sec1, expiry(valid_for), None))
    }

    /// A join token that admits one node only, valid for `valid_for`: the JWT also carries
    /// `"sub": "system:node:{node}"`. It is the operator's explicit re-join of that node.
    pub fn node_token(&self, node: &str, valid_for: Duration) -> String {
        format!("{}.{}", self.hash(), jwt_hs256(&self.key_sec1, expiry(valid_for), Some(node)))
    }

    /// Checks a bearer JWT (the token without its CA hash): HS256 with the CA key, not expired.
    /// Returns its claims.
    pub fn verify_jwt(&self, jwt: &str) -> Result<TokenClaims> {
        verify_jwt_at(&self.key_sec1, jwt, SystemTime::now())
    }
}

/// Lowercase hex SHA-256 of DER bytes.
pub fn ca_hash(cert_der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, cert_der).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Splits a join token into the CA hash and the JWT (`hash.header.claims.signature`).
pub fn split_token(token: &str) -> Result<(&str, &str)> {
    let token = token.trim();
    let (hash, jwt) = token.split_once('.').ok_or_else(|| Error::Token("expected caHash.JWT".into()))?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) || jwt.split('.').count() != 3 {
        return Err(Error::Token("expected a 64-digit hex CA hash and a three-part JWT".into()));
    }
    Ok((hash, jwt))
}

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn expiry(valid_for: Duration) -> u64 {
    let exp = SystemTime::now().checked_add(valid_for).unwrap_or(SystemTime::now());
    exp.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The subject claim of a node-bound token.
fn node_subject(node: &str) -> String {
    format!("system:node:{node}")
}

fn jwt_hs256(key: &[u8], exp: u64, node: Option<&str>) -> String {
    let header = b64url(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = match node {
        None => serde_json::json!({ "exp": exp }),
        Some(n) => serde_json::json!({ "exp": exp, "sub": node_subject(n) }),
    };
    let claims = b64url(claims.to_string().as_bytes());
    let signing_input = format!("{header}.{claims}");
    let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), signing_input.as_bytes());
    format!("{signing_input}.{}", b64url(tag.as_ref()))
}

/// What a verified join token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// The one node the token admits (`sub` = `system:node:{node}`); `None` for upstream's
    /// shared token.
    pub node: Option<String>,
}

/// Verifies an HS256 JWT against `key` at `now`; returns its claims.
pub fn verify_jwt_at(key: &[u8], jwt: &str, now: SystemTime) -> Result<TokenClaims> {
    let bad = |m: &str| Error::Token(m.to_owned());
    let mut parts = jwt.trim().split('.');
    let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(bad("expected three parts"));
    };
    let dec = |p: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p.trim_end_matches('='));
    let header: serde_json::Value = serde_json::from_slice(&dec(h).map_err(|_| bad("header is not base64url"))?)
        .map_err(|_| bad("header is not JSON"))?;
    if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
        return Err(bad("the algorithm must be HS256"));
    }
    let sig = dec(s).map_err(|_| bad("signature is not base64url"))?;
    ring::hmac::verify(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), format!("{h}.{c}").as_bytes(), &sig)
        .map_err(|_| bad("signature mismatch"))?;
    let claims: serde_json::Value = serde_json::from_slice(&dec(c).map_err(|_| bad("claims are not base64url"))?)
        .map_err(|_| bad("claims are not JSON"))?;
    let exp = claims.get("exp").and_then(|e| e.as_f64()).ok_or_else(|| bad("no exp claim"))?;
    let now = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    if exp <= now {
        return Err(bad("expired"));
    }
    let node = match claims.get("sub") {
        None => None,
        Some(sub) => Some(
            sub.as_str()
                .and_then(|s| s.strip_prefix("system:node:"))
                .filter(|n| !n.is_empty())
                .ok_or_else(|| bad("the sub claim is not system:node:{node}"))?
                .to_owned(),
        ),
    };
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(TokenClaims { exp: exp as u64, node })
}

/// Whether a CSR's public key is RSA (its signature is not checked here).
fn csr_key_is_rsa(csr_der: &[u8]) -> Result<bool> {
    use x509_parser::prelude::FromDer;
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(csr_der)
        .map_err(|e| Error::Certificate(e.to_string()))?;
    Ok(csr.certification_request_info.subject_pki.algorithm.algorithm
        == x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION)
}

/// The CSR an edge sends to `/edge.crt`, with a fresh key: C=CN, ST=Zhejiang, L=Hangzhou,
/// O=system:nodes, CN=system:node:{node}. Returns (CSR DER, key SEC1 DER).
pub fn edge_csr(node: &str) -> Result<(Vec<u8>, Vec<u8>)> {
    let cn = format!("system:node:{node}");
    csr_with_subject(&[("C", "CN"), ("ST", "Zhejiang"), ("L", "Hangzhou"), ("O", "system:nodes"), ("CN", &cn)])
}

/// A CSR with a fresh key and the given subject attributes (`C`, `ST`, `L`, `O`, `OU`, `CN`),
/// in order. Returns (CSR DER, key SEC1 DER).
pub fn csr_with_subject(attrs: &[(&str, &str)]) -> Result<(Vec<u8>, Vec<u8>)> {
    csr_with(attrs, &[], &[])
}

/// A CSR with a fresh key, the given subject attributes, IP SANs and requested extended key
/// usages (what a hostile edge might ask for). Returns (CSR DER, key SEC1 DER).
pub fn csr_with(attrs: &[(&str, &str)], ips: &[IpAddr], usages: &[ExtKeyUsage]) -> Result<(Vec<u8>, Vec<u8>)> {
    let (key, key_sec1) = new_key()?;
    let mut params = CertificateParams::default();
    params.subject_alt_names = ips.iter().map(|ip| SanType::IpAddress(*ip)).collect();
    params.extended_key_usages = usages.to_vec();
    let mut dn = DistinguishedName::new();
    for (k, v) in attrs {
        let ty = match *k {
            "C" => DnType::CountryName,
            "ST" => DnType::StateOrProvinceName,
            "L" => DnType::LocalityName,
            "O" => DnType::OrganizationName,
            "OU" => DnType::OrganizationalUnitName,
            "CN" => DnType::CommonName,
            other => return Err(Error::Certificate(format!("unsupported subject attribute {other}"))),
        };
        // rcgen keeps one value per type; a second O is written under its OID (2.5.4.10), as
        // a hostile CSR with several organizations would carry it.
        let ty = match ty {
            DnType::OrganizationName if dn.get(&DnType::OrganizationName).is_some() => {
                DnType::CustomDnType(vec![2, 5, 4, 10])
            }
            other => other,
        };
        dn.push(ty, *v);
    }
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key)?;
    Ok((csr.der().to_vec(), key_sec1))
}

/// The subject of a certificate: (CN, O values).
pub fn subject(cert_der: &[u8]) -> Result<(String, Vec<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).map_err(|e| Error::Certificate(e.to_string()))?;
    let s = cert.subject();
    let cn = s.iter_common_name().next().and_then(|c| c.as_str().ok()).unwrap_or_default().to_owned();
    let orgs = s.iter_organization().filter_map(|o| o.as_str().ok().map(str::to_owned)).collect();
    Ok((cn, orgs))
}

/// Whether `cert_der` carries a valid signature by the CA certificate `ca_der`.
pub fn verify_signed_by(cert_der: &[u8], ca_der: &[u8]) -> bool {
    let (Ok((_, cert)), Ok((_, ca))) =
        (x509_parser::parse_x509_certificate(cert_der), x509_parser::parse_x509_certificate(ca_der))
    else {
        return false;
    };
    cert.verify_signature(Some(ca.public_key())).is_ok()
}

/// The subject of a CSR (CN, O values); the CSR's signature is checked.
pub fn csr_subject(csr_der: &[u8]) -> Result<(String, Vec<String>)> {
    use x509_parser::prelude::FromDer;
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(csr_der)
        .map_err(|e| Error::Certificate(e.to_string()))?;
    csr.verify_signature().map_err(|_| Error::Certificate("the CSR signature does not verify".into()))?;
    let s = &csr.certification_request_info.subject;
    let cn = s.iter_common_name().next().and_then(|c| c.as_str().ok()).unwrap_or_default().to_owned();
    let orgs = s.iter_organization().filter_map(|o| o.as_str().ok().map(str::to_owned)).collect();
    Ok((cn, orgs))
}

/// The largest `/edge.crt` request body CloudHub reads (a CSR is a few hundred bytes).
pub const MAX_CSR_BODY: usize = 64 * 1024;

/// Why the CSR of a `/edge.crt` request is refused ([`check_node_csr`]).
#[derive(Debug, thiserror::Error)]
pub enum NodeCsrError {
    /// The body is over [`MAX_CSR_BODY`]; it was not parsed.
    #[error("the body is larger than {MAX_CSR_BODY} bytes")]
    TooLarge,
    /// The body is not a DER CSR, or its signature does not verify.
    #[error("invalid CSR")]
    Invalid(#[source] Error),
    /// A valid CSR whose subject is not the node's.
    #[error(
        "the CSR subject CN={cn} O={orgs:?} is not node {node:?} (CN=system:node:{node}, O=system:nodes){}",
        legacy_hint(cn)
    )]
    Subject {
        /// The CSR's CN.
        cn: String,
        /// The CSR's O values.
        orgs: Vec<String>,
        /// The node the request is for (its `NodeName` header).
        node: String,
    },
}

fn legacy_hint(cn: &str) -> &'static str {
    if cn == "kubeedge.io" {
        "; this is a pre-1.17 edge: set modules.cloudHub.nodeIdentityCheck: false to admit such edges"
    } else {
        ""
    }
}

/// Whether a certificate or CSR subject names `node`: `CN=system:node:{node}` with
/// `O=system:nodes`, or, when `permissive`, v1.15's shared legacy subject (`CN=kubeedge.io`,
/// `O=kubeEdge` in any case).
pub fn node_subject_matches(cn: &str, orgs: &[String], node: &str, permissive: bool) -> bool {
    let strict = cn == format!("system:node:{node}") && orgs.iter().any(|o| o == "system:nodes");
    let legacy = cn == "kubeedge.io" && orgs.iter().any(|o| o.eq_ignore_ascii_case("kubeedge"));
    strict || (permissive && legacy)
}

/// The checks CloudHub's `/edge.crt` makes of a request body before signing it: at most
/// [`MAX_CSR_BODY`] bytes, a DER CSR whose signature verifies, and a subject naming `node`
/// ([`node_subject_matches`]). Pure, so it can be tested and fuzzed without a server.
pub fn check_node_csr(body: &[u8], node: &str, permissive: bool) -> Result<(), NodeCsrError> {
    if body.len() > MAX_CSR_BODY {
        return Err(NodeCsrError::TooLarge);
    }
    let (cn, orgs) = csr_subject(body).map_err(NodeCsrError::Invalid)?;
    if node_subject_matches(&cn, &orgs, node, permissive) {
        Ok(())
    } else {
        Err(NodeCsrError::Subject { cn, orgs, node: node.to_owned() })
    }
}

/// What a certificate says about whom it is for and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Subject CN.
    pub cn: String,
    /// Subject O values.
    pub orgs: Vec<String>,
    /// ExtKeyUsage serverAuth.
    pub server_auth: bool,
    /// ExtKeyUsage clientAuth.
    pub client_auth: bool,
    /// Subject alternative names, as text.
    pub sans: Vec<String>,
    /// BasicConstraints CA.
    pub is_ca: bool,
}

/// Reads a certificate's identity and usages.
pub fn cert_info(cert_der: &[u8]) -> Result<CertInfo> {
    let (cn, orgs) = subject(cert_der)?;
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).map_err(|e| Error::Certificate(e.to_string()))?;
    let eku = cert.extended_key_usage().ok().flatten().map(|e| e.value.clone());
    let sans = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|s| s.value.general_names.iter().map(|n| n.to_string()).collect())
        .unwrap_or_default();
    Ok(CertInfo {
        cn,
        orgs,
        server_auth: eku.as_ref().is_some_and(|e| e.server_auth || e.any),
        client_auth: eku.as_ref().is_some_and(|e| e.client_auth || e.any),
        sans,
        is_ca: cert.is_ca(),
    })
}

/// A certificate's validity: (not before, not after) as Unix seconds.
pub fn validity(cert_der: &[u8]) -> Result<(i64, i64)> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).map_err(|e| Error::Certificate(e.to_string()))?;
    Ok((cert.validity().not_before.timestamp(), cert.validity().not_after.timestamp()))
}

/// PEM-encodes DER under a label.
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The first PEM block: (label, DER).
pub fn parse_pem(text: &str) -> Result<(String, Vec<u8>)> {
    let begin = text.find("-----BEGIN ").ok_or_else(|| Error::Pem("no BEGIN line".into()))?;
    let rest = &text[begin + 11..];
    let label_end = rest.find("-----").ok_or_else(|| Error::Pem("unterminated BEGIN line".into()))?;
    let label = rest[..label_end].to_owned();
    let body_start = label_end + 5;
    let end_marker = format!("-----END {label}-----");
    let end = rest.find(&end_marker).ok_or_else(|| Error::Pem(format!("no END {label} line")))?;
    let body: String = rest[body_start..end].chars().filter(|c| !c.is_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(body).map_err(|e| Error::Pem(e.to_string()))?;
    Ok((label, der))
}

/// Every `CERTIFICATE` block of a PEM text, in order (a serving certificate then its
/// intermediates, or a CA bundle); blocks with other labels are skipped. None is an error.
pub fn parse_pem_certificates(text: &str) -> Result<Vec<Vec<u8>>> {
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(END) {
        let (label, der) = parse_pem(&rest[..i + END.len()])?;
        if label == "CERTIFICATE" {
            out.push(der);
        }
        rest = &rest[i + END.len()..];
    }
    if out.is_empty() {
        return Err(Error::Pem("no CERTIFICATE block".into()));
    }
    Ok(out)
}

/// Reads a P-256 private key from PEM as SEC1 DER. Accepts `EC PRIVATE KEY` (SEC1), upstream's
/// SEC1 bytes mislabelled `PRIVATE KEY`, and real PKCS#8 under `PRIVATE KEY`.
pub fn key_from_pem(text: &str) -> Result<Vec<u8>> {
    let (label, der) = parse_pem(text)?;
    match label.as_str() {
        "EC PRIVATE KEY" => Ok(der),
        "PRIVATE KEY" => match pkcs8_to_sec1(&der) {
            Ok(sec1) => Ok(sec1),
            // Upstream writes SEC1 under this label.
            Err(_) => sec1_to_pkcs8(&der).map(|_| der).map_err(Error::Der),
        },
        other => Err(Error::Key(format!("unsupported PEM label {other:?}"))),
    }
}

/// A rustls private key from SEC1 DER.
pub fn rustls_key(sec1: &[u8]) -> rustls_pki_types::PrivateKeyDer<'static> {
    rustls_pki_types::PrivateKeyDer::Sec1(sec1.to_vec().into())
}

/// Extended key usages for [`Ca::sign_csr`].
pub use rcgen::ExtendedKeyUsagePurpose as ExtKeyUsage;
/// The key and certificate types rcgen and rustls share.
pub use rustls_pki_types;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_csr_checks_size_signature_and_subject() {
        let (csr, _) = edge_csr("edge-1").expect("csr");
        check_node_csr(&csr, "edge-1", false).expect("the node's own CSR");
        let other = check_node_csr(&csr, "edge-2", true).expect_err("another node");
        assert_eq!(
            other.to_string(),
            "the CSR subject CN=system:node:edge-1 O=[\"system:nodes\"] is not node \"edge-2\" \
             (CN=system:node:edge-2, O=system:nodes)"
        );
        assert!(matches!(check_node_csr(b"junk", "edge-1", false), Err(NodeCsrError::Invalid(_))));
        let mut tampered = csr.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(matches!(check_node_csr(&tampered, "edge-1", false), Err(NodeCsrError::Invalid(_))));
        let huge = vec![0u8; MAX_CSR_BODY + 1];
        assert!(matches!(check_node_csr(&huge, "edge-1", false), Err(NodeCsrError::TooLarge)));
    }

    #[test]
    fn legacy_subject_only_when_permissive() {
        let legacy = [("C", "CN"), ("O", "kubeEdge"), ("CN", "kubeedge.io")];
        let (csr, _) = csr_with_subject(&legacy).expect("csr");
        check_node_csr(&csr, "edge-capture", true).expect("permissive");
        let refused = check_node_csr(&csr, "edge-capture", false).expect_err("strict");
        assert!(refused.to_string().ends_with("nodeIdentityCheck: false to admit such edges"), "{refused}");
        assert!(!node_subject_matches("system:node:a", &["system:masters".into()], "a", true));
        assert!(node_subject_matches("system:node:a", &["x".into(), "system:nodes".into()], "a", false));
    }
}
