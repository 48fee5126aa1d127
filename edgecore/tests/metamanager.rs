//! MetaManager on a real bus and a real SQLite file, with stand-ins for EdgeHub (`websocket`,
//! group `hub`) and edged: what it stores, forwards and ACKs, in which order, and what it does
//! with bad input.

use std::time::Duration;

use edgecore::metamanager::module::MetaManagerModule;
use kubeedge_beehive::{BoxFuture, Bus, Module, ModuleContext, ModuleError, Registry, RestartPolicy};
use kubeedge_metastore::Store;
use kubeedge_model::{Content, Message};
use serde_json::json;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(30);

/// Records what reaches it; as the hub it also answers queries sent up (the cloud).
struct Stub {
    name: &'static str,
    group: &'static str,
    seen: mpsc::UnboundedSender<Message>,
    answer_queries: bool,
}

impl Module for Stub {
    fn name(&self) -> &'static str {
        self.name
    }
    fn group(&self) -> &'static str {
        self.group
    }
    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(async move {
            while let Some(m) = ctx.recv().await {
                if self.answer_queries
                    && m.router.operation == "query"
                    && m.router.resource.contains("serviceaccounttoken")
                {
                    // The cloud's TokenRequest answer: the request with a token and its expiry.
                    let mut body: serde_json::Value = m.content.decode().unwrap();
                    let uid = body["spec"]["boundObjectRef"]["uid"].as_str().unwrap_or_default().to_owned();
                    body["status"] =
                        json!({"token": format!("token-for-{uid}"), "expirationTimestamp": "2099-01-01T00:00:00Z"});
                    body["spec"]["expirationSeconds"] = json!(3607);
                    let mut r = Message::response_to(&m, Content::json(&body).unwrap());
                    r.header.resource_version = "0".into();
                    let _ = ctx.bus.send_resp(r);
                } else if self.answer_queries && m.router.operation == "query" {
                    let body = json!({"apiVersion": "v1", "kind": "Secret",
                        "metadata": {"name": "remote", "namespace": "default", "uid": "s-1", "resourceVersion": "9"},
                        "data": {"k": "dg=="}});
                    let mut r = Message::response_to(&m, Content::json(&body).unwrap());
                    r.header.resource_version = "9".into();
                    let _ = ctx.bus.send_resp(r);
                }
                let _ = self.seen.send(m);
            }
            Ok(())
        })
    }
}

struct Setup {
    bus: Bus,
    hub: mpsc::UnboundedReceiver<Message>,
    edged: mpsc::UnboundedReceiver<Message>,
    store: Store,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("edgecore.db"), Default::default()).unwrap();
    let (hub_tx, hub) = mpsc::unbounded_channel();
    let (edged_tx, edged) = mpsc::unbounded_channel();
    let mut reg = Registry::new();
    reg.register(Box::new(MetaManagerModule::new(store.clone(), "edge-1".into(), WAIT, None))).unwrap();
    reg.register(Box::new(Stub { name: "websocket", group: "hub", seen: hub_tx, answer_queries: true })).unwrap();
    reg.register(Box::new(Stub { name: "edged", group: "edged", seen: edged_tx, answer_queries: false })).unwrap();
    let sup = reg.start(RestartPolicy::default());
    let bus = sup.bus();
    std::mem::forget(sup);
    Setup { bus, hub, edged, store, _dir: dir }
}

fn from_cloud(resource: &str, op: &str, content: Content) -> Message {
    let mut m = Message::build("edgecontroller", "resource", resource, op, content);
    m.header.resource_version = "5".into();
    m
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Message>, what: &str) -> Message {
    tokio::time::timeout(WAIT, rx.recv()).await.unwrap_or_else(|_| panic!("no {what}")).unwrap()
}

fn pod(uid: &str) -> Content {
    Content::json(&json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "uid": uid, "resourceVersion": "5"}, "spec": {}}))
    .unwrap()
}

