//! cloudcore's resident memory under a burst of oversized edge messages, and after it (issue
//! #18): apiserver-lite and cloudcore as processes, one edge over mTLS writing `COUNT` node
//! status updates of `SIZE_MIB` MiB each (a status listing ~150-byte images, the shape of a
//! large legitimate one), one after another as fast as the socket takes them.
//!
//! Prints cloudcore's RSS before, its peak during (sampled every 20 ms), and 1 s, 10 s and
//! 30 s after the last answer (or the session's end), and how the session ended. Asserts
//! nothing about size.
//!
//! ```text
//! cargo build --release -p cloudcore -p apiserver-lite
//! cargo bench -p kubeedge-e2e --bench memory_burst                   # 3 × 30 MiB, refused (cap 8 MiB)
//! SIZE_MIB=7 cargo bench -p kubeedge-e2e --bench memory_burst        # 3 × 7 MiB, under the cap
//! SIZE_MIB=30 MAX_MIB=32 cargo bench -p kubeedge-e2e --bench memory_burst   # the cap raised to 32 MiB
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kubeedge_e2e::CloudSide;
use kubeedge_e2e::measure::rss_kb;
use kubeedge_model::constants::{group, module};
use kubeedge_model::{Content, Message, Operation};
use kubeedge_viaduct::ClientOptions;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A nodestatus update of about `bytes`: the status lists images.
fn node_status(bytes: usize) -> Content {
    let image = |i: usize| {
        serde_json::json!({
            "names": [format!("registry.example.com/team/app-{i:08}@sha256:{i:064x}"), format!("app-{i:08}:v1")],
            "sizeBytes": 123_456_789 + i,
        })
    };
    let per = image(0).to_string().len() + 1;
    let images: Vec<serde_json::Value> = (0..bytes / per).map(image).collect();
    Content::from_value(&serde_json::json!({"Status": {"images": images}}))
}

fn main() {
    let (count, size_mib) = (env("COUNT", 3), env("SIZE_MIB", 30));
    let dir = tempfile::tempdir().unwrap();
    let mut settings: Vec<(&[&str], String)> = Vec::new();
    if let Some(max) = std::env::var("MAX_MIB").ok().filter(|m| !m.is_empty()) {
        settings.push((&["modules", "cloudHub", "edgeMessages", "maxMessageMiB"], max.clone()));
        settings.push((&["modules", "cloudHub", "edgeMessages", "inFlightMemoryMiB"], "256".into()));
    }
    let cloud = CloudSide::start_with(dir.path(), &settings);
    let pid = cloud.proc.pid();
    eprintln!("memory_burst: cloudcore pid {pid}");
    let secrets: Api<Secret> = Api::namespaced(cloud.client(), "kubeedge");
    let ca_secret = cloud.rt.block_on(secrets.get("casecret")).unwrap().data.unwrap();
    let ca = kubeedge_pki::Ca::from_der(&ca_secret["cadata"].0, &ca_secret["cakeydata"].0).unwrap();
    let node = "edge-memory";
    let (csr, key) = kubeedge_pki::edge_csr(node).unwrap();
    let cert = ca.issue_node_client(&csr, node, Duration::from_secs(3600)).unwrap();
    let tls = Arc::new(kubeedge_viaduct::client_tls(ca.cert_der(), &cert, &key).unwrap());
    let opts = ClientOptions {
        server: format!("127.0.0.1:{}", cloud.ws_port),
        node_id: node.to_owned(),
        project_id: "e632aba927ea4ac2b575ec1603d56f10".to_owned(),
        max_message: kubeedge_model::MAX_MESSAGE_SIZE,
        handshake_timeout: Duration::from_secs(30),
        features: Vec::new(),
    };
    let mut conn = cloud.rt.block_on(kubeedge_viaduct::connect(&opts, tls)).unwrap();
    let content = node_status(size_mib << 20);
    std::thread::sleep(Duration::from_secs(2));
    let before = rss_kb(pid);

    // Peak RSS, sampled until told to stop.
    let (stop, peak) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(before)));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kb(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let t0 = Instant::now();
    let ended = cloud.rt.block_on(async {
        let mut ids = Vec::new();
        for _ in 0..count {
            let msg = Message::build(
                module::EDGED,
                group::META,
                format!("default/nodestatus/{node}"),
                Operation::Update,
                content.clone(),
            );
            ids.push(msg.header.id.clone());
            if let Err(e) = conn.send(&msg).await {
                return format!("write failed after {} of {count}: {e}", ids.len() - 1);
            }
        }
        let mut answered = 0;
        loop {
            match tokio::time::timeout(Duration::from_secs(120), conn.recv()).await {
                Err(_) => return format!("{answered} of {count} answered in 120 s"),
                Ok(Ok(Some(m))) if m.parent_id().is_some_and(|p| ids.iter().any(|i| i == p)) => {
                    answered += 1;
                    if answered == count {
                        return format!("all {count} answered");
                    }
                }
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None)) => return format!("session closed by the cloud: {:?}", conn.peer_close()),
                Ok(Err(e)) => return format!("read failed: {e}"),
            }
        }
    });
    let took = t0.elapsed();
    let mut after = Vec::new();
    for wait in [1, 10, 30] {
        let since = t0.elapsed().saturating_sub(took);
        std::thread::sleep(Duration::from_secs(wait).saturating_sub(since));
        after.push((wait, rss_kb(pid)));
    }
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let mb = |kb: u64| kb as f64 / 1024.0;
    println!(
        "memory_burst: {count} × {size_mib} MiB node status ({} bytes each): {ended} in {:.1} s",
        content.len(),
        took.as_secs_f64()
    );
    println!(
        "cloudcore RSS: before {:.1} MiB, peak {:.1} MiB, after {}",
        mb(before),
        mb(peak.load(Ordering::Relaxed)),
        after.iter().map(|(s, kb)| format!("{s} s {:.1} MiB", mb(*kb))).collect::<Vec<_>>().join(", ")
    );
    drop(conn);
    cloud.stop();
}
