//! edgecore.yaml for `keadm join`: the defaults of the edgecore being installed (its own
//! `--defaultconfig`, so modules this build lacks come switched off), then the flags, then each
//! `--set path=value` (a dotted path of upstream keys, e.g.
//! `modules.edged.tailoredKubeletConfig.readOnlyPort=10351`; the value is read as YAML, so
//! numbers and booleans keep their type). The result must load as an `EdgeCoreConfig` with no
//! unknown key and pass `validate()`; every problem names its key.

use std::collections::BTreeMap;
use std::path::Path;

use kubeedge_config::edgecore::EdgeCoreConfig;
use yaml_serde::{Mapping, Value};

use crate::paths;

/// Why edgecore.yaml could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `edgecore --defaultconfig` failed.
    #[error("{bin} --defaultconfig: {why}")]
    Defaults {
        /// The binary.
        bin: String,
        /// Why.
        why: String,
    },
    /// A `--set` is not `path=value`.
    #[error("--set {0:?}: expected a dotted key path, '=' and a value")]
    SetSyntax(String),
    /// A `--set` path crosses a value that is not a mapping.
    #[error("--set {0}: {1} is not a mapping")]
    SetPath(String, String),
    /// A key the config does not have (a typo in `--set`).
    #[error("unknown key {0} (check the --set path)")]
    Unknown(String),
    /// The config does not load.
    #[error("edgecore.yaml: {0}")]
    Load(#[source] kubeedge_config::Error),
    /// The config does not validate.
    #[error("edgecore.yaml: {0}")]
    Invalid(kubeedge_config::ValidationErrors),
}

/// What the flags say about the config.
pub struct Inputs<'a> {
    /// `--edgenode-name`.
    pub node: &'a str,
    /// The CloudHub WebSocket address (`--cloudcore-ipport`).
    pub cloud_ws: &'a str,
    /// The join API address (host of `-e`, port `--certport`).
    pub cloud_https: &'a str,
    /// The host of `-e`.
    pub cloud_host: &'a str,
    /// `--remote-runtime-endpoint`.
    pub runtime_endpoint: &'a str,
    /// `--cgroupdriver` (or the runtime's).
    pub cgroup_driver: &'a str,
    /// `--certPath`.
    pub cert_dir: &'a str,
    /// `--labels`.
    pub labels: &'a BTreeMap<String, String>,
    /// `--set`, in order.
    pub sets: &'a [(String, String)],
}

/// The built config: its YAML and its typed form.
#[derive(Debug)]
pub struct Built {
    /// What is written to edgecore.yaml.
    pub yaml: String,
    /// The same, typed.
    pub config: EdgeCoreConfig,
}

/// `edgecore --defaultconfig` of the binary at `bin`.
pub fn defaults(bin: &Path) -> Result<String, Error> {
    let err = |why: String| Error::Defaults { bin: bin.display().to_string(), why };
    let out = std::process::Command::new(bin).arg("--defaultconfig").output().map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        return Err(err(format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim())));
    }
    String::from_utf8(out.stdout).map_err(|e| err(e.to_string()))
}

/// Parses `--set` values: each may hold several `k=v` separated by commas, as upstream's.
pub fn parse_sets(sets: &[String]) -> Result<Vec<(String, String)>, Error> {
    let mut out = Vec::new();
    for set in sets {
        for item in set.split(',') {
            let (k, v) = item.split_once('=').ok_or_else(|| Error::SetSyntax(item.to_owned()))?;
            if k.is_empty() || k.split('.').any(str::is_empty) {
                return Err(Error::SetSyntax(item.to_owned()));
            }
            out.push((k.to_owned(), v.to_owned()));
        }
    }
    Ok(out)
}

/// Defaults, then flags, then `--set`; loaded, checked for unknown keys and validated.
pub fn build(defaults: &str, i: &Inputs<'_>) -> Result<Built, Error> {
    let mut doc: Value =
        yaml_serde::from_str(defaults).map_err(|e| Error::Defaults { bin: "edgecore".into(), why: e.to_string() })?;
    let s = |v: &str| Value::String(v.to_owned());
    let kubelet = "modules.edged.tailoredKubeletConfig";
    let flags: Vec<(String, Value)> = vec![
        ("modules.edged.hostnameOverride".into(), s(i.node)),
        (format!("{kubelet}.cgroupDriver"), s(i.cgroup_driver)),
        (format!("{kubelet}.containerRuntimeEndpoint"), s(i.runtime_endpoint)),
        (format!("{kubelet}.imageServiceEndpoint"), s(i.runtime_endpoint)),
        ("modules.edgeHub.httpServer".into(), s(&format!("https://{}", i.cloud_https))),
        ("modules.edgeHub.websocket.enable".into(), Value::Bool(true)),
        ("modules.edgeHub.websocket.server".into(), s(i.cloud_ws)),
        ("modules.edgeHub.quic.enable".into(), Value::Bool(false)),
        ("modules.edgeHub.quic.server".into(), s(&join_host(i.cloud_host, 10001))),
        ("modules.edgeHub.token".into(), s("")),
        ("modules.edgeHub.tlsCaFile".into(), s(paths::EDGE_CA)),
        ("modules.edgeStream.server".into(), s(&join_host(i.cloud_host, 10004))),
    ];
    for (path, value) in flags {
        set(&mut doc, &path, value)?;
    }
    if i.cert_dir != paths::CERT_DIR {
        // Every module's copy of the node certificate and key moves with --certPath.
        let dir = i.cert_dir.trim_end_matches('/');
        replace_strings(&mut doc, &format!("{}/server.crt", paths::CERT_DIR), &format!("{dir}/server.crt"));
        replace_strings(&mut doc, &format!("{}/server.key", paths::CERT_DIR), &format!("{dir}/server.key"));
    }
    if !i.labels.is_empty() {
        let labels: Mapping = i.labels.iter().map(|(k, v)| (s(k), s(v))).collect();
        set(&mut doc, "modules.edged.nodeLabels", Value::Mapping(labels))?;
    }
    for (path, raw) in i.sets {
        let value = set_value(raw);
        set(&mut doc, path, value).map_err(|e| match e {
            Error::SetPath(_, at) => Error::SetPath(format!("{path}={raw}"), at),
            e => e,
        })?;
    }
    let yaml =
        yaml_serde::to_string(&doc).map_err(|e| Error::Defaults { bin: "edgecore".into(), why: e.to_string() })?;
    let loaded = kubeedge_config::load::<EdgeCoreConfig>(&yaml).map_err(Error::Load)?;
    if let Some(key) = loaded.unknown_keys.first() {
        return Err(Error::Unknown(key.clone()));
    }
    loaded.config.validate().map_err(Error::Invalid)?;
    Ok(Built { yaml, config: loaded.config })
}

