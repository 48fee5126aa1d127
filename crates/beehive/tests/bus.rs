//! The bus and the supervisor, driven through real modules on a paused clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use kubeedge_beehive::{
    BoxFuture, Bus, BusError, CHANNEL_CAPACITY, Module, ModuleContext, ModuleError, ModuleState, Registry,
    RestartPolicy,
};
use kubeedge_model::{Content, Message};
use tokio::sync::mpsc;
use tokio::time::timeout;

const DEADLOCK: Duration = Duration::from_secs(300);

/// Replies to every message with `echo:{resource}`.
struct Echo(&'static str, &'static str);

impl Module for Echo {
    fn name(&self) -> &'static str {
        self.0
    }
    fn group(&self) -> &'static str {
        self.1
    }
    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(async move {
            while let Some(msg) = ctx.recv().await {
                let reply = Message::response_to(&msg, Content::string(&format!("echo:{}", self.0)));
                ctx.bus.send_resp(reply);
            }
            Ok(())
        })
    }
}

/// Hands every message to the test; fails `fail` times first (the last failure a panic).
struct Sink {
    name: &'static str,
    out: mpsc::UnboundedSender<Message>,
    fail: u32,
    runs: Arc<AtomicU32>,
}

impl Module for Sink {
    fn name(&self) -> &'static str {
        self.name
    }
    fn group(&self) -> &'static str {
        "sinks"
    }
    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(async move {
            let run = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
            if run < self.fail {
                return Err(format!("failure {run}").into());
            }
            if run == self.fail {
                panic!("panic on run {run}");
            }
            while let Some(msg) = ctx.recv().await {
                let _ = self.out.send(msg);
            }
            Ok(())
        })
    }
}

/// Never returns and ignores shutdown.
struct Stuck;

impl Module for Stuck {
    fn name(&self) -> &'static str {
        "stuck"
    }
    fn group(&self) -> &'static str {
        "stuck"
    }
    fn run<'a>(&'a mut self, _ctx: &'a mut ModuleContext) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(std::future::pending())
    }
}

fn sink(name: &'static str, fail: u32) -> (Sink, mpsc::UnboundedReceiver<Message>, Arc<AtomicU32>) {
    let (out, rx) = mpsc::unbounded_channel();
    let runs = Arc::new(AtomicU32::new(0));
    (Sink { name, out, fail, runs: runs.clone() }, rx, runs)
}

fn msg(resource: &str) -> Message {
    Message::build("test", "resource", resource, "insert", Content::null())
}

#[tokio::test(start_paused = true)]
async fn send_delivers_and_counts() {
    let (s, mut rx, _) = sink("a", 0);
    let mut reg = Registry::new();
    reg.register(Box::new(s)).unwrap();
    let sup = reg.start(RestartPolicy::default());
    let bus = sup.bus();
    bus.send("a", msg("x/pod/1")).await.unwrap();
    assert_eq!(timeout(DEADLOCK, rx.recv()).await.unwrap().unwrap().router.resource, "x/pod/1");
    assert_eq!(bus.send("nope", msg("x")).await, Err(BusError::UnknownModule("nope".into())));
    let stats = bus.stats();
    assert_eq!((stats[0].module, stats[0].received, stats[0].queue_depth), ("a", 1, 0));
    assert!(sup.shutdown(Duration::from_secs(5)).await.is_clean());
}

