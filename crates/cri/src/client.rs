//! [`Cri`]: one HTTP/2 channel to the runtime's unix socket, the two generated clients on it,
//! and typed calls with per-call deadlines.
//!
//! Deadlines follow kubelet's remote runtime client: every call gets
//! [`Options::request_timeout`] (kubelet's `--runtime-request-timeout`, 2 min); StopContainer and
//! ExecSync add their own timeout on top, as the runtime may legitimately take that long; image
//! pulls get [`Options::pull_timeout`]. A call past its deadline is dropped, which resets its
//! HTTP/2 stream, so the runtime sees the cancellation.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::error::{Error, Result};
use crate::v1::{self, image_service_client::ImageServiceClient, runtime_service_client::RuntimeServiceClient};

/// The CRI API version kubelet sends in VersionRequest.
const KUBELET_API_VERSION: &str = "0.1.0";

/// How the client connects and how long calls may take.
#[derive(Debug, Clone)]
pub struct Options {
    /// Deadline for connecting to the socket (also for each reconnect).
    pub connect_timeout: Duration,
    /// Deadline of each call (kubelet's `--runtime-request-timeout`, default 2 min).
    pub request_timeout: Duration,
    /// Deadline of PullImage.
    pub pull_timeout: Duration,
    /// Largest message sent or accepted (kubelet's 16 MiB; tonic's default of 4 MiB is too
    /// small for ListContainers on a busy node).
    pub max_message_size: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
            pull_timeout: Duration::from_secs(600),
            max_message_size: 16 * 1024 * 1024,
        }
    }
}

/// A CRI v1 client on one channel to the runtime. Cheap to clone; calls take `&self` and may
/// run concurrently (HTTP/2 multiplexes them). If the runtime restarts, the channel reconnects
/// on the next call.
#[derive(Debug, Clone)]
pub struct Cri {
    /// The generated RuntimeService client, for calls without a typed wrapper here (clone it:
    /// its methods take `&mut self`).
    pub runtime: RuntimeServiceClient<Channel>,
    /// The generated ImageService client.
    pub image: ImageServiceClient<Channel>,
    options: Options,
}

impl Cri {
    /// Connects to the runtime's socket (e.g. `/run/containerd/containerd.sock`) with default
    /// [`Options`].
    pub async fn connect(socket: impl AsRef<Path>) -> Result<Self> {
        Self::connect_with(socket, Options::default()).await
    }

