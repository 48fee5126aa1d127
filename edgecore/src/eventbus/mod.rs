//! EventBus (`eventbus`/`bus`): the MQTT bridge between devices (mappers, apps) and the edge
//! modules, as upstream's `edge/pkg/eventbus`.
//!
//! - `mqttMode` 0: the embedded broker ([`broker`]) listening on `mqttServerInternal` (default
//!   `tcp://127.0.0.1:1884`); 1: the embedded broker and the external one; 2 (the default): the
//!   external broker at `mqttServerExternal` (mosquitto). For each broker in use EventBus keeps
//!   two clients, `hub-client-sub-{s}` and `hub-client-pub-{s}` (upstream's ids, unless
//!   `mqttSubClientID` / `mqttPubClientID` are set), clean session, with the configured user
//!   name and password and, for the external broker with `eventBusTLS.enable`, TLS with a
//!   client certificate. Upstream's embedded broker hands the messages matching its topic tree
//!   to EventBus in-process; here EventBus's clients connect to the embedded broker over
//!   loopback TCP and subscribe to the same topics, which has the same effect.
//! - Publishing: QoS 1 without retain to the external broker, `mqttQOS` and `mqttRetain` to the
//!   embedded one (upstream's `pubMQTT` and `mqttServer.Publish`).
//! - The sub client subscribes (QoS 1) to upstream's topics — `$hw/events/upload/#`,
//!   `$hw/events/device/+/+/state/update`, `$hw/events/device/+/+/twin/+`,
//!   `$hw/events/node/+/membership/get`, `SYS/dis/upload_records`, `+/user/#` — plus the
//!   topics the cloud subscribed (table `sub_topics`), again after every reconnect.
//! - A message on `$hw/events/device/…` or `$hw/events/node/…` goes to the twin group as
//!   upstream's `{source: bus, group: user, op: response, resource: base64url(topic), content:
//!   payload}`; any other goes to the cloud: `{source: bus, group: user, op: upload, resource:
//!   topic, content: payload}`.
//! - From the cloud (group `user`) and from DeviceTwin: `subscribe` / `unsubscribe` (resource =
//!   topic, kept in `sub_topics`), `publish` (resource = topic, content = payload), `message`
//!   (`{"message":{"topic":…}}`), `get_result` of `auth_info`.
//!
//! Queues and what happens when they are full:
//! - MQTT → twin: the bus inbox (1024). The MQTT reader waits up to [`HANDOFF_WAIT`] for room
//!   (backpressure on the broker), then drops the message and counts it.
//! - MQTT → cloud (upload): handed to EdgeHub without waiting; dropped and counted when its
//!   inbox is full (the cloud link is down or slow).
//! - → MQTT (publish): each client's request queue ([`mqtt::CLIENT_QUEUE`]); full while the
//!   client is connected (a burst) ⇒ waits up to [`PUBLISH_WAIT`] (backpressure onto EventBus's
//!   inbox and DeviceTwin), then dropped and counted; full while it is not (the broker is away)
//!   ⇒ dropped and counted at once.
//!
//! - Embedded broker → a subscriber: that connection's queue (`mqttSessionQueueSize`); full ⇒
//!   dropped for that subscriber and counted (see [`broker`]).
//!
//! Counters: `kubeedge_eventbus_dropped_total{queue="twin"|"cloud"|"publish"|"subscriber"}`,
//! `kubeedge_eventbus_messages_total{direction="in"|"out"}`, and for the embedded broker
//! `kubeedge_eventbus_broker_connections` and `kubeedge_eventbus_broker_refused_total{reason}`.

pub mod broker;
pub mod mqtt;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use kubeedge_beehive::{BoxFuture, Bus, Module, ModuleContext, ModuleError};
use kubeedge_config::edgecore::EventBus;
use kubeedge_metastore::{Op, SqlValue, Store};
use kubeedge_model::constants::{group, module, operation};
use kubeedge_model::protocol::edge;
use kubeedge_model::{Content, Message};
use parking_lot::Mutex;
use rumqttc::{AsyncClient, QoS};
use tracing::{debug, info, warn};

