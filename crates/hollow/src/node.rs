//! One hollow node: a task owning its connection, its registration and lease state, and its
//! fake runtime. Requests to the cloud (node insert, lease, patches) are matched to their
//! replies by `parent_msg_id`; nothing is shared with other nodes but the counters.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kubeedge_model::constants::resource_type;
use kubeedge_model::protocol::objects::{self, NodeFacts};
use kubeedge_model::protocol::{NODE_NAMESPACE, ReplyError, edge, lease, reply};
use kubeedge_model::{Message, Operation, ResourcePath};
use kubeedge_pki::{Ca, ExtKeyUsage};
use kubeedge_viaduct::{ClientOptions, Connection};
use serde::Deserialize;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::time::{Instant, MissedTickBehavior, interval_at};
use tokio_rustls::client::TlsStream;
use tracing::debug;

use crate::fake::{self, now_strings};
use crate::{Kind, PROJECT_ID, Shared, jittered, unit};

type Conn = Connection<TlsStream<TcpStream>>;

/// How long a pod status may go unanswered before it is sent again.
const STATUS_RETRY: Duration = Duration::from_secs(20);

/// A request waiting for its reply.
enum Pending {
    NodeInsert,
    NodeStatus,
    Lease {
        insert: bool,
    },
    /// A compact renewal (with a cloud of ours).
    Renew,
    LeaseQuery,
    PodPatch {
        uid: String,
    },
    PodDelete,
}

/// A pod in the fake runtime.
struct FakePod {
    ns: String,
    name: String,
    containers: Vec<(String, String)>,
    pod_ip: String,
    started: String,
    /// The cloud accepted its Running status.
    reported: bool,
    /// When its status was last sent.
    sent_at: Option<Instant>,
    terminating: bool,
}

/// The parts of a pod a hollow node reads.
#[derive(Deserialize)]
struct PodLite {
    metadata: PodMeta,
    #[serde(default)]
    spec: PodSpecLite,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodMeta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    uid: String,
    #[serde(default)]
    deletion_timestamp: Option<String>,
}

#[derive(Deserialize, Default)]
struct PodSpecLite {
    #[serde(default)]
    containers: Vec<ContainerLite>,
}

#[derive(Deserialize)]
struct ContainerLite {
    name: String,
    #[serde(default)]
    image: Option<String>,
}

struct Node {
    shared: Arc<Shared>,
    index: usize,
    name: String,
    host_ip: String,
    registered: bool,
    uid: String,
    lease: Option<Value>,
    pods: HashMap<String, FakePod>,
    pending: HashMap<String, Pending>,
    next_ip: u32,
    /// This session agreed on `lease-renew`: compact renewals, keepalives only when idle.
    compact: bool,
    /// When this session last sent a message.
    last_sent: Instant,
    /// When this session last pinged (between ours: only after a heartbeat without a frame
    /// from the cloud, as EdgeHub does).
    last_ping: Instant,
}

/// Why a session ended.
enum End {
    Stop,
    Lost,
}

