//! `keadm join`'s preflight checks, each made to fail on purpose against a real cloud
//! (apiserver-lite and a cloudcore process on loopback): a wrong token, an unreachable cloud,
//! a missing runtime socket, a taken port, a bad node name, an existing install, a token the
//! cloud refuses. Each failure is printed with its name and a fix, and nothing is written
//! (the `--root` the join was pointed at stays empty). Usage errors exit 64.

use std::path::Path;
use std::time::Duration;

use kubeedge_testkit::{TempDir, free_port, run};

fn keadm() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_keadm"))
}

/// Lines of the check `name`: its status line and (for a failure) its fix line.
fn check<'a>(out: &'a str, name: &str) -> (&'a str, Option<&'a str>) {
    let lines: Vec<&str> = out.lines().collect();
    let i = lines
        .iter()
        .position(|l| l.split_whitespace().nth(2) == Some(name))
        .unwrap_or_else(|| panic!("no check {name} in:\n{out}"));
    let status = lines[i].split_whitespace().nth(1).unwrap_or_default();
    let fix = lines.get(i + 1).filter(|l| l.contains("fix: ")).copied();
    (status, fix)
}

fn assert_fails(out: &str, name: &str, reason: &str) {
    let (status, fix) = check(out, name);
    assert_eq!(status, "FAIL", "{name} should fail:\n{out}");
    let line = out.lines().find(|l| l.split_whitespace().nth(2) == Some(name)).unwrap();
    assert!(line.contains(reason), "{name}: expected {reason:?} in {line:?}");
    assert!(fix.is_some_and(|f| f.len() > 20), "{name} has no fix:\n{out}");
}

fn assert_passes(out: &str, name: &str) {
    assert_eq!(check(out, name).0, "ok", "{name} should pass:\n{out}");
}

fn assert_empty(root: &Path) {
    let left: Vec<_> = std::fs::read_dir(root).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(left.is_empty(), "keadm join wrote {left:?}");
}

fn join(root: &Path, args: &[&str]) -> (i32, String) {
    let mut all = vec!["join", "--root", root.to_str().unwrap()];
    all.extend_from_slice(args);
    let (status, out, err) = run(keadm(), &all);
    (status.code().unwrap_or(-1), format!("{out}{err}"))
}

