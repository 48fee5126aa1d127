//! Issue #19: the lean HTTP/2 path the node Lease renewals take (`cloudcore::kubeclient::lean`),
//! against an HTTP/2 server with real TLS that records what it gets: requests started together
//! share one connection, carry the server's URL and kube-rs's authentication and headers, an API error comes
//! back as the API's `Status`, and a closed connection is noticed and made again.

mod fake_h2;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cloudcore::kubeclient::lean::{LeanClient, LeanConn, LeanError, Payload};
use fake_h2::{config, server, server_tls};
use http::{Method, Request, StatusCode};
use tokio::net::TcpListener;

/// Drives `conn` until `answer` is ready; the connection ending first fails the test.
async fn answered<T>(conn: &mut LeanConn, answer: impl std::future::Future<Output = T>) -> T {
    tokio::select! {
        r = answer => r,
        why = conn.drive() => panic!("the connection ended: {why:?}"),
    }
}

fn patch(name: &str) -> Request<Payload> {
    Request::builder()
        .method(Method::PATCH)
        .uri(format!("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}"))
        .header("content-type", "application/merge-patch+json")
        .body(Payload(Bytes::from_static(br#"{"spec":{"renewTime":"2026-12-04T12:00:00.000000Z"}}"#)))
        .unwrap()
}

#[tokio::test]
async fn requests_share_one_http2_connection_and_a_closed_one_is_made_again() {
    let ca = kubeedge_pki::Ca::generate().unwrap();
    let (port, seen) = server(&ca).await;
    let lean = LeanClient::from_config(&config(port, &ca)).unwrap();
    let mut conn = lean.connect().await.unwrap();

    // Three renewals and one of a Lease that is gone, started together.
    let mut answers = Vec::new();
    for name in ["edge-1", "edge-2", "edge-3", "gone"] {
        assert!(conn.has_room().unwrap());
        answers.push(conn.request(patch(name), Duration::from_secs(10)));
    }
    let all = futures::future::join_all(answers);
    let results = answered(&mut conn, all).await;
    for r in &results[..3] {
        assert_eq!(r.as_ref().unwrap(), &StatusCode::OK);
    }
    match &results[3] {
        Err(LeanError::Api(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (404, "NotFound"));
            assert_eq!(s.details.as_ref().map(|d| d.name.as_str()), Some("gone"));
        }
        other => panic!("expected the API's 404: {other:?}"),
    }
    // kube-rs's 404 as the callers see it.
    let err = results.into_iter().nth(3).unwrap().unwrap_err().into_kube();
    assert!(matches!(&err, kube::Error::Api(s) if s.code == 404), "{err:?}");
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 4);
        for s in seen.iter() {
            assert_eq!(s.connection, 0, "one connection for all: {seen:?}");
            assert_eq!(s.method, Method::PATCH);
            assert!(
                s.path.starts_with("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/"),
                "{}",
                s.path
            );
            assert_eq!(s.authorization, "Bearer the-token");
            assert_eq!(s.content_type, "application/merge-patch+json");
            assert_eq!(s.body, br#"{"spec":{"renewTime":"2026-12-04T12:00:00.000000Z"}}"#);
        }
    }

    // The server drops the connection: the owner sees it end, and the open request fails at
    // once (not at its timeout).
    assert!(conn.has_room().unwrap());
    let lost = conn.request(patch("close"), Duration::from_secs(30));
    tokio::pin!(lost);
    let noticed = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::select! {
            biased;
            why = conn.drive() => why,
            r = &mut lost => panic!("answered on a dropped connection: {r:?}"),
        }
    });
    let why = noticed.await.expect("the end of the connection is noticed");
    assert!(conn.is_closed(), "{why:?}");
    assert!(why.is_err(), "a connection lost is a failure");
    let lost = tokio::time::timeout(Duration::from_secs(2), lost).await.expect("failed at once");
    assert!(matches!(lost, Err(LeanError::Transport(_))), "{lost:?}");

    // A new connection serves the next renewal.
    let mut again = lean.connect().await.unwrap();
    assert!(again.has_room().unwrap());
    let answer = again.request(patch("edge-1"), Duration::from_secs(10));
    let status = answered(&mut again, answer).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen.lock().unwrap().last().map(|s| s.connection), Some(1));

    // The server closes gracefully after answering (GOAWAY): the answer arrives, the end is no
    // failure, and the connection then says it is going away rather than failing.
    assert!(again.has_room().unwrap());
    let answer = again.request(patch("goaway"), Duration::from_secs(10));
    tokio::pin!(answer);
    let status = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::select! {
            r = &mut answer => r.unwrap(),
            // Driving may end first; the answer is there then.
            ended = again.drive() => {
                assert_eq!(ended, Ok(()), "a GOAWAY is a graceful end");
                tokio::time::timeout(Duration::from_secs(2), answer).await.expect("answered").unwrap()
            }
        }
    });
    let status = status.await.expect("an answer");
    assert_eq!(status, StatusCode::OK);
    if !again.is_closed() {
        let ended = tokio::time::timeout(Duration::from_secs(10), again.drive()).await.expect("the connection ends");
        assert_eq!(ended, Ok(()), "a GOAWAY is a graceful end");
    }
    match again.has_room() {
        Err(LeanError::GoingAway(_)) => {}
        other => panic!("after a GOAWAY the connection is going away: {other:?}"),
    }
}

/// A server URL with a path (a proxy's prefix), a trailing `/` and a query: requests go under
/// the path, without the query, as kube-rs's own client sends them.
#[tokio::test]
async fn the_server_urls_path_prefixes_every_request() {
    let ca = kubeedge_pki::Ca::generate().unwrap();
    let (port, seen) = server(&ca).await;
    let mut cfg = config(port, &ca);
    cfg.cluster_url = format!("https://127.0.0.1:{port}/k8s/clusters/c-1/?x=1").parse().unwrap();
    let lean = LeanClient::from_config(&cfg).unwrap();
    let mut conn = lean.connect().await.unwrap();
    assert!(conn.has_room().unwrap());
    let answer = conn.request(patch("edge-1"), Duration::from_secs(10));
    let status = answered(&mut conn, answer).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        seen.lock().unwrap()[0].path,
        "/k8s/clusters/c-1/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/edge-1"
    );
}

#[tokio::test]
async fn what_the_lean_path_does_not_serve_stays_with_kube_rs() {
    let ca = kubeedge_pki::Ca::generate().unwrap();
    let plain = kube::Config::new("http://127.0.0.1:8080".parse().unwrap());
    let why = LeanClient::from_config(&plain).err().expect("plain HTTP is refused");
    assert!(why.contains("not HTTPS"), "{why}");
    let mut proxied = config(6443, &ca);
    proxied.proxy_url = Some("http://proxy:3128".parse().unwrap());
    assert!(LeanClient::from_config(&proxied).err().expect("a proxy is refused").contains("proxy"));

    // A server that does not speak HTTP/2: a clear error, not a hang.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut cfg = server_tls(&ca);
    // No ALPN at all (an HTTP/1.1-only server): the handshake succeeds, HTTP/2 was not agreed.
    cfg.alpn_protocols = Vec::new();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // Held open until the client lets go.
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = tokio::io::AsyncReadExt::read_to_end(&mut tls, &mut Vec::new()).await;
                }
            });
        }
    });
    let lean = LeanClient::from_config(&config(port, &ca)).unwrap();
    let err = lean.connect().await.err().expect("HTTP/1.1 only is refused");
    assert!(err.to_string().contains("HTTP/2"), "{err}");
}