/// Runs node `index` until the fleet stops.
pub(crate) async fn run(shared: Arc<Shared>, ca: Arc<Ca>, index: usize) {
    let name = shared.cfg.node_name(index);
    let n = shared.cfg.first + index;
    let host_ip = format!("172.{}.{}.{}", 16 + ((n >> 16) & 15), (n >> 8) & 255, n & 255);
    let opts = ClientOptions {
        server: shared.cfg.server.clone(),
        node_id: name.clone(),
        project_id: PROJECT_ID.to_owned(),
        max_message: kubeedge_model::MAX_MESSAGE_SIZE,
        handshake_timeout: Duration::from_secs(60),
        // As an edgecore of ours (no MetaManager here, so no inventory answers).
        features: if shared.cfg.upstream_edge { Vec::new() } else { vec![lease::FEATURE.to_owned()] },
    };
    let mut node = Node {
        shared: shared.clone(),
        index,
        name,
        host_ip,
        registered: !shared.cfg.register,
        uid: String::new(),
        lease: None,
        pods: HashMap::new(),
        pending: HashMap::new(),
        next_ip: 0,
        compact: false,
        last_sent: Instant::now(),
        last_ping: Instant::now(),
    };
    if node.registered {
        shared.stats.registered.fetch_add(1, Ordering::Relaxed);
    }
    let mut tls = None;
    loop {
        let conn = {
            let Ok(_permit) = (tokio::select! {
                _ = shared.stop.cancelled() => return,
                p = shared.handshakes.acquire() => p,
            }) else {
                return;
            };
            if tls.is_none() {
                tls = identity(&ca, &shared.ca_der, &node.name);
            }
            let Some(tls) = tls.clone() else {
                debug!(node = %node.name, "Could not issue a certificate.");
                return;
            };
            tokio::select! {
                _ = shared.stop.cancelled() => return,
                c = kubeedge_viaduct::connect(&opts, tls) => c,
            }
        };
        match conn {
            Ok(conn) => {
                shared.stats.connected.fetch_add(1, Ordering::Relaxed);
                shared.stats.connects.fetch_add(1, Ordering::Relaxed);
                let end = node.session(conn).await;
                shared.stats.connected.fetch_sub(1, Ordering::Relaxed);
                shared.stats.disconnects.fetch_add(1, Ordering::Relaxed);
                if matches!(end, End::Stop) {
                    return;
                }
            }
            Err(e) => {
                shared.stats.connect_errors.fetch_add(1, Ordering::Relaxed);
                debug!(node = %node.name, error = %e, "Connecting to CloudHub failed.");
            }
        }
        tokio::select! {
            _ = shared.stop.cancelled() => return,
            _ = tokio::time::sleep(jittered(shared.cfg.timings.retry, index)) => {}
        }
    }
}

/// A client TLS config with a fresh key and a certificate signed by the CA, as `/edge.crt`
/// issues it (`CN=system:node:{name}`, client auth).
fn identity(ca: &Ca, ca_der: &[u8], name: &str) -> Option<Arc<rustls::ClientConfig>> {
    let (csr, key) = kubeedge_pki::edge_csr(name).ok()?;
    let cert = ca.sign_csr(&csr, 365, &[ExtKeyUsage::ClientAuth]).ok()?;
    Some(Arc::new(kubeedge_viaduct::client_tls(ca_der, &cert, &key).ok()?))
}

/// An interval whose first tick is at a random phase within one period.
fn phased(period: Duration, salt: usize) -> tokio::time::Interval {
    let first = Instant::now() + period.mul_f64(unit(salt));
    let mut i = interval_at(first, period);
    i.set_missed_tick_behavior(MissedTickBehavior::Delay);
    i
}

impl Node {
    async fn send(&mut self, conn: &mut Conn, msg: Message, kind: Kind, pending: Option<Pending>) -> bool {
        let bytes = msg.encode().len();
        let id = msg.header.id.clone();
        if conn.send(&msg).await.is_err() {
            return false;
        }
        self.shared.stats.count(kind, bytes);
        self.last_sent = Instant::now();
        if let Some(p) = pending {
            self.pending.insert(id, p);
        }
        true
    }

