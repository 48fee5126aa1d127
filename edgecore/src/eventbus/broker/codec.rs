//! MQTT 3.1.1 packets as the broker sees them: what clients send is decoded (strictly: reserved
//! flags, QoS 3, a packet id 0, bad UTF-8 or a NUL in a string are errors, and the connection is
//! closed), what the broker sends is encoded. MQTT 3.1 (`MQIsdp`, level 3) CONNECTs are decoded
//! too; the packets are the same.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Why a client's bytes are not an MQTT 3.1.1 packet.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The packet breaks the format.
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// The remaining length is above the limit.
    #[error("packet of {size} bytes is larger than the limit of {max}")]
    TooLarge {
        /// Announced size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A packet only a server sends (CONNACK, SUBACK, ...) or type 0/15.
    #[error("packet type {0} is not sent by clients")]
    UnexpectedType(u8),
}

/// A last will.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS 0..=2.
    pub qos: u8,
    /// Retain.
    pub retain: bool,
}

/// CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// `MQTT` (3.1.1) or `MQIsdp` (3.1); anything else is still decoded, the broker decides.
    pub protocol_name: String,
    /// 4 (3.1.1) or 3 (3.1).
    pub level: u8,
    /// Clean session flag.
    pub clean_session: bool,
    /// Keep alive, seconds (0: none).
    pub keep_alive: u16,
    /// Client id (may be empty).
    pub client_id: String,
    /// Last will.
    pub will: Option<Will>,
    /// User name.
    pub username: Option<String>,
    /// Password (binary).
    pub password: Option<Bytes>,
}

/// PUBLISH, in either direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// DUP flag.
    pub dup: bool,
    /// QoS 0..=2.
    pub qos: u8,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic name.
    pub topic: String,
    /// Packet id (0 for QoS 0).
    pub pkid: u16,
    /// Payload.
    pub payload: Bytes,
}

/// A packet a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT.
    Connect(Box<Connect>),
    /// PUBLISH.
    Publish(Publish),
    /// PUBACK.
    PubAck(u16),
    /// PUBREC.
    PubRec(u16),
    /// PUBREL.
    PubRel(u16),
    /// PUBCOMP.
    PubComp(u16),
    /// SUBSCRIBE: packet id and (filter, requested QoS).
    Subscribe(u16, Vec<(String, u8)>),
    /// UNSUBSCRIBE: packet id and filters.
    Unsubscribe(u16, Vec<String>),
    /// PINGREQ.
    PingReq,
    /// DISCONNECT.
    Disconnect,
}

/// Decodes one packet from the front of `buf`: `Ok(None)` until it is complete. A remaining
/// length above `max` is an error as soon as the fixed header is read, before the body arrives.
pub fn decode(buf: &mut BytesMut, max: usize) -> Result<Option<Packet>, Error> {
    // A type clients never send is refused from its first byte, not after its body.
    if let Some(&first) = buf.first()
        && matches!(first >> 4, 0 | 2 | 9 | 11 | 13 | 15)
    {
        return Err(Error::UnexpectedType(first >> 4));
    }
    let Some((header_len, remaining)) = remaining_length(buf)? else { return Ok(None) };
    if remaining > max {
        return Err(Error::TooLarge { size: remaining, max });
    }
    if buf.len() < header_len + remaining {
        // The caller's buffer grows as bytes arrive, not to what a header announces.
        return Ok(None);
    }
    let first = buf[0];
    let mut frame = buf.split_to(header_len + remaining).freeze();
    frame.advance(header_len);
    decode_body(first, frame).map(Some)
}

/// The whole size of the packet at the front of `buf`, once its fixed header is there.
pub fn frame_len(buf: &[u8]) -> Option<usize> {
    remaining_length(buf).ok().flatten().map(|(h, r)| h + r)
}

/// The fixed header's length and the remaining length, once enough bytes are there.
fn remaining_length(buf: &[u8]) -> Result<Option<(usize, usize)>, Error> {
    let mut value = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else { return Ok(None) };
        value |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((2 + i, value)));
        }
    }
    if buf.len() >= 5 { Err(Error::Malformed("remaining length longer than 4 bytes")) } else { Ok(None) }
}

