//! Tunnel messages (`pkg/stream/message.go`): `uvarint(connectID) ‖ uvarint(messageType) ‖
//! data`, the uvarints as Go's `encoding/binary.PutUvarint` writes them.

use bytes::Bytes;

/// The largest `data` accepted (upstream's `MaxRespBodyLength`, 1 MiB). Upstream silently
/// truncates a longer body; a message over the cap is refused here instead.
pub const MAX_DATA: usize = 1 << 20;

/// The most bytes a Go uvarint of a u64 takes.
const MAX_UVARINT: usize = 10;

/// A message's type, with upstream's numbers (an iota in `pkg/stream/constants.go`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// 0: open a `containerLogs` request.
    LogsConnect,
    /// 1: open an `exec` stream.
    ExecConnect,
    /// 2: open a metrics or stats request.
    MetricConnect,
    /// 3: bytes of an open connection.
    Data,
    /// 4: the connection is over (either side).
    RemoveConnect,
    /// 5: the session is refused (connect id 0).
    CloseConnect,
    /// 6: open an `attach` stream.
    AttachConnect,
}

impl MessageType {
    /// The type for upstream's number.
    pub fn from_u64(n: u64) -> Option<Self> {
        Some(match n {
            0 => Self::LogsConnect,
            1 => Self::ExecConnect,
            2 => Self::MetricConnect,
            3 => Self::Data,
            4 => Self::RemoveConnect,
            5 => Self::CloseConnect,
            6 => Self::AttachConnect,
            _ => return None,
        })
    }

    /// Upstream's number.
    pub fn as_u64(self) -> u64 {
        match self {
            Self::LogsConnect => 0,
            Self::ExecConnect => 1,
            Self::MetricConnect => 2,
            Self::Data => 3,
            Self::RemoveConnect => 4,
            Self::CloseConnect => 5,
            Self::AttachConnect => 6,
        }
    }

    /// Upstream's name (`LOGS_CONNECT`…), for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LogsConnect => "LOGS_CONNECT",
            Self::ExecConnect => "EXEC_CONNECT",
            Self::MetricConnect => "METRIC_CONNECT",
            Self::Data => "DATA",
            Self::RemoveConnect => "REMOVE_CONNECT",
            Self::CloseConnect => "CLOSE_CONNECT",
            Self::AttachConnect => "ATTACH_CONNECT",
        }
    }

    /// Whether it opens a connection.
    pub fn is_connect(self) -> bool {
        matches!(self, Self::LogsConnect | Self::ExecConnect | Self::MetricConnect | Self::AttachConnect)
    }
}

/// One tunnel message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The connection it belongs to (the cloud's `MessID`).
    pub connect_id: u64,
    /// What it is.
    pub kind: MessageType,
    /// Its payload: JSON for connects, raw bytes for data, empty otherwise.
    pub data: Bytes,
}

/// Why a tunnel frame is not a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The frame ends inside a uvarint.
    #[error("the frame ends inside its {0}")]
    Truncated(&'static str),
    /// A uvarint longer than a u64 (Go's `binary.ReadUvarint` overflow).
    #[error("the {0} overflows 64 bits")]
    Overflow(&'static str),
    /// A type number upstream does not define.
    #[error("unknown message type {0}")]
    UnknownType(u64),
    /// `data` over [`MAX_DATA`].
    #[error("{len} bytes of data, over the {MAX_DATA}-byte cap")]
    TooLarge {
        /// The data's length.
        len: usize,
    },
}

/// Appends `v` as a Go uvarint.
pub fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a Go uvarint from the front of `buf`: the value and the bytes it took.
pub fn read_uvarint(buf: &[u8], what: &'static str) -> Result<(u64, usize), DecodeError> {
    let mut v: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(MAX_UVARINT) {
        // Go: the tenth byte may only carry the top bit of the value.
        if i == MAX_UVARINT - 1 && b > 1 {
            return Err(DecodeError::Overflow(what));
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok((v, i + 1));
        }
    }
    if buf.len() >= MAX_UVARINT { Err(DecodeError::Overflow(what)) } else { Err(DecodeError::Truncated(what)) }
}

impl Message {
    /// A message.
    pub fn new(connect_id: u64, kind: MessageType, data: impl Into<Bytes>) -> Self {
        Self { connect_id, kind, data: data.into() }
    }

    /// The frame payload (upstream's `Message.Bytes`).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 * MAX_UVARINT + self.data.len());
        put_uvarint(&mut out, self.connect_id);
        put_uvarint(&mut out, self.kind.as_u64());
        out.extend_from_slice(&self.data);
        out
    }

    /// Parses a frame payload (upstream's `ReadMessageFromTunnel`, minus its silent truncation).
    pub fn decode(frame: Bytes) -> Result<Self, DecodeError> {
        let (connect_id, a) = read_uvarint(&frame, "connect id")?;
        let (kind, b) = read_uvarint(&frame[a..], "message type")?;
        let kind = MessageType::from_u64(kind).ok_or(DecodeError::UnknownType(kind))?;
        let data = frame.slice(a + b..);
        if data.len() > MAX_DATA {
            return Err(DecodeError::TooLarge { len: data.len() });
        }
        Ok(Self { connect_id, kind, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bytes_are_upstreams() {
        // Go: NewMessage(300, MessageTypeData, []byte("hi")).Bytes() == [0xac 0x02 0x03 'h' 'i'].
        let m = Message::new(300, MessageType::Data, &b"hi"[..]);
        assert_eq!(m.encode(), [0xac, 0x02, 0x03, b'h', b'i']);
        assert_eq!(Message::decode(Bytes::from(m.encode())).unwrap(), m);
        // A LOGS_CONNECT of id 1 starts [0x01 0x00].
        assert_eq!(&Message::new(1, MessageType::LogsConnect, &b"{}"[..]).encode()[..2], &[0x01, 0x00]);
        // u64::MAX takes ten bytes, the last 0x01.
        let mut out = Vec::new();
        put_uvarint(&mut out, u64::MAX);
        assert_eq!(out.len(), 10);
        assert_eq!(out[9], 1);
    }

    #[test]
    fn bad_frames_are_refused_clearly() {
        assert_eq!(Message::decode(Bytes::new()), Err(DecodeError::Truncated("connect id")));
        assert_eq!(Message::decode(Bytes::from_static(&[0x80])), Err(DecodeError::Truncated("connect id")));
        assert_eq!(Message::decode(Bytes::from_static(&[0x05])), Err(DecodeError::Truncated("message type")));
        assert_eq!(Message::decode(Bytes::from_static(&[0x05, 0x07])), Err(DecodeError::UnknownType(7)));
        let eleven = Bytes::from(vec![0xff; 11]);
        assert_eq!(Message::decode(eleven), Err(DecodeError::Overflow("connect id")));
        let mut tenth = vec![0xff; 9];
        tenth.push(0x02);
        assert_eq!(Message::decode(Bytes::from(tenth)), Err(DecodeError::Overflow("connect id")));
        let mut big = vec![0x01, 0x03];
        big.resize(2 + MAX_DATA + 1, b'x');
        assert_eq!(Message::decode(Bytes::from(big)), Err(DecodeError::TooLarge { len: MAX_DATA + 1 }));
    }

    proptest! {
        #[test]
        fn any_message_round_trips(id: u64, kind in 0u64..7, data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let m = Message::new(id, MessageType::from_u64(kind).unwrap(), data);
            prop_assert_eq!(Message::decode(Bytes::from(m.encode())).unwrap(), m);
        }

        #[test]
        fn no_input_panics(frame in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Message::decode(Bytes::from(frame));
        }
    }
}
