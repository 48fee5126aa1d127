//! `reliablesyncs.kubeedge.io`: the records of what each edge node has received.
//!
//! For every object cloudcore delivers to an edge node, the SyncController keeps one record: an
//! [`ObjectSync`](v1alpha1::ObjectSync) in the object's namespace, or a
//! [`ClusterObjectSync`](v1alpha1::ClusterObjectSync) for cluster-scoped objects. The record's
//! name is `{node}.{object uid}` and its status holds the resourceVersion the edge acknowledged;
//! the controller resends an object when the cluster has a newer version and a delete when the
//! object is gone. That loop is KubeEdge's whole "resume after disconnect" mechanism.

use std::cmp::Ordering;

pub mod v1alpha1;

/// The API group.
pub const GROUP: &str = "reliablesyncs.kubeedge.io";

/// The name of the sync record of object `uid` on node `node`: `{node}.{uid}`.
pub fn object_sync_name(node: &str, uid: &str) -> String {
    format!("{node}.{uid}")
}

/// Splits a sync record's name into `(node, uid)` at the **last** `.`, as upstream does (node
/// names may contain dots; object UIDs do not).
///
/// Returns `None` when there is no `.` or either part is empty. Upstream would then yield an empty
/// node name (or an empty UID), which matches no node or object either.
pub fn parse_object_sync_name(name: &str) -> Option<(&str, &str)> {
    name.rsplit_once('.').filter(|(node, uid)| !node.is_empty() && !uid.is_empty())
}

/// Compares two resourceVersions as unsigned decimal integers, as upstream's
/// `CompareResourceVersion` does.
///
/// Returns `None` if either is not a plain decimal `u64` (no sign, no spaces, no overflow), where
/// upstream panics. Leading zeros are accepted, as by Go's `strconv.ParseUint`.
pub fn compare_resource_version(a: &str, b: &str) -> Option<Ordering> {
    Some(parse_decimal_u64(a)?.cmp(&parse_decimal_u64(b)?))
}

/// Go's `strconv.ParseUint(s, 10, 64)`: unlike Rust's `u64::from_str`, no leading `+`.
fn parse_decimal_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_join_node_and_uid() {
        assert_eq!(object_sync_name("edge-1", "3f2c-11"), "edge-1.3f2c-11");
        assert_eq!(object_sync_name("edge.node", "abcd-abcd"), "edge.node.abcd-abcd");
    }

    #[test]
    fn names_split_on_the_last_dot() {
        assert_eq!(parse_object_sync_name("edge-node.abcd-abcd"), Some(("edge-node", "abcd-abcd")));
        assert_eq!(parse_object_sync_name("edge.node.abcd-abcd"), Some(("edge.node", "abcd-abcd")));
        let uid = "6c4f3e5e-8f0b-4c1a-9b7e-2a4d5c6b7a81";
        let name = object_sync_name("node-1.zone-a.example.com", uid);
        assert_eq!(parse_object_sync_name(&name), Some(("node-1.zone-a.example.com", uid)));
    }

    #[test]
    fn names_without_both_parts_are_rejected() {
        for bad in ["", "nodot", ".uid", "node.", "."] {
            assert_eq!(parse_object_sync_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn resource_versions_compare_as_numbers() {
        assert_eq!(compare_resource_version("10", "9"), Some(Ordering::Greater));
        assert_eq!(compare_resource_version("9", "10"), Some(Ordering::Less));
        assert_eq!(compare_resource_version("42", "42"), Some(Ordering::Equal));
        assert_eq!(compare_resource_version("0", "0"), Some(Ordering::Equal));
        assert_eq!(compare_resource_version("007", "7"), Some(Ordering::Equal));
        assert_eq!(compare_resource_version("18446744073709551615", "1"), Some(Ordering::Greater));
    }

    #[test]
    fn non_numeric_resource_versions_do_not_compare() {
        for bad in ["", "abc", "+1", "-1", " 1", "1 ", "1.0", "0x10", "1_000", "18446744073709551616"] {
            assert_eq!(compare_resource_version(bad, "1"), None, "{bad:?}");
            assert_eq!(compare_resource_version("1", bad), None, "{bad:?}");
        }
    }
}
