//! The task manager on a real bus, a real SQLite file, a real MetaServer and (for pulls) a
//! private containerd: a stand-in for EdgeHub (`websocket`, group `hub`) records what goes to
//! the cloud. keadm and systemd-run are small scripts written by the tests that record their
//! argv (NUL-separated) and write keadm's report file as the real ones do. Some tests edit
//! the stored task records between runs (a database `keadm rollback edge` restored, a clock
//! moved past a deadline).

use std::path::{Path, PathBuf};
use std::time::Duration;

use edgecore::metamanager::metaserver::{self, Remote};
use edgecore::taskmanager::record::{Phase, Record, Records, Wait};
use edgecore::taskmanager::{Settings, TaskManagerModule};
use kubeedge_apis::operations::task::{TaskResource, TaskType, UpstreamMessage};
use kubeedge_beehive::{BoxFuture, Bus, Module, ModuleContext, ModuleError, Registry, RestartPolicy, Supervisor};
use kubeedge_metastore::{Options, Store};
use kubeedge_model::constants::group;
use kubeedge_model::protocol::edge;
use kubeedge_model::{Content, Message};
use kubeedge_testkit::containerd::{self, PrivateContainerd};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const NODE: &str = "edge-1";
const WAIT: Duration = Duration::from_secs(60);
/// How long a test waits to be sure nothing more comes.
const QUIET: Duration = Duration::from_millis(1500);

/// EdgeHub: records what the task manager sends to the cloud.
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
                let _ = self.seen.send(m);
            }
            Ok(())
        })
    }
}

