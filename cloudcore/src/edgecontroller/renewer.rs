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
//! The HTTP/2 path does not cost a renewal: while there is no connection (the server does not
//! agree to HTTP/2, it cannot be reached, or the last attempt failed) renewals go through
//! kube-rs's client, as every other request does, and so does a renewal whose request failed
//! on the connection (no answer within [`ANSWER_TIMEOUT`], the connection lost) or that the API
//! answered 429, 503 or 504 (kube-rs's client retries those, after `Retry-After`). A failure
//! retires the connection; the next is tried after a pause that doubles from 1 s to
//! [`MAX_RECONNECT_PAUSE`] while failures follow each other, and an answer on the connection
//! resets it. A connection that ends, even with an error, fails through the requests it had
//! not answered yet (a server closing after its GOAWAY may reset the socket while h2 writes
//! its last frames, after every answer came: no failure then); one that ends or is sent away
//! before answering anything counts too, unless an answer of it is taken after all. A
//! graceful GOAWAY is no failure: the connection finishes its open renewals while the next is
//! made, and a renewal the server did not take (GOAWAY, a refused stream) goes once more on
//! the connection, then through kube-rs's client. A connection is also replaced before its
//! HTTP/2 stream ids run out. At shutdown, renewals not answered yet are dropped with their
//! tickets; the edge renews again after its request times out.
//!
//! Renewals are idempotent and set the time of the moment they are written, so they leave the
//! per-node order of the workers' queue without changing what the API ends with.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use http::{Method, Request, StatusCode, header};
use kubeedge_model::constants::{module, resource_type};
use kubeedge_model::protocol::reply;
use kubeedge_model::{CloudResource, Content, Message};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::upstream::{Upstream, or_lease_ns, renew_lease, renew_patch, status_error};
use crate::inflight::Ticket;
use crate::kubeclient::lean::{LeanClient, LeanConn, LeanError, Payload};

/// How long a renewal waits for others to leave with it.
const BATCH_WINDOW: Duration = Duration::from_millis(20);
/// Renewals open at most (on the connection, or through kube-rs's client without one).
const MAX_OPEN: usize = 100;
/// Renewals this task holds (waiting or open) at most; as many more wait in its channel, and
/// beyond those EdgeController's workers take them.
pub const QUEUE: usize = 2048;
/// How long a renewal waits for its answer on the connection.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest pause between connection attempts while they fail.
const MAX_RECONNECT_PAUSE: Duration = Duration::from_secs(60);
/// Requests after which a connection is replaced (HTTP/2 stream ids end at 2³¹, odd ones
/// the client's).
const RETIRE_AFTER: u64 = 1 << 29;

/// One compact renewal: the edge's message, the Lease it names, and its ticket.
pub struct Renewal {
    msg: Message,
    node: String,
    namespace: String,
    name: String,
    ticket: Option<Ticket>,
    /// Sent once more already after the server did not take it (GOAWAY, refused stream).
    again: bool,
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
        Self { msg, node, namespace, name, ticket, again: false }
    }

    /// The message and ticket, for the workers' path.
    pub fn into_parts(self) -> (Message, Option<Ticket>) {
        (self.msg, self.ticket)
    }

    /// The merge patch `body` of this Lease (its path must make a URI: names are checked
    /// by the authorizer to be the node's, which cannot hold a `/` or a space).
    fn request(&self, body: Bytes) -> Result<Request<Payload>, String> {
        let path = format!("/apis/coordination.k8s.io/v1/namespaces/{}/leases/{}", self.namespace, self.name);
        let uri =
            http::Uri::try_from(path.as_str()).map_err(|e| format!("lease {}/{}: {e}", self.namespace, self.name))?;
        let mut req = Request::new(Payload(body));
        *req.method_mut() = Method::PATCH;
        *req.uri_mut() = uri;
        let h = req.headers_mut();
        h.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/merge-patch+json"));
        h.insert(header::ACCEPT, header::HeaderValue::from_static("application/json"));
        Ok(req)
    }
}

/// The node and the Lease a renewal names.
pub struct Target {
    node: String,
    namespace: String,
    name: String,
}

/// How a renewal went: on connection `conn`, or through kube-rs's client.
enum Outcome {
    Lean { conn: u64, result: Result<StatusCode, LeanError> },
    Kube(Result<(), kube::Error>),
}

type Answer = Pin<Box<dyn Future<Output = (Renewal, Outcome)> + Send>>;
type Connecting<'a> = Pin<Box<dyn Future<Output = Result<LeanConn, LeanError>> + Send + 'a>>;

