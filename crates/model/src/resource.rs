//! Resource strings: the cloud form `node/{node}/{ns}/{type}[/{name}]` used inside cloudcore, and
//! the edge form `{ns}/{type}[/{name}]` that crosses the wire (upstream's `BuildResource` and
//! the recorded frames in `tests/fixtures/upstream/`).

use std::fmt;

use crate::constants::{NULL_NAMESPACE, resource_type};

/// An edge-form resource: `{ns}/{type}` or `{ns}/{type}/{name}`.
///
/// Namespace-less objects (nodes, cluster-scoped resources) use the literal namespace `null`;
/// v1.15 edges use `default` for their node, and both are accepted.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ResourcePath {
    /// The namespace token (`null` when there is none).
    pub namespace: String,
    /// The resource type token (e.g. `pod`, `podpatch`).
    pub resource_type: String,
    /// The object name; absent in list queries.
    pub name: Option<String>,
}

/// A cloud-form resource: an edge-form resource addressed to one node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CloudResource {
    /// The edge node the message is for or from.
    pub node: String,
    /// The rest of the resource, as the edge sees it.
    pub path: ResourcePath,
}

/// A resource string that does not have the expected form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("resource {resource:?} is not of the form {expected}")]
pub struct ResourceError {
    /// The string offered.
    pub resource: String,
    /// The form that was expected.
    pub expected: &'static str,
}

impl ResourcePath {
    /// A path with a name.
    pub fn new(namespace: &str, resource_type: &str, name: &str) -> Self {
        Self { namespace: namespace.to_owned(), resource_type: resource_type.to_owned(), name: Some(name.to_owned()) }
    }

    /// A path for a cluster-scoped object (namespace `null`).
    pub fn cluster_scoped(resource_type: &str, name: &str) -> Self {
        Self::new(NULL_NAMESPACE, resource_type, name)
    }

    /// Parses `{ns}/{type}` or `{ns}/{type}/{name}` (upstream `ParseResourceEdge`: exactly two
    /// or three non-empty tokens).
    pub fn parse(resource: &str) -> Result<Self, ResourceError> {
        let err = || ResourceError { resource: resource.to_owned(), expected: "{ns}/{type}[/{name}]" };
        let mut parts = resource.split('/');
        let (Some(ns), Some(ty)) = (parts.next(), parts.next()) else {
            return Err(err());
        };
        let name = parts.next();
        if parts.next().is_some() || ns.is_empty() || ty.is_empty() || name == Some("") {
            return Err(err());
        }
        Ok(Self { namespace: ns.to_owned(), resource_type: ty.to_owned(), name: name.map(str::to_owned) })
    }

    /// The namespace, or `None` for the `null` token.
    pub fn namespace(&self) -> Option<&str> {
        Some(self.namespace.as_str()).filter(|ns| *ns != NULL_NAMESPACE)
    }

    /// Whether this addresses a node object (`node` or `nodepatch`, any namespace token).
    pub fn is_node(&self) -> bool {
        self.resource_type == resource_type::NODE || self.resource_type == resource_type::NODE_PATCH
    }

    /// The cloud form of this path for `node`.
    pub fn for_node(self, node: &str) -> CloudResource {
        CloudResource { node: node.to_owned(), path: self }
    }
}

impl fmt::Display for ResourcePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.resource_type)?;
        if let Some(name) = &self.name {
            write!(f, "/{name}")?;
        }
        Ok(())
    }
}

impl CloudResource {
    /// Parses `node/{node}/{ns}/{type}[/{name}]`.
    pub fn parse(resource: &str) -> Result<Self, ResourceError> {
        let err = || ResourceError { resource: resource.to_owned(), expected: "node/{node}/{ns}/{type}[/{name}]" };
        let rest = resource.strip_prefix("node/").ok_or_else(err)?;
        let (node, edge) = rest.split_once('/').ok_or_else(err)?;
        if node.is_empty() {
            return Err(err());
        }
        let path = ResourcePath::parse(edge).map_err(|_| err())?;
        Ok(Self { node: node.to_owned(), path })
    }

    /// The edge form (what CloudHub puts on the wire).
    pub fn to_edge(&self) -> String {
        self.path.to_string()
    }

