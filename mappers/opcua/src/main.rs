//! `opcua-mapper`: a KubeEdge mapper for OPC UA servers, on the mapper framework.
//!
//! The device's `spec.protocol.configData` has upstream's fields: `url`, `userName`,
//! `password` (a file holding the password), `securityPolicy` (None, Basic256Sha256,
//! Aes128Sha256RsaOaep, Aes256Sha256RsaPss), `securityMode` (None, Sign, SignAndEncrypt),
//! `certificate` and `privateKey` (the mapper's own: a DER or PEM certificate, a PEM key), `remoteCertificate`
//! (the server's certificate, pinned: required with a security policy), `timeout` (seconds per
//! request and per connect, 5); and ours: `subscriptionInterval` (ms, 1000), `pkiDir`, `applicationUri`.
//! Each property's `visitors.configData`: `nodeID` (e.g. `ns=2;i=3`, `ns=2;s=Temperature`),
//! `browseName` (informational), and ours: `subscribe` (take the value from a subscription
//! instead of a read per collect cycle).

mod convert;
mod session;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use kubeedge_mapper_framework::{DataValue, Property, Protocol, ProtocolError};
use opcua::client::{DataChangeCallback, Session};
use opcua::core::comms::url::hostname_port_from_url;
use opcua::types::{
    AttributeId, DataValue as UaValue, Identifier, MonitoredItemCreateRequest, NodeId, ReadValueId, StatusCode,
    TimestampsToReturn, Variant, VariantScalarTypeId, WriteValue,
};
use serde::{Deserialize, Deserializer};
use tokio::sync::watch;

/// `spec.protocol.configData`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeviceConfig {
    url: String,
    #[serde(default)]
    user_name: Option<String>,
    #[serde(default)]
    password: Option<PathBuf>,
    #[serde(default)]
    security_policy: Option<String>,
    #[serde(default)]
    security_mode: Option<String>,
    #[serde(default)]
    certificate: Option<PathBuf>,
    #[serde(default)]
    private_key: Option<PathBuf>,
    #[serde(default)]
    remote_certificate: Option<PathBuf>,
    #[serde(default = "default_timeout")]
    timeout: u64,
    #[serde(default = "default_interval")]
    subscription_interval: u64,
    #[serde(default)]
    pki_dir: Option<PathBuf>,
    #[serde(default)]
    application_uri: Option<String>,
}

fn default_timeout() -> u64 {
    5
}

impl DeviceConfig {
    /// `timeout`, 1 s to 1 h.
    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout.clamp(1, 3600))
    }
}
fn default_interval() -> u64 {
    1000
}

/// `visitors.configData` (upstream's `VisitorConfigOPCUA`, plus `subscribe`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Visitor {
    #[serde(rename = "nodeID", deserialize_with = "node_id")]
    node_id: NodeId,
    #[serde(default)]
    #[allow(dead_code)] // upstream's field: carried, not needed to read or write
    browse_name: Option<String>,
    #[serde(default)]
    subscribe: bool,
}

fn node_id<'de, D: Deserializer<'de>>(d: D) -> Result<NodeId, D::Error> {
    let text = String::deserialize(d)?;
    NodeId::from_str(&text).map_err(|_| {
        serde::de::Error::custom(format!("nodeID {text:?} is not a node id (e.g. ns=2;i=3 or ns=2;s=Temperature)"))
    })
}

/// The latest value of each subscribed node, written by the subscription's callback.
type Latest = HashMap<NodeId, UaValue>;

/// One device's session and what it learnt.
struct Client {
    session: Arc<Session>,
    event_loop: session::EventLoop,
    url: String,
    timeout: Duration,
    interval: Duration,
    /// The subscription, once a subscribed property was read.
    subscription: Option<u32>,
    monitored: HashSet<NodeId>,
    latest: watch::Receiver<Latest>,
    latest_tx: watch::Sender<Latest>,
    /// Each written node's value type (see [`Client::value_type`]): a write converts to it.
    types: HashMap<NodeId, VariantScalarTypeId>,
}

