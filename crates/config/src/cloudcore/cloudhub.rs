//! `modules.cloudHub`: the edge-facing websocket, QUIC, HTTPS and unix-socket servers, the
//! certificates they use and the authorization of edge requests.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::DEFAULT_NODE_LIMIT;
use crate::common::{CA_FILE, CERT_FILE, KEY_FILE, secs};
use crate::validate::Checker;

const CA_KEY_FILE: &str = "/etc/kubeedge/ca/rootCA.key";

/// `modules.cloudHub`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CloudHub {
    /// Run the module.
    pub enable: bool,
    /// Seconds between keepalive checks (default 30).
    pub keepalive_interval: i32,
    /// Maximum number of connected edge nodes (default 500).
    pub node_limit: i32,
    /// CA certificate.
    #[serde(rename = "tlsCAFile")]
    pub tls_ca_file: String,
    /// CA private key (used to sign edge certificates).
    #[serde(rename = "tlsCAKeyFile")]
    pub tls_ca_key_file: String,
    /// Server certificate.
    pub tls_cert_file: String,
    /// Server private key.
    pub tls_private_key_file: String,
    /// Seconds (upstream: unused).
    pub write_timeout: i32,
    /// QUIC server.
    pub quic: CloudHubQuic,
    /// Unix socket server (CSI helper).
    #[serde(rename = "unixsocket")]
    pub unix_socket: CloudHubUnixSocket,
    /// Websocket server.
    pub websocket: CloudHubWebSocket,
    /// HTTPS server (certificate signing, CA download).
    pub https: CloudHubHttps,
    /// Addresses put in the server certificate and advertised to edges. Upstream defaults to
    /// the host IP; here `Default` leaves it empty (see [`CloudCoreConfig::default_for`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub advertise_address: Vec<String>,
    /// Extra DNS names for the server certificate (upstream default `[""]`).
    pub dns_names: Vec<String>,
    /// Validity of signed edge certificates, in days (default 365).
    pub edge_cert_signing_duration: i64,
    /// Join-token refresh period, in hours (default 12).
    pub token_refresh_duration: i64,
    /// Authorization of edge requests.
    pub authorization: CloudHubAuthorization,
    /// Extension (ours): require an edge's certificate to be its own (`CN=system:node:{node}`)
    /// on the WebSocket and for `/edge.crt`. Default true; false restores upstream's permissive
    /// behaviour, which v1.15 edges (certificate CN `kubeedge.io`) need.
    pub node_identity_check: bool,
    /// Extension (ours): what one edge may have the cloud read, queue and handle at once.
    pub edge_messages: CloudHubEdgeMessages,
}

impl Default for CloudHub {
    fn default() -> Self {
        Self {
            enable: true,
            keepalive_interval: 30,
            node_limit: DEFAULT_NODE_LIMIT,
            tls_ca_file: CA_FILE.to_owned(),
            tls_ca_key_file: CA_KEY_FILE.to_owned(),
            tls_cert_file: CERT_FILE.to_owned(),
            tls_private_key_file: KEY_FILE.to_owned(),
            write_timeout: 30,
            quic: CloudHubQuic::default(),
            unix_socket: CloudHubUnixSocket::default(),
            websocket: CloudHubWebSocket::default(),
            https: CloudHubHttps::default(),
            advertise_address: Vec::new(),
            dns_names: vec![String::new()],
            edge_cert_signing_duration: 365,
            token_refresh_duration: 12,
            authorization: CloudHubAuthorization::default(),
            node_identity_check: true,
            edge_messages: CloudHubEdgeMessages::default(),
        }
    }
}

impl CloudHub {
    /// `keepaliveInterval` (seconds) as a [`Duration`]; negative values count as zero.
    pub fn keepalive_interval(&self) -> Duration {
        secs(self.keepalive_interval.into())
    }

    /// `writeTimeout` (seconds) as a [`Duration`].
    pub fn write_timeout(&self) -> Duration {
        secs(self.write_timeout.into())
    }

    /// `edgeCertSigningDuration` (days) as a [`Duration`].
    pub fn edge_cert_signing_duration(&self) -> Duration {
        secs(self.edge_cert_signing_duration.saturating_mul(24 * 3600))
    }

