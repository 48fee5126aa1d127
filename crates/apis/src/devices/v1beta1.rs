//! `devices.kubeedge.io/v1beta1`: [`Device`], [`DeviceModel`] and [`DeviceStatus`].
//!
//! JSON keys, their order and Go's `omitempty` rules are upstream's
//! (`staging/src/github.com/kubeedge/api/apis/devices/v1beta1`): strings, lists and pointers are
//! left out when empty, while Go writes a struct field even when it is empty (`omitempty` does
//! not apply to structs), so `spec.protocol`, a property's `desired` and `visitors`, and a twin's
//! `reported` and `observedDesired` are always written, and a twin value's `value` is always
//! written (it has no `omitempty`). Free-form maps (`configData`, `protocolConfigData`,
//! `anomalyDetection`, `extensions`) are kept as JSON maps, as Go's `map[string]interface{}`.
//!
//! None of the three kinds has a status subresource, as upstream: DeviceController writes
//! `status` of a DeviceStatus with a merge patch of the main resource.

use std::collections::BTreeMap;

use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The version of the group.
pub const VERSION: &str = "v1beta1";

/// `apiVersion` of the three kinds: `devices.kubeedge.io/v1beta1`.
pub const API_VERSION: &str = "devices.kubeedge.io/v1beta1";

/// A free-form JSON object (Go's `map[string]interface{}`), kept as is by the API server.
pub type FreeMap = Map<String, Value>;

fn free_map(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

fn is_zero_i32(n: &i32) -> bool {
    *n == 0
}

// === Device ===

/// The desired state of a device: its model, the node it is bound to, how to reach it and the
/// properties it has.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[kube(
    group = "devices.kubeedge.io",
    version = "v1beta1",
    kind = "Device",
    plural = "devices",
    singular = "device",
    namespaced,
    status = "DeviceStatusOld",
    derive = "Default",
    derive = "PartialEq",
    crates(kube_core = "::kube_core"),
    doc = "A device bound to an edge node, of a DeviceModel in the same namespace."
)]
pub struct DeviceSpec {
    /// The DeviceModel this device is an instance of (same namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_model_ref: Option<LocalObjectReference>,
    /// The edge node the device is bound to; empty when it is not bound yet.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_name: String,
    /// The device's properties: desired values and how the mapper visits them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<DeviceProperty>,
    /// How the mapper talks to the device.
    #[serde(default)]
    pub protocol: ProtocolConfig,
    /// Methods the device offers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<DeviceMethod>,
    /// Whether and how often the mapper reports the device's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_report: Option<StateReportConfig>,
}

/// A reference to an object in the same namespace (Kubernetes' `LocalObjectReference`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct LocalObjectReference {
    /// The object's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// The legacy `status` of a Device (what the device reports is in its DeviceStatus).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceStatusOld {
    /// Whether the device reports to the cloud.
    #[serde(default, skip_serializing_if = "is_false")]
    pub report_to_cloud: bool,
    /// How often (ms) it reports.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub report_cycle: i64,
}

/// Whether and how often the mapper reports the device's state.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StateReportConfig {
    /// Whether the state is reported to the cloud.
    #[serde(default, skip_serializing_if = "is_false")]
    pub report_to_cloud: bool,
    /// How often (ms) it is reported.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub report_cycle: i64,
}

/// A property value with its metadata (`timestamp`, `type`…).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct TwinProperty {
    /// The value (always written, as upstream's `value` has no `omitempty`).
    #[serde(default)]
    pub value: String,
    /// Metadata such as the time the value was reported and its type.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// The protocol a device or a visitor uses, with its free-form configuration.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProtocolConfig {
    /// The protocol's name: the mapper that serves the device.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol_name: String,
    /// Any configuration of the protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_map")]
    pub config_data: Option<FreeMap>,
}

/// A method the device offers.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceMethod {
    /// The method's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The properties it uses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub property_names: Vec<String>,
}

