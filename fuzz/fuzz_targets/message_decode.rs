//! The wire message decoder ([`Message::decode`]): what CloudHub and EdgeHub run on every
//! WebSocket or QUIC frame a peer sends.
//!
//! Asserts, beyond "no panic":
//! - input over the cap is refused as `TooLarge` before parsing (checked with a cap just under
//!   the input's length, and once with a real `MAX_MESSAGE_SIZE + 1` buffer);
//! - a decoded message re-encodes to JSON that decodes to an equal message, and encoding is
//!   stable (encode ∘ decode ∘ encode = encode): `content` is kept as raw text, so nothing is
//!   lost or reordered on the way through CloudHub;
//! - the accessors consumers call on any message (operation, content views, the reply and ACK
//!   predicates, `Debug`) do not panic, and a string content re-encodes to the same string.

#![no_main]

use std::sync::Once;

use kubeedge_model::protocol::{edge, reply};
use kubeedge_model::{Content, DecodeError, MAX_MESSAGE_SIZE, Message, Operation};
use libfuzzer_sys::fuzz_target;

static OVERSIZE: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    OVERSIZE.call_once(|| {
        let big = vec![b' '; MAX_MESSAGE_SIZE + 1];
        assert!(matches!(Message::decode(&big, MAX_MESSAGE_SIZE), Err(DecodeError::TooLarge { .. })));
    });
    if let Some(cap) = data.len().checked_sub(1) {
        match Message::decode(data, cap) {
            Err(DecodeError::TooLarge { len, max }) => assert_eq!((len, max), (data.len(), cap)),
            other => panic!("{} bytes over a {cap}-byte cap were not refused: {other:?}", data.len()),
        }
    }
    let msg = match Message::decode(data, MAX_MESSAGE_SIZE) {
        Ok(m) => m,
        Err(DecodeError::TooLarge { .. }) => panic!("{} bytes refused under the cap", data.len()),
        Err(_) => return,
    };

    let encoded = msg.encode();
    let again = Message::decode(&encoded, MAX_MESSAGE_SIZE)
        .unwrap_or_else(|e| panic!("re-encoded message does not decode: {e}: {}", String::from_utf8_lossy(&encoded)));
    assert_eq!(again, msg, "decode(encode(m)) != m");
    assert_eq!(again.encode(), encoded, "encoding is not stable");

    // What consumers do with any message.
    let op = msg.operation();
    assert_eq!(op.as_str(), msg.router.operation);
    assert_eq!(Operation::parse(op.as_str()), op);
    let _ = format!("{msg:?}");
    let _ = msg.is_empty_frame();
    let _ = msg.parent_id();
    let _ = edge::needs_ack(&msg);
    let _ = edge::connection_state(&msg);
    let _ = reply::is_ok(&msg.content);
    let _ = reply::is_go_error(&msg.content);
    let _ = reply::is_reply(&msg);
    let _ = reply::object_of(&msg);
    let _ = msg.content.decode::<serde_json::Value>();
    let _ = msg.content.data();
    if let Some(s) = msg.content.as_str() {
        assert_eq!(Content::string(&s).as_str().as_deref(), Some(&*s), "string content does not round-trip");
    }
    // The replies built from a message keep its identity and encode cleanly.
    let ack = edge::ack(&msg);
    assert_eq!(ack.parent_id(), Some(msg.id()).filter(|id| !id.is_empty()));
    assert_eq!(Message::decode(&ack.encode(), MAX_MESSAGE_SIZE).ok().as_ref(), Some(&ack));
    let err = Message::error_response_to(&msg, "boom");
    assert_eq!(err.router.resource, msg.router.resource);
});
