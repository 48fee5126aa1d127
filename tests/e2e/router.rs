//! The Router and ServiceBus end to end with the real daemons: apiserver-lite, cloudcore
//! (CloudHub, EdgeController, Router on a free port with a bearer token), an edgecore (EventBus
//! on a private mosquitto, ServiceBus, MetaServer), an HTTP app on the edge side and one on
//! the cloud side (both real sockets).
//!
//! - The four routes, each with its Rule's `successMessages` checked: rest → eventbus (a POST
//!   arrives on the broker), eventbus → rest (a publish arrives at the cloud app), rest →
//!   servicebus (a POST reaches the edge app with its headers and body; its answer comes back),
//!   servicebus → rest (an edge app's call reaches the cloud app; its answer comes back).
//! - Bad input: no or a wrong token (401), a body over the cap (413), an unknown node (404),
//!   a Rule naming a missing RuleEndpoint (its status says so; its path routes nothing), a
//!   target URL not on the edge's allow-list (403), an edge app that never answers (504
//!   within restTimeout, `failMessages` counted) — and meanwhile a pod still reaches the edge.
//! - The edge offline: the caller gets 503 at once.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, PostParams};
use kubeedge_e2e::httpapp::App;
use kubeedge_e2e::{CloudSide, Mosquitto, wait_until};
use kubeedge_testkit::{Process, free_port, http_request, link, until};
use serde_json::{Value, json};

const NODE: &str = "edge-router";
const TOKEN: &str = "s3cret-router-token";

fn rules_api(cloud: &CloudSide, plural: &str, kind: &str) -> Api<DynamicObject> {
    let ar = kube::api::ApiResource {
        group: "rules.kubeedge.io".into(),
        version: "v1".into(),
        api_version: "rules.kubeedge.io/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    };
    Api::namespaced_with(cloud.client(), "default", &ar)
}

fn create(api: &Api<DynamicObject>, cloud: &CloudSide, obj: Value) {
    let o: DynamicObject = serde_json::from_value(obj).unwrap();
    cloud.rt.block_on(api.create(&PostParams::default(), &o)).unwrap();
}

fn endpoint(name: &str, kind: &str, props: Value) -> Value {
    json!({"apiVersion": "rules.kubeedge.io/v1", "kind": "RuleEndpoint",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"ruleEndpointType": kind, "properties": props}})
}

fn rule(name: &str, source: &str, sr: Value, target: &str, tr: Value) -> Value {
    json!({"apiVersion": "rules.kubeedge.io/v1", "kind": "Rule",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"source": source, "sourceResource": sr, "target": target, "targetResource": tr}})
}

fn status(api: &Api<DynamicObject>, cloud: &CloudSide, name: &str) -> Value {
    cloud.rt.block_on(api.get(name)).map(|r| r.data["status"].clone()).unwrap_or(Value::Null)
}

fn counter(st: &Value, key: &str) -> i64 {
    st[key].as_i64().unwrap_or(0)
}

