//! kube-rs against apiserver-lite: typed CRUD, optimistic concurrency, watchers and reflectors
//! that recover from dropped connections and 410 Gone, a Controller, and bad input.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::Cluster;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{Controller, WatchStreamExt, controller::Action, reflector, watcher};
use serde_json::json;

const PATIENCE: Duration = Duration::from_secs(60);

fn cm(name: &str, v: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata":{"name":name},"data":{"v":v}})).unwrap()
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    kubeedge_testkit::eventually_async(what, async || check()).await
}

#[test]
fn typed_crud_and_conflicts() {
    let c = Cluster::start();
    let client = c.client();
    c.rt.block_on(async {
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let created = cms.create(&PostParams::default(), &cm("a", "1")).await.unwrap();
        let rv = created.metadata.resource_version.clone().unwrap();
        assert!(created.metadata.uid.is_some());
        let got = cms.get("a").await.unwrap();
        assert_eq!(got.data.unwrap()["v"], "1");

        // Two writers start from the same version: the second gets 409.
        let mut first = created.clone();
        first.data = Some(BTreeMap::from([("v".into(), "2".into())]));
        let mut second = created.clone();
        second.data = Some(BTreeMap::from([("v".into(), "3".into())]));
        cms.replace("a", &PostParams::default(), &first).await.unwrap();
        let err = cms.replace("a", &PostParams::default(), &second).await.unwrap_err();
        assert!(matches!(&err, kube::Error::Api(s) if s.code == 409), "{err:?}");
        let now = cms.get("a").await.unwrap();
        assert_ne!(now.metadata.resource_version.unwrap(), rv);

        let patched = cms.patch("a", &PatchParams::default(), &Patch::Merge(json!({"data":{"w":"x"}}))).await.unwrap();
        assert_eq!(patched.data.unwrap()["w"], "x");
        let list = cms.list(&ListParams::default()).await.unwrap();
        assert!(list.items.iter().any(|c| c.metadata.name.as_deref() == Some("a")));
        cms.delete("a", &DeleteParams::default()).await.unwrap();
        assert!(matches!(cms.get("a").await, Err(kube::Error::Api(s)) if s.code == 404));

        // Paging with limit/continue sees every object once.
        for i in 0..25 {
            cms.create(&PostParams::default(), &cm(&format!("p{i:02}"), "x")).await.unwrap();
        }
        let mut names = Vec::new();
        let mut lp = ListParams::default().limit(10);
        loop {
            let page = cms.list(&lp).await.unwrap();
            names.extend(page.items.into_iter().filter_map(|c| c.metadata.name).filter(|n| n.starts_with('p')));
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => lp = lp.continue_token(&token),
                _ => break,
            }
        }
        assert_eq!(names.len(), 25);

        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let pod: Pod = serde_json::from_value(
            json!({"metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"busybox"}]}}),
        )
        .unwrap();
        let pod = pods.create(&PostParams::default(), &pod).await.unwrap();
        assert_eq!(pod.status.unwrap().phase.as_deref(), Some("Pending"));
    });
}

#[test]
fn watch_from_a_compacted_version_is_410() {
    let c = Cluster::start();
    let client = c.client();
    c.rt.block_on(async {
        let cms: Api<ConfigMap> = Api::namespaced(client, "default");
        let first = cms.create(&PostParams::default(), &cm("old", "1")).await.unwrap();
        let rv = first.metadata.resource_version.unwrap();
        cms.create(&PostParams::default(), &cm("new", "1")).await.unwrap();
        c.server().store().compact();
        let mut stream = cms.watch(&WatchParams::default(), &rv).await.unwrap().boxed();
        match stream.next().await {
            Some(Ok(WatchEvent::Error(e))) => assert_eq!(e.code, 410),
            Some(Err(kube::Error::Api(s))) => assert_eq!(s.code, 410),
            other => panic!("expected 410, got {other:?}"),
        }
    });
}

#[test]
fn reflector_recovers_from_dropped_watches_and_410() {
    let c = Cluster::start();
    let client = c.client();
    let server = c.server();
    c.rt.block_on(async {
        let cms: Api<ConfigMap> = Api::namespaced(client, "default");
        let (reader, writer) = reflector::store();
        let stream = reflector(writer, watcher(cms.clone(), watcher::Config::default()))
            .default_backoff()
            .applied_objects()
            .for_each(|_| async {});
        let task = tokio::spawn(stream);
        let count = |prefix: &str| {
            reader.state().iter().filter(|c| c.metadata.name.as_deref().is_some_and(|n| n.starts_with(prefix))).count()
        };

        for i in 0..5 {
            cms.create(&PostParams::default(), &cm(&format!("a{i}"), "x")).await.unwrap();
        }
        eventually("first objects", || count("a") == 5).await;

        // The connection drops: the watcher re-watches from its last version.
        server.interrupt_watches();
        for i in 0..5 {
            cms.create(&PostParams::default(), &cm(&format!("b{i}"), "x")).await.unwrap();
        }
        eventually("objects after a dropped watch", || count("b") == 5).await;

        // History is compacted while the watch is down: the re-watch gets 410 and relists.
        server.store().compact();
        server.interrupt_watches();
        for i in 0..5 {
            cms.create(&PostParams::default(), &cm(&format!("c{i}"), "x")).await.unwrap();
        }
        cms.delete("a0", &DeleteParams::default()).await.unwrap();
        eventually("objects after a 410", || count("c") == 5 && count("a") == 4).await;
        task.abort();
    });
}

#[test]
fn a_controller_reconciles_every_object() {
    let c = Cluster::start();
    let client = c.client();
    c.rt.block_on(async {
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        for i in 0..10 {
            cms.create(&PostParams::default(), &cm(&format!("r{i}"), "x")).await.unwrap();
        }
        #[derive(Debug, thiserror::Error)]
        #[error("kube: {0}")]
        struct E(#[from] kube::Error);
        async fn reconcile(obj: Arc<ConfigMap>, api: Arc<Api<ConfigMap>>) -> Result<Action, E> {
            if obj.metadata.annotations.as_ref().is_none_or(|a| !a.contains_key("reconciled")) {
                let name = obj.metadata.name.clone().unwrap_or_default();
                api.patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata":{"annotations":{"reconciled":"yes"}}})),
                )
                .await?;
            }
            Ok(Action::await_change())
        }
        let ctx = Arc::new(cms.clone());
        let controller = Controller::new(cms.clone(), watcher::Config::default())
            .run(reconcile, |_, _, _| Action::requeue(Duration::from_secs(1)), ctx)
            .for_each(|_| async {});
        let task = tokio::spawn(controller);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let list = cms.list(&ListParams::default()).await.unwrap();
            let done = list
                .items
                .iter()
                .filter(|c| c.metadata.name.as_deref().is_some_and(|n| n.starts_with('r')))
                .filter(|c| c.metadata.annotations.as_ref().is_some_and(|a| a.contains_key("reconciled")))
                .count();
            if done == 10 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "only {done} of 10 reconciled");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        task.abort();
    });
}

