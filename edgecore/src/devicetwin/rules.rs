//! Upstream's twin rules (`dtmanager/twin.go`, `dttype`): key and value checks, error texts,
//! and how an update from a mapper changes a twin (add, compare, delete), how the cloud's
//! desired values are read, and the delta.

use std::collections::BTreeMap;

use kubeedge_model::now_millis;

use super::store::{DeviceState, TwinRow};
use super::types::*;
use super::{TYPE_DELETED, uuid};

/// Upstream's error texts (`dttype/types.go`).
pub mod reason {
    /// Undecodable twin update.
    pub const UNMARSHAL: &str = "Unmarshal update request body failed, please check the request";
    /// No `twin` key.
    pub const NO_TWIN: &str = "Update twin error, key:twin does not exist";
    /// A bad key.
    pub const KEY: &str = "The key of twin must only include upper or lowercase letters, number, english, and special letter - _ . , : / @ # and the length of key should be less than 128 bytes";
    /// A bad value.
    pub const VALUE: &str = "The value of twin must only include upper or lowercase letters, number, english, and special letter - _ . , : / @ # and the length of value should be less than 512 bytes";
    /// Unknown device.
    pub const NO_DEVICE: &str = "update rejected due to the device is not existed";
}

/// Upstream's twin key rule `^[a-zA-Z0-9-_.,:/@#]{1,128}$` (values: up to 512).
pub fn valid_token(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b',' | b':' | b'/' | b'@' | b'#'))
}

/// Upstream's `ValidateValue`: the value must parse as its type.
pub fn validate_value(ty: &str, value: &str) -> Result<(), &'static str> {
    match ty {
        "" | "string" | TYPE_DELETED => Ok(()),
        "int" | "integer" => value.parse::<i64>().map(drop).map_err(|_| "the value is not int or integer"),
        "float" => value.parse::<f64>().map(drop).map_err(|_| "the value is not float"),
        "boolean" => {
            if value == "true" || value == "false" {
                Ok(())
            } else {
                Err("the bool value must be true or false")
            }
        }
        _ => Err("the value type is not allowed"),
    }
}

/// One twin's new row, what the result shows (`None`: `null`, deleted) and what the cloud is
/// told.
pub(super) struct Change {
    pub(super) row: TwinRow,
    pub(super) result: Option<MsgTwin>,
    pub(super) sync: MsgTwin,
}

impl Change {
    pub(super) fn added(row: TwinRow) -> Option<Change> {
        let msg = row.to_msg();
        Some(Change { result: Some(msg.clone()), sync: msg, row })
    }
}

pub(super) fn value_type(old: &TwinRow, m: &MsgTwin) -> String {
    if old.is_deleted() {
        m.metadata.as_ref().map(|t| t.ty.clone()).unwrap_or_else(|| "string".into())
    } else {
        old.attr_type.clone()
    }
}

/// A twin set to `null` (upstream `dealTwinDelete`, REST): only optional twins, marked deleted.
pub(super) fn delete_twin(old: &TwinRow, now: i64) -> Option<Change> {
    if !old.optional || old.is_deleted() {
        return None;
    }
    let _ = now;
    let mut row = old.clone();
    if let Some(mut v) = row.expected_version {
        v.edge += 1;
        row.expected_version = Some(v);
        row.expected = None;
        row.expected_meta = None;
    }
    if let Some(mut v) = row.actual_version {
        v.edge += 1;
        row.actual_version = Some(v);
        row.actual = None;
        row.actual_meta = None;
    }
    row.attr_type = TYPE_DELETED.into();
    let sync = row.to_msg();
    Some(Change { row, result: None, sync })
}

