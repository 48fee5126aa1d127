//! Upstream databases open in place, and ours have upstream's schema.
//!
//! `fixtures/upstream-edgecore.db` is built from `fixtures/upstream-edgecore.sql`: the exact
//! statements GORM runs for upstream v1.23's models, with upstream-shaped rows.
//! `fixtures/upstream-v1.22-edgecore.db` holds the beego-era MetaManager tables (v1.15–v1.22).

use std::path::{Path, PathBuf};
use std::time::Duration;

use kubeedge_metastore::{MetaRow, MetaV2Row, Op, Options, Store, Tables, gvr_string, schema, v2_key};
use rusqlite::Connection;

const PATIENCE: Duration = Duration::from_secs(60);

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Copies a fixture database into a fresh temp dir; returns the dir (keep it alive) and the copy.
fn copy_fixture(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edgecore.db");
    std::fs::copy(fixture(name), &path).unwrap();
    (dir, path)
}

/// `(type, name, sql)` of every schema object, in a stable order.
fn schema_of(path: &Path) -> Vec<(String, String, Option<String>)> {
    let conn = Connection::open(path).unwrap();
    let mut stmt = conn.prepare("SELECT type, name, sql FROM sqlite_master ORDER BY type, name").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().collect::<Result<_, _>>().unwrap()
}

/// Every row of `table` as text, ordered.
fn dump(conn: &Connection, table: &str) -> Vec<Vec<String>> {
    let mut stmt = conn.prepare(&format!("SELECT * FROM `{table}` ORDER BY 1")).unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |r| {
        (0..n)
            .map(|i| {
                Ok(match r.get_ref(i)? {
                    rusqlite::types::ValueRef::Null => "NULL".to_owned(),
                    rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                    rusqlite::types::ValueRef::Real(v) => v.to_string(),
                    rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    rusqlite::types::ValueRef::Blob(b) => format!("{b:?}"),
                })
            })
            .collect()
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    runtime().block_on(async { tokio::time::timeout(PATIENCE, f).await.expect("likely deadlocked") })
}

#[test]
fn fixture_db_matches_its_sql() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["upstream-edgecore", "upstream-v1.22-edgecore"] {
        let rebuilt = dir.path().join(format!("{name}.db"));
        let sql = std::fs::read_to_string(fixture(&format!("{name}.sql"))).unwrap();
        Connection::open(&rebuilt).unwrap().execute_batch(&sql).unwrap();
        let committed = fixture(&format!("{name}.db"));
        assert_eq!(schema_of(&committed), schema_of(&rebuilt), "{name}: schema");
        let (a, b) = (Connection::open(&committed).unwrap(), Connection::open(&rebuilt).unwrap());
        for (ty, table, _) in schema_of(&committed) {
            if ty == "table" {
                assert_eq!(dump(&a, &table), dump(&b, &table), "{name}: rows of {table}");
            }
        }
    }
}

#[test]
fn our_schema_is_the_one_upstream_creates() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("edgecore.db");
    Store::open(&ours, Options { tables: Tables::ALL, ..Options::default() }).unwrap().close().unwrap();
    assert_eq!(schema_of(&ours), schema_of(&fixture("upstream-edgecore.db")));

    // And the constants are the fixture's statements, with IF NOT EXISTS.
    let sql = std::fs::read_to_string(fixture("upstream-edgecore.sql")).unwrap();
    for ddl in Tables::ALL.statements() {
        let upstream = ddl.replace("CREATE TABLE IF NOT EXISTS ", "CREATE TABLE ") + ";";
        assert!(sql.lines().any(|l| l == upstream), "{upstream} not in the fixture");
    }
    assert_eq!(Tables::ALL.statements().len(), 7);
    assert!(Tables::default().statements() == [schema::META, schema::META_V2]);
}

