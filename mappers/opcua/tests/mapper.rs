//! The `opcua-mapper` binary end to end against a real OPC UA server: `hack/opcua-sim.py`
//! (Python asyncua, an independent implementation) started by the test, a fake edgecore on a
//! temp unix socket, and the mapper as a child process; it is stopped with SIGTERM.

#[path = "../../framework/tests/common/fake_edgecore.rs"]
mod fake_edgecore;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use fake_edgecore::*;
use kubeedge_dmi::v1beta1::{Device, DeviceMethod, DeviceModel};
use serde_json::{Value, json};

/// The protocol name the test devices carry.
const PROTOCOL: &str = "opcua";
const T: Duration = Duration::from_secs(20);

/// The simulator: its printed lines arrive on a channel; killed on drop.
struct Sim {
    child: Child,
    lines: std_mpsc::Receiver<String>,
    url: String,
}

impl Sim {
    /// Starts `hack/opcua-sim.py`; `None` (the test is skipped, or fails under
    /// KUBEEDGE_REQUIRE_TOOLS) when Python's asyncua is not installed.
    fn start(port: u16, extra: &[&str]) -> Option<Self> {
        let ok = Command::new("python3").args(["-c", "import asyncua"]).stderr(Stdio::null()).status();
        if !ok.is_ok_and(|s| s.success()) {
            if std::env::var_os("KUBEEDGE_REQUIRE_TOOLS").is_some_and(|v| !v.is_empty()) {
                panic!("python3 with asyncua is needed (hack/install-deps.sh installs it)");
            }
            eprintln!("skipped: python3 with asyncua is not installed (hack/install-deps.sh)");
            return None;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hack/opcua-sim.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--port", &port.to_string()])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (tx, lines) = std_mpsc::channel();
        let out = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut sim = Self { child, lines, url: String::new() };
        sim.url = sim.wait_line("ready ").trim_start_matches("ready ").to_owned();
        Some(sim)
    }

    /// How many lines starting with each prefix arrive within `window` (from now on: lines
    /// printed before are dropped).
    fn count_lines(&mut self, window: Duration, prefixes: &[&str]) -> Vec<usize> {
        while self.lines.try_recv().is_ok() {}
        let mut counts = vec![0; prefixes.len()];
        let deadline = Instant::now() + window;
        while let Ok(line) = self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            for (i, p) in prefixes.iter().enumerate() {
                counts[i] += usize::from(line.starts_with(p));
            }
        }
        counts
    }

    /// The next line starting with `prefix` (others skipped); panics after `T`.
    fn wait_line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + T;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(_) => panic!("the simulator printed no {prefix:?} line within {T:?}"),
            }
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn thermostat_model() -> DeviceModel {
    model(
        "thermostat",
        &[
            ("temperature", "DOUBLE", "ReadOnly"),
            ("counter", "INT", "ReadOnly"),
            ("setpoint", "DOUBLE", "ReadWrite"),
            ("switch", "BOOLEAN", "ReadWrite"),
            ("ratio", "FLOAT", "ReadWrite"),
            ("small", "INT", "ReadWrite"),
            ("label", "STRING", "ReadWrite"),
            ("missing", "INT", "ReadOnly"),
        ],
    )
}

fn node(id: &str) -> Value {
    json!({"nodeID": format!("ns=2;s={id}"), "browseName": id})
}

fn thermostat(name: &str, protocol: Value) -> Device {
    let p = |n: &str, visitor: Value, desired: &str| property(n, visitor, desired, 200);
    let mut subscribed = node("Temperature");
    subscribed["subscribe"] = json!(true);
    let mut d = device(
        name,
        "thermostat",
        protocol,
        vec![
            p("temperature", subscribed, ""),
            p("counter", node("Counter"), ""),
            p("setpoint", node("Setpoint"), "23.5"),
            p("switch", node("Switch"), "true"),
            p("ratio", node("Ratio"), ""),
            p("small", node("Small"), ""),
            p("label", node("Label"), ""),
            p("missing", node("Nope"), ""),
        ],
    );
    d.spec.as_mut().unwrap().methods = vec![DeviceMethod {
        name: "set".into(),
        description: String::new(),
        property_names: vec!["small".into(), "ratio".into()],
    }];
    d
}

