//! A tiny HTTP/1.1 app on loopback for the Router's tests and bench (an edge application or a
//! cloud endpoint): one thread per connection, records every request.
//!
//! `/echo` answers `Hello World`; `/url` answers 201 with `X-App: edge` and
//! `Reply from server: {body} [user]: {user header}`; `/slow` never answers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request an app received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The method.
    pub method: String,
    /// The path and query.
    pub path: String,
    /// The headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

/// The app.
pub struct App {
    /// Where it listens.
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl App {
    /// Starts it on a free port.
    pub fn start() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let sink = seen.clone();
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let _ = conn.set_nodelay(true);
                let sink = sink.clone();
                std::thread::spawn(move || serve(conn, &sink));
            }
        });
        Self { addr, seen }
    }

    /// The first request `pred` accepts.
    pub fn find(&self, pred: impl Fn(&Seen) -> bool) -> Option<Seen> {
        self.seen.lock().unwrap().iter().find(|s| pred(s)).cloned()
    }
}

fn serve(conn: std::net::TcpStream, sink: &Mutex<Vec<Seen>>) {
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or("").to_owned(), parts.next().unwrap_or("").to_owned());
    let mut headers = Vec::new();
    let mut len = 0;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let mut body = vec![0; len];
    let _ = r.read_exact(&mut body);
    let seen = Seen { method, path: path.clone(), headers, body: String::from_utf8_lossy(&body).into_owned() };
    {
        let mut s = sink.lock().unwrap();
        if s.len() < 10_000 {
            s.push(seen.clone());
        }
    }
    let (status, extra, answer) = if path.starts_with("/slow") {
        std::thread::sleep(Duration::from_secs(3600));
        return;
    } else if path.starts_with("/url") {
        let user = seen.headers.iter().find(|(k, _)| k == "user").map(|(_, v)| v.clone()).unwrap_or_default();
        ("201 Created", "X-App: edge\r\n", format!("Reply from server: {} [user]: {user}", seen.body))
    } else {
        ("200 OK", "", "Hello World".to_owned())
    };
    // One write: a response split over several small writes waits on the peer's delayed ACK.
    let mut w = conn;
    let out =
        format!("HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{answer}", answer.len());
    let _ = w.write_all(out.as_bytes());
}