/// A `--set` value read as YAML: `10351` is a number, `true` a boolean, anything else a string.
pub fn set_value(raw: &str) -> Value {
    match yaml_serde::from_str::<Value>(raw) {
        Ok(v) if !v.is_null() || raw.trim().is_empty() || raw.trim() == "null" => v,
        _ => Value::String(raw.to_owned()),
    }
}

fn join_host(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// Sets the value at a dotted path, creating mappings on the way.
pub fn set(doc: &mut Value, path: &str, value: Value) -> Result<(), Error> {
    let keys: Vec<&str> = path.split('.').collect();
    let mut at = doc;
    for (n, key) in keys.iter().enumerate() {
        let Value::Mapping(map) = at else {
            return Err(Error::SetPath(path.to_owned(), keys[..n].join(".")));
        };
        let k = Value::String((*key).to_owned());
        if n + 1 == keys.len() {
            map.insert(k, value);
            return Ok(());
        }
        at = map.entry(k).or_insert_with(|| Value::Mapping(Mapping::new()));
    }
    Ok(())
}

fn replace_strings(v: &mut Value, from: &str, to: &str) {
    match v {
        Value::String(s) if s == from => *s = to.to_owned(),
        Value::Mapping(m) => m.iter_mut().for_each(|(_, v)| replace_strings(v, from, to)),
        Value::Sequence(seq) => seq.iter_mut().for_each(|v| replace_strings(v, from, to)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs<'a>(labels: &'a BTreeMap<String, String>, sets: &'a [(String, String)]) -> Inputs<'a> {
        Inputs {
            node: "edge-1",
            cloud_ws: "10.0.0.1:10000",
            cloud_https: "10.0.0.1:10002",
            cloud_host: "10.0.0.1",
            runtime_endpoint: "unix:///run/containerd/containerd.sock",
            cgroup_driver: "systemd",
            cert_dir: "/opt/certs",
            labels,
            sets,
        }
    }

    fn defaults() -> String {
        EdgeCoreConfig::default_for(&kubeedge_config::HostInfo::placeholder()).to_yaml()
    }

    #[test]
    fn flags_and_sets_land_on_upstream_keys() {
        let labels = BTreeMap::from([("zone".to_owned(), "a".to_owned())]);
        let sets =
            parse_sets(&["modules.edged.tailoredKubeletConfig.readOnlyPort=10351,modules.edgeHub.heartbeat=5".into()])
                .unwrap();
        let b = build(&defaults(), &inputs(&labels, &sets)).unwrap();
        let c = &b.config.modules;
        assert_eq!(c.edged.hostname_override, "edge-1");
        assert_eq!(c.edged.tailored_kubelet_config.read_only_port, 10351);
        assert_eq!(c.edged.tailored_kubelet_config.cgroup_driver, "systemd");
        assert_eq!(c.edge_hub.heartbeat, 5);
        assert_eq!(c.edge_hub.http_server, "https://10.0.0.1:10002");
        assert_eq!(c.edge_hub.websocket.server, "10.0.0.1:10000");
        assert_eq!(c.edge_hub.tls_cert_file, "/opt/certs/server.crt");
        assert_eq!(c.edge_hub.tls_private_key_file, "/opt/certs/server.key");
        assert_eq!(c.edged.node_labels.get("zone").map(String::as_str), Some("a"));
    }

    #[test]
    fn a_bad_set_names_the_key() {
        let none = BTreeMap::new();
        let sets = parse_sets(&["modules.edged.readOnlyPortt=1".into()]).unwrap();
        let e = build(&defaults(), &inputs(&none, &sets)).unwrap_err();
        assert!(e.to_string().contains("modules.edged.readOnlyPortt"), "{e}");
        let sets = parse_sets(&["modules.edgeHub.heartbeat=0".into()]).unwrap();
        let e = build(&defaults(), &inputs(&none, &sets)).unwrap_err();
        assert!(e.to_string().contains("modules.edgeHub.heartbeat"), "{e}");
        assert!(parse_sets(&["novalue".into()]).is_err());
        assert!(parse_sets(&["a..b=1".into()]).is_err());
    }
}
