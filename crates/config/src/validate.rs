//! Validation errors and the small checker both configs use to collect them.
//!
//! Validation never stops at the first problem: every check runs and each failure is recorded
//! with the dotted YAML path of the offending key, so one run of the binary shows the user
//! everything that is wrong with their file.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::duration::GoDuration;

/// One invalid value, named by its dotted YAML path (e.g. `modules.cloudHub.nodeLimit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the key, using the upstream YAML spelling.
    pub path: String,
    /// What is wrong with the value, e.g. `must be > 0`.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every validation failure of one config, in check order. Displays one error per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl ValidationErrors {
    /// The individual errors.
    pub fn errors(&self) -> &[FieldError] {
        &self.0
    }

    /// Whether some error is reported for exactly this path.
    pub fn has_path(&self, path: &str) -> bool {
        self.0.iter().any(|e| e.path == path)
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// Collects [`FieldError`]s; each helper records a failure and returns whether the value passed.
#[derive(Debug, Default)]
pub(crate) struct Checker {
    errors: Vec<FieldError>,
}

impl Checker {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError { path: path.into(), message: message.into() });
    }

    pub(crate) fn check(&mut self, ok: bool, path: &str, message: &str) -> bool {
        if !ok {
            self.error(path, message);
        }
        ok
    }

    pub(crate) fn positive(&mut self, path: &str, value: i64) -> bool {
        self.check(value > 0, path, "must be > 0")
    }

    pub(crate) fn non_negative(&mut self, path: &str, value: i64) -> bool {
        self.check(value >= 0, path, "must be >= 0")
    }

    pub(crate) fn non_empty(&mut self, path: &str, value: &str) -> bool {
        self.check(!value.trim().is_empty(), path, "must not be empty")
    }

    pub(crate) fn one_of(&mut self, path: &str, value: &str, allowed: &[&str]) -> bool {
        let ok = allowed.contains(&value);
        if !ok {
            self.error(path, format!("must be one of {}, got {value:?}", allowed.join("|")));
        }
        ok
    }

    /// A TCP/UDP port in 1..=65535.
    pub(crate) fn port(&mut self, path: &str, value: i64) -> bool {
        let ok = (1..=65535).contains(&value);
        if !ok {
            self.error(path, format!("must be a port in 1..=65535, got {value}"));
        }
        ok
    }

    pub(crate) fn ip(&mut self, path: &str, value: &str) -> Option<IpAddr> {
        match value.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                self.error(path, format!("must be an IP address, got {value:?}"));
                None
            }
        }
    }

    /// An `IP:port` socket address to listen on; port 0 asks the OS for a free port (the
    /// daemon logs the one it got), which tests and side-by-side instances use.
    pub(crate) fn listen_addr(&mut self, path: &str, value: &str) -> Option<SocketAddr> {
        match value.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.error(path, format!("must be IP:port, got {value:?}"));
                None
            }
        }
    }

    /// A `host:port` pair (host may be a name, an IPv4 address or a bracketed IPv6 address).
    pub(crate) fn host_port(&mut self, path: &str, value: &str) -> bool {
        let ok = split_host_port(value).is_some();
        if !ok {
            self.error(path, format!("must be host:port with a non-zero port, got {value:?}"));
        }
        ok
    }

    /// A URL `scheme://host:port` (or `scheme://host`) whose scheme is one of `schemes`.
    pub(crate) fn url(&mut self, path: &str, value: &str, schemes: &[&str], need_port: bool) -> bool {
        let ok = match value.split_once("://") {
            Some((scheme, rest)) if schemes.contains(&scheme) => {
                let authority = rest.split('/').next().unwrap_or_default();
                if need_port || authority.contains(':') && !authority.ends_with(']') {
                    split_host_port(authority).is_some()
                } else {
                    !authority.is_empty()
                }
            }
            _ => false,
        };
        if !ok {
            let port = if need_port { ":port" } else { "" };
            self.error(path, format!("must be a URL like {}://host{port}, got {value:?}", schemes.join("|")));
        }
        ok
    }

    /// A Go duration string such as `10s`, `1m0s` or `100ms`.
    pub(crate) fn duration(&mut self, path: &str, value: &GoDuration) -> bool {
        match value.to_std() {
            Ok(_) => true,
            Err(e) => {
                self.error(path, e.to_string());
                false
            }
        }
    }

    pub(crate) fn finish(self) -> Result<(), ValidationErrors> {
        if self.errors.is_empty() { Ok(()) } else { Err(ValidationErrors(self.errors)) }
    }
}

/// Splits `host:port`; `None` unless the host is non-empty and the port is a non-zero u16.
pub(crate) fn split_host_port(value: &str) -> Option<(&str, u16)> {
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (host, tail) = rest.split_once(']')?;
        (host, tail.strip_prefix(':')?)
    } else {
        let (host, port) = value.rsplit_once(':')?;
        if host.contains(':') {
            return None; // unbracketed IPv6
        }
        (host, port)
    };
    let port: u16 = port.parse().ok()?;
    if host.is_empty() || port == 0 || host.chars().any(char::is_whitespace) {
        return None;
    }
    Some((host, port))
}

/// Kubernetes node names must be DNS-1123 subdomains.
pub(crate) fn is_dns1123_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(split_host_port("10.0.0.1:10000"), Some(("10.0.0.1", 10000)));
        assert_eq!(split_host_port("cloud.example:443"), Some(("cloud.example", 443)));
        assert_eq!(split_host_port("[::1]:10000"), Some(("::1", 10000)));
        assert_eq!(split_host_port("::1:10000"), None);
        assert_eq!(split_host_port("10.0.0.1"), None);
        assert_eq!(split_host_port(":10000"), None);
        assert_eq!(split_host_port("host:0"), None);
        assert_eq!(split_host_port("host:99999"), None);
    }

    #[test]
    fn urls() {
        let mut c = Checker::new();
        assert!(c.url("x", "https://10.0.0.1:10002", &["https"], true));
        assert!(c.url("x", "https://[::1]:10002", &["https"], true));
        assert!(!c.url("x", "http://10.0.0.1:10002", &["https"], true));
        assert!(!c.url("x", "https://10.0.0.1", &["https"], true));
        assert!(c.url("x", "tcp://127.0.0.1:1883", &["tcp", "ssl"], true));
        assert!(c.url("x", "ws://cloud.example", &["ws"], false));
        assert!(c.finish().is_err());
    }

    #[test]
    fn node_names() {
        assert!(is_dns1123_subdomain("edge-node-1"));
        assert!(is_dns1123_subdomain("edge.example.com"));
        assert!(!is_dns1123_subdomain("Edge_Node"));
        assert!(!is_dns1123_subdomain(""));
        assert!(!is_dns1123_subdomain("-a"));
    }

    #[test]
    fn display_one_per_line() {
        let errs = ValidationErrors(vec![
            FieldError { path: "a.b".into(), message: "must be > 0".into() },
            FieldError { path: "c".into(), message: "must not be empty".into() },
        ]);
        assert_eq!(errs.to_string(), "a.b: must be > 0\nc: must not be empty");
    }
}
