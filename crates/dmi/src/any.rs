//! `configData` values: JSON scalars carried as `google.protobuf.Any`-packed wrapper messages.
//!
//! A Device's `spec.protocol.configData` and each property's `visitors.configData` are free
//! JSON maps in the CRD; on DMI each value becomes a wrapper (`StringValue`, `Int64Value`, ...)
//! packed in an `Any`. Upstream's edgecore packs strings as StringValue, booleans as BoolValue,
//! integers as Int32Value/Int64Value and floating-point numbers as **FloatValue** (32-bit);
//! upstream mappers unpack StringValue, Int32Value, Int64Value, FloatValue and BoolValue and
//! skip anything else. [`to_any`] follows that (integers as Int64Value, so none is rounded);
//! [`from_any`] accepts every scalar wrapper, and turns a FloatValue back into the decimal it
//! was written as (0.1, not 0.10000000149011612).

use std::collections::HashMap;

use prost::Message;
use prost_types::Any;
use serde_json::{Map, Number, Value};

const TYPE_URL_PREFIX: &str = "type.googleapis.com/google.protobuf.";

/// Why a value could not be packed or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Objects, arrays and null have no wrapper (upstream rejects them too).
    #[error("a {0} cannot be carried in configData (only strings, numbers and booleans)")]
    Unsupported(&'static str),
    /// The `Any` names a message that is not a scalar wrapper.
    #[error("unknown configData type {0:?}")]
    UnknownType(String),
    /// The `Any`'s bytes do not decode as the message it names.
    #[error("decoding configData value of type {type_url}")]
    Decode {
        /// The `Any`'s type URL.
        type_url: String,
        /// The protobuf error.
        #[source]
        source: prost::DecodeError,
    },
    /// A float that JSON cannot hold (NaN, infinity).
    #[error("configData value {0} is not a finite number")]
    NotFinite(f64),
}

fn pack(wrapper: &str, value: Vec<u8>) -> Any {
    Any { type_url: format!("{TYPE_URL_PREFIX}{wrapper}"), value }
}

/// Packs a JSON scalar as upstream's edgecore does (see the module docs).
pub fn to_any(value: &Value) -> Result<Any, Error> {
    Ok(match value {
        Value::String(s) => pack("StringValue", s.encode_to_vec()),
        Value::Bool(b) => pack("BoolValue", b.encode_to_vec()),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => pack("Int64Value", i.encode_to_vec()),
            // Beyond i64 (a u64): keep it as an integer rather than round it through f32.
            (None, _) if n.is_u64() => pack("UInt64Value", n.as_u64().unwrap_or_default().encode_to_vec()),
            (None, Some(f)) => pack("FloatValue", (f as f32).encode_to_vec()),
            (None, None) => return Err(Error::Unsupported("number")),
        },
        Value::Null => return Err(Error::Unsupported("null")),
        Value::Array(_) => return Err(Error::Unsupported("list")),
        Value::Object(_) => return Err(Error::Unsupported("map")),
    })
}

/// Unpacks a wrapper into a JSON scalar.
pub fn from_any(any: &Any) -> Result<Value, Error> {
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    let decode_err = |source| Error::Decode { type_url: any.type_url.clone(), source };
    let bytes = any.value.as_slice();
    Ok(match name {
        "google.protobuf.StringValue" => Value::String(String::decode(bytes).map_err(decode_err)?),
        "google.protobuf.BoolValue" => Value::Bool(bool::decode(bytes).map_err(decode_err)?),
        "google.protobuf.Int32Value" => Value::from(i32::decode(bytes).map_err(decode_err)?),
        "google.protobuf.Int64Value" => Value::from(i64::decode(bytes).map_err(decode_err)?),
        "google.protobuf.UInt32Value" => Value::from(u32::decode(bytes).map_err(decode_err)?),
        "google.protobuf.UInt64Value" => Value::from(u64::decode(bytes).map_err(decode_err)?),
        "google.protobuf.FloatValue" => {
            let f = f32::decode(bytes).map_err(decode_err)?;
            // f32 -> shortest decimal -> f64, so 0.1f32 reads back as 0.1.
            let f = f.to_string().parse::<f64>().unwrap_or(f64::from(f));
            float(f)?
        }
        "google.protobuf.DoubleValue" => float(f64::decode(bytes).map_err(decode_err)?)?,
        _ => return Err(Error::UnknownType(any.type_url.clone())),
    })
}

