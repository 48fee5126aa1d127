//! Issue #12: one joined edge (or a join-token holder) attacking the cluster through the real
//! cloudcore binary, every attack failing closed, and the legitimate paths still working.
//!
//! | row | attack | test |
//! |---|---|---|
//! | 1 | read the CA key, other secrets, SA tokens, configmaps | `row1_an_edge_reads_only_what_its_pods_use` |
//! | 2 | insert a pod bound to another node, or a name-less one | `row2_3_an_edge_writes_only_its_own_objects` |
//! | 3 | `podstatus` of another node's pod | `row2_3_an_edge_writes_only_its_own_objects` |
//! | 4, 5 | CSRs asking system:masters, serverAuth, IP SANs | `cloudhub_join::certificates_are_built_not_copied`, `row5_a_node_certificate_cannot_pose_as_cloudhub` |
//! | 6 | the shared token mints a certificate for a connected node and steals its session | `row6_a_token_cannot_take_over_a_node` |
//! | 7 | DynamicController: read casecret, patch another node, create a pod elsewhere | `row7_dynamic_controller_applications_are_authorized` |
//! | — | every recorded upstream edge message type that names an object, rewritten to name another node's | `fixture_messages_for_another_node_are_all_refused` |
//! | — | the compact lease renewal of an edge of ours (`renew`) for another node's lease | `a_node_renews_only_its_own_lease_compactly` |

mod scripted;

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret, ServiceAccount};
use kube::Api;
use kube::api::PostParams;
use kubeedge_model::{Content, Message};
use scripted::{Cluster, Edge, join_get, node_cert, upstream};
use serde_json::{Value, json};

/// The reply's error code wherever the reply shape puts it (bare StatusError or ObjectResp).
fn error_code(reply: &Message) -> Option<i64> {
    let body: Value = reply.content.decode().ok()?;
    body.pointer("/ErrStatus/code").or_else(|| body.pointer("/Err/ErrStatus/code")).and_then(Value::as_i64)
}

async fn create<K>(client: &kube::Client, ns: Option<&str>, v: Value) -> K
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(v).unwrap();
    let api: Api<K> = Api::namespaced(client.clone(), ns.unwrap_or("default"));
    api.create(&PostParams::default(), &obj).await.unwrap()
}

