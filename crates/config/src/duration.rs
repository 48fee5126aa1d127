//! Go duration strings (`metav1.Duration`) as used by the kubelet part of edgecore.yaml.
//!
//! The text is kept exactly as written so a file round-trips unchanged; [`GoDuration::to_std`]
//! parses it on access.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A Go `time.Duration` string such as `10s`, `1m0s`, `4h0m0s` or `100ms`, kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GoDuration(pub String);

/// A Go duration string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {text:?}: {reason}")]
pub struct DurationError {
    /// The text that failed to parse.
    pub text: String,
    /// Why it failed.
    pub reason: &'static str,
}

impl GoDuration {
    /// Wraps a duration string without checking it (checked by `validate()` and [`Self::to_std`]).
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The text as written in the file.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses the Go syntax: an optional `+`, then one or more `<decimal><unit>` parts with units
    /// `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`; a bare `0` is allowed. Negative durations are
    /// rejected because a std [`Duration`] cannot hold them.
    pub fn to_std(&self) -> Result<Duration, DurationError> {
        parse_go_duration(&self.0).map_err(|reason| DurationError { text: self.0.clone(), reason })
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for GoDuration {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

fn parse_go_duration(text: &str) -> Result<Duration, &'static str> {
    let mut s = text.trim();
    if let Some(rest) = s.strip_prefix('-') {
        if rest == "0" {
            return Ok(Duration::ZERO);
        }
        return Err("negative durations are not allowed");
    }
    if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration");
    }
    let mut total_nanos: u128 = 0;
    while !s.is_empty() {
        let num_len = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
        if num_len == 0 {
            return Err("expected a number");
        }
        let (number, rest) = s.split_at(num_len);
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let (unit, rest) = rest.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            "" => return Err("missing unit"),
            _ => return Err("unknown unit"),
        };
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        if int_part.is_empty() && frac_part.is_empty() {
            return Err("expected a number");
        }
        if frac_part.contains('.') {
            return Err("malformed number");
        }
        let int: u128 = if int_part.is_empty() { 0 } else { int_part.parse().map_err(|_| "number out of range")? };
        let mut part = int.checked_mul(unit_nanos).ok_or("duration out of range")?;
        let mut scale = unit_nanos;
        for digit in frac_part.bytes() {
            scale /= 10;
            if scale == 0 {
                break;
            }
            part += u128::from(digit - b'0') * scale;
        }
        total_nanos = total_nanos.checked_add(part).ok_or("duration out of range")?;
        s = rest;
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000).map_err(|_| "duration out of range")?;
    // The remainder is < 1e9 so it always fits in u32.
    let nanos = u32::try_from(total_nanos % 1_000_000_000).unwrap_or(0);
    Ok(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Duration, DurationError> {
        GoDuration::new(s).to_std()
    }

    #[test]
    fn parses_go_forms() {
        assert_eq!(p("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(p("1m0s"), Ok(Duration::from_secs(60)));
        assert_eq!(p("4h0m0s"), Ok(Duration::from_secs(4 * 3600)));
        assert_eq!(p("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(p("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(p("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(p("0s"), Ok(Duration::ZERO));
        assert_eq!(p("0"), Ok(Duration::ZERO));
        assert_eq!(p("2h45m"), Ok(Duration::from_secs(2 * 3600 + 45 * 60)));
        assert_eq!(p("3us"), Ok(Duration::from_micros(3)));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "10", "abc", "10x", "s", "-5s", "1..5s", "1.5.s"] {
            assert!(p(bad).is_err(), "{bad:?} should not parse");
        }
    }
}
