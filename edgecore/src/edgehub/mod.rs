//! EdgeHub: the edge's link to CloudHub.
//!
//! - [`certs`]: joining with the token alone — fetch the CA, check it against the token, send a
//!   CSR, write the CA, certificate and key files.
//! - [`module`]: the EdgeHub bus module — the session to CloudHub.
//! - [`LinkFeatures`]: what the current session agreed on with CloudHub beyond upstream's
//!   protocol, read by the modules that speak it (Edged's compact lease renewal).

pub mod certs;
pub mod module;

use std::sync::Arc;

use tokio::sync::watch;

/// What the current session with CloudHub agreed on in its handshake
/// (`X-KubeEdge-Rs-Features`; empty while disconnected and with an upstream cloud). A
/// snapshot reader: EdgeHub writes it as sessions come and go
/// ([`module::EdgeHubModule::link_features`]). The default never agrees on anything (no
/// EdgeHub, e.g. in tests).
#[derive(Clone, Debug)]
pub struct LinkFeatures(watch::Receiver<Arc<[String]>>);

impl Default for LinkFeatures {
    fn default() -> Self {
        // The sender goes at once: the receiver keeps reading the empty list.
        Self(watch::channel(Arc::from(Vec::new())).1)
    }
}

impl LinkFeatures {
    /// Whether the current session agreed on `feature`.
    pub fn has(&self, feature: &str) -> bool {
        self.0.borrow().iter().any(|f| f == feature)
    }
}

/// EdgeHub's side of [`LinkFeatures`].
#[derive(Debug)]
pub(crate) struct LinkFeaturesWriter(watch::Sender<Arc<[String]>>);

impl Default for LinkFeaturesWriter {
    fn default() -> Self {
        Self(watch::channel(Arc::from(Vec::new())).0)
    }
}

impl LinkFeaturesWriter {
    /// A reader of what this writer sets.
    pub(crate) fn reader(&self) -> LinkFeatures {
        LinkFeatures(self.0.subscribe())
    }

    /// A session agreed on `features` (an empty list: a session ended, or an upstream cloud).
    pub(crate) fn set(&self, features: &[String]) {
        self.0.send_replace(Arc::from(features.to_vec()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_see_what_the_current_session_agreed() {
        let writer = LinkFeaturesWriter::default();
        let reader = writer.reader();
        assert!(!reader.has("lease-renew"));
        writer.set(&["inventory".to_owned(), "lease-renew".to_owned()]);
        assert!(reader.has("lease-renew") && reader.clone().has("inventory"));
        writer.set(&[]);
        assert!(!reader.has("lease-renew"));
        assert!(!LinkFeatures::default().has("lease-renew"));
    }
}
