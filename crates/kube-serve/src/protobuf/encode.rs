//! JSON object → protobuf message, driven by the schema. Anything the schema cannot describe
//! (an unknown field, a value of the wrong type) makes the whole encoding fail, and the caller
//! answers in JSON instead: nothing is ever dropped on the way to a client.

use base64::Engine;
use serde_json::{Map, Value};

use super::schema::{Field, Message, Schemas, Ty};
use super::wire::Writer;
use crate::time;

/// Why an object was not encoded (for logs and tests).
#[derive(Debug, PartialEq, Eq)]
pub struct Unencodable(pub String);

type Result<T> = std::result::Result<T, Unencodable>;

/// How to treat what the schema cannot describe.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Fail, so the caller can answer in JSON.
    Strict,
    /// Leave it out, as kube-apiserver prunes unknown fields when it stores an object: for a
    /// protobuf watch, which cannot change format halfway.
    Lenient,
}

/// Encodes `obj` as `msg`. At the top of an object, `apiVersion` and `kind` are the envelope's
/// business and are skipped.
pub fn message(
    obj: &Map<String, Value>,
    msg: &Message,
    s: &Schemas,
    w: &mut Writer,
    top: bool,
    mode: Mode,
) -> Result<()> {
    let used = fields(obj, msg, s, w, mode)?;
    if mode == Mode::Lenient {
        return Ok(());
    }
    let type_meta =
        if top { usize::from(obj.contains_key("apiVersion")) + usize::from(obj.contains_key("kind")) } else { 0 };
    if used + type_meta != obj.len() {
        let known = |k: &str| known_key(msg, s, k) || (top && (k == "apiVersion" || k == "kind"));
        let extra = obj.keys().find(|k| !known(k)).cloned().unwrap_or_default();
        return Err(Unencodable(format!("{} has no protobuf field for {extra:?}", msg.name)));
    }
    Ok(())
}

fn known_key(msg: &Message, s: &Schemas, key: &str) -> bool {
    msg.fields.iter().any(|f| match (f.inline(), f.ty) {
        (true, Ty::Msg(i)) => known_key(s.message(i), s, key),
        _ => f.name == key,
    })
}

/// Writes the fields of `msg` found in `obj`; returns how many keys of `obj` it used.
fn fields(obj: &Map<String, Value>, msg: &Message, s: &Schemas, w: &mut Writer, mode: Mode) -> Result<usize> {
    let mut used = 0;
    for field in &msg.fields {
        if field.inline() {
            let Ty::Msg(i) = field.ty else { continue };
            let mut inner = Writer::default();
            used += fields(obj, s.message(i), s, &mut inner, mode)?;
            w.bytes(field.num, &inner.0);
            continue;
        }
        let Some(v) = obj.get(field.name) else { continue };
        used += 1;
        if v.is_null() {
            // Go writes a zero metav1.Time (JSON `null`) as an empty message: anything else,
            // even seconds 0, reads back as 1970-01-01.
            if matches!(field.ty, Ty::Time | Ty::MicroTime) && !field.repeated && !field.map {
                w.bytes(field.num, b"");
            }
            continue;
        }
        let mut one = Writer::default();
        match value(field, v, msg, s, &mut one, mode) {
            Ok(()) => w.0.extend(one.0),
            Err(_) if mode == Mode::Lenient => {}
            Err(e) => return Err(e),
        }
    }
    Ok(used)
}

/// Writes one field's value (all of a list's or a map's entries).
fn value(field: &Field, v: &Value, msg: &Message, s: &Schemas, w: &mut Writer, mode: Mode) -> Result<()> {
    {
        if field.map {
            let Value::Object(m) = v else { return Err(mismatch(field, msg)) };
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            for k in keys {
                let mut entry = Writer::default();
                entry.bytes(1, k.as_bytes());
                if !m[k].is_null() {
                    single(2, field, &m[k], msg, s, &mut entry, mode)?;
                }
                w.bytes(field.num, &entry.0);
            }
        } else if field.repeated {
            let Value::Array(items) = v else { return Err(mismatch(field, msg)) };
            for item in items {
                single(field.num, field, item, msg, s, w, mode)?;
            }
        } else {
            single(field.num, field, v, msg, s, w, mode)?;
        }
    }
    Ok(())
}

fn mismatch(field: &Field, msg: &Message) -> Unencodable {
    Unencodable(format!("{}.{} does not have the type protobuf needs", msg.name, field.name))
}

fn single(num: u64, field: &Field, v: &Value, msg: &Message, s: &Schemas, w: &mut Writer, mode: Mode) -> Result<()> {
    let bad = || mismatch(field, msg);
    match field.ty {
        Ty::Str => w.bytes(num, v.as_str().ok_or_else(bad)?.as_bytes()),
        Ty::Int => w.varint(num, v.as_i64().ok_or_else(bad)? as u64),
        Ty::Bool => w.varint(num, u64::from(v.as_bool().ok_or_else(bad)?)),
        Ty::Bytes => {
            let b = base64::engine::general_purpose::STANDARD.decode(v.as_str().ok_or_else(bad)?).map_err(|_| bad())?;
            w.bytes(num, &b);
        }
        Ty::Double => w.fixed64(num, v.as_f64().ok_or_else(bad)?.to_bits()),
        Ty::Time | Ty::MicroTime => {
            let t = v.as_str().ok_or_else(bad)?;
            let t = time::parse(t).ok_or_else(bad)?;
            let (secs, nanos) = (t.unix_timestamp(), if field.ty == Ty::MicroTime { t.nanosecond() } else { 0 });
            w.message(num, |m| {
                m.varint(1, secs as u64);
                m.varint(2, nanos as u64);
            });
        }
        Ty::Quantity => {
            let q = match v {
                Value::String(q) => q.clone(),
                Value::Number(n) => n.to_string(),
                _ => return Err(bad()),
            };
            w.message(num, |m| m.bytes(1, q.as_bytes()));
        }
        Ty::IntOrString => match v {
            Value::String(t) => w.message(num, |m| {
                m.varint(1, 1);
                m.varint(2, 0);
                m.bytes(3, t.as_bytes());
            }),
            Value::Number(n) => {
                let i = n.as_i64().ok_or_else(bad)?;
                w.message(num, |m| {
                    m.varint(1, 0);
                    m.varint(2, i as u64);
                    m.bytes(3, b"");
                });
            }
            _ => return Err(bad()),
        },
        Ty::RawJson => {
            let raw = serde_json::to_vec(v).map_err(|_| bad())?;
            w.message(num, |m| m.bytes(1, &raw));
        }
        Ty::StrList => {
            let Value::Array(items) = v else { return Err(bad()) };
            let mut m = Writer::default();
            for item in items {
                m.bytes(1, item.as_str().ok_or_else(bad)?.as_bytes());
            }
            w.bytes(num, &m.0);
        }
        Ty::Msg(i) => {
            let Value::Object(o) = v else { return Err(bad()) };
            let mut m = Writer::default();
            message(o, s.message(i), s, &mut m, false, mode)?;
            w.bytes(num, &m.0);
        }
    }
    Ok(())
}
