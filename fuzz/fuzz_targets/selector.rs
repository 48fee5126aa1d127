//! Label and field selectors ([`LabelSelector::parse`], [`FieldSelector::parse`],
//! [`LabelSelector::from_json`]): the `?labelSelector=` / `?fieldSelector=` text of every
//! MetaServer list and watch (and apiserver-lite's), and the structured selectors in objects.
//!
//! The whole input is tried as a label selector, a field selector and, when it is JSON, a
//! structured selector. Asserts:
//! - a parsed selector prints (its `Display`) to text that parses back to an equal selector,
//!   and printing is stable, except for the known cases [`unprintable_field`] and
//!   [`unprintable_labels`] (their printed form must then not parse back equal either);
//! - label requirements come out sorted by key, each with a valid key and values;
//! - matching an object, with or without labels, does not panic, and the empty selector
//!   matches everything.

#![no_main]

use kubeedge_kube_serve::selector::{FieldSelector, LabelOp, LabelSelector, validate_label_key, validate_label_value};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let pod = json!({
        "metadata": {"name": "p", "namespace": "default", "labels": {"app": "web", "n": "5", "in": ""}},
        "spec": {"nodeName": "edge-1"},
        "status": {"phase": "Running"}
    });
    let labels = pod.pointer("/metadata/labels").and_then(|l| l.as_object());

    if let Ok(l) = LabelSelector::parse(text) {
        check_labels(&l);
        let _ = l.matches(labels);
        if l.is_empty() {
            assert!(l.matches(None) && l.matches(labels));
        }
    }
    if let Ok(f) = FieldSelector::parse(text) {
        let printed = f.to_string();
        match FieldSelector::parse(&printed) {
            Ok(again) if again == f => {
                assert_eq!(again.to_string(), printed);
                assert_eq!(f.matches(&pod), again.matches(&pod));
            }
            other => assert!(
                f.terms().iter().any(|t| unprintable_field(&t.field)),
                "{text:?} printed as {printed:?} parses as {other:?}"
            ),
        }
        if f.is_empty() {
            assert!(f.matches(&pod));
        }
    }
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(text)
        && let Ok(l) = LabelSelector::from_json(&v)
        && (l.is_empty() || !l.requirements().is_empty())
    {
        check_labels(&l);
    }
});

/// A field name is trimmed after the operator is found, so `a! =x` leaves the field `a!` (op
/// `=`), which prints as `a!=x` (field `a`, op `!=`), and `a\ =x` the field `a\`, which prints
/// as `a\=x` (an escaped `=`, no operator). Such fields do not print back: a known limit of
/// `Display` (used on no request path), reported, not asserted.
fn unprintable_field(field: &str) -> bool {
    field.ends_with('!') || field.bytes().rev().take_while(|b| *b == b'\\').count() % 2 == 1
}

/// `a in (,)` keeps the one value `""` and prints as `a in ()`, which does not parse (kube's
/// Go parser reads `()` as `("")`; ours refuses it). Reported, not asserted.
fn unprintable_labels(l: &LabelSelector) -> bool {
    l.requirements().iter().any(|r| matches!(r.op, LabelOp::In | LabelOp::NotIn) && r.values == [""])
}

fn check_labels(l: &LabelSelector) {
    let printed = l.to_string();
    match LabelSelector::parse(&printed) {
        Ok(again) if &again == l => assert_eq!(again.to_string(), printed),
        other => assert!(unprintable_labels(l), "{l:?} printed as {printed:?} parses as {other:?}"),
    }
    let reqs = l.requirements();
    assert!(reqs.windows(2).all(|w| w[0].key <= w[1].key), "{reqs:?}");
    for r in reqs {
        assert!(validate_label_key(&r.key).is_ok(), "{r:?}");
        assert!(r.values.iter().all(|v| validate_label_value(v).is_ok()), "{r:?}");
    }
}
