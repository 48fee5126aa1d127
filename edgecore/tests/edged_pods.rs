//! Edged's pod runtime against a real, private containerd (CRI v1): a Kubernetes Pod becomes a
//! sandbox and containers, its status reads back as Running with a pod IP and ready
//! conditions, its logs are in kubelet's layout, crashing containers restart as restartPolicy
//! says, and a kill leaves nothing behind.

use std::time::{Duration, Instant};

use edgecore::edged::pods::{PodKey, PodRuntime, log_dir};
use edgecore::edged::volumes::ObjectSource;
use k8s_openapi::api::core::v1::Pod;
use kubeedge_cri::Cri;
use kubeedge_testkit::containerd::{self, PrivateContainerd};
use serde_json::{Value, json};

fn pod(name: &str, image: &str, host_network: bool) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {"hostNetwork": host_network, "containers": [{"name": "web", "image": image,
            "command": ["sh", "-c"], "args": ["echo started $GREETING; sleep 3600"],
            "env": [{"name": "GREETING", "value": "hello"}]}]}
    }))
    .unwrap()
}

/// Configmaps, secrets and tokens from a map, as MetaManager would give them.
#[derive(Default)]
struct MapSource(std::collections::HashMap<String, Value>);

impl ObjectSource for MapSource {
    fn object<'a>(&'a self, ty: &'a str, ns: &'a str, name: &'a str) -> futures::future::BoxFuture<'a, Option<Value>> {
        Box::pin(async move { self.0.get(&format!("{ns}/{ty}/{name}")).cloned() })
    }
    fn token<'a>(&'a self, _ns: &'a str, sa: &'a str, _req: Value) -> futures::future::BoxFuture<'a, Option<String>> {
        Box::pin(async move { Some(format!("token-for-{sa}")) })
    }
}

/// The pod's status once `want` accepts it.
async fn eventually(what: &str, rt: &PodRuntime, p: &Pod, want: impl Fn(&Value) -> bool) -> Value {
    kubeedge_testkit::until_async(what, async || {
        let st = rt.status(p, "192.0.2.10").await.unwrap();
        want(&st).then_some(st)
    })
    .await
}

/// Runs `body` with a private containerd and a pod runtime on it; skips loudly without root.
fn with_runtime(test: &str, body: impl AsyncFnOnce(&PrivateContainerd, PodRuntime)) {
    if let Some(why) = containerd::unavailable() {
        eprintln!("SKIPPED {test}: {why}");
        return;
    }
    let ctrd = PrivateContainerd::start().unwrap_or_else(|e| panic!("private containerd: {e}"));
    let tokio_rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    tokio_rt.block_on(async {
        let rt = PodRuntime {
            cri: Cri::connect(ctrd.socket()).await.unwrap(),
            log_root: ctrd.pod_log_root(),
            pods_root: ctrd.dir().join("pods"),
        };
        body(&ctrd, rt).await;
    });
}