use mqtt::{BrokerUrl, ClientConfig};

/// Upstream's subscriptions (`edge/pkg/eventbus/mqtt/client.go` `SubTopics`).
pub const SUB_TOPICS: [&str; 6] = [
    "$hw/events/upload/#",
    "$hw/events/device/+/+/state/update",
    "$hw/events/device/+/+/twin/+",
    "$hw/events/node/+/membership/get",
    "SYS/dis/upload_records",
    "+/user/#",
];

/// How long a publish waits for room in a connected client's queue before it is dropped.
pub const PUBLISH_WAIT: Duration = Duration::from_millis(250);
/// How long a message from MQTT waits for room in the twin's inbox before it is dropped.
pub const HANDOFF_WAIT: Duration = Duration::from_secs(5);

/// Counters of EventBus.
#[derive(Clone)]
pub struct Metrics {
    dropped: prometheus::IntCounterVec,
    messages: prometheus::IntCounterVec,
    broker: broker::Metrics,
}

impl Metrics {
    /// Registers the counters in `registry`.
    pub fn register(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let dropped = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "kubeedge_eventbus_dropped_total",
                "Messages EventBus dropped because a queue was full.",
            ),
            &["queue"],
        )?;
        let messages = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "kubeedge_eventbus_messages_total",
                "MQTT messages EventBus received (in) and published (out).",
            ),
            &["direction"],
        )?;
        let broker = broker::Metrics {
            connections: prometheus::IntGauge::new(
                "kubeedge_eventbus_broker_connections",
                "Connections open to the embedded MQTT broker.",
            )?,
            dropped: dropped.with_label_values(&["subscriber"]),
            refused: prometheus::IntCounterVec::new(
                prometheus::Opts::new(
                    "kubeedge_eventbus_broker_refused_total",
                    "Connections the embedded MQTT broker refused (limit, auth, protocol).",
                ),
                &["reason"],
            )?,
        };
        registry.register(Box::new(dropped.clone()))?;
        registry.register(Box::new(messages.clone()))?;
        registry.register(Box::new(broker.connections.clone()))?;
        registry.register(Box::new(broker.refused.clone()))?;
        Ok(Self { dropped, messages, broker })
    }

    fn unregistered() -> Self {
        let dropped = prometheus::IntCounterVec::new(prometheus::Opts::new("d", "d"), &["queue"]).expect("valid");
        let messages = prometheus::IntCounterVec::new(prometheus::Opts::new("m", "m"), &["direction"]).expect("valid");
        Self { dropped, messages, broker: broker::Metrics::unregistered() }
    }

    fn drop(&self, queue: &str) {
        self.dropped.with_label_values(&[queue]).inc();
    }
}

/// Whether a topic goes to DeviceTwin (upstream's `$hw/events/device/` and `$hw/events/node/`
/// patterns: the prefix followed by `/` or nothing).
pub fn is_twin_topic(topic: &str) -> bool {
    ["$hw/events/device", "$hw/events/node"]
        .iter()
        .any(|p| topic.strip_prefix(p).is_some_and(|rest| rest.is_empty() || rest.starts_with('/')))
}

/// The message DeviceTwin receives for an MQTT message (upstream's `handleDeviceTwin`).
pub fn twin_message(topic: &str, payload: &[u8]) -> Message {
    let resource = base64::engine::general_purpose::URL_SAFE.encode(topic);
    Message::build(
        group::BUS,
        group::USER,
        resource,
        operation::RESPONSE,
        Content::string(&String::from_utf8_lossy(payload)),
    )
}

/// The message the cloud receives for an MQTT message (upstream's `handleUploadTopic`).
pub fn upload_message(topic: &str, payload: &[u8]) -> Message {
    Message::build(
        group::BUS,
        group::USER,
        topic,
        operation::UPLOAD,
        Content::string(&String::from_utf8_lossy(payload)),
    )
}

