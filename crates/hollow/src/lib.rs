//! Hollow edge nodes: many simulated edges in one process, each with its own mTLS identity
//! (a certificate signed directly by the cluster CA, `CN=system:node:{name}` as `/edge.crt`
//! would issue it), speaking the real EdgeHub protocol to CloudHub — what upstream's edgemark
//! "hollow" nodes are to kube-apiserver. The load generator of the scale bench
//! (`bench-scale`, `hack/bench-scale.sh`) and of the density test; never used by a daemon.
//!
//! Each hollow node does what an edgecore with EdgeHub, MetaManager and Edged does on the
//! wire, with an in-memory fake runtime instead of CRI:
//!
//! - EdgeHub: connects with `node_id`/`project_id` headers, announcing `lease-renew` in
//!   `X-KubeEdge-Rs-Features` as an edgecore of ours does (unless [`Config::upstream_edge`]),
//!   sends a `keepalive` (content `ping`) and a WebSocket ping every heartbeat (15 s) — when a
//!   cloud of ours agreed to `lease-renew`, the keepalive only after a heartbeat without any
//!   other message and the ping only after a heartbeat without any frame from the cloud — and
//!   reconnects about every second (±20 %) while the cloud is away;
//! - MetaManager: ACKs every cloud message (`response`, content `"OK"`) once it is "stored";
//! - Edged: registers the node (`insert` of the Node, then a full status `nodepatch`), renews
//!   its Lease every quarter of the lease duration (insert, then `update` of the stored Lease;
//!   with `lease-renew` agreed, the compact `renew` instead, the insert only after its 404),
//!   sends a status heartbeat `nodepatch` every `nodeStatusReportFrequency` (5 min); a new pod
//!   is "started" at once and reported Running by a `podpatch`; a pod with a
//!   deletionTimestamp is reported terminated and deleted (`delete`, grace 0, UID
//!   precondition), as edged does.
//!
//! Timers start at a random phase per node, so a fleet's traffic is spread as real nodes'.
//! Handshakes (first connections and reconnections) are bounded by `parallel` per process:
//! one process cannot do 10,000 TLS handshakes at once without starving its sessions.
//!
//! Every message comes from the model's protocol module (`kubeedge_model::protocol`), as
//! edgecore's do; [`fake`] holds only what a hollow node makes up (host facts, pod statuses).
//! [`ack_fleet`] is a simpler fleet of edges that only ACK, for CloudHub's own tests and bench.

pub mod ack_fleet;
pub mod fake;

mod node;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kubeedge_pki::Ca;
use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Upstream's project id.
pub const PROJECT_ID: &str = "e632aba927ea4ac2b575ec1603d56f10";

/// How often a hollow node does what (upstream's defaults).
#[derive(Debug, Clone)]
pub struct Timings {
    /// EdgeHub `heartbeat`: a keepalive message and a WebSocket ping (upstream 15 s).
    pub keepalive: Duration,
    /// `nodeLeaseDurationSeconds` (upstream 40 s); renewed every quarter of it.
    pub lease_duration: Duration,
    /// `nodeStatusReportFrequency`: a status heartbeat (upstream kubelet 5 min).
    pub status_report: Duration,
    /// Wait between connection attempts while the cloud is away (about 1 s, ±20 %).
    pub retry: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            keepalive: Duration::from_secs(15),
            lease_duration: Duration::from_secs(40),
            status_report: Duration::from_secs(300),
            retry: Duration::from_secs(1),
        }
    }
}

/// A fleet's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// CloudHub's WebSocket server, `host:port`.
    pub server: String,
    /// Node names are `{prefix}{index:05}`.
    pub prefix: String,
    /// The index of the first node.
    pub first: usize,
    /// How many nodes.
    pub nodes: usize,
    /// Handshakes in progress at most.
    pub parallel: usize,
    /// Register each node through the link (`insert` of the Node, as edged does); when false
    /// the node must exist in the API already (created with the edge label by the harness).
    pub register: bool,
    /// Timers.
    pub timings: Timings,
    /// Record what each node ACKed ([`Fleet::acked`]): for correctness tests.
    pub record_acks: bool,
    /// Behave like an upstream edge: announce no features in the handshake, so the whole
    /// Lease goes up at every renewal and a keepalive with every heartbeat, whatever the cloud
    /// supports (the scale bench's baseline).
    pub upstream_edge: bool,
}