#[test]
fn pods_run_report_running_with_ip_and_are_killed_cleanly() {
    with_runtime("edged pod test", async |ctrd, rt| {
        let src = MapSource::default();
        for (name, host) in [("hostnet", true), ("bridged", false)] {
            let p = pod(name, ctrd.busybox_image(), host);
            let started =
                rt.start(&p, &src, "192.0.2.10").await.unwrap_or_else(|e| panic!("{name}: {e:#}\n{}", ctrd.log()));
            assert_eq!(started.containers.len(), 1);
            let st = eventually("Running", &rt, &p, |s| s["phase"] == "Running").await;
            assert_eq!(st["containerStatuses"][0]["name"], "web");
            assert_eq!(st["containerStatuses"][0]["ready"], true);
            assert!(st["containerStatuses"][0]["containerID"].as_str().unwrap().starts_with("containerd://"));
            let ready = st["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap();
            assert_eq!(ready["status"], "True");
            let ip = st["podIP"].as_str().unwrap();
            if host {
                assert_eq!(ip, "192.0.2.10", "a host-network pod has the host's IP");
            } else {
                let prefix = ctrd.pod_cidr().rsplit_once('.').unwrap().0;
                assert!(ip.starts_with(prefix), "{ip} not in {}", ctrd.pod_cidr());
            }
            // Logs in kubelet's layout, in the CRI format, with the env applied.
            let log = log_dir(&ctrd.pod_log_root(), &PodKey::of(&p).unwrap()).join("web/0.log");
            let deadline = Instant::now() + kubeedge_testkit::patience();
            loop {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if text.contains("stdout F started hello") {
                    break;
                }
                assert!(Instant::now() < deadline, "no log line in {}: {text:?}", log.display());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // Kill: nothing left in the runtime.
            rt.kill(&format!("uid-{name}"), Duration::from_secs(1)).await.unwrap();
            assert!(rt.sandboxes_of(&format!("uid-{name}")).await.unwrap().is_empty());
            rt.kill(&format!("uid-{name}"), Duration::from_secs(1)).await.expect("a second kill is a no-op");
            assert_eq!(rt.status(&p, "192.0.2.10").await.unwrap()["phase"], "Pending");
        }
        // Crash loops: restartPolicy Always restarts with backoff, counting restarts and keeping
        // the last exit in lastState; Never leaves it Failed.
        for (name, policy) in [("crashy", "Always"), ("oneshot", "Never")] {
            let p: Pod = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
                "spec": {"hostNetwork": true, "restartPolicy": policy, "containers": [{"name": "c",
                    "image": ctrd.busybox_image(), "command": ["sh", "-c", "echo bye; exit 1"]}]}
            }))
            .unwrap();
            rt.start(&p, &src, "192.0.2.10").await.unwrap();
            let mut backoffs = edgecore::edged::pods::Backoffs::new();
            let deadline = Instant::now() + kubeedge_testkit::patience();
            let st = loop {
                rt.sync_containers(&p, &mut backoffs, Duration::from_millis(100), &src, "192.0.2.10").await.unwrap();
                let st = rt.status(&p, "192.0.2.10").await.unwrap();
                let restarts = st["containerStatuses"][0]["restartCount"].as_u64().unwrap_or(0);
                let done = if policy == "Always" { restarts >= 2 } else { st["phase"] == "Failed" };
                if done {
                    break st;
                }
                assert!(Instant::now() < deadline, "{name}: {st}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            if policy == "Always" {
                assert_eq!(st["phase"], "Running", "{st}");
                assert_eq!(st["containerStatuses"][0]["lastState"]["terminated"]["exitCode"], 1, "{st}");
            } else {
                assert_eq!(st["containerStatuses"][0]["restartCount"], 0, "{st}");
                assert_eq!(st["containerStatuses"][0]["state"]["terminated"]["exitCode"], 1, "{st}");
            }
            rt.kill(&format!("uid-{name}"), Duration::from_secs(1)).await.unwrap();
        }

        // A pod the runtime cannot start: a clear error naming the image, nothing crashes.
        let bad = pod("bad", "localhost/missing:0", true);
        let err = rt.start(&bad, &src, "192.0.2.10").await.expect_err("missing image");
        let text = format!("{err:#}");
        assert!(text.contains("localhost/missing:0"), "{text}");
        rt.kill("uid-bad", Duration::from_secs(1)).await.unwrap();
    });
}

