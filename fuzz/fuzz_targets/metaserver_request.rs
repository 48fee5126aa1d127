//! What MetaServer (edgecore/src/metamanager/metaserver/server.rs) makes of a request line
//! before it touches the store, all pure kube-serve code: the path ([`parse_path`]), the query
//! string ([`parse_query`], [`query_pairs`], [`query_param`], the selectors in it), the verb
//! ([`verb`]) and the `Accept` header ([`parse_accept_no_protobuf`]).
//!
//! The input is text: line 1 is the request target (`path[?query]`), line 2 the `Accept`
//! header, line 3 the method. Asserts:
//! - a resource path names a non-empty resource, version and, where present, namespace, name
//!   and subresource, and the canonical path rebuilt from them (every segment
//!   percent-encoded) parses to the same request: `/` or `%` inside names cannot make two
//!   requests address one object, nor one request two;
//! - list options rebuilt into a canonical query parse back equal, `query_param` agrees with
//!   them (first occurrence wins), and a refused query is a 400;
//! - the selectors in a query are a 400 or print to text that parses back equal;
//! - MetaServer never negotiates protobuf, and a negotiated form's `Content-Type` negotiates
//!   that same form.

#![no_main]

use kubeedge_kube_serve::request::{ApiPath, ListOptions, parse_path, parse_query, query_pairs, query_param, verb};
use kubeedge_kube_serve::selector::{FieldSelector, LabelOp, LabelSelector};
use kubeedge_kube_serve::table::{AcceptKind, parse_accept, parse_accept_no_protobuf};
use libfuzzer_sys::fuzz_target;

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn canonical_query(o: &ListOptions) -> String {
    let mut q = Vec::new();
    let mut s = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            q.push(format!("{k}={}", enc(v)));
        }
    };
    s("labelSelector", &o.label_selector);
    s("fieldSelector", &o.field_selector);
    s("continue", &o.continue_token);
    s("resourceVersion", &o.resource_version);
    s("resourceVersionMatch", &o.resource_version_match);
    if let Some(l) = o.limit {
        q.push(format!("limit={l}"));
    }
    if let Some(t) = o.timeout_seconds {
        q.push(format!("timeoutSeconds={t}"));
    }
    if let Some(b) = o.send_initial_events {
        q.push(format!("sendInitialEvents={b}"));
    }
    q.push(format!("watch={}", o.watch));
    q.push(format!("allowWatchBookmarks={}", o.allow_watch_bookmarks));
    q.join("&")
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut lines = text.splitn(3, '\n');
    let target = lines.next().unwrap_or_default();
    let accept = lines.next().unwrap_or_default();
    let method = lines.next().unwrap_or("GET");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));

    // Path.
    let parsed = parse_path(path);
    let mut name = false;
    match &parsed {
        ApiPath::Resource(r) => {
            let parts =
                [Some(&r.version), Some(&r.resource), r.namespace.as_ref(), r.name.as_ref(), r.subresource.as_ref()];
            assert!(parts.iter().flatten().all(|p| !p.is_empty()), "{r:?}");
            name = r.name.is_some();
            let mut rebuilt = if r.group.is_empty() {
                format!("/api/{}", enc(&r.version))
            } else {
                format!("/apis/{}/{}", enc(&r.group), enc(&r.version))
            };
            if let Some(ns) = &r.namespace {
                rebuilt.push_str(&format!("/namespaces/{}", enc(ns)));
            }
            for seg in [Some(&r.resource), r.name.as_ref(), r.subresource.as_ref()].into_iter().flatten() {
                rebuilt.push('/');
                rebuilt.push_str(&enc(seg));
            }
            assert_eq!(parse_path(&rebuilt), parsed, "{rebuilt}");
        }
        ApiPath::Group { group } => assert!(!group.is_empty()),
        ApiPath::GroupVersion { group, version } => assert!(!group.is_empty() && !version.is_empty()),
        _ => {}
    }

    // Query.
    let pairs = query_pairs(query);
    match parse_query(query) {
        Ok(o) => {
            let first = |k: &str| pairs.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
            assert_eq!(query_param(query, "labelSelector"), o.label_selector);
            assert_eq!(first("fieldSelector"), o.field_selector);
            assert_eq!(first("continue"), o.continue_token);
            let canonical = canonical_query(&o);
            assert_eq!(parse_query(&canonical).as_ref().ok(), Some(&o), "{canonical}");
            match o.selectors() {
                Ok((labels, fields)) => {
                    // The selector target checks printing; here only the cases it knows of may
                    // fail to print back: fields ending in `!` or a lone `\`, and `in ("")`.
                    let unprintable =
                        |f: &str| f.ends_with('!') || f.bytes().rev().take_while(|b| *b == b'\\').count() % 2 == 1;
                    if !fields.terms().iter().any(|t| unprintable(&t.field)) {
                        assert_eq!(FieldSelector::parse(&fields.to_string()).as_ref(), Ok(&fields), "{fields}");
                    }
                    if !labels
                        .requirements()
                        .iter()
                        .any(|r| matches!(r.op, LabelOp::In | LabelOp::NotIn) && r.values == [""])
                    {
                        assert_eq!(LabelSelector::parse(&labels.to_string()).as_ref(), Ok(&labels), "{labels}");
                    }
                }
                Err(e) => assert_eq!(e.code, 400),
            }
            for m in [method, "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] {
                let _ = verb(m, name, o.watch);
            }
        }
        Err(e) => assert_eq!(e.code, 400, "{e:?}"),
    }

    // Accept.
    let kind = parse_accept_no_protobuf(accept);
    assert!(!matches!(kind, AcceptKind::Protobuf { .. }), "MetaServer negotiated protobuf for {accept:?}");
    let _ = kind.api_version();
    let full = parse_accept(accept);
    if !matches!(full, AcceptKind::Unsupported | AcceptKind::Protobuf { json_too: true }) {
        assert_eq!(parse_accept(full.content_type()), full, "{accept:?}");
    }
});