impl Client {
    fn alive(&self) -> Result<(), ProtocolError> {
        if self.event_loop.0.is_finished() {
            return Err(ProtocolError::connection(format!("the session with {} was closed", self.url)));
        }
        Ok(())
    }

    /// A service call within the timeout: a lost connection, channel or session (or no
    /// answer) is a connection error, any other refusal a device error for this call only.
    async fn call<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, opcua::types::Error>>,
    ) -> Result<T, ProtocolError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(t)) => Ok(t),
            Ok(Err(e)) if session::is_connection_status(e.status()) => {
                Err(ProtocolError::connection(format!("{what}: {} ({e})", e.status())))
            }
            Ok(Err(e)) => Err(ProtocolError::device(format!("{what}: {} ({e})", e.status()))),
            Err(_) => Err(ProtocolError::connection(format!("{what}: no answer within {:?}", self.timeout))),
        }
    }

    async fn read_node(&mut self, node: &NodeId) -> Result<DataValue, ProtocolError> {
        let what = format!("reading {node}");
        let ids = [ReadValueId::from(node.clone())];
        let mut values = self.call(&what, self.session.read(&ids, TimestampsToReturn::Neither, 0.0)).await?;
        let value =
            values.pop().ok_or_else(|| ProtocolError::device(format!("{what}: the server returned nothing")))?;
        self.value_of(node, &value)
    }

    /// The node's value type, for writes: its `DataType` attribute when that is a built-in
    /// scalar type, else the type of its current value.
    async fn value_type(&mut self, node: &NodeId) -> Result<VariantScalarTypeId, ProtocolError> {
        if let Some(ty) = self.types.get(node) {
            return Ok(*ty);
        }
        let what = format!("reading the type of {node}");
        let attribute = |a: AttributeId| ReadValueId { attribute_id: a as u32, ..ReadValueId::from(node.clone()) };
        let ids = [attribute(AttributeId::DataType), attribute(AttributeId::Value)];
        let values = self.call(&what, self.session.read(&ids, TimestampsToReturn::Neither, 0.0)).await?;
        let declared = match values.first().and_then(|v| v.value.as_ref()) {
            Some(Variant::NodeId(id)) if id.namespace == 0 => match &id.identifier {
                // Only the built-in scalars (Boolean … ByteString); BaseDataType (24), Structure
                // and the rest say nothing a write can use: the value's own type decides.
                Identifier::Numeric(n @ 1..=15) => VariantScalarTypeId::try_from(*n).ok(),
                _ => None,
            },
            _ => None,
        };
        let current = values.get(1).and_then(|v| v.value.as_ref()).and_then(Variant::scalar_type_id);
        let ty = declared.or(current).ok_or_else(|| {
            let status = values.first().and_then(|v| v.status).unwrap_or(StatusCode::Good);
            ProtocolError::device(format!("{what}: neither its DataType ({status}) nor its value tells a scalar type"))
        })?;
        self.types.insert(node.clone(), ty);
        Ok(ty)
    }

    fn value_of(&self, node: &NodeId, value: &UaValue) -> Result<DataValue, ProtocolError> {
        let status = value.status.unwrap_or(StatusCode::Good);
        if status.is_bad() {
            return Err(ProtocolError::device(format!("reading {node}: {status}")));
        }
        let variant = value.value.as_ref().ok_or_else(|| ProtocolError::device(format!("reading {node}: no value")))?;
        convert::from_variant(variant)
    }

    /// Adds a node to the device's subscription (created on first use).
    async fn monitor(&mut self, node: &NodeId) -> Result<(), ProtocolError> {
        let id = match self.subscription {
            Some(id) => id,
            None => {
                let tx = self.latest_tx.clone();
                let callback = DataChangeCallback::new(move |value, item| {
                    let node = item.item_to_monitor().node_id.clone();
                    tx.send_modify(|latest| {
                        latest.insert(node, value);
                    });
                });
                let create = self.session.create_subscription(self.interval, 60, 10, 0, 0, true, callback);
                let id = self.call("creating a subscription", create).await?;
                self.subscription = Some(id);
                id
            }
        };
        let items = vec![MonitoredItemCreateRequest::from(node.clone())];
        let created = self
            .call(
                &format!("monitoring {node}"),
                self.session.create_monitored_items(id, TimestampsToReturn::Neither, items),
            )
            .await?;
        match created.first().map(|c| c.result.status_code) {
            Some(s) if s.is_good() => {
                self.monitored.insert(node.clone());
                Ok(())
            }
            Some(s) => Err(ProtocolError::device(format!("monitoring {node}: {}", s))),
            None => Err(ProtocolError::device(format!("monitoring {node}: the server returned nothing"))),
        }
    }
}

