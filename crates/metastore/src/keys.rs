//! The string forms upstream stores in `meta_v2`: the row key (`pkg/metaserver/key.go`,
//! `KeyFuncObj`/`KeyFuncReq`) and the group-version-resource column (apimachinery's
//! `schema.GroupVersionResource.String()`).

/// The group written in keys for the core API group (`models.GroupCore`).
pub const GROUP_CORE: &str = "core";

/// The namespace and name written in keys when there is none (`models.NullNamespace`,
/// `models.NullName`).
pub const NULL: &str = "null";

/// The `meta_v2` key of an object or a list: `/{group}/{version}/{plural}/{namespace}/{name}`, with
/// `core` for the empty group and `null` for a missing (or empty) namespace or name, e.g.
/// `/core/v1/pods/default/nginx`, `/apps/v1/deployments/null/null`.
///
/// As upstream's `KeyFuncReq`, the `namespaces` resource always gets namespace `null`.
pub fn v2_key(group: &str, version: &str, plural: &str, namespace: Option<&str>, name: Option<&str>) -> String {
    let group = if group.is_empty() { GROUP_CORE } else { group };
    let namespace = match namespace {
        _ if plural == "namespaces" => NULL,
        Some(ns) if !ns.is_empty() => ns,
        _ => NULL,
    };
    let name = name.filter(|n| !n.is_empty()).unwrap_or(NULL);
    format!("/{group}/{version}/{plural}/{namespace}/{name}")
}

/// Go's `schema.GroupVersionResource.String()`: `{group}/{version}, Resource={resource}`. The
/// core group is empty, so pods are `/v1, Resource=pods`.
pub fn gvr_string(group: &str, version: &str, resource: &str) -> String {
    format!("{group}/{version}, Resource={resource}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_upstream_forms() {
        assert_eq!(v2_key("", "v1", "pods", Some("default"), Some("nginx")), "/core/v1/pods/default/nginx");
        assert_eq!(v2_key("", "v1", "nodes", None, Some("edge-1")), "/core/v1/nodes/null/edge-1");
        assert_eq!(v2_key("apps", "v1", "deployments", Some(""), None), "/apps/v1/deployments/null/null");
        assert_eq!(
            v2_key("", "v1", "namespaces", Some("kube-system"), Some("kube-system")),
            "/core/v1/namespaces/null/kube-system"
        );
        assert_eq!(v2_key("", "v1", "services", Some("default"), Some("")), "/core/v1/services/default/null");
    }

    #[test]
    fn gvr_matches_go_string() {
        assert_eq!(gvr_string("", "v1", "pods"), "/v1, Resource=pods");
        assert_eq!(
            gvr_string("operations.kubeedge.io", "v1alpha2", "nodeupgradejobspecs"),
            "operations.kubeedge.io/v1alpha2, Resource=nodeupgradejobspecs"
        );
        assert_eq!(gvr_string("", "", ""), "/, Resource=");
    }
}
