//! `modules.edgeHub`: the connection to cloudhub (websocket or QUIC) and the certificate
//! files and join token it uses.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::HostInfo;
use crate::common::{CA_FILE, CERT_FILE, KEY_FILE, join_host_port, secs};
use crate::validate::Checker;

/// `modules.edgeHub`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EdgeHub {
    /// Run the module.
    pub enable: bool,
    /// Seconds between keepalive pings (default 15).
    pub heartbeat: i32,
    /// Upstream message rate limit (default 30).
    #[serde(rename = "messageQPS")]
    pub message_qps: i32,
    /// Upstream message burst (default 60).
    pub message_burst: i32,
    /// Project ID sent in the connection headers.
    #[serde(rename = "projectID")]
    pub project_id: String,
    /// CA certificate (note the upstream spelling `tlsCaFile`).
    #[serde(rename = "tlsCaFile")]
    pub tls_ca_file: String,
    /// Client certificate.
    pub tls_cert_file: String,
    /// Client private key.
    pub tls_private_key_file: String,
    /// QUIC transport.
    pub quic: EdgeHubQuic,
    /// Websocket transport.
    pub websocket: EdgeHubWebSocket,
    /// Join token for the first certificate request.
    pub token: String,
    /// cloudhub HTTPS URL for certificates (default `https://<ip>:10002`).
    pub http_server: String,
    /// Renew the client certificate before it expires (default true).
    pub rotate_certificates: bool,
}

impl EdgeHub {
    pub(super) fn default_for(host: &HostInfo) -> Self {
        Self {
            enable: true,
            heartbeat: 15,
            message_qps: 30,
            message_burst: 60,
            project_id: "e632aba927ea4ac2b575ec1603d56f10".to_owned(),
            tls_ca_file: CA_FILE.to_owned(),
            tls_cert_file: CERT_FILE.to_owned(),
            tls_private_key_file: KEY_FILE.to_owned(),
            quic: EdgeHubQuic::default_for(host),
            websocket: EdgeHubWebSocket::default_for(host),
            token: String::new(),
            http_server: format!("https://{}", join_host_port(&host.ip, 10002)),
            rotate_certificates: true,
        }
    }

    /// `heartbeat` (seconds) as a [`Duration`].
    pub fn heartbeat(&self) -> Duration {
        secs(self.heartbeat.into())
    }
    /// Checks `modules.edgeHub` (when enabled) and its enabled transport.
    pub(super) fn validate(&self, c: &mut Checker) {
        if !self.enable {
            return;
        }
        let at = "modules.edgeHub";
        if self.websocket.enable == self.quic.enable {
            c.error(format!("{at}.websocket.enable"), "exactly one of websocket.enable and quic.enable must be true");
        }
        c.positive(&format!("{at}.heartbeat"), self.heartbeat.into());
        c.positive(&format!("{at}.messageQPS"), self.message_qps.into());
        c.positive(&format!("{at}.messageBurst"), self.message_burst.into());
        c.non_empty(&format!("{at}.projectID"), &self.project_id);
        c.url(&format!("{at}.httpServer"), &self.http_server, &["https"], true);
        for (key, v) in [
            ("tlsCaFile", &self.tls_ca_file),
            ("tlsCertFile", &self.tls_cert_file),
            ("tlsPrivateKeyFile", &self.tls_private_key_file),
        ] {
            c.non_empty(&format!("{at}.{key}"), v);
        }
        let (ws, quic) = (&self.websocket, &self.quic);
        let transports = [
            ("websocket", ws.enable, &ws.server, (ws.handshake_timeout, ws.read_deadline, ws.write_deadline)),
            ("quic", quic.enable, &quic.server, (quic.handshake_timeout, quic.read_deadline, quic.write_deadline)),
        ];
        for (name, enabled, server, (hs, rd, wd)) in transports {
            if !enabled {
                continue;
            }
            c.host_port(&format!("{at}.{name}.server"), server);
            c.positive(&format!("{at}.{name}.handshakeTimeout"), hs.into());
            c.positive(&format!("{at}.{name}.readDeadline"), rd.into());
            c.positive(&format!("{at}.{name}.writeDeadline"), wd.into());
        }
    }
}

impl Default for EdgeHub {
    fn default() -> Self {
        Self::default_for(&HostInfo::placeholder())
    }
}

/// `modules.edgeHub.quic`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EdgeHubQuic {
    /// Use QUIC (default false; exactly one of quic and websocket must be enabled).
    pub enable: bool,
    /// Seconds (default 30).
    pub handshake_timeout: i32,
    /// Seconds (default 15).
    pub read_deadline: i32,
    /// cloudhub `host:port` (default `<ip>:10001`).
    pub server: String,
    /// Seconds (default 15).
    pub write_deadline: i32,
}

impl EdgeHubQuic {
    fn default_for(host: &HostInfo) -> Self {
        Self {
            enable: false,
            handshake_timeout: 30,
            read_deadline: 15,
            server: join_host_port(&host.ip, 10001),
            write_deadline: 15,
        }
    }

    /// `handshakeTimeout`, `readDeadline`, `writeDeadline` as [`Duration`]s.
    pub fn timeouts(&self) -> (Duration, Duration, Duration) {
        (secs(self.handshake_timeout.into()), secs(self.read_deadline.into()), secs(self.write_deadline.into()))
    }
}

impl Default for EdgeHubQuic {
    fn default() -> Self {
        Self::default_for(&HostInfo::placeholder())
    }
}

/// `modules.edgeHub.websocket`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EdgeHubWebSocket {
    /// Use websocket (default true).
    pub enable: bool,
    /// Seconds (default 30).
    pub handshake_timeout: i32,
    /// Seconds (default 15).
    pub read_deadline: i32,
    /// cloudhub `host:port` (default `<ip>:10000`).
    pub server: String,
    /// Seconds (default 15).
    pub write_deadline: i32,
}

impl EdgeHubWebSocket {
    fn default_for(host: &HostInfo) -> Self {
        Self {
            enable: true,
            handshake_timeout: 30,
            read_deadline: 15,
            server: join_host_port(&host.ip, 10000),
            write_deadline: 15,
        }
    }

    /// `handshakeTimeout`, `readDeadline`, `writeDeadline` as [`Duration`]s.
    pub fn timeouts(&self) -> (Duration, Duration, Duration) {
        (secs(self.handshake_timeout.into()), secs(self.read_deadline.into()), secs(self.write_deadline.into()))
    }
}

impl Default for EdgeHubWebSocket {
    fn default() -> Self {
        Self::default_for(&HostInfo::placeholder())
    }
}
