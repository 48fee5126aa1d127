//! Issue #19: EdgeController's renewer (`cloudcore::edgecontroller::renewer`), the compact lease
//! renewals of edges of ours on an HTTP/2 connection of their own. The connection goes to a
//! server the test controls (`fake_h2`); kube-rs's client, the renewer's fallback, goes to
//! apiserver-lite. Renewals arriving together share the connection; a renewal whose connection
//! is lost, or that the API answers 503, goes again through kube-rs's client and is answered;
//! after a GOAWAY the next ones go on a new connection at once; a renewal of another node's
//! lease is refused and never sent.

mod fake_h2;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::PostParams;
use kubeedge_beehive::{BoxFuture, Module, ModuleContext, ModuleError, Registry, RestartPolicy};
use kubeedge_model::protocol::lease;
use kubeedge_model::{CloudResource, Message};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use cloudcore::authz::NodeAuthorizer;
use cloudcore::delivery::messages::Sender;
use cloudcore::delivery::view::View;
use cloudcore::edgecontroller::renewer::{self, Renewal};
use cloudcore::edgecontroller::upstream::Upstream;
use cloudcore::kubeclient::lean::LeanClient;

/// Stands in for CloudHub: what the renewer answers.
struct Hub(mpsc::UnboundedSender<Message>);

impl Module for Hub {
    fn name(&self) -> &'static str {
        "cloudhub"
    }
    fn group(&self) -> &'static str {
        "cloudhub"
    }
    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(async move {
            while let Some(m) = ctx.recv().await {
                let _ = self.0.send(m);
            }
            Ok(())
        })
    }
}

/// A node's compact renewal of `lease` as CloudHub hands it over (the node's prefix added).
fn renewal(node: &str, lease: &str) -> Message {
    let mut m = lease::renew(lease);
    m.router.resource = CloudResource::prefixed(node, &m.router.resource);
    m
}

