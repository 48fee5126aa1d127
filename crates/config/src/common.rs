//! The pieces cloudcore.yaml and edgecore.yaml share: the `commonConfig` extension keys
//! (`logging`, `shutdownGracePeriod`), `commonConfig.monitorServer`, the certificate paths,
//! the `modules.<key>.enable` table, and the checks every daemon's `validate()` starts with.

use std::marker::PhantomData;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::load::is_false;
use crate::validate::Checker;

/// Upstream's default CA certificate path.
pub(crate) const CA_FILE: &str = "/etc/kubeedge/ca/rootCA.crt";
/// Upstream's default server/client certificate path.
pub(crate) const CERT_FILE: &str = "/etc/kubeedge/certs/server.crt";
/// Upstream's default private key path.
pub(crate) const KEY_FILE: &str = "/etc/kubeedge/certs/server.key";

/// Which daemon a shared config piece belongs to: the defaults and output quirks that differ.
///
/// Implemented by [`Cloud`] and [`Edge`] only.
pub trait Daemon: private::Sealed {
    /// Default `commonConfig.monitorServer.bindAddress`.
    const MONITOR_BIND_ADDRESS: &'static str;
    /// Whether `enableProfiling: false` is left out of the output (upstream cloudcore's
    /// `omitempty`; edgecore's key is our extension and always printed).
    const OMIT_PROFILING_WHEN_OFF: bool;
}

/// Marker for cloudcore.yaml.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cloud;

/// Marker for edgecore.yaml.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Edge;

impl Daemon for Cloud {
    const MONITOR_BIND_ADDRESS: &'static str = "127.0.0.1:9091";
    const OMIT_PROFILING_WHEN_OFF: bool = true;
}

impl Daemon for Edge {
    const MONITOR_BIND_ADDRESS: &'static str = "127.0.0.1:9092";
    const OMIT_PROFILING_WHEN_OFF: bool = false;
}

mod private {
    pub trait Sealed {}
    impl Sealed for super::Cloud {}
    impl Sealed for super::Edge {}
}

/// `commonConfig.monitorServer`: the metrics / profiling HTTP server of daemon `D`
/// (cloudcore: `127.0.0.1:9091`; edgecore, an extension: `127.0.0.1:9092`, loopback only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", bound = "")]
pub struct MonitorServer<D: Daemon> {
    /// `IP:port` to serve metrics on.
    pub bind_address: String,
    /// Serve pprof-style profiling endpoints.
    #[serde(skip_serializing_if = "MonitorServer::<D>::omit_profiling")]
    pub enable_profiling: bool,
    #[serde(skip)]
    daemon: PhantomData<D>,
}

impl<D: Daemon> MonitorServer<D> {
    fn omit_profiling(on: &bool) -> bool {
        D::OMIT_PROFILING_WHEN_OFF && is_false(on)
    }
}

impl<D: Daemon> Default for MonitorServer<D> {
    fn default() -> Self {
        Self { bind_address: D::MONITOR_BIND_ADDRESS.to_owned(), enable_profiling: false, daemon: PhantomData }
    }
}

/// Extension key `commonConfig.logging` (both daemons): how the daemon logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Logging {
    /// `EnvFilter`-style directive, e.g. `info` or `kubeedge_edgehub=debug,info`. Default `info`.
    pub level: String,
    /// `text` (default) or `json`.
    pub format: String,
}

impl Default for Logging {
    fn default() -> Self {
        Self { level: "info".to_owned(), format: "text".to_owned() }
    }
}

impl Logging {
    pub(crate) fn validate(&self, at: &str, c: &mut Checker) {
        let level_path = format!("{at}.level");
        if c.non_empty(&level_path, &self.level) && self.level.chars().any(char::is_whitespace) {
            c.error(level_path, "must be an EnvFilter directive without spaces");
        }
        c.one_of(&format!("{at}.format"), &self.format, &["text", "json"]);
    }
}

/// Default of the extension key `commonConfig.shutdownGracePeriod`, in seconds.
pub const DEFAULT_SHUTDOWN_GRACE_PERIOD: u64 = 10;

pub(crate) fn default_shutdown_grace_period() -> u64 {
    DEFAULT_SHUTDOWN_GRACE_PERIOD
}

/// The check both `validate()`s start with: `apiVersion` and `kind` are this daemon's.
pub(crate) fn validate_type_meta(c: &mut Checker, found: (&str, &str), want: (&str, &str)) {
    if found.0 != want.0 {
        c.error("apiVersion", format!("must be {:?}, got {:?}", want.0, found.0));
    }
    if found.1 != want.1 {
        c.error("kind", format!("must be {:?}, got {:?}", want.1, found.1));
    }
}

/// Checks `commonConfig.logging` and `commonConfig.shutdownGracePeriod`.
pub(crate) fn validate_process_keys(c: &mut Checker, logging: &Logging, shutdown_grace_period: u64) {
    logging.validate("commonConfig.logging", c);
    c.positive("commonConfig.shutdownGracePeriod", i64::try_from(shutdown_grace_period).unwrap_or(i64::MAX));
}

/// Seconds as a [`Duration`]; negative values count as zero.
pub(crate) fn secs(v: i64) -> Duration {
    Duration::from_secs(u64::try_from(v).unwrap_or(0))
}

/// `host:port`, bracketing IPv6 literals like Go's `net.JoinHostPort`.
pub(crate) fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// Writes a daemon's `modules()` and `set_module_enabled()` from one table of
/// `upstream key => field of Modules`, in upstream order.
macro_rules! module_table {
    ($config:ty { $($key:literal => $field:ident),+ $(,)? }) => {
        impl $config {
            /// Modules by upstream config key, with their `enable` flag, in upstream order.
            pub fn modules(&self) -> Vec<(&'static str, bool)> {
                let m = &self.modules;
                vec![$(($key, m.$field.enable)),+]
            }

            /// Sets the `enable` flag of the module with this upstream key; false if there is none.
            pub fn set_module_enabled(&mut self, key: &str, on: bool) -> bool {
                let m = &mut self.modules;
                let flag = match key {
                    $($key => &mut m.$field.enable,)+
                    _ => return false,
                };
                *flag = on;
                true
            }
        }
    };
}
pub(crate) use module_table;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logging_checks() {
        let mut c = Checker::new();
        Logging { level: "info".into(), format: "json".into() }.validate("l", &mut c);
        assert!(c.finish().is_ok());
        let mut c = Checker::new();
        Logging { level: "".into(), format: "xml".into() }.validate("l", &mut c);
        let errs = c.finish().unwrap_err();
        assert!(errs.has_path("l.level") && errs.has_path("l.format"));
    }

    #[test]
    fn monitor_server_defaults_and_output_per_daemon() {
        let cloud = crate::load::to_yaml(&MonitorServer::<Cloud>::default());
        assert_eq!(cloud, "bindAddress: 127.0.0.1:9091\n");
        let edge = crate::load::to_yaml(&MonitorServer::<Edge>::default());
        assert_eq!(edge, "bindAddress: 127.0.0.1:9092\nenableProfiling: false\n");
    }
}
