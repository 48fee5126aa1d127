//! Go-style durations as upstream's flags take them: `24h`, `90m`, `1h30m`, `45s`.

use std::time::Duration;

/// A flag value that is not a positive Go-style duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {0:?}: expected e.g. 24h, 90m, 1h30m")]
pub struct InvalidDuration(pub String);

/// Parses a Go-style duration (units h, m, s; at least one; no sign, no fractions).
pub fn parse(text: &str) -> Result<Duration, InvalidDuration> {
    let bad = || InvalidDuration(text.to_owned());
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut any = false;
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(bad)?;
        digits.clear();
        any = true;
    }
    if !any || !digits.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_style() {
        assert_eq!(parse("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse("45s"), Ok(Duration::from_secs(45)));
        for bad in ["", "h", "10", "1d", "-1h", "0s", "1.5h", "99999999999999999999h"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