    /// One session: resumes what was in flight, then serves the link until it ends.
    async fn session(&mut self, mut conn: Conn) -> End {
        let t = self.shared.cfg.timings.clone();
        let salt = self.index;
        self.pending.clear();
        self.compact = conn.has_feature(lease::FEATURE);
        self.last_sent = Instant::now();
        self.last_ping = Instant::now();
        if !self.registered && !self.register(&mut conn).await {
            return End::Lost;
        }
        // Statuses the cloud has not accepted yet are sent again.
        let unreported: Vec<String> =
            self.pods.iter().filter(|(_, p)| !p.reported && !p.terminating).map(|(u, _)| u.clone()).collect();
        for uid in unreported {
            if !self.report_running(&mut conn, &uid).await {
                return End::Lost;
            }
        }
        // EdgeHub sends its first keepalive and ping at once (upstream's; between ours the
        // ping waits for a heartbeat without a frame from the cloud).
        if !self.compact && !self.keepalive(&mut conn).await {
            return End::Lost;
        }
        let mut keepalive = phased(t.keepalive, salt);
        let mut lease = phased(t.lease_duration / 4, salt.wrapping_add(1));
        let mut status = phased(t.status_report, salt.wrapping_add(2));
        let stop = self.shared.stop.clone();
        loop {
            let ok = tokio::select! {
                _ = stop.cancelled() => {
                    let _ = conn.close().await;
                    return End::Stop;
                }
                _ = keepalive.tick(), if !self.compact => self.keepalive(&mut conn).await,
                _ = tokio::time::sleep_until(Instant::from_std(conn.last_activity()).max(self.last_ping) + t.keepalive), if self.compact => {
                    self.last_ping = Instant::now();
                    self.shared.stats.count(Kind::Ping, 0);
                    conn.ping().await.is_ok()
                }
                // Between ours, the keepalive message after a heartbeat without any other.
                _ = tokio::time::sleep_until(self.last_sent + t.keepalive), if self.compact => {
                    self.send(&mut conn, edge::keepalive(), Kind::Keepalive, None).await
                }
                _ = lease.tick() => self.lease_tick(&mut conn).await,
                _ = status.tick() => {
                    if self.registered {
                        let (now, _) = now_strings();
                        let msg = edge::node_patch(NODE_NAMESPACE, &self.name, &objects::heartbeat_patch(&now));
                        self.send(&mut conn, msg, Kind::NodeStatus, Some(Pending::NodeStatus)).await
                    } else {
                        true
                    }
                }
                incoming = conn.recv() => match incoming {
                    Ok(Some(msg)) => self.handle(&mut conn, msg).await,
                    Ok(None) => false,
                    Err(e) if e.is_recoverable() => true,
                    Err(_) => false,
                },
            };
            if !ok {
                return End::Lost;
            }
        }
    }

    /// The made-up host this node reports.
    fn facts(&self) -> NodeFacts {
        fake::node_facts(&self.name, &self.host_ip)
    }

    /// The node exists in the cloud: counted, and its status brought up to date (it may have
    /// existed before).
    async fn registered(&mut self, conn: &mut Conn) -> bool {
        self.registered = true;
        self.shared.stats.registered.fetch_add(1, Ordering::Relaxed);
        let (now, _) = now_strings();
        let patch = objects::status_patch(&objects::node_status(&self.facts(), &now));
        let msg = edge::node_patch(NODE_NAMESPACE, &self.name, &patch);
        self.send(conn, msg, Kind::NodeStatus, Some(Pending::NodeStatus)).await
    }

    /// Upstream's heartbeat: the keepalive message and the WebSocket ping.
    async fn keepalive(&mut self, conn: &mut Conn) -> bool {
        if !self.send(conn, edge::keepalive(), Kind::Keepalive, None).await {
            return false;
        }
        self.shared.stats.count(Kind::Ping, 0);
        conn.ping().await.is_ok()
    }

    async fn register(&mut self, conn: &mut Conn) -> bool {
        let (now, _) = now_strings();
        let labels = objects::node_labels(&self.name, &self.facts().host.architecture);
        let node = objects::node_object(&self.name, &labels, true, objects::node_status(&self.facts(), &now));
        let msg = edge::node_insert(NODE_NAMESPACE, &self.name, &node);
        self.send(conn, msg, Kind::NodeInsert, Some(Pending::NodeInsert)).await
    }

