//! apiserver-lite figures: create throughput, listing 10,000 pods, and one event fanned out to
//! 1,000 watchers. A harness that prints figures (not criterion: each figure is one large run).
//! Run: `cargo bench -p apiserver-lite --bench apiserver` (raises no limits itself; 1,000 watches
//! need about 1,100 file descriptors).

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

const CREATES: usize = 10_000;
const CONCURRENCY: usize = 64;
const WATCHERS: usize = 1_000;

fn pod(i: usize) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("pod-{i:05}"), "labels": {"app": "bench", "shard": (i % 10).to_string()}},
        "spec": {"nodeName": format!("edge-{:04}", i % 1000), "containers": [{"name": "c", "image": "localhost/busybox:1.35",
            "command": ["sleep", "3600"], "env": [{"name": "A", "value": "1"}]}]}
    }))
    .expect("pod")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server = apiserver_lite::ApiServer::start(listener, apiserver_lite::Options::default()).await.expect("start");
    let kc = kube::config::Kubeconfig::from_yaml(&server.kubeconfig()).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.expect("config");
    let client = kube::Client::try_from(cfg).expect("client");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    let start = Instant::now();
    futures::stream::iter(0..CREATES)
        .map(|i| {
            let pods = pods.clone();
            async move { pods.create(&PostParams::default(), &pod(i)).await.map(|_| ()) }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await
        .expect("creates");
    let took = start.elapsed();
    println!(
        "create: {CREATES} pods in {:.2} s = {:.0} creates/s ({CONCURRENCY} in flight, HTTPS, kube-rs client)",
        took.as_secs_f64(),
        CREATES as f64 / took.as_secs_f64()
    );

    let mut times = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let list = pods.list(&ListParams::default()).await.expect("list");
        assert_eq!(list.items.len(), CREATES);
        times.push(start.elapsed());
    }
    times.sort();
    println!(
        "list: {CREATES} pods, median of 5 = {:.0} ms (decoded into typed Pods by the client)",
        times[2].as_secs_f64() * 1e3
    );

    let mut raw_times = Vec::new();
    let mut bytes = 0;
    for _ in 0..5 {
        let req = http::Request::get("/api/v1/namespaces/default/pods").body(Vec::new()).expect("request");
        let start = Instant::now();
        let body = client.request_text(req).await.expect("raw list");
        raw_times.push(start.elapsed());
        bytes = body.len();
    }
    raw_times.sort();
    println!(
        "list: {CREATES} pods, median of 5 = {:.0} ms for the {:.1} MB body (received as text, not decoded)",
        raw_times[2].as_secs_f64() * 1e3,
        bytes as f64 / 1e6
    );

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let rv = cms.list(&ListParams::default().limit(1)).await.expect("rv").metadata.resource_version.expect("rv");
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(WATCHERS);
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::channel::<Instant>(WATCHERS);
    for _ in 0..WATCHERS {
        let cms = cms.clone();
        let rv = rv.clone();
        let ready = ready_tx.clone();
        let seen = seen_tx.clone();
        tokio::spawn(async move {
            let mut stream = cms.watch(&WatchParams::default().timeout(290), &rv).await.expect("watch").boxed();
            let _ = ready.send(()).await;
            while let Some(ev) = stream.next().await {
                if let Ok(WatchEvent::Added(cm)) = ev
                    && cm.metadata.name.as_deref() == Some("fanout")
                {
                    let _ = seen.send(Instant::now()).await;
                    return;
                }
            }
        });
    }
    for _ in 0..WATCHERS {
        ready_rx.recv().await.expect("watcher ready");
    }
    // The watch requests have been answered (headers), so every stream is registered.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "fanout"}})).expect("cm");
    let start = Instant::now();
    cms.create(&PostParams::default(), &cm).await.expect("create");
    let mut last = start;
    for _ in 0..WATCHERS {
        last = last.max(seen_rx.recv().await.expect("delivered"));
    }
    println!(
        "fan-out: one event to {WATCHERS} watchers (each its own HTTPS connection) in {:.1} ms (create → last delivery)",
        (last - start).as_secs_f64() * 1e3
    );
    server.shutdown().await;
}
