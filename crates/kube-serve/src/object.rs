//! Helpers for Kubernetes objects held as `serde_json::Value`: metadata getters and setters,
//! and list envelopes. Timestamps are in [`crate::time`].

use serde_json::{Map, Value, json};

/// A read-only view of an object's `metadata` (and type fields).
#[derive(Debug, Clone, Copy)]
pub struct Meta<'a> {
    obj: &'a Value,
}

/// A view of `obj`'s metadata; every getter tolerates missing or mistyped fields.
pub fn meta(obj: &Value) -> Meta<'_> {
    Meta { obj }
}

impl<'a> Meta<'a> {
    fn field(&self, name: &str) -> Option<&'a Value> {
        self.obj.get("metadata").and_then(|m| m.get(name))
    }

    fn str_field(&self, name: &str) -> Option<&'a str> {
        self.field(name).and_then(Value::as_str)
    }

    /// `kind`
    pub fn kind(&self) -> Option<&'a str> {
        self.obj.get("kind").and_then(Value::as_str)
    }

    /// `apiVersion`
    pub fn api_version(&self) -> Option<&'a str> {
        self.obj.get("apiVersion").and_then(Value::as_str)
    }

    /// `metadata.name`
    pub fn name(&self) -> Option<&'a str> {
        self.str_field("name")
    }

    /// `metadata.generateName`
    pub fn generate_name(&self) -> Option<&'a str> {
        self.str_field("generateName")
    }

    /// `metadata.namespace`
    pub fn namespace(&self) -> Option<&'a str> {
        self.str_field("namespace")
    }

    /// `metadata.resourceVersion`
    pub fn resource_version(&self) -> Option<&'a str> {
        self.str_field("resourceVersion")
    }

    /// `metadata.uid`
    pub fn uid(&self) -> Option<&'a str> {
        self.str_field("uid")
    }

    /// `metadata.labels`
    pub fn labels(&self) -> Option<&'a Map<String, Value>> {
        self.field("labels").and_then(Value::as_object)
    }

    /// `metadata.annotations`
    pub fn annotations(&self) -> Option<&'a Map<String, Value>> {
        self.field("annotations").and_then(Value::as_object)
    }

    /// `metadata.creationTimestamp`
    pub fn creation_timestamp(&self) -> Option<&'a str> {
        self.str_field("creationTimestamp")
    }

    /// `metadata.deletionTimestamp`
    pub fn deletion_timestamp(&self) -> Option<&'a str> {
        self.str_field("deletionTimestamp")
    }

    /// `metadata.deletionGracePeriodSeconds`
    pub fn deletion_grace_period_seconds(&self) -> Option<i64> {
        self.field("deletionGracePeriodSeconds").and_then(Value::as_i64)
    }

    /// `metadata.finalizers` (non-string entries skipped)
    pub fn finalizers(&self) -> Vec<&'a str> {
        self.field("finalizers").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect()
    }

    /// `metadata.generation`
    pub fn generation(&self) -> Option<i64> {
        self.field("generation").and_then(Value::as_i64)
    }

    /// `metadata.ownerReferences`
    pub fn owner_references(&self) -> &'a [Value] {
        self.field("ownerReferences").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// Mutable access to `metadata`, creating it when absent; `None` if `obj` is not an object
/// (or its `metadata` is not an object).
pub fn meta_mut(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    obj.as_object_mut()?.entry("metadata").or_insert_with(|| json!({})).as_object_mut()
}

/// Sets `metadata.<field>` to a string (no-op on non-objects).
pub fn set_meta_str(obj: &mut Value, field: &str, value: &str) {
    if let Some(m) = meta_mut(obj) {
        m.insert(field.to_string(), Value::String(value.to_string()));
    }
}

/// Sets `metadata.resourceVersion`.
pub fn set_resource_version(obj: &mut Value, rv: &str) {
    set_meta_str(obj, "resourceVersion", rv);
}

