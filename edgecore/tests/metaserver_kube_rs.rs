//! kube-rs against MetaServer: typed reads, raw watches with kube-apiserver's semantics
//! (bookmarks, selectors moving objects in and out, 410 for a version too old), runtime
//! watchers that follow MetaManager's changes and re-list after a 410, and writes that go to
//! the (fake) cloud.

mod metaserver_common;

use std::sync::Arc;
use std::time::Duration;

use edgecore::metamanager::ChangeKind;
use edgecore::metamanager::metaserver::Options;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use metaserver_common::{Env, PATIENCE, pod, reject_with};
use parking_lot::Mutex;
use serde_json::json;

fn api_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

#[test]
fn typed_reads() {
    let env = Env::start();
    let client = env.client();
    env.rt.block_on(async {
        let all: Api<Pod> = Api::all(client.clone());
        let list = all.list(&ListParams::default()).await.expect("list");
        assert_eq!(list.items.len(), 3);
        assert_eq!(list.metadata.resource_version.as_deref(), Some("104"), "the store's newest version");

        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let list = pods.list(&ListParams::default()).await.expect("list");
        let names: Vec<_> = list.items.iter().filter_map(|p| p.metadata.name.clone()).collect();
        assert_eq!(names, ["web-1", "web-2"]);
        let web = pods.get("web-1").await.expect("get");
        assert_eq!(web.status.and_then(|s| s.pod_ip).as_deref(), Some("10.0.0.11"));
        let err = pods.get("nope").await.expect_err("missing");
        assert_eq!(api_code(&err), Some(404), "{err:?}");

        let selected = all.list(&ListParams::default().labels("app=dns")).await.expect("labels");
        assert_eq!(selected.items.len(), 1);
        let selected = all.list(&ListParams::default().fields("metadata.namespace=default")).await.expect("fields");
        assert_eq!(selected.items.len(), 2);
        let err = all.list(&ListParams::default().labels("a in (")).await.expect_err("bad selector");
        assert_eq!(api_code(&err), Some(400), "{err:?}");

        // Paging.
        let first = all.list(&ListParams::default().limit(2)).await.expect("page 1");
        assert_eq!(first.items.len(), 2);
        assert_eq!(first.metadata.remaining_item_count, Some(1));
        let token = first.metadata.continue_.clone().expect("continue");
        let second = all.list(&ListParams::default().limit(2).continue_token(&token)).await.expect("page 2");
        assert_eq!(second.items.len(), 1);
        assert_eq!(second.items[0].metadata.name.as_deref(), Some("dns"));
        assert!(second.metadata.continue_.is_none_or(|c| c.is_empty()));
        assert_eq!(second.metadata.resource_version, first.metadata.resource_version);

        // A node stored without apiVersion/kind decodes as a Node.
        let nodes: Api<Node> = Api::all(client.clone());
        let node = nodes.get("edge-1").await.expect("node");
        assert_eq!(node.metadata.resource_version.as_deref(), Some("104"));
        let cms: Api<ConfigMap> = Api::namespaced(client, "default");
        assert_eq!(cms.get("settings").await.expect("cm").data.expect("data")["mode"], "edge");
    });
}

