//! The MQTT side of EventBus: broker URLs and the client connections (rumqttc) that subscribe
//! and publish, with reconnects.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, Transport};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Largest MQTT packet accepted or sent (topic + payload): a bigger one ends the client's
/// connection to the broker (it reconnects).
pub const MAX_PACKET: usize = 16 * 1024 * 1024;
/// Requests (publish, subscribe) a client queues while its connection is busy or down; a
/// publish beyond that is dropped and counted.
pub const CLIENT_QUEUE: usize = 1024;
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// A broker address from `mqttServerInternal` / `mqttServerExternal`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Host name or IP.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Whether the scheme asks for TLS (`ssl`, `tls`, `mqtts`).
    pub tls: bool,
}

impl BrokerUrl {
    /// Parses `tcp://host:port` (also `mqtt`, `ssl`, `tls`, `mqtts`; no port means 1883, or 8883
    /// with TLS). WebSocket brokers are not supported.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("{url:?} has no scheme (tcp://host:port)"))?;
        let tls = match scheme {
            "tcp" | "mqtt" => false,
            "ssl" | "tls" | "mqtts" => true,
            other => return Err(format!("scheme {other:?} is not supported (tcp, mqtt, ssl, tls, mqtts)")),
        };
        let hostport = rest.trim_end_matches('/');
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h.trim_start_matches('[').trim_end_matches(']').to_owned(),
                p.parse().map_err(|_| format!("bad port in {url:?}"))?,
            ),
            _ => (hostport.to_owned(), default_port),
        };
        if host.is_empty() {
            return Err(format!("no host in {url:?}"));
        }
        Ok(Self { host, port, tls })
    }

    /// `host:port`.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// How to reach one broker.
#[derive(Clone)]
pub struct ClientConfig {
    /// Where.
    pub url: BrokerUrl,
    /// Client id.
    pub client_id: String,
    /// User name (empty: none).
    pub username: String,
    /// Password (used only with a user name).
    pub password: String,
    /// TLS (`eventBusTLS`), when enabled.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl ClientConfig {
    fn options(&self) -> MqttOptions {
        let mut o = MqttOptions::new(self.client_id.clone(), self.url.host.clone(), self.url.port);
        o.set_clean_session(true);
        o.set_keep_alive(KEEP_ALIVE);
        o.set_max_packet_size(MAX_PACKET, MAX_PACKET);
        o.set_request_channel_capacity(CLIENT_QUEUE);
        if !self.username.is_empty() {
            o.set_credentials(self.username.clone(), self.password.clone());
        }
        if let Some(tls) = &self.tls {
            o.set_transport(Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(tls.clone())));
        }
        o
    }
}

/// A client connection kept up until `stop`: reconnects after 1 s doubling to 30 s (jittered),
/// calls `on_connect` after each CONNACK and `on_publish` for every message. `on_publish` is
/// awaited, so a slow consumer slows the reading of the broker (backpressure).
pub async fn run_client<C, P, F>(
    cfg: ClientConfig,
    client: AsyncClient,
    mut eventloop: rumqttc::EventLoop,
    connected: Arc<AtomicBool>,
    stop: CancellationToken,
    on_connect: C,
    mut on_publish: P,
) where
    C: Fn(&AsyncClient),
    P: FnMut(String, bytes::Bytes) -> F,
    F: std::future::Future<Output = ()>,
{
    let mut backoff = BACKOFF_START;
    let mut failures = 0u32;
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => {
                let _ = client.try_disconnect();
                connected.store(false, Ordering::Relaxed);
                return;
            }
            e = eventloop.poll() => e,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                info!(broker = %cfg.url.addr(), client_id = %cfg.client_id, "Connected to the MQTT broker.");
                connected.store(true, Ordering::Relaxed);
                backoff = BACKOFF_START;
                failures = 0;
                on_connect(&client);
            }
            Ok(Event::Incoming(Packet::Publish(p))) => on_publish(p.topic, p.payload).await,
            Ok(_) => {}
            Err(e) => {
                connected.store(false, Ordering::Relaxed);
                failures += 1;
                let wait = jitter(backoff);
                if failures == 1 {
                    warn!(broker = %cfg.url.addr(), client_id = %cfg.client_id, error = %e, retry_in = ?wait, "MQTT connection failed.");
                } else {
                    debug!(broker = %cfg.url.addr(), error = %e, retry_in = ?wait, "MQTT connection failed again.");
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// A new client and its event loop for `cfg`.
pub fn client(cfg: &ClientConfig) -> (AsyncClient, rumqttc::EventLoop) {
    AsyncClient::new(cfg.options(), CLIENT_QUEUE)
}

/// QoS from the config's number.
pub fn qos(n: u8) -> QoS {
    match n {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn jitter(d: Duration) -> Duration {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|t| t.subsec_nanos()).unwrap_or(0);
    d.mul_f64(0.8 + f64::from(nanos % 1000) / 2500.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        let u = BrokerUrl::parse("tcp://127.0.0.1:1884").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.tls), ("127.0.0.1", 1884, false));
        assert_eq!(BrokerUrl::parse("ssl://broker").unwrap().port, 8883);
        assert_eq!(BrokerUrl::parse("tcp://[::1]:1883").unwrap().addr(), "[::1]:1883");
        assert!(BrokerUrl::parse("ws://x:1").is_err());
        assert!(BrokerUrl::parse("127.0.0.1:1883").is_err());
    }
}
