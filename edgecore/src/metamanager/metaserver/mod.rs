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

/// Why MetaServer stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not available in this build yet.
    #[error("MetaServer is not available in this build yet")]
    NotBuilt,
}

/// Serves the local API until `shutdown`.
pub async fn serve(
    _listener: tokio::net::TcpListener,
    _store: kubeedge_metastore::Store,
    _changes: super::Changes,
    _remote: Remote,
    _shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), Error> {
    Err(Error::NotBuilt)
}
