//! CloudHub's `GET /edge.crt` (cloudcore/src/cloudhub/https.rs), minus the server: the request
//! as it arrives (an HTTP/1.1 head, then a DER CSR body), the `NodeName` and `Authorization`
//! headers, the join token's JWT ([`kubeedge_pki::verify_jwt_at`]), the CSR checks
//! ([`kubeedge_pki::check_node_csr`]) and the certificate issued for a CSR that passes
//! ([`kubeedge_pki::Ca::issue_node_client`]). The body is also read as a client certificate
//! (the rotation path's `subject`, `validity`, `verify_signed_by`).
//!
//! The body is what a server would read: the bytes after the head, padded with zeros up to a
//! larger `Content-Length` (so bodies over the cap are reachable from small inputs). Asserts:
//! - a body over [`kubeedge_pki::MAX_CSR_BODY`] is refused as `TooLarge`, unparsed;
//! - a CSR that passes the strict check passes the permissive one, its subject names the node,
//!   and the certificate issued for it says `CN=system:node:{node}`, `O=system:nodes`, client
//!   auth only, no SANs, not a CA, signed by the CA: whatever the CSR asked for;
//! - a JWT is only accepted with the right key and unexpired, and a token bound to a node
//!   names a non-empty one (a JWT re-signed with the key exercises the claims parser);
//! - with the made-up `Fuzz-Subject: CN|O|O` header, a CSR built with that subject reads back
//!   the same subject and is accepted exactly when [`kubeedge_pki::node_subject_matches`] says.

#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use kubeedge_pki::{Ca, MAX_CSR_BODY, NodeCsrError};
use libfuzzer_sys::fuzz_target;

/// The HMAC key the join tokens of the seeds are signed with (upstream: the CA key).
const KEY: &[u8] = b"kubeedge-fuzz-hmac-key";
/// "Now" for token expiry: 2027-01-15, after the seeds' tokens were made, before they expire.
const NOW_SECS: u64 = 1_800_000_000;

fn ca() -> &'static Ca {
    static CA: OnceLock<Ca> = OnceLock::new();
    CA.get_or_init(|| Ca::generate().expect("CA"))
}

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fuzz_target!(|data: &[u8]| {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(head_len)) = req.parse(data) else { return };
    // `HeaderMap::get` semantics: the first value of a case-insensitively matching name,
    // readable only when it is visible ASCII (`HeaderValue::to_str`).
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .filter(|v| v.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)))
            .map(str::trim)
    };

    let mut body = data[head_len..].to_vec();
    if let Some(declared) = header("Content-Length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(declared.clamp(body.len(), 2 * MAX_CSR_BODY + 2), 0);
    }

    // The bearer token: as given, then re-signed so the claims are parsed too.
    if let Some(jwt) = header("Authorization").and_then(|a| a.strip_prefix("Bearer ")) {
        let now = UNIX_EPOCH + Duration::from_secs(NOW_SECS);
        check_claims(kubeedge_pki::verify_jwt_at(KEY, jwt, now));
        let mut parts = jwt.trim().split('.');
        if let (Some(h), Some(c)) = (parts.next(), parts.next()) {
            let tag =
                ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, KEY), format!("{h}.{c}").as_bytes());
            let resigned = format!("{h}.{c}.{}", b64url(tag.as_ref()));
            check_claims(kubeedge_pki::verify_jwt_at(KEY, &resigned, now));
            assert!(kubeedge_pki::verify_jwt_at(b"another key", &resigned, now).is_err(), "wrong key accepted");
        }
    }

    let Some(node) = header("NodeName").filter(|n| !n.is_empty()) else { return };
    if !kubeedge_model::valid_node_name(node) {
        return;
    }
    if let Some(subject) = header("Fuzz-Subject") {
        built_subject(subject, node);
    }

    // The rotation path reads a client certificate with the same parsers.
    let _ = kubeedge_pki::subject(&body);
    let _ = kubeedge_pki::validity(&body);
    let _ = kubeedge_pki::cert_info(&body);
    let _ = kubeedge_pki::verify_signed_by(&body, ca().cert_der());

    let strict = kubeedge_pki::check_node_csr(&body, node, false);
    let permissive = kubeedge_pki::check_node_csr(&body, node, true);
    if body.len() > MAX_CSR_BODY {
        assert!(matches!(strict, Err(NodeCsrError::TooLarge)), "{} bytes were read", body.len());
        assert!(matches!(permissive, Err(NodeCsrError::TooLarge)));
        return;
    }
    if let Err(NodeCsrError::Subject { cn, orgs, node: n }) = &permissive {
        assert_eq!(n, node);
        assert!(!kubeedge_pki::node_subject_matches(cn, orgs, node, true));
    }
    if permissive.is_err() {
        assert!(strict.is_err(), "the strict check accepted what the permissive one refused");
        return;
    }
    let (cn, orgs) = kubeedge_pki::csr_subject(&body).expect("a CSR that passed the check parses");
    assert!(kubeedge_pki::node_subject_matches(&cn, &orgs, node, true));
    assert_eq!(strict.is_ok(), kubeedge_pki::node_subject_matches(&cn, &orgs, node, false));

    // Signing ignores everything the CSR asked for but its key.
    let Ok(cert) = ca().issue_node_client(&body, node, Duration::from_secs(86_400)) else { return };
    let info = kubeedge_pki::cert_info(&cert).expect("issued certificate parses");
    assert_eq!(info.cn, format!("system:node:{node}"));
    assert_eq!(info.orgs, vec!["system:nodes".to_owned()]);
    assert!(info.client_auth && !info.server_auth && !info.is_ca && info.sans.is_empty(), "{info:?}");
    assert!(kubeedge_pki::verify_signed_by(&cert, ca().cert_der()));
    let (not_before, not_after) = kubeedge_pki::validity(&cert).expect("validity");
    assert!(not_after > not_before);
});

fn check_claims(result: kubeedge_pki::Result<kubeedge_pki::TokenClaims>) {
    if let Ok(claims) = result {
        assert!(claims.exp >= NOW_SECS, "an expired token was accepted: {claims:?}");
        assert!(claims.node.as_ref().is_none_or(|n| !n.is_empty()), "{claims:?}");
    }
}

/// `CN|O|O`: a CSR with that subject, through rcgen's encoder and x509-parser's decoder.
fn built_subject(spec: &str, node: &str) {
    let mut fields = spec.split('|');
    let cn = fields.next().unwrap_or_default();
    // rcgen keeps one value per attribute type: pki writes a second O under its OID, a third
    // would replace the second.
    let orgs: Vec<&str> = fields.take(2).collect();
    let mut attrs = vec![("CN", cn)];
    attrs.extend(orgs.iter().map(|o| ("O", *o)));
    let Ok((csr, _key)) = kubeedge_pki::csr_with_subject(&attrs) else { return };
    let (read_cn, read_orgs) = kubeedge_pki::csr_subject(&csr).expect("a CSR rcgen built parses");
    assert_eq!(read_cn, cn);
    assert_eq!(read_orgs, orgs);
    for permissive in [false, true] {
        let verdict = kubeedge_pki::check_node_csr(&csr, node, permissive);
        let orgs: Vec<String> = orgs.iter().map(|o| (*o).to_owned()).collect();
        assert_eq!(verdict.is_ok(), kubeedge_pki::node_subject_matches(cn, &orgs, node, permissive));
    }
}
