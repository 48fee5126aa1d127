//! The device payloads DeviceController reads from edges, with upstream's JSON
//! (`cloud/pkg/devicecontroller/types`, the cloud's copy of the twin's `dttype`): the shared
//! shapes of [`kubeedge_model::twin`] under the cloud's names.
//!
//! A twin report (`twin/edge_updated`) is the edge's DeviceTwinResult, read as upstream's
//! `DeviceTwinUpdate`; a state report (`state/update`) is a `DeviceMsg`. The membership update is
//! in [`crate::delivery::devices::MembershipUpdate`].

pub use kubeedge_model::twin::{DeviceMsg as DeviceStateUpdate, DeviceTwinResult as DeviceTwinUpdate, TwinValue};
#[cfg(test)]
pub use kubeedge_model::twin::{MsgTwin, ValueMetadata};
