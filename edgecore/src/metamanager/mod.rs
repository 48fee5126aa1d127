//! MetaManager: everything the node needs, kept in SQLite (`crates/metastore`, upstream's exact
//! `meta` and `meta_v2` tables), so the node keeps working while the cloud is away. MetaServer
//! serves the same data as a local Kubernetes API on 127.0.0.1:10550.
//!
//! Upstream's `edge/pkg/metamanager` (kubeedge/kubeedge); the wire shapes are checked against
//! the recorded upstream traffic in `tests/fixtures/upstream/`.

mod inventory;
pub mod metaserver;
pub mod module;
mod token;

use std::sync::Arc;

use kubeedge_metastore::MetaV2Row;
use kubeedge_model::constants::resource_type;

/// How a `meta_v2` row changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A new row.
    Added,
    /// A replaced row.
    Modified,
    /// A removed row (the last value is carried).
    Deleted,
}

/// A committed change of a `meta_v2` row, published after the commit for MetaServer's watches.
#[derive(Debug, Clone)]
pub struct Change {
    /// What happened.
    pub kind: ChangeKind,
    /// The row (for a delete, as it was).
    pub row: MetaV2Row,
}

/// The channel MetaManager publishes committed changes on.
pub type Changes = tokio::sync::broadcast::Sender<Arc<Change>>;

/// Capacity of the change channel; a watcher that falls further behind is ended (its client
/// re-lists, as after a 410).
pub const CHANGES_CAP: usize = 4096;

/// A Kubernetes resource MetaManager stores for MetaServer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gvr {
    /// API group, empty for core.
    pub group: &'static str,
    /// Version.
    pub version: &'static str,
    /// Plural resource name.
    pub plural: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
}

/// The resources edges receive, by edge resource type (the messages' `{ns}/{type}/{name}`).
pub const GVRS: &[(&str, Gvr)] = &[
    (resource_type::POD, Gvr { group: "", version: "v1", plural: "pods", kind: "Pod", namespaced: true }),
    (
        resource_type::CONFIGMAP,
        Gvr { group: "", version: "v1", plural: "configmaps", kind: "ConfigMap", namespaced: true },
    ),
    (resource_type::SECRET, Gvr { group: "", version: "v1", plural: "secrets", kind: "Secret", namespaced: true }),
    (resource_type::NODE, Gvr { group: "", version: "v1", plural: "nodes", kind: "Node", namespaced: false }),
    (resource_type::SERVICE, Gvr { group: "", version: "v1", plural: "services", kind: "Service", namespaced: true }),
    (
        resource_type::ENDPOINTS,
        Gvr { group: "", version: "v1", plural: "endpoints", kind: "Endpoints", namespaced: true },
    ),
    (
        resource_type::LEASE,
        Gvr { group: "coordination.k8s.io", version: "v1", plural: "leases", kind: "Lease", namespaced: true },
    ),
    (
        resource_type::PERSISTENT_VOLUME,
        Gvr { group: "", version: "v1", plural: "persistentvolumes", kind: "PersistentVolume", namespaced: false },
    ),
    (
        resource_type::PERSISTENT_VOLUME_CLAIM,
        Gvr {
            group: "",
            version: "v1",
            plural: "persistentvolumeclaims",
            kind: "PersistentVolumeClaim",
            namespaced: true,
        },
    ),
];

/// The resource for an edge resource type.
pub fn gvr_of(ty: &str) -> Option<Gvr> {
    GVRS.iter().find(|(t, _)| *t == ty).map(|(_, g)| *g)
}

impl Gvr {
    /// The `group_version_resource` column value.
    pub fn column(&self) -> String {
        kubeedge_metastore::gvr_string(self.group, self.version, self.plural)
    }

    /// The `meta_v2` key of one object.
    pub fn key(&self, namespace: &str, name: &str) -> String {
        let ns = if self.namespaced { Some(namespace) } else { None };
        kubeedge_metastore::v2_key(self.group, self.version, self.plural, ns, Some(name))
    }

    /// `apiVersion`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_owned() } else { format!("{}/{}", self.group, self.version) }
    }
}
