//! An edge joins with the token alone against cloudcore's real join API (apiserver-lite as the
//! cluster): it checks the CA against the token, gets its certificate, writes its files.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use cloudcore::cloudhub::certs::{self, Sources};
use cloudcore::cloudhub::https::{self, JoinApi};
use edgecore::edgehub::certs::{CertPaths, Error, bootstrap, needs_bootstrap};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn joins_with_the_token_only() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = apiserver_lite::ApiServer::start(listener, Default::default()).await.unwrap();
    let kc = kube::config::Kubeconfig::from_yaml(&server.kubeconfig()).unwrap();
    let client =
        kube::Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap()).unwrap();
    let pki = certs::load_or_create(
        &client,
        &Sources { advertise: vec!["127.0.0.1".parse().unwrap()], ..Default::default() },
    )
    .await
    .unwrap();
    let token = certs::refresh_token(&client, &pki.ca, Duration::from_secs(3600)).await.unwrap();
    let tls = https::tls_config(&pki.ca, &pki.server).unwrap();
    let ca = Arc::new(pki.ca);
    let sup = kubeedge_beehive::Registry::new().start(Default::default());
    let hub = cloudcore::cloudhub::session::Hub::new(sup.bus(), 10, Duration::from_secs(30), None);
    let api = Arc::new(JoinApi {
        ca: ca.clone(),
        signing_days: 365,
        permissive: false,
        client: client.clone(),
        hub,
        bus: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(https::serve(listener, tls, api, stop.clone()));

    let dir = tempfile::tempdir().unwrap();
    let paths = CertPaths {
        ca: dir.path().join("ca/rootCA.crt"),
        cert: dir.path().join("certs/server.crt"),
        key: dir.path().join("certs/server.key"),
    };
    assert!(needs_bootstrap(&paths, "edge-1").await);
    bootstrap(&url, &token, "edge-1", &paths).await.unwrap();
    assert!(!needs_bootstrap(&paths, "edge-1").await);
    assert!(needs_bootstrap(&paths, "edge-2").await, "another node's certificate does not count");
    let ca_pem = std::fs::read_to_string(&paths.ca).unwrap();
    assert_eq!(kubeedge_pki::parse_pem(&ca_pem).unwrap().1, ca.cert_der());
    let key = std::fs::read_to_string(&paths.key).unwrap();
    assert!(key.starts_with("-----BEGIN EC PRIVATE KEY-----"));
    assert_eq!(std::fs::metadata(&paths.key).unwrap().permissions().mode() & 0o777, 0o600);
    let (_, cert) = kubeedge_pki::parse_pem(&std::fs::read_to_string(&paths.cert).unwrap()).unwrap();
    assert!(kubeedge_pki::verify_signed_by(&cert, ca.cert_der()));
    // Built, not copied: the node's identity, a client certificate only.
    let info = kubeedge_pki::cert_info(&cert).unwrap();
    assert_eq!((info.cn.as_str(), info.orgs.as_slice()), ("system:node:edge-1", &["system:nodes".to_owned()][..]));
    assert!(info.client_auth && !info.server_auth && info.sans.is_empty() && !info.is_ca, "{info:?}");

    // Once the node is registered, upstream's shared token cannot issue it another certificate
    // (re-join after a reset); a token bound to the node can, and only for that node.
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    let node = serde_json::from_value(
        serde_json::json!({"metadata": {"name": "edge-1", "annotations": {https::REGISTERED_BY_EDGE: "true"}}}),
    )
    .unwrap();
    nodes.create(&Default::default(), &node).await.unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let fresh = CertPaths {
        ca: other_dir.path().join("ca.crt"),
        cert: other_dir.path().join("node.crt"),
        key: other_dir.path().join("node.key"),
    };
    let refused = bootstrap(&url, &token, "edge-1", &fresh).await;
    assert!(matches!(&refused, Err(Error::Refused { status: 403, .. })), "{refused:?}");
    let wrong = ca.node_token("edge-2", Duration::from_secs(60));
    assert!(matches!(bootstrap(&url, &wrong, "edge-1", &fresh).await, Err(Error::Refused { status: 403, .. })));
    let bound = ca.node_token("edge-1", Duration::from_secs(60));
    bootstrap(&url, &bound, "edge-1", &fresh).await.unwrap();
    let n = nodes.get("edge-1").await.unwrap();
    let expiry = n.metadata.annotations.unwrap_or_default();
    assert!(expiry.contains_key(https::CERT_NOT_AFTER), "the issue is recorded on the Node: {expiry:?}");
    // A node never registered is free for the shared token (first join).
    bootstrap(&url, &token, "edge-3", &fresh).await.unwrap();

    // A token for another cloud: the CA does not match, nothing is sent.
    let other = kubeedge_pki::Ca::generate().unwrap().token(Duration::from_secs(60));
    assert!(matches!(bootstrap(&url, &other, "edge-1", &paths).await, Err(Error::CaMismatch { .. })));
    // The right CA hash with a forged JWT: refused by the cloud.
    let forged = format!("{}.{}", ca.hash(), other.split_once('.').unwrap().1);
    assert!(matches!(bootstrap(&url, &forged, "edge-1", &paths).await, Err(Error::Refused { status: 401, .. })));
    assert!(matches!(bootstrap("http://x", &token, "edge-1", &paths).await, Err(Error::Url(_))));
    stop.cancel();
}
