//! The PKI against upstream's formats: CA and certificates as upstream makes them, a real
//! v1.15.4 edge CSR signed, tokens round-tripped and forged ones refused, SEC1 keys under both
//! PEM labels.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use kubeedge_pki::{
    Ca, ExtKeyUsage, edge_csr, key_from_pem, pem, sec1_to_pkcs8, split_token, subject, validity, verify_jwt_at,
};
use x509_parser::prelude::*;

fn fixture(name: &str) -> serde_json::Value {
    let path = format!("{}/../../tests/fixtures/upstream/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn ca_is_shaped_like_upstreams() {
    let ca = Ca::generate().unwrap();
    let (_, cert) = parse_x509_certificate(ca.cert_der()).unwrap();
    assert_eq!(subject(ca.cert_der()).unwrap().0, "KubeEdge");
    assert_eq!(cert.raw_serial(), &[0x04, 0x00]);
    assert!(cert.is_ca());
    let (from, to) = validity(ca.cert_der()).unwrap();
    assert_eq!((to - from) / 86_400, 100 * 364);
    assert_eq!(ca.hash().len(), 64);
    assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----\n"));

    let again = Ca::from_der(ca.cert_der(), ca.key_sec1()).unwrap();
    assert_eq!(again.hash(), ca.hash());
    let other = Ca::generate().unwrap();
    assert!(Ca::from_der(ca.cert_der(), other.key_sec1()).is_err(), "a key from another CA must be refused");
    assert!(Ca::from_der(b"junk", ca.key_sec1()).is_err());
}

#[test]
fn server_cert_has_the_sans_and_verifies() {
    let ca = Ca::generate().unwrap();
    let ips: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "10.0.0.5".parse().unwrap()];
    let server = ca.issue_server(&ips, &["cloudcore.example".into()]).unwrap();
    let (_, cert) = parse_x509_certificate(&server.cert_der).unwrap();
    let (_, ca_cert) = parse_x509_certificate(ca.cert_der()).unwrap();
    cert.verify_signature(Some(ca_cert.public_key())).unwrap();
    let sans = cert.subject_alternative_name().unwrap().unwrap().value.general_names.clone();
    let text = format!("{sans:?}");
    assert!(text.contains("127.0.0.1") || text.contains("[127, 0, 0, 1]"), "{text}");
    assert!(text.contains("cloudcore.example"), "{text}");
    assert_eq!(subject(&server.cert_der).unwrap(), ("KubeEdge".to_owned(), vec!["KubeEdge".to_owned()]));
    // The key is usable by rustls as SEC1.
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![server.cert_der.clone().into()], kubeedge_pki::rustls_key(&server.key_sec1))
        .unwrap();
}

#[test]
fn edge_csr_is_signed_with_its_subject() {
    let ca = Ca::generate().unwrap();
    let (csr, key) = edge_csr("edge-1").unwrap();
    assert!(sec1_to_pkcs8(&key).is_ok());
    let cert = ca.sign_csr(&csr, 365, &[ExtKeyUsage::ClientAuth]).unwrap();
    assert_eq!(subject(&cert).unwrap(), ("system:node:edge-1".to_owned(), vec!["system:nodes".to_owned()]));
    let (from, to) = validity(&cert).unwrap();
    assert_eq!((to - from) / 86_400, 365);
    let (_, parsed) = parse_x509_certificate(&cert).unwrap();
    let (_, ca_cert) = parse_x509_certificate(ca.cert_der()).unwrap();
    parsed.verify_signature(Some(ca_cert.public_key())).unwrap();
    assert!(parsed.extended_key_usage().unwrap().unwrap().value.client_auth);
    assert!(ca.sign_csr(b"not a csr", 365, &[]).is_err());
    let mut forged = csr.clone();
    let n = forged.len();
    forged[n - 5] ^= 0xff;
    assert!(ca.sign_csr(&forged, 365, &[]).is_err(), "a CSR with a broken signature must be refused");
}

#[test]
fn a_real_v1_15_edge_csr_is_signed() {
    use base64::Engine;
    let req = fixture("edge-crt-request.json");
    let der = base64::engine::general_purpose::STANDARD.decode(req["csr"]["der_base64"].as_str().unwrap()).unwrap();
    let ca = Ca::generate().unwrap();
    let cert = ca.sign_csr(&der, 365, &[ExtKeyUsage::ClientAuth]).unwrap();
    let (cn, orgs) = subject(&cert).unwrap();
    assert_eq!((cn.as_str(), orgs), ("kubeedge.io", vec!["kubeEdge".to_owned()]));
}

