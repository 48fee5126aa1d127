//! DeviceController: Devices and DeviceModels (`devices.kubeedge.io/v1beta1`) to the edge nodes
//! they are bound to, and the edges' twin and state reports back into each device's
//! DeviceStatus.
//!
//! - [`downstream`]: the store task, the only writer of the device view
//!   ([`crate::delivery::devices`]), and the membership/model/device messages.
//! - [`upstream`]: the edges' reports, authorized, coalesced per device and merge-patched.
//! - [`wire`]: the twin payloads, as upstream writes them.
//! - [`module`]: the bus module.
//!
//! Delivery is the pod path's: device and model messages are acknowledged by the edge,
//! recorded in ObjectSyncs by SyncController, and SyncController reconciles every connected
//! node against the device view as against EdgeController's view, so a node that was offline
//! gets what it missed when it reconnects.

pub mod downstream;
pub mod module;
pub mod upstream;
pub mod wire;
