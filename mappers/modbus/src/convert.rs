//! Register bytes to values and back, as upstream's modbus mapper converts them
//! (`mappers-go` `TransferData`, `SwitchRegister`, `SwitchByte`):
//! - registers are big-endian words; coils and discrete inputs are packed 8 to a byte, the
//!   first bit lowest (as Modbus sends them);
//! - `isRegisterSwap` reverses the order of the registers, `isSwap` the two bytes of each;
//! - `int` reads 1, 2, 4 or 8 bytes as an unsigned big-endian number, times `scale`, truncated;
//!   `float` reads 4 bytes and `double` 8 as IEEE 754, times `scale`, printed with 6 decimals;
//!   `boolean` is the first byte being 1; `string` is the bytes as text.
//!
//! Writes run the other way (our addition: upstream writes one raw register): the value is
//! divided by `scale`, encoded over the visitor's `limit` registers, and the swaps applied.

use kubeedge_mapper_framework::{DataType, DataValue, ProtocolError};

/// Reverses the order of the 2-byte registers.
pub fn swap_registers(bytes: &mut [u8]) {
    let n = bytes.len() / 2;
    for i in 0..n / 2 {
        let j = n - 1 - i;
        bytes.swap(2 * i, 2 * j);
        bytes.swap(2 * i + 1, 2 * j + 1);
    }
}

/// Swaps the two bytes of each register.
pub fn swap_bytes(bytes: &mut [u8]) {
    for pair in bytes.chunks_exact_mut(2) {
        pair.swap(0, 1);
    }
}

/// Registers as big-endian bytes.
pub fn words_to_bytes(words: &[u16]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_be_bytes()).collect()
}

/// Coils as packed bytes, first coil in the lowest bit.
pub fn bits_to_bytes(bits: &[bool]) -> Vec<u8> {
    bits.chunks(8).map(|c| c.iter().enumerate().fold(0u8, |b, (i, on)| b | (u8::from(*on) << i))).collect()
}

/// How many bytes `limit` registers or coils give.
pub fn byte_len(coils: bool, limit: u16) -> usize {
    if coils { usize::from(limit).div_ceil(8) } else { usize::from(limit) * 2 }
}

/// Whether `ty` can be decoded from `len` bytes.
pub fn check_len(ty: DataType, len: usize) -> Result<(), ProtocolError> {
    let ok = match ty {
        DataType::Int => matches!(len, 1 | 2 | 4 | 8),
        DataType::Float => len == 4,
        DataType::Double => len == 8,
        DataType::Boolean | DataType::String | DataType::Bytes => len >= 1,
    };
    if ok {
        Ok(())
    } else {
        Err(ProtocolError::config(format!(
            "{ty} cannot be read from {len} bytes (int: 1, 2, 4 or 8 bytes; float: 4 (limit 2); double: 8 (limit 4))"
        )))
    }
}

/// Decodes what the device sent.
pub fn decode(
    mut bytes: Vec<u8>,
    ty: DataType,
    scale: f64,
    register_swap: bool,
    byte_swap: bool,
) -> Result<DataValue, ProtocolError> {
    if register_swap {
        swap_registers(&mut bytes);
    }
    if byte_swap {
        swap_bytes(&mut bytes);
    }
    check_len(ty, bytes.len())?;
    let unsigned = || bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    Ok(match ty {
        #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
        DataType::Int => DataValue::Int((unsigned() as f64 * scale) as i64),
        DataType::Float => {
            let bits = u32::try_from(unsigned()).unwrap_or_default();
            DataValue::String(format!("{:.6}", f64::from(f32::from_bits(bits)) * scale))
        }
        DataType::Double => DataValue::String(format!("{:.6}", f64::from_bits(unsigned()) * scale)),
        DataType::Boolean => DataValue::Bool(bytes[0] == 1),
        DataType::String | DataType::Bytes => DataValue::String(String::from_utf8_lossy(&bytes).into_owned()),
    })
}

