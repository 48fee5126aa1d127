//! The monitor server over a real socket: health, readiness and bus metrics.

use std::time::Duration;

use kubeedge_beehive::{BoxFuture, Module, ModuleContext, ModuleError, Registry, RestartPolicy};
use kubeedge_model::{Content, Message};
use kubeedge_telemetry::{Metrics, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

struct Idle;

impl Module for Idle {
    fn name(&self) -> &'static str {
        "idle"
    }
    fn group(&self) -> &'static str {
        "meta"
    }
    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(async move {
            ctx.shutdown().cancelled().await;
            Ok(())
        })
    }
}

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let status = buf[9..12].parse().unwrap();
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn health_ready_and_metrics() {
    let mut reg = Registry::new();
    reg.register(Box::new(Idle)).unwrap();
    let sup = reg.start(RestartPolicy::default());
    let bus = sup.bus();
    for _ in 0..3 {
        bus.try_send("idle", Message::build("t", "meta", "a/b/c", "insert", Content::null())).unwrap();
    }
    let metrics = Metrics::new("testd", "0.0.0").unwrap();
    metrics.watch_bus(bus, sup.health()).unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let server = tokio::spawn(serve(listener, metrics, Some(sup.health()), stop.clone()));

    assert_eq!(get(addr, "/healthz").await, (200, "ok".to_owned()));
    assert_eq!(get(addr, "/readyz").await.0, 200);
    let (code, body) = get(addr, "/metrics").await;
    assert_eq!(code, 200);
    for want in [
        "kubeedge_build_info{daemon=\"testd\",version=\"0.0.0\"} 1",
        "kubeedge_bus_queue_depth{module=\"idle\"} 3",
        "kubeedge_module_up{module=\"idle\"} 1",
        "kubeedge_bus_messages_dropped_total{module=\"idle\"} 0",
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
    ] {
        assert!(body.contains(want), "missing {want:?} in\n{body}");
    }
    assert_eq!(get(addr, "/nope").await.0, 404);

    let health = sup.health();
    assert!(sup.shutdown(Duration::from_secs(5)).await.is_clean());
    assert!(!health.is_ready());
    let (code, body) = get(addr, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), server).await.unwrap().unwrap().unwrap();
}
