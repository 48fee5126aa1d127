//! The twin's rows in upstream's `device`, `device_attr` and `device_twin` tables, and the
//! unconfirmed reports in `device_report_outbox` (ours).

use std::collections::{BTreeMap, HashMap};

use kubeedge_metastore::{Op, SqlValue, Store};

use super::types::{Device, MsgAttr, MsgTwin, TwinValue, TwinVersion, TypeMetadata, ValueMetadata};

/// One `device_twin` row, as upstream stores it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TwinRow {
    /// `description`.
    pub description: String,
    /// `expected` (NULL once deleted).
    pub expected: Option<String>,
    /// `actual`.
    pub actual: Option<String>,
    /// `expected_meta` (`{"timestamp":ms}`), if set.
    pub expected_meta: Option<ValueMetadata>,
    /// `actual_meta`.
    pub actual_meta: Option<ValueMetadata>,
    /// `expected_version` (`{"cloud":n,"edge":n}`), if set.
    pub expected_version: Option<TwinVersion>,
    /// `actual_version`.
    pub actual_version: Option<TwinVersion>,
    /// `optional`.
    pub optional: bool,
    /// `attr_type`.
    pub attr_type: String,
    /// `metadata` (upstream writes the type metadata with the type removed: `{}`).
    pub metadata: String,
}

impl TwinRow {
    /// The twin as upstream's `DeviceTwinToMsgTwin` builds it from the row (an empty value is
    /// no value).
    pub fn to_msg(&self) -> MsgTwin {
        let value = |v: &Option<String>, m: &Option<ValueMetadata>| {
            v.as_ref().filter(|s| !s.is_empty()).map(|s| TwinValue { value: Some(s.clone()), metadata: *m })
        };
        MsgTwin {
            expected: value(&self.expected, &self.expected_meta),
            actual: value(&self.actual, &self.actual_meta),
            optional: Some(self.optional),
            metadata: Some(TypeMetadata { ty: self.attr_type.clone() }),
            expected_version: self.expected_version,
            actual_version: self.actual_version,
        }
    }

    /// Whether the type is `deleted`.
    pub fn is_deleted(&self) -> bool {
        self.attr_type == super::TYPE_DELETED
    }
}

/// One `device_attr` row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttrRow {
    /// `description`.
    pub description: String,
    /// `value`.
    pub value: String,
    /// `optional`.
    pub optional: bool,
    /// `attr_type`.
    pub attr_type: String,
    /// `metadata`.
    pub metadata: String,
}

/// A device with its attributes and twins, as held in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceState {
    /// `name`.
    pub name: String,
    /// `description`.
    pub description: String,
    /// `state`.
    pub state: String,
    /// `last_online`.
    pub last_online: String,
    /// Attributes by name.
    pub attrs: BTreeMap<String, AttrRow>,
    /// Twins by name.
    pub twins: BTreeMap<String, TwinRow>,
}

