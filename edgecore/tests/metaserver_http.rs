//! MetaServer over raw HTTP/1.1 and h2c: discovery documents and content negotiation,
//! streaming-list and Table watches, the Status errors of malformed requests (the server keeps
//! serving), the ways a write can fail, and the loopback rule.

mod metaserver_common;

use std::time::Duration;

use bytes::Bytes;
use edgecore::metamanager::metaserver::application::Status;
use edgecore::metamanager::metaserver::{self, Options, Remote};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use metaserver_common::{Env, answer_status, never_answer};
use serde_json::{Value, json};

type Http = Client<HttpConnector, Full<Bytes>>;

const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";

fn http1() -> Http {
    Client::builder(TokioExecutor::new()).build_http()
}

fn h2c() -> Http {
    Client::builder(TokioExecutor::new()).http2_only(true).build_http()
}

struct Reply {
    status: StatusCode,
    content_type: String,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The `Status` of an error reply, checked for shape and code.
    fn status_error(&self, code: u16) -> Value {
        assert_eq!(self.status.as_u16(), code, "{}", String::from_utf8_lossy(&self.body));
        let s = self.json();
        assert_eq!((s["kind"].as_str(), s["status"].as_str()), (Some("Status"), Some("Failure")), "{s}");
        assert_eq!(s["code"], code, "{s}");
        s
    }
}

async fn call(client: &Http, env: &Env, method: Method, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
    let mut req = Request::builder().method(method).uri(format!("{}{path}", env.url()));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client.request(req.body(Full::new(Bytes::from(body))).expect("request")).await.expect("response");
    let status = resp.status();
    let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Reply { status, content_type, body }
}

async fn get(client: &Http, env: &Env, path: &str) -> Reply {
    call(client, env, Method::GET, path, &[], Vec::new()).await
}

/// The first `n` lines of a streaming response.
async fn watch_lines(client: &Http, env: &Env, path: &str, accept: &str, n: usize) -> Vec<Value> {
    let req = Request::get(format!("{}{path}", env.url())).header("accept", accept).body(Full::new(Bytes::new()));
    let resp = client.request(req.expect("request")).await.expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    let mut lines = Vec::new();
    while lines.len() < n {
        let frame = body.frame().await.expect("more lines").expect("frame");
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
        }
        while let Some(at) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=at).collect();
            lines.push(serde_json::from_slice(&line).expect("a JSON line"));
        }
    }
    lines
}