    /// `tokenRefreshDuration` (hours) as a [`Duration`].
    pub fn token_refresh_duration(&self) -> Duration {
        secs(self.token_refresh_duration.saturating_mul(3600))
    }
    /// Checks `modules.cloudHub` when enabled; upstream checks every server's address and port
    /// whether or not that server is enabled.
    pub(super) fn validate(&self, c: &mut Checker) {
        if !self.enable {
            return;
        }
        let at = "modules.cloudHub";
        c.positive(&format!("{at}.keepaliveInterval"), self.keepalive_interval.into());
        c.positive(&format!("{at}.nodeLimit"), self.node_limit.into());
        c.positive(&format!("{at}.edgeCertSigningDuration"), self.edge_cert_signing_duration);
        c.positive(&format!("{at}.tokenRefreshDuration"), self.token_refresh_duration);
        for (key, v) in [
            ("tlsCAFile", &self.tls_ca_file),
            ("tlsCAKeyFile", &self.tls_ca_key_file),
            ("tlsCertFile", &self.tls_cert_file),
            ("tlsPrivateKeyFile", &self.tls_private_key_file),
        ] {
            c.non_empty(&format!("{at}.{key}"), v);
        }
        if self.advertise_address.is_empty() {
            c.error(format!("{at}.advertiseAddress"), "must list at least one IP address");
        }
        for (i, a) in self.advertise_address.iter().enumerate() {
            c.ip(&format!("{at}.advertiseAddress.{i}"), a);
        }
        // Upstream checks these ports and addresses whenever cloudHub is enabled.
        c.ip(&format!("{at}.websocket.address"), &self.websocket.address);
        c.port(&format!("{at}.websocket.port"), self.websocket.port.into());
        c.ip(&format!("{at}.quic.address"), &self.quic.address);
        c.port(&format!("{at}.quic.port"), self.quic.port.into());
        c.ip(&format!("{at}.https.address"), &self.https.address);
        c.port(&format!("{at}.https.port"), self.https.port.into());
        if self.quic.enable {
            c.positive(&format!("{at}.quic.maxIncomingStreams"), self.quic.max_incoming_streams.into());
        }
        if self.unix_socket.enable {
            let addr = &self.unix_socket.address;
            let ok = addr.get(..7).is_some_and(|p| p.eq_ignore_ascii_case("unix://")) && addr.len() > 7;
            c.check(ok, &format!("{at}.unixsocket.address"), "must start with unix:// and name a path");
        }
        if !self.websocket.enable && !self.quic.enable {
            c.error(format!("{at}.websocket.enable"), "at least one of websocket and quic must be enabled");
        }
        self.edge_messages.validate(c, &format!("{at}.edgeMessages"));
    }
}

/// `modules.cloudHub.edgeMessages` (ours, not upstream's): the limits on what edges send the
/// cloud, so a flooding edge slows only itself. Upstream bounds an edge only on the edge
/// (EdgeHub's `messageQPS`/`messageBurst`); these enforce the same pace in the cloud, bound
/// each node's messages queued or being handled, cap an edge→cloud message below the
/// cloud→edge one, and bound the memory of all edges' messages in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CloudHubEdgeMessages {
    /// Requests per second one node may hand the controllers (default 30, EdgeHub's
    /// `messageQPS`). ACKs, replies and keepalives are not counted.
    #[serde(rename = "messageQPS")]
    pub message_qps: i32,
    /// Requests one node may send at once above that rate (default 60, EdgeHub's
    /// `messageBurst`).
    pub message_burst: i32,
    /// Messages of one node queued or being handled by the controllers at once (default 64);
    /// beyond that CloudHub stops reading that node's connection until one is done.
    pub node_in_flight: i32,
    /// The largest message an edge may send, in MiB (default 8; cloud→edge messages may be
    /// 32 MiB). A larger one is refused from its frame header, before it is read, and ends
    /// the session (close code 1009).
    #[serde(rename = "maxMessageMiB")]
    pub max_message_mib: i32,
    /// Memory for all edges' messages read and not yet handled, in MiB (default 256). Each
    /// node has 256 KiB of its own beyond this; when it is used up, sessions wait (no
    /// message is dropped) and a warning says so.
    #[serde(rename = "inFlightMemoryMiB")]
    pub in_flight_memory_mib: i32,
    /// Reliable messages sent to one node and not yet acknowledged, at most (default 16): the
    /// delivery window. Messages about one object still go one at a time, in order.
    pub delivery_window: i32,
}

impl Default for CloudHubEdgeMessages {
    fn default() -> Self {
        Self {
            message_qps: 30,
            message_burst: 60,
            node_in_flight: 64,
            max_message_mib: 8,
            in_flight_memory_mib: 256,
            delivery_window: 16,
        }
    }
}