/// One property of a device: the desired value, how it is read, how often, and where the mapper
/// pushes it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceProperty {
    /// The property's name (one of the model's properties).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The desired value (written even when empty, as upstream).
    #[serde(default)]
    pub desired: TwinProperty,
    /// How the mapper visits the property.
    #[serde(default)]
    pub visitors: VisitorConfig,
    /// How often (ms) the value is reported to the cloud.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub report_cycle: i64,
    /// How often (ms) the mapper reads the value.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub collect_cycle: i64,
    /// Whether the value is reported to the cloud.
    #[serde(default, skip_serializing_if = "is_false")]
    pub report_to_cloud: bool,
    /// Where the mapper pushes the value besides the cloud.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_method: Option<PushMethod>,
}

/// How the mapper visits a property.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VisitorConfig {
    /// The protocol's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol_name: String,
    /// The visitor's free-form configuration (register, offset…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_map")]
    pub config_data: Option<FreeMap>,
}

/// Where the mapper pushes a property's values.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushMethod {
    /// To an HTTP server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<PushMethodHttp>,
    /// To an MQTT broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<PushMethodMqtt>,
    /// To an OpenTelemetry collector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otel: Option<PushMethodOtel>,
    /// To a database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_method: Option<DbMethodConfig>,
    /// Anomaly detection settings (free-form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_map")]
    pub anomaly_detection: Option<FreeMap>,
}

/// Push to an HTTP server.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushMethodHttp {
    /// The server's host name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host_name: String,
    /// Its port.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub port: i64,
    /// The request path.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub request_path: String,
    /// The request timeout.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timeout: i64,
}

/// Push to an MQTT broker.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushMethodMqtt {
    /// The broker's address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// The topic.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub topic: String,
    /// The QoS.
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub qos: i32,
    /// Whether messages are retained.
    #[serde(default, skip_serializing_if = "is_false")]
    pub retained: bool,
}

/// Push to an OpenTelemetry collector.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct PushMethodOtel {
    /// The collector's endpoint.
    #[serde(rename = "endpointURL", default, skip_serializing_if = "String::is_empty")]
    pub endpoint_url: String,
}

/// Push to a database.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct DbMethodConfig {
    /// InfluxDB 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub influxdb2: Option<DbMethodInfluxdb2>,
    /// Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<DbMethodRedis>,
    /// TDengine (upstream spells the key `TDEngine`).
    #[serde(rename = "TDEngine", default, skip_serializing_if = "Option::is_none")]
    pub td_engine: Option<DbMethodTdEngine>,
    /// MySQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mysql: Option<DbMethodMySql>,
}

/// InfluxDB 2 settings (both parts are always written, as upstream's have no `omitempty`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DbMethodInfluxdb2 {
    /// The client.
    #[serde(default)]
    pub influxdb2_client_config: Option<Influxdb2ClientConfig>,
    /// The data layout.
    #[serde(default)]
    pub influxdb2_data_config: Option<Influxdb2DataConfig>,
}

/// The InfluxDB 2 client.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct Influxdb2ClientConfig {
    /// The server's URL.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// The organisation.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub org: String,
    /// The bucket.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bucket: String,
}

/// The InfluxDB 2 data layout.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Influxdb2DataConfig {
    /// The measurement.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub measurement: String,
    /// Tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tag: BTreeMap<String, String>,
    /// The field key.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub field_key: String,
}

/// Redis settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DbMethodRedis {
    /// The client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_client_config: Option<RedisClientConfig>,
}

/// The Redis client.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisClientConfig {
    /// The server's address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub addr: String,
    /// The database number.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub db: i64,
    /// The pool size.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub poolsize: i64,
    /// Idle connections kept.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min_idle_conns: i64,
}

/// TDengine settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct DbMethodTdEngine {
    /// The client.
    #[serde(rename = "TDEngineClientConfig", default, skip_serializing_if = "Option::is_none")]
    pub td_engine_client_config: Option<TdEngineClientConfig>,
}

/// The TDengine client.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TdEngineClientConfig {
    /// The server's address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub addr: String,
    /// The database.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub db_name: String,
}

/// MySQL settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct DbMethodMySql {
    /// The client.
    #[serde(rename = "mysqlClientConfig", default, skip_serializing_if = "Option::is_none")]
    pub mysql_client_config: Option<MySqlClientConfig>,
}

