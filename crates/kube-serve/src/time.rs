//! Kubernetes timestamps, in one place: the RFC 3339 forms the API and kubelet write, and the
//! parser that reads them back. Calendar arithmetic and parsing are the `time` crate's; only the
//! exact output forms are spelled out here.
//!
//! * [`format`]: `metav1.Time`, UTC with whole seconds (`2024-05-01T12:00:00Z`).
//! * [`format_micro`]: `metav1.MicroTime`, six fraction digits (`2024-05-01T12:00:00.123456Z`).
//! * [`format_nano_fixed`]: kubelet's `RFC3339NanoFixed` for log lines, nine fraction digits
//!   and the time's own zone (`…09.500000000Z`, `…09.000000000+02:00`).
//! * [`parse`]: RFC 3339 with optional fraction (at most nine digits, as Go) and a `Z` or
//!   `±hh:mm` zone; the date and time may be separated by `T`, `t` or a space.

use std::time::SystemTime;

pub use ::time::OffsetDateTime;
use ::time::format_description::well_known::Rfc3339;
use ::time::{Date, UtcOffset};

/// A time as `metav1.Time` writes it: UTC, whole seconds, `Z`.
pub fn format(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    format!("{}Z", date_time(t))
}

/// [`format`] of Unix seconds (saturating at the years ±9999 the calendar covers).
pub fn format_unix(secs: i64) -> String {
    format(from_unix(secs))
}

/// [`format`] of a [`SystemTime`].
pub fn format_system(t: SystemTime) -> String {
    format(OffsetDateTime::from(t))
}

/// A time as `metav1.MicroTime` writes it: UTC, six fraction digits, `Z`.
pub fn format_micro(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    format!("{}.{:06}Z", date_time(t), t.microsecond())
}

/// A time as kubelet writes log timestamps (Go's `RFC3339NanoFixed`): nine fraction digits, in
/// the time's own offset, `Z` when that offset is zero.
pub fn format_nano_fixed(t: OffsetDateTime) -> String {
    let offset = t.offset();
    let zone = if offset.is_utc() {
        "Z".to_owned()
    } else {
        let sign = if offset.is_negative() { '-' } else { '+' };
        format!("{sign}{:02}:{:02}", offset.whole_hours().unsigned_abs(), offset.minutes_past_hour().unsigned_abs())
    };
    format!("{}.{:09}{zone}", date_time(t), t.nanosecond())
}

/// Now, as [`format`] writes it.
pub fn now() -> String {
    format(OffsetDateTime::now_utc())
}

/// Now, in Unix seconds (the reference for ages and expiries).
pub fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Unix seconds as a UTC time, saturating at the ends of the calendar (years ±9999).
pub fn from_unix(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(secs).unwrap_or(if secs < 0 {
        Date::MIN.midnight().assume_utc()
    } else {
        Date::MAX.with_hms_nano(23, 59, 59, 999_999_999).map_or(OffsetDateTime::UNIX_EPOCH, |t| t.assume_utc())
    })
}

/// Parses an RFC 3339 timestamp, keeping its offset; `None` if it is not one.
pub fn parse(s: &str) -> Option<OffsetDateTime> {
    let b = s.as_bytes();
    // `time` takes any separator and any number of fraction digits; Go (and so Kubernetes)
    // takes `T` and at most nine. We also take `t` and a space, as earlier versions did.
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    let frac = s.get(19..).and_then(|r| r.strip_prefix('.')).unwrap_or("");
    if frac.bytes().take_while(u8::is_ascii_digit).count() > 9 {
        return None;
    }
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// [`parse`] to Unix seconds (the fraction dropped).
pub fn parse_unix(s: &str) -> Option<i64> {
    parse(s).map(OffsetDateTime::unix_timestamp)
}

/// `YYYY-MM-DDThh:mm:ss` of a time, in its own offset.
fn date_time(t: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn parses_what_kubernetes_writes() {
        assert_eq!(parse_unix("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_unix("2026-01-01T00:00:00+0\u{e9}00"), None, "a non-ASCII offset is refused, no panic");
        assert_eq!(parse_unix("2024-02-29T12:34:56Z"), Some(1_709_210_096));
        assert_eq!(parse_unix("2024-02-29T12:34:56.123456Z"), Some(1_709_210_096));
        assert_eq!(parse_unix("2024-02-29T14:34:56+02:00"), Some(1_709_210_096));
        assert_eq!(parse_unix("2024-02-29 12:34:56z"), Some(1_709_210_096));
        assert_eq!(parse_unix("1969-12-31T23:59:59Z"), Some(-1));
        for bad in [
            "",
            "garbage",
            "2016-10-06",
            "2024-13-01T00:00:00Z",
            "2024-01-01T00:00:00",
            "2016-10-06T00:17:09.Z",
            "x016-10-06T00:17:09Z",
            "2016-10-06T00:17:09.1234567890Z",
            "2016-10-06X00:17:09Z",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        let t = parse("2016-10-06T00:17:09.669794202Z").unwrap();
        assert_eq!(t.unix_timestamp_nanos(), 1_475_713_029_669_794_202);
    }

    #[test]
    fn formats_each_form() {
        assert_eq!(format_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_unix(1_709_210_096), "2024-02-29T12:34:56Z");
        assert_eq!(format_system(UNIX_EPOCH + Duration::from_secs(1_795_636_468)), "2026-11-25T19:54:28Z");
        assert_eq!(format_system(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
        for t in [0, 1, 86_399, 951_782_400, 1_709_210_096, 4_102_444_800] {
            assert_eq!(parse_unix(&format_unix(t)), Some(t));
        }
        let t = parse("2016-10-06T02:17:09.5+02:00").unwrap();
        assert_eq!(format(t), "2016-10-06T00:17:09Z");
        assert_eq!(format_micro(t), "2016-10-06T00:17:09.500000Z");
        assert_eq!(format_nano_fixed(t), "2016-10-06T02:17:09.500000000+02:00");
        assert_eq!(
            format_nano_fixed(parse("2016-10-06T00:17:09-05:30").unwrap()),
            "2016-10-06T00:17:09.000000000-05:30"
        );
        assert_eq!(format_nano_fixed(parse("2016-10-06T00:17:09+00:00").unwrap()), "2016-10-06T00:17:09.000000000Z");
    }

    #[test]
    fn out_of_range_seconds_saturate() {
        assert!(format_unix(i64::MAX).starts_with("9999-12-31T23:59:59"));
        assert!(format_unix(i64::MIN).starts_with("-9999-01-01T00:00:00"));
    }
}
