//! The real daemons: cloudcore (CloudHub, with apiserver-lite as its cluster) and an edgecore.
//! - An edge that has nothing but the token joins, connects, shows up in cloudcore's
//!   `KubeEdge_CloudHub_connected_nodes`, and both stop cleanly.
//! - An edge whose certificate is near the end of its validity renews it over mTLS (no token)
//!   and reconnects with the new one.

use std::time::Duration;

use kubeedge_e2e as common;

use common::{CloudSide, connected_nodes, wait_until};
use kubeedge_testkit::Process;
use kubeedge_testkit::link;

#[test]
fn an_edge_joins_with_the_token_only_and_connects() {
    let dir = tempfile::tempdir().unwrap();
    let mut cloud = CloudSide::start(dir.path());
    let token = cloud.token();
    let edge_bin = &kubeedge_testkit::workspace_bin("edgecore");
    let edge_cfg = link::edgecore(
        edge_bin,
        dir.path(),
        "edge-1",
        &token,
        &cloud.link(),
        &[(&["modules", "edgeHub", "heartbeat"], "1".into())],
    );
    let mut edge = Process::spawn(edge_bin, &["--config", edge_cfg.to_str().unwrap()]).unwrap();
    edge.wait_for_line("Joined: certificate written.");
    edge.wait_for_line("Connected to CloudHub.");
    wait_until("the node to count as connected", || connected_nodes(cloud.monitor) == Some(1));
    cloud.proc.wait_for_line("Edge connected.");
    assert!(dir.path().join("edge/certs/server.key").is_file());

    // The edge stops: the cloud sees it go.
    edge.signal("TERM");
    assert!(edge.wait_exit(kubeedge_testkit::patience()).unwrap().success(), "{}", edge.log());
    wait_until("the node to count as gone", || connected_nodes(cloud.monitor) == Some(0));
    cloud.stop();
}

#[test]
fn an_edge_renews_its_certificate_before_it_expires_and_reconnects_with_it() {
    let dir = tempfile::tempdir().unwrap();
    // The cluster CA is ours, so the test can issue the edge a certificate that lives 20 s.
    let ca = kubeedge_pki::Ca::generate().unwrap();
    std::fs::create_dir_all(dir.path().join("cloud")).unwrap();
    std::fs::write(dir.path().join("cloud/ca.crt"), ca.cert_pem()).unwrap();
    std::fs::write(dir.path().join("cloud/ca.key"), kubeedge_pki::pem("EC PRIVATE KEY", ca.key_sec1())).unwrap();
    let cloud = CloudSide::start(dir.path());
    let [ca_path, cert_path, key_path] = link::edge_cert_paths(dir.path());
    let (csr, key) = kubeedge_pki::edge_csr("edge-r").unwrap();
    let short = ca.sign_csr_for(&csr, Duration::from_secs(20), &[kubeedge_pki::ExtKeyUsage::ClientAuth]).unwrap();
    for (path, text) in [
        (&ca_path, ca.cert_pem()),
        (&cert_path, kubeedge_pki::pem("CERTIFICATE", &short)),
        (&key_path, kubeedge_pki::pem("EC PRIVATE KEY", &key)),
    ] {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    let edge_bin = &kubeedge_testkit::workspace_bin("edgecore");
    // No usable token: renewal must authenticate with the certificate alone.
    let edge_cfg = link::edgecore(
        edge_bin,
        dir.path(),
        "edge-r",
        "0000.none",
        &cloud.link(),
        &[(&["modules", "edgeHub", "heartbeat"], "1".into())],
    );
    let mut edge = Process::spawn(edge_bin, &["--config", edge_cfg.to_str().unwrap()]).unwrap();
    edge.wait_for_line("Connected to CloudHub.");
    let mark = edge.mark();
    edge.wait_for_line_since(mark, "Certificate rotated.");
    edge.wait_for_line_since(mark, "Reconnecting with the rotated certificate.");
    edge.wait_for_line_since(mark, "Connected to CloudHub.");

    let renewed = kubeedge_pki::parse_pem(&std::fs::read_to_string(&cert_path).unwrap()).unwrap().1;
    assert_ne!(renewed, short);
    assert!(kubeedge_pki::verify_signed_by(&renewed, ca.cert_der()));
    let (nb, na) = kubeedge_pki::validity(&renewed).unwrap();
    assert!(na - nb > 86_400, "renewed for edgeCertSigningDuration days, not seconds: {nb}..{na}");
    assert_eq!(kubeedge_pki::subject(&renewed).unwrap().0, "system:node:edge-r");
    let new_key = kubeedge_pki::key_from_pem(&std::fs::read_to_string(&key_path).unwrap()).unwrap();
    assert_ne!(new_key, key, "a fresh key comes with the new certificate");
    wait_until("the node to count as connected", || connected_nodes(cloud.monitor) == Some(1));
    drop(edge);
    cloud.stop();
}
