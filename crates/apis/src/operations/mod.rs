//! `operations.kubeedge.io`: jobs operators run on fleets of edge nodes — upgrading edgecore
//! ([`NodeUpgradeJob`](v1alpha2::NodeUpgradeJob)), pulling images ahead of need
//! ([`ImagePrePullJob`](v1alpha2::ImagePrePullJob)) and changing edgecore.yaml
//! ([`ConfigUpdateJob`](v1alpha2::ConfigUpdateJob)). Each picks nodes by name or label, runs
//! with a concurrency and a failure tolerance, and reports per-node status.
//!
//! Only the types and their CRDs live here: no cloudcore or edgecore module runs the jobs yet
//! (`modules.taskManager` is refused at start).

pub mod v1alpha2;

/// The API group.
pub const GROUP: &str = "operations.kubeedge.io";