#[tokio::test(start_paused = true)]
async fn send_sync_round_trip_and_timeout() {
    let mut reg = Registry::new();
    reg.register(Box::new(Echo("echo", "g"))).unwrap();
    let (s, _rx, _) = sink("silent", 0);
    reg.register(Box::new(s)).unwrap();
    let sup = reg.start(RestartPolicy::default());
    let bus = sup.bus();

    let req = msg("ns/pod/p");
    let reply = bus.send_sync("echo", req.clone(), Duration::from_secs(1)).await.unwrap();
    assert_eq!(reply.parent_id(), Some(req.id()));
    assert_eq!(reply.content.as_str().as_deref(), Some("echo:echo"));
    assert_eq!(bus.pending_requests(), 0);

    // Nobody answers: the timeout fires on the paused clock and the waiter is gone.
    let err = bus.send_sync("silent", msg("ns/pod/q"), Duration::from_secs(30)).await.unwrap_err();
    assert!(matches!(err, BusError::Timeout { expected: 1, received: 0, .. }), "{err:?}");
    assert_eq!(bus.pending_requests(), 0);

    // Zero means the 30 s default.
    let started = tokio::time::Instant::now();
    let _ = bus.send_sync("silent", msg("ns/pod/r"), Duration::ZERO).await;
    assert_eq!(started.elapsed(), Duration::from_secs(30));
    assert_eq!(bus.pending_requests(), 0);

    // A reply that comes too late is dropped, not delivered anywhere.
    assert!(!bus.send_resp(Message::response_to(&req, Content::null())));
    assert_eq!(bus.unanswered_replies(), 1);
    sup.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn pending_waiters_never_leak() {
    let mut reg = Registry::new();
    let (s, _rx, _) = sink("silent", 0);
    reg.register(Box::new(s)).unwrap();
    let sup = reg.start(RestartPolicy::default());
    let bus = sup.bus();

    // The caller gives up (its future is dropped).
    let fut = bus.send_sync("silent", msg("a/b/c"), Duration::from_secs(60));
    assert!(timeout(Duration::from_millis(10), fut).await.is_err());
    assert_eq!(bus.pending_requests(), 0);

    // An unknown destination fails at once without leaving a waiter.
    assert!(matches!(
        bus.send_sync("ghost", msg("a/b/c"), Duration::from_secs(1)).await,
        Err(BusError::UnknownModule(_))
    ));
    assert_eq!(bus.pending_requests(), 0);

    // Shutdown fails a request that is still waiting.
    let waiting = tokio::spawn({
        let bus = bus.clone();
        async move { bus.send_sync("silent", msg("a/b/d"), Duration::from_secs(600)).await }
    });
    while bus.pending_requests() == 0 {
        tokio::task::yield_now().await;
    }
    assert!(sup.shutdown(Duration::from_secs(5)).await.is_clean());
    assert!(matches!(waiting.await.unwrap(), Err(BusError::Closed(_))));
    assert_eq!(bus.pending_requests(), 0);
}

#[tokio::test(start_paused = true)]
async fn duplicate_request_ids_are_refused() {
    let mut reg = Registry::new();
    let (s, _rx, _) = sink("silent", 0);
    reg.register(Box::new(s)).unwrap();
    let sup = reg.start(RestartPolicy::default());
    let bus = sup.bus();
    let m = msg("a/b/c");
    let first = tokio::spawn({
        let (bus, m) = (bus.clone(), m.clone());
        async move { bus.send_sync("silent", m, Duration::from_secs(5)).await }
    });
    while bus.pending_requests() == 0 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        bus.send_sync("silent", m.clone(), Duration::from_secs(5)).await,
        Err(BusError::DuplicateRequest(m.id().to_owned()))
    );
    assert!(matches!(first.await.unwrap(), Err(BusError::Timeout { .. })));
    sup.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn groups_broadcast_and_collect_replies() {
    let mut reg = Registry::new();
    reg.register(Box::new(Echo("e1", "echoes"))).unwrap();
    reg.register(Box::new(Echo("e2", "echoes"))).unwrap();
    reg.register(Box::new(Echo("e3", "echoes"))).unwrap();
    let (s, mut rx, _) = sink("s1", 0);
    reg.register(Box::new(s)).unwrap();
    let sup = reg.start(RestartPolicy::default());
    let bus = sup.bus();
    assert_eq!(bus.group_members("echoes"), vec!["e1", "e2", "e3"]);

    assert_eq!(bus.send_to_group("sinks", msg("g/pod/1")).await, Ok(1));
    assert_eq!(rx.recv().await.unwrap().router.resource, "g/pod/1");
    assert!(matches!(bus.send_to_group("nobody", msg("x")).await, Err(BusError::UnknownGroup(_))));

    let replies = bus.send_to_group_sync("echoes", msg("g/pod/2"), Duration::from_secs(1)).await.unwrap();
    let mut who: Vec<_> = replies.iter().map(|r| r.content.as_str().unwrap().into_owned()).collect();
    who.sort();
    assert_eq!(who, ["echo:e1", "echo:e2", "echo:e3"]);
    assert_eq!(bus.pending_requests(), 0);

    // A group with a silent member times out, saying how many replied.
    let err = bus.send_to_group_sync("sinks", msg("g/pod/3"), Duration::from_secs(2)).await.unwrap_err();
    assert!(matches!(err, BusError::Timeout { received: 0, expected: 1, .. }));
    assert_eq!(bus.pending_requests(), 0);
    sup.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn full_inbox_drops_on_try_send_and_waits_on_send() {
    let mut reg = Registry::new();
    reg.register(Box::new(Stuck)).unwrap();
    let sup = reg.start(RestartPolicy::default());
    let bus = sup.bus();
    for _ in 0..CHANNEL_CAPACITY {
        bus.try_send("stuck", msg("a/b/c")).unwrap();
    }
    assert_eq!(bus.try_send("stuck", msg("a/b/c")), Err(BusError::Full("stuck".into())));
    let s = &bus.stats()[0];
    assert_eq!((s.queue_depth, s.dropped), (CHANNEL_CAPACITY, 1));
    // `send` applies backpressure: it is still waiting after a long while.
    assert!(timeout(Duration::from_secs(60), bus.send("stuck", msg("a/b/c"))).await.is_err());
    let report = sup.shutdown(Duration::from_secs(3)).await;
    assert_eq!(report.not_stopped, vec!["stuck"]);
}

#[tokio::test(start_paused = true)]
async fn failed_and_panicking_modules_restart_with_backoff_keeping_their_inbox() {
    let (s, mut rx, runs) = sink("flaky", 3); // two errors, then a panic, then healthy
    let mut reg = Registry::new();
    reg.register(Box::new(s)).unwrap();
    let start = tokio::time::Instant::now();
    let sup = reg.start(RestartPolicy::default());
    let bus = sup.bus();
    // Queued while the module is failing: must survive the restarts.
    bus.send("flaky", msg("q/pod/1")).await.unwrap();
    let got = timeout(DEADLOCK, rx.recv()).await.unwrap().unwrap();
    assert_eq!(got.router.resource, "q/pod/1");
    assert_eq!(runs.load(Ordering::SeqCst), 4);
    // Backoff 1 s + 2 s + 4 s on the paused clock.
    assert_eq!(start.elapsed(), Duration::from_secs(7));
    assert_eq!(bus.stats()[0].restarts, 3);
    assert_eq!(sup.states(), vec![("flaky", ModuleState::Running)]);
    assert!(sup.is_ready());
    assert!(sup.shutdown(Duration::from_secs(5)).await.is_clean());
}

#[tokio::test(start_paused = true)]
async fn never_policy_leaves_a_failed_module_down() {
    let (s, _rx, runs) = sink("once", 2);
    let mut reg = Registry::new();
    reg.register(Box::new(s)).unwrap();
    let sup = reg.start(RestartPolicy::never());
    while sup.states()[0].1 != ModuleState::Failed {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(!sup.is_ready());
    assert!(sup.shutdown(Duration::from_secs(1)).await.is_clean());
}

#[test]
fn backoff_grows_and_caps() {
    let p = RestartPolicy::default();
    let secs: Vec<_> = (1..=7).map(|a| p.backoff(a).as_secs()).collect();
    assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30]);
    assert_eq!(p.backoff(u32::MAX), Duration::from_secs(30));
}

#[test]
fn duplicate_module_names_are_refused() {
    let mut reg = Registry::new();
    reg.register(Box::new(Echo("x", "g"))).unwrap();
    assert_eq!(reg.register(Box::new(Echo("x", "h"))), Err(BusError::DuplicateModule("x".into())));
    assert_eq!(reg.names(), ["x"]);
}

#[allow(dead_code)]
fn bus_is_send_sync(b: Bus) -> impl Send + Sync {
    b
}

/// Spawns a task that panics on its first run (or one that ignores shutdown), reports the
/// run's number once its task is spawned, then waits.
struct Spawning {
    runs: u32,
    spawned: mpsc::UnboundedSender<u32>,
    stubborn: bool,
}

impl Module for Spawning {
    fn name(&self) -> &'static str {
        "spawning"
    }
    fn group(&self) -> &'static str {
        "spawning"
    }
    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(async move {
            let run = self.runs;
            self.runs += 1;
            if self.stubborn {
                ctx.spawn(std::future::pending::<()>());
            } else if run == 0 {
                ctx.spawn(async { panic!("a task fails") });
            } else {
                let stop = ctx.shutdown().clone();
                ctx.spawn(async move { stop.cancelled().await });
            }
            let _ = self.spawned.send(run);
            while ctx.recv().await.is_some() {}
            Ok(())
        })
    }
}

