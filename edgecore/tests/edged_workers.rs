//! Edged's pod workers (issue #22): a pod whose image pull hangs holds up that pod alone. With a
//! private containerd, MetaManager on a real SQLite file and a stand-in for EdgeHub, a pod
//! whose image lives on a "registry" that accepts connections and never answers does not delay
//! another pod's start, a liveness restart elsewhere, nor its own delete.
//!
//! Ordering, not timing, decides: each of those must happen while containerd is still waiting
//! on its first connection to that registry (before it gives up and closes it).

use std::io::Read;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgecore::edged::module::EdgedModule;
use edgecore::edged::pods::PodRuntime;
use edgecore::metamanager::module::MetaManagerModule;
use kubeedge_beehive::{BoxFuture, Module, ModuleContext, ModuleError, Registry, RestartPolicy};
use kubeedge_cri::Cri;
use kubeedge_metastore::Store;
use kubeedge_model::{Content, Message};
use kubeedge_testkit::containerd::{self, PrivateContainerd};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// A registry that accepts connections and never answers. Records each connection's first
/// request line and whether the client closed it (containerd giving up, or a pull cancelled).
struct Hang {
    port: u16,
    conns: Arc<Mutex<Vec<(String, bool)>>>,
}

impl Hang {
    fn start() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let conns: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
        let all = conns.clone();
        std::thread::spawn(move || {
            for mut s in l.incoming().flatten() {
                let i = {
                    let mut v = all.lock().unwrap();
                    v.push((String::new(), false));
                    v.len() - 1
                };
                let all = all.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    let mut first = true;
                    // Read (and ignore) whatever comes until the client closes.
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        if std::mem::take(&mut first) {
                            let line = String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or_default().to_owned();
                            all.lock().unwrap()[i].0 = line;
                        }
                    }
                    all.lock().unwrap()[i].1 = true;
                });
            }
        });
        Self { port, conns }
    }

    fn accepted(&self) -> usize {
        self.conns.lock().unwrap().len()
    }

    fn closed(&self) -> usize {
        self.conns.lock().unwrap().iter().filter(|c| c.1).count()
    }

    /// Whether every connection whose request names `repo` was closed (`None`: none seen).
    fn closed_for(&self, repo: &str) -> Option<bool> {
        let v = self.conns.lock().unwrap();
        let mine: Vec<bool> = v.iter().filter(|c| c.0.contains(repo)).map(|c| c.1).collect();
        (!mine.is_empty()).then(|| mine.iter().all(|c| *c))
    }
}

/// EdgeHub's stand-in: connected, records what goes up, answers queries and deletes as a
/// cloud would (a delete with `{}`: done).
struct Hub {
    seen: mpsc::UnboundedSender<Message>,
}

impl Module for Hub {
    fn name(&self) -> &'static str {
        "websocket"
    }
    fn group(&self) -> &'static str {
        "hub"
    }
    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(async move {
            while let Some(m) = ctx.recv().await {
                if matches!(m.router.operation.as_str(), "delete" | "patch" | "query") {
                    let _ = ctx.bus.send_resp(Message::response_to(&m, Content::json(&json!({})).unwrap()));
                }
                let _ = self.seen.send(m);
            }
            Ok(())
        })
    }
}

fn pod(name: &str, container: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "resourceVersion": "1"},
        "spec": {"nodeName": "edge-w", "hostNetwork": true, "terminationGracePeriodSeconds": 1, "containers": [container]}})
}

fn from_cloud(op: &str, obj: &Value) -> Message {
    let name = obj["metadata"]["name"].as_str().unwrap();
    let mut m =
        Message::build("edgecontroller", "resource", format!("default/pod/{name}"), op, Content::json(obj).unwrap());
    m.header.resource_version = "1".into();
    m
}

/// The last status the edge reported for `name`, from the podpatches seen so far.
fn status_of(seen: &[Message], name: &str) -> Option<Value> {
    let resource = format!("default/podpatch/{name}");
    seen.iter().rev().filter(|m| m.router.resource == resource).find_map(|m| {
        let v: Value = serde_json::from_str(&m.content.as_str()?).ok()?;
        Some(v["status"].clone())
    })
}