/// Waits for the `ns/name` property to report a value accepted by `ok`.
async fn expect_value(edge: &mut FakeEdgecore, id: &str, prop: &str, ok: impl Fn(&str) -> bool) -> String {
    let (id2, prop2) = (id.to_owned(), prop.to_owned());
    let e = edge
        .expect(
            T,
            &format!("{id} {prop}"),
            |e| matches!(e, Event::Status(i, p, v, _) if *i == id2 && *p == prop2 && ok(v)),
        )
        .await;
    let Event::Status(_, _, v, _) = e else { unreachable!() };
    v
}

fn path(p: &Path, file: &str) -> String {
    p.join(file).display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opcua_read_write_subscribe_secure_and_reconnect() {
    let plain_port = free_port();
    let Some(mut plain) = Sim::start(plain_port, &[]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let certs: PathBuf = dir.path().join("certs");
    let Some(mut secure) = Sim::start(
        free_port(),
        &["--security", "basic256sha256", "--certs", &certs.display().to_string(), "--user", "kube:edge"],
    ) else {
        return;
    };
    std::fs::write(dir.path().join("password"), "edge\n").unwrap();
    let pki = dir.path().join("pki").display().to_string();
    let secure_url = secure.url.clone();
    let secure_config = |remote: &str, user: Option<&str>| {
        let mut c = json!({
            "url": secure_url,
            "securityPolicy": "Basic256Sha256",
            "securityMode": "SignAndEncrypt",
            "certificate": path(&certs, "client-cert.der"),
            "privateKey": path(&certs, "client-key.pem"),
            "remoteCertificate": path(&certs, remote),
            "pkiDir": pki,
        });
        if let Some(u) = user {
            c["userName"] = json!(u);
            c["password"] = json!(path(dir.path(), "password"));
        }
        c
    };

    tokio::time::timeout(Duration::from_secs(150), async {
        let (edge_sock, mapper_sock) = temp_paths(dir.path());
        let broken = device(
            "broken",
            "thermostat",
            json!({"url": plain.url}),
            vec![property("counter", json!({"nodeID": "ns=2;x=what"}), "", 200)],
        );
        let devices = vec![
            thermostat("plain", json!({"url": plain.url, "timeout": 2, "pkiDir": pki})),
            thermostat("secure", secure_config("server-cert.der", Some("kube"))),
            // The server's certificate is not the pinned one: never online.
            thermostat("impostor", secure_config("client-cert.der", Some("kube"))),
            // No user: the server refuses an anonymous session.
            thermostat("anonymous", secure_config("server-cert.der", None)),
            broken,
        ];
        let mut edge = FakeEdgecore::serve(&edge_sock, vec![thermostat_model()], devices).await;
        // The library's own error lines are silenced, as without RUST_LOG (ours name the device).
        let log = "warn,opcua_client=off,opcua_core=off,opcua_crypto=off,opcua_types=off";
        let (mut child, port) =
            spawn_mapper(env!("CARGO_BIN_EXE_opcua-mapper"), dir.path(), &edge_sock, &mapper_sock, log);
        edge.expect(T, "registration", |e| matches!(e, Event::Register(i) if i.protocol == "opcua")).await;
        edge.expect(T, "broken is unhealthy", state("default/broken", "unhealthy")).await;

        for id in ["default/plain", "default/secure"] {
            edge.expect(T, &format!("{id} online"), state(id, "online")).await;
            // Desired values written at connect, then read back in the node's own type.
            edge.expect(T, &format!("{id} setpoint"), status(id, "setpoint", "23.5")).await;
            edge.expect(T, &format!("{id} switch"), status(id, "switch", "true")).await;
            edge.expect(T, &format!("{id} ratio"), status(id, "ratio", "0.25")).await;
            edge.expect(T, &format!("{id} label"), status(id, "label", "thermostat-1")).await;
            let t = expect_value(&mut edge, id, "temperature", |v| {
                v.parse::<f64>().is_ok_and(|t| (20.0..23.0).contains(&t))
            })
            .await;
            assert!(t.parse::<f64>().is_ok(), "{t}");
            let first: i64 =
                expect_value(&mut edge, id, "counter", |v| v.parse::<i64>().is_ok()).await.parse().unwrap();
            expect_value(&mut edge, id, "counter", |v| v.parse::<i64>().is_ok_and(|c| c > first)).await;
        }
        for sim in [&mut plain, &mut secure] {
            assert_eq!(sim.wait_line("written Setpoint"), "written Setpoint 23.5");
            assert_eq!(sim.wait_line("written Switch"), "written Switch True");
        }
        // The subscribed temperature comes from notifications, not Reads; the counter is Read
        // every collect cycle (200 ms).
        let [temperature_reads, counter_reads] =
            plain.count_lines(Duration::from_secs(2), &["read Temperature", "read Counter"])[..]
        else {
            unreachable!()
        };
        assert_eq!(temperature_reads, 0, "the subscribed node was Read");
        assert!(counter_reads >= 5, "only {counter_reads} Reads of the counter in 2 s");
        expect_value(&mut edge, "default/plain", "temperature", |v| v.parse::<f64>().is_ok()).await;

        // A REST write converted to the node's type (Byte), and one out of its range.
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let (code, body) = get(addr, "/api/v1/devicemethod/default/secure/set/small/9").await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(secure.wait_line("written Small"), "written Small 9");
        edge.expect(T, "small read back", status("default/secure", "small", "9")).await;
        let (code, body) = get(addr, "/api/v1/devicemethod/default/plain/set/small/300").await;
        assert_eq!(code, 500, "{body}");
        assert!(body.contains("300 is out of range"), "{body}");
        // A node the server does not have: that property fails, clearly; the rest go on.
        let (code, body) = get(addr, "/api/v1/device/default/plain/missing").await;
        assert_eq!(code, 500, "{body}");
        assert!(body.contains("BadNodeIdUnknown"), "{body}");
        let (code, body) = get(addr, "/api/v1/device/default/plain/ratio").await;
        assert_eq!(code, 200, "{body}");

        // Neither the impostor nor the anonymous session comes online, and each says why.
        let (code, body) = get(addr, "/api/v1/device/default/impostor/label").await;
        assert_eq!(code, 500, "{body}");
        assert!(body.contains("is not connected") && body.contains("check remoteCertificate"), "{body}");
        let (code, body) = get(addr, "/api/v1/device/default/anonymous/label").await;
        assert_eq!(code, 500, "{body}");
        assert!(body.contains("is not connected") && body.contains("check userName and password"), "{body}");

        // The server goes away and comes back on the same port: offline, then online again.
        drop(plain);
        edge.expect(T, "plain offline", state("default/plain", "offline")).await;
        let Some(_again) = Sim::start(plain_port, &[]) else { unreachable!() };
        edge.expect(Duration::from_secs(40), "plain online again", state("default/plain", "online")).await;
        expect_value(&mut edge, "default/plain", "counter", |v| v.parse::<i64>().is_ok()).await;
        edge.expect(T, "desired setpoint written again", status("default/plain", "setpoint", "23.5")).await;

        let status = sigterm(&mut child.0);
        assert!(status.success(), "{status:?}");
        assert!(!mapper_sock.exists(), "the mapper removes its socket");
        edge.shut().await;
    })
    .await
    .expect("likely deadlocked");
}
