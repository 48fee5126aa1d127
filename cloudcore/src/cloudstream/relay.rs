//! Exec and attach: Edged's raw answer comes back through the tunnel (upstream's edge writes
//! the request on a fresh connection and relays every byte, the status line included). Its
//! head is parsed here and becomes this server's response: a `101 Switching Protocols`
//! upgrades the API server's connection, and from then on bytes are copied both ways (the
//! SPDY or WebSocket session is between the API server and Edged's server); any other status
//! is answered as is, the rest of the bytes as its body.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt as _, Empty, StreamBody};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use kubeedge_beehive::Spawner;
use kubeedge_stream::{Message, MessageType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::debug;

use super::server::{Body, text};
use super::session::Stream;

/// The largest response head accepted from the edge.
const MAX_HEAD: usize = 64 * 1024;
/// Bytes read from the API server per DATA message.
const CHUNK: usize = 32 * 1024;

/// How long Edged's answer may take to begin (a stuck CRI Exec must not hold the caller).
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// A parsed response head: status, headers, and the bytes after it.
type Head = (StatusCode, Vec<(String, Vec<u8>)>, Bytes);

/// Parses one head at the front of `buf`: `None` while it is incomplete.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => {
            let status = resp.code.and_then(|c| StatusCode::from_u16(c).ok()).ok_or("no status code")?;
            let headers = resp.headers.iter().map(|h| (h.name.to_owned(), h.value.to_vec())).collect();
            let rest = buf.split_off(n).freeze();
            Ok(Some((status, headers, rest)))
        }
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => Ok(None),
        Ok(httparse::Status::Partial) => Err(format!("a response head over {MAX_HEAD} bytes")),
        Err(e) => Err(format!("the edge's answer is not HTTP: {e}")),
    }
}

/// Reads the edge's response head, skipping informational ones other than 101 (100, 103).
async fn head(stream: &mut Stream) -> Result<Head, String> {
    let mut buf = BytesMut::new();
    loop {
        while let Some((status, headers, rest)) = parse_head(&mut buf)? {
            if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
                buf = BytesMut::from(&rest[..]);
                continue;
            }
            return Ok((status, headers, rest));
        }
        let Some(data) = stream.next_data().await else {
            return Err("the edge ended the stream before answering".into());
        };
        buf.extend_from_slice(&data);
    }
}

/// Answers an exec or attach request from the stream's bytes.
pub async fn upgrade(mut stream: Stream, on_upgrade: OnUpgrade, spawner: &Spawner) -> Response<Body> {
    let (status, headers, rest) = match tokio::time::timeout(HEAD_TIMEOUT, head(&mut stream)).await {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => return text(StatusCode::BAD_GATEWAY, e),
        Err(_) => {
            return text(StatusCode::GATEWAY_TIMEOUT, format!("Edged's server did not answer within {HEAD_TIMEOUT:?}"));
        }
    };
    let mut resp = if status == StatusCode::SWITCHING_PROTOCOLS {
        Response::new(Empty::new().map_err(|never| match never {}).boxed_unsync())
    } else {
        // An error from Edged's server (unknown container, no upgrade): its status and text,
        // exactly `Content-Length` bytes of it when it says (its connection stays open).
        let length = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| std::str::from_utf8(v).ok()?.trim().parse::<usize>().ok());
        let mut r = Response::new(prefixed(rest, stream, length));
        *r.status_mut() = status;
        copy_headers(&mut r, &headers, &["content-type", "content-length"]);
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
        let (id, stream_session) = (stream.id, stream.session.clone());
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
        // Either side ending ends both, as does the session ending.
        let session = stream_session.clone();
        tokio::select! {
            () = down => {}
            () = up => {}
            () = session.cancelled() => {}
        }
        debug!(id, "Exec relay ended.");
        stream.close().await;
    });
    resp
}

/// A body of `first`, then the stream's DATA; `length` bytes in all when given (then it ends
/// at once, and dropping the stream tells the edge: the answer is complete).
fn prefixed(first: Bytes, stream: Stream, length: Option<usize>) -> Body {
    StreamBody::new(super::server::frames(Some(first), stream, length)).boxed_unsync()
}

/// Copies the edge's headers onto the response (all, or only `only` when given); hop-by-hop
/// ones stay for a 101, whose `Connection`/`Upgrade` must reach the API server.
fn copy_headers(resp: &mut Response<Body>, headers: &[(String, Vec<u8>)], only: &[&str]) {
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        if !only.is_empty() && !only.contains(&lower.as_str()) {
            continue;
        }
        if lower == "transfer-encoding" || (lower == "content-length" && only.is_empty()) {
            continue;
        }
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(value)) {
            resp.headers_mut().append(n, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_parse_whole_split_and_capped() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: SPDY/3.1\r\n\r\nbanner"[..]);
        let (status, headers, rest) = parse_head(&mut buf).unwrap().unwrap();
        assert_eq!((status, rest.as_ref()), (StatusCode::SWITCHING_PROTOCOLS, &b"banner"[..]));
        assert_eq!(headers, vec![("Upgrade".to_owned(), b"SPDY/3.1".to_vec())]);
        let mut partial = BytesMut::from(&b"HTTP/1.1 404 Not Fo"[..]);
        assert!(parse_head(&mut partial).unwrap().is_none());
        let mut junk = BytesMut::from(&b"\x00\x01garbage\r\n\r\n"[..]);
        assert!(parse_head(&mut junk).unwrap_err().contains("not HTTP"));
        let mut huge = BytesMut::from(&b"HTTP/1.1 200 OK\r\nX: "[..]);
        huge.extend_from_slice(&vec![b'a'; MAX_HEAD + 1]);
        assert!(parse_head(&mut huge).unwrap_err().contains("over"));
    }
}
