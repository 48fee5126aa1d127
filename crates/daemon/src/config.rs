//! The view of a config file the process plumbing needs, implemented for both daemons.

use std::time::Duration;

use kubeedge_config::cloudcore::CloudCoreConfig;
use kubeedge_config::edgecore::EdgeCoreConfig;
use kubeedge_config::{HostInfo, ValidationErrors};
use serde::de::DeserializeOwned;

/// What the shared `main` needs from a daemon's config.
pub trait DaemonConfig: DeserializeOwned + Send + Sync + 'static {
    /// Upstream defaults for this host.
    fn default_for(host: &HostInfo) -> Self;
    /// The YAML `--defaultconfig` prints.
    fn to_yaml(&self) -> String;
    /// The YAML `--minconfig` prints.
    fn minimal_for(host: &HostInfo) -> String;
    /// Every error, with field paths.
    fn validate(&self) -> Result<(), ValidationErrors>;
    /// Modules by config key, with their `enable` flags.
    fn modules(&self) -> Vec<(&'static str, bool)>;
    /// Switches a module by config key; false when the key is unknown.
    fn set_module_enabled(&mut self, key: &str, on: bool) -> bool;
    /// `commonConfig.monitorServer.bindAddress`.
    fn monitor_bind_address(&self) -> &str;
    /// `commonConfig.logging` level and format.
    fn logging(&self) -> (&str, &str);
    /// Where `logging` lives, for error messages.
    fn logging_path(&self) -> &'static str {
        "commonConfig.logging"
    }
    /// `commonConfig.shutdownGracePeriod`.
    fn grace_period(&self) -> Duration;
}

macro_rules! impl_daemon_config {
    ($ty:ty) => {
        impl DaemonConfig for $ty {
            fn default_for(host: &HostInfo) -> Self {
                <$ty>::default_for(host)
            }
            fn to_yaml(&self) -> String {
                <$ty>::to_yaml(self)
            }
            fn minimal_for(host: &HostInfo) -> String {
                <$ty>::minimal_for(host)
            }
            fn validate(&self) -> Result<(), ValidationErrors> {
                <$ty>::validate(self)
            }
            fn modules(&self) -> Vec<(&'static str, bool)> {
                <$ty>::modules(self)
            }
            fn set_module_enabled(&mut self, key: &str, on: bool) -> bool {
                <$ty>::set_module_enabled(self, key, on)
            }
            fn monitor_bind_address(&self) -> &str {
                &self.common_config.monitor_server.bind_address
            }
            fn logging(&self) -> (&str, &str) {
                let l = &self.common_config.logging;
                (&l.level, &l.format)
            }
            fn grace_period(&self) -> Duration {
                self.common_config.shutdown_grace_period()
            }
        }
    };
}

impl_daemon_config!(CloudCoreConfig);
impl_daemon_config!(EdgeCoreConfig);

/// Sets `modules.{key}.enable: false` in a YAML document for each key, creating the mappings
/// as needed (a minimal config may omit a module whose default is enabled).
pub(crate) fn disable_in_yaml(yaml: &str, keys: &[&str]) -> Result<String, yaml_serde::Error> {
    use yaml_serde::{Mapping, Value};
    let mut doc: Value = yaml_serde::from_str(yaml)?;
    let Value::Mapping(root) = &mut doc else {
        return Ok(yaml.to_owned());
    };
    let modules = root.entry(Value::from("modules")).or_insert_with(|| Value::Mapping(Mapping::new()));
    if let Value::Mapping(modules) = modules {
        for key in keys {
            let module = modules.entry(Value::from(*key)).or_insert_with(|| Value::Mapping(Mapping::new()));
            if let Value::Mapping(module) = module {
                module.insert(Value::from("enable"), Value::Bool(false));
            }
        }
    }
    yaml_serde::to_string(&doc)
}
