//! The compact lease renewals of edges of ours (`renew`, `kubeedge_model::protocol::lease`) on
//! the lean HTTP/2 path ([`crate::kubeclient::lean`]): an idle fleet of 10,000 nodes renews
//! 1,000 times a second, and through kube-rs's client each renewal was a round of task
//! wake-ups and system calls of its own.
//!
//! One task owns the connection and every renewal on it. A renewal is authorized as the
//! workers authorize it (the node's own Lease only), then waits at most [`BATCH_WINDOW`] for
//! others: the batch's merge patches (`{"spec":{"renewTime":…}}`, no resourceVersion, as the
//! workers' path sends) leave together, at most [`MAX_OPEN`] open at a time. Each is answered
//! as before: `"OK"`, or the API's error as Go's `StatusError` (a `NotFound` makes the edge
//! create its Lease again). A renewal's [`Ticket`] is let go with its answer.
//!
//! Renewals are idempotent and an edge sends its next only after the answer to the last, so
//! they leave the per-node order of the workers' queue without changing what the API ends
//! with. A connection that fails is made again (at most once a second); renewals waiting
//! meanwhile are answered with the error, and the edge renews again at its next interval.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use http::{Method, Request, StatusCode, header};
use kubeedge_model::constants::resource_type;
use kubeedge_model::protocol::reply;
use kubeedge_model::{CloudResource, Content, Message};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::upstream::{Upstream, or_lease_ns, renew_patch, status_error};
use crate::inflight::Ticket;
use crate::kubeclient::lean::{LeanClient, LeanConn, LeanError, Payload};

/// How long a renewal waits for others to leave with it.
const BATCH_WINDOW: Duration = Duration::from_millis(20);
/// Renewals open on the connection at most (below any API server's stream limit).
const MAX_OPEN: usize = 100;
/// Renewals accepted and not answered yet, at most; beyond, EdgeController's workers take them.
pub const QUEUE: usize = 2048;
/// How long a renewal waits for its answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// The least time between two connection attempts.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// One compact renewal: the edge's message, the Lease it names, and its ticket.
pub struct Renewal {
    msg: Message,
    node: String,
    namespace: String,
    name: String,
    ticket: Option<Ticket>,
}

impl Renewal {
    /// The renewal `msg` asks for, or `None` when it names no Lease (then the workers refuse
    /// it as any other message).
    pub fn of(msg: &Message) -> Option<Target> {
        let r = CloudResource::parse(&msg.router.resource).ok()?;
        let name = r.path.name.clone().filter(|n| !n.is_empty())?;
        (r.path.resource_type == resource_type::LEASE).then(|| Target {
            namespace: or_lease_ns(r.path.namespace().unwrap_or_default()).to_owned(),
            node: r.node,
            name,
        })
    }

    /// The renewal of `target` that `msg` asks for.
    pub fn new(msg: Message, ticket: Option<Ticket>, target: Target) -> Self {
        let Target { node, namespace, name } = target;
        Self { msg, node, namespace, name, ticket }
    }

    /// The message and ticket, for the workers' path.
    pub fn into_parts(self) -> (Message, Option<Ticket>) {
        (self.msg, self.ticket)
    }

    fn request(&self, body: Bytes) -> Request<Payload> {
        let path = format!("/apis/coordination.k8s.io/v1/namespaces/{}/leases/{}", self.namespace, self.name);
        let mut req = Request::new(Payload(body));
        *req.method_mut() = Method::PATCH;
        *req.uri_mut() = path.parse().unwrap_or_default();
        let h = req.headers_mut();
        h.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/merge-patch+json"));
        h.insert(header::ACCEPT, header::HeaderValue::from_static("application/json"));
        req
    }
}

/// The node and the Lease a renewal names.
pub struct Target {
    node: String,
    namespace: String,
    name: String,
}

type Answer = Pin<Box<dyn Future<Output = (Renewal, Result<StatusCode, LeanError>)> + Send>>;
type Connecting<'a> = Pin<Box<dyn Future<Output = Result<LeanConn, LeanError>> + Send + 'a>>;