    /// The node a cloud-form resource is addressed to: the token after `node/`, whatever
    /// follows it (`node/{node}`, `node/{node}/membership/detail` and malformed tails too).
    /// `None` without the prefix or with an empty node.
    pub fn node_of(resource: &str) -> Option<&str> {
        let rest = resource.strip_prefix("node/")?;
        let node = rest.split('/').next()?;
        (!node.is_empty()).then_some(node)
    }

    /// `node/{node}`: the resource of a notice about the node itself (CloudHub's
    /// connected/disconnected to SyncController, EdgeController's node deletion).
    pub fn node_notice(node: &str) -> String {
        format!("node/{node}")
    }

    /// `node/{node}/{resource}` for any edge resource, valid or not: what CloudHub makes of
    /// an edge's resource (the node from the authenticated connection). The inverse of
    /// [`trim_node_prefix`].
    pub fn prefixed(node: &str, resource: &str) -> String {
        format!("node/{node}/{resource}")
    }
}

impl fmt::Display for CloudResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node/{}/{}", self.node, self.path)
    }
}

/// Upstream's `TrimMessage`: a resource starting with `node` and having at least three tokens
/// loses its first two (`node/{node}/`); anything else is returned unchanged.
pub fn trim_node_prefix(resource: &str) -> &str {
    if !resource.starts_with(resource_type::NODE) {
        return resource;
    }
    let mut idx = resource.match_indices('/').map(|(i, _)| i);
    match (idx.next(), idx.next()) {
        (Some(_), Some(second)) => &resource[second + 1..],
        _ => resource,
    }
}

/// Whether `name` is a valid node name: a DNS-1123 subdomain (at most 253 characters of
/// dot-separated labels of lowercase alphanumerics and `-`, each starting and ending
/// alphanumeric).
pub fn valid_node_name(name: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    name.len() <= 253
        && name.split('.').all(|l| {
            l.bytes().all(|b| alnum(b) || b == b'-')
                && l.bytes().next().is_some_and(alnum)
                && l.bytes().last().is_some_and(alnum)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_form() {
        let p = ResourcePath::parse("default/pod/nginx").unwrap();
        assert_eq!(p, ResourcePath::new("default", "pod", "nginx"));
        assert_eq!(p.to_string(), "default/pod/nginx");
        let list = ResourcePath::parse("default/configmap").unwrap();
        assert_eq!(list.name, None);
        assert_eq!(list.to_string(), "default/configmap");
        let node = ResourcePath::parse("null/node/edge-1").unwrap();
        assert_eq!(node.namespace(), None);
        assert!(node.is_node());
        for bad in ["", "pod", "a/b/c/d", "/pod/x", "a//x", "a/b/"] {
            assert!(ResourcePath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cloud_form_and_conversions() {
        let c = CloudResource::parse("node/edge-1/default/pod/nginx").unwrap();
        assert_eq!(c.node, "edge-1");
        assert_eq!(c.to_edge(), "default/pod/nginx");
        assert_eq!(c.to_string(), "node/edge-1/default/pod/nginx");
        let back = ResourcePath::parse(&c.to_edge()).unwrap().for_node("edge-1");
        assert_eq!(back, c);
        assert!(CloudResource::parse("node/edge-1").is_err());
        assert!(CloudResource::parse("node//default/pod/x").is_err());
        assert!(CloudResource::parse("default/pod/x").is_err());
    }

    #[test]
    fn node_of_any_cloud_form() {
        assert_eq!(CloudResource::node_of("node/edge-1/default/pod/nginx"), Some("edge-1"));
        assert_eq!(CloudResource::node_of("node/edge-1/membership"), Some("edge-1"));
        assert_eq!(CloudResource::node_of("node/edge-1"), Some("edge-1"));
        assert_eq!(CloudResource::node_of("node//default/pod/x"), None);
        assert_eq!(CloudResource::node_of("default/pod/x"), None);
        assert_eq!(CloudResource::node_notice("e"), "node/e");
        let prefixed = CloudResource::prefixed("e", "membership/detail");
        assert_eq!(prefixed, "node/e/membership/detail");
        assert_eq!(trim_node_prefix(&prefixed), "membership/detail");
    }

    #[test]
    fn trim_matches_upstream() {
        assert_eq!(trim_node_prefix("node/edge-1/default/pod/nginx"), "default/pod/nginx");
        assert_eq!(trim_node_prefix("node/edge-1/membership"), "membership");
        assert_eq!(trim_node_prefix("node/edge-1"), "node/edge-1");
        assert_eq!(trim_node_prefix("default/pod/x"), "default/pod/x");
    }
}
