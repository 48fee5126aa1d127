//! `operations.kubeedge.io`: jobs operators run on fleets of edge nodes — upgrading edgecore
//! ([`NodeUpgradeJob`](v1alpha2::NodeUpgradeJob)), pulling images ahead of need
//! ([`ImagePrePullJob`](v1alpha2::ImagePrePullJob)) and changing edgecore.yaml
//! ([`ConfigUpdateJob`](v1alpha2::ConfigUpdateJob)). Each picks nodes by name or label, runs
//! with a concurrency and a failure tolerance, and reports per-node status.
//!
//! [`task`] is the protocol cloudcore's TaskManager, edgecore's task manager and keadm speak
//! about them, and the checks of everything a node would execute.

pub mod task;
pub mod v1alpha2;

/// The API group.
pub const GROUP: &str = "operations.kubeedge.io";
