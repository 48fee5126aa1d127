//! The embedded MQTT broker (`mqttMode` 0 and 1) with real clients: rumqttc, and raw TCP for
//! what a well-behaved client never sends.

use std::time::{Duration, Instant};

use edgecore::eventbus::broker::{Broker, Metrics, Options};
use rumqttc::{AsyncClient, ConnectReturnCode, Event, EventLoop, MqttOptions, Packet, QoS, SubscribeReasonCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

struct Running {
    port: u16,
    broker: Broker,
    metrics: Metrics,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(opts: Options) -> Running {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let metrics = Metrics::unregistered();
        let broker = Broker::new(opts, metrics.clone());
        let stop = CancellationToken::new();
        let task = tokio::spawn(broker.clone().run(listener, stop.clone()));
        Running { port, broker, metrics, stop, task }
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task).await.expect("the broker stops").unwrap();
    }
}

/// A rumqttc client whose event loop runs in a task; every event (or the error that ended
/// it) goes to `events`.
struct Client {
    c: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Event, String>>,
}

fn options(id: &str, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(32 << 20, 32 << 20);
    o
}

impl Client {
    fn start(o: MqttOptions) -> Client {
        let (c, el) = AsyncClient::new(o, 1024);
        Self::with(c, el)
    }

    fn with(c: AsyncClient, mut el: EventLoop) -> Client {
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let e = el.poll().await;
                let end = e.is_err();
                if tx.send(e.map_err(|e| format!("{e:?}"))).is_err() || end {
                    return;
                }
            }
        });
        Client { c, events }
    }

    async fn connected(port: u16, id: &str) -> Client {
        let mut c = Client::start(options(id, port));
        c.next(|e| matches!(e, Event::Incoming(Packet::ConnAck(_)))).await;
        c
    }

    /// The next event satisfying `pred` (panics on an error or after 10 s).
    async fn next(&mut self, pred: impl Fn(&Event) -> bool) -> Event {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let e = tokio::time::timeout_at(deadline, self.events.recv()).await.expect("timed out").expect("ended");
            let e = e.unwrap_or_else(|err| panic!("connection error: {err}"));
            if pred(&e) {
                return e;
            }
        }
    }

    async fn subscribe(&mut self, filter: &str, qos: QoS) -> Vec<SubscribeReasonCode> {
        self.c.subscribe(filter, qos).await.unwrap();
        match self.next(|e| matches!(e, Event::Incoming(Packet::SubAck(_)))).await {
            Event::Incoming(Packet::SubAck(s)) => s.return_codes,
            _ => unreachable!(),
        }
    }

    async fn publish(&self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
        self.c.publish(topic, qos, retain, payload.to_vec()).await.unwrap();
    }

    /// The next PUBLISH received.
    async fn message(&mut self) -> rumqttc::Publish {
        match self.next(|e| matches!(e, Event::Incoming(Packet::Publish(_)))).await {
            Event::Incoming(Packet::Publish(p)) => p,
            _ => unreachable!(),
        }
    }

    /// Nothing received for `d` (events other than PUBLISH are skipped).
    async fn quiet(&mut self, d: Duration) {
        let deadline = tokio::time::Instant::now() + d;
        while let Ok(Some(e)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            if let Ok(Event::Incoming(Packet::Publish(p))) = e {
                panic!("unexpected message on {}", p.topic);
            }
        }
    }

    /// The error that ended the connection.
    async fn error(&mut self) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await.expect("timed out") {
                Some(Err(e)) => return e,
                Some(Ok(_)) => {}
                None => panic!("ended without an error"),
            }
        }
    }
}

/// A raw CONNECT (3.1.1) with a keepalive and an optional will.
fn connect_bytes(id: &str, keep_alive: u16, will: Option<(&str, &[u8])>) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4];
    body.push(if will.is_some() { 0b110 } else { 0b10 });
    body.extend(keep_alive.to_be_bytes());
    let s = |v: &mut Vec<u8>, b: &[u8]| {
        v.extend((b.len() as u16).to_be_bytes());
        v.extend(b);
    };
    s(&mut body, id.as_bytes());
    if let Some((t, p)) = will {
        s(&mut body, t.as_bytes());
        s(&mut body, p);
    }
    let mut out = vec![0x10, body.len() as u8];
    out.extend(body);
    out
}

/// Connects raw and reads the CONNACK.
async fn raw(port: u16, connect: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(connect).await.unwrap();
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).await.unwrap();
    assert_eq!(ack, [0x20, 2, 0, 0]);
    s
}