fn decode_body(first: u8, mut b: Bytes) -> Result<Packet, Error> {
    let (kind, flags) = (first >> 4, first & 0x0f);
    let expect_flags = |want: u8| if flags == want { Ok(()) } else { Err(Error::Malformed("reserved header flags")) };
    let packet = match kind {
        1 => {
            expect_flags(0)?;
            Packet::Connect(Box::new(connect(&mut b)?))
        }
        3 => {
            let qos = (flags >> 1) & 0b11;
            if qos == 3 {
                return Err(Error::Malformed("PUBLISH with QoS 3"));
            }
            let topic = string(&mut b)?;
            let pkid = if qos > 0 { pkid(&mut b)? } else { 0 };
            let payload = std::mem::take(&mut b);
            Packet::Publish(Publish { dup: flags & 0b1000 != 0, qos, retain: flags & 1 != 0, topic, pkid, payload })
        }
        4 | 5 | 7 => {
            expect_flags(0)?;
            let id = pkid(&mut b)?;
            match kind {
                4 => Packet::PubAck(id),
                5 => Packet::PubRec(id),
                _ => Packet::PubComp(id),
            }
        }
        6 => {
            expect_flags(0b0010)?;
            Packet::PubRel(pkid(&mut b)?)
        }
        8 => {
            expect_flags(0b0010)?;
            let id = pkid(&mut b)?;
            let mut filters = Vec::new();
            while b.has_remaining() {
                let f = string(&mut b)?;
                let q = u8(&mut b)?;
                if q > 2 {
                    return Err(Error::Malformed("SUBSCRIBE with a QoS above 2 or reserved bits"));
                }
                filters.push((f, q));
            }
            if filters.is_empty() {
                return Err(Error::Malformed("SUBSCRIBE without a filter"));
            }
            return Ok(Packet::Subscribe(id, filters));
        }
        10 => {
            expect_flags(0b0010)?;
            let id = pkid(&mut b)?;
            let mut filters = Vec::new();
            while b.has_remaining() {
                filters.push(string(&mut b)?);
            }
            if filters.is_empty() {
                return Err(Error::Malformed("UNSUBSCRIBE without a filter"));
            }
            return Ok(Packet::Unsubscribe(id, filters));
        }
        12 => {
            expect_flags(0)?;
            Packet::PingReq
        }
        14 => {
            expect_flags(0)?;
            Packet::Disconnect
        }
        other => return Err(Error::UnexpectedType(other)),
    };
    if b.has_remaining() {
        return Err(Error::Malformed("bytes after the packet"));
    }
    Ok(packet)
}

fn connect(b: &mut Bytes) -> Result<Connect, Error> {
    let protocol_name = string(b)?;
    let level = u8(b)?;
    let flags = u8(b)?;
    if flags & 1 != 0 {
        return Err(Error::Malformed("CONNECT reserved flag set"));
    }
    let keep_alive = u16(b)?;
    let client_id = string(b)?;
    let will = if flags & 0b100 != 0 {
        let qos = (flags >> 3) & 0b11;
        if qos == 3 {
            return Err(Error::Malformed("will QoS 3"));
        }
        let topic = string(b)?;
        let payload = binary(b)?;
        Some(Will { topic, payload, qos, retain: flags & 0b10_0000 != 0 })
    } else {
        if flags & 0b11_1000 != 0 {
            return Err(Error::Malformed("will QoS or retain without a will"));
        }
        None
    };
    let username = if flags & 0x80 != 0 { Some(string(b)?) } else { None };
    let password = if flags & 0x40 != 0 {
        if username.is_none() && level >= 4 {
            return Err(Error::Malformed("password without a user name"));
        }
        Some(binary(b)?)
    } else {
        None
    };
    Ok(Connect {
        protocol_name,
        level,
        clean_session: flags & 0b10 != 0,
        keep_alive,
        client_id,
        will,
        username,
        password,
    })
}

fn u8(b: &mut Bytes) -> Result<u8, Error> {
    if b.has_remaining() { Ok(b.get_u8()) } else { Err(Error::Malformed("packet too short")) }
}

fn u16(b: &mut Bytes) -> Result<u16, Error> {
    if b.remaining() >= 2 { Ok(b.get_u16()) } else { Err(Error::Malformed("packet too short")) }
}

fn pkid(b: &mut Bytes) -> Result<u16, Error> {
    match u16(b)? {
        0 => Err(Error::Malformed("packet id 0")),
        id => Ok(id),
    }
}

fn binary(b: &mut Bytes) -> Result<Bytes, Error> {
    let len = usize::from(u16(b)?);
    if b.remaining() < len {
        return Err(Error::Malformed("string longer than the packet"));
    }
    Ok(b.split_to(len))
}

fn string(b: &mut Bytes) -> Result<String, Error> {
    let raw = binary(b)?;
    let s = String::from_utf8(raw.to_vec()).map_err(|_| Error::Malformed("string not UTF-8"))?;
    if s.contains('\0') {
        return Err(Error::Malformed("string with U+0000"));
    }
    Ok(s)
}

// === encoding (server to client) ===

fn header(out: &mut BytesMut, first: u8, remaining: usize) {
    out.put_u8(first);
    let mut len = remaining;
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if len == 0 {
            break;
        }
    }
}

/// CONNACK with a return code (0 accepted; 1 protocol level; 2 identifier; 4 bad user name or
/// password; 5 not authorized).
pub fn connack(out: &mut BytesMut, session_present: bool, code: u8) {
    header(out, 0x20, 2);
    out.put_u8(u8::from(session_present));
    out.put_u8(code);
}

/// PUBLISH (`pkid` is ignored for QoS 0).
pub fn publish(out: &mut BytesMut, topic: &str, payload: &[u8], qos: u8, retain: bool, pkid: u16) {
    let id_len = if qos > 0 { 2 } else { 0 };
    let first = 0x30 | (qos << 1) | u8::from(retain);
    header(out, first, 2 + topic.len() + id_len + payload.len());
    out.put_u16(topic.len() as u16);
    out.put_slice(topic.as_bytes());
    if qos > 0 {
        out.put_u16(pkid);
    }
    out.put_slice(payload);
}