/// Splits an `apiVersion` into `(group, version)`: `apps/v1` → `("apps", "v1")`, `v1` → `("", "v1")`.
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.split_once('/').unwrap_or(("", api_version))
}

/// The `apiVersion` string for a group and version (`v1` for the core group).
pub fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() { version.to_string() } else { format!("{group}/{version}") }
}

/// A list envelope: `{"kind": kind_list, "apiVersion", "metadata": {"resourceVersion",
/// "continue"?, "remainingItemCount"?}, "items": [...]}`.
pub fn list(
    kind_list: &str,
    api_version: &str,
    resource_version: &str,
    continue_token: Option<&str>,
    remaining: Option<i64>,
    items: Vec<Value>,
) -> Value {
    let mut m = Map::new();
    m.insert("resourceVersion".into(), json!(resource_version));
    if let Some(c) = continue_token.filter(|c| !c.is_empty()) {
        m.insert("continue".into(), json!(c));
    }
    if let Some(r) = remaining {
        m.insert("remainingItemCount".into(), json!(r));
    }
    json!({"kind": kind_list, "apiVersion": api_version, "metadata": m, "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getters() {
        let o = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": "p", "namespace": "ns", "resourceVersion": "12", "uid": "u", "generation": 3,
            "labels": {"a": "b"}, "annotations": {"x": "y"}, "deletionTimestamp": "2024-01-01T00:00:00Z",
            "finalizers": ["f1", 7, "f2"], "creationTimestamp": "2023-01-01T00:00:00Z",
            "ownerReferences": [{"uid": "o"}]}});
        let m = meta(&o);
        assert_eq!(m.kind(), Some("Pod"));
        assert_eq!(m.api_version(), Some("v1"));
        assert_eq!(m.name(), Some("p"));
        assert_eq!(m.namespace(), Some("ns"));
        assert_eq!(m.resource_version(), Some("12"));
        assert_eq!(m.uid(), Some("u"));
        assert_eq!(m.generation(), Some(3));
        assert_eq!(m.labels().and_then(|l| l.get("a")), Some(&json!("b")));
        assert_eq!(m.annotations().map(Map::len), Some(1));
        assert_eq!(m.deletion_timestamp(), Some("2024-01-01T00:00:00Z"));
        assert_eq!(m.creation_timestamp(), Some("2023-01-01T00:00:00Z"));
        assert_eq!(m.finalizers(), vec!["f1", "f2"]);
        assert_eq!(m.owner_references().len(), 1);
        let empty = json!("not an object");
        assert_eq!(meta(&empty).name(), None);
        assert!(meta(&empty).finalizers().is_empty());
    }

    #[test]
    fn setters() {
        let mut o = json!({"kind": "ConfigMap"});
        set_resource_version(&mut o, "5");
        assert_eq!(o["metadata"]["resourceVersion"], "5");
        set_meta_str(&mut o, "name", "c");
        assert_eq!(meta(&o).name(), Some("c"));
        let mut s = json!(3);
        set_resource_version(&mut s, "1");
        assert_eq!(s, json!(3));
    }

    #[test]
    fn list_envelope() {
        let l = list("PodList", "v1", "9", Some("tok"), Some(4), vec![json!({"a": 1})]);
        assert_eq!(
            l,
            json!({"kind": "PodList", "apiVersion": "v1",
                   "metadata": {"resourceVersion": "9", "continue": "tok", "remainingItemCount": 4},
                   "items": [{"a": 1}]})
        );
        let l = list("NodeList", "v1", "1", None, None, vec![]);
        assert_eq!(l["metadata"], json!({"resourceVersion": "1"}));
        assert_eq!(l["items"], json!([]));
    }

    #[test]
    fn api_versions() {
        assert_eq!(split_api_version("apps/v1"), ("apps", "v1"));
        assert_eq!(split_api_version("v1"), ("", "v1"));
        assert_eq!(api_version("", "v1"), "v1");
        assert_eq!(api_version("apps", "v1"), "apps/v1");
    }
}