impl Config {
    /// A fleet of `nodes` nodes against `server` with upstream's timings.
    pub fn new(server: impl Into<String>, nodes: usize) -> Self {
        Self {
            server: server.into(),
            prefix: "hollow-".to_owned(),
            first: 0,
            nodes,
            parallel: 64,
            register: true,
            timings: Timings::default(),
            record_acks: false,
            upstream_edge: false,
        }
    }

    /// The name of node `i` (0-based, counted from `first`).
    pub fn node_name(&self, i: usize) -> String {
        format!("{}{:05}", self.prefix, self.first + i)
    }
}

/// What a hollow node sends, for the per-kind counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Kind {
    /// EdgeHub keepalives.
    Keepalive,
    /// WebSocket pings (counted as messages; their bytes are a few frame bytes).
    Ping,
    /// ACKs of cloud messages.
    Ack,
    /// Node inserts.
    NodeInsert,
    /// Node status patches (registration and heartbeats).
    NodeStatus,
    /// Lease inserts, updates and compact renewals.
    Lease,
    /// Lease queries (after an `AlreadyExists`).
    Query,
    /// Pod status patches.
    PodPatch,
    /// Pod deletes.
    PodDelete,
}

impl Kind {
    const ALL: [Kind; 9] = [
        Kind::Keepalive,
        Kind::Ping,
        Kind::Ack,
        Kind::NodeInsert,
        Kind::NodeStatus,
        Kind::Lease,
        Kind::Query,
        Kind::PodPatch,
        Kind::PodDelete,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Keepalive => "keepalive",
            Kind::Ping => "ping",
            Kind::Ack => "ack",
            Kind::NodeInsert => "node_insert",
            Kind::NodeStatus => "node_status",
            Kind::Lease => "lease",
            Kind::Query => "query",
            Kind::PodPatch => "podpatch",
            Kind::PodDelete => "pod_delete",
        }
    }
}

/// Counters of a fleet (shared by its nodes; relaxed atomics).
#[derive(Debug, Default)]
pub struct Stats {
    /// Nodes with a session now.
    pub connected: AtomicU64,
    /// Sessions established.
    pub connects: AtomicU64,
    /// Failed connection attempts.
    pub connect_errors: AtomicU64,
    /// Sessions ended.
    pub disconnects: AtomicU64,
    /// Nodes registered (node insert answered, or the node already existed).
    pub registered: AtomicU64,
    /// Messages received from the cloud.
    pub received: AtomicU64,
    /// Pods in the fake runtimes now.
    pub pods: AtomicU64,
    /// Pods whose Running status the cloud accepted.
    pub pods_running: AtomicU64,
    /// Pods deleted through the cloud after their termination.
    pub pods_deleted: AtomicU64,
    /// Lease inserts and renewals the cloud accepted.
    pub lease_renewals: AtomicU64,
    /// Of those, compact renewals (`renew`, with a cloud of ours).
    pub lease_renewals_compact: AtomicU64,
    /// Requests the cloud refused (lease conflicts, patch errors…).
    pub request_errors: AtomicU64,
    sent: [AtomicU64; 9],
    sent_bytes: [AtomicU64; 9],
}

