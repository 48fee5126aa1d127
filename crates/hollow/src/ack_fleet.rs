//! A fleet of edges that only ACK, for CloudHub's tests and benchmarks (`cloudcore/tests/
//! cloudhub_scale.rs`, `cloudcore/benches/hub.rs`): each with its own certificate signed by the
//! CA, speaking the real protocol over mTLS WebSockets, ACKing every message it receives as
//! MetaManager would (`protocol::edge::ack`) and reporting it. When its session ends an edge
//! reconnects the way EdgeHub does while CloudHub is away: a new attempt about every second
//! (±20 %). Unlike [`Fleet`](crate::Fleet) it registers nothing and runs no pods.
//!
//! [`Tally`] counts what such a fleet received, per object version and session: the exact
//! "nothing lost, nothing duplicated" check of the multi-replica test and bench, where a
//! replica is killed and its edges move to the others.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kubeedge_model::protocol::edge;
use kubeedge_model::{Message, Operation, ResourcePath};
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

/// What an edge holds: `ns/type/name` → (uid, resourceVersion).
pub type Holdings = BTreeMap<String, (String, String)>;

/// What the pods of namespace `ns` (those matching `labels`, all when `None`) put on their
/// nodes: node → holdings — the pods, and the configmaps their volumes use, projected ones too
/// (the `kube-root-ca.crt` of the service-account token volume the API server adds).
pub async fn desired(
    client: &kube::Client,
    ns: &str,
    labels: Option<&str>,
) -> Result<HashMap<String, Holdings>, kube::Error> {
    use k8s_openapi::api::core::v1::{ConfigMap, Pod};
    use kube::Api;
    use kube::api::ListParams;
    let mut lp = ListParams::default();
    if let Some(l) = labels {
        lp = lp.labels(l);
    }
    let pods = Api::<Pod>::namespaced(client.clone(), ns).list(&lp).await?;
    let cms: HashMap<String, (String, String)> = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|c| {
            let m = c.metadata;
            (m.name.unwrap_or_default(), (m.uid.unwrap_or_default(), m.resource_version.unwrap_or_default()))
        })
        .collect();
    let mut out: HashMap<String, Holdings> = HashMap::new();
    for p in pods.items {
        let spec = p.spec.unwrap_or_default();
        let Some(node) = spec.node_name else { continue };
        let held = out.entry(node).or_default();
        let m = p.metadata;
        let name = m.name.unwrap_or_default();
        held.insert(format!("{ns}/pod/{name}"), (m.uid.unwrap_or_default(), m.resource_version.unwrap_or_default()));
        let used = spec.volumes.into_iter().flatten().flat_map(|v| {
            let projected = v.projected.and_then(|p| p.sources).into_iter().flatten();
            v.config_map.map(|c| c.name).into_iter().chain(projected.filter_map(|s| s.config_map).map(|c| c.name))
        });
        for cm in used {
            if let Some(o) = cms.get(&cm) {
                held.insert(format!("{ns}/configmap/{cm}"), o.clone());
            }
        }
    }
    Ok(out)
}

/// One delivery of an object version to an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// The edge's session it came in (1 = the first).
    pub session: u32,
    /// Whether it came after [`Tally::mark_kill`].
    pub after_kill: bool,
}

/// What a fleet of ACKing edges received: what each edge holds now (pods, configmaps and
/// secrets, applied as MetaManager would), and every delivery of every version of them.
#[derive(Debug, Default)]
pub struct Tally {
    session: HashMap<String, u32>,
    connected: HashSet<String>,
    holds: HashMap<String, Holdings>,
    /// (node, uid, version or `delete`) → its deliveries.
    deliveries: HashMap<(String, String, String), Vec<Delivery>>,
    /// Each edge's session at the kill, once marked.
    at_kill: Option<HashMap<String, u32>>,
}

/// What happened to a fleet's edges across a failover ([`Tally::failover`]).
#[derive(Debug, Default)]
pub struct Failover {
    /// Edges whose session ended at the kill and that connected again.
    pub moved: usize,
    /// Versions delivered once more to an edge that moved, which the killed replica had sent
    /// but not recorded in the ObjectSyncs (in flight, or ACKed but not written): allowed.
    pub resent: usize,
    /// Versions delivered twice before the kill (reported, not part of the failover).
    pub before: usize,
    /// Every other version delivered more than once after the kill: duplicates.
    pub duplicates: Vec<String>,
}

impl Tally {
    /// Applies one event of [`connect_fleet`]'s channel.
    pub fn on(&mut self, ev: FleetEvent) {
        match ev {
            FleetEvent::Connected(n) => {
                *self.session.entry(n.clone()).or_default() += 1;
                self.connected.insert(n);
            }
            FleetEvent::Disconnected(n) => {
                self.connected.remove(&n);
            }
            FleetEvent::Received(n, msg) => self.received(n, &msg),
        }
    }

