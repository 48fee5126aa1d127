//! `build/edgecore.service` and `build/cloudcore.service`: upstream's names and binary paths,
//! `Restart=always`, and clean under `systemd-analyze verify` (SKIPPED loudly where systemd's
//! tools are missing). verify needs the ExecStart binary to exist, so each unit is checked as a
//! copy whose ExecStart names the freshly built binary instead of /usr/local/bin.

use std::path::Path;
use std::process::Command;

use kubeedge_testkit::{TempDir, workspace_bin};

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
    for daemon in ["edgecore", "cloudcore"] {
        let name = format!("{daemon}.service");
        let bin = workspace_bin(daemon);
        let text =
            unit(&name).replace(&format!("ExecStart=/usr/local/bin/{daemon}"), &format!("ExecStart={}", bin.display()));
        let path = dir.path().join(&name);
        std::fs::write(&path, text).unwrap();
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
