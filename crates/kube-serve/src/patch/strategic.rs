//! Strategic merge patch, with the built-in table of list strategies.

use super::*;

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

pub(super) const CONTAINER_LISTS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];

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

pub(super) const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";
pub(super) const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
pub(super) const RETAIN_KEYS: &str = "$retainKeys";
pub(super) const PATCH_DIRECTIVE: &str = "$patch";

pub(super) fn is_directive_key(k: &str) -> bool {
    k == PATCH_DIRECTIVE
        || k == RETAIN_KEYS
        || k.starts_with(DELETE_FROM_PRIMITIVE_LIST)
        || k.starts_with(SET_ELEMENT_ORDER)
}

pub(super) struct Smp<'a> {
    pub(super) kind: &'a str,
}

impl Smp<'_> {
    /// Merges a patch map into an original map; `None` means the map is deleted (`$patch: delete`).
    pub(super) fn map(
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
    pub(super) fn value(
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
    pub(super) fn clean(&self, v: &Value, path: &mut Vec<String>) -> Result<Option<Value>, PatchError> {
        match v {
            Value::Object(m) => Ok(self.map(&Map::new(), m, path)?.map(Value::Object)),
            _ => Ok(Some(v.clone())),
        }
    }

    pub(super) fn list(
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
pub(super) fn reorder(list: &mut Vec<Value>, order: &[Value], strategy: ListStrategy) {
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