    /// Every quarter of the lease duration: registration retries, then the lease.
    async fn lease_tick(&mut self, conn: &mut Conn) -> bool {
        let in_flight = |p: &Pending| {
            matches!(p, Pending::NodeInsert | Pending::Lease { .. } | Pending::Renew | Pending::LeaseQuery)
        };
        if self.pending.values().any(in_flight) {
            return true;
        }
        if !self.registered {
            return self.register(conn).await;
        }
        // A status the cloud has not answered for a while is sent again, as edged reports a
        // pod's status again at its next sync when the last report failed.
        let stale: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, p)| !p.reported && !p.terminating && p.sent_at.is_none_or(|t| t.elapsed() >= STATUS_RETRY))
            .map(|(u, _)| u.clone())
            .collect();
        for uid in stale {
            if !self.report_running(conn, &uid).await {
                return false;
            }
        }
        if self.compact {
            // A cloud of ours renews it by its clock; a 404 brings the insert.
            return self.send(conn, lease::renew(&self.name), Kind::Lease, Some(Pending::Renew)).await;
        }
        self.write_lease(conn).await
    }

    /// Upstream's renewal: `update` of the stored Lease, or `insert` when there is none.
    async fn write_lease(&mut self, conn: &mut Conn) -> bool {
        let (_, micro) = now_strings();
        let secs = i32::try_from(self.shared.cfg.timings.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let (msg, insert) = match self.lease.clone() {
            Some(l) => (edge::lease_update(&self.name, l, &micro), false),
            None => (edge::lease_insert(&self.name, &self.uid, secs, &micro), true),
        };
        self.send(conn, msg, Kind::Lease, Some(Pending::Lease { insert })).await
    }

    async fn report_running(&mut self, conn: &mut Conn, uid: &str) -> bool {
        let Some(p) = self.pods.get_mut(uid) else { return true };
        p.sent_at = Some(Instant::now());
        let p = &*p;
        let status = fake::running_status(&self.host_ip, &p.pod_ip, &p.started, &p.containers, uid);
        let msg = edge::pod_patch(&p.ns, &p.name, Some(uid), status);
        self.send(conn, msg, Kind::PodPatch, Some(Pending::PodPatch { uid: uid.to_owned() })).await
    }

    async fn handle(&mut self, conn: &mut Conn, msg: Message) -> bool {
        let stats = self.shared.stats.clone();
        stats.received.fetch_add(1, Ordering::Relaxed);
        if let Some(p) = msg.parent_id().and_then(|id| self.pending.remove(id)) {
            let ok = self.reply(conn, p, &msg).await;
            if ok && edge::needs_ack(&msg) {
                return self.ack(conn, &msg).await;
            }
            return ok;
        }
        if reply::is_reply(&msg) {
            // A reply to a request of an earlier session.
            return if edge::needs_ack(&msg) { self.ack(conn, &msg).await } else { true };
        }
        if !edge::needs_ack(&msg) {
            return true;
        }
        let is_pod = ResourcePath::parse(&msg.router.resource).is_ok_and(|p| p.resource_type == resource_type::POD);
        if !is_pod {
            // Configmaps, secrets, node updates…: stored, then ACKed.
            return self.ack(conn, &msg).await;
        }
        match msg.operation() {
            Operation::Insert | Operation::Update => {
                let Ok(pod) = msg.content.decode::<PodLite>() else {
                    // MetaManager drops content that is not an object, without an ACK.
                    return true;
                };
                let uid = pod.metadata.uid.clone();
                let terminating = pod.metadata.deletion_timestamp.is_some();
                let new = !self.pods.contains_key(&uid);
                if new && !terminating {
                    self.add(pod);
                }
                if !self.ack(conn, &msg).await {
                    return false;
                }
                if new && !terminating {
                    return self.report_running(conn, &uid).await;
                }
                if terminating {
                    return self.terminate(conn, &uid).await;
                }
                true
            }
            Operation::Delete => {
                let uid = msg.content.decode::<PodLite>().map(|p| p.metadata.uid).unwrap_or_default();
                if self.pods.remove(&uid).is_some() {
                    stats.pods.fetch_sub(1, Ordering::Relaxed);
                }
                self.ack(conn, &msg).await
            }
            _ => self.ack(conn, &msg).await,
        }
    }

    fn add(&mut self, pod: PodLite) {
        let n = self.shared.cfg.first + self.index;
        self.next_ip = self.next_ip.wrapping_add(1);
        let pod_ip = format!("10.{}.{}.{}", (n >> 8) & 255, n & 255, 2 + self.next_ip % 250);
        let (started, _) = now_strings();
        let containers = pod
            .spec
            .containers
            .into_iter()
            .map(|c| {
                let image = c.image.unwrap_or_default();
                (c.name, image)
            })
            .collect();
        let fake = FakePod {
            ns: pod.metadata.namespace.unwrap_or_else(|| "default".to_owned()),
            name: pod.metadata.name,
            containers,
            pod_ip,
            started,
            reported: false,
            sent_at: None,
            terminating: false,
        };
        self.pods.insert(pod.metadata.uid, fake);
        self.shared.stats.pods.fetch_add(1, Ordering::Relaxed);
    }

    /// A pod with a deletionTimestamp: its containers "stop" at once; the final status goes
    /// up, then the delete (grace 0, UID precondition).
    async fn terminate(&mut self, conn: &mut Conn, uid: &str) -> bool {
        let Some(p) = self.pods.get_mut(uid) else { return true };
        if p.terminating {
            return true;
        }
        p.terminating = true;
        let (now, _) = now_strings();
        let status = fake::terminated_status(&self.host_ip, &p.pod_ip, &now, &p.containers, uid);
        let patch = edge::pod_patch(&p.ns, &p.name, Some(uid), status);
        let delete = edge::pod_delete(&p.ns, &p.name, uid);
        self.send(conn, patch, Kind::PodPatch, None).await
            && self.send(conn, delete, Kind::PodDelete, Some(Pending::PodDelete)).await
    }

    async fn ack(&mut self, conn: &mut Conn, msg: &Message) -> bool {
        if let Some(acked) = &self.shared.acked {
            acked.lock().insert((self.name.clone(), msg.router.resource.clone()), msg.header.resource_version.clone());
        }
        self.send(conn, edge::ack(msg), Kind::Ack, None).await
    }

    /// A reply to one of this node's requests.
    async fn reply(&mut self, conn: &mut Conn, p: Pending, msg: &Message) -> bool {
        let stats = self.shared.stats.clone();
        if matches!(p, Pending::Renew) {
            return match lease::renew_result(msg) {
                Ok(()) => {
                    stats.lease_renewals.fetch_add(1, Ordering::Relaxed);
                    stats.lease_renewals_compact.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Err(e) => {
                    stats.request_errors.fetch_add(1, Ordering::Relaxed);
                    if e.is_not_found() {
                        // No Lease (a first start): created at once.
                        self.lease = None;
                        return self.write_lease(conn).await;
                    }
                    true
                }
            };
        }
        let resp = reply::object_of(msg);
        if resp.is_err() {
            stats.request_errors.fetch_add(1, Ordering::Relaxed);
        }
        match p {
            Pending::NodeInsert => match resp {
                Ok(node) => {
                    self.uid = uid_of(&node);
                    return self.registered(conn).await;
                }
                Err(e) if e.code() == 409 || e.is_already_exists() => return self.registered(conn).await,
                // Retried at the next lease tick.
                Err(_) => {}
            },
            Pending::NodeStatus => {
                if let Ok(node) = resp
                    && self.uid.is_empty()
                {
                    self.uid = uid_of(&node);
                }
            }
            Pending::Lease { insert } => match resp {
                Ok(l) => {
                    self.lease = Some(l);
                    stats.lease_renewals.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) if insert && e.is_already_exists() => {
                    // Left from an earlier run: read it, then renew it.
                    let q = edge::lease_query(&self.name);
                    return self.send(conn, q, Kind::Query, Some(Pending::LeaseQuery)).await;
                }
                Err(_) => self.lease = None,
            },
            Pending::Renew => {}
            Pending::LeaseQuery => {
                if let Ok(v) = resp {
                    let v = reply::first_stored(v);
                    self.lease = v.is_object().then_some(v);
                }
            }
            Pending::PodPatch { uid } => match resp {
                Ok(_) => {
                    if let Some(p) = self.pods.get_mut(&uid)
                        && !p.reported
                    {
                        p.reported = true;
                        stats.pods_running.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(ReplyError::Status { code: 404, .. }) => {
                    if self.pods.remove(&uid).is_some() {
                        stats.pods.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                // Sent again when the session is next established.
                Err(_) => {}
            },
            Pending::PodDelete => {
                if resp.is_ok() {
                    stats.pods_deleted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        true
    }
}

fn uid_of(obj: &Value) -> String {
    obj.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_owned()
}