impl CloudHubEdgeMessages {
    /// `maxMessageMiB` in bytes.
    pub fn max_message_bytes(&self) -> usize {
        usize::try_from(self.max_message_mib.max(1)).unwrap_or(1) << 20
    }

    /// `inFlightMemoryMiB` in bytes.
    pub fn in_flight_memory_bytes(&self) -> usize {
        usize::try_from(self.in_flight_memory_mib.max(1)).unwrap_or(1) << 20
    }

    /// `deliveryWindow` as a count.
    pub fn delivery_window(&self) -> usize {
        usize::try_from(self.delivery_window.max(1)).unwrap_or(1)
    }

    fn validate(&self, c: &mut Checker, at: &str) {
        c.positive(&format!("{at}.messageQPS"), self.message_qps.into());
        c.check(
            (1..=256).contains(&self.delivery_window),
            &format!("{at}.deliveryWindow"),
            "must be between 1 and 256",
        );
        c.positive(&format!("{at}.messageBurst"), self.message_burst.into());
        // The controllers' per-node queues hold 1024 (cloudcore's `inflight::MAX_PER_KEY`).
        c.check((1..=1024).contains(&self.node_in_flight), &format!("{at}.nodeInFlight"), "must be between 1 and 1024");
        // 32 MiB is the protocol's cap (the edge's own reader refuses more).
        let mib = i64::from(self.max_message_mib);
        c.check((1..=32).contains(&mib), &format!("{at}.maxMessageMiB"), "must be between 1 and 32");
        // The budget must hold the largest message, and a semaphore counts at most 4 TiB.
        let budget = i64::from(self.in_flight_memory_mib);
        c.check(
            budget >= mib.max(1) && budget <= 1 << 20,
            &format!("{at}.inFlightMemoryMiB"),
            "must be at least maxMessageMiB and at most 1048576",
        );
    }
}

/// `modules.cloudHub.quic`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CloudHubQuic {
    /// Serve QUIC.
    pub enable: bool,
    /// Listen IP (default `0.0.0.0`).
    pub address: String,
    /// Listen port (default 10001).
    pub port: u32,
    /// Maximum concurrent incoming streams (default 10000).
    pub max_incoming_streams: i32,
}

impl Default for CloudHubQuic {
    fn default() -> Self {
        Self { enable: false, address: "0.0.0.0".to_owned(), port: 10001, max_incoming_streams: 10000 }
    }
}

/// `modules.cloudHub.unixsocket`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CloudHubUnixSocket {
    /// Serve the unix socket.
    pub enable: bool,
    /// `unix://` path (default `unix:///var/lib/kubeedge/kubeedge.sock`).
    pub address: String,
}

impl Default for CloudHubUnixSocket {
    fn default() -> Self {
        Self { enable: true, address: "unix:///var/lib/kubeedge/kubeedge.sock".to_owned() }
    }
}

/// `modules.cloudHub.websocket`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CloudHubWebSocket {
    /// Serve websocket.
    pub enable: bool,
    /// Listen IP (default `0.0.0.0`).
    pub address: String,
    /// Listen port (default 10000).
    pub port: u32,
}

impl Default for CloudHubWebSocket {
    fn default() -> Self {
        Self { enable: true, address: "0.0.0.0".to_owned(), port: 10000 }
    }
}

/// `modules.cloudHub.https`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CloudHubHttps {
    /// Serve HTTPS.
    pub enable: bool,
    /// Listen IP (default `0.0.0.0`).
    pub address: String,
    /// Listen port (default 10002).
    pub port: u32,
}

impl Default for CloudHubHttps {
    fn default() -> Self {
        Self { enable: true, address: "0.0.0.0".to_owned(), port: 10002 }
    }
}

/// `modules.cloudHub.authorization`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CloudHubAuthorization {
    /// Enforce authorization (default false).
    pub enable: bool,
    /// Only log denials (default true).
    pub debug: bool,
    /// Authorizers, in order (default: node authorization enabled).
    pub modes: Vec<AuthorizationMode>,
}

impl Default for CloudHubAuthorization {
    fn default() -> Self {
        Self {
            enable: false,
            debug: true,
            modes: vec![AuthorizationMode { node: Some(NodeAuthorization { enable: true }) }],
        }
    }
}

/// One entry of `modules.cloudHub.authorization.modes`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct AuthorizationMode {
    /// Node authorizer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeAuthorization>,
}

/// `modes[].node`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct NodeAuthorization {
    /// Use the node authorizer.
    pub enable: bool,
}
