//! The cloudcore binary with CloudHub, EdgeController and SyncController against apiserver-lite,
//! and a scripted edge speaking the wire protocol over mTLS (as MetaManager and edged would):
//!
//! - the edge registers its node (node insert) and gets the Node back;
//! - a pod bound to it arrives as `insert`, is ACKed, and its ObjectSync records the version;
//!   a configmap it uses follows; updates and the delete propagate; the delete ACK removes
//!   the ObjectSync;
//! - a pod status patch and a configmap query from the edge reach the API and are answered;
//!   the status-only version the patch made is recorded, not sent back;
//! - while the edge is away the pod changes; when it reconnects the update comes at once
//!   (not at the next 5 s loop);
//! - garbage content is dropped and the session lives on;
//! - deleting the node sends it a delete and ends its session.

mod scripted;

use std::time::Instant;

use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kubeedge_apis::reliablesyncs::v1alpha1::ObjectSync;
use kubeedge_model::Content;
use scripted::{Cluster, Edge, PATIENCE, until, upstream};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_and_configmaps_reach_the_edge_and_its_reports_reach_the_api() {
    let c = Cluster::start(&[]).await;
    let (client, ca, addr) = (c.client.clone(), &c.ca, c.ws.clone());
    let Cluster { mut cloud, api, .. } = c;
    cloud.wait_for_line("Loaded what edge nodes have acknowledged.");

    let mut edge = Edge::connect(ca, &addr, "edge-1").await;
    // Registration, as edged does it: the reply carries the created Node.
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "edge-1",
        "labels": {"node-role.kubernetes.io/edge": "", "node-role.kubernetes.io/agent": ""}}});
    let insert = upstream("null/node/edge-1", "insert", Content::json(&node).unwrap());
    edge.send(&insert).await;
    let reply = edge
        .expect("the node insert reply", |m| m.header.parent_id == insert.header.id)
        .await
        .unwrap_or_else(|e| panic!("{e}\ncloudcore log:\n{}", cloud.log()));
    let body: serde_json::Value = reply.content.decode().unwrap();
    assert_eq!(body["Object"]["metadata"]["name"], "edge-1", "{body}");
    assert!(body["Err"].is_null(), "{body}");
    assert_eq!(reply.router.source, "edgecontroller");
    let nodes: Api<Node> = Api::all(client.clone());
    assert!(nodes.get("edge-1").await.is_ok());
    edge.expect("the node update", |m| m.router.resource == "null/node/edge-1" && m.router.operation == "update")
        .await
        .unwrap_or_else(|e| panic!("{e}\ncloudcore log:\n{}", cloud.log()));

    // A configmap and a pod that uses it.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "web-config"}, "data": {"index.html": "hi"}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "web", "labels": {"app": "web"}}, "spec": {
        "nodeName": "edge-1",
        "containers": [{"name": "web", "image": "busybox", "envFrom": [{"configMapRef": {"name": "web-config"}},
            {"secretRef": {"name": "nope", "optional": true}}]}]}}))
    .unwrap();
    let created = pods.create(&PostParams::default(), &pod).await.unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    let msg = edge
        .expect("the pod insert", |m| m.router.resource == "default/pod/web")
        .await
        .unwrap_or_else(|e| panic!("{e}\ncloudcore log:\n{}", cloud.log()));
    assert_eq!(msg.router.operation, "insert");
    assert!(
        !edge.backlog.iter().any(|m| m.router.resource == "default/configmap/web-config"),
        "the pod goes first: it does not wait behind the ACK of what it uses"
    );
    assert_eq!(msg.router.source, "edgecontroller");
    assert_eq!(msg.router.group, "resource");
    let content: serde_json::Value = msg.content.decode().unwrap();
    assert_eq!(content["kind"], "Pod");
    assert_eq!(content["apiVersion"], "v1");
    assert_eq!(msg.header.resource_version, created.metadata.resource_version.clone().unwrap());
    let cm_msg = edge
        .expect("the configmap the pod uses", |m| m.router.resource == "default/configmap/web-config")
        .await
        .unwrap_or_else(|e| panic!("{e}\ncloudcore log:\n{}", cloud.log()));
    let cm_content: serde_json::Value = cm_msg.content.decode().unwrap();
    assert_eq!(cm_content["data"]["index.html"], "hi");

    // The ACK is recorded.
    let syncs: Api<ObjectSync> = Api::namespaced(client.clone(), "default");
    let os_name = format!("edge-1.{uid}");
    let rv = msg.header.resource_version.clone();
    recorded("the ObjectSync to record the ACK", &syncs, &os_name, &rv).await;
    let os = syncs.get(&os_name).await.unwrap();
    assert_eq!((os.spec.object_kind.as_str(), os.spec.object_name.as_str()), ("Pod", "web"));

    // Status from the edge (a strategic-merge patch in a JSON string, as edged sends it).
    let patch = upstream(
        "default/podpatch/web",
        "patch",
        Content::string(&json!({"status": {"phase": "Running", "podIP": "10.0.0.9"}}).to_string()),
    );
    edge.send(&patch).await;
    let reply = edge
        .expect("the podpatch reply", |m| m.header.parent_id == patch.header.id)
        .await
        .unwrap_or_else(|e| panic!("{e}\ncloudcore log:\n{}", cloud.log()));
    let body: serde_json::Value = reply.content.decode().unwrap();
    assert_eq!(body["Object"]["status"]["phase"], "Running", "{body}");
    assert_eq!(pods.get("web").await.unwrap().status.unwrap().phase.as_deref(), Some("Running"));
    // Only the status changed: the record moves to the new version and nothing is sent (the
    // edge reported that status itself).
    let status_rv = body["Object"]["metadata"]["resourceVersion"].as_str().unwrap().to_owned();
    recorded("the ObjectSync to record the status-only version", &syncs, &os_name, &status_rv).await;

    // A query, answered with the object.
    let query = upstream("default/configmap/web-config", "query", Content::null());
    edge.send(&query).await;
    let reply = edge
        .expect("the configmap query reply", |m| m.header.parent_id == query.header.id)
        .await
        .unwrap_or_else(|e| panic!("{e}\ncloudcore log:\n{}", cloud.log()));
    let body: serde_json::Value = reply.content.decode().unwrap();
    assert_eq!(body["data"]["index.html"], "hi", "{body}");
    // One the pod uses that does not exist: Go's StatusError.
    let query = upstream("default/secret/nope", "query", Content::null());
    edge.send(&query).await;
    let reply = edge
        .expect("the missing secret reply", |m| m.header.parent_id == query.header.id)
        .await
        .unwrap_or_else(|e| panic!("{e}\ncloudcore log:\n{}", cloud.log()));
    let body: serde_json::Value = reply.content.decode().unwrap();
    assert_eq!(body["ErrStatus"]["code"], 404, "{body}");

    // An edge may not touch another node or a pod bound elsewhere: 403, as Go's StatusError.
    let foreign = upstream("null/nodepatch/other-node", "patch", Content::string("{}"));
    edge.send(&foreign).await;
    let reply = edge
        .expect("the refusal", |m| m.header.parent_id == foreign.header.id)
        .await
        .unwrap_or_else(|e| panic!("{e}\ncloudcore log:\n{}", cloud.log()));
    let body: serde_json::Value = reply.content.decode().unwrap();
    assert_eq!(body["Err"]["ErrStatus"]["code"], 403, "a nodepatch is answered with an ObjectResp: {body}");
    assert!(body["Object"].is_null(), "{body}");

    // Garbage content: dropped, the session lives on.
    edge.send(&upstream("default/podpatch/web", "patch", Content::string("{not json"))).await;
    edge.send(&upstream("nonsense", "insert", Content::null())).await;

    // An update while connected: only metadata/spec changes are sent.
    pods.patch("web", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"v": "2"}}})))
        .await
        .unwrap();
    let msg = edge
        .expect("the pod update", |m| m.router.resource == "default/pod/web")
        .await
        .unwrap_or_else(|e| panic!("{e}\ncloudcore log:\n{}", cloud.log()));
    assert_eq!(msg.router.operation, "update");
    assert!(
        !edge.backlog.iter().any(|m| m.router.resource == "default/pod/web" && m.header.resource_version == status_rv),
        "the status-only version was sent"
    );

    // Away: the pod changes; back: the change arrives at once.
    let mark = cloud.mark();
    let _ = edge.conn.close().await;
    cloud.wait_for_line_since(mark, "Edge disconnected.");
    let changed = pods
        .patch("web", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"v": "3"}}})))
        .await
        .unwrap();
    let mut edge = Edge::connect(ca, &addr, "edge-1").await;
    let msg = edge
        .expect("the missed update", |m| {
            m.router.resource == "default/pod/web"
                && m.header.resource_version == *changed.metadata.resource_version.as_ref().unwrap()
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\ncloudcore log:\n{}", cloud.log()));
    assert_eq!(msg.router.operation, "update");

    // Delete: the edge gets it, and its ACK removes the ObjectSync.
    pods.delete("web", &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.unwrap();
    let msg = edge
        .expect("the pod delete", |m| m.router.resource == "default/pod/web" && m.router.operation == "delete")
        .await
        .unwrap_or_else(|e| panic!("{e}\ncloudcore log:\n{}", cloud.log()));
    let content: serde_json::Value = msg.content.decode().unwrap();
    assert_eq!(content["metadata"]["uid"], uid.as_str());
    until("the ObjectSync to go", || {
        let (syncs, os_name) = (syncs.clone(), os_name.clone());
        async move { syncs.get_opt(&os_name).await.ok().flatten().is_none() }
    })
    .await;

    // Deleting the node tells the edge and ends its session (upstream's IsNodeStopped).
    nodes.delete("edge-1", &DeleteParams::default()).await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    let mut saw_delete = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, edge.conn.recv()).await.expect("the session to end") {
            Ok(Some(m)) => {
                saw_delete |= m.router.resource == "null/node/edge-1" && m.router.operation == "delete";
            }
            Ok(None) | Err(_) => break,
        }
    }
    assert!(saw_delete, "the node delete was not sent before the session ended");

    cloud.signal("TERM");
    assert!(cloud.wait_exit(PATIENCE).is_some_and(|s| s.success()), "{}", cloud.log());
    api.shutdown().await;
}

/// Waits until the ObjectSync `name` records `rv`.
async fn recorded(what: &str, syncs: &Api<ObjectSync>, name: &str, rv: &str) {
    until(what, || {
        let (syncs, name, rv) = (syncs.clone(), name.to_owned(), rv.to_owned());
        async move {
            syncs.get_opt(&name).await.ok().flatten().and_then(|o| o.status).map(|s| s.object_resource_version)
                == Some(rv)
        }
    })
    .await;
}