#[test]
fn upstream_db_opens_in_place() {
    let (_dir, path) = copy_fixture("upstream-edgecore.db");
    let before = schema_of(&path);
    let (device_rows, twin_rows, topics) = {
        let conn = Connection::open(&path).unwrap();
        (dump(&conn, "device_attr"), dump(&conn, "device_twin"), dump(&conn, "sub_topics"))
    };

    block_on(async {
        let store = Store::open(&path, Options { tables: Tables::ALL, ..Options::default() }).unwrap();

        // Reads of upstream's rows.
        let pod = store.get("default/pod/nginx").await.unwrap().unwrap();
        assert_eq!(pod.ty, "pod");
        assert!(pod.value.contains(r#""uid":"8f6c2d4e-3b1a-4c5d-9e7f-0a1b2c3d4e5f""#));
        assert_eq!(store.get("null/node/edge-1").await.unwrap().unwrap().ty, "node");
        assert_eq!(store.list_by_type("configmap").await.unwrap()[0].key, "default/configmap/nginx-conf");
        assert_eq!(store.list_by_type("podpatch").await.unwrap().len(), 1);
        assert_eq!(
            store.list_by_type("devicemapper").await.unwrap()[0].key,
            "node/nodeID/namespace/devicemapper/modbus"
        );

        let key = v2_key("", "v1", "pods", Some("default"), Some("nginx"));
        let v2 = store.get_v2(&key).await.unwrap().unwrap();
        assert_eq!(
            (v2.gvr.as_str(), v2.namespace.as_str(), v2.name.as_str(), v2.resource_version),
            ("/v1, Resource=pods", "default", "nginx", 1234)
        );
        let nodes = store.list_v2(&gvr_string("", "v1", "nodes"), None).await.unwrap();
        assert_eq!(nodes.len(), 1);
        assert_eq!((nodes[0].key.as_str(), nodes[0].namespace.as_str()), ("/core/v1/nodes/null/edge-1", ""));
        let version = store.get_v2("/version").await.unwrap().unwrap();
        assert_eq!((version.gvr.as_str(), version.resource_version), ("", 0));
        let upgrade = gvr_string("operations.kubeedge.io", "v1alpha2", "nodeupgradejobspecs");
        assert_eq!(store.list_v2(&upgrade, None).await.unwrap()[0].name, "upgrade-1");
        assert_eq!(store.max_resource_version().await.unwrap(), 1234);

        // Writes: upstream's pod delete (pod row plus its podpatch), a new pod, a newer meta_v2 row.
        let counts = store
            .apply_counted(vec![Op::DeleteMetaIfValueContains {
                key: "default/pod/nginx".into(),
                needle: "8f6c2d4e-3b1a-4c5d-9e7f-0a1b2c3d4e5f".into(),
            }])
            .await
            .unwrap();
        assert_eq!(counts, [1]);
        store
            .apply(vec![
                Op::DeleteMeta { key: "default/podpatch/nginx".into() },
                Op::UpsertMeta(MetaRow {
                    key: "default/pod/web".into(),
                    ty: "pod".into(),
                    value: r#"{"metadata":{"name":"web","uid":"w"}}"#.into(),
                }),
                Op::DeleteV2 { key: key.clone() },
                Op::UpsertV2(MetaV2Row {
                    key: v2_key("", "v1", "pods", Some("default"), Some("web")),
                    gvr: gvr_string("", "v1", "pods"),
                    namespace: "default".into(),
                    name: "web".into(),
                    resource_version: 1300,
                    value: "{}".into(),
                }),
            ])
            .await
            .unwrap();
        assert_eq!(store.get("default/pod/nginx").await.unwrap(), None);
        assert_eq!(store.list_by_type("pod").await.unwrap()[0].key, "default/pod/web");
        assert_eq!(store.max_resource_version().await.unwrap(), 1300);
        store.close().unwrap();
    });

    // Schema byte-identical, other modules' tables untouched.
    assert_eq!(schema_of(&path), before);
    let conn = Connection::open(&path).unwrap();
    assert_eq!(dump(&conn, "device_attr"), device_rows);
    assert_eq!(dump(&conn, "device_twin"), twin_rows);
    assert_eq!(dump(&conn, "sub_topics"), topics);
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
    // What an upstream edgecore reads back, with its own statement.
    let web: String = conn
        .query_row("SELECT group_version_resource FROM meta_v2 WHERE key = ?1", ["/core/v1/pods/default/web"], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(web, "/v1, Resource=pods");
}

#[test]
fn pre_v1_23_db_opens_in_place() {
    let (_dir, path) = copy_fixture("upstream-v1.22-edgecore.db");
    let before = schema_of(&path);

    block_on(async {
        let store = Store::open(&path, Options::default()).unwrap();
        assert_eq!(store.get("default/node/edge-1").await.unwrap().unwrap().ty, "node");
        // The old columns' values are visible under the new names.
        let pod = store.get_v2("/core/v1/pods/default/nginx").await.unwrap().unwrap();
        assert_eq!((pod.gvr.as_str(), pod.resource_version), ("/v1, Resource=pods", 1234));
        assert_eq!(store.list_v2("/v1, Resource=nodes", None).await.unwrap().len(), 1);
        assert_eq!(store.max_resource_version().await.unwrap(), 1234);
        store
            .apply(vec![Op::UpsertV2(MetaV2Row {
                key: "/core/v1/pods/default/web".into(),
                gvr: "/v1, Resource=pods".into(),
                namespace: "default".into(),
                name: "web".into(),
                resource_version: 1300,
                value: "{}".into(),
            })])
            .await
            .unwrap();
        assert_eq!(store.list_v2("/v1, Resource=pods", Some("default")).await.unwrap().len(), 2);
        store.close().unwrap();
    });

    // meta untouched; meta_v2 gained exactly GORM's two ADD COLUMNs.
    let after = schema_of(&path);
    let meta_v2 = |s: &[(String, String, Option<String>)]| {
        s.iter().find(|(ty, name, _)| ty == "table" && name == "meta_v2").unwrap().2.clone().unwrap()
    };
    assert_eq!(
        after.iter().filter(|(_, n, _)| n != "meta_v2").collect::<Vec<_>>(),
        before.iter().filter(|(_, n, _)| n != "meta_v2").collect::<Vec<_>>()
    );
    assert_eq!(
        meta_v2(&after),
        meta_v2(&before).trim_end_matches(')').to_owned()
            + ", `group_version_resource` text, `resource_version` integer)"
    );

    // Reopening changes nothing more.
    Store::open(&path, Options::default()).unwrap().close().unwrap();
    assert_eq!(schema_of(&path), after);
}
