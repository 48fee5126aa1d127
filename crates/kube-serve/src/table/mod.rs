//! Server-side printing: `meta.k8s.io/v1` `Table` responses with the columns kubectl shows
//! (after `pkg/printers/internalversion/printers.go`), `Accept` header negotiation and the
//! `includeObject` parameter.
//!
//! As kube-apiserver does, every row carries all columns, including the priority-1 ("wide")
//! ones; kubectl hides those unless `-o wide`.
//!
//! Layout: `accept.rs` negotiates the response form, `printers.rs` holds the column
//! definitions per kind, `rows.rs` the cells per kind, `age.rs` kubectl's age format; this
//! file renders the `Table`.

mod accept;
mod age;
mod printers;
mod rows;

use serde_json::{Map, Value, json};

pub use self::accept::{AcceptKind, parse_accept, parse_accept_no_protobuf};
pub use self::age::{age_since, human_duration};
use self::printers::printer;
use crate::request::query_param;
use crate::status::ApiError;

/// What each row's `object` holds (`?includeObject=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// No object.
    None,
    /// A `PartialObjectMetadata` (the default).
    #[default]
    Metadata,
    /// The full object.
    Object,
}

impl IncludeObject {
    /// Parses the parameter value; absent or empty means `Metadata`, unknown values are a 400.
    pub fn parse(value: Option<&str>) -> Result<Self, ApiError> {
        match value.unwrap_or("") {
            "" | "Metadata" => Ok(IncludeObject::Metadata),
            "None" => Ok(IncludeObject::None),
            "Object" => Ok(IncludeObject::Object),
            other => Err(ApiError::bad_request(format!(
                "includeObject: Unsupported value: {other:?}: supported values: \"Metadata\", \"None\", \"Object\""
            ))),
        }
    }
}

/// Reads `includeObject` from a raw query string.
pub fn parse_include_object(query: &str) -> Result<IncludeObject, ApiError> {
    IncludeObject::parse(query_param(query, "includeObject").as_deref())
}

fn row_object(obj: &Value, include: IncludeObject) -> Option<Value> {
    match include {
        IncludeObject::None => None,
        IncludeObject::Object => Some(obj.clone()),
        IncludeObject::Metadata => Some(json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
        })),
    }
}

/// Renders objects of `resource` (plural) in `group` as a `meta.k8s.io/v1` `Table`.
/// `now_unix` (Unix seconds) is the reference for ages. The table's `metadata` is empty; see
/// [`table_from_list`] to carry a list's `resourceVersion`/`continue`. For a `v1beta1`
/// request, overwrite `apiVersion` with `meta.k8s.io/v1beta1` (the shape is identical).
pub fn to_table(resource: &str, group: &str, objects: &[Value], include_object: IncludeObject, now_unix: i64) -> Value {
    let p = printer(resource, group);
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let (cells, conditions) = (p.row)(o, now_unix);
            let mut row = Map::new();
            row.insert("cells".into(), Value::Array(cells));
            if let Some(c) = conditions {
                row.insert("conditions".into(), c);
            }
            if let Some(obj) = row_object(o, include_object) {
                row.insert("object".into(), obj);
            }
            Value::Object(row)
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": p.columns,
        "rows": rows,
    })
}

/// [`to_table`] for a list object (`{"metadata": …, "items": […]}`), carrying over the list's
/// `resourceVersion`, `continue` and `remainingItemCount`. A single object gives a one-row table.
pub fn table_from_list(
    resource: &str,
    group: &str,
    list: &Value,
    include_object: IncludeObject,
    now_unix: i64,
) -> Value {
    let Some(items) = list.get("items").and_then(Value::as_array) else {
        return to_table(resource, group, std::slice::from_ref(list), include_object, now_unix);
    };
    let mut table = to_table(resource, group, items, include_object, now_unix);
    let mut meta = Map::new();
    for key in ["resourceVersion", "continue", "remainingItemCount"] {
        if let Some(v) = list.pointer(&format!("/metadata/{key}")) {
            meta.insert(key.into(), v.clone());
        }
    }
    table["metadata"] = Value::Object(meta);
    table
}

#[cfg(test)]
mod tests;
