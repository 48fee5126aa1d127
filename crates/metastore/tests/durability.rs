//! Commit-then-ACK: every `apply` that returned `Ok` survives `kill -9` of the process.
//!
//! The test re-executes its own binary as the child (selected by `METASTORE_DURABILITY_DB`). The
//! child writes from many concurrent tasks and prints `committed <key> ok` after each `Ok`; the
//! parent SIGKILLs it mid-stream, then reopens the database and looks for every printed key.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kubeedge_metastore::{MetaRow, MetaV2Row, Op, Options, Store, Synchronous, v2_key};

const CHILD_ENV: &str = "METASTORE_DURABILITY_DB";
const CHILD_SYNC_ENV: &str = "METASTORE_DURABILITY_SYNC";
/// Kill the child once it has reported this many commits.
const KILL_AFTER: usize = 400;
/// The child stops by itself after this long, whatever happens.
const CHILD_DEADLINE: Duration = Duration::from_secs(60);
const TEST_NAME: &str = "committed_rows_survive_sigkill";

#[test]
fn committed_rows_survive_sigkill() {
    if let Ok(db) = std::env::var(CHILD_ENV) {
        let sync = match std::env::var(CHILD_SYNC_ENV).as_deref() {
            Ok("NORMAL") => Synchronous::Normal,
            _ => Synchronous::Full,
        };
        return child(&db, sync);
    }
    for sync in ["FULL", "NORMAL"] {
        parent(sync);
    }
}

fn parent(sync: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("edgecore.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &db)
        .env(CHILD_SYNC_ENV, sync)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();

    let mut committed = Vec::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut killed = false;
    // Only whole lines count: a line cut by the kill has no " ok" at its end.
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(key) = line.strip_prefix("committed ").and_then(|l| l.strip_suffix(" ok")) {
            committed.push(key.to_owned());
        }
        if committed.len() >= KILL_AFTER && !killed {
            child.kill().unwrap(); // SIGKILL
            killed = true;
        }
    }
    let status = child.wait().unwrap();
    assert!(killed, "child ended before it was killed ({status}); saw {} commits", committed.len());
    assert!(!status.success());
    assert!(committed.len() >= KILL_AFTER);

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store = Store::open(&db, Options::default()).unwrap();
        let mut missing = Vec::new();
        for key in &committed {
            let meta = store.get(&format!("default/pod/{key}")).await.unwrap();
            let v2 = store.get_v2(&v2_key("", "v1", "pods", Some("default"), Some(key))).await.unwrap();
            if meta.is_none() || v2.is_none() {
                missing.push(key.clone());
            }
        }
        assert!(missing.is_empty(), "synchronous={sync}: {} committed keys lost: {missing:?}", missing.len());
        store.close().unwrap();
    });
    let conn = rusqlite::Connection::open(&db).unwrap();
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
}

fn child(db: &str, synchronous: Synchronous) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let store = Store::open(db, Options { synchronous, ..Options::default() }).unwrap();
        let started = Instant::now();
        let value = "x".repeat(2500);
        let mut tasks = Vec::new();
        for t in 0..16 {
            let store = store.clone();
            let value = value.clone();
            tasks.push(tokio::spawn(async move {
                let mut i = 0u64;
                while started.elapsed() < CHILD_DEADLINE {
                    let name = format!("p-{t}-{i}");
                    store
                        .apply(vec![
                            Op::UpsertMeta(MetaRow {
                                key: format!("default/pod/{name}"),
                                ty: "pod".into(),
                                value: value.clone(),
                            }),
                            Op::UpsertV2(MetaV2Row {
                                key: v2_key("", "v1", "pods", Some("default"), Some(&name)),
                                gvr: "/v1, Resource=pods".into(),
                                namespace: "default".into(),
                                name: name.clone(),
                                resource_version: i + 1,
                                value: value.clone(),
                            }),
                        ])
                        .await
                        .unwrap();
                    // The ACK: only now is the key reported.
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "committed {name} ok").unwrap();
                    out.flush().unwrap();
                    i += 1;
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
}