#[test]
fn every_preflight_check_fails_by_name_with_a_fix_and_nothing_is_written() {
    let dir = TempDir::new();
    let cloud = kubeedge_e2e::CloudSide::start(dir.path());
    let token = cloud.token();
    let (ws, https) = (format!("127.0.0.1:{}", cloud.ws_port), cloud.https_port.to_string());
    let missing_socket = format!("unix://{}/no-containerd.sock", dir.path().display());
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();

    // A bad node name, a cloud not listening on -e, a token of another cloud, no runtime.
    let other = kubeedge_pki::Ca::generate().unwrap().token(Duration::from_secs(3600));
    let dead = format!("127.0.0.1:{}", free_port());
    let (code, out) = join(&root, &["-e", &dead, "-s", &https, "-t", &other, "-i", "Edge_1", "-p", &missing_socket]);
    assert_eq!(code, 1, "{out}");
    assert_fails(&out, "node-name", "\"Edge_1\" is not a valid node name");
    assert_fails(&out, "cloud-websocket", "unreachable");
    assert_passes(&out, "cloud-https");
    assert_fails(&out, "ca-hash", "is not the token's");
    assert_fails(&out, "runtime", "does not exist");
    assert_passes(&out, "clock");
    assert_eq!(check(&out, "token-accepted").0, "skip", "{out}");
    assert!(out.contains("nothing was written"), "{out}");
    assert_empty(&root);

    // A taken port (edged's, moved with --set) and a malformed token.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let set = format!("modules.edged.tailoredKubeletConfig.readOnlyPort={port}");
    let (code, out) =
        join(&root, &["-e", &ws, "-s", &https, "-t", "abc.def", "-i", "edge-1", "-p", &missing_socket, "--set", &set]);
    assert_eq!(code, 1, "{out}");
    assert_fails(&out, "ports", &format!("127.0.0.1:{port} (modules.edged.tailoredKubeletConfig.readOnlyPort)"));
    assert_fails(&out, "token-format", "not {caHash}.{jwt}");
    assert_passes(&out, "cloud-websocket");
    assert_passes(&out, "config");
    assert_empty(&root);

    // A --set naming a key edgecore.yaml does not have.
    let (code, out) =
        join(&root, &["-e", &ws, "-s", &https, "-t", &token, "-i", "edge-1", "--set", "modules.edged.readOnlyPortt=1"]);
    assert_eq!(code, 1, "{out}");
    assert_fails(&out, "config", "modules.edged.readOnlyPortt");
    assert_empty(&root);

    // An existing install is named, not overwritten.
    let existing = root.join("etc/kubeedge/config/edgecore.yaml");
    std::fs::create_dir_all(existing.parent().unwrap()).unwrap();
    std::fs::write(&existing, "kept").unwrap();
    let (code, out) = join(&root, &["-e", &ws, "-s", &https, "-t", &token, "-i", "edge-1", "-p", &missing_socket]);
    assert_eq!(code, 1, "{out}");
    assert_fails(&out, "not-installed", "edgecore.yaml");
    assert_eq!(std::fs::read_to_string(&existing).unwrap(), "kept");
    std::fs::remove_dir_all(root.join("etc")).unwrap();

    // Usage errors: exit 64, naming the flag.
    for (args, flag) in [
        (vec!["-e", &ws, "--hub-protocol", "quic"], "--hub-protocol"),
        (vec!["-e", "no-port"], "--cloudcore-ipport"),
        (vec!["-e", &ws, "-l", "=x"], "--labels"),
        (vec!["-e", &ws, "--set", "novalue"], "--set"),
    ] {
        let (code, out) = join(&root, &args);
        assert_eq!(code, 64, "{args:?}: {out}");
        assert!(out.contains(flag), "{args:?}: {out}");
    }
    assert_empty(&root);
    cloud.stop();
}

#[test]
fn a_token_the_cloud_refuses_fails_token_accepted() {
    if let Some(why) = kubeedge_testkit::containerd::unavailable() {
        kubeedge_testkit::skip("a_token_the_cloud_refuses_fails_token_accepted", &why);
        return;
    }
    let dir = TempDir::new();
    let cloud = kubeedge_e2e::CloudSide::start(dir.path());
    let containerd = kubeedge_testkit::containerd::PrivateContainerd::start().unwrap();
    let endpoint = format!("unix://{}", containerd.socket().display());
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    // The right CA hash with a JWT signed by another key: well-formed, matching, refused.
    let (hash, _) = kubeedge_pki::split_token(&cloud.token()).map(|(h, j)| (h.to_owned(), j.to_owned())).unwrap();
    let forged = kubeedge_pki::Ca::generate().unwrap().token(Duration::from_secs(3600));
    let forged = format!("{hash}.{}", kubeedge_pki::split_token(&forged).unwrap().1);
    let ws = format!("127.0.0.1:{}", cloud.ws_port);
    let https = cloud.https_port.to_string();
    let sets = format!(
        "modules.edged.tailoredKubeletConfig.readOnlyPort={},commonConfig.monitorServer.bindAddress=127.0.0.1:{}",
        free_port(),
        free_port()
    );
    let (code, out) =
        join(&root, &["-e", &ws, "-s", &https, "-t", &forged, "-i", "edge-1", "-p", &endpoint, "--set", &sets]);
    assert_eq!(code, 1, "{out}");
    for name in ["root", "node-name", "not-installed", "edgecore-binary", "runtime", "cgroup-driver", "config", "ports"]
    {
        assert_passes(&out, name);
    }
    assert_fails(&out, "token-accepted", "the cloud refused the token");
    assert_empty(&root);
    cloud.stop();
}