/// The client ids: configured, else upstream's `hub-client-{sub|pub}-{first 10 digits of the
/// millisecond clock}`.
pub fn client_ids(cfg: &EventBus) -> (String, String) {
    let ms = kubeedge_model::now_millis().to_string();
    let stamp = &ms[..ms.len().min(10)];
    let pick = |configured: &str, kind: &str| {
        if configured.is_empty() { format!("hub-client-{kind}-{stamp}") } else { configured.to_owned() }
    };
    (pick(&cfg.mqtt_sub_client_id, "sub"), pick(&cfg.mqtt_pub_client_id, "pub"))
}

/// One broker EventBus talks to: its publishing client and how it publishes.
struct Publisher {
    client: AsyncClient,
    qos: QoS,
    retain: bool,
    /// Whether the client holds a connection (set by its connection task).
    connected: Arc<AtomicBool>,
}

/// A broker EventBus connects to, and how it publishes there.
struct Target {
    url: BrokerUrl,
    qos: QoS,
    retain: bool,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// EventBus as a bus module.
pub struct EventBusModule {
    cfg: EventBus,
    node: String,
    store: Store,
    metrics: Metrics,
    ids: (String, String),
    /// The embedded broker's socket, bound in `prepare` (modes 0 and 1).
    listener: Option<tokio::net::TcpListener>,
}

impl EventBusModule {
    /// A module for `node`, keeping its subscriptions in `store` (opened with the `sub_topics`
    /// table).
    pub fn new(cfg: EventBus, node: String, store: Store) -> Self {
        let ids = client_ids(&cfg);
        Self { cfg, node, store, metrics: Metrics::unregistered(), ids, listener: None }
    }

    /// Registers the counters in `registry`.
    pub fn with_metrics(mut self, registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        self.metrics = Metrics::register(registry)?;
        Ok(self)
    }

    fn tls(&self) -> Result<Option<Arc<rustls::ClientConfig>>, ModuleError> {
        let t = &self.cfg.tls;
        if !t.enable {
            return Ok(None);
        }
        let read = |path: &str| -> Result<String, ModuleError> {
            std::fs::read_to_string(path)
                .map_err(|e| format!("modules.eventBus.eventBusTLS: reading {path}: {e}").into())
        };
        let ca = kubeedge_pki::parse_pem(&read(&t.tls_mqtt_ca_file)?)?.1;
        let cert = kubeedge_pki::parse_pem(&read(&t.tls_mqtt_cert_file)?)?.1;
        let key = kubeedge_pki::key_from_pem(&read(&t.tls_mqtt_private_key_file)?)?;
        Ok(Some(Arc::new(kubeedge_viaduct::client_tls(&ca, &cert, &key)?)))
    }

    /// The brokers in use. Upstream publishes to an
    /// external broker with QoS 1 and no retain (`mqttQOS` and `mqttRetain` apply to its
    /// embedded broker only); `eventBusTLS` is for the external broker.
    fn brokers(&self, embedded: Option<std::net::SocketAddr>) -> Result<Vec<Target>, ModuleError> {
        let mut out = Vec::new();
        if let Some(addr) = embedded {
            // The clients reach the embedded broker on loopback when it listens on every address.
            let ip = match addr.ip() {
                std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
                ip => ip,
            };
            let url = BrokerUrl { host: ip.to_string(), port: addr.port(), tls: false };
            out.push(Target { url, qos: mqtt::qos(self.cfg.mqtt_qos), retain: self.cfg.mqtt_retain, tls: None });
        }
        if self.cfg.mqtt_mode >= 1 {
            let url = BrokerUrl::parse(&self.cfg.mqtt_server_external)
                .map_err(|e| format!("modules.eventBus.mqttServerExternal: {e}"))?;
            out.push(Target { url, qos: QoS::AtLeastOnce, retain: false, tls: self.tls()? });
        }
        Ok(out)
    }

