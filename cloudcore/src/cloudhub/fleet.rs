//! An in-process fleet of edge clients for tests and benchmarks: each with its own certificate
//! signed by the CA, speaking the real protocol over mTLS WebSockets, ACKing what it receives
//! as MetaManager would. Never used by the daemon itself.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kubeedge_model::{Content, Message};
use kubeedge_pki::{Ca, ExtKeyUsage};
use kubeedge_viaduct::{ClientOptions, client_tls, connect};
use tokio::sync::mpsc;

/// What an edge of the fleet reports.
#[derive(Debug)]
pub enum FleetEvent {
    /// Connected.
    Connected(String),
    /// Received (and ACKed) a message.
    Received(String, Box<Message>),
}

/// Connects `nodes` edges (at most `parallel` handshakes at a time) to CloudHub at `addr`.
/// Each edge ACKs every message it receives and reports it on the returned channel.
pub async fn connect_fleet(
    ca: &Ca,
    addr: &str,
    nodes: &[String],
    parallel: usize,
) -> mpsc::UnboundedReceiver<FleetEvent> {
    let (tx, rx) = mpsc::unbounded_channel();
    let ca_der = ca.cert_der().to_vec();
    let certs: Vec<(String, Vec<u8>, Vec<u8>)> = nodes
        .iter()
        .filter_map(|n| {
            let (csr, key) = kubeedge_pki::edge_csr(n).ok()?;
            let cert = ca.sign_csr(&csr, 365, &[ExtKeyUsage::ClientAuth]).ok()?;
            Some((n.clone(), cert, key))
        })
        .collect();
    let addr = addr.to_owned();
    tokio::spawn(futures::stream::iter(certs).for_each_concurrent(parallel.max(1), move |(node, cert, key)| {
        let (tx, ca_der, addr) = (tx.clone(), ca_der.clone(), addr.clone());
        async move {
            let Ok(tls) = client_tls(&ca_der, &cert, &key) else { return };
            let opts = ClientOptions {
                server: addr,
                node_id: node.clone(),
                project_id: "e632aba927ea4ac2b575ec1603d56f10".to_owned(),
                max_message: kubeedge_model::MAX_MESSAGE_SIZE,
                handshake_timeout: Duration::from_secs(60),
            };
            let Ok(mut conn) = connect(&opts, Arc::new(tls)).await else { return };
            let _ = tx.send(FleetEvent::Connected(node.clone()));
            tokio::spawn(async move {
                while let Ok(Some(msg)) = conn.recv().await {
                    let ack = Message::response_to(&msg, Content::string("OK"));
                    if conn.send(&ack).await.is_err() {
                        return;
                    }
                    if tx.send(FleetEvent::Received(node.clone(), Box::new(msg))).is_err() {
                        return;
                    }
                }
            });
        }
    }));
    rx
}
