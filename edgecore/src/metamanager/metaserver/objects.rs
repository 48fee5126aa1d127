//! Objects as MetaServer hands them out: `meta_v2` rows made into complete Kubernetes objects,
//! and the selector filter list and watch share.

use kubeedge_kube_serve::request::ListOptions;
use kubeedge_kube_serve::selector::{FieldSelector, LabelSelector};
use kubeedge_kube_serve::status::ApiError;
use kubeedge_metastore::MetaV2Row;
use serde_json::{Map, Value};

use crate::metamanager::Gvr;

/// The object stored in a row, completed where the cloud's message left fields out: objects
/// synced down from the cloud (node and lease inserts from v1.15 edges among them) may lack
/// `apiVersion` and `kind`, and `metadata.resourceVersion`, `name` and `namespace` are known
/// from the row's columns. `None` when the value is not a JSON object.
pub(crate) fn from_row(gvr: &Gvr, row: &MetaV2Row) -> Option<Value> {
    let mut obj: Value = serde_json::from_str(&row.value).ok()?;
    let map = obj.as_object_mut()?;
    let missing = |map: &Map<String, Value>, key: &str| map.get(key).and_then(Value::as_str).is_none_or(str::is_empty);
    if missing(map, "apiVersion") {
        map.insert("apiVersion".into(), Value::String(gvr.api_version()));
    }
    if missing(map, "kind") {
        map.insert("kind".into(), Value::String(gvr.kind.to_owned()));
    }
    let meta = map.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    if let Value::Object(meta) = meta {
        let mut fill = |key: &str, value: String| {
            if meta.get(key).and_then(Value::as_str).is_none_or(str::is_empty) && !value.is_empty() {
                meta.insert(key.into(), Value::String(value));
            }
        };
        fill("resourceVersion", row.resource_version.to_string());
        fill("name", row.name.clone());
        if gvr.namespaced {
            fill("namespace", row.namespace.clone());
        }
    }
    Some(obj)
}

/// A request's label and field selectors.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    /// The selectors of a list or watch; a malformed one is a 400.
    pub(crate) fn new(opts: &ListOptions) -> Result<Self, ApiError> {
        let (labels, fields) = opts.selectors()?;
        Ok(Self { labels, fields })
    }

    /// Whether there is any selector (so an object can start or stop matching).
    pub(crate) fn is_selective(&self) -> bool {
        !self.labels.is_empty() || !self.fields.is_empty()
    }

    /// Whether the object satisfies both selectors.
    pub(crate) fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj.pointer("/metadata/labels").and_then(Value::as_object)) && self.fields.matches(obj)
    }
}

/// Where a paged list continues: after `key`, reporting the first page's version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ContinueToken {
    /// The last `meta_v2` key returned.
    pub(crate) key: String,
    /// The first page's resourceVersion.
    pub(crate) rv: u64,
}

impl ContinueToken {
    /// The opaque form handed to clients.
    pub(crate) fn encode(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Reads a token; anything else is a 400.
    pub(crate) fn decode(token: &str) -> Result<Self, ApiError> {
        use base64::Engine;
        let bad = || ApiError::bad_request("invalid continue token");
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
        serde_json::from_slice(&raw).map_err(|_| bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metamanager::gvr_of;
    use serde_json::json;

    fn row(value: &str) -> MetaV2Row {
        MetaV2Row {
            key: "/core/v1/pods/ns/p".into(),
            gvr: "/v1, Resource=pods".into(),
            namespace: "ns".into(),
            name: "p".into(),
            resource_version: 7,
            value: value.into(),
        }
    }

    #[test]
    fn rows_become_complete_objects() {
        let pods = gvr_of("pod").expect("pods");
        let o = from_row(&pods, &row(r#"{"spec":{}}"#)).expect("object");
        assert_eq!(o["apiVersion"], "v1");
        assert_eq!(o["kind"], "Pod");
        assert_eq!(o["metadata"], json!({"resourceVersion": "7", "name": "p", "namespace": "ns"}));
        let o = from_row(&pods, &row(r#"{"kind":"Pod","metadata":{"name":"q","resourceVersion":"9"}}"#)).expect("o");
        assert_eq!(o["metadata"]["name"], "q", "the object's own fields win");
        assert_eq!(o["metadata"]["resourceVersion"], "9");
        assert!(from_row(&pods, &row("[1]")).is_none());
        assert!(from_row(&pods, &row("not json")).is_none());
        let nodes = gvr_of("node").expect("nodes");
        let mut r = row(r#"{"metadata":null}"#);
        r.namespace = String::new();
        let o = from_row(&nodes, &r).expect("node");
        assert_eq!(o["kind"], "Node");
        assert!(o["metadata"].get("namespace").is_none());
    }

    #[test]
    fn filters_and_tokens() {
        let opts = ListOptions {
            label_selector: Some("app=x".into()),
            field_selector: Some("metadata.namespace=a".into()),
            ..Default::default()
        };
        let f = Filter::new(&opts).expect("valid");
        assert!(f.is_selective());
        assert!(f.matches(&json!({"metadata": {"namespace": "a", "labels": {"app": "x"}}})));
        assert!(!f.matches(&json!({"metadata": {"namespace": "b", "labels": {"app": "x"}}})));
        assert!(!Filter::new(&ListOptions::default()).expect("empty").is_selective());
        let bad = ListOptions { label_selector: Some("a in (".into()), ..Default::default() };
        assert_eq!(Filter::new(&bad).map(|_| ()).expect_err("bad").code, 400);
        let t = ContinueToken { key: "/core/v1/pods/a/b".into(), rv: 5 };
        assert_eq!(ContinueToken::decode(&t.encode()).expect("round trip"), t);
        assert_eq!(ContinueToken::decode("!!").map(|_| ()).expect_err("bad").code, 400);
    }
}
