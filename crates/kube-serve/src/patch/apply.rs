//! Server-side apply (simplified): `managedFields` per manager, no conflict detection.

use super::*;

/// Top-level and metadata fields that identify an object rather than being "applied".
pub(super) fn unmanaged(parents: &[String], key: &str) -> bool {
    if parents.is_empty() {
        return matches!(key, "apiVersion" | "kind");
    }
    parents.len() == 1
        && parents[0] == "metadata"
        && matches!(
            key,
            "name"
                | "namespace"
                | "managedFields"
                | "resourceVersion"
                | "uid"
                | "creationTimestamp"
                | "generation"
                | "selfLink"
        )
}

/// The `fieldsV1` set (`f:`/`k:`/`v:` notation) of the fields present in `obj`.
pub fn fields_v1(obj: &Value, kind: &str) -> Value {
    match obj {
        Value::Object(m) => Value::Object(fields_of_map(m, kind, &mut Vec::new())),
        _ => json!({}),
    }
}

pub(super) fn fields_of_map(m: &Map<String, Value>, kind: &str, parents: &mut Vec<String>) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in m {
        if is_directive_key(k) || unmanaged(parents, k) || v.is_null() {
            continue;
        }
        let entry = match v {
            Value::Object(child) => {
                parents.push(k.clone());
                let f = fields_of_map(child, kind, parents);
                parents.pop();
                Value::Object(f)
            }
            Value::Array(items) => {
                let mut f = Map::new();
                match list_strategy(kind, parents, k) {
                    ListStrategy::MergeByKey(key) if items.iter().all(|e| e.get(key).is_some()) => {
                        parents.push(k.clone());
                        for item in items {
                            let (Some(kv), Value::Object(im)) = (item.get(key), item) else { continue };
                            let mut ident = Map::new();
                            ident.insert(key.to_string(), kv.clone());
                            let mut child = Map::new();
                            child.insert(".".into(), json!({}));
                            child.extend(fields_of_map(im, kind, parents));
                            f.insert(format!("k:{}", Value::Object(ident)), Value::Object(child));
                        }
                        parents.pop();
                    }
                    ListStrategy::MergePrimitive => {
                        for item in items {
                            f.insert(format!("v:{item}"), json!({}));
                        }
                    }
                    _ => {}
                }
                Value::Object(f)
            }
            _ => json!({}),
        };
        out.insert(format!("f:{k}"), entry);
    }
    out
}

/// Removes from `obj` the fields of `old` (a manager's previous field set) that are missing
/// from `new` (its current set) and not owned by any of `others` (other managers' sets at the
/// same level).
pub(super) fn prune(
    obj: &mut Value,
    old: &Map<String, Value>,
    new: Option<&Map<String, Value>>,
    others: &[&Map<String, Value>],
) {
    for (key, old_child) in old {
        let still_applied = new.is_some_and(|n| n.contains_key(key));
        let owned_elsewhere = others.iter().any(|o| o.contains_key(key));
        let new_child = new.and_then(|n| n.get(key)).and_then(Value::as_object);
        let other_children: Vec<&Map<String, Value>> =
            others.iter().filter_map(|o| o.get(key).and_then(Value::as_object)).collect();
        let old_child = old_child.as_object();
        if let Some(field) = key.strip_prefix("f:") {
            let Value::Object(m) = obj else { continue };
            if still_applied {
                if let (Some(oc), Some(child)) = (old_child, m.get_mut(field)) {
                    prune(child, oc, new_child, &other_children);
                }
            } else if !owned_elsewhere {
                m.remove(field);
            }
        } else if let Some(ident) = key.strip_prefix("k:") {
            let Value::Array(list) = obj else { continue };
            let Ok(Value::Object(ident)) = serde_json::from_str::<Value>(ident) else { continue };
            let matches = |e: &Value| ident.iter().all(|(k, v)| e.get(k) == Some(v));
            if still_applied {
                if let (Some(oc), Some(elem)) = (old_child, list.iter_mut().find(|e| matches(e))) {
                    prune(elem, oc, new_child, &other_children);
                }
            } else if !owned_elsewhere {
                list.retain(|e| !matches(e));
            }
        } else if let Some(v) = key.strip_prefix("v:") {
            let Value::Array(list) = obj else { continue };
            let Ok(v) = serde_json::from_str::<Value>(v) else { continue };
            if !still_applied && !owned_elsewhere {
                list.retain(|e| *e != v);
            }
        }
    }
}

