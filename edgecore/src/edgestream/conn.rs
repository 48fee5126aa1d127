//! One tunnelled request, replayed to Edged's server as upstream's `pkg/stream` does:
//!
//! - logs and metrics (`LOGS_CONNECT`, `METRIC_CONNECT`): a GET with the cloud's headers; the
//!   response body goes back as DATA (the status and headers do not travel, as upstream);
//! - exec and attach (`EXEC_CONNECT`, `ATTACH_CONNECT`): the request is written raw on a new
//!   connection (upstream's `SpdyRoundTripper.Dial`), and from then on bytes are copied both
//!   ways untouched, the `101 Switching Protocols` head included, so the API server speaks
//!   SPDY or WebSocket with Edged's server through the tunnel.
//!
//! Either ends on REMOVE_CONNECT from the cloud, when Edged's side ends, or at shutdown.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use kubeedge_stream::{ConnectRequest, MAX_DATA, Message, MessageType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// The largest DATA message sent (well under upstream's 1 MiB cap on receipt).
const CHUNK: usize = 32 * 1024;

/// Headers that belong to one hop and are not replayed on a GET.
const HOP_BY_HOP: &[&str] =
    &["connection", "upgrade", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "host"];

/// Runs one stream until it ends.
pub async fn run(
    id: u64,
    kind: MessageType,
    req: ConnectRequest,
    kubelet: SocketAddr,
    inbox: mpsc::Receiver<Message>,
    out: &mpsc::Sender<Message>,
    stop: &CancellationToken,
) {
    let result = match kind {
        MessageType::ExecConnect | MessageType::AttachConnect => raw(id, &req, kubelet, inbox, out, stop).await,
        _ => get(id, kind, &req, kubelet, inbox, out, stop).await,
    };
    if let Err(e) = result {
        warn!(id, kind = kind.as_str(), path = %req.url.path, error = %e, "A tunnelled request failed.");
    }
}

/// Sends `bytes` as DATA in chunks; `false` when the tunnel is gone.
async fn send_data(id: u64, mut bytes: Bytes, out: &mpsc::Sender<Message>) -> bool {
    while !bytes.is_empty() {
        let chunk = bytes.split_to(bytes.len().min(CHUNK).min(MAX_DATA));
        if out.send(Message::new(id, MessageType::Data, chunk)).await.is_err() {
            return false;
        }
    }
    true
}

/// How long Edged's server may take to answer a request's head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether the cloud's message ends the stream (REMOVE_CONNECT, or the session is gone).
fn ends(m: Option<&Message>) -> bool {
    m.is_none_or(|m| m.kind == MessageType::RemoveConnect)
}

async fn get(
    id: u64,
    kind: MessageType,
    req: &ConnectRequest,
    kubelet: SocketAddr,
    mut inbox: mpsc::Receiver<Message>,
    out: &mpsc::Sender<Message>,
    stop: &CancellationToken,
) -> Result<(), String> {
    let mut request = Request::get(req.url.request_uri()).body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    for (name, values) in &req.header {
        if HOP_BY_HOP.contains(&name.to_ascii_lowercase().as_str()) {
            continue;
        }
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else { continue };
        for v in values {
            if let Ok(v) = HeaderValue::from_bytes(v.as_bytes()) {
                request.headers_mut().append(name.clone(), v);
            }
        }
    }
    let host = HeaderValue::from_str(&kubelet.to_string()).map_err(|e| e.to_string())?;
    request.headers_mut().insert(header::HOST, host);
    if kind == MessageType::MetricConnect {
        // As upstream: the body is relayed as is, so no compression.
        request.headers_mut().insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    }
    let tcp = TcpStream::connect(kubelet).await.map_err(|e| format!("connecting to {kubelet}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(|e| e.to_string())?;
    // The connection may finish (the server closed after answering) before the answer is
    // read here: it is then still awaited.
    let mut conn = std::pin::pin!(conn);
    let mut send = std::pin::pin!(sender.send_request(request));
    let mut conn_done = false;
    let head_deadline = tokio::time::sleep(HEAD_TIMEOUT);
    tokio::pin!(head_deadline);
    let response = loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(()),
            _ = &mut head_deadline => return Err(format!("Edged's server at {kubelet} did not answer within {HEAD_TIMEOUT:?}")),
            r = &mut send => break r.map_err(|e| e.to_string())?,
            m = inbox.recv() => if ends(m.as_ref()) { return Ok(()) } else { return Err("data before the response".into()) },
            r = &mut conn, if !conn_done => {
                r.map_err(|e| format!("Edged's server: {e}"))?;
                conn_done = true;
            }
        }
    };
    if !response.status().is_success() {
        debug!(id, status = %response.status(), "Edged's server answered an error; its text is relayed.");
    }
    let mut body = response.into_body();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            m = inbox.recv() => if ends(m.as_ref()) { return Ok(()) },
            _ = &mut conn, if !conn_done => conn_done = true,
            frame = body.frame() => match frame {
                None => return Ok(()),
                Some(Err(e)) => return Err(format!("reading the response: {e}")),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data()
                        && !send_data(id, data, out).await
                    {
                        return Ok(());
                    }
                }
            },
        }
    }
}

