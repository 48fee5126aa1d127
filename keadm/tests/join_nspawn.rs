//! `keadm join` on a real systemd (a systemd-nspawn machine sharing the host's network) against
//! a real cloud (apiserver-lite and cloudcore on loopback) with a private containerd: the node
//! becomes Ready with `edgecore.service` active; `kill -9` of edgecore has systemd restart it and
//! it connects again; a second join is refused without touching anything; `keadm reset` leaves
//! no file, unit or process behind. Then `keadm deprecated init` runs cloudcore the same way as
//! `cloudcore.service`. SKIPPED loudly without root, systemd-nspawn or containerd.

use std::path::Path;
use std::time::Instant;

use kubeedge_testkit::nspawn::{Bind, Machine};
use kubeedge_testkit::{TempDir, free_port, until};

fn skip_reason() -> Option<String> {
    kubeedge_testkit::nspawn::unavailable().or_else(kubeedge_testkit::containerd::unavailable)
}

fn out(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The binaries' directory (keadm, edgecore and cloudcore side by side), bound into the machine.
fn bin_dir() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_keadm")).parent().unwrap()
}

/// Whether node `name` is Ready in the API.
fn node_ready(cloud: &kubeedge_e2e::CloudSide, name: &str) -> bool {
    let client = cloud.client();
    cloud.rt.block_on(async {
        let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
        let Ok(Some(node)) = nodes.get_opt(name).await else { return false };
        node.status
            .and_then(|s| s.conditions)
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    })
}

/// Creates pod `default/sleeper` on `node` and waits until it runs.
fn run_pod(cloud: &kubeedge_e2e::CloudSide, node: &str, image: &str) {
    use k8s_openapi::api::core::v1::Pod;
    let pods: kube::Api<Pod> = kube::Api::namespaced(cloud.client(), "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "sleeper", "namespace": "default"},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": image, "command": ["sleep", "3600"]}]}
    }))
    .unwrap();
    cloud.rt.block_on(pods.create(&kube::api::PostParams::default(), &pod)).unwrap();
    until("pod sleeper Running", || {
        let p = cloud.rt.block_on(pods.get_opt("sleeper")).ok()??;
        (p.status?.phase.as_deref() == Some("Running")).then_some(())
    });
}

