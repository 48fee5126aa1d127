//! The version this build says it is (`--version`, `kubeletVersion`, `kubeedge_build_info`):
//! the crate version, unless the binary was **stamped** with another one afterwards, as a
//! release pipeline stamps what it ships (Go's `-ldflags -X`, without relinking).
//!
//! The version lives in a static after the marker [`STAMP_MARKER`], in a field of
//! [`STAMP_LEN`] bytes padded with NULs; [`stamp`] rewrites that field in a copy of a binary.
//! The field is read through [`std::hint::black_box`], so the compiler cannot fold the
//! built-in value into the code and a stamp is always what is printed.

/// What precedes the version field in a binary.
pub const STAMP_MARKER: &[u8; 26] = b"kubeedge-rs-version-stamp:";
/// The size of the version field.
pub const STAMP_LEN: usize = 32;

const fn build_stamp() -> [u8; 26 + STAMP_LEN] {
    let mut out = [0u8; 26 + STAMP_LEN];
    let mut i = 0;
    while i < 26 {
        out[i] = STAMP_MARKER[i];
        i += 1;
    }
    let v = env!("CARGO_PKG_VERSION").as_bytes();
    let mut j = 0;
    while j < v.len() && j < STAMP_LEN {
        out[26 + j] = v[j];
        j += 1;
    }
    out
}

#[used]
static STAMP: [u8; 26 + STAMP_LEN] = build_stamp();

/// This binary's version, without a leading `v` (e.g. `0.1.0`).
pub fn version() -> &'static str {
    let stamp: &'static [u8; 26 + STAMP_LEN] = std::hint::black_box(&STAMP);
    let field = &stamp[26..];
    let end = field.iter().position(|&b| b == 0).unwrap_or(STAMP_LEN);
    std::str::from_utf8(&field[..end]).unwrap_or(env!("CARGO_PKG_VERSION"))
}

/// Why a binary could not be stamped.
#[derive(Debug, thiserror::Error)]
pub enum StampError {
    /// The version does not fit or is not `[0-9A-Za-z.+_-]`.
    #[error("version {0:?} must be 1 to {STAMP_LEN} characters of [0-9A-Za-z.+_-], without the leading v")]
    Version(String),
    /// The binary has no stamp, or more than one.
    #[error("the binary has {0} version stamps (expected 1)")]
    Stamps(usize),
}

/// `binary` with its version field set to `version` (no leading `v`).
pub fn stamp(binary: &[u8], version: &str) -> Result<Vec<u8>, StampError> {
    let ok = !version.is_empty()
        && version.len() <= STAMP_LEN
        && version.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'_' | b'-'));
    if !ok {
        return Err(StampError::Version(version.to_owned()));
    }
    // The marker is read from this binary's own stamp: a second copy of it as a literal would
    // be a second match in any binary that links this function.
    let marker = &std::hint::black_box(&STAMP)[..STAMP_MARKER.len()];
    let at: Vec<usize> =
        binary.windows(marker.len()).enumerate().filter(|(_, w)| *w == marker).map(|(i, _)| i).collect();
    let [at] = at.as_slice() else { return Err(StampError::Stamps(at.len())) };
    let field = at + marker.len();
    if binary.len() < field + STAMP_LEN {
        return Err(StampError::Stamps(0));
    }
    let mut out = binary.to_vec();
    out[field..field + STAMP_LEN].fill(0);
    out[field..field + version.len()].copy_from_slice(version.as_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_version_and_a_stamp() {
        assert_eq!(version(), env!("CARGO_PKG_VERSION"));
        let mut bin = b"\x7fELF....".to_vec();
        bin.extend_from_slice(&STAMP);
        bin.extend_from_slice(b"tail");
        let out = stamp(&bin, "1.99.0-b").unwrap();
        assert_eq!(out.len(), bin.len());
        let field = &out[8 + 26..8 + 26 + STAMP_LEN];
        assert_eq!(&field[..8], b"1.99.0-b");
        assert!(field[8..].iter().all(|&b| b == 0));
        assert!(out.ends_with(b"tail"));
        assert!(matches!(stamp(&bin, "1.0; rm"), Err(StampError::Version(_))));
        assert!(matches!(stamp(b"nothing", "1.0.0"), Err(StampError::Stamps(0))));
    }
}