#[test]
fn unauthenticated_and_malformed_requests() {
    let c = Cluster::start();
    let client = c.client();
    c.rt.block_on(async {
        let req = |method: &str, path: &str, ct: &str, body: Vec<u8>| {
            http::Request::builder().method(method).uri(path).header("content-type", ct).body(body).unwrap()
        };
        let status_of = |r: Result<String, kube::Error>| match r {
            Err(kube::Error::Api(s)) => s.code,
            other => panic!("expected an API error, got {other:?}"),
        };
        let bad = client
            .request_text(req("POST", "/api/v1/namespaces/default/configmaps", "application/json", b"{oops".to_vec()))
            .await;
        assert_eq!(status_of(bad), 400);
        let bad_yaml = client
            .request_text(req("POST", "/api/v1/namespaces/default/configmaps", "application/yaml", b"a: [\n".to_vec()))
            .await;
        assert_eq!(status_of(bad_yaml), 400);
        let big = vec![b' '; apiserver_lite::MAX_BODY + 1];
        let too_big =
            client.request_text(req("POST", "/api/v1/namespaces/default/configmaps", "application/json", big)).await;
        assert_eq!(status_of(too_big), 413);
        let unknown =
            client.request_text(req("GET", "/api/v1/namespaces/default/gizmos", "application/json", Vec::new())).await;
        assert_eq!(status_of(unknown), 404);
        let no_ns = client
            .request_text(req(
                "POST",
                "/api/v1/namespaces/ghost/configmaps",
                "application/json",
                serde_json::to_vec(&cm("x", "y")).unwrap(),
            ))
            .await;
        assert_eq!(status_of(no_ns), 404);
    });
    // No credentials: 401.
    let url = format!("{}/api/v1/namespaces", c.server().url());
    let out = std::process::Command::new("curl").args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", &url]).output();
    if let Ok(out) = out {
        assert_eq!(String::from_utf8_lossy(&out.stdout), "401");
    }
}