/// The MySQL client.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MySqlClientConfig {
    /// The server's address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub addr: String,
    /// The database.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub database: String,
    /// The user.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_name: String,
}

// === DeviceModel ===

/// A kind of device: its properties and protocol, shared by the devices of that model.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[kube(
    group = "devices.kubeedge.io",
    version = "v1beta1",
    kind = "DeviceModel",
    plural = "devicemodels",
    singular = "devicemodel",
    namespaced,
    derive = "Default",
    derive = "PartialEq",
    crates(kube_core = "::kube_core"),
    doc = "A kind of device: the properties its devices have and the protocol they speak."
)]
pub struct DeviceModelSpec {
    /// The properties of the model's devices.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<ModelProperty>,
    /// The protocol the devices speak.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    /// Protocol configuration a device may override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_map")]
    pub protocol_config_data: Option<FreeMap>,
}

/// One property of a model.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelProperty {
    /// The property's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// What it is.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// `INT`, `FLOAT`, `DOUBLE`, `STRING`, `BOOLEAN`, `BYTES` or `STREAM`.
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub type_: String,
    /// `ReadWrite` or `ReadOnly`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub access_mode: String,
    /// The smallest value.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub minimum: String,
    /// The largest value.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub maximum: String,
    /// The unit.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub unit: String,
    /// How the mapper visits it (a device may override it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visitors: Option<VisitorConfig>,
}

// === DeviceStatus ===

/// The spec of a DeviceStatus: empty, as upstream's (the Device it belongs to is its owner).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "devices.kubeedge.io",
    version = "v1beta1",
    kind = "DeviceStatus",
    plural = "devicestatuses",
    singular = "devicestatus",
    namespaced,
    status = "DeviceStatusStatus",
    derive = "Default",
    derive = "PartialEq",
    crates(kube_core = "::kube_core"),
    doc = "What a device reports: its twins' reported values, its state and when it was last online.
Named as its Device, which owns it."
)]
pub struct DeviceStatusSpec {}

/// What a device reports.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceStatusStatus {
    /// The reported and observed desired value of each property.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub twins: Vec<Twin>,
    /// The device's state (`online`, `offline`, `ok`, `unknown`, `unhealthy`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    /// When the device was last online.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_online_time: String,
    /// Anything else a mapper reports (free-form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_map")]
    pub extensions: Option<FreeMap>,
}

/// One property's reported value and the desired value the mapper last saw.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Twin {
    /// The property (of the Device).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub property_name: String,
    /// The value the device reported.
    #[serde(default)]
    pub reported: TwinProperty,
    /// The desired value the mapper has seen.
    #[serde(default)]
    pub observed_desired: TwinProperty,
}

#[cfg(test)]
mod tests {
    use kube_core::{CustomResourceExt, Resource};
    use serde_json::json;

    use super::*;

    #[test]
    fn resource_identity() {
        assert_eq!(Device::api_version(&()), API_VERSION);
        assert_eq!(Device::plural(&()), "devices");
        assert_eq!(DeviceModel::plural(&()), "devicemodels");
        assert_eq!(DeviceStatus::plural(&()), "devicestatuses");
        assert_eq!(DeviceStatus::kind(&()), "DeviceStatus");
        assert_eq!(Device::crd_name(), "devices.devices.kubeedge.io");
        assert_eq!(DeviceModel::crd_name(), "devicemodels.devices.kubeedge.io");
        assert_eq!(DeviceStatus::crd_name(), "devicestatuses.devices.kubeedge.io");
    }

    #[test]
    fn structs_are_written_even_when_empty_as_go_does() {
        let p = DeviceProperty { name: "temp".into(), ..Default::default() };
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!({"name": "temp", "desired": {"value": ""}, "visitors": {}})
        );
        let t = Twin { property_name: "temp".into(), ..Default::default() };
        assert_eq!(
            serde_json::to_value(&t).unwrap(),
            json!({"propertyName": "temp", "reported": {"value": ""}, "observedDesired": {"value": ""}})
        );
        assert_eq!(serde_json::to_value(DeviceSpec::default()).unwrap(), json!({"protocol": {}}));
    }
}
