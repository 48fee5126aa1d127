//! The units in `build/`: `edgecore.service` and `cloudcore.service` (upstream's names and
//! binary paths, `Restart=always`) and the mappers' units, clean under `systemd-analyze verify`
//! (SKIPPED loudly where systemd's tools are missing). verify needs the ExecStart binary to
//! exist, so each unit is checked as a copy whose ExecStart names the freshly built binary
//! instead of /usr/local/bin. The mappers' units also run, sandbox and all, under a real systemd
//! (systemd-nspawn; SKIPPED loudly without root or systemd-nspawn).

use std::path::Path;
use std::process::Command;

use kubeedge_testkit::nspawn::{Bind, Machine};
use kubeedge_testkit::{TempDir, free_port, until, workspace_bin};

/// The mappers' units: unit name, binary, protocol.
const MAPPERS: [(&str, &str, &str); 3] = [
    ("mapper-modbus", "modbus-mapper", "modbus"),
    ("mapper-opcua", "opcua-mapper", "opcua"),
    ("mapper-virtual", "virtual-mapper", "virtual"),
];

/// `name`'s text with its ExecStart binary replaced by the freshly built `bin`.
fn with_built_binary(name: &str, bin: &str) -> String {
    let from = format!("ExecStart=/usr/local/bin/{bin}");
    let text = unit(name);
    assert!(text.contains(&from), "{name} runs /usr/local/bin/{bin}");
    text.replace(&from, &format!("ExecStart={}", workspace_bin(bin).display()))
}

fn unit(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../build").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn verify(path: &Path) -> (bool, String) {
    let out = Command::new("systemd-analyze").arg("verify").arg(path).output().expect("systemd-analyze");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn units_use_upstream_paths_and_always_restart() {
    for daemon in ["edgecore", "cloudcore"] {
        let text = unit(&format!("{daemon}.service"));
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        assert!(lines.contains(&format!("ExecStart=/usr/local/bin/{daemon}").as_str()), "{daemon}: {text}");
        assert!(lines.contains(&"Restart=always"), "{daemon}");
        assert!(lines.iter().any(|l| l.starts_with("RestartSec=")), "{daemon}");
        assert!(lines.contains(&"WantedBy=multi-user.target"), "{daemon}");
    }
    // cloudcore writes no file: the strictest file-system protection applies to it.
    let cloud = unit("cloudcore.service");
    for setting in ["NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes", "CapabilityBoundingSet="] {
        assert!(cloud.lines().any(|l| l == setting), "cloudcore.service lacks {setting}");
    }
}

#[test]
fn units_pass_systemd_analyze_verify() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        kubeedge_testkit::skip(
            "units_pass_systemd_analyze_verify",
            "systemd-analyze is missing (Debian package systemd)",
        );
        return;
    }
    let dir = TempDir::new();
    let daemons = [("edgecore", "edgecore"), ("cloudcore", "cloudcore")];
    for (unit_name, bin) in daemons.into_iter().chain(MAPPERS.map(|(u, b, _)| (u, b))) {
        let name = format!("{unit_name}.service");
        let path = dir.path().join(&name);
        std::fs::write(&path, with_built_binary(&name, bin)).unwrap();
        let (ok, out) = verify(&path);
        assert!(ok && out.trim().is_empty(), "systemd-analyze verify {name}:\n{out}");
    }
    // The check has teeth: a wrong value is reported.
    let bad = dir.path().join("bad.service");
    let text = unit("edgecore.service")
        .replace("ExecStart=/usr/local/bin/edgecore", &format!("ExecStart={}", workspace_bin("edgecore").display()))
        .replace("Restart=always", "Restart=sometimes");
    std::fs::write(&bad, text).unwrap();
    let (_, out) = verify(&bad);
    assert!(out.contains("sometimes"), "{out}");
}

