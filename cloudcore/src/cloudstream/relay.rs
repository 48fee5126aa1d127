//! Exec and attach: Edged's raw answer comes back through the tunnel (upstream's edge writes
//! the request on a fresh connection and relays every byte, the status line included). Its
//! head is parsed here and becomes this server's response: a `101 Switching Protocols`
//! upgrades the API server's connection, and from then on bytes are copied both ways (the
//! SPDY or WebSocket session is between the API server and Edged's server); any other status
//! is answered as is, the rest of the bytes as its body.

use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use http::{HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt as _, Empty, StreamBody};
use hyper::body::Frame;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use kubeedge_beehive::Spawner;
use kubeedge_stream::{Message, MessageType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::debug;

use super::server::{Body, body, text};
use super::session::Stream;

/// The largest response head accepted from the edge.
const MAX_HEAD: usize = 64 * 1024;
/// Bytes read from the API server per DATA message.
const CHUNK: usize = 32 * 1024;

/// Reads the edge's response head; the parsed status and headers and the bytes after it.
async fn head(stream: &mut Stream) -> Result<(StatusCode, Vec<(String, Vec<u8>)>, Bytes), String> {
    let mut buf = BytesMut::new();
    loop {
        let Some(data) = stream.next_data().await else {
            return Err("the edge ended the stream before answering".into());
        };
        buf.extend_from_slice(&data);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(n)) => {
                let status = resp.code.and_then(|c| StatusCode::from_u16(c).ok()).ok_or("no status code")?;
                let headers = resp.headers.iter().map(|h| (h.name.to_owned(), h.value.to_vec())).collect();
                return Ok((status, headers, buf.split_off(n).freeze()));
            }
            Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => {}
            Ok(httparse::Status::Partial) => return Err(format!("a response head over {MAX_HEAD} bytes")),
            Err(e) => return Err(format!("the edge's answer is not HTTP: {e}")),
        }
    }
}

/// Answers an exec or attach request from the stream's bytes.
pub async fn upgrade(mut stream: Stream, on_upgrade: OnUpgrade, spawner: &Spawner) -> Response<Body> {
    let (status, headers, rest) = match head(&mut stream).await {
        Ok(h) => h,
        Err(e) => return text(StatusCode::BAD_GATEWAY, e),
    };
    let mut resp = if status == StatusCode::SWITCHING_PROTOCOLS {
        Response::new(Empty::new().map_err(|never| match never {}).boxed_unsync())
    } else {
        // An error from Edged's server (unknown container, no upgrade): its status and text.
        let mut r = Response::new(prefixed(rest, stream));
        *r.status_mut() = status;
        copy_headers(&mut r, &headers, &["content-type"]);
        return r;
    };
    *resp.status_mut() = status;
    copy_headers(&mut resp, &headers, &[]);
    spawner.spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => return debug!(error = %e, "The API server's connection did not upgrade."),
        };
        let mut io = TokioIo::new(upgraded);
        if !rest.is_empty() && io.write_all(&rest).await.is_err() {
            return;
        }
        let (mut rd, mut wr) = tokio::io::split(io);
        let to_edge = stream.to_edge.clone();
        let id = stream.id;
        let down = async {
            while let Some(data) = stream.next_data().await {
                if wr.write_all(&data).await.is_err() {
                    break;
                }
            }
            let _ = wr.shutdown().await;
        };
        let up = async {
            let mut buf = vec![0u8; CHUNK];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let m = Message::new(id, MessageType::Data, Bytes::copy_from_slice(&buf[..n]));
                        if to_edge.send(m).await.is_err() {
                            break;
                        }
                    }
                }
            }
        };
        // Either side ending ends both; dropping the stream tells the edge when it was us.
        tokio::select! {
            () = down => {}
            () = up => {}
        }
        debug!(id, "Exec relay ended.");
    });
    resp
}

/// A body of `first`, then the stream's DATA.
fn prefixed(first: Bytes, stream: Stream) -> Body {
    let head = futures::stream::once(async move { Ok::<_, std::convert::Infallible>(Frame::data(first)) });
    let rest = body(stream).into_data_stream().map(|r| r.map(Frame::data));
    StreamBody::new(head.chain(rest)).boxed_unsync()
}

/// Copies the edge's headers onto the response (all, or only `only` when given); hop-by-hop
/// ones stay for a 101, whose `Connection`/`Upgrade` must reach the API server.
fn copy_headers(resp: &mut Response<Body>, headers: &[(String, Vec<u8>)], only: &[&str]) {
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        if !only.is_empty() && !only.contains(&lower.as_str()) {
            continue;
        }
        if lower == "content-length" || lower == "transfer-encoding" {
            continue;
        }
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(value)) {
            resp.headers_mut().append(n, v);
        }
    }
}