impl DeviceState {
    /// The device as `membership/get/result` lists it (no twins, as upstream).
    pub fn to_device(&self, id: &str) -> Device {
        Device {
            id: id.to_owned(),
            name: self.name.clone(),
            description: self.description.clone(),
            state: self.state.clone(),
            last_online: self.last_online.clone(),
            attributes: self
                .attrs
                .iter()
                .map(|(k, a)| {
                    let m = MsgAttr {
                        value: a.value.clone(),
                        optional: Some(a.optional),
                        metadata: Some(TypeMetadata { ty: a.attr_type.clone() }),
                    };
                    (k.clone(), m)
                })
                .collect(),
            twin: BTreeMap::new(),
        }
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn parse<T: serde::de::DeserializeOwned>(s: &SqlValue) -> Option<T> {
    let t = s.text();
    if t.is_empty() { None } else { serde_json::from_str(&t).ok() }
}

fn opt_text(v: &SqlValue) -> Option<String> {
    if v.is_null() { None } else { Some(v.text()) }
}

/// Every device, from the three tables.
pub async fn load(store: &Store) -> Result<HashMap<String, DeviceState>, kubeedge_metastore::Error> {
    let mut out: HashMap<String, DeviceState> = HashMap::new();
    let devices =
        store.query("SELECT `id`,`name`,`description`,`state`,`last_online` FROM `device`", Vec::new()).await?;
    for r in devices {
        let d = DeviceState {
            name: r[1].text(),
            description: r[2].text(),
            state: r[3].text(),
            last_online: r[4].text(),
            ..DeviceState::default()
        };
        out.insert(r[0].text(), d);
    }
    let attrs = store
        .query(
            "SELECT `deviceid`,`name`,`description`,`value`,`optional`,`attr_type`,`metadata` FROM `device_attr` ORDER BY `id`",
            Vec::new(),
        )
        .await?;
    for r in attrs {
        if let Some(d) = out.get_mut(&r[0].text()) {
            let a = AttrRow {
                description: r[2].text(),
                value: r[3].text(),
                optional: r[4].integer() != 0,
                attr_type: r[5].text(),
                metadata: r[6].text(),
            };
            d.attrs.insert(r[1].text(), a);
        }
    }
    let twins = store
        .query(
            "SELECT `deviceid`,`name`,`description`,`expected`,`actual`,`expected_meta`,`actual_meta`,\
             `expected_version`,`actual_version`,`optional`,`attr_type`,`metadata` FROM `device_twin` ORDER BY `id`",
            Vec::new(),
        )
        .await?;
    for r in twins {
        if let Some(d) = out.get_mut(&r[0].text()) {
            let t = TwinRow {
                description: r[2].text(),
                expected: opt_text(&r[3]),
                actual: opt_text(&r[4]),
                expected_meta: parse(&r[5]),
                actual_meta: parse(&r[6]),
                expected_version: parse(&r[7]),
                actual_version: parse(&r[8]),
                optional: r[9].integer() != 0,
                attr_type: r[10].text(),
                metadata: r[11].text(),
            };
            d.twins.insert(r[1].text(), t);
        }
    }
    Ok(out)
}

/// Inserts a device row (upstream `AddDeviceTrans`).
pub fn insert_device(id: &str, d: &DeviceState) -> Op {
    Op::Exec {
        sql: "INSERT INTO `device` (`id`,`name`,`description`,`state`,`last_online`) VALUES (?1,?2,?3,?4,?5) \
              ON CONFLICT (`id`) DO UPDATE SET `name` = excluded.`name`, `description` = excluded.`description`",
        params: vec![
            id.into(),
            d.name.clone().into(),
            d.description.clone().into(),
            d.state.clone().into(),
            d.last_online.clone().into(),
        ],
    }
}

/// Removes a device and its attributes and twins (upstream `DeleteDeviceTrans`).
pub fn delete_device(id: &str) -> Vec<Op> {
    vec![
        Op::Exec { sql: "DELETE FROM `device` WHERE `id` = ?1", params: vec![id.into()] },
        Op::Exec { sql: "DELETE FROM `device_attr` WHERE `deviceid` = ?1", params: vec![id.into()] },
        Op::Exec { sql: "DELETE FROM `device_twin` WHERE `deviceid` = ?1", params: vec![id.into()] },
    ]
}

/// Sets `state` and `last_online` (upstream `UpdateDeviceFields`).
pub fn update_state(id: &str, state: &str, last_online: &str) -> Op {
    Op::Exec {
        sql: "UPDATE `device` SET `state` = ?2, `last_online` = ?3 WHERE `id` = ?1",
        params: vec![id.into(), state.into(), last_online.into()],
    }
}

fn twin_params(id: &str, name: &str, t: &TwinRow) -> Vec<SqlValue> {
    vec![
        id.into(),
        name.into(),
        t.description.clone().into(),
        t.expected.clone().into(),
        t.actual.clone().into(),
        t.expected_meta.map(|m| json(&m)).into(),
        t.actual_meta.map(|m| json(&m)).into(),
        t.expected_version.map(|v| json(&v)).into(),
        t.actual_version.map(|v| json(&v)).into(),
        t.optional.into(),
        t.attr_type.clone().into(),
        t.metadata.clone().into(),
    ]
}

/// Inserts a twin row.
pub fn insert_twin(id: &str, name: &str, t: &TwinRow) -> Op {
    Op::Exec {
        sql: "INSERT INTO `device_twin` (`deviceid`,`name`,`description`,`expected`,`actual`,`expected_meta`,\
              `actual_meta`,`expected_version`,`actual_version`,`optional`,`attr_type`,`metadata`) \
              VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12)",
        params: twin_params(id, name, t),
    }
}

/// Rewrites a twin row (upstream `DeviceTwinTrans` updates, by device id and name).
pub fn update_twin(id: &str, name: &str, t: &TwinRow) -> Op {
    Op::Exec {
        sql: "UPDATE `device_twin` SET `description` = ?3, `expected` = ?4, `actual` = ?5, `expected_meta` = ?6, \
              `actual_meta` = ?7, `expected_version` = ?8, `actual_version` = ?9, `optional` = ?10, \
              `attr_type` = ?11, `metadata` = ?12 WHERE `deviceid` = ?1 AND `name` = ?2",
        params: twin_params(id, name, t),
    }
}

/// Upserts an attribute row (delete, then insert: the table has no unique key).
pub fn put_attr(id: &str, name: &str, a: &AttrRow) -> Vec<Op> {
    vec![
        delete_attr(id, name),
        Op::Exec {
            sql: "INSERT INTO `device_attr` (`deviceid`,`name`,`description`,`value`,`optional`,`attr_type`,`metadata`) \
                  VALUES (?1,?2,?3,?4,?5,?6,?7)",
            params: vec![
                id.into(),
                name.into(),
                a.description.clone().into(),
                a.value.clone().into(),
                a.optional.into(),
                a.attr_type.clone().into(),
                a.metadata.clone().into(),
            ],
        },
    ]
}

/// Removes an attribute row.
pub fn delete_attr(id: &str, name: &str) -> Op {
    Op::Exec {
        sql: "DELETE FROM `device_attr` WHERE `deviceid` = ?1 AND `name` = ?2",
        params: vec![id.into(), name.into()],
    }
}

// === the outbox of reports to the cloud ===

/// Our table of reports the cloud has not confirmed yet (upstream keeps them in memory only):
/// one row per device twin property (`kind` = `twin`, `value` = the MsgTwin, merged field by
/// field so the latest value wins) and per device state (`kind` = `state`, `value` = the
/// DeviceCloudMsg); `seq` orders versions of a row so a confirmation of an older send keeps a
/// newer value.
pub const OUTBOX_DDL: &str = "CREATE TABLE IF NOT EXISTS `device_report_outbox` (`key` text,`device` text,\
`kind` text,`name` text,`value` text,`seq` integer,PRIMARY KEY (`key`))";

/// Upserts an outbox row.
pub fn put_report(key: &str, device: &str, kind: &str, name: &str, value: &str, seq: i64) -> Op {
    Op::Exec {
        sql: "INSERT INTO `device_report_outbox` (`key`,`device`,`kind`,`name`,`value`,`seq`) VALUES (?1,?2,?3,?4,?5,?6) \
              ON CONFLICT (`key`) DO UPDATE SET `value` = excluded.`value`, `seq` = excluded.`seq`",
        params: vec![key.into(), device.into(), kind.into(), name.into(), value.into(), seq.into()],
    }
}

/// Removes an outbox row if it still holds version `seq`.
pub fn confirm_report(key: &str, seq: i64) -> Op {
    Op::Exec {
        sql: "DELETE FROM `device_report_outbox` WHERE `key` = ?1 AND `seq` = ?2",
        params: vec![key.into(), seq.into()],
    }
}

/// Removes every report of a device.
pub fn drop_reports(device: &str) -> Op {
    Op::Exec { sql: "DELETE FROM `device_report_outbox` WHERE `device` = ?1", params: vec![device.into()] }
}

/// The stored reports: (key, device, kind, name, value, seq).
pub async fn load_reports(
    store: &Store,
) -> Result<Vec<(String, String, String, String, String, i64)>, kubeedge_metastore::Error> {
    store.apply(vec![Op::Exec { sql: OUTBOX_DDL, params: Vec::new() }]).await?;
    let rows = store
        .query(
            "SELECT `key`,`device`,`kind`,`name`,`value`,`seq` FROM `device_report_outbox` ORDER BY `seq`",
            Vec::new(),
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r[0].text(), r[1].text(), r[2].text(), r[3].text(), r[4].text(), r[5].integer()))
        .collect())
}