/// The node's folder: database, report file, scripts and what they record.
struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn new() -> Self {
        let node = Self { dir: tempfile::tempdir().unwrap() };
        node.write_scripts();
        node
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn report_file(&self) -> PathBuf {
        self.path("upgrade_report.json")
    }

    /// keadm: records each command's argv in `keadm-{command}.argv`; `backup` and
    /// `config-update` write their report (as after success), `upgrade` does not (it would
    /// have stopped edgecore). `backup` first sleeps 30 s when the file `slow-backup` exists.
    fn write_scripts(&self) {
        let report = self.report_file();
        let keadm = format!(
            "#!/bin/sh\nprintf '%s\\0' \"$@\" > '{dir}/keadm-'\"$1\"'.argv'\ncase \"$1\" in\n\
             backup) if [ -e '{dir}/slow-backup' ]; then sleep 30; fi\n\
             printf '{{\"event\":\"Backup\",\"success\":true,\"fromVersion\":\"\",\"toVersion\":\"v0.1.0\"}}' > '{report}' ;;\n\
             config-update) printf '{{\"event\":\"ConfigUpdate\",\"success\":true}}' > '{report}' ;;\n\
             esac\n",
            dir = self.dir.path().display(),
            report = report.display(),
        );
        // systemd-run: records its argv and runs what follows `--` (the real one starts a unit
        // and returns).
        let systemd_run = format!(
            "#!/bin/sh\nprintf '%s\\0' \"$@\" > '{dir}/systemd-run.argv'\n\
             while [ \"$1\" != \"--\" ]; do shift; done\nshift\nexec \"$@\"\n",
            dir = self.dir.path().display()
        );
        for (name, text) in [("keadm", keadm), ("systemd-run", systemd_run)] {
            let path = self.path(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        }
        std::fs::create_dir(self.path("systemd")).unwrap();
    }

    /// The argv a script recorded for `name` (`keadm-backup`, `systemd-run`…), if it ran.
    fn argv(&self, name: &str) -> Option<Vec<String>> {
        let raw = std::fs::read(self.path(&format!("{name}.argv"))).ok()?;
        Some(
            raw.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect(),
        )
    }

    /// keadm's report, written as keadm does (beside, then renamed).
    fn write_report(&self, report: serde_json::Value) {
        let beside = self.path("upgrade_report.json.new");
        std::fs::write(&beside, report.to_string()).unwrap();
        std::fs::rename(beside, self.report_file()).unwrap();
    }

    /// The stored task record of `job`.
    async fn record(&self, ty: TaskType, job: &str) -> Record {
        let key = edgecore::taskmanager::record::key(ty.resource(), job, NODE);
        let all = Records::new(self.store()).load().await.unwrap();
        all.into_iter().find(|r| r.key() == key).unwrap_or_else(|| panic!("no record of {job}"))
    }

    async fn save_record(&self, r: &Record) {
        Records::new(self.store()).save(r).await.unwrap();
    }

    fn settings(&self, cri: Option<&Path>) -> Settings {
        let mut s = Settings::new(NODE, self.path("keadm"), self.path("edgecore.yaml"), cri.map(Path::to_owned));
        s.report_file = self.report_file();
        s.systemd_dir = self.path("systemd");
        s.systemd_run = self.path("systemd-run");
        s.report_poll = Duration::from_millis(100);
        s
    }

    fn store(&self) -> Store {
        Store::open(self.path("edgecore.db"), Options::default()).unwrap()
    }
}

/// The task manager, EdgeHub's stand-in and MetaServer, running.
struct Edge {
    sup: Supervisor,
    bus: Bus,
    hub: mpsc::UnboundedReceiver<Message>,
    metaserver: std::net::SocketAddr,
    stop: CancellationToken,
}

impl Edge {
    async fn start(settings: Settings, store: Store) -> Edge {
        let (seen, hub) = mpsc::unbounded_channel();
        let mut reg = Registry::new();
        reg.register(Box::new(TaskManagerModule::new(settings, store.clone()))).unwrap();
        reg.register(Box::new(Hub { seen })).unwrap();
        reg.prepare().await.unwrap();
        let sup = reg.start(RestartPolicy::default());
        let bus = sup.bus();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metaserver = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let remote = Remote::new(bus.clone(), Default::default(), NODE);
        let changes = tokio::sync::broadcast::channel(16).0;
        tokio::spawn(metaserver::serve(listener, store, changes, remote, stop.clone()));
        Edge { sup, bus, hub, metaserver, stop }
    }

    async fn stop(self) {
        self.stop.cancel();
        let report = self.sup.shutdown(Duration::from_secs(10)).await;
        assert!(report.is_clean(), "the modules stopped");
    }

    /// The cloud's task message.
    async fn send_task(&self, ty: &str, job: &str, node: &str, spec: serde_json::Value) {
        let resource = format!("operations.kubeedge.io/v1alpha2/{ty}/{job}/node/{node}");
        let msg = Message::build("taskmanager", "taskmanager", resource, "Check", Content::json(&spec).unwrap());
        self.bus.send("taskmanager", msg).await.unwrap();
    }

    /// The next report to the cloud: (resource, report).
    async fn report(&mut self) -> (String, UpstreamMessage) {
        let m = tokio::time::timeout(WAIT, self.hub.recv()).await.expect("a report in time").expect("the hub runs");
        assert_eq!((m.router.source.as_str(), m.router.group.as_str()), ("taskmanager", "hub"));
        assert_eq!(m.router.operation, "UpdateNodeActionStatus");
        (m.router.resource.clone(), m.content.decode().unwrap())
    }

    /// Nothing more reaches the cloud for a while.
    async fn quiet(&mut self) {
        if let Ok(Some(m)) = tokio::time::timeout(QUIET, self.hub.recv()).await {
            panic!("unexpected message to the cloud: {} {}", m.router.resource, m.content.raw());
        }
    }

    /// `keadm ctl confirm`'s request: (status, body).
    async fn confirm(&self) -> (u16, String) {
        let addr = self.metaserver;
        tokio::task::spawn_blocking(move || {
            let (status, _, body) =
                kubeedge_testkit::http_request(addr, "POST", "/api/v1/taskupgrade/confirm-upgrade", &[], b"").unwrap();
            (status, body)
        })
        .await
        .unwrap()
    }
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn actions(reports: &[UpstreamMessage]) -> Vec<(&str, bool)> {
    reports.iter().map(|m| (m.action.as_str(), m.succ)).collect()
}

#[test]
fn prepull_pulls_through_cri_reports_each_image_and_answers_duplicates_from_its_record() {
    if let Some(why) = containerd::unavailable() {
        eprintln!("SKIPPED prepull test: {why}");
        return;
    }
    let ctrd = PrivateContainerd::start().unwrap_or_else(|e| panic!("private containerd: {e}"));
    let node = Node::new();
    runtime().block_on(async {
        // Pull secrets as MetaManager keeps them: the Secret JSON the cloud sent, in `meta`.
        let store = node.store();
        let config = json!({"auths": {"localhost": {"auth": "dXNlcjpwYXNz"}}}).to_string();
        let good = json!({"kind": "Secret", "data": {".dockerconfigjson": base64_of(&config)}});
        let broken = json!({"kind": "Secret", "data": {".dockerconfigjson": "not base64!"}});
        for (name, secret) in [("regcred", good), ("broken", broken)] {
            let row = kubeedge_metastore::MetaRow {
                key: format!("kubeedge/secret/{name}"),
                ty: "secret".into(),
                value: secret.to_string(),
            };
            store.apply(vec![kubeedge_metastore::Op::UpsertMeta(row)]).await.unwrap();
        }
        let mut edge = Edge::start(node.settings(Some(ctrd.socket())), store).await;
        let busybox = ctrd.busybox_image().to_owned();
        let spec = json!({"imagePrePullTemplate": {"images": [busybox], "retryTimes": 1}});
        edge.send_task("imageprepulljob", "pull-1", NODE, spec.clone()).await;
        let (resource, check) = edge.report().await;
        assert_eq!(resource, "operations.kubeedge.io/v1alpha2/imageprepulljob/pull-1/node/edge-1");
        assert_eq!((check.action.as_str(), check.succ), ("Check", true), "{check:?}");
        let (_, pull) = edge.report().await;
        assert_eq!((pull.action.as_str(), pull.succ), ("Pull", true), "{pull:?}");
        assert!(!pull.finish_time.is_empty());
        let statuses: serde_json::Value = serde_json::from_str(&pull.extend).unwrap();
        assert_eq!(statuses, json!([{"image": busybox, "status": "True"}]));

        // The cloud resends the task: the final report again, nothing run again.
        edge.send_task("imageprepulljob", "pull-1", NODE, spec).await;
        let (_, again) = edge.report().await;
        assert_eq!(again, pull, "the same report, finish time and all");
        edge.quiet().await;

        // A missing image fails alone, after its retry.
        let missing = format!("127.0.0.1:{}/missing/image:v1", kubeedge_testkit::free_port());
        let spec = json!({"imagePrePullTemplate": {"images": [busybox, missing], "retryTimes": 1}});
        edge.send_task("imageprepulljob", "pull-2", NODE, spec).await;
        let reports = [edge.report().await.1, edge.report().await.1];
        assert_eq!(actions(&reports), [("Check", true), ("Pull", false)], "{reports:?}");
        assert_eq!(reports[1].reason, "there were some failures when pulling images");
        let statuses: Vec<serde_json::Value> = serde_json::from_str(&reports[1].extend).unwrap();
        assert_eq!(statuses[0], json!({"image": busybox, "status": "True"}));
        assert_eq!(
            (statuses[1]["image"].as_str(), statuses[1]["status"].as_str()),
            (Some(missing.as_str()), Some("False"))
        );
        assert!(statuses[1]["reason"].as_str().unwrap().contains("pulling"), "{statuses:?}");

        // With a pull secret from the node's store; a malformed one fails the pull.
        let spec = json!({"imagePrePullTemplate": {"images": [busybox], "imageSecrets": "kubeedge/regcred"}});
        edge.send_task("imageprepulljob", "pull-4", NODE, spec).await;
        let reports = [edge.report().await.1, edge.report().await.1];
        assert_eq!(actions(&reports), [("Check", true), ("Pull", true)], "{reports:?}");
        let spec = json!({"imagePrePullTemplate": {"images": [busybox], "imageSecrets": "kubeedge/broken"}});
        edge.send_task("imageprepulljob", "pull-5", NODE, spec).await;
        let reports = [edge.report().await.1, edge.report().await.1];
        assert_eq!(actions(&reports), [("Check", true), ("Pull", false)]);
        assert!(reports[1].reason.contains("not base64"), "{:?}", reports[1]);

        // A pull secret that is not on the node fails the pull with a reason.
        let spec = json!({"imagePrePullTemplate": {"images": [busybox], "imageSecrets": "kubeedge/absent"}});
        edge.send_task("imageprepulljob", "pull-3", NODE, spec).await;
        let reports = [edge.report().await.1, edge.report().await.1];
        assert_eq!(actions(&reports), [("Check", true), ("Pull", false)]);
        assert!(reports[1].reason.contains("kubeedge/absent is not on this node"), "{:?}", reports[1]);
        edge.stop().await;
    });
}

#[test]
fn an_injected_version_fails_check_and_runs_nothing_and_other_nodes_tasks_are_dropped() {
    let node = Node::new();
    let pwned = Path::new("/tmp/pwned");
    let _ = std::fs::remove_file(pwned);
    runtime().block_on(async {
        let mut edge = Edge::start(node.settings(None), node.store()).await;
        let spec = json!({"version": "v1.21.0; touch /tmp/pwned", "image": "kubeedge/installation-package"});
        edge.send_task("nodeupgradejob", "up-1", NODE, spec).await;
        let (_, check) = edge.report().await;
        assert_eq!((check.action.as_str(), check.succ), ("Check", false));
        assert!(check.reason.contains("invalid version"), "{check:?}");
        edge.quiet().await;
        assert!(!pwned.exists(), "nothing was executed");
        assert_eq!(node.argv("keadm-upgrade"), None);
        assert_eq!(node.argv("systemd-run"), None);

        // The same job name again with the same spec is the cloud resending: the same report.
        let spec = json!({"version": "v1.21.0; touch /tmp/pwned", "image": "kubeedge/installation-package"});
        edge.send_task("nodeupgradejob", "up-1", NODE, spec).await;
        assert_eq!(edge.report().await.1, check);
        // With another spec it is a new job of that name: it runs.
        edge.send_task("nodeupgradejob", "up-1", NODE, json!({"version": "1.21"})).await;
        let (_, rerun) = edge.report().await;
        assert_eq!((rerun.action.as_str(), rerun.succ), ("Check", false));
        assert!(rerun.reason.contains("\"1.21\""), "{rerun:?}");

        // A task for another node is dropped without a word.
        edge.send_task("nodeupgradejob", "up-2", "edge-2", json!({"version": "v1.21.0"})).await;
        edge.quiet().await;

        // Nothing waits for confirmation.
        assert_eq!(edge.confirm().await, (400, "there are no valid upgrade tasks to execute".to_owned()));
        edge.stop().await;
    });
}

#[test]
fn config_update_passes_values_as_single_arguments_and_ends_from_keadms_report() {
    let node = Node::new();
    runtime().block_on(async {
        let mut edge = Edge::start(node.settings(None), node.store()).await;
        let value = "x; touch /tmp/pwned $(id) `id` & | > <";
        let spec = json!({"updateFields": {"modules.edgeHub.token": value, "modules.edged.maxPods": "50"}});
        edge.send_task("configupdatejob", "cfg-1", NODE, spec).await;
        let mut reports = Vec::new();
        for _ in 0..3 {
            reports.push(edge.report().await.1);
        }
        assert_eq!(actions(&reports), [("Check", true), ("BackUp", true), ("Update", true)], "{reports:?}");
        edge.quiet().await;
        let cfg = node.path("edgecore.yaml").display().to_string();
        assert_eq!(node.argv("keadm-backup").unwrap(), ["backup", "edge", "--config", &cfg]);
        let set = format!("modules.edgeHub.token={value},modules.edged.maxPods=50");
        assert_eq!(
            node.argv("keadm-config-update").unwrap(),
            ["config-update", "--set", &set, "--connect-timeout", "120", "--config", &cfg]
        );
        let keadm = node.path("keadm").display().to_string();
        let run = node.argv("systemd-run").unwrap();
        assert_eq!(run[..6], ["--unit", "kubeedge-task-cfg-1", "--collect", "--quiet", "--", keadm.as_str()]);
        assert!(!node.report_file().exists(), "the report file is consumed");
        assert!(!Path::new("/tmp/pwned").exists());
        edge.stop().await;
    });
}

#[test]
fn a_confirmed_upgrade_runs_keadm_detached_and_ends_from_the_report_after_a_restart() {
    let node = Node::new();
    runtime().block_on(async {
        let mut edge = Edge::start(node.settings(None), node.store()).await;
        let spec = json!({"version": "v1.21.0", "requireConfirmation": true, "timeoutSeconds": 300});
        edge.send_task("nodeupgradejob", "up-1", NODE, spec.clone()).await;
        let reports = [edge.report().await.1, edge.report().await.1];
        assert_eq!(actions(&reports), [("Check", true), ("WaitingConfirmation", true)]);
        edge.quiet().await;
        assert_eq!(node.argv("keadm-backup"), None, "nothing before the confirmation");

        assert_eq!(edge.confirm().await.0, 200);
        let (_, backup) = edge.report().await;
        assert_eq!((backup.action.as_str(), backup.succ, backup.extend.as_str()), ("BackUp", true, ",v0.1.0"));
        // keadm upgrade runs (detached); it stops edgecore before any report.
        kubeedge_testkit::until_async("keadm upgrade to run", async || node.argv("keadm-upgrade")).await;
        let cfg = node.path("edgecore.yaml").display().to_string();
        assert_eq!(
            node.argv("keadm-upgrade").unwrap(),
            ["upgrade", "edge", "--force", "--toVersion", "v1.21.0", "--connect-timeout", "150", "--config", &cfg]
        );
        edge.quiet().await;
        assert_eq!(edge.confirm().await.0, 400, "nothing waits any more");
        // The cloud resends: the latest report again.
        edge.send_task("nodeupgradejob", "up-1", NODE, spec.clone()).await;
        assert_eq!(edge.report().await.1, backup);
        edge.stop().await;

        // keadm swapped the binary, started the new edgecore and reported.
        let report = json!({"event": "Upgrade", "success": true, "fromVersion": "v0.1.0", "toVersion": "v1.21.0"});
        std::fs::write(node.report_file(), report.to_string()).unwrap();
        let mut edge = Edge::start(node.settings(None), node.store()).await;
        let (resource, upgrade) = edge.report().await;
        assert_eq!(resource, "operations.kubeedge.io/v1alpha2/nodeupgradejob/up-1/node/edge-1");
        assert_eq!(
            (upgrade.action.as_str(), upgrade.succ, upgrade.extend.as_str()),
            ("Upgrade", true, "v0.1.0,v1.21.0")
        );
        assert!(!node.report_file().exists());
        // A connected notice finds nothing more to do; a resent task gets the final report.
        edge.bus.send("taskmanager", edge::connection_notice(group::TASKMANAGER, true)).await.unwrap();
        edge.quiet().await;
        edge.send_task("nodeupgradejob", "up-1", NODE, spec).await;
        assert_eq!(edge.report().await.1, upgrade);
        edge.stop().await;
    });
}

#[test]
fn without_systemd_an_upgrade_ends_with_a_clear_reason_and_nothing_changed() {
    let node = Node::new();
    runtime().block_on(async {
        let mut settings = node.settings(None);
        settings.systemd_dir = node.path("no-systemd");
        let mut edge = Edge::start(settings, node.store()).await;
        edge.send_task("nodeupgradejob", "up-1", NODE, json!({"version": "v1.21.0"})).await;
        let mut reports = Vec::new();
        for _ in 0..5 {
            reports.push(edge.report().await.1);
        }
        assert_eq!(
            actions(&reports),
            [("Check", true), ("WaitingConfirmation", true), ("BackUp", true), ("Upgrade", false), ("RollBack", true)]
        );
        assert!(reports[3].reason.contains("systemd is not running"), "{:?}", reports[3]);
        assert!(reports[4].reason.starts_with("nothing was changed: systemd is not running"));
        assert_eq!(node.argv("keadm-upgrade"), None);
        edge.quiet().await;
        edge.stop().await;
    });
}

fn resource_of(ty: &str, job: &str) -> String {
    format!("operations.kubeedge.io/v1alpha2/{ty}/{job}/node/{NODE}")
}

/// Runs an upgrade through BackUp to a launched `keadm upgrade` that reports nothing.
async fn upgrade_until_launched(edge: &mut Edge, node: &Node, job: &str, spec: serde_json::Value) {
    edge.send_task("nodeupgradejob", job, NODE, spec).await;
    let reports = [edge.report().await.1, edge.report().await.1, edge.report().await.1];
    assert_eq!(actions(&reports), [("Check", true), ("WaitingConfirmation", true), ("BackUp", true)]);
    kubeedge_testkit::until_async("keadm upgrade to run", async || node.argv("keadm-upgrade")).await;
}

#[test]
fn a_backup_interrupted_by_a_restart_fails_and_no_upgrade_follows() {
    let node = Node::new();
    runtime().block_on(async {
        std::fs::write(node.path("slow-backup"), "").unwrap();
        let mut edge = Edge::start(node.settings(None), node.store()).await;
        let spec = json!({"version": "v1.21.0"});
        edge.send_task("nodeupgradejob", "up-1", NODE, spec.clone()).await;
        let reports = [edge.report().await.1, edge.report().await.1];
        assert_eq!(actions(&reports), [("Check", true), ("WaitingConfirmation", true)]);
        kubeedge_testkit::until_async("keadm backup to start", async || node.argv("keadm-backup")).await;
        // Stopping does not wait for the 30 s backup: it is killed.
        let stopping = std::time::Instant::now();
        edge.stop().await;
        assert!(stopping.elapsed() < Duration::from_secs(5), "stopped after {:?}", stopping.elapsed());
        let stored = node.record(TaskType::NodeUpgrade, "up-1").await;
        assert_eq!((stored.action.as_str(), stored.phase), ("BackUp", Phase::Running));

        // As after `keadm rollback edge` restored a database backed up during that BackUp: the
        // record says "running BackUp", and the rollback left its report.
        let rollback = json!({"event": "Rollback", "success": true, "fromVersion": "v1.21.0", "toVersion": "v0.1.0"});
        node.write_report(rollback);
        let mut edge = Edge::start(node.settings(None), node.store()).await;
        let (resource, backup) = edge.report().await;
        assert_eq!(resource, resource_of("nodeupgradejob", "up-1"));
        assert_eq!((backup.action.as_str(), backup.succ), ("BackUp", false));
        assert!(backup.reason.contains("interrupted by an edgecore restart"), "{backup:?}");
        edge.quiet().await;
        assert_eq!(node.argv("keadm-upgrade"), None, "the upgrade is not launched again");
        assert_eq!(node.argv("systemd-run"), None);
        assert!(node.report_file().exists(), "no task waits for the rollback's report");
        edge.send_task("nodeupgradejob", "up-1", NODE, spec).await;
        assert_eq!(edge.report().await.1, backup);
        edge.stop().await;
    });
}

#[test]
fn a_launch_keadm_never_reports_on_fails_at_its_deadline_kept_across_restarts() {
    let node = Node::new();
    runtime().block_on(async {
        let spec = json!({"version": "v1.21.0", "timeoutSeconds": 60});
        let mut edge = Edge::start(node.settings(None), node.store()).await;
        upgrade_until_launched(&mut edge, &node, "up-1", spec.clone()).await;
        let argv = node.argv("keadm-upgrade").unwrap();
        assert!(argv.windows(2).any(|w| w == ["--connect-timeout", "30"]), "{argv:?}");
        edge.quiet().await;
        edge.stop().await;
        // Twice the connect-timeout handed to keadm and five minutes, from the launch.
        let stored = node.record(TaskType::NodeUpgrade, "up-1").await;
        assert_eq!(stored.phase, Phase::Pending);
        let wait = stored.wait.clone().expect("a pending record has a deadline");
        assert_eq!(wait.seconds, 360);

        // Restarted within the deadline: still waiting, from the same launch.
        let mut edge = Edge::start(node.settings(None), node.store()).await;
        edge.send_task("nodeupgradejob", "up-1", NODE, spec.clone()).await;
        assert_eq!(edge.report().await.1.action, "BackUp");
        edge.quiet().await;
        edge.stop().await;
        let mut stored = node.record(TaskType::NodeUpgrade, "up-1").await;
        assert_eq!(stored.wait.as_ref(), Some(&wait));

        // The node was down past the deadline and keadm never reported.
        let launched = kubeedge_kube_serve::time::now_unix() - 361;
        stored.wait = Some(Wait { launched: kubeedge_kube_serve::time::format_unix(launched), seconds: 360 });
        node.save_record(&stored).await;
        let mut edge = Edge::start(node.settings(None), node.store()).await;
        let reports = [edge.report().await.1, edge.report().await.1];
        assert_eq!(actions(&reports), [("Upgrade", false), ("RollBack", false)]);
        let why = "keadm did not report within 360s; see journalctl -u kubeedge-task-up-1";
        assert_eq!(reports[0].reason, why);
        assert_eq!(reports[1].reason, format!("nothing known to be changed: {why}"));
        edge.quiet().await;
        // The task is over: a late report is nobody's, a resend gets the final report.
        node.write_report(
            json!({"event": "Upgrade", "success": true, "fromVersion": "v0.1.0", "toVersion": "v1.21.0"}),
        );
        edge.quiet().await;
        assert!(node.report_file().exists());
        edge.send_task("nodeupgradejob", "up-1", NODE, spec).await;
        assert_eq!(edge.report().await.1, reports[1]);
        edge.stop().await;
    });
}

#[test]
fn keadm_runs_for_one_task_at_a_time_and_reports_go_to_the_action_they_answer() {
    let node = Node::new();
    runtime().block_on(async {
        let mut edge = Edge::start(node.settings(None), node.store()).await;
        let up = json!({"version": "v1.21.0"});
        upgrade_until_launched(&mut edge, &node, "up-1", up.clone()).await;
        std::fs::remove_file(node.path("keadm-backup.argv")).unwrap();

        // A config update's backup would run keadm while the upgrade waits for its report.
        let cfg = json!({"updateFields": {"modules.edged.maxPods": "50"}});
        edge.send_task("configupdatejob", "cfg-1", NODE, cfg).await;
        let reports = [edge.report().await, edge.report().await];
        assert_eq!(reports[1].0, resource_of("configupdatejob", "cfg-1"));
        let reports = reports.map(|(_, m)| m);
        assert_eq!(actions(&reports), [("Check", true), ("BackUp", false)]);
        assert_eq!(reports[1].reason, "another node task is running keadm: nodeupgradejob/up-1");
        // So would a confirmed upgrade's: the confirmation says why.
        edge.send_task("nodeupgradejob", "up-2", NODE, json!({"version": "v1.22.0", "requireConfirmation": true}))
            .await;
        let reports = [edge.report().await.1, edge.report().await.1];
        assert_eq!(actions(&reports), [("Check", true), ("WaitingConfirmation", true)]);
        assert_eq!(edge.confirm().await, (400, "another node task is running keadm: nodeupgradejob/up-1".to_owned()));
        let (resource, refused) = edge.report().await;
        assert_eq!(resource, resource_of("nodeupgradejob", "up-2"));
        assert_eq!((refused.action.as_str(), refused.succ), ("BackUp", false));
        edge.quiet().await;
        assert_eq!(node.argv("keadm-backup"), None, "keadm was not run");

        // A config update's report (keadm run by hand) is not the upgrade's: dropped.
        node.write_report(json!({"event": "ConfigUpdate", "success": true}));
        kubeedge_testkit::until_async("the report to be dropped", async || {
            (!node.report_file().exists()).then_some(())
        })
        .await;
        edge.quiet().await;
        edge.send_task("nodeupgradejob", "up-1", NODE, up.clone()).await;
        assert_eq!(edge.report().await.1.action, "BackUp", "the upgrade still waits");

        // Its own report ends it, and keadm is free for the next task.
        node.write_report(
            json!({"event": "Upgrade", "success": true, "fromVersion": "v0.1.0", "toVersion": "v1.21.0"}),
        );
        let (resource, upgrade) = edge.report().await;
        assert_eq!(resource, resource_of("nodeupgradejob", "up-1"));
        assert_eq!((upgrade.action.as_str(), upgrade.succ), ("Upgrade", true));
        let cfg = json!({"updateFields": {"modules.edged.maxPods": "60"}});
        edge.send_task("configupdatejob", "cfg-2", NODE, cfg).await;
        let reports = [edge.report().await.1, edge.report().await.1, edge.report().await.1];
        assert_eq!(actions(&reports), [("Check", true), ("BackUp", true), ("Update", true)]);
        edge.quiet().await;
        edge.stop().await;
    });
}

#[test]
fn a_newer_upgrade_supersedes_those_waiting_and_confirm_continues_only_the_newest() {
    let node = Node::new();
    runtime().block_on(async {
        // Left from jobs deleted since: two upgrades waiting for confirmation.
        for (job, version, updated) in
            [("old-1", "v1.19.0", "2026-01-01T00:00:00Z"), ("old-2", "v1.20.0", "2026-01-01T00:01:00Z")]
        {
            let resource = TaskResource { task_type: TaskType::NodeUpgrade, job: job.into(), node: NODE.into() };
            let mut r =
                Record::new(&resource, json!({"version": version, "requireConfirmation": true}), "WaitingConfirmation");
            r.phase = Phase::WaitingConfirmation;
            r.updated = updated.into();
            node.save_record(&r).await;
        }
        let mut edge = Edge::start(node.settings(None), node.store()).await;
        edge.quiet().await;
        assert_eq!(edge.confirm().await.0, 200);
        let (resource, superseded) = edge.report().await;
        assert_eq!(resource, resource_of("nodeupgradejob", "old-1"));
        assert_eq!((superseded.action.as_str(), superseded.succ), ("WaitingConfirmation", false));
        assert_eq!(superseded.reason, "superseded by job old-2");
        let (resource, backup) = edge.report().await;
        assert_eq!(
            (resource, backup.action.as_str(), backup.succ),
            (resource_of("nodeupgradejob", "old-2"), "BackUp", true)
        );
        kubeedge_testkit::until_async("keadm upgrade to run", async || node.argv("keadm-upgrade")).await;
        assert!(node.argv("keadm-upgrade").unwrap().contains(&"v1.20.0".to_owned()));
        node.write_report(
            json!({"event": "Upgrade", "success": true, "fromVersion": "v0.1.0", "toVersion": "v1.20.0"}),
        );
        assert_eq!(edge.report().await.1.action, "Upgrade");
        std::fs::remove_file(node.path("keadm-upgrade.argv")).unwrap();

        // A new upgrade job supersedes the one waiting at once.
        let first = json!({"version": "v1.21.0", "requireConfirmation": true});
        edge.send_task("nodeupgradejob", "up-1", NODE, first.clone()).await;
        let reports = [edge.report().await.1, edge.report().await.1];
        assert_eq!(actions(&reports), [("Check", true), ("WaitingConfirmation", true)]);
        edge.send_task("nodeupgradejob", "up-2", NODE, json!({"version": "v1.22.0", "requireConfirmation": true}))
            .await;
        let (resource, superseded) = edge.report().await;
        assert_eq!(resource, resource_of("nodeupgradejob", "up-1"));
        assert_eq!((superseded.action.as_str(), superseded.succ), ("WaitingConfirmation", false));
        assert_eq!(superseded.reason, "superseded by job up-2");
        let reports = [edge.report().await, edge.report().await];
        assert!(reports.iter().all(|(r, _)| *r == resource_of("nodeupgradejob", "up-2")));
        assert_eq!(actions(&reports.map(|(_, m)| m)), [("Check", true), ("WaitingConfirmation", true)]);

        assert_eq!(edge.confirm().await.0, 200);
        let (resource, backup) = edge.report().await;
        assert_eq!((resource, backup.action.as_str()), (resource_of("nodeupgradejob", "up-2"), "BackUp"));
        kubeedge_testkit::until_async("keadm upgrade to run", async || node.argv("keadm-upgrade")).await;
        assert!(node.argv("keadm-upgrade").unwrap().contains(&"v1.22.0".to_owned()), "only the newest goes on");
        edge.quiet().await;
        assert_eq!(edge.confirm().await.0, 400, "nothing waits any more");
        edge.send_task("nodeupgradejob", "up-1", NODE, first).await;
        assert_eq!(edge.report().await.1, superseded);
        edge.stop().await;
    });
}