    /// Binds the embedded broker's address (`mqttServerInternal`).
    async fn bind_embedded(&self) -> Result<tokio::net::TcpListener, ModuleError> {
        const KEY: &str = "modules.eventBus.mqttServerInternal";
        let url = BrokerUrl::parse(&self.cfg.mqtt_server_internal).map_err(|e| format!("{KEY}: {e}"))?;
        if url.tls {
            return Err(format!("{KEY}: the embedded broker serves plain TCP only (tcp://host:port), not TLS").into());
        }
        let addr = url.addr();
        tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|e| format!("cannot listen on {addr} (port {}, {KEY}): {e}", url.port).into())
    }

    fn broker_options(&self) -> broker::Options {
        broker::Options {
            username: self.cfg.mqtt_username.clone(),
            password: self.cfg.mqtt_password.clone(),
            queue: usize::try_from(self.cfg.mqtt_session_queue_size).unwrap_or(1).max(1),
            ..broker::Options::default()
        }
    }
}

/// What the module loop shares with the client tasks.
struct Shared {
    /// Topics the cloud subscribed, beyond [`SUB_TOPICS`].
    topics: Mutex<BTreeSet<String>>,
    bus: Bus,
    metrics: Metrics,
}

impl Shared {
    /// An MQTT message: to the twin or up to the cloud.
    async fn dispatch(&self, topic: String, payload: bytes::Bytes) {
        self.metrics.messages.with_label_values(&["in"]).inc();
        if is_twin_topic(&topic) {
            if self.bus.group_members(group::TWIN).is_empty() {
                debug!(%topic, "No DeviceTwin for a device message; dropped.");
                return;
            }
            let msg = twin_message(&topic, &payload);
            match tokio::time::timeout(HANDOFF_WAIT, self.bus.send_to_group(group::TWIN, msg)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => debug!(%topic, error = %e, "A device message could not reach DeviceTwin."),
                Err(_) => {
                    self.metrics.drop("twin");
                    warn!(%topic, "DeviceTwin's queue stayed full; dropped a device message.");
                }
            }
        } else {
            let msg = upload_message(&topic, &payload);
            let mut sent = false;
            for m in self.bus.group_members(group::HUB) {
                sent |= self.bus.try_send(m, msg.clone()).is_ok();
            }
            if !sent {
                self.metrics.drop("cloud");
                debug!(%topic, "EdgeHub's queue is full or absent; dropped an upload.");
            }
        }
    }
}

fn subscribe_all(client: &AsyncClient, topics: &BTreeSet<String>) {
    let filters = SUB_TOPICS
        .iter()
        .map(|t| (*t).to_owned())
        .chain(topics.iter().cloned())
        .map(|t| rumqttc::SubscribeFilter::new(t, QoS::AtLeastOnce));
    if let Err(e) = client.try_subscribe_many(filters) {
        warn!(error = %e, "Subscribing to the MQTT topics failed.");
    }
}

const SELECT_TOPICS: &str = "SELECT `topic` FROM `sub_topics`";
const INSERT_TOPIC: &str = "INSERT INTO `sub_topics` (`topic`) VALUES (?1) ON CONFLICT (`topic`) DO NOTHING";
const DELETE_TOPIC: &str = "DELETE FROM `sub_topics` WHERE `topic` = ?1";