#[test]
fn raw_watches_follow_changes_with_bookmarks() {
    let env = Env::start_with(Options { bookmark_interval: Duration::from_millis(100), ..Options::default() }, 4096);
    let client = env.client();
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let events = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = events.clone();
    let task = env.rt.spawn({
        let pods = pods.clone();
        async move {
            let mut stream = pods.watch(&WatchParams::default(), "104").await.expect("watch").boxed();
            while let Some(ev) = stream.next().await {
                let line = match ev.expect("event") {
                    WatchEvent::Added(p) => format!("ADDED {}", p.metadata.name.unwrap_or_default()),
                    WatchEvent::Modified(p) => format!("MODIFIED {}", p.metadata.name.unwrap_or_default()),
                    WatchEvent::Deleted(p) => format!("DELETED {}", p.metadata.name.unwrap_or_default()),
                    WatchEvent::Bookmark(b) => format!("BOOKMARK {}", b.metadata.resource_version),
                    WatchEvent::Error(e) => format!("ERROR {}", e.code),
                };
                seen.lock().push(line);
            }
        }
    });
    let has = |want: &str| events.lock().iter().any(|l| l == want);
    metaserver_common::eventually("a bookmark at the start version", || has("BOOKMARK 104"));
    env.put(ChangeKind::Added, "pod", pod("default", "new", "web", "Pending", ""), 105);
    env.put(ChangeKind::Modified, "pod", pod("default", "new", "web", "Running", "10.0.0.12"), 106);
    env.put(ChangeKind::Added, "pod", pod("kube-system", "elsewhere", "web", "Running", ""), 107);
    env.remove("pod", pod("default", "new", "web", "Running", "10.0.0.12"), 108);
    metaserver_common::eventually("the delete", || has("DELETED new"));
    metaserver_common::eventually("a bookmark past every change", || has("BOOKMARK 108"));
    let got: Vec<String> = events.lock().iter().filter(|l| !l.starts_with("BOOKMARK")).cloned().collect();
    assert_eq!(got, ["ADDED new", "MODIFIED new", "DELETED new"]);
    task.abort();

    env.rt.block_on(async {
        // A resumed watch replays what came after its version.
        let mut stream = pods.watch(&WatchParams::default().disable_bookmarks(), "105").await.expect("watch").boxed();
        let first = stream.try_next().await.expect("event").expect("some");
        assert!(matches!(first, WatchEvent::Modified(p) if p.metadata.resource_version.as_deref() == Some("106")));
        let second = stream.try_next().await.expect("event").expect("some");
        assert!(matches!(second, WatchEvent::Deleted(_)));

        // Label selectors move objects in and out.
        let mut web =
            pods.watch(&WatchParams::default().labels("app=web").disable_bookmarks(), "108").await.expect("w").boxed();
        env.put_async(ChangeKind::Modified, "pod", pod("default", "web-1", "db", "Running", ""), 109).await;
        env.put_async(ChangeKind::Modified, "pod", pod("default", "web-1", "web", "Running", ""), 110).await;
        let out = web.try_next().await.expect("event").expect("some");
        assert!(matches!(out, WatchEvent::Deleted(p) if p.metadata.name.as_deref() == Some("web-1")));
        let back = web.try_next().await.expect("event").expect("some");
        assert!(matches!(back, WatchEvent::Added(p) if p.metadata.name.as_deref() == Some("web-1")));

        // An unset version starts with the current state.
        let mut fresh = pods.watch(&WatchParams::default().disable_bookmarks(), "0").await.expect("watch").boxed();
        let mut added = Vec::new();
        for _ in 0..2 {
            match fresh.try_next().await.expect("event").expect("some") {
                WatchEvent::Added(p) => added.push(p.metadata.name.unwrap_or_default()),
                other => panic!("expected ADDED, got {other:?}"),
            }
        }
        assert_eq!(added, ["web-1", "web-2"]);
    });
}

#[test]
fn a_version_older_than_the_history_is_gone() {
    let env = Env::start_with(Options { history: 2, ..Options::default() }, 4096);
    for (i, rv) in (200..205).enumerate() {
        env.put(ChangeKind::Added, "pod", pod("default", &format!("p{i}"), "x", "Pending", ""), rv);
    }
    let pods: Api<Pod> = Api::namespaced(env.client(), "default");
    env.rt.block_on(async {
        wait_for_history(&pods, "203").await;
        let mut stream = pods.watch(&WatchParams::default(), "104").await.expect("watch").boxed();
        match stream.try_next().await.expect("event").expect("some") {
            WatchEvent::Error(e) => {
                assert_eq!(e.code, 410);
                assert!(e.message.contains("too old resource version"), "{e:?}");
            }
            other => panic!("expected a 410, got {other:?}"),
        }
    });
}

/// Waits until the history holds the changes after `rv` (the hub takes them asynchronously).
async fn wait_for_history(pods: &Api<Pod>, rv: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut s =
            pods.watch(&WatchParams::default().disable_bookmarks().timeout(1), rv).await.expect("watch").boxed();
        if let Ok(Some(WatchEvent::Added(_))) = s.try_next().await {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the history never held the change after {rv}");
    }
}

/// Collects a runtime watcher's events as `Init`, `InitApply name`, `InitDone`, `Apply name`,
/// `Delete name`.
fn spawn_watcher(env: &Env, cfg: watcher::Config) -> Arc<Mutex<Vec<String>>> {
    let pods: Api<Pod> = Api::namespaced(env.client(), "default");
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    env.rt.spawn(async move {
        let mut stream = watcher(pods, cfg).boxed();
        while let Some(ev) = stream.next().await {
            let name = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
            let line = match ev {
                Ok(watcher::Event::Init) => "Init".to_owned(),
                Ok(watcher::Event::InitApply(p)) => format!("InitApply {}", name(&p)),
                Ok(watcher::Event::InitDone) => "InitDone".to_owned(),
                Ok(watcher::Event::Apply(p)) => format!("Apply {}", name(&p)),
                Ok(watcher::Event::Delete(p)) => format!("Delete {}", name(&p)),
                Err(e) => {
                    // Retried by the watcher itself; pace the retries while the server is away.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    format!("Error {e}")
                }
            };
            seen.lock().push(line);
        }
    });
    events
}

#[test]
fn runtime_watchers_see_changes() {
    for cfg in [watcher::Config::default(), watcher::Config::default().streaming_lists()] {
        let env = Env::start();
        let events = spawn_watcher(&env, cfg);
        let has = |want: &str| events.lock().iter().any(|l| l == want);
        metaserver_common::eventually("the initial list", || has("InitDone"));
        assert!(has("InitApply web-1") && has("InitApply web-2"), "{:?}", events.lock());
        env.put(ChangeKind::Added, "pod", pod("default", "new", "web", "Pending", ""), 105);
        metaserver_common::eventually("the add", || has("Apply new"));
        env.put(ChangeKind::Modified, "pod", pod("default", "new", "web", "Running", "10.0.0.9"), 106);
        metaserver_common::eventually("the modify", || events.lock().iter().filter(|l| *l == "Apply new").count() == 2);
        env.remove("pod", pod("default", "new", "web", "Running", "10.0.0.9"), 107);
        metaserver_common::eventually("the delete", || has("Delete new"));
    }
}

