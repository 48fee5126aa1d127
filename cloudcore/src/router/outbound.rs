//! Calls of rest targets: an edge message (eventbus → rest) or an edge app's call (servicebus
//! → rest) delivered as an HTTP request to a cloud URL. Plain HTTP only in this build (a
//! Rule naming an `https://` target is reported broken). The answer's body is read up to
//! [`MAX_RESPONSE`] (upstream's `MaxRespBodyLength`); a longer one is an error, not cut short.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The most a rest target's answer may hold (1 MiB).
pub const MAX_RESPONSE: usize = 1 << 20;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // The variants say what their fields are.
pub enum CallError {
    /// The URL or method cannot make a request.
    #[error("invalid request to {url}: {reason}")]
    Invalid { url: String, reason: String },
    /// No answer in time.
    #[error("no answer from {url} within {secs} s")]
    Timeout { url: String, secs: u64 },
    /// Connecting or sending failed.
    #[error("calling {url}: {reason}")]
    Failed { url: String, reason: String },
    /// The answer was larger than [`MAX_RESPONSE`].
    #[error("the answer of {url} is larger than {MAX_RESPONSE} bytes")]
    TooLarge { url: String },
}

/// A target's answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Its status.
    pub status: u16,
    /// Its body.
    pub body: Bytes,
}

/// A pooled HTTP client for rest targets.
#[derive(Clone)]
pub struct Caller {
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl Caller {
    /// A client whose calls give up after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(30).min(timeout)));
        let client = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(8).build(connector);
        Self { client, timeout }
    }

    /// Sends `body` to `url` with `method` (POST when empty).
    pub async fn call(&self, method: &str, url: &str, body: Bytes) -> Result<Answer, CallError> {
        let method = if method.is_empty() { "POST" } else { method };
        let invalid = |reason: String| CallError::Invalid { url: url.to_owned(), reason };
        let method = http::Method::from_bytes(method.as_bytes()).map_err(|e| invalid(e.to_string()))?;
        let req = http::Request::builder()
            .method(method)
            .uri(url)
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .body(Full::new(body))
            .map_err(|e| invalid(e.to_string()))?;
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| CallError::Failed { url: url.to_owned(), reason: error_chain(&e) })?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                        CallError::TooLarge { url: url.to_owned() }
                    } else {
                        CallError::Failed { url: url.to_owned(), reason: e.to_string() }
                    }
                })?
                .to_bytes();
            Ok(Answer { status, body })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout { url: url.to_owned(), secs: self.timeout.as_secs() }),
        }
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
