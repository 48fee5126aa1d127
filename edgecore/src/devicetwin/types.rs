//! The twin payloads on MQTT, as upstream's `edge/pkg/devicetwin/dttype` (`types.go`,
//! `types_helper.go`): the same keys, in the Go structs' field order, with Go's `omitempty`
//! rules, and maps sorted by key as Go's encoder sorts them — so upstream-shaped payloads
//! re-encode byte for byte. The shapes the cloud reads too are in [`kubeedge_model::twin`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use kubeedge_model::twin::{
    BaseMessage, DeviceCloudMsg, DeviceMsg, DeviceTwinResult, MsgTwin, TwinValue, TwinVersion, Twins, TypeMetadata,
    ValueMetadata,
};

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
    /// Attributes; a `null` one is removed.
    #[serde(default)]
    pub attributes: Option<BTreeMap<String, Option<MsgAttr>>>,
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
        rt::<DeviceUpdate>(
            r#"{"event_id":"u","timestamp":7,"attributes":{"gone":null,"model":{"value":"T-1000","optional":false,"metadata":{"type":"string"}},"serial":{"value":""}}}"#,
        );
        rt::<DeviceMsg>(
            r#"{"event_id":"s","timestamp":6,"device":{"name":"thermo-1","state":"online","lastOnlineTime":"2024-01-01T00:00:00Z"}}"#,
        );
    }
}
