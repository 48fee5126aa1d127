//! EdgeController: Kubernetes objects for edge nodes go down (pods, the configmaps and
//! secrets they use, the nodes themselves), and what edges report comes up (node registration
//! and status, pod status, deletions, leases, events, queries). Upstream's
//! `cloud/pkg/edgecontroller`; wire details in `reference/kubeedge-protocols.md` §4.

pub mod downstream;
pub mod module;
pub mod upstream;
pub mod view;