/// PUBACK (0x40), PUBREC (0x50), PUBREL (0x62), PUBCOMP (0x70), UNSUBACK (0xb0).
pub fn ack(out: &mut BytesMut, first: u8, pkid: u16) {
    header(out, first, 2);
    out.put_u16(pkid);
}

/// The first byte of PUBACK.
pub const PUBACK: u8 = 0x40;
/// The first byte of PUBREC.
pub const PUBREC: u8 = 0x50;
/// The first byte of PUBCOMP.
pub const PUBCOMP: u8 = 0x70;
/// The first byte of UNSUBACK.
pub const UNSUBACK: u8 = 0xb0;

/// SUBACK with one return code per filter (granted QoS, or 0x80 failure).
pub fn suback(out: &mut BytesMut, pkid: u16, codes: &[u8]) {
    header(out, 0x90, 2 + codes.len());
    out.put_u16(pkid);
    out.put_slice(codes);
}

/// PINGRESP.
pub fn pingresp(out: &mut BytesMut) {
    header(out, 0xd0, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(bytes: &[u8]) -> Result<Option<Packet>, Error> {
        decode(&mut BytesMut::from(bytes), 1 << 20)
    }

    #[test]
    fn decodes_connect_311_and_31() {
        let mut c = vec![0x10, 0];
        let body = [&[0, 4][..], b"MQTT", &[4, 0b1100_0010, 0, 30, 0, 1, b'c', 0, 1, b'u', 0, 2, b'p', b'w']].concat();
        c[1] = body.len() as u8;
        c.extend(body);
        let Some(Packet::Connect(p)) = one(&c).unwrap() else { panic!() };
        assert_eq!((p.level, p.keep_alive, p.client_id.as_str(), p.clean_session), (4, 30, "c", true));
        assert_eq!((p.username.as_deref(), p.password.as_deref()), (Some("u"), Some(&b"pw"[..])));
        let body = [&[0, 6][..], b"MQIsdp", &[3, 0b10, 0, 0, 0, 0]].concat();
        let c = [&[0x10, body.len() as u8][..], &body].concat();
        let Some(Packet::Connect(p)) = one(&c).unwrap() else { panic!() };
        assert_eq!((p.protocol_name.as_str(), p.level), ("MQIsdp", 3));
    }

    #[test]
    fn partial_and_bad_input() {
        assert_eq!(one(&[0x30]).unwrap(), None);
        assert_eq!(one(&[0x30, 0x80]).unwrap(), None);
        assert_eq!(one(&[0x30, 5, 0, 1]).unwrap(), None);
        assert!(matches!(one(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]), Err(Error::Malformed(_))));
        assert!(matches!(one(&[0x30, 0xff, 0xff, 0xff, 0x7f]), Err(Error::TooLarge { .. })));
        assert_eq!(one(&[0x20, 2, 0, 0]), Err(Error::UnexpectedType(2)));
        assert!(matches!(one(&[0x36, 3, 0, 1, b'a']), Err(Error::Malformed(_))), "QoS 3");
        assert!(matches!(one(&[0x32, 5, 0, 1, b'a', 0, 0]), Err(Error::Malformed(_))), "pkid 0");
        assert!(matches!(one(&[0x80, 6, 0, 1, 0, 1, b'a', 0]), Err(Error::Malformed(_))), "SUBSCRIBE flags");
        assert!(matches!(one(&[0x82, 6, 0, 1, 0, 1, b'a', 3]), Err(Error::Malformed(_))), "QoS 3");
        assert!(matches!(one(&[0x82, 2, 0, 1]), Err(Error::Malformed(_))), "no filter");
        assert!(matches!(one(&[0x30, 3, 0, 1, 0]), Err(Error::Malformed(_))), "NUL");
        assert!(matches!(one(&[0x30, 3, 0, 1, 0xff]), Err(Error::Malformed(_))), "UTF-8");
        assert!(matches!(one(&[0xc0, 1, 0]), Err(Error::Malformed(_))), "trailing bytes");
        let Some(Packet::Publish(p)) = one(&[0x3b, 6, 0, 1, b'a', 0, 7, b'x']).unwrap() else { panic!() };
        assert_eq!((p.dup, p.qos, p.retain, p.pkid, &p.payload[..]), (true, 1, true, 7, &b"x"[..]));
    }

    #[test]
    fn encodes_long_lengths() {
        let mut out = BytesMut::new();
        publish(&mut out, "t", &vec![0u8; 20_000], 1, false, 9);
        let mut expected = BytesMut::new();
        header(&mut expected, 0x32, 2 + 1 + 2 + 20_000);
        assert_eq!(&out[..expected.len()], &expected[..]);
        assert_eq!(remaining_length(&out).unwrap(), Some((4, 20_005)));
    }
}