/// The answer to `req` among the next ones, within 15 s.
async fn answer_to(answers: &mut mpsc::UnboundedReceiver<Message>, req: &Message) -> Message {
    tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let m = answers.recv().await.expect("the hub stays");
            if m.parent_id() == Some(req.id()) {
                return m;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no answer to {}", req.router.resource))
}

/// The Lease's renewTime moved in the API (they start in 2020).
async fn assert_renewed(leases: &Api<Lease>, name: &str) {
    let renewed = leases.get(name).await.unwrap().spec.and_then(|s| s.renew_time).unwrap().0.to_string();
    assert!(renewed.as_str() > "2020-01-01", "renewed through kube-rs's client: {renewed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_share_the_connection_and_one_lost_with_it_is_still_answered() {
    let api = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        apiserver_lite::ApiServer::start(l, Default::default()).await.unwrap()
    };
    let kc = kube::config::Kubeconfig::from_yaml(&api.kubeconfig()).unwrap();
    let client =
        kube::Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap()).unwrap();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let long_ago = "2020-01-01T00:00:00.000000Z";
    for node in ["edge-1", "edge-2", "edge-3", "close", "goaway", "busy"] {
        let l = serde_json::json!({"metadata": {"name": node},
            "spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": long_ago}});
        leases.create(&PostParams::default(), &serde_json::from_value(l).unwrap()).await.unwrap();
    }

    let ca = kubeedge_pki::Ca::generate().unwrap();
    let (port, seen) = fake_h2::server(&ca).await;
    let (tx, mut answers) = mpsc::unbounded_channel();
    let mut reg = Registry::new();
    reg.register(Box::new(Hub(tx))).unwrap();
    let sup = reg.start(RestartPolicy::default());
    let up = Upstream {
        client: client.clone(),
        tx: Sender { bus: sup.bus(), syncs: None },
        authz: NodeAuthorizer::new(client.clone(), View::default(), None, "edgecontroller"),
    };
    let lean = LeanClient::from_config(&fake_h2::config(port, &ca)).unwrap();
    let (renewals, rx) = mpsc::channel(renewer::QUEUE);
    let stop = CancellationToken::new();
    let task = tokio::spawn(renewer::run(rx, lean, up, stop.clone()));
    let send = |m: &Message| {
        let target = Renewal::of(m).expect("a lease renewal");
        assert!(renewals.try_send(Renewal::new(m.clone(), None, target)).is_ok(), "room for a renewal");
    };

    // Three nodes renew together: one connection, each answered "OK".
    let batch: Vec<Message> = ["edge-1", "edge-2", "edge-3"].iter().map(|n| renewal(n, n)).collect();
    batch.iter().for_each(send);
    for m in &batch {
        let a = answer_to(&mut answers, m).await;
        assert!(lease::renew_result(&a).is_ok(), "{:?}", a.content);
    }
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert!(seen.iter().all(|s| s.connection == 0 && s.method == http::Method::PATCH), "{seen:?}");
        assert!(seen.iter().all(|s| s.content_type == "application/merge-patch+json"), "{seen:?}");
        let body: serde_json::Value = serde_json::from_slice(&seen[0].body).unwrap();
        assert!(body.pointer("/spec/renewTime").and_then(|t| t.as_str()).is_some(), "{body}");
    }

    // Another node's lease: refused (403), never sent.
    let theft = renewal("edge-1", "edge-2");
    send(&theft);
    let a = answer_to(&mut answers, &theft).await;
    assert!(a.content.raw().contains("403"), "{:?}", a.content);
    assert_eq!(seen.lock().unwrap().len(), 3, "nothing sent for a refused renewal");

    // The server closes gracefully after a renewal (GOAWAY): it is answered, and the next
    // renewal goes on a new connection at once (no failure, no pause), also when the GOAWAY
    // came with a connection's first answer (h2 may end the connection before that answer is
    // taken: it still answered).
    for (connection, name) in ["goaway", "goaway", "edge-3"].into_iter().enumerate() {
        let m = renewal(name, name);
        let asked = std::time::Instant::now();
        send(&m);
        let a = answer_to(&mut answers, &m).await;
        assert!(lease::renew_result(&a).is_ok(), "{:?}", a.content);
        assert!(asked.elapsed() < Duration::from_millis(900), "no pause after a GOAWAY: {:?}", asked.elapsed());
        let last = seen.lock().unwrap().last().map(|s| (s.connection, s.path.clone()));
        assert!(last.as_ref().is_some_and(|(c, p)| *c == connection && p.ends_with(name)), "{last:?}");
    }

    // The API is unavailable for a moment (503): the renewal goes through kube-rs's client,
    // which retries such answers, and is answered "OK" (apiserver-lite moved the Lease).
    let busy = renewal("busy", "busy");
    send(&busy);
    let a = answer_to(&mut answers, &busy).await;
    assert!(lease::renew_result(&a).is_ok(), "{:?}", a.content);
    assert_renewed(&leases, "busy").await;

    // The server drops the connection with a renewal open: it goes again through kube-rs's
    // client (apiserver-lite moves that Lease), and is answered "OK".
    let lost = renewal("close", "close");
    send(&lost);
    let a = answer_to(&mut answers, &lost).await;
    assert!(lease::renew_result(&a).is_ok(), "{:?}", a.content);
    assert_renewed(&leases, "close").await;

    // A failure pauses the connection (1 s): meanwhile renewals go through kube-rs's client
    // and are answered all the same; then a new connection takes them again.
    kubeedge_testkit::eventually_async("renewals on a new connection after the pause", async || {
        let m = renewal("edge-2", "edge-2");
        send(&m);
        let a = answer_to(&mut answers, &m).await;
        assert!(lease::renew_result(&a).is_ok(), "{:?}", a.content);
        seen.lock().unwrap().iter().any(|s| s.connection == 3)
    })
    .await;

    stop.cancel();
    task.await.unwrap();
    api.shutdown().await;
    drop(sup);
}
