//! Device twin figures with the release binaries: a private mosquitto (EventBus's external
//! mode), edgecore with EventBus and DeviceTwin, cloudcore with DeviceController, apiserver-lite.
//!
//! - edgecore's resident memory and CPU when idle with EventBus and DeviceTwin on and 100
//!   devices bound to it;
//! - twin updates published by a mapper (rumqttc, QoS 1) at a fixed rate, round-robin over the
//!   100 devices: publish → `…/twin/update/result` (the update is committed to the edge's
//!   SQLite), and publish → the value seen in DeviceStatus by a watch (through the cloud,
//!   coalesced per device), p50/p99, the rates reached, and both daemons' CPU.
//!
//! Run as root: `cargo build --release -p cloudcore -p edgecore && cargo bench -p kubeedge-e2e
//! --bench devices`. `RATES=1000,10000` (updates/s), `SECS=5` (per rate), `EDGECORE=path` (e.g.
//! target/release-edge/edgecore). Prints the figures; asserts nothing about speed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use kube::Api;
use kube::api::{DynamicObject, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kubeedge_e2e::measure::{KillOnDrop, cpu_ticks, pct_ms, rss_kb};
use kubeedge_e2e::{CloudSide, device_resource, until};
use kubeedge_testkit::{Process, free_port, link};
use serde_json::json;

const NODE: &str = "edge-dev-bench";
const DEVICES: usize = 100;

/// Publish times by value (the value is the update's sequence number).
type Sent = Arc<Mutex<HashMap<u64, Instant>>>;

#[allow(clippy::too_many_lines)]
fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rates: Vec<u64> = std::env::var("RATES")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let secs: u64 = std::env::var("SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    let mqtt_port = free_port();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {mqtt_port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\n"
        ),
    )
    .unwrap();
    let broker = std::process::Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("mosquitto (hack/install-deps.sh installs it)");
    // Killed however the bench ends (a panic included).
    let _broker = KillOnDrop(broker);
    until("mosquitto", || std::net::TcpStream::connect(("127.0.0.1", mqtt_port)).ok().map(drop));

    let mut cloud = CloudSide::start(dir.path());
    let token = cloud.token();
    let edge_bin: PathBuf =
        std::env::var_os("EDGECORE").map_or_else(|| kubeedge_testkit::workspace_bin("edgecore"), PathBuf::from);
    let url = format!("tcp://127.0.0.1:{mqtt_port}");
    let cfg = link::edgecore(
        &edge_bin,
        dir.path(),
        NODE,
        &token,
        &cloud.link(),
        &[
            (&["modules", "eventBus", "enable"], "true".into()),
            (&["modules", "eventBus", "mqttMode"], "2".into()),
            (&["modules", "eventBus", "mqttServerExternal"], url.clone()),
            (&["modules", "eventBus", "mqttServerInternal"], url),
            (&["modules", "deviceTwin", "enable"], "true".into()),
        ],
    );
    let mut edge = Process::spawn(&edge_bin, &["--config", cfg.to_str().unwrap()]).unwrap();
    edge.wait_for_line("Connected to CloudHub.");
    edge.wait_for_line("Connected to the MQTT broker");

    // 100 devices of one model, one property `v`.
    let client = cloud.client();
    let (models, devices) = kubeedge_e2e::device_apis(&client);
    let statuses: Api<DynamicObject> =
        Api::namespaced_with(client, "default", &device_resource("DeviceStatus", "devicestatuses"));
    let model: DynamicObject = serde_json::from_value(json!({"apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "DeviceModel", "metadata": {"name": "meter", "namespace": "default"},
        "spec": {"protocol": "modbus", "properties": [{"name": "v", "type": "INT", "accessMode": "ReadOnly"}]}}))
    .unwrap();
    cloud.rt.block_on(models.create(&PostParams::default(), &model)).unwrap();
    for d in 0..DEVICES {
        let dev: DynamicObject = serde_json::from_value(json!({"apiVersion": "devices.kubeedge.io/v1beta1",
            "kind": "Device", "metadata": {"name": format!("m-{d}"), "namespace": "default"},
            "spec": {"deviceModelRef": {"name": "meter"}, "nodeName": NODE, "protocol": {"protocolName": "modbus"},
                     "properties": [{"name": "v", "desired": {"value": ""}}]}}))
        .unwrap();
        cloud.rt.block_on(devices.create(&PostParams::default(), &dev)).unwrap();
    }

    // The mapper: results by value, and the publisher.
    let results: Sent = Arc::default();
    let mut opts = rumqttc::MqttOptions::new("bench-mapper", "127.0.0.1", mqtt_port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_inflight(1000);
    let (mqtt, mut events) = rumqttc::AsyncClient::new(opts, 100_000);
    let sink = results.clone();
    let sub = mqtt.clone();
    cloud.rt.spawn(async move {
        loop {
            match events.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                    let _ =
                        sub.subscribe("$hw/events/device/default/+/twin/update/result", rumqttc::QoS::AtMostOnce).await;
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap_or_default();
                    // Only accepted updates: an error result (`code`, e.g. 404 while the edge
                    // does not know the device yet) does not count.
                    if v.get("code").is_none()
                        && let Some(seq) = v["event_id"].as_str().and_then(|s| s.parse::<u64>().ok())
                    {
                        sink.lock().unwrap().insert(seq, Instant::now());
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    // DeviceStatus values seen by a watch, by value.
    let statuses_probe = statuses.clone();
    let seen: Sent = Arc::default();
    let seen_sink = seen.clone();
    cloud.rt.spawn(async move {
        let mut stream = watcher(statuses, watcher::Config::default()).applied_objects().boxed();
        while let Ok(Some(o)) = stream.try_next().await {
            let Some(twins) = o.data.pointer("/status/twins").and_then(|t| t.as_array()) else { continue };
            for t in twins {
                if let Some(v) =
                    t.pointer("/reported/value").and_then(|v| v.as_str()).and_then(|v| v.parse::<u64>().ok())
                {
                    seen_sink.lock().unwrap().entry(v).or_insert_with(Instant::now);
                }
            }
        }
    });
    let publish = |seq: u64| {
        let d = seq as usize % DEVICES;
        let topic = format!("$hw/events/device/default/m-{d}/twin/update");
        let payload = format!(
            r#"{{"event_id":"{seq}","timestamp":0,"twin":{{"v":{{"actual":{{"value":"{seq}"}},"metadata":{{"type":"int"}}}}}}}}"#
        );
        mqtt.try_publish(topic, rumqttc::QoS::AtLeastOnce, false, payload).is_ok()
    };
    // Warm-up: one update per device, until each has a result (the edge knows all devices).
    let mut seq: u64 = 1;
    let warm_end = seq + DEVICES as u64;
    let sent: Sent = Arc::default();
    until("every device to answer", || {
        for s in seq..warm_end {
            publish(s);
        }
        std::thread::sleep(Duration::from_millis(500));
        let r = results.lock().unwrap();
        (seq..warm_end).all(|s| r.contains_key(&s)).then_some(())
    });
    seq = warm_end;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let missing: Vec<u64> = {
            let s = seen.lock().unwrap();
            (warm_end - DEVICES as u64..warm_end).filter(|v| !s.contains_key(v)).collect()
        };
        if missing.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let probe = format!("m-{}", missing[0] as usize % DEVICES);
            let st = cloud.rt.block_on(statuses_probe.get_opt(&probe)).map(|o| o.map(|o| o.data));
            panic!(
                "warm-up values missing in the API: {missing:?}; {probe}: {st:?}\n{}\n=== edgecore ===\n{}",
                cloud.proc.log(),
                edge.log()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    let (epid, cpid) = (edge.pid(), cloud.proc.pid());
    let idle_rss: Vec<u64> = (0..50)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(200));
            rss_kb(epid)
        })
        .collect();
    let e0 = cpu_ticks(epid);
    std::thread::sleep(Duration::from_secs(10));
    let idle_cpu = (cpu_ticks(epid) - e0) as f64 / 10.0;
    let mut idle_sorted = idle_rss.clone();
    idle_sorted.sort_unstable();
    println!(
        "edgecore {} with EventBus (external mosquitto) and DeviceTwin, {DEVICES} devices, connected:",
        edge_bin.display()
    );
    println!(
        "  idle RSS median {} KB, max {} KB; idle CPU {idle_cpu:.1} % of one core",
        idle_sorted[idle_sorted.len() / 2],
        idle_sorted.last().copied().unwrap_or(0)
    );

    for rate in rates {
        let first = seq;
        let total = rate * secs;
        let (e0, c0) = (cpu_ticks(epid), cpu_ticks(cpid));
        let start = Instant::now();
        // Paced in 1 ms steps.
        let mut dropped = 0u64;
        while seq < first + total {
            let due = first + (start.elapsed().as_secs_f64() * rate as f64) as u64;
            while seq < due.min(first + total) {
                sent.lock().unwrap().insert(seq, Instant::now());
                if !publish(seq) {
                    dropped += 1;
                }
                seq += 1;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let published_in = start.elapsed();
        // Wait for the results (up to 60 s) and for each device's last value in the API.
        let last: Vec<u64> = (seq - DEVICES as u64..seq).collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let r = results.lock().unwrap().keys().filter(|k| **k >= first && **k < seq).count() as u64;
            let s = seen.lock().unwrap();
            if r + dropped >= total && last.iter().all(|v| s.contains_key(v)) {
                break;
            }
            drop(s);
            std::thread::sleep(Duration::from_millis(100));
        }
        let elapsed = start.elapsed();
        let (ecpu, ccpu) = (
            (cpu_ticks(epid) - e0) as f64 / elapsed.as_secs_f64(),
            (cpu_ticks(cpid) - c0) as f64 / elapsed.as_secs_f64(),
        );
        let sent_at = sent.lock().unwrap().clone();
        let lat = |m: &HashMap<u64, Instant>| {
            let mut v: Vec<Duration> = m
                .iter()
                .filter(|(k, _)| **k >= first && **k < seq)
                .filter_map(|(k, at)| sent_at.get(k).map(|t| at.saturating_duration_since(*t)))
                .collect();
            v.sort();
            v
        };
        let edge_lat = lat(&results.lock().unwrap());
        let api_lat = lat(&seen.lock().unwrap());
        let last_result = results.lock().unwrap().iter().filter(|(k, _)| **k >= first).map(|(_, t)| *t).max();
        let edge_rate = last_result.map_or(0.0, |t| edge_lat.len() as f64 / t.duration_since(start).as_secs_f64());
        let api_last = last.iter().all(|v| seen.lock().unwrap().contains_key(v));
        println!(
            "  {rate} updates/s for {secs} s ({total} updates, published in {:.1} s, {dropped} refused by the client queue):",
            published_in.as_secs_f64()
        );
        println!(
            "    MQTT → edge SQLite (result): {} answered, {edge_rate:.0}/s, p50 {:.1} ms, p99 {:.1} ms",
            edge_lat.len(),
            pct_ms(&edge_lat, 0.5),
            pct_ms(&edge_lat, 0.99)
        );
        println!(
            "    MQTT → DeviceStatus (watch): {} values seen (coalesced per device), p50 {:.1} ms, p99 {:.1} ms; every device's last value: {}",
            api_lat.len(),
            pct_ms(&api_lat, 0.5),
            pct_ms(&api_lat, 0.99),
            if api_last { "yes" } else { "NO" }
        );
        println!("    CPU: edgecore {ecpu:.0} %, cloudcore {ccpu:.0} % of one core");
    }
    edge.signal("TERM");
    let _ = edge.wait_exit(kubeedge_testkit::patience());
    cloud.stop();
}
