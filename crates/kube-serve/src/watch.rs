//! Watch stream encoding: one `{"type":…,"object":…}` JSON document per line, as
//! kube-apiserver streams `?watch=true` responses, plus BOOKMARK objects.

use serde_json::{Value, json};

/// The `type` of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// `ADDED`
    Added,
    /// `MODIFIED`
    Modified,
    /// `DELETED`
    Deleted,
    /// `BOOKMARK`
    Bookmark,
    /// `ERROR` (the object is a `Status`)
    Error,
}

impl EventType {
    /// The wire name (`ADDED`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
            EventType::Bookmark => "BOOKMARK",
            EventType::Error => "ERROR",
        }
    }
}

/// The annotation that marks the bookmark ending the initial events of a
/// `sendInitialEvents=true` watch.
pub const INITIAL_EVENTS_END_ANNOTATION: &str = "k8s.io/initial-events-end";

/// The event as a JSON value.
pub fn event(ty: EventType, object: &Value) -> Value {
    json!({"type": ty.as_str(), "object": object})
}

/// One newline-terminated event line: `{"type":"ADDED","object":{…}}\n`.
pub fn encode_event(ty: EventType, object: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec(&event(ty, object)).unwrap_or_default();
    out.push(b'\n');
    out
}

/// A bookmark object: only `kind`, `apiVersion` and `metadata.resourceVersion`.
pub fn bookmark(kind: &str, api_version: &str, resource_version: &str) -> Value {
    json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": resource_version}})
}

/// The bookmark that ends the initial events of a `sendInitialEvents=true` watch: a
/// [`bookmark`] annotated `k8s.io/initial-events-end: "true"`.
pub fn initial_events_end_bookmark(kind: &str, api_version: &str, resource_version: &str) -> Value {
    json!({"kind": kind, "apiVersion": api_version, "metadata": {
        "resourceVersion": resource_version,
        "annotations": {INITIAL_EVENTS_END_ANNOTATION: "true"}
    }})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_lines() {
        let line = encode_event(EventType::Added, &json!({"kind": "Pod"}));
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        let v: Value = serde_json::from_slice(&line).expect("json");
        assert_eq!(v, json!({"type": "ADDED", "object": {"kind": "Pod"}}));
        for (t, s) in [
            (EventType::Modified, "MODIFIED"),
            (EventType::Deleted, "DELETED"),
            (EventType::Bookmark, "BOOKMARK"),
            (EventType::Error, "ERROR"),
        ] {
            assert_eq!(event(t, &json!({}))["type"], s);
        }
    }

    #[test]
    fn bookmarks() {
        assert_eq!(
            bookmark("Pod", "v1", "42"),
            json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": "42"}})
        );
        let b = initial_events_end_bookmark("Lease", "coordination.k8s.io/v1", "7");
        assert_eq!(b["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");
        assert_eq!(b["metadata"]["resourceVersion"], "7");
    }
}
