//! The four PATCH flavours kube-apiserver accepts: JSON Patch (RFC 6902), JSON Merge Patch
//! (RFC 7386), strategic merge patch, and a simplified server-side apply.
//!
//! Strategic merge needs to know each list's patch strategy, which upstream reads from Go
//! struct tags. Here a built-in table keyed by **field name, with a little context** (the
//! enclosing field and the object kind) stands in for it; see [`list_strategy`]. Lists the
//! table does not know, or whose elements lack the merge key, are replaced, as upstream does
//! for lists without a `patchStrategy`.

use serde_json::{Map, Value, json};

use crate::status::ApiError;

/// Why a patch could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The patch document itself is malformed (maps to 400 BadRequest).
    #[error("{0}")]
    Malformed(String),
    /// A JSON Pointer is syntactically invalid (400).
    #[error("invalid JSON pointer {0:?}")]
    InvalidPointer(String),
    /// A JSON Patch operation addressed a path that does not exist (422).
    #[error("{op} operation does not apply: doc is missing path: {path:?}")]
    PathNotFound {
        /// The operation name.
        op: String,
        /// The pointer.
        path: String,
    },
    /// A JSON Patch `test` operation failed (422).
    #[error("testing value {path:?} failed: test failed")]
    TestFailed {
        /// The pointer that was tested.
        path: String,
    },
    /// The patch is well-formed but cannot be applied to this object (422).
    #[error("{0}")]
    Invalid(String),
}

impl PatchError {
    /// The API error kube-apiserver would answer with: malformed patches are 400 BadRequest,
    /// patches that fail to apply 422 Invalid.
    pub fn to_api_error(&self) -> ApiError {
        match self {
            PatchError::Malformed(_) | PatchError::InvalidPointer(_) => ApiError::bad_request(self.to_string()),
            _ => ApiError::new(422, "Invalid", self.to_string()),
        }
    }
}

impl From<PatchError> for ApiError {
    fn from(e: PatchError) -> Self {
        e.to_api_error()
    }
}

/// A PATCH request's content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PatchType {
    /// `application/json-patch+json` (RFC 6902)
    Json,
    /// `application/merge-patch+json` (RFC 7386)
    Merge,
    /// `application/strategic-merge-patch+json`
    StrategicMerge,
    /// `application/apply-patch+yaml` (or `+json`): server-side apply
    Apply,
}

impl PatchType {
    /// Recognises a `Content-Type` header value (parameters such as `charset` are ignored).
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let media = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match media.as_str() {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::StrategicMerge),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(PatchType::Apply),
            _ => None,
        }
    }

    /// The canonical content type.
    pub fn content_type(self) -> &'static str {
        match self {
            PatchType::Json => "application/json-patch+json",
            PatchType::Merge => "application/merge-patch+json",
            PatchType::StrategicMerge => "application/strategic-merge-patch+json",
            PatchType::Apply => "application/apply-patch+yaml",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// RFC 6902 JSON Patch
// ---------------------------------------------------------------------------------------------

/// Splits a JSON Pointer (RFC 6901) into unescaped reference tokens.
pub fn parse_pointer(p: &str) -> Result<Vec<String>, PatchError> {
    if p.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = p.strip_prefix('/') else {
        return Err(PatchError::InvalidPointer(p.to_string()));
    };
    rest.split('/')
        .map(|tok| {
            let mut out = String::with_capacity(tok.len());
            let mut chars = tok.chars();
            while let Some(c) = chars.next() {
                if c == '~' {
                    match chars.next() {
                        Some('0') => out.push('~'),
                        Some('1') => out.push('/'),
                        _ => return Err(PatchError::InvalidPointer(p.to_string())),
                    }
                } else {
                    out.push(c);
                }
            }
            Ok(out)
        })
        .collect()
}

/// An array index token: digits only, no leading zeros.
fn array_index(tok: &str) -> Option<usize> {
    if tok.is_empty() || (tok.len() > 1 && tok.starts_with('0')) || !tok.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    tok.parse().ok()
}

fn pointer_get<'a>(doc: &'a Value, toks: &[String]) -> Option<&'a Value> {
    toks.iter().try_fold(doc, |cur, tok| match cur {
        Value::Object(m) => m.get(tok),
        Value::Array(a) => array_index(tok).and_then(|i| a.get(i)),
        _ => None,
    })
}

fn pointer_get_mut<'a>(doc: &'a mut Value, toks: &[String]) -> Option<&'a mut Value> {
    toks.iter().try_fold(doc, |cur, tok| match cur {
        Value::Object(m) => m.get_mut(tok),
        Value::Array(a) => array_index(tok).and_then(move |i| a.get_mut(i)),
        _ => None,
    })
}