#[test]
fn volumes_and_env_come_from_configmaps_secrets_and_the_downward_api() {
    with_runtime("edged volume test", async |ctrd, rt| {
        let mut src = MapSource::default();
        src.0.insert("default/configmap/web-config".into(), json!({"data": {"index.html": "hello from a configmap"}}));
        src.0.insert("default/configmap/env-config".into(), json!({"data": {"GREETING": "hi from envFrom"}}));
        src.0.insert("default/secret/creds".into(), json!({"data": {"password": "czNjcjN0"}})); // "s3cr3t"
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "vols", "namespace": "default", "uid": "uid-vols", "labels": {"app": "web"}},
            "spec": {"hostNetwork": true, "serviceAccountName": "builder",
                "containers": [{"name": "c", "image": ctrd.busybox_image(), "command": ["sh", "-c", "sleep 3600"],
                    "env": [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                    "envFrom": [{"configMapRef": {"name": "env-config"}, "prefix": "CM_"}],
                    "volumeMounts": [{"name": "site", "mountPath": "/www", "readOnly": true},
                                     {"name": "scratch", "mountPath": "/scratch"},
                                     {"name": "info", "mountPath": "/etc/podinfo"},
                                     {"name": "token", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]}],
                "volumes": [{"name": "site", "configMap": {"name": "web-config"}},
                            {"name": "scratch", "emptyDir": {}},
                            {"name": "info", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
                            {"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}},
                                {"configMap": {"name": "web-config", "items": [{"key": "index.html", "path": "ca.crt"}]}}]}}]}
        }))
        .unwrap();
        let started = rt.start(&p, &src, "192.0.2.10").await.unwrap_or_else(|e| panic!("{e:#}"));
        let id = started.containers[0].1.clone();
        eventually("Running", &rt, &p, |s| s["phase"] == "Running").await;
        let exec = |cmd: &str| {
            let (cri, id, cmd) = (rt.cri.clone(), id.clone(), cmd.to_owned());
            async move {
                let r = cri.exec_sync(&id, vec!["sh".into(), "-c".into(), cmd], Duration::from_secs(10)).await.unwrap();
                String::from_utf8_lossy(&r.stdout).trim().to_owned()
            }
        };
        assert_eq!(exec("cat /www/index.html").await, "hello from a configmap");
        assert_eq!(exec("echo $PASSWORD").await, "s3cr3t");
        assert_eq!(exec("echo $POD").await, "vols");
        assert_eq!(exec("echo $CM_GREETING").await, "hi from envFrom");
        assert_eq!(exec("cat /etc/podinfo/labels").await, "app=\"web\"");
        assert_eq!(exec("cat /var/run/secrets/kubernetes.io/serviceaccount/token").await, "token-for-builder");
        assert_eq!(exec("echo hi > /scratch/f && cat /scratch/f").await, "hi");
        assert!(!exec("touch /www/x 2>&1; echo rc=$?").await.ends_with("rc=0"), "read-only mount");

        // A pod whose configmap does not exist: a clear error, nothing started.
        let missing: Pod = serde_json::from_value(json!({
            "metadata": {"name": "nocm", "namespace": "default", "uid": "uid-nocm"},
            "spec": {"hostNetwork": true, "containers": [{"name": "c", "image": ctrd.busybox_image()}],
                "volumes": [{"name": "v", "configMap": {"name": "absent"}}]}
        }))
        .unwrap();
        let err = rt.start(&missing, &src, "192.0.2.10").await.expect_err("missing configmap");
        assert!(err.to_string().contains("configmap default/absent"), "{err}");
        assert!(rt.sandboxes_of("uid-nocm").await.unwrap().is_empty());

        rt.kill("uid-vols", Duration::from_secs(1)).await.unwrap();
        assert!(!ctrd.dir().join("pods/uid-vols").exists(), "volumes cleaned up");
    });
}