/// Whether the broker closes `s` within `within`.
async fn closed(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn dollar_topics_reach_explicit_filters_and_not_wildcards() {
    let b = Running::start(Options::default()).await;
    let mut twin = Client::connected(b.port, "twin").await;
    let mut all = Client::connected(b.port, "all").await;
    let mut plus = Client::connected(b.port, "plus").await;
    let publisher = Client::connected(b.port, "mapper").await;
    assert_eq!(
        twin.subscribe("$hw/events/device/+/+/twin/+", QoS::AtLeastOnce).await,
        [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    all.subscribe("#", QoS::AtLeastOnce).await;
    plus.subscribe("+/events/#", QoS::AtMostOnce).await;
    assert_eq!(b.broker.clients(), 4);

    publisher.publish("$hw/events/device/default/t1/twin/update/result", QoS::AtLeastOnce, false, b"deep").await;
    publisher.publish("$hw/events/device/default/t1/twin/update", QoS::AtLeastOnce, false, b"{}").await;
    let m = twin.message().await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..], m.qos),
        ("$hw/events/device/default/t1/twin/update", &b"{}"[..], QoS::AtLeastOnce)
    );
    publisher.publish("plain/events/x", QoS::AtMostOnce, false, b"p").await;
    let m = all.message().await;
    assert_eq!(m.topic, "plain/events/x", "# gets no $ topic, only the plain one");
    assert_eq!(plus.message().await.topic, "plain/events/x");
    twin.quiet(Duration::from_millis(300)).await;
    all.quiet(Duration::from_millis(100)).await;

    // Unsubscribe, and an invalid filter is refused in the SUBACK.
    twin.c.unsubscribe("$hw/events/device/+/+/twin/+").await.unwrap();
    twin.next(|e| matches!(e, Event::Incoming(Packet::UnsubAck(_)))).await;
    publisher.publish("$hw/events/device/default/t1/twin/update", QoS::AtLeastOnce, false, b"{}").await;
    twin.quiet(Duration::from_millis(300)).await;
    // rumqttc refuses to send an invalid filter; raw bytes: SUBSCRIBE `a/#/b` and `ok`.
    let mut s = raw(b.port, &connect_bytes("raw", 30, None)).await;
    s.write_all(&[0x82, 15, 0, 9, 0, 5, b'a', b'/', b'#', b'/', b'b', 1, 0, 2, b'o', b'k', 1]).await.unwrap();
    let mut suback = [0u8; 6];
    s.read_exact(&mut suback).await.unwrap();
    assert_eq!(suback, [0x90, 4, 0, 9, 0x80, 1]);
    b.stop().await;
}

#[tokio::test]
async fn retained_messages_are_delivered_on_subscribe_and_cleared() {
    let b = Running::start(Options::default()).await;
    let publisher = Client::connected(b.port, "pub").await;
    publisher.publish("$hw/state/a", QoS::AtLeastOnce, true, b"v1").await;
    publisher.publish("$hw/state/a", QoS::AtLeastOnce, true, b"v2").await;
    publisher.publish("$hw/state/b", QoS::AtMostOnce, true, b"b").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut s1 = Client::connected(b.port, "s1").await;
    s1.subscribe("$hw/state/a", QoS::AtLeastOnce).await;
    let m = s1.message().await;
    assert_eq!((m.topic.as_str(), &m.payload[..], m.retain), ("$hw/state/a", &b"v2"[..], true));
    s1.quiet(Duration::from_millis(200)).await;

    // A live message is sent without RETAIN; an empty retained payload clears the topic.
    publisher.publish("$hw/state/a", QoS::AtLeastOnce, true, b"").await;
    let m = s1.message().await;
    assert_eq!((&m.payload[..], m.retain), (&b""[..], false));
    let mut s2 = Client::connected(b.port, "s2").await;
    s2.subscribe("$hw/state/+", QoS::AtLeastOnce).await;
    let m = s2.message().await;
    assert_eq!((m.topic.as_str(), m.qos), ("$hw/state/b", QoS::AtMostOnce), "only b is still retained");
    s2.quiet(Duration::from_millis(300)).await;
    b.stop().await;
}

