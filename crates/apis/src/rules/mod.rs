//! `rules.kubeedge.io`: how cloudcore's Router moves messages between cloud and edge applications.
//!
//! A [`RuleEndpoint`](v1::RuleEndpoint) names one end of a route and says what it is: the Router's
//! REST listener in the cloud (`rest`), the EventBus (MQTT) of an edge node (`eventbus`), or an
//! HTTP port on an edge node reached through ServiceBus (`servicebus`, with the port in its
//! `service_port` property). A [`Rule`](v1::Rule) in the same namespace joins a source endpoint to
//! a target endpoint by name, with the source's and the target's resource (a REST path, an MQTT
//! topic and node, a URL), and counts in its status the messages it delivered and failed to.
//!
//! Only the types and their CRDs live here; cloudcore's Router (`cloudcore::router`) reads them.

pub mod v1;

/// The API group.
pub const GROUP: &str = "rules.kubeedge.io";