    fn received(&mut self, node: String, msg: &Message) {
        let Ok(path) = ResourcePath::parse(&msg.router.resource) else { return };
        if !matches!(path.resource_type.as_str(), "pod" | "configmap" | "secret") {
            return;
        }
        let uid = msg
            .content
            .decode::<serde_json::Value>()
            .ok()
            .and_then(|v| v.pointer("/metadata/uid").and_then(serde_json::Value::as_str).map(str::to_owned))
            .unwrap_or_default();
        let holds = self.holds.entry(node.clone()).or_default();
        let version = if msg.operation() == Operation::Delete {
            holds.remove(&msg.router.resource);
            "delete".to_owned()
        } else {
            let rv = msg.header.resource_version.clone();
            holds.insert(msg.router.resource.clone(), (uid.clone(), rv.clone()));
            rv
        };
        let d = Delivery { session: self.session.get(&node).copied().unwrap_or(0), after_kill: self.at_kill.is_some() };
        self.deliveries.entry((node, uid, version)).or_default().push(d);
    }

    /// The edges with a session now.
    pub fn connected(&self) -> usize {
        self.connected.len()
    }

    /// What `node` holds now.
    pub fn holds(&self, node: &str) -> Option<&Holdings> {
        self.holds.get(node)
    }

    /// A replica is about to be killed: what comes from now on is counted as after it.
    pub fn mark_kill(&mut self) {
        self.at_kill = Some(self.session.clone());
    }

    /// The edges that connected again since [`Tally::mark_kill`].
    pub fn moved(&self) -> HashSet<String> {
        let Some(at) = &self.at_kill else { return HashSet::new() };
        self.session.iter().filter(|(n, s)| at.get(*n).is_some_and(|k| *s > k)).map(|(n, _)| n.clone()).collect()
    }

    /// Judges every version delivered more than once, given what the ObjectSyncs recorded
    /// right after the kill (`recorded`: (node, uid) → version): after the kill, a version may
    /// reach an edge that moved once more, in its new session, only if the killed replica had
    /// sent it in the old one without its ACK recorded (a delete: while its ObjectSync still
    /// existed). Anything else delivered twice with the second after the kill is a duplicate.
    pub fn failover(&self, recorded: &HashMap<(String, String), u64>) -> Failover {
        let at_kill = self.at_kill.clone().unwrap_or_default();
        let moved = self.moved();
        let mut out = Failover { moved: moved.len(), ..Failover::default() };
        for ((node, uid, version), ds) in &self.deliveries {
            if ds.len() < 2 {
                continue;
            }
            if ds.iter().all(|d| !d.after_kill) {
                out.before += 1;
                continue;
            }
            let kill_session = at_kill.get(node).copied().unwrap_or(0);
            let old = ds.iter().filter(|d| d.session <= kill_session).count();
            let new = ds.len() - old;
            let rec = recorded.get(&(node.clone(), uid.clone()));
            let unrecorded = if version == "delete" {
                rec.is_some()
            } else {
                version.parse::<u64>().is_ok_and(|v| rec.is_none_or(|r| *r < v))
            };
            if moved.contains(node) && old == 1 && new == 1 && unrecorded {
                out.resent += 1;
            } else {
                out.duplicates.push(format!(
                    "{node} got {uid} ({version}) {} times: {ds:?}; recorded at the kill: {rec:?}",
                    ds.len()
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use kubeedge_model::Content;

    use super::*;

    fn msg(op: Operation, res: &str, uid: &str, rv: &str) -> Box<Message> {
        let content = Content::from_value(&serde_json::json!({"metadata": {"uid": uid}}));
        let mut m = Message::build("edgecontroller", "resource", res, op, content);
        m.header.resource_version = rv.to_owned();
        Box::new(m)
    }

    #[test]
    fn a_tally_tells_inflight_resends_from_duplicates() {
        let mut t = Tally::default();
        let (a, b) = ("a".to_owned(), "b".to_owned());
        t.on(FleetEvent::Connected(a.clone()));
        t.on(FleetEvent::Connected(b.clone()));
        t.on(FleetEvent::Received(a.clone(), msg(Operation::Insert, "ns/pod/p", "u1", "5")));
        t.on(FleetEvent::Received(a.clone(), msg(Operation::Insert, "ns/configmap/c", "u2", "7")));
        t.on(FleetEvent::Received(b.clone(), msg(Operation::Insert, "ns/pod/q", "u3", "5")));
        t.mark_kill();
        // `a` was on the killed replica; `b` was not.
        t.on(FleetEvent::Disconnected(a.clone()));
        t.on(FleetEvent::Connected(a.clone()));
        t.on(FleetEvent::Received(a.clone(), msg(Operation::Update, "ns/pod/p", "u1", "5")));
        t.on(FleetEvent::Received(a.clone(), msg(Operation::Update, "ns/configmap/c", "u2", "7")));
        t.on(FleetEvent::Received(b.clone(), msg(Operation::Update, "ns/pod/q", "u3", "5")));
        t.on(FleetEvent::Received(a.clone(), msg(Operation::Delete, "ns/configmap/c", "u2", "")));
        let recorded: HashMap<(String, String), u64> = [((a.clone(), "u1".to_owned()), 5)].into();
        let f = t.failover(&recorded);
        assert_eq!(f.moved, 1);
        assert_eq!(f.resent, 1, "u2 at 7 was not recorded: it may come again");
        assert_eq!(f.duplicates.len(), 2, "u1 at 5 was recorded; b did not move: {:?}", f.duplicates);
        assert_eq!(t.holds("a").map(|h| h.len()), Some(1));
        assert_eq!(t.connected(), 2);
    }
}