/// Issue #22 item 3: a panic in a module's task fails the module (it is restarted); shutdown
/// waits for the module's tasks and names a module whose task does not end.
#[tokio::test(start_paused = true)]
async fn module_tasks_are_tracked() {
    let (spawned, mut runs) = mpsc::unbounded_channel();
    let mut reg = Registry::new();
    reg.register(Box::new(Spawning { runs: 0, spawned, stubborn: false })).unwrap();
    let sup = reg.start(RestartPolicy::default());
    let second = timeout(DEADLOCK, async {
        runs.recv().await;
        runs.recv().await
    });
    assert_eq!(second.await.expect("restarted after its task panicked"), Some(1));
    assert!(sup.shutdown(Duration::from_secs(5)).await.is_clean(), "a task that ends with shutdown is waited for");

    let (spawned, mut runs) = mpsc::unbounded_channel();
    let mut reg = Registry::new();
    reg.register(Box::new(Spawning { runs: 0, spawned, stubborn: true })).unwrap();
    let sup = reg.start(RestartPolicy::default());
    timeout(DEADLOCK, runs.recv()).await.expect("the stubborn task is spawned");
    let report = sup.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.not_stopped, vec!["spawning"], "a task that ignores shutdown is named");
}

#[tokio::test(start_paused = true)]
async fn an_expected_reply_arrives_times_out_and_never_leaks() {
    let mut reg = Registry::new();
    let (s, _rx, _) = sink("silent", 0);
    reg.register(Box::new(s)).unwrap();
    let sup = reg.start(RestartPolicy::default());
    let bus = sup.bus();

    let request = msg("a/b/c");
    let pending = bus.expect_reply(request.id()).unwrap();
    assert!(matches!(bus.expect_reply(request.id()), Err(BusError::DuplicateRequest(_))));
    assert!(bus.send_resp(Message::response_to(&request, Content::string("done"))));
    let reply = pending.wait(Duration::from_secs(1)).await.unwrap();
    assert_eq!(reply.header.parent_id, request.header.id);
    assert_eq!(bus.pending_requests(), 0);

    // Nobody answers: a timeout, and the waiter is gone.
    let other = msg("a/b/d");
    let pending = bus.expect_reply(other.id()).unwrap();
    assert!(matches!(pending.wait(Duration::from_secs(1)).await, Err(BusError::Timeout { .. })));
    assert_eq!(bus.pending_requests(), 0);
    // Dropped unanswered: gone too, and a late reply answers nothing.
    drop(bus.expect_reply(other.id()).unwrap());
    assert_eq!(bus.pending_requests(), 0);
    assert!(!bus.send_resp(Message::response_to(&other, Content::null())));
    let _ = sup.shutdown(Duration::from_secs(5)).await;
}
