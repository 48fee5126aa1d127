//! Just enough DER to move P-256 keys between SEC1 (`EC PRIVATE KEY`, what upstream KubeEdge
//! stores) and PKCS#8 (what `ring` and `rcgen` load).

const OID_EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_PRIME256V1: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// Why a key's DER could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DerError {
    /// The input ends inside a TLV.
    #[error("truncated DER")]
    Truncated,
    /// A length form other than short, one byte or two bytes.
    #[error("unsupported DER length")]
    UnsupportedLength,
    /// Well-formed DER, but not the key structure expected (the text says which part).
    #[error("{0}")]
    Unexpected(&'static str),
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend([0x81, len as u8]);
    } else {
        out.extend([0x82, (len >> 8) as u8, len as u8]);
    }
    out.extend_from_slice(content);
    out
}

/// Reads one TLV: (tag, content, rest).
fn read(input: &[u8]) -> Result<(u8, &[u8], &[u8]), DerError> {
    let (&tag, rest) = input.split_first().ok_or(DerError::Truncated)?;
    let (&first, rest) = rest.split_first().ok_or(DerError::Truncated)?;
    let (len, rest) = match first {
        n if n < 0x80 => (usize::from(n), rest),
        0x81 => {
            let (&n, rest) = rest.split_first().ok_or(DerError::Truncated)?;
            (usize::from(n), rest)
        }
        0x82 => {
            let b = rest.get(..2).ok_or(DerError::Truncated)?;
            ((usize::from(b[0]) << 8) | usize::from(b[1]), &rest[2..])
        }
        _ => return Err(DerError::UnsupportedLength),
    };
    let content = rest.get(..len).ok_or(DerError::Truncated)?;
    Ok((tag, content, &rest[len..]))
}

/// The private scalar and public point of a SEC1 `ECPrivateKey`.
fn parse_ec_private_key(sec1: &[u8]) -> Result<(Vec<u8>, Option<Vec<u8>>), DerError> {
    let (tag, seq, _) = read(sec1)?;
    if tag != 0x30 {
        return Err(DerError::Unexpected("ECPrivateKey is not a SEQUENCE"));
    }
    let (tag, version, rest) = read(seq)?;
    if tag != 0x02 || version != [1] {
        return Err(DerError::Unexpected("ECPrivateKey version must be 1"));
    }
    let (tag, private, mut rest) = read(rest)?;
    if tag != 0x04 || private.len() != 32 {
        return Err(DerError::Unexpected("not a P-256 private key"));
    }
    let mut public = None;
    while !rest.is_empty() {
        let (tag, content, next) = read(rest)?;
        match tag {
            0xa0 if content != OID_PRIME256V1 => return Err(DerError::Unexpected("the curve is not P-256")),
            0xa1 => {
                let (bit_tag, bits, _) = read(content)?;
                if bit_tag != 0x03 {
                    return Err(DerError::Unexpected("public key is not a BIT STRING"));
                }
                public = Some(bits.to_vec());
            }
            _ => {}
        }
        rest = next;
    }
    Ok((private.to_vec(), public))
}

fn ec_private_key(private: &[u8], public_bits: &[u8], with_params: bool) -> Vec<u8> {
    let mut body = tlv(0x02, &[1]);
    body.extend(tlv(0x04, private));
    if with_params {
        body.extend(tlv(0xa0, OID_PRIME256V1));
    }
    body.extend(tlv(0xa1, &tlv(0x03, public_bits)));
    tlv(0x30, &body)
}

/// PKCS#8 `PrivateKeyInfo` (P-256) → SEC1 `ECPrivateKey` with the curve parameters and public
/// key, as Go's `x509.MarshalECPrivateKey` writes it.
pub fn pkcs8_to_sec1(pkcs8: &[u8]) -> Result<Vec<u8>, DerError> {
    let (tag, seq, _) = read(pkcs8)?;
    if tag != 0x30 {
        return Err(DerError::Unexpected("PrivateKeyInfo is not a SEQUENCE"));
    }
    let (_, _version, rest) = read(seq)?;
    let (tag, alg, rest) = read(rest)?;
    if tag != 0x30 || !alg.starts_with(OID_EC_PUBLIC_KEY) || !alg.ends_with(OID_PRIME256V1) {
        return Err(DerError::Unexpected("not an ECDSA P-256 key"));
    }
    let (tag, inner, _) = read(rest)?;
    if tag != 0x04 {
        return Err(DerError::Unexpected("privateKey is not an OCTET STRING"));
    }
    let (private, public) = parse_ec_private_key(inner)?;
    let public = public.ok_or(DerError::Unexpected("the key has no public point"))?;
    Ok(ec_private_key(&private, &public, true))
}

/// SEC1 `ECPrivateKey` (P-256) → PKCS#8. The public point must be present (Go always writes it).
pub fn sec1_to_pkcs8(sec1: &[u8]) -> Result<Vec<u8>, DerError> {
    let (private, public) = parse_ec_private_key(sec1)?;
    let public = public.ok_or(DerError::Unexpected("the SEC1 key has no public point"))?;
    let mut alg = OID_EC_PUBLIC_KEY.to_vec();
    alg.extend_from_slice(OID_PRIME256V1);
    let mut body = tlv(0x02, &[0]);
    body.extend(tlv(0x30, &alg));
    body.extend(tlv(0x04, &ec_private_key(&private, &public, false)));
    Ok(tlv(0x30, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_junk() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let pkcs8 = key.serialize_der();
        let sec1 = pkcs8_to_sec1(&pkcs8).unwrap();
        assert_eq!(sec1[0], 0x30);
        let back = sec1_to_pkcs8(&sec1).unwrap();
        let again =
            rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&back.as_slice().into(), &rcgen::PKCS_ECDSA_P256_SHA256)
                .unwrap();
        assert_eq!(again.public_key_raw(), key.public_key_raw());
        assert!(pkcs8_to_sec1(b"junk").is_err());
        assert!(sec1_to_pkcs8(&[0x30, 0x03, 0x02, 0x01, 0x00]).is_err());
        assert!(sec1_to_pkcs8(&[]).is_err());
    }
}
