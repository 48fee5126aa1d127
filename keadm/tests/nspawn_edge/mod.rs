//! Shared by the tests that join an edge in a systemd-nspawn machine and upgrade it: skipping,
//! edgecore binaries stamped with other versions, an image holding one, and what to read back
//! from the machine and the API.

#![allow(dead_code)]

use std::path::Path;

use kubeedge_testkit::nspawn::Machine;
use kubeedge_testkit::until;
use serde_json::{Value, json};

pub fn skip_reason() -> Option<String> {
    kubeedge_testkit::nspawn::unavailable().or_else(kubeedge_testkit::containerd::unavailable)
}

pub fn out(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

pub fn bin_dir() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_keadm")).parent().unwrap()
}

pub fn sha256(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// edgecore stamped as `version`, written to `to` (0755).
pub fn stamped(version: &str, to: &Path) -> Vec<u8> {
    use std::os::unix::fs::PermissionsExt as _;
    let original = std::fs::read(bin_dir().join("edgecore")).unwrap();
    let bin = kubeedge_model::version::stamp(&original, version).unwrap();
    std::fs::write(to, &bin).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// A docker-archive image `reference` whose one layer holds `usr/local/bin/edgecore`.
pub fn image_tar(reference: &str, edgecore: &[u8], to: &Path) {
    let mut layer = tar::Builder::new(Vec::new());
    for d in ["usr/", "usr/local/", "usr/local/bin/"] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        layer.append_data(&mut h, d, std::io::empty()).unwrap();
    }
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o755);
    h.set_size(edgecore.len() as u64);
    layer.append_data(&mut h, "usr/local/bin/edgecore", edgecore).unwrap();
    let layer = layer.into_inner().unwrap();
    let layer_sha = sha256(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/usr/local/bin/edgecore"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_sha}")]},
    }))
    .unwrap();
    let config_name = format!("{}.json", sha256(&config));
    let manifest = serde_json::to_vec(
        &json!([{"Config": config_name, "RepoTags": [reference], "Layers": [format!("{layer_sha}.tar")]}]),
    )
    .unwrap();
    let mut b = tar::Builder::new(std::fs::File::create(to).unwrap());
    for (name, data) in
        [("manifest.json", &manifest), (config_name.as_str(), &config), (&format!("{layer_sha}.tar"), &layer)]
    {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    b.finish().unwrap();
}

pub fn report(m: &Machine) -> Value {
    let o = m.exec(&["cat", "/etc/kubeedge/upgrade_report.json"]);
    assert!(o.status.success(), "no report: {}", out(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

pub fn installed(m: &Machine) -> String {
    String::from_utf8_lossy(&m.exec(&["/usr/local/bin/edgecore", "--version"]).stdout).trim().to_owned()
}

pub fn connected(m: &Machine, monitor: &str) -> bool {
    let o = m.exec(&["curl", "-fsS", &format!("http://{monitor}/metrics")]);
    String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == "kubeedge_edgehub_connected 1")
}

pub fn kubelet_version(cloud: &kubeedge_e2e::CloudSide, name: &str) -> Option<String> {
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(cloud.client());
    let node = cloud.rt.block_on(nodes.get_opt(name)).ok()??;
    Some(node.status?.node_info?.kubelet_version)
}

pub fn wait_kubelet_version(cloud: &kubeedge_e2e::CloudSide, node: &str, version: &str) {
    let suffix = format!("-kubeedge-{version}");
    until(&format!("kubeletVersion ending with {suffix}"), || {
        kubelet_version(cloud, node).filter(|v| v.ends_with(&suffix)).map(drop)
    });
}

/// `keadm join` of node `node` in `machine` to `cloud` with the private containerd at
/// `endpoint` (`unix://…`) and `extra` `--set` settings; returns the monitor server's address.
pub fn join(machine: &Machine, cloud: &kubeedge_e2e::CloudSide, endpoint: &str, node: &str, extra: &str) -> String {
    let keadm = Path::new(env!("CARGO_BIN_EXE_keadm")).to_str().unwrap();
    let (ws, https) = (format!("127.0.0.1:{}", cloud.ws_port), cloud.https_port.to_string());
    let token = cloud.token();
    let monitor = format!("127.0.0.1:{}", kubeedge_testkit::free_port());
    let mut sets = format!(
        "modules.edged.tailoredKubeletConfig.readOnlyPort={},commonConfig.monitorServer.bindAddress={monitor},\
         modules.metaManager.metaServer.enable=true,modules.metaManager.metaServer.server=127.0.0.1:{}",
        kubeedge_testkit::free_port(),
        kubeedge_testkit::free_port()
    );
    if !extra.is_empty() {
        sets = format!("{sets},{extra}");
    }
    let o = machine
        .exec(&[keadm, "join", "-e", &ws, "-s", &https, "-t", &token, "-i", node, "-p", endpoint, "--set", &sets]);
    assert!(o.status.success(), "keadm join failed:\n{}\njournal:\n{}", out(&o), machine.journal("edgecore.service"));
    monitor
}

/// Imports the image archive at `tar` into the containerd at `socket` (namespace k8s.io).
pub fn import(socket: &Path, tar: &Path) {
    let o = std::process::Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args(["--namespace", "k8s.io", "images", "import"])
        .arg(tar)
        .output()
        .unwrap();
    assert!(o.status.success(), "ctr images import: {}", out(&o));
}

/// A script standing in for an edgecore that says `version` and exits 1 at once.
pub fn broken_edgecore(version: &str) -> Vec<u8> {
    format!(
        "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'edgecore {version} (kubeedge-rs, broken on purpose)'; exit 0; fi\nexit 1\n"
    )
    .into_bytes()
}
