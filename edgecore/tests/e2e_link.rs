//! The real daemons: cloudcore (CloudHub, with apiserver-lite as its cluster) and an edgecore
//! that has nothing but the token. The edge joins, connects, shows up in cloudcore's
//! `KubeEdge_CloudHub_connected_nodes`, and both stop cleanly.

use std::path::Path;
use std::time::{Duration, Instant};

use kubeedge_testkit::{Process, free_port, http_get, run, set_yaml_line, set_yaml_path, workspace_bin};

fn connected_nodes(addr: std::net::SocketAddr) -> Option<i64> {
    let (_, body) = http_get(addr, "/metrics").ok()?;
    body.lines().find_map(|l| l.strip_prefix("KubeEdge_CloudHub_connected_nodes ")).and_then(|v| v.trim().parse().ok())
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + kubeedge_testkit::patience();
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_edge_joins_with_the_token_only_and_connects() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let api = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        apiserver_lite::ApiServer::start(l, Default::default()).await.unwrap()
    });
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();

    let cloud_bin = workspace_bin("cloudcore");
    let (ws_port, https_port) = (free_port(), free_port());
    let (_, yaml, _) = run(&cloud_bin, &["--defaultconfig"]);
    let mut yaml = set_yaml_line(&yaml, "bindAddress", "127.0.0.1:0");
    let p = |dir: &Path, f: &str| format!("\"{}\"", dir.join(f).display());
    for (path, value) in [
        (&["kubeAPIConfig", "kubeConfig"][..], format!("\"{}\"", kubeconfig.display())),
        (&["modules", "cloudHub", "advertiseAddress"][..], "[\"127.0.0.1\"]".to_owned()),
        (&["modules", "cloudHub", "websocket", "address"][..], "127.0.0.1".to_owned()),
        (&["modules", "cloudHub", "websocket", "port"][..], ws_port.to_string()),
        (&["modules", "cloudHub", "https", "address"][..], "127.0.0.1".to_owned()),
        (&["modules", "cloudHub", "https", "port"][..], https_port.to_string()),
        (&["modules", "cloudHub", "tlsCAFile"][..], p(dir.path(), "cloud/ca.crt")),
        (&["modules", "cloudHub", "tlsCAKeyFile"][..], p(dir.path(), "cloud/ca.key")),
        (&["modules", "cloudHub", "tlsCertFile"][..], p(dir.path(), "cloud/server.crt")),
        (&["modules", "cloudHub", "tlsPrivateKeyFile"][..], p(dir.path(), "cloud/server.key")),
        (&["modules", "cloudHub", "unixsocket", "enable"][..], "false".to_owned()),
    ] {
        yaml = set_yaml_path(&yaml, path, &value);
    }
    let cloud_cfg = dir.path().join("cloudcore.yaml");
    std::fs::write(&cloud_cfg, &yaml).unwrap();
    let mut cloud = Process::spawn(&cloud_bin, &["--config", cloud_cfg.to_str().unwrap()]).unwrap();
    let cloud_monitor = cloud.monitor_addr();
    cloud.wait_for_line("CloudHub WebSocket server listening");

    // The token, as `keadm gettoken` reads it.
    let token = rt.block_on(async {
        use k8s_openapi::api::core::v1::Secret;
        let kc = kube::config::Kubeconfig::from_yaml(&api.kubeconfig()).unwrap();
        let client =
            kube::Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap())
                .unwrap();
        let secrets: kube::Api<Secret> = kube::Api::namespaced(client, "kubeedge");
        let s = secrets.get("tokensecret").await.unwrap();
        String::from_utf8(s.data.unwrap()["tokendata"].0.clone()).unwrap()
    });

    let edge_bin = Path::new(env!("CARGO_BIN_EXE_edgecore"));
    let (_, yaml) = {
        let (_, y, _) = run(edge_bin, &["--defaultconfig"]);
        ((), y)
    };
    let mut yaml = set_yaml_line(&yaml, "bindAddress", "127.0.0.1:0");
    for (path, value) in [
        (&["modules", "edged", "hostnameOverride"][..], "edge-1".to_owned()),
        (&["modules", "edgeHub", "token"][..], format!("\"{token}\"")),
        (&["modules", "edgeHub", "heartbeat"][..], "1".to_owned()),
        (&["modules", "edgeHub", "httpServer"][..], format!("https://127.0.0.1:{https_port}")),
        (&["modules", "edgeHub", "websocket", "server"][..], format!("127.0.0.1:{ws_port}")),
        (&["modules", "edgeHub", "tlsCaFile"][..], p(dir.path(), "edge/ca/rootCA.crt")),
        (&["modules", "edgeHub", "tlsCertFile"][..], p(dir.path(), "edge/certs/server.crt")),
        (&["modules", "edgeHub", "tlsPrivateKeyFile"][..], p(dir.path(), "edge/certs/server.key")),
    ] {
        yaml = set_yaml_path(&yaml, path, &value);
    }
    let edge_cfg = dir.path().join("edgecore.yaml");
    std::fs::write(&edge_cfg, &yaml).unwrap();
    let mut edge = Process::spawn(edge_bin, &["--config", edge_cfg.to_str().unwrap()]).unwrap();
    edge.wait_for_line("Joined: certificate written.");
    edge.wait_for_line("Connected to CloudHub.");
    wait_until("the node to count as connected", || connected_nodes(cloud_monitor) == Some(1));
    cloud.wait_for_line("Edge connected.");
    assert!(dir.path().join("edge/certs/server.key").is_file());

    // The edge stops: the cloud sees it go.
    edge.signal("TERM");
    assert!(edge.wait_exit(kubeedge_testkit::patience()).unwrap().success(), "{}", edge.log());
    wait_until("the node to count as gone", || connected_nodes(cloud_monitor) == Some(0));
    cloud.signal("TERM");
    let status = cloud.wait_exit(kubeedge_testkit::patience());
    assert!(status.is_some_and(|s| s.success()), "{}", cloud.log());
    rt.block_on(api.shutdown());
}
