//! The device payloads DeviceController reads from edges and writes to them, with upstream's
//! JSON (`cloud/pkg/devicecontroller/types`, the cloud's copy of the twin's `dttype`): Go's
//! `omitempty` kept, pointers as `Option`.
//!
//! Only the cloud's side is here: a twin report (`twin/edge_updated`, a DeviceTwinResult read
//! as upstream's `DeviceTwinUpdate`), a state report (`state/update`) and the membership update
//! ([`crate::delivery::devices::MembershipUpdate`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `{"event_id", "timestamp"}`, the head of every twin payload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseMessage {
    /// The event's id.
    #[serde(default)]
    pub event_id: String,
    /// Milliseconds since the epoch.
    #[serde(default)]
    pub timestamp: i64,
}

/// A value with the time it was taken.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwinValue {
    /// The value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// When it was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ValueMetadata>,
}

/// `{"timestamp"}` of a value (left out when 0, as Go's `omitempty`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueMetadata {
    /// Milliseconds since the epoch.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timestamp: i64,
}

/// `{"type"}` of a twin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeMetadata {
    /// `string`, `int`, `float`, `boolean`, `deleted`…
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub type_: String,
}

/// A twin's versions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwinVersion {
    /// The cloud's version.
    #[serde(default)]
    pub cloud: i64,
    /// The edge's version.
    #[serde(default)]
    pub edge: i64,
}

/// One twin (upstream `MsgTwin`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsgTwin {
    /// The desired value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<TwinValue>,
    /// The reported value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual: Option<TwinValue>,
    /// Whether the twin is optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
    /// Its type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TypeMetadata>,
    /// Versions of the desired value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<TwinVersion>,
    /// Versions of the reported value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual_version: Option<TwinVersion>,
}

/// A twin report from an edge (`device/{ns}/{name}/twin/edge_updated`): the twin's
/// DeviceTwinResult, read as upstream's `DeviceTwinUpdate`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceTwinUpdate {
    /// The event.
    #[serde(flatten)]
    pub base: BaseMessage,
    /// Twins by property name; a `null` twin is ignored.
    #[serde(default)]
    pub twin: BTreeMap<String, Option<MsgTwin>>,
}

/// The device in a state report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateDevice {
    /// The device's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// `online`, `offline`, `ok`, `unknown`, `unhealthy`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    /// When the device was last online.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_online_time: String,
}

/// A state report from an edge (`device/{ns}/{name}/state/update`). Upstream's Go field has no
/// JSON tag (`Device Device`), so Go writes the key `Device` and reads it case-insensitively;
/// both `device` (what the twin sends) and `Device` are read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStateUpdate {
    /// The event.
    #[serde(flatten)]
    pub base: BaseMessage,
    /// The device's state.
    #[serde(default, alias = "Device")]
    pub device: StateDevice,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Upstream-shaped payloads (protocol reference §6.2) parse and are written back unchanged.
    #[test]
    fn upstream_payloads_round_trip() {
        let twin = r#"{"event_id":"e7c1","timestamp":1700000000123,"twin":{"temperature":{"expected":{"value":"20","metadata":{"timestamp":1700000000000}},"actual":{"value":"21.5","metadata":{"timestamp":1700000000100}},"optional":false,"metadata":{"type":"float"},"expected_version":{"cloud":3,"edge":0},"actual_version":{"cloud":0,"edge":7}}}}"#;
        let parsed: DeviceTwinUpdate = serde_json::from_str(twin).unwrap();
        let t = parsed.twin["temperature"].as_ref().unwrap();
        assert_eq!(t.actual.as_ref().unwrap().value.as_deref(), Some("21.5"));
        assert_eq!(t.actual.as_ref().unwrap().metadata.as_ref().unwrap().timestamp, 1700000000100);
        assert_eq!(parsed.base.timestamp, 1700000000123);
        let back: serde_json::Value = serde_json::to_value(&parsed).unwrap();
        assert_eq!(back, serde_json::from_str::<serde_json::Value>(twin).unwrap());

        let state = r#"{"event_id":"s1","timestamp":1700000000200,"device":{"name":"thermo-1","state":"online","lastOnlineTime":"2026-01-02T03:04:05Z"}}"#;
        let parsed: DeviceStateUpdate = serde_json::from_str(state).unwrap();
        assert_eq!(parsed.device.state, "online");
        let back: serde_json::Value = serde_json::to_value(&parsed).unwrap();
        assert_eq!(back, serde_json::from_str::<serde_json::Value>(state).unwrap());
        // Go's untagged field name, as an upstream cloud-side encoder would write it.
        let go: DeviceStateUpdate =
            serde_json::from_str(r#"{"event_id":"","timestamp":0,"Device":{"state":"offline"}}"#).unwrap();
        assert_eq!(go.device.state, "offline");
    }
}