#[test]
fn discovery_documents() {
    let env = Env::start();
    let c = http1();
    env.rt.block_on(async {
        let api = call(&c, &env, Method::GET, "/api", &[("accept", AGGREGATED)], Vec::new()).await;
        assert!(api.content_type.contains("as=APIGroupDiscoveryList"), "{}", api.content_type);
        let doc = api.json();
        let resources = doc["items"][0]["versions"][0]["resources"].as_array().expect("resources").clone();
        let names: Vec<&str> = resources.iter().filter_map(|r| r["resource"].as_str()).collect();
        assert!(names.contains(&"pods") && names.contains(&"nodes"), "{names:?}");
        let pods = resources.iter().find(|r| r["resource"] == "pods").expect("pods");
        assert_eq!(
            pods["subresources"],
            json!([{"subresource": "status", "verbs": ["get", "patch", "update"],
            "responseKind": {"group": "", "version": "v1", "kind": "Pod"}}])
        );
        let apis = call(&c, &env, Method::GET, "/apis", &[("accept", AGGREGATED)], Vec::new()).await.json();
        assert_eq!(apis["items"][0]["metadata"]["name"], "coordination.k8s.io");

        assert_eq!(get(&c, &env, "/api").await.json()["kind"], "APIVersions");
        assert_eq!(get(&c, &env, "/apis").await.json()["kind"], "APIGroupList");
        assert_eq!(get(&c, &env, "/apis/coordination.k8s.io").await.json()["kind"], "APIGroup");
        let leases = get(&c, &env, "/apis/coordination.k8s.io/v1").await.json();
        assert_eq!(leases["resources"][0]["name"], "leases");
        get(&c, &env, "/apis/apps").await.status_error(404);
        get(&c, &env, "/apis/apps/v1").await.status_error(404);
        assert_eq!(get(&c, &env, "/version").await.json()["major"], "1");
        assert!(get(&c, &env, "/").await.json()["paths"].as_array().is_some_and(|p| !p.is_empty()));
        for health in ["/healthz", "/livez", "/readyz", "/readyz/ping"] {
            let r = get(&c, &env, health).await;
            assert_eq!((r.status, r.body.as_ref()), (StatusCode::OK, &b"ok"[..]), "{health}");
        }
        let doc = get(&c, &env, "/openapi/v3/api/v1").await.json();
        assert!(doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"].is_object());
        get(&c, &env, "/openapi/v3/apis/apps/v1").await.status_error(404);
        call(&c, &env, Method::POST, "/api", &[], Vec::new()).await.status_error(405);
    });
}

#[test]
fn content_negotiation() {
    let env = Env::start();
    let c = http1();
    env.rt.block_on(async {
        let t = call(&c, &env, Method::GET, "/api/v1/pods", &[("accept", TABLE)], Vec::new()).await;
        assert!(t.content_type.contains("as=Table"), "{}", t.content_type);
        let t = t.json();
        assert_eq!((t["kind"].as_str(), t["metadata"]["resourceVersion"].as_str()), (Some("Table"), Some("104")));
        assert_eq!(t["rows"].as_array().map(Vec::len), Some(3));
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");

        let partial = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
        let p = call(&c, &env, Method::GET, "/api/v1/nodes", &[("accept", partial)], Vec::new()).await.json();
        assert_eq!(p["kind"], "PartialObjectMetadataList");
        assert_eq!(p["items"][0]["metadata"]["name"], "edge-1");

        let y = call(
            &c,
            &env,
            Method::GET,
            "/api/v1/namespaces/default/configmaps/settings",
            &[("accept", "application/yaml")],
            Vec::new(),
        )
        .await;
        assert_eq!(y.content_type, "application/yaml");
        assert!(String::from_utf8_lossy(&y.body).contains("mode: edge"));

        let pb = call(
            &c,
            &env,
            Method::GET,
            "/api/v1/pods",
            &[("accept", "application/vnd.kubernetes.protobuf")],
            Vec::new(),
        )
        .await;
        pb.status_error(406);

        // The status subresource reads as the object.
        let s = get(&c, &env, "/api/v1/namespaces/default/pods/web-1/status").await.json();
        assert_eq!(s["status"]["phase"], "Running");
    });
}

#[test]
fn watch_forms() {
    let env = Env::start();
    let c = http1();
    env.rt.block_on(async {
        let path = "/api/v1/namespaces/default/pods?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan";
        let lines = watch_lines(&c, &env, path, "application/json", 3).await;
        let types: Vec<&str> = lines.iter().filter_map(|l| l["type"].as_str()).collect();
        assert_eq!(types, ["ADDED", "ADDED", "BOOKMARK"]);
        assert_eq!(lines[2]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");
        assert_eq!(lines[2]["object"]["metadata"]["resourceVersion"], "104");
        assert_eq!(lines[2]["object"]["kind"], "Pod");

        // kubectl's `get -w`: Tables, the column definitions only in the first.
        let lines = watch_lines(&c, &env, "/api/v1/pods?watch=true", TABLE, 3).await;
        assert_eq!(lines[0]["object"]["kind"], "Table");
        assert!(lines[0]["object"]["columnDefinitions"].as_array().is_some_and(|c| !c.is_empty()));
        assert_eq!(lines[1]["object"]["columnDefinitions"], json!([]));

        // One object's watch by name.
        let lines = watch_lines(&c, &env, "/api/v1/nodes?watch=1&fieldSelector=metadata.name%3Dedge-1", "application/json", 1).await;
        assert_eq!((lines[0]["type"].as_str(), lines[0]["object"]["kind"].as_str()), (Some("ADDED"), Some("Node")));

        // Over h2c as well.
        let lines = watch_lines(&h2c(), &env, "/api/v1/namespaces/kube-system/pods?watch=true", "application/json", 1).await;
        assert_eq!(lines[0]["object"]["metadata"]["name"], "dns");
        let list = get(&h2c(), &env, "/api/v1/pods").await.json();
        assert_eq!(list["kind"], "PodList");
    });
}

#[test]
fn malformed_requests_get_status_errors_and_the_server_keeps_serving() {
    let env = Env::start();
    let c = http1();
    let json_ct = [("content-type", "application/json")];
    let cm = |name: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}).to_string().into_bytes()
    };
    env.rt.block_on(async {
        get(&c, &env, "/api/v1/namespaces/default/pods?labelSelector=a%20in%20(").await.status_error(400);
        get(&c, &env, "/api/v1/pods?limit=ten").await.status_error(400);
        get(&c, &env, "/api/v1/pods?continue=garbage").await.status_error(400);
        get(&c, &env, "/api/v1/pods?watch=true&resourceVersion=abc").await.status_error(400);
        get(&c, &env, "/api/v1/pods?watch=true&sendInitialEvents=true").await.status_error(422);
        let old = get(&c, &env, "/api/v1/pods?resourceVersion=3&resourceVersionMatch=Exact").await.status_error(410);
        assert_eq!(old["reason"], "Expired");
        get(&c, &env, "/api/v1/namespaces/default/pods/web-1/log").await.status_error(404);
        get(&c, &env, "/api/v1/namespaces/default/pods/web-1/exec").await.status_error(404);
        get(&c, &env, "/api/v1/namespaces/default/nodes").await.status_error(404);
        get(&c, &env, "/api/v1/pods/web-1").await.status_error(404);
        get(&c, &env, "/api/v1/namespaces").await.status_error(404);
        get(&c, &env, "/api/v2/pods").await.status_error(404);
        get(&c, &env, "/nonsense/path").await.status_error(404);
        let nf = get(&c, &env, "/api/v1/namespaces/default/pods/nope").await.status_error(404);
        assert_eq!(nf["message"], "pods \"nope\" not found");
        assert_eq!(nf["reason"], "NotFound");

        let pods = "/api/v1/namespaces/default/pods";
        let cms = "/api/v1/namespaces/default/configmaps";
        call(&c, &env, Method::DELETE, pods, &[], Vec::new()).await.status_error(405);
        call(&c, &env, Method::OPTIONS, pods, &[], Vec::new()).await.status_error(405);
        call(&c, &env, Method::POST, &format!("{pods}/web-1"), &json_ct, cm("x")).await.status_error(405);
        call(&c, &env, Method::POST, cms, &[("content-type", "text/plain")], b"hi".to_vec()).await.status_error(415);
        call(&c, &env, Method::POST, cms, &json_ct, b"{not json".to_vec()).await.status_error(400);
        call(&c, &env, Method::POST, cms, &json_ct, b"[]".to_vec()).await.status_error(400);
        call(&c, &env, Method::POST, pods, &json_ct, cm("x")).await.status_error(400); // a ConfigMap posted as a pod
        let wrong_ns =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "other"}});
        call(&c, &env, Method::POST, cms, &json_ct, wrong_ns.to_string().into_bytes()).await.status_error(400);
        let s = call(&c, &env, Method::PUT, &format!("{cms}/settings"), &json_ct, cm("other")).await.status_error(400);
        assert!(s["message"].as_str().is_some_and(|m| m.contains("does not match the name on the URL")), "{s}");
        let patch_path = format!("{pods}/web-1");
        call(&c, &env, Method::PATCH, &patch_path, &json_ct, b"{}".to_vec()).await.status_error(415);
        let merge = [("content-type", "application/merge-patch+json")];
        call(&c, &env, Method::PATCH, &patch_path, &merge, b"{oops".to_vec()).await.status_error(400);
        call(&c, &env, Method::PATCH, &format!("{patch_path}?force=true"), &merge, b"{}".to_vec())
            .await
            .status_error(422);
        let apply = [("content-type", "application/apply-patch+yaml")];
        call(&c, &env, Method::PATCH, &patch_path, &apply, b"metadata: {}".to_vec()).await.status_error(422);

        let big = vec![b'a'; metaserver::MAX_BODY + 1];
        call(&c, &env, Method::POST, cms, &json_ct, big).await.status_error(413);
        // Malformed bodies are refused even while offline, before the offline check.
        assert!(env.received().is_empty());
        let offline = call(&c, &env, Method::POST, cms, &json_ct, cm("x")).await.status_error(503);
        assert_eq!(offline["reason"], "ServiceUnavailable");

        // Still serving, on the same client's connections.
        assert_eq!(get(&c, &env, "/api/v1/pods").await.json()["items"].as_array().map(Vec::len), Some(3));
    });
}

