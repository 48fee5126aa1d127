//! How the store keeps one version of an object: its compact JSON, written once when the
//! version is committed and shared (an `Arc`) by the object map, the watch history, every
//! watcher's event and every response that returns it.
//!
//! A parsed `serde_json::Value` costs about ten times its JSON in memory (every small map is a
//! B-tree node of eleven slots, every key and string its own allocation): a 2.4 kB running pod
//! took about 27 kB. So the store holds bytes, a read or a watch line is a copy of them, and a
//! value is parsed only where one is needed: a write (the read-modify-write), a selector
//! (only the top-level fields it looks at, see [`Object::project`]), a Table, YAML or protobuf.

use std::sync::Arc;

use bytes::Bytes;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};

/// One stored version of an object, as compact JSON (keys sorted, as `serde_json` writes a
/// `Value`). Cheap to clone.
#[derive(Clone, PartialEq, Eq)]
pub struct Object(Arc<[u8]>);

impl std::fmt::Debug for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Object").field(&String::from_utf8_lossy(&self.0)).finish()
    }
}

impl Object {
    /// Encodes a value (an exact-size allocation: no spare capacity is kept).
    pub fn encode(value: &Value) -> Self {
        // Writing a `Value` cannot fail: its map keys are strings.
        Self(Arc::from(serde_json::to_vec(value).unwrap_or_default()))
    }

    /// The JSON.
    pub fn json(&self) -> &[u8] {
        &self.0
    }

    /// The JSON as a response body, without a copy.
    pub fn bytes(&self) -> Bytes {
        Bytes::from_owner(self.0.clone())
    }

    /// The JSON's length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the JSON is empty (never, for a stored object).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The whole object, parsed.
    pub fn value(&self) -> Value {
        // The bytes were written by `encode`, so they parse.
        serde_json::from_slice(&self.0).unwrap_or(Value::Null)
    }

    /// Only the top-level fields named in `keys`, parsed; the rest is scanned over without
    /// being built. A selector on labels needs `metadata` alone, not a pod's whole status.
    pub fn project(&self, keys: &[String]) -> Value {
        let mut de = serde_json::Deserializer::from_slice(&self.0);
        Projection(keys).deserialize(&mut de).unwrap_or(Value::Null)
    }
}

/// A map visitor that keeps only some keys.
struct Projection<'k>(&'k [String]);

impl<'de> DeserializeSeed<'de> for Projection<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Projection<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if self.0.contains(&key) {
                out.insert(key, map.next_value()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_and_projects() {
        let v = json!({"kind": "Pod", "metadata": {"name": "p", "labels": {"a": "b"}}, "spec": {"nodeName": "n"},
            "status": {"phase": "Running", "conditions": [{"type": "Ready"}]}});
        let o = Object::encode(&v);
        assert_eq!(o.value(), v);
        assert_eq!(o.json(), serde_json::to_vec(&v).unwrap().as_slice());
        assert_eq!(&o.bytes()[..], o.json());
        let keys = vec!["metadata".to_owned(), "spec".to_owned(), "absent".to_owned()];
        assert_eq!(o.project(&keys), json!({"metadata": v["metadata"], "spec": v["spec"]}));
        assert_eq!(o.project(&[]), json!({}));
    }
}