fn json_add(doc: &mut Value, toks: &[String], value: Value, op: &str, path: &str) -> Result<(), PatchError> {
    let missing = || PatchError::PathNotFound { op: op.to_string(), path: path.to_string() };
    let Some((last, parent_toks)) = toks.split_last() else {
        *doc = value;
        return Ok(());
    };
    match pointer_get_mut(doc, parent_toks).ok_or_else(missing)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(value);
                return Ok(());
            }
            match array_index(last) {
                Some(i) if i <= a.len() => {
                    a.insert(i, value);
                    Ok(())
                }
                _ => Err(PatchError::Invalid(format!("{op} operation: index out of bounds in {path:?}"))),
            }
        }
        _ => Err(missing()),
    }
}

fn json_remove(doc: &mut Value, toks: &[String], op: &str, path: &str) -> Result<Value, PatchError> {
    let missing = || PatchError::PathNotFound { op: op.to_string(), path: path.to_string() };
    let Some((last, parent_toks)) = toks.split_last() else {
        return Err(PatchError::Invalid(format!("{op} operation: cannot remove the whole document")));
    };
    match pointer_get_mut(doc, parent_toks).ok_or_else(missing)? {
        Value::Object(m) => m.remove(last).ok_or_else(missing),
        Value::Array(a) => match array_index(last) {
            Some(i) if i < a.len() => Ok(a.remove(i)),
            _ => Err(missing()),
        },
        _ => Err(missing()),
    }
}

/// JSON value equality with numbers compared numerically (`1 == 1.0`), as RFC 6902 `test` wants.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_equal(p, q)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

/// Applies an RFC 6902 JSON Patch (`add`, `remove`, `replace`, `move`, `copy`, `test`).
/// The target is not modified; the patched copy is returned. Any failing operation fails
/// the whole patch.
pub fn json_patch(target: &Value, patch: &Value) -> Result<Value, PatchError> {
    let Value::Array(ops) = patch else {
        return Err(PatchError::Malformed("json patch must be a JSON array of operations".into()));
    };
    let mut doc = target.clone();
    for (n, op) in ops.iter().enumerate() {
        let Value::Object(op) = op else {
            return Err(PatchError::Malformed(format!("json patch operation {n} is not an object")));
        };
        let str_member = |name: &str| -> Result<&str, PatchError> {
            op.get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| PatchError::Malformed(format!("json patch operation {n} is missing {name:?}")))
        };
        let value_member = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| PatchError::Malformed(format!("json patch operation {n} is missing \"value\"")))
        };
        let name = str_member("op")?;
        let path = str_member("path")?;
        let toks = parse_pointer(path)?;
        match name {
            "add" => json_add(&mut doc, &toks, value_member()?, name, path)?,
            "remove" => {
                json_remove(&mut doc, &toks, name, path)?;
            }
            "replace" => {
                let value = value_member()?;
                let slot = pointer_get_mut(&mut doc, &toks)
                    .ok_or_else(|| PatchError::PathNotFound { op: name.into(), path: path.into() })?;
                *slot = value;
            }
            "move" => {
                let from = str_member("from")?;
                let from_toks = parse_pointer(from)?;
                if from_toks == toks {
                    continue;
                }
                if toks.len() > from_toks.len() && toks.starts_with(&from_toks) {
                    return Err(PatchError::Invalid(format!("move operation: {from:?} is a prefix of {path:?}")));
                }
                let v = json_remove(&mut doc, &from_toks, name, from)?;
                json_add(&mut doc, &toks, v, name, path)?;
            }
            "copy" => {
                let from = str_member("from")?;
                let v = pointer_get(&doc, &parse_pointer(from)?)
                    .cloned()
                    .ok_or_else(|| PatchError::PathNotFound { op: name.into(), path: from.into() })?;
                json_add(&mut doc, &toks, v, name, path)?;
            }
            "test" => {
                let want = value_member()?;
                match pointer_get(&doc, &toks) {
                    Some(have) if json_equal(have, &want) => {}
                    _ => return Err(PatchError::TestFailed { path: path.to_string() }),
                }
            }
            other => return Err(PatchError::Malformed(format!("unexpected json patch operation {other:?}"))),
        }
    }
    Ok(doc)
}

// ---------------------------------------------------------------------------------------------
// RFC 7386 JSON Merge Patch
// ---------------------------------------------------------------------------------------------

/// Applies an RFC 7386 JSON Merge Patch: objects merge recursively, `null` deletes, anything
/// else (including arrays) replaces.
pub fn merge_patch(target: &Value, patch: &Value) -> Value {
    let Value::Object(p) = patch else {
        return patch.clone();
    };
    let mut out = match target {
        Value::Object(t) => t.clone(),
        _ => Map::new(),
    };
    for (k, v) in p {
        if v.is_null() {
            out.remove(k);
        } else {
            let merged = merge_patch(out.get(k).unwrap_or(&Value::Null), v);
            out.insert(k.clone(), merged);
        }
    }
    Value::Object(out)
}

