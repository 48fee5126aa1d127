//! MetaServer: a local Kubernetes API on 127.0.0.1:10550 over MetaManager's SQLite store.
//! (Being built: get/list/watch from `meta_v2`, writes proxied to the cloud.)

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use kubeedge_beehive::Bus;

/// The way to the cloud for writes: the bus (EdgeHub) and whether the link is up.
#[derive(Clone)]
pub struct Remote {
    /// The bus; requests go to EdgeHub (`websocket`).
    pub bus: Bus,
    /// Whether EdgeHub is connected now (MetaManager follows the connection notices).
    pub connected: Arc<AtomicBool>,
    /// This node's name.
    pub node: String,
}