#[test]
fn mapper_units_run_sandboxed_under_systemd() {
    if let Some(why) = kubeedge_testkit::nspawn::unavailable() {
        kubeedge_testkit::skip("mapper_units_run_sandboxed_under_systemd", &why);
        return;
    }
    let dir = TempDir::new();
    // /etc/kubeedge (configs; the mappers' sockets appear here) and the units, from the host.
    let (etc, units) = (dir.path().join("etc-kubeedge"), dir.path().join("units"));
    std::fs::create_dir_all(&units).unwrap();
    let mut ports = Vec::new();
    for (unit_name, bin, protocol) in MAPPERS {
        let port = free_port();
        ports.push(port);
        let conf_dir = etc.join("mappers").join(protocol);
        std::fs::create_dir_all(&conf_dir).unwrap();
        let config = format!(
            "grpc_server:\n  socket_path: /etc/kubeedge/{protocol}.sock\ncommon:\n  name: {bin}\n  protocol: {protocol}\n  address: 127.0.0.1\n  edgecore_sock: /etc/kubeedge/dmi.sock\n  http_port: \"{port}\"\n"
        );
        std::fs::write(conf_dir.join("config.yaml"), config).unwrap();
        // The binaries are bound at a neutral path: the units' ProtectHome and PrivateTmp
        // would hide a target directory under /root, /home or /tmp.
        let name = format!("{unit_name}.service");
        let text = unit(&name).replace(&format!("/usr/local/bin/{bin}"), &format!("/opt/ketest/bin/{bin}"));
        std::fs::write(units.join(&name), text).unwrap();
    }
    let bins = workspace_bin("modbus-mapper").parent().unwrap().to_path_buf();
    let machine = Machine::boot(&[
        Bind { host: bins, inside: "/opt/ketest/bin".into(), read_only: true },
        Bind::rw(&etc, "/etc/kubeedge"),
        Bind::rw(&units, "/etc/systemd/system"),
    ])
    .unwrap();
    assert!(machine.exec(&["systemctl", "daemon-reload"]).status.success());
    for ((unit_name, _, protocol), port) in MAPPERS.into_iter().zip(&ports) {
        let name = format!("{unit_name}.service");
        let started = machine.exec(&["systemctl", "start", &name]);
        assert!(started.status.success(), "{name}: {}", machine.journal(&name));
        // Running inside the sandbox: its REST API answers, its DMI socket is there and owner-only,
        // and with no edgecore it keeps retrying (not exiting).
        until(&format!("{name} answers /api/v1/ping"), || {
            std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok().then_some(())
        });
        let sock = etc.join(format!("{protocol}.sock"));
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&sock).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600, "{}", sock.display());
        assert_eq!(machine.systemctl(&["is-active", &name]), "active", "{}", machine.journal(&name));
        assert_eq!(machine.property(&name, "NoNewPrivileges"), "yes");
    }
    // The opcua mapper's state directory (each server's pinned certificate) exists, owner-only.
    let state = machine.exec(&["stat", "-c", "%a", "/var/lib/kubeedge/mappers/opcua"]);
    assert_eq!(String::from_utf8_lossy(&state.stdout).trim(), "700", "{}", machine.journal("mapper-opcua.service"));
    // Each has retried registering with the absent edgecore at least twice (still running).
    for (unit_name, _, _) in MAPPERS {
        let name = format!("{unit_name}.service");
        until(&format!("{name} retrying registration"), || {
            (machine.journal(&name).matches("Registering with edgecore failed; retrying.").count() >= 2).then_some(())
        });
    }
    for (unit_name, _, protocol) in MAPPERS {
        let name = format!("{unit_name}.service");
        // Still running after retrying registration for a while; then a clean stop.
        assert_eq!(machine.property(&name, "NRestarts"), "0", "{}", machine.journal(&name));
        assert!(machine.exec(&["systemctl", "stop", &name]).status.success());
        assert_eq!(machine.property(&name, "Result"), "success", "{}", machine.journal(&name));
        assert!(!etc.join(format!("{protocol}.sock")).exists(), "{name} removes its socket on stop");
    }
    machine.stop();
}