/// A float as JSON: integral values become integers, as Go's `json.Marshal` writes them (2, not
/// 2.0), so a visitor field typed as an integer accepts them.
fn float(f: f64) -> Result<Value, Error> {
    if !f.is_finite() {
        return Err(Error::NotFinite(f));
    }
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        #[allow(clippy::cast_possible_truncation)]
        return Ok(Value::from(f as i64));
    }
    Number::from_f64(f).map(Value::Number).ok_or(Error::NotFinite(f))
}

/// Packs every entry of a JSON map (a CRD `configData`).
pub fn map_to_any(map: &Map<String, Value>) -> Result<HashMap<String, Any>, (String, Error)> {
    map.iter().map(|(k, v)| to_any(v).map(|a| (k.clone(), a)).map_err(|e| (k.clone(), e))).collect()
}

/// Unpacks a DMI `configData` map into JSON. Upstream skips values it cannot unpack; so does
/// this, and returns them next to the map for the caller to log.
pub fn map_from_any(data: &HashMap<String, Any>) -> (Map<String, Value>, Vec<(String, Error)>) {
    let mut map = Map::new();
    let mut errors = Vec::new();
    for (k, v) in data {
        match from_any(v) {
            Ok(v) => {
                map.insert(k.clone(), v);
            }
            Err(e) => errors.push((k.clone(), e)),
        }
    }
    (map, errors)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn scalars_round_trip() {
        for v in [json!("a b"), json!(true), json!(false), json!(-7), json!(1u64 << 40), json!(0.25), json!(u64::MAX)] {
            assert_eq!(from_any(&to_any(&v).unwrap()).unwrap(), v, "{v}");
        }
    }

    #[test]
    fn floats_go_as_float_value_and_read_back_as_written() {
        let any = to_any(&json!(0.1)).unwrap();
        assert_eq!(any.type_url, "type.googleapis.com/google.protobuf.FloatValue");
        assert_eq!(any.value, vec![0x0d, 0xcd, 0xcc, 0xcc, 0x3d]);
        assert_eq!(from_any(&any).unwrap(), json!(0.1));
    }

    #[test]
    fn wire_bytes_are_the_wrappers() {
        let any = to_any(&json!("x")).unwrap();
        assert_eq!(
            (any.type_url.as_str(), any.value.as_slice()),
            ("type.googleapis.com/google.protobuf.StringValue", &[0x0a, 1, b'x'][..])
        );
        let any = to_any(&json!(300)).unwrap();
        assert_eq!(any.value, vec![0x08, 0xac, 0x02]);
        // Go's edgecore may send whole numbers as FloatValue: they read back as integers.
        let two =
            Any { type_url: "type.googleapis.com/google.protobuf.FloatValue".into(), value: 2.0f32.encode_to_vec() };
        assert_eq!(from_any(&two).unwrap(), json!(2));
    }

    #[test]
    fn non_scalars_and_unknown_types_are_errors() {
        assert!(matches!(to_any(&json!({"a": 1})), Err(Error::Unsupported("map"))));
        assert!(matches!(to_any(&Value::Null), Err(Error::Unsupported("null"))));
        let odd = Any { type_url: "type.googleapis.com/google.protobuf.Duration".into(), value: vec![] };
        assert!(matches!(from_any(&odd), Err(Error::UnknownType(_))));
        let (map, errs) =
            map_from_any(&HashMap::from([("ok".into(), to_any(&json!(1)).unwrap()), ("bad".into(), odd)]));
        assert_eq!((map.get("ok"), errs.len(), errs[0].0.as_str()), (Some(&json!(1)), 1, "bad"));
    }
}
