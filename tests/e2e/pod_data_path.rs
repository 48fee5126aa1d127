//! The pod data path with the real daemons: apiserver-lite, cloudcore (CloudHub, EdgeController,
//! SyncController) and edgecore (EdgeHub, MetaManager) joined by token.
//!
//! - A pod bound to the edge node lands in edgecore.db, is ACKed, and its ObjectSync records
//!   the resourceVersion the edge has; the configmap it uses arrives; updates and the delete
//!   propagate and the delete removes the ObjectSync.
//! - `kill -9` of edgecore while pods stream: every ObjectSync (= ACKed) has its row in the
//!   database; after a restart the edge converges on every pod.
//!
//! Until Edged exists the test registers the node itself, with the edge label edged would set.

use kubeedge_e2e as common;

use std::path::Path;

use common::{CloudSide, until};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kubeedge_apis::reliablesyncs::v1alpha1::ObjectSync;
use kubeedge_metastore::Store;
use kubeedge_testkit::{Process, link};
use serde_json::json;

fn pod(name: &str, node: &str) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": "web"}}, "spec": {
        "nodeName": node,
        "containers": [{"name": "web", "image": "busybox", "envFrom": [{"configMapRef": {"name": "web-config"}}]}]}}))
    .unwrap()
}

struct Setup {
    cloud: CloudSide,
    client: kube::Client,
    edge_cfg: std::path::PathBuf,
    db: std::path::PathBuf,
}

fn setup(dir: &Path) -> Setup {
    let mut cloud = CloudSide::start(dir);
    cloud.proc.wait_for_line("Loaded what edge nodes have acknowledged.");
    let client = cloud.rt.block_on(async {
        let kc = kube::config::Kubeconfig::from_yaml(&cloud.api.kubeconfig()).unwrap();
        kube::Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap()).unwrap()
    });
    let node: Node = serde_json::from_value(json!({"metadata": {"name": "edge-1",
        "labels": {"node-role.kubernetes.io/edge": "", "node-role.kubernetes.io/agent": ""}}}))
    .unwrap();
    cloud.rt.block_on(Api::<Node>::all(client.clone()).create(&PostParams::default(), &node)).unwrap();
    let token = cloud.token();
    let edge_bin = &kubeedge_testkit::workspace_bin("edgecore");
    let edge_cfg = link::edgecore(edge_bin, dir, "edge-1", &token, &cloud.link(), &[]);
    Setup { cloud, client, edge_cfg, db: dir.join("edge/edgecore.db") }
}

fn start_edge(s: &Setup) -> Process {
    let edge_bin = &kubeedge_testkit::workspace_bin("edgecore");
    let mut edge = Process::spawn(edge_bin, &["--config", s.edge_cfg.to_str().unwrap()]).unwrap();
    edge.wait_for_line("Connected to CloudHub.");
    edge
}

fn db_value(rt: &tokio::runtime::Runtime, db: &Path, key: &str) -> Option<String> {
    rt.block_on(async {
        let store = Store::open(db, Default::default()).ok()?;
        store.get(key).await.ok().flatten().map(|r| r.value)
    })
}

fn synced_rv(rt: &tokio::runtime::Runtime, client: &kube::Client, name: &str) -> Option<String> {
    let api: Api<ObjectSync> = Api::namespaced(client.clone(), "default");
    rt.block_on(api.get_opt(name)).ok().flatten().and_then(|o| o.status).map(|s| s.object_resource_version)
}

#[test]
fn pods_and_configmaps_are_committed_on_the_edge_acked_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path());
    let rt = &s.cloud.rt;
    let mut edge = start_edge(&s);
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), "default");
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), "default");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "web-config"}, "data": {"greeting": "hello"}})).unwrap();
    rt.block_on(cms.create(&PostParams::default(), &cm)).unwrap();
    let created = rt.block_on(pods.create(&PostParams::default(), &pod("web", "edge-1"))).unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    let rv = created.metadata.resource_version.clone().unwrap();

    let row = until("the pod in edgecore.db", || db_value(rt, &s.db, "default/pod/web"));
    assert!(row.contains(&uid), "{row}");
    until("the configmap in edgecore.db", || db_value(rt, &s.db, "default/configmap/web-config"));
    let os = format!("edge-1.{uid}");
    until("the ObjectSync to record the pod's version", || (synced_rv(rt, &s.client, &os)? == rv).then_some(()));

    // Updates.
    let patched = rt
        .block_on(pods.patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"v": "2"}}})),
        ))
        .unwrap();
    until("the pod update in edgecore.db", || {
        db_value(rt, &s.db, "default/pod/web").filter(|v| v.contains("\"v\":\"2\""))
    });
    let rv2 = patched.metadata.resource_version.unwrap();
    until("the ObjectSync to follow", || (synced_rv(rt, &s.client, &os)? == rv2).then_some(()));
    rt.block_on(cms.patch("web-config", &PatchParams::default(), &Patch::Merge(json!({"data": {"greeting": "bye"}}))))
        .unwrap();
    until("the configmap update in edgecore.db", || {
        db_value(rt, &s.db, "default/configmap/web-config").filter(|v| v.contains("bye"))
    });

    // Delete.
    rt.block_on(pods.delete("web", &DeleteParams { grace_period_seconds: Some(0), ..Default::default() })).unwrap();
    until("the pod to leave edgecore.db", || db_value(rt, &s.db, "default/pod/web").is_none().then_some(()));
    let api: Api<ObjectSync> = Api::namespaced(s.client.clone(), "default");
    until("the ObjectSync to go", || rt.block_on(api.get_opt(&os)).ok()?.is_none().then_some(()));

    edge.signal("TERM");
    assert!(edge.wait_exit(kubeedge_testkit::patience()).is_some_and(|st| st.success()), "{}", edge.log());
    s.cloud.stop();
}

