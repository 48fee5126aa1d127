//! What `keadm ctl` and `keadm debug` learn from edgecore.yaml: where MetaServer, Edged's
//! kubelet server, the container runtime, the database and the monitor server are. Every path
//! in the file is taken inside `--root` (as keadm join wrote them), so a tree prepared with
//! `keadm join --root DIR` is inspected with `--root DIR` too.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kubeedge_config::edgecore::EdgeCoreConfig;

use super::Error;
use super::client::{Endpoint, Tls};
use crate::paths::{self, Root};

/// The largest edgecore.yaml read (upstream's default file is about 10 KiB).
pub const MAX_CONFIG: u64 = 1024 * 1024;

/// The text of the config file at `path`, at most [`MAX_CONFIG`] bytes.
pub fn read_config(path: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut text = String::new();
    std::fs::File::open(path)?.take(MAX_CONFIG + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_CONFIG {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the file is larger than {MAX_CONFIG} bytes"),
        ));
    }
    Ok(text)
}

/// edgecore.yaml, loaded.
pub struct Edge {
    /// The file read.
    pub path: PathBuf,
    /// Its contents, upstream defaults filled in.
    pub config: EdgeCoreConfig,
    root: Root,
}

impl Edge {
    /// Reads `--config` (default: edgecore.yaml inside `--root`).
    pub fn load(config: Option<&Path>, root: Option<&Path>) -> Result<Self, Error> {
        let root = Root::new(root);
        let path = config.map_or_else(|| root.at(paths::EDGECORE_YAML), Path::to_owned);
        let config_error = |source| Error::Config { path: path.clone(), source };
        let text = read_config(&path)
            .map_err(|source| config_error(kubeedge_config::Error::Read { path: path.clone(), source }))?;
        let loaded = kubeedge_config::load::<EdgeCoreConfig>(&text).map_err(config_error)?;
        Ok(Self { path, config: loaded.config, root })
    }

    /// A path named in edgecore.yaml, on this machine.
    pub fn at(&self, configured: &str) -> PathBuf {
        self.root.at(configured)
    }

    /// MetaServer: `http://` on a loopback address, `https://` (the node's client certificate,
    /// MetaServer's CA) elsewhere, where our MetaServer only serves mutual TLS. Upstream's
    /// keadm picks `https://` by the `requireAuthorization` gate instead; our MetaServer
    /// decides by the address, so keadm follows the server.
    pub fn metaserver(&self) -> Result<Endpoint, Error> {
        let ms = &self.config.modules.meta_manager.meta_server;
        if !ms.enable {
            return Err(Error::MetaServerOff { path: self.path.clone() });
        }
        let addr = socket_addr(&ms.server).ok_or_else(|| Error::BadAddress {
            field: "modules.metaManager.metaServer.server",
            value: ms.server.clone(),
        })?;
        if addr.ip().is_loopback() {
            return Ok(Endpoint::plain("MetaServer", addr));
        }
        // Bound to every address: dial it on loopback, where the certificate names 127.0.0.1.
        let addr = if addr.ip().is_unspecified() {
            SocketAddr::new(
                if addr.is_ipv4() { IpAddr::from([127, 0, 0, 1]) } else { IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]) },
                addr.port(),
            )
        } else {
            addr
        };
        let hub = &self.config.modules.edge_hub;
        let tls =
            Tls::client(&self.at(&ms.tls_ca_file), &self.at(&hub.tls_cert_file), &self.at(&hub.tls_private_key_file))?;
        Ok(Endpoint::tls("MetaServer", addr, Arc::new(tls)))
    }

    /// Edged's kubelet server (`tailoredKubeletConfig.address:readOnlyPort`).
    pub fn kubelet(&self) -> Result<Endpoint, Error> {
        let edged = &self.config.modules.edged;
        let k = &edged.tailored_kubelet_config;
        if !edged.enable || k.read_only_port <= 0 {
            return Err(Error::KubeletOff { path: self.path.clone() });
        }
        let ip: IpAddr = match k.address.as_str() {
            "" | "0.0.0.0" => IpAddr::from([127, 0, 0, 1]),
            "::" => IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
            a => a.parse().map_err(|_| Error::BadAddress {
                field: "modules.edged.tailoredKubeletConfig.address",
                value: a.to_owned(),
            })?,
        };
        let port = u16::try_from(k.read_only_port).unwrap_or_default();
        Ok(Endpoint::plain("Edged's kubelet server", SocketAddr::new(ip, port)))
    }

    /// The container runtime's socket (`containerRuntimeEndpoint`, `unix://` stripped).
    pub fn runtime_socket(&self) -> Result<PathBuf, Error> {
        let endpoint = &self.config.modules.edged.tailored_kubelet_config.container_runtime_endpoint;
        let socket = endpoint.strip_prefix("unix://").ok_or_else(|| Error::BadAddress {
            field: "modules.edged.tailoredKubeletConfig.containerRuntimeEndpoint",
            value: endpoint.clone(),
        })?;
        Ok(self.at(socket))
    }

    /// The database file (`database.dataSource`).
    pub fn database(&self) -> PathBuf {
        self.at(&self.config.database.data_source)
    }

    /// edgecore's monitor server (`/readyz`, `/metrics`), `host:port`.
    pub fn monitor(&self) -> String {
        self.config.common_config.monitor_server.bind_address.clone()
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.config.modules.edged.hostname_override
    }
}

/// `ip:port` or `localhost:port`.
pub fn socket_addr(s: &str) -> Option<SocketAddr> {
    if let Ok(a) = s.parse() {
        return Some(a);
    }
    let (host, port) = s.rsplit_once(':')?;
    host.eq_ignore_ascii_case("localhost").then_some(())?;
    Some(SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port.parse().ok()?))
}
