//! A CRI v1 client: how Edged (edgecore's kubelet) talks to the container runtime, containerd,
//! over its unix socket.
//!
//! The `runtime.v1` API (RuntimeService and ImageService) is generated at build time from the
//! vendored `proto/api.proto` of kubernetes/cri-api, with protox (no `protoc` needed) and
//! tonic-prost-build; every message type is in [`v1`]. [`Cri`] holds one HTTP/2 channel to the
//! socket and offers typed calls for what a kubelet does, each with a deadline; anything else
//! is reachable through its public generated clients.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kubeedge_cri::Error> {
//! let cri = kubeedge_cri::Cri::connect("/run/containerd/containerd.sock").await?;
//! let status = cri.status().await?;
//! println!("{} ready: {}", cri.version().await?.runtime_name, status.is_ready(kubeedge_cri::RUNTIME_READY));
//! # Ok(()) }
//! ```

mod client;
mod error;

pub use client::{Cri, Options};
pub use error::{Error, Result};

/// The generated CRI v1 types and clients (`runtime.v1`). The proto's comments become the
/// docs; they are written for Go, hence the rustdoc allowances.
#[allow(missing_docs, clippy::all, clippy::pedantic, rustdoc::bare_urls, rustdoc::invalid_html_tags)]
pub mod v1 {
    tonic::include_proto!("runtime.v1");
}

/// The runtime condition saying the runtime is up and ready to run containers.
pub const RUNTIME_READY: &str = "RuntimeReady";
/// The runtime condition saying pod networking (CNI) is ready.
pub const NETWORK_READY: &str = "NetworkReady";

// === impl helpers on generated types ===

impl v1::StatusResponse {
    /// Whether the runtime reports condition `ty` (e.g. [`RUNTIME_READY`]) as true.
    pub fn is_ready(&self, ty: &str) -> bool {
        self.status.as_ref().and_then(|s| s.condition(ty)).is_some_and(|c| c.status)
    }
}

impl v1::RuntimeStatus {
    /// The condition of type `ty`, if the runtime reports it.
    pub fn condition(&self, ty: &str) -> Option<&v1::RuntimeCondition> {
        self.conditions.iter().find(|c| c.r#type == ty)
    }
}
