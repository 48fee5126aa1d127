//! A MetaServer on 127.0.0.1:0 over a seeded SQLite store, with a fake cloud on the bus
//! (registered as EdgeHub, `websocket`/`hub`) that answers Applications, a kubeconfig on disk,
//! and a kubectl runner.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use edgecore::metamanager::metaserver::application::{Application, RESPONSE_OPERATION, Status};
use edgecore::metamanager::metaserver::{self, Options, Remote};
use edgecore::metamanager::{Change, ChangeKind, Changes, gvr_of};
use kubeedge_beehive::{BoxFuture, Module, ModuleContext, ModuleError, Registry, RestartPolicy, Supervisor};
use kubeedge_metastore::{MetaV2Row, Op, Store, Synchronous};
use kubeedge_model::{Content, Message};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long tests wait for something that should happen.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// What the fake cloud answers to an Application; `None` leaves it unanswered.
pub type Answer = Arc<dyn Fn(&Application) -> Option<Application> + Send + Sync>;

/// The fake cloud: EdgeHub's place on the bus, answering Applications as DynamicController.
struct FakeCloud {
    answer: Arc<Mutex<Answer>>,
    received: Arc<Mutex<Vec<Application>>>,
}

impl Module for FakeCloud {
    fn name(&self) -> &'static str {
        "websocket"
    }

    fn group(&self) -> &'static str {
        "hub"
    }

    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(async move {
            let shutdown = ctx.shutdown().clone();
            loop {
                let msg = tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    m = ctx.recv() => match m { Some(m) => m, None => return Ok(()) },
                };
                assert_eq!(msg.router.source, "metaserver");
                assert_eq!(msg.router.group, "dynamiccontroller");
                assert_eq!((msg.router.resource.as_str(), msg.router.operation.as_str()), ("null", "null"));
                let app: Application = msg.content.decode().expect("the content is an Application");
                self.received.lock().push(app.clone());
                let answer = self.answer.lock().clone();
                if let Some(reply_app) = answer(&app) {
                    let mut reply = Message::new();
                    reply.header.parent_id = msg.header.id.clone();
                    reply.router.source = "dynamiccontroller".into();
                    reply.router.group = "resource".into();
                    reply.router.resource = "ignore/Application/ignore".into();
                    reply.router.operation = RESPONSE_OPERATION.into();
                    reply.content = Content::json(&reply_app).expect("encode");
                    ctx.bus.send_resp(reply);
                }
            }
        })
    }
}

/// Approves every application: the returned object is the request body (or, for patches, a
/// stored-looking object) with a uid and resourceVersion, as the cloud's apiserver would.
pub fn approve_echo() -> Answer {
    Arc::new(|app: &Application| {
        let mut answer = app.clone();
        answer.status = Status::Approved;
        let mut obj: Value = app
            .req_body
            .as_deref()
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_else(|| json!({"metadata": {"name": "patched"}}));
        obj["metadata"]["uid"] = json!("0f0e0d0c-uid");
        obj["metadata"]["resourceVersion"] = json!("4242");
        answer.resp_body = if app.verb.as_str() == "delete" { None } else { Some(obj.to_string().into_bytes()) };
        Some(answer)
    })
}

/// Leaves every application unanswered.
pub fn never_answer() -> Answer {
    Arc::new(|_: &Application| None)
}

/// Answers every application with this status and reason.
pub fn answer_status(status: Status, reason: &str) -> Answer {
    let reason = reason.to_owned();
    Arc::new(move |app: &Application| {
        let mut answer = app.clone();
        answer.status = status;
        answer.reason = reason.clone();
        Some(answer)
    })
}

/// Rejects every application with this Kubernetes Status.
pub fn reject_with(status: Value) -> Answer {
    Arc::new(move |app: &Application| {
        let mut answer = app.clone();
        answer.status = Status::Rejected;
        answer.error.err_status = status.clone();
        Some(answer)
    })
}

/// A MetaServer with its store, change feed and fake cloud.
pub struct Env {
    pub rt: tokio::runtime::Runtime,
    pub dir: tempfile::TempDir,
    pub store: Store,
    pub changes: Changes,
    pub connected: Arc<AtomicBool>,
    pub addr: SocketAddr,
    pub kubeconfig: PathBuf,
    pub received: Arc<Mutex<Vec<Application>>>,
    answer: Arc<Mutex<Answer>>,
    supervisor: Option<Supervisor>,
    shutdown: CancellationToken,
    server: Option<JoinHandle<Result<(), metaserver::Error>>>,
    opts: Options,
}

impl Env {
    /// A server with default options over the standard seed.
    pub fn start() -> Self {
        Self::start_with(Options::default(), 4096)
    }

