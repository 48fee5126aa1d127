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
    h2_fanout(&server).await;
    server.shutdown().await;
}

/// The same fan-out with watches multiplexed as client-go does it: HTTP/2 streams over a few
/// connections (10 × 100), bodies scanned for the object's name rather than decoded.
async fn h2_fanout(server: &apiserver_lite::ApiServer) {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use std::sync::Arc;
    let mut roots = rustls::RootCertStore::empty();
    let pem: String = server.ca_pem().lines().filter(|l| !l.starts_with("-----")).collect();
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD.decode(pem).expect("ca");
    roots.add(rustls::pki_types::CertificateDer::from(der)).expect("root");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("tls")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let addr = server.addr();
    let token = server.admin_token().to_owned();
    let rv = server.store().resource_version();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(WATCHERS);
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::channel::<Instant>(WATCHERS);
    for _ in 0..10 {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let tls = connector
            .connect(rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name"), tcp)
            .await
            .expect("tls");
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.expect("h2");
        tokio::spawn(conn);
        for _ in 0..WATCHERS / 10 {
            let mut send = send.clone();
            let (token, ready, seen) = (token.clone(), ready_tx.clone(), seen_tx.clone());
            tokio::spawn(async move {
                let req = http::Request::get(format!(
                    "https://{addr}/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}"
                ))
                .header("authorization", format!("Bearer {token}"))
                .body(Empty::<bytes::Bytes>::new())
                .expect("request");
                let resp = send.send_request(req).await.expect("watch");
                let _ = ready.send(()).await;
                let mut body = resp.into_body();
                while let Some(Ok(frame)) = body.frame().await {
                    if frame.data_ref().is_some_and(|d| d.windows(8).any(|w| w == b"fanout-2")) {
                        let _ = seen.send(Instant::now()).await;
                        return;
                    }
                }
            });
        }
    }
    for _ in 0..WATCHERS {
        ready_rx.recv().await.expect("watcher ready");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kc = kube::config::Kubeconfig::from_yaml(&server.kubeconfig()).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.expect("config");
    let cms: Api<ConfigMap> = Api::namespaced(kube::Client::try_from(cfg).expect("client"), "default");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "fanout-2"}})).expect("cm");
    let start = Instant::now();
    cms.create(&PostParams::default(), &cm).await.expect("create");
    let mut last = start;
    for _ in 0..WATCHERS {
        last = last.max(seen_rx.recv().await.expect("delivered"));
    }
    println!(
        "fan-out: one event to {WATCHERS} watchers as HTTP/2 streams (10 connections × 100) in {:.1} ms (create → last delivery)",
        (last - start).as_secs_f64() * 1e3
    );
}