    /// Connects with the given options. Fails when the socket cannot be reached now.
    pub async fn connect_with(socket: impl AsRef<Path>, options: Options) -> Result<Self> {
        let path = Arc::new(socket.as_ref().to_path_buf());
        // The URI only names the HTTP/2 authority; the connector ignores it and dials the socket
        // (grpc-go, which kubelet uses, says "localhost" for unix sockets too).
        let endpoint = Endpoint::from_static("http://localhost").connect_timeout(options.connect_timeout);
        let connector = {
            let path = Arc::clone(&path);
            tower::service_fn(move |_: Uri| {
                let path = Arc::clone(&path);
                async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(&*path).await?)) }
            })
        };
        let channel = endpoint
            .connect_with_connector(connector)
            .await
            .map_err(|source| Error::Connect { path: PathBuf::clone(&path), source })?;
        Ok(Self::from_channel(channel, options))
    }

    /// Wraps an existing channel (e.g. to a test server).
    pub fn from_channel(channel: Channel, options: Options) -> Self {
        let max = options.max_message_size;
        let runtime =
            RuntimeServiceClient::new(channel.clone()).max_decoding_message_size(max).max_encoding_message_size(max);
        let image = ImageServiceClient::new(channel).max_decoding_message_size(max).max_encoding_message_size(max);
        Self { runtime, image, options }
    }

    /// The options in use.
    pub fn options(&self) -> &Options {
        &self.options
    }

    // === RuntimeService ===

    /// The runtime's name and version and the CRI version it speaks.
    pub async fn version(&self) -> Result<v1::VersionResponse> {
        let req = v1::VersionRequest { version: KUBELET_API_VERSION.into() };
        call("Version", self.options.request_timeout, self.runtime.clone().version(req)).await
    }

    /// The runtime's conditions (see [`StatusResponse::is_ready`](v1::StatusResponse::is_ready)).
    pub async fn status(&self) -> Result<v1::StatusResponse> {
        let req = v1::StatusRequest { verbose: false };
        call("Status", self.options.request_timeout, self.runtime.clone().status(req)).await
    }

    /// The runtime's conditions plus its verbose `info` (containerd puts its CRI config there as
    /// JSON under `config`: what `keadm join` reads the cgroup driver from).
    pub async fn status_verbose(&self) -> Result<v1::StatusResponse> {
        let req = v1::StatusRequest { verbose: true };
        call("Status", self.options.request_timeout, self.runtime.clone().status(req)).await
    }

    /// Creates and starts a pod sandbox; returns its id. `runtime_handler` empty means the
    /// runtime's default (`runc`).
    pub async fn run_pod_sandbox(&self, config: &v1::PodSandboxConfig, runtime_handler: &str) -> Result<String> {
        let req = v1::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: runtime_handler.into() };
        let resp =
            call("RunPodSandbox", self.options.request_timeout, self.runtime.clone().run_pod_sandbox(req)).await?;
        Ok(resp.pod_sandbox_id)
    }

    /// Stops a sandbox and every container in it, and releases its network. Idempotent until
    /// the sandbox is removed (then containerd 1.6 answers NotFound, see
    /// [`Error::is_not_found`]).
    pub async fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        let req = v1::StopPodSandboxRequest { pod_sandbox_id: id.into() };
        call("StopPodSandbox", self.options.request_timeout, self.runtime.clone().stop_pod_sandbox(req)).await?;
        Ok(())
    }

    /// Removes a sandbox (and its containers). A sandbox that is already gone may be NotFound
    /// or success, depending on the runtime.
    pub async fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        let req = v1::RemovePodSandboxRequest { pod_sandbox_id: id.into() };
        call("RemovePodSandbox", self.options.request_timeout, self.runtime.clone().remove_pod_sandbox(req)).await?;
        Ok(())
    }

    /// A sandbox's status: state, creation time, network (pod IP), labels.
    pub async fn pod_sandbox_status(&self, id: &str) -> Result<v1::PodSandboxStatus> {
        let req = v1::PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose: false };
        let resp = call("PodSandboxStatus", self.options.request_timeout, self.runtime.clone().pod_sandbox_status(req))
            .await?;
        resp.status.ok_or(Error::MissingField { call: "PodSandboxStatus", field: "status" })
    }

    /// The sandboxes matching `filter` (all when `None`).
    pub async fn list_pod_sandbox(&self, filter: Option<v1::PodSandboxFilter>) -> Result<Vec<v1::PodSandbox>> {
        let req = v1::ListPodSandboxRequest { filter };
        let resp =
            call("ListPodSandbox", self.options.request_timeout, self.runtime.clone().list_pod_sandbox(req)).await?;
        Ok(resp.items)
    }

    /// Creates a container in a sandbox (the sandbox's config is needed again, as in CRI);
    /// returns its id.
    pub async fn create_container(
        &self,
        sandbox_id: &str,
        config: v1::ContainerConfig,
        sandbox_config: &v1::PodSandboxConfig,
    ) -> Result<String> {
        let req = v1::CreateContainerRequest {
            pod_sandbox_id: sandbox_id.into(),
            config: Some(config),
            sandbox_config: Some(sandbox_config.clone()),
        };
        let resp =
            call("CreateContainer", self.options.request_timeout, self.runtime.clone().create_container(req)).await?;
        Ok(resp.container_id)
    }

    /// Starts a created container.
    pub async fn start_container(&self, id: &str) -> Result<()> {
        let req = v1::StartContainerRequest { container_id: id.into() };
        call("StartContainer", self.options.request_timeout, self.runtime.clone().start_container(req)).await?;
        Ok(())
    }

    /// Stops a container: SIGTERM (or the image's stop signal), then SIGKILL after `grace`
    /// (whole seconds, rounded up; zero kills at once). The call may take `grace` longer than
    /// other calls.
    pub async fn stop_container(&self, id: &str, grace: Duration) -> Result<()> {
        let secs = whole_seconds(grace);
        let req = v1::StopContainerRequest { container_id: id.into(), timeout: secs };
        let deadline = self.options.request_timeout.saturating_add(Duration::from_secs(secs.unsigned_abs()));
        call("StopContainer", deadline, self.runtime.clone().stop_container(req)).await?;
        Ok(())
    }

    /// Removes a container (force-stopping it if it runs). One already gone may be NotFound or
    /// success, depending on the runtime.
    pub async fn remove_container(&self, id: &str) -> Result<()> {
        let req = v1::RemoveContainerRequest { container_id: id.into() };
        call("RemoveContainer", self.options.request_timeout, self.runtime.clone().remove_container(req)).await?;
        Ok(())
    }

    /// The containers matching `filter` (all when `None`).
    pub async fn list_containers(&self, filter: Option<v1::ContainerFilter>) -> Result<Vec<v1::Container>> {
        let req = v1::ListContainersRequest { filter };
        let resp =
            call("ListContainers", self.options.request_timeout, self.runtime.clone().list_containers(req)).await?;
        Ok(resp.containers)
    }

    /// Resource usage (CPU, memory, writable layer) of the containers matching `filter` (all
    /// when `None`).
    pub async fn list_container_stats(
        &self,
        filter: Option<v1::ContainerStatsFilter>,
    ) -> Result<Vec<v1::ContainerStats>> {
        let req = v1::ListContainerStatsRequest { filter };
        let resp =
            call("ListContainerStats", self.options.request_timeout, self.runtime.clone().list_container_stats(req))
                .await?;
        Ok(resp.stats)
    }

    /// A container's status: state, exit code, reason, log path, start and finish times.
    pub async fn container_status(&self, id: &str) -> Result<v1::ContainerStatus> {
        let req = v1::ContainerStatusRequest { container_id: id.into(), verbose: false };
        let resp =
            call("ContainerStatus", self.options.request_timeout, self.runtime.clone().container_status(req)).await?;
        resp.status.ok_or(Error::MissingField { call: "ContainerStatus", field: "status" })
    }

    /// Runs `cmd` in a running container and returns its stdout, stderr and exit code (a
    /// non-zero exit is a successful call). The runtime kills the command after `timeout`
    /// (whole seconds, rounded up); zero means no limit, and then, as in kubelet, the call has
    /// no deadline either.
    pub async fn exec_sync(&self, id: &str, cmd: Vec<String>, timeout: Duration) -> Result<v1::ExecSyncResponse> {
        let secs = whole_seconds(timeout);
        let req = v1::ExecSyncRequest { container_id: id.into(), cmd, timeout: secs };
        let mut runtime = self.runtime.clone();
        let fut = runtime.exec_sync(req);
        if secs == 0 {
            return fut.await.map(tonic::Response::into_inner).map_err(|s| Error::rpc("ExecSync", s));
        }
        let deadline = self.options.request_timeout.saturating_add(Duration::from_secs(secs.unsigned_abs()));
        call("ExecSync", deadline, fut).await
    }

    /// Prepares a streaming exec session (CRI `Exec`): returns the URL on the runtime's
    /// streaming server that the client's upgrade request (SPDY or WebSocket) must be sent to.
    /// The command only runs once that URL is dialled; an unused URL expires in the runtime.
    pub async fn exec(&self, req: v1::ExecRequest) -> Result<String> {
        let resp = call("Exec", self.options.request_timeout, self.runtime.clone().exec(req)).await?;
        Ok(resp.url)
    }

    /// Prepares a streaming attach to a running container's main process (CRI `Attach`):
    /// returns the URL on the runtime's streaming server for the client's upgrade request.
    /// `tty` must match the container's config (the runtime checks nothing else of it).
    pub async fn attach(&self, req: v1::AttachRequest) -> Result<String> {
        let resp = call("Attach", self.options.request_timeout, self.runtime.clone().attach(req)).await?;
        Ok(resp.url)
    }

    /// Prepares a port forward into a sandbox's network namespace (CRI `PortForward`): returns
    /// the URL on the runtime's streaming server for the client's upgrade request. `ports` are
    /// used by WebSocket clients; SPDY clients name a port per stream instead.
    pub async fn port_forward(&self, sandbox_id: &str, ports: Vec<i32>) -> Result<String> {
        let req = v1::PortForwardRequest { pod_sandbox_id: sandbox_id.into(), port: ports };
        let resp = call("PortForward", self.options.request_timeout, self.runtime.clone().port_forward(req)).await?;
        Ok(resp.url)
    }

    // === ImageService ===

    /// Pulls an image (with registry credentials, and the sandbox config the runtime may use
    /// for the pull); returns the image's reference (its id or digest) as the runtime names it.
    pub async fn pull_image(
        &self,
        image: &str,
        auth: Option<v1::AuthConfig>,
        sandbox_config: Option<&v1::PodSandboxConfig>,
    ) -> Result<String> {
        let req = v1::PullImageRequest { image: Some(spec(image)), auth, sandbox_config: sandbox_config.cloned() };
        let resp = call("PullImage", self.options.pull_timeout, self.image.clone().pull_image(req)).await?;
        Ok(resp.image_ref)
    }

    /// An image's metadata, or `None` when the runtime does not have it.
    pub async fn image_status(&self, image: &str) -> Result<Option<v1::Image>> {
        let req = v1::ImageStatusRequest { image: Some(spec(image)), verbose: false };
        let resp = call("ImageStatus", self.options.request_timeout, self.image.clone().image_status(req)).await?;
        // containerd answers an empty response (no error) for an unknown image.
        Ok(resp.image.filter(|i| !i.id.is_empty()))
    }

    /// The images matching `filter` (all when `None`).
    pub async fn list_images(&self, filter: Option<v1::ImageFilter>) -> Result<Vec<v1::Image>> {
        let req = v1::ListImagesRequest { filter };
        let resp = call("ListImages", self.options.request_timeout, self.image.clone().list_images(req)).await?;
        Ok(resp.images)
    }

    /// Removes an image (a missing one is success in CRI).
    pub async fn remove_image(&self, image: &str) -> Result<()> {
        let req = v1::RemoveImageRequest { image: Some(spec(image)) };
        call("RemoveImage", self.options.request_timeout, self.image.clone().remove_image(req)).await?;
        Ok(())
    }
}

