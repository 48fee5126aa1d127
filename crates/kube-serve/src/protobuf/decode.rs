//! Protobuf message → JSON object, driven by the schema.

use base64::Engine;
use serde_json::{Map, Value, json};

use super::schema::{Field, Message, Schemas, Ty};
use super::wire::{Reader, Wire};
use crate::status::ApiError;
use crate::time;

/// Deeper than any Kubernetes object nests; a cap so a crafted body cannot exhaust the stack.
const MAX_DEPTH: usize = 64;

/// Decodes the fields of `bytes` into `out` (an embedded struct decodes into its parent's map).
pub fn message(
    bytes: &[u8],
    msg: &Message,
    s: &Schemas,
    out: &mut Map<String, Value>,
    depth: usize,
) -> Result<(), ApiError> {
    if depth > MAX_DEPTH {
        return Err(ApiError::bad_request("protobuf body nests too deeply"));
    }
    for item in Reader(bytes) {
        let (num, wire) = item?;
        let field = msg.field(num).ok_or_else(|| {
            ApiError::new(
                415,
                "UnsupportedMediaType",
                format!("protobuf field {num} of {} is not supported by this server; send application/json", msg.name),
            )
        })?;
        if field.inline() {
            let (Ty::Msg(i), Wire::Len(b)) = (field.ty, wire) else { return Err(wrong(field, msg)) };
            message(b, s.message(i), s, out, depth + 1)?;
        } else if field.map {
            let Wire::Len(entry) = wire else { return Err(wrong(field, msg)) };
            let (k, v) = map_entry(entry, field, msg, s, depth)?;
            if let Value::Object(m) = out.entry(field.name).or_insert_with(|| json!({})) {
                m.insert(k, v);
            }
        } else if field.repeated {
            let items = out.entry(field.name).or_insert_with(|| json!([]));
            let Value::Array(items) = items else { continue };
            match (field.ty, wire) {
                // A packed list of numbers (Go writes them unpacked; both are valid protobuf).
                (Ty::Int | Ty::Bool, Wire::Len(b)) => {
                    let mut r = Reader(b);
                    while !r.0.is_empty() {
                        let v = r.varint()?;
                        items.push(if field.ty == Ty::Bool { json!(v != 0) } else { json!(v as i64) });
                    }
                }
                (_, wire) => items.push(value(field.ty, wire, field, msg, s, depth)?),
            }
        } else {
            let v = value(field.ty, wire, field, msg, s, depth)?;
            // Go writes every string that is not a pointer; an empty one is `omitempty` in JSON.
            if v.as_str() == Some("") && field.ty == Ty::Str && !field.required {
                out.remove(field.name);
                continue;
            }
            out.insert(field.name.to_owned(), v);
        }
    }
    Ok(())
}

fn wrong(field: &Field, msg: &Message) -> ApiError {
    ApiError::bad_request(format!("protobuf field {} of {} has the wrong wire type", field.name, msg.name))
}

fn utf8(b: &[u8]) -> Result<String, ApiError> {
    String::from_utf8(b.to_vec()).map_err(|_| ApiError::bad_request("protobuf string is not UTF-8"))
}

fn map_entry(
    entry: &[u8],
    field: &Field,
    msg: &Message,
    s: &Schemas,
    depth: usize,
) -> Result<(String, Value), ApiError> {
    let mut k = String::new();
    let mut v = None;
    for item in Reader(entry) {
        match item? {
            (1, Wire::Len(b)) => k = utf8(b)?,
            (2, wire) => v = Some(value(field.ty, wire, field, msg, s, depth)?),
            _ => {}
        }
    }
    let empty = match field.ty {
        Ty::Msg(_) => json!({}),
        Ty::Quantity => json!("0"),
        Ty::StrList | Ty::Time | Ty::MicroTime | Ty::RawJson => Value::Null,
        Ty::Int => json!(0),
        Ty::Bool => json!(false),
        _ => json!(""),
    };
    Ok((k, v.unwrap_or(empty)))
}

fn value(ty: Ty, wire: Wire<'_>, field: &Field, msg: &Message, s: &Schemas, depth: usize) -> Result<Value, ApiError> {
    Ok(match (ty, wire) {
        (Ty::Str, Wire::Len(b)) => json!(utf8(b)?),
        (Ty::Int, Wire::Varint(v)) => json!(v as i64),
        (Ty::Bool, Wire::Varint(v)) => json!(v != 0),
        (Ty::Bytes, Wire::Len(b)) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
        (Ty::Double, Wire::Fixed64(v)) => json!(f64::from_bits(v)),
        (Ty::Time | Ty::MicroTime, Wire::Len(b)) => {
            let (mut secs, mut nanos) = (0i64, 0i64);
            for item in Reader(b) {
                match item? {
                    (1, Wire::Varint(v)) => secs = v as i64,
                    (2, Wire::Varint(v)) => nanos = i64::from(v as i32),
                    _ => {}
                }
            }
            // The zero time is `null` in JSON, as Go's metav1.Time writes it.
            if secs == 0 && nanos == 0 {
                Value::Null
            } else if ty == Ty::MicroTime {
                let nanos = ::time::Duration::nanoseconds(nanos.clamp(0, 999_999_999));
                json!(time::format_micro(time::from_unix(secs).saturating_add(nanos)))
            } else {
                json!(time::format_unix(secs))
            }
        }
        (Ty::Quantity, Wire::Len(b)) => {
            let mut q = json!("0");
            for item in Reader(b) {
                if let (1, Wire::Len(v)) = item? {
                    q = json!(utf8(v)?);
                }
            }
            q
        }
        (Ty::IntOrString, Wire::Len(b)) => {
            let (mut kind, mut int, mut text) = (0, 0i64, String::new());
            for item in Reader(b) {
                match item? {
                    (1, Wire::Varint(v)) => kind = v,
                    (2, Wire::Varint(v)) => int = i64::from(v as i32),
                    (3, Wire::Len(v)) => text = utf8(v)?,
                    _ => {}
                }
            }
            if kind == 1 { json!(text) } else { json!(int) }
        }
        (Ty::RawJson, Wire::Len(b)) => {
            let mut raw: &[u8] = &[];
            for item in Reader(b) {
                if let (1, Wire::Len(v)) = item? {
                    raw = v;
                }
            }
            if raw.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(raw).map_err(|_| {
                    ApiError::bad_request(format!("protobuf field {} of {} is not JSON", field.name, msg.name))
                })?
            }
        }
        (Ty::StrList, Wire::Len(b)) => {
            let mut items = Vec::new();
            for item in Reader(b) {
                if let (1, Wire::Len(v)) = item? {
                    items.push(json!(utf8(v)?));
                }
            }
            Value::Array(items)
        }
        (Ty::Msg(i), Wire::Len(b)) => {
            let mut m = Map::new();
            message(b, s.message(i), s, &mut m, depth + 1)?;
            Value::Object(m)
        }
        _ => return Err(wrong(field, msg)),
    })
}
