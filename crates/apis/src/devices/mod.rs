//! `devices.kubeedge.io`: devices as Kubernetes objects.
//!
//! A [`Device`](v1beta1::Device) is one physical device bound to an edge node
//! (`spec.nodeName`), described by a [`DeviceModel`](v1beta1::DeviceModel) in the same
//! namespace. What the device reports (its twins' reported values, its state) is kept apart, in a
//! [`DeviceStatus`](v1beta1::DeviceStatus) of the same name owned by the Device: cloudcore's
//! DeviceController creates it and merge-patches it from the edge's reports, so the Device's spec
//! (what the user wants) and the reports (what the device says) are never written by the same
//! hand.
//!
//! Only v1beta1, upstream's stored version, is defined here (upstream's CRDs still serve the
//! older v1alpha2 too; see docs/compatibility.md).

pub mod v1beta1;

/// The API group.
pub const GROUP: &str = "devices.kubeedge.io";
