//! The message descriptions in `schema.txt` (field numbers, wire types and JSON names of the
//! Kubernetes types served as protobuf), parsed once.

use std::collections::HashMap;
use std::sync::OnceLock;

const TEXT: &str = include_str!("schema.txt");

/// How a field is encoded on the wire and shown in JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    Str,
    Int,
    Bool,
    Bytes,
    Double,
    /// `metav1.Time`: seconds (JSON: RFC 3339, no fraction).
    Time,
    /// `metav1.MicroTime`: seconds and nanos (JSON: RFC 3339 with six fraction digits).
    MicroTime,
    /// `resource.Quantity`: its string.
    Quantity,
    /// `intstr.IntOrString`.
    IntOrString,
    /// `runtime.RawExtension` and `FieldsV1`: JSON bytes.
    RawJson,
    /// A message whose only field is a list of strings, a plain array in JSON.
    StrList,
    /// Another message, by index.
    Msg(usize),
}

/// One field of a message.
#[derive(Debug)]
pub struct Field {
    pub num: u64,
    /// The JSON name; empty for an embedded struct whose fields are inline in JSON.
    pub name: &'static str,
    pub ty: Ty,
    pub repeated: bool,
    pub map: bool,
    /// A field Go always writes in JSON (no `omitempty`): an empty string is kept.
    pub required: bool,
}

impl Field {
    pub fn inline(&self) -> bool {
        self.name.is_empty()
    }
}

/// One message.
#[derive(Debug)]
pub struct Message {
    pub name: &'static str,
    pub fields: Vec<Field>,
}

impl Message {
    pub fn field(&self, num: u64) -> Option<&Field> {
        self.fields.iter().find(|f| f.num == num)
    }
}

/// All messages, and the kinds accepted at the top level.
#[derive(Debug)]
pub struct Schemas {
    pub messages: Vec<Message>,
    kinds: HashMap<(&'static str, &'static str), usize>,
}

impl Schemas {
    /// The message of a top-level kind (`apiVersion`, `kind`).
    pub fn kind(&self, api_version: &str, kind: &str) -> Option<&Message> {
        let i = self.kinds.get(&(api_version, kind)).or_else(|| self.kinds.get(&("*", kind)))?;
        self.messages.get(*i)
    }

    pub fn message(&self, i: usize) -> &Message {
        &self.messages[i]
    }
}

/// The parsed schema. `schema.txt` is checked by a unit test, so a broken file fails the build's
/// tests; were it broken at run time, every kind would be answered 415 (no panic).
pub fn schemas() -> &'static Schemas {
    static S: OnceLock<Schemas> = OnceLock::new();
    S.get_or_init(|| parse(TEXT).unwrap_or_else(|_| Schemas { messages: Vec::new(), kinds: HashMap::new() }))
}

/// A line of `schema.txt` that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SchemaError {
    /// A `@apiVersion kind message` line without its three parts.
    #[error("bad kind line {0:?}")]
    KindLine(&'static str),
    /// A kind line naming a message the file does not define.
    #[error("kind {kind} names unknown message {message}")]
    KindMessage { kind: &'static str, message: &'static str },
    /// A field not of the form `name=number:type`.
    #[error("bad field {0:?}")]
    Field(&'static str),
    /// A field whose type names a message the file does not define.
    #[error("{field:?} names unknown message {message}")]
    FieldMessage { field: &'static str, message: &'static str },
}

pub(crate) fn parse(text: &'static str) -> Result<Schemas, SchemaError> {
    let lines: Vec<&'static str> = text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    let index: HashMap<&str, usize> = lines
        .iter()
        .filter(|l| !l.starts_with('@'))
        .enumerate()
        .map(|(i, l)| (l.split(' ').next().unwrap_or_default(), i))
        .collect();
    let mut messages = Vec::new();
    let mut kinds = HashMap::new();
    for line in lines {
        if let Some(root) = line.strip_prefix('@') {
            let mut parts = root.split(' ');
            let (Some(api_version), Some(kind), Some(msg)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(SchemaError::KindLine(line));
            };
            let i = *index.get(msg).ok_or(SchemaError::KindMessage { kind, message: msg })?;
            kinds.insert((api_version, kind), i);
            continue;
        }
        let mut parts = line.split(' ');
        let name = parts.next().unwrap_or_default();
        let fields = parts.map(|f| field(f, &index)).collect::<Result<_, _>>()?;
        messages.push(Message { name, fields });
    }
    Ok(Schemas { messages, kinds })
}

fn field(spec: &'static str, index: &HashMap<&str, usize>) -> Result<Field, SchemaError> {
    let bad = || SchemaError::Field(spec);
    let (name, rest) = spec.split_once('=').ok_or_else(bad)?;
    let (num, mut ty) = rest.split_once(':').ok_or_else(bad)?;
    let num = num.parse().map_err(|_| bad())?;
    let required = ty.ends_with('!');
    ty = ty.trim_end_matches('!');
    let repeated = ty.ends_with('*');
    ty = ty.trim_end_matches('*');
    let map = ty.starts_with('{') && ty.ends_with('}');
    if map {
        ty = &ty[1..ty.len() - 1];
    }
    let ty = match ty {
        "s" => Ty::Str,
        "i" => Ty::Int,
        "b" => Ty::Bool,
        "y" => Ty::Bytes,
        "f" => Ty::Double,
        "t" => Ty::Time,
        "u" => Ty::MicroTime,
        "q" => Ty::Quantity,
        "x" => Ty::IntOrString,
        "r" => Ty::RawJson,
        "l" => Ty::StrList,
        m => {
            let inner = m.strip_prefix("m(").and_then(|m| m.strip_suffix(')')).ok_or_else(bad)?;
            Ty::Msg(*index.get(inner).ok_or(SchemaError::FieldMessage { field: spec, message: inner })?)
        }
    };
    let name = if name == "~" { "" } else { name };
    Ok(Field { num, name, ty, repeated, map, required })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_schema_parses() {
        let s = parse(TEXT).unwrap();
        assert!(s.messages.len() > 200, "{}", s.messages.len());
        let node = s.kind("v1", "Node").unwrap();
        assert_eq!(node.name, "core.v1.Node");
        assert!(s.kind("policy/v1", "DeleteOptions").is_some(), "DeleteOptions of any group");
        let Ty::Msg(spec) = node.field(2).unwrap().ty else { panic!() };
        let spec = s.message(spec);
        let cidrs = spec.field(7).unwrap();
        assert_eq!((cidrs.name, cidrs.ty, cidrs.repeated), ("podCIDRs", Ty::Str, true));
        let vol = s.messages.iter().find(|m| m.name == "core.v1.Volume").unwrap();
        assert!(vol.field(2).unwrap().inline());
    }
}
