//! `cloudcore.yaml` and `edgecore.yaml`: upstream KubeEdge keys, defaults and validation.
//!
//! # Files
//!
//! * [`cloudcore::CloudCoreConfig`] — `apiVersion: cloudcore.config.kubeedge.io/v1alpha1`,
//!   `kind: CloudCore` (upstream `cloudcore/v1alpha1` types, defaults as of KubeEdge v1.23).
//! * [`edgecore::EdgeCoreConfig`] — `apiVersion: edgecore.config.kubeedge.io/v1alpha2`,
//!   `kind: EdgeCore` (upstream `edgecore/v1alpha2`).
//!
//! Every struct uses the upstream JSON/YAML key spelling (including acronyms such as
//! `messageQPS`, `projectID`, `tlsCAFile` on the cloud hub vs `tlsCaFile` on the edge hub, and the
//! capitalised `UpdateRuleStatusWorkers`/`ServiceAccountTokenWorkers`/`CreatePodWorks`) and is
//! `#[serde(default)]`, so a partial file loads and every omitted key takes the upstream default.
//! Numbers keep upstream units (`heartbeat: 15` is seconds, `tokenRefreshDuration: 12` is hours);
//! accessor methods convert them to [`std::time::Duration`]. Kubelet durations are Go duration
//! strings (`10s`, `5m0s`), kept verbatim as [`GoDuration`].
//!
//! # Host-dependent defaults
//!
//! Upstream fills some defaults from the machine (cloud `advertiseAddress`, edge
//! `hostnameOverride`, the edge hub server addresses). Here they come from a [`HostInfo`] passed
//! to `default_for`/`minimal_for`. `Default` uses [`HostInfo::placeholder`]
//! (`default-edge-node`, `127.0.0.1`) on the edge and leaves the cloud `advertiseAddress` list
//! empty (which `validate()` rejects while `cloudHub` is enabled).
//!
//! # Extension keys (ours, not upstream's)
//!
//! * cloudcore: `commonConfig.logging` and `commonConfig.shutdownGracePeriod`, next to upstream's
//!   `commonConfig.tunnelPort` and `commonConfig.monitorServer`.
//! * edgecore: a new top-level `commonConfig` with `monitorServer {bindAddress: 127.0.0.1:9092,
//!   enableProfiling: false}`, `logging` and `shutdownGracePeriod`.
//! * `logging` is `{level: info, format: text}`: `level` is an `EnvFilter`-style directive
//!   (`info`, `kubeedge_edgehub=debug,info`), `format` is `text` or `json`.
//! * `shutdownGracePeriod` is an integer number of seconds (default 10) the daemon waits for its
//!   modules to stop.
//!
//! Upstream Go daemons ignore unknown keys, so files carrying these keys still work there.
//!
//! # Unknown keys
//!
//! [`load`] never fails because of a key it does not know: it returns them as dotted paths in
//! [`Loaded::unknown_keys`] (e.g. `modules.edgeHub.fooBar`), and the binaries log one warning
//! listing them. The kubelet configuration under `modules.edged.tailoredKubeletConfig` is the
//! exception: keys we do not model are kept verbatim in
//! [`edgecore::TailoredKubeletConfig::other`], re-serialised unchanged and not reported.
//!
//! # Errors
//!
//! YAML syntax errors, values of the wrong type and empty files are load [`Error`]s naming the
//! field path and line when known. Everything else — wrong `apiVersion`/`kind`, ports out of
//! range, bad addresses — is found by `validate()`, which reports every problem at once as
//! [`ValidationErrors`].

pub mod cloudcore;
mod common;
mod duration;
pub mod edgecore;
mod load;
mod validate;

use common::default_shutdown_grace_period;
pub use common::{Cloud, DEFAULT_SHUTDOWN_GRACE_PERIOD, Daemon, Edge, Logging};
pub use duration::{DurationError, GoDuration};
pub use load::{Error, Loaded, Result, load, load_file};
pub use validate::{FieldError, ValidationErrors};

/// The machine facts upstream reads while building defaults, injected so tests never depend on
/// the real host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    /// Host name, used for the edge `hostnameOverride` (upstream: lower-cased `os.Hostname()`).
    pub hostname: String,
    /// The host's primary IP, used for cloud `advertiseAddress` and the edge hub server URLs.
    pub ip: String,
}

impl HostInfo {
    /// Creates a host description.
    pub fn new(hostname: impl Into<String>, ip: impl Into<String>) -> Self {
        Self { hostname: hostname.into(), ip: ip.into() }
    }

    /// The values `Default` uses: hostname `default-edge-node` (upstream's fallback node name)
    /// and IP `127.0.0.1`.
    pub fn placeholder() -> Self {
        Self::new("default-edge-node", "127.0.0.1")
    }
}