/// Serves renewals from `rx` until `stop`.
pub async fn run(mut rx: mpsc::Receiver<Renewal>, lean: LeanClient, up: Upstream, stop: CancellationToken) {
    let mut conn: Option<LeanConn> = None;
    let mut connecting: Option<Connecting<'_>> = None;
    let mut next_connect = Instant::now();
    let mut waiting: VecDeque<Renewal> = VecDeque::new();
    let mut open: FuturesUnordered<Answer> = FuturesUnordered::new();
    let mut batch_at: Option<Instant> = None;
    loop {
        let live = conn.as_ref().is_some_and(|c| !c.is_closed());
        tokio::select! {
            _ = stop.cancelled() => return,
            why = async { match conn.as_mut() { Some(c) => c.drive().await, None => std::future::pending().await } }, if live => {
                debug!(reason = %why, "The lease renewals' API connection ended; connecting again for the next renewal.");
                if !waiting.is_empty() {
                    batch_at.get_or_insert_with(Instant::now);
                }
            }
            made = async { match connecting.as_mut() { Some(c) => c.await, None => std::future::pending().await } }, if connecting.is_some() => {
                connecting = None;
                match made {
                    Ok(c) => {
                        conn = Some(c);
                        batch_at = Some(Instant::now());
                    }
                    Err(e) => {
                        warn!(error = %e, waiting = waiting.len(), "Could not connect to the API server for lease renewals.");
                        for r in waiting.drain(..) {
                            answer(&up, r, Err(LeanError::Transport(e.to_string()))).await;
                        }
                    }
                }
            }
            Some((r, result)) = open.next(), if !open.is_empty() => {
                answer(&up, r, result).await;
                if !waiting.is_empty() && batch_at.is_none() {
                    batch_at = Some(Instant::now());
                }
            }
            _ = async { match batch_at { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } }, if batch_at.is_some() => {
                batch_at = None;
                if conn.as_ref().is_none_or(LeanConn::is_closed) {
                    if connecting.is_none() {
                        // Paced: a server that is down is not asked 50 times a second.
                        let at = next_connect;
                        next_connect = Instant::now().max(at) + RECONNECT_PAUSE;
                        let lean = &lean;
                        connecting = Some(Box::pin(async move {
                            tokio::time::sleep_until(at).await;
                            lean.connect().await
                        }));
                    }
                    continue;
                }
                if let Some(c) = conn.as_mut() {
                    start(c, &mut waiting, &mut open);
                }
            }
            got = rx.recv(), if waiting.len() + open.len() < QUEUE => {
                let Some(r) = got else { return };
                if up.authorize_renewal(&r.msg, &r.node, &r.namespace, &r.name).await {
                    waiting.push_back(r);
                    batch_at.get_or_insert_with(|| Instant::now() + BATCH_WINDOW);
                }
            }
        }
    }
}

/// Starts the waiting renewals the connection has room for.
fn start(conn: &mut LeanConn, waiting: &mut VecDeque<Renewal>, open: &mut FuturesUnordered<Answer>) {
    let body = Bytes::from(renew_patch());
    while open.len() < MAX_OPEN && !waiting.is_empty() {
        match conn.has_room() {
            Ok(true) => {}
            // Again when an open one ends.
            Ok(false) => return,
            Err(e) => {
                debug!(error = %e, "The lease renewals' API connection refused a request.");
                return;
            }
        }
        let Some(r) = waiting.pop_front() else { return };
        let answer = conn.request(r.request(body.clone()), ANSWER_TIMEOUT);
        open.push(Box::pin(async move { (r, answer.await) }));
    }
}

/// The edge's answer: `"OK"`, or the error as Go's `StatusError`.
async fn answer(up: &Upstream, r: Renewal, result: Result<StatusCode, LeanError>) {
    let content = match result {
        Ok(_) => {
            debug!(lease = r.name, "Renewed a node lease.");
            reply::ok()
        }
        Err(e) => Content::from_value(&status_error(&e.into_kube())),
    };
    up.tx.raw(reply::response(&r.msg, content)).await;
    drop(r.ticket);
}
