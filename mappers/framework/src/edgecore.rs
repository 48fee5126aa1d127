//! The mapper's side of edgecore's DeviceManagerService: registration (retried with backoff
//! until edgecore answers) and the two reports, each with upstream's 1 s deadline.
//!
//! edgecore can restart under a running mapper. It then forgets nothing (the mapper record is
//! in its database) but the mapper must learn of devices changed meanwhile, so
//! [`Edgecore::lost`] is signalled when a report fails with `Unavailable` and when the socket
//! file disappears or is replaced; the registration task then registers again and reconciles
//! the panel with the answer.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kubeedge_dmi::v1beta1::device_manager_service_client::DeviceManagerServiceClient;
use kubeedge_dmi::v1beta1::{
    DeviceStatus, MapperInfo, MapperRegisterRequest, MapperRegisterResponse, ReportDeviceStatesRequest,
    ReportDeviceStatusRequest, Twin,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// Upstream's deadline for every call to edgecore.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(1);
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How often the socket file is checked for a restarted edgecore.
const SOCKET_CHECK: Duration = Duration::from_millis(500);

/// A handle to edgecore's DMI server. Cheap to clone.
#[derive(Clone)]
pub struct Edgecore {
    socket: Arc<PathBuf>,
    client: DeviceManagerServiceClient<Channel>,
    mapper: Arc<MapperInfo>,
    lost: Arc<Notify>,
}

impl Edgecore {
    /// A handle for `socket`; nothing is dialed until the first call.
    pub fn new(socket: PathBuf, mapper: MapperInfo) -> Self {
        let channel = kubeedge_dmi::connect_unix_lazy(&socket, CALL_TIMEOUT);
        Self {
            socket: Arc::new(socket),
            client: DeviceManagerServiceClient::new(channel),
            mapper: Arc::new(mapper),
            lost: Arc::new(Notify::new()),
        }
    }

    /// Registers once (withData), within [`CALL_TIMEOUT`].
    pub async fn register_once(&self) -> Result<MapperRegisterResponse, tonic::Status> {
        let req = MapperRegisterRequest { with_data: true, mapper: Some(MapperInfo::clone(&self.mapper)) };
        let mut client = self.client.clone();
        match tokio::time::timeout(CALL_TIMEOUT, client.mapper_register(req)).await {
            Ok(r) => r.map(tonic::Response::into_inner),
            Err(_) => Err(tonic::Status::deadline_exceeded("MapperRegister took longer than 1s")),
        }
    }

    /// Registers, retrying with backoff until edgecore answers; `None` if `stop` fires first.
    pub async fn register(&self, stop: &CancellationToken) -> Option<MapperRegisterResponse> {
        let mut backoff = BACKOFF_START;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match self.register_once().await {
                Ok(answer) => {
                    tracing::info!(
                        socket = %self.socket.display(), devices = answer.device_list.len(), models = answer.model_list.len(),
                        "Registered with edgecore."
                    );
                    return Some(answer);
                }
                Err(status) => {
                    let log = attempt == 1 || attempt.is_power_of_two();
                    if log {
                        tracing::warn!(socket = %self.socket.display(), attempt, code = ?status.code(), error = %status.message(), retry_in = ?backoff, "Registering with edgecore failed; retrying.");
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Reports one device's twins.
    pub async fn report_status(
        &self,
        namespace: &str,
        name: &str,
        twins: Vec<Twin>,
        report_to_cloud: bool,
    ) -> Result<(), tonic::Status> {
        let req = ReportDeviceStatusRequest {
            device_name: name.to_owned(),
            device_namespace: namespace.to_owned(),
            reported_device: Some(DeviceStatus { twins, report_to_cloud, report_cycle: 0 }),
        };
        let mut client = self.client.clone();
        let answer = tokio::time::timeout(CALL_TIMEOUT, client.report_device_status(req)).await;
        self.check(answer.map(|r| r.map(drop)))
    }

    /// Reports one device's state (`online`, `offline`, ...).
    pub async fn report_state(&self, namespace: &str, name: &str, state: &str) -> Result<(), tonic::Status> {
        let req = ReportDeviceStatesRequest {
            device_name: name.to_owned(),
            device_namespace: namespace.to_owned(),
            state: state.to_owned(),
        };
        let mut client = self.client.clone();
        let answer = tokio::time::timeout(CALL_TIMEOUT, client.report_device_states(req)).await;
        self.check(answer.map(|r| r.map(drop)))
    }

    fn check(
        &self,
        answer: Result<Result<(), tonic::Status>, tokio::time::error::Elapsed>,
    ) -> Result<(), tonic::Status> {
        let result = answer.unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("report took longer than 1s")));
        if let Err(status) = &result
            && status.code() == tonic::Code::Unavailable
        {
            self.lost.notify_one();
        }
        result
    }

    /// Completes when edgecore seems to have gone away or restarted: a report failed with
    /// `Unavailable`, or the socket file vanished or was replaced since this was called.
    pub async fn lost(&self) {
        // The inode alone is not enough: a socket re-created at once may get the same number.
        let identity =
            |p: &std::path::Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino(), m.ctime(), m.ctime_nsec()));
        let first = identity(&self.socket);
        let mut tick = tokio::time::interval(SOCKET_CHECK);
        loop {
            tokio::select! {
                () = self.lost.notified() => return,
                _ = tick.tick() => {
                    // A stat of a local file: quick enough not to need spawn_blocking.
                    if identity(&self.socket) != first {
                        return;
                    }
                }
            }
        }
    }
}