/// Init containers run in order before the app container; a failing one with restartPolicy
/// Never fails the pod. Dead containers are collected as the GC policy says, the current run of
/// each container always kept.
#[test]
fn init_containers_run_in_order_and_dead_containers_are_collected() {
    with_runtime("edged init/gc test", async |ctrd, rt| {
        use edgecore::edged::pods::{Backoffs, GcPolicy};
        use kubeedge_cri::v1;
        let src = MapSource::default();
        let img = ctrd.busybox_image();
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "inits", "namespace": "default", "uid": "uid-inits"},
            "spec": {"hostNetwork": true, "restartPolicy": "Always",
                "initContainers": [
                    {"name": "one", "image": img, "command": ["sh", "-c", "echo one"]},
                    {"name": "two", "image": img, "command": ["sh", "-c", "echo two"]}],
                "containers": [{"name": "app", "image": img, "command": ["sh", "-c", "exit 3"]}]}
        }))
        .unwrap();
        let started = rt.start(&p, &src, "192.0.2.10").await.unwrap();
        assert_eq!(started.containers.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["one"], "one at a time");
        let st = rt.status(&p, "192.0.2.10").await.unwrap();
        assert_eq!(st["phase"], "Pending", "{st}");
        assert_eq!(st["containerStatuses"][0]["state"]["waiting"]["reason"], "PodInitializing", "{st}");
        let mut backoffs = Backoffs::new();
        let mut order = Vec::new();
        // Drive it until the app container crashed and was restarted twice.
        let deadline = Instant::now() + kubeedge_testkit::patience();
        let st = loop {
            let synced =
                rt.sync_containers(&p, &mut backoffs, Duration::from_millis(50), &src, "192.0.2.10").await.unwrap();
            for (name, _) in synced.started {
                order.push(name);
            }
            let st = rt.status(&p, "192.0.2.10").await.unwrap();
            if st["containerStatuses"][0]["restartCount"].as_u64().unwrap_or(0) >= 2 {
                break st;
            }
            assert!(Instant::now() < deadline, "{st}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(&order[..2], ["two", "app"], "two after one, the app after both");
        assert_eq!(st["initContainerStatuses"][1]["state"]["terminated"]["reason"], "Completed", "{st}");
        assert_eq!(st["conditions"][0]["status"], "True", "Initialized: {st}");

        // Extra dead runs of `app` (as after restarts whose cleanup was interrupted): the GC
        // keeps the current run and one dead one.
        let sb = rt.sandboxes_of("uid-inits").await.unwrap().remove(0);
        let sandbox_cfg = edgecore::edged::pods::sandbox_config(&rt.log_root, &p).unwrap();
        let spec = &p.spec.as_ref().unwrap().containers[0];
        for attempt in [10, 11] {
            let cfg = edgecore::edged::pods::container_config(&p, spec, attempt).unwrap();
            let id = rt.cri.create_container(&sb.id, cfg, &sandbox_cfg).await.unwrap();
            rt.cri.start_container(&id).await.unwrap();
        }
        let sandbox = sb.id.clone();
        let count = |rt: PodRuntime| {
            let sandbox = sandbox.clone();
            async move {
                let f = v1::ContainerFilter { pod_sandbox_id: sandbox, ..Default::default() };
                let all = rt.cri.list_containers(Some(f)).await.unwrap();
                all.iter().filter(|c| c.metadata.as_ref().unwrap().name == "app").count()
            }
        };
        // Wait until every run of `app` exited (exit 3).
        let deadline = Instant::now() + kubeedge_testkit::patience();
        loop {
            let f = v1::ContainerFilter { pod_sandbox_id: sandbox.clone(), ..Default::default() };
            let all = rt.cri.list_containers(Some(f)).await.unwrap();
            let exited = v1::ContainerState::ContainerExited as i32;
            if all.iter().filter(|c| c.metadata.as_ref().unwrap().name == "app").all(|c| c.state == exited) {
                break;
            }
            assert!(Instant::now() < deadline, "the extra runs did not exit");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let before = count(rt.clone()).await;
        assert!(before >= 3, "{before}");
        let keep_one = GcPolicy { min_age: Duration::ZERO, max_per_container: 1, max_total: -1 };
        let removed = rt.collect_garbage(&keep_one).await.unwrap();
        assert_eq!(count(rt.clone()).await, 2, "current + one dead (removed {removed})");
        // With max_total 0 every dead run goes; the current run of each container stays.
        let none_dead = GcPolicy { min_age: Duration::ZERO, max_per_container: -1, max_total: 0 };
        rt.collect_garbage(&none_dead).await.unwrap();
        assert_eq!(count(rt.clone()).await, 1, "only the current run");
        // Init containers' current runs stay: the pod stays initialized.
        let st = rt.status(&p, "192.0.2.10").await.unwrap();
        assert_eq!(st["conditions"][0]["status"], "True", "{st}");
        rt.kill("uid-inits", Duration::from_secs(1)).await.unwrap();
    });
}
