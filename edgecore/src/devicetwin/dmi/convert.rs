//! Devices and models as DMI carries them: the CRD objects MetaManager stores, converted as
//! upstream's `dtcommon.ConvertDevice`/`ConvertDeviceModel`, after the model's defaults are laid
//! under the device (`dmicache.overrideDeviceInstanceConfig`: a property's visitors come from
//! the model's property of the same name, the device's own `configData` keys win; the model's
//! `protocolConfigData` under the device's `protocol.configData`).
//!
//! `configData` values become `google.protobuf.Any` wrappers ([`kubeedge_dmi::any`]); a value
//! that has none (a list, a map, null) makes the device unconvertible, with the key named.

use kubeedge_apis::devices::v1beta1::{self as crd, FreeMap};
use kubeedge_dmi::v1beta1 as pb;

/// Why a device or model could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// A `configData` value has no wrapper.
    #[error("{field}.{key}: {source}")]
    ConfigData {
        /// Where (`spec.protocol.configData`, `spec.properties[temperature].visitors.configData`…).
        field: String,
        /// The key.
        key: String,
        /// Why.
        #[source]
        source: kubeedge_dmi::any::Error,
    },
}

fn any_map(field: &str, map: &FreeMap) -> Result<pb::CustomizedValue, ConvertError> {
    kubeedge_dmi::any::map_to_any(map)
        .map(|data| pb::CustomizedValue { data })
        .map_err(|(key, source)| ConvertError::ConfigData { field: field.to_owned(), key, source })
}

/// `overlay`'s keys over `base`'s.
fn merged(base: Option<&FreeMap>, overlay: Option<&FreeMap>) -> Option<FreeMap> {
    match (base, overlay) {
        (None, None) => None,
        (Some(b), None) => Some(b.clone()),
        (None, Some(o)) => Some(o.clone()),
        (Some(b), Some(o)) => {
            let mut m = b.clone();
            m.extend(o.iter().map(|(k, v)| (k.clone(), v.clone())));
            Some(m)
        }
    }
}

/// The device with its model's defaults laid under it (upstream's override).
pub fn overridden(device: &crd::Device, model: Option<&crd::DeviceModel>) -> crd::Device {
    let mut d = device.clone();
    let Some(model) = model else { return d };
    for p in &mut d.spec.properties {
        let Some(mp) = model.spec.properties.iter().find(|mp| mp.name == p.name) else { continue };
        let Some(mv) = &mp.visitors else { continue };
        let own = p.visitors.config_data.take();
        p.visitors = mv.clone();
        p.visitors.config_data = merged(mv.config_data.as_ref(), own.as_ref());
    }
    d.spec.protocol.config_data =
        merged(model.spec.protocol_config_data.as_ref(), device.spec.protocol.config_data.as_ref());
    d
}