/// Server-side apply, simplified.
///
/// * `existing == None`: the applied configuration becomes the object (directives stripped).
/// * Otherwise the applied configuration is strategically merged onto the existing object, so
///   every field it sets wins.
///
/// Either way `metadata.managedFields` gets a fresh `{manager, operation: "Apply", apiVersion,
/// time, fieldsType: "FieldsV1", fieldsV1}` entry for `field_manager` (replacing its previous
/// Apply entry; other managers' entries are kept). `managedFields` and `resourceVersion` in
/// the applied configuration are ignored (the server checks preconditions itself).
///
/// Fields this manager applied last time (its previous `fieldsV1`) but no longer applies are
/// removed from the object, unless another manager's `fieldsV1` also lists them — so dropping
/// a label, container or finalizer from the configuration deletes it, as upstream.
///
/// Simplifications versus upstream: no conflict detection between managers (every apply acts
/// as `force=true`), other managers' `fieldsV1` are not trimmed of fields this apply takes
/// over, and fields set by plain create/update/patch are not tracked (no `Update` entries).
pub fn apply(
    existing: Option<&Value>,
    applied: &Value,
    kind: &str,
    field_manager: &str,
    now: &str,
) -> Result<Value, PatchError> {
    let Value::Object(applied_map) = applied else {
        return Err(PatchError::Malformed("apply configuration must be an object".into()));
    };
    let api_version = applied_map.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if api_version.is_empty() || applied_map.get("kind").and_then(Value::as_str).is_none_or(str::is_empty) {
        return Err(PatchError::Malformed("apply configuration must set apiVersion and kind".into()));
    }
    if field_manager.is_empty() {
        return Err(PatchError::Malformed("PATCH with apply requires a fieldManager".into()));
    }
    let mut clean = applied.clone();
    if let Some(Value::Object(meta)) = clean.get_mut("metadata") {
        meta.remove("managedFields");
        meta.remove("resourceVersion");
    }
    let base = existing.cloned().unwrap_or_else(|| json!({}));
    let mut merged = strategic_merge_patch(&base, &clean, kind)?;
    let is_mine = |e: &Value| {
        e.get("manager").and_then(Value::as_str) == Some(field_manager)
            && e.get("operation").and_then(Value::as_str) == Some("Apply")
    };
    let previous: Vec<Value> =
        base.pointer("/metadata/managedFields").and_then(Value::as_array).cloned().unwrap_or_default();
    let new_fields = fields_v1(&clean, kind);
    if let (Some(old), Some(new)) = (
        previous.iter().find(|e| is_mine(e)).and_then(|e| e.get("fieldsV1")).and_then(Value::as_object),
        new_fields.as_object(),
    ) {
        let others: Vec<&Map<String, Value>> = previous
            .iter()
            .filter(|e| !is_mine(e))
            .filter_map(|e| e.get("fieldsV1").and_then(Value::as_object))
            .collect();
        prune(&mut merged, old, Some(new), &others);
    }
    let mut managed: Vec<Value> = previous.iter().filter(|e| !is_mine(e)).cloned().collect();
    managed.push(json!({
        "manager": field_manager,
        "operation": "Apply",
        "apiVersion": api_version,
        "time": now,
        "fieldsType": "FieldsV1",
        "fieldsV1": new_fields,
    }));
    let Value::Object(root) = &mut merged else {
        return Err(PatchError::Invalid("apply produced a non-object".into()));
    };
    let meta = root.entry("metadata").or_insert_with(|| json!({}));
    if let Value::Object(meta) = meta {
        meta.insert("managedFields".into(), Value::Array(managed));
    }
    Ok(merged)
}