impl Module for EventBusModule {
    fn name(&self) -> &'static str {
        module::EVENTBUS
    }

    fn group(&self) -> &'static str {
        group::BUS
    }

    fn prepare(&mut self) -> BoxFuture<'_, Result<(), ModuleError>> {
        Box::pin(async move {
            if self.cfg.mqtt_mode <= 1 {
                self.listener = Some(self.bind_embedded().await?);
            }
            Ok(())
        })
    }

    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(async move {
            let stored = self.store.query(SELECT_TOPICS, Vec::new()).await?;
            let topics: BTreeSet<String> = stored.iter().filter_map(|r| r.first()).map(SqlValue::text).collect();
            if !topics.is_empty() {
                info!(count = topics.len(), "Restored the cloud's MQTT subscriptions.");
            }
            let shared =
                Arc::new(Shared { topics: Mutex::new(topics), bus: ctx.bus.clone(), metrics: self.metrics.clone() });
            let stop = ctx.shutdown().child_token();
            let _guard = stop.clone().drop_guard();
            let mut embedded = None;
            if self.cfg.mqtt_mode <= 1 {
                let listener = match self.listener.take() {
                    Some(l) => l,
                    None => self.bind_embedded().await?,
                };
                embedded = Some(listener.local_addr()?);
                let b = broker::Broker::new(self.broker_options(), self.metrics.broker.clone());
                ctx.spawn(b.run(listener, stop.clone()));
            }
            let mut publishers = Vec::new();
            let mut subscribers = Vec::new();
            for Target { url, qos, retain, tls } in self.brokers(embedded)? {
                let base = ClientConfig {
                    url,
                    client_id: String::new(),
                    username: self.cfg.mqtt_username.clone(),
                    password: self.cfg.mqtt_password.clone(),
                    tls,
                };
                let sub = ClientConfig { client_id: self.ids.0.clone(), ..base.clone() };
                let (client, eventloop) = mqtt::client(&sub);
                subscribers.push(client.clone());
                let sh = shared.clone();
                let connected = Arc::new(AtomicBool::new(false));
                let stop_sub = stop.clone();
                ctx.spawn(async move {
                    let on_connect = |c: &AsyncClient| subscribe_all(c, &sh.topics.lock());
                    let sh2 = sh.clone();
                    let on_publish = move |topic: String, payload: bytes::Bytes| {
                        let sh = sh2.clone();
                        async move { sh.dispatch(topic, payload).await }
                    };
                    mqtt::run_client(sub, client, eventloop, connected, stop_sub, on_connect, on_publish).await;
                });
                let publ = ClientConfig { client_id: self.ids.1.clone(), ..base };
                let (client, eventloop) = mqtt::client(&publ);
                let connected = Arc::new(AtomicBool::new(false));
                publishers.push(Publisher { client: client.clone(), qos, retain, connected: connected.clone() });
                let stop_pub = stop.clone();
                ctx.spawn(async move {
                    mqtt::run_client(publ, client, eventloop, connected, stop_pub, |_| {}, |_, _| async {}).await;
                });
            }
            info!(mode = self.cfg.mqtt_mode, sub = %self.ids.0, r#pub = %self.ids.1, "EventBus started.");
            while let Some(msg) = ctx.recv().await {
                if edge::connection_state(&msg).is_some() {
                    continue;
                }
                self.handle(msg, &shared, &publishers, &subscribers).await;
            }
            Ok(())
        })
    }
}

impl EventBusModule {
    async fn handle(&self, msg: Message, shared: &Shared, publishers: &[Publisher], subscribers: &[AsyncClient]) {
        let topic = msg.router.resource.clone();
        match msg.router.operation.as_str() {
            operation::SUBSCRIBE => {
                if topic.is_empty() {
                    return;
                }
                for c in subscribers {
                    if let Err(e) = c.try_subscribe(topic.clone(), QoS::AtLeastOnce) {
                        warn!(%topic, error = %e, "Subscribing failed.");
                    }
                }
                shared.topics.lock().insert(topic.clone());
                let op = Op::Exec { sql: INSERT_TOPIC, params: vec![topic.clone().into()] };
                if let Err(e) = self.store.apply(vec![op]).await {
                    warn!(%topic, error = %e, "Storing a subscription failed.");
                }
                info!(%topic, "Subscribed for the cloud.");
            }
            operation::UNSUBSCRIBE => {
                for c in subscribers {
                    let _ = c.try_unsubscribe(topic.clone());
                }
                shared.topics.lock().remove(&topic);
                let op = Op::Exec { sql: DELETE_TOPIC, params: vec![topic.clone().into()] };
                if let Err(e) = self.store.apply(vec![op]).await {
                    warn!(%topic, error = %e, "Removing a subscription failed.");
                }
                info!(%topic, "Unsubscribed for the cloud.");
            }
            operation::PUBLISH => {
                let payload = msg.content.data().into_owned();
                self.publish(&topic, payload, shared, publishers).await;
            }
            operation::MESSAGE => {
                let body: serde_json::Value = msg.content.decode().unwrap_or_default();
                let Some(message) = body.get("message").filter(|m| m.is_object()) else {
                    warn!("A cloud message without a \"message\" object; dropped.");
                    return;
                };
                let Some(t) = message.get("topic").and_then(serde_json::Value::as_str) else {
                    warn!("A cloud message without a topic; dropped.");
                    return;
                };
                let payload = serde_json::to_vec(message).unwrap_or_default();
                self.publish(t, payload, shared, publishers).await;
            }
            operation::GET_RESULT => {
                if topic != "auth_info" {
                    debug!(resource = %topic, "Skipped a get_result that is not auth_info.");
                    return;
                }
                let t = format!("$hw/events/node/{}/authInfo/get/result", self.node);
                let payload = msg.content.raw().as_bytes().to_vec();
                self.publish(&t, payload, shared, publishers).await;
            }
            other => debug!(operation = other, resource = %topic, "EventBus ignored a message."),
        }
    }

