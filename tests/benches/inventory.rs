//! Anti-entropy figures with the release binaries: an edge holding OBJECTS pods (10,000 by
//! default) reconnects with a stale set — a tenth of its pods updated and a tenth deleted in
//! the API while it was away, a twentieth created, and a twentieth of rows it holds that the
//! API never had — and converges on the API.
//!
//! Prints: the first sync's time, the time from the reconnect until the edge's database
//! equals the API (uid and resourceVersion of every pod), and the size of the inventory the
//! edge sent (from cloudcore's log). Run: `cargo build --release -p cloudcore -p edgecore &&
//! cargo bench -p kubeedge-e2e --bench inventory` (`OBJECTS=N` changes the size). Asserts
//! nothing about speed.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kubeedge_e2e::CloudSide;
use kubeedge_metastore::{MetaRow, Op, Store};
use kubeedge_testkit::{Process, link};
use serde_json::json;

const NODE: &str = "edge-inv";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn pod(i: usize) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": format!("p-{i}"), "labels": {"app": "web"}}, "spec": {
        "nodeName": NODE, "containers": [{"name": "c", "image": "busybox"}]}}))
    .unwrap()
}

/// name → (uid, resourceVersion) of the pods in the edge's database.
fn edge_pods(rt: &tokio::runtime::Runtime, db: &Path) -> BTreeMap<String, (String, String)> {
    let _ = rt;
    {
        let Ok(store) = kubeedge_metastore::ReadOnly::open(db) else { return BTreeMap::new() };
        let rows = store.list_by_type("pod").unwrap_or_default();
        rows.into_iter()
            .map(|r| {
                let v: serde_json::Value = serde_json::from_str(&r.value).unwrap_or_default();
                let s = |p: &str| v.pointer(p).and_then(|x| x.as_str()).unwrap_or_default().to_owned();
                (s("/metadata/name"), (s("/metadata/uid"), s("/metadata/resourceVersion")))
            })
            .collect()
    }
}

fn api_pods(rt: &tokio::runtime::Runtime, pods: &Api<Pod>) -> BTreeMap<String, (String, String)> {
    let list = rt.block_on(pods.list(&ListParams::default())).unwrap();
    list.items
        .into_iter()
        .map(|p| {
            let m = p.metadata;
            (m.name.unwrap_or_default(), (m.uid.unwrap_or_default(), m.resource_version.unwrap_or_default()))
        })
        .collect()
}

fn converge(rt: &tokio::runtime::Runtime, db: &Path, pods: &Api<Pod>, what: &str) {
    let start = Instant::now();
    let want = api_pods(rt, pods);
    loop {
        let held = edge_pods(rt, db);
        if held == want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "{what}: not converged ({} held, {} wanted)",
            held.len(),
            want.len()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn start_edge(cfg: &Path) -> Process {
    let bin = kubeedge_testkit::workspace_bin("edgecore");
    let mut edge = Process::spawn(&bin, &["--config", cfg.to_str().unwrap()]).unwrap();
    edge.wait_for_line("Connected to CloudHub.");
    edge
}

fn main() {
    let objects = env("OBJECTS", 10_000);
    let dir = tempfile::tempdir().unwrap();
    let mut cloud = CloudSide::start(dir.path());
    cloud.proc.wait_for_line("Loaded what edge nodes have acknowledged.");
    let client = cloud.client();
    let rt = &cloud.rt;
    let node: Node = serde_json::from_value(json!({"metadata": {"name": NODE,
        "labels": {"node-role.kubernetes.io/edge": ""}}}))
    .unwrap();
    rt.block_on(Api::<Node>::all(client.clone()).create(&PostParams::default(), &node)).unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let create = |range: std::ops::Range<usize>| {
        rt.block_on(
            stream::iter(range)
                .map(|i| {
                    let pods = pods.clone();
                    async move { pods.create(&PostParams::default(), &pod(i)).await.unwrap() }
                })
                .buffer_unordered(32)
                .count(),
        )
    };
    create(0..objects);
    let edge_cfg = link::edgecore(
        &kubeedge_testkit::workspace_bin("edgecore"),
        dir.path(),
        NODE,
        &cloud.token(),
        &cloud.link(),
        &[],
    );
    let db = dir.path().join("edge/edgecore.db");
    let started = Instant::now();
    let mut edge = start_edge(&edge_cfg);
    converge(rt, &db, &pods, "first sync");
    let first = started.elapsed();
    println!("inventory bench: {objects} pods, first sync {:.1} s", first.as_secs_f64());

    // Away: the API changes, and the edge holds rows the API never had.
    edge.signal("TERM");
    assert!(edge.wait_exit(kubeedge_testkit::patience()).is_some_and(|s| s.success()));
    drop(edge);
    let tenth = objects / 10;
    rt.block_on(
        stream::iter(0..tenth)
            .map(|i| {
                let pods = pods.clone();
                async move {
                    let label = Patch::Merge(json!({"metadata": {"labels": {"v": "2"}}}));
                    pods.patch(&format!("p-{i}"), &PatchParams::default(), &label).await.unwrap();
                    let gone = DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
                    pods.delete(&format!("p-{}", tenth + i), &gone).await.unwrap();
                }
            })
            .buffer_unordered(32)
            .count(),
    );
    create(objects..objects + objects / 20);
    rt.block_on(async {
        let store = Store::open(&db, Default::default()).unwrap();
        let ops = (0..objects / 20)
            .map(|i| {
                let name = format!("ghost-{i}");
                let value = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default",
                    "uid": format!("ghost-uid-{i}"), "resourceVersion": "1"}, "spec": {"nodeName": NODE}});
                Op::UpsertMeta(MetaRow {
                    key: format!("default/pod/{name}"),
                    ty: "pod".into(),
                    value: value.to_string(),
                })
            })
            .collect();
        store.apply(ops).await.unwrap();
    });
    let mark = cloud.proc.mark();
    let reconnect = Instant::now();
    let mut edge = start_edge(&edge_cfg);
    converge(rt, &db, &pods, "after the reconnect");
    let back = reconnect.elapsed();
    let line = cloud.proc.wait_for_line_since(mark, "Anti-entropy repaired an edge node.");
    let field = |name: &str| {
        line.split_whitespace().find_map(|w| w.strip_prefix(&format!("{name}="))).unwrap_or("?").to_owned()
    };
    println!(
        "inventory bench: reconnect with a stale set ({tenth} updated, {tenth} deleted, {} created, {} ghosts): \
         converged in {:.1} s; inventory {} objects, {} bytes ({:.0} bytes per object); repaired: inserted {}, \
         updated {}, deleted {}, recorded {}",
        objects / 20,
        objects / 20,
        back.as_secs_f64(),
        field("objects"),
        field("bytes"),
        field("bytes").parse::<f64>().unwrap_or(0.0) / field("objects").parse::<f64>().unwrap_or(1.0),
        field("inserted"),
        field("updated"),
        field("deleted"),
        field("recorded"),
    );
    edge.signal("TERM");
    let _ = edge.wait_exit(kubeedge_testkit::patience());
    cloud.stop();
}