/// The connection and its attempts.
struct Link<'a> {
    lean: &'a LeanClient,
    conn: Option<LeanConn>,
    /// The current connection's number (answers of an older one do not retire it).
    id: u64,
    connecting: Option<Connecting<'a>>,
    /// A connection the server is closing gracefully (GOAWAY): driven until its open requests
    /// are answered, no new ones started on it.
    draining: Option<LeanConn>,
    /// Whether the current connection answered anything: one that ends or goes away before
    /// it did counts as a failure (the next attempt is paced).
    answered_any: bool,
    /// The last connection whose failure was counted (its other open requests fail with it).
    counted: u64,
    /// Requests started on the current connection whose outcome was not taken yet.
    open_here: usize,
    /// The current connection ended or went away before an answer of it was taken, with
    /// requests still open on it (h2 may end a connection in the same poll that brings its
    /// first answers): their outcomes decide whether that was a failure (this one, if so). No
    /// connection is made meanwhile.
    judging: Option<&'static str>,
    /// Why the current connection ended, if with an error (what a failure of its requests
    /// reports: theirs only repeats it).
    ended_with: Option<String>,
    /// Failures in a row (connecting, or requests on the connection).
    failures: u32,
    next_attempt: Instant,
}

impl<'a> Link<'a> {
    fn live(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| !c.is_closed())
    }

    /// Starts connecting if no attempt runs and the pause after failures is over.
    fn connect(&mut self) {
        if self.connecting.is_none() && !self.live() && self.judging.is_none() && Instant::now() >= self.next_attempt {
            let lean = self.lean;
            self.connecting = Some(Box::pin(lean.connect()));
        }
    }

    /// A new connection, now the current one.
    fn connected(&mut self, conn: LeanConn) {
        self.id += 1;
        self.conn = Some(conn);
        self.answered_any = false;
        self.ended_with = None;
        self.open_here = 0;
        self.judging = None;
    }

    /// A failure of connection `conn` (the current one, counted once: its other open requests
    /// fail with it), or of an attempt to connect (`None`): the connection is retired and the
    /// next attempt paced.
    fn failed(&mut self, conn: Option<u64>, why: &dyn std::fmt::Display) {
        if let Some(c) = conn {
            if c != self.id || self.counted == c {
                return;
            }
            self.counted = c;
        }
        self.conn = None;
        match conn.and_then(|_| self.ended_with.take()) {
            Some(e) => self.count(&e),
            None => self.count(why),
        }
    }

    /// The current connection ended (`why`, if with an error): no failure by itself unless
    /// no answer of it was taken yet; requests it had not answered fail with it (a transport
    /// error) and count the failure then ([`Link::failed`]).
    fn ended(&mut self, why: Option<String>) {
        self.conn = None;
        self.ended_with = why;
        self.judge("the API server closed the connection before answering anything");
    }

    /// The current connection ended or went away: a failure (`why`, or the connection's own
    /// error) if it answered nothing, decided now, or when the outcomes of its open requests
    /// are taken ([`Link::settled`]).
    fn judge(&mut self, why: &'static str) {
        if self.answered_any || self.counted == self.id {
            return;
        }
        if self.open_here > 0 {
            self.judging = Some(why);
        } else {
            self.failed(Some(self.id), &why);
        }
    }

    /// The outcome of a request started on connection `conn` was taken (after the outcome's
    /// arm: [`Link::answered`], [`Link::failed`], [`Link::drain`] or none of them saw it).
    fn settled(&mut self, conn: u64) {
        if conn != self.id {
            return;
        }
        debug_assert!(self.open_here > 0, "a request settled that was not counted open");
        self.open_here = self.open_here.saturating_sub(1);
        if let Some(why) = self.judging
            && (self.answered_any || self.counted == conn || self.open_here == 0)
        {
            self.judging = None;
            if !self.answered_any {
                self.failed(Some(conn), &why);
            }
        }
    }

    fn count(&mut self, why: &dyn std::fmt::Display) {
        self.failures += 1;
        let pause = Duration::from_secs(1u64 << (self.failures - 1).min(6)).min(MAX_RECONNECT_PAUSE);
        self.next_attempt = Instant::now() + pause;
        if self.failures == 1 {
            warn!(error = %why, retry_in = ?pause, "Lease renewals go through the Kubernetes client until their HTTP/2 connection to the API server works again.");
        } else {
            debug!(error = %why, failures = self.failures, retry_in = ?pause, "The lease renewals' HTTP/2 connection failed again.");
        }
    }

    /// The server is closing connection `conn` gracefully: no failure; its open requests
    /// finish on it while the next connection is made at once.
    fn drain(&mut self, conn: u64) {
        if conn == self.id && self.conn.is_some() {
            debug!("The API server is closing the lease renewals' HTTP/2 connection (GOAWAY); making another.");
            self.draining = self.conn.take();
            // A server that sends every new connection away is not asked again at once.
            self.judge("the API server sent a new connection away before answering anything");
            self.connect();
        }
    }

    /// An answer came on connection `conn`.
    fn answered(&mut self, conn: u64) {
        if conn != self.id {
            return;
        }
        self.answered_any = true;
        // Not after a failure of this connection was counted (a late answer of it).
        if self.counted != conn && self.failures > 0 {
            info!("Lease renewals are back on their HTTP/2 connection to the API server.");
            self.failures = 0;
        }
    }
}

