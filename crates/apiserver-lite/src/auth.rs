//! Authentication: bearer tokens and client certificates, as kube-apiserver does it. Every
//! authenticated user may do everything (the stand-in has no RBAC); unauthenticated requests
//! get 401.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use parking_lot::RwLock;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// User name (`kubernetes-admin`, `system:node:edge-1`, `system:serviceaccount:ns:sa`).
    pub name: String,
    /// Groups (`system:masters`, `system:nodes`…).
    pub groups: Vec<String>,
}

struct Token {
    user: User,
    expires: Option<SystemTime>,
}

/// Known bearer tokens: static ones from start-up and service-account tokens minted through
/// `serviceaccounts/{name}/token`.
#[derive(Default)]
pub struct Authenticator {
    tokens: RwLock<HashMap<String, Token>>,
    /// Service-account tokens (JWTs) are signed with this key and verified against it.
    pub signer: crate::satoken::Signer,
}

impl Authenticator {
    /// Registers a token that never expires.
    pub fn add_token(&self, token: &str, user: User) {
        self.tokens.write().insert(token.to_owned(), Token { user, expires: None });
    }

    /// Mints a random token for `user`, valid for `ttl`.
    pub fn mint(&self, user: User, ttl: Duration) -> (String, SystemTime) {
        let token = random_token();
        let now = SystemTime::now();
        let expires = now.checked_add(ttl).unwrap_or(now);
        let mut tokens = self.tokens.write();
        // Expired tokens are dropped as new ones are minted, so the table stays bounded.
        tokens.retain(|_, t| t.expires.is_none_or(|e| e > now));
        tokens.insert(token.clone(), Token { user, expires: Some(expires) });
        (token, expires)
    }

    /// The user of an `Authorization` header value, if it is a known, unexpired bearer token or
    /// a service-account JWT this server signed.
    pub fn bearer(&self, header: &str) -> Option<User> {
        let token = header.strip_prefix("Bearer ").or_else(|| header.strip_prefix("bearer "))?.trim();
        if token.split('.').count() == 3
            && let Some(user) = self.signer.verify(token)
        {
            return Some(user);
        }
        let tokens = self.tokens.read();
        let t = tokens.get(token)?;
        if t.expires.is_some_and(|e| e <= SystemTime::now()) {
            return None;
        }
        Some(t.user.clone())
    }
}

/// 32 random lowercase alphanumerics.
pub fn random_token() -> String {
    use rand::RngExt;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..32).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_authenticate_until_they_expire() {
        let auth = Authenticator::default();
        let admin = User { name: "admin".into(), groups: vec!["system:masters".into()] };
        auth.add_token("abc", admin.clone());
        assert_eq!(auth.bearer("Bearer abc"), Some(admin.clone()));
        assert_eq!(auth.bearer("Bearer nope"), None);
        assert_eq!(auth.bearer("Basic abc"), None);
        let (t, _) = auth.mint(admin.clone(), Duration::from_secs(60));
        assert_eq!(auth.bearer(&format!("Bearer {t}")), Some(admin.clone()));
        let (t, _) = auth.mint(admin, Duration::ZERO);
        assert_eq!(auth.bearer(&format!("Bearer {t}")), None);
    }
}
