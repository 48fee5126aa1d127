//! Bus throughput and request/response latency.
//! Run: `cargo bench -p kubeedge-beehive --bench bus`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kubeedge_beehive::{BoxFuture, Module, ModuleContext, ModuleError, Registry, RestartPolicy};
use kubeedge_model::{Content, Message};
use tokio::sync::Notify;

/// Counts messages and wakes the bench when it has seen `target`.
struct Counter {
    seen: Arc<AtomicU64>,
    target: Arc<AtomicU64>,
    done: Arc<Notify>,
}

impl Module for Counter {
    fn name(&self) -> &'static str {
        "sink"
    }
    fn group(&self) -> &'static str {
        "meta"
    }
    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(async move {
            while let Some(_msg) = ctx.recv().await {
                let n = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
                if n == self.target.load(Ordering::Relaxed) {
                    self.done.notify_one();
                }
            }
            Ok(())
        })
    }
}

/// Sends `count` messages to the sink when poked.
struct Producer {
    count: Arc<AtomicU64>,
    go: Arc<Notify>,
}

impl Module for Producer {
    fn name(&self) -> &'static str {
        "producer"
    }
    fn group(&self) -> &'static str {
        "hub"
    }
    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(async move {
            let template = Message::build("producer", "meta", "default/pod/p", "insert", Content::string("x"));
            loop {
                tokio::select! {
                    _ = ctx.shutdown().cancelled() => return Ok(()),
                    _ = self.go.notified() => {}
                }
                for _ in 0..self.count.load(Ordering::Relaxed) {
                    ctx.bus.send("sink", template.clone()).await?;
                }
            }
        })
    }
}

/// Answers every request.
struct Echo;

impl Module for Echo {
    fn name(&self) -> &'static str {
        "echo"
    }
    fn group(&self) -> &'static str {
        "edged"
    }
    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(async move {
            while let Some(msg) = ctx.recv().await {
                ctx.bus.send_resp(Message::response_to(&msg, Content::string("OK")));
            }
            Ok(())
        })
    }
}

fn bus(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let seen = Arc::new(AtomicU64::new(0));
    let target = Arc::new(AtomicU64::new(u64::MAX));
    let done = Arc::new(Notify::new());
    let count = Arc::new(AtomicU64::new(0));
    let go = Arc::new(Notify::new());
    let supervisor = rt.block_on(async {
        let mut reg = Registry::new();
        reg.register(Box::new(Counter { seen: seen.clone(), target: target.clone(), done: done.clone() }))
            .expect("register");
        reg.register(Box::new(Producer { count: count.clone(), go: go.clone() })).expect("register");
        reg.register(Box::new(Echo)).expect("register");
        reg.start(RestartPolicy::default())
    });
    let handle = supervisor.bus();

    const BATCH: u64 = 100_000;
    let mut g = c.benchmark_group("bus");
    g.throughput(Throughput::Elements(BATCH));
    g.bench_function("send_module_to_module_100k", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                seen.store(0, Ordering::Relaxed);
                target.store(BATCH, Ordering::Relaxed);
                count.store(BATCH, Ordering::Relaxed);
                let start = Instant::now();
                rt.block_on(async {
                    let finished = done.notified();
                    go.notify_one();
                    finished.await;
                });
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();

    // A module-to-module request: the caller runs as a task on the runtime's workers, as a
    // module does (a `block_on` caller on the bench thread would add a cross-thread wake-up per
    // hop that no module pays).
    let mut g = c.benchmark_group("bus");
    g.bench_function("send_sync_round_trip", |b| {
        b.iter_custom(|iters| {
            let bus = handle.clone();
            rt.block_on(async move {
                tokio::spawn(async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let req = Message::build("bench", "edged", "default/pod/p", "query", Content::null());
                        bus.send_sync("echo", req, Duration::from_secs(5)).await.expect("reply");
                    }
                    start.elapsed()
                })
                .await
                .expect("bench task")
            })
        })
    });
    g.finish();

    // The distribution, which criterion's per-sample means hide.
    let bus = handle.clone();
    let mut lat = rt.block_on(async move {
        tokio::spawn(async move {
            let mut lat = Vec::with_capacity(100_000);
            for _ in 0..100_000 {
                let req = Message::build("bench", "edged", "default/pod/p", "query", Content::null());
                let start = Instant::now();
                bus.send_sync("echo", req, Duration::from_secs(5)).await.expect("reply");
                lat.push(start.elapsed());
            }
            lat
        })
        .await
        .expect("bench task")
    });
    lat.sort_unstable();
    let pct = |p: usize| lat[lat.len() * p / 100];
    println!(
        "bus/send_sync_round_trip latency over {} calls: p50 {:?} p90 {:?} p99 {:?}",
        lat.len(),
        pct(50),
        pct(90),
        pct(99)
    );

    rt.block_on(supervisor.shutdown(Duration::from_secs(5)));
}

criterion_group!(benches, bus);
criterion_main!(benches);