    /// A server with these options and a change channel of `changes_cap`.
    pub fn start_with(opts: Options, changes_cap: usize) -> Self {
        Self::start_custom(opts, changes_cap, true)
    }

    /// As [`Env::start_with`]; without `cloud`, no module stands in for EdgeHub on the bus.
    pub fn start_custom(opts: Options, changes_cap: usize, cloud: bool) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(
            dir.path().join("edgecore.db"),
            kubeedge_metastore::Options { synchronous: Synchronous::Off, ..Default::default() },
        )
        .expect("store");
        let (changes, _) = tokio::sync::broadcast::channel(changes_cap);
        let answer: Arc<Mutex<Answer>> = Arc::new(Mutex::new(approve_echo()));
        let received = Arc::new(Mutex::new(Vec::new()));
        let mut registry = Registry::new();
        if cloud {
            registry
                .register(Box::new(FakeCloud { answer: answer.clone(), received: received.clone() }))
                .expect("register");
        }
        let supervisor = rt.block_on(async { registry.start(RestartPolicy::never()) });
        let connected = Arc::new(AtomicBool::new(false));
        let mut env = Self {
            rt,
            kubeconfig: dir.path().join("kubeconfig"),
            dir,
            store,
            changes,
            connected,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            received,
            answer,
            supervisor: Some(supervisor),
            shutdown: CancellationToken::new(),
            server: None,
            opts,
        };
        env.seed();
        let listener = env.rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
        env.addr = listener.local_addr().expect("addr");
        env.serve_on(listener);
        std::fs::write(&env.kubeconfig, kubeconfig(env.addr)).expect("kubeconfig");
        env
    }

    fn serve_on(&mut self, listener: tokio::net::TcpListener) {
        let remote = Remote::new(self.supervisor.as_ref().expect("bus").bus(), self.connected.clone(), "edge-1");
        self.shutdown = CancellationToken::new();
        let task = metaserver::serve_with(
            listener,
            self.store.clone(),
            self.changes.clone(),
            remote,
            self.shutdown.clone(),
            self.opts.clone(),
        );
        self.server = Some(self.rt.spawn(task));
        // Serving means subscribed to the change feed: only then may the test publish changes
        // (under load the task may start after the first `put`, which it would never see).
        let _ = kubeedge_testkit::http_get(self.addr, "/api");
    }

    /// Stops the server; [`Env::restart`] starts a new one on the same port and store.
    pub fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.server.take() {
            self.rt.block_on(task).expect("server task").expect("server result");
        }
    }

    /// A new server on the same address over the same store.
    pub fn restart(&mut self) {
        let listener = self.rt.block_on(tokio::net::TcpListener::bind(self.addr)).expect("rebind");
        self.serve_on(listener);
    }

    /// Marks the edge online or offline.
    pub fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Release);
    }

    /// Sets how the fake cloud answers.
    pub fn answer_with(&self, answer: Answer) {
        *self.answer.lock() = answer;
    }

    /// The applications the fake cloud received.
    pub fn received(&self) -> Vec<Application> {
        self.received.lock().clone()
    }

    /// The standard seed: pods in `default` and `kube-system`, a configmap and a node.
    fn seed(&self) {
        self.store_only("pod", pod("default", "web-1", "web", "Running", "10.0.0.11"), 100);
        self.store_only("pod", pod("default", "web-2", "web", "Pending", ""), 101);
        self.store_only("pod", pod("kube-system", "dns", "dns", "Running", "10.0.0.53"), 102);
        self.store_only(
            "configmap",
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "settings", "namespace": "default", "resourceVersion": "103",
                    "creationTimestamp": "2024-01-01T00:00:00Z"},
                "data": {"mode": "edge", "level": "3"}}),
            103,
        );
        self.store_only(
            "service",
            json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web", "namespace": "default", "creationTimestamp": "2024-01-01T00:00:00Z"},
                "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.20", "ports": [{"port": 80, "protocol": "TCP"}]}}),
            90,
        );
        self.store_only(
            "lease",
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "edge-1", "namespace": "kube-node-lease", "creationTimestamp": "2024-01-01T00:00:00Z"},
                "spec": {"holderIdentity": "edge-1", "leaseDurationSeconds": 40}}),
            91,
        );
        // As cloud inserts of nodes arrive from older peers: no apiVersion or kind.
        self.store_only(
            "node",
            json!({"metadata": {"name": "edge-1", "resourceVersion": "104",
                    "creationTimestamp": "2024-01-01T00:00:00Z",
                    "labels": {"node-role.kubernetes.io/edge": "", "kubernetes.io/hostname": "edge-1"}},
                "status": {"conditions": [{"type": "Ready", "status": "True"}],
                    "addresses": [{"type": "InternalIP", "address": "192.168.1.10"}],
                    "nodeInfo": {"kubeletVersion": "v1.29.5-kubeedge-v1.23.0"}}}),
            104,
        );
    }

    fn row(ty: &str, obj: &Value, rv: u64) -> MetaV2Row {
        let gvr = gvr_of(ty).expect("a served type");
        let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
        let name = obj.pointer("/metadata/name").and_then(Value::as_str).expect("name");
        MetaV2Row {
            key: gvr.key(ns, name),
            gvr: gvr.column(),
            namespace: if gvr.namespaced { ns.to_owned() } else { String::new() },
            name: name.to_owned(),
            resource_version: rv,
            value: obj.to_string(),
        }
    }

    /// Writes a row without telling watchers (as while the server was down).
    pub fn store_only(&self, ty: &str, obj: Value, rv: u64) {
        let row = Self::row(ty, &obj, rv);
        self.rt.block_on(self.store.apply(vec![Op::UpsertV2(row)])).expect("upsert");
    }

    /// Commits a row and publishes the change, as MetaManager does.
    pub fn put(&self, kind: ChangeKind, ty: &str, obj: Value, rv: u64) {
        self.rt.block_on(self.put_async(kind, ty, obj, rv));
    }

    /// [`Env::put`] from inside the runtime.
    pub async fn put_async(&self, kind: ChangeKind, ty: &str, obj: Value, rv: u64) {
        let row = Self::row(ty, &obj, rv);
        self.store.apply(vec![Op::UpsertV2(row.clone())]).await.expect("upsert");
        let _ = self.changes.send(Arc::new(Change { kind, row }));
    }

    /// Deletes a row and publishes the change.
    pub fn remove(&self, ty: &str, obj: Value, rv: u64) {
        let row = Self::row(ty, &obj, rv);
        self.rt.block_on(self.store.apply(vec![Op::DeleteV2 { key: row.key.clone() }])).expect("delete");
        let _ = self.changes.send(Arc::new(Change { kind: ChangeKind::Deleted, row }));
    }

    /// `http://{addr}`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube-rs client for the server (retrying 429/503/504 with backoff, kube-rs' default).
    pub fn client(&self) -> kube::Client {
        self.client_with(true)
    }

    /// A kube-rs client that does not retry.
    pub fn client_without_retry(&self) -> kube::Client {
        self.client_with(false)
    }

    fn client_with(&self, retry: bool) -> kube::Client {
        let uri: http::Uri = self.url().parse().expect("uri");
        let mut cfg = kube::Config::new(uri);
        cfg.default_namespace = "default".into();
        cfg.default_retry = retry;
        let _guard = self.rt.enter();
        kube::Client::try_from(cfg).expect("client")
    }

    /// Runs kubectl against the server.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_stdin(args, None)
    }

    /// Runs kubectl with input on stdin.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut child = self
            .kubectl_cmd(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("kubectl (v1.32) is required on PATH for these tests: {e}"));
        if let Some(input) = stdin {
            child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
        }
        child.wait_with_output().expect("kubectl output")
    }

    /// A kubectl command with this server's kubeconfig.
    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.env("KUBECONFIG", &self.kubeconfig).env("HOME", self.dir.path()).args(args);
        cmd
    }

    /// Runs kubectl and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {} failed:\nstdout: {}\nstderr: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl and expects failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            !out.status.success(),
            "kubectl {} should have failed:\nstdout: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `kubectl … -o json`, parsed.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).expect("kubectl printed JSON")
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.server.take() {
            let _ = self.rt.block_on(task);
        }
        if let Some(s) = self.supervisor.take() {
            self.rt.block_on(s.shutdown(Duration::from_secs(5)));
        }
    }
}

/// A pod as the cloud syncs it down.
pub fn pod(ns: &str, name: &str, app: &str, phase: &str, ip: &str) -> Value {
    let mut status = json!({"phase": phase, "containerStatuses": [{"name": "main", "ready": phase == "Running",
        "restartCount": 0, "image": "busybox", "imageID": "", "state": {}}]});
    if !ip.is_empty() {
        status["podIP"] = json!(ip);
    }
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"), "labels": {"app": app},
            "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"nodeName": "edge-1", "containers": [{"name": "main", "image": "busybox"}]},
        "status": status})
}

/// A kubeconfig for `http://{addr}` without credentials, namespace `default`.
pub fn kubeconfig(addr: SocketAddr) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: metaserver
  cluster:
    server: http://{addr}
users:
- name: local
  user: {{}}
contexts:
- name: metaserver
  context:
    cluster: metaserver
    user: local
    namespace: default
current-context: metaserver
preferences: {{}}
"
    )
}

#[allow(unused_imports)] // not every test file that shares this module polls
pub use kubeedge_testkit::eventually;
