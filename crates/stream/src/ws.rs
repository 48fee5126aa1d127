//! WebSocket frames (RFC 6455 §5) on a stream whose handshake is done, for the tunnel.
//!
//! Upstream (gorilla/websocket) sends each tunnel message as a *text* frame holding binary
//! data; conforming libraries refuse such frames as invalid UTF-8. [`FrameReader`] returns
//! text and binary messages alike as bytes, reassembles fragments, and refuses a message over
//! its cap from the length fields, before buffering it. It answers nothing itself: pings and
//! closes are returned for the caller's writer to answer (one writer per connection).
//!
//! Masking follows the role: a client masks every frame it sends and a server none; each side
//! refuses frames masked the wrong way (§5.1).

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Frame opcodes.
mod op {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// Which end of the connection this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Dialled (EdgeStream): sends masked frames, receives unmasked ones.
    Client,
    /// Accepted (CloudStream): sends unmasked frames, receives masked ones.
    Server,
}

/// What [`FrameReader::next`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A whole text or binary message, as bytes (text frames are not checked for UTF-8).
    Message(Bytes),
    /// A ping: answer with a pong carrying the same bytes.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// The peer closes (code, reason); answer with a close and stop.
    Close(Option<u16>, String),
}

/// Why the connection cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing failed, or the peer went away mid-frame.
    #[error("websocket I/O")]
    Io(#[from] std::io::Error),
    /// The peer broke the framing rules.
    #[error("websocket protocol: {0}")]
    Protocol(&'static str),
    /// A message longer than the cap.
    #[error("a websocket message of {len} bytes or more, over the {cap}-byte cap")]
    TooLarge {
        /// How long it was going to be (at least).
        len: u64,
        /// The cap.
        cap: usize,
    },
}

/// Reads frames from one side of a connection.
pub struct FrameReader<R> {
    io: R,
    role: Role,
    cap: usize,
    /// A fragmented message being assembled.
    partial: Option<BytesMut>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader for `role`, refusing messages over `cap` bytes.
    pub fn new(io: R, role: Role, cap: usize) -> Self {
        Self { io, role, cap, partial: None }
    }

    /// The next message or control frame; `Ok(None)` when the stream ends between frames.
    pub async fn next(&mut self) -> Result<Option<Frame>, Error> {
        loop {
            let mut head = [0u8; 2];
            match self.io.read(&mut head[..1]).await? {
                0 => {
                    if self.partial.is_some() {
                        return Err(Error::Protocol("the stream ended inside a fragmented message"));
                    }
                    return Ok(None);
                }
                _ => self.io.read_exact(&mut head[1..]).await?,
            };
            let (fin, rsv, opcode) = (head[0] & 0x80 != 0, head[0] & 0x70, head[0] & 0x0f);
            let masked = head[1] & 0x80 != 0;
            if rsv != 0 {
                return Err(Error::Protocol("reserved bits set (no extension was negotiated)"));
            }
            if masked != (self.role == Role::Server) {
                return Err(Error::Protocol(if masked {
                    "a server sent a masked frame"
                } else {
                    "a client sent an unmasked frame"
                }));
            }
            let len = match head[1] & 0x7f {
                126 => u64::from(self.io.read_u16().await?),
                127 => self.io.read_u64().await?,
                n => u64::from(n),
            };
            if len >> 63 != 0 {
                return Err(Error::Protocol("a 64-bit length with its top bit set"));
            }
            let control = opcode & 0x08 != 0;
            if control && (!fin || len > 125) {
                return Err(Error::Protocol("a control frame fragmented or over 125 bytes"));
            }
            let already = self.partial.as_ref().map_or(0, BytesMut::len) as u64;
            if !control && len > (self.cap as u64).saturating_sub(already) {
                return Err(Error::TooLarge { len: already.saturating_add(len), cap: self.cap });
            }
            let mut mask = [0u8; 4];
            if masked {
                self.io.read_exact(&mut mask).await?;
            }
            let len = usize::try_from(len).map_err(|_| Error::Protocol("frame length"))?;
            let mut payload = BytesMut::zeroed(len);
            self.io.read_exact(&mut payload).await?;
            if masked {
                for (i, b) in payload.iter_mut().enumerate() {
                    *b ^= mask[i % 4];
                }
            }
            match opcode {
                op::PING => return Ok(Some(Frame::Ping(payload.freeze()))),
                op::PONG => return Ok(Some(Frame::Pong(payload.freeze()))),
                op::CLOSE => {
                    let code = (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default()).into_owned();
                    return Ok(Some(Frame::Close(code, reason)));
                }
                op::TEXT | op::BINARY => {
                    if self.partial.is_some() {
                        return Err(Error::Protocol("a new message began inside a fragmented one"));
                    }
                    if fin {
                        return Ok(Some(Frame::Message(payload.freeze())));
                    }
                    self.partial = Some(payload);
                }
                op::CONTINUATION => {
                    let Some(mut partial) = self.partial.take() else {
                        return Err(Error::Protocol("a continuation frame with no message to continue"));
                    };
                    partial.extend_from_slice(&payload);
                    if fin {
                        return Ok(Some(Frame::Message(partial.freeze())));
                    }
                    self.partial = Some(partial);
                }
                _ => return Err(Error::Protocol("an unknown opcode")),
            }
        }
    }
}

/// Writes frames to one side of a connection.
pub struct FrameWriter<W> {
    io: W,
    role: Role,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// A writer for `role`.
    pub fn new(io: W, role: Role) -> Self {
        Self { io, role }
    }

    async fn frame(&mut self, opcode: u8, payload: &[u8]) -> Result<(), Error> {
        let mut out = Vec::with_capacity(payload.len() + 14);
        out.push(0x80 | opcode);
        let mask_bit = if self.role == Role::Client { 0x80 } else { 0 };
        match payload.len() {
            n @ 0..=125 => out.push(mask_bit | n as u8),
            n @ 126..=0xffff => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if self.role == Role::Client {
            let mask: [u8; 4] = rand::random();
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        } else {
            out.extend_from_slice(payload);
        }
        self.io.write_all(&out).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// One message as a *text* frame, as upstream sends tunnel messages (bytes as they are).
    pub async fn text(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.frame(op::TEXT, payload).await
    }

    /// A ping.
    pub async fn ping(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.frame(op::PING, &payload[..payload.len().min(125)]).await
    }

    /// A pong answering a ping.
    pub async fn pong(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.frame(op::PONG, &payload[..payload.len().min(125)]).await
    }

    /// A close frame with a code and a short reason.
    pub async fn close(&mut self, code: u16, reason: &str) -> Result<(), Error> {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend(reason.bytes().take(123));
        self.frame(op::CLOSE, &payload).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(bytes: Vec<u8>, role: Role, cap: usize) -> Vec<Result<Frame, String>> {
        let mut r = FrameReader::new(&bytes[..], role, cap);
        let mut out = Vec::new();
        loop {
            match r.next().await {
                Ok(Some(f)) => out.push(Ok(f)),
                Ok(None) => return out,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    }

    #[tokio::test]
    async fn text_frames_with_invalid_utf8_are_messages() {
        // What gorilla/websocket writes for WriteMessage(TextMessage, [0xac 0x02 0x03 0xff]),
        // server to client: FIN|text, unmasked length 4.
        let frame = vec![0x81, 0x04, 0xac, 0x02, 0x03, 0xff];
        let got = read_all(frame, Role::Client, 1024).await;
        assert_eq!(got, vec![Ok(Frame::Message(Bytes::from_static(&[0xac, 0x02, 0x03, 0xff])))]);
    }

    #[tokio::test]
    async fn written_frames_read_back_in_both_roles() {
        for (writer, reader) in [(Role::Client, Role::Server), (Role::Server, Role::Client)] {
            let mut buf = Vec::new();
            let mut w = FrameWriter::new(&mut buf, writer);
            let big = vec![0xfe; 70_000];
            w.text(&[0xff, 0x00]).await.unwrap();
            w.text(&big).await.unwrap();
            w.text(&vec![1; 300]).await.unwrap();
            w.ping(b"ping you").await.unwrap();
            w.close(1000, "bye").await.unwrap();
            let got = read_all(buf, reader, 1 << 20).await;
            assert_eq!(
                got,
                vec![
                    Ok(Frame::Message(Bytes::from_static(&[0xff, 0x00]))),
                    Ok(Frame::Message(Bytes::from(big))),
                    Ok(Frame::Message(Bytes::from(vec![1; 300]))),
                    Ok(Frame::Ping(Bytes::from_static(b"ping you"))),
                    Ok(Frame::Close(Some(1000), "bye".into())),
                ]
            );
        }
    }

    #[tokio::test]
    async fn fragments_reassemble_around_a_ping() {
        let frames = vec![0x01, 0x02, b'a', b'b', 0x89, 0x01, b'p', 0x80, 0x01, b'c'];
        let got = read_all(frames, Role::Client, 1024).await;
        assert_eq!(
            got,
            vec![Ok(Frame::Ping(Bytes::from_static(b"p"))), Ok(Frame::Message(Bytes::from_static(b"abc")))]
        );
    }

    #[tokio::test]
    async fn rule_breaking_frames_are_refused() {
        let refused = |bytes: Vec<u8>, role: Role, cap: usize, want: &'static str| async move {
            let got = read_all(bytes, role, cap).await;
            let last = got.last().cloned().unwrap().unwrap_err();
            assert!(last.contains(want), "{last}");
        };
        // Over the cap by its length field alone (a 64-bit length of 2^40): nothing buffered.
        let mut huge = vec![0x81, 0x7f];
        huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
        refused(huge, Role::Client, 1 << 20, "over the 1048576-byte cap").await;
        // A length that would overflow when added to a fragment already held: refused, no panic.
        let mut wrap = vec![0x01, 0x01, b'a', 0x80, 0x7f];
        wrap.extend_from_slice(&(u64::MAX >> 1).to_be_bytes());
        refused(wrap, Role::Client, 1 << 20, "over the 1048576-byte cap").await;
        let mut top = vec![0x81, 0x7f];
        top.extend_from_slice(&u64::MAX.to_be_bytes());
        refused(top, Role::Client, 1 << 20, "top bit").await;
        // Fragments adding up past the cap.
        refused(vec![0x01, 0x03, 1, 2, 3, 0x80, 0x03, 4, 5, 6], Role::Client, 5, "over the 5-byte cap").await;
        refused(vec![0x81, 0x01, b'x'], Role::Server, 64, "unmasked").await;
        refused(vec![0x81, 0x81, 0, 0, 0, 0, b'x'], Role::Client, 64, "server sent a masked").await;
        refused(vec![0xc1, 0x00], Role::Client, 64, "reserved bits").await;
        refused(vec![0x09, 0x00], Role::Client, 64, "control frame").await;
        refused(vec![0x80, 0x00], Role::Client, 64, "continuation").await;
        refused(vec![0x01, 0x01, b'a', 0x81, 0x01, b'b'], Role::Client, 64, "inside a fragmented").await;
        refused(vec![0x83, 0x00], Role::Client, 64, "unknown opcode").await;
        refused(vec![0x81, 0x05, b'x'], Role::Client, 64, "websocket I/O").await;
    }
}