#[test]
fn tokens_verify_and_forgeries_do_not() {
    let ca = Ca::generate().unwrap();
    let token = ca.token(Duration::from_secs(24 * 3600));
    let (hash, jwt) = split_token(&token).unwrap();
    assert_eq!(hash, ca.hash());
    assert_eq!(token.split('.').count(), 4);
    ca.verify_jwt(jwt).unwrap();
    // Same header bytes as golang-jwt.
    assert!(jwt.starts_with("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."));

    let other = Ca::generate().unwrap();
    assert!(other.verify_jwt(jwt).is_err(), "signed by another CA");
    let later = SystemTime::now() + Duration::from_secs(25 * 3600);
    assert!(verify_jwt_at(ca.key_sec1(), jwt, later).is_err(), "expired");
    let mut parts: Vec<&str> = jwt.split('.').collect();
    let none_header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
    parts[0] = none_header;
    assert!(ca.verify_jwt(&parts.join(".")).is_err(), "alg none");
    assert!(ca.verify_jwt("a.b").is_err());
    assert!(split_token("abc").is_err());
    assert!(split_token(&format!("{}.x.y", ca.hash())).is_err());

    // The bearer a v1.15.4 edge sent has upstream's shape.
    let req = fixture("edge-crt-request.json");
    let auth = req["headers"].as_array().unwrap().iter().find(|h| h[0] == "Authorization").unwrap()[1]
        .as_str()
        .unwrap()
        .to_owned();
    let upstream_jwt = auth.strip_prefix("Bearer ").unwrap();
    assert!(upstream_jwt.starts_with("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."));
    assert!(ca.verify_jwt(upstream_jwt).is_err(), "not signed by this CA");
}

#[test]
fn node_tokens_name_their_node_and_shared_ones_none() {
    let ca = Ca::generate().unwrap();
    let shared = ca.token(Duration::from_secs(60));
    assert_eq!(ca.verify_jwt(split_token(&shared).unwrap().1).unwrap().node, None);
    let bound = ca.node_token("edge-b", Duration::from_secs(60));
    let (hash, jwt) = split_token(&bound).unwrap();
    assert_eq!(hash, ca.hash(), "still caHash.JWT, so keadm join takes it as it is");
    let claims = ca.verify_jwt(jwt).unwrap();
    assert_eq!(claims.node.as_deref(), Some("edge-b"));
    assert!(claims.exp > 0);
    let later = SystemTime::now() + Duration::from_secs(120);
    assert!(verify_jwt_at(ca.key_sec1(), jwt, later).is_err(), "node tokens expire too");
}

#[test]
fn node_client_certificates_take_only_the_public_key() {
    let ca = Ca::generate().unwrap();
    let (csr, _) = kubeedge_pki::csr_with(
        &[("CN", "admin"), ("O", "system:masters")],
        &["10.1.2.3".parse().unwrap()],
        &[ExtKeyUsage::ServerAuth],
    )
    .unwrap();
    let cert = ca.issue_node_client(&csr, "edge-a", Duration::from_secs(3600)).unwrap();
    let info = kubeedge_pki::cert_info(&cert).unwrap();
    assert_eq!(info.cn, "system:node:edge-a");
    assert_eq!(info.orgs, ["system:nodes"]);
    assert!(info.client_auth && !info.server_auth && info.sans.is_empty() && !info.is_ca, "{info:?}");
    let (nb, na) = validity(&cert).unwrap();
    assert!((3500..=3700).contains(&(na - nb)));
    assert!(ca.issue_node_client(b"junk", "edge-a", Duration::from_secs(1)).is_err());
}

#[test]
fn keys_load_under_both_pem_labels() {
    let (_, sec1) = edge_csr("n").unwrap();
    assert_eq!(key_from_pem(&pem("EC PRIVATE KEY", &sec1)).unwrap(), sec1);
    // Upstream's cloud-side files: SEC1 bytes under a PKCS#8 label.
    assert_eq!(key_from_pem(&pem("PRIVATE KEY", &sec1)).unwrap(), sec1);
    // Real PKCS#8.
    let pkcs8 = sec1_to_pkcs8(&sec1).unwrap();
    assert_eq!(key_from_pem(&pem("PRIVATE KEY", &pkcs8)).unwrap(), sec1);
    assert!(key_from_pem("no pem here").is_err());
    assert!(key_from_pem(&pem("RSA PRIVATE KEY", b"x")).is_err());
    assert!(key_from_pem(&pem("PRIVATE KEY", b"junk")).is_err());
}
