//! The daemons' images (`hack/build-images.sh`, no docker and no registry) in a private
//! containerd:
//! - cloudcore's image runs with nothing but its config mounted at the path the chart mounts
//!   its ConfigMap at (`/etc/kubeedge/config`), as the image's user (nonroot, 65532) and with the
//!   image's own entrypoint and arguments; it answers `/readyz` and an edge on the host joins it
//!   and connects;
//! - edgecore's image holds a working binary (`edgecore --version` inside it).

use std::path::Path;
use std::process::Command;

use kubeedge_e2e::{connected_nodes, wait_until};
use kubeedge_testkit::containerd::{self, K8S_NAMESPACE, PrivateContainerd};
use kubeedge_testkit::link::{self, Cloud};
use kubeedge_testkit::{Process, free_port, http_get, workspace_bin, workspace_root};

/// The user cloudcore's image runs as (distroless's nonroot).
const NONROOT: u32 = 65532;
/// Where the chart mounts cloudcore's ConfigMap, and the image's default `--config` dir.
const CONFIG_DIR: &str = "/etc/kubeedge/config";

/// Builds both images from the binaries this test run uses (no cargo run, debug profile) into
/// `out` and imports them into `cd`; returns the images' names as containerd lists them.
fn build_images(cd: &PrivateContainerd, out: &Path) -> (String, String) {
    let bin = workspace_bin("cloudcore");
    workspace_bin("edgecore");
    // target/debug/cloudcore → target
    let target = bin.parent().and_then(Path::parent).expect("target dir");
    let res = Command::new("bash")
        .arg(workspace_root().join("hack/build-images.sh"))
        .args(["--profile", "debug", "--skip-build", "--out"])
        .arg(out)
        .arg("--address")
        .arg(cd.socket())
        .env("CARGO_TARGET_DIR", target)
        .output()
        .expect("run hack/build-images.sh");
    let log = format!("{}{}", String::from_utf8_lossy(&res.stdout), String::from_utf8_lossy(&res.stderr));
    assert!(res.status.success(), "hack/build-images.sh failed:\n{log}");
    let env = std::fs::read_to_string(out.join("daemons.env")).unwrap();
    let named = |var: &str| env.lines().find_map(|l| l.strip_prefix(var)).expect(var).to_owned();
    let (cloud, edge) = (named("CLOUDCORE_IMAGE="), named("EDGECORE_IMAGE="));
    let images = cd.ctr(&["images", "ls", "-q"]);
    let find = |short: &str| {
        images
            .lines()
            .find(|l| *l == short || l.strip_prefix("docker.io/") == Some(short))
            .unwrap_or_else(|| panic!("{short} not imported; images:\n{images}"))
            .to_owned()
    };
    (find(&cloud), find(&edge))
}

#[test]
fn the_cloudcore_image_serves_an_edge_and_the_edgecore_image_runs() {
    if let Some(why) = containerd::unavailable() {
        kubeedge_testkit::skip("the_cloudcore_image_serves_an_edge_and_the_edgecore_image_runs", &why);
        return;
    }
    let cd = PrivateContainerd::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cloud_image, edge_image) = build_images(&cd, &dir.path().join("images"));

    // edgecore's image: the binary and the libraries it links are all there.
    let version = cd.ctr(&["run", "--rm", &edge_image, "edgecore-version", "/usr/local/bin/edgecore", "--version"]);
    assert!(
        version.contains("edgecore") && version.contains("kubeedge-rs"),
        "edgecore --version in its image printed {version:?}"
    );

    // The cluster, on the host.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        apiserver_lite::ApiServer::start(l, Default::default()).await.unwrap()
    });

    // cloudcore's config dir, as the container sees it at CONFIG_DIR (read-only, as the
    // chart's ConfigMap): its paths rewritten from the host dir to CONFIG_DIR. cloudcore
    // writes no file: its CA, certificate and token go to Secrets.
    let conf = dir.path().join("config");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(conf.join("kubeconfig"), api.kubeconfig()).unwrap();
    let (ws_port, https_port) = (free_port(), free_port());
    let cloud = Cloud { kubeconfig: &conf.join("kubeconfig"), ip: "127.0.0.1", ws_port, https_port };
    let cfg = link::cloudcore(&workspace_bin("cloudcore"), &conf, &cloud);
    let yaml = std::fs::read_to_string(&cfg).unwrap().replace(conf.to_str().unwrap(), CONFIG_DIR);
    std::fs::write(&cfg, yaml).unwrap();

    // The image's entrypoint and default arguments (`--config /etc/kubeedge/config/cloudcore.yaml`),
    // the host's network (loopback reaches apiserver-lite), the config dir mounted.
    let name = format!("cloudcore-image-{}", std::process::id());
    let mount = format!("type=bind,src={},dst={CONFIG_DIR},options=rbind:ro", conf.display());
    let ctr_bin = Path::new("ctr");
    let socket = cd.socket().to_str().unwrap().to_owned();
    let mut cloudcore = Process::spawn(
        ctr_bin,
        &[
            "--address",
            &socket,
            "--namespace",
            K8S_NAMESPACE,
            "run",
            "--rm",
            "--net-host",
            "--mount",
            &mount,
            &cloud_image,
            &name,
        ],
    )
    .unwrap();
    let monitor = cloudcore.monitor_addr();
    cloudcore.wait_for_line("CloudHub WebSocket server listening");
    wait_until("cloudcore in its image to be ready", || http_get(monitor, "/readyz").is_ok_and(|(s, _)| s == 200));

    // It runs as nonroot: the task's process, seen from the host.
    let tasks = cd.ctr(&["tasks", "ls"]);
    let pid = tasks
        .lines()
        .find(|l| l.starts_with(&name))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no task {name} in\n{tasks}"));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap();
    assert_eq!(uid.split_whitespace().next(), Some(NONROOT.to_string().as_str()), "{status}");

    // An edge on the host joins the containerised cloudcore with the token and connects.
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
    let edge_bin = workspace_bin("edgecore");
    let edge_dir = dir.path().join("edge-host");
    std::fs::create_dir_all(&edge_dir).unwrap();
    let edge_cfg = link::edgecore(&edge_bin, &edge_dir, "edge-img", &token, &cloud, &[]);
    let mut edge = Process::spawn(&edge_bin, &["--config", edge_cfg.to_str().unwrap()]).unwrap();
    edge.wait_for_line("Connected to CloudHub.");
    wait_until("the containerised cloudcore to count the edge", || connected_nodes(monitor) == Some(1));

    edge.signal("TERM");
    assert!(edge.wait_exit(kubeedge_testkit::patience()).is_some_and(|s| s.success()), "{}", edge.log());
    // SIGTERM to the task: cloudcore stops cleanly and `ctr run --rm` exits with its status.
    cd.ctr(&["tasks", "kill", "--signal", "SIGTERM", &name]);
    let exit = cloudcore.wait_exit(kubeedge_testkit::patience());
    assert!(exit.is_some_and(|s| s.success()), "cloudcore in its image: {exit:?}\n{}", cloudcore.log());
    rt.block_on(api.shutdown());
}
