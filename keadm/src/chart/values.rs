//! Composing a chart's values as Helm does: user values (a values file, then each `--set` in
//! order, with Helm's `strvals` syntax and typing) coalesced over the chart's `values.yaml`.

use std::collections::BTreeMap;

use crate::chart::value::Value;

/// Helm's limit on a `--set` list index.
const MAX_INDEX: usize = 65536;

/// A `--set` that cannot be parsed.
#[derive(Debug, thiserror::Error)]
#[error("--set {set:?}: {msg}")]
pub struct SetError {
    set: String,
    msg: String,
}

/// Applies one `--set` argument (`a.b=1,c[0]=x,d={e,f}`) to `user`, as `helm --set`.
pub fn apply_set(user: &mut Value, set: &str) -> Result<(), SetError> {
    let err = |msg: String| SetError { set: set.to_owned(), msg };
    for assignment in split_unescaped(set, ',', true) {
        let (key, raw) =
            split_once_unescaped(&assignment, '=').ok_or_else(|| err(format!("key {assignment:?} has no value")))?;
        let path = parse_key(&key).map_err(&err)?;
        let value = if raw.starts_with('{') && raw.ends_with('}') {
            Value::List(
                split_unescaped(&raw[1..raw.len() - 1], ',', false).iter().map(|v| typed(&unescape(v))).collect(),
            )
        } else {
            typed(&unescape(&raw))
        };
        set_path(user, &path, value).map_err(&err)?;
    }
    Ok(())
}

/// Helm's `CoalesceTables(user, defaults)`: user values win, maps merge, a user `null`
/// deletes the default.
pub fn coalesce(user: Value, defaults: &Value) -> Value {
    let (Value::Map(mut dst), Value::Map(src)) = (user.clone(), defaults) else {
        return if user == Value::Nil { defaults.clone() } else { user };
    };
    for (k, default) in src {
        match dst.remove(k) {
            None => {
                dst.insert(k.clone(), default.clone());
            }
            Some(Value::Nil) => {}
            Some(v @ Value::Map(_)) if matches!(default, Value::Map(_)) => {
                dst.insert(k.clone(), coalesce(v, default));
            }
            Some(v) => {
                dst.insert(k.clone(), v);
            }
        }
    }
    Value::Map(dst)
}

/// strvals' typing: true/false (any case), null, integers without a leading zero; the rest
/// are strings.
fn typed(v: &str) -> Value {
    if v.eq_ignore_ascii_case("true") {
        return Value::Bool(true);
    }
    if v.eq_ignore_ascii_case("false") {
        return Value::Bool(false);
    }
    if v == "null" {
        return Value::Nil;
    }
    if v == "0" {
        return Value::Int(0);
    }
    if !v.starts_with('0')
        && let Ok(i) = v.parse::<i64>()
    {
        return Value::Int(i);
    }
    Value::Str(v.to_owned())
}

#[derive(Debug, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn parse_key(key: &str) -> Result<Vec<Seg>, String> {
    let mut out = Vec::new();
    for part in split_unescaped(key, '.', false) {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part.as_str(), ""),
        };
        if name.is_empty() && out.is_empty() {
            return Err(format!("key {key:?} has an empty name"));
        }
        if !name.is_empty() {
            out.push(Seg::Key(unescape(name)));
        }
        while let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').ok_or_else(|| format!("key {key:?}: unclosed ["))?;
            let i: usize = r[..end].parse().map_err(|_| format!("key {key:?}: bad list index {:?}", &r[..end]))?;
            if i > MAX_INDEX {
                return Err(format!("key {key:?}: index {i} is over the limit of {MAX_INDEX}"));
            }
            out.push(Seg::Index(i));
            rest = &r[end + 1..];
        }
    }
    Ok(out)
}

fn set_path(node: &mut Value, path: &[Seg], value: Value) -> Result<(), String> {
    let Some((seg, rest)) = path.split_first() else {
        *node = value;
        return Ok(());
    };
    match seg {
        Seg::Key(k) => {
            if !matches!(node, Value::Map(_)) {
                *node = Value::Map(BTreeMap::new());
            }
            let Value::Map(m) = node else { unreachable!("made a map above") };
            set_path(m.entry(k.clone()).or_insert(Value::Nil), rest, value)
        }
        Seg::Index(i) => {
            if !matches!(node, Value::List(_)) {
                *node = Value::List(Vec::new());
            }
            let Value::List(l) = node else { unreachable!("made a list above") };
            if l.len() <= *i {
                l.resize(i + 1, Value::Nil);
            }
            set_path(&mut l[*i], rest, value)
        }
    }
}

/// Splits on `sep` not escaped with `\` (and, when `braces`, not inside `{…}`), keeping the
/// escapes for the next step.
fn split_unescaped(s: &str, sep: char, braces: bool) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut depth = 0;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        let cur = out.last_mut().expect("never empty");
        match c {
            '\\' => {
                cur.push(c);
                cur.extend(chars.next());
            }
            '{' if braces => (depth += 1, cur.push(c)).1,
            '}' if braces => (depth -= 1, cur.push(c)).1,
            c if c == sep && depth == 0 => out.push(String::new()),
            c => cur.push(c),
        }
    }
    out
}

fn split_once_unescaped(s: &str, sep: char) -> Option<(String, String)> {
    let mut parts = split_unescaped(s, sep, false).into_iter();
    let key = parts.next()?;
    let rest: Vec<String> = parts.collect();
    (!rest.is_empty()).then(|| (key, rest.join(&sep.to_string())))
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.extend(chars.next());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sets(list: &[&str]) -> Value {
        let mut v = Value::Map(BTreeMap::new());
        for s in list {
            apply_set(&mut v, s).unwrap();
        }
        v
    }

    #[test]
    fn sets_are_typed_as_strvals() {
        let v = sets(&["a.b=1,c=TRUE,d=010,e=null,f=x\\,y", "g[1]=z", "h={p,2}", "i.j\\.k=", "l=-3", "m=1.5"]);
        let want = Value::from_yaml(
            "{a: {b: 1}, c: true, d: '010', e: null, f: 'x,y', g: [null, z], h: [p, 2], i: {j.k: ''}, l: -3, m: '1.5'}",
        )
        .unwrap();
        // Numbers from --set are int64; the YAML above reads them as floats.
        assert_eq!(v.to_json(), want.to_json());
        let Value::Map(m) = &v else { panic!() };
        assert_eq!(m["l"], Value::Int(-3));
        assert!(apply_set(&mut v.clone(), "novalue").unwrap_err().to_string().contains("has no value"));
    }

    #[test]
    fn user_values_coalesce_over_defaults() {
        let defaults = Value::from_yaml("{a: {b: 1, c: [1, 2]}, d: x, e: y}").unwrap();
        let user = sets(&["a.c[0]=9", "e=null"]);
        let got = coalesce(user, &defaults);
        assert_eq!(got.to_json(), Value::from_yaml("{a: {b: 1, c: [9]}, d: x}").unwrap().to_json());
    }
}
