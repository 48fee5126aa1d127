//! What the cloud delivers to each edge node, shared by EdgeController (which builds the view
//! from its watches and sends) and SyncController (which records ACKs and reconciles against
//! the view): neither imports the other.

pub mod acks;
pub mod devices;
pub mod messages;
pub mod refs;
pub mod syncs;
pub mod view;