// ---------------------------------------------------------------------------------------------
// Strategic merge patch
// ---------------------------------------------------------------------------------------------

/// How a list field is patched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStrategy {
    /// The patch list replaces the original (the default for lists without a strategy).
    Replace,
    /// Elements are objects merged by the value of this key.
    MergeByKey(&'static str),
    /// A list of primitives merged as a set (`metadata.finalizers`).
    MergePrimitive,
}

const CONTAINER_LISTS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];

/// The patch strategy of list field `field` in object kind `kind`, where `parents` are the
/// field names from the object root down to the map holding `field` (list fields appear once
/// for their elements: a container's `ports` has parents `["spec", "containers"]`).
///
/// The table mirrors the `patchStrategy`/`patchMergeKey` tags of `k8s.io/api/core/v1` and
/// `metav1.ObjectMeta`. Note that, as upstream, `tolerations`, `readinessGates`, node
/// `taints`, `containerStatuses` and node `images` have no strategy and are replaced.
pub fn list_strategy(kind: &str, parents: &[String], field: &str) -> ListStrategy {
    let parent = parents.last().map(String::as_str).unwrap_or("");
    let top = parents.len() == 1;
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => ListStrategy::MergeByKey("name"),
        "hostAliases" | "podIPs" | "hostIPs" => ListStrategy::MergeByKey("ip"),
        "topologySpreadConstraints" => ListStrategy::MergeByKey("topologyKey"),
        "volumeMounts" => ListStrategy::MergeByKey("mountPath"),
        "volumeDevices" => ListStrategy::MergeByKey("devicePath"),
        "env" if CONTAINER_LISTS.contains(&parent) => ListStrategy::MergeByKey("name"),
        "ports" if CONTAINER_LISTS.contains(&parent) => ListStrategy::MergeByKey("containerPort"),
        "ports" if kind == "Service" && top && parent == "spec" => ListStrategy::MergeByKey("port"),
        "conditions" => ListStrategy::MergeByKey("type"),
        "addresses" if kind == "Node" && top && parent == "status" => ListStrategy::MergeByKey("type"),
        "ownerReferences" if parent == "metadata" => ListStrategy::MergeByKey("uid"),
        "finalizers" if parent == "metadata" => ListStrategy::MergePrimitive,
        "secrets" if kind == "ServiceAccount" && parents.is_empty() => ListStrategy::MergeByKey("name"),
        _ => ListStrategy::Replace,
    }
}

const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const RETAIN_KEYS: &str = "$retainKeys";
const PATCH_DIRECTIVE: &str = "$patch";

fn is_directive_key(k: &str) -> bool {
    k == PATCH_DIRECTIVE
        || k == RETAIN_KEYS
        || k.starts_with(DELETE_FROM_PRIMITIVE_LIST)
        || k.starts_with(SET_ELEMENT_ORDER)
}

struct Smp<'a> {
    kind: &'a str,
}