#[test]
fn a_runtime_watcher_relists_after_410() {
    let mut env = Env::start();
    let events = spawn_watcher(&env, watcher::Config::default());
    let has = |want: &str| events.lock().iter().any(|l| l == want);
    metaserver_common::eventually("the initial list", || has("InitDone"));
    // edgecore restarts; meanwhile the cloud's sync committed a pod nobody could watch.
    env.stop();
    env.store_only("pod", pod("default", "while-down", "web", "Pending", ""), 300);
    env.restart();
    // The watcher resumes from its old version, which the new server cannot replay: 410, and it
    // re-lists, finding the pod.
    metaserver_common::eventually("the re-list", || has("InitApply while-down"));
    metaserver_common::eventually("the re-list done", || {
        events.lock().iter().filter(|l| *l == "InitDone").count() == 2
    });
    assert!(
        events.lock().iter().any(|l| l.starts_with("Error") && l.contains("too old resource version")),
        "the watcher was told 410: {:?}",
        events.lock()
    );
    env.put(ChangeKind::Added, "pod", pod("default", "after", "web", "Pending", ""), 301);
    metaserver_common::eventually("changes after the re-list", || has("Apply after"));
}

#[test]
fn writes_with_kube_rs() {
    let env = Env::start();
    let client = env.client();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"k": "v"}})).expect("cm");
    env.rt.block_on(async {
        // Offline: a 503 at once (kube-rs retries 503 by default, so ask without retries).
        let no_retry: Api<ConfigMap> = Api::namespaced(env.client_without_retry(), "default");
        let err = no_retry.create(&PostParams::default(), &cm).await.expect_err("offline");
        assert_eq!(api_code(&err), Some(503), "{err:?}");
        match err {
            kube::Error::Api(s) => assert!(s.message.contains("the edge is offline"), "{s:?}"),
            other => panic!("expected a Status, got {other:?}"),
        }
        assert!(env.received().is_empty());

        // With kube-rs' default retries, a write made while offline goes through once the
        // edge reconnects.
        let retried = tokio::spawn({
            let cms = cms.clone();
            let cm = cm.clone();
            async move { cms.create(&PostParams::default(), &cm).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        env.set_connected(true);
        let created = retried.await.expect("task").expect("created after reconnecting");
        assert_eq!(created.metadata.uid.as_deref(), Some("0f0e0d0c-uid"));

        let created = cms.create(&PostParams::default(), &cm).await.expect("created by the cloud");
        assert_eq!(created.metadata.uid.as_deref(), Some("0f0e0d0c-uid"));
        assert_eq!(created.metadata.namespace.as_deref(), Some("default"));

        let mut web = pods.get("web-1").await.expect("get");
        web.status.get_or_insert_default().phase = Some("Failed".into());
        let replaced = pods.replace_status("web-1", &PostParams::default(), &web).await;
        replaced.expect("status update approved");
        let app = env.received().pop().expect("an application");
        assert_eq!((app.verb.as_str(), app.subresource.as_str()), ("updatestatus", "status"));
        assert_eq!(app.key, "/core/v1/pods/default/web-1");

        let ssa = PatchParams::apply("edge-agent").force();
        pods.patch(
            "web-1",
            &ssa,
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1", "labels": {"x": "y"}}}),
            ),
        )
        .await
        .expect("apply patch");
        let app = env.received().pop().expect("a patch");
        let info: serde_json::Value = serde_json::from_slice(app.option.as_deref().expect("info")).expect("json");
        assert_eq!(info["PatchType"], "application/apply-patch+yaml");
        assert_eq!(info["Options"]["fieldManager"], "edge-agent");
        assert_eq!(info["Options"]["force"], true);

        let deleted = pods.delete("web-2", &DeleteParams::default().grace_period(0)).await.expect("delete");
        assert!(deleted.is_right(), "a Status, as the cloud returns no object");
        let app = env.received().pop().expect("a delete");
        let opts: serde_json::Value = serde_json::from_slice(app.option.as_deref().expect("options")).expect("json");
        assert_eq!(opts["kind"], "DeleteOptions");
        assert_eq!(opts["gracePeriodSeconds"], 0);

        env.answer_with(reject_with(json!({"metadata": {}, "status": "Failure", "code": 409,
            "reason": "AlreadyExists", "message": "configmaps \"c\" already exists",
            "details": {"name": "c", "kind": "configmaps"}})));
        match cms.create(&PostParams::default(), &cm).await.expect_err("rejected") {
            kube::Error::Api(s) => {
                assert_eq!((s.code, s.reason.as_str()), (409, "AlreadyExists"));
                assert_eq!(s.message, "configmaps \"c\" already exists");
            }
            other => panic!("expected a Status, got {other:?}"),
        }
    });
}