/// Encodes a value for `limit` holding registers.
pub fn encode(
    value: &DataValue,
    ty: DataType,
    limit: u16,
    scale: f64,
    register_swap: bool,
    byte_swap: bool,
) -> Result<Vec<u16>, ProtocolError> {
    let len = usize::from(limit) * 2;
    let bad =
        |why: String| ProtocolError::config(format!("cannot write {value} as {ty} over {limit} registers: {why}"));
    let scaled = || value.as_f64().map(|x| x / scale).ok_or_else(|| bad("not a number".into()));
    if len > 8 && matches!(ty, DataType::Int | DataType::Boolean) {
        return Err(bad("at most 4 registers".into()));
    }
    let mut bytes = match ty {
        DataType::Int | DataType::Boolean => {
            let x = scaled()?.round();
            let max = if len >= 8 { u64::MAX as f64 } else { (1u64 << (8 * len)) as f64 - 1.0 };
            // Negative values go as two's complement of the register width.
            let min = -((1u64 << (8 * len.min(8) - 1)) as f64);
            if !(min..=max).contains(&x) {
                return Err(bad(format!("out of range {min}..={max}")));
            }
            #[allow(clippy::cast_possible_truncation)]
            let n = x as i64 as u64;
            n.to_be_bytes()[8usize.saturating_sub(len)..].to_vec()
        }
        #[allow(clippy::cast_possible_truncation)]
        DataType::Float if len == 4 => (scaled()? as f32).to_bits().to_be_bytes().to_vec(),
        DataType::Double if len == 8 => scaled()?.to_bits().to_be_bytes().to_vec(),
        DataType::String | DataType::Bytes => {
            let mut b = value.to_string().into_bytes();
            if b.len() > len {
                return Err(bad("too long".into()));
            }
            b.resize(len, 0);
            b
        }
        _ => return Err(bad("wrong limit for the type".into())),
    };
    // The swaps are their own inverses and commute.
    if byte_swap {
        swap_bytes(&mut bytes);
    }
    if register_swap {
        swap_registers(&mut bytes);
    }
    Ok(bytes.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swaps_match_upstream() {
        let mut b = vec![1, 2, 3, 4, 5, 6, 7, 8];
        swap_registers(&mut b);
        assert_eq!(b, [7, 8, 5, 6, 3, 4, 1, 2]);
        swap_bytes(&mut b);
        assert_eq!(b, [8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(bits_to_bytes(&[true, false, true, false, false, false, false, false, true]), [0b101, 1]);
    }

    #[test]
    fn decodes_like_transfer_data() {
        assert_eq!(decode(vec![0x01, 0x2c], DataType::Int, 1.0, false, false).unwrap(), DataValue::Int(300));
        assert_eq!(decode(vec![0x01, 0x2c], DataType::Int, 0.1, false, false).unwrap(), DataValue::Int(30));
        assert_eq!(decode(vec![0x2c, 0x01], DataType::Int, 1.0, false, true).unwrap(), DataValue::Int(300));
        let pi = std::f32::consts::PI.to_bits().to_be_bytes().to_vec();
        assert_eq!(decode(pi, DataType::Float, 1.0, false, false).unwrap(), DataValue::String("3.141593".into()));
        assert_eq!(decode(vec![1], DataType::Boolean, 1.0, false, false).unwrap(), DataValue::Bool(true));
        assert_eq!(
            decode(b"hi".to_vec(), DataType::String, 1.0, false, false).unwrap(),
            DataValue::String("hi".into())
        );
        assert!(decode(vec![0; 6], DataType::Int, 1.0, false, false).is_err());
    }

    #[test]
    fn encode_inverts_decode() {
        for (ty, v, limit, scale, rs, bs) in [
            (DataType::Int, DataValue::Int(1234), 1, 1.0, false, false),
            (DataType::Int, DataValue::Int(70_000), 2, 1.0, true, true),
            (DataType::Int, DataValue::Int(50), 1, 0.5, false, true),
            (DataType::Float, DataValue::Float(2.5), 2, 1.0, true, false),
            (DataType::Double, DataValue::Float(-8.25), 4, 1.0, true, true),
        ] {
            let words = encode(&v, ty, limit, scale, rs, bs).unwrap();
            let back = decode(words_to_bytes(&words), ty, scale, rs, bs).unwrap();
            assert_eq!(back.as_f64(), v.as_f64(), "{ty} {v}");
        }
        assert!(encode(&DataValue::Int(70_000), DataType::Int, 1, 1.0, false, false).is_err());
        assert_eq!(encode(&DataValue::Int(-1), DataType::Int, 1, 1.0, false, false).unwrap(), [0xffff]);
    }
}
