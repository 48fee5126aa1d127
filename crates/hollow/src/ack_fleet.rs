//! A fleet of edges that only ACK, for CloudHub's tests and benchmarks (`cloudcore/tests/
//! cloudhub_scale.rs`, `cloudcore/benches/hub.rs`): each with its own certificate signed by the
//! CA, speaking the real protocol over mTLS WebSockets, ACKing every message it receives as
//! MetaManager would (`protocol::edge::ack`) and reporting it. When its session ends an edge
//! reconnects the way EdgeHub does while CloudHub is away: a new attempt about every second
//! (±20 %). Unlike [`Fleet`](crate::Fleet) it registers nothing and runs no pods.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kubeedge_model::Message;
use kubeedge_model::protocol::edge;
use kubeedge_pki::{Ca, ExtKeyUsage};
use kubeedge_viaduct::{ClientOptions, client_tls, connect};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What an edge of the fleet reports.
#[derive(Debug)]
pub enum FleetEvent {
    /// Connected (again).
    Connected(String),
    /// Its session ended; it is reconnecting.
    Disconnected(String),
    /// Received (and ACKed) a message.
    Received(String, Box<Message>),
}

const RETRY: Duration = Duration::from_secs(1);

fn jittered(d: Duration, salt: usize) -> Duration {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|t| t.subsec_nanos()).unwrap_or(0);
    let spread = (u64::from(nanos) + salt as u64 * 7919) % 1000;
    #[allow(clippy::cast_precision_loss)]
    d.mul_f64(0.8 + spread as f64 / 2500.0)
}

/// Connects `nodes` edges (at most `parallel` first handshakes at a time) to CloudHub at
/// `addr`. Each edge ACKs every message it receives, reports it on the returned channel, and
/// reconnects when its session ends, until `stop`.
pub async fn connect_fleet(
    ca: &Ca,
    addr: &str,
    nodes: &[String],
    parallel: usize,
    stop: CancellationToken,
) -> mpsc::UnboundedReceiver<FleetEvent> {
    let (tx, rx) = mpsc::unbounded_channel();
    let ca_der = ca.cert_der().to_vec();
    let edges: Vec<(usize, String, Arc<rustls::ClientConfig>)> = nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| {
            let (csr, key) = kubeedge_pki::edge_csr(n).ok()?;
            let cert = ca.sign_csr(&csr, 365, &[ExtKeyUsage::ClientAuth]).ok()?;
            Some((i, n.clone(), Arc::new(client_tls(&ca_der, &cert, &key).ok()?)))
        })
        .collect();
    let addr = addr.to_owned();
    tokio::spawn(futures::stream::iter(edges).for_each_concurrent(parallel.max(1), move |(i, node, tls)| {
        let (tx, addr, stop) = (tx.clone(), addr.clone(), stop.clone());
        async move {
            let opts = ClientOptions {
                server: addr,
                node_id: node.clone(),
                project_id: crate::PROJECT_ID.to_owned(),
                max_message: kubeedge_model::MAX_MESSAGE_SIZE,
                handshake_timeout: Duration::from_secs(60),
                features: Vec::new(),
            };
            // The first connection inside the concurrency limit; the edge then lives on its own.
            let first = connect(&opts, tls.clone()).await;
            tokio::spawn(async move {
                let mut conn = first;
                loop {
                    if let Ok(mut c) = conn {
                        let _ = tx.send(FleetEvent::Connected(node.clone()));
                        loop {
                            let msg = tokio::select! {
                                _ = stop.cancelled() => return,
                                m = c.recv() => m,
                            };
                            let Ok(Some(msg)) = msg else { break };
                            if c.send(&edge::ack(&msg)).await.is_err() {
                                break;
                            }
                            if tx.send(FleetEvent::Received(node.clone(), Box::new(msg))).is_err() {
                                return;
                            }
                        }
                        let _ = tx.send(FleetEvent::Disconnected(node.clone()));
                    }
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(jittered(RETRY, i)) => {}
                    }
                    conn = connect(&opts, tls.clone()).await;
                }
            });
        }
    }));
    rx
}
