//! Shared by the CloudHub session tests: a hub on a real socket with a stand-in EdgeController.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use cloudcore::cloudhub::session::Hub;
use kubeedge_beehive::{BoxFuture, Module, ModuleContext, ModuleError, Registry, RestartPolicy};
use kubeedge_model::{Content, Message};
use kubeedge_pki::Ca;
use kubeedge_viaduct::ServerOptions;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub const PATIENCE: Duration = Duration::from_secs(60);

/// Stands in for EdgeController: hands what it receives to the test.
struct Controller(mpsc::UnboundedSender<Message>);

impl Module for Controller {
    fn name(&self) -> &'static str {
        "edgecontroller"
    }
    fn group(&self) -> &'static str {
        "edgecontroller"
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

pub struct Setup {
    pub ca: Ca,
    pub addr: String,
    pub hub: Arc<Hub>,
    pub upstream: mpsc::UnboundedReceiver<Message>,
    pub stop: CancellationToken,
}

pub async fn setup(node_limit: usize, max_message: usize) -> Setup {
    setup_with(node_limit, max_message, None).await
}

/// [`setup`], the sessions reporting what their nodes ACK to `acks` when given.
pub async fn setup_with(
    node_limit: usize,
    max_message: usize,
    acks: Option<cloudcore::delivery::acks::AckFeed>,
) -> Setup {
    let ca = Ca::generate().unwrap();
    let server = ca.issue_server(&["127.0.0.1".parse().unwrap()], &[]).unwrap();
    let (tx, upstream) = mpsc::unbounded_channel();
    let mut reg = Registry::new();
    reg.register(Box::new(Controller(tx))).unwrap();
    let sup = reg.start(RestartPolicy::default());
    let hub = match acks {
        Some(feed) => Hub::with_acks(sup.bus(), node_limit, Duration::from_secs(30), feed),
        None => Hub::new(sup.bus(), node_limit, Duration::from_secs(30), None),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let tls = kubeedge_viaduct::server_tls(ca.cert_der(), &server.cert_der, &server.key_sec1).unwrap();
    let stop = CancellationToken::new();
    let opts = ServerOptions { max_message, ..Default::default() };
    tokio::spawn(hub.clone().serve(listener, tls, opts, stop.clone()));
    std::mem::forget(sup); // Lives as long as the test.
    Setup { ca, addr, hub, upstream, stop }
}

pub fn pod_insert(node: &str, uid: &str, rv: &str) -> Message {
    pod_message(node, "web", uid, rv, "insert")
}

/// A pod message from EdgeController: pod `name` (UID `uid`, version `rv`) on `node`.
pub fn pod_message(node: &str, name: &str, uid: &str, rv: &str, op: &str) -> Message {
    let mut m = Message::build(
        "edgecontroller",
        "resource",
        format!("node/{node}/default/pod/{name}"),
        op,
        Content::json(&json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":name,"uid":uid,"resourceVersion":rv}}))
            .unwrap(),
    );
    m.header.resource_version = rv.to_owned();
    m
}

pub async fn until_connected(hub: &Hub, count: usize) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while hub.connected().len() != count {
        assert!(tokio::time::Instant::now() < deadline, "connected: {}", hub.connected().len());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
