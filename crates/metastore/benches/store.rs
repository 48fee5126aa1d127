//! Upserts per second of 2.5 KB pod JSON rows into `meta`, through the public API, on a real file
//! under the target dir (not tmpfs, so fsync costs what it costs).
//!
//! - `batched_64/*`, `batched_256/*`: 64 or 256 tasks call `apply` (one upsert each)
//!   concurrently, so the store thread commits many calls per transaction, as under a burst of
//!   cloud messages.
//! - `one_at_a_time/*`: a single caller waits for each commit before the next.
//!
//! For `synchronous=FULL` (the default) and `NORMAL`. Keys cycle over 1,000 pods (a busy edge
//! node's worth of objects), so most upserts replace a row; every write carries a new
//! resourceVersion, because SQLite skips the page write when a row is rewritten byte for byte.
//!
//! Run: `cargo bench -p kubeedge-metastore --bench store`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kubeedge_metastore::{MetaRow, Op, Options, Store, Synchronous};

/// Distinct pod keys.
const PODS: u64 = 1_000;
/// Size of one pod's JSON.
const POD_JSON_LEN: usize = 2500;

fn pod_json(name: &str, resource_version: u64) -> String {
    let mut json = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","namespace":"default","uid":"8f6c2d4e-3b1a-4c5d-9e7f-0a1b2c3d4e5f","resourceVersion":"{resource_version}","labels":{{"app":"{name}"}},"annotations":{{"pad":""#
    );
    let tail = r#""}},"spec":{"nodeName":"edge-1","containers":[{"name":"app","image":"nginx:1.27"}]},"status":{"phase":"Running"}}"#;
    let pad = POD_JSON_LEN.saturating_sub(json.len() + tail.len());
    json.extend(std::iter::repeat_n('x', pad));
    json.push_str(tail);
    json
}

fn upsert(n: u64) -> Op {
    let name = format!("pod-{}", n % PODS);
    Op::UpsertMeta(MetaRow { key: format!("default/pod/{name}"), ty: "pod".into(), value: pod_json(&name, n + 1) })
}

fn bench_store(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut group = c.benchmark_group("upsert_2.5KB_pod");
    group.throughput(Throughput::Elements(1)).sample_size(10).warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));

    for (label, synchronous) in [("FULL", Synchronous::Full), ("NORMAL", Synchronous::Normal)] {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let store = Store::open(dir.path().join("edgecore.db"), Options { synchronous, ..Options::default() }).unwrap();
        let next = Arc::new(AtomicU64::new(0));

        let callers: &[u64] = if synchronous == Synchronous::Full { &[64, 256] } else { &[64] };
        for &callers in callers {
            group.bench_function(format!("batched_{callers}/{label}"), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let started = Instant::now();
                        let tasks: Vec<_> = (0..callers)
                            .map(|caller| {
                                let (store, next) = (store.clone(), next.clone());
                                let calls = iters / callers + u64::from(caller < iters % callers);
                                tokio::spawn(async move {
                                    for _ in 0..calls {
                                        store.apply(vec![upsert(next.fetch_add(1, Ordering::Relaxed))]).await.unwrap();
                                    }
                                })
                            })
                            .collect();
                        for task in tasks {
                            task.await.unwrap();
                        }
                        started.elapsed()
                    })
                })
            });
        }

        group.bench_function(format!("one_at_a_time/{label}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        store.apply(vec![upsert(next.fetch_add(1, Ordering::Relaxed))]).await.unwrap();
                    }
                    started.elapsed()
                })
            })
        });
        store.close().unwrap();
    }
    group.finish();
}

criterion_group!(benches, bench_store);
criterion_main!(benches);
