//! `modules.eventBus`: the MQTT bridge between devices and the edge modules.

use serde::{Deserialize, Serialize};

use crate::common::{CA_FILE, CERT_FILE, KEY_FILE};
use crate::validate::Checker;

/// `modules.eventBus`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EventBus {
    /// Run the module.
    pub enable: bool,
    /// MQTT QoS 0..=2 (default 0).
    #[serde(rename = "mqttQOS")]
    pub mqtt_qos: u8,
    /// Retain published messages.
    pub mqtt_retain: bool,
    /// Internal broker session queue size (default 100).
    pub mqtt_session_queue_size: i32,
    /// Internal broker URL (default `tcp://127.0.0.1:1884`).
    pub mqtt_server_internal: String,
    /// External broker URL (default `tcp://127.0.0.1:1883`).
    pub mqtt_server_external: String,
    /// Subscriber client ID (empty: generated).
    #[serde(rename = "mqttSubClientID")]
    pub mqtt_sub_client_id: String,
    /// Publisher client ID (empty: generated).
    #[serde(rename = "mqttPubClientID")]
    pub mqtt_pub_client_id: String,
    /// Broker user name.
    pub mqtt_username: String,
    /// Broker password.
    pub mqtt_password: String,
    /// 0 internal, 1 both, 2 external (default 2).
    pub mqtt_mode: i32,
    /// TLS to the external broker.
    #[serde(rename = "eventBusTLS")]
    pub tls: EventBusTls,
}

impl Default for EventBus {
    fn default() -> Self {
        Self {
            enable: true,
            mqtt_qos: 0,
            mqtt_retain: false,
            mqtt_session_queue_size: 100,
            mqtt_server_internal: "tcp://127.0.0.1:1884".to_owned(),
            mqtt_server_external: "tcp://127.0.0.1:1883".to_owned(),
            mqtt_sub_client_id: String::new(),
            mqtt_pub_client_id: String::new(),
            mqtt_username: String::new(),
            mqtt_password: String::new(),
            mqtt_mode: 2,
            tls: EventBusTls::default(),
        }
    }
}

impl EventBus {
    /// Checks `modules.eventBus` when enabled.
    pub(super) fn validate(&self, c: &mut Checker) {
        if !self.enable {
            return;
        }
        let at = "modules.eventBus";
        if !(0..=2).contains(&self.mqtt_mode) {
            c.error(
                format!("{at}.mqttMode"),
                format!("must be 0 (internal), 1 (both) or 2 (external), got {}", self.mqtt_mode),
            );
        }
        if self.mqtt_qos > 2 {
            c.error(format!("{at}.mqttQOS"), format!("must be 0, 1 or 2, got {}", self.mqtt_qos));
        }
        c.positive(&format!("{at}.mqttSessionQueueSize"), self.mqtt_session_queue_size.into());
        let schemes = ["tcp", "ssl", "tls", "mqtt", "mqtts", "ws", "wss"];
        if self.mqtt_mode <= 1 {
            c.url(&format!("{at}.mqttServerInternal"), &self.mqtt_server_internal, &schemes, true);
        }
        if self.mqtt_mode >= 1 {
            c.url(&format!("{at}.mqttServerExternal"), &self.mqtt_server_external, &schemes, true);
        }
    }
}

/// `modules.eventBus.eventBusTLS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EventBusTls {
    /// Use TLS (default false).
    pub enable: bool,
    /// CA certificate.
    #[serde(rename = "tlsMqttCAFile")]
    pub tls_mqtt_ca_file: String,
    /// Client certificate.
    pub tls_mqtt_cert_file: String,
    /// Client key.
    pub tls_mqtt_private_key_file: String,
}

impl Default for EventBusTls {
    fn default() -> Self {
        Self {
            enable: false,
            tls_mqtt_ca_file: CA_FILE.to_owned(),
            tls_mqtt_cert_file: CERT_FILE.to_owned(),
            tls_mqtt_private_key_file: KEY_FILE.to_owned(),
        }
    }
}
