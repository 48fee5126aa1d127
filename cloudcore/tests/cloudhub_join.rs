//! CloudHub's PKI in the Kubernetes API and its join API on a real TLS socket, with
//! apiserver-lite as the cluster.

mod scripted;

use std::sync::Arc;
use std::time::Duration;

use cloudcore::cloudhub::certs::{self, Sources};
use cloudcore::cloudhub::https::{self, JoinApi};
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::{Api, PostParams};
use kubeedge_pki::{Ca, edge_csr};
use tokio_util::sync::CancellationToken;

async fn cluster() -> (apiserver_lite::ApiServer, kube::Client) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = apiserver_lite::ApiServer::start(listener, Default::default()).await.unwrap();
    let kc = kube::config::Kubeconfig::from_yaml(&server.kubeconfig()).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
    let client = kube::Client::try_from(cfg).unwrap();
    (server, client)
}

fn sources() -> Sources {
    Sources { advertise: vec!["127.0.0.1".parse().unwrap()], ..Default::default() }
}

#[tokio::test]
async fn two_cloudcores_starting_together_share_one_ca() {
    let (_server, client) = cluster().await;
    let src = sources();
    let (a, b) = tokio::join!(certs::load_or_create(&client, &src), certs::load_or_create(&client, &src));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.ca.hash(), b.ca.hash(), "one CA, whoever won the race");
    assert_eq!(a.server.cert_der, b.server.cert_der);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "kubeedge");
    let stored = secrets.get("casecret").await.unwrap();
    assert_eq!(stored.data.unwrap()["cadata"].0, a.ca.cert_der());
    // A restart loads the same CA from the Secret.
    let again = certs::load_or_create(&client, &sources()).await.unwrap();
    assert_eq!(again.ca.hash(), a.ca.hash());
    let token = certs::refresh_token(&client, &a.ca, Duration::from_secs(12 * 3600)).await.unwrap();
    let stored = secrets.get("tokensecret").await.unwrap();
    assert_eq!(stored.data.unwrap()["tokendata"].0, token.as_bytes());
    let (hash, _) = kubeedge_pki::split_token(&token).unwrap();
    assert_eq!(hash, a.ca.hash());
}

struct Join {
    addr: String,
    ca: Arc<Ca>,
    token: String,
    stop: CancellationToken,
    client: kube::Client,
    _server: apiserver_lite::ApiServer,
    _sup: kubeedge_beehive::Supervisor,
}

async fn join_api(permissive: bool) -> Join {
    let (server, client) = cluster().await;
    let pki = certs::load_or_create(&client, &sources()).await.unwrap();
    let token = certs::refresh_token(&client, &pki.ca, Duration::from_secs(3600)).await.unwrap();
    let tls = https::tls_config(&pki.ca, &pki.server).unwrap();
    let ca = Arc::new(pki.ca);
    let sup = kubeedge_beehive::Registry::new().start(Default::default());
    let hub = cloudcore::cloudhub::session::Hub::new(sup.bus(), 10, Duration::from_secs(30), None);
    let api =
        Arc::new(JoinApi { ca: ca.clone(), signing_days: 365, permissive, client: client.clone(), hub, bus: None });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stop = CancellationToken::new();
    tokio::spawn(https::serve(listener, tls, api, stop.clone()));
    Join { addr, ca, token, stop, client, _server: server, _sup: sup }
}

async fn get(
    j: &Join,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
    cert: Option<(&[u8], &[u8])>,
) -> (u16, Vec<u8>) {
    scripted::join_get(&j.addr, j.ca.cert_der(), path, headers, body, cert).await
}