/// The containers (pod sandboxes included) in the private containerd.
fn ctr_containers(c: &kubeedge_testkit::containerd::PrivateContainerd) -> Vec<String> {
    let o = std::process::Command::new("ctr")
        .arg("--address")
        .arg(c.socket())
        .args(["--namespace", "k8s.io", "containers", "ls", "-q"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out(&o));
    String::from_utf8_lossy(&o.stdout).lines().map(str::to_owned).collect()
}

fn metric(m: &Machine, addr: &str, name: &str) -> Option<String> {
    let o = m.exec(&["curl", "-fsS", &format!("http://{addr}/metrics")]);
    String::from_utf8_lossy(&o.stdout).lines().find_map(|l| l.strip_prefix(&format!("{name} ")).map(str::to_owned))
}

#[test]
fn join_restart_and_reset_under_systemd() {
    if let Some(why) = skip_reason() {
        kubeedge_testkit::skip("join_restart_and_reset_under_systemd", &why);
        return;
    }
    let dir = TempDir::new();
    let cloud = kubeedge_e2e::CloudSide::start(dir.path());
    let containerd = kubeedge_testkit::containerd::PrivateContainerd::start().unwrap();
    let usr_local_bin = dir.path().join("usr-local-bin");
    std::fs::create_dir(&usr_local_bin).unwrap();
    let machine = Machine::boot(&[
        Bind::ro(bin_dir()),
        Bind::rw(containerd.dir(), containerd.dir()),
        Bind::rw(&usr_local_bin, "/usr/local/bin"),
    ])
    .unwrap();

    let keadm = Path::new(env!("CARGO_BIN_EXE_keadm")).to_str().unwrap();
    let (ws, https) = (format!("127.0.0.1:{}", cloud.ws_port), cloud.https_port.to_string());
    let token = cloud.token();
    let endpoint = format!("unix://{}", containerd.socket().display());
    let monitor = format!("127.0.0.1:{}", free_port());
    let sets = format!(
        "modules.edged.tailoredKubeletConfig.readOnlyPort={},commonConfig.monitorServer.bindAddress={monitor}",
        free_port()
    );
    let join = [
        "join", "-e", &ws, "-s", &https, "-t", &token, "-i", "edge-ns", "-p", &endpoint, "--set", &sets, "-l", "zone=a",
    ];
    let mut argv = vec![keadm];
    argv.extend_from_slice(&join);

    let t = Instant::now();
    let o = machine.exec(&argv);
    let joined = t.elapsed();
    assert!(o.status.success(), "keadm join failed:\n{}\njournal:\n{}", out(&o), machine.journal("edgecore.service"));
    assert_eq!(machine.systemctl(&["is-active", "edgecore.service"]), "active");
    assert_eq!(machine.systemctl(&["is-enabled", "edgecore.service"]), "enabled");
    until("node edge-ns Ready", || node_ready(&cloud, "edge-ns").then_some(()));
    let ready = t.elapsed();
    eprintln!(
        "MEASURED keadm join: {:.2} s to connected, {:.2} s to node Ready",
        joined.as_secs_f64(),
        ready.as_secs_f64()
    );
    assert!(machine.exec(&["test", "-f", "/etc/kubeedge/config/edgecore.yaml"]).status.success());
    assert!(usr_local_bin.join("edgecore").is_file());
    // The key is private; no token is left on disk.
    let key = machine.exec(&["stat", "-c", "%a", "/etc/kubeedge/certs/server.key"]);
    assert_eq!(String::from_utf8_lossy(&key.stdout).trim(), "600");
    let yaml = machine.exec(&["cat", "/etc/kubeedge/config/edgecore.yaml"]);
    assert!(!String::from_utf8_lossy(&yaml.stdout).contains(&token));

    // A second join is a clear error and changes nothing.
    let o = machine.exec(&argv);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(out(&o).contains("edgecore is already installed here"), "{}", out(&o));
    assert_eq!(machine.systemctl(&["is-active", "edgecore.service"]), "active");

    // kill -9: systemd restarts it and it connects again.
    let pid = machine.property("edgecore.service", "MainPID");
    let t = Instant::now();
    assert!(machine.exec(&["kill", "-KILL", &pid]).status.success());
    until("edgecore restarted and connected", || {
        let new = machine.property("edgecore.service", "MainPID");
        (new != pid && new != "0" && metric(&machine, &monitor, "kubeedge_edgehub_connected").as_deref() == Some("1"))
            .then_some(())
    });
    eprintln!("MEASURED kill -9 → restarted and connected again: {:.2} s", t.elapsed().as_secs_f64());
    assert_eq!(machine.property("edgecore.service", "NRestarts"), "1");
    assert!(node_ready(&cloud, "edge-ns"));

    // A pod runs on the node: reset stops and removes it through CRI, with its directory.
    run_pod(&cloud, "edge-ns", containerd.busybox_image());
    assert!(!ctr_containers(&containerd).is_empty());

    // reset: no file, unit, process or pod left.
    let o = machine.exec(&[keadm, "reset", "--force"]);
    assert!(o.status.success(), "{}", out(&o));
    for path in
        ["/etc/kubeedge", "/var/lib/kubeedge", "/etc/systemd/system/edgecore.service", "/usr/local/bin/edgecore"]
    {
        assert!(!machine.exec(&["test", "-e", path]).status.success(), "{path} is left after reset:\n{}", out(&o));
    }
    assert_eq!(machine.property("edgecore.service", "LoadState"), "not-found");
    assert!(out(&o).contains("Removed pod default/sleeper"), "{}", out(&o));
    assert_eq!(ctr_containers(&containerd), Vec::<String>::new(), "containers are left after reset");
    assert!(!machine.exec(&["test", "-e", "/var/lib/kubelet/pods"]).status.success(), "pod dirs are left");
    assert!(!machine.exec(&["pgrep", "-x", "edgecore"]).status.success(), "an edgecore process is left");
    let wants = machine.exec(&["find", "/etc/systemd/system", "-name", "edgecore*"]);
    assert!(String::from_utf8_lossy(&wants.stdout).trim().is_empty(), "{}", out(&wants));
    assert_eq!(std::fs::read_dir(&usr_local_bin).unwrap().count(), 0);
    machine.stop();
    cloud.stop();
}

#[test]
fn deprecated_init_runs_cloudcore_under_systemd() {
    if let Some(why) = kubeedge_testkit::nspawn::unavailable() {
        kubeedge_testkit::skip("deprecated_init_runs_cloudcore_under_systemd", &why);
        return;
    }
    let dir = TempDir::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        apiserver_lite::ApiServer::start(l, Default::default()).await.unwrap()
    });
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    let usr_local_bin = dir.path().join("usr-local-bin");
    std::fs::create_dir(&usr_local_bin).unwrap();
    let machine = Machine::boot(&[
        Bind::ro(bin_dir()),
        Bind { host: kubeconfig.clone(), inside: "/root/.kube/config".into(), read_only: true },
        Bind::rw(&usr_local_bin, "/usr/local/bin"),
    ])
    .unwrap();
    let keadm = Path::new(env!("CARGO_BIN_EXE_keadm")).to_str().unwrap();
    let monitor = format!("127.0.0.1:{}", free_port());
    let sets = [
        format!("commonConfig.monitorServer.bindAddress={monitor}"),
        format!("modules.cloudHub.websocket.port={}", free_port()),
        format!("modules.cloudHub.https.port={}", free_port()),
        "modules.cloudHub.websocket.address=127.0.0.1".to_owned(),
        "modules.cloudHub.https.address=127.0.0.1".to_owned(),
        "modules.cloudHub.unixsocket.enable=false".to_owned(),
    ];
    let mut argv = vec![keadm, "deprecated", "init", "--advertise-address", "127.0.0.1"];
    for s in &sets {
        argv.extend(["--set", s]);
    }
    let t = Instant::now();
    let o = machine.exec(&argv);
    assert!(o.status.success(), "{}\njournal:\n{}", out(&o), machine.journal("cloudcore.service"));
    eprintln!("MEASURED keadm deprecated init: {:.2} s to /readyz", t.elapsed().as_secs_f64());
    assert_eq!(machine.systemctl(&["is-active", "cloudcore.service"]), "active");
    // The hardened unit really runs it: the sandbox is in force.
    assert_eq!(machine.property("cloudcore.service", "ProtectSystem"), "strict");
    assert_eq!(machine.property("cloudcore.service", "NoNewPrivileges"), "yes");

    let o = machine.exec(&[keadm, "reset", "--force"]);
    assert!(o.status.success(), "{}", out(&o));
    assert_eq!(machine.property("cloudcore.service", "LoadState"), "not-found");
    assert!(!machine.exec(&["test", "-e", "/etc/kubeedge"]).status.success());
    assert!(!machine.exec(&["pgrep", "-x", "cloudcore"]).status.success());
    assert_eq!(std::fs::read_dir(&usr_local_bin).unwrap().count(), 0);
    machine.stop();
    rt.block_on(api.shutdown());
}
