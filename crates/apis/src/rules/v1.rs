//! `rules.kubeedge.io/v1`: [`Rule`] and [`RuleEndpoint`].
//!
//! JSON keys and Go's `omitempty` rules are upstream's (`staging/src/github.com/kubeedge/api/apis/rules/v1`):
//! a Rule's four spec fields and its two counters have no `omitempty` and are always written; a
//! RuleEndpoint's `properties` is left out when empty. Go also always writes a Rule's `status`
//! (`omitempty` does not apply to structs) and writes its nil `errors` as `null`; the API server
//! drops such nulls, so a stored Rule has either no status (created by kubectl) or the counters.
//! We read `null` errors as empty and write empty errors as absent.
//!
//! Neither kind has a status subresource, as upstream: the counters are written with a patch of
//! the main resource.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

/// The version of the group.
pub const VERSION: &str = "v1";

/// `apiVersion` of both kinds: `rules.kubeedge.io/v1`.
pub const API_VERSION: &str = "rules.kubeedge.io/v1";

// === Rule ===

/// Where a rule's messages come from and where they go: two RuleEndpoints of the rule's
/// namespace, each with the resource the message is taken from or delivered to.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[kube(
    group = "rules.kubeedge.io",
    version = "v1",
    kind = "Rule",
    plural = "rules",
    singular = "rule",
    namespaced,
    status = "RuleStatus",
    derive = "Default",
    derive = "PartialEq",
    crates(kube_core = "::kube_core"),
    doc = "A route of messages from one RuleEndpoint to another, in the same namespace."
)]
pub struct RuleSpec {
    /// The name of the source RuleEndpoint, e.g. `my-rest` or `my-eventbus`.
    pub source: String,
    /// Where on the source the messages are taken: `{"path": "/a/b"}` for a rest endpoint,
    /// `{"topic": "…", "node_name": "…"}` for an eventbus endpoint.
    pub source_resource: BTreeMap<String, String>,
    /// The name of the target RuleEndpoint, e.g. `my-eventbus`, `my-rest` or `my-servicebus`.
    pub target: String,
    /// Where on the target the messages are delivered: `{"resource": "http://a.com"}` for a rest
    /// endpoint, `{"topic": "/xxxx"}` for an eventbus endpoint, `{"path": "/request_path"}` for a
    /// servicebus endpoint.
    pub target_resource: BTreeMap<String, String>,
}

/// How many messages the rule delivered, and why the last ones failed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleStatus {
    /// Messages delivered.
    #[serde(default)]
    pub success_messages: i64,
    /// Messages that could not be delivered.
    #[serde(default)]
    pub fail_messages: i64,
    /// Why delivery failed.
    #[serde(default, deserialize_with = "null_as_empty", skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// Go writes a nil slice as `null`.
fn null_as_empty<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(deserializer)?.unwrap_or_default())
}

// === RuleEndpoint ===

/// What a RuleEndpoint is, and its properties.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[kube(
    group = "rules.kubeedge.io",
    version = "v1",
    kind = "RuleEndpoint",
    plural = "ruleendpoints",
    singular = "ruleendpoint",
    shortname = "re",
    namespaced,
    derive = "PartialEq",
    crates(kube_core = "::kube_core"),
    doc = "One end of a Rule: the Router's REST listener, an edge node's EventBus, or an edge node's ServiceBus."
)]
pub struct RuleEndpointSpec {
    /// What the endpoint is: one of rest, eventbus or servicebus.
    pub rule_endpoint_type: RuleEndpointType,
    /// The endpoint's properties; a servicebus endpoint needs the edge application's port,
    /// `{"service_port": "8080"}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
}

/// What a [`RuleEndpoint`] is (upstream's `RuleEndpointTypeDef`).
///
/// A closed set: upstream's CRD rejects any other value, so the API server never holds one.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum RuleEndpointType {
    /// The Router's REST listener in the cloud.
    Rest,
    /// The EventBus (MQTT broker) of an edge node.
    EventBus,
    /// An HTTP port of an edge application, reached through the node's ServiceBus.
    ServiceBus,
}

impl RuleEndpointType {
    /// Every type, in upstream's order.
    pub const ALL: [Self; 3] = [Self::Rest, Self::EventBus, Self::ServiceBus];

    /// The value on the wire: `rest`, `eventbus` or `servicebus`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rest => "rest",
            Self::EventBus => "eventbus",
            Self::ServiceBus => "servicebus",
        }
    }
}

impl fmt::Display for RuleEndpointType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A plain string enum, as upstream's CRD has it. schemars' derive would describe each variant in
/// a `oneOf` (the variants have doc comments), which is not what upstream's schema says.
impl JsonSchema for RuleEndpointType {
    fn schema_name() -> Cow<'static, str> {
        "RuleEndpointType".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let values: Vec<&str> = Self::ALL.iter().map(|t| t.as_str()).collect();
        schemars::json_schema!({"type": "string", "enum": values})
    }
}

#[cfg(test)]
mod tests {
    use kube_core::{CustomResourceExt, Resource};
    use serde_json::json;

    use super::*;

    #[test]
    fn resource_identity() {
        assert_eq!(Rule::api_version(&()), API_VERSION);
        assert_eq!(Rule::group(&()), super::super::GROUP);
        assert_eq!(Rule::version(&()), VERSION);
        assert_eq!(Rule::kind(&()), "Rule");
        assert_eq!(Rule::plural(&()), "rules");
        assert_eq!(RuleEndpoint::api_version(&()), API_VERSION);
        assert_eq!(RuleEndpoint::kind(&()), "RuleEndpoint");
        assert_eq!(RuleEndpoint::plural(&()), "ruleendpoints");
        assert_eq!(Rule::crd_name(), "rules.rules.kubeedge.io");
        assert_eq!(RuleEndpoint::crd_name(), "ruleendpoints.rules.kubeedge.io");
        assert_eq!(RuleEndpoint::shortnames(), &["re"]);
        assert!(Rule::shortnames().is_empty());
    }

    #[test]
    fn endpoint_types_are_upstreams_strings() {
        for (t, s) in RuleEndpointType::ALL.into_iter().zip(["rest", "eventbus", "servicebus"]) {
            assert_eq!(serde_json::to_value(t).unwrap(), json!(s));
            assert_eq!(serde_json::from_value::<RuleEndpointType>(json!(s)).unwrap(), t);
            assert_eq!(t.to_string(), s);
        }
        for bad in ["Rest", "eventBus", "mqtt", ""] {
            assert!(serde_json::from_value::<RuleEndpointType>(json!(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn status_counters_are_always_written_and_empty_errors_are_not() {
        let status = RuleStatus::default();
        assert_eq!(serde_json::to_value(&status).unwrap(), json!({"successMessages": 0, "failMessages": 0}));
        let go: RuleStatus =
            serde_json::from_value(json!({"successMessages": 3, "failMessages": 0, "errors": null})).unwrap();
        assert_eq!(go, RuleStatus { success_messages: 3, ..Default::default() });
        let sparse: RuleStatus = serde_json::from_value(json!({})).unwrap();
        assert_eq!(sparse, RuleStatus::default());
    }
}