#[tokio::test]
async fn qos1_is_acknowledged_and_qos2_completes_and_is_downgraded() {
    let b = Running::start(Options::default()).await;
    let mut sub = Client::connected(b.port, "sub").await;
    assert_eq!(sub.subscribe("q/#", QoS::ExactlyOnce).await, [SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    let mut publisher = Client::connected(b.port, "pub").await;
    publisher.publish("q/1", QoS::AtLeastOnce, false, b"one").await;
    publisher.next(|e| matches!(e, Event::Incoming(Packet::PubAck(_)))).await;
    let m = sub.message().await;
    assert_eq!((m.topic.as_str(), m.qos), ("q/1", QoS::AtLeastOnce));
    assert!(m.pkid > 0);
    publisher.publish("q/2", QoS::ExactlyOnce, false, b"two").await;
    publisher.next(|e| matches!(e, Event::Incoming(Packet::PubRec(_)))).await;
    publisher.next(|e| matches!(e, Event::Incoming(Packet::PubComp(_)))).await;
    let m = sub.message().await;
    assert_eq!((m.topic.as_str(), m.qos, &m.payload[..]), ("q/2", QoS::AtLeastOnce, &b"two"[..]));
    publisher.publish("q/3", QoS::AtMostOnce, false, b"three").await;
    assert_eq!(sub.message().await.qos, QoS::AtMostOnce, "min(published, granted)");
    sub.quiet(Duration::from_millis(200)).await;
    b.stop().await;
}

#[tokio::test]
async fn keepalive_expiry_closes_and_publishes_the_will() {
    let b = Running::start(Options::default()).await;
    let mut watcher = Client::connected(b.port, "watcher").await;
    watcher.subscribe("wills/#", QoS::AtLeastOnce).await;
    let started = Instant::now();
    let mut s = raw(b.port, &connect_bytes("silent", 1, Some(("wills/silent", b"gone")))).await;
    assert!(closed(&mut s, Duration::from_secs(5)).await, "closed after 1.5 × keepalive");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1400), "{waited:?}");
    let m = watcher.message().await;
    assert_eq!((m.topic.as_str(), &m.payload[..]), ("wills/silent", &b"gone"[..]));

    // A ping keeps a connection open; DISCONNECT drops the will.
    let mut s = raw(b.port, &connect_bytes("pinger", 1, Some(("wills/pinger", b"gone")))).await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        s.write_all(&[0xc0, 0]).await.unwrap();
        let mut resp = [0u8; 2];
        s.read_exact(&mut resp).await.unwrap();
        assert_eq!(resp, [0xd0, 0]);
    }
    s.write_all(&[0xe0, 0]).await.unwrap();
    assert!(closed(&mut s, Duration::from_secs(2)).await);
    watcher.quiet(Duration::from_millis(300)).await;
    b.stop().await;
}

#[tokio::test]
async fn malformed_bytes_close_that_connection_only() {
    let b = Running::start(Options::default()).await;
    let mut sub = Client::connected(b.port, "sub").await;
    sub.subscribe("t", QoS::AtLeastOnce).await;
    // Garbage instead of CONNECT; a valid CONNECT then a reserved packet type; a PUBLISH with
    // QoS 3; a remaining length of 5 bytes; a wildcard topic.
    let mut s = TcpStream::connect(("127.0.0.1", b.port)).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    assert!(closed(&mut s, Duration::from_secs(5)).await);
    let bad: [&[u8]; 4] =
        [&[0xf0, 0], &[0x36, 3, 0, 1, b't'], &[0x30, 0xff, 0xff, 0xff, 0xff, 1], &[0x30, 3, 0, 1, b'#']];
    for (i, bytes) in bad.iter().enumerate() {
        let mut s = raw(b.port, &connect_bytes(&format!("bad-{i}"), 30, None)).await;
        s.write_all(bytes).await.unwrap();
        assert!(closed(&mut s, Duration::from_secs(5)).await, "case {i}");
    }
    // A packet announced above the limit is refused from its header.
    let small = Running::start(Options { max_packet: 1024, ..Options::default() }).await;
    let mut s = raw(small.port, &connect_bytes("big", 30, None)).await;
    s.write_all(&[0x30, 0x80, 0x10]).await.unwrap();
    assert!(closed(&mut s, Duration::from_secs(5)).await);
    small.stop().await;

    let publisher = Client::connected(b.port, "pub").await;
    publisher.publish("t", QoS::AtLeastOnce, false, b"still here").await;
    assert_eq!(&sub.message().await.payload[..], b"still here");
    b.stop().await;
}

#[tokio::test]
async fn a_new_connection_takes_over_the_client_id() {
    let b = Running::start(Options::default()).await;
    let mut first = Client::connected(b.port, "same").await;
    first.subscribe("t", QoS::AtLeastOnce).await;
    let mut second = Client::connected(b.port, "same").await;
    let err = first.error().await;
    assert!(err.contains("ConnectionAborted") || err.contains("Io") || err.contains("closed"), "{err}");
    // The old subscription went with the old connection.
    let publisher = Client::connected(b.port, "pub").await;
    publisher.publish("t", QoS::AtLeastOnce, false, b"x").await;
    second.quiet(Duration::from_millis(300)).await;
    assert_eq!(b.broker.clients(), 2);
    b.stop().await;
}

