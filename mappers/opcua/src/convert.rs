//! OPC UA values ⇄ the framework's [`DataValue`]: a node's value is reported in its own type
//! (upstream's `valueToString`: integers in decimal, floats in the shortest form, text as is),
//! and a write is converted to the type of the node's current value, with range checks
//! (upstream writes every value as a String variant, which a typed node refuses).

use kubeedge_mapper_framework::{DataValue, ProtocolError};
use opcua::types::{ByteString, UAString, Variant, VariantScalarTypeId};

/// A node's value as the mapper reports it.
pub fn from_variant(v: &Variant) -> Result<DataValue, ProtocolError> {
    Ok(match v {
        Variant::Boolean(b) => DataValue::Bool(*b),
        Variant::SByte(i) => DataValue::Int(i64::from(*i)),
        Variant::Byte(i) => DataValue::Int(i64::from(*i)),
        Variant::Int16(i) => DataValue::Int(i64::from(*i)),
        Variant::UInt16(i) => DataValue::Int(i64::from(*i)),
        Variant::Int32(i) => DataValue::Int(i64::from(*i)),
        Variant::UInt32(i) => DataValue::Int(i64::from(*i)),
        Variant::Int64(i) => DataValue::Int(*i),
        Variant::UInt64(u) => match i64::try_from(*u) {
            Ok(i) => DataValue::Int(i),
            Err(_) => DataValue::String(u.to_string()),
        },
        // The shortest text that reads back as the same f32 (0.1, not 0.10000000149011612).
        Variant::Float(f) => DataValue::String(f.to_string()),
        Variant::Double(f) => DataValue::Float(*f),
        Variant::String(s) => DataValue::String(s.as_ref().to_owned()),
        Variant::LocalizedText(t) => DataValue::String(t.text.as_ref().to_owned()),
        Variant::ByteString(b) => DataValue::String(String::from_utf8_lossy(b.as_ref()).into_owned()),
        Variant::DateTime(t) => DataValue::String(t.to_string()),
        Variant::Empty => return Err(ProtocolError::device("the node has no value")),
        Variant::Array(_) => {
            return Err(ProtocolError::config("the node holds an array; a property is one scalar value"));
        }
        other => DataValue::String(other.to_string()),
    })
}

/// Converts a value to the scalar type of the node (learnt from its current value).
pub fn to_variant(value: &DataValue, ty: VariantScalarTypeId) -> Result<Variant, ProtocolError> {
    let not = |what: &str| ProtocolError::config(format!("{value:?} is not {what} (the node's type is {ty:?})"));
    let int = || value.as_i64().ok_or_else(|| not("an integer"));
    macro_rules! fit {
        ($t:ty, $variant:ident) => {{
            let i = int()?;
            Variant::$variant(
                <$t>::try_from(i)
                    .map_err(|_| ProtocolError::config(format!("{i} is out of range for the node's type {ty:?}")))?,
            )
        }};
    }
    Ok(match ty {
        VariantScalarTypeId::Boolean => Variant::Boolean(value.as_bool().ok_or_else(|| not("a boolean"))?),
        VariantScalarTypeId::SByte => fit!(i8, SByte),
        VariantScalarTypeId::Byte => fit!(u8, Byte),
        VariantScalarTypeId::Int16 => fit!(i16, Int16),
        VariantScalarTypeId::UInt16 => fit!(u16, UInt16),
        VariantScalarTypeId::Int32 => fit!(i32, Int32),
        VariantScalarTypeId::UInt32 => fit!(u32, UInt32),
        VariantScalarTypeId::Int64 => Variant::Int64(int()?),
        VariantScalarTypeId::UInt64 => fit!(u64, UInt64),
        VariantScalarTypeId::Float => {
            let x = value.as_f64().ok_or_else(|| not("a number"))?;
            #[allow(clippy::cast_possible_truncation)]
            let f = x as f32;
            if f.is_infinite() && x.is_finite() {
                return Err(ProtocolError::config(format!("{x} is out of range for the node's type Float")));
            }
            Variant::Float(f)
        }
        VariantScalarTypeId::Double => Variant::Double(value.as_f64().ok_or_else(|| not("a number"))?),
        VariantScalarTypeId::String => Variant::String(UAString::from(value.to_string())),
        VariantScalarTypeId::ByteString => Variant::ByteString(ByteString::from(value.to_string().into_bytes())),
        other => return Err(ProtocolError::config(format!("writing a node of type {other:?} is not supported"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_as_upstream_prints_them() {
        assert_eq!(from_variant(&Variant::Float(0.1)).unwrap().to_string(), "0.1");
        assert_eq!(from_variant(&Variant::Double(21.5)).unwrap().to_string(), "21.5");
        assert_eq!(from_variant(&Variant::UInt16(7)).unwrap(), DataValue::Int(7));
        assert_eq!(from_variant(&Variant::UInt64(u64::MAX)).unwrap().to_string(), u64::MAX.to_string());
        assert_eq!(from_variant(&Variant::Boolean(true)).unwrap().to_string(), "true");
        assert_eq!(from_variant(&Variant::from("on")).unwrap().to_string(), "on");
        assert!(from_variant(&Variant::Empty).is_err());
    }

    #[test]
    fn writes_take_the_node_type_and_refuse_what_does_not_fit() {
        assert_eq!(to_variant(&DataValue::Int(1), VariantScalarTypeId::Boolean).unwrap(), Variant::Boolean(true));
        assert_eq!(to_variant(&DataValue::Float(2.0), VariantScalarTypeId::Int32).unwrap(), Variant::Int32(2));
        assert_eq!(to_variant(&DataValue::Int(3), VariantScalarTypeId::Double).unwrap(), Variant::Double(3.0));
        let err = to_variant(&DataValue::Int(300), VariantScalarTypeId::Byte).unwrap_err();
        assert!(err.message.contains("300 is out of range"), "{err}");
        let err = to_variant(&DataValue::Float(1.5), VariantScalarTypeId::Int16).unwrap_err();
        assert!(err.message.contains("is not an integer"), "{err}");
        assert!(to_variant(&DataValue::Int(1), VariantScalarTypeId::Guid).is_err());
        let err = to_variant(&DataValue::Float(1e300), VariantScalarTypeId::Float).unwrap_err();
        assert!(err.message.contains("out of range for the node's type Float"), "{err}");
    }
}
