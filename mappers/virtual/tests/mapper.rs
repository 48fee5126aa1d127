//! The `virtual-mapper` binary end to end: a fake edgecore on a temp unix socket, the mapper as
//! a child process, a device added over DMI, its counter and desired value reported, an
//! offline device, and SIGTERM.

#[path = "../../framework/tests/common/fake_edgecore.rs"]
mod fake_edgecore;

use std::time::Duration;

use fake_edgecore::*;
use kubeedge_dmi::v1beta1::device_mapper_service_client::DeviceMapperServiceClient;
use kubeedge_dmi::v1beta1::*;
use serde_json::json;

/// The protocol name the test devices carry.
const PROTOCOL: &str = "virtual";
const T: Duration = Duration::from_secs(15);

fn counter(name: &str, extra: serde_json::Value) -> Device {
    device(
        name,
        "gauge",
        extra,
        vec![
            property("count", json!({"kind": "counter", "min": 0, "max": 1000, "step": 1}), "", 100),
            property("setting", json!({"kind": "value", "initial": 5}), "42", 100),
            property("walk", json!({"kind": "random", "min": 10, "max": 20, "step": 0.5, "initial": 15}), "", 100),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_mapper_end_to_end() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        let (edge_sock, mapper_sock) = temp_paths(dir.path());
        let gauge = model(
            "gauge",
            &[("count", "INT", "ReadOnly"), ("setting", "INT", "ReadWrite"), ("walk", "DOUBLE", "ReadOnly")],
        );
        let mut edge = FakeEdgecore::serve(&edge_sock, vec![gauge], vec![counter("g1", json!({"seed": 7}))]).await;
        let (mut child, _port) =
            spawn_mapper(env!("CARGO_BIN_EXE_virtual-mapper"), dir.path(), &edge_sock, &mapper_sock, "warn");

        edge.expect(T, "registration", |e| matches!(e, Event::Register(_))).await;
        edge.expect(T, "g1 online", state("default/g1", "online")).await;
        // The counter counts: two successive reports, the second larger.
        let first = edge
            .expect(T, "count", |e| matches!(e, Event::Status(i, p, ..) if i == "default/g1" && p == "count"))
            .await;
        let second = edge
            .expect(T, "count again", |e| matches!(e, Event::Status(i, p, ..) if i == "default/g1" && p == "count"))
            .await;
        let (Event::Status(_, _, a, _), Event::Status(_, _, b, _)) = (first, second) else { unreachable!() };
        assert!(b.parse::<i64>().unwrap() > a.parse::<i64>().unwrap(), "{a} then {b}");
        // The desired value is held and reported, with the observed desired value.
        let e = edge.expect(T, "setting=42", status("default/g1", "setting", "42")).await;
        assert!(matches!(e, Event::Status(_, _, _, ref d) if d == "42"), "{e:?}");
        let e =
            edge.expect(T, "walk", |e| matches!(e, Event::Status(i, p, ..) if i == "default/g1" && p == "walk")).await;
        let Event::Status(_, _, w, _) = e else { unreachable!() };
        let w: f64 = w.parse().unwrap();
        assert!((10.0..=20.0).contains(&w), "{w}");

        // A second device over DMI, then an offline one, then g1's removal.
        let mut dmi = DeviceMapperServiceClient::new(
            kubeedge_dmi::connect_unix(&mapper_sock, Duration::from_secs(1)).await.unwrap(),
        );
        dmi.register_device(RegisterDeviceRequest { device: Some(counter("g2", json!({}))) }).await.unwrap();
        edge.expect(T, "g2 setting", status("default/g2", "setting", "42")).await;
        dmi.register_device(RegisterDeviceRequest { device: Some(counter("down", json!({"offline": true}))) })
            .await
            .unwrap();
        edge.expect(T, "down offline", state("default/down", "offline")).await;
        dmi.remove_device(RemoveDeviceRequest { device_name: "g1".into(), device_namespace: "default".into() })
            .await
            .unwrap();
        let got = dmi
            .get_device(GetDeviceRequest { device_name: "g1".into(), device_namespace: "default".into() })
            .await
            .unwrap_err();
        assert_eq!(got.code(), tonic::Code::NotFound);

        let status = sigterm(&mut child.0);
        assert!(status.success(), "{status:?}");
        assert!(!mapper_sock.exists());
        edge.shut().await;
    })
    .await
    .expect("likely deadlocked");
}