#[test]
fn a_huge_declared_body_is_refused_without_reading_it() {
    use std::io::{Read, Write};
    let env = Env::start();
    let mut s = std::net::TcpStream::connect(env.addr).expect("connect");
    write!(
        s,
        "POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: 1073741824\r\n\r\n{{"
    )
    .expect("write");
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).expect("read");
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    let c = http1();
    env.rt.block_on(async { assert_eq!(get(&c, &env, "/healthz").await.status, StatusCode::OK) });
}

#[test]
fn the_ways_a_write_fails() {
    let env = Env::start_with(Options { application_timeout: Duration::from_millis(300), ..Options::default() }, 16);
    env.set_connected(true);
    let c = http1();
    let cms = "/api/v1/namespaces/default/configmaps";
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}).to_string().into_bytes();
    let ct = [("content-type", "application/json")];
    env.rt.block_on(async {
        env.answer_with(never_answer());
        let s = call(&c, &env, Method::POST, cms, &ct, body.clone()).await.status_error(504);
        assert_eq!(s["reason"], "Timeout");
        env.answer_with(answer_status(Status::Failed, "failed to access cloud Application center"));
        let s = call(&c, &env, Method::POST, cms, &ct, body.clone()).await.status_error(500);
        assert!(s["message"].as_str().is_some_and(|m| m.contains("failed to access cloud")), "{s}");
        env.answer_with(answer_status(Status::Rejected, "not an API error"));
        let s = call(&c, &env, Method::POST, cms, &ct, body.clone()).await.status_error(500);
        assert!(s["message"].as_str().is_some_and(|m| m.contains("not an API error")), "{s}");
        // Approved, but the cloud returned nothing for a create.
        env.answer_with(answer_status(Status::Approved, ""));
        call(&c, &env, Method::POST, cms, &ct, body.clone()).await.status_error(500);
        // A delete needs no object back: a success Status.
        let d = call(&c, &env, Method::DELETE, &format!("{cms}/settings"), &[], Vec::new()).await;
        assert_eq!(d.status, StatusCode::OK);
        let d = d.json();
        assert_eq!((d["kind"].as_str(), d["status"].as_str()), (Some("Status"), Some("Success")));
        assert_eq!(d["details"]["name"], "settings");
        let apps = env.received();
        assert_eq!(apps.len(), 5);
        assert!(apps.iter().all(|a| a.nodename == "edge-1"));
    });

    // No EdgeHub on the bus at all.
    let lonely = Env::start_custom(Options::default(), 16, false);
    lonely.set_connected(true);
    lonely.rt.block_on(async {
        let s = call(&c, &lonely, Method::POST, cms, &ct, body.clone()).await.status_error(503);
        assert!(s["message"].as_str().is_some_and(|m| m.contains("websocket")), "{s}");
    });
}

