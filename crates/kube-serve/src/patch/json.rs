//! RFC 6902 JSON Patch, and the JSON pointers it uses.

use super::*;

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
pub(super) fn array_index(tok: &str) -> Option<usize> {
    if tok.is_empty() || (tok.len() > 1 && tok.starts_with('0')) || !tok.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    tok.parse().ok()
}

pub(super) fn pointer_get<'a>(doc: &'a Value, toks: &[String]) -> Option<&'a Value> {
    toks.iter().try_fold(doc, |cur, tok| match cur {
        Value::Object(m) => m.get(tok),
        Value::Array(a) => array_index(tok).and_then(|i| a.get(i)),
        _ => None,
    })
}

pub(super) fn pointer_get_mut<'a>(doc: &'a mut Value, toks: &[String]) -> Option<&'a mut Value> {
    toks.iter().try_fold(doc, |cur, tok| match cur {
        Value::Object(m) => m.get_mut(tok),
        Value::Array(a) => array_index(tok).and_then(move |i| a.get_mut(i)),
        _ => None,
    })
}

pub(super) fn json_add(doc: &mut Value, toks: &[String], value: Value, op: &str, path: &str) -> Result<(), PatchError> {
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

pub(super) fn json_remove(doc: &mut Value, toks: &[String], op: &str, path: &str) -> Result<Value, PatchError> {
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
pub(super) fn json_equal(a: &Value, b: &Value) -> bool {
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
