//! The store's contract on real SQLite files: every op, per-call atomicity inside batched
//! commits, concurrent writers, reopening.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use kubeedge_metastore::{Error, MetaRow, MetaV2Row, Op, Options, Store, Synchronous, gvr_string, v2_key};
use rusqlite::Connection;

const PATIENCE: Duration = Duration::from_secs(60);

async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(PATIENCE, f).await.expect("likely deadlocked")
}

fn meta(key: &str, ty: &str, value: &str) -> MetaRow {
    MetaRow { key: key.into(), ty: ty.into(), value: value.into() }
}

fn v2(group: &str, plural: &str, ns: &str, name: &str, rv: u64) -> MetaV2Row {
    MetaV2Row {
        key: v2_key(group, "v1", plural, Some(ns), Some(name)),
        gvr: gvr_string(group, "v1", plural),
        namespace: ns.into(),
        name: name.into(),
        resource_version: rv,
        value: format!(r#"{{"metadata":{{"name":"{name}","resourceVersion":"{rv}"}}}}"#),
    }
}

fn open(dir: &Path) -> Store {
    Store::open(dir.join("edgecore.db"), Options::default()).expect("open store")
}

#[tokio::test]
async fn meta_ops_round_trip() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        assert_eq!(store.get("default/pod/nginx").await.unwrap(), None);

        store
            .apply(vec![
                Op::UpsertMeta(meta("default/pod/web", "pod", r#"{"uid":"u-web"}"#)),
                Op::UpsertMeta(meta("default/pod/nginx", "pod", r#"{"uid":"u-1"}"#)),
                Op::UpsertMeta(meta("default/configmap/cfg", "configmap", "{}")),
                Op::UpsertMeta(meta("default/podpatch/nginx", "podpatch", r#"{"status":{}}"#)),
            ])
            .await
            .unwrap();
        assert_eq!(
            store.get("default/pod/nginx").await.unwrap(),
            Some(meta("default/pod/nginx", "pod", r#"{"uid":"u-1"}"#))
        );
        let pods = store.list_by_type("pod").await.unwrap();
        assert_eq!(pods.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(), ["default/pod/nginx", "default/pod/web"]);
        assert!(store.list_by_type("secret").await.unwrap().is_empty());

        // Upsert replaces.
        store.apply(vec![Op::UpsertMeta(meta("default/pod/nginx", "pod", r#"{"uid":"u-2"}"#))]).await.unwrap();
        assert_eq!(store.get("default/pod/nginx").await.unwrap().unwrap().value, r#"{"uid":"u-2"}"#);

        // The guarded delete leaves a newer incarnation alone, and reports what it removed.
        let counts = store
            .apply_counted(vec![Op::DeleteMetaIfValueContains {
                key: "default/pod/nginx".into(),
                needle: "u-1".into(),
            }])
            .await
            .unwrap();
        assert_eq!(counts, [0]);
        assert!(store.get("default/pod/nginx").await.unwrap().is_some());
        let counts = store
            .apply_counted(vec![
                Op::DeleteMetaIfValueContains { key: "default/pod/nginx".into(), needle: "u-2".into() },
                Op::DeleteMeta { key: "default/podpatch/nginx".into() },
                Op::DeleteMeta { key: "default/podpatch/absent".into() },
            ])
            .await
            .unwrap();
        assert_eq!(counts, [1, 1, 0]);
        assert_eq!(store.get("default/pod/nginx").await.unwrap(), None);
        assert_eq!(store.get("default/podpatch/nginx").await.unwrap(), None);

        store.apply(vec![Op::DeleteMeta { key: "default/configmap/cfg".into() }]).await.unwrap();
        assert_eq!(store.get("default/configmap/cfg").await.unwrap(), None);
        assert_eq!(store.apply_counted(vec![]).await.unwrap(), Vec::<usize>::new());
        store.close().unwrap();
    })
    .await
}

#[tokio::test]
async fn like_wildcards_in_the_needle_match_literally() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let key = "default/pod/p";
        store.apply(vec![Op::UpsertMeta(meta(key, "pod", "abc"))]).await.unwrap();
        for needle in ["%", "_", "a_c", "a%c", "\\", "b\\"] {
            let counts = store
                .apply_counted(vec![Op::DeleteMetaIfValueContains { key: key.into(), needle: needle.into() }])
                .await
                .unwrap();
            assert_eq!(counts, [0], "needle {needle:?} must not match \"abc\"");
        }
        store.apply(vec![Op::UpsertMeta(meta(key, "pod", r"x a_c%\ y"))]).await.unwrap();
        let counts = store
            .apply_counted(vec![Op::DeleteMetaIfValueContains { key: key.into(), needle: r"a_c%\".into() }])
            .await
            .unwrap();
        assert_eq!(counts, [1]);
    })
    .await
}

#[tokio::test]
async fn meta_v2_ops_round_trip() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        assert_eq!(store.max_resource_version().await.unwrap(), 0);

        let nginx = v2("", "pods", "default", "nginx", 1234);
        let web = v2("", "pods", "default", "web", 1300);
        let dns = v2("", "pods", "kube-system", "dns", 900);
        let node = MetaV2Row { namespace: String::new(), ..v2("", "nodes", "", "edge-1", 1200) };
        let deploy = v2("apps", "deployments", "default", "web", 1500);
        store
            .apply(vec![
                Op::UpsertV2(web.clone()),
                Op::UpsertV2(nginx.clone()),
                Op::UpsertV2(dns.clone()),
                Op::UpsertV2(node.clone()),
                Op::UpsertV2(deploy.clone()),
            ])
            .await
            .unwrap();
        assert_eq!(nginx.key, "/core/v1/pods/default/nginx");
        assert_eq!(nginx.gvr, "/v1, Resource=pods");
        assert_eq!(store.get_v2("/core/v1/pods/default/nginx").await.unwrap(), Some(nginx.clone()));
        assert_eq!(store.get_v2("/core/v1/nodes/null/edge-1").await.unwrap(), Some(node.clone()));
        assert_eq!(store.max_resource_version().await.unwrap(), 1500);

        let pods = "/v1, Resource=pods";
        assert_eq!(store.list_v2(pods, Some("default")).await.unwrap(), [nginx.clone(), web.clone()]);
        assert_eq!(store.list_v2(pods, None).await.unwrap(), [nginx.clone(), web.clone(), dns.clone()]);
        // Upstream's "null" and "" namespaces mean all namespaces.
        assert_eq!(store.list_v2(pods, Some("null")).await.unwrap().len(), 3);
        assert_eq!(store.list_v2(pods, Some("")).await.unwrap().len(), 3);
        assert_eq!(store.list_v2("apps/v1, Resource=deployments", None).await.unwrap(), [deploy]);
        assert!(store.list_v2(pods, Some("other")).await.unwrap().is_empty());

        let newer = MetaV2Row { resource_version: 2000, value: "{}".into(), ..nginx.clone() };
        store.apply(vec![Op::UpsertV2(newer.clone()), Op::DeleteV2 { key: web.key.clone() }]).await.unwrap();
        assert_eq!(store.get_v2(&nginx.key).await.unwrap(), Some(newer));
        assert_eq!(store.get_v2(&web.key).await.unwrap(), None);
        assert_eq!(store.max_resource_version().await.unwrap(), 2000);

        // The largest value SQLite holds round-trips.
        let big = MetaV2Row { resource_version: i64::MAX as u64, ..dns.clone() };
        store.apply(vec![Op::UpsertV2(big.clone())]).await.unwrap();
        assert_eq!(store.get_v2(&dns.key).await.unwrap(), Some(big));
        assert_eq!(store.max_resource_version().await.unwrap(), i64::MAX as u64);
    })
    .await
}

#[tokio::test]
async fn a_failing_op_rolls_back_its_whole_call() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let err = store
            .apply(vec![
                Op::UpsertMeta(meta("default/pod/a", "pod", "{}")),
                Op::DeleteMeta { key: "x".into() },
                Op::UpsertV2(v2("", "pods", "default", "a", u64::MAX)),
            ])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::ResourceVersionOutOfRange(u64::MAX)), "{err:?}");
        assert_eq!(store.get("default/pod/a").await.unwrap(), None);
        // The store goes on.
        store.apply(vec![Op::UpsertMeta(meta("default/pod/a", "pod", "{}"))]).await.unwrap();
        assert!(store.get("default/pod/a").await.unwrap().is_some());
    })
    .await
}

/// Failing calls queued together with good ones: the bad ones commit nothing, the good ones all
/// commit. A second connection holds the write lock while the calls queue up, so they are served
/// in one round (one transaction, a savepoint each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_calls_do_not_poison_their_batch() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edgecore.db");
        let store = Store::open(&path, Options::default()).unwrap();

        // A trigger makes SQLite itself fail the statement for key "poison".
        let other = Connection::open(&path).unwrap();
        other
            .execute_batch(
                "CREATE TRIGGER poison BEFORE INSERT ON meta WHEN NEW.key = 'poison' \
                 BEGIN SELECT RAISE(ABORT, 'poisoned'); END;",
            )
            .unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();

        let first = tokio::spawn({
            let store = store.clone();
            async move { store.apply(vec![Op::UpsertMeta(meta("first", "t", "{}"))]).await }
        });
        let mut calls = Vec::new();
        for i in 0..60 {
            let store = store.clone();
            calls.push(tokio::spawn(async move {
                let ops = match i % 3 {
                    0 => vec![
                        Op::UpsertMeta(meta(&format!("good-{i}"), "t", "{}")),
                        Op::UpsertV2(v2("", "pods", "ns", &format!("good-{i}"), i)),
                    ],
                    1 => vec![
                        Op::UpsertMeta(meta(&format!("bad-sql-{i}"), "t", "{}")),
                        Op::UpsertMeta(meta("poison", "t", "{}")),
                    ],
                    _ => vec![
                        Op::UpsertMeta(meta(&format!("bad-rv-{i}"), "t", "{}")),
                        Op::UpsertV2(v2("", "pods", "ns", "x", u64::MAX)),
                    ],
                };
                (i, store.apply(ops).await)
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        other.execute_batch("COMMIT").unwrap();

        first.await.unwrap().unwrap();
        for call in calls {
            let (i, result) = call.await.unwrap();
            match i % 3 {
                0 => result.unwrap(),
                1 => assert!(matches!(result, Err(Error::Sqlite(_))), "call {i}: {result:?}"),
                _ => assert!(matches!(result, Err(Error::ResourceVersionOutOfRange(_))), "call {i}: {result:?}"),
            }
        }
        for i in 0..60u64 {
            let present = |key: String| {
                let store = store.clone();
                async move { store.get(&key).await.unwrap().is_some() }
            };
            match i % 3 {
                0 => {
                    assert!(present(format!("good-{i}")).await);
                    assert!(
                        store
                            .get_v2(&v2_key("", "v1", "pods", Some("ns"), Some(&format!("good-{i}"))))
                            .await
                            .unwrap()
                            .is_some()
                    );
                }
                1 => assert!(!present(format!("bad-sql-{i}")).await),
                _ => assert!(!present(format!("bad-rv-{i}")).await),
            }
        }
        assert_eq!(store.get("poison").await.unwrap(), None);
        assert!(store.get_v2("/core/v1/pods/ns/x").await.unwrap().is_none());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_all_commit() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::open(dir.path().join("edgecore.db"), Options { batch_max: 64, ..Options::default() }).unwrap();
        const TASKS: usize = 64;
        const CALLS: usize = 40;
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for c in 0..CALLS {
                    let name = format!("p-{t}-{c}");
                    store
                        .apply(vec![
                            Op::UpsertMeta(meta(&format!("default/pod/{name}"), "pod", &name)),
                            Op::UpsertV2(v2("", "pods", "default", &name, (t * CALLS + c) as u64 + 1)),
                        ])
                        .await
                        .unwrap();
                    // Read-your-writes: a call that returned is visible.
                    assert_eq!(store.get(&format!("default/pod/{name}")).await.unwrap().unwrap().value, name);
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(store.list_by_type("pod").await.unwrap().len(), TASKS * CALLS);
        assert_eq!(store.list_v2("/v1, Resource=pods", Some("default")).await.unwrap().len(), TASKS * CALLS);
        assert_eq!(store.max_resource_version().await.unwrap(), (TASKS * CALLS) as u64);
        store.close().unwrap();

        // And all of it is on disk.
        let conn = Connection::open(dir.path().join("edgecore.db")).unwrap();
        let n: i64 = conn.query_row("SELECT COUNT(*) FROM meta", [], |r| r.get(0)).unwrap();
        assert_eq!(n as usize, TASKS * CALLS);
    })
    .await
}

#[tokio::test]
async fn reopen_keeps_rows_and_settings() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edgecore.db");
        let store = Store::open(&path, Options { synchronous: Synchronous::Normal, ..Options::default() }).unwrap();
        store.apply(vec![Op::UpsertMeta(meta("null/node/edge-1", "node", "{}"))]).await.unwrap();
        let clone = store.clone();
        // Closing one of two handles returns at once; the other still works.
        store.close().unwrap();
        assert!(clone.get("null/node/edge-1").await.unwrap().is_some());
        drop(clone);

        let store = open(dir.path());
        assert_eq!(store.get("null/node/edge-1").await.unwrap(), Some(meta("null/node/edge-1", "node", "{}")));
        store.close().unwrap();

        let conn = Connection::open(&path).unwrap();
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
    })
    .await
}

#[test]
fn open_requires_an_existing_directory() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir");
    let err = Store::open(missing.join("edgecore.db"), Options::default()).unwrap_err();
    assert!(matches!(&err, Error::MissingDirectory(d) if *d == missing), "{err:?}");
    assert!(!missing.exists());

    // A file where the database should be is an open error, not a panic.
    let dir_as_db = dir.path().join("sub");
    std::fs::create_dir(&dir_as_db).unwrap();
    assert!(Store::open(&dir_as_db, Options::default()).is_err());
}

#[test]
fn only_meta_tables_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edgecore.db");
    Store::open(&path, Options::default()).unwrap().close().unwrap();
    let conn = Connection::open(&path).unwrap();
    let mut stmt = conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").unwrap();
    let names: Vec<String> = stmt.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(names, ["meta", "meta_v2"]);
}

/// A database locked by someone else for longer than the busy timeout fails the queued calls
/// once (not once per call), and the store works again when the lock goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_past_the_busy_timeout_fails_the_round_once() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edgecore.db");
        let busy_timeout = Duration::from_millis(200);
        let store = Store::open(&path, Options { busy_timeout, ..Options::default() }).unwrap();
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();

        let started = std::time::Instant::now();
        let calls: Vec<_> = (0..50)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move { store.apply(vec![Op::UpsertMeta(meta(&format!("k{i}"), "t", "{}"))]).await })
            })
            .collect();
        for call in calls {
            let err = call.await.unwrap().unwrap_err();
            match &err {
                Error::Sqlite(e) => {
                    assert_eq!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy), "{err:?}")
                }
                _ => panic!("{err:?}"),
            }
        }
        // One or two rounds of waiting, not fifty.
        assert!(started.elapsed() < busy_timeout * 10, "took {:?}", started.elapsed());

        other.execute_batch("ROLLBACK").unwrap();
        store.apply(vec![Op::UpsertMeta(meta("after", "t", "{}"))]).await.unwrap();
        assert!(store.get("after").await.unwrap().is_some());
        assert_eq!(store.get("k0").await.unwrap(), None);
    })
    .await
}
