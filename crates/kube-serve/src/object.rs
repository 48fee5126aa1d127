//! Helpers for Kubernetes objects held as `serde_json::Value`: metadata getters and setters,
//! list envelopes, and RFC 3339 timestamps (the form of `creationTimestamp` and friends).

use serde_json::{Map, Value, json};

/// A read-only view of an object's `metadata` (and type fields).
#[derive(Debug, Clone, Copy)]
pub struct Meta<'a> {
    obj: &'a Value,
}

/// A view of `obj`'s metadata; every getter tolerates missing or mistyped fields.
pub fn meta(obj: &Value) -> Meta<'_> {
    Meta { obj }
}

impl<'a> Meta<'a> {
    fn field(&self, name: &str) -> Option<&'a Value> {
        self.obj.get("metadata").and_then(|m| m.get(name))
    }

    fn str_field(&self, name: &str) -> Option<&'a str> {
        self.field(name).and_then(Value::as_str)
    }

    /// `kind`
    pub fn kind(&self) -> Option<&'a str> {
        self.obj.get("kind").and_then(Value::as_str)
    }

    /// `apiVersion`
    pub fn api_version(&self) -> Option<&'a str> {
        self.obj.get("apiVersion").and_then(Value::as_str)
    }

    /// `metadata.name`
    pub fn name(&self) -> Option<&'a str> {
        self.str_field("name")
    }

    /// `metadata.generateName`
    pub fn generate_name(&self) -> Option<&'a str> {
        self.str_field("generateName")
    }

    /// `metadata.namespace`
    pub fn namespace(&self) -> Option<&'a str> {
        self.str_field("namespace")
    }

    /// `metadata.resourceVersion`
    pub fn resource_version(&self) -> Option<&'a str> {
        self.str_field("resourceVersion")
    }

    /// `metadata.uid`
    pub fn uid(&self) -> Option<&'a str> {
        self.str_field("uid")
    }

    /// `metadata.labels`
    pub fn labels(&self) -> Option<&'a Map<String, Value>> {
        self.field("labels").and_then(Value::as_object)
    }

    /// `metadata.annotations`
    pub fn annotations(&self) -> Option<&'a Map<String, Value>> {
        self.field("annotations").and_then(Value::as_object)
    }

    /// `metadata.creationTimestamp`
    pub fn creation_timestamp(&self) -> Option<&'a str> {
        self.str_field("creationTimestamp")
    }

    /// `metadata.deletionTimestamp`
    pub fn deletion_timestamp(&self) -> Option<&'a str> {
        self.str_field("deletionTimestamp")
    }

    /// `metadata.deletionGracePeriodSeconds`
    pub fn deletion_grace_period_seconds(&self) -> Option<i64> {
        self.field("deletionGracePeriodSeconds").and_then(Value::as_i64)
    }

    /// `metadata.finalizers` (non-string entries skipped)
    pub fn finalizers(&self) -> Vec<&'a str> {
        self.field("finalizers").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect()
    }

    /// `metadata.generation`
    pub fn generation(&self) -> Option<i64> {
        self.field("generation").and_then(Value::as_i64)
    }

    /// `metadata.ownerReferences`
    pub fn owner_references(&self) -> &'a [Value] {
        self.field("ownerReferences").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// Mutable access to `metadata`, creating it when absent; `None` if `obj` is not an object
/// (or its `metadata` is not an object).
pub fn meta_mut(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    obj.as_object_mut()?.entry("metadata").or_insert_with(|| json!({})).as_object_mut()
}

/// Sets `metadata.<field>` to a string (no-op on non-objects).
pub fn set_meta_str(obj: &mut Value, field: &str, value: &str) {
    if let Some(m) = meta_mut(obj) {
        m.insert(field.to_string(), Value::String(value.to_string()));
    }
}

/// Sets `metadata.resourceVersion`.
pub fn set_resource_version(obj: &mut Value, rv: &str) {
    set_meta_str(obj, "resourceVersion", rv);
}

/// Splits an `apiVersion` into `(group, version)`: `apps/v1` → `("apps", "v1")`, `v1` → `("", "v1")`.
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.split_once('/').unwrap_or(("", api_version))
}

/// The `apiVersion` string for a group and version (`v1` for the core group).
pub fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() { version.to_string() } else { format!("{group}/{version}") }
}

