//! EventBus (`eventbus`/`bus`): the MQTT bridge between devices (mappers, apps) and the edge
//! modules, as upstream's `edge/pkg/eventbus`.
//!
//! - `mqttMode` 2 (the default): the external broker at `mqttServerExternal` (mosquitto).
//!   Modes 0 and 1 (upstream's embedded broker on `mqttServerInternal`) are refused at start
//!   in this build: rumqttd, the embeddable Rust broker, refuses every subscription to a
//!   `$`-prefixed filter, and upstream's topics (`$hw/events/...`) and mappers need them. For each broker in use
//!   EventBus keeps two clients, `hub-client-sub-{s}` and `hub-client-pub-{s}` (upstream's ids,
//!   unless `mqttSubClientID` / `mqttPubClientID` are set), clean session, with the configured
//!   user name and password and, with `eventBusTLS.enable`, TLS with a client certificate.
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
//! - → MQTT (publish): each client's request queue ([`mqtt::CLIENT_QUEUE`]); full (the broker
//!   is away) ⇒ dropped and counted.
//!
//! Counter: `kubeedge_eventbus_dropped_total{queue="twin"|"cloud"|"publish"}`, and
//! `kubeedge_eventbus_messages_total{direction="in"|"out"}`.

pub mod mqtt;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
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

/// Why `mqttMode` 0 and 1 are refused (see the module docs).
pub const EMBEDDED_BROKER_UNAVAILABLE: &str = "modules.eventBus.mqttMode: 0 and 1 (the embedded broker) are not available in this build yet; \
     use 2 with an external broker such as mosquitto (the embeddable rumqttd refuses the `$hw/...` subscriptions upstream's topics need)";

/// How long a message from MQTT waits for room in the twin's inbox before it is dropped.
pub const HANDOFF_WAIT: Duration = Duration::from_secs(5);

/// Counters of EventBus.
#[derive(Clone)]
pub struct Metrics {
    dropped: prometheus::IntCounterVec,
    messages: prometheus::IntCounterVec,
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
        registry.register(Box::new(dropped.clone()))?;
        registry.register(Box::new(messages.clone()))?;
        Ok(Self { dropped, messages })
    }

    fn unregistered() -> Self {
        let dropped = prometheus::IntCounterVec::new(prometheus::Opts::new("d", "d"), &["queue"]).expect("valid");
        let messages = prometheus::IntCounterVec::new(prometheus::Opts::new("m", "m"), &["direction"]).expect("valid");
        Self { dropped, messages }
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
}

/// EventBus as a bus module.
pub struct EventBusModule {
    cfg: EventBus,
    node: String,
    store: Store,
    metrics: Metrics,
    ids: (String, String),
}

impl EventBusModule {
    /// A module for `node`, keeping its subscriptions in `store` (opened with the `sub_topics`
    /// table).
    pub fn new(cfg: EventBus, node: String, store: Store) -> Self {
        let ids = client_ids(&cfg);
        Self { cfg, node, store, metrics: Metrics::unregistered(), ids }
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

    /// The brokers in use: (url, publish QoS, publish retain). Upstream publishes to an
    /// external broker with QoS 1 and no retain (`mqttQOS` and `mqttRetain` apply to its
    /// embedded broker only).
    fn brokers(&self) -> Result<Vec<(BrokerUrl, QoS, bool)>, ModuleError> {
        let mut out = Vec::new();
        if self.cfg.mqtt_mode <= 1 {
            return Err(EMBEDDED_BROKER_UNAVAILABLE.into());
        }
        if self.cfg.mqtt_mode >= 1 {
            let url = BrokerUrl::parse(&self.cfg.mqtt_server_external)
                .map_err(|e| format!("modules.eventBus.mqttServerExternal: {e}"))?;
            out.push((url, QoS::AtLeastOnce, false));
        }
        Ok(out)
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
            let tls = self.tls()?;
            let mut publishers = Vec::new();
            let mut subscribers = Vec::new();
            for (url, qos, retain) in self.brokers()? {
                let base = ClientConfig {
                    url,
                    client_id: String::new(),
                    username: self.cfg.mqtt_username.clone(),
                    password: self.cfg.mqtt_password.clone(),
                    tls: tls.clone(),
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
                publishers.push(Publisher { client: client.clone(), qos, retain });
                let stop_pub = stop.clone();
                ctx.spawn(async move {
                    let connected = Arc::new(AtomicBool::new(false));
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
                self.publish(&topic, payload, shared, publishers);
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
                self.publish(t, payload, shared, publishers);
            }
            operation::GET_RESULT => {
                if topic != "auth_info" {
                    debug!(resource = %topic, "Skipped a get_result that is not auth_info.");
                    return;
                }
                let t = format!("$hw/events/node/{}/authInfo/get/result", self.node);
                let payload = msg.content.raw().as_bytes().to_vec();
                self.publish(&t, payload, shared, publishers);
            }
            other => debug!(operation = other, resource = %topic, "EventBus ignored a message."),
        }
    }

    fn publish(&self, topic: &str, payload: Vec<u8>, shared: &Shared, publishers: &[Publisher]) {
        if topic.is_empty() || topic.contains(['+', '#']) {
            warn!(%topic, "Not a topic to publish on; dropped.");
            return;
        }
        for p in publishers {
            match p.client.try_publish(topic, p.qos, p.retain, payload.clone()) {
                Ok(()) => shared.metrics.messages.with_label_values(&["out"]).inc(),
                Err(e) => {
                    shared.metrics.drop("publish");
                    debug!(%topic, error = %e, "The MQTT client's queue is full; dropped a publish.");
                }
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
