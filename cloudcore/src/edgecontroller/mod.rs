//! EdgeController: Kubernetes objects for edge nodes go down (pods, the configmaps and
//! secrets they use, the nodes themselves), and what edges report comes up (node registration
//! and status, pod status, deletions, leases, events, queries). Upstream's
//! `cloud/pkg/edgecontroller`; reply shapes as recorded from a real upstream pair in
//! `tests/fixtures/upstream/real-pair/`.

pub mod downstream;
pub mod module;
pub mod renewer;
pub mod upstream;
