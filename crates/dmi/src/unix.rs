//! gRPC over unix sockets, both ways: [`bind_unix`] + [`serve_unix`] for a server (edgecore's
//! DeviceManagerService, a mapper's DeviceMapperService) and [`connect_unix`] for a client.
//!
//! Binding follows what upstream's daemons do with their sockets (remove the old file, then
//! listen) but refuses to take over a socket that someone still answers on: two mappers
//! configured with the same path, or a second edgecore, would otherwise silently steal each
//! other's clients. The socket is made owner-only (0600): DMI has no authentication, so the
//! file mode is the access control.

use std::future::Future;
use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tonic::transport::server::Router;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::error::{Error, Result};

/// A sensible connect timeout for a local socket (upstream mappers use 1 s per try).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long [`bind_unix`] waits for an answer on an existing socket before calling it stale.
const LIVENESS_PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Listens on the unix socket `path`: creates its folder, removes a stale socket left by a
/// previous run, binds, and sets mode 0600.
///
/// Fails with [`Error::SocketInUse`] when another process accepts connections on `path`, and
/// with [`Error::NotASocket`] when a file or folder that is not a socket is in the way.
pub async fn bind_unix(path: impl AsRef<Path>) -> Result<UnixListener> {
    let path = path.as_ref();
    let bind_err = |source| Error::Bind { path: path.to_path_buf(), source };
    match tokio::fs::symlink_metadata(path).await {
        Ok(meta) if meta.file_type().is_socket() => {
            let probe = tokio::time::timeout(LIVENESS_PROBE_TIMEOUT, UnixStream::connect(path)).await;
            match probe {
                // Someone accepted (or is too busy to accept yet, which is alive as well).
                Ok(Ok(_)) | Err(_) => return Err(Error::SocketInUse { path: path.to_path_buf() }),
                Ok(Err(e)) => {
                    tracing::debug!(socket = %path.display(), error = %e, "Removing a stale socket.");
                    remove_if_present(path).await.map_err(bind_err)?;
                }
            }
        }
        Ok(_) => return Err(Error::NotASocket { path: path.to_path_buf() }),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(bind_err(e)),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir).await.map_err(bind_err)?;
    }
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).await.map_err(bind_err)?;
    Ok(listener)
}

/// Serves `router` on `listener` until `shutdown` completes, then lets calls in flight finish
/// and removes the socket file. Accept errors (e.g. out of file descriptors) are logged and
/// the server keeps accepting.
///
/// ```no_run
/// # async fn demo(svc: kubeedge_dmi::v1beta1::device_mapper_service_server::DeviceMapperServiceServer<impl kubeedge_dmi::v1beta1::device_mapper_service_server::DeviceMapperService>) -> Result<(), kubeedge_dmi::Error> {
/// let listener = kubeedge_dmi::bind_unix("/etc/kubeedge/modbus.sock").await?;
/// let router = tonic::transport::Server::builder().add_service(svc);
/// kubeedge_dmi::serve_unix(router, listener, std::future::pending()).await
/// # }
/// ```
pub async fn serve_unix<F>(router: Router, listener: UnixListener, shutdown: F) -> Result<()>
where
    F: Future<Output = ()> + Send,
{
    let path = listener.local_addr().ok().and_then(|a| a.as_pathname().map(Path::to_path_buf)).unwrap_or_default();
    let incoming = futures::stream::unfold(listener, |listener| async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => return Some((Ok::<_, std::io::Error>(stream), listener)),
                Err(e) => {
                    // Transient (EMFILE, ECONNABORTED): back off briefly rather than spin.
                    tracing::warn!(error = %e, "Failed to accept a DMI connection.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    let served = router.serve_with_incoming_shutdown(incoming, shutdown).await;
    if !path.as_os_str().is_empty() {
        // Best effort: a later bind removes a stale socket anyway.
        let _ = remove_if_present(&path).await;
    }
    served.map_err(|source| Error::Serve { path, source })
}

/// Connects a gRPC channel to the unix socket `path`, failing after `connect_timeout`.
///
/// The channel reconnects by itself on the next call if the server restarts; each reconnect
/// has the same timeout.
pub async fn connect_unix(path: impl AsRef<Path>, connect_timeout: Duration) -> Result<Channel> {
    let path = path.as_ref().to_path_buf();
    let (endpoint, connector) = dialer(&path, connect_timeout);
    endpoint.connect_with_connector(connector).await.map_err(|source| Error::Connect { path, source })
}

/// An endpoint with `connect_timeout` and a connector that dials `path`. The URI only names the
/// HTTP/2 authority; the connector ignores it (grpc-go says "localhost" for unix sockets too).
fn dialer(
    path: &Path,
    connect_timeout: Duration,
) -> (
    Endpoint,
    impl tower::Service<Uri, Response = TokioIo<UnixStream>, Error = std::io::Error, Future: Send> + Clone + Send + 'static,
) {
    let path = Arc::new(path.to_path_buf());
    let endpoint = Endpoint::from_static("http://localhost").connect_timeout(connect_timeout);
    let connector = tower::service_fn(move |_: Uri| {
        let path = Arc::clone(&path);
        async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(&*path).await?)) }
    });
    (endpoint, connector)
}

/// A channel to the unix socket `path` that dials on first use (and again after each failure),
/// so it can be made before the server is up; every dial has `connect_timeout`.
pub fn connect_unix_lazy(path: impl AsRef<Path>, connect_timeout: Duration) -> Channel {
    let (endpoint, connector) = dialer(path.as_ref(), connect_timeout);
    endpoint.connect_with_connector_lazy(connector)
}

async fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match tokio::fs::remove_file(path).await {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