/// Two edge nodes, `edge-a` (the attacker) and `edge-b` (the victim), each with a pod that
/// uses a configmap, a secret and a service account; a cluster-admin-like secret elsewhere.
/// Returns (edge-a, edge-b) connected, each having received its pod.
async fn two_edges(c: &Cluster) -> (Edge, Edge, Pod) {
    let nodes: Api<Node> = Api::all(c.client.clone());
    for node in ["edge-a", "edge-b"] {
        let n =
            serde_json::from_value(json!({"metadata": {"name": node, "labels": {"node-role.kubernetes.io/edge": ""}}}));
        nodes.create(&PostParams::default(), &n.unwrap()).await.unwrap();
    }
    let ns = Some("default");
    for who in ["a", "b"] {
        create::<ConfigMap>(&c.client, ns, json!({"metadata": {"name": format!("{who}-config")}, "data": {"k": who}}))
            .await;
        create::<Secret>(
            &c.client,
            ns,
            json!({"metadata": {"name": format!("{who}-secret")}, "stringData": {"k": who}}),
        )
        .await;
        create::<ServiceAccount>(&c.client, ns, json!({"metadata": {"name": format!("{who}-robot")}})).await;
    }
    create::<ServiceAccount>(&c.client, Some("kube-system"), json!({"metadata": {"name": "admin-sa"}})).await;
    create::<Secret>(
        &c.client,
        Some("kube-system"),
        json!({"metadata": {"name": "admin-sa-token"}, "stringData": {"token": "cluster-admin"}}),
    )
    .await;
    let mut edges = Vec::new();
    let mut victim_pod = None;
    for who in ["a", "b"] {
        let node = format!("edge-{who}");
        let mut edge = Edge::connect(&c.ca, &c.ws, &node).await;
        let pod: Pod = create(
            &c.client,
            ns,
            json!({"metadata": {"name": format!("{who}-pod")}, "spec": {
                "nodeName": node,
                "serviceAccountName": format!("{who}-robot"),
                "containers": [{"name": "c", "image": "busybox",
                    "envFrom": [{"configMapRef": {"name": format!("{who}-config")}}, {"secretRef": {"name": format!("{who}-secret")}}]}]}}),
        )
        .await;
        let resource = format!("default/pod/{who}-pod");
        edge.expect("its pod", |m| m.router.resource == resource).await.unwrap();
        victim_pod = Some(pod);
        edges.push(edge);
    }
    let b = edges.pop().unwrap();
    let a = edges.pop().unwrap();
    (a, b, victim_pod.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row1_an_edge_reads_only_what_its_pods_use() {
    let mut c = Cluster::start(&[]).await;
    let (mut a, _b, _) = two_edges(&c).await;
    // Forbidden: KubeEdge's keys, another namespace's secrets, what only edge-b's pod uses.
    for resource in [
        "kubeedge/secret/casecret",
        "kubeedge/secret/cloudcoresecret",
        "kubeedge/secret/tokensecret",
        "kube-system/secret/admin-sa-token",
        "default/secret/b-secret",
        "default/configmap/b-config",
        "kube-system/serviceaccounttoken/admin-sa",
        "default/serviceaccounttoken/b-robot",
        "null/persistentvolume/pv-1",
        "default/persistentvolumeclaim/data",
        "null/volumeattachment/va-1",
    ] {
        let content = if resource.contains("serviceaccounttoken") {
            Content::json(&json!({"spec": {}})).unwrap()
        } else {
            Content::null()
        };
        let reply =
            a.ask(&upstream(resource, "query", content)).await.unwrap_or_else(|e| panic!("{e}\n{}", c.cloud.log()));
        assert_eq!(error_code(&reply), Some(403), "{resource}: {:?}", reply.content);
        let text = String::from_utf8_lossy(&serde_json::to_vec(&reply.content).unwrap()).to_string();
        assert!(!text.contains("cakeydata") && !text.contains("cluster-admin"), "{resource} leaked: {text}");
        let body: Value = reply.content.decode().unwrap();
        assert_eq!(body["ErrStatus"]["reason"], "Forbidden", "{body}");
        assert!(body["ErrStatus"]["message"].as_str().unwrap().contains("User \"system:node:edge-a\""), "{body}");
    }
    // Allowed: what its own pod uses, and its own service account's token.
    let reply = a.ask(&upstream("default/configmap/a-config", "query", Content::null())).await.unwrap();
    assert_eq!(reply.content.decode::<Value>().unwrap()["data"]["k"], "a");
    let reply = a.ask(&upstream("default/secret/a-secret", "query", Content::null())).await.unwrap();
    assert_eq!(reply.content.decode::<Value>().unwrap()["kind"], "Secret");
    // Tokens only bound to a pod of its own that runs as that account (NodeRestriction).
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let a_uid = pods.get("a-pod").await.unwrap().metadata.uid.unwrap();
    let b_uid = pods.get("b-pod").await.unwrap().metadata.uid.unwrap();
    let tr = |bound: Value| {
        let tr = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600, "boundObjectRef": bound}});
        upstream("default/serviceaccounttoken/a-robot", "query", Content::json(&tr).unwrap())
    };
    for bound in [
        Value::Null,
        json!({"apiVersion": "v1", "kind": "Pod", "name": "a-pod"}),
        json!({"apiVersion": "v1", "kind": "Pod", "name": "b-pod", "uid": b_uid}),
        json!({"apiVersion": "v1", "kind": "Pod", "name": "a-pod", "uid": b_uid}),
        json!({"apiVersion": "v1", "kind": "Secret", "name": "a-secret", "uid": "x"}),
    ] {
        let reply = a.ask(&tr(bound.clone())).await.unwrap();
        assert_eq!(error_code(&reply), Some(403), "{bound}: {:?}", reply.content);
    }
    let reply = a.ask(&tr(json!({"apiVersion": "v1", "kind": "Pod", "name": "a-pod", "uid": a_uid}))).await.unwrap();
    let body: Value = reply.content.decode().unwrap();
    assert!(body.pointer("/status/token").and_then(Value::as_str).is_some_and(|t| !t.is_empty()), "{body}");
    // Refusals are counted.
    let metrics = kubeedge_testkit::http_get(c.cloud.monitor_addr(), "/metrics").unwrap().1;
    let refused: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("kubeedge_cloudcore_authorization_refusals_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(refused >= 16, "refusals counted: {refused}\n{metrics}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row2_3_an_edge_writes_only_its_own_objects() {
    let c = Cluster::start(&[]).await;
    let (mut a, mut b, b_pod) = two_edges(&c).await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    // Row 2: a privileged pod bound to edge-b, by name and name-less, in two namespaces.
    let evil = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "evil", "namespace": "default", "annotations": {"kubernetes.io/config.mirror": "x"}},
        "spec": {"nodeName": "edge-b", "hostPID": true, "containers": [{"name": "c", "image": "busybox",
            "securityContext": {"privileged": true}}], "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}});
    for resource in ["default/pod/evil", "kube-system/pod"] {
        let reply = a.ask(&upstream(resource, "insert", Content::json(&evil).unwrap())).await.unwrap();
        assert_eq!(error_code(&reply), Some(403), "{resource}: {:?}", reply.content);
    }
    // Not a mirror pod, even for itself.
    let mut plain = evil.clone();
    plain["spec"]["nodeName"] = json!("edge-a");
    plain["metadata"]["annotations"] = json!({});
    let reply = a.ask(&upstream("default/pod/plain", "insert", Content::json(&plain).unwrap())).await.unwrap();
    assert_eq!(error_code(&reply), Some(403));
    // A mirror pod of its own that uses a secret.
    let mut sneaky = plain.clone();
    sneaky["metadata"]["annotations"] = json!({"kubernetes.io/config.mirror": "h"});
    sneaky["spec"]["containers"][0]["envFrom"] = json!([{"secretRef": {"name": "b-secret"}}]);
    let reply = a.ask(&upstream("default/pod/sneaky", "insert", Content::json(&sneaky).unwrap())).await.unwrap();
    assert_eq!(error_code(&reply), Some(403));
    // The legitimate mirror pod of a static pod is created.
    let mut mirror = plain.clone();
    mirror["metadata"]["name"] = json!("static-web-edge-a");
    mirror["metadata"]["annotations"] = json!({"kubernetes.io/config.mirror": "h"});
    a.send(&upstream("default/pod/static-web-edge-a", "insert", Content::json(&mirror).unwrap())).await;
    scripted::until("the mirror pod", || {
        let pods = pods.clone();
        async move { pods.get_opt("static-web-edge-a").await.ok().flatten().is_some() }
    })
    .await;
    for name in ["evil", "plain", "sneaky"] {
        assert!(pods.get_opt(name).await.unwrap().is_none(), "{name} was created");
    }
    let ks: Api<Pod> = Api::namespaced(c.client.clone(), "kube-system");
    assert!(ks.list(&Default::default()).await.unwrap().items.is_empty());

    // Row 3: the deprecated podstatus for edge-b's pod (its UID known) is refused.
    let uid = b_pod.metadata.uid.clone().unwrap();
    let status = json!([{"UID": uid, "Name": "b-pod", "Status": {"phase": "Failed"}}]);
    let reply = a.ask(&upstream("default/podstatus", "update", Content::json(&status).unwrap())).await.unwrap();
    assert_eq!(error_code(&reply), Some(403), "{:?}", reply.content);
    // Nor may it patch, or delete, edge-b's pod or node.
    let patch = Content::string(&json!({"status": {"phase": "Failed"}}).to_string());
    let reply = a.ask(&upstream("default/podpatch/b-pod", "patch", patch.clone())).await.unwrap();
    assert_eq!(error_code(&reply), Some(403));
    let del = Content::json(&json!({"gracePeriodSeconds": 0, "preconditions": {"uid": uid}})).unwrap();
    let reply = a.ask(&upstream("default/pod/b-pod", "delete", del)).await.unwrap();
    assert_eq!(error_code(&reply), Some(403));
    let reply = a.ask(&upstream("default/pod", "delete", Content::null())).await.unwrap();
    assert_eq!(error_code(&reply), Some(403), "a name-less delete");
    // A pod not scheduled yet is no node's: not deletable by an edge.
    create::<Pod>(
        &c.client,
        None,
        json!({"metadata": {"name": "pending"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
    )
    .await;
    let reply = a.ask(&upstream("default/pod/pending", "delete", Content::null())).await.unwrap();
    assert_eq!(error_code(&reply), Some(403), "{:?}", reply.content);
    assert!(pods.get_opt("pending").await.unwrap().is_some_and(|p| p.metadata.deletion_timestamp.is_none()));
    // A write that names its own object in the resource and another in the content.
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "edge-b", "namespace": "kube-node-lease"}, "spec": {"holderIdentity": "edge-b"}});
    let reply =
        a.ask(&upstream("kube-node-lease/lease/edge-a", "insert", Content::json(&lease).unwrap())).await.unwrap();
    assert_eq!(error_code(&reply), Some(403), "{:?}", reply.content);
    let node = json!({"metadata": {"name": "edge-b", "labels": {"owned": "yes"}}});
    let reply = a.ask(&upstream("null/node/edge-a", "update", Content::json(&node).unwrap())).await.unwrap();
    assert_eq!(error_code(&reply), Some(403), "{:?}", reply.content);
    // Its own node update may carry KubeEdge's annotations (a stale copy): they are left alone.
    let nodes: Api<Node> = Api::all(c.client.clone());
    let stale = json!({"metadata": {"name": "edge-a", "labels": {"site": "lab"},
        "annotations": {"kubeedge.io/client-certificate-not-after": "2000-01-01T00:00:00Z"}}});
    let reply = a.ask(&upstream("null/node/edge-a", "update", Content::json(&stale).unwrap())).await.unwrap();
    assert_eq!(reply.content.as_str().as_deref(), Some("OK"), "{:?}", reply.content);
    let a_node = nodes.get("edge-a").await.unwrap();
    assert_eq!(a_node.metadata.labels.unwrap()["site"], "lab");
    assert!(!a_node.metadata.annotations.unwrap_or_default().contains_key("kubeedge.io/client-certificate-not-after"));
    let b_now = pods.get("b-pod").await.unwrap();
    assert_ne!(b_now.status.and_then(|s| s.phase).as_deref(), Some("Failed"));
    assert!(b_now.metadata.deletion_timestamp.is_none());
    // The victim never heard of any of it.
    let stray = b
        .expect_within("anything about the attacks", Duration::from_secs(2), |m| {
            ["evil", "plain", "sneaky"].iter().any(|n| m.router.resource.ends_with(&format!("pod/{n}")))
        })
        .await;
    assert!(stray.is_err(), "the victim got {stray:?}");
    // Its own pod's status still goes through.
    let reply = a
        .ask(&upstream(
            "default/podpatch/a-pod",
            "patch",
            Content::string(&json!({"status": {"phase": "Running"}}).to_string()),
        ))
        .await
        .unwrap();
    assert_eq!(error_code(&reply), None, "{:?}", reply.content);
    assert_eq!(pods.get("a-pod").await.unwrap().status.unwrap().phase.as_deref(), Some("Running"));
    let status = json!([{"UID": pods.get("a-pod").await.unwrap().metadata.uid, "Name": "a-pod", "Status": {"phase": "Running"}}]);
    let reply = a.ask(&upstream("default/podstatus", "update", Content::json(&status).unwrap())).await.unwrap();
    assert_eq!(reply.content.as_str().as_deref(), Some("OK"));
    c.stop().await;
}

/// Every message type an upstream v1.15.4 edge sends that names an object, taken from the
/// recorded traffic, rewritten to name edge-b's objects, sent by edge-a: each gets a 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixture_messages_for_another_node_are_all_refused() {
    let c = Cluster::start(&[]).await;
    let (mut a, _b, b_pod) = two_edges(&c).await;
    let uid = b_pod.metadata.uid.unwrap();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/upstream");
    let fixtures = [
        "edge-node-insert.json",
        "edge-query-node.json",
        "edge-nodepatch-initial.json",
        "edge-nodepatch.json",
        "edge-lease-insert.json",
        "edge-lease-update.json",
        "edge-query-lease.json",
        "edge-podpatch.json",
        "edge-podpatch-running.json",
        "edge-podpatch-terminated.json",
        "edge-pod-delete.json",
        "edge-query-configmap.json",
    ];
    for f in fixtures {
        let text = std::fs::read_to_string(format!("{dir}/{f}")).unwrap();
        let recorded: Value = serde_json::from_str(&text).unwrap();
        let cm = recorded
            .pointer("/route/resource")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix("default/configmap/"));
        let mut text = text.replace("edge-capture", "edge-b").replace("capture-pod", "b-pod");
        if let Some(cm) = cm {
            text = text.replace(cm, "b-config");
        }
        if let Some(old) = recorded.pointer("/content/preconditions/uid").and_then(Value::as_str) {
            text = text.replace(old, &uid);
        }
        let mut msg: Message = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{f}: {e}"));
        msg.header.id = format!("attack-{f}");
        let reply = a.ask(&msg).await.unwrap_or_else(|e| panic!("{f}: {e}"));
        assert_eq!(error_code(&reply), Some(403), "{f}: {} → {:?}", msg.router.resource, reply.content);
    }
    let nodes: Api<Node> = Api::all(c.client.clone());
    assert!(nodes.get("edge-b").await.unwrap().status.and_then(|s| s.conditions).is_none(), "edge-b untouched");
    c.stop().await;
}