#[tokio::test]
async fn a_cloud_object_is_committed_before_it_is_acked_and_forwarded_to_edged() {
    let mut s = setup();
    let msg = from_cloud("default/pod/web", "insert", pod("u-1"));
    s.bus.send("metamanager", msg.clone()).await.unwrap();
    let fwd = next(&mut s.edged, "forward to edged").await;
    assert_eq!(fwd.header.id, msg.header.id);
    assert_eq!(fwd.router.source, "metamanager");
    let ack = next(&mut s.hub, "ACK").await;
    assert_eq!(ack.header.parent_id, msg.header.id);
    assert_eq!(ack.router.operation, "response");
    assert_eq!(ack.content.as_str().as_deref(), Some("OK"));
    // By the time the ACK left, both tables had the row.
    let row = s.store.get("default/pod/web").await.unwrap().unwrap();
    assert_eq!(row.ty, "pod");
    assert!(row.value.contains("u-1"));
    let v2 = s.store.get_v2("/core/v1/pods/default/web").await.unwrap().unwrap();
    assert_eq!(v2.gvr, "/v1, Resource=pods");
    assert_eq!(v2.resource_version, 5);

    // A delete of another incarnation (other UID) leaves the row alone, and is still ACKed.
    let stale = from_cloud("default/pod/web", "delete", pod("u-old"));
    s.bus.send("metamanager", stale.clone()).await.unwrap();
    assert_eq!(next(&mut s.hub, "ACK of the stale delete").await.header.parent_id, stale.header.id);
    assert!(s.store.get("default/pod/web").await.unwrap().is_some());
    let del = from_cloud("default/pod/web", "delete", pod("u-1"));
    s.bus.send("metamanager", del.clone()).await.unwrap();
    assert_eq!(next(&mut s.hub, "ACK of the delete").await.header.parent_id, del.header.id);
    assert!(s.store.get("default/pod/web").await.unwrap().is_none());
    assert!(s.store.get_v2("/core/v1/pods/default/web").await.unwrap().is_none());
}

#[tokio::test]
async fn node_updates_are_stored_but_not_forwarded() {
    let mut s = setup();
    let node = Content::json(&json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "edge-1", "uid": "n-1", "resourceVersion": "7"}}))
    .unwrap();
    let msg = from_cloud("null/node/edge-1", "update", node);
    s.bus.send("metamanager", msg.clone()).await.unwrap();
    assert_eq!(next(&mut s.hub, "ACK").await.header.parent_id, msg.header.id);
    assert!(s.store.get("null/node/edge-1").await.unwrap().is_some());
    assert!(s.store.get_v2("/core/v1/nodes/null/edge-1").await.unwrap().is_some());
    assert!(s.edged.try_recv().is_err(), "node updates are not forwarded");
}

#[tokio::test]
async fn malformed_content_is_dropped_unacked_and_the_next_message_is_served() {
    let mut s = setup();
    let bad = from_cloud("default/pod/web", "insert", Content::string("{not json"));
    s.bus.send("metamanager", bad).await.unwrap();
    let bad = from_cloud("no-slashes", "insert", pod("u-2"));
    s.bus.send("metamanager", bad).await.unwrap();
    let good = from_cloud(
        "default/configmap/c",
        "insert",
        Content::json(
            &json!({"metadata": {"name": "c", "namespace": "default", "uid": "c-1", "resourceVersion": "3"}}),
        )
        .unwrap(),
    );
    s.bus.send("metamanager", good.clone()).await.unwrap();
    let ack = next(&mut s.hub, "the next ACK").await;
    assert_eq!(ack.header.parent_id, good.header.id, "only the good message is ACKed");
    assert!(s.store.get("default/pod/web").await.unwrap().is_none());
}

#[tokio::test]
async fn queries_are_local_first_then_remote_and_offline_answers_from_the_database() {
    let mut s = setup();
    let cm = from_cloud(
        "default/configmap/local",
        "insert",
        Content::json(
            &json!({"metadata": {"name": "local", "namespace": "default", "uid": "c-9", "resourceVersion": "4"}}),
        )
        .unwrap(),
    );
    s.bus.send("metamanager", cm).await.unwrap();
    next(&mut s.hub, "ACK").await;

    // Local: answered from the database as upstream does, a JSON array of stored values.
    let q = Message::build("edged", "meta", "default/configmap/local", "query", Content::null());
    let r = s.bus.send_sync("metamanager", q, WAIT).await.unwrap();
    let values: Vec<String> = r.content.decode().unwrap();
    assert!(values[0].contains("c-9"));

    // Absent locally and offline: a clear error, at once.
    let q = Message::build("edged", "meta", "default/secret/remote", "query", Content::null());
    let r = s.bus.send_sync("metamanager", q, WAIT).await.unwrap();
    assert_eq!(r.router.operation, "error", "{r:?}");

    // Online: asked of the cloud, stored, ACKed.
    let online = Message::build("websocket", "meta", "node/connection", "connect", Content::string("connected"));
    s.bus.send("metamanager", online).await.unwrap();
    let q = Message::build("edged", "meta", "default/secret/remote", "query", Content::null());
    let r = s.bus.send_sync("metamanager", q, WAIT).await.unwrap();
    let body: serde_json::Value = r.content.decode().unwrap();
    assert_eq!(body["metadata"]["uid"], "s-1", "{body}");
    assert!(s.store.get("default/secret/remote").await.unwrap().is_some());
    let up = next(&mut s.hub, "the query sent up").await;
    assert_eq!(up.router.operation, "query");
    let ack = next(&mut s.hub, "the ACK of the reply").await;
    assert_eq!(ack.content.as_str().as_deref(), Some("OK"));
}

