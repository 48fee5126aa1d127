//! The mapper's `config.yaml`, with upstream mapper-framework's keys:
//!
//! ```yaml
//! grpc_server:
//!   socket_path: /etc/kubeedge/modbus.sock   # our DeviceMapperService socket
//! common:
//!   name: modbus-mapper
//!   version: v1.20.0
//!   api_version: v1.0.0
//!   protocol: modbus                         # matched against spec.protocol.protocolName
//!   address: 127.0.0.1                       # address the REST API listens on
//!   edgecore_sock: /etc/kubeedge/dmi.sock
//!   http_port: "7777"                        # a string upstream; a number is accepted too
//! ```
//!
//! Unknown keys are logged and ignored (Go's yaml.v2 ignores them too). [`Config::validate`]
//! reports every bad value with its dotted key.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use crate::error::{Error, Result};

/// The REST port when `common.http_port` is empty (upstream's).
pub const DEFAULT_HTTP_PORT: u16 = 7777;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Config {
    /// `grpc_server`: where our DMI server listens.
    pub grpc_server: GrpcServer,
    /// `common`: who we are and where edgecore is.
    pub common: Common,
}

/// `grpc_server`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct GrpcServer {
    /// The unix socket of our DeviceMapperService (sent to edgecore as `MapperInfo.address`).
    pub socket_path: String,
}

/// `common`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Common {
    /// The mapper's name (`MapperInfo.name`).
    pub name: String,
    /// The mapper's version.
    pub version: String,
    /// The mapper's API version.
    pub api_version: String,
    /// The protocol served (`MapperInfo.protocol`).
    pub protocol: String,
    /// The address the REST API binds (upstream always binds 0.0.0.0; empty means that).
    pub address: String,
    /// edgecore's DMI socket.
    pub edgecore_sock: String,
    /// The REST API port; empty means 7777, `0` picks a free port (tests).
    #[serde(deserialize_with = "string_or_number")]
    pub http_port: String,
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Port {
        S(String),
        N(u64),
    }
    Ok(match Option::<Port>::deserialize(d)? {
        Some(Port::S(s)) => s,
        Some(Port::N(n)) => n.to_string(),
        None => String::new(),
    })
}

impl Config {
    /// Reads and validates `path`; unknown keys are logged as warnings.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|source| Error::ReadConfig { path: path.to_path_buf(), source })?;
        Self::parse(&text, path)
    }

    /// Parses and validates YAML text (`path` only names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let de = yaml_serde::Deserializer::from_str(text);
        let config: Config = serde_ignored::deserialize(de, |key| {
            tracing::warn!(key = %key, file = %path.display(), "Ignoring an unknown config key.");
        })
        .map_err(|e| Error::ParseConfig { path: path.to_path_buf(), message: e.to_string() })?;
        config.validate().map_err(|errors| Error::InvalidConfig { path: path.to_path_buf(), errors })?;
        Ok(config)
    }

    /// Every problem, each as `key: message`.
    pub fn validate(&self) -> std::result::Result<(), Vec<String>> {
        let mut errs = Vec::new();
        let mut need = |key: &str, value: &str| {
            if value.trim().is_empty() {
                errs.push(format!("{key}: must be set"));
            }
        };
        need("grpc_server.socket_path", &self.grpc_server.socket_path);
        need("common.name", &self.common.name);
        need("common.protocol", &self.common.protocol);
        need("common.edgecore_sock", &self.common.edgecore_sock);
        if !self.common.address.is_empty() && self.common.address.parse::<IpAddr>().is_err() {
            errs.push(format!("common.address: {:?} is not an IP address", self.common.address));
        }
        if !self.common.http_port.is_empty() && self.common.http_port.parse::<u16>().is_err() {
            errs.push(format!("common.http_port: {:?} is not a port number (0-65535)", self.common.http_port));
        }
        if self.grpc_server.socket_path == self.common.edgecore_sock && !self.common.edgecore_sock.is_empty() {
            errs.push("grpc_server.socket_path: must differ from common.edgecore_sock".to_owned());
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    /// Where the REST API listens.
    pub fn http_addr(&self) -> SocketAddr {
        let ip = self.common.address.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let port = if self.common.http_port.is_empty() {
            DEFAULT_HTTP_PORT
        } else {
            self.common.http_port.parse().unwrap_or(DEFAULT_HTTP_PORT)
        };
        SocketAddr::new(ip, port)
    }

    /// Our DMI socket.
    pub fn socket_path(&self) -> PathBuf {
        PathBuf::from(&self.grpc_server.socket_path)
    }

    /// edgecore's DMI socket.
    pub fn edgecore_sock(&self) -> PathBuf {
        PathBuf::from(&self.common.edgecore_sock)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPSTREAM_TEMPLATE: &str = "grpc_server:\n  socket_path: /etc/kubeedge/Template.sock\ncommon:\n  name: Template-mapper\n  version: v1.13.0\n  api_version: v1.0.0\n  protocol: modbus\n  address: 127.0.0.1\n  edgecore_sock: /etc/kubeedge/dmi.sock\n";

    #[test]
    fn upstream_template_loads_with_default_port() {
        let c = Config::parse(UPSTREAM_TEMPLATE, Path::new("config.yaml")).unwrap();
        assert_eq!(c.grpc_server.socket_path, "/etc/kubeedge/Template.sock");
        assert_eq!((c.common.name.as_str(), c.common.api_version.as_str()), ("Template-mapper", "v1.0.0"));
        assert_eq!(c.http_addr(), "127.0.0.1:7777".parse().unwrap());
    }

    #[test]
    fn port_as_string_or_number() {
        for port in ["\"8080\"", "8080"] {
            let c = Config::parse(&format!("{UPSTREAM_TEMPLATE}  http_port: {port}\n"), Path::new("c")).unwrap();
            assert_eq!(c.http_addr().port(), 8080);
        }
    }

    #[test]
    fn errors_name_the_field() {
        let text = "grpc_server:\n  socket_path: ''\ncommon:\n  name: m\n  protocol: ''\n  edgecore_sock: /x.sock\n  http_port: '99999'\n  address: nowhere\n";
        let err = Config::parse(text, Path::new("c.yaml")).unwrap_err().to_string();
        for key in [
            "grpc_server.socket_path: must be set",
            "common.protocol: must be set",
            "common.http_port:",
            "common.address:",
        ] {
            assert!(err.contains(key), "{key} missing in {err}");
        }
        assert!(!err.contains("common.name"), "{err}");
        let bad = Config::parse("common: [1]\n", Path::new("c.yaml")).unwrap_err().to_string();
        assert!(bad.contains("c.yaml"), "{bad}");
    }
}