/// GET `path` over TLS trusting `ca`, with an optional client certificate: the status, or
/// the transport's error.
async fn tls_get(
    addr: std::net::SocketAddr,
    ca: &[u8],
    client: Option<(&[u8], &[u8])>,
    path: &str,
) -> Result<u16, String> {
    use std::sync::Arc;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.to_vec().into()).unwrap();
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let cfg = match client {
        Some((c, k)) => b.with_client_auth_cert(vec![c.to_vec().into()], kubeedge_pki::rustls_key(k)).unwrap(),
        None => b.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", addr.port())).await.map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::get(path).header("host", "metaserver").body(Full::new(Bytes::new())).unwrap();
    send.send_request(req).await.map(|r| r.status().as_u16()).map_err(|e| e.to_string())
}

/// Issue #12 item 4: plain HTTP only on loopback; off loopback, TLS with client certificates
/// from `tlsCaFile`, and a serving certificate that is a server's.
#[test]
fn only_loopback_unless_tls_with_client_certificates() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("dir");
    let store = kubeedge_metastore::Store::open(dir.path().join("db"), Default::default()).expect("store");
    let (changes, _) = tokio::sync::broadcast::channel(16);
    let registry = kubeedge_beehive::Registry::new();
    let supervisor = rt.block_on(async { registry.start(kubeedge_beehive::RestartPolicy::never()) });
    let remote = Remote::new(supervisor.bus(), Default::default(), "edge-1");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.expect("bind");
        let token = tokio_util::sync::CancellationToken::new();
        let refused = metaserver::serve(listener, store.clone(), changes.clone(), remote.clone(), token).await;
        assert!(matches!(refused, Err(metaserver::Error::NotLoopback(_))), "{refused:?}");
        assert!(refused.unwrap_err().to_string().contains("tlsCertFile"));

        let mut cfg = kubeedge_config::edgecore::MetaServer::default();
        assert_eq!(metaserver::bind_address(&cfg).expect("default").to_string(), "127.0.0.1:10550");
        assert!(Options::for_config(&cfg).expect("default").tls.is_none());
        // Off loopback without usable TLS files: an error naming the field.
        cfg.server = "0.0.0.0:10550".into();
        cfg.tls_ca_file = dir.path().join("missing-ca.crt").display().to_string();
        let err = Options::for_config(&cfg).expect_err("no TLS files").to_string();
        assert!(err.contains("modules.metaManager.metaServer.tlsCaFile"), "{err}");

        // A CA, a serving certificate, and a node's (client) certificate.
        let ca = kubeedge_pki::Ca::generate().unwrap();
        let serving = ca.issue_server(&["127.0.0.1".parse().unwrap()], &[]).unwrap();
        let (csr, node_key) = kubeedge_pki::edge_csr("edge-1").unwrap();
        let node_cert = ca.issue_node_client(&csr, "edge-1", Duration::from_secs(3600)).unwrap();
        let write = |name: &str, text: String| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p.display().to_string()
        };
        cfg.tls_ca_file = write("ca.crt", ca.cert_pem());
        cfg.tls_cert_file = write("node.crt", kubeedge_pki::pem("CERTIFICATE", &node_cert));
        cfg.tls_private_key_file = write("node.key", kubeedge_pki::pem("EC PRIVATE KEY", &node_key));
        let err = Options::for_config(&cfg).expect_err("a client certificate cannot serve").to_string();
        assert!(err.contains("tlsCertFile") && err.contains("serverAuth"), "{err}");
        cfg.tls_cert_file = write("server.crt", kubeedge_pki::pem("CERTIFICATE", &serving.cert_der));
        cfg.tls_private_key_file = write("server.key", kubeedge_pki::pem("EC PRIVATE KEY", &serving.key_sec1));
        let opts = Options::for_config(&cfg).expect("TLS");
        assert!(opts.tls.is_some());
        let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let token = tokio_util::sync::CancellationToken::new();
        let server =
            tokio::spawn(metaserver::serve_with(listener, store.clone(), changes, remote, token.clone(), opts));
        // Plain HTTP gets nothing; TLS without a client certificate is refused; with one, served.
        let plain = http1()
            .request(
                Request::get(format!("http://127.0.0.1:{}/api", addr.port())).body(Full::new(Bytes::new())).unwrap(),
            )
            .await;
        assert!(plain.is_err() || plain.is_ok_and(|r| r.status() == StatusCode::BAD_REQUEST));
        let anonymous = tls_get(addr, ca.cert_der(), None, "/api").await;
        assert!(anonymous.is_err(), "{anonymous:?}");
        let stranger_ca = kubeedge_pki::Ca::generate().unwrap();
        let (csr, stranger_key) = kubeedge_pki::edge_csr("edge-1").unwrap();
        let stranger = stranger_ca.issue_node_client(&csr, "edge-1", Duration::from_secs(3600)).unwrap();
        assert!(tls_get(addr, ca.cert_der(), Some((&stranger, &stranger_key)), "/api").await.is_err());
        assert_eq!(tls_get(addr, ca.cert_der(), Some((&node_cert, &node_key)), "/api").await, Ok(200));
        token.cancel();
        server.await.expect("task").expect("served until shutdown");
        cfg.server = "edge.example:10550".into();
        assert!(matches!(metaserver::bind_address(&cfg), Err(metaserver::Error::BadAddress(_))));
    });
    rt.block_on(supervisor.shutdown(Duration::from_secs(5)));
}
