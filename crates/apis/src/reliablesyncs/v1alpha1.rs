//! `reliablesyncs.kubeedge.io/v1alpha1`: [`ObjectSync`] and [`ClusterObjectSync`].
//!
//! Both kinds share one spec and one status, as upstream's do. Inside them Go leaves out empty
//! strings (`omitempty`), and so do we. Go always writes `spec` and `status`, even empty
//! (`omitempty` does not apply to structs): we always write `spec` (and require it when reading,
//! as kube's derive does), and read an upstream `"status": {}` as `Some(default)`, which is written
//! back as `{}`; so an object read from an upstream cloudcore is written back unchanged.
//! The status is a subresource: a create drops it, and it is changed only through `/status`.

use std::ops::{Deref, DerefMut};

use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The version of the group.
pub const VERSION: &str = "v1alpha1";

/// `apiVersion` of both kinds: `reliablesyncs.kubeedge.io/v1alpha1`.
pub const API_VERSION: &str = "reliablesyncs.kubeedge.io/v1alpha1";

/// Which object was delivered to the edge node.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[kube(
    group = "reliablesyncs.kubeedge.io",
    version = "v1alpha1",
    kind = "ObjectSync",
    plural = "objectsyncs",
    singular = "objectsync",
    namespaced,
    status = "ObjectSyncStatus",
    derive = "Default",
    derive = "PartialEq",
    crates(kube_core = "::kube_core"),
    doc = "The record that a namespaced object was delivered to an edge node and is persisted there.
It lives in the object's namespace and is named {node name}.{object UID}."
)]
pub struct ObjectSyncSpec {
    /// The apiVersion of the object delivered to the edge node.
    #[serde(rename = "objectAPIVersion", default, skip_serializing_if = "String::is_empty")]
    pub object_api_version: String,
    /// The kind of the object delivered to the edge node.
    #[serde(rename = "objectKind", default, skip_serializing_if = "String::is_empty")]
    pub object_kind: String,
    /// The name of the object delivered to the edge node.
    #[serde(rename = "objectName", default, skip_serializing_if = "String::is_empty")]
    pub object_name: String,
}

/// The version of the object the edge node has.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub struct ObjectSyncStatus {
    /// The resourceVersion of the object last persisted on the edge node: a decimal number, "0"
    /// right after the record is created.
    #[serde(rename = "objectResourceVersion", default, skip_serializing_if = "String::is_empty")]
    pub object_resource_version: String,
}

/// The spec of a [`ClusterObjectSync`]: the same fields as [`ObjectSyncSpec`], which it
/// dereferences to (kube's derive needs one spec type per kind).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(transparent)]
#[schemars(description = "Which object was delivered to the edge node.")]
#[kube(
    group = "reliablesyncs.kubeedge.io",
    version = "v1alpha1",
    kind = "ClusterObjectSync",
    plural = "clusterobjectsyncs",
    singular = "clusterobjectsync",
    status = "ObjectSyncStatus",
    derive = "Default",
    derive = "PartialEq",
    crates(kube_core = "::kube_core"),
    doc = "The record that a cluster-scoped object was delivered to an edge node and is persisted there.
It is named {node name}.{object UID}."
)]
pub struct ClusterObjectSyncSpec(pub ObjectSyncSpec);

impl ObjectSyncSpec {
    /// The spec of a record for object `name` of `kind` in `api_version`.
    pub fn new(api_version: impl Into<String>, kind: impl Into<String>, name: impl Into<String>) -> Self {
        Self { object_api_version: api_version.into(), object_kind: kind.into(), object_name: name.into() }
    }
}

impl ObjectSyncStatus {
    /// A status recording `resource_version`.
    pub fn new(resource_version: impl Into<String>) -> Self {
        Self { object_resource_version: resource_version.into() }
    }
}

// === impl ClusterObjectSyncSpec ===

impl Deref for ClusterObjectSyncSpec {
    type Target = ObjectSyncSpec;

    fn deref(&self) -> &ObjectSyncSpec {
        &self.0
    }
}

impl DerefMut for ClusterObjectSyncSpec {
    fn deref_mut(&mut self) -> &mut ObjectSyncSpec {
        &mut self.0
    }
}

impl From<ObjectSyncSpec> for ClusterObjectSyncSpec {
    fn from(spec: ObjectSyncSpec) -> Self {
        Self(spec)
    }
}

impl From<ClusterObjectSyncSpec> for ObjectSyncSpec {
    fn from(spec: ClusterObjectSyncSpec) -> Self {
        spec.0
    }
}

#[cfg(test)]
mod tests {
    use kube_core::{CustomResourceExt, Resource};
    use serde_json::json;

    use super::*;

    #[test]
    fn resource_identity() {
        assert_eq!(ObjectSync::api_version(&()), API_VERSION);
        assert_eq!(ObjectSync::group(&()), super::super::GROUP);
        assert_eq!(ObjectSync::version(&()), VERSION);
        assert_eq!(ObjectSync::kind(&()), "ObjectSync");
        assert_eq!(ObjectSync::plural(&()), "objectsyncs");
        assert_eq!(ClusterObjectSync::api_version(&()), API_VERSION);
        assert_eq!(ClusterObjectSync::kind(&()), "ClusterObjectSync");
        assert_eq!(ClusterObjectSync::plural(&()), "clusterobjectsyncs");
        assert_eq!(ObjectSync::crd_name(), "objectsyncs.reliablesyncs.kubeedge.io");
        assert_eq!(ClusterObjectSync::crd_name(), "clusterobjectsyncs.reliablesyncs.kubeedge.io");
    }

    #[test]
    fn empty_strings_are_omitted_like_go() {
        let sync = ObjectSync {
            metadata: Default::default(),
            spec: ObjectSyncSpec::new("v1", "Pod", ""),
            status: Some(ObjectSyncStatus::default()),
        };
        assert_eq!(
            serde_json::to_value(&sync).unwrap(),
            json!({"apiVersion": API_VERSION, "kind": "ObjectSync", "metadata": {},
                   "spec": {"objectAPIVersion": "v1", "objectKind": "Pod"}, "status": {}})
        );
    }

    #[test]
    fn cluster_spec_is_the_shared_spec_on_the_wire() {
        let mut spec = ClusterObjectSyncSpec::from(ObjectSyncSpec::new("v1", "Node", "edge-1"));
        spec.object_name = "edge-2".into();
        assert_eq!(
            serde_json::to_value(&spec).unwrap(),
            json!({"objectAPIVersion": "v1", "objectKind": "Node", "objectName": "edge-2"})
        );
        let back: ObjectSyncSpec = spec.into();
        assert_eq!(back.object_name, "edge-2");
    }
}
