//! Service-account tokens as kube-apiserver issues them through TokenRequest: JWTs signed with
//! the server's service-account key (ES256, P-256), with the standard claims (`iss`, `sub`,
//! `aud`, `exp`, `iat`, `nbf`, `jti`) and the private `kubernetes.io` claim (namespace, service
//! account, the pod it is bound to). The public key is published at `/openid/v1/jwks`, the issuer
//! at `/.well-known/openid-configuration`, so a client can verify a token without asking.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, UnparsedPublicKey,
};
use serde_json::{Value, json};

use crate::auth::User;

/// The issuer, kube-apiserver's default `--service-account-issuer` in clusters set up by kubeadm.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// What a token is for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    /// The namespace.
    pub namespace: String,
    /// The service account's name and UID.
    pub service_account: (String, String),
    /// The pod the token is bound to (name, UID), if any.
    pub pod: Option<(String, String)>,
}

/// The service-account signing key.
pub struct Signer {
    key: EcdsaKeyPair,
    kid: String,
}

impl Default for Signer {
    fn default() -> Self {
        let rng = SystemRandom::new();
        // Generating and loading a fresh P-256 key only fails if the system RNG does.
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("system RNG");
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).expect("fresh key");
        let digest = ring::digest::digest(&ring::digest::SHA256, key.public_key().as_ref());
        let kid = B64.encode(&digest.as_ref()[..16]);
        Self { key, kid }
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Signer {
    /// A token for `subject`, valid for `ttl`, for `audiences` (the issuer when empty).
    pub fn mint(&self, subject: &Subject, audiences: &[String], ttl: Duration) -> (String, SystemTime) {
        let now = SystemTime::now();
        let expires = now.checked_add(ttl).unwrap_or(now);
        let aud = if audiences.is_empty() { vec![ISSUER.to_owned()] } else { audiences.to_vec() };
        let (sa, sa_uid) = &subject.service_account;
        let mut private = json!({"namespace": subject.namespace, "serviceaccount": {"name": sa, "uid": sa_uid}});
        if let Some((name, uid)) = &subject.pod {
            private["pod"] = json!({"name": name, "uid": uid});
        }
        let claims = json!({
            "aud": aud,
            "exp": unix(expires),
            "iat": unix(now),
            "iss": ISSUER,
            "jti": uuid::Uuid::new_v4().to_string(),
            "kubernetes.io": private,
            "nbf": unix(now),
            "sub": format!("system:serviceaccount:{}:{sa}", subject.namespace),
        });
        let header = json!({"alg": "ES256", "kid": self.kid});
        let input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
        // Signing with a valid key only fails if the system RNG does.
        let sig = self.key.sign(&SystemRandom::new(), input.as_bytes()).expect("system RNG");
        (format!("{input}.{}", B64.encode(sig.as_ref())), expires)
    }

    /// The user of a token this signer issued, if its signature holds and it has not expired.
    pub fn verify(&self, token: &str) -> Option<User> {
        let claims = verify_with(self.key.public_key().as_ref(), token, SystemTime::now())?;
        // As kube-apiserver with its default API audiences: a token for another audience (say,
        // a vault) is not an API credential.
        let for_api = claims.get("aud").and_then(Value::as_array).is_some_and(|a| a.iter().any(|x| x == ISSUER));
        if claims.get("iss").and_then(Value::as_str) != Some(ISSUER) || !for_api {
            return None;
        }
        let sub = claims.get("sub")?.as_str()?;
        let ns = claims.pointer("/kubernetes.io/namespace")?.as_str()?;
        Some(User {
            name: sub.to_owned(),
            groups: vec![
                "system:serviceaccounts".to_owned(),
                format!("system:serviceaccounts:{ns}"),
                "system:authenticated".to_owned(),
            ],
        })
    }

    /// The public key as a JSON Web Key Set (`/openid/v1/jwks`).
    pub fn jwks(&self) -> Value {
        // An uncompressed P-256 point: 0x04 | x (32 bytes) | y (32 bytes).
        let point = self.key.public_key().as_ref();
        json!({"keys": [{"use": "sig", "kty": "EC", "kid": self.kid, "crv": "P-256", "alg": "ES256",
            "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65])}]})
    }
}

/// The OpenID discovery document (`/.well-known/openid-configuration`).
pub fn openid_configuration(base_url: &str) -> Value {
    json!({"issuer": ISSUER, "jwks_uri": format!("{base_url}/openid/v1/jwks"),
        "response_types_supported": ["id_token"], "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"]})
}

/// The claims of an ES256 JWT whose signature verifies with `public_key` (an uncompressed P-256
/// point) and which is valid at `now`.
pub fn verify_with(public_key: &[u8], token: &str, now: SystemTime) -> Option<Value> {
    let mut parts = token.split('.');
    let (h, c, s, None) = (parts.next()?, parts.next()?, parts.next()?, parts.next()) else { return None };
    let header: Value = serde_json::from_slice(&B64.decode(h).ok()?).ok()?;
    if header.get("alg")?.as_str()? != "ES256" {
        return None;
    }
    let sig = B64.decode(s).ok()?;
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public_key).verify(format!("{h}.{c}").as_bytes(), &sig).ok()?;
    let claims: Value = serde_json::from_slice(&B64.decode(c).ok()?).ok()?;
    let now = unix(now);
    let (exp, nbf) = (claims.get("exp")?.as_u64()?, claims.get("nbf").and_then(Value::as_u64).unwrap_or(0));
    (nbf <= now && now < exp).then_some(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_signed_jwts_with_the_standard_claims() {
        let s = Signer::default();
        let subject = Subject {
            namespace: "default".into(),
            service_account: ("robot".into(), "sa-uid".into()),
            pod: Some(("web".into(), "pod-uid".into())),
        };
        let (t, _) = s.mint(&subject, &["api".into()], Duration::from_secs(600));
        assert_eq!(t.split('.').count(), 3);
        let jwk = &s.jwks()["keys"][0];
        let mut point = vec![4u8];
        point.extend(B64.decode(jwk["x"].as_str().unwrap()).unwrap());
        point.extend(B64.decode(jwk["y"].as_str().unwrap()).unwrap());
        let claims = verify_with(&point, &t, SystemTime::now()).expect("verifies with the published key");
        assert_eq!(claims["sub"], "system:serviceaccount:default:robot");
        assert_eq!(claims["aud"], json!(["api"]));
        assert_eq!(claims["iss"], ISSUER);
        assert_eq!(claims["kubernetes.io"]["pod"]["uid"], "pod-uid");
        assert_eq!(claims["kubernetes.io"]["serviceaccount"]["uid"], "sa-uid");
        assert!(s.verify(&t).is_none(), "a token for another audience is no API credential");
        let (api, _) = s.mint(&subject, &[], Duration::from_secs(600));
        assert_eq!(s.verify(&api).unwrap().name, "system:serviceaccount:default:robot");
        let later = SystemTime::now() + Duration::from_secs(601);
        assert!(verify_with(&point, &t, later).is_none(), "expired");
        let mut forged = t.clone();
        forged.replace_range(forged.len() - 4.., "AAAA");
        assert!(s.verify(&forged).is_none());
        assert!(Signer::default().verify(&api).is_none(), "another server's key");
    }
}
