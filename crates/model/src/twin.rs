//! The device twin payloads both daemons speak, as upstream's `edge/pkg/devicetwin/dttype`
//! (`types.go`, `types_helper.go`) and the cloud's copy of it
//! (`cloud/pkg/devicecontroller/types`): the same keys in the Go structs' field order, Go's
//! `omitempty` rules, pointers as `Option`, maps sorted by key as Go's encoder sorts them — so
//! upstream-shaped payloads re-encode byte for byte.
//!
//! Only what crosses the cloud–edge link or is shared by both sides lives here; the edge's
//! MQTT-only shapes (delta, document, membership results) stay in edgecore's DeviceTwin.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The twin type of a deleted twin or attribute.
pub const TYPE_DELETED: &str = "deleted";

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// `{"event_id", "timestamp"}`, the head of every twin payload (and the whole of `twin/get`
/// and `membership/get`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseMessage {
    /// The event's id.
    #[serde(default)]
    pub event_id: String,
    /// Milliseconds since the epoch.
    #[serde(default)]
    pub timestamp: i64,
}

/// `{"value", "metadata": {"timestamp"}}` of an expected or actual value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwinValue {
    /// The value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// When it was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ValueMetadata>,
}

/// `{"timestamp": ms}` of a value (left out when 0, as Go's `omitempty`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueMetadata {
    /// Milliseconds since the epoch.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timestamp: i64,
}

/// `{"type": …}` of a twin or attribute.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeMetadata {
    /// `string`, `int`, `integer`, `float`, `boolean`, `deleted`…
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub ty: String,
}

/// `{"cloud": n, "edge": n}`: how many times the cloud and the edge changed a value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwinVersion {
    /// Cloud changes.
    #[serde(default)]
    pub cloud: i64,
    /// Edge changes.
    #[serde(default)]
    pub edge: i64,
}

/// One twin property (upstream `MsgTwin`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsgTwin {
    /// The desired value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<TwinValue>,
    /// The reported value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual: Option<TwinValue>,
    /// Whether it may be deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
    /// The value type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TypeMetadata>,
    /// Version of the expected value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<TwinVersion>,
    /// Version of the actual value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual_version: Option<TwinVersion>,
}

impl MsgTwin {
    /// The twin without its versions (what devices see).
    pub fn without_versions(&self) -> MsgTwin {
        MsgTwin { expected_version: None, actual_version: None, ..self.clone() }
    }

    /// Whether its type is `deleted`.
    pub fn is_deleted(&self) -> bool {
        self.metadata.as_ref().is_some_and(|m| m.ty == TYPE_DELETED)
    }

    /// `self` with the fields `newer` carries replaced (latest value wins, field by field).
    pub fn merged_with(&self, newer: &MsgTwin) -> MsgTwin {
        MsgTwin {
            expected: newer.expected.clone().or_else(|| self.expected.clone()),
            actual: newer.actual.clone().or_else(|| self.actual.clone()),
            optional: newer.optional.or(self.optional),
            metadata: newer.metadata.clone().or_else(|| self.metadata.clone()),
            expected_version: newer.expected_version.or(self.expected_version),
            actual_version: newer.actual_version.or(self.actual_version),
        }
    }
}

/// Twins by name; a `null` entry deletes (in) or reports a deleted twin (out).
pub type Twins = BTreeMap<String, Option<MsgTwin>>;

/// `twin/update/result`, `twin/get/result` and the report to the cloud `twin/edge_updated`
/// (upstream `DeviceTwinResult`; the cloud reads it as its `DeviceTwinUpdate`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceTwinResult {
    /// Event id.
    #[serde(default)]
    pub event_id: String,
    /// Milliseconds.
    #[serde(default)]
    pub timestamp: i64,
    /// Twins.
    #[serde(default)]
    pub twin: Twins,
}

/// The device part of a state report (upstream `DeviceCloudMsg`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCloudMsg {
    /// Id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// Name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// `online`, `offline`, `ok`, `unknown`, `unhealthy`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    /// When last online (RFC 3339).
    #[serde(rename = "lastOnlineTime", default, skip_serializing_if = "String::is_empty")]
    pub last_online_time: String,
}

/// `state/update/result` and the report to the cloud `state/update` (upstream `DeviceMsg`).
/// The cloud's Go field has no JSON tag (`Device Device`), so Go writes the key `Device` and
/// reads it case-insensitively: both `device` and `Device` are read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceMsg {
    /// Event id.
    #[serde(default)]
    pub event_id: String,
    /// Milliseconds.
    #[serde(default)]
    pub timestamp: i64,
    /// The device.
    #[serde(default, alias = "Device")]
    pub device: DeviceCloudMsg,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Upstream-shaped reports (protocol reference §6.2) re-encode byte for byte.
    #[test]
    fn upstream_reports_round_trip_byte_for_byte() {
        let twin = r#"{"event_id":"e7c1","timestamp":1700000000123,"twin":{"gone":null,"temperature":{"expected":{"value":"20","metadata":{"timestamp":1700000000000}},"actual":{"value":"21.5","metadata":{"timestamp":1700000000100}},"optional":false,"metadata":{"type":"float"},"expected_version":{"cloud":3,"edge":0},"actual_version":{"cloud":0,"edge":7}}}}"#;
        let parsed: DeviceTwinResult = serde_json::from_str(twin).unwrap();
        let t = parsed.twin["temperature"].as_ref().unwrap();
        assert_eq!(t.actual.as_ref().unwrap().value.as_deref(), Some("21.5"));
        assert_eq!(t.actual.as_ref().unwrap().metadata.unwrap().timestamp, 1700000000100);
        assert_eq!(serde_json::to_string(&parsed).unwrap(), twin);

        let state = r#"{"event_id":"s1","timestamp":1700000000200,"device":{"name":"thermo-1","state":"online","lastOnlineTime":"2026-01-02T03:04:05Z"}}"#;
        let parsed: DeviceMsg = serde_json::from_str(state).unwrap();
        assert_eq!(parsed.device.state, "online");
        assert_eq!(serde_json::to_string(&parsed).unwrap(), state);
        // Go's untagged field name, as an upstream cloud-side encoder writes it.
        let go: DeviceMsg =
            serde_json::from_str(r#"{"event_id":"","timestamp":0,"Device":{"state":"offline"}}"#).unwrap();
        assert_eq!(go.device.state, "offline");
    }

    #[test]
    fn merge_keeps_what_the_newer_twin_leaves_out() {
        let old = MsgTwin {
            expected: Some(TwinValue { value: Some("1".into()), metadata: None }),
            actual: Some(TwinValue { value: Some("2".into()), metadata: None }),
            ..Default::default()
        };
        let newer = MsgTwin {
            actual: Some(TwinValue { value: Some("3".into()), metadata: None }),
            metadata: Some(TypeMetadata { ty: TYPE_DELETED.into() }),
            ..Default::default()
        };
        let m = old.merged_with(&newer);
        assert_eq!(m.expected.unwrap().value.as_deref(), Some("1"));
        assert_eq!(m.actual.unwrap().value.as_deref(), Some("3"));
        assert!(old.merged_with(&newer).is_deleted());
    }
}