fn twin_property(t: &crd::TwinProperty) -> pb::TwinProperty {
    pb::TwinProperty {
        value: t.value.clone(),
        metadata: t.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

fn push_method(p: &crd::PushMethod, field: &str) -> Result<pb::PushMethod, ConvertError> {
    let db = p.db_method.as_ref().map(|d| pb::DbMethod {
        influxdb2: d.influxdb2.as_ref().map(|i| pb::DbMethodInfluxdb2 {
            influxdb2_client_config: i.influxdb2_client_config.as_ref().map(|c| pb::Influxdb2ClientConfig {
                url: c.url.clone(),
                org: c.org.clone(),
                bucket: c.bucket.clone(),
            }),
            influxdb2_data_config: i.influxdb2_data_config.as_ref().map(|c| pb::Influxdb2DataConfig {
                measurement: c.measurement.clone(),
                tag: c.tag.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                field_key: c.field_key.clone(),
            }),
        }),
        redis: d.redis.as_ref().map(|r| pb::DbMethodRedis {
            redis_client_config: r.redis_client_config.as_ref().map(|c| pb::RedisClientConfig {
                addr: c.addr.clone(),
                db: i32::try_from(c.db).unwrap_or_default(),
                poolsize: i32::try_from(c.poolsize).unwrap_or_default(),
                min_idle_conns: i32::try_from(c.min_idle_conns).unwrap_or_default(),
            }),
        }),
        tdengine: d.td_engine.as_ref().map(|t| pb::DbMethodTdEngine {
            td_engine_client_config: t
                .td_engine_client_config
                .as_ref()
                .map(|c| pb::TdEngineClientConfig { addr: c.addr.clone(), dbname: c.db_name.clone() }),
        }),
        mysql: d.mysql.as_ref().map(|m| pb::DbMethodMySql {
            mysql_client_config: m.mysql_client_config.as_ref().map(|c| pb::MySqlClientConfig {
                addr: c.addr.clone(),
                database: c.database.clone(),
                user_name: c.user_name.clone(),
            }),
        }),
    });
    let anomaly_detection = match &p.anomaly_detection {
        Some(a) => Some(pb::AnomalyDetection { data: any_map(&format!("{field}.anomalyDetection"), a)?.data }),
        None => None,
    };
    Ok(pb::PushMethod {
        http: p.http.as_ref().map(|h| pb::PushMethodHttp {
            hostname: h.host_name.clone(),
            port: h.port,
            requestpath: h.request_path.clone(),
            timeout: h.timeout,
        }),
        mqtt: p.mqtt.as_ref().map(|m| pb::PushMethodMqtt {
            address: m.address.clone(),
            topic: m.topic.clone(),
            qos: m.qos,
            retained: m.retained,
        }),
        db_method: db,
        otel: p.otel.as_ref().map(|o| pb::PushMethodOtel { endpoint_url: o.endpoint_url.clone() }),
        anomaly_detection,
    })
}

/// A (model-overridden) Device as DMI's `Device` (upstream `ConvertDevice`).
pub fn device(d: &crd::Device) -> Result<pb::Device, ConvertError> {
    let spec = &d.spec;
    let protocol_config = match &spec.protocol.config_data {
        Some(m) => Some(any_map("spec.protocol.configData", m)?),
        None => None,
    };
    let mut properties = Vec::with_capacity(spec.properties.len());
    for p in &spec.properties {
        let field = format!("spec.properties[{}]", p.name);
        let config_data = match &p.visitors.config_data {
            Some(m) => Some(any_map(&format!("{field}.visitors.configData"), m)?),
            None => None,
        };
        properties.push(pb::DeviceProperty {
            name: p.name.clone(),
            desired: Some(twin_property(&p.desired)),
            visitors: Some(pb::VisitorConfig { protocol_name: p.visitors.protocol_name.clone(), config_data }),
            report_cycle: p.report_cycle,
            collect_cycle: p.collect_cycle,
            report_to_cloud: p.report_to_cloud,
            push_method: match &p.push_method {
                Some(m) => Some(push_method(m, &format!("{field}.pushMethod"))?),
                None => None,
            },
        });
    }
    // The state report's cycle moved from the legacy status to `spec.stateReport`; upstream
    // still carries it in the DMI status.
    let status = match (&spec.state_report, &d.status) {
        (Some(s), _) => Some(pb::DeviceStatus {
            twins: Vec::new(),
            report_to_cloud: s.report_to_cloud,
            report_cycle: s.report_cycle,
        }),
        (None, Some(s)) => Some(pb::DeviceStatus {
            twins: Vec::new(),
            report_to_cloud: s.report_to_cloud,
            report_cycle: s.report_cycle,
        }),
        (None, None) => None,
    };
    Ok(pb::Device {
        name: d.metadata.name.clone().unwrap_or_default(),
        namespace: d.metadata.namespace.clone().unwrap_or_default(),
        spec: Some(pb::DeviceSpec {
            device_model_reference: spec.device_model_ref.as_ref().map(|r| r.name.clone()).unwrap_or_default(),
            protocol: Some(pb::ProtocolConfig {
                protocol_name: spec.protocol.protocol_name.clone(),
                config_data: protocol_config,
            }),
            properties,
            methods: spec
                .methods
                .iter()
                .map(|m| pb::DeviceMethod {
                    name: m.name.clone(),
                    description: m.description.clone(),
                    property_names: m.property_names.clone(),
                })
                .collect(),
        }),
        status,
    })
}

/// A DeviceModel as DMI's `DeviceModel` (upstream `ConvertDeviceModel`: properties without
/// their visitors, which reach mappers through the devices).
pub fn model(m: &crd::DeviceModel) -> pb::DeviceModel {
    pb::DeviceModel {
        name: m.metadata.name.clone().unwrap_or_default(),
        namespace: m.metadata.namespace.clone().unwrap_or_default(),
        spec: Some(pb::DeviceModelSpec {
            properties: m
                .spec
                .properties
                .iter()
                .map(|p| pb::ModelProperty {
                    name: p.name.clone(),
                    description: p.description.clone(),
                    r#type: p.type_.clone(),
                    access_mode: p.access_mode.clone(),
                    minimum: p.minimum.clone(),
                    maximum: p.maximum.clone(),
                    unit: p.unit.clone(),
                })
                .collect(),
            commands: Vec::new(),
        }),
    }
}

/// `{namespace}/{name}` of an object's metadata.
pub fn id(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!("{}/{}", meta.namespace.as_deref().unwrap_or_default(), meta.name.as_deref().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn device_json() -> serde_json::Value {
        json!({"apiVersion":"devices.kubeedge.io/v1beta1","kind":"Device",
            "metadata":{"name":"thermo-1","namespace":"default"},
            "spec":{"deviceModelRef":{"name":"thermometer"},"nodeName":"edge-1",
                "protocol":{"protocolName":"modbus","configData":{"ip":"127.0.0.1","port":5020}},
                "properties":[{"name":"temperature","collectCycle":1000,"reportCycle":2000,"reportToCloud":true,
                    "desired":{"value":"25","metadata":{"type":"int"}},
                    "visitors":{"protocolName":"modbus","configData":{"offset":2}},
                    "pushMethod":{"mqtt":{"address":"tcp://127.0.0.1:1883","topic":"t","qos":1}}}],
                "methods":[{"name":"set","propertyNames":["temperature"]}],
                "stateReport":{"reportCycle":5000,"reportToCloud":true}}})
    }

    fn model_json() -> serde_json::Value {
        json!({"apiVersion":"devices.kubeedge.io/v1beta1","kind":"DeviceModel",
            "metadata":{"name":"thermometer","namespace":"default"},
            "spec":{"protocol":"modbus","protocolConfigData":{"port":502,"slaveID":1},
                "properties":[{"name":"temperature","type":"INT","accessMode":"ReadWrite","unit":"C",
                    "visitors":{"protocolName":"modbus","configData":{"register":"HoldingRegister","offset":0,"limit":1}}}]}})
    }

    #[test]
    fn the_model_lies_under_the_device_and_the_device_wins() {
        let d: crd::Device = serde_json::from_value(device_json()).unwrap();
        let m: crd::DeviceModel = serde_json::from_value(model_json()).unwrap();
        let o = overridden(&d, Some(&m));
        let v = o.spec.properties[0].visitors.config_data.as_ref().unwrap();
        assert_eq!(v["register"], "HoldingRegister");
        assert_eq!(v["offset"], 2, "the device's own key wins");
        assert_eq!(v["limit"], 1);
        let p = o.spec.protocol.config_data.as_ref().unwrap();
        assert_eq!(
            (p["port"].clone(), p["slaveID"].clone(), p["ip"].clone()),
            (json!(5020), json!(1), json!("127.0.0.1"))
        );

        let pb = device(&o).unwrap();
        assert_eq!((pb.name.as_str(), pb.namespace.as_str()), ("thermo-1", "default"));
        let spec = pb.spec.unwrap();
        assert_eq!(spec.device_model_reference, "thermometer");
        assert_eq!(spec.protocol.as_ref().unwrap().protocol_name, "modbus");
        let prop = &spec.properties[0];
        assert_eq!((prop.collect_cycle, prop.report_cycle, prop.report_to_cloud), (1000, 2000, true));
        assert_eq!(prop.desired.as_ref().unwrap().value, "25");
        let data = &prop.visitors.as_ref().unwrap().config_data.as_ref().unwrap().data;
        assert_eq!(kubeedge_dmi::any::from_any(&data["register"]).unwrap(), json!("HoldingRegister"));
        assert_eq!(kubeedge_dmi::any::from_any(&data["offset"]).unwrap(), json!(2));
        assert_eq!(prop.push_method.as_ref().unwrap().mqtt.as_ref().unwrap().qos, 1);
        assert_eq!(spec.methods[0].property_names, vec!["temperature".to_owned()]);
        assert_eq!(pb.status.unwrap().report_cycle, 5000);

        let pm = model(&m);
        assert_eq!(pm.spec.unwrap().properties[0].r#type, "INT");
    }

    #[test]
    fn a_config_value_without_a_wrapper_names_its_key() {
        let mut j = device_json();
        j["spec"]["properties"][0]["visitors"]["configData"]["bad"] = json!([1, 2]);
        let d: crd::Device = serde_json::from_value(j).unwrap();
        let e = device(&d).unwrap_err().to_string();
        assert!(e.contains("spec.properties[temperature].visitors.configData.bad"), "{e}");
    }
}