/// A list envelope: `{"kind": kind_list, "apiVersion", "metadata": {"resourceVersion",
/// "continue"?, "remainingItemCount"?}, "items": [...]}`.
pub fn list(
    kind_list: &str,
    api_version: &str,
    resource_version: &str,
    continue_token: Option<&str>,
    remaining: Option<i64>,
    items: Vec<Value>,
) -> Value {
    let mut m = Map::new();
    m.insert("resourceVersion".into(), json!(resource_version));
    if let Some(c) = continue_token.filter(|c| !c.is_empty()) {
        m.insert("continue".into(), json!(c));
    }
    if let Some(r) = remaining {
        m.insert("remainingItemCount".into(), json!(r));
    }
    json!({"kind": kind_list, "apiVersion": api_version, "metadata": m, "items": items})
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Parses an RFC 3339 timestamp (`2024-05-01T12:00:00Z`, fractions and `±hh:mm` offsets
/// allowed) into Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if part.bytes().all(|c| c.is_ascii_digit()) { part.parse().ok() } else { None }
    };
    let (y, mo, d, h, mi, se) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) && rest.as_bytes()[3] == b':' => {
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset)
}

/// Formats Unix seconds as RFC 3339 UTC (`2024-05-01T12:00:00Z`), as Kubernetes stamps times.
pub fn format_rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getters() {
        let o = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": "p", "namespace": "ns", "resourceVersion": "12", "uid": "u", "generation": 3,
            "labels": {"a": "b"}, "annotations": {"x": "y"}, "deletionTimestamp": "2024-01-01T00:00:00Z",
            "finalizers": ["f1", 7, "f2"], "creationTimestamp": "2023-01-01T00:00:00Z",
            "ownerReferences": [{"uid": "o"}]}});
        let m = meta(&o);
        assert_eq!(m.kind(), Some("Pod"));
        assert_eq!(m.api_version(), Some("v1"));
        assert_eq!(m.name(), Some("p"));
        assert_eq!(m.namespace(), Some("ns"));
        assert_eq!(m.resource_version(), Some("12"));
        assert_eq!(m.uid(), Some("u"));
        assert_eq!(m.generation(), Some(3));
        assert_eq!(m.labels().and_then(|l| l.get("a")), Some(&json!("b")));
        assert_eq!(m.annotations().map(Map::len), Some(1));
        assert_eq!(m.deletion_timestamp(), Some("2024-01-01T00:00:00Z"));
        assert_eq!(m.creation_timestamp(), Some("2023-01-01T00:00:00Z"));
        assert_eq!(m.finalizers(), vec!["f1", "f2"]);
        assert_eq!(m.owner_references().len(), 1);
        let empty = json!("not an object");
        assert_eq!(meta(&empty).name(), None);
        assert!(meta(&empty).finalizers().is_empty());
    }

    #[test]
    fn setters() {
        let mut o = json!({"kind": "ConfigMap"});
        set_resource_version(&mut o, "5");
        assert_eq!(o["metadata"]["resourceVersion"], "5");
        set_meta_str(&mut o, "name", "c");
        assert_eq!(meta(&o).name(), Some("c"));
        let mut s = json!(3);
        set_resource_version(&mut s, "1");
        assert_eq!(s, json!(3));
    }

    #[test]
    fn list_envelope() {
        let l = list("PodList", "v1", "9", Some("tok"), Some(4), vec![json!({"a": 1})]);
        assert_eq!(
            l,
            json!({"kind": "PodList", "apiVersion": "v1",
                   "metadata": {"resourceVersion": "9", "continue": "tok", "remainingItemCount": 4},
                   "items": [{"a": 1}]})
        );
        let l = list("NodeList", "v1", "1", None, None, vec![]);
        assert_eq!(l["metadata"], json!({"resourceVersion": "1"}));
        assert_eq!(l["items"], json!([]));
    }

    #[test]
    fn api_versions() {
        assert_eq!(split_api_version("apps/v1"), ("apps", "v1"));
        assert_eq!(split_api_version("v1"), ("", "v1"));
        assert_eq!(api_version("", "v1"), "v1");
        assert_eq!(api_version("apps", "v1"), "apps/v1");
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2026-01-01T00:00:00+0\u{e9}00"), None, "a non-ASCII offset is refused, no panic");
        assert_eq!(parse_rfc3339("2024-02-29T12:34:56Z"), Some(1_709_210_096));
        assert_eq!(parse_rfc3339("2024-02-29T12:34:56.123456Z"), Some(1_709_210_096));
        assert_eq!(parse_rfc3339("2024-02-29T14:34:56+02:00"), Some(1_709_210_096));
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Some(-1));
        assert_eq!(parse_rfc3339("2024-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("garbage"), None);
        assert_eq!(parse_rfc3339("2024-01-01T00:00:00"), None);
        assert_eq!(format_rfc3339(1_709_210_096), "2024-02-29T12:34:56Z");
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        for t in [-86_401, 0, 951_782_400, 4_102_444_800] {
            assert_eq!(parse_rfc3339(&format_rfc3339(t)), Some(t));
        }
    }
}
