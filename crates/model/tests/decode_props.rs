//! Property tests: decoding arbitrary bytes or arbitrarily mutated messages never panics, and
//! every message we encode decodes back to itself.

use kubeedge_model::{Content, DecodeError, Message};
use proptest::prelude::*;

const SAMPLE: &str = r#"{"header":{"msg_id":"a","parent_msg_id":"b","timestamp":1,"resourceversion":"2","sync":true},"route":{"source":"edged","group":"meta","operation":"patch","resource":"default/podpatch/p"},"content":"{\"status\":{}}"}"#;

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Message::decode(&bytes, 256);
    }

    #[test]
    fn mutated_messages_never_panic(pos in 0usize..SAMPLE.len(), byte in any::<u8>(), cut in 0usize..SAMPLE.len()) {
        let mut bytes = SAMPLE.as_bytes().to_vec();
        bytes[pos] = byte;
        if let Ok(m) = Message::decode(&bytes, 4096) {
            let _ = m.content.decode::<serde_json::Value>();
            let _ = m.content.as_str();
            let again = Message::decode(&m.encode(), 4096);
            prop_assert!(again.is_ok());
        }
        let _ = Message::decode(&SAMPLE.as_bytes()[..cut], 4096);
    }

    #[test]
    fn encode_decode_is_identity(
        id in "[a-f0-9-]{0,36}", parent in "[a-f0-9-]{0,36}", ts in any::<i64>(),
        rv in "[0-9]{0,8}", sync in any::<bool>(), op in "[a-z_]{0,10}",
        res in "[a-z0-9/\\-]{0,40}", text in any::<String>(),
    ) {
        let mut m = Message::default();
        m.header.id = id;
        m.header.parent_id = parent;
        m.header.timestamp = ts;
        m.header.resource_version = rv;
        m.header.sync = sync;
        m.router.operation = op;
        m.router.resource = res;
        m.content = Content::string(&text);
        let back = Message::decode(&m.encode(), usize::MAX).unwrap();
        let back_text = back.content.as_str().map(|s| s.into_owned());
        prop_assert_eq!(back_text.as_deref(), Some(text.as_str()));
        prop_assert_eq!(back, m);
    }
}

#[test]
fn oversized_is_refused_before_parsing() {
    let big = vec![b'x'; 1024];
    assert!(matches!(Message::decode(&big, 1023), Err(DecodeError::TooLarge { .. })));
}
