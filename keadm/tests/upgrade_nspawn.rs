//! The node-task commands on a real systemd (a systemd-nspawn machine sharing the host's
//! network) with an edge joined to a real cloud (apiserver-lite and cloudcore on loopback) and
//! a private containerd:
//!
//! (a) `keadm upgrade edge --binary` to a copy of edgecore stamped 1.99.0: the service runs it,
//!     the report says Upgrade/true, the node's kubeletVersion follows;
//! (b) `--image`: an image built here holding edgecore stamped 1.98.0, imported with `ctr`;
//! (c) to a binary that says 1.97.0 but exits at once: rolled back to 1.98.0 (report Rollback);
//! (d) `keadm rollback edge --historical-version` back to the original version;
//! then `keadm backup edge`, `keadm config-update`, and (e) `keadm ctl confirm` with no task
//! waiting: MetaServer's refusal printed clearly. SKIPPED loudly without root, systemd-nspawn
//! or containerd.

use std::path::{Path, PathBuf};
use std::time::Instant;

mod nspawn_edge;

use kubeedge_testkit::nspawn::{Bind, Machine};
use kubeedge_testkit::{TempDir, until};
use nspawn_edge::*;
use serde_json::json;

/// `keadm upgrade edge` in a machine whose edge is node `node` of `cloud`.
struct Upgrade<'a> {
    machine: &'a Machine,
    cloud: &'a kubeedge_e2e::CloudSide,
    node: &'a str,
    keadm: &'a str,
}

impl Upgrade<'_> {
    /// Upgrades from `from` to `to` with `extra` flags; checks the service, the report and the
    /// node's kubeletVersion, and prints how long it took.
    fn succeeds(&self, from: &str, to: &str, extra: &[&str], what: &str) {
        let mut argv = vec![self.keadm, "upgrade", "edge", "--toVersion", to, "--force"];
        argv.extend_from_slice(extra);
        let t = Instant::now();
        let o = self.machine.exec(&argv);
        let took = t.elapsed();
        assert!(o.status.success(), "{argv:?}:\n{}\njournal:\n{}", out(&o), self.machine.journal("edgecore.service"));
        eprintln!("MEASURED keadm upgrade edge {what}: {:.2} s", took.as_secs_f64());
        let says = installed(self.machine);
        assert!(says.starts_with(&format!("edgecore {}", &to[1..])), "{says}");
        let want = json!({"event": "Upgrade", "success": true, "fromVersion": from, "toVersion": to});
        assert_eq!(report(self.machine), want);
        wait_kubelet_version(self.cloud, self.node, to);
    }
}

