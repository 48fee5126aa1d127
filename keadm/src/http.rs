//! A minimal HTTP/1.0 GET for the daemons' loopback monitor servers (`/readyz`, `/metrics`).

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The largest answer read.
const MAX: u64 = 4 * 1024 * 1024;

/// `GET path` from `addr` (host:port): the status and the body.
pub async fn get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let connect = tokio::net::TcpStream::connect(addr);
    let mut s =
        tokio::time::timeout(std::time::Duration::from_secs(2), connect).await.map_err(std::io::Error::other)??;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await?;
    let mut buf = Vec::new();
    let mut limited = (&mut s).take(MAX);
    let read = limited.read_to_end(&mut buf);
    tokio::time::timeout(std::time::Duration::from_secs(5), read).await.map_err(std::io::Error::other)??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, body.to_owned()))
}
