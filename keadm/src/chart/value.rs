//! The values a chart is rendered with, typed as Helm's Go code sees them: numbers read from a
//! YAML file are `float64` (Helm decodes values through JSON), numbers from `--set` are
//! `int64`. The difference shows when a template prints a number (`1e+06` for a float of a
//! million), so it is kept.

use std::collections::BTreeMap;
use std::fmt::Write;

/// A template value: Helm's `map[string]interface{}` world.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Go's nil (a missing key, YAML `null`).
    Nil,
    /// A boolean.
    Bool(bool),
    /// An `int64` (from `--set`).
    Int(i64),
    /// A `float64` (every number of a YAML values file).
    Float(f64),
    /// A string.
    Str(String),
    /// A list.
    List(Vec<Value>),
    /// A map; Go templates range over maps in key order.
    Map(BTreeMap<String, Value>),
}

/// Why YAML could not be turned into values.
#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    /// Not YAML.
    #[error(transparent)]
    Parse(#[from] yaml_serde::Error),
    /// A map key that is not a string (Helm's values are JSON objects).
    #[error("map keys must be strings, found {0}")]
    Key(String),
}

impl Value {
    /// Parses one YAML document the way Helm reads a values file (numbers become floats).
    pub fn from_yaml(text: &str) -> Result<Value, YamlError> {
        let v: yaml_serde::Value = yaml_serde::from_str(text)?;
        Self::from_yaml_value(v)
    }

    fn from_yaml_value(v: yaml_serde::Value) -> Result<Value, YamlError> {
        use yaml_serde::Value as Y;
        Ok(match v {
            Y::Null => Value::Nil,
            Y::Bool(b) => Value::Bool(b),
            Y::Number(n) => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            Y::String(s) => Value::Str(s),
            Y::Sequence(items) => Value::List(items.into_iter().map(Self::from_yaml_value).collect::<Result<_, _>>()?),
            Y::Mapping(m) => {
                let mut out = BTreeMap::new();
                for (k, v) in m {
                    let key = match k {
                        Y::String(s) => s,
                        other => return Err(YamlError::Key(format!("{other:?}"))),
                    };
                    out.insert(key, Self::from_yaml_value(v)?);
                }
                Value::Map(out)
            }
            Y::Tagged(t) => Self::from_yaml_value(t.value)?,
        })
    }

    /// Go's truth: false, 0, nil and empty strings, lists and maps are false.
    pub fn truthy(&self) -> bool {
        match self {
            Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::List(l) => !l.is_empty(),
            Value::Map(m) => !m.is_empty(),
        }
    }

    /// The value's Go type name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Nil => "<nil>",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int64",
            Value::Float(_) => "float64",
            Value::Str(_) => "string",
            Value::List(_) => "[]interface {}",
            Value::Map(_) => "map[string]interface {}",
        }
    }

    /// How `{{ . }}` prints the value (Go's `%v`); nil prints nothing, as Helm strips
    /// `<no value>` from its output.
    pub fn print(&self, out: &mut String) {
        match self {
            Value::Nil => {}
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Float(f) => out.push_str(&go_float(*f)),
            Value::Str(s) => out.push_str(s),
            Value::List(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    v.print_nested(out);
                }
                out.push(']');
            }
            Value::Map(m) => {
                out.push_str("map[");
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    out.push_str(k);
                    out.push(':');
                    v.print_nested(out);
                }
                out.push(']');
            }
        }
    }

    /// Inside a list or map Go prints nil as `<nil>`.
    fn print_nested(&self, out: &mut String) {
        match self {
            Value::Nil => out.push_str("<nil>"),
            v => v.print(out),
        }
    }

    /// The value as JSON (what Helm's `toYaml` and the Kubernetes API see): floats that are
    /// whole numbers become integers, as Go's JSON round trip makes them.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Nil => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => J::from(*f as i64),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::List(l) => J::Array(l.iter().map(Value::to_json).collect()),
            Value::Map(m) => J::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()),
        }
    }
}

/// Go's `%v` of a float64 (`%g` with the shortest precision): the shortest digits that read
/// back, in exponent form (`1e+06`, `1.234567e+06`, `1e-05`) when the decimal exponent is below
/// -4 or at least 6. The cases in the tests are what helm prints.
pub fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    if f == 0.0 {
        return "0".into();
    }
    // Rust's `{:e}` gives the shortest round-tripping digits: "1.5e6", "-2.5e-7".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    format!("{f}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_go_does() {
        for (f, want) in [
            (10000.0, "10000"),
            (0.5, "0.5"),
            (1e6, "1e+06"),
            (123456789.0, "1.23456789e+08"),
            (1e20, "1e+20"),
            (100000.0, "100000"),
            (999999.0, "999999"),
            (1234567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.5, "-2.5"),
        ] {
            assert_eq!(go_float(f), want, "{f}");
        }
    }
}