fn spec(image: &str) -> v1::ImageSpec {
    v1::ImageSpec { image: image.into(), ..Default::default() }
}

/// A duration in whole seconds, rounded up (CRI timeouts are int64 seconds).
fn whole_seconds(d: Duration) -> i64 {
    let secs = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// Awaits one unary call with a deadline, keeping the gRPC status of a failure.
async fn call<T>(
    name: &'static str,
    deadline: Duration,
    fut: impl Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T> {
    match tokio::time::timeout(deadline, fut).await {
        Ok(Ok(resp)) => Ok(resp.into_inner()),
        Ok(Err(status)) => Err(Error::rpc(name, status)),
        Err(_) => Err(Error::Timeout { call: name, after: deadline }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_up_to_whole_seconds() {
        assert_eq!(whole_seconds(Duration::ZERO), 0);
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_secs(30)), 30);
        assert_eq!(whole_seconds(Duration::from_millis(30_500)), 31);
        assert_eq!(whole_seconds(Duration::MAX), i64::MAX);
    }

    #[tokio::test]
    async fn a_missing_socket_is_a_connect_error_naming_it() {
        let err = Cri::connect("/nonexistent/kubeedge-cri.sock").await.expect_err("no socket");
        assert!(matches!(err, Error::Connect { .. }), "{err:?}");
        assert!(err.to_string().contains("/nonexistent/kubeedge-cri.sock"), "{err}");
    }

    #[test]
    fn status_conditions_are_looked_up_by_type() {
        let resp = v1::StatusResponse {
            status: Some(v1::RuntimeStatus {
                conditions: vec![
                    v1::RuntimeCondition { r#type: crate::RUNTIME_READY.into(), status: true, ..Default::default() },
                    v1::RuntimeCondition { r#type: crate::NETWORK_READY.into(), status: false, ..Default::default() },
                ],
            }),
            ..Default::default()
        };
        assert!(resp.is_ready(crate::RUNTIME_READY));
        assert!(!resp.is_ready(crate::NETWORK_READY));
        assert!(!resp.is_ready("Other"));
        assert!(!v1::StatusResponse::default().is_ready(crate::RUNTIME_READY));
    }
}
