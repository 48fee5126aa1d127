//! The real keadm binary against apiserver-lite: `gettoken` prints upstream's shared token, or
//! with `--node` one bound to that node with the given lifetime; commands not built yet are
//! refused by name.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use kubeedge_testkit::run;
use serde_json::json;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_keadm"))
}

#[test]
fn gettoken_prints_the_shared_token_or_a_node_bound_one() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = kubeedge_pki::Ca::generate().unwrap();
    let shared = ca.token(Duration::from_secs(3600));
    let api = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = apiserver_lite::ApiServer::start(l, Default::default()).await.unwrap();
        let kc = kube::config::Kubeconfig::from_yaml(&api.kubeconfig()).unwrap();
        let client =
            kube::Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap())
                .unwrap();
        let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        nss.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "kubeedge"}})).unwrap())
            .await
            .unwrap();
        let secrets: Api<Secret> = Api::namespaced(client, "kubeedge");
        let b64 = |b: &[u8]| k8s_openapi::ByteString(b.to_vec());
        for (name, data) in [
            ("casecret", json!({"cadata": b64(ca.cert_der()), "cakeydata": b64(ca.key_sec1())})),
            ("tokensecret", json!({"tokendata": b64(shared.as_bytes())})),
        ] {
            let s: Secret = serde_json::from_value(json!({"metadata": {"name": name}, "data": data})).unwrap();
            secrets.create(&PostParams::default(), &s).await.unwrap();
        }
        api
    });
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    let kc = kubeconfig.to_str().unwrap();

    let (status, out, err) = run(bin(), &["gettoken", "--kube-config", kc]);
    assert!(status.success(), "{err}");
    assert_eq!(out.trim(), shared);

    let (status, out, err) = run(bin(), &["gettoken", "--kube-config", kc, "--node", "edge-b", "--ttl", "1h30m"]);
    assert!(status.success(), "{err}");
    let (hash, jwt) = kubeedge_pki::split_token(out.trim()).unwrap();
    assert_eq!(hash, ca.hash());
    let claims = ca.verify_jwt(jwt).unwrap();
    assert_eq!(claims.node.as_deref(), Some("edge-b"));
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert!((now + 5_300..=now + 5_500).contains(&claims.exp), "exp {} now {now}", claims.exp);

    // Bad input: exit 64 with what is wrong.
    let (status, _, err) = run(bin(), &["gettoken", "--kube-config", kc, "--node", "Edge_B"]);
    assert_eq!(status.code(), Some(64), "{err}");
    assert!(err.contains("--node"), "{err}");
    let (status, _, err) = run(bin(), &["gettoken", "--kube-config", kc, "--node", "edge-b", "--ttl", "1d"]);
    assert_eq!(status.code(), Some(64), "{err}");
    assert!(err.contains("--ttl"), "{err}");
    let (status, _, err) = run(bin(), &["gettoken", "--kube-config", dir.path().join("nope").to_str().unwrap()]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("kubeconfig"), "{err}");
    rt.block_on(api.shutdown());
}

#[test]
fn ctl_subcommands_not_built_yet_are_refused_by_name() {
    // Devices and unhold-upgrade are not built: refused by name before any config is read.
    for (argv, missing) in [
        (&["ctl", "edit", "device", "d1"][..], "devices"),
        (&["ctl", "get", "device"][..], "devices"),
        (&["ctl", "describe", "device", "d1"][..], "devices"),
        (&["ctl", "unhold-upgrade", "node", "n1"][..], "node upgrade tasks"),
    ] {
        let (status, _, err) = run(bin(), argv);
        assert_eq!(status.code(), Some(64), "{argv:?}: {err}");
        assert!(err.contains("is not available in this build yet") && err.contains(missing), "{argv:?}: {err}");
    }
    // `keadm upgrade cloud` is not built either (upgrade edge is).
    let (status, _, err) = run(bin(), &["upgrade", "cloud"]);
    assert_eq!(status.code(), Some(64), "{err}");
    assert!(err.contains("keadm upgrade cloud is not available in this build"), "{err}");
    // A kind keadm ctl does not know is a usage error that names it.
    let (status, _, err) = run(bin(), &["ctl", "get", "services"]);
    assert_eq!(status.code(), Some(64), "{err}");
    assert!(err.contains("\"services\""), "{err}");
}