struct OpcUa;

impl Protocol for OpcUa {
    type DeviceConfig = DeviceConfig;
    type Visitor = Visitor;
    type Client = Client;

    const QUIET_TARGETS: &'static [&'static str] = &["opcua_client", "opcua_core", "opcua_crypto", "opcua_types"];

    /// The request timeout, and one more second for the framework's own deadline.
    fn timeout(&self, c: &DeviceConfig) -> Duration {
        c.timeout() + Duration::from_secs(1)
    }

    async fn connect(&self, c: &DeviceConfig) -> Result<Client, ProtocolError> {
        if !c.url.starts_with("opc.tcp://") || hostname_port_from_url(&c.url, 4840).is_err() {
            return Err(ProtocolError::config(format!("url {:?} is not an opc.tcp://host[:port][/path] URL", c.url)));
        }
        let opened = session::open(c).await?;
        let (latest_tx, latest) = watch::channel(Latest::new());
        Ok(Client {
            session: opened.session,
            event_loop: opened.event_loop,
            url: c.url.clone(),
            timeout: c.timeout(),
            interval: Duration::from_millis(c.subscription_interval.max(10)),
            subscription: None,
            monitored: HashSet::new(),
            latest,
            latest_tx,
            types: HashMap::new(),
        })
    }

    async fn read(&self, c: &mut Client, p: Property<'_, Visitor>) -> Result<DataValue, ProtocolError> {
        c.alive()?;
        let node = &p.visitor.node_id;
        if p.visitor.subscribe {
            if !c.monitored.contains(node) {
                c.monitor(node).await?;
            } else {
                // The latest notification, while it is good; else (none yet, or the item
                // reports a bad status) a Read says what the node holds now.
                let cached = c.latest.borrow().get(node).cloned();
                if let Some(value) = cached.filter(|v| v.status.is_none_or(|s| s.is_good())) {
                    return c.value_of(node, &value);
                }
            }
        }
        c.read_node(node).await
    }

    async fn write(&self, c: &mut Client, p: Property<'_, Visitor>, value: &DataValue) -> Result<(), ProtocolError> {
        c.alive()?;
        let node = &p.visitor.node_id;
        let ty = c.value_type(node).await?;
        let write = WriteValue {
            node_id: node.clone(),
            attribute_id: AttributeId::Value as u32,
            value: UaValue::value_only(convert::to_variant(value, ty)?),
            ..Default::default()
        };
        let what = format!("writing {node}");
        let results = c.call(&what, c.session.write(&[write])).await?;
        match results.first() {
            Some(s) if s.is_good() => Ok(()),
            Some(s) => Err(ProtocolError::device(format!("{what}: {}", s))),
            None => Err(ProtocolError::device(format!("{what}: the server returned nothing"))),
        }
    }

    async fn stop(&self, c: Client) {
        // Dropping the client afterwards aborts its event loop.
        let _ = tokio::time::timeout(Duration::from_secs(1), c.session.disconnect()).await;
    }
}

fn main() -> std::process::ExitCode {
    kubeedge_mapper_framework::main(OpcUa)
}