#[test]
fn nothing_acked_is_lost_when_edgecore_is_killed_and_the_edge_converges_after_restart() {
    const PODS: usize = 30;
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path());
    let rt = &s.cloud.rt;
    let mut edge = start_edge(&s);
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), "default");
    let syncs: Api<ObjectSync> = Api::namespaced(s.client.clone(), "default");
    for i in 0..PODS {
        rt.block_on(pods.create(&PostParams::default(), &pod(&format!("p{i:02}"), "edge-1"))).unwrap();
    }
    // Kill while the stream is under way: after a few ACKs.
    until("a few ACKs", || (rt.block_on(syncs.list(&ListParams::default())).ok()?.items.len() >= 3).then_some(()));
    edge.signal("KILL");
    let _ = edge.wait_exit(kubeedge_testkit::patience());
    drop(edge);

    // Every ACK the cloud recorded is in the database.
    let acked = rt.block_on(syncs.list(&ListParams::default())).unwrap().items;
    assert!(!acked.is_empty());
    for os in &acked {
        let key = format!("default/{}/{}", os.spec.object_kind.to_lowercase(), os.spec.object_name);
        assert!(db_value(rt, &s.db, &key).is_some(), "{key} was ACKed but is not in edgecore.db");
    }

    // Restarted, the edge converges on every pod.
    let mut edge = start_edge(&s);
    for i in 0..PODS {
        let key = format!("default/pod/p{i:02}");
        until(&format!("{key} in edgecore.db"), || db_value(rt, &s.db, &key));
    }
    let all = rt.block_on(pods.list(&ListParams::default())).unwrap().items;
    for p in &all {
        let os = format!("edge-1.{}", p.metadata.uid.as_ref().unwrap());
        let rv = p.metadata.resource_version.clone().unwrap();
        until(&format!("{os} to be recorded"), || (synced_rv(rt, &s.client, &os)? == rv).then_some(()));
    }
    edge.signal("TERM");
    assert!(edge.wait_exit(kubeedge_testkit::patience()).is_some_and(|st| st.success()), "{}", edge.log());
    s.cloud.stop();
}

fn kubectl(kubeconfig: &Path, home: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", home)
        .args(args)
        .output()
        .expect("kubectl on PATH")
}