/// Issue #19: CloudHub agrees to `lease-renew` in the handshake; a node then renews its own
/// lease by the cloud's clock (`"OK"`, nothing else of the Lease changed), never another
/// node's (403, that lease untouched), and a missing lease is a 404 (the edge then creates it).
/// The renewals go over EdgeController's own HTTP/2 connection to the API server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_renews_only_its_own_lease_compactly() {
    let mut c = Cluster::start(&[]).await;
    renewals(&c).await;
    let log = c.cloud.log();
    assert!(log.contains("go over their own HTTP/2 connection"), "{log}");
    assert!(!log.contains("through the Kubernetes client until"), "{log}");
    c.stop().await;
}

/// The same against an API server that offers HTTP/1.1 only (as behind an HTTP/1.1 proxy):
/// the renewals go through kube-rs's client, and nothing an edge sees changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_need_no_http2_from_the_api_server() {
    let mut c = Cluster::start_with(&[], apiserver_lite::Options { http1_only: true, ..Default::default() }).await;
    renewals(&c).await;
    let log = c.cloud.log();
    assert!(log.contains("Lease renewals go through the Kubernetes client until"), "{log}");
    c.stop().await;
}

async fn renewals(c: &Cluster) {
    use k8s_openapi::api::coordination::v1::Lease;
    use kubeedge_model::protocol::lease;

    let leases: Api<Lease> = Api::namespaced(c.client.clone(), "kube-node-lease");
    let long_ago = "2020-01-01T00:00:00.000000Z";
    for node in ["edge-a", "edge-b"] {
        let l = json!({"metadata": {"name": node},
            "spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": long_ago}});
        leases.create(&PostParams::default(), &serde_json::from_value(l).unwrap()).await.unwrap();
    }
    let (cert, key) = node_cert(&c.ca, "edge-a");
    let tls = kubeedge_viaduct::client_tls(c.ca.cert_der(), &cert, &key).unwrap();
    let opts = kubeedge_viaduct::ClientOptions {
        server: c.ws.clone(),
        node_id: "edge-a".into(),
        project_id: "e632aba927ea4ac2b575ec1603d56f10".into(),
        max_message: kubeedge_model::MAX_MESSAGE_SIZE,
        handshake_timeout: scripted::PATIENCE,
        features: vec![lease::FEATURE.into(), "inventory".into(), "not-ours-yet".into()],
    };
    let conn = kubeedge_viaduct::connect(&opts, std::sync::Arc::new(tls)).await.unwrap();
    assert_eq!(conn.features(), [lease::FEATURE, "inventory"], "what CloudHub agreed to");
    let mut a = Edge { conn, backlog: Default::default() };
    let renewed = |l: Lease| l.spec.and_then(|s| s.renew_time).map(|t| t.0.to_string()).unwrap_or_default();

    let b_before = leases.get("edge-b").await.unwrap();
    let reply = a.ask(&lease::renew("edge-b")).await.unwrap();
    assert_eq!(error_code(&reply), Some(403), "{:?}", reply.content);
    let b_after = leases.get("edge-b").await.unwrap();
    assert_eq!(b_after.metadata.resource_version, b_before.metadata.resource_version, "edge-b's lease untouched");

    let reply = a.ask(&lease::renew("edge-a")).await.unwrap();
    assert_eq!(reply.content.as_str().as_deref(), Some("OK"), "{:?}", reply.content);
    assert!(lease::renew_result(&reply).is_ok());
    assert!(reply.header.resource_version.is_empty(), "the reply needs no ACK");
    let mine = leases.get("edge-a").await.unwrap();
    assert_eq!(mine.spec.as_ref().and_then(|s| s.holder_identity.as_deref()), Some("edge-a"));
    assert_eq!(mine.spec.as_ref().and_then(|s| s.lease_duration_seconds), Some(40));
    assert!(renewed(mine).as_str() > "2020-01-01T00:00:00Z", "renewTime advanced");

    leases.delete("edge-a", &Default::default()).await.unwrap();
    let reply = a.ask(&lease::renew("edge-a")).await.unwrap();
    assert_eq!(error_code(&reply), Some(404), "{:?}", reply.content);
    assert!(lease::renew_result(&reply).unwrap_err().is_not_found());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row6_a_token_cannot_take_over_a_node() {
    let mut cloud = Cluster::start(&[]).await;
    let c = &mut cloud;
    // A certificate of edge-b that leaked: issued before the one edge-b connects with.
    let (other, other_key) = node_cert(&c.ca, "edge-b");
    tokio::time::sleep(Duration::from_millis(1100)).await; // a strictly later notBefore
    let (_a, mut b, _) = two_edges(c).await;
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), "kubeedge");
    let token =
        String::from_utf8(secrets.get("tokensecret").await.unwrap().data.unwrap()["tokendata"].0.clone()).unwrap();
    let bearer = format!("Bearer {}", kubeedge_pki::split_token(&token).unwrap().1);
    let (csr, key) = kubeedge_pki::edge_csr("edge-b").unwrap();
    // Connected: the shared token issues nothing for it.
    let (code, body) = join_get(
        &c.https,
        c.ca.cert_der(),
        "/edge.crt",
        &[("NodeName", "edge-b"), ("Authorization", &bearer)],
        csr.clone(),
        None,
    )
    .await;
    assert_eq!(code, 403, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("keadm gettoken --node edge-b"));
    // A never-registered node joins with it as upstream's does.
    let (csr_c, _) = kubeedge_pki::edge_csr("edge-c").unwrap();
    let (code, _) = join_get(
        &c.https,
        c.ca.cert_der(),
        "/edge.crt",
        &[("NodeName", "edge-c"), ("Authorization", &bearer)],
        csr_c,
        None,
    )
    .await;
    assert_eq!(code, 200);

    // A Node an edge registered (and that is not connected) is not free either; one the
    // operator created and no edge used is.
    let nodes: Api<Node> = Api::all(c.client.clone());
    for (name, annotations) in [("edge-d", json!({"kubeedge.io/registered-by-edge": "true"})), ("edge-e", json!({}))] {
        let n = serde_json::from_value(json!({"metadata": {"name": name, "annotations": annotations}})).unwrap();
        nodes.create(&PostParams::default(), &n).await.unwrap();
    }
    for (name, want) in [("edge-d", 403), ("edge-e", 200)] {
        let (csr, _) = kubeedge_pki::edge_csr(name).unwrap();
        let (code, body) = join_get(
            &c.https,
            c.ca.cert_der(),
            "/edge.crt",
            &[("NodeName", name), ("Authorization", &bearer)],
            csr,
            None,
        )
        .await;
        assert_eq!(code, want, "{name}: {}", String::from_utf8_lossy(&body));
    }

    // The older, leaked certificate of edge-b: its session is refused and the real edge-b
    // keeps its own.
    let mut mark = c.cloud.mark();
    match Edge::connect_with(&c.ca, &c.ws, "edge-b", &other, &other_key).await {
        Ok(mut thief) => {
            let got = thief.expect_within("anything", Duration::from_secs(5), |_| true).await;
            assert!(got.is_err(), "the thief's session is closed at once: {got:?}");
        }
        Err(e) => panic!("the handshake completes, then the session is closed: {e}"),
    }
    let line = c.cloud.wait_for_line_since(mark, "Refused a second session for a connected node");
    assert!(line.contains("current_peer") && line.contains("refused_peer"), "{line}");
    create::<Pod>(&c.client, Some("default"), json!({"metadata": {"name": "b-pod-2"}, "spec": {"nodeName": "edge-b", "containers": [{"name": "c", "image": "busybox"}]}})).await;
    b.expect("the real edge-b still gets its pods", |m| m.router.resource == "default/pod/b-pod-2").await.unwrap();

    // The operator's explicit re-join: a token bound to edge-b issues a newer certificate, and
    // that one may replace the session.
    tokio::time::sleep(Duration::from_millis(1100)).await; // a strictly later notBefore
    let bound = c.ca.node_token("edge-b", Duration::from_secs(600));
    let bound = format!("Bearer {}", kubeedge_pki::split_token(&bound).unwrap().1);
    let (code, newer) = join_get(
        &c.https,
        c.ca.cert_der(),
        "/edge.crt",
        &[("NodeName", "edge-b"), ("Authorization", &bound)],
        csr,
        None,
    )
    .await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&newer));
    mark = c.cloud.mark();
    let mut rejoined = Edge::connect_with(&c.ca, &c.ws, "edge-b", &newer, &key).await.unwrap();
    c.cloud.wait_for_line_since(mark, "Replacing the node's previous session.");
    create::<Pod>(&c.client, Some("default"), json!({"metadata": {"name": "b-pod-3"}, "spec": {"nodeName": "edge-b", "containers": [{"name": "c", "image": "busybox"}]}})).await;
    rejoined.expect("the re-joined edge gets pods", |m| m.router.resource == "default/pod/b-pod-3").await.unwrap();
    // The superseded (leaked) certificate cannot rotate into a newer one either; the current can.
    let (csr_r, _) = kubeedge_pki::edge_csr("edge-b").unwrap();
    let (code, body) = join_get(
        &c.https,
        c.ca.cert_der(),
        "/edge.crt",
        &[("NodeName", "edge-b")],
        csr_r.clone(),
        Some((&other, &other_key)),
    )
    .await;
    assert_eq!(code, 403, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("superseded"));
    let (code, _) =
        join_get(&c.https, c.ca.cert_der(), "/edge.crt", &[("NodeName", "edge-b")], csr_r, Some((&newer, &key))).await;
    assert_eq!(code, 200);
    // Its reply lost, the edge asks again with the certificate its live session still uses.
    let (csr_l, _) = kubeedge_pki::edge_csr("edge-b").unwrap();
    let (code, _) =
        join_get(&c.https, c.ca.cert_der(), "/edge.crt", &[("NodeName", "edge-b")], csr_l, Some((&newer, &key))).await;
    assert_eq!(code, 200, "the live session's certificate renews again");
    // A token bound to edge-b is no good for edge-a.
    let (csr_a, _) = kubeedge_pki::edge_csr("edge-a").unwrap();
    let (code, _) = join_get(
        &c.https,
        c.ca.cert_der(),
        "/edge.crt",
        &[("NodeName", "edge-a"), ("Authorization", &bound)],
        csr_a,
        None,
    )
    .await;
    assert_eq!(code, 403);
    // edge-b goes away; the leaked older certificate still may not sit in for it.
    let mark = c.cloud.mark();
    drop(rejoined);
    drop(b);
    c.cloud.wait_for_line_since(mark, "Edge disconnected.");
    let mark = c.cloud.mark();
    if let Ok(mut thief) = Edge::connect_with(&c.ca, &c.ws, "edge-b", &other, &other_key).await {
        let got = thief.expect_within("anything", Duration::from_secs(5), |_| true).await;
        assert!(got.is_err(), "the superseded certificate's session is closed: {got:?}");
    }
    c.cloud.wait_for_line_since(mark, "Refused a session with a superseded certificate");
    cloud.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row7_dynamic_controller_applications_are_authorized() {
    let c = Cluster::start(&[(&["modules", "dynamicController", "enable"], "true")]).await;
    let (mut a, _b, _) = two_edges(&c).await;
    create::<Pod>(
        &c.client,
        None,
        json!({"metadata": {"name": "pending"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
    )
    .await;
    use base64::Engine;
    let b64 = |v: &Value| base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(v).unwrap());
    let app = |key: &str, verb: &str, option: Value, body: Option<Value>| {
        let app = json!({"ID": "x", "Key": key, "Verb": verb, "Nodename": "edge-a", "Option": b64(&option),
            "ReqBody": body.map(|b| b64(&b)), "Subresource": "", "RespBody": null, "Status": "InApplying",
            "Reason": "", "Error": {"ErrStatus": {"metadata": {}}}, "Timestamp": "0001-01-01T00:00:00Z"});
        // As upstream's MetaServer sends it (and ours).
        Message::build("metaserver", "dynamiccontroller", "null", "null", Content::json(&app).unwrap())
    };
    let status_of = |reply: &Message| -> (String, Option<i64>) {
        let v: Value = reply.content.decode().unwrap();
        (
            v["Status"].as_str().unwrap_or_default().to_owned(),
            v.pointer("/Error/ErrStatus/code").and_then(Value::as_i64),
        )
    };
    let evil_pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "evil", "namespace": "default"},
        "spec": {"nodeName": "edge-b", "containers": [{"name": "c", "image": "busybox", "securityContext": {"privileged": true}}]}});
    let patch = json!({"Name": "edge-b", "PatchType": "application/merge-patch+json",
        "Data": b64(&json!({"metadata": {"labels": {"owned": "yes"}}}))});
    let attacks = [
        app("/core/v1/secrets/kubeedge/casecret", "get", json!({}), None),
        app("/core/v1/secrets/kube-system/admin-sa-token", "get", json!({}), None),
        app("/core/v1/secrets/null/null", "list", json!({}), None),
        app("/core/v1/configmaps/default/b-config", "get", json!({}), None),
        app("/core/v1/nodes/null/edge-b", "patch", patch, None),
        app("/core/v1/nodes/null/edge-b", "delete", json!({}), None),
        app("/core/v1/pods/default/null", "create", json!({}), Some(evil_pod)),
        app("/core/v1/pods/default/b-pod", "delete", json!({}), None),
        app("/core/v1/pods/null/null", "list", json!({}), None),
        app("/apps/v1/deployments/default/null", "create", json!({}), Some(json!({"metadata": {"name": "d"}}))),
        app("/core/v1/pods/default/pending", "delete", json!({}), None),
        app(
            "/coordination.k8s.io/v1/leases/kube-node-lease/null",
            "create",
            json!({}),
            Some(json!({"metadata": {"name": "edge-b", "namespace": "kube-node-lease"}})),
        ),
    ];
    for m in attacks {
        let reply = a.ask(&m).await.unwrap();
        let key = m.content.decode::<Value>().unwrap()["Key"].clone();
        assert_eq!(status_of(&reply), ("Rejected".to_owned(), Some(403)), "{key}: {:?}", reply.content);
    }
    // Key and body naming different objects, or a patch type the authorizer cannot read.
    let json_patch = json!({"Name": "edge-a", "PatchType": "application/json-patch+json",
        "Data": b64(&json!([{"op": "add", "path": "/metadata/labels/node-restriction.kubernetes.io~1zone", "value": "x"}]))});
    for m in [
        app("/core/v1/nodes/null/edge-a", "update", json!({}), Some(json!({"metadata": {"name": "edge-b"}}))),
        app("/core/v1/nodes/null/edge-a", "updatestatus", json!({}), Some(json!({"metadata": {"name": "edge-b"}}))),
        app("/core/v1/pods/default/a-pod", "updatestatus", json!({}), Some(json!({"metadata": {"name": "b-pod"}}))),
        app("/core/v1/nodes/null/edge-a", "patch", json_patch, None),
    ] {
        let reply = a.ask(&m).await.unwrap();
        let v: Value = reply.content.decode().unwrap();
        assert_eq!(v["Status"], "Rejected", "{:?}", reply.content);
        assert!(!v["Reason"].as_str().unwrap_or_default().is_empty(), "{v}");
    }
    // NodeRestriction on its own Node: the administrators' taint and label stay.
    let nodes: Api<Node> = Api::all(c.client.clone());
    let admin = json!({"metadata": {"labels": {"node-restriction.kubernetes.io/zone": "z1"}},
        "spec": {"taints": [{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]}});
    nodes.patch("edge-a", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&admin)).await.unwrap();
    let merge =
        |data: Value| json!({"Name": "edge-a", "PatchType": "application/merge-patch+json", "Data": b64(&data)});
    let own_node = |extra: Value| {
        let mut n = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "edge-a",
            "labels": {"node-restriction.kubernetes.io/zone": "z1"}},
            "spec": {"taints": [{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]}});
        for (k, v) in extra.as_object().unwrap() {
            n[k] = v.clone();
        }
        n
    };
    for (what, m) in [
        (
            "an update dropping the taints",
            app("/core/v1/nodes/null/edge-a", "update", json!({}), Some(own_node(json!({"spec": {}})))),
        ),
        (
            "an update dropping the label",
            app(
                "/core/v1/nodes/null/edge-a",
                "update",
                json!({}),
                Some(own_node(json!({"metadata": {"name": "edge-a"}}))),
            ),
        ),
        ("a patch nulling the spec", app("/core/v1/nodes/null/edge-a", "patch", merge(json!({"spec": null})), None)),
        (
            "a patch removing the label",
            app(
                "/core/v1/nodes/null/edge-a",
                "patch",
                merge(json!({"metadata": {"labels": {"node-restriction.kubernetes.io/zone": null}}})),
                None,
            ),
        ),
        (
            "a patch of its certificate record",
            app(
                "/core/v1/nodes/null/edge-a",
                "patch",
                merge(
                    json!({"metadata": {"annotations": {"kubeedge.io/client-certificate-not-after": "2000-01-01T00:00:00Z"}}}),
                ),
                None,
            ),
        ),
        (
            "a create by generateName",
            app("/core/v1/nodes/null/edge-a", "create", json!({}), Some(json!({"metadata": {"generateName": "x-"}}))),
        ),
    ] {
        let reply = a.ask(&m).await.unwrap();
        assert_eq!(status_of(&reply).0, "Rejected", "{what}: {:?}", reply.content);
    }
    let a_node = nodes.get("edge-a").await.unwrap();
    assert_eq!(a_node.spec.unwrap().taints.unwrap().len(), 1);
    assert_eq!(a_node.metadata.labels.unwrap()["node-restriction.kubernetes.io/zone"], "z1");
    assert_eq!(nodes.list(&Default::default()).await.unwrap().items.len(), 2, "no node was created");
    // An update that keeps them is fine.
    let reply = a
        .ask(&app("/core/v1/nodes/null/edge-a", "patch", merge(json!({"metadata": {"labels": {"site": "lab"}}})), None))
        .await
        .unwrap();
    assert_eq!(status_of(&reply).0, "Approved", "{:?}", reply.content);
    let b = nodes.get("edge-b").await.unwrap();
    assert!(!b.metadata.labels.unwrap_or_default().contains_key("owned"));
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    assert!(pods.get_opt("evil").await.unwrap().is_none() && pods.get_opt("b-pod").await.unwrap().is_some());
    assert!(pods.get_opt("pending").await.unwrap().is_some_and(|p| p.metadata.deletion_timestamp.is_none()));
    // Legitimate: its own node, its pods' configmap, discovery, its own pods by field selector.
    let ok = [
        app("/core/v1/nodes/null/edge-a", "get", json!({}), None),
        app("/core/v1/configmaps/default/a-config", "get", json!({}), None),
        app("/core/v1/pods/null/null", "list", json!({"fieldSelector": "spec.nodeName=edge-a"}), None),
        app("/version", "get", json!({}), None),
    ];
    for m in ok {
        let reply = a.ask(&m).await.unwrap();
        let key = m.content.decode::<Value>().unwrap()["Key"].clone();
        assert_eq!(status_of(&reply).0, "Approved", "{key}: {:?}", reply.content);
    }
    c.stop().await;
}

