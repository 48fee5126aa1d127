//! `keadm debug collect` leaves no secret in its tarball: a join token in edgecore.yaml, a
//! private key in a file and inside a database row, a Secret in edgecore.db and a bearer token
//! in a log all go in, the tarball is unpacked with the real `tar`, and every file is searched.
//! What is not secret (a certificate, a configmap value, the pod) must still be there.

use std::path::Path;

use kubeedge_metastore::{MetaRow, Op, Store};
use kubeedge_testkit::{link, run, workspace_bin};
use serde_json::json;

const APPLIED_VALUE: &str = "YXBwbGllZC1zZWNyZXQtdmFsdWU=";
const TOKEN: &str = "0123456789abcdef0123456789abcdef.eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjE3MDB9.c2lnbmF0dXJlLXNlY3JldA";
const KEY_BODY: &str = "MHcCAQEEIKeyMaterialThatMustNeverLeaveTheNode0123456789oAoGCCqGSM49";
const SECRET_VALUE: &str = "c3VwZXItc2VjcmV0LXBhc3N3b3Jk";
const BEARER: &str = "sa-token-abcdef-0123456789";
const CERT_BODY: &str = "MIIBkTCCATegAwIBAgIUCertificatesMayStay";

#[test]
fn collect_writes_a_tarball_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cloud = link::Cloud { kubeconfig: &d.join("kubeconfig"), ip: "127.0.0.1", ws_port: 1, https_port: 2 };
    let cfg = link::edgecore(&workspace_bin("edgecore"), d, "edge-s", TOKEN, &cloud, &[]);
    assert!(std::fs::read_to_string(&cfg).unwrap().contains(TOKEN), "the token is in the config");
    let key_pem = format!("-----BEGIN EC PRIVATE KEY-----\n{KEY_BODY}\n-----END EC PRIVATE KEY-----\n");
    let cert_pem = format!("-----BEGIN CERTIFICATE-----\n{CERT_BODY}\n-----END CERTIFICATE-----\n");
    let [_, _, key] = link::edge_cert_paths(d);
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    std::fs::write(&key, &key_pem).unwrap();

    // The database: a Secret, a configmap carrying a key and a certificate, a pod.
    let db = d.join("edge/edgecore.db");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store = Store::open(&db, Default::default()).unwrap();
        let row = |key: &str, ty: &str, value: serde_json::Value| {
            Op::UpsertMeta(MetaRow { key: key.into(), ty: ty.into(), value: value.to_string() })
        };
        store
            .apply(vec![
                row(
                    "default/secret/db",
                    "secret",
                    json!({"metadata": {"name": "db", "namespace": "default"},
                    "type": "Opaque", "data": {"password": SECRET_VALUE}, "stringData": {"user": "admin-plain"}}),
                ),
                // kubectl apply keeps the whole Secret in an annotation, as a JSON string.
                row(
                    "default/secret/applied",
                    "secret",
                    json!({"metadata": {"name": "applied", "namespace": "default", "annotations": {
                        "kubectl.kubernetes.io/last-applied-configuration":
                            json!({"apiVersion": "v1", "kind": "Secret", "data": {"k": APPLIED_VALUE}}).to_string()}},
                    "data": {"k": APPLIED_VALUE}}),
                ),
                // Text that is not ASCII.
                row(
                    "default/configmap/zh",
                    "configmap",
                    json!({"metadata": {"name": "zh", "namespace": "default"}, "data": {"说明": "温度传感器 µs ©"}}),
                ),
                row(
                    "default/configmap/tls",
                    "configmap",
                    json!({"metadata": {"name": "tls", "namespace": "default"},
                    "data": {"tls.key": key_pem, "tls.crt": cert_pem, "mode": "visible-setting"}}),
                ),
                row(
                    "default/pod/web",
                    "pod",
                    json!({"metadata": {"name": "web", "namespace": "default"},
                    "spec": {"nodeName": "edge-s", "containers": [{"name": "c", "image": "busybox"}]}}),
                ),
            ])
            .await
            .unwrap();
        store.close().unwrap();
    });

    // Logs: no journald unit here, so --log-path is read; a .key file there is withheld.
    let logs = d.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(
        logs.join("edgecore.log"),
        format!("I0101 request with Authorization: Bearer {BEARER}\nI0101 edge started\n"),
    )
    .unwrap();
    std::fs::write(logs.join("stray.key"), &key_pem).unwrap();

    let out = d.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let (status, stdout, stderr) = run(
        Path::new(env!("CARGO_BIN_EXE_keadm")),
        &[
            "debug",
            "collect",
            "--config",
            cfg.to_str().unwrap(),
            "--output-path",
            out.to_str().unwrap(),
            "--log-path",
            logs.to_str().unwrap(),
            "--detail",
        ],
    );
    assert!(status.success(), "{stdout}{stderr}");
    let tarballs: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(tarballs.len(), 1, "{tarballs:?}");
    let name = tarballs[0].file_name().unwrap().to_string_lossy().into_owned();
    // Only its owner may read it.
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&tarballs[0]).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the tarball is {mode:o}");
    assert!(name.starts_with("edge_") && name.ends_with(".tar.gz"), "{name}");
    assert!(stdout.contains(&name), "{stdout}");

    let unpacked = d.join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    let tar =
        std::process::Command::new("tar").arg("-xzf").arg(&tarballs[0]).arg("-C").arg(&unpacked).status().unwrap();
    assert!(tar.success());
    let mut files = Vec::new();
    let mut stack = vec![unpacked.clone()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() { stack.push(path) } else { files.push(path) }
        }
    }
    let mut all = String::new();
    for f in &files {
        all.push_str(&String::from_utf8_lossy(&std::fs::read(f).unwrap()));
    }
    for secret in [TOKEN, "eyJhbGciOiJIUzI1NiJ9", KEY_BODY, SECRET_VALUE, "admin-plain", BEARER, APPLIED_VALUE] {
        assert!(!all.contains(secret), "{secret:?} leaked into the tarball");
    }
    assert!(all.contains("<redacted>"));
    for kept in
        [CERT_BODY, "温度传感器 µs ©", "visible-setting", "\"web\"", "edge started", "integrity_check: ok", "keadm "]
    {
        assert!(all.contains(kept), "{kept:?} missing from the tarball");
    }
    let rel: Vec<String> =
        files.iter().map(|f| f.strip_prefix(&unpacked).unwrap().to_string_lossy().into_owned()).collect();
    let stem = name.trim_end_matches(".tar.gz");
    for want in [
        "edgecore/edgecore.yaml",
        "versions.txt",
        "database/integrity.txt",
        "database/meta.jsonl",
        "logs/edgecore.log",
        "system/meminfo",
    ] {
        assert!(rel.contains(&format!("{stem}/{want}")), "{want} missing: {rel:?}");
    }
    let yaml = std::fs::read_to_string(unpacked.join(stem).join("edgecore/edgecore.yaml")).unwrap();
    assert!(yaml.contains("token: <redacted>") || yaml.contains("token: \"<redacted>\""), "{yaml}");
}
