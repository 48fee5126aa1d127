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
    let api = Arc::new(JoinApi { ca: ca.clone(), signing_days: 365, permissive: false, client });
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

    // A token for another cloud: the CA does not match, nothing is sent.
    let other = kubeedge_pki::Ca::generate().unwrap().token(Duration::from_secs(60));
    assert!(matches!(bootstrap(&url, &other, "edge-1", &paths).await, Err(Error::CaMismatch { .. })));
    // The right CA hash with a forged JWT: refused by the cloud.
    let forged = format!("{}.{}", ca.hash(), other.split_once('.').unwrap().1);
    assert!(matches!(bootstrap(&url, &forged, "edge-1", &paths).await, Err(Error::Refused { status: 401, .. })));
    assert!(matches!(bootstrap("http://x", &token, "edge-1", &paths).await, Err(Error::Url(_))));
    stop.cancel();
}
