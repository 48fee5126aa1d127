//! KubeEdge's custom resource types, with the CRDs generated from them.
//!
//! cloudcore's controllers read and write these objects through the Kubernetes API, and the
//! objects must be byte-for-byte what upstream KubeEdge (1.23) writes: an upstream cloudcore and
//! ours may share a cluster during an upgrade. So every type here keeps upstream's group, version,
//! kind, plural, scope and JSON keys (including Go's acronyms, e.g. `objectAPIVersion`), and
//! fixtures written from upstream's Go types are round-tripped in `tests/`.
//!
//! The types use kube's `CustomResource` derive. Only `kube-core`'s traits are needed for that, not
//! kube's HTTP client, so edge-side crates can use the types cheaply. The YAML under
//! `manifests/crds/` is generated from [`crd_manifests`]; a test fails if it is stale (rerun it
//! with `UPDATE_CRDS=1` to rewrite the files).
//!
//! Layout: one module per API group ([`reliablesyncs`], [`devices`], [`rules`], [`operations`]), one sub-module per version, plus
//! [`unsafe_kind_to_resource`], the kind→resource guess that controllers use to resolve a
//! recorded kind.

pub mod devices;
mod kinds;
pub mod operations;
pub mod reliablesyncs;
pub mod rules;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube_core::CustomResourceExt;

pub use kinds::unsafe_kind_to_resource;

/// A CRD and the file it is published in.
#[derive(Debug, Clone)]
pub struct CrdManifest {
    /// Path relative to the repository's `manifests/crds/`, named as upstream's `build/crds/`.
    pub path: &'static str,
    /// The definition, generated from the Rust type.
    pub crd: CustomResourceDefinition,
}

/// Every CRD this crate defines, with the manifest file each one is published in.
pub fn crd_manifests() -> Vec<CrdManifest> {
    use devices::v1beta1::{Device, DeviceModel, DeviceStatus};
    use operations::v1alpha2::{ConfigUpdateJob, ImagePrePullJob, NodeUpgradeJob};
    use reliablesyncs::v1alpha1::{ClusterObjectSync, ObjectSync};
    use rules::v1::{Rule, RuleEndpoint};
    vec![
        CrdManifest::new("reliablesyncs/objectsync_v1alpha1.yaml", ObjectSync::crd()),
        CrdManifest::new("reliablesyncs/cluster_objectsync_v1alpha1.yaml", ClusterObjectSync::crd()),
        // Upstream's device CRDs have no status subresource: DeviceController (ours and
        // upstream's, which may share the cluster) merge-patches `status` of the main resource.
        CrdManifest::new("devices/devices_v1beta1_device.yaml", without_subresources(Device::crd())),
        CrdManifest::new("devices/devices_v1beta1_devicemodel.yaml", DeviceModel::crd()),
        CrdManifest::new("devices/devices_v1beta1_devicestatus.yaml", without_subresources(DeviceStatus::crd())),
        // Nor has upstream's Rule: its counters are patched into the main resource.
        CrdManifest::new("router/router_v1_rule.yaml", without_subresources(Rule::crd())),
        CrdManifest::new("router/router_v1_ruleEndpoint.yaml", RuleEndpoint::crd()),
        CrdManifest::new("operations/operations_v1alpha2_nodeupgradejob.yaml", NodeUpgradeJob::crd()),
        CrdManifest::new("operations/operations_v1alpha2_imageprepulljob.yaml", ImagePrePullJob::crd()),
        CrdManifest::new("operations/operations_v1alpha2_configupdatejob.yaml", ConfigUpdateJob::crd()),
    ]
}

/// The CRD without subresources (kube's derive adds `status` for every kind with a status type).
fn without_subresources(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    for v in &mut crd.spec.versions {
        v.subresources = None;
    }
    crd
}

impl CrdManifest {
    /// Fills in what upstream's controller-gen writes and kube's derive leaves to the API server's
    /// defaulting (`listKind`), so our manifests name things exactly as upstream's do.
    fn new(path: &'static str, mut crd: CustomResourceDefinition) -> Self {
        let names = &mut crd.spec.names;
        names.list_kind.get_or_insert_with(|| format!("{}List", names.kind));
        Self { path, crd }
    }
}

/// Every CRD this crate defines, ready to be created in a cluster.
pub fn crds() -> Vec<CustomResourceDefinition> {
    crd_manifests().into_iter().map(|m| m.crd).collect()
}