/// Serves renewals from `rx` until `stop`.
pub async fn run(mut rx: mpsc::Receiver<Renewal>, lean: LeanClient, up: Upstream, stop: CancellationToken) {
    let mut link = Link {
        lean: &lean,
        conn: None,
        id: 0,
        connecting: None,
        draining: None,
        answered_any: false,
        counted: 0,
        open_here: 0,
        judging: None,
        ended_with: None,
        failures: 0,
        next_attempt: Instant::now(),
    };
    let mut waiting: VecDeque<Renewal> = VecDeque::new();
    let mut open: FuturesUnordered<Answer> = FuturesUnordered::new();
    let mut batch_at: Option<Instant> = None;
    let mut outbox = Outbox::default();
    link.connect();
    loop {
        outbox.next(&up);
        let live = link.live();
        let draining = link.draining.as_ref().is_some_and(|c| !c.is_closed());
        tokio::select! {
            _ = stop.cancelled() => return,
            ended = async { match link.conn.as_mut() { Some(c) => c.drive().await, None => std::future::pending().await } }, if live => {
                // An error is no failure by itself: when the server closes the connection after
                // its GOAWAY, h2's last frames may meet a closed socket after every answer came.
                // Requests not answered yet fail with it and count the failure (`Link::failed`).
                match &ended {
                    Ok(()) => debug!("The API server closed the lease renewals' HTTP/2 connection."),
                    Err(why) => debug!(error = %why, "The lease renewals' HTTP/2 connection ended."),
                }
                link.ended(ended.err());
                if !waiting.is_empty() {
                    batch_at.get_or_insert_with(Instant::now);
                }
            }
            _ = async { match link.draining.as_mut() { Some(c) => c.drive().await, None => std::future::pending().await } }, if draining => {
                link.draining = None;
            }
            () = async { match outbox.sending.as_mut() { Some(s) => s.await, None => std::future::pending().await } }, if outbox.sending.is_some() => {
                outbox.sending = None;
            }
            made = async { match link.connecting.as_mut() { Some(c) => c.await, None => std::future::pending().await } }, if link.connecting.is_some() => {
                link.connecting = None;
                match made {
                    Ok(c) => link.connected(c),
                    Err(e) => link.failed(None, &e),
                }
                if !waiting.is_empty() {
                    batch_at = Some(Instant::now());
                }
            }
            Some((r, outcome)) = open.next(), if !open.is_empty() => {
                let on = match &outcome {
                    Outcome::Lean { conn, .. } => Some(*conn),
                    Outcome::Kube(_) => None,
                };
                match outcome {
                    Outcome::Lean { conn, result: Err(LeanError::Transport(why)) } => {
                        // Not the renewal's fault: it goes again through kube-rs's client.
                        link.failed(Some(conn), &why);
                        open.push(through_kube(&up, r));
                    }
                    Outcome::Lean { conn, result: Err(e @ (LeanError::GoingAway(_) | LeanError::Refused(_))) } => {
                        // Not handled by the server: once more on the connection (the next
                        // one after a GOAWAY), then through kube-rs's client.
                        if matches!(e, LeanError::GoingAway(_)) {
                            link.drain(conn);
                        }
                        if r.again {
                            open.push(through_kube(&up, r));
                        } else {
                            let mut r = r;
                            r.again = true;
                            waiting.push_front(r);
                        }
                    }
                    Outcome::Lean { conn, result: Err(LeanError::Api(s)) } if matches!(s.code, 429 | 503 | 504) => {
                        // Throttled or unavailable: kube-rs's client retries these (Retry-After).
                        link.answered(conn);
                        open.push(through_kube(&up, r));
                    }
                    Outcome::Lean { conn, result } => {
                        link.answered(conn);
                        outbox.answer(&up, r, result.map(|_| ()).map_err(LeanError::into_kube));
                    }
                    Outcome::Kube(result) => outbox.answer(&up, r, result),
                }
                if let Some(conn) = on {
                    link.settled(conn);
                }
                if !waiting.is_empty() && batch_at.is_none() {
                    batch_at = Some(Instant::now());
                }
            }
            _ = async { match batch_at { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } }, if batch_at.is_some() => {
                batch_at = None;
                link.connect();
                if link.live() {
                    start(&mut link, &mut waiting, &mut open);
                }
                if !link.live() && (link.connecting.is_none() || link.failures > 0) {
                    // No connection to wait for (or it failed last time): kube-rs's client.
                    while open.len() < MAX_OPEN && let Some(r) = waiting.pop_front() {
                        open.push(through_kube(&up, r));
                    }
                }
                // Else a connection is being made after none failed: its outcome starts the
                // batch (within the connect timeout).
            }
            got = rx.recv(), if waiting.len() + open.len() + outbox.len() < QUEUE => {
                let Some(r) = got else { return };
                match up.authorize_renewal(&r.msg, &r.node, &r.namespace, &r.name).await {
                    Ok(()) => {
                        waiting.push_back(r);
                        batch_at.get_or_insert_with(|| Instant::now() + BATCH_WINDOW);
                    }
                    Err(refusal) => outbox.push(&up, refusal, r.ticket),
                }
            }
        }
    }
}

