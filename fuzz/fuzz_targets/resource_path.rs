//! Resource strings: [`ResourcePath::parse`] (the edge form `{ns}/{type}[/{name}]` every
//! message from an edge carries), [`CloudResource::parse`] (`node/{node}/…`, inside
//! cloudcore), [`trim_node_prefix`] (what CloudHub puts on the wire) and
//! [`CloudResource::node_of`].
//!
//! The input is split at the first newline: the first part is the resource string, the second
//! a node name used for the prefix/trim round trip. Asserts:
//! - `ResourcePath::parse` accepts exactly two or three non-empty `/`-separated tokens, and a
//!   parsed path prints back to the same string;
//! - a parsed cloud resource prints back to the same string, its edge form is what
//!   `trim_node_prefix` leaves, and `node_of` names its node;
//! - `trim_node_prefix` only ever removes a prefix, and undoes `CloudResource::prefixed` for any
//!   node name without `/`;
//! - a valid node name survives the cloud form.

#![no_main]

use kubeedge_model::{CloudResource, ResourcePath, trim_node_prefix, valid_node_name};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (resource, node) = text.split_once('\n').unwrap_or((text, "edge-1"));

    // Edge form.
    let tokens: Vec<&str> = resource.split('/').collect();
    let well_formed = (tokens.len() == 2 || tokens.len() == 3) && tokens.iter().all(|t| !t.is_empty());
    match ResourcePath::parse(resource) {
        Ok(p) => {
            assert!(well_formed, "accepted {resource:?}");
            assert_eq!(p.to_string(), resource);
            assert_eq!(ResourcePath::parse(&p.to_string()).as_ref(), Ok(&p));
            assert_eq!(p.namespace().is_none(), p.namespace == "null");
            let _ = p.is_node();
            let cloud = p.clone().for_node("n");
            assert_eq!(CloudResource::parse(&cloud.to_string()).as_ref(), Ok(&cloud));
        }
        Err(e) => {
            assert!(!well_formed, "refused {resource:?}");
            assert_eq!(e.resource, resource);
        }
    }

    // Cloud form.
    if let Ok(c) = CloudResource::parse(resource) {
        assert_eq!(c.to_string(), resource);
        assert_eq!(c.to_edge(), trim_node_prefix(resource));
        assert_eq!(CloudResource::node_of(resource), Some(c.node.as_str()));
        assert_eq!(CloudResource::prefixed(&c.node, &c.to_edge()), resource);
    }
    if let Some(n) = CloudResource::node_of(resource) {
        assert!(!n.is_empty() && !n.contains('/'));
        assert!(resource.starts_with(&format!("node/{n}")));
    }

    // Trimming.
    let trimmed = trim_node_prefix(resource);
    assert!(resource.ends_with(trimmed));
    if !resource.starts_with("node") {
        assert_eq!(trimmed, resource);
    }
    if !node.contains('/') {
        assert_eq!(trim_node_prefix(&CloudResource::prefixed(node, resource)), resource);
    }
    if valid_node_name(node) {
        assert!(node.len() <= 253 && !node.contains('/'));
        let c = CloudResource::parse(&CloudResource::prefixed(node, "default/pod/x")).expect("valid node");
        assert_eq!(c.node, node);
    }
});