#[tokio::test]
async fn credentials_are_checked_when_configured() {
    let opts = Options { username: "edge".into(), password: "secret".into(), ..Options::default() };
    let b = Running::start(opts).await;
    let mut o = options("wrong", b.port);
    o.set_credentials("edge", "nope");
    let err = Client::start(o).error().await;
    assert!(err.contains(&format!("{:?}", ConnectReturnCode::BadUserNamePassword)), "{err}");
    let err = Client::start(options("anon", b.port)).error().await;
    assert!(err.contains(&format!("{:?}", ConnectReturnCode::NotAuthorized)), "{err}");
    let mut o = options("right", b.port);
    o.set_credentials("edge", "secret");
    let mut ok = Client::start(o);
    ok.next(|e| matches!(e, Event::Incoming(Packet::ConnAck(_)))).await;
    assert_eq!(b.metrics.refused.with_label_values(&["auth"]).get(), 2);
    b.stop().await;
}

#[tokio::test]
async fn the_connection_limit_closes_extra_connections() {
    let b = Running::start(Options { max_connections: 2, ..Options::default() }).await;
    let _a = raw(b.port, &connect_bytes("a", 30, None)).await;
    let _b = raw(b.port, &connect_bytes("b", 30, None)).await;
    let mut c = TcpStream::connect(("127.0.0.1", b.port)).await.unwrap();
    let _ = c.write_all(&connect_bytes("c", 30, None)).await;
    assert!(closed(&mut c, Duration::from_secs(5)).await);
    assert_eq!(b.metrics.refused.with_label_values(&["limit"]).get(), 1);
    b.stop().await;
}

#[tokio::test]
async fn a_stuck_subscriber_neither_blocks_the_publisher_nor_others() {
    let b = Running::start(Options { queue: 10, ..Options::default() }).await;
    // Subscribes, then never reads.
    let mut stuck = raw(b.port, &connect_bytes("stuck", 0, None)).await;
    stuck.write_all(&[0x82, 6, 0, 1, 0, 1, b't', 0]).await.unwrap();
    let mut suback = [0u8; 5];
    stuck.read_exact(&mut suback).await.unwrap();
    assert_eq!(suback, [0x90, 3, 0, 1, 0]);
    let mut fast = Client::connected(b.port, "fast").await;
    fast.subscribe("t", QoS::AtMostOnce).await;
    fast.subscribe("end", QoS::AtLeastOnce).await;
    let mut publisher = Client::connected(b.port, "pub").await;
    let payload = vec![7u8; 16 * 1024];
    let started = Instant::now();
    for _ in 0..2_000 {
        publisher.publish("t", QoS::AtLeastOnce, false, &payload).await;
    }
    let mut acks = 0;
    while acks < 2_000 {
        publisher.next(|e| matches!(e, Event::Incoming(Packet::PubAck(_)))).await;
        acks += 1;
    }
    assert!(started.elapsed() < Duration::from_secs(30), "the publisher was not held up");
    assert!(b.metrics.dropped.get() > 0, "the stuck subscriber's messages were dropped");
    tokio::time::sleep(Duration::from_millis(500)).await;
    publisher.publish("end", QoS::AtLeastOnce, false, b"end").await;
    let end = loop {
        let m = fast.message().await;
        if m.topic == "end" {
            break m;
        }
    };
    assert_eq!(&end.payload[..], b"end");
    b.stop().await;
}

/// Messages per second through the broker, publisher → subscriber, QoS 0 and QoS 1
/// (`cargo test --release -p edgecore --test mqtt_broker -- --ignored --nocapture throughput`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run with --release"]
async fn throughput() {
    let b = Running::start(Options { queue: 1024, ..Options::default() }).await;
    for (qos, n) in [(QoS::AtMostOnce, 200_000u32), (QoS::AtLeastOnce, 100_000)] {
        let id = format!("{qos:?}");
        let mut sub = Client::connected(b.port, &format!("sub-{id}")).await;
        sub.subscribe("bench/#", qos).await;
        let publisher = Client::connected(b.port, &format!("pub-{id}")).await;
        let dropped_before = b.metrics.dropped.get();
        let started = Instant::now();
        let c = publisher.c.clone();
        let sender = tokio::spawn(async move {
            for i in 0..n {
                c.publish("bench/x", qos, false, i.to_be_bytes().repeat(16)).await.unwrap();
            }
        });
        let mut got = 0u32;
        let mut last = started;
        while let Ok(Some(e)) = tokio::time::timeout(Duration::from_secs(3), sub.events.recv()).await {
            if let Ok(Event::Incoming(Packet::Publish(_))) = e {
                got += 1;
                last = Instant::now();
                if got == n {
                    break;
                }
            }
        }
        sender.await.unwrap();
        let secs = (last - started).as_secs_f64();
        let dropped = b.metrics.dropped.get() - dropped_before;
        eprintln!(
            "MEASURED embedded broker {qos:?}: {got}/{n} messages of 64 bytes in {secs:.2} s = {:.0} messages/s (dropped {dropped})",
            f64::from(got) / secs
        );
        drop(publisher);
    }
    b.stop().await;
}