/// Starts the waiting renewals the connection has room for.
fn start(link: &mut Link<'_>, waiting: &mut VecDeque<Renewal>, open: &mut FuturesUnordered<Answer>) {
    let body = Bytes::from(renew_patch());
    let id = link.id;
    while open.len() < MAX_OPEN && !waiting.is_empty() {
        let Some(conn) = link.conn.as_mut() else { return };
        if conn.started() >= RETIRE_AFTER {
            info!(
                requests = conn.started(),
                "Replacing the lease renewals' HTTP/2 connection before its stream ids run out."
            );
            // Its open requests finish on it.
            link.draining = link.conn.take();
            link.connect();
            return;
        }
        match conn.has_room() {
            Ok(true) => {}
            // Again when an open one ends.
            Ok(false) => return,
            Err(LeanError::GoingAway(_) | LeanError::Refused(_)) => {
                link.drain(id);
                return;
            }
            Err(e) => {
                link.failed(Some(id), &e);
                return;
            }
        }
        let Some(r) = waiting.pop_front() else { return };
        let req = match r.request(body.clone()) {
            Ok(req) => req,
            Err(why) => {
                open.push(Box::pin(async move {
                    let status = kube::core::Status::failure(&why, "BadRequest").with_code(400);
                    (r, Outcome::Kube(Err(kube::Error::Api(Box::new(status)))))
                }));
                continue;
            }
        };
        let answer = conn.request(req, ANSWER_TIMEOUT);
        link.open_here += 1;
        open.push(Box::pin(async move { (r, Outcome::Lean { conn: id, result: answer.await }) }));
    }
}

/// The renewal through kube-rs's client, as EdgeController's workers send it.
fn through_kube(up: &Upstream, r: Renewal) -> Answer {
    let (client, namespace, name) = (up.client.clone(), r.namespace.clone(), r.name.clone());
    Box::pin(async move { (r, Outcome::Kube(renew_lease(client, namespace, name).await)) })
}

/// The answers, handed to CloudHub at once while its inbox has room, else queued and sent in
/// order without holding the loop (the connection must be driven meanwhile). A renewal's
/// ticket goes with its answer.
#[derive(Default)]
struct Outbox {
    queued: VecDeque<(Message, Option<Ticket>)>,
    sending: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl Outbox {
    fn len(&self) -> usize {
        self.queued.len() + usize::from(self.sending.is_some())
    }

    /// The edge's answer to `r`: `"OK"`, or the error as Go's `StatusError`.
    fn answer(&mut self, up: &Upstream, r: Renewal, result: Result<(), kube::Error>) {
        let content = match result {
            Ok(()) => {
                debug!(lease = r.name, "Renewed a node lease.");
                reply::ok()
            }
            Err(e) => Content::from_value(&status_error(&e)),
        };
        self.push(up, reply::response(&r.msg, content), r.ticket);
    }

    fn push(&mut self, up: &Upstream, reply: Message, ticket: Option<Ticket>) {
        if self.queued.is_empty() && self.sending.is_none() {
            match up.tx.bus.try_send_to_sole(module::CLOUDHUB, reply) {
                Ok(()) => drop(ticket),
                Err(m) => self.queued.push_back((m, ticket)),
            }
        } else {
            self.queued.push_back((reply, ticket));
        }
    }

    /// Starts sending the next queued answer when none is on its way.
    fn next(&mut self, up: &Upstream) {
        if self.sending.is_none()
            && let Some((m, ticket)) = self.queued.pop_front()
        {
            let tx = up.tx.clone();
            self.sending = Some(Box::pin(async move {
                tx.raw(m).await;
                drop(ticket);
            }));
        }
    }
}