/// The request head, written raw; names and values with line breaks are refused.
fn request_head(req: &ConnectRequest, kubelet: SocketAddr) -> Result<String, String> {
    let method = req.method.as_deref().unwrap_or("POST");
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(format!("method {method:?} is not an HTTP method"));
    }
    let target = req.url.request_uri();
    if target.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err("the URL holds spaces or control characters".into());
    }
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {kubelet}\r\n");
    for (name, values) in &req.header {
        if name.eq_ignore_ascii_case("host") {
            continue;
        }
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(format!("header name {name:?} is not a token"));
        }
        for v in values {
            // Go writes any value without line breaks or other controls (UTF-8 included).
            if HeaderValue::from_bytes(v.as_bytes()).is_err() || v.contains(['\r', '\n']) {
                return Err(format!("header {name} has a value with control characters"));
            }
            let _ = write!(head, "{name}: {v}\r\n");
        }
    }
    head.push_str("\r\n");
    Ok(head)
}

async fn raw(
    id: u64,
    req: &ConnectRequest,
    kubelet: SocketAddr,
    mut inbox: mpsc::Receiver<Message>,
    out: &mpsc::Sender<Message>,
    stop: &CancellationToken,
) -> Result<(), String> {
    let head = request_head(req, kubelet)?;
    let tcp = TcpStream::connect(kubelet).await.map_err(|e| format!("connecting to {kubelet}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (mut rd, mut wr) = tcp.into_split();
    wr.write_all(head.as_bytes()).await.map_err(|e| e.to_string())?;
    // The two directions run apart (a stdin write waiting on Edged never keeps its output
    // from being read); either ending ends the stream.
    let up = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    if !send_data(id, Bytes::copy_from_slice(&buf[..n]), out).await {
                        return Ok(());
                    }
                }
                Err(e) => return Err(format!("reading from Edged's server: {e}")),
            }
        }
    };
    let down = async {
        while let Some(m) = inbox.recv().await {
            if m.kind != MessageType::Data {
                break;
            }
            wr.write_all(&m.data).await.map_err(|e| format!("writing to Edged's server: {e}"))?;
        }
        Ok(())
    };
    tokio::select! {
        _ = stop.cancelled() => Ok(()),
        r = up => r,
        r = down => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubeedge_stream::GoUrl;
    use std::collections::BTreeMap;

    #[test]
    fn the_raw_head_is_a_request_and_refuses_injection() {
        let req = ConnectRequest {
            mess_id: 1,
            url: GoUrl::parse("http://127.0.0.1:10350/exec/ns/pod/c?command=sh&input=1").unwrap(),
            header: BTreeMap::from([
                ("Upgrade".to_owned(), vec!["SPDY/3.1".to_owned()]),
                ("Host".to_owned(), vec!["api".to_owned()]),
            ]),
            method: Some("POST".into()),
        };
        let addr: SocketAddr = "127.0.0.1:10350".parse().unwrap();
        assert_eq!(
            request_head(&req, addr).unwrap(),
            "POST /exec/ns/pod/c?command=sh&input=1 HTTP/1.1\r\nHost: 127.0.0.1:10350\r\nUpgrade: SPDY/3.1\r\n\r\n"
        );
        let evil = ConnectRequest {
            header: BTreeMap::from([("X".to_owned(), vec!["a\r\nInjected: 1".to_owned()])]),
            ..req.clone()
        };
        assert!(request_head(&evil, addr).unwrap_err().contains("control characters"));
        let bad_method = ConnectRequest { method: Some("GET /x HTTP/1.1\r\n".into()), ..req };
        assert!(request_head(&bad_method, addr).is_err());
    }
}