#[test]
fn binding_and_namespace_termination_with_a_node_held_pod() {
    use k8s_openapi::api::core::v1::Namespace;
    let c = Cluster::start();
    let client = c.client();
    c.rt.block_on(async {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces.create(&PostParams::default(), &serde_json::from_value(json!({"metadata":{"name":"team"}})).unwrap()).await.unwrap();
        let pods: Api<Pod> = Api::namespaced(client.clone(), "team");
        let pod: Pod = serde_json::from_value(json!({"metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"busybox"}]}})).unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
        // The scheduler binds it.
        let binding = json!({"apiVersion":"v1","kind":"Binding","metadata":{"name":"p"},"target":{"kind":"Node","name":"edge-1"}});
        let req = http::Request::post("/api/v1/namespaces/team/pods/p/binding")
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&binding).unwrap())
            .unwrap();
        client.request_text(req).await.unwrap();
        let bound = pods.get("p").await.unwrap();
        assert_eq!(bound.spec.unwrap().node_name.as_deref(), Some("edge-1"));
        let uid = bound.metadata.uid.unwrap();

        // Deleting the namespace waits for the node to finish the pod.
        namespaces.delete("team", &DeleteParams::default()).await.unwrap();
        let ns = namespaces.get("team").await.unwrap();
        assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Terminating"));
        assert!(pods.get("p").await.unwrap().metadata.deletion_timestamp.is_some());
        // A relabel while terminating does not drop the namespace early.
        namespaces.patch("team", &PatchParams::default(), &Patch::Merge(json!({"metadata":{"labels":{"x":"y"}}}))).await.unwrap();
        assert!(namespaces.get("team").await.is_ok());
        // The node deletes the pod with grace 0 and a UID precondition, as a kubelet does.
        let dp = DeleteParams { grace_period_seconds: Some(0), preconditions: Some(kube::api::Preconditions { uid: Some(uid), resource_version: None }), ..Default::default() };
        pods.delete("p", &dp).await.unwrap();
        assert!(matches!(pods.get("p").await, Err(kube::Error::Api(s)) if s.code == 404));
        assert!(matches!(namespaces.get("team").await, Err(kube::Error::Api(s)) if s.code == 404), "the empty namespace goes");
    });
}

#[test]
fn every_page_of_a_list_reports_the_first_pages_version() {
    let c = Cluster::start();
    let client = c.client();
    c.rt.block_on(async {
        let cms: Api<ConfigMap> = Api::namespaced(client, "default");
        for i in 0..6 {
            cms.create(&PostParams::default(), &cm(&format!("l{i}"), "x")).await.unwrap();
        }
        let first = cms.list(&ListParams::default().limit(2)).await.unwrap();
        let rv = first.metadata.resource_version.clone().unwrap();
        cms.create(&PostParams::default(), &cm("between", "x")).await.unwrap();
        let token = first.metadata.continue_.unwrap();
        let second = cms.list(&ListParams::default().limit(2).continue_token(&token)).await.unwrap();
        assert_eq!(second.metadata.resource_version.unwrap(), rv);
    });
}

/// TokenRequest returns a real service-account JWT (issue #13): signed with the key the server
/// publishes at /openid/v1/jwks, with the standard claims and the pod it is bound to; it
/// authenticates, and a token bound to a pod with another UID is refused.
#[test]
fn token_requests_return_verifiable_jwts() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    let c = Cluster::start();
    let client = c.client();
    c.rt.block_on(async {
        let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), "default");
        sas.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "robot"}})).unwrap())
            .await
            .unwrap();
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let pod = serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {"serviceAccountName": "robot",
            "containers": [{"name": "c", "image": "busybox:1"}]}}))
        .unwrap();
        let pod = pods.create(&PostParams::default(), &pod).await.unwrap();
        let uid = pod.metadata.uid.unwrap();
        let request = |uid: &str| {
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"audiences": ["edge"],
                "expirationSeconds": 3600, "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "web", "uid": uid}}})
        };
        let tr: serde_json::Value =
            sas.create_subresource("token", "robot", &PostParams::default(), &request(&uid)).await.unwrap();
        let token = tr["status"]["token"].as_str().unwrap().to_owned();
        assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
        let jwks: serde_json::Value = serde_json::from_str(
            &client.request_text(http::Request::get("/openid/v1/jwks").body(Vec::new()).unwrap()).await.unwrap(),
        )
        .unwrap();
        let key = &jwks["keys"][0];
        assert_eq!((key["kty"].as_str(), key["alg"].as_str()), (Some("EC"), Some("ES256")));
        let mut point = vec![4u8];
        point.extend(B64.decode(key["x"].as_str().unwrap()).unwrap());
        point.extend(B64.decode(key["y"].as_str().unwrap()).unwrap());
        let claims = apiserver_lite::satoken::verify_with(&point, &token, std::time::SystemTime::now())
            .expect("verifies with the published key");
        assert_eq!(claims["sub"], "system:serviceaccount:default:robot");
        assert_eq!(claims["aud"], json!(["edge"]));
        assert_eq!(claims["kubernetes.io"]["pod"]["uid"], uid.as_str());
        assert!(claims["exp"].as_u64().unwrap() > claims["iat"].as_u64().unwrap());
        // A token for the API (the default audience) authenticates; one for another audience
        // does not.
        let mut api_request = request(&uid);
        api_request["spec"].as_object_mut().unwrap().remove("audiences");
        let tr: serde_json::Value =
            sas.create_subresource("token", "robot", &PostParams::default(), &api_request).await.unwrap();
        let api_token = tr["status"]["token"].as_str().unwrap().to_owned();
        let as_token = |token: String| {
            let kubeconfig = c.kubeconfig.clone();
            async move {
                let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
                let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
                cfg.auth_info = kube::config::AuthInfo { token: Some(token.into()), ..Default::default() };
                let cms: Api<ConfigMap> = Api::namespaced(kube::Client::try_from(cfg).unwrap(), "default");
                cms.list(&ListParams::default()).await
            }
        };
        as_token(api_token).await.expect("the API token authenticates");
        let other = as_token(token).await;
        assert!(matches!(&other, Err(kube::Error::Api(s)) if s.code == 401), "{other:?}");
        // Bound to a pod that is not that pod: refused.
        let err: Result<serde_json::Value, _> =
            sas.create_subresource("token", "robot", &PostParams::default(), &request("other-uid")).await;
        assert!(matches!(&err, Err(kube::Error::Api(s)) if s.code == 409), "{err:?}");
    });
}
