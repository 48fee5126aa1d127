//! The KubeEdge mapper framework: everything a device mapper does except speaking its device's
//! protocol, after upstream's `kubeedge/mapper-framework`.
//!
//! A mapper is a [`Protocol`] plus a `main` calling [`main`]. The framework then:
//! 1. reads `config.yaml` ([`Config`]: upstream's keys, errors naming the key, exit 64);
//! 2. binds its DeviceMapperService socket (`grpc_server.socket_path`) and the REST API
//!    (`common.address`:`common.http_port`);
//! 3. registers with edgecore (`common.edgecore_sock`, MapperRegister withData, 1 s per try,
//!    retried with backoff until edgecore answers) and starts a task per device listed in the
//!    answer ([`Panel`]);
//! 4. serves edgecore's device and model changes over DMI ([`MapperService`]) and the REST
//!    API ([`http`]);
//! 5. registers again whenever edgecore goes away and comes back, reconciling the panel;
//! 6. stops everything on SIGTERM/SIGINT (a second signal exits at once).
//!
//! Layout: `config` (the file), `edgecore` (the client side of DMI), `panel` (devices and
//! models), `device` (one device's task), `data` (types and value conversions), `push` (MQTT
//! and HTTP push), `dmi` (our DMI server), `http` (REST), `clock` (timestamps).

pub mod clock;
mod config;
pub mod data;
mod device;
mod dmi;
mod edgecore;
mod error;
pub mod http;
mod main_fn;
mod panel;
mod protocol;
pub mod push;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kubeedge_dmi::v1beta1::MapperInfo;
use kubeedge_dmi::v1beta1::device_mapper_service_server::DeviceMapperServiceServer;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{Common, Config, DEFAULT_HTTP_PORT, GrpcServer};
pub use data::{DataType, DataValue};
pub use device::{DEFAULT_CYCLE, View};
pub use dmi::MapperService;
pub use edgecore::{CALL_TIMEOUT, Edgecore};
pub use error::{Error, ErrorKind, ProtocolError, Result};
pub use main_fn::main;
pub use panel::{Panel, resource_id};
pub use protocol::{Property, Protocol};

/// How long [`Started::wait`] gives the tasks after the stop signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A running mapper.
pub struct Started<P: Protocol> {
    http_addr: SocketAddr,
    panel: Panel<P>,
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl<P: Protocol> Started<P> {
    /// Where the REST API listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The device panel.
    pub fn panel(&self) -> &Panel<P> {
        &self.panel
    }

    /// Waits for `stop`, then for every task (up to [`SHUTDOWN_GRACE`]); false if some did not
    /// stop in time.
    pub async fn wait(self) -> bool {
        self.stop.cancelled().await;
        self.tracker.close();
        let done = tokio::time::timeout(SHUTDOWN_GRACE, self.tracker.wait()).await.is_ok();
        if !done {
            tracing::error!(running = self.tracker.len(), "Tasks did not stop within the grace period.");
        }
        done
    }
}

/// Starts a mapper for `protocol` with `config`; it runs until `stop` is cancelled.
pub async fn start<P: Protocol>(config: Config, protocol: P, stop: CancellationToken) -> Result<Started<P>> {
    let dmi_listener = kubeedge_dmi::bind_unix(config.socket_path()).await?;
    let addr = config.http_addr();
    let http_listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| Error::Http { addr, source })?;
    let http_addr = http_listener.local_addr().map_err(|source| Error::Http { addr, source })?;

    let mapper = MapperInfo {
        name: config.common.name.clone(),
        version: config.common.version.clone(),
        api_version: config.common.api_version.clone(),
        protocol: config.common.protocol.clone(),
        address: config.grpc_server.socket_path.clone().into_bytes(),
        state: kubeedge_dmi::state::OK.to_owned(),
    };
    let edgecore = Edgecore::new(config.edgecore_sock(), mapper);
    let tracker = TaskTracker::new();
    let panel = Panel::new(Arc::new(protocol), edgecore.clone(), tracker.clone(), stop.clone());

    // Our DMI server first, so edgecore can call back as soon as it has our registration.
    let router = tonic::transport::Server::builder()
        .add_service(DeviceMapperServiceServer::new(MapperService::new(panel.clone())));
    let (s, path) = (stop.clone(), config.socket_path());
    tracker.spawn(async move {
        if let Err(e) = kubeedge_dmi::serve_unix(router, dmi_listener, s.clone().cancelled_owned()).await {
            tracing::error!(socket = %path.display(), error = %format!("{e:#}"), "The DMI server failed; stopping.");
            s.cancel();
        }
    });
    tracing::info!(socket = %config.grpc_server.socket_path, "Serving DeviceMapperService.");

    let (s, p) = (stop.clone(), panel.clone());
    tracker.spawn(async move {
        if let Err(e) = http::serve(http_listener, p, s.clone()).await {
            tracing::error!(addr = %http_addr, error = %e, "The REST API failed; stopping.");
            s.cancel();
        }
    });
    tracing::info!(addr = %http_addr, "Serving the REST API.");

    let (s, p) = (stop.clone(), panel.clone());
    tracker.spawn(async move {
        while let Some(answer) = edgecore.register(&s).await {
            p.sync(answer.model_list, answer.device_list);
            tokio::select! {
                _ = s.cancelled() => break,
                () = edgecore.lost() => tracing::warn!("edgecore went away; registering again."),
            }
        }
    });
    Ok(Started { http_addr, panel, tracker, stop })
}