/// Row 5's other half: what the join API issues (`Ca::issue_node_client`, the function behind
/// `/edge.crt`, whose output `cloudhub_join::certificates_are_built_not_copied` checks through
/// the real endpoint) for a CSR asking serverAuth and the right IP SAN cannot serve edges:
/// EdgeHub's client verifies serverAuth and the dialled address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row5_a_node_certificate_cannot_pose_as_cloudhub() {
    let ca = kubeedge_pki::Ca::generate().unwrap();
    let (csr, key) = kubeedge_pki::csr_with(
        &[("O", "system:nodes"), ("CN", "system:node:edge-a")],
        &["127.0.0.1".parse().unwrap()],
        &[kubeedge_pki::ExtKeyUsage::ServerAuth],
    )
    .unwrap();
    // What the join API issues for that CSR.
    let issued = ca.issue_node_client(&csr, "edge-a", Duration::from_secs(3600)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let tls = kubeedge_viaduct::server_tls(ca.cert_der(), &issued, &key).unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let opts = kubeedge_viaduct::ServerOptions::default();
        kubeedge_viaduct::accept(tcp, tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(tls)), &opts).await.is_ok()
    });
    let (cert, ckey) = node_cert(&ca, "edge-b");
    let edge = Edge::connect_with(&ca, &addr, "edge-b", &cert, &ckey).await;
    let err = edge.err().expect("the edge refuses a server certificate without serverAuth");
    assert!(matches!(err, kubeedge_viaduct::Error::Io(_)), "{err:?}");
    assert!(!server.await.unwrap());
}