#[tokio::test]
async fn ca_edge_cert_and_node_check() {
    let j = join_api(false).await;
    let (code, body) = get(&j, "/ca.crt", &[], vec![], None).await;
    assert_eq!((code, body.as_slice()), (200, j.ca.cert_der()));

    let (_, jwt) = kubeedge_pki::split_token(&j.token).unwrap();
    let bearer = format!("Bearer {jwt}");
    let (csr, key) = edge_csr("edge-1").unwrap();
    // Go's canonical spelling of the header, as a v1.15 edge sends it.
    let (code, cert) =
        get(&j, "/edge.crt", &[("Nodename", "edge-1"), ("Authorization", &bearer)], csr.clone(), None).await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&cert));
    assert_eq!(kubeedge_pki::subject(&cert).unwrap().0, "system:node:edge-1");
    assert!(kubeedge_pki::verify_signed_by(&cert, j.ca.cert_der()));

    // No credentials, a forged token, a CSR for another node, a huge body.
    assert_eq!(get(&j, "/edge.crt", &[("NodeName", "edge-1")], csr.clone(), None).await.0, 401);
    let forged =
        format!("Bearer {}", Ca::generate().unwrap().token(Duration::from_secs(60)).split_once('.').unwrap().1);
    assert_eq!(
        get(&j, "/edge.crt", &[("NodeName", "edge-1"), ("Authorization", &forged)], csr.clone(), None).await.0,
        401
    );
    assert_eq!(
        get(&j, "/edge.crt", &[("NodeName", "edge-2"), ("Authorization", &bearer)], csr.clone(), None).await.0,
        403
    );
    let huge = vec![0u8; https::MAX_BODY + 1];
    assert_eq!(get(&j, "/edge.crt", &[("NodeName", "edge-1"), ("Authorization", &bearer)], huge, None).await.0, 413);
    assert_eq!(
        get(&j, "/edge.crt", &[("NodeName", "edge-1"), ("Authorization", &bearer)], b"junk".to_vec(), None).await.0,
        400
    );

    // Rotation: the current certificate authenticates; it cannot renew another node.
    let (csr2, _) = edge_csr("edge-1").unwrap();
    let (code, _) = get(&j, "/edge.crt", &[("NodeName", "edge-1")], csr2, Some((&cert, &key))).await;
    assert_eq!(code, 200);
    let (csr3, _) = edge_csr("edge-3").unwrap();
    assert_eq!(get(&j, "/edge.crt", &[("NodeName", "edge-3")], csr3, Some((&cert, &key))).await.0, 403);

    // keadm's pre-join check.
    assert_eq!(get(&j, "/node/edge-1", &[], vec![], None).await.0, 404);
    let nodes: Api<Node> = Api::all(j.client.clone());
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata":{"name":"edge-1"}})).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(get(&j, "/node/edge-1", &[], vec![], None).await, (200, b"Node found".to_vec()));
    assert_eq!(get(&j, "/nope", &[], vec![], None).await.0, 404);
    j.stop.cancel();
}

#[tokio::test]
async fn a_v1_15_edge_joins_in_permissive_mode_only() {
    use base64::Engine;
    let req: serde_json::Value = serde_json::from_slice(
        &std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/upstream/edge-crt-request.json"))
            .unwrap(),
    )
    .unwrap();
    let csr = base64::engine::general_purpose::STANDARD.decode(req["csr"]["der_base64"].as_str().unwrap()).unwrap();
    for (permissive, want) in [(false, 403), (true, 200)] {
        let j = join_api(permissive).await;
        let bearer = format!("Bearer {}", kubeedge_pki::split_token(&j.token).unwrap().1);
        let (code, body) =
            get(&j, "/edge.crt", &[("Nodename", "edge-capture"), ("Authorization", &bearer)], csr.clone(), None).await;
        assert_eq!(code, want, "permissive={permissive}");
        if permissive {
            // The certificate is the node's, whatever the old CSR said.
            let info = kubeedge_pki::cert_info(&body).unwrap();
            assert_eq!(info.cn, "system:node:edge-capture");
        } else {
            let why = String::from_utf8_lossy(&body);
            assert!(why.contains("nodeIdentityCheck: false"), "the refusal names the option: {why}");
        }
        j.stop.cancel();
    }
}

/// Issue #12 rows 4 and 5: whatever the CSR asks (extra organizations such as system:masters,
/// server usage, IP SANs), the certificate is built from its public key alone.
#[tokio::test]
async fn certificates_are_built_not_copied() {
    let j = join_api(false).await;
    let bearer = format!("Bearer {}", kubeedge_pki::split_token(&j.token).unwrap().1);
    let (csr, key) = kubeedge_pki::csr_with(
        &[("O", "system:nodes"), ("O", "system:masters"), ("CN", "system:node:edge-x")],
        &["127.0.0.1".parse().unwrap(), "10.0.0.1".parse().unwrap()],
        &[kubeedge_pki::ExtKeyUsage::ServerAuth, kubeedge_pki::ExtKeyUsage::ClientAuth],
    )
    .unwrap();
    let asks_server = [("NodeName", "edge-x"), ("Authorization", bearer.as_str()), ("ExtKeyUsages", "[1,2]")];
    let (code, cert) = get(&j, "/edge.crt", &asks_server, csr, None).await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&cert));
    let info = kubeedge_pki::cert_info(&cert).unwrap();
    assert_eq!(info.cn, "system:node:edge-x");
    assert_eq!(info.orgs, ["system:nodes"], "no system:masters");
    assert!(info.client_auth && !info.server_auth, "client use only: {info:?}");
    assert!(info.sans.is_empty(), "no SANs: {info:?}");
    assert!(!info.is_ca);
    // The same holds for a rotation.
    let (csr2, _) = kubeedge_pki::csr_with(
        &[("O", "system:nodes"), ("CN", "system:node:edge-x")],
        &["127.0.0.1".parse().unwrap()],
        &[kubeedge_pki::ExtKeyUsage::ServerAuth],
    )
    .unwrap();
    let (code, rotated) =
        get(&j, "/edge.crt", &[("NodeName", "edge-x"), ("ExtKeyUsages", "[1]")], csr2, Some((&cert, &key))).await;
    assert_eq!(code, 200);
    let info = kubeedge_pki::cert_info(&rotated).unwrap();
    assert!(info.client_auth && !info.server_auth && info.sans.is_empty(), "{info:?}");
    j.stop.cancel();
}