impl Stats {
    fn count(&self, kind: Kind, bytes: usize) {
        self.sent[kind as usize].fetch_add(1, Ordering::Relaxed);
        self.sent_bytes[kind as usize].fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Messages of `kind` sent.
    pub fn sent(&self, kind: Kind) -> u64 {
        self.sent[kind as usize].load(Ordering::Relaxed)
    }

    /// Bytes of `kind` sent (the messages' JSON, before WebSocket and TLS framing).
    pub fn sent_bytes(&self, kind: Kind) -> u64 {
        self.sent_bytes[kind as usize].load(Ordering::Relaxed)
    }

    /// Every counter as `(name, value)`.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = vec![
            ("hollow_connected".to_owned(), get(&self.connected)),
            ("hollow_connects_total".to_owned(), get(&self.connects)),
            ("hollow_connect_errors_total".to_owned(), get(&self.connect_errors)),
            ("hollow_disconnects_total".to_owned(), get(&self.disconnects)),
            ("hollow_registered".to_owned(), get(&self.registered)),
            ("hollow_received_total".to_owned(), get(&self.received)),
            ("hollow_pods".to_owned(), get(&self.pods)),
            ("hollow_pods_running".to_owned(), get(&self.pods_running)),
            ("hollow_pods_deleted".to_owned(), get(&self.pods_deleted)),
            ("hollow_lease_renewals_total".to_owned(), get(&self.lease_renewals)),
            ("hollow_lease_renewals_compact_total".to_owned(), get(&self.lease_renewals_compact)),
            ("hollow_request_errors_total".to_owned(), get(&self.request_errors)),
        ];
        for k in Kind::ALL {
            out.push((format!("hollow_sent_total{{kind=\"{}\"}}", k.as_str()), self.sent(k)));
            out.push((format!("hollow_sent_bytes_total{{kind=\"{}\"}}", k.as_str()), self.sent_bytes(k)));
        }
        out
    }

    /// The counters in Prometheus' text format.
    pub fn render(&self) -> String {
        self.snapshot().into_iter().map(|(k, v)| format!("{k} {v}\n")).collect()
    }
}

/// What each node ACKed: `(node, resource)` → the resourceVersion of the last message ACKed.
pub type Acked = HashMap<(String, String), String>;

/// State shared by a fleet's nodes.
struct Shared {
    cfg: Config,
    stats: Arc<Stats>,
    handshakes: Semaphore,
    acked: Option<Mutex<Acked>>,
    ca_der: Vec<u8>,
    stop: CancellationToken,
}

/// A running fleet.
pub struct Fleet {
    shared: Arc<Shared>,
    tasks: TaskTracker,
}

impl Fleet {
    /// Starts the fleet's nodes on the current runtime, each with a certificate signed by
    /// `ca` (signed inside the node's task, within the handshake limit).
    pub fn start(ca: Arc<Ca>, cfg: Config) -> Self {
        let shared = Arc::new(Shared {
            stats: Arc::default(),
            handshakes: Semaphore::new(cfg.parallel.max(1)),
            acked: cfg.record_acks.then(Mutex::default),
            ca_der: ca.cert_der().to_vec(),
            stop: CancellationToken::new(),
            cfg,
        });
        let tasks = TaskTracker::new();
        for i in 0..shared.cfg.nodes {
            tasks.spawn(node::run(shared.clone(), ca.clone(), i));
        }
        tasks.close();
        Self { shared, tasks }
    }

    /// The counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.shared.stats.clone()
    }

    /// What the nodes ACKed so far (empty unless `record_acks`).
    pub fn acked(&self) -> Acked {
        self.shared.acked.as_ref().map(|a| a.lock().clone()).unwrap_or_default()
    }

    /// The node names.
    pub fn names(&self) -> Vec<String> {
        (0..self.shared.cfg.nodes).map(|i| self.shared.cfg.node_name(i)).collect()
    }

    /// Closes every session and waits for the nodes to stop.
    pub async fn stop(self) {
        self.shared.stop.cancel();
        self.tasks.wait().await;
    }
}

/// `d` spread by ±20 %, differently per node and per call.
fn jittered(d: Duration, salt: usize) -> Duration {
    d.mul_f64(0.8 + 0.4 * unit(salt))
}

/// A pseudo-random number in [0, 1) from the clock and a salt (no RNG dependency needed).
fn unit(salt: usize) -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| u64::from(t.subsec_nanos()))
        .unwrap_or(0);
    let mut x = nanos ^ (salt as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    #[allow(clippy::cast_precision_loss)]
    let r = (x % 1_000_000) as f64 / 1_000_000.0;
    r
}