#[test]
fn a_hung_image_pull_holds_up_only_its_own_pod() {
    if let Some(why) = containerd::unavailable() {
        eprintln!("SKIPPED edged workers: {why}");
        return;
    }
    let ctrd = PrivateContainerd::start().unwrap_or_else(|e| panic!("private containerd: {e}"));
    let hang = Hang::start();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let cri = rt.block_on(Cri::connect(ctrd.socket())).unwrap();
    let bus = {
        let _g = rt.enter();
        let store = Store::open(dir.path().join("edgecore.db"), Default::default()).unwrap();
        let runtime =
            PodRuntime { cri: cri.clone(), log_root: ctrd.pod_log_root(), pods_root: ctrd.dir().join("pods") };
        let mut reg = Registry::new();
        reg.register(Box::new(MetaManagerModule::new(store, "edge-w".into(), Duration::from_secs(30), None))).unwrap();
        reg.register(Box::new(Hub { seen: tx })).unwrap();
        let edged = EdgedModule::new(runtime, None, "127.0.0.1".into(), Duration::from_millis(500))
            .with_restart_backoff(Duration::from_millis(200));
        reg.register(Box::new(edged)).unwrap();
        let sup = reg.start(RestartPolicy::default());
        let bus = sup.bus();
        std::mem::forget(sup);
        bus
    };
    let send = |m: Message| rt.block_on(bus.send("metamanager", m)).unwrap();
    send(Message::build("websocket", "meta", "node/connection", "connect", Content::string("connected")));

    let image = ctrd.busybox_image();
    let hung = pod("hung", json!({"name": "c", "image": format!("127.0.0.1:{}/hang/never:1", hang.port)}));
    send(from_cloud("insert", &hung));
    let hung2 = pod("hung2", json!({"name": "c", "image": format!("127.0.0.1:{}/hang/also:1", hang.port)}));
    send(from_cloud("insert", &hung2));
    let mut seen: Vec<Message> = Vec::new();
    let mut wait_for = |what: &str, seen: &mut Vec<Message>, done: &dyn Fn(&[Message]) -> bool| {
        let deadline = std::time::Instant::now() + kubeedge_testkit::patience();
        while !done(seen) {
            assert!(std::time::Instant::now() < deadline, "{what} did not happen");
            if let Ok(Some(m)) =
                rt.block_on(async { tokio::time::timeout(Duration::from_millis(200), rx.recv()).await })
            {
                seen.push(m);
            }
        }
    };
    // containerd is now waiting on the registry, for both pods.
    kubeedge_testkit::eventually("containerd to reach the registry for both pods", || hang.accepted() >= 2);

    send(from_cloud("insert", &pod("quick", json!({"name": "c", "image": image, "command": ["sleep", "3600"]}))));
    send(from_cloud(
        "insert",
        &pod(
            "probed",
            json!({"name": "c", "image": image, "command": ["sleep", "3600"],
                "livenessProbe": {"exec": {"command": ["cat", "/no/such/file"]}, "periodSeconds": 1, "failureThreshold": 1}}),
        ),
    ));
    wait_for("quick to run", &mut seen, &|s| status_of(s, "quick").is_some_and(|st| st["phase"] == "Running"));
    assert_eq!(hang.closed(), 0, "quick ran only after containerd gave up on a hung pull");
    wait_for("probed to be restarted by its liveness probe", &mut seen, &|s| {
        status_of(s, "probed").is_some_and(|st| st["containerStatuses"][0]["restartCount"].as_i64() >= Some(1))
    });
    assert_eq!(hang.closed(), 0, "the liveness restart waited for a hung pull");

    // Deleted while its image is still being pulled: the pull is given up (containerd drops
    // that connection) and the pod is deleted in the cloud, while hung2's pull goes on.
    // (containerd 1.6 speaks plain HTTP to a registry on 127.0.0.1 and waits for an answer
    // without a timeout; a version that tried TLS first would close after its handshake
    // timeout, 10 s, well after all of this.)
    let mut terminating = hung.clone();
    terminating["metadata"]["deletionTimestamp"] = json!("2026-12-02T00:00:00Z");
    terminating["metadata"]["deletionGracePeriodSeconds"] = json!(1);
    send(from_cloud("update", &terminating));
    wait_for("hung's delete to go up", &mut seen, &|s| {
        s.iter().any(|m| m.router.operation == "delete" && m.router.resource == "default/pod/hung")
    });
    kubeedge_testkit::eventually("hung's pull to be given up", || hang.closed_for("/hang/never/") == Some(true));
    assert_eq!(hang.closed_for("/hang/also/"), Some(false), "hung2's pull goes on: {:?}", hang.conns.lock().unwrap());
    let left = rt.block_on(cri.list_pod_sandbox(None)).unwrap();
    assert!(
        !left.iter().any(|s| s.labels.get("io.kubernetes.pod.uid").map(String::as_str) == Some("uid-hung")),
        "hung's sandbox is gone"
    );
}
