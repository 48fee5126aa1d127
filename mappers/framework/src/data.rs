//! Property data types and values, converted as upstream's `common.Convert` (text to value, for
//! desired values and REST writes) and `common.ConvertToString` (value to the reported text).

use std::fmt;

use crate::error::ProtocolError;

/// A property's data type: the model's `type` (INT, FLOAT...), lower-cased as upstream does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    /// `int` (also `integer`): a 64-bit integer.
    Int,
    /// `float`: a 32-bit float (kept as f64 here; Go parses it with 32-bit precision).
    Float,
    /// `double`.
    Double,
    /// `boolean` (also `bool`).
    Boolean,
    /// `string`.
    String,
    /// `bytes`: reported as text.
    Bytes,
}

impl DataType {
    /// Parses a type name, case-insensitively; an unknown name is a configuration error.
    pub fn parse(name: &str) -> Result<Self, ProtocolError> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "int" | "integer" => Self::Int,
            "float" => Self::Float,
            "double" => Self::Double,
            "boolean" | "bool" => Self::Boolean,
            "string" => Self::String,
            "bytes" => Self::Bytes,
            other => {
                return Err(ProtocolError::config(format!(
                    "unknown data type {other:?} (want int, float, double, boolean, string or bytes)"
                )));
            }
        })
    }

    /// The lower-case name upstream reports as the twin's `type` metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Int => "int",
            Self::Float => "float",
            Self::Double => "double",
            Self::Boolean => "boolean",
            Self::String => "string",
            Self::Bytes => "bytes",
        }
    }

    /// Converts text to a value of this type (upstream `Convert`: ParseInt, ParseFloat,
    /// ParseBool).
    pub fn value_of(self, text: &str) -> Result<DataValue, ProtocolError> {
        let bad = || ProtocolError::config(format!("{text:?} is not a valid {}", self.as_str()));
        Ok(match self {
            Self::Int => DataValue::Int(text.trim().parse().map_err(|_| bad())?),
            Self::Float | Self::Double => DataValue::Float(text.trim().parse().map_err(|_| bad())?),
            Self::Boolean => DataValue::Bool(parse_go_bool(text.trim()).ok_or_else(bad)?),
            Self::String | Self::Bytes => DataValue::String(text.to_owned()),
        })
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// A value read from or written to a device.
#[derive(Debug, Clone, PartialEq)]
pub enum DataValue {
    /// An integer.
    Int(i64),
    /// A floating-point number, reported in the shortest form that reads back the same.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// Text, reported as is (a protocol that formats numbers itself returns this).
    String(String),
}

impl fmt::Display for DataValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Int(i) => write!(f, "{i}"),
            Self::Float(x) => write!(f, "{x}"),
            Self::Bool(b) => write!(f, "{b}"),
            Self::String(s) => f.write_str(s),
        }
    }
}

impl DataValue {
    /// The value as an integer, if it is a whole number or a boolean.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Self::Int(i) => Some(*i),
            #[allow(clippy::cast_possible_truncation)]
            Self::Float(f) if f.fract() == 0.0 => Some(*f as i64),
            Self::Bool(b) => Some(i64::from(*b)),
            Self::String(s) => s.trim().parse().ok(),
            Self::Float(_) => None,
        }
    }

    /// The value as a float.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            #[allow(clippy::cast_precision_loss)]
            Self::Int(i) => Some(*i as f64),
            Self::Float(f) => Some(*f),
            Self::Bool(b) => Some(f64::from(u8::from(*b))),
            Self::String(s) => s.trim().parse().ok(),
        }
    }

    /// The value as a boolean (numbers: non-zero is true).
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Bool(b) => Some(*b),
            Self::Int(i) => Some(*i != 0),
            Self::Float(f) => Some(*f != 0.0),
            Self::String(s) => parse_go_bool(s.trim()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_parse_like_upstream() {
        assert_eq!(DataType::parse("INT").unwrap(), DataType::Int);
        assert_eq!(DataType::parse("Boolean").unwrap(), DataType::Boolean);
        let err = DataType::parse("decimal").unwrap_err();
        assert_eq!(err.kind, crate::ErrorKind::Config);
        assert!(err.message.contains("unknown data type \"decimal\""), "{err}");
    }

    #[test]
    fn values_convert_and_print_like_go() {
        assert_eq!(DataType::Int.value_of("42").unwrap(), DataValue::Int(42));
        assert!(DataType::Int.value_of("4.2").is_err());
        assert_eq!(DataType::Boolean.value_of("T").unwrap(), DataValue::Bool(true));
        assert_eq!(DataValue::Float(0.1).to_string(), "0.1");
        assert_eq!(DataValue::Float(2.0).to_string(), "2");
        assert_eq!(DataValue::Bool(false).to_string(), "false");
    }
}