    /// Publishes on every broker. A client whose queue is full while it is connected (a burst
    /// faster than the broker takes it) is waited for up to [`PUBLISH_WAIT`]; one that is not
    /// connected drops the message at once (counted), so a broker that is away never stalls
    /// EventBus or DeviceTwin.
    async fn publish(&self, topic: &str, payload: Vec<u8>, shared: &Shared, publishers: &[Publisher]) {
        if topic.is_empty() || topic.contains(['+', '#']) {
            warn!(%topic, "Not a topic to publish on; dropped.");
            return;
        }
        for p in publishers {
            let sent = match p.client.try_publish(topic, p.qos, p.retain, payload.clone()) {
                Ok(()) => true,
                Err(_) if p.connected.load(Ordering::Relaxed) => {
                    let wait = p.client.publish(topic, p.qos, p.retain, payload.clone());
                    matches!(tokio::time::timeout(PUBLISH_WAIT, wait).await, Ok(Ok(())))
                }
                Err(_) => false,
            };
            if sent {
                shared.metrics.messages.with_label_values(&["out"]).inc();
            } else {
                shared.metrics.drop("publish");
                debug!(%topic, "The MQTT client's queue is full; dropped a publish.");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_classified_as_upstream() {
        assert!(is_twin_topic("$hw/events/device/default/t1/twin/update"));
        assert!(is_twin_topic("$hw/events/node/n1/membership/get"));
        assert!(!is_twin_topic("$hw/events/devices/x"));
        assert!(!is_twin_topic("$hw/events/upload/x"));
        assert!(!is_twin_topic("SYS/dis/upload_records"));
        let m = twin_message("$hw/events/device/default/t1/twin/update", b"{\"a\":1}");
        assert_eq!(m.router.source, "bus");
        assert_eq!(m.router.group, "user");
        assert_eq!(m.router.operation, "response");
        assert_eq!(m.router.resource, "JGh3L2V2ZW50cy9kZXZpY2UvZGVmYXVsdC90MS90d2luL3VwZGF0ZQ==");
        assert_eq!(m.content.raw(), r#""{\"a\":1}""#);
        let u = upload_message("a/user/b", b"hi");
        assert_eq!((u.router.operation.as_str(), u.router.resource.as_str()), ("upload", "a/user/b"));
    }

    #[test]
    fn client_ids_follow_upstream() {
        let cfg = EventBus::default();
        let (s, p) = client_ids(&cfg);
        assert!(s.starts_with("hub-client-sub-") && s.len() == "hub-client-sub-".len() + 10, "{s}");
        assert!(p.starts_with("hub-client-pub-"), "{p}");
        let cfg = EventBus { mqtt_sub_client_id: "a".into(), mqtt_pub_client_id: "b".into(), ..cfg };
        assert_eq!(client_ids(&cfg), ("a".into(), "b".into()));
    }
}
