//! The twin payloads on MQTT and to the cloud, as upstream's `edge/pkg/devicetwin/dttype`
//! (`types.go`, `types_helper.go`): the same keys, in the Go structs' field order, with Go's
//! `omitempty` rules, and maps sorted by key as Go's encoder sorts them — so upstream-shaped
//! payloads re-encode byte for byte.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// `{"value", "metadata": {"timestamp"}}` of an expected or actual value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwinValue {
    /// The value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// When it was set (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ValueMetadata>,
}

/// `{"timestamp": ms}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueMetadata {
    /// Milliseconds since the epoch.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timestamp: i64,
}

/// `{"type": …}`.
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
        self.metadata.as_ref().is_some_and(|m| m.ty == super::TYPE_DELETED)
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

/// A device attribute (upstream `MsgAttr`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsgAttr {
    /// The value.
    #[serde(default)]
    pub value: String,
    /// Whether it may be deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
    /// The value type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TypeMetadata>,
}

/// Twins by name; a `null` entry deletes (in) or reports a deleted twin (out).
pub type Twins = BTreeMap<String, Option<MsgTwin>>;

/// A device as twin messages carry it (upstream `dttype.Device`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// `{namespace}/{name}`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// Name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// State (`online`, `offline`, `ok`, `unknown`, `unhealthy`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    /// When last online (RFC 3339).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_online: String,
    /// Attributes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, MsgAttr>,
    /// Twins.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub twin: Twins,
}

/// `$hw/events/device/{id}/twin/update` and `twin/cloud_updated` (upstream `DeviceTwinUpdate`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceTwinUpdate {
    /// Event id, echoed in the result.
    #[serde(default)]
    pub event_id: String,
    /// Milliseconds.
    #[serde(default)]
    pub timestamp: i64,
    /// The twins to change; absent is an error.
    #[serde(default)]
    pub twin: Option<Twins>,
}

/// `twin/update/result`, `twin/get/result` and the cloud report `twin/edge_updated`
/// (upstream `DeviceTwinResult`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceTwinResult {
    /// Event id.
    pub event_id: String,
    /// Milliseconds.
    pub timestamp: i64,
    /// Twins.
    pub twin: Twins,
}

/// `twin/update/delta` (upstream `DeviceTwinDelta`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceTwinDelta {
    /// Event id.
    pub event_id: String,
    /// Milliseconds.
    pub timestamp: i64,
    /// Every twin with an expected value.
    pub twin: BTreeMap<String, MsgTwin>,
    /// Expected values that differ from the actual ones.
    pub delta: BTreeMap<String, String>,
}

/// `last` and `current` of one twin in a document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwinDoc {
    /// Before.
    pub last: Option<MsgTwin>,
    /// After.
    pub current: Option<MsgTwin>,
}

/// `twin/update/document` (upstream `DeviceTwinDocument`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceTwinDocument {
    /// Event id.
    pub event_id: String,
    /// Milliseconds.
    pub timestamp: i64,
    /// Changed twins.
    pub twin: BTreeMap<String, TwinDoc>,
}

/// An error result (upstream `Result`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResult {
    /// Event id of the request.
    pub event_id: String,
    /// Milliseconds.
    pub timestamp: i64,
    /// 400, 404, 409, 500.
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub code: i32,
    /// Why.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

fn is_zero_i32(n: &i32) -> bool {
    *n == 0
}

/// A request with only the base fields (`twin/get`, `membership/get`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseMessage {
    /// Event id.
    #[serde(default)]
    pub event_id: String,
    /// Milliseconds.
    #[serde(default)]
    pub timestamp: i64,
}

/// Membership update from the cloud, republished on `membership/updated`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipUpdate {
    /// Event id.
    #[serde(default)]
    pub event_id: String,
    /// Milliseconds.
    #[serde(default)]
    pub timestamp: i64,
    /// Devices added (`null` when none, as Go encodes a nil slice).
    #[serde(default)]
    pub added_devices: Option<Vec<Device>>,
    /// Devices removed.
    #[serde(default)]
    pub removed_devices: Option<Vec<Device>>,
}

/// `membership/get/result`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipGetResult {
    /// Event id of the request.
    pub event_id: String,
    /// Milliseconds.
    pub timestamp: i64,
    /// The node's devices (without twins).
    pub devices: Vec<Device>,
}

/// `state/update` from a mapper (upstream `DeviceUpdate`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceUpdate {
    /// Event id.
    #[serde(default)]
    pub event_id: String,
    /// Milliseconds.
    #[serde(default)]
    pub timestamp: i64,
    /// The new state.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    /// Attributes.
    #[serde(default)]
    pub attributes: Option<BTreeMap<String, MsgAttr>>,
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
    /// State.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    /// When last online (RFC 3339).
    #[serde(rename = "lastOnlineTime", default, skip_serializing_if = "String::is_empty")]
    pub last_online_time: String,
}

/// `state/update/result` and the cloud report `state/update` (upstream `DeviceMsg`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceMsg {
    /// Event id.
    pub event_id: String,
    /// Milliseconds.
    pub timestamp: i64,
    /// The device.
    pub device: DeviceCloudMsg,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Upstream-shaped payloads (Go's field order, omitempty and sorted maps) re-encode byte
    /// for byte.
    #[test]
    fn upstream_payloads_round_trip_byte_for_byte() {
        fn rt<T: serde::de::DeserializeOwned + Serialize>(s: &str) {
            let v: T = serde_json::from_str(s).unwrap();
            assert_eq!(serde_json::to_string(&v).unwrap(), s);
        }
        rt::<DeviceTwinUpdate>(
            r#"{"event_id":"e1","timestamp":1700000000000,"twin":{"humidity":{"actual":{"value":"40"}},"temperature":{"expected":{"value":"25","metadata":{"timestamp":1700000000001}},"actual":{"value":"21","metadata":{"timestamp":1700000000002}},"optional":true,"metadata":{"type":"int"},"expected_version":{"cloud":1,"edge":0},"actual_version":{"cloud":0,"edge":3}}}}"#,
        );
        rt::<DeviceTwinResult>(
            r#"{"event_id":"","timestamp":1,"twin":{"gone":null,"t":{"actual":{"value":"1"},"optional":true,"metadata":{"type":"string"}}}}"#,
        );
        rt::<DeviceTwinDelta>(
            r#"{"event_id":"d","timestamp":2,"twin":{"t":{"expected":{"value":"25"},"optional":true,"metadata":{"type":"int"}}},"delta":{"t":"25"}}"#,
        );
        rt::<DeviceTwinDocument>(
            r#"{"event_id":"d","timestamp":2,"twin":{"t":{"last":null,"current":{"expected":{"value":"25"}}}}}"#,
        );
        rt::<ErrorResult>(
            r#"{"event_id":"e","timestamp":3,"code":404,"reason":"update rejected due to the device is not existed"}"#,
        );
        rt::<MembershipUpdate>(
            r#"{"event_id":"m","timestamp":4,"added_devices":[{"id":"default/thermo-1","name":"thermo-1","description":"a thermometer"}],"removed_devices":null}"#,
        );
        rt::<MembershipGetResult>(
            r#"{"event_id":"g","timestamp":5,"devices":[{"id":"default/t","name":"t","state":"online","last_online":"2024-01-01T00:00:00Z","attributes":{"a":{"value":"v","optional":true,"metadata":{"type":"string"}}}}]}"#,
        );
        rt::<DeviceMsg>(
            r#"{"event_id":"s","timestamp":6,"device":{"name":"thermo-1","state":"online","lastOnlineTime":"2024-01-01T00:00:00Z"}}"#,
        );
    }
}
