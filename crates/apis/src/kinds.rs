//! Guessing a resource (plural) name from a kind.

/// Kinds whose resource name the rules below would get wrong, as listed by upstream.
const UNUSUAL_KIND_TO_RESOURCE: &[(&str, &str)] = &[
    ("Endpoints", "endpoints"),
    ("PodStatus", "podstatus"),
    ("NodeStatus", "nodestatus"),
    ("CustomResourceDefinition", "customresourcedefinitions"),
    ("CustomResourceDefinitionList", "customresourcedefinitionlist"),
    ("Leases", "leases"),
];

/// Guesses the resource name of a kind, exactly as upstream's SyncController does
/// (`UnsafeKindToResource` in KubeEdge's `pkg/metaserver/util`).
///
/// A few kinds are looked up in a fixed table (`Endpoints` → `endpoints`, `PodStatus` →
/// `podstatus`, …). Any other kind is lowercased, then: a final `s` gets `es` (`Ingress` →
/// `ingresses`), a final `y` becomes `ies` (`NetworkPolicy` → `networkpolicies`, and also
/// `Gateway` → `gatewaies`), anything else gets `s`. There are no rules for `x`, `z`, `ch` or
/// `sh`: the guess must match upstream's, not English, because the SyncController uses it to find
/// the informer of a recorded kind.
///
/// Outside the table this is apimachinery's `meta.UnsafeGuessKindToResource` (which instead keeps
/// every kind ending in `endpoints` unchanged). The empty kind maps to the empty string.
pub fn unsafe_kind_to_resource(kind: &str) -> String {
    if let Some((_, resource)) = UNUSUAL_KIND_TO_RESOURCE.iter().find(|(k, _)| *k == kind) {
        return (*resource).to_owned();
    }
    let mut resource = kind.to_lowercase();
    if resource.ends_with('s') {
        resource.push_str("es");
    } else if let Some(stem) = resource.strip_suffix('y') {
        resource = format!("{stem}ies");
    } else if !resource.is_empty() {
        resource.push('s');
    }
    resource
}

#[cfg(test)]
mod tests {
    use super::unsafe_kind_to_resource;

    #[test]
    fn kinds_map_to_upstream_resources() {
        for (kind, resource) in [
            ("Pod", "pods"),
            ("ConfigMap", "configmaps"),
            ("Secret", "secrets"),
            ("Endpoints", "endpoints"),
            ("Ingress", "ingresses"),
            ("NetworkPolicy", "networkpolicies"),
            ("Policy", "policies"),
            ("Device", "devices"),
            ("Status", "statuses"),
            ("Lease", "leases"),
            ("Service", "services"),
            ("Node", "nodes"),
            ("EndpointSlice", "endpointslices"),
            ("Rule", "rules"),
            ("RuleEndpoint", "ruleendpoints"),
            ("CustomResourceDefinition", "customresourcedefinitions"),
            // Upstream's own test cases.
            ("Class", "classes"),
            ("Copy", "copies"),
        ] {
            assert_eq!(unsafe_kind_to_resource(kind), resource, "kind {kind}");
        }
    }

    #[test]
    fn quirks_are_kept() {
        // Table entries, not the plural rules.
        assert_eq!(unsafe_kind_to_resource("PodStatus"), "podstatus");
        assert_eq!(unsafe_kind_to_resource("NodeStatus"), "nodestatus");
        assert_eq!(unsafe_kind_to_resource("CustomResourceDefinitionList"), "customresourcedefinitionlist");
        assert_eq!(unsafe_kind_to_resource("Leases"), "leases");
        // Any final y, and no English rules for x/z/ch/sh.
        assert_eq!(unsafe_kind_to_resource("Gateway"), "gatewaies");
        assert_eq!(unsafe_kind_to_resource("Box"), "boxs");
        assert_eq!(unsafe_kind_to_resource("Patch"), "patchs");
        // The table matches whole kinds only.
        assert_eq!(unsafe_kind_to_resource("MyEndpoints"), "myendpointses");
        assert_eq!(unsafe_kind_to_resource("endpoints"), "endpointses");
        assert_eq!(unsafe_kind_to_resource(""), "");
    }
}