impl Smp<'_> {
    /// Merges a patch map into an original map; `None` means the map is deleted (`$patch: delete`).
    fn map(
        &self,
        orig: &Map<String, Value>,
        patch: &Map<String, Value>,
        path: &mut Vec<String>,
    ) -> Result<Option<Map<String, Value>>, PatchError> {
        match patch.get(PATCH_DIRECTIVE) {
            None => {}
            Some(Value::String(d)) if d == "merge" => {}
            Some(Value::String(d)) if d == "delete" => return Ok(None),
            Some(Value::String(d)) if d == "replace" => {
                let mut replaced = patch.clone();
                replaced.remove(PATCH_DIRECTIVE);
                return self.map(&Map::new(), &replaced, path);
            }
            Some(other) => return Err(PatchError::Invalid(format!("unknown patch directive {other}"))),
        }
        let mut out = orig.clone();
        if let Some(retain) = patch.get(RETAIN_KEYS) {
            let Value::Array(keys) = retain else {
                return Err(PatchError::Invalid("$retainKeys must be a list of strings".into()));
            };
            out.retain(|k, _| keys.iter().any(|r| r.as_str() == Some(k)));
        }
        for (k, v) in patch {
            if let Some(field) = k.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
                let Value::Array(doomed) = v else {
                    return Err(PatchError::Invalid(format!("{k} must be a list")));
                };
                if let Some(Value::Array(list)) = out.get_mut(field) {
                    list.retain(|e| !doomed.contains(e));
                }
            }
        }
        let mut orders = Vec::new();
        for (k, v) in patch {
            if let Some(field) = k.strip_prefix(SET_ELEMENT_ORDER) {
                orders.push((field, v));
                continue;
            }
            if is_directive_key(k) {
                continue;
            }
            if v.is_null() {
                out.remove(k);
                continue;
            }
            match self.value(out.get(k), v, k, path)? {
                Some(merged) => {
                    out.insert(k.clone(), merged);
                }
                None => {
                    out.remove(k);
                }
            }
        }
        for (field, order) in orders {
            let Value::Array(order) = order else {
                return Err(PatchError::Invalid(format!("{SET_ELEMENT_ORDER}{field} must be a list")));
            };
            let strategy = list_strategy(self.kind, path, field);
            if let Some(Value::Array(list)) = out.get_mut(field) {
                reorder(list, order, strategy);
            }
        }
        Ok(Some(out))
    }

    /// Merges one field's patch value into its original value (if any).
    fn value(
        &self,
        orig: Option<&Value>,
        patch: &Value,
        field: &str,
        path: &mut Vec<String>,
    ) -> Result<Option<Value>, PatchError> {
        match patch {
            Value::Object(pm) => {
                path.push(field.to_string());
                let empty = Map::new();
                let om = match orig {
                    Some(Value::Object(om)) => om,
                    _ => &empty,
                };
                let r = self.map(om, pm, path);
                path.pop();
                Ok(r?.map(Value::Object))
            }
            Value::Array(pl) => {
                let empty = Vec::new();
                let ol = match orig {
                    Some(Value::Array(ol)) => ol,
                    _ => &empty,
                };
                let strategy = list_strategy(self.kind, path, field);
                path.push(field.to_string());
                let r = self.list(ol, pl, strategy, path);
                path.pop();
                r.map(|l| Some(Value::Array(l)))
            }
            other => Ok(Some(other.clone())),
        }
    }

    /// Strips directives from a value that has no original counterpart.
    fn clean(&self, v: &Value, path: &mut Vec<String>) -> Result<Option<Value>, PatchError> {
        match v {
            Value::Object(m) => Ok(self.map(&Map::new(), m, path)?.map(Value::Object)),
            _ => Ok(Some(v.clone())),
        }
    }

    fn list(
        &self,
        orig: &[Value],
        patch: &[Value],
        strategy: ListStrategy,
        path: &mut Vec<String>,
    ) -> Result<Vec<Value>, PatchError> {
        let directive = |e: &Value| e.get(PATCH_DIRECTIVE).and_then(Value::as_str).map(str::to_string);
        let is_pure_replace =
            |e: &Value| e.as_object().is_some_and(|m| m.len() == 1) && directive(e).as_deref() == Some("replace");
        let key = match strategy {
            ListStrategy::MergeByKey(key) => Some(key),
            _ => None,
        };
        let keyed = key.is_some_and(|key| patch.iter().all(|e| e.get(key).is_some() || is_pure_replace(e)));
        if patch.iter().any(is_pure_replace) || strategy == ListStrategy::Replace || (key.is_some() && !keyed) {
            let mut out = Vec::new();
            for e in patch.iter().filter(|e| !is_pure_replace(e)) {
                if directive(e).as_deref() == Some("delete") {
                    continue;
                }
                out.extend(self.clean(e, path)?);
            }
            return Ok(out);
        }
        let mut out = orig.to_vec();
        match key {
            None => {
                for e in patch {
                    if !out.contains(e) {
                        out.push(e.clone());
                    }
                }
            }
            Some(key) => {
                for pe in patch {
                    let kv = pe.get(key);
                    let pos = out.iter().position(|e| e.get(key) == kv);
                    match (directive(pe).as_deref(), pos) {
                        (Some("delete"), _) => out.retain(|e| e.get(key) != kv),
                        (Some("replace"), Some(i)) => {
                            let mut m = pe.as_object().cloned().unwrap_or_default();
                            m.remove(PATCH_DIRECTIVE);
                            if let Some(v) = self.clean(&Value::Object(m), path)? {
                                out[i] = v;
                            }
                        }
                        (_, Some(i)) => match (&out[i], pe) {
                            (Value::Object(om), Value::Object(pm)) => match self.map(om, pm, path)? {
                                Some(m) => out[i] = Value::Object(m),
                                None => {
                                    out.remove(i);
                                }
                            },
                            _ => out[i] = pe.clone(),
                        },
                        (_, None) => out.extend(self.clean(pe, path)?),
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Reorders `list` after `$setElementOrder`: listed elements first, in that order, then the rest
/// in their current relative order (upstream interleaves server-only elements more cleverly).
fn reorder(list: &mut Vec<Value>, order: &[Value], strategy: ListStrategy) {
    let mut rest = std::mem::take(list);
    for o in order {
        let pos = match strategy {
            ListStrategy::MergeByKey(key) => rest.iter().position(|e| o.get(key).is_some() && e.get(key) == o.get(key)),
            _ => rest.iter().position(|e| e == o),
        };
        if let Some(i) = pos {
            list.push(rest.remove(i));
        }
    }
    list.append(&mut rest);
}

/// Applies a strategic merge patch to an object of kind `kind` (e.g. `Pod`): like a JSON merge
/// patch, except that lists with a merge strategy (see [`list_strategy`]) are merged, and the
/// directives `$patch` (`merge`/`replace`/`delete`), `$deleteFromPrimitiveList/<field>`,
/// `$setElementOrder/<field>` and `$retainKeys` are honoured and never stored.
pub fn strategic_merge_patch(target: &Value, patch: &Value, kind: &str) -> Result<Value, PatchError> {
    let Value::Object(pm) = patch else {
        return Err(PatchError::Malformed("strategic merge patch must be a JSON object".into()));
    };
    let empty = Map::new();
    let tm = match target {
        Value::Object(tm) => tm,
        _ => &empty,
    };
    let merged = Smp { kind }.map(tm, pm, &mut Vec::new())?;
    Ok(Value::Object(merged.unwrap_or_default()))
}

// ---------------------------------------------------------------------------------------------
// Server-side apply (simplified)
// ---------------------------------------------------------------------------------------------

/// Top-level and metadata fields that identify an object rather than being "applied".
fn unmanaged(parents: &[String], key: &str) -> bool {
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

fn fields_of_map(m: &Map<String, Value>, kind: &str, parents: &mut Vec<String>) -> Map<String, Value> {
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
fn prune(obj: &mut Value, old: &Map<String, Value>, new: Option<&Map<String, Value>>, others: &[&Map<String, Value>]) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn jp(target: Value, patch: Value) -> Result<Value, PatchError> {
        json_patch(&target, &patch)
    }

    #[test]
    fn content_types() {
        assert_eq!(PatchType::from_content_type("application/json-patch+json"), Some(PatchType::Json));
        assert_eq!(PatchType::from_content_type("application/merge-patch+json; charset=utf-8"), Some(PatchType::Merge));
        assert_eq!(
            PatchType::from_content_type("application/strategic-merge-patch+json"),
            Some(PatchType::StrategicMerge)
        );
        assert_eq!(PatchType::from_content_type("application/apply-patch+yaml"), Some(PatchType::Apply));
        assert_eq!(PatchType::from_content_type("application/apply-patch+json"), Some(PatchType::Apply));
        assert_eq!(PatchType::from_content_type("application/json"), None);
        assert_eq!(PatchType::Merge.content_type(), "application/merge-patch+json");
    }

    #[test]
    fn pointers() {
        assert_eq!(parse_pointer("").expect("root"), Vec::<String>::new());
        assert_eq!(parse_pointer("/a~1b/c~0d/").expect("p"), vec!["a/b", "c~d", ""]);
        assert!(matches!(parse_pointer("a"), Err(PatchError::InvalidPointer(_))));
        assert!(matches!(parse_pointer("/a~2"), Err(PatchError::InvalidPointer(_))));
        assert!(matches!(parse_pointer("/a~"), Err(PatchError::InvalidPointer(_))));
    }

    #[test]
    fn json_patch_add_remove_replace() {
        let doc = json!({"metadata": {"labels": {"a": "1"}}, "list": [1, 2]});
        let out = jp(
            doc.clone(),
            json!([
                {"op": "add", "path": "/metadata/labels/b", "value": "2"},
                {"op": "add", "path": "/list/-", "value": 3},
                {"op": "add", "path": "/list/0", "value": 0},
                {"op": "remove", "path": "/metadata/labels/a"},
                {"op": "replace", "path": "/list/1", "value": 10},
                {"op": "add", "path": "/metadata/annotations", "value": {"x~/y": "z"}},
            ]),
        )
        .expect("applies");
        assert_eq!(
            out,
            json!({"metadata": {"labels": {"b": "2"}, "annotations": {"x~/y": "z"}}, "list": [0, 10, 2, 3]})
        );
        assert_eq!(doc["list"], json!([1, 2]), "target is untouched");
        let out = jp(
            json!({"a": {"x/y": 1, "m~n": 2}}),
            json!([{"op": "remove", "path": "/a/x~1y"},
            {"op": "replace", "path": "/a/m~0n", "value": 3}]),
        )
        .expect("escaped");
        assert_eq!(out, json!({"a": {"m~n": 3}}));
        assert_eq!(
            jp(json!({"a": 1}), json!([{"op": "replace", "path": "", "value": [1]}])).expect("root"),
            json!([1])
        );
    }

    #[test]
    fn json_patch_move_copy_test() {
        let out = jp(
            json!({"a": {"b": 1}, "c": [1, 2]}),
            json!([
                {"op": "move", "from": "/a/b", "path": "/d"},
                {"op": "copy", "from": "/c", "path": "/e"},
                {"op": "test", "path": "/d", "value": 1.0},
                {"op": "test", "path": "/e", "value": [1, 2]},
                {"op": "move", "from": "/c/0", "path": "/c/-"},
            ]),
        )
        .expect("applies");
        assert_eq!(out, json!({"a": {}, "d": 1, "c": [2, 1], "e": [1, 2]}));
    }

    #[test]
    fn json_patch_errors() {
        let doc = json!({"a": {"b": [1]}});
        assert!(matches!(
            jp(doc.clone(), json!([{"op": "test", "path": "/a/b/0", "value": 2}])),
            Err(PatchError::TestFailed { .. })
        ));
        assert!(matches!(
            jp(doc.clone(), json!([{"op": "remove", "path": "/a/nope"}])),
            Err(PatchError::PathNotFound { .. })
        ));
        assert!(matches!(
            jp(doc.clone(), json!([{"op": "replace", "path": "/x", "value": 1}])),
            Err(PatchError::PathNotFound { .. })
        ));
        assert!(matches!(
            jp(doc.clone(), json!([{"op": "add", "path": "/x/y", "value": 1}])),
            Err(PatchError::PathNotFound { .. })
        ));
        assert!(jp(doc.clone(), json!([{"op": "add", "path": "/a/b/5", "value": 1}])).is_err());
        assert!(jp(doc.clone(), json!([{"op": "add", "path": "/a/b/01", "value": 1}])).is_err());
        assert!(matches!(jp(doc.clone(), json!([{"op": "add", "path": "/a"}])), Err(PatchError::Malformed(_))));
        assert!(matches!(
            jp(doc.clone(), json!([{"op": "add", "path": "a", "value": 1}])),
            Err(PatchError::InvalidPointer(_))
        ));
        assert!(matches!(jp(doc.clone(), json!([{"op": "frob", "path": "/a"}])), Err(PatchError::Malformed(_))));
        assert!(matches!(jp(doc.clone(), json!({"op": "add"})), Err(PatchError::Malformed(_))));
        assert!(jp(doc.clone(), json!([{"op": "move", "from": "/a", "path": "/a/b/c"}])).is_err());
        assert_eq!(
            jp(doc.clone(), json!([{"op": "test", "path": "/a/b/0", "value": 1}, {"op": "remove", "path": "/q"}]))
                .map_err(|e| e.to_api_error().code),
            Err(422)
        );
        assert_eq!(PatchError::Malformed("x".into()).to_api_error().code, 400);
        let api: ApiError = PatchError::TestFailed { path: "/a".into() }.into();
        assert_eq!(api.reason, "Invalid");
    }

    #[test]
    fn merge_patch_rfc7386_appendix() {
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "b"}), json!({"b": "c"}), json!({"a": "b", "b": "c"})),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (json!({"a": "b", "b": "c"}), json!({"a": null}), json!({"b": "c"})),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (json!({"a": {"b": "c"}}), json!({"a": {"b": "d", "c": null}}), json!({"a": {"b": "d"}})),
            (json!({"a": [{"b": "c"}]}), json!({"a": [1]}), json!({"a": [1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a": "b"}), json!(["c"]), json!(["c"])),
            (json!({"a": "foo"}), json!(null), json!(null)),
            (json!({"a": "foo"}), json!("bar"), json!("bar")),
            (json!({"e": null}), json!({"a": 1}), json!({"e": null, "a": 1})),
            (json!([1, 2]), json!({"a": "b", "c": null}), json!({"a": "b"})),
            (json!({}), json!({"a": {"bb": {"ccc": null}}}), json!({"a": {"bb": {}}})),
        ];
        for (target, patch, want) in cases {
            assert_eq!(merge_patch(&target, &patch), want, "{target} + {patch}");
        }
    }

    fn pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"app": "web", "tier": "fe"}, "finalizers": ["a", "b"],
                         "ownerReferences": [{"uid": "u1", "name": "rs"}]},
            "spec": {
                "containers": [
                    {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                     "ports": [{"containerPort": 80}], "args": ["x", "y"]},
                    {"name": "sidecar", "image": "side:1"}
                ],
                "tolerations": [{"key": "t1", "operator": "Exists"}]
            },
            "status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "Initialized", "status": "True"}]}
        })
    }

    fn smp(patch: Value) -> Value {
        strategic_merge_patch(&pod(), &patch, "Pod").expect("patch applies")
    }

    #[test]
    fn smp_merges_containers_and_env_by_name() {
        let out = smp(json!({"spec": {"containers": [
            {"name": "app", "image": "app:2", "env": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}]},
            {"name": "new", "image": "new:1"}
        ]}}));
        let cs = out["spec"]["containers"].as_array().expect("list");
        assert_eq!(cs.len(), 3);
        assert_eq!(cs[0]["image"], "app:2");
        assert_eq!(cs[0]["ports"], json!([{"containerPort": 80}]), "untouched fields survive");
        assert_eq!(
            cs[0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "20"}, {"name": "C", "value": "3"}])
        );
        assert_eq!(cs[1]["name"], "sidecar");
        assert_eq!(cs[2]["name"], "new");
    }

    #[test]
    fn smp_delete_and_replace_directives() {
        let out = smp(json!({"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}));
        assert_eq!(out["spec"]["containers"].as_array().map(Vec::len), Some(1));
        assert_eq!(out["spec"]["containers"][0]["name"], "app");

        let out = smp(json!({"spec": {"containers": [{"name": "only", "image": "o"}, {"$patch": "replace"}]}}));
        assert_eq!(out["spec"]["containers"], json!([{"name": "only", "image": "o"}]));

        let out = smp(json!({"metadata": {"labels": {"$patch": "replace", "new": "1"}}}));
        assert_eq!(out["metadata"]["labels"], json!({"new": "1"}));

        let out = smp(json!({"status": {"$patch": "delete"}}));
        assert!(out.get("status").is_none());

        let out = smp(json!({"spec": {"containers": [{"name": "app", "env": [{"name": "A", "$patch": "delete"}]}]}}));
        assert_eq!(out["spec"]["containers"][0]["env"], json!([{"name": "B", "value": "2"}]));
    }

    #[test]
    fn smp_conditions_by_type_and_lists_without_keys() {
        let out = smp(json!({"status": {"conditions": [{"type": "Ready", "status": "True"},
                                                       {"type": "PodScheduled", "status": "True"}]}}));
        assert_eq!(
            out["status"]["conditions"],
            json!([{"type": "Ready", "status": "True"}, {"type": "Initialized", "status": "True"},
                   {"type": "PodScheduled", "status": "True"}])
        );
        let out = smp(json!({"spec": {"containers": [{"name": "app", "args": ["z"]}],
                                      "tolerations": [{"key": "t2", "operator": "Exists"}]}}));
        assert_eq!(out["spec"]["containers"][0]["args"], json!(["z"]), "primitive lists are replaced");
        assert_eq!(out["spec"]["tolerations"], json!([{"key": "t2", "operator": "Exists"}]), "tolerations replace");
    }

    #[test]
    fn smp_finalizers_owner_refs_and_nulls() {
        let out = smp(json!({"metadata": {"finalizers": ["b", "c"], "labels": {"tier": null},
                                          "ownerReferences": [{"uid": "u2", "name": "other"}]}}));
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b", "c"]));
        assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(out["metadata"]["ownerReferences"].as_array().map(Vec::len), Some(2));

        let out = smp(json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}));
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));

        let out = smp(json!({"spec": null}));
        assert!(out.get("spec").is_none());
    }

    #[test]
    fn smp_set_element_order_and_retain_keys() {
        let out = smp(json!({"spec": {
            "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}],
            "containers": [{"name": "app", "image": "app:3"}]
        }}));
        let names: Vec<&str> =
            out["spec"]["containers"].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str()).collect();
        assert_eq!(names, vec!["sidecar", "app"]);
        assert_eq!(out["spec"]["containers"][1]["image"], "app:3");
        assert!(out["spec"].get("$setElementOrder/containers").is_none());

        let out = strategic_merge_patch(
            &json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}),
            &json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
            "Deployment",
        )
        .expect("applies");
        assert_eq!(out, json!({"spec": {"strategy": {"type": "Recreate"}}}));
    }

    #[test]
    fn smp_new_fields_are_cleaned_and_ports_keyed_by_kind() {
        let out =
            smp(json!({"spec": {"volumes": [{"name": "v", "emptyDir": {}}, {"name": "gone", "$patch": "delete"}]}}));
        assert_eq!(out["spec"]["volumes"], json!([{"name": "v", "emptyDir": {}}]));

        let svc = json!({"kind": "Service", "spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443}]}});
        let out =
            strategic_merge_patch(&svc, &json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}]}}), "Service")
                .expect("applies");
        assert_eq!(out["spec"]["ports"], json!([{"port": 80, "name": "http", "targetPort": 8080}, {"port": 443}]));

        let out = smp(json!({"spec": {"containers": [{"name": "app", "ports": [{"containerPort": 81}]}]}}));
        assert_eq!(out["spec"]["containers"][0]["ports"], json!([{"containerPort": 80}, {"containerPort": 81}]));

        let node =
            json!({"status": {"addresses": [{"type": "InternalIP", "address": "1"}], "images": [{"names": ["a"]}]}});
        let out = strategic_merge_patch(
            &node,
            &json!({"status": {"addresses": [{"type": "Hostname", "address": "h"}], "images": [{"names": ["b"]}]}}),
            "Node",
        )
        .expect("applies");
        assert_eq!(out["status"]["addresses"].as_array().map(Vec::len), Some(2));
        assert_eq!(out["status"]["images"], json!([{"names": ["b"]}]));
    }

    #[test]
    fn smp_errors() {
        assert!(matches!(strategic_merge_patch(&pod(), &json!([1]), "Pod"), Err(PatchError::Malformed(_))));
        assert!(strategic_merge_patch(&pod(), &json!({"metadata": {"$patch": "explode"}}), "Pod").is_err());
        assert!(strategic_merge_patch(&pod(), &json!({"spec": {"$retainKeys": "x"}}), "Pod").is_err());
    }

    #[test]
    fn apply_creates_with_managed_fields() {
        let cfg = json!({"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": "c", "namespace": "d", "labels": {"a": "1"}},
                         "data": {"k": "v"}});
        let out = apply(None, &cfg, "ConfigMap", "kubectl", "2024-01-01T00:00:00Z").expect("creates");
        assert_eq!(out["data"], json!({"k": "v"}));
        let mf = &out["metadata"]["managedFields"];
        assert_eq!(mf.as_array().map(Vec::len), Some(1));
        assert_eq!(mf[0]["manager"], "kubectl");
        assert_eq!(mf[0]["operation"], "Apply");
        assert_eq!(mf[0]["apiVersion"], "v1");
        assert_eq!(mf[0]["time"], "2024-01-01T00:00:00Z");
        assert_eq!(mf[0]["fieldsType"], "FieldsV1");
        assert_eq!(mf[0]["fieldsV1"], json!({"f:data": {"f:k": {}}, "f:metadata": {"f:labels": {"f:a": {}}}}));
    }

    #[test]
    fn apply_updates_and_refreshes_entry() {
        let existing = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "resourceVersion": "7", "finalizers": ["x"], "managedFields": [
                {"manager": "kubectl", "operation": "Apply", "time": "old"},
                {"manager": "kube-controller-manager", "operation": "Update", "time": "t"}]},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "c", "image": "i:1"}]}}},
            "status": {"replicas": 1}});
        let cfg = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "resourceVersion": "1", "finalizers": ["y"]},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "c", "image": "i:2"}]}}}});
        let out = apply(Some(&existing), &cfg, "Deployment", "kubectl", "now").expect("updates");
        assert_eq!(out["spec"]["replicas"], 3);
        assert_eq!(out["spec"]["template"]["spec"]["containers"], json!([{"name": "c", "image": "i:2"}]));
        assert_eq!(out["status"]["replicas"], 1, "fields not applied survive");
        assert_eq!(out["metadata"]["resourceVersion"], "7");
        assert_eq!(out["metadata"]["finalizers"], json!(["x", "y"]));
        let mf = out["metadata"]["managedFields"].as_array().cloned().unwrap_or_default();
        assert_eq!(mf.len(), 2);
        assert_eq!(mf[0]["manager"], "kube-controller-manager");
        assert_eq!(mf[1]["time"], "now");
        assert_eq!(
            mf[1]["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"],
            json!({r#"k:{"name":"c"}"#: {".": {}, "f:image": {}, "f:name": {}}})
        );
        assert_eq!(mf[1]["fieldsV1"]["f:metadata"], json!({"f:finalizers": {r#"v:"y""#: {}}}));
    }

    #[test]
    fn apply_removes_fields_no_longer_applied() {
        let v1 = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"a": "1", "b": "2"}, "finalizers": ["x", "y"]},
            "spec": {"containers": [{"name": "c1", "image": "i", "args": ["q"]}, {"name": "c2", "image": "j"}]}});
        let mut obj = apply(None, &v1, "Pod", "mgr", "t1").expect("create");
        // Someone else adds a label without managed fields, and another manager owns label b too.
        obj["metadata"]["labels"]["z"] = json!("other");
        if let Some(Value::Array(mf)) = obj.pointer_mut("/metadata/managedFields") {
            mf.push(json!({"manager": "helper", "operation": "Apply",
                           "fieldsV1": {"f:metadata": {"f:labels": {"f:b": {}}}}}));
        }
        let v2 = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"a": "1"}, "finalizers": ["x"]},
            "spec": {"containers": [{"name": "c1", "image": "i2"}]}});
        let out = apply(Some(&obj), &v2, "Pod", "mgr", "t2").expect("update");
        assert_eq!(out["metadata"]["labels"], json!({"a": "1", "b": "2", "z": "other"}));
        assert_eq!(out["metadata"]["finalizers"], json!(["x"]));
        assert_eq!(out["spec"]["containers"], json!([{"name": "c1", "image": "i2"}]));
        let managers: Vec<&str> = out["metadata"]["managedFields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["manager"].as_str())
            .collect();
        assert_eq!(managers, vec!["helper", "mgr"]);
    }

    #[test]
    fn apply_rejects_bad_input() {
        assert!(apply(None, &json!([]), "Pod", "m", "t").is_err());
        assert!(apply(None, &json!({"kind": "Pod"}), "Pod", "m", "t").is_err());
        assert!(apply(None, &json!({"apiVersion": "v1", "kind": "Pod"}), "Pod", "", "t").is_err());
    }
}