/// Service-account tokens are stored per bound pod under upstream's key (issue #13): a pod
/// never gets another pod's token, and a fresh stored token is served without asking the cloud.
#[tokio::test]
async fn tokens_are_stored_per_pod_under_upstreams_key() {
    let mut s = setup();
    let online = Message::build("websocket", "meta", "node/connection", "connect", Content::string("connected"));
    s.bus.send("metamanager", online).await.unwrap();
    let request = |uid: &str| {
        json!({"metadata": {"creationTimestamp": null}, "spec": {"audiences": null, "expirationSeconds": 3607,
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web", "uid": uid}},
            "status": {"token": "", "expirationTimestamp": null}})
    };
    let ask = |uid: &str| {
        Message::build(
            "edged",
            "meta",
            "default/serviceaccounttoken/default",
            "query",
            Content::json(&request(uid)).unwrap(),
        )
    };
    let token_of = |r: &Message| -> String {
        let v: serde_json::Value = r.content.decode().unwrap();
        let obj = match v {
            serde_json::Value::Array(items) => serde_json::from_str(items[0].as_str().unwrap()).unwrap(),
            o => o,
        };
        obj["status"]["token"].as_str().unwrap().to_owned()
    };
    let r = s.bus.send_sync("metamanager", ask("uid-a"), WAIT).await.unwrap();
    assert_eq!(token_of(&r), "token-for-uid-a");
    assert_eq!(next(&mut s.hub, "the token query sent up").await.router.operation, "query");
    let key = r#""default"/"default"/[]string(nil)/3607/v1.BoundObjectReference{Kind:"Pod", APIVersion:"v1", Name:"web", UID:"uid-a"}"#;
    let row = s.store.get(key).await.unwrap().expect("stored under upstream's key");
    assert_eq!(row.ty, "serviceaccounttoken");
    assert!(s.store.get("default/serviceaccounttoken/default").await.unwrap().is_none());
    // Fresh: served from the database.
    let r = s.bus.send_sync("metamanager", ask("uid-a"), WAIT).await.unwrap();
    assert_eq!(token_of(&r), "token-for-uid-a");
    // Another pod of the same account gets its own token.
    let r = s.bus.send_sync("metamanager", ask("uid-b"), WAIT).await.unwrap();
    assert_eq!(token_of(&r), "token-for-uid-b");
    let mut ups = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), s.hub.recv()).await {
        ups.push(m.router.operation);
    }
    assert_eq!(ups.iter().filter(|o| *o == "query").count(), 1, "only pod b's token was asked for: {ups:?}");
}

#[tokio::test]
async fn the_ack_of_an_upstream_pod_update_has_the_shape_a_v1_15_edge_sends() {
    let mut s = setup();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/upstream");
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let update =
        Message::decode(&read("cloud-pod-update-deletiontimestamp.json"), kubeedge_model::MAX_MESSAGE_SIZE).unwrap();
    let want = Message::decode(&read("edge-ack-pod-update.json"), kubeedge_model::MAX_MESSAGE_SIZE).unwrap();
    s.bus.send("metamanager", update.clone()).await.unwrap();
    let ack = next(&mut s.hub, "ACK").await;
    assert_eq!(ack.header.parent_id, update.header.id);
    assert_eq!(want.header.parent_id, update.header.id, "the fixture pair belongs together");
    assert_eq!(
        (&ack.router.source, &ack.router.group, &ack.router.operation, &ack.router.resource),
        (&want.router.source, &want.router.group, &want.router.operation, &want.router.resource)
    );
    assert_eq!(ack.content.raw(), want.content.raw());
    assert!(s.store.get("default/pod/capture-pod").await.unwrap().is_some());
}