#[test]
fn upgrade_rollback_backup_and_config_update_under_systemd() {
    if let Some(why) = skip_reason() {
        kubeedge_testkit::skip("upgrade_rollback_backup_and_config_update_under_systemd", &why);
        return;
    }
    let dir = TempDir::new();
    let original = format!("v{}", kubeedge_model::version::version());
    // What the machine upgrades to, prepared before it boots (bound read-only).
    let art: PathBuf = dir.path().join("artifacts");
    std::fs::create_dir(&art).unwrap();
    let v199 = art.join("edgecore-1.99.0");
    stamped("1.99.0", &v199);
    let v198 = stamped("1.98.0", &art.join("scratch"));
    std::fs::remove_file(art.join("scratch")).unwrap();
    let image = art.join("edgecore-image.tar");
    image_tar("localhost/kubeedge/edgecore:v1.98.0", &v198, &image);
    drop(v198);
    let broken = art.join("edgecore-broken");
    std::fs::write(&broken, broken_edgecore("1.97.0")).unwrap();
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let cloud = kubeedge_e2e::CloudSide::start(dir.path());
    let containerd = kubeedge_testkit::containerd::PrivateContainerd::start().unwrap();
    import(containerd.socket(), &image);
    let usr_local_bin = dir.path().join("usr-local-bin");
    std::fs::create_dir(&usr_local_bin).unwrap();
    let machine = Machine::boot(&[
        Bind::ro(bin_dir()),
        Bind::ro(&art),
        Bind::rw(containerd.dir(), containerd.dir()),
        Bind::rw(&usr_local_bin, "/usr/local/bin"),
    ])
    .unwrap();

    let keadm = Path::new(env!("CARGO_BIN_EXE_keadm")).to_str().unwrap();
    let endpoint = format!("unix://{}", containerd.socket().display());
    let node = "edge-up";
    let monitor = join(&machine, &cloud, &endpoint, node, "");
    assert!(installed(&machine).contains(&original[1..]), "{}", installed(&machine));
    let journal = || machine.journal("edgecore.service");

    // (a) A local binary.
    let up = Upgrade { machine: &machine, cloud: &cloud, node, keadm };
    up.succeeds(&original, "v1.99.0", &["--binary", v199.to_str().unwrap()], "--binary (stop, swap, start, connected)");
    assert_eq!(machine.systemctl(&["is-active", "edgecore.service"]), "active");
    assert!(connected(&machine, &monitor));
    for f in ["edgecore.db", "edgecore.yaml", "edgecore"] {
        let p = format!("/etc/kubeedge/backup/{original}/{f}");
        assert!(machine.exec(&["test", "-s", &p]).status.success(), "{p} missing");
    }
    assert!(!machine.exec(&["test", "-e", "/etc/kubeedge/idempotency_record"]).status.success());

    // (b) From an image in containerd.
    let image_args = ["--image", "localhost/kubeedge/edgecore"];
    up.succeeds("v1.99.0", "v1.98.0", &image_args, "--image (export, extract, swap, connected)");
    assert!(!machine.exec(&["test", "-e", "/etc/kubeedge/upgrade/v1.98.0"]).status.success(), "work dir left");

    // (c) A binary that exits at once: rolled back to 1.98.0.
    let t = Instant::now();
    let o = machine.exec(&[
        keadm,
        "upgrade",
        "edge",
        "--toVersion",
        "v1.97.0",
        "--binary",
        broken.to_str().unwrap(),
        "--force",
        "--connect-timeout",
        "10",
    ]);
    let took = t.elapsed();
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    eprintln!("MEASURED keadm upgrade edge to a failing binary → rolled back: {:.2} s", took.as_secs_f64());
    let r = report(&machine);
    assert_eq!((r["event"].as_str(), r["success"].as_bool()), (Some("Rollback"), Some(true)), "{r}");
    assert_eq!((r["fromVersion"].as_str(), r["toVersion"].as_str()), (Some("v1.97.0"), Some("v1.98.0")), "{r}");
    let why = r["errorMessage"].as_str().unwrap();
    assert!(
        why.starts_with("upgrade to v1.97.0 failed: edgecore exited") && why.ends_with("rolled back to v1.98.0"),
        "{why}"
    );
    assert!(out(&o).contains(why), "{}", out(&o));
    assert!(installed(&machine).starts_with("edgecore 1.98.0"), "{}", installed(&machine));
    until("edgecore 1.98.0 connected again", || connected(&machine, &monitor).then_some(()));

    // (d) keadm rollback edge to the original version's backup.
    let t = Instant::now();
    let o = machine.exec(&[keadm, "rollback", "edge", "--historical-version", &original]);
    assert!(o.status.success(), "rollback:\n{}\njournal:\n{}", out(&o), journal());
    until("the original edgecore connected", || connected(&machine, &monitor).then_some(()));
    eprintln!(
        "MEASURED keadm rollback edge (stop, restore 3 files, start) → connected: {:.2} s",
        t.elapsed().as_secs_f64()
    );
    assert!(installed(&machine).contains(&original[1..]), "{}", installed(&machine));
    assert_eq!(
        report(&machine),
        json!({"event": "Rollback", "success": true, "fromVersion": "v1.98.0", "toVersion": original})
    );
    wait_kubelet_version(&cloud, node, &original);
    let o = machine.exec(&[keadm, "rollback", "edge", "--historical-version", "../../etc"]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(out(&o).contains("--historical-version: invalid version"), "{}", out(&o));

    // keadm backup edge: a fresh backup of the running node.
    let o = machine.exec(&[keadm, "backup", "edge"]);
    assert!(o.status.success(), "backup:\n{}", out(&o));
    assert_eq!(report(&machine), json!({"event": "Backup", "success": true, "fromVersion": "", "toVersion": original}));

    // keadm config-update: applied, edgecore restarted and connected; a typo changes nothing.
    let o = machine.exec(&[keadm, "config-update", "--set", "modules.edgeHub.heartbeat=20"]);
    assert!(o.status.success(), "config-update:\n{}\njournal:\n{}", out(&o), journal());
    assert_eq!(report(&machine)["event"], "ConfigUpdate");
    let yaml =
        String::from_utf8_lossy(&machine.exec(&["cat", "/etc/kubeedge/config/edgecore.yaml"]).stdout).into_owned();
    assert!(yaml.contains("heartbeat: 20"), "{yaml}");
    assert!(machine.exec(&["test", "-f", "/etc/kubeedge/config/edgecore.yaml.bak"]).status.success());
    let o = machine.exec(&[keadm, "config-update", "--set", "modules.edgeHub.heartbeet=20"]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(out(&o).contains("unknown key modules.edgeHub.heartbeet"), "{}", out(&o));
    assert_eq!(String::from_utf8_lossy(&machine.exec(&["cat", "/etc/kubeedge/config/edgecore.yaml"]).stdout), yaml);

    // (e) keadm ctl confirm with no upgrade waiting: MetaServer's answer, said clearly.
    let o = machine.exec(&[keadm, "ctl", "confirm"]);
    eprintln!("keadm ctl confirm with nothing waiting: {}", out(&o).trim());
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let said = out(&o);
    assert!(said.contains("/api/v1/taskupgrade/confirm-upgrade answered 4"), "{said}");

    machine.stop();
    cloud.stop();
}
