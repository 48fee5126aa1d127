//! Upstream's tables, statement for statement.
//!
//! Since v1.23 upstream creates its tables with GORM's `AutoMigrate` (`edge/pkg/metamanager/dao/init.go`)
//! from the models in `edge/pkg/metamanager/dao/models/{meta,device,eventbus,servicebus}.go`, through
//! `gorm.io/driver/sqlite` v1.5.7 and `gorm.io/gorm` v1.25.12. Each constant below is the text GORM's
//! `Migrator.CreateTable` builds for one model: backtick-quoted names, one `? ?` pair per column joined
//! by `,` with no space, `text` for strings whatever their `size`, `integer` for (u)int64, `numeric`
//! for bool, `integer PRIMARY KEY AUTOINCREMENT` inline for an auto-increment key and otherwise a
//! trailing `PRIMARY KEY (...)`; no `NOT NULL`, defaults or indexes. We run them with `IF NOT EXISTS`,
//! which SQLite drops when it records the table, so `sqlite_master.sql` is byte-identical to a table
//! upstream created, and upstream's `AutoMigrate` finds nothing to change in ours.
//!
//! Before v1.23 (beego ORM, v1.15–v1.22) `meta_v2` had columns `groupversionresource` and
//! `resourceversion`. Opening a store adds the two current columns to such a table, exactly as GORM's
//! `AddColumn` would (`ALTER TABLE ... ADD`), and copies the old values over, so an old node's
//! database opens in place. Nothing else of an existing table is touched.

use rusqlite::{Connection, TransactionBehavior};
use tracing::info;

/// `meta`: upstream's `models.Meta` (`Key` primaryKey size 256, `Type` size 32, `Value` text).
pub const META: &str = "CREATE TABLE IF NOT EXISTS `meta` (`key` text,`type` text,`value` text,PRIMARY KEY (`key`))";

/// `meta_v2`: upstream's `models.MetaV2`, the MetaServer store.
pub const META_V2: &str = "CREATE TABLE IF NOT EXISTS `meta_v2` (`key` text,`group_version_resource` text,\
`namespace` text,`name` text,`resource_version` integer,`value` text,PRIMARY KEY (`key`))";

/// `device`: upstream's `models.Device` (DeviceTwin).
pub const DEVICE: &str = "CREATE TABLE IF NOT EXISTS `device` (`id` text,`name` text,`description` text,\
`state` text,`last_online` text,PRIMARY KEY (`id`))";

/// `device_attr`: upstream's `models.DeviceAttr` (DeviceTwin).
pub const DEVICE_ATTR: &str = "CREATE TABLE IF NOT EXISTS `device_attr` (`id` integer PRIMARY KEY AUTOINCREMENT,\
`deviceid` text,`name` text,`description` text,`value` text,`optional` numeric,`attr_type` text,`metadata` text)";

/// `device_twin`: upstream's `models.DeviceTwin` (DeviceTwin). The version columns hold JSON
/// `{"cloud":n,"edge":n}`.
pub const DEVICE_TWIN: &str = "CREATE TABLE IF NOT EXISTS `device_twin` (`id` integer PRIMARY KEY AUTOINCREMENT,\
`deviceid` text,`name` text,`description` text,`expected` text,`actual` text,`expected_meta` text,\
`actual_meta` text,`expected_version` text,`actual_version` text,`optional` numeric,`attr_type` text,\
`metadata` text)";

/// `sub_topics`: upstream's `models.SubTopics` (EventBus).
pub const SUB_TOPICS: &str = "CREATE TABLE IF NOT EXISTS `sub_topics` (`topic` text,PRIMARY KEY (`topic`))";

/// `target_urls`: upstream's `models.TargetUrls` (ServiceBus).
pub const TARGET_URLS: &str = "CREATE TABLE IF NOT EXISTS `target_urls` (`url` text,PRIMARY KEY (`url`))";

/// Which tables beyond `meta` and `meta_v2` (always created) to create. Upstream migrates each
/// module's tables only when that module is enabled; all are off by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tables {
    /// `device`, `device_attr`, `device_twin` (module `twin`).
    pub device_twin: bool,
    /// `sub_topics` (module `eventbus`).
    pub event_bus: bool,
    /// `target_urls` (module `servicebus`).
    pub service_bus: bool,
}

impl Tables {
    /// Every table.
    pub const ALL: Tables = Tables { device_twin: true, event_bus: true, service_bus: true };

    /// The statements to run, in upstream's migration order.
    pub fn statements(&self) -> Vec<&'static str> {
        let mut out = Vec::with_capacity(7);
        if self.device_twin {
            out.extend([DEVICE, DEVICE_ATTR, DEVICE_TWIN]);
        }
        if self.event_bus {
            out.push(SUB_TOPICS);
        }
        out.extend([META, META_V2]);
        if self.service_bus {
            out.push(TARGET_URLS);
        }
        out
    }
}

/// Creates the missing tables and adapts a beego-era `meta_v2`, in one transaction.
pub(crate) fn prepare(conn: &mut Connection, tables: Tables) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for ddl in tables.statements() {
        tx.execute_batch(ddl)?;
    }
    adapt_legacy_meta_v2(&tx)?;
    tx.commit()
}

/// The column pairs (current, beego-era) of `meta_v2` and the type GORM adds the current one with.
const RENAMED_V2_COLUMNS: [(&str, &str, &str); 2] =
    [("group_version_resource", "groupversionresource", "text"), ("resource_version", "resourceversion", "integer")];

fn adapt_legacy_meta_v2(conn: &Connection) -> rusqlite::Result<()> {
    let columns = table_columns(conn, "meta_v2")?;
    for (current, legacy, ty) in RENAMED_V2_COLUMNS {
        if columns.iter().any(|c| c == current) {
            continue;
        }
        conn.execute_batch(&format!("ALTER TABLE `meta_v2` ADD `{current}` {ty}"))?;
        let copied = if columns.iter().any(|c| c == legacy) {
            conn.execute(&format!("UPDATE `meta_v2` SET `{current}` = `{legacy}`"), [])?
        } else {
            0
        };
        info!(column = current, legacy, rows = copied, "Added column to a pre-v1.23 meta_v2 table.");
    }
    Ok(())
}

fn table_columns(conn: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1)")?;
    let names = stmt.query_map([table], |row| row.get::<_, String>(0))?;
    names.collect()
}