/// An update of an existing twin (upstream `dealTwinCompare`, REST): every value given is set
/// and its edge version bumped.
pub(super) fn compare_twin(old: &TwinRow, m: &MsgTwin, now: i64) -> Result<Option<Change>, &'static str> {
    let ty = value_type(old, m);
    let mut row = old.clone();
    let mut sync = MsgTwin::default();
    let mut changed = false;
    if let Some(e) = &m.expected {
        let value = e.value.clone().ok_or("the request body is wrong")?;
        validate_value(&ty, &value)?;
        let mut v = row.expected_version.unwrap_or_default();
        v.edge += 1;
        let meta = ValueMetadata { timestamp: now };
        row.expected = Some(value.clone());
        row.expected_meta = Some(meta);
        row.expected_version = Some(v);
        sync.expected = Some(TwinValue { value: Some(value), metadata: Some(meta) });
        sync.expected_version = Some(v);
        changed = true;
    }
    if let Some(a) = &m.actual {
        let value = a.value.clone().ok_or("the request body is wrong")?;
        validate_value(&ty, &value)?;
        let mut v = row.actual_version.unwrap_or_default();
        v.edge += 1;
        let meta = ValueMetadata { timestamp: now };
        row.actual = Some(value.clone());
        row.actual_meta = Some(meta);
        row.actual_version = Some(v);
        sync.actual = Some(TwinValue { value: Some(value), metadata: Some(meta) });
        sync.actual_version = Some(v);
        changed = true;
    }
    if let Some(o) = m.optional
        && o != row.optional
        && row.optional
    {
        row.optional = o;
        changed = true;
    }
    match &m.metadata {
        Some(meta) if meta.ty != row.attr_type => {
            row.metadata = "{}".into();
            if row.is_deleted() {
                row.attr_type = meta.ty.clone();
            }
            changed = true;
        }
        None if row.is_deleted() => {
            row.attr_type = "string".into();
            changed = true;
        }
        _ => {}
    }
    if !changed {
        return Ok(None);
    }
    sync.optional = Some(row.optional);
    sync.metadata = Some(TypeMetadata { ty: row.attr_type.clone() });
    Ok(Some(Change { result: Some(sync.clone()), sync, row }))
}

/// A new twin (upstream `dealTwinAdd`, REST): versions start at edge 1.
pub(super) fn add_twin(m: &MsgTwin, now: i64) -> Result<TwinRow, &'static str> {
    let ty = m.metadata.as_ref().map(|t| t.ty.clone()).unwrap_or_else(|| "string".into());
    let mut row = TwinRow {
        optional: m.optional.unwrap_or(true),
        attr_type: ty.clone(),
        metadata: if m.metadata.is_some() { "{}".into() } else { String::new() },
        ..TwinRow::default()
    };
    let first = TwinVersion { cloud: 0, edge: 1 };
    if let Some(e) = &m.expected {
        let value = e.value.clone().ok_or("the request body is wrong")?;
        validate_value(&ty, &value)?;
        row.expected = Some(value);
        row.expected_meta = Some(ValueMetadata { timestamp: now });
        row.expected_version = Some(first);
    }
    if let Some(a) = &m.actual {
        let value = a.value.clone().ok_or("the request body is wrong")?;
        validate_value(&ty, &value)?;
        row.actual = Some(value);
        row.actual_meta = Some(ValueMetadata { timestamp: now });
        row.actual_version = Some(first);
    }
    Ok(row)
}

/// The expected values (and types) of cloud twins.
pub(super) fn desired_of(twins: Twins) -> BTreeMap<String, (String, String)> {
    twins
        .into_iter()
        .filter_map(|(k, t)| {
            let t = t?;
            let v = t.expected.as_ref()?.value.clone().filter(|v| !v.is_empty())?;
            let ty = t.metadata.map(|m| m.ty).filter(|ty| validate_value(ty, &v).is_ok()).unwrap_or_default();
            Some((k, (v, ty)))
        })
        .collect()
}

/// The device's delta (upstream `BuildDeviceTwinDelta`): every twin with an expected value,
/// published only when one differs from its actual value.
pub(super) fn delta_of(dev: &DeviceState) -> Option<DeviceTwinDelta> {
    let mut twin = BTreeMap::new();
    let mut delta = BTreeMap::new();
    for (k, t) in &dev.twins {
        if t.is_deleted() {
            continue;
        }
        let Some(expected) = t.expected.as_deref().filter(|e| !e.is_empty()) else { continue };
        if Some(expected) != t.actual.as_deref() {
            delta.insert(k.clone(), expected.to_owned());
        }
        twin.insert(k.clone(), t.to_msg().without_versions());
    }
    (!delta.is_empty()).then(|| DeviceTwinDelta { event_id: uuid(), timestamp: now_millis(), twin, delta })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_follow_upstream_rules() {
        assert!(valid_token("temperature", 128));
        assert!(valid_token("a-b_c.d,e:f/g@h#i", 128));
        assert!(!valid_token("", 128));
        assert!(!valid_token("sp ace", 128));
        assert!(valid_token(&"k".repeat(128), 128));
        assert!(!valid_token(&"k".repeat(129), 128));
        assert!(valid_token(&"v".repeat(512), 512));
        assert!(!valid_token(&"v".repeat(513), 512));
        assert!(validate_value("int", "12").is_ok());
        assert!(validate_value("int", "1.5").is_err());
        assert!(validate_value("float", "1.5").is_ok());
        assert!(validate_value("boolean", "yes").is_err());
        assert!(validate_value("double", "1").is_err());
    }
}