#[test]
fn rules_route_between_cloud_and_edge_apps() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt_port = free_port();
    let Some(_broker) = Mosquitto::start(dir.path(), mqtt_port) else {
        kubeedge_testkit::skip("rules_route_between_cloud_and_edge_apps", "mosquitto is not installed");
        return;
    };
    let (router_port, sb_port, meta_port) = (free_port(), free_port(), free_port());
    let token_file = dir.path().join("router.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let mut cloud = CloudSide::start_with(
        dir.path(),
        &[
            (&["modules", "router", "enable"], "true".into()),
            (&["modules", "router", "address"], "127.0.0.1".into()),
            (&["modules", "router", "port"], router_port.to_string()),
            (&["modules", "router", "restTimeout"], "3".into()),
            (&["modules", "router", "tokenFile"], format!("\"{}\"", token_file.display())),
        ],
    );
    cloud.proc.wait_for_line("Router REST listener serving.");
    let router: SocketAddr = format!("127.0.0.1:{router_port}").parse().unwrap();
    let edge_bin = kubeedge_testkit::workspace_bin("edgecore");
    let broker = format!("tcp://127.0.0.1:{mqtt_port}");
    let edge_cfg = link::edgecore(
        &edge_bin,
        dir.path(),
        NODE,
        &cloud.token(),
        &cloud.link(),
        &[
            (&["modules", "edgeHub", "heartbeat"], "2".into()),
            (&["modules", "eventBus", "enable"], "true".into()),
            (&["modules", "eventBus", "mqttMode"], "2".into()),
            (&["modules", "eventBus", "mqttServerExternal"], broker.clone()),
            (&["modules", "eventBus", "mqttServerInternal"], broker),
            (&["modules", "serviceBus", "enable"], "true".into()),
            (&["modules", "serviceBus", "port"], sb_port.to_string()),
            (&["modules", "serviceBus", "timeout"], "5".into()),
            (&["modules", "metaManager", "metaServer", "enable"], "true".into()),
            (&["modules", "metaManager", "metaServer", "server"], format!("\"127.0.0.1:{meta_port}\"")),
        ],
    );
    let mut edge = Process::spawn(&edge_bin, &["--config", edge_cfg.to_str().unwrap()]).unwrap();
    edge.wait_for_line("Connected to CloudHub.");
    let servicebus: SocketAddr = format!("127.0.0.1:{sb_port}").parse().unwrap();
    // Edged is off here: the Node is made as it would register itself.
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(cloud.client());
    let node: k8s_openapi::api::core::v1::Node =
        serde_json::from_value(json!({"metadata": {"name": NODE, "labels": {"node-role.kubernetes.io/edge": ""}}}))
            .unwrap();
    cloud.rt.block_on(nodes.create(&PostParams::default(), &node)).unwrap();
    let (edge_app, cloud_app) = (App::start(), App::start());

    // An MQTT client on the edge's broker.
    let got: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let mut opts = rumqttc::MqttOptions::new(format!("router-e2e-{}", std::process::id()), "127.0.0.1", mqtt_port);
    opts.set_keep_alive(Duration::from_secs(5));
    let (mqtt, mut events) = rumqttc::AsyncClient::new(opts, 64);
    {
        let (sink, sub) = (got.clone(), mqtt.clone());
        cloud.rt.spawn(async move {
            loop {
                match events.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                        let _ = sub.subscribe("topic-test/#", rumqttc::QoS::AtLeastOnce).await;
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        sink.lock().unwrap().push((p.topic.clone(), String::from_utf8_lossy(&p.payload).into_owned()));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
    }

    let endpoints = rules_api(&cloud, "ruleendpoints", "RuleEndpoint");
    let rules = rules_api(&cloud, "rules", "Rule");
    create(&endpoints, &cloud, endpoint("rest-test", "rest", json!({})));
    create(&endpoints, &cloud, endpoint("eventbus-test", "eventbus", json!({})));
    let app_port = edge_app.addr.port().to_string();
    create(&endpoints, &cloud, endpoint("servicebus-test", "servicebus", json!({"service_port": app_port})));
    let cloud_echo = format!("http://{}/echo", cloud_app.addr);
    create(
        &rules,
        &cloud,
        rule("rest-eventbus", "rest-test", json!({"path": "/ccc"}), "eventbus-test", json!({"topic": "topic-test"})),
    );
    create(
        &rules,
        &cloud,
        rule(
            "eventbus-rest",
            "eventbus-test",
            json!({"topic": "test", "node_name": NODE}),
            "rest-test",
            json!({"resource": cloud_echo}),
        ),
    );
    create(
        &rules,
        &cloud,
        rule("rest-servicebus", "rest-test", json!({"path": "/ddd"}), "servicebus-test", json!({"path": "/url"})),
    );
    create(
        &rules,
        &cloud,
        rule("rest-slow", "rest-test", json!({"path": "/slow"}), "servicebus-test", json!({"path": "/slow"})),
    );
    create(
        &rules,
        &cloud,
        rule(
            "servicebus-rest",
            "servicebus-test",
            json!({"target_url": cloud_echo, "node_name": NODE}),
            "rest-test",
            json!({"resource": cloud_echo}),
        ),
    );
    create(
        &rules,
        &cloud,
        rule("dangling", "rest-test", json!({"path": "/nowhere"}), "missing-endpoint", json!({"topic": "t"})),
    );
    let auth = format!("Bearer {TOKEN}");
    let post = |path: &str, body: &[u8], headers: &[(&str, &str)]| {
        let mut h = vec![("Authorization", auth.as_str())];
        h.extend_from_slice(headers);
        http_request(router, "POST", path, &h, body).unwrap()
    };

    // rest → eventbus (posted again until the broker has it: the MQTT client may still be
    // subscribing).
    let on_broker = |topic: &str, payload: &str| got.lock().unwrap().iter().any(|(t, p)| t == topic && p == payload);
    until("the rest → eventbus rule and the body on the broker", || {
        let (code, _, body) = post(&format!("/{NODE}/default/ccc"), b"Hello World!", &[]);
        if code != 404 {
            assert_eq!((code, body.as_str()), (200, "message delivered"));
        }
        std::thread::sleep(Duration::from_millis(200));
        on_broker("topic-test", "Hello World!").then_some(())
    });
    until("the tail of the path as a sub-topic", || {
        let (code, _, _) = post(&format!("/{NODE}/default/ccc/sub"), b"deeper", &[]);
        assert_eq!(code, 200);
        std::thread::sleep(Duration::from_millis(200));
        on_broker("topic-test/sub", "deeper").then_some(())
    });
    // No way out of the rule's path, no wildcards in a topic to publish on.
    for bad in ["/ccc/../x", "/ccc/%2e%2e/x", "/ccc/a%2Fb", "/ccc/+"] {
        let (code, _, body) = post(&format!("/{NODE}/default{bad}"), b"x", &[]);
        assert_eq!(code, 400, "{bad}: {body}");
    }

    // eventbus → rest: the edge subscribed `default/test`; a publish reaches the cloud app.
    until("a publish on default/test to reach the cloud app", || {
        cloud.rt.block_on(mqtt.publish("default/test", rumqttc::QoS::AtLeastOnce, false, "Hello World!")).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        cloud_app.find(|s| s.path == "/echo" && s.body == "Hello World!")
    });

    // rest → servicebus: the edge app gets the body and the caller's headers (not the token),
    // and its answer is the caller's.
    let (code, head, body) = post(&format!("/{NODE}/default/ddd"), b"hi edge", &[("user", "u1")]);
    assert_eq!(code, 201, "{head}\n{body}");
    assert_eq!(body, "Reply from server: hi edge [user]: u1");
    assert!(head.to_ascii_lowercase().contains("x-app: edge"), "{head}");
    let seen = edge_app.find(|s| s.path == "/url").unwrap();
    assert_eq!(seen.method, "POST");
    assert!(!seen.headers.iter().any(|(k, _)| k == "authorization"), "the router's token reached the edge app");

    // servicebus → rest: an edge app's call of the allowed URL gets the cloud app's answer.
    let call = json!({"method": "POST", "targetURL": cloud_echo, "payload": "from the edge"}).to_string();
    let reply: Value = until("the edge's allow-list to have the target URL", || {
        let (code, _, body) = http_request(servicebus, "POST", "/", &[], call.as_bytes()).ok()?;
        (code == 200).then(|| serde_json::from_str(&body).unwrap())
    });
    assert_eq!((reply["code"].as_i64(), reply["body"].as_str()), (Some(200), Some("Hello World")), "{reply}");
    assert!(cloud_app.find(|s| s.body == "from the edge").is_some(), "the payload reached the cloud app");

    // Bad input. No token, a wrong one: 401.
    let (code, _, _) = http_request(router, "POST", &format!("/{NODE}/default/ccc"), &[], b"x").unwrap();
    assert_eq!(code, 401);
    let (code, _, _) =
        http_request(router, "POST", &format!("/{NODE}/default/ccc"), &[("Authorization", "Bearer nope")], b"x")
            .unwrap();
    assert_eq!(code, 401);
    // A body over the cap.
    let big = vec![b'a'; cloudcore::router::rest::MAX_BODY + 1];
    let (code, _, _) = post(&format!("/{NODE}/default/ccc"), &big, &[]);
    assert_eq!(code, 413);
    // An unknown node; a path no rule has.
    let (code, _, body) = post("/no-such-node/default/ccc", b"x", &[]);
    assert_eq!(code, 404, "{body}");
    let (code, _, _) = post(&format!("/{NODE}/default/unrouted"), b"x", &[]);
    assert_eq!(code, 404);
    // A Rule naming a missing RuleEndpoint: it routes nothing and its status says why.
    let (code, _, _) = post(&format!("/{NODE}/default/nowhere"), b"x", &[]);
    assert_eq!(code, 404);
    wait_until("the dangling rule's status to name the missing endpoint", || {
        status(&rules, &cloud, "dangling")["errors"].to_string().contains("missing-endpoint has not been created")
    });
    // A target URL not on the edge's allow-list.
    let other = json!({"method": "POST", "targetURL": "http://127.0.0.1:1/evil", "payload": ""}).to_string();
    let (code, _, body) = http_request(servicebus, "POST", "/", &[], other.as_bytes()).unwrap();
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("is not allowed"), "{body}");

    // An edge app that never answers: 504 within restTimeout (3 s), while a pod still reaches
    // the edge.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(cloud.client(), "default");
    let slow = std::thread::spawn(move || {
        let started = Instant::now();
        let r = http_request(
            router,
            "POST",
            &format!("/{NODE}/default/slow"),
            &[("Authorization", &format!("Bearer {TOKEN}"))],
            b"wait",
        )
        .unwrap();
        (r.0, started.elapsed())
    });
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({"metadata": {"name": "during-slow"},
        "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "busybox"}]}}))
    .unwrap();
    cloud.rt.block_on(pods.create(&PostParams::default(), &pod)).unwrap();
    let meta: SocketAddr = format!("127.0.0.1:{meta_port}").parse().unwrap();
    let deadline = Instant::now() + kubeedge_testkit::patience();
    while kubeedge_testkit::http_get(meta, "/api/v1/namespaces/default/pods/during-slow").map(|r| r.0).ok() != Some(200)
    {
        let log = edge.log();
        assert!(
            Instant::now() < deadline,
            "the pod did not reach the edge while a call hung:\n{}",
            &log[log.len().saturating_sub(6000)..]
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, took) = slow.join().unwrap();
    assert_eq!(code, 504);
    assert!(took < Duration::from_secs(10), "the timeout took {took:?}");

    // The counters.
    wait_until("every route's successMessages", || {
        ["rest-eventbus", "eventbus-rest", "rest-servicebus", "servicebus-rest"]
            .iter()
            .all(|r| counter(&status(&rules, &cloud, r), "successMessages") >= 1)
    });
    assert!(counter(&status(&rules, &cloud, "rest-eventbus"), "successMessages") >= 2);
    wait_until("the slow rule's failMessages", || counter(&status(&rules, &cloud, "rest-slow"), "failMessages") >= 1);

    // The edge offline: told at once.
    edge.signal("TERM");
    assert!(edge.wait_exit(kubeedge_testkit::patience()).is_some_and(|s| s.success()), "{}", edge.log());
    let before = counter(&status(&rules, &cloud, "rest-eventbus"), "failMessages");
    let (code, _, body) = until("cloudcore to see the edge gone", || {
        let r = post(&format!("/{NODE}/default/ccc"), b"late", &[]);
        (r.0 != 200).then_some(r)
    });
    assert_eq!(code, 503, "{body}");
    wait_until("the offline failure counted", || {
        counter(&status(&rules, &cloud, "rest-eventbus"), "failMessages") > before
    });
    cloud.stop();
}

/// One request over TLS to `addr`, with a client certificate or none: the status code.
fn tls_status(rt: &tokio::runtime::Runtime, addr: SocketAddr, tls: rustls::ClientConfig, headers: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let mut s = tokio_rustls::TlsConnector::from(Arc::new(tls)).connect(name, tcp).await.unwrap();
        let req = format!("POST /{NODE}/default/nothing HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}Content-Length: 0\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
    })
}

/// HTTPS with client certificates: a certificate the configured CA signed is a credential, as
/// is the token; neither is 401; plain HTTP gets no answer.
#[test]
fn tls_client_certificates_are_credentials() {
    use kubeedge_pki::{Ca, ExtKeyUsage, pem};
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::generate().unwrap();
    let server = ca.issue_server(&["127.0.0.1".parse().unwrap()], &[]).unwrap();
    let (csr, client_key) = kubeedge_pki::csr_with_subject(&[("CN", "cloud-app")]).unwrap();
    let client_cert = ca.sign_csr(&csr, 1, &[ExtKeyUsage::ClientAuth]).unwrap();
    let other_ca = Ca::generate().unwrap();
    let (csr, stranger_key) = kubeedge_pki::csr_with_subject(&[("CN", "stranger")]).unwrap();
    let stranger_cert = other_ca.sign_csr(&csr, 1, &[ExtKeyUsage::ClientAuth]).unwrap();
    let write = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        format!("\"{}\"", p.display())
    };
    let (crt, key, ca_file) = (
        write("router.crt", pem("CERTIFICATE", &server.cert_der)),
        write("router.key", pem("EC PRIVATE KEY", &server.key_sec1)),
        write("ca.crt", ca.cert_pem()),
    );
    let token = write("router.token", TOKEN.to_owned());
    let port = free_port();
    let mut cloud = CloudSide::start_with(
        dir.path(),
        &[
            (&["modules", "router", "enable"], "true".into()),
            (&["modules", "router", "address"], "127.0.0.1".into()),
            (&["modules", "router", "port"], port.to_string()),
            (&["modules", "router", "tlsCertFile"], crt),
            (&["modules", "router", "tlsPrivateKeyFile"], key),
            (&["modules", "router", "tlsCAFile"], ca_file),
            (&["modules", "router", "tokenFile"], token),
        ],
    );
    cloud.proc.wait_for_line("Router REST listener serving.");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let roots = || {
        let mut r = rustls::RootCertStore::empty();
        r.add(rustls::pki_types::CertificateDer::from(ca.cert_der().to_vec())).unwrap();
        r
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let anonymous = || {
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots())
            .with_no_client_auth()
    };
    let with_cert = |cert: &[u8], key: &[u8]| {
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots())
            .with_client_auth_cert(vec![cert.to_vec().into()], kubeedge_pki::rustls_key(key))
            .unwrap()
    };
    // Past authentication, the path has no rule: 404.
    assert_eq!(tls_status(&cloud.rt, addr, with_cert(&client_cert, &client_key), ""), 404);
    assert_eq!(tls_status(&cloud.rt, addr, anonymous(), &format!("Authorization: Bearer {TOKEN}\r\n")), 404);
    assert_eq!(tls_status(&cloud.rt, addr, anonymous(), ""), 401);
    // Another CA's certificate fails the handshake: no HTTP status at all.
    assert_eq!(tls_status(&cloud.rt, addr, with_cert(&stranger_cert, &stranger_key), ""), 0);
    // Plain HTTP to the TLS listener gets no HTTP answer.
    assert!(http_request(addr, "POST", &format!("/{NODE}/default/nothing"), &[], b"").is_err());
    cloud.stop();
}