fn metaserver_kubeconfig(dir: &Path, port: u16) -> std::path::PathBuf {
    let kc = dir.join("metaserver.kubeconfig");
    std::fs::write(
        &kc,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: edge\n  cluster: {{server: \"http://127.0.0.1:{port}\"}}\n\
             contexts:\n- name: edge\n  context: {{cluster: edge, user: edge}}\ncurrent-context: edge\nusers:\n- name: edge\n  user: {{}}\n"
        ),
    )
    .unwrap();
    kc
}

#[test]
fn metaserver_keeps_serving_list_and_watch_while_the_cloud_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path());
    let port = kubeedge_testkit::free_port();
    let yaml = std::fs::read_to_string(&s.edge_cfg).unwrap();
    let yaml = kubeedge_testkit::set_yaml_path(&yaml, &["modules", "metaManager", "metaServer", "enable"], "true");
    let yaml = kubeedge_testkit::set_yaml_path(
        &yaml,
        &["modules", "metaManager", "metaServer", "server"],
        &format!("\"127.0.0.1:{port}\""),
    );
    std::fs::write(&s.edge_cfg, yaml).unwrap();
    let rt = &s.cloud.rt;
    let mut edge = start_edge(&s);
    edge.wait_for_line("MetaServer listening.");
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), "default");
    rt.block_on(pods.create(&PostParams::default(), &pod("web", "edge-1"))).unwrap();
    until("the pod in edgecore.db", || db_value(rt, &s.db, "default/pod/web"));
    // Its Node too: it was created before the edge first connected and is sent on connect.
    until("the node in edgecore.db", || db_value(rt, &s.db, "null/node/edge-1"));

    // The cloud goes away.
    s.cloud.proc.signal("TERM");
    assert!(s.cloud.proc.wait_exit(kubeedge_testkit::patience()).is_some_and(|st| st.success()));
    edge.wait_for_line("Disconnected from CloudHub.");
    let kc = metaserver_kubeconfig(dir.path(), port);
    let out = kubectl(&kc, dir.path(), &["get", "pods", "-A"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("web"), "{text}");
    let out = kubectl(&kc, dir.path(), &["get", "nodes", "-o", "name"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("node/edge-1"), "{}", String::from_utf8_lossy(&out.stderr));
    // A watch opens and lists what is there.
    let out = kubectl(&kc, dir.path(), &["get", "pods", "-w", "--request-timeout=2s", "-o", "name"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("pod/web"), "{}", String::from_utf8_lossy(&out.stderr));
    // Writes need the cloud: a clear error, at once.
    let out = kubectl(&kc, dir.path(), &["label", "pod", "web", "x=y"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("offline") || err.contains("ServiceUnavailable"), "{err}");
    edge.signal("TERM");
    assert!(edge.wait_exit(kubeedge_testkit::patience()).is_some_and(|st| st.success()), "{}", edge.log());
    rt.block_on(s.cloud.api.shutdown());
}

/// edgecore on a copy of the edgecore.db `fixture` (relative to this crate), with MetaServer
/// on a free port: (edgecore, MetaServer's kubeconfig).
fn serve_db(dir: &Path, fixture: &str) -> (Process, std::path::PathBuf) {
    let db = dir.join("edgecore.db");
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join(fixture), &db).unwrap();
    let mut perms = std::fs::metadata(&db).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&db, perms).unwrap();
    let bin = &kubeedge_testkit::workspace_bin("edgecore");
    let cfg = kubeedge_testkit::daemon::test_config(bin, dir, "edgecore");
    let port = kubeedge_testkit::free_port();
    let mut yaml = std::fs::read_to_string(&cfg).unwrap();
    for (path, value) in [
        (&["database", "dataSource"][..], format!("\"{}\"", db.display())),
        (&["modules", "metaManager", "metaServer", "enable"][..], "true".to_owned()),
        (&["modules", "metaManager", "metaServer", "server"][..], format!("\"127.0.0.1:{port}\"")),
    ] {
        yaml = kubeedge_testkit::set_yaml_path(&yaml, path, &value);
    }
    std::fs::write(&cfg, yaml).unwrap();
    let mut edge = Process::spawn(bin, &["--config", cfg.to_str().unwrap()]).unwrap();
    edge.wait_for_line("MetaServer listening.");
    (edge, metaserver_kubeconfig(dir, port))
}

#[test]
fn an_upstream_edgecore_db_opens_in_place_and_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let (mut edge, kc) = serve_db(dir.path(), "../crates/metastore/tests/fixtures/upstream-edgecore.db");
    let out = kubectl(&kc, dir.path(), &["get", "pods", "-n", "default", "-o", "name"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("pod/nginx"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = kubectl(&kc, dir.path(), &["get", "configmap", "nginx-conf", "-n", "default", "-o", "name"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    edge.signal("TERM");
    assert!(edge.wait_exit(kubeedge_testkit::patience()).is_some_and(|st| st.success()), "{}", edge.log());
}

/// Issue #13 item 6: the edgecore.db a real upstream edgecore v1.15.4 left behind (rows in
/// `meta` only: its node, lease, nodepatch and two configmaps) opens in place and is served.
#[test]
fn a_real_upstream_edgecore_db_opens_in_place_and_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let (mut edge, kc) = serve_db(dir.path(), "fixtures/upstream/real-pair/edgecore.db");
    for (args, want) in [
        (&["get", "nodes", "-o", "name"][..], "node/up-edge"),
        (&["get", "configmap", "web-page", "-n", "default", "-o", "name"][..], "configmap/web-page"),
        (&["get", "configmap", "kube-root-ca.crt", "-n", "default", "-o", "name"][..], "configmap/kube-root-ca.crt"),
        (&["get", "lease", "up-edge", "-n", "kube-node-lease", "-o", "name"][..], "lease.coordination.k8s.io/up-edge"),
    ] {
        let out = kubectl(&kc, dir.path(), args);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(want),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    edge.signal("TERM");
    assert!(edge.wait_exit(kubeedge_testkit::patience()).is_some_and(|st| st.success()), "{}", edge.log());
}
